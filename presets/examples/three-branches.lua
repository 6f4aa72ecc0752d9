-- Three sandboxes from three branches, in parallel: each runs the same check, the
-- results come back side by side, and the sandboxes go (their commits, if any, are kept
-- as their branches).
--
--   foundry run presets/examples/three-branches.lua [REPO] [BRANCH BRANCH BRANCH] [-- CMD]
--   foundry run presets/examples/three-branches.lua . main feature-a feature-b -- make test
--
-- A preset file may be a program like this one instead of a table: it gets the whole
-- Foundry API (`foundry.sandbox`, `foundry.parallel`, ...) and `arg`.
local sandbox = foundry.sandbox

local repo, branches, cmd = arg[1] or ".", {}, nil
for i = 2, #arg do
  if arg[i] == "--" then
    cmd = table.concat(arg, " ", i + 1)
    break
  end
  branches[#branches + 1] = arg[i]
end
if #branches == 0 then branches = { "HEAD", "HEAD", "HEAD" } end
cmd = cmd or "git log --oneline -1 && ls | wc -l"

-- Create all three at once; if one fails, remove those that were made.
local made = {}
local ok, err = pcall(function()
  local creators = {}
  for i, b in ipairs(branches) do
    creators[i] = function()
      local sb = sandbox.create{ repo = repo, from = b, network = "none" }
      made[#made + 1] = sb
      return sb
    end
  end
  local sbs = foundry.parallel(creators)

  local runs = {}
  for i, sb in ipairs(sbs) do
    runs[i] = function() return sb:exec{ "sh", "-c", cmd } end
  end
  local results = foundry.parallel(runs)
  for i, r in ipairs(results) do
    print(string.format("== %s (from %s): exit %d", sbs[i].name, branches[i], r.status))
    io.write(r.stdout, r.stderr)
  end
end)
for _, sb in ipairs(made) do sb:destroy() end
if not ok then error(err, 0) end
return 0
