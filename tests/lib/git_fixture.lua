--- Git safety fixtures: a local git smart-HTTP upstream (tests/lib/git_http_server.py)
--- holding bare repositories, a "sandbox" clone whose objects a guard judges by, and the
--- real `git` run with a private HOME. Load with `dofile("tests/lib/git_fixture.lua")`.
---
---   local F = dofile("tests/lib/git_fixture.lua")
---   local fx = F.new()                      -- temp dir, upstream server, acme/app seeded
---   fx:git(fx.ws, "push", url, "HEAD:sandbox/t1")
---   fx:upstream_ref("acme/app", "main"); fx:log()  -- what reached the upstream
---   fx:close()
local fs = require "foundry.fs"
local exec = require("foundry.exec").exec
local json = require "foundry.json"
local net = dofile("tests/lib/net.lua")

local M = {}

local Fx = {}
Fx.__index = Fx

--- A fresh fixture. `opts.tls = {cert=, key=}` serves HTTPS.
function M.new(opts)
  opts = opts or {}
  local dir = fs.mkdtemp("/tmp/fgs-XXXXXX")
  local self = setmetatable({ dir = dir, root = dir .. "/root", home = dir .. "/home" }, Fx)
  fs.mkdir(self.root)
  fs.mkdir(self.home)
  fs.write(self.home .. "/.gitconfig", table.concat({
    "[user]", "\tname = Agent", "\temail = agent@example.invalid",
    "[init]", "\tdefaultBranch = main",
    "[advice]", "\tdetachedHead = false",
    "[safe]", "\tdirectory = *", "" }, "\n"))
  self.logfile = dir .. "/upstream.log"
  fs.write(self.logfile, "")
  local argv = { "python3", "tests/lib/git_http_server.py", self.root, dir .. "/port", self.logfile }
  if opts.tls then argv[#argv + 1] = opts.tls.cert; argv[#argv + 1] = opts.tls.key end
  self.server = net.start(argv)
  local ok = net.eventually(function() return fs.exists(dir .. "/port") end, 10000)
  if not ok then
    local err = self.server:stderr()
    self:close()
    error("git_http_server did not start: " .. err)
  end
  self.port = tonumber(fs.sync.read(dir .. "/port"))
  return self
end

--- Run git with the fixture's HOME (and `fx.env`, e.g. a proxy); returns the exec
--- result (never raises).
function Fx:git(cwd, ...)
  local argv = { "git", ... }
  argv.cwd = cwd
  argv.env = { HOME = self.home, GIT_CONFIG_NOSYSTEM = "1", GIT_TERMINAL_PROMPT = "0", LC_ALL = "C",
               GIT_ASKPASS = false, SSH_ASKPASS = false, http_proxy = false, https_proxy = false,
               HTTP_PROXY = false, HTTPS_PROXY = false }
  for k, v in pairs(self.env or {}) do argv.env[k] = v end
  argv.timeout = 60000
  return exec(argv)
end

--- Like git, raising with its stderr when it fails.
function Fx:must(cwd, ...)
  local r = self:git(cwd, ...)
  if not r.ok then error("git " .. table.concat({ ... }, " ") .. " failed: " .. r.stderr, 2) end
  return (r.stdout:gsub("\n$", ""))
end

--- Make the bare repository ROOT/owner/name.git from a seed work tree: `files` are
--- written and committed on main; `branches` point at that commit too, `tags` as well.
function Fx:seed(repo, files, branches, tags)
  local bare = self.root .. "/" .. repo .. ".git"
  fs.mkdir(self.root .. "/" .. repo:match("^[^/]+"))
  self:must(self.dir, "init", "-q", "--bare", bare)
  local seed = self.dir .. "/seed-" .. repo:gsub("/", "-")
  self:must(self.dir, "init", "-q", seed)
  for path, content in pairs(files) do
    local d = path:match("^(.*)/[^/]+$")
    if d then exec{ "mkdir", "-p", seed .. "/" .. d, check = true } end
    fs.write(seed .. "/" .. path, content)
  end
  self:must(seed, "add", "-A")
  self:must(seed, "commit", "-qm", "initial")
  local refs = { "main" }
  for _, b in ipairs(branches or {}) do self:must(seed, "branch", b); refs[#refs + 1] = b end
  for _, t in ipairs(tags or {}) do self:must(seed, "tag", t); refs[#refs + 1] = "refs/tags/" .. t end
  self:must(seed, "push", "-q", bare, table.unpack(refs))
  return bare
end

--- The id a ref of an upstream repository points to, or nil.
function Fx:upstream_ref(repo, ref)
  local r = self:git(self.root .. "/" .. repo .. ".git", "rev-parse", "--verify", "-q", ref)
  return r.ok and (r.stdout:gsub("\n$", "")) or nil
end

--- Every request that reached the upstream, decoded.
function Fx:log()
  local out = {}
  for line in (fs.sync.read(self.logfile) or ""):gmatch("[^\n]+") do out[#out + 1] = json.decode(line) end
  return out
end

--- Forget what the upstream saw so far.
function Fx:clear_log() fs.write(self.logfile, "") end

--- Requests to a path ending in `suffix` that reached the upstream.
function Fx:reached(suffix)
  local n = 0
  for _, e in ipairs(self:log()) do
    if e.path:sub(-#suffix) == suffix then n = n + 1 end
  end
  return n
end

function Fx:close()
  if self.server then self.server:stop(); self.server = nil end
  if self.dir and not os.getenv("FOUNDRY_KEEP") then fs.rm(self.dir) end
end

return M
