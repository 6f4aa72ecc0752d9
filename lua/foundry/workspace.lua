--- Sandbox workspaces with branch isolation by construction (`foundry.git.workspace`).
---
--- A workspace is a work tree with its own git directory that holds only the sandbox's
--- branch and the read-only branches it was given (its base by default): no other ref,
--- and no object of any other branch, yet the real `git` works in it. Its objects come
--- from shared single-branch stores (one per source repository and branch, read-only,
--- borrowed through objects/info/alternates); its new commits go to its own objects.
--- See docs/workspaces.md for the design, the layout and the numbers.
---
---   local ws = git.workspace.create{ source = "~/src/app", name = "fix-1" }
---   -- agent works in ws.tree (mounted at /workspace, see ws.mounts) ...
---   ws:commit_all{ message = "agent work" }
---   ws:sync()       -- branch sandbox/fix-1 in ~/src/app
---   ws:destroy()    -- nothing left, in the workspace, the cache or the source
---
--- On disk (host):
---   <data>/workspaces/<name>/workspace.json       what open() reads
---   <data>/workspaces/<name>/tree/                 the work tree, mounted at /workspace
---   <data>/workspaces/<name>/tree/.git/            its git directory
---   <data>/workspaces/<name>/.foundry/objects-<i>  symlinks to the stores' objects,
---                                                  mounted read-only at /.foundry/objects-<i>
--- The git directory names its stores relatively (../../../.foundry/objects-<i>), so the
--- same files work on the host and in the container.
local native = require "foundry._git"
local errors = require "foundry.errors"
local fs = require "foundry.fs"
local json = require "foundry.json"
local paths = require "foundry.paths"
local uv = require "luv"

local M = {}

--- Where the work tree is mounted in a container, and the stores next to it.
M.MOUNT = "/workspace"
M.STORE_MOUNT = "/.foundry"
M.STORE_LINK = "../../../.foundry/objects-"

local function git() return require "foundry.git" end

local function check(cond, msg)
  if not cond then error(msg, 3) end
end

local function sha(s) return require("foundry.crypto").sha256_hex(s) end

local function realpath(p)
  local r = uv.fs_realpath(p)
  return r or p
end

local function strip(p) return (p:gsub("/+$", "")) end

-- ------------------------------------------------------------------ the object

---@class foundry.git.Workspace
---@field name string
---@field path string the workspace's directory (host)
---@field tree string the work tree (host); mounted at /workspace
---@field gitdir string tree .. "/.git"
---@field workdir string = tree
---@field branch string the sandbox's branch, e.g. "sandbox/fix-1"
---@field ref string "refs/heads/" .. branch
---@field base string the base branch's name, e.g. "main"
---@field base_ref string e.g. "refs/heads/main"
---@field base_commit string the commit the workspace started from
---@field read_only {ref: string, id: string}[] the other branches it holds
---@field source {gitdir: string, workdir?: string, path: string, url?: string}
---@field mounts {source: string, target: string, read_only: boolean}[] for the container
---@field cwd string where the agent starts in the container (/workspace[/subdir])
local WS = {}
WS.__index = WS
WS.__name = "foundry.git.Workspace"
function WS:__tostring() return "foundry.git.Workspace(" .. self.name .. ")" end

local function mounts_of(rec)
  local m = { { source = rec.tree, target = M.MOUNT, read_only = false } }
  for i, s in ipairs(rec.stores) do
    m[#m + 1] = { source = s.path .. "/objects", target = M.STORE_MOUNT .. "/objects-" .. (i - 1), read_only = true }
  end
  return m
end

local function from_rec(rec)
  local ws = setmetatable({}, WS)
  for k, v in pairs(rec) do ws[k] = v end
  ws.gitdir = rec.tree .. "/.git"
  ws.workdir = rec.tree
  ws.mounts = mounts_of(rec)
  ws.cwd = M.MOUNT .. (rec.subdir and rec.subdir ~= "" and ("/" .. rec.subdir) or "")
  return ws
end

local function rec_path(path) return path .. "/workspace.json" end

--- Reopen a workspace: by name, by directory, or from what `ws:record()` returned (or
--- an entry of `list()`). Raises `git.not_found` when it does not exist.
---@param what string|table
---@return foundry.git.Workspace
function M.open(what)
  local path
  if type(what) == "table" then
    path = what.path or (what.name and (paths.workspaces() .. "/" .. what.name))
  elseif type(what) == "string" then
    path = what:find("/", 1, true) and what or (paths.workspaces() .. "/" .. what)
  end
  check(type(path) == "string", "workspace.open: expected a name, a path or a record, got " .. type(what))
  local data = fs.sync.read(rec_path(path))
  if not data then
    errors.raise("git.not_found", "no workspace at " .. path, "list them with git.workspace.list()")
  end
  local rec = json.decode(data)
  return from_rec(rec)
end

--- Plain data to store and reopen the workspace with later (`open(rec)`).
function WS:record()
  return { kind = "git", name = self.name, path = self.path, branch = self.branch, base = self.base,
           base_commit = self.base_commit }
end

--- Every workspace: `{ {kind="git", name=, path=}, ... }` (also those whose creation
--- was interrupted: they have no workspace.json; `open` then fails, `destroy` works).
function M.list()
  local out = {}
  local dir = paths.workspaces()
  if not fs.is_dir(dir) then return out end
  for _, e in ipairs(fs.list(dir)) do
    if e.type == "directory" then out[#out + 1] = { kind = "git", name = e.name, path = dir .. "/" .. e.name } end
  end
  return out
end

-- The agent writes the git directory: before Foundry's own (host) operations, make sure
-- it still points only where we put it. libgit2 runs no hooks or filters; this keeps it
-- from being redirected to other host paths (see docs/workspaces.md, "Trust").
function WS:_check()
  local st = uv.fs_lstat(self.gitdir)
  if not st or st.type ~= "directory" then
    errors.raise("git.tampered", self.gitdir .. " is not a directory any more")
  end
  for _, f in ipairs({ "commondir", "gitdir" }) do
    if uv.fs_lstat(self.gitdir .. "/" .. f) then
      errors.raise("git.tampered", self.gitdir .. "/" .. f .. " exists: the workspace's git directory was redirected")
    end
  end
  local alt = fs.sync.read(self.gitdir .. "/objects/info/alternates")
  if alt ~= self.alternates then
    errors.raise("git.tampered", "objects/info/alternates of " .. self.name .. " was changed")
  end
end

--- `git status` of the workspace (see git.status).
function WS:status(opts) self:_check(); return git().status(self, opts) end

--- Commit every change on the sandbox's branch (see git.commit_all): the new id, or nil.
function WS:commit_all(opts) self:_check(); return git().commit_all(self, opts) end

--- Per-file changes against the base commit, committed or not, new files included:
--- `{files={ {path=, old_path=, status=, binary=, additions=, deletions=, patch=} }, ...}`
--- (see git.diff). This is what the web console's File Changes tab shows.
function WS:changes(opts)
  self:_check()
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.base = o.base or self.base_commit
  return git().diff(self, o)
end

--- The same as text: a unified diff (`opts.stat`: a summary like `git diff --stat`).
---@return string
function WS:diff(opts)
  opts = opts or {}
  local d = self:changes({ base = opts.base, paths = opts.paths, patch = not opts.stat, context = opts.context })
  local out = {}
  if opts.stat then
    local width = 0
    for _, f in ipairs(d.files) do
      local name = f.old_path and (f.old_path .. " => " .. f.path) or f.path
      f._name = name
      if #name > width then width = #name end
    end
    for _, f in ipairs(d.files) do
      local n = f.additions + f.deletions
      out[#out + 1] = string.format(" %-" .. width .. "s | %s\n", f._name,
        f.binary and "Bin" or (n .. " " .. string.rep("+", math.min(f.additions, 40)) .. string.rep("-", math.min(f.deletions, 40))))
    end
    if #d.files > 0 then
      out[#out + 1] = string.format(" %d file%s changed, %d insertion%s(+), %d deletion%s(-)\n", #d.files,
        #d.files == 1 and "" or "s", d.additions, d.additions == 1 and "" or "s", d.deletions, d.deletions == 1 and "" or "s")
    end
  else
    for _, f in ipairs(d.files) do out[#out + 1] = f.patch or "" end
  end
  return table.concat(out)
end

--- Commits on the sandbox's branch (newest first; see git.log), by default only those
--- its base does not have.
function WS:log(opts)
  self:_check()
  opts = opts or {}
  local hide
  if not opts.all then hide = opts.hide or self.base_commit end
  return git().log(self, { rev = opts.rev or self.ref, hide = hide, n = opts.n })
end

--- How many commits the sandbox made.
function WS:commits()
  return #self:log({ n = 1 << 30 })
end

--- Bring the sandbox's branch, and the objects only it has, into the source repository
--- as the branch of the same name: a fast-forward only, unless `opts.force`. Without
--- commits it does nothing unless `opts.keep_branch`. Refuses (`git.checked_out`) to
--- move the branch checked out in the source's work tree. Uncommitted changes stay
--- here. Returns `{branch=, commits=, updated=, id=, old=, created=}`.
function WS:sync(opts)
  opts = opts or {}
  self:_check()
  local n = self:commits()
  if n == 0 and not opts.keep_branch then return { branch = self.branch, commits = 0, updated = false } end
  local res = native.sync{ source = self.source.gitdir, workspace = self.gitdir, ref = self.ref, force = opts.force == true }
  res.branch = self.branch
  res.commits = n
  res.updated = res.updated == true
  return res
end

--- Give the work tree and git directory to `uid:gid` (the sandbox's user; needs root).
function WS:chown(uid, gid)
  check(math.type(uid) == "integer" and math.type(gid or uid) == "integer", "workspace:chown: expected integer uid, gid")
  native.chown{ path = self.tree, uid = uid, gid = gid or uid }
end

-- ------------------------------------------------------------------ stores and mirrors

local function store_dir(gitdir, ref)
  local key = sha(realpath(gitdir) .. "\0" .. ref):sub(1, 16)
  local label = ((realpath(gitdir):gsub("/%.git/*$", ""):gsub("/+$", ""):match("([^/]+)$") or "repo") .. "-" ..
    ref:gsub("^refs/heads/", ""):gsub("^refs/remotes/", "r-")):gsub("[^%w._-]", "_")
  return paths.repos() .. "/stores/" .. label:sub(1, 48) .. "-" .. key
end

local function user_id(root) return "ws-" .. sha(root):sub(1, 24) end

-- Remove the cache's directories that became empty (nothing of ours may remain).
local function tidy_cache()
  for _, d in ipairs({ paths.repos() .. "/stores", paths.repos() .. "/mirrors", paths.repos() }) do
    uv.fs_rmdir(d)
  end
  uv.fs_rmdir(paths.workspaces())
end

local MIRROR_USERS = "foundry-users"

local function mirror_acquire(url, root, opts)
  local path = git().mirror(url, { credentials = opts.credentials })
  fs.mkdir(path .. "/" .. MIRROR_USERS)
  fs.write(path .. "/" .. MIRROR_USERS .. "/" .. user_id(root), root, { fsync = false })
  return path
end

local function mirror_release(path, root)
  if not path then return end
  os.remove(path .. "/" .. MIRROR_USERS .. "/" .. user_id(root))
  local dir = path .. "/" .. MIRROR_USERS
  if fs.is_dir(dir) then
    for _, e in ipairs(fs.list(dir)) do
      local who = fs.sync.read(dir .. "/" .. e.name)
      if who and not uv.fs_lstat(who) then os.remove(dir .. "/" .. e.name) end
    end
    if #fs.list(dir) > 0 then return end
  end
  native.remove{ path = path }
end

-- ------------------------------------------------------------------ create

local NAME = "^[%w][%w._-]*$"

local function config_for(src, spec, name, base)
  local id = native.config{ gitdir = src.gitdir, keys = { "user.name", "user.email" } }
  local cfg = {
    ["core.hooksPath"] = "/dev/null",  -- no hooks, on the host or in the container
    ["core.fsmonitor"] = "false",
    ["core.autocrlf"] = "false",
    ["core.trustctime"] = "false",     -- chown (uid 1000) changes ctime, not content
    ["core.checkStat"] = "minimal",    -- and bind mounts may change inode numbers
    ["receive.denyCurrentBranch"] = "refuse",
    ["foundry.workspace"] = name,
    ["foundry.base"] = base.ref,
  }
  cfg["user.name"] = spec.user_name or id["user.name"]
  cfg["user.email"] = spec.user_email or id["user.email"]
  return cfg
end

-- mkdir -p below `tree`, giving what it creates to `owner`.
local function mkdir_below(tree, dir, owner)
  local cur = tree
  for part in dir:sub(#tree + 2):gmatch("[^/]+") do
    cur = cur .. "/" .. part
    if not uv.fs_lstat(cur) then
      fs.mkdir(cur)
      if owner then uv.fs_lchown(cur, owner.uid, owner.gid or owner.uid) end
    end
  end
end

-- Copy the source's uncommitted state (as its work tree has it) into the new tree.
local function carry(src_workdir, tree, changes, owner)
  for _, c in ipairs(changes) do
    for _, p in ipairs(c.old_path and { c.old_path, c.path } or { c.path }) do
      local from, to = src_workdir .. "/" .. p, tree .. "/" .. p
      local st = uv.fs_lstat(from)
      if not st then
        if uv.fs_lstat(to) then fs.unlink(to) end
      elseif st.type == "file" or st.type == "link" then
        mkdir_below(tree, to:match("^(.*)/[^/]+$"), owner)
        if uv.fs_lstat(to) then fs.unlink(to) end
        if st.type == "link" then fs.symlink(fs.readlink(from), to) else fs.copy(from, to) end
        if owner then uv.fs_lchown(to, owner.uid, owner.gid or owner.uid) end
      end
    end
  end
end

local function check_spec(spec)
  check(type(spec) == "table", "workspace.create: expected a table {source=, name=, ...}, got " .. type(spec))
  local known = { source = 1, name = 1, branch = 1, from = 1, read_only = 1, carry_changes = 1, subdir = 1,
                  owner = 1, credentials = 1, user_name = 1, user_email = 1, threads = 1, continue = 1 }
  for k in pairs(spec) do
    if not known[k] then
      local near = require("foundry.util").did_you_mean(tostring(k), require("foundry.util").keys(known))
      error("workspace.create: unknown option '" .. tostring(k) .. "'" .. (near and (" (did you mean '" .. near .. "'?)") or ""), 3)
    end
  end
  check(type(spec.source) == "string", "workspace.create: source: expected string, got " .. type(spec.source))
  check(type(spec.name) == "string", "workspace.create: name: expected string, got " .. type(spec.name))
  for _, k in ipairs({ "branch", "from", "subdir", "user_name", "user_email" }) do
    check(spec[k] == nil or type(spec[k]) == "string", "workspace.create: " .. k .. ": expected string, got " .. type(spec[k]))
  end
  check(spec.read_only == nil or type(spec.read_only) == "table", "workspace.create: read_only: expected a list of branch names")
  check(spec.owner == nil or (type(spec.owner) == "table" and math.type(spec.owner.uid) == "integer"),
    "workspace.create: owner: expected {uid=, gid=}")
end

--- Create the workspace `spec.name` from `spec.source` (a repository path, or a URL
--- mirrored into the cache). Options:
---  - `branch`: the sandbox's branch (default "sandbox/<name>"); must not exist yet in
---    the source nor in another workspace of it (`git.branch_exists`), unless
---  - `continue`: an existing branch of the source is continued: the tree starts at its
---    tip, and its own commits (those `from` does not have) count as the sandbox's. It must
---    not be checked out in the source (`git.checked_out`: sync-back could not move it).
---  - `from`: the base branch (default: the source's current branch; the remote's
---    default branch for a URL). Detached HEAD: `git.detached`.
---  - `read_only`: branches the workspace also holds, as they are (default `{from}`;
---    `{}` for none). Nothing else is in it.
---  - `carry_changes`: copy the source's uncommitted changes (they make it refuse with
---    `git.dirty` otherwise; only checked when `from` is the checked-out branch).
---  - `subdir`: where the agent starts (`ws.cwd`), a directory of the tree.
---  - `owner`: `{uid=, gid=}` to own every file (as root), e.g. the sandbox's user 1000.
---  - `credentials`: for a URL, see git.mirror.
--- Errors change nothing: `git.not_a_repo`, `git.not_found` (unknown base),
--- `git.invalid_branch`, `git.branch_exists`, `git.dirty`, `git.submodules`,
--- `git.exists` (the workspace exists), `git.invalid_name`.
---@return foundry.git.Workspace
function M.create(spec)
  check_spec(spec)
  local name = spec.name
  if not name:match(NAME) or #name > 64 then
    errors.raise("git.invalid_name", "invalid workspace name '" .. name .. "'",
      "use letters, digits, '.', '_' and '-' (64 at most), starting with a letter or digit")
  end
  local root = paths.workspaces() .. "/" .. name
  if uv.fs_lstat(root) then
    errors.raise("git.exists", "a workspace already exists at " .. root, "destroy it first, or pick another name")
  end
  local branch = spec.branch or ("sandbox/" .. name)
  if not git().valid_branch(branch) then
    errors.raise("git.invalid_branch", "'" .. branch .. "' is not a valid branch name", "see git check-ref-format")
  end
  local t_start = uv.hrtime()
  local timings = {}
  local function mark(what, t0) timings[what] = (uv.hrtime() - t0) // 1000000 end
  local undo = {}
  local function rollback()
    for i = #undo, 1, -1 do pcall(undo[i]) end
  end
  local ok, res = pcall(function()
    -- the source: a path, or the mirror of a URL
    local source_path, url, mirror = spec.source, nil, nil
    if git().is_url(spec.source) then
      url = spec.source
      mirror = mirror_acquire(url, root, spec)
      undo[#undo + 1] = function() mirror_release(mirror, root); tidy_cache() end
      source_path = mirror
    end
    local src = git().open(source_path)
    if src.shallow then
      errors.raise("git.unsupported", source_path .. " is a shallow clone", "fetch its full history (git fetch --unshallow)")
    end
    local base = src:resolve(spec.from)
    local ref = "refs/heads/" .. branch
    local taken = src:refs(ref)
    local tip -- continuing an existing branch: its commit
    if taken[ref] and not spec.continue then
      -- most often the commits of an earlier sandbox of that name, kept by foundry rm
      errors.raise("git.branch_exists", "branch '" .. branch .. "' already exists in " .. source_path,
        "continue it: foundry new -b " .. branch .. " (continue=true); or pick another branch name, or delete that one")
    elseif taken[ref] then
      tip = taken[ref]
      if src.workdir and not src.bare and src.head and src.head.ref == ref then
        errors.raise("git.checked_out", "branch '" .. branch .. "' is checked out in " .. strip(src.workdir),
          "switch that work tree to another branch first: the sandbox's commits come back to it by fast-forward")
      end
      if spec.carry_changes then
        errors.raise("git.carry_mismatch", "carry_changes cannot be used when continuing a branch",
          "commit the changes on that branch instead")
      end
    end
    -- a continued branch counts from where it left its base (git merge-base), so its log
    -- and diff show its own commits, not the base's newer ones undone
    local base_commit = base.id
    if tip then
      local mb = require("foundry.exec").exec{ "git", "--git-dir", strip(src.gitdir), "merge-base", tip, base.id }
      if mb.status ~= 0 then
        errors.raise("git.unrelated", "branch '" .. branch .. "' shares no history with " .. base.name,
          "start it from a branch it came from (--from, from=)")
      end
      base_commit = mb.stdout:match("%x+")
    end
    local src_gitdir = strip(src.gitdir)
    for _, other in ipairs(M.list()) do
      local data = fs.sync.read(rec_path(other.path))
      local o = data and json.decode(data)
      if o and o.branch == branch and realpath(o.source.gitdir) == realpath(src_gitdir) then
        errors.raise("git.branch_exists", "workspace '" .. o.name .. "' already uses branch '" .. branch .. "'",
          "pick another branch name (branch=)")
      end
    end
    -- the branches it holds
    local holds, seen = {}, {}
    local ro = spec.read_only or { base.ref }
    for _, b in ipairs(ro) do
      check(type(b) == "string", "workspace.create: read_only: expected a list of branch names")
      local r = b == base.ref and base or src:resolve(b)
      if r.ref == ref then errors.raise("git.branch_exists", "read_only names the sandbox's own branch " .. branch) end
      if not seen[r.ref] then seen[r.ref] = true; holds[#holds + 1] = { ref = r.ref, id = r.id } end
    end
    -- uncommitted changes matter when the base is what the source has checked out (and the
    -- tree starts from it: a continued branch starts from its own tip)
    local on_base = not tip and src.workdir and not src.bare and src.head and src.head.ref == base.ref
    if spec.carry_changes and not on_base then
      errors.raise("git.carry_mismatch", "carry_changes needs the base to be the branch checked out in the source",
        "leave out from=, or check out " .. base.name .. " there")
    end
    local function dirty_error(st)
      local names = {}
      for i = 1, math.min(3, #st) do names[i] = st[i].path end
      return errors.new("git.dirty", string.format("%s has uncommitted changes (%d file%s: %s%s)", strip(src.workdir), #st,
        #st == 1 and "" or "s", table.concat(names, ", "), #st > 3 and ", ..." or ""),
        "commit or stash them, or copy them into the workspace: foundry new --carry-changes (carry_changes=true in Lua)")
    end
    -- from here on, every step is undone on failure
    paths.ensure(paths.workspaces())
    local okm, errm = uv.fs_mkdir(root, tonumber("700", 8))
    if not okm then
      if tostring(errm):match("^EEXIST") then errors.raise("git.exists", "a workspace already exists at " .. root) end
      errors.raise("io.mkdir", "cannot create " .. root .. ": " .. tostring(errm))
    end
    undo[#undo + 1] = function() native.remove{ path = root }; uv.fs_rmdir(paths.workspaces()) end
    local tree = root .. "/tree"
    local owner = spec.owner
    local uid, gid = owner and owner.uid, owner and (owner.gid or owner.uid)
    -- the stores and the checkout are independent: run them side by side
    local stores, co, co_err, needs_filters, changes = {}, nil, nil, false, nil
    local user = user_id(root)
    local function acquire()
      local t0 = uv.hrtime()
      paths.ensure(paths.repos() .. "/stores")
      local byref = {}
      local want = { { ref = base.ref, id = base.id }, table.unpack(holds) }
      if tip then want[#want + 1] = { ref = ref, id = tip } end -- the continued branch's own objects
      for _, h in ipairs(want) do
        if not byref[h.ref] then
          local dir = store_dir(src_gitdir, h.ref)
          local s = native.store_acquire{ store = dir, gitdir = src_gitdir, tip = h.id, user = user, info = root }
          stores[#stores + 1] = { store = dir, gen = s.gen, path = s.path, ref = h.ref, mode = s.mode }
          undo[#undo + 1] = function() native.store_release{ store = dir, gen = s.gen, user = user }; tidy_cache() end
          byref[h.ref] = true
        end
      end
      mark("stores_ms", t0)
    end
    local function checkout()
      local t0 = uv.hrtime()
      local okc, r = pcall(native.checkout, { gitdir = src_gitdir, commit = tip or base.id, workdir = tree,
                                              owner_uid = uid, owner_gid = gid, threads = spec.threads })
      if okc then co = r
      elseif errors.is(r, "git.needs_filters") then needs_filters = true
      else co_err = r end
      mark("checkout_ms", t0)
    end
    -- (the source's status is read-only: on a dirty source everything above is undone)
    local function status()
      if not on_base then return end
      local t0 = uv.hrtime()
      local st = src:status()
      if #st > 0 then changes = st end
      mark("status_ms", t0)
    end
    local t_par = uv.hrtime()
    require("foundry").parallel({ acquire, checkout, status })
    mark("parallel_ms", t_par)
    if changes and not spec.carry_changes then error(dirty_error(changes), 0) end
    if co_err then error(co_err, 0) end
    local t_setup = uv.hrtime()
    -- the git directory: refs, config, alternates through links next to the tree
    fs.mkdir(root .. "/.foundry")
    local alt = {}
    for i, s in ipairs(stores) do
      fs.symlink(s.path .. "/objects", root .. "/.foundry/objects-" .. (i - 1))
      alt[#alt + 1] = M.STORE_LINK .. (i - 1) .. "\n"
    end
    local alternates = table.concat(alt)
    local refs = { [ref] = tip or base.id }
    for _, h in ipairs(holds) do refs[h.ref] = h.id end
    native.setup{ workdir = tree, head = branch, refs = refs, alternates = alternates,
                  config = config_for(src, spec, name, base), owner_uid = uid, owner_gid = gid }
    mark("setup_ms", t_setup)
    if needs_filters then
      local t0 = uv.hrtime()
      native.checkout{ mode = "libgit2", workdir = tree, owner_uid = uid, owner_gid = gid }
      mark("checkout_ms", t0)
    end
    if changes then carry(strip(src.workdir), tree, changes, owner) end
    local subdir = spec.subdir or (not url and src.prefix ~= "" and src.prefix) or nil
    if subdir then
      subdir = subdir:gsub("^/+", ""):gsub("/+$", "")
      if subdir:find("%.%.") or not fs.is_dir(tree .. "/" .. subdir) then
        errors.raise("git.not_found", "subdir '" .. subdir .. "' is not a directory of " .. base.name)
      end
    end
    local rec = {
      version = 1, kind = "git", name = name, path = root, tree = tree, branch = branch, ref = ref,
      base = base.name, base_ref = base.ref, base_commit = base_commit, read_only = holds, continued = tip and true or nil,
      source = { path = spec.source, gitdir = src_gitdir, workdir = src.workdir and strip(src.workdir) or nil, url = url },
      mirror = mirror, stores = stores, alternates = alternates, subdir = subdir,
      owner = owner and { uid = uid, gid = gid } or nil, created_at = os.time(),
      checkout = co and { files = co.files, ms = co.write_ms, threads = co.threads } or { mode = "libgit2" },
      timings = timings,
    }
    mark("total_ms", t_start)
    fs.write(rec_path(root), json.encode(rec), { mode = tonumber("600", 8), fsync = false })
    return from_rec(rec)
  end)
  if not ok then
    rollback()
    error(res, 0)
  end
  return res
end

-- ------------------------------------------------------------------ destroy

--- Remove the workspace and everything only it used: its directory, its claim on the
--- shared stores (a store nobody uses any more goes too) and on a mirrored remote.
--- The source repository keeps only what sync put there. Idempotent.
function WS:destroy()
  native.remove{ path = self.path }
  for _, s in ipairs(self.stores or {}) do
    native.store_release{ store = s.store, gen = s.gen, user = user_id(self.path) }
  end
  mirror_release(self.mirror, self.path)
  tidy_cache()
end

--- Destroy a workspace by name, path, record or object (see WS:destroy). A directory
--- left by an interrupted create (no workspace.json) is removed as well.
function M.destroy(what)
  if getmetatable(what) == WS then return what:destroy() end
  local ok, ws = pcall(M.open, what)
  if ok then return ws:destroy() end
  local path = type(what) == "table" and what.path or (type(what) == "string" and (what:find("/", 1, true) and what or paths.workspaces() .. "/" .. what))
  if path and uv.fs_lstat(path) then native.remove{ path = path } end
  tidy_cache()
end

return M
