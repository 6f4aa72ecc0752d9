--- foundry prune
local errors = require "foundry.errors"
local common = require "foundry.cli._common"

return {
  summary = "Remove what a crashed or killed Foundry left behind",
  usage = "foundry prune [-y] [--dry-run] [--json]",
  description = [[
Finds containers labelled by this Foundry without a sandbox, sandboxes whose creation
was killed or whose container is gone, and run directories and workspaces without a
sandbox, and removes them. Asks first on a terminal; -y does not ask.]],
  flags = {
    { "yes", short = "y", help = "do not ask" },
    { "dry-run", short = "n", help = "only list what would be removed" },
    { "json", help = "print JSON" },
  },
  max_args = 0,
  order = 9,
  run = function(opts)
    local sandbox = require "foundry.sandbox"
    local found = sandbox.prune({ dry_run = true })
    local n = #found.containers + #found.rows + #found.dirs + #found.workspaces
    local function show(f)
      for _, r in ipairs(f.rows) do io.stdout:write("sandbox    ", r.name, " (", r.reason, ")\n") end
      for _, c in ipairs(f.containers) do io.stdout:write("container  ", c.id, " ", c.name or "", "\n") end
      for _, d in ipairs(f.dirs) do io.stdout:write("directory  ", d, "\n") end
      for _, w in ipairs(f.workspaces) do io.stdout:write("workspace  ", w, "\n") end
    end
    if n == 0 then
      if opts.json then common.json(found) else io.stderr:write("nothing to prune\n") end
      return 0
    end
    if opts["dry-run"] then
      if opts.json then common.json(found) else show(found) end
      return 0
    end
    if not opts.yes then
      if not common.isatty(0) then
        errors.raise("usage", "prune: confirmation needed to remove " .. n .. " thing(s)", "pass -y to prune without asking, --dry-run to look")
      end
      show(found)
      if not common.confirm("remove these?") then return 1 end
    end
    local done = sandbox.prune({})
    if opts.json then common.json(done) else show(done); io.stdout:write("pruned\n") end
    return 0
  end,
}
