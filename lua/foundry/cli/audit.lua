--- foundry audit [NAME] [-f] [--json] [--since T] [--limit N] | foundry audit verify
local audit = require "foundry.audit"
local errors = require "foundry.errors"
local json = require "foundry.json"
local state = require "foundry.state"
local uv = require "luv"

local function color_on()
  return uv.guess_handle(1) == "tty" and (os.getenv("NO_COLOR") or "") == ""
end

local function fit(s, n)
  s = tostring(s or "")
  if #s > n then return s:sub(1, n - 1) .. "…" end
  return s
end

local function request_text(r)
  local parts = {}
  if r.method then parts[#parts + 1] = r.method end
  if r.host then parts[#parts + 1] = r.host end
  if r.path then parts[#parts + 1] = r.path end
  if #parts == 0 and r.reason then parts[#parts + 1] = r.reason end
  return table.concat(parts, " ")
end

local HEADER = string.format("%-19s  %-16s  %-5s  %-5s  %-50s  %-20s  %s",
  "TIME", "SANDBOX", "DECISION", "KIND", "REQUEST", "RULE", "STATUS")

local function line(r, color)
  local decision = string.format("%-5s", r.decision or "-")
  if color and r.decision == "deny" then decision = "\27[31m" .. decision .. "\27[0m" end
  if color and r.decision == "allow" then decision = "\27[32m" .. decision .. "\27[0m" end
  return string.format("%-19s  %-16s  %s  %-5s  %-50s  %-20s  %s",
    state.format_time(r.ts), fit(r.sandbox or "-", 16), decision .. "   ", fit(r.kind, 5),
    fit(request_text(r), 50), fit(r.rule or "-", 20), r.status and tostring(r.status) or "-")
end

local function json_row(r)
  local out = {}
  for k, v in pairs(r) do out[k] = v end
  if r.data then
    local ok, d = pcall(json.decode, r.data)
    if ok then out.data = d end
  end
  out.time = state.format_time(r.ts, true)
  return json.encode(out)
end

local function verify(opts)
  local res = audit.verify()
  if opts.json then
    io.stdout:write(json.encode(res), "\n")
  elseif res.ok then
    io.stdout:write(string.format("audit log intact: %d row%s checked", res.rows, res.rows == 1 and "" or "s"))
    if res.head and res.head.id > 0 then
      io.stdout:write(string.format("; head row %d, hash %s", res.head.id, res.head.hash))
    end
    io.stdout:write("\n")
  else
    io.stderr:write("foundry: audit log tampered: ", res.reason, "\n",
      "  first bad row: ", tostring(res.first_bad_id), " (", res.rows, " rows before it are intact)\n")
  end
  return res.ok and 0 or 1
end

return {
  summary = "Show the audit log of network, git and hook decisions, or verify its hash chain",
  usage = "foundry audit [NAME] [-f] [--json] [--since T] [--limit N] | foundry audit verify [--json]",
  description = [[
Every decision the proxy, the git policy, the hooks and the API make is a row of the audit
log: time, sandbox, allow or deny, what was asked and which rule decided. NAME shows one
sandbox's rows (rows stay after the sandbox is removed). Without --since, the last --limit
rows (default 100; 0 for all) are shown; -f then keeps printing new rows until Ctrl-C.
--json prints one JSON object a line (NDJSON).

T is a duration before now (90s, 10m, 2h, 3d), a date or time (2024-05-01,
2024-05-01T12:00:00, a trailing Z for UTC) or epoch milliseconds.

'foundry audit verify' recomputes the hash chain and exits 1 naming the first row that was
modified, removed or reordered.]],
  flags = {
    { "follow", short = "f", help = "keep printing new rows (Ctrl-C stops)" },
    { "json", help = "one JSON object a line (NDJSON); with verify, the result object" },
    { "since", type = "string", arg = "T", help = "rows from this time on" },
    { "limit", type = "number", arg = "N", help = "at most N rows (default 100; 0: all)" },
    { "kind", type = "string", arg = "KIND", help = "only rows of this kind (net, git, hook, api, ...)" },
    { "decision", type = "string", arg = "D", values = { "allow", "deny" }, help = "only allowed or denied" },
    { "sandbox", type = "string", arg = "NAME", help = "same as NAME (for a sandbox named 'verify')" },
  },
  max_args = 1,
  order = 40,
  examples = {
    "foundry audit",
    "foundry audit my-sandbox --since 1h --decision deny",
    "foundry audit -f --json",
    "foundry audit verify",
  },
  run = function(opts, args)
    if args[1] == "verify" then return verify(opts) end
    if opts.sandbox and args[1] and opts.sandbox ~= args[1] then
      errors.raise("usage", "two sandbox names: '" .. args[1] .. "' and --sandbox '" .. opts.sandbox .. "'")
    end
    local limit = opts.limit
    if limit ~= nil and (math.type(limit) ~= "integer" and limit ~= math.floor(limit) or limit < 0) then
      errors.raise("usage", "option --limit: expected a non-negative integer")
    end
    limit = limit and math.tointeger(limit) or (opts.since == nil and 100 or nil)
    if limit == 0 then limit = nil end
    local q = { sandbox = opts.sandbox or args[1], kind = opts.kind, decision = opts.decision, limit = limit }
    if opts.since then q.since = state.parse_time(opts.since) end
    local color = not opts.json and color_on()
    local out = io.stdout
    local function emit(r)
      out:write(opts.json and json_row(r) or line(r, color), "\n")
    end
    if not opts.json then out:write(HEADER, "\n") end
    if not opts.follow then
      for _, r in ipairs(audit.query(q)) do emit(r) end
      return 0
    end
    -- follow: poll until Ctrl-C (or SIGTERM), which cancels this task's wait
    local me = require("foundry._task").current()
    local signals = {}
    for _, name in ipairs({ "sigint", "sigterm" }) do
      local h = uv.new_signal()
      h:start(name, function() me:cancel() end)
      signals[#signals + 1] = h
    end
    q.follow = function(r) emit(r); out:flush() end
    local ok, err = pcall(audit.query, q)
    for _, h in ipairs(signals) do h:close() end
    if not ok and not errors.is(err, "cancelled") then error(err, 0) end
    return 0
  end,
}
