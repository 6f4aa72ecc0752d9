--- Git, through libgit2 on the thread pool: every call waits in the calling task and
--- raises an error object (`git.not_a_repo`, `git.not_found`, `git.locked`, ...) on
--- failure. Sandbox workspaces (branch isolation by construction) are `git.workspace`,
--- see lua/foundry/workspace.lua and docs/workspaces.md.
---
---   local git = require "foundry.git"
---   local repo = git.open(".")                 -- discovers upwards
---   for _, f in ipairs(repo:status()) do print(f.path, f.index, f.worktree) end
---   local id = repo:commit_all{ message = "wip" }  -- nil when there was nothing to commit
---   local ws = git.workspace.create{ source = ".", name = "fix-1" }
local native = require "foundry._git"
local errors = require "foundry.errors"

local M = {}

local function check(cond, msg, level)
  if not cond then error(msg, (level or 2) + 1) end
end

local function opt_table(v, what)
  check(v == nil or type(v) == "table", what .. ": expected a table of options, got " .. type(v), 3)
  return v or {}
end

-- ------------------------------------------------------------------ repositories

---@class foundry.git.Repo
---@field path string the path it was opened with
---@field gitdir string the git directory (ends with "/")
---@field workdir string|nil the work tree (nil when bare; ends with "/")
---@field bare boolean
---@field head {branch?: string, ref?: string, id?: string, detached?: boolean, unborn?: boolean}
---@field prefix string|nil where `path` is inside the work tree ("" at its root)
local Repo = {}
Repo.__index = Repo
Repo.__name = "foundry.git.Repo"
function Repo:__tostring() return "foundry.git.Repo(" .. (self.workdir or self.gitdir) .. ")" end

local function strip(p) return (p:gsub("/+$", "")) end

--- Open the repository holding `path` (searching upwards, like git; `opts.exact`: only
--- `path` itself, a work tree or a git directory).
---@param path string
---@param opts? {exact?: boolean}
---@return foundry.git.Repo
function M.open(path, opts)
  check(type(path) == "string", "git.open: path: expected string, got " .. type(path))
  local r = native.discover{ path = path, exact = opts and opts.exact == true }
  r.path = path
  return setmetatable(r, Repo)
end
M.discover = M.open

-- A path inside Foundry's workspaces is that workspace, never whatever repository a
-- search upwards would find: the agent may delete its .git, and the host's auto-commit
-- must not then commit into a repository enclosing Foundry's data.
local function workspace_dirs(path)
  local root = require("foundry.paths").workspaces() .. "/"
  local real = require("luv").fs_realpath(path) or path
  for _, p in ipairs({ path, real }) do
    if p:sub(1, #root) == root then
      local name = p:sub(#root + 1):match("^([^/]+)")
      local ok, ws = pcall(require("foundry.workspace").open, name)
      if ok then
        ws:_check()
        return ws.gitdir, ws.tree
      end
      local r = M.open(p, { exact = true })
      return strip(r.gitdir), r.workdir and strip(r.workdir)
    end
  end
end

-- `target` may be a Repo, a workspace or a path: the git directory and work tree to use.
local function dirs(target, what)
  if type(target) == "table" and target.gitdir then
    return strip(target.gitdir), target.workdir and strip(target.workdir) or target.tree
  end
  check(type(target) == "string", what .. ": expected a repository or a path, got " .. type(target), 3)
  local gitdir, workdir = workspace_dirs(target)
  if gitdir then return gitdir, workdir end
  local r = M.open(target)
  return strip(r.gitdir), r.workdir and strip(r.workdir)
end

local function need_workdir(workdir, what)
  if not workdir then errors.raise("git.bare", what .. ": the repository has no work tree") end
  return workdir
end

--- The current branch, or branch `name` (local, "origin/x" remote-tracking, a full
--- ref, or a remote name for its default branch): `{ref=, name=, id=, remote=}`.
--- Raises `git.detached`, `git.unborn` or `git.not_found`.
---@param name? string
function Repo:resolve(name)
  return native.resolve{ gitdir = self.gitdir, name = name }
end

--- Every reference (name -> id, or -> target for symbolic ones); `glob` filters.
---@param glob? string e.g. "refs/heads/*"
---@return table<string, string>
function Repo:refs(glob) return native.refs{ gitdir = self.gitdir, glob = glob } end

--- Configuration values as the repository sees them (global and system included).
---@param keys string[]
---@return table<string, string>
function Repo:config(keys) return native.config{ gitdir = self.gitdir, keys = keys } end

--- Changes in the work tree and index: `{ {path=, old_path=, index=, worktree=}, ... }`
--- where index/worktree are "added", "modified", "deleted", "renamed", "typechange",
--- "untracked" (worktree only) or nil. `opts.untracked=false` leaves new files out.
---@return {path: string, old_path?: string, index?: string, worktree?: string}[]
function M.status(target, opts)
  opts = opt_table(opts, "git.status")
  local gitdir, workdir = dirs(target, "git.status")
  return native.status{ gitdir = gitdir, workdir = need_workdir(workdir, "git.status"),
                        untracked = opts.untracked ~= false, ignored = opts.ignored == true }
end
Repo.status = M.status

--- Stage everything (`git add -A`) and commit it on the current branch. Returns the new
--- commit's id, or nil when there was nothing to commit. `opts.message` is a string, or
--- a function given the status list that returns one; the author is the repository's
--- user.name/user.email (else "Foundry"), or `opts.name`/`opts.email`. Waits up to
--- `opts.lock_timeout` ms (default 5000) while another git holds index.lock. Raises
--- `git.busy` during a merge/rebase, `git.detached` on a detached HEAD.
---@param opts? {message?: string|fun(changes: table): string, name?: string, email?: string, lock_timeout?: integer}
---@return string|nil
function M.commit_all(target, opts)
  opts = opt_table(opts, "git.commit_all")
  local gitdir, workdir = dirs(target, "git.commit_all")
  need_workdir(workdir, "git.commit_all")
  local message = opts.message
  if type(message) == "function" then
    message = message(M.status({ gitdir = gitdir, workdir = workdir }))
  end
  message = message or "foundry: commit all changes"
  check(type(message) == "string", "git.commit_all: message: expected string or function, got " .. type(message))
  if not message:match("\n$") then message = message .. "\n" end
  local deadline = (opts.lock_timeout or 5000)
  local waited = 0
  while true do
    local ok, res = pcall(native.commit_all, { gitdir = gitdir, workdir = workdir, message = message,
                                                name = opts.name, email = opts.email })
    if ok then return res.changed and res.id or nil end
    if not errors.is(res, "git.locked") or waited >= deadline then error(res, 0) end
    require("foundry").sleep(100)
    waited = waited + 100
  end
end
Repo.commit_all = M.commit_all

--- The work tree and index against `opts.base` (a revision; default "HEAD"): per file
--- `{path=, old_path=, status=, binary=, additions=, deletions=, patch=, truncated=}`
--- with renames detected and new files included. `opts.patch=false` leaves the text
--- out; `opts.max_bytes` (1 MiB) caps each patch; `opts.paths` limits to pathspecs.
---@return {files: table[], additions: integer, deletions: integer}
function M.diff(target, opts)
  opts = opt_table(opts, "git.diff")
  local gitdir, workdir = dirs(target, "git.diff")
  return native.diff{ gitdir = gitdir, workdir = need_workdir(workdir, "git.diff"), base = opts.base or "HEAD",
                      paths = opts.paths, context = opts.context, max_bytes = opts.max_bytes,
                      patch = opts.patch, untracked = opts.untracked }
end
Repo.diff = M.diff

--- Commits from `opts.rev` (default "HEAD"), newest first, without those reachable from
--- `opts.hide`; at most `opts.n` (100). Each `{id=, summary=, message=, parents=,
--- author={name=, email=, time=, offset=}, committer=...}`.
function M.log(target, opts)
  opts = opt_table(opts, "git.log")
  local gitdir = dirs(target, "git.log")
  return native.log{ gitdir = gitdir, rev = opts.rev, hide = opts.hide, n = opts.n }
end
Repo.log = M.log

--- True when `name` may be a branch name (`git check-ref-format --branch`).
function M.valid_branch(name) return type(name) == "string" and native.valid_branch(name) end

--- libgit2's version, e.g. "1.5.1".
M.version = native.version

-- ------------------------------------------------------------------ mirrors of remotes

--- True when `source` names a remote repository rather than a local path.
function M.is_url(source)
  return type(source) == "string" and (source:match("^%a[%w+.-]*://") ~= nil or source:match("^[%w._-]+@[%w._-]+:") ~= nil)
end

--- Where the mirror of `url` lives in the cache.
function M.mirror_path(url)
  local crypto = require "foundry.crypto"
  local tail = url:gsub("%.git/*$", ""):match("([%w._-]+)/*$") or "repo"
  return require("foundry.paths").repos() .. "/mirrors/" .. tail .. "-" .. crypto.sha256_hex(url):sub(1, 16) .. ".git"
end

--- Make or refresh a bare mirror of `url` (every ref, as the remote has them) in
--- $XDG_CACHE_HOME/foundry/repos/mirrors and return its path. When the server asks for
--- credentials, `opts.credentials(req)` is called in the calling task with
--- `req = {url=, username=, allowed={"userpass"|"ssh_key", ...}}` and returns
--- `{username=, password=}` or `{username=, ssh_key=, ssh_pubkey=, passphrase=}` (or
--- nil to give up). Raises `git.auth_required` (no callback), `git.auth` (refused).
---@param url string
---@param opts? {credentials?: fun(req: table): table|nil, path?: string}
---@return string path
function M.mirror(url, opts)
  check(type(url) == "string", "git.mirror: url: expected string, got " .. type(url))
  opts = opt_table(opts, "git.mirror")
  local path = opts.path or M.mirror_path(url)
  local paths = require "foundry.paths"
  if not opts.path then paths.ensure(paths.repos() .. "/mirrors") end
  local req = { url = url, path = path }
  local ok, res = pcall(native.mirror, req)
  if not ok and errors.is(res, "git.auth_required") and opts.credentials then
    local cred = opts.credentials({ url = res.url or url, username = res.username, allowed = res.allowed or {} })
    if cred == nil then error(res, 0) end
    check(type(cred) == "table", "git.mirror: credentials: expected the callback to return a table or nil")
    for _, k in ipairs({ "username", "password", "ssh_key", "ssh_pubkey", "passphrase" }) do req[k] = cred[k] end
    ok, res = pcall(native.mirror, req)
  end
  if not ok then error(res, 0) end
  return res.path, res
end

-- ------------------------------------------------------------------ workspaces

-- Loaded on first use: `git.workspace.create{...}`.
return setmetatable(M, {
  __index = function(t, k)
    if k == "workspace" then
      local ws = require "foundry.workspace"
      rawset(t, k, ws)
      return ws
    end
  end,
})
