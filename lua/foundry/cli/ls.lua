--- foundry ls
local common = require "foundry.cli._common"
local json = require "foundry.json"

return {
  summary = "List sandboxes",
  usage = "foundry ls [--json] [-q]",
  description = [[
One line per sandbox: its name, state (the engine's view: running, stopped, missing),
branch, image, network and age. -q prints names only (for scripts and completion).]],
  flags = {
    { "json", help = "print a JSON array of sandboxes" },
    { "quiet", short = "q", help = "names only" },
  },
  max_args = 0,
  order = 2,
  run = function(opts)
    local sandbox = require "foundry.sandbox"
    local list = sandbox.list({ live = not opts.quiet })
    if opts.quiet then
      for _, sb in ipairs(list) do io.stdout:write(sb.name, "\n") end
      return 0
    end
    local infos = {}
    for i, sb in ipairs(list) do infos[i] = sb:info(sb.live) end
    if opts.json then
      common.json(json.array(infos))
      return 0
    end
    if #infos == 0 then
      io.stderr:write("no sandboxes (create one: foundry new)\n")
      return 0
    end
    for i, sb in ipairs(list) do infos[i].age = common.ago(sb.created_at) end
    common.table(infos, {
      { "NAME", "name" }, { "STATE", "state" }, { "BRANCH", "branch" }, { "IMAGE", "image" },
      { "NETWORK", "network" }, { "CREATED", "age" },
    })
    return 0
  end,
}
