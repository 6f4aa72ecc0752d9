--- foundry diff NAME
local common = require "foundry.cli._common"

return {
  summary = "Show a sandbox's changes against where it started",
  usage = "foundry diff NAME [--stat] [--json]",
  description = [[
A unified diff of the sandbox's work tree (commits, uncommitted and new files) against
the commit its branch started from.]],
  flags = { { "stat", help = "a summary: files and lines changed" }, { "json", help = "print {name=, diff=}" } },
  min_args = 1, max_args = 1,
  order = 12,
  complete = "sandboxes",
  run = function(opts, args)
    local sandbox = require "foundry.sandbox"
    local sb = sandbox.get(args[1])
    local d = sb:diff({ stat = opts.stat })
    if opts.json then common.json({ name = sb.name, base = sb.base, branch = sb.branch, diff = d }) else io.stdout:write(d) end
    return 0
  end,
}
