--- foundry logs NAME [-f]
local common = require "foundry.cli._common"

return {
  summary = "Show a sandbox's setup events and output",
  usage = "foundry logs NAME [-f] [--tail N] [--json]",
  description = [[
Prints the sandbox's recorded events (setup stages, hooks) and log lines, then the
container's own output. -f keeps following the container's output until it stops or
you press Ctrl-C.]],
  flags = {
    { "follow", short = "f", help = "keep printing new output" },
    { "tail", type = "number", arg = "N", help = "only the last N events and lines" },
    { "json", help = "NDJSON: one object per event or line" },
  },
  min_args = 1, max_args = 1,
  order = 10,
  complete = "sandboxes",
  run = function(opts, args)
    local sandbox = require "foundry.sandbox"
    local state = require "foundry.state"
    local sb = sandbox.get(args[1])
    local limit = opts.tail and math.tointeger(opts.tail) or nil
    local rows = {}
    for _, e in ipairs(state.events.list({ sandbox = sb.name, limit = limit })) do
      rows[#rows + 1] = { ts = e.ts, kind = e.kind, data = e.data }
    end
    for _, l in ipairs(state.logs.list({ sandbox = sb.name, limit = limit })) do
      rows[#rows + 1] = { ts = l.ts, kind = "log", stream = l.stream, text = l.text }
    end
    table.sort(rows, function(a, b) return a.ts < b.ts end)
    for _, r in ipairs(rows) do
      if opts.json then
        common.json(r)
      else
        local t = os.date("%H:%M:%S", r.ts // 1000)
        local d = r.data or {}
        if r.kind == "stage" then
          if d.event ~= "start" then
            io.stdout:write(t, "  stage ", d.stage or "?", " ", d.event or "?", d.ms and (" " .. d.ms .. "ms") or "",
              d.reason and (": " .. d.reason) or "", d.error and (": " .. tostring(d.error.message)) or "",
              d.message and (": " .. d.message) or "", "\n")
          end
        elseif r.kind == "log" then
          io.stdout:write(t, "  ", r.stream or "log", "  ", (r.text:gsub("\n$", "")), "\n")
        else
          io.stdout:write(t, "  ", r.kind, " ", require("foundry.json").encode(d), "\n")
        end
      end
    end
    local c = sb:container()
    if not c then return 0 end
    if opts.follow then
      local s <close> = c:logs({ follow = true, tail = limit or "all" })
      while true do
        local chunk, which = s:read()
        if not chunk then break end
        if opts.json then common.json({ kind = "output", stream = which or "stdout", text = chunk })
        else (which == "stderr" and io.stderr or io.stdout):write(chunk) end
      end
      return 0
    end
    local ok, out = pcall(c.logs, c, { tail = limit or "all" })
    if ok then
      if opts.json then
        if out.stdout ~= "" then common.json({ kind = "output", stream = "stdout", text = out.stdout }) end
        if out.stderr ~= "" then common.json({ kind = "output", stream = "stderr", text = out.stderr }) end
      else
        io.stdout:write(out.stdout)
        io.stderr:write(out.stderr)
      end
    end
    return 0
  end,
}
