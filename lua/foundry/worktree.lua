--- Sandbox workspaces made with the `git` program: the fallback the sandbox lifecycle
--- uses while `foundry.git` (libgit2, branch isolation by construction) is not built in.
---
--- A workspace is `<workspaces>/<name>/tree`: a clone of the repository's base branch
--- that borrows the repository's objects through `objects/info/alternates` (nothing is
--- copied), checked out on the sandbox's branch. The container sees the tree at
--- /workspace and the borrowed object directory read-only at its host path. Weaker than
--- foundry.git: the borrowed directory holds every branch's objects (not their refs).
---
--- Same interface as foundry.git's workspaces: create{}, open(rec), list(), and
--- ws.mounts, ws:record(), ws:sync(), ws:diff(), ws:destroy().
local errors = require "foundry.errors"
local exec = require("foundry.exec").exec
local fs = require "foundry.fs"
local paths = require "foundry.paths"
local util = require "foundry.util"

local M = {}

-- The work tree belongs to the sandbox's user (uid 1000), not to us: tell git that is fine.
local SAFE = { "-c", "safe.directory=*" }

local function git(dir, ...)
  local r = exec{ "git", SAFE[1], SAFE[2], "-C", dir, ... }
  if not r.ok then
    local msg = util.trim(r.stderr):gsub("\n.*", "")
    errors.raise("git.failed", "git " .. table.concat({ ... }, " ") .. ": " .. msg)
  end
  return util.trim(r.stdout)
end

local WS = {}
WS.__index = WS
WS.__name = "foundry.worktree.Workspace"

local function from_rec(rec)
  local ws = setmetatable(util.copy(rec), WS)
  ws.tree = rec.path .. "/tree"
  ws.mounts = {
    { source = ws.tree, target = "/workspace", read_only = false },
    { source = rec.objects, target = rec.objects, read_only = true },
  }
  return ws
end

--- What to store to reopen the workspace later (plain data).
function WS:record()
  return { kind = "worktree", name = self.name, path = self.path, repo = self.repo, branch = self.branch,
           base = self.base, base_commit = self.base_commit, objects = self.objects }
end

--- Prepare the workspace of sandbox `spec.name` from `spec.source` (a repository path):
--- branch `spec.branch` (default sandbox/<name>) from `spec.from` (default the
--- repository's current branch; an existing branch of that name is continued). The
--- directories and `ws.mounts` exist when this returns; `ws:populate()` fetches and checks
--- out the files (so a container can be made meanwhile).
function M.prepare(spec)
  local repo = spec.source
  if repo:match("://") or repo:match("^[%w._-]+@") then
    errors.raise("git.unsupported", "remote repositories need foundry.git (not built in): clone it first")
  end
  local gitdir = git(repo, "rev-parse", "--absolute-git-dir")
  local common = git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")
  local objects = common .. "/objects"
  local path = paths.workspaces() .. "/" .. spec.name
  if fs.exists(path) then errors.raise("git.exists", "a workspace already exists at " .. path, "foundry prune") end
  local branch = spec.branch or ("sandbox/" .. spec.name)
  local has_branch = exec{ "git", SAFE[1], SAFE[2], "-C", repo, "rev-parse", "--verify", "-q", "refs/heads/" .. branch }.ok
  local start = has_branch and branch or spec.from or "HEAD"
  local r = exec{ "git", SAFE[1], SAFE[2], "-C", repo, "rev-parse", "--verify", "-q", start .. "^{commit}" }
  if not r.ok then
    errors.raise("git.not_found", "no commit '" .. start .. "' in " .. repo, "name a branch, tag or commit of that repository")
  end
  local base_commit = util.trim(r.stdout)
  local base = spec.from or git(repo, "rev-parse", "--abbrev-ref", "HEAD")
  paths.ensure(paths.workspaces())
  fs.mkdir(path)
  local ok, err = pcall(function()
    git(path, "init", "-q", "tree")
    fs.write(path .. "/tree/.git/objects/info/alternates", objects .. "\n", { fsync = false })
  end)
  if not ok then fs.rm(path); error(err, 0) end
  local ws = from_rec({ name = spec.name, path = path, repo = repo, branch = branch, base = base,
                        base_commit = base_commit, objects = objects })
  ws.gitdir = gitdir
  return ws
end

--- Fetch the base commit into the workspace and check out the sandbox's branch.
function WS:populate()
  git(self.tree, "fetch", "-q", "--no-tags", self.gitdir or self.repo, "+" .. self.base_commit .. ":refs/heads/" .. self.branch)
  git(self.tree, "checkout", "-q", self.branch)
end

--- prepare + populate.
function M.create(spec)
  local ws = M.prepare(spec)
  local ok, err = pcall(ws.populate, ws)
  if not ok then fs.rm(ws.path); error(err, 0) end
  return ws
end

--- Reopen a workspace from its record.
function M.open(rec)
  return from_rec(rec)
end

--- Every workspace directory: {name=, path=}.
function M.list()
  local out = {}
  local dir = paths.workspaces()
  if not fs.is_dir(dir) then return out end
  for _, e in ipairs(fs.list(dir)) do
    if e.type == "directory" then out[#out + 1] = { kind = "worktree", name = e.name, path = dir .. "/" .. e.name } end
  end
  return out
end

--- Commits on the sandbox branch that the base does not have.
function WS:commits()
  if not fs.exists(self.tree .. "/.git") then return 0 end
  local n = git(self.tree, "rev-list", "--count", self.base_commit .. ".." .. self.branch)
  return tonumber(n) or 0
end

--- Bring the sandbox's commits into the user's repository as its branch (only when
--- there are some, or `opts.keep_branch`). Returns {branch=, commits=, updated=}.
function WS:sync(opts)
  opts = opts or {}
  local n = self:commits()
  if n == 0 and not opts.keep_branch then return { branch = self.branch, commits = 0, updated = false } end
  local head = exec{ "git", SAFE[1], SAFE[2], "-C", self.repo, "symbolic-ref", "-q", "--short", "HEAD" }
  if head.ok and util.trim(head.stdout) == self.branch then
    errors.raise("git.checked_out", "the branch " .. self.branch .. " is checked out in " .. self.repo,
      "switch that repository to another branch, then sync again")
  end
  git(self.repo, "fetch", "-q", "--no-tags", "--upload-pack=git -c safe.directory=* upload-pack", self.tree, "+refs/heads/" .. self.branch .. ":refs/heads/" .. self.branch)
  return { branch = self.branch, commits = n, updated = true }
end

--- The changes in the work tree against the base: a unified diff (`opts.stat`: a
--- summary) including uncommitted and untracked files.
function WS:diff(opts)
  opts = opts or {}
  -- a scratch index, so the sandbox's own index is not touched (nor re-owned)
  local tmp = os.tmpname()
  local ok, res = pcall(function()
    fs.copy(self.tree .. "/.git/index", tmp)
    local env = { GIT_INDEX_FILE = tmp }
    exec{ "git", SAFE[1], SAFE[2], "-C", self.tree, "add", "-A", "-N", env = env, check = true }
    local args = { "git", SAFE[1], SAFE[2], "-C", self.tree, "diff", "--no-color", "--no-ext-diff", self.base_commit, env = env }
    if opts.stat then args[#args + 1] = "--stat" end
    local r = exec(args)
    if not r.ok then errors.raise("git.failed", "git diff: " .. util.trim(r.stderr)) end
    return r.stdout
  end)
  os.remove(tmp)
  if not ok then error(res, 0) end
  return res
end

--- Remove the workspace (its directory; the user's repository keeps what sync made).
function WS:destroy()
  fs.rm(self.path)
end

return M
