--- The state database: `$XDG_STATE_HOME/foundry/foundry.db` (under `$FOUNDRY_HOME/state`
--- when that is set), SQLite in WAL mode. Its schema, versioned migrations, and the
--- accessors the rest of Foundry uses:
---
---   state.sandboxes  insert, update, get, list, delete, unique_name
---   state.history    add, finish, last, list
---   state.events     add, list          state.logs     add, list
---   state.presets    put, get, list, delete
---   state.queue      push, claim, done, fail, list
---   state.chat / state.notifications / state.subtasks   add, list (+ update, mark_read)
---   state.audit      lives in foundry.audit (hash-chained)
---
--- Every write runs in a transaction, and every accessor is synchronous (see foundry.db):
--- call them from any task; they never yield. Times are integers: milliseconds since the
--- Unix epoch, UTC (`state.now()`). JSON columns (spec, data, argv, payload) take and give
--- Lua tables.
---
--- One connection serves the whole process: `state.db()` opens it on first use (creating
--- the directory and migrating the schema) and re-opens it when `paths.db()` changes (a
--- test that sets FOUNDRY_HOME gets a fresh database).
local db = require "foundry.db"
local errors = require "foundry.errors"
local json = require "foundry.json"
local paths = require "foundry.paths"
local util = require "foundry.util"
local uv = require "luv"

local M = {}

--- Milliseconds since the Unix epoch (wall clock).
---@return integer
function M.now()
  local s, us = uv.gettimeofday()
  return s * 1000 + us // 1000
end

-- ------------------------------------------------------------------ schema

--- Versioned migrations: entry N takes the schema from version N-1 to N. Never edit a
--- released entry; append a new one. PRAGMA user_version records the version.
M.migrations = {
  -- 1: the initial schema
  [[
  CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT
  ) WITHOUT ROWID;

  CREATE TABLE sandboxes (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL DEFAULT 'creating',
    repo         TEXT,               -- the source repository: a path or a URL
    branch       TEXT,               -- the sandbox's own branch
    base         TEXT,               -- the ref it started from
    image        TEXT,
    network      TEXT,
    preset       TEXT,
    workspace    TEXT,               -- host path of the work tree
    container_id TEXT,
    hook_token   TEXT,               -- HMAC key of the sandbox's hook events
    pid          INTEGER,            -- the process that last changed the row
    error        TEXT,               -- the last failure, for `info` and `prune`
    spec         TEXT NOT NULL DEFAULT '{}',   -- JSON: what was asked for
    data         TEXT NOT NULL DEFAULT '{}',   -- JSON: what Foundry recorded since
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
  );
  CREATE INDEX sandboxes_by_state ON sandboxes(state);
  CREATE INDEX sandboxes_by_container ON sandboxes(container_id);

  CREATE TABLE presets (
    name       TEXT PRIMARY KEY,
    source     TEXT,                 -- "saved", "library", a URL, ...
    path       TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE history (
    id         INTEGER PRIMARY KEY,
    command    TEXT NOT NULL,
    argv       TEXT NOT NULL,        -- JSON array, without the program name
    cwd        TEXT,
    sandbox    TEXT,                 -- no foreign key: history outlives sandboxes
    status     INTEGER,              -- exit status, once known
    created_at INTEGER NOT NULL
  );
  CREATE INDEX history_by_command ON history(command, id);
  CREATE INDEX history_by_sandbox ON history(sandbox, id);

  CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    sandbox TEXT REFERENCES sandboxes(name) ON DELETE CASCADE ON UPDATE CASCADE,
    kind    TEXT NOT NULL,
    data    TEXT,
    ts      INTEGER NOT NULL
  );
  CREATE INDEX events_by_sandbox ON events(sandbox, id);
  CREATE INDEX events_by_ts ON events(ts);

  CREATE TABLE logs (
    id      INTEGER PRIMARY KEY,
    sandbox TEXT NOT NULL REFERENCES sandboxes(name) ON DELETE CASCADE ON UPDATE CASCADE,
    stream  TEXT NOT NULL,
    text    TEXT NOT NULL,
    ts      INTEGER NOT NULL
  );
  CREATE INDEX logs_by_sandbox ON logs(sandbox, id);

  CREATE TABLE audit (
    id        INTEGER PRIMARY KEY,   -- assigned by foundry.audit: 1, 2, 3, ... no gaps
    ts        INTEGER NOT NULL,
    sandbox   TEXT,                  -- no foreign key: the log outlives sandboxes
    kind      TEXT NOT NULL,
    decision  TEXT,
    host      TEXT,
    method    TEXT,
    path      TEXT,
    rule      TEXT,
    reason    TEXT,
    status    INTEGER,
    bytes_in  INTEGER,
    bytes_out INTEGER,
    ms        REAL,
    data      TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
  );
  CREATE INDEX audit_by_sandbox ON audit(sandbox, id);
  CREATE INDEX audit_by_ts ON audit(ts);

  CREATE TABLE chat (
    id      INTEGER PRIMARY KEY,
    sandbox TEXT NOT NULL REFERENCES sandboxes(name) ON DELETE CASCADE ON UPDATE CASCADE,
    role    TEXT NOT NULL,
    text    TEXT NOT NULL,
    data    TEXT,
    ts      INTEGER NOT NULL
  );
  CREATE INDEX chat_by_sandbox ON chat(sandbox, id);

  CREATE TABLE subtasks (
    id         INTEGER PRIMARY KEY,
    sandbox    TEXT NOT NULL REFERENCES sandboxes(name) ON DELETE CASCADE ON UPDATE CASCADE,
    title      TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending',
    data       TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE INDEX subtasks_by_sandbox ON subtasks(sandbox, id);

  CREATE TABLE notifications (
    id      INTEGER PRIMARY KEY,
    sandbox TEXT,                    -- no foreign key: "x failed" outlives x
    level   TEXT NOT NULL DEFAULT 'info',
    title   TEXT NOT NULL,
    text    TEXT,
    data    TEXT,
    ts      INTEGER NOT NULL,
    read_at INTEGER
  );
  CREATE INDEX notifications_unread ON notifications(read_at, id);

  CREATE TABLE queue (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    payload      TEXT,
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 5,
    next_at      INTEGER NOT NULL,
    claimed_at   INTEGER,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
  );
  CREATE INDEX queue_ready ON queue(state, next_at, id);
  ]],
}

--- The schema version this Foundry writes.
M.schema_version = #M.migrations

local function user_version(c)
  return c:row("PRAGMA user_version").user_version
end

--- Bring the schema of connection `c` up to date (one transaction for all steps); raise
--- `state.schema_newer` when the file comes from a newer Foundry.
function M.migrate(c)
  local latest = #M.migrations
  local function check(v)
    if v > latest then
      errors.raise("state.schema_newer",
        string.format("state database is from a newer Foundry (schema %d > %d)", v, latest),
        "upgrade foundry, or set FOUNDRY_HOME to use another state directory")
    end
  end
  local v = user_version(c)
  check(v)
  if v == latest then return v end
  return c:transaction(function()
    v = user_version(c) -- another process may have migrated meanwhile
    check(v)
    for n = v + 1, latest do
      local step = M.migrations[n]
      if type(step) == "function" then step(c) else c:exec(step) end
    end
    c:exec("PRAGMA user_version = " .. latest)
    return latest
  end)
end

-- ------------------------------------------------------------------ the connection

local conn, conn_path

--- The process's connection to the state database, opened (and migrated) on first use.
---@return foundry.db.Connection
function M.db()
  local path = paths.db()
  if conn and conn_path == path and conn:is_open() then return conn end
  if conn then M.close() end
  paths.ensure(path:match("^(.*)/[^/]*$"))
  local c = db.open(path)
  local ok, err = pcall(M.migrate, c)
  if not ok then
    c:close()
    error(err, 0)
  end
  conn, conn_path = c, path
  return c
end

--- Close the process's connection (the next `state.db()` opens it again). Buffered audit
--- rows are written first.
function M.close()
  if not conn then return end
  local c = conn
  conn, conn_path = nil, nil
  local audit = package.loaded["foundry.audit"]
  if audit and audit.flush_into then
    local ok, err = pcall(audit.flush_into, c)
    if not ok then io.stderr:write("foundry: audit flush: ", errors.message(err), "\n") end
  end
  if c:is_open() then c:close() end
end

--- Run `fn(conn)` inside a transaction on the state database (nested ones are savepoints)
--- and return its results. fn must not wait.
function M.transaction(fn, ...)
  local c = M.db()
  return c:transaction(fn, c, ...)
end

-- ------------------------------------------------------------------ helpers

local function typename(v) return math.type(v) or type(v) end

-- Check `row` against `fields` = {name = "string"|"integer"|"number"|"boolean"|"json"|"any"}.
local function check_fields(what, row, fields, level)
  if type(row) ~= "table" then
    error(what .. ": expected a table, got " .. type(row), level + 1)
  end
  for k, v in pairs(row) do
    local want = fields[k]
    if not want then
      local near = type(k) == "string" and util.did_you_mean(k, util.keys(fields))
      error(string.format("%s: unknown field '%s'%s", what, tostring(k),
        near and (" — did you mean '" .. near .. "'?") or ""), level + 1)
    end
    local ok = want == "any" or want == "json"
      or (want == "integer" and math.type(v) == "integer")
      or (want == "number" and type(v) == "number")
      or type(v) == want
    if not ok then
      error(string.format("%s: %s: expected %s, got %s", what, k, want, typename(v)), level + 1)
    end
  end
end

local function need(what, row, key)
  if row[key] == nil or row[key] == "" then
    error(string.format("%s: %s is required", what, key), 3)
  end
end

local function encode(v)
  if v == nil then return nil end
  if type(v) == "string" then return v end -- already JSON
  return json.encode(v)
end

local function decode(s, what)
  if s == nil then return nil end
  return json.decode(s, what)
end

local function decode_fields(row, names)
  if not row then return nil end
  for _, n in ipairs(names) do
    if row[n] ~= nil then row[n] = decode(row[n], n) end
  end
  return row
end

local function decode_all(rows, names)
  for _, r in ipairs(rows) do decode_fields(r, names) end
  return rows
end

-- A foreign key failure on a child table means the sandbox row does not exist.
local function no_sandbox(err, name)
  if errors.is(err, "db.constraint") and err.constraint == "foreignkey" then
    errors.raise("state.not_found", "no sandbox named '" .. tostring(name) .. "'",
      "'foundry ls' lists the sandboxes")
  end
  error(err, 0)
end

-- INSERT INTO tbl (cols...) VALUES (...) from a table of column -> value.
local function insert_sql(tbl, row)
  local cols, marks, vals = {}, {}, {}
  for k, v in pairs(row) do
    cols[#cols + 1] = k
    marks[#marks + 1] = "?"
    vals[#vals + 1] = v
  end
  return string.format("INSERT INTO %s (%s) VALUES (%s)", tbl, table.concat(cols, ", "),
    table.concat(marks, ", ")), vals
end

-- Rows of a per-sandbox log table: after `since_id` (ascending, at most `limit`), or the
-- last `limit` (ascending), or all.
local function tail(c, tbl, where, args, since_col, since, limit)
  local sql = "SELECT * FROM " .. tbl
  local conds = { table.unpack(where) }
  local vals = { table.unpack(args) }
  if since ~= nil then
    conds[#conds + 1] = since_col
    vals[#vals + 1] = since
  end
  if #conds > 0 then sql = sql .. " WHERE " .. table.concat(conds, " AND ") end
  if since ~= nil or limit == nil then
    sql = sql .. " ORDER BY id"
    if limit then sql = sql .. " LIMIT " .. math.tointeger(limit) end
    return c:query(sql, table.unpack(vals, 1, #vals))
  end
  sql = "SELECT * FROM (" .. sql .. " ORDER BY id DESC LIMIT " .. math.tointeger(limit) .. ") ORDER BY id"
  return c:query(sql, table.unpack(vals, 1, #vals))
end

local function check_limit(what, limit)
  if limit ~= nil and (math.type(limit) ~= "integer" or limit < 0) then
    error(what .. ": limit: expected a non-negative integer, got " .. tostring(limit), 3)
  end
end

-- ------------------------------------------------------------------ sandboxes

local SANDBOX = {
  name = "string", state = "string", repo = "string", branch = "string", base = "string",
  image = "string", network = "string", preset = "string", workspace = "string",
  container_id = "string", hook_token = "string", pid = "integer", error = "string",
  spec = "json", data = "json",
}
local SANDBOX_JSON = { "spec", "data" }

local function check_name(what, name)
  if type(name) ~= "string" then error(what .. ": name: expected string, got " .. type(name), 3) end
  if name == "" or #name > 200 or name:find("[%c/]") then
    error(what .. ": name: '" .. name .. "' is not a valid sandbox name", 3)
  end
end

local sandboxes = {}
M.sandboxes = sandboxes

--- The sandbox named `name`, or nil.
---@param name string
---@return table|nil
function sandboxes.get(name)
  check_name("state.sandboxes.get", name)
  return decode_fields(M.db():row("SELECT * FROM sandboxes WHERE name = ?", name), SANDBOX_JSON)
end

--- A free sandbox name derived from `base`: base, base-2, base-3, ... (not reserved: insert
--- with `{unique=true}` to pick and take a name atomically).
---@param base string
---@return string
function sandboxes.unique_name(base)
  check_name("state.sandboxes.unique_name", base)
  local taken = {}
  for _, r in ipairs(M.db():query(
      "SELECT name FROM sandboxes WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '-'", base)) do
    taken[r.name] = true
  end
  if not taken[base] then return base end
  local n = 2
  while taken[base .. "-" .. n] do n = n + 1 end
  return base .. "-" .. n
end

--- Insert a sandbox row and return it as stored. `row.name` is required; created_at,
--- updated_at and pid are filled in. Raises `state.name_taken` when the name is in use, or
--- with `opts.unique` takes the first free name from `row.name` (base, base-2, ...)
--- atomically: two processes creating "x" at once get "x" and "x-2".
---@param row table
---@param opts? {unique?: boolean}
---@return table
function sandboxes.insert(row, opts)
  check_fields("state.sandboxes.insert", row, SANDBOX, 2)
  check_name("state.sandboxes.insert", row.name)
  local r = util.copy(row)
  local now = M.now()
  r.created_at, r.updated_at = now, now
  r.pid = r.pid or uv.os_getpid()
  r.spec = encode(r.spec or {})
  r.data = encode(r.data or {})
  local c = M.db()
  local ok, err = pcall(c.transaction, c, function()
    if opts and opts.unique then r.name = sandboxes.unique_name(r.name) end
    local sql, vals = insert_sql("sandboxes", r)
    c:run(sql, table.unpack(vals, 1, #vals))
  end)
  if not ok then
    if errors.is(err, "db.constraint") and err.constraint == "unique" then
      errors.raise("state.name_taken", "a sandbox named '" .. r.name .. "' already exists",
        "choose another name (-n NAME), or remove it first: foundry rm " .. r.name,
        { name = r.name })
    end
    error(err, 0)
  end
  return sandboxes.get(r.name)
end

--- Change fields of the sandbox `name` (updated_at and pid are set) and return the row. Raises
--- `state.not_found` when there is none. Renaming (fields.name) moves its events, logs,
--- chat and subtasks with it, and raises `state.name_taken` if the new name is in use.
---@param name string
---@param fields table
---@return table
function sandboxes.update(name, fields)
  check_name("state.sandboxes.update", name)
  check_fields("state.sandboxes.update", fields, SANDBOX, 2)
  if fields.name ~= nil then check_name("state.sandboxes.update", fields.name) end
  local sets, vals = {}, {}
  for k, v in pairs(fields) do
    sets[#sets + 1] = k .. " = ?"
    if k == "spec" or k == "data" then v = encode(v) end
    vals[#vals + 1] = v
  end
  sets[#sets + 1] = "updated_at = ?"
  vals[#vals + 1] = M.now()
  if fields.pid == nil then
    sets[#sets + 1] = "pid = ?"
    vals[#vals + 1] = uv.os_getpid()
  end
  vals[#vals + 1] = name
  local c = M.db()
  local ok, res = pcall(c.transaction, c, function()
    return c:run("UPDATE sandboxes SET " .. table.concat(sets, ", ") .. " WHERE name = ?",
      table.unpack(vals, 1, #vals))
  end)
  if not ok then
    if errors.is(res, "db.constraint") and res.constraint == "unique" then
      errors.raise("state.name_taken", "a sandbox named '" .. tostring(fields.name) .. "' already exists",
        nil, { name = fields.name })
    end
    error(res, 0)
  end
  if res.changes == 0 then
    errors.raise("state.not_found", "no sandbox named '" .. name .. "'", "'foundry ls' lists the sandboxes")
  end
  return sandboxes.get(fields.name or name)
end

--- Sandboxes ordered by creation; `opts.state` filters (a string or a list of them).
---@param opts? {state?: string|string[]}
---@return table[]
function sandboxes.list(opts)
  opts = opts or {}
  check_fields("state.sandboxes.list", opts, { state = "any" }, 2)
  local c = M.db()
  local rows
  if opts.state == nil then
    rows = c:query("SELECT * FROM sandboxes ORDER BY created_at, id")
  else
    local states = type(opts.state) == "table" and opts.state or { opts.state }
    local marks = {}
    for i = 1, #states do marks[i] = "?" end
    rows = c:query("SELECT * FROM sandboxes WHERE state IN (" .. table.concat(marks, ", ") ..
      ") ORDER BY created_at, id", table.unpack(states))
  end
  return decode_all(rows, SANDBOX_JSON)
end

--- Delete the sandbox `name` with its events, logs, chat and subtasks (history,
--- notifications and the audit log stay). Returns true if a row was deleted.
---@param name string
---@return boolean
function sandboxes.delete(name)
  check_name("state.sandboxes.delete", name)
  local c = M.db()
  return c:transaction(function()
    return c:run("DELETE FROM sandboxes WHERE name = ?", name).changes > 0
  end)
end

-- ------------------------------------------------------------------ history

local history = {}
M.history = history

local function decode_history(r)
  if r and r.argv then r.argv = decode(r.argv, "argv") end
  return r
end

--- Keep the history at most this long.
history.max_rows = 10000

--- Record a command line: `{command=, argv=, cwd=, sandbox=}` (argv without the program
--- name). Returns the row id (for `history.finish`).
---@param row {command: string, argv?: string[], cwd?: string, sandbox?: string}
---@return integer
function history.add(row)
  check_fields("state.history.add", row,
    { command = "string", argv = "table", cwd = "string", sandbox = "string" }, 2)
  need("state.history.add", row, "command")
  local c = M.db()
  return c:transaction(function()
    local id = c:run("INSERT INTO history (command, argv, cwd, sandbox, created_at) VALUES (?, ?, ?, ?, ?)",
      row.command, json.encode(json.array(row.argv or {})), row.cwd, row.sandbox, M.now()).last_id
    if id % 100 == 0 then
      c:run("DELETE FROM history WHERE id <= ?", id - history.max_rows)
    end
    return id
  end)
end

--- Record the exit status of history entry `id`.
function history.finish(id, status)
  if math.type(id) ~= "integer" then error("state.history.finish: id: expected integer", 2) end
  local c = M.db()
  c:transaction(function()
    c:run("UPDATE history SET status = ? WHERE id = ?", math.tointeger(status), id)
  end)
end

--- The most recent entry, of `opts.command` (a name or a list of names) when given; nil
--- when there is none.
---@param opts? {command?: string|string[], sandbox?: string}
---@return table|nil
function history.last(opts)
  opts = opts or {}
  check_fields("state.history.last", opts, { command = "any", sandbox = "string" }, 2)
  local conds, vals = {}, {}
  if opts.command then
    local cmds = type(opts.command) == "table" and opts.command or { opts.command }
    local marks = {}
    for i, v in ipairs(cmds) do marks[i] = "?"; vals[#vals + 1] = v end
    conds[#conds + 1] = "command IN (" .. table.concat(marks, ", ") .. ")"
  end
  if opts.sandbox then conds[#conds + 1] = "sandbox = ?"; vals[#vals + 1] = opts.sandbox end
  local sql = "SELECT * FROM history" .. (#conds > 0 and (" WHERE " .. table.concat(conds, " AND ")) or "") ..
    " ORDER BY id DESC LIMIT 1"
  return decode_history(M.db():row(sql, table.unpack(vals)))
end

--- The most recent `opts.limit` entries (all when nil), oldest first, like a shell's
--- `history`.
---@param opts? {limit?: integer, command?: string, sandbox?: string}
---@return table[]
function history.list(opts)
  opts = opts or {}
  check_fields("state.history.list", opts, { limit = "integer", command = "string", sandbox = "string" }, 2)
  check_limit("state.history.list", opts.limit)
  local where, args = {}, {}
  if opts.command then where[#where + 1] = "command = ?"; args[#args + 1] = opts.command end
  if opts.sandbox then where[#where + 1] = "sandbox = ?"; args[#args + 1] = opts.sandbox end
  local rows = tail(M.db(), "history", where, args, nil, nil, opts.limit)
  for _, r in ipairs(rows) do decode_history(r) end
  return rows
end

-- ------------------------------------------------------------------ per-sandbox logs

-- add/list for a table of timestamped rows belonging to a sandbox.
local function log_table(tbl, fields, required, json_cols, since_mode, filters)
  local api = {}
  local what = "state." .. tbl
  function api.add(row)
    check_fields(what .. ".add", row, fields, 2)
    for _, k in ipairs(required) do need(what .. ".add", row, k) end
    local r = util.copy(row)
    for _, k in ipairs(json_cols) do r[k] = encode(r[k]) end
    local now = M.now()
    if fields.ts then r.ts = r.ts or now else r.created_at, r.updated_at = now, now end
    local c = M.db()
    local ok, res = pcall(c.transaction, c, function()
      local sql, vals = insert_sql(tbl, r)
      return c:run(sql, table.unpack(vals, 1, #vals)).last_id
    end)
    if not ok then no_sandbox(res, row.sandbox) end
    return res
  end
  function api.list(opts)
    opts = opts or {}
    local allowed = { sandbox = "string", limit = "integer", since_id = "integer" }
    if since_mode == "ts" then allowed.since = "integer" end
    if fields.state then allowed.state = "string" end
    for k in pairs(filters or {}) do allowed[k] = "any" end
    check_fields(what .. ".list", opts, allowed, 2)
    check_limit(what .. ".list", opts.limit)
    local where, args = {}, {}
    for k, f in pairs(filters or {}) do
      if opts[k] ~= nil then where[#where + 1] = f(opts[k]) end
    end
    if opts.sandbox then where[#where + 1] = "sandbox = ?"; args[#args + 1] = opts.sandbox end
    if opts.state then where[#where + 1] = "state = ?"; args[#args + 1] = opts.state end
    local since_col, since = "id > ?", opts.since_id
    if opts.since ~= nil then
      if since ~= nil then
        where[#where + 1] = "id > ?"; args[#args + 1] = since
      end
      since_col, since = "ts >= ?", opts.since
    end
    return decode_all(tail(M.db(), tbl, where, args, since_col, since, opts.limit), json_cols)
  end
  return api
end

--- events.add{sandbox=, kind=, data=} -> id; events.list{sandbox=, since=(ms), since_id=,
--- limit=} -> rows ascending (with neither since: the last `limit`).
M.events = log_table("events", { sandbox = "string", kind = "string", data = "json", ts = "integer" },
  { "kind" }, { "data" }, "ts")

--- logs.add{sandbox=, stream=, text=} -> id; logs.list{sandbox=, since_id=, limit=}.
M.logs = log_table("logs", { sandbox = "string", stream = "string", text = "string", ts = "integer" },
  { "sandbox", "stream" }, {}, "ts")

--- chat.add{sandbox=, role=, text=, data=} -> id; chat.list{sandbox=, since_id=, limit=}.
M.chat = log_table("chat", { sandbox = "string", role = "string", text = "string", data = "json", ts = "integer" },
  { "sandbox", "role" }, { "data" }, "ts")

--- notifications.add{sandbox=, level=, title=, text=, data=} -> id;
--- notifications.list{sandbox=, unread=, since_id=, limit=}; notifications.mark_read(id?)
--- (all when id is nil).
M.notifications = log_table("notifications",
  { sandbox = "string", level = "string", title = "string", text = "string", data = "json", ts = "integer" },
  { "title" }, { "data" }, "ts",
  { unread = function(v) return v and "read_at IS NULL" or "read_at IS NOT NULL" end })

do
  function M.notifications.mark_read(id)
    local c = M.db()
    return c:transaction(function()
      if id == nil then
        return c:run("UPDATE notifications SET read_at = ? WHERE read_at IS NULL", M.now()).changes
      end
      return c:run("UPDATE notifications SET read_at = ? WHERE id = ? AND read_at IS NULL", M.now(), id).changes
    end)
  end
end

--- subtasks.add{sandbox=, title=, state=, data=} -> id; subtasks.list{sandbox=, state=};
--- subtasks.update(id, {title=, state=, data=}).
M.subtasks = log_table("subtasks", { sandbox = "string", title = "string", state = "string", data = "json" },
  { "sandbox", "title" }, { "data" }, "id")

function M.subtasks.update(id, fields)
  if math.type(id) ~= "integer" then error("state.subtasks.update: id: expected integer", 2) end
  check_fields("state.subtasks.update", fields, { title = "string", state = "string", data = "json" }, 2)
  local sets, vals = {}, {}
  for k, v in pairs(fields) do
    sets[#sets + 1] = k .. " = ?"
    vals[#vals + 1] = k == "data" and encode(v) or v
  end
  sets[#sets + 1] = "updated_at = ?"
  vals[#vals + 1] = M.now()
  vals[#vals + 1] = id
  local c = M.db()
  local n = c:transaction(function()
    return c:run("UPDATE subtasks SET " .. table.concat(sets, ", ") .. " WHERE id = ?",
      table.unpack(vals, 1, #vals)).changes
  end)
  if n == 0 then errors.raise("state.not_found", "no subtask " .. id) end
end

-- ------------------------------------------------------------------ presets

local presets = {}
M.presets = presets

--- Record a preset: `{name=, source=, path=}` (replaces one of the same name).
function presets.put(row)
  check_fields("state.presets.put", row, { name = "string", source = "string", path = "string" }, 2)
  need("state.presets.put", row, "name")
  local c = M.db()
  local now = M.now()
  c:transaction(function()
    c:run([[INSERT INTO presets (name, source, path, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT(name) DO UPDATE SET source = excluded.source, path = excluded.path,
              updated_at = excluded.updated_at]], row.name, row.source, row.path, now, now)
  end)
  return presets.get(row.name)
end

--- The preset named `name`, or nil.
function presets.get(name)
  if type(name) ~= "string" then error("state.presets.get: name: expected string, got " .. type(name), 2) end
  return M.db():row("SELECT * FROM presets WHERE name = ?", name)
end

--- Every recorded preset, by name.
function presets.list()
  return M.db():query("SELECT * FROM presets ORDER BY name")
end

--- Forget a preset; true if there was one.
function presets.delete(name)
  if type(name) ~= "string" then error("state.presets.delete: name: expected string, got " .. type(name), 2) end
  local c = M.db()
  return c:transaction(function()
    return c:run("DELETE FROM presets WHERE name = ?", name).changes > 0
  end)
end

-- ------------------------------------------------------------------ queue

local queue = {}
M.queue = queue

--- A claimed item that is not done or failed within this time is claimed again (its
--- worker died).
queue.lease_ms = 5 * 60 * 1000

local function decode_item(r)
  if r and r.payload then r.payload = decode(r.payload, "payload") end
  return r
end

--- Add work: `{kind=, payload=, delay_ms=, max_attempts=}` (payload: a table or JSON).
--- Returns its id.
function queue.push(item)
  check_fields("state.queue.push", item,
    { kind = "string", payload = "json", delay_ms = "integer", max_attempts = "integer" }, 2)
  need("state.queue.push", item, "kind")
  local c = M.db()
  local now = M.now()
  return c:transaction(function()
    return c:run([[INSERT INTO queue (kind, payload, max_attempts, next_at, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?)]], item.kind, encode(item.payload), item.max_attempts or 5,
      now + (item.delay_ms or 0), now, now).last_id
  end)
end

--- Take the next ready item (oldest first; `opts.kind` filters), marking it running, or
--- nil. Atomic across processes: an item is handed to one worker at a time. An item
--- claimed longer than `queue.lease_ms` ago without done/fail is handed out again.
---@param opts? {kind?: string}
---@return table|nil {id=, kind=, payload=, attempts=, ...}
function queue.claim(opts)
  opts = opts or {}
  check_fields("state.queue.claim", opts, { kind = "string" }, 2)
  local c = M.db()
  local now = M.now()
  return c:transaction(function()
    local r = c:row([[SELECT id FROM queue
        WHERE ((state = 'pending' AND next_at <= ?1) OR (state = 'running' AND claimed_at <= ?2))
          AND (?3 IS NULL OR kind = ?3)
        ORDER BY next_at, id LIMIT 1]], now, now - queue.lease_ms, opts.kind)
    if not r then return nil end
    c:run([[UPDATE queue SET state = 'running', attempts = attempts + 1, claimed_at = ?, updated_at = ?
            WHERE id = ?]], now, now, r.id)
    return decode_item(c:row("SELECT * FROM queue WHERE id = ?", r.id))
  end)
end

local function settle(what, id, fn)
  if math.type(id) ~= "integer" then error(what .. ": id: expected integer, got " .. typename(id), 3) end
  local c = M.db()
  return c:transaction(function()
    local r = c:row("SELECT * FROM queue WHERE id = ?", id)
    if not r then errors.raise("state.not_found", "no queue item " .. id) end
    return fn(c, r)
  end)
end

--- Mark a claimed item done.
function queue.done(id)
  settle("state.queue.done", id, function(c, r)
    c:run("UPDATE queue SET state = 'done', error = NULL, updated_at = ? WHERE id = ?", M.now(), r.id)
  end)
end

--- Record a failure of a claimed item: it is retried later (exponential backoff from 1 s,
--- at most 5 min) until max_attempts, then marked failed. Returns the new state.
---@return "pending"|"failed"
function queue.fail(id, err)
  return settle("state.queue.fail", id, function(c, r)
    local now = M.now()
    local msg = err ~= nil and errors.message(err) or nil
    if r.attempts >= r.max_attempts then
      c:run("UPDATE queue SET state = 'failed', error = ?, updated_at = ? WHERE id = ?", msg, now, r.id)
      return "failed"
    end
    local backoff = math.min(1000 * 2 ^ math.max(r.attempts - 1, 0), 300000)
    c:run("UPDATE queue SET state = 'pending', error = ?, next_at = ?, updated_at = ? WHERE id = ?",
      msg, now + math.floor(backoff), now, r.id)
    return "pending"
  end)
end

--- Items, oldest first; `opts.state` and `opts.kind` filter.
function queue.list(opts)
  opts = opts or {}
  check_fields("state.queue.list", opts, { state = "string", kind = "string", limit = "integer" }, 2)
  check_limit("state.queue.list", opts.limit)
  local where, args = {}, {}
  if opts.state then where[#where + 1] = "state = ?"; args[#args + 1] = opts.state end
  if opts.kind then where[#where + 1] = "kind = ?"; args[#args + 1] = opts.kind end
  local rows = tail(M.db(), "queue", where, args, nil, nil, opts.limit)
  for _, r in ipairs(rows) do decode_item(r) end
  return rows
end

-- ------------------------------------------------------------------ times

--- Parse a time for `--since`: a duration before now ("90s", "10m", "2h", "3d"), an
--- ISO date ("2024-05-01", "2024-05-01T12:00:00", "2024-05-01 12:00", optional "Z" means
--- UTC, otherwise local time), or milliseconds since the epoch. Returns milliseconds since
--- the epoch, or raises `usage`.
---@param s string|integer
---@return integer
function M.parse_time(s)
  if math.type(s) == "integer" then return s end
  if type(s) ~= "string" then error("state.parse_time: expected string, got " .. type(s), 2) end
  local n, unit = s:match("^(%d+)([smhdw])$")
  if n then
    local mult = { s = 1000, m = 60000, h = 3600000, d = 86400000, w = 604800000 }
    return M.now() - tonumber(n) * mult[unit]
  end
  if s:match("^%d%d%d%d%d%d%d%d%d+$") then return math.tointeger(tonumber(s)) end
  local y, mo, d, rest = s:match("^(%d%d%d%d)-(%d%d)-(%d%d)(.*)$")
  if y then
    local hh, mi, ss, z = 0, 0, 0, ""
    if rest ~= "" then
      local h2, m2, s2, z2 = rest:match("^[T ](%d%d):(%d%d):?(%d*)(Z?)$")
      if not h2 then y = nil else hh, mi, ss, z = h2, m2, (s2 ~= "" and s2 or 0), z2 end
    end
    if y then
      local t = { year = tonumber(y), month = tonumber(mo), day = tonumber(d),
        hour = tonumber(hh), min = tonumber(mi), sec = tonumber(ss) }
      local secs
      if z == "Z" then
        -- os.time reads local time: correct by the offset at that moment
        local lt = os.time(t)
        local utc = os.time(os.date("!*t", lt))
        secs = lt + (lt - utc)
      else
        t.isdst = nil
        secs = os.time(t)
      end
      return secs * 1000
    end
  end
  errors.raise("usage", "cannot read the time '" .. s .. "'",
    "use a duration (90s, 10m, 2h, 3d), a date (2024-05-01, 2024-05-01T12:00:00Z) or epoch milliseconds")
end

--- Format epoch milliseconds as local "YYYY-MM-DD HH:MM:SS", or ISO 8601 UTC with
--- milliseconds when `utc` ("2024-05-01T12:00:00.123Z").
function M.format_time(ms, utc)
  if ms == nil then return "" end
  local secs = ms // 1000
  if utc then return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. string.format(".%03dZ", ms % 1000) end
  return os.date("%Y-%m-%d %H:%M:%S", secs)
end

return M
