--- The GitHub API rules: which REST calls and GraphQL mutations a sandbox's token may make
--- on api.github.com. The rules are data (policies/github.lua, or a policy's `github`
--- table); this module compiles and applies them to plain requests.
---
---   local github = require "foundry.github"
---   local judge = github.judge{ branch = "sandbox/fix-1", repos = { "github.com/acme/app" } }
---   local v = judge:check{ method = "PUT", path = "/repos/acme/app/pulls/7/merge", body = "" }
---   --> { allow = false, rule = "github.rest[1]", reason = "merging pull requests is not allowed from a sandbox", ... }
---   judge:observe(req, resp)   -- remembers the pull requests and issues the sandbox opened
---
--- GraphQL requests are parsed (foundry.graphql) and every mutation field is judged with
--- its arguments (variables resolved), never by searching the text.
local errors = require "foundry.errors"
local graphql = require "foundry.graphql"
local gitsafety = require "foundry.gitsafety"

local M = {}

M.HOST = "api.github.com"

-- ------------------------------------------------------------------ loading

local shipped

--- The rules shipped in policies/github.lua (its `github` and `git` tables), loaded once
--- in a restricted VM (the file is data).
function M.shipped()
  if shipped then return shipped end
  local src
  local dev = os.getenv("FOUNDRY_LUA_PATH")
  if dev and dev ~= "" then
    local f = io.open(dev .. "/../policies/github.lua", "rb")
    if f then src = f:read("a"); f:close() end
  end
  src = src or require("foundry._host").resource("policies/github.lua")
  if not src then errors.raise("github.no_rules", "policies/github.lua is not in this build") end
  local vm = require("foundry.vm").new({ memory = 4 << 20, instructions = 1000000, name = "policies/github.lua" })
  local ok, data = pcall(vm.load, vm, src, "@policies/github.lua")
  vm:close()
  if not ok then error(data, 0) end
  shipped = data
  return data
end

-- ------------------------------------------------------------------ conditions

local READ = { GET = true, HEAD = true, OPTIONS = true }

local function own_branch(judge, name)
  return type(name) == "string" and name:gsub("^refs/heads/", "") == judge.branch
end

local function repo_key(params)
  return ((params.owner or "") .. "/" .. (params.repo or "")):lower()
end

local function input_of(ctx)
  local i = ctx.args and ctx.args.input
  return type(i) == "table" and i or {}
end

--- Conditions a rule's `when` may name. Each gets the judge and the request context
--- `{method=, params=, body=, json=, args=}` and returns true when the rule applies. A
--- body that does not decode makes a condition on it true: refusing is the safe side.
M.CONDITIONS = {
  write = function(_, ctx) return not READ[ctx.method] end,
  read = function(_, ctx) return READ[ctx.method] == true end,
  approves = function(_, ctx)
    if ctx.args then return (graphql.text(input_of(ctx).event) or ""):upper() == "APPROVE" end
    if not ctx.json then return ctx.body ~= nil and ctx.body ~= "" end
    return type(ctx.json.event) == "string" and ctx.json.event:upper() == "APPROVE"
  end,
  state_of_others = function(judge, ctx)
    if ctx.args then
      local i = input_of(ctx)
      if i.state == nil then return false end
      return not judge:owns_node(i.pullRequestId or i.issueId or i.id)
    end
    if not ctx.json then return ctx.body ~= nil and ctx.body ~= "" end
    if ctx.json.state == nil then return false end
    return not judge:owns(repo_key(ctx.params), ctx.params.number)
  end,
  node_not_own = function(judge, ctx)
    local i = input_of(ctx)
    return not judge:owns_node(i.pullRequestId or i.issueId or i.id)
  end,
  head_not_own = function(judge, ctx)
    local head
    if ctx.args then head = input_of(ctx).headRefName
    elseif ctx.json then head = ctx.json.head end
    if type(head) ~= "string" then return true end
    return not own_branch(judge, head:match("^[^:]+:(.+)$") or head)
  end,
  contents_not_own = function(judge, ctx)
    if not ctx.json then return true end
    return not own_branch(judge, ctx.json.branch)
  end,
  contents_restricted = function(judge, ctx)
    if READ[ctx.method] then return false end
    local path = ctx.params["**"] or ""
    for _, p in ipairs(judge.restricted) do
      if gitsafety.path_match(p, path) then return true end
    end
    return false
  end,
  other_repo = function(judge, ctx)
    if READ[ctx.method] then return false end
    return not judge.repos[repo_key(ctx.params)]
  end,
  commit_not_own = function(judge, ctx)
    local b = input_of(ctx).branch
    if type(b) ~= "table" or type(b.branchName) ~= "string" then return true end
    if type(b.repositoryNameWithOwner) == "string" and not judge.repos[b.repositoryNameWithOwner:lower()] then
      return true
    end
    return not own_branch(judge, b.branchName)
  end,
  commit_restricted = function(judge, ctx)
    local fc = input_of(ctx).fileChanges
    if type(fc) ~= "table" then return false end
    for _, kind in ipairs({ "additions", "deletions" }) do
      for _, f in ipairs(type(fc[kind]) == "table" and fc[kind] or {}) do
        local path = type(f) == "table" and f.path
        if type(path) ~= "string" then return true end
        for _, p in ipairs(judge.restricted) do
          if gitsafety.path_match(p, path) then return true end
        end
      end
    end
    return false
  end,
}

-- ------------------------------------------------------------------ compiling

local function invalid(where, msg)
  errors.raise("policy.invalid", where .. ": " .. msg, "see docs/policies.md \"Git and GitHub rules\"")
end

local function known(where, what, name, set)
  if set[name] ~= nil then return end
  local util = require "foundry.util"
  local near = util.did_you_mean(name, util.keys(set))
  invalid(where, "unknown " .. what .. " '" .. tostring(name) .. "'" .. (near and (" — did you mean '" .. near .. "'?") or ""))
end

local function compile_rule(r, where, options)
  if type(r) ~= "table" then invalid(where, "expected a table") end
  if (r.deny ~= nil) == (r.allow ~= nil) then invalid(where, "a rule says exactly one of deny = \"...\" or allow = \"...\"") end
  local what = r.deny or r.allow
  if type(what) ~= "string" then invalid(where, "deny/allow: expected a string saying what") end
  if r.when ~= nil then known(where .. ".when", "condition", r.when, M.CONDITIONS) end
  if r.unless ~= nil then
    if type(r.unless) ~= "string" then invalid(where .. ".unless", "expected an option name") end
    known(where .. ".unless", "option", r.unless, options)
  end
  return { action = r.deny and "deny" or "allow", what = what, when = r.when, unless = r.unless, src = where }
end

local function split_path(path)
  local segs = {}
  for s in path:gmatch("[^/]+") do segs[#segs + 1] = s end
  return segs
end

--- Validate and compile `github` rules (the table of policies/github.lua). Raises
--- `policy.invalid` naming the key path.
function M.compile(spec, where)
  where = where or "github"
  if type(spec) ~= "table" then invalid(where, "expected a table") end
  for k in pairs(spec) do known(where, "key", k, { options = 1, default = 1, rest = 1, graphql = 1 }) end
  local options = {}
  for k, v in pairs(spec.options or {}) do
    if type(v) ~= "boolean" then invalid(where .. ".options." .. tostring(k), "expected a boolean") end
    options[k] = v
  end
  local default = spec.default or "allow"
  if default ~= "allow" and default ~= "deny" then invalid(where .. ".default", "expected \"allow\" or \"deny\"") end
  local out = { options = options, default = default, rest = {}, graphql = {} }
  for i, r in ipairs(spec.rest or {}) do
    local w = where .. ".rest[" .. i .. "]"
    local c = compile_rule(r, w, options)
    if type(r[1]) ~= "string" or not (r[1] == "*" or r[1]:match("^%u+$")) then invalid(w, "expected a method (\"GET\", \"*\") first") end
    if type(r[2]) ~= "string" or r[2]:sub(1, 1) ~= "/" then invalid(w, "expected a path starting with '/' second") end
    c.method = r[1]
    c.path = r[2]
    c.segs = split_path(r[2])
    for j, s in ipairs(c.segs) do
      if s == "**" and j ~= #c.segs then invalid(w, "'**' only at the end of a path") end
    end
    out.rest[#out.rest + 1] = c
  end
  for i, r in ipairs(spec.graphql or {}) do
    local w = where .. ".graphql[" .. i .. "]"
    local c = compile_rule(r, w, options)
    if type(r[1]) ~= "string" or not r[1]:match("^[_%a][_%w]*$") then invalid(w, "expected a mutation name first") end
    c.mutation = r[1]
    out.graphql[#out.graphql + 1] = c
  end
  return out
end

-- ------------------------------------------------------------------ paths

local function decode_segment(s)
  local bad = false
  local d = s:gsub("%%(%x%x)", function(h)
    local c = string.char(tonumber(h, 16))
    if c == "/" or c == "\\" or c == "%" or c:byte() < 32 or c:byte() == 127 then bad = true end
    return c
  end)
  return d, bad
end

--- Split a request path into decoded segments. Returns nil when the path is unusual
--- (encoded slashes, dot or empty segments) — a write to such a path is refused.
function M.canonical_path(path)
  path = path:gsub("^/api/v3/", "/")
  local segs = {}
  local body = path:gsub("/$", "")
  if body == "" then return segs end
  if body:sub(1, 1) ~= "/" then return nil end
  for s in (body:sub(2) .. "/"):gmatch("([^/]*)/") do
    local d, bad = decode_segment(s)
    if bad or d == "" or d == "." or d == ".." then return nil end
    segs[#segs + 1] = d
  end
  return segs
end

local function match_path(rule_segs, segs)
  local params = {}
  for i, p in ipairs(rule_segs) do
    if p == "**" then
      params["**"] = table.concat(segs, "/", i)
      return params
    end
    local s = segs[i]
    if not s then return nil end
    if p:sub(1, 1) == ":" then
      params[p:sub(2)] = s
    elseif p ~= "*" and p:lower() ~= s:lower() then
      return nil
    end
  end
  if #segs ~= #rule_segs then return nil end
  return params
end

-- ------------------------------------------------------------------ the judge

local Judge = {}
Judge.__index = Judge
Judge.__name = "foundry.github.Judge"

--- A judge for one sandbox. `opts`: `branch` (its branch), `repos` (what it was made for:
--- ids "github.com/o/r" or URLs), `github` (rules; default the shipped ones), `options`
--- (overrides like `{allow_pr = false}`), `restricted` (path patterns; default the git
--- rules' restricted paths).
function M.judge(opts)
  opts = opts or {}
  if type(opts.branch) ~= "string" or opts.branch == "" then error("github.judge: branch: expected string", 2) end
  local spec = opts.github or M.shipped().github
  local rules = M.compile(spec, opts.where or "github")
  for k, v in pairs(opts.options or {}) do rules.options[k] = v end
  local repos = {}
  for _, r in ipairs(opts.repos or {}) do
    local id = gitsafety.repo_of_url(r) or r:lower():gsub("%.git$", "")
    local owner_repo = id:match("^[^/]+/([^/]+/[^/]+)$") or id
    repos[owner_repo] = true
  end
  local restricted = opts.restricted or (M.shipped().git or {}).restricted or gitsafety.DEFAULTS.restricted
  return setmetatable({ branch = opts.branch:gsub("^refs/heads/", ""), rules = rules, repos = repos,
                        restricted = restricted, owned = {}, owned_nodes = {} }, Judge)
end

function Judge:owns(repo, number)
  return number ~= nil and self.owned[repo .. "#" .. tostring(number)] == true
end

function Judge:owns_node(id)
  return type(id) == "string" and self.owned_nodes[id] == true
end

local function applies(self, rule, ctx)
  if rule.unless and self.rules.options[rule.unless] then return false end
  if rule.when then
    local ok, yes = pcall(M.CONDITIONS[rule.when], self, ctx)
    if not ok then return true end -- a condition that fails is a rule that applies
    return yes == true
  end
  return true
end

local function verdict(rule, extra)
  if rule.action == "allow" then return { allow = true, rule = rule.src, reason = rule.what } end
  local v = { allow = false, rule = rule.src, reason = rule.what .. " is not allowed from a sandbox",
              how_to_allow = "a person does it outside the sandbox, or the sandbox's policy changes " .. rule.src }
  for k, x in pairs(extra or {}) do v[k] = x end
  return v
end

local function deny(rule, reason, how)
  return { allow = false, rule = rule, reason = reason, how_to_allow = how }
end

local function json_decode(s)
  if type(s) ~= "string" or s == "" then return nil end
  local ok, v = pcall(require("cjson.safe").decode, s)
  if ok and type(v) == "table" then return v end
  return nil
end

local function url_decode(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

function Judge:_graphql_op(op, method)
  if type(op) ~= "table" or type(op.query) ~= "string" then
    return deny("github.graphql", "a GraphQL request without a query string")
  end
  local ok, doc = pcall(graphql.parse, op.query)
  if not ok then
    return deny("github.graphql", "the GraphQL query does not parse: " .. errors.message(doc),
      "send a valid GraphQL document")
  end
  local ok2, fields = pcall(graphql.mutation_fields, doc, type(op.variables) == "table" and op.variables or {})
  if not ok2 then return deny("github.graphql", errors.message(fields)) end
  if #fields > 0 and method ~= "POST" then
    return deny("github.graphql", "GraphQL mutations are sent with POST")
  end
  for _, f in ipairs(fields) do
    local decided
    for _, rule in ipairs(self.rules.graphql) do
      if rule.mutation == f.name and applies(self, rule, { method = method, args = f.args, params = {} }) then
        decided = rule
        break
      end
    end
    if decided and decided.action == "deny" then
      return verdict(decided, { mutation = f.name })
    end
    if not decided and self.rules.default == "deny" then
      return deny("github.default", "the mutation " .. f.name .. " is not in the sandbox's allowed list")
    end
  end
  return nil
end

--- Judge a request to api.github.com: `{method=, path=, query=, headers=, body=}`.
--- Returns `{allow=, rule=, reason=, how_to_allow=}`.
function Judge:check(req)
  local method = (req.method or "GET"):upper()
  local headers = req.headers or {}
  local override = headers["x-http-method-override"]
  if override and override:upper() ~= method then
    return deny("github.method", "X-HTTP-Method-Override is not allowed")
  end
  local path = req.path or "/"
  local segs = M.canonical_path(path)
  if not segs then
    if READ[method] then return { allow = true, rule = "github.read" } end
    return deny("github.path", "an unusual path (encoded '/', dot or empty segments) for a write: " .. path)
  end
  -- GraphQL
  if #segs == 1 and segs[1] == "graphql" then
    if method == "GET" then
      local q = (req.query or ""):match("[?&]?query=([^&]*)")
      if not q then return { allow = true, rule = "github.graphql" } end
      local v = self:_graphql_op({ query = url_decode(q) }, "GET")
      return v or { allow = true, rule = "github.graphql" }
    end
    local body = json_decode(req.body)
    if not body then return deny("github.graphql", "a GraphQL request whose body is not a JSON object") end
    local ops = body[1] ~= nil and body or { body }
    for _, op in ipairs(ops) do
      local v = self:_graphql_op(op, method)
      if v then return v end
    end
    return { allow = true, rule = "github.graphql" }
  end
  -- REST
  local json
  local ctx = { method = method, body = req.body, params = nil }
  for _, rule in ipairs(self.rules.rest) do
    if rule.method == "*" or rule.method == method then
      local params = match_path(rule.segs, segs)
      if params then
        if json == nil then json = json_decode(req.body) or false end
        ctx.params, ctx.json = params, json or nil
        if applies(self, rule, ctx) then return verdict(rule) end
      end
    end
  end
  if self.rules.default == "deny" and not READ[method] then
    return deny("github.default", method .. " " .. path .. " is not in the sandbox's allowed list")
  end
  return { allow = true, rule = READ[method] and "github.read" or "github.default" }
end

--- Learn from a response what the sandbox created: pull requests and issues it opened
--- (REST numbers and node ids, GraphQL node ids) become its own, which it may close and
--- reopen. `resp = {status=, body=}`.
function Judge:observe(req, resp)
  if (req.method or ""):upper() ~= "POST" or not resp or (resp.status or 0) >= 300 then return end
  local segs = M.canonical_path(req.path or "") or {}
  local body = json_decode(resp.body)
  if not body then return end
  if #segs == 4 and segs[1] == "repos" and (segs[4] == "pulls" or segs[4] == "issues") then
    local repo = (segs[2] .. "/" .. segs[3]):lower()
    if math.type(body.number) == "integer" or type(body.number) == "number" then
      self.owned[repo .. "#" .. string.format("%d", body.number)] = true
    end
    if type(body.node_id) == "string" then self.owned_nodes[body.node_id] = true end
  elseif #segs == 1 and segs[1] == "graphql" and type(body.data) == "table" then
    local reqbody = json_decode(req.body)
    local ok, fields = pcall(graphql.mutation_fields, reqbody and reqbody.query or "", reqbody and reqbody.variables or {})
    if not ok then return end
    for _, f in ipairs(fields) do
      local out = body.data[f.alias or f.name]
      if type(out) == "table" then
        local node = (f.name == "createPullRequest" and out.pullRequest) or (f.name == "createIssue" and out.issue)
        if type(node) == "table" and type(node.id) == "string" then self.owned_nodes[node.id] = true end
      end
    end
  end
end

--- The answer to a refused request: HTTP 403 with a JSON body `gh` and scripts can read
--- (`message` as GitHub's own errors have it, plus the rule and how to allow it).
function M.refusal(v)
  local msg = "foundry: " .. (v.reason or "refused by the sandbox's GitHub policy")
  local body = require("foundry.json").encode({
    message = msg, errors = { { message = msg } }, rule = v.rule, reason = v.reason,
    how_to_allow = v.how_to_allow, documentation_url = "https://foundry.invalid/docs/policies#git-and-github-rules",
  })
  return { action = "respond", status = 403, body = body, rule = v.rule, reason = v.reason,
           headers = { ["content-type"] = "application/json; charset=utf-8", ["cache-control"] = "no-store" } }
end

return M
