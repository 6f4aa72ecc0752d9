--- foundry history [--json] [--limit N] [--command NAME]
local errors = require "foundry.errors"
local json = require "foundry.json"
local state = require "foundry.state"
local util = require "foundry.util"

local function command_line(r)
  local words = { "foundry" }
  for _, a in ipairs(r.argv or {}) do words[#words + 1] = util.shell_quote(a) end
  if #words == 1 then words[2] = r.command end
  return table.concat(words, " ")
end

return {
  summary = "List past commands",
  usage = "foundry history [--json] [--limit N] [--command NAME]",
  description = [[
The commands that changed something (new, run, rm, ...), oldest first, with their exit
status once known and the directory they ran in. 'foundry repeat' re-runs the last new or
run. History stays after a sandbox is removed.]],
  flags = {
    { "json", help = "print a JSON array" },
    { "limit", type = "number", arg = "N", help = "the last N entries (default 50; 0: all)" },
    { "command", type = "string", arg = "NAME", help = "only this command (new, run, rm, ...)" },
  },
  max_args = 0,
  order = 45,
  examples = { "foundry history", "foundry history --command new --json" },
  run = function(opts)
    local limit = opts.limit
    if limit ~= nil and (math.tointeger(limit) == nil or limit < 0) then
      errors.raise("usage", "option --limit: expected a non-negative integer")
    end
    limit = limit and math.tointeger(limit) or 50
    if limit == 0 then limit = nil end
    local rows = state.history.list({ limit = limit, command = opts.command })
    if opts.json then
      local out = json.array({})
      for i, r in ipairs(rows) do
        out[i] = { id = r.id, command = r.command, argv = json.array(r.argv or {}), cwd = r.cwd,
          sandbox = r.sandbox, status = r.status, created_at = state.format_time(r.created_at, true) }
      end
      io.stdout:write(json.encode(out), "\n")
      return 0
    end
    if #rows == 0 then
      io.stderr:write("no history yet\n")
      return 0
    end
    for _, r in ipairs(rows) do
      io.stdout:write(string.format("%5d  %s  %4s  %s%s\n", r.id, state.format_time(r.created_at),
        r.status and tostring(r.status) or "", command_line(r), r.cwd and ("   (in " .. r.cwd .. ")") or ""))
    end
    return 0
  end,
}
