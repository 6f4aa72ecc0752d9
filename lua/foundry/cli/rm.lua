--- foundry rm NAME... (alias: destroy)
local errors = require "foundry.errors"
local common = require "foundry.cli._common"

return {
  summary = "Remove sandboxes, leaving no trace (their commits are synced first)",
  usage = "foundry rm NAME... | --all [-y] [--keep-branch] [--discard] [--json]",
  description = [[
Removes the container, the workspace, the run directory and the state row (the history
keeps the command). Commits the sandbox made are first brought into your repository as
its branch (as 'foundry sync' does) unless --discard; a branch without new commits is
not left behind unless --keep-branch. Asks first on a terminal; -y does not ask.]],
  flags = {
    { "yes", short = "y", help = "do not ask" },
    { "all", short = "a", help = "every sandbox" },
    { "keep-branch", help = "leave the branch in the repository even without new commits" },
    { "discard", help = "do not sync: drop the sandbox's commits" },
    { "json", help = "print JSON" },
  },
  order = 8,
  complete = "sandboxes",
  run = function(opts, args)
    local sandbox = require "foundry.sandbox"
    local names = common.names(opts, args, "rm")
    if #names == 0 then
      if not opts.json then io.stderr:write("no sandboxes\n") else common.json(require("foundry.json").array{}) end
      return 0
    end
    if not opts.yes then
      if not common.isatty(0) then
        errors.raise("usage", "rm: confirmation needed to remove " .. table.concat(names, ", "), "pass -y (--yes) to remove without asking")
      end
      if not common.confirm("remove " .. table.concat(names, ", ") .. "?") then
        io.stderr:write("nothing removed\n")
        return 1
      end
    end
    return common.each(names, opts, function(name)
      local sb = sandbox.get(name)
      local res = sb:destroy({ keep_branch = opts["keep-branch"], discard = opts.discard })
      if not opts.json then
        local s = res.synced
        io.stdout:write("removed ", name, s and s.updated and
          string.format(" (%d commit%s kept on branch %s)", s.commits, s.commits == 1 and "" or "s", s.branch) or "", "\n")
        if res.sync_error then io.stderr:write("  warning: sync failed: ", res.sync_error, "\n") end
      end
      return res
    end)
  end,
}
