--- Helpers for specs that need the Docker engine (require "tests.lib.docker" from the
--- repository root, as tests/run.sh runs them).
---
---   local dh = require "tests.lib.docker"
---   local S = dh.suite("git")            -- labels every container of this suite
---   before_all(function() dh.require_engine(skip); dh.ensure_image() end)
---   after_all(function() S:cleanup() end)
---   local c = S:create{ cmd = {"sleep", "infinity"} }   -- image, labels filled in
local docker = require "foundry.docker"
local errors = require "foundry.errors"

local M = {}

M.IMAGE = "foundry-test:base"
--- Every test container carries this label, so a sweep finds leftovers of any suite.
M.LABEL = "dev.foundry.test"

--- Call the spec's `skip` when no engine answers, unless FOUNDRY_REQUIRE_DOCKER=1 (CI),
--- where a missing engine is a failure: `dh.require_engine(skip)`.
function M.require_engine(skip)
  local ok, err = pcall(docker.ping, { timeout = 5000 })
  if ok then return end
  if os.getenv("FOUNDRY_REQUIRE_DOCKER") == "1" then error(err, 0) end
  skip("no Docker engine: " .. errors.message(err) .. " (bash tests/lib/dockerd.sh starts one)")
end

--- Build the test image with tests/image/build.sh when it is missing (cached: a few
--- seconds when only the image was removed, about 40 s from scratch).
function M.ensure_image(image)
  image = image or M.IMAGE
  if docker.image_exists(image) then return end
  local r = require("foundry.exec").exec{ "bash", "tests/image/build.sh", env = { IMAGE = image } }
  if r.status ~= 0 then
    errors.raise("test.image", "tests/image/build.sh failed (" .. r.status .. "): " .. r.stderr .. r.stdout)
  end
end

local Suite = {}
Suite.__index = Suite

--- A suite's labels and its containers: `name` ends up in dev.foundry.test.suite, and a
--- per-process run id (`.tag`) in dev.foundry.test.run, so parallel runs do not clean up
--- each other.
function M.suite(name)
  local tag = string.format("%d-%d", require("luv").os_getpid(), os.time())
  return setmetatable({ name = name, tag = tag, labels = {
    [M.LABEL] = "1", [M.LABEL .. ".suite"] = name, [M.LABEL .. ".run"] = tag,
  } }, Suite)
end

--- Labels for a container of this suite, plus `extra`.
function Suite:label(extra)
  local l = {}
  for k, v in pairs(self.labels) do l[k] = v end
  for k, v in pairs(extra or {}) do l[k] = v end
  return l
end

--- docker.create with the test image and this suite's labels by default.
function Suite:create(spec)
  spec = spec or {}
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  s.image = s.image or M.IMAGE
  s.labels = self:label(spec.labels)
  return docker.create(s)
end

--- docker.run (create + start) likewise.
function Suite:run(spec)
  local c = self:create(spec)
  c:start()
  return c
end

--- This run's containers that still exist.
function Suite:leftovers()
  return docker.containers{ all = true, labels = { [M.LABEL .. ".run"] = self.tag } }
end

--- Remove every container of this run (running or not), and the images it tagged with
--- its tag; returns how many containers there were.
--- Safe to call when the engine is gone (returns 0).
function Suite:cleanup()
  local ok, list = pcall(self.leftovers, self)
  if not ok then return 0 end
  for _, c in ipairs(list) do
    pcall(docker.container(c.id).remove, docker.container(c.id), { force = true, missing_ok = true })
  end
  -- images this run made: labelled as tests, tagged with the run's tag
  local iok, images = pcall(docker.images, { labels = { [M.LABEL] = "1" } })
  for _, im in ipairs(iok and images or {}) do
    for _, t in ipairs(im.tags) do
      if t:find(self.tag, 1, true) then pcall(docker.image_remove, t, { force = true }) end
    end
  end
  docker.close_idle()
  return #list
end

--- Remove test containers of any run older than `max_age_s` (default an hour): what a
--- killed test run left behind.
function M.sweep(max_age_s)
  local cutoff = os.time() - (max_age_s or 3600)
  local n = 0
  for _, c in ipairs(docker.containers{ all = true, labels = { [M.LABEL] = "1" } }) do
    if (c.created or 0) < cutoff then
      pcall(docker.container(c.id).remove, docker.container(c.id), { force = true, missing_ok = true })
      n = n + 1
    end
  end
  return n
end

return M
