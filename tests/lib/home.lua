--- A private FOUNDRY_HOME for specs (loaded with dofile):
---   local home_dir, leave = H.enter("/tmp/foundry-x-XXXXXX")   -- in before_each/all
---   leave()                                                      -- in after_each/all
--- `leave` closes the state database, restores the previous FOUNDRY_HOME and removes the
--- directory. `sub` puts FOUNDRY_HOME in a subdirectory (the rest is the test's own).
local fs = require "foundry.fs"
local uv = require "luv"

local M = {}

function M.enter(template, sub)
  local saved = os.getenv("FOUNDRY_HOME")
  local dir = fs.mkdtemp(template)
  uv.os_setenv("FOUNDRY_HOME", sub and (dir .. "/" .. sub) or dir)
  return dir, function()
    require("foundry.state").close()
    if saved then uv.os_setenv("FOUNDRY_HOME", saved) else uv.os_unsetenv("FOUNDRY_HOME") end
    fs.rm(dir)
  end
end

return M
