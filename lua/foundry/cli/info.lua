--- foundry info NAME
local common = require "foundry.cli._common"
local json = require "foundry.json"

return {
  summary = "Show a sandbox: state, branch, workspace, container, limits, mounts",
  usage = "foundry info NAME [--json]",
  flags = { { "json", help = "print JSON" } },
  min_args = 1, max_args = 1,
  order = 3,
  complete = "sandboxes",
  run = function(opts, args)
    local sandbox = require "foundry.sandbox"
    local sb = sandbox.get(args[1])
    local live = sb:live_state()
    local info = sb:info(live)
    local spec = sb.spec or {}
    info.container_id = sb.container_id
    info.container_state = live
    info.limits = { cpus = spec.cpus, memory = spec.memory, pids = spec.pids }
    info.mounts = json.array(spec.mounts or {})
    info.workdir = spec.workdir
    info.env = sb.data.env
    local ok, ws = pcall(sb.git_workspace, sb)
    if ok and ws.commits then
      local cok, n = pcall(ws.commits, ws)
      if cok then info.commits = n end
    end
    local stages = {}
    local events = require("foundry.state").events.list({ sandbox = sb.name })
    for _, e in ipairs(events) do
      local d = e.data or {}
      if e.kind == "stage" and (d.event == "done" or d.event == "skip" or d.event == "fail") then
        stages[#stages + 1] = { stage = d.stage, event = d.event, ms = d.ms, reason = d.reason }
      end
    end
    info.stages = json.array(stages)
    if opts.json then common.json(info); return 0 end
    local function line(k, v) if v ~= nil and v ~= "" then io.stdout:write(string.format("%-12s %s\n", k, tostring(v))) end end
    line("name", info.name)
    line("state", info.state .. (live ~= info.state and (" (container: " .. live .. ")") or ""))
    line("branch", info.branch)
    line("base", info.base)
    line("commits", info.commits)
    line("repository", info.repo)
    line("workspace", info.workspace)
    line("image", info.image)
    line("preset", info.preset)
    line("agent", info.agent)
    line("network", info.network)
    line("container", sb.container_id)
    line("limits", string.format("%g cpus, %s memory, %d processes", spec.cpus or 0, tostring(spec.memory), math.floor(spec.pids or 0)))
    for _, m in ipairs(spec.mounts or {}) do line("mount", m.source .. " -> " .. m.target .. (m.read_only and " (ro)" or "")) end
    line("created", info.created_at .. " (" .. common.ago(sb.created_at) .. ")")
    if #stages > 0 then
      local parts = {}
      for _, s in ipairs(stages) do parts[#parts + 1] = s.stage .. (s.event == "skip" and " (skipped)" or s.event == "fail" and " (FAILED)" or "") end
      line("stages", table.concat(parts, ", "))
    end
    return 0
  end,
}
