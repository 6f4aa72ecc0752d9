--- foundry stop NAME...
local common = require "foundry.cli._common"

return {
  summary = "Stop sandboxes (their workspaces and branches stay)",
  usage = "foundry stop NAME... | --all [--json]",
  flags = { { "all", short = "a", help = "every sandbox" }, { "json", help = "print JSON" } },
  order = 6,
  complete = "sandboxes",
  run = function(opts, args)
    local sandbox = require "foundry.sandbox"
    return common.each(common.names(opts, args, "stop"), opts, function(name)
      local sb = sandbox.get(name):stop()
      if not opts.json then io.stdout:write("stopped ", name, "\n") end
      return sb:info("exited")
    end)
  end,
}
