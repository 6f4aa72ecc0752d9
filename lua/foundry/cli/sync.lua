--- foundry sync NAME
local common = require "foundry.cli._common"

return {
  summary = "Bring a sandbox's commits into your repository as its branch",
  usage = "foundry sync NAME... [--json]",
  description = [[
Updates the branch of the same name in the repository the sandbox was made from, so you
can review, merge or push the sandbox's work from outside. Uncommitted changes stay in
the sandbox: commit them inside first (or let the agent's hook do it).]],
  flags = { { "json", help = "print JSON" } },
  min_args = 1,
  order = 11,
  complete = "sandboxes",
  run = function(opts, args)
    local sandbox = require "foundry.sandbox"
    return common.each(args, opts, function(name)
      local sb = sandbox.get(name)
      local res = sb:sync({ keep_branch = true })
      res.name = name
      if not opts.json then
        if res.updated then
          io.stdout:write(string.format("%s: branch %s in %s (%d new commit%s)\n", name, res.branch, sb.repo,
            res.commits or 0, res.commits == 1 and "" or "s"))
        else
          io.stdout:write(name, ": nothing to sync\n")
        end
      end
      return res
    end)
  end,
}
