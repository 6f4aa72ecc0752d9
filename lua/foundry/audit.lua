--- The audit log: every decision the proxy, the git policy, the hooks and the API make,
--- in the state database's `audit` table, hash-chained.
---
---   audit.append{sandbox=, kind="net", decision="allow", host=, method=, path=, rule=,
---                reason=, status=, bytes_in=, bytes_out=, ms=, data=}
---   audit.flush()                        write buffered rows now
---   audit.query{sandbox=, since=, limit=, after_id=, kind=, decision=, follow=}
---   audit.verify() -> {ok=, rows=, first_bad_id=, reason=, head=}
---
--- **Redaction is the caller's job**: values reach `append` already redacted (no secret
--- in a header, a query string, a URL's userinfo or `data`); the log is append-only, so a
--- secret written here stays.
---
--- **The chain.** Row ids are 1, 2, 3, ... without gaps. Each row stores `prev_hash` (the
--- previous row's `hash`; 64 zeros for the first) and `hash` = SHA-256 over a canonical
--- encoding of its fields, id and prev_hash included. The head (last id and hash) is also
--- kept in the `meta` table. `verify` recomputes the chain and finds a modified row (its
--- hash), a deleted or inserted row (a gap in the ids, a broken link), reordered rows (the
--- id is hashed) and rows cut from the end (the head). It does not stop someone who can
--- write the database and recompute every hash; record `verify().head.hash` elsewhere to
--- anchor the log.
---
--- **Batching.** `append` buffers: rows are written in one transaction every `flush_ms`
--- (100) milliseconds or every `max_rows` (256) rows, whichever comes first, and at exit.
--- `kill -9` loses at most the rows of the last `flush_ms`; the chain stays valid. A
--- failed write (disk full, database busy) keeps the rows and retries at the next flush;
--- past `max_buffer` rows the oldest are dropped and a row of kind "audit" records how
--- many. Ids follow the order of writes (several processes may write); `ts` is the time
--- of `append`.
local crypto = require "foundry.crypto"
local db = require "foundry.db"
local errors = require "foundry.errors"
local json = require "foundry.json"
local paths = require "foundry.paths"
local state = require "foundry.state"
local util = require "foundry.util"
local uv = require "luv"

local M = {}

---@class foundry.audit.Row
---@field kind string "net", "git", "hook", "api", ...
---@field sandbox? string
---@field decision? "allow"|"deny"
---@field host? string
---@field method? string
---@field path? string redacted: no secret in a query string
---@field rule? string the rule that decided
---@field reason? string
---@field status? integer upstream status
---@field bytes_in? integer
---@field bytes_out? integer
---@field ms? number duration
---@field data? table|string more, as JSON (redacted)
---@field ts? integer epoch ms (default: now)

local GENESIS = string.rep("0", 64)
local TAG = "fdr-audit-v1"
local math_type, huge, gettimeofday = math.type, math.huge, uv.gettimeofday
local tuple = crypto.sha256_tuple
M.GENESIS = GENESIS

local FIELDS = {
  ts = "integer", sandbox = "string", kind = "string", decision = "string", host = "string",
  method = "string", path = "string", rule = "string", reason = "string", status = "integer",
  bytes_in = "integer", bytes_out = "integer", ms = "number", data = "any",
}

-- The hashed fields, in order.
local ORDER = { "id", "ts", "sandbox", "kind", "decision", "host", "method", "path", "rule",
  "reason", "status", "bytes_in", "bytes_out", "ms", "data", "prev_hash" }

local COLUMNS = table.concat(ORDER, ", ") .. ", hash"
local INSERT = "INSERT INTO audit (" .. COLUMNS .. ") VALUES (" ..
  string.rep("?, ", #ORDER) .. "?)"

-- Numbers as text, the same for a value before it is stored and after it is read back
-- (a REAL column returns 5.0 for 5).
local function number_text(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  local i = math.tointeger(v)
  if i then return string.format("%d", i) end
  return string.format("%.17g", v)
end

--- The canonical encoding of a row (with id and prev_hash): fields in a fixed order, each
--- `~` when absent or `<length>:<text>`, joined by `|`.
---@param row table
---@return string
function M.canonical(row)
  local parts = { TAG }
  for i, k in ipairs(ORDER) do
    local v = row[k]
    if v == nil then
      parts[i + 1] = "~"
    else
      local s = type(v) == "number" and number_text(v) or v
      parts[i + 1] = #s .. ":" .. s
    end
  end
  return table.concat(parts, "|")
end

--- The hash of a row: hex SHA-256 of its canonical encoding (computed in C without
--- building the string; equal to `crypto.sha256_hex(audit.canonical(row))`).
function M.hash(r)
  return tuple(TAG, r.id, r.ts, r.sandbox, r.kind, r.decision, r.host, r.method, r.path, r.rule,
    r.reason, r.status, r.bytes_in, r.bytes_out, r.ms, r.data, r.prev_hash)
end

local function bad_field(k, v, level)
  local want = FIELDS[k]
  if not want then
    local near = type(k) == "string" and util.did_you_mean(k, util.keys(FIELDS))
    error(string.format("audit.append: unknown field '%s'%s", tostring(k),
      near and (" — did you mean '" .. near .. "'?") or ""), level + 1)
  end
  error(string.format("audit.append: %s: expected %s, got %s", k, want, math.type(v) or type(v)), level + 1)
end

-- Check one row and copy it for the buffer (this runs for every request the proxy sees:
-- one pass, no helper calls on the good path).
local function prepare(row, level)
  if type(row) ~= "table" then error("audit.append: expected a table, got " .. type(row), level + 1) end
  local r = {}
  for k, v in pairs(row) do
    local want = FIELDS[k]
    if want == "string" then
      if type(v) ~= "string" then bad_field(k, v, level + 1) end
    elseif want == "integer" then
      if math_type(v) ~= "integer" then bad_field(k, v, level + 1) end
    elseif want == "number" then
      if type(v) ~= "number" or v ~= v or v == huge or v == -huge then
        if type(v) == "number" then error("audit.append: " .. k .. ": expected a finite number", level + 1) end
        bad_field(k, v, level + 1)
      end
    elseif want == nil then
      bad_field(k, v, level + 1)
    elseif k == "data" and type(v) ~= "string" then
      v = json.encode(v)
    end
    r[k] = v
  end
  if not r.kind or r.kind == "" then error("audit.append: kind is required", level + 1) end
  local d = r.decision
  if d ~= nil and d ~= "allow" and d ~= "deny" then
    error("audit.append: decision: expected \"allow\" or \"deny\", got \"" .. d .. "\"", level + 1)
  end
  if not r.ts then
    local sec, usec = gettimeofday()
    r.ts = sec * 1000 + usec // 1000
  end
  return r
end

-- The chain's head {id, hash} and its base (the last pruned row) from `meta`.
local function meta_pair(c, key)
  local r = c:row("SELECT value FROM meta WHERE key = ?", key)
  if not r or not r.value then return nil end
  local id, hash = r.value:match("^(%d+) (%x+)$")
  return { id = math.tointeger(tonumber(id)), hash = hash }
end

local function set_meta(c, key, id, hash)
  c:run("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    key, id .. " " .. hash)
end

local function current_head(c)
  local head = meta_pair(c, "audit_head")
  if head then return head end
  local last = c:row("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
  if last then return { id = last.id, hash = last.hash } end
  return meta_pair(c, "audit_base") or { id = 0, hash = GENESIS }
end

-- Write prepared rows in one transaction on `c`, chained after the current head.
local function write(c, rows)
  c:transaction(function()
    local head = current_head(c)
    local id, prev = head.id, head.hash
    for _, r in ipairs(rows) do
      id = id + 1
      r.id, r.prev_hash = id, prev
      r.hash = M.hash(r)
      c:run(INSERT, r.id, r.ts, r.sandbox, r.kind, r.decision, r.host, r.method, r.path, r.rule,
        r.reason, r.status, r.bytes_in, r.bytes_out, r.ms, r.data, r.prev_hash, r.hash)
      prev = r.hash
    end
    set_meta(c, "audit_head", id, prev)
  end)
end

-- ------------------------------------------------------------------ writers

local Writer = {}
Writer.__index = Writer

--- A buffered writer. `opts`: `flush_ms` (100), `max_rows` (256: a full buffer is written
--- at once), `max_buffer` (100000: rows kept while writes fail). Rows go to the state
--- database that was current (paths.db()) when the first of a batch was appended; what a
--- writer still holds at exit is written then.
---@param opts? {flush_ms?: integer, max_rows?: integer, max_buffer?: integer}
local writers = setmetatable({}, { __mode = "k" })

function M.writer(opts)
  opts = opts or {}
  local w = setmetatable({
    buf = {}, flush_ms = opts.flush_ms or 100, max_rows = opts.max_rows or 256,
    max_buffer = opts.max_buffer or 100000, dropped = 0, timer = nil, due = false,
    last_error = nil, failing = false,
  }, Writer)
  writers[w] = true
  return w
end

--- Buffer a row (see the module's description). Returns nothing; misuse raises.
function Writer:append(row)
  local r = prepare(row, 2)
  local buf = self.buf
  if #buf == 0 then self.path = paths.db() end -- the database these rows belong to
  buf[#buf + 1] = r
  if #buf > self.max_buffer then
    -- writes have been failing for long: drop the oldest tenth at once (counted)
    local n = #buf
    local drop = math.max(1, self.max_buffer // 10)
    table.move(buf, drop + 1, n, 1)
    for i = n - drop + 1, n do buf[i] = nil end
    self.dropped = self.dropped + drop
  end
  if #buf >= self.max_rows and not self.failing then
    self:flush_quietly()
  elseif not self.due then
    self:schedule(self.flush_ms)
  end
end

-- Flush from a timer in `ms` (unless one is already due).
function Writer:schedule(ms)
  if self.due then return end
  if not self.timer then
    self.timer = uv.new_timer()
    self.timer:unref() -- pending rows do not keep Foundry running; at_exit writes them
  end
  self.due = true
  self.timer:start(ms, 0, function() self.due = false; self:flush_quietly() end)
end

--- Write the buffered rows now (to `conn`, default the state database). Returns the number
--- written; raises when the write fails (the rows stay buffered and are retried later,
--- from a timer, so a busy or full disk does not stall every append).
function Writer:flush(conn)
  if self.due then self.timer:stop(); self.due = false end
  if #self.buf == 0 and self.dropped == 0 then return 0 end
  -- the rows go to the database that was current when the first of them was appended
  local c, temp = conn, nil
  if not c then
    if self.path and self.path ~= paths.db() then
      paths.ensure(self.path:match("^(.*)/[^/]*$"))
      temp = db.open(self.path)
      local ok, err = pcall(state.migrate, temp)
      if not ok then temp:close(); error(err, 0) end
      c = temp
    else
      c = state.db()
    end
  end
  local rows = self.buf
  if self.dropped > 0 then
    rows = { prepare({ kind = "audit", reason = string.format("%d audit rows dropped: %s", self.dropped,
      self.last_error or "buffer full") }, 1) }
    for _, r in ipairs(self.buf) do rows[#rows + 1] = r end
  end
  local ok, err = pcall(write, c, rows)
  if temp then temp:close() end
  if not ok then
    -- ids and hashes given in the failed transaction are given again next time
    self.last_error = errors.message(err)
    self.failing = true
    self:schedule(math.min(self.flush_ms * 10, 5000))
    error(err, 0)
  end
  self.buf, self.dropped, self.last_error, self.failing = {}, 0, nil, false
  return #rows
end

-- From a timer or a full buffer: report failures on stderr, retry later.
function Writer:flush_quietly()
  local ok, err = pcall(self.flush, self)
  if not ok then
    io.stderr:write("foundry: audit: cannot write ", #self.buf, " rows (will retry): ",
      errors.message(err), "\n")
  end
end

--- Rows waiting to be written.
function Writer:pending() return #self.buf end

--- Flush and stop the writer's timer.
function Writer:close()
  local ok, err = pcall(self.flush, self)
  if self.timer then
    if not self.timer:is_closing() then self.timer:close() end
    self.timer, self.due = nil, false
  end
  if not ok then error(err, 0) end
end

local default = M.writer()
M.default_writer = default

--- Buffer one audit row in the process's writer (written within `flush_ms`).
---@param row foundry.audit.Row
function M.append(row)
  return default:append(row)
end

--- Write the process writer's buffered rows now (to `conn` when given). Returns the count.
function M.flush(conn)
  return default:flush(conn)
end

--- Write, into `conn`, the rows of every writer that belong to its database (state.close
--- calls this before closing the process's connection).
function M.flush_into(conn)
  local path = conn:path()
  for w in pairs(writers) do
    if w:pending() > 0 and w.path == path then w:flush(conn) end
  end
end

-- Every writer still holding rows writes them at exit.
db.at_exit(function()
  for w in pairs(writers) do
    if w:pending() > 0 or w.dropped > 0 then w:flush_quietly() end
  end
end)

-- ------------------------------------------------------------------ reading

local function filters(opts)
  local where, args = {}, {}
  if opts.sandbox then where[#where + 1] = "sandbox = ?"; args[#args + 1] = opts.sandbox end
  if opts.kind then where[#where + 1] = "kind = ?"; args[#args + 1] = opts.kind end
  if opts.decision then where[#where + 1] = "decision = ?"; args[#args + 1] = opts.decision end
  if opts.since then where[#where + 1] = "ts >= ?"; args[#args + 1] = state.parse_time(opts.since) end
  return where, args
end

local function fetch(c, where, args, after_id, limit, tail)
  local w = { table.unpack(where) }
  local a = { table.unpack(args) }
  if after_id then w[#w + 1] = "id > ?"; a[#a + 1] = after_id end
  local sql = "SELECT * FROM audit" .. (#w > 0 and (" WHERE " .. table.concat(w, " AND ")) or "")
  if tail and limit then
    sql = "SELECT * FROM (" .. sql .. " ORDER BY id DESC LIMIT " .. limit .. ") ORDER BY id"
  else
    sql = sql .. " ORDER BY id" .. (limit and (" LIMIT " .. limit) or "")
  end
  return c:query(sql, table.unpack(a, 1, #a))
end

--- Rows in id order. `since` (epoch ms or a string for state.parse_time) and `after_id`
--- start there (then `limit` caps from the start); otherwise `limit` keeps the last ones.
--- With `follow = function(row)`, every row is passed to it, then new rows as they are
--- written (polled every `interval_ms`, 250), until it returns false or the task is
--- cancelled; query then returns nothing.
---@param opts? {sandbox?: string, kind?: string, decision?: string, since?: integer|string, after_id?: integer,
---  limit?: integer, follow?: fun(row: table): boolean?, interval_ms?: integer}
---@return table[]|nil
function M.query(opts)
  opts = opts or {}
  local known = { sandbox = "string", kind = "string", decision = "string", since = "any",
    after_id = "integer", limit = "integer", follow = "function", interval_ms = "integer" }
  for k, v in pairs(opts) do
    if not known[k] then
      local near = type(k) == "string" and util.did_you_mean(k, util.keys(known))
      error("audit.query: unknown option '" .. tostring(k) .. "'" ..
        (near and (" — did you mean '" .. near .. "'?") or ""), 2)
    end
    local want = known[k]
    local bad_type = (want == "integer" and math.type(v) ~= "integer")
      or (want ~= "integer" and want ~= "any" and type(v) ~= want)
    if bad_type then
      error("audit.query: " .. k .. ": expected " .. known[k] .. ", got " .. (math.type(v) or type(v)), 2)
    end
  end
  if opts.limit and opts.limit < 0 then error("audit.query: limit: expected a non-negative integer", 2) end
  local where, args = filters(opts)
  local tail = opts.since == nil and opts.after_id == nil
  local rows = fetch(state.db(), where, args, opts.after_id, opts.limit, tail)
  if not opts.follow then return rows end
  local follow = opts.follow
  local last = opts.after_id or 0
  if #rows > 0 then
    last = rows[#rows].id
  elseif tail then
    local r = state.db():row("SELECT max(id) AS id FROM audit")
    last = r and r.id or 0
  end
  for _, r in ipairs(rows) do
    if follow(r) == false then return nil end
  end
  local sleep = require("foundry._task").sleep
  while true do
    sleep(opts.interval_ms or 250)
    for _, r in ipairs(fetch(state.db(), where, args, last, 1000, false)) do
      last = r.id
      if follow(r) == false then return nil end
    end
  end
end

--- Check the chain: every row's hash, every link, no gap in the ids, the recorded head.
--- Returns `{ok=, rows=, first_bad_id=, reason=, head={id=, hash=}}`; rows is the number of
--- rows checked. Flushes this process's buffered rows first.
---@return {ok: boolean, rows: integer, first_bad_id?: integer, reason?: string, head?: {id: integer, hash: string}}
function M.verify(conn)
  local c = conn or state.db()
  if not conn then M.flush() end
  local base = meta_pair(c, "audit_base") or { id = 0, hash = GENESIS }
  local head = meta_pair(c, "audit_head")
  local expected, prev, n = base.id + 1, base.hash, 0
  local function bad(id, reason)
    return { ok = false, rows = n, first_bad_id = id, reason = reason, head = head }
  end
  while true do
    local batch = c:query("SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT 2000", expected - 1)
    if #batch == 0 then break end
    for _, r in ipairs(batch) do
      if r.id ~= expected then
        return bad(expected, string.format("row %d is missing: the log jumps from row %d to row %d",
          expected, expected - 1, r.id))
      end
      if M.hash(r) ~= r.hash then
        return bad(r.id, string.format("row %d was modified: its content does not match its hash", r.id))
      end
      if r.prev_hash ~= prev then
        return bad(r.id, string.format("row %d does not follow row %d: rows were removed, inserted or reordered",
          r.id, r.id - 1))
      end
      prev, expected, n = r.hash, expected + 1, n + 1
    end
  end
  local last = expected - 1
  if head and (head.id ~= last or head.hash ~= prev) then
    if head.id > last then
      return bad(last + 1, string.format(
        "the log ends at row %d but its head is row %d: rows were removed from the end", last, head.id))
    end
    return bad(head.id, string.format("the head records row %d with another hash: rows were rewritten", head.id))
  end
  if not head and last > base.id then
    return bad(last, "the log has no recorded head: it was not written by Foundry")
  end
  return { ok = true, rows = n, head = { id = last, hash = prev } }
end

--- Delete rows older than `before` (epoch ms or a state.parse_time string), keeping the
--- chain verifiable from the last deleted row (recorded in meta as the new base). Returns
--- the number of rows deleted.
function M.prune(opts)
  if type(opts) ~= "table" or opts.before == nil then error("audit.prune: expected {before=}", 2) end
  local before = state.parse_time(opts.before)
  M.flush()
  local c = state.db()
  return c:transaction(function()
    local r = c:row("SELECT id, hash FROM audit WHERE id = (SELECT max(id) FROM audit WHERE ts < ?)", before)
    if not r then return 0 end
    local n = c:run("DELETE FROM audit WHERE id <= ?", r.id).changes
    set_meta(c, "audit_base", r.id, r.hash)
    return n
  end)
end

return M
