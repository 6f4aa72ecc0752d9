--- foundry start NAME...
local common = require "foundry.cli._common"

return {
  summary = "Start stopped sandboxes again",
  usage = "foundry start NAME... | --all [--json]",
  flags = { { "all", short = "a", help = "every sandbox" }, { "json", help = "print JSON" } },
  order = 7,
  complete = "sandboxes",
  run = function(opts, args)
    local sandbox = require "foundry.sandbox"
    return common.each(common.names(opts, args, "start"), opts, function(name)
      local sb = sandbox.get(name):start()
      if not opts.json then io.stdout:write("started ", name, "\n") end
      return sb:info("running")
    end)
  end,
}
