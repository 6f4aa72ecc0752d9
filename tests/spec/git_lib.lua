-- Helpers for the git specs: a private FOUNDRY_HOME, test repositories made with the real
-- `git`, and snapshots for "changes nothing" / "zero trace". Loaded with dofile().
local uv = require "luv"
local fs = require "foundry.fs"

local G = {}

local saved = {}
local function setenv(k, v)
  if saved[k] == nil then saved[k] = os.getenv(k) or false end
  if v then uv.os_setenv(k, v) else uv.os_unsetenv(k) end
end

-- The real git, isolated from the machine's configuration.
function G.env()
  return {
    HOME = G.root .. "/userhome", GIT_CONFIG_NOSYSTEM = "1", GIT_AUTHOR_DATE = false, GIT_COMMITTER_DATE = false,
    GIT_TERMINAL_PROMPT = "0", GIT_EDITOR = "true",
  }
end

--- Run git in `dir`; raises with its stderr on failure; returns stdout without the last
--- newline. A table as the last argument gives more exec options (env=, stdin=, ok=true to
--- return the result instead of raising).
function G.git(dir, ...)
  local args = { ... }
  local extra = type(args[#args]) == "table" and table.remove(args) or {}
  local argv = { "git", "-C", dir }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local env = G.env()
  for k, v in pairs(extra.env or {}) do env[k] = v end
  argv.env = env
  argv.stdin = extra.stdin
  local r = foundry.exec(argv)
  if extra.ok then return r end
  if not r.ok then error("git " .. table.concat(args, " ") .. " in " .. dir .. ": " .. r.stderr, 2) end
  return (r.stdout:gsub("\n$", ""))
end

function G.lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

function G.set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

--- A fresh FOUNDRY_HOME under a new temporary directory; returns the root.
function G.setup()
  G.root = fs.mkdtemp("/tmp/foundry-git-XXXXXX")
  G.home = G.root .. "/home"
  setenv("FOUNDRY_HOME", G.home)
  fs.mkdir(G.root .. "/userhome")
  fs.write(G.root .. "/userhome/.gitconfig", "[user]\n\tname = Test User\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n")
  return G.root
end

function G.teardown()
  if G.root then
    foundry.exec{ "chmod", "-R", "u+w", G.root }
    fs.rm(G.root)
  end
  for k, v in pairs(saved) do if v then uv.os_setenv(k, v) else uv.os_unsetenv(k) end end
  saved = {}
  G.root = nil
end

function G.write(path, data)
  fs.mkdir(path:match("^(.*)/[^/]+$"))
  fs.write(path, data, { fsync = false })
end

--- The source repository of the specs: branches main, feature-a and secret-b, each with
--- files and commits of its own; main checked out. Returns its path.
function G.source(name)
  local repo = G.root .. "/" .. (name or "src")
  G.git(G.root, "init", "-q", "-b", "main", repo)
  G.git(repo, "config", "user.name", "Source Owner")
  G.git(repo, "config", "user.email", "owner@example.com")
  G.write(repo .. "/README.md", "# app\n")
  G.write(repo .. "/src/app.c", "int main(void) { return 0; }\n")
  G.git(repo, "add", "-A")
  G.git(repo, "commit", "-q", "-m", "main: initial")
  G.write(repo .. "/src/lib.c", "int lib(void) { return 1; }\n")
  G.git(repo, "add", "-A")
  G.git(repo, "commit", "-q", "-m", "main: add lib")
  G.git(repo, "checkout", "-q", "-b", "feature-a")
  G.write(repo .. "/feature/a.txt", "feature a only\n")
  G.git(repo, "add", "-A")
  G.git(repo, "commit", "-q", "-m", "feature-a: the a feature")
  G.git(repo, "checkout", "-q", "-b", "secret-b", "main")
  G.write(repo .. "/secret/b.txt", "TOP SECRET b\n")
  G.write(repo .. "/README.md", "# app (secret edition)\n")
  G.git(repo, "add", "-A")
  G.git(repo, "commit", "-q", "-m", "secret-b: the secret")
  G.git(repo, "checkout", "-q", "main")
  return repo
end

--- Ids of every object reachable from `refs` but not from `not_ref` (if given) in `repo`.
function G.objects_only_in(repo, refs, not_ref)
  local args = { "rev-list", "--objects" }
  for _, r in ipairs(refs) do args[#args + 1] = r end
  if not_ref then
    args[#args + 1] = "--not"
    args[#args + 1] = not_ref
  end
  local ids = {}
  for _, l in ipairs(G.lines(G.git(repo, table.unpack(args)))) do ids[#ids + 1] = l:match("^(%x+)") end
  return ids
end

--- Every object id git can see from `dir` (alternates included).
function G.all_objects(dir)
  local ids = {}
  for _, l in ipairs(G.lines(G.git(dir, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)"))) do ids[#ids + 1] = l end
  return ids
end

--- `find DIR` relative paths, sorted ("" when missing).
function G.listing(dir)
  if not uv.fs_stat(dir) then return "" end
  local r = foundry.exec{ "find", dir, "-mindepth", "1", "-printf", "%P %y\n" }
  local l = G.lines(r.stdout)
  table.sort(l)
  return table.concat(l, "\n")
end

--- What "changes nothing" compares: the source's refs, objects and status, the cache
--- and the workspaces directory.
function G.snapshot(repo)
  return {
    refs = G.git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
    objects = table.concat(G.all_objects(repo), ","),
    status = G.git(repo, "status", "--porcelain"),
    cache = G.listing(G.home .. "/cache"),
    workspaces = G.listing(G.home .. "/data/workspaces"),
  }
end

return G
