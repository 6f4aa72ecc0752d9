--- Git safety: the rules the proxy applies to git's smart-HTTP traffic, as plain Lua
--- functions over plain data, and the guard that applies them to requests.
---
--- An agent may commit and push its own branch — and nothing else. Every route a push can
--- take (the workspace's origin, a raw URL typed in /tmp, an SSH remote rewritten to HTTPS)
--- meets in the proxy, which speaks git's own protocol:
---
--- - `info/refs?service=git-upload-pack|git-receive-pack`: the ref advertisement is
---   filtered to the sandbox's branch, the read-only branches its policy names, and tags
---   (`filter_advertisement`).
--- - `git-upload-pack`: every `want` must be a tip the sandbox was shown.
--- - `git-receive-pack`: the pkt-line commands are parsed before anything reaches the
---   upstream and the whole push is refused, with a report-status reply git prints as
---   `remote: ...` and ` ! [remote rejected]`, when any command breaks a rule
---   (`check_push`).
---
---   local gitsafety = require "foundry.gitsafety"
---   local verdict = gitsafety.check_push{
---     sandbox_branch = "sandbox/fix-1", commands = push.commands,
---     is_fast_forward = function(old, new) return objects:is_ancestor(old, new) end,
---     changed_paths = function(old, new) return objects:changed_paths(new, { old }) end,
---   }
---   if not verdict.allow then print(verdict.rule, verdict.reason) end
---
--- See docs/policies.md "Git and GitHub rules" and docs/security.md "Git safety".
local errors = require "foundry.errors"
local pktline = require "foundry.pktline"

local M = {}

--- The defaults of every rule; a policy's `git = {...}` table overrides them key by key.
M.DEFAULTS = {
  -- branches nobody pushes to from a sandbox (the upstream's default branch is added)
  protected = { "main", "master", "release/*", "production" },
  -- branch patterns the sandbox may push besides its own (none by default)
  allow = {},
  -- branches the sandbox may fetch besides its own
  read = {},
  -- the branch the sandbox was made from is readable too (git fetch origin main)
  read_base = true,
  -- tags are advertised (and fetchable); pushing them is refused (not a branch)
  tags = true,
  -- paths a push may not change: "dir/" a directory, a name without "/" a file name at
  -- any depth, else a glob from the root ("*" within a name, "**" across directories)
  restricted = { ".github/workflows/", ".github/actions/", "CODEOWNERS" },
  -- paths whose changes are allowed but reported
  warn = {},
  -- the largest pack a push may carry (bytes)
  max_bytes = 100 * 1024 * 1024,
  -- fetching from repositories the sandbox was not made for (pushing there never is)
  read_other_repos = true,
}

local RULE_TYPES = { protected = "list", allow = "list", read = "list", read_base = "boolean", tags = "boolean", restricted = "list",
                     warn = "list", max_bytes = "integer", read_other_repos = "boolean" }

--- Check a policy's `git` table (overrides of DEFAULTS); raises `policy.invalid` naming
--- the key path.
function M.validate(rules, where)
  where = where or "git"
  local util = require "foundry.util"
  if type(rules) ~= "table" then
    errors.raise("policy.invalid", where .. ": expected a table, got " .. type(rules))
  end
  for k, v in pairs(rules) do
    local t = RULE_TYPES[k]
    if not t then
      local near = type(k) == "string" and util.did_you_mean(k, util.keys(RULE_TYPES))
      errors.raise("policy.invalid", where .. "." .. tostring(k) .. ": unknown rule" ..
        (near and (" — did you mean '" .. near .. "'?") or ""), "see docs/policies.md \"Git and GitHub rules\"")
    end
    local ok
    if t == "list" then
      ok = type(v) == "table"
      for i, x in pairs(ok and v or {}) do
        if math.type(i) ~= "integer" or type(x) ~= "string" or x == "" then ok = false end
      end
    elseif t == "integer" then
      ok = math.type(v) == "integer" and v >= 0
    else
      ok = type(v) == t
    end
    if not ok then
      errors.raise("policy.invalid", where .. "." .. k .. ": expected " .. (t == "list" and "a list of strings" or
        t == "integer" and "a non-negative integer" or "a boolean") .. ", got " .. type(v))
    end
  end
  return rules
end

local function is_zero(id) return type(id) == "string" and id:match("^0+$") ~= nil end
M.is_zero = is_zero

-- ------------------------------------------------------------------ patterns

local function escape(c) return "%" .. c end

-- A glob as an anchored Lua pattern: "**" any run, "*" any run without "/" (or with, for
-- `cross`), "?" one character.
local function glob_pattern(glob, cross)
  local out, i = { "^" }, 1
  while i <= #glob do
    local c = glob:sub(i, i)
    if c == "*" and glob:sub(i + 1, i + 1) == "*" then
      out[#out + 1] = ".*"
      i = i + 2
    elseif c == "*" then
      out[#out + 1] = cross and ".*" or "[^/]*"
      i = i + 1
    elseif c == "?" then
      out[#out + 1] = cross and "." or "[^/]"
      i = i + 1
    else
      out[#out + 1] = c:match("%p") and escape(c) or c
      i = i + 1
    end
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

--- Does branch `name` match `pattern`? "*" matches any run of characters ("release/*"
--- covers "release/1.0" and "release/1/hotfix"), "?" one; otherwise exact.
function M.branch_match(pattern, name)
  if pattern == name then return true end
  if not pattern:find("[*?]") then return false end
  return name:match(glob_pattern(pattern, true)) ~= nil
end

--- Does `path` (relative to the repository's root) match a path pattern? Patterns ending
--- in "/" are directories, patterns without "/" match a file or directory name at any
--- depth, others are globs from the root. Case-insensitive (a case-insensitive checkout
--- would make ".GitHub/Workflows" the same directory).
function M.path_match(pattern, path)
  pattern, path = pattern:lower(), path:lower():gsub("^/+", "")
  if pattern:sub(1, 1) == "/" then pattern = pattern:sub(2) end
  if pattern:sub(-1) == "/" then
    return path:sub(1, #pattern) == pattern
  end
  if not pattern:find("/", 1, true) then
    local pat = glob_pattern(pattern, false)
    for part in path:gmatch("[^/]+") do
      if part:match(pat) then return true end
    end
    return false
  end
  if path:match(glob_pattern(pattern, false)) then return true end
  -- a pattern naming a directory covers what is inside it
  return path:match(glob_pattern(pattern .. "/**", false)) ~= nil
end

local function any_branch(patterns, name)
  for _, p in ipairs(patterns or {}) do
    if M.branch_match(p, name) then return p end
  end
  return nil
end

local function any_path(patterns, path)
  for _, p in ipairs(patterns or {}) do
    if M.path_match(p, path) then return p end
  end
  return nil
end

-- ------------------------------------------------------------------ the push rules

local function check_list(fn, k, v)
  if v ~= nil and type(v) ~= "table" then error(fn .. ": " .. k .. ": expected a list, got " .. type(v), 3) end
end

local function short(ref) return (ref:gsub("^refs/heads/", "")) end

-- The first rule a command breaks: reason, rule name; or nil.
local function judge(o, c, warnings, protected)
  local name = c.ref:match("^refs/heads/(.+)$")
  if not name then
    return c.ref .. " is not a branch: a sandbox pushes only its branch " .. o.sandbox_branch, "branch"
  end
  if is_zero(c.new) then
    return "deleting branches is not allowed from a sandbox", "delete"
  end
  local prot = any_branch(protected, name)
  if prot then
    return name .. " is a protected branch" .. (prot ~= name and (" (" .. prot .. ")") or ""), "protected"
  end
  if name ~= o.sandbox_branch and not any_branch(o.allowed_patterns, name) then
    return "this sandbox pushes only to its branch " .. o.sandbox_branch, "branch"
  end
  if not is_zero(c.old) then
    if type(o.is_fast_forward) ~= "function" then
      return "not a fast-forward (no way to check it)", "fast-forward"
    end
    local ok, ff, why = pcall(o.is_fast_forward, c.old, c.new)
    if not ok then
      return "not a fast-forward (" .. errors.message(ff) .. ")", "fast-forward"
    end
    if not ff then
      return "not a fast-forward: rewriting history (--force, +refspec) is refused"
        .. (why and ("; " .. why) or "; fetch, merge or rebase, then push"), "fast-forward"
    end
  end
  if (#(o.restricted or {}) > 0 or #(o.warn or {}) > 0) then
    if type(o.changed_paths) ~= "function" then
      return "cannot tell which paths the push changes", "restricted"
    end
    local ok, paths = pcall(o.changed_paths, not is_zero(c.old) and c.old or nil, c.new)
    if not ok then
      return "cannot tell which paths the push changes (" .. errors.message(paths) .. ")", "restricted"
    end
    for _, path in ipairs(paths) do
      local p = any_path(o.restricted, path)
      if p then
        return "the push changes " .. path .. ", a restricted path (" .. p .. ")", "restricted"
      end
    end
    for _, path in ipairs(paths) do
      local p = any_path(o.warn, path)
      if p then warnings[#warnings + 1] = short(c.ref) .. ": changes " .. path .. " (" .. p .. ")" end
    end
  end
  return nil
end

--- Judge a push. Options (plain data and two callbacks):
--- - `sandbox_branch` (required): the sandbox's own branch ("sandbox/x" or "refs/heads/...")
--- - `commands`: `{ {old=, new=, ref=}, ... }` as pktline.parse_push gives them
--- - `allowed_patterns`: other branches it may push; `protected`: branch patterns nobody
---   pushes to (default DEFAULTS.protected); `default_branch`: the upstream's, protected too
--- - `is_fast_forward(old, new)` -> boolean[, why]: decided from the sandbox's own objects
--- - `changed_paths(old|nil, new)` -> { path, ... }: what the pushed commits change
--- - `restricted`, `warn`: path patterns (see path_match); `max_bytes`, `pack_bytes`
---
--- Returns `{allow=, rule=, reason=, refs = { {ref=, reason=, rule=} }, warnings = {}}`.
--- One refused command refuses the whole push (every other ref gets a reason too).
---@return {allow: boolean, rule?: string, reason?: string, refs: table[], warnings: string[]}
function M.check_push(o)
  if type(o) ~= "table" then error("gitsafety.check_push: expected a table", 2) end
  if type(o.sandbox_branch) ~= "string" or o.sandbox_branch == "" then
    error("gitsafety.check_push: sandbox_branch: expected string, got " .. type(o.sandbox_branch), 2)
  end
  if type(o.commands) ~= "table" then error("gitsafety.check_push: commands: expected a list", 2) end
  for _, k in ipairs({ "allowed_patterns", "protected", "restricted", "warn" }) do check_list("gitsafety.check_push", k, o[k]) end
  local opts = setmetatable({ sandbox_branch = short(o.sandbox_branch) }, { __index = o })
  if o.restricted == nil then opts.restricted = M.DEFAULTS.restricted end
  local protected = {}
  for _, p in ipairs(o.protected or M.DEFAULTS.protected) do protected[#protected + 1] = p end
  if type(o.default_branch) == "string" and o.default_branch ~= "" then
    protected[#protected + 1] = short(o.default_branch)
  end
  local warnings, refs, first = {}, {}, nil
  if #o.commands == 0 then
    return { allow = false, rule = "malformed", reason = "a push without commands", refs = refs, warnings = warnings }
  end
  local max = o.max_bytes
  if max and o.pack_bytes and o.pack_bytes > max then
    first = { rule = "size", reason = string.format("the push is %d bytes; the limit is %d", o.pack_bytes, max) }
  end
  for i, c in ipairs(o.commands) do
    local why, rule
    if first and first.rule == "size" then
      why, rule = first.reason, "size"
    else
      why, rule = judge(opts, c, warnings, protected)
    end
    refs[i] = { ref = c.ref, reason = why, rule = rule }
    if why and not first then first = { rule = rule, reason = short(c.ref) .. ": " .. why } end
  end
  if first then
    for _, r in ipairs(refs) do
      if not r.reason then r.reason, r.rule = "refused with the rest of this push", "atomic" end
    end
    return { allow = false, rule = first.rule, reason = first.reason, refs = refs, warnings = warnings }
  end
  return { allow = true, refs = refs, warnings = warnings }
end

-- ------------------------------------------------------------------ advertisements

local DROP_CAPS = { ["allow-tip-sha1-in-want"] = true, ["allow-reachable-sha1-in-want"] = true }

--- Filter a parsed ref advertisement (pktline.parse_advertisement) to what the sandbox
--- may see. `o`: `sandbox_branch`, `read` (branch patterns), `tags` (default true).
--- HEAD stays only when the branch it names stays; capabilities stay on the first line
--- (symref=HEAD:... only with HEAD; the *-sha1-in-want ones never). Returns the new
--- advertisement and facts about the original: `{default_branch=, tips={id=true},
--- kept={id=true}, hidden=n}`.
function M.filter_advertisement(adv, o)
  if type(adv) ~= "table" or type(adv.refs) ~= "table" then
    error("gitsafety.filter_advertisement: expected a parsed advertisement", 2)
  end
  o = o or {}
  local branch = o.sandbox_branch and short(o.sandbox_branch)
  local function keep(name)
    local base = name:gsub("%^{}$", "")
    local b = base:match("^refs/heads/(.+)$")
    if b then return b == branch or any_branch(o.read, b) ~= nil end
    if base:match("^refs/tags/.") then return o.tags ~= false end
    return false
  end
  local caps, head_target = {}, nil
  for cap in (adv.capabilities or ""):gmatch("%S+") do
    local t = cap:match("^symref=HEAD:(.+)$")
    if t then head_target = t end
    caps[#caps + 1] = cap
  end
  local head_kept = head_target and keep(head_target)
  local out, tips, kept, hidden = {}, {}, {}, 0
  for _, r in ipairs(adv.refs) do
    tips[r.id] = true
    local ok
    if r.name == "HEAD" then ok = head_kept else ok = keep(r.name) end
    if ok then
      out[#out + 1] = { id = r.id, name = r.name }
      kept[r.id] = true
    else
      hidden = hidden + 1
    end
  end
  local kept_caps = {}
  for _, cap in ipairs(caps) do
    local name = cap:match("^[^=]+")
    if not DROP_CAPS[name] and (name ~= "symref" or head_kept) then kept_caps[#kept_caps + 1] = cap end
  end
  local filtered = { service = adv.service, refs = out, capabilities = table.concat(kept_caps, " "),
                     shallow = adv.shallow, hexsz = adv.hexsz }
  return filtered, { default_branch = head_target and short(head_target), tips = tips, kept = kept, hidden = hidden }
end

-- ------------------------------------------------------------------ repositories

--- The canonical name of a repository: "host/owner/name", lower case, without ".git".
function M.repo_id(host, owner, name)
  name = name:gsub("%.git$", "")
  return (host .. "/" .. owner .. "/" .. name):lower()
end

--- Which repository a git URL is: https://host/o/r(.git), http://, git://, ssh://[user@]host[:port]/o/r,
--- scp-like user@host:o/r(.git). Returns its repo_id, or nil.
function M.repo_of_url(url)
  if type(url) ~= "string" then return nil end
  url = url:gsub("/+$", "")
  local host, path = url:match("^%a[%w+.-]*://([^/]+)(/.*)$")
  if host then
    host = host:gsub("^[^@]*@", ""):gsub(":%d+$", "")
  else
    host, path = url:match("^[^@/:]+@([^:/]+):/?(.+)$")
    if not host then return nil end
    path = "/" .. path
  end
  local owner, name = path:match("^/([^/]+)/([^/]+)$")
  if not owner or name == ".git" then return nil end
  return M.repo_id(host, owner, name)
end

--- Which repository and endpoint a smart-HTTP request path is: `{owner=, name=, repo=,
--- endpoint = "info/refs" | "git-upload-pack" | "git-receive-pack"}`, or nil.
function M.parse_git_path(host, path)
  if type(path) ~= "string" then return nil end
  local owner, name, rest = path:match("^/([^/]+)/([^/]+)/(.+)$")
  if not owner then return nil end
  if rest ~= "info/refs" and rest ~= "git-upload-pack" and rest ~= "git-receive-pack" then return nil end
  if owner:sub(1, 1) == "." or name:sub(1, 1) == "." then return nil end
  return { owner = owner, name = name:gsub("%.git$", ""), repo = M.repo_id(host, owner, name), endpoint = rest }
end

--- The service a request names: "git-upload-pack" or "git-receive-pack" (from the
--- endpoint, or the query of info/refs), or nil.
function M.service_of(endpoint, query)
  if endpoint == "info/refs" then
    local s = (query or ""):match("^service=(git%-[%w-]+)$") or (query or ""):match("[?&]?service=(git%-[%w-]+)")
    if s == "git-upload-pack" or s == "git-receive-pack" then return s end
    return nil
  end
  return endpoint
end

-- ------------------------------------------------------------------ SSH remotes

--- The git configuration that sends every SSH remote of `host` through HTTPS (and so
--- through the proxy's checks): `url.https://host/.insteadOf` for "git@host:" and
--- "ssh://git@host/". Returns the lines of a ~/.gitconfig section.
---@param hosts? string[] default {"github.com"}
---@return string
function M.gitconfig(hosts)
  local out = {}
  for _, h in ipairs(hosts or { "github.com" }) do
    out[#out + 1] = '[url "https://' .. h .. '/"]'
    out[#out + 1] = "\tinsteadOf = git@" .. h .. ":"
    out[#out + 1] = "\tinsteadOf = ssh://git@" .. h .. "/"
    out[#out + 1] = "\tpushInsteadOf = git@" .. h .. ":"
    out[#out + 1] = "\tpushInsteadOf = ssh://git@" .. h .. "/"
  end
  return table.concat(out, "\n") .. "\n"
end

--- The same as `git config` arguments: { "-c", "url....insteadOf=...", ... }.
function M.gitconfig_args(hosts)
  local out = {}
  for _, h in ipairs(hosts or { "github.com" }) do
    for _, from in ipairs({ "git@" .. h .. ":", "ssh://git@" .. h .. "/" }) do
      out[#out + 1] = "-c"
      out[#out + 1] = "url.https://" .. h .. "/.insteadOf=" .. from
    end
  end
  return out
end

-- ------------------------------------------------------------------ objects on the host

local Objects = {}
Objects.__index = Objects
Objects.__name = "foundry.gitsafety.Objects"

local scratch -- a private empty repository: the GIT_DIR of every command below

-- The sandbox's repository is writable by the agent: its config could name hooks,
-- fsmonitor commands or filters that git would run here, on the host. So git never opens
-- it: GIT_DIR is an empty repository of ours and only the object directory is borrowed.
local function scratch_dir()
  if scratch then return scratch end
  local fs = require "foundry.fs"
  local base = os.getenv("TMPDIR") or "/tmp"
  local dir = fs.mkdtemp(base .. "/foundry-gitsafety-XXXXXX")
  local r = require("foundry.exec").exec{ "git", "init", "--bare", "-q", dir,
    clear_env = true, env = { PATH = os.getenv("PATH") or "/usr/bin:/bin", GIT_CONFIG_NOSYSTEM = "1",
                               GIT_CONFIG_GLOBAL = "/dev/null", HOME = dir } }
  if not r.ok then errors.raise("gitsafety.git", "cannot make a scratch repository: " .. r.stderr) end
  scratch = dir
  return dir
end

--- Look at a sandbox's objects on the host: `objects_dir` is its git directory's
--- `objects` (the alternates it names are followed). Every check runs the `git` program
--- on a private empty repository that borrows only those objects.
---@param objects_dir string
---@param opts? {alternates?: string[], timeout?: integer}
function M.objects(objects_dir, opts)
  if type(objects_dir) ~= "string" or objects_dir == "" then
    error("gitsafety.objects: objects_dir: expected string, got " .. type(objects_dir), 2)
  end
  opts = opts or {}
  return setmetatable({ dir = objects_dir, alternates = opts.alternates or {}, timeout = opts.timeout or 30000 }, Objects)
end

function Objects:_git(args, stdin)
  local argv = { "git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null",
                 "-c", "core.commitGraph=false", "-c", "gc.auto=0" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local gitdir = scratch_dir()
  argv.clear_env = true
  argv.env = { PATH = os.getenv("PATH") or "/usr/bin:/bin", GIT_DIR = gitdir, GIT_OBJECT_DIRECTORY = self.dir,
               GIT_ALTERNATE_OBJECT_DIRECTORIES = #self.alternates > 0 and table.concat(self.alternates, ":") or nil,
               GIT_CONFIG_NOSYSTEM = "1", GIT_CONFIG_GLOBAL = "/dev/null", HOME = gitdir, LC_ALL = "C",
               GIT_TERMINAL_PROMPT = "0" }
  argv.stdin = stdin
  argv.timeout = self.timeout
  return require("foundry.exec").exec(argv)
end

--- Which of `ids` exist: a set {id = true}.
function Objects:has(ids)
  if type(ids) == "string" then ids = { ids } end
  local input = {}
  for _, id in ipairs(ids) do
    if not id:match("^%x+$") then error("gitsafety: not an object id: " .. tostring(id), 2) end
    input[#input + 1] = id
  end
  local r = self:_git({ "cat-file", "--batch-check=%(objectname) %(objecttype)" }, table.concat(input, "\n") .. "\n")
  if not r.ok then errors.raise("gitsafety.git", "git cat-file: " .. r.stderr:gsub("\n.*", "")) end
  local out = {}
  for id, kind in r.stdout:gmatch("(%x+) (%a+)\n") do
    if kind ~= "missing" then out[id] = kind end
  end
  return out
end

--- Is `old` an ancestor of `new` (a fast-forward from old to new)? Returns false and a
--- reason when an object is missing.
function Objects:is_ancestor(old, new)
  local r = self:_git({ "merge-base", "--is-ancestor", old, new })
  if r.status == 0 then return true end
  if r.status == 1 then return false end
  local have = self:has({ old, new })
  if not have[old] then return false, "the branch moved upstream (" .. old:sub(1, 12) .. " is not in the sandbox): fetch it first" end
  if not have[new] then return false, new:sub(1, 12) .. " is not in the sandbox" end
  errors.raise("gitsafety.git", "git merge-base: " .. r.stderr:gsub("\n.*", ""))
end

--- The paths changed by the commits reachable from `new` but not from any of `exclude`
--- (ids; missing ones are ignored): each non-merge commit against its parent, merges
--- where they differ from every parent (an "evil merge"). Sorted, unique.
function Objects:changed_paths(new, exclude)
  local args = { "log", "--format=%x01", "--name-only", "--no-renames", "-c", "--root", "--ignore-missing",
                 "-z", new }
  local stdin
  if exclude and #exclude > 0 then
    args[#args + 1] = "--stdin"
    local lines = {}
    for _, id in ipairs(exclude) do
      if id and not is_zero(id) then lines[#lines + 1] = "^" .. id end
    end
    stdin = table.concat(lines, "\n") .. "\n"
  end
  local r = self:_git(args, stdin)
  if not r.ok then errors.raise("gitsafety.git", "git log: " .. r.stderr:gsub("\n.*", "")) end
  local seen, out = {}, {}
  for p in r.stdout:gmatch("[^%z\1\n]+") do
    if not seen[p] then seen[p] = true; out[#out + 1] = p end
  end
  table.sort(out)
  return out
end

--- The pack of a push indexed into a temporary object directory that borrows the
--- sandbox's objects (so a thin pack resolves): for pushes whose commits the sandbox's
--- own object store does not hold (a clone in /tmp). Returns an Objects over both;
--- `:close()` removes the directory.
function Objects:quarantine(pack)
  local fs = require "foundry.fs"
  local base = os.getenv("TMPDIR") or "/tmp"
  local dir = fs.mkdtemp(base .. "/foundry-quarantine-XXXXXX")
  local q = setmetatable({ dir = dir .. "/objects", alternates = { self.dir }, timeout = self.timeout,
                           tmp = dir }, Objects)
  for _, a in ipairs(self.alternates) do q.alternates[#q.alternates + 1] = a end
  local ok, err = pcall(function()
    fs.mkdir(dir .. "/objects")
    fs.mkdir(dir .. "/objects/pack")
    local r = q:_git({ "index-pack", "--stdin", "--fix-thin", "--strict" }, pack)
    if not r.ok then
      errors.raise("gitsafety.bad_pack", "the push's pack does not index: " .. r.stderr:gsub("\n.*", ""))
    end
  end)
  if not ok then fs.rm(dir); error(err, 0) end
  return q
end

function Objects:close()
  if self.tmp then
    require("foundry.fs").rm(self.tmp)
    self.tmp = nil
  end
end
Objects.__close = Objects.close

-- ------------------------------------------------------------------ the guard

local Guard = {}
Guard.__index = Guard
Guard.__name = "foundry.gitsafety.Guard"

--- A sandbox's guard, which a proxy asks about git requests. `ctx`:
--- - `sandbox`: its name; `branch`: its branch; `objects`: its git objects directory
---   on the host; `base`: the commit its branch started from and `base_branch` the
---   branch (readable while rules.read_base), both optional
--- - `repos`: the repositories it was made for ({"github.com/o/r"} or URLs)
--- - `rules`: overrides of DEFAULTS (a policy's `git = {...}`)
--- - `audit(row)`: every decision, `{sandbox=, kind="git", decision=, rule=, reason=, ...}`
---
--- A proxy calls, for each request on an inspected git host:
---   guard:classify(req)     -> nil (not git) | "info/refs" | "git-upload-pack" | "git-receive-pack"
---   guard:request(req)      -> verdict (may wait: it runs git on the host)
---   guard:response(req, resp) -> {status=, headers=, body=} (for verdict.filter only)
--- `req` = {method=, host=, path=, query=, headers=, body=}; a verdict is
--- `{action="forward", remove_headers={...}, filter=bool}` or
--- `{action="respond", status=, headers=, body=, rule=, reason=}`.
function M.guard(ctx)
  if type(ctx) ~= "table" then error("gitsafety.guard: expected a table", 2) end
  if type(ctx.branch) ~= "string" or ctx.branch == "" then error("gitsafety.guard: branch: expected string", 2) end
  local rules = setmetatable({}, { __index = M.DEFAULTS })
  for k, v in pairs(M.validate(ctx.rules or {}, "git")) do rules[k] = v end
  if ctx.base_branch and rules.read_base then
    local read = { short(ctx.base_branch) }
    for _, b in ipairs(rules.read) do read[#read + 1] = b end
    rules.read = read
  end
  local repos = {}
  for _, r in ipairs(ctx.repos or {}) do
    repos[M.repo_of_url(r) or (r:lower():gsub("%.git$", ""))] = true
  end
  return setmetatable({
    sandbox = ctx.sandbox, branch = short(ctx.branch), objects_dir = ctx.objects, base = ctx.base,
    repos = repos, rules = rules, audit_fn = ctx.audit,
    seen = {},   -- [repo] = {default_branch=, tips={id}, kept={id}} from the last advertisement
  }, Guard)
end

function Guard:made_for(repo) return self.repos[repo] == true end

function Guard:audit(row)
  row.sandbox = self.sandbox
  row.kind = "git"
  if self.audit_fn then pcall(self.audit_fn, row) end
end

--- Is this request git smart HTTP? Returns the service's endpoint kind, or nil.
function Guard:classify(req)
  local g = M.parse_git_path(req.host or "", req.path)
  if not g then return nil end
  return g.endpoint
end

local function respond(status, ctype, body, extra)
  local v = { action = "respond", status = status, body = body,
              headers = { ["content-type"] = ctype, ["cache-control"] = "no-cache" } }
  for k, x in pairs(extra or {}) do v[k] = x end
  return v
end

-- A refused push as git prints it: side-band messages ("remote: ...") and a report-status
-- with " ! [remote rejected] <ref> (<reason>)" for every ref.
local function push_refusal(push, verdict, messages)
  local caps = push.capabilities or ""
  if not (pktline.caps_has(caps, "report-status") or pktline.caps_has(caps, "report-status-v2")) then
    -- a client that cannot read a report: plain HTTP refusal
    return respond(403, "text/plain", "foundry: " .. verdict.reason .. "\n", { rule = verdict.rule, reason = verdict.reason })
  end
  local refs = {}
  for i, r in ipairs(verdict.refs) do refs[i] = { ref = r.ref, reason = "foundry: " .. r.reason } end
  local body = pktline.report_status{ unpack = "ok", refs = refs, messages = messages,
                                      sideband = pktline.sideband(caps) }
  return respond(200, "application/x-git-receive-pack-result", body, { rule = verdict.rule, reason = verdict.reason })
end

local function refusal_messages(verdict, how)
  local msgs = { "", "foundry: push refused by the sandbox's git policy (rule: " .. verdict.rule .. ")",
                 "foundry: " .. verdict.reason }
  if how then msgs[#msgs + 1] = "foundry: " .. how end
  msgs[#msgs + 1] = ""
  return msgs
end

local HOW = {
  branch = "push your work to your own branch: git push origin HEAD:%s",
  protected = "push to your own branch (%s) and open a pull request instead",
  delete = "branches are deleted by people, outside the sandbox",
  ["fast-forward"] = "git fetch origin %s, then merge or rebase onto it, and push without --force",
  restricted = "changes to CI workflows, actions and CODEOWNERS need a person: leave them out of the push",
  size = "push smaller changes (large files belong in LFS)",
  repository = "this sandbox pushes only to the repository it was made for",
  malformed = nil,
}

function Guard:_how(rule)
  local h = HOW[rule]
  return h and h:format(self.branch) or nil
end

--- Decompress a gzip body (every member, so the guard sees at least what any server
--- reads), or nil when it is not valid gzip.
function M.gunzip(data)
  local r = require("foundry.exec").exec{ "gzip", "-dc", stdin = data, timeout = 30000 }
  if not r.ok then return nil end
  return r.stdout
end

local function has_header(req, name)
  return req.headers and req.headers[name] ~= nil
end

-- Git-Protocol asks the server for protocol v2, whose ref listing comes in the POST:
-- removed, so the advertisement the guard filters is the whole story.
local FORWARD_HEADERS = { "git-protocol" }

function Guard:_info_refs(req, g)
  local service = M.service_of("info/refs", req.query)
  if not service then
    -- dumb HTTP: refused, the sandbox sees git's own error
    return respond(403, "text/plain", "foundry: only smart HTTP (git >= 1.6.6) is allowed\n",
      { rule = "git.protocol", reason = "dumb HTTP git is not supported" })
  end
  if not self:made_for(g.repo) then
    if service == "git-receive-pack" then
      -- nothing goes upstream: an empty advertisement, and the POST is refused below
      local body = pktline.build_advertisement{ service = service, refs = {},
        capabilities = "report-status report-status-v2 side-band-64k quiet atomic ofs-delta agent=foundry" }
      self:audit{ decision = "allow", rule = "git.repository", host = req.host, path = req.path,
                  reason = "empty advertisement for a repository the sandbox was not made for" }
      return respond(200, "application/x-git-receive-pack-advertisement", body,
        { decision = "allow", rule = "git.repository", reason = "no refs shown for " .. g.repo })
    end
    if not self.rules.read_other_repos then
      local msg = "foundry: this sandbox may not fetch " .. g.repo .. " (it was made for " .. self:_repos_text() .. ")"
      self:audit{ decision = "deny", rule = "git.repository", host = req.host, path = req.path, reason = msg }
      return respond(200, "application/x-" .. service .. "-advertisement",
        pktline.pkt("# service=" .. service .. "\n") .. pktline.FLUSH .. pktline.error_packet(msg),
        { rule = "git.repository", reason = msg })
    end
    return { action = "forward", remove_headers = FORWARD_HEADERS, filter = false, other_repo = true }
  end
  return { action = "forward", remove_headers = { "git-protocol", "accept-encoding" }, filter = true, service = service }
end

function Guard:_repos_text()
  local list = require("foundry.util").keys(self.repos)
  return #list > 0 and table.concat(list, ", ") or "no remote repository"
end

--- The response to a request whose verdict said `filter`: the ref advertisement cut to
--- what the sandbox may see. Anything that is not a valid v0 advertisement is refused
--- (an ERR packet git prints as "fatal: remote error: ...").
function Guard:response(req, resp)
  local g = M.parse_git_path(req.host or "", req.path)
  local service = g and M.service_of("info/refs", req.query)
  if not service or (resp.status or 0) ~= 200 then return resp end
  local ok, adv = pcall(pktline.parse_advertisement, resp.body or "")
  if not ok or adv.service ~= service then
    local why = ok and "the server's advertisement is for another service" or errors.message(adv)
    self:audit{ decision = "deny", rule = "git.malformed", host = req.host, path = req.path, reason = why }
    local body = pktline.pkt("# service=" .. service .. "\n") .. pktline.FLUSH ..
      pktline.error_packet("foundry: refused a ref advertisement it cannot check: " .. why)
    return { status = 200, headers = { ["content-type"] = "application/x-" .. service .. "-advertisement",
                                       ["cache-control"] = "no-cache" }, body = body }
  end
  local filtered, facts = M.filter_advertisement(adv, { sandbox_branch = self.branch, read = self.rules.read,
                                                         tags = self.rules.tags })
  local seen = self.seen[g.repo] or {}
  self.seen[g.repo] = seen
  if facts.default_branch then seen.default_branch = facts.default_branch end
  seen.tips = facts.tips
  if service == "git-upload-pack" then seen.kept = facts.kept end
  self:audit{ decision = "allow", rule = "git.advertisement", host = req.host, path = req.path,
              reason = string.format("%s: %d refs shown, %d hidden", service, #filtered.refs, facts.hidden) }
  local headers = {}
  for k, v in pairs(resp.headers or {}) do headers[k] = v end
  headers["content-length"] = nil
  return { status = 200, headers = headers, body = pktline.build_advertisement(filtered) }
end

function Guard:_upload(req, g)
  if not self:made_for(g.repo) then
    if self.rules.read_other_repos then return { action = "forward", remove_headers = FORWARD_HEADERS } end
    return respond(200, "application/x-git-upload-pack-result",
      pktline.error_packet("foundry: this sandbox may not fetch " .. g.repo), { rule = "git.repository" })
  end
  local ok, up = pcall(pktline.parse_upload, req.body or "")
  local why
  if not ok then
    why = errors.message(up)
  else
    local kept = (self.seen[g.repo] or {}).kept or {}
    for _, id in ipairs(up.wants) do
      if not kept[id] then
        why = "upload-pack: not our ref " .. id .. " (this sandbox fetches only " .. self.branch ..
          (#self.rules.read > 0 and (", " .. table.concat(self.rules.read, ", ")) or "") .. " and tags)"
        break
      end
    end
  end
  if why then
    self:audit{ decision = "deny", rule = "git.fetch", host = req.host, path = req.path, reason = why }
    return respond(200, "application/x-git-upload-pack-result", pktline.error_packet("foundry: " .. why),
      { rule = "git.fetch", reason = why })
  end
  return { action = "forward", remove_headers = FORWARD_HEADERS }
end

-- The objects to judge a push by: the sandbox's own store, or (when a pushed commit is
-- not in it: a clone elsewhere in the sandbox) the pack indexed in quarantine beside it.
function Guard:_objects_for(push, body)
  if not self.objects_dir then return nil, "the sandbox has no objects on the host" end
  local objs = M.objects(self.objects_dir)
  local want = {}
  for _, c in ipairs(push.commands) do
    if not is_zero(c.new) then want[#want + 1] = c.new end
  end
  if #want == 0 then return objs end
  local have = objs:has(want)
  for _, id in ipairs(want) do
    if not have[id] then
      local q = objs:quarantine(body:sub(push.pack_offset))
      local qh = q:has(want)
      for _, id2 in ipairs(want) do
        if qh[id2] ~= "commit" then
          q:close()
          return nil, "the push does not contain commit " .. id2
        end
      end
      return q
    end
  end
  return objs
end

function Guard:_receive(req, g)
  local body = req.body or ""
  if body == pktline.FLUSH then
    -- git's probe before a large (chunked) push: no commands, it only tests the route
    if self:made_for(g.repo) then return { action = "forward", remove_headers = FORWARD_HEADERS } end
    return respond(200, "application/x-git-receive-pack-result", "", { decision = "allow", rule = "git.probe" })
  end
  local ok, push = pcall(pktline.parse_push, body)
  if not ok then
    local why = errors.message(push)
    self:audit{ decision = "deny", rule = "git.malformed", host = req.host, path = req.path, reason = why }
    return respond(400, "text/plain", "foundry: " .. why .. "\n", { rule = "git.malformed", reason = why })
  end
  local verdict
  if not self:made_for(g.repo) then
    local refs = {}
    for i, c in ipairs(push.commands) do refs[i] = { ref = c.ref, reason = "not the sandbox's repository", rule = "repository" } end
    verdict = { allow = false, rule = "repository", refs = refs, warnings = {},
                reason = "this sandbox may not push to " .. g.repo .. " (it was made for " .. self:_repos_text() .. ")" }
  else
    local seen = self.seen[g.repo] or {}
    local objs, why = nil, nil
    local ok2, e = pcall(function() objs, why = self:_objects_for(push, body) end)
    if not ok2 then objs, why = nil, errors.message(e) end
    local exclude = {}
    for id in pairs(seen.tips or {}) do exclude[#exclude + 1] = id end
    if self.base then exclude[#exclude + 1] = self.base end
    table.sort(exclude)
    local r = self.rules
    verdict = M.check_push{
      sandbox_branch = self.branch, commands = push.commands, allowed_patterns = r.allow,
      protected = r.protected, default_branch = seen.default_branch,
      restricted = r.restricted, warn = r.warn, max_bytes = r.max_bytes, pack_bytes = push.pack_bytes,
      is_fast_forward = function(old, new)
        if not objs then return false, why end
        return objs:is_ancestor(old, new)
      end,
      changed_paths = function(old, new)
        if not objs then errors.raise("gitsafety.objects", why or "no objects") end
        local ex = { table.unpack(exclude) }
        if old then ex[#ex + 1] = old end
        return objs:changed_paths(new, ex)
      end,
    }
    if objs then objs:close() end
  end
  local refs = {}
  for _, c in ipairs(push.commands) do refs[#refs + 1] = short(c.ref) end
  self:audit{ decision = verdict.allow and "allow" or "deny", rule = "git.push" .. (verdict.rule and ("." .. verdict.rule) or ""),
              host = req.host, path = req.path, reason = verdict.reason or ("push " .. table.concat(refs, ", ")),
              warnings = #verdict.warnings > 0 and verdict.warnings or nil, bytes = push.pack_bytes }
  if verdict.allow then
    return { action = "forward", remove_headers = FORWARD_HEADERS, warnings = verdict.warnings }
  end
  return push_refusal(push, verdict, refusal_messages(verdict, self:_how(verdict.rule)))
end

--- Decide a git request (see M.guard). May wait: it runs git on the host.
function Guard:request(req)
  local g = M.parse_git_path(req.host or "", req.path)
  if not g then return nil end
  local method = (req.method or "GET"):upper()
  if g.endpoint == "info/refs" then
    if method ~= "GET" and method ~= "HEAD" then
      return respond(405, "text/plain", "foundry: info/refs is fetched with GET\n", { rule = "git.protocol" })
    end
    return self:_info_refs(req, g)
  end
  if method ~= "POST" then
    return respond(405, "text/plain", "foundry: " .. g.endpoint .. " takes a POST\n", { rule = "git.protocol" })
  end
  local enc = has_header(req, "content-encoding") and req.headers["content-encoding"]:lower() or "identity"
  if enc ~= "identity" then
    -- git gzips fetch requests over 1 KiB; pushes never
    if enc ~= "gzip" or g.endpoint ~= "git-upload-pack" then
      return respond(415, "text/plain", "foundry: " .. enc .. "-encoded git requests are refused\n",
        { rule = "git.protocol", reason = "content-encoding " .. enc })
    end
    local plain = M.gunzip(req.body or "")
    if not plain then
      return respond(400, "text/plain", "foundry: the request body is not valid gzip\n", { rule = "git.malformed" })
    end
    req = setmetatable({ body = plain }, { __index = req })
  end
  if g.endpoint == "git-upload-pack" then return self:_upload(req, g) end
  return self:_receive(req, g)
end

return M
