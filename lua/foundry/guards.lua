--- The proxy's guards: trusted Lua that decides git smart-HTTP requests
--- (foundry.gitsafety) and GitHub API requests (foundry.github) for every sandbox, with
--- the whole request body and the time to look at the sandbox's objects on the host.
---
---   local guards = require "foundry.guards"
---   local g = guards.new{ audit = function(row) ... end }
---   local engine = proxy.engine{ ..., guard = g }     -- proxy.lua passes g's callbacks
---
--- The engine (proxy/proxy.c, "guards") asks `want` for every request a policy allowed,
--- buffers the body of those wanted, calls `request` (which answers through `done`, from
--- a task), and for verdicts with `filter` hands the response to `response`. A sandbox's
--- rules come from its policy's `git` and `github` tables, else policies/github.lua; what
--- it was made for (its branch, its objects, its repositories) from its state row.
local errors = require "foundry.errors"
local gitsafety = require "foundry.gitsafety"
local github = require "foundry.github"
local task = require "foundry._task"

local M = {}

M.API_HOST = github.HOST
M.API_BODY_MAX = 32 * 1024 * 1024   -- Contents API uploads are base64 in JSON
M.FETCH_BODY_MAX = 16 * 1024 * 1024 -- wants and haves of a fetch round
M.PUSH_HEADROOM = 1024 * 1024       -- commands beside the pack

local Guards = {}
Guards.__index = Guards
Guards.__name = "foundry.guards.Guards"

--- `opts.audit(row)`: every decision (rows of kind "git" and "github");
--- `opts.row(name)`: a sandbox's state row when the engine has none (default: the state
--- database); `opts.repos(row)`: the repositories it was made for (default: its source's
--- remotes).
function M.new(opts)
  opts = opts or {}
  return setmetatable({ audit_fn = opts.audit, row_fn = opts.row, repos_fn = opts.repos,
                        ctx = {}, repos_cache = {} }, Guards)
end

function Guards:audit(row)
  if self.audit_fn then pcall(self.audit_fn, row) end
end

--- Forget what was built for sandbox `name` (its policy or row changed).
function Guards:forget(name) self.ctx[name] = nil end

local function rules_of(entry)
  local data = entry and entry.policy and entry.policy.data or {}
  local shipped = github.shipped()
  return data.git or shipped.git or {}, data.github or shipped.github
end

--- Which requests the guards decide, and how much of their bodies they read: false, or a
--- byte count. Synchronous (the engine's data path).
function Guards:want(entry, name, req)
  if req.host == M.API_HOST then return M.API_BODY_MAX end
  local g = gitsafety.parse_git_path(req.host or "", req.path)
  if not g then return false end
  if g.endpoint == "git-receive-pack" then
    local git = rules_of(entry)
    return (git.max_bytes or gitsafety.DEFAULTS.max_bytes) + M.PUSH_HEADROOM
  end
  if g.endpoint == "git-upload-pack" then return M.FETCH_BODY_MAX end
  return 0
end

--- The repositories a sandbox (a state row) was made for: its spec's `repos`, the URL it
--- was made from, or the remotes of the repository it was made from (the user's, never
--- the sandbox's own configuration). URLs or "host/owner/name" ids. May wait.
function M.repos_of(row, cache)
  local spec = type(row.spec) == "table" and row.spec or {}
  if type(spec.repos) == "table" then return spec.repos end
  local src = row.repo
  if type(src) ~= "string" or src == "" then return {} end
  if gitsafety.repo_of_url(src) then return { src } end
  if cache and cache[src] then return cache[src] end
  local r = require("foundry.exec").exec{ "git", "-C", src, "config", "--get-regexp", "^remote\\..*\\.url$",
    timeout = 10000 }
  local out = {}
  for url in (r.stdout or ""):gmatch("%S+ (%S+)") do out[#out + 1] = url end
  if cache then cache[src] = out end
  return out
end

function Guards:_repos(row)
  if self.repos_fn then return self.repos_fn(row) end
  return M.repos_of(row, self.repos_cache)
end

-- What a sandbox's guards are built from, once per (sandbox, policy).
function Guards:_context(entry, name)
  local c = self.ctx[name]
  if c and c.policy == (entry and entry.policy) then return c end
  local row = entry and entry.row
  if not row then
    if self.row_fn then row = self.row_fn(name)
    else row = require("foundry.state").sandboxes.get(name) end
  end
  if type(row) ~= "table" or type(row.branch) ~= "string" then
    errors.raise("guards.no_sandbox", "the proxy knows no branch for sandbox '" .. name .. "'")
  end
  local git_rules, gh_rules = rules_of(entry)
  local data = type(row.data) == "table" and row.data or {}
  local ws = type(data.ws) == "table" and data.ws or {}
  local repos = self:_repos(row)
  local audit = function(r) self:audit(r) end
  c = {
    policy = entry and entry.policy,
    git = gitsafety.guard{ sandbox = name, branch = row.branch, base = ws.base_commit, base_branch = row.base,
                           objects = row.workspace and (row.workspace .. "/.git/objects") or nil,
                           repos = repos, rules = git_rules, audit = audit },
    judge = github.judge{ branch = row.branch, repos = repos, github = gh_rules,
                          restricted = git_rules.restricted or gitsafety.DEFAULTS.restricted },
  }
  -- a context built meanwhile by another request wins (it may have learnt ownership)
  if self.ctx[name] and self.ctx[name].policy == c.policy then return self.ctx[name] end
  self.ctx[name] = c
  return c
end

-- Responses the GitHub judge learns from: what the sandbox creates.
local function creates(req)
  if (req.method or ""):upper() ~= "POST" then return false end
  local p = req.path or ""
  return p == "/graphql" or p:match("^/repos/[^/]+/[^/]+/pulls/?$") ~= nil or p:match("^/repos/[^/]+/[^/]+/issues/?$") ~= nil
end

function Guards:_decide(entry, name, req)
  local c = self:_context(entry, name)
  if req.host == M.API_HOST then
    local v = c.judge:check(req)
    self:audit{ sandbox = name, kind = "github", decision = v.allow and "allow" or "deny", rule = v.rule,
                reason = v.reason, host = req.host, method = req.method, path = req.path }
    if v.allow then return { action = "forward", filter = creates(req), rule = v.rule, reason = v.reason } end
    local r = github.refusal(v)
    r.decision = "deny"
    return r
  end
  return c.git:request(req) or { action = "forward" }
end

--- Decide a request the guards wanted; `done(verdict)` is called exactly once, from a
--- task (the decision may run git on the host). A guard that fails refuses.
function Guards:request(entry, name, req, done)
  local t = task.spawn(function()
    local ok, v = pcall(self._decide, self, entry, name, req)
    if not ok then
      local msg = errors.message(v)
      self:audit{ sandbox = name, kind = "guard", decision = "deny", rule = "guard", reason = msg,
                  host = req.host, path = req.path }
      v = { action = "respond", status = 502, decision = "deny", rule = "guard", reason = msg,
            headers = { ["content-type"] = "text/plain" }, body = "foundry: the proxy's guard failed: " .. msg .. "\n" }
    end
    done(v)
  end)
  t.name = "guard " .. name .. " " .. tostring(req.method) .. " " .. tostring(req.path)
end

--- The response the client gets for a verdict that asked to see it. Synchronous.
function Guards:response(entry, name, req, resp)
  local c = self.ctx[name]
  if not c then return nil end -- no context: the engine answers 502
  if req.host == M.API_HOST then
    pcall(c.judge.observe, c.judge, req, resp)
    return resp
  end
  return c.git:response(req, resp)
end

--- The callbacks proxy.lua hands the engine, given how it finds a sandbox's entry
--- (`{policy=, row=}`) by name.
function Guards:callbacks(lookup)
  return {
    guard_want = function(name, req) return self:want(lookup(name), name, req) end,
    guard = function(name, req, done) return self:request(lookup(name), name, req, done) end,
    guard_response = function(name, req, resp) return self:response(lookup(name), name, req, resp) end,
  }
end

return M
