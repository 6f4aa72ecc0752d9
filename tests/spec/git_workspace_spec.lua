-- Workspaces: branch isolation by construction, checked with the real git as the oracle.
local G = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "git_lib.lua")
local git = require "foundry.git"
local fs = require "foundry.fs"
local uv = require "luv"
local native = require "foundry._git"

local function create(spec)
  spec.name = spec.name or "w1"
  return git.workspace.create(spec)
end

describe("a workspace", function()
  local repo
  before_each(function()
    G.setup()
    repo = G.source()
  end)
  after_each(function() G.teardown() end)

  it("holds only its own branch and its base, nothing of the other branches", function()
    local ws = create{ source = repo }
    local t = ws.tree
    expect(ws.branch):equals("sandbox/w1")
    expect(ws.base):equals("main")
    expect(ws.base_commit):equals(G.git(repo, "rev-parse", "main"))
    -- refs
    expect(G.git(t, "branch", "-a", "--format=%(refname)")):equals("refs/heads/main\nrefs/heads/sandbox/w1")
    expect(G.git(t, "for-each-ref", "--format=%(refname)")):equals("refs/heads/main\nrefs/heads/sandbox/w1")
    expect(G.git(t, "symbolic-ref", "HEAD")):equals("refs/heads/sandbox/w1")
    -- history
    local all = G.git(t, "log", "--all", "--format=%s")
    expect(all):equals("main: add lib\nmain: initial")
    -- objects: not one of those only feature-a or secret-b reach
    local have = G.set(G.all_objects(t))
    local others = G.objects_only_in(repo, { "feature-a", "secret-b" }, "main")
    expect(#others):gt(5)
    for _, id in ipairs(others) do
      if have[id] then error("object " .. id .. " of another branch is visible in the workspace") end
    end
    -- and exactly main's objects
    local mains = G.objects_only_in(repo, { "main" })
    expect(#G.all_objects(t)):equals(#mains)
    expect(G.git(t, "cat-file", "-t", G.git(repo, "rev-parse", "secret-b"), { ok = true }).ok):is(false)
    expect(fs.sync.read(t .. "/secret/b.txt")):is_nil()
    -- a clean, valid repository
    expect(G.git(t, "status", "--porcelain")):equals("")
    expect(G.git(t, "fsck", "--strict", { ok = true }).ok):is(true)
  end)

  it("works with the real git: log, diff main, commit, rm, stash, rebase -i", function()
    local ws = create{ source = repo }
    local t = ws.tree
    expect(G.git(t, "log", "--format=%s")):equals("main: add lib\nmain: initial")
    G.write(t .. "/src/app.c", "int main(void) { return 2; }\n")
    expect(G.git(t, "diff", "--stat")):contains("src/app.c")
    G.git(t, "commit", "-q", "-am", "agent: return 2")
    G.git(t, "rm", "-q", "src/lib.c")
    G.git(t, "commit", "-q", "-m", "agent: drop lib")
    expect(G.git(t, "diff", "--name-status", "main")):equals("M\tsrc/app.c\nD\tsrc/lib.c")
    -- stash and pop
    G.write(t .. "/README.md", "wip\n")
    G.git(t, "stash", "-q")
    expect(G.git(t, "status", "--porcelain")):equals("")
    G.git(t, "stash", "pop", "-q")
    expect(G.git(t, "status", "--porcelain")):equals(" M README.md")
    G.git(t, "checkout", "-q", "--", "README.md")
    -- squash the two commits with an interactive rebase onto main
    local r = G.git(t, "rebase", "-q", "-i", "main",
      { env = { GIT_SEQUENCE_EDITOR = "sed -i -e '2s/^pick/squash/'", GIT_EDITOR = "true" }, ok = true })
    expect(r.ok):is(true)
    expect(G.git(t, "rev-list", "--count", "main..HEAD")):equals("1")
    expect(G.git(t, "diff", "--name-status", "main")):equals("M\tsrc/app.c\nD\tsrc/lib.c")
    -- hooks never run, on the host or inside
    G.write(t .. "/.git/hooks/pre-commit", "#!/bin/sh\necho hooked > " .. G.root .. "/hooked\nexit 1\n")
    fs.chmod(t .. "/.git/hooks/pre-commit", tonumber("755", 8))
    G.write(t .. "/x.txt", "x\n")
    G.git(t, "add", "x.txt")
    G.git(t, "commit", "-q", "-m", "no hooks")
    expect(fs.exists(G.root .. "/hooked")):is(false)
    expect(G.git(t, "config", "receive.denyCurrentBranch")):equals("refuse")
    expect(G.git(t, "config", "user.email")):equals("owner@example.com")
    expect(G.git(t, "fsck", { ok = true }).ok):is(true)
  end)

  it("keeps two workspaces from one base apart, on one shared store", function()
    local a = create{ source = repo, name = "a" }
    local b = create{ source = repo, name = "b" }
    expect(a.stores[1].path):equals(b.stores[1].path)
    expect(b.stores[1].mode):equals("reused")
    G.write(a.tree .. "/only-a.txt", "from a\n")
    G.git(a.tree, "add", "-A")
    G.git(a.tree, "commit", "-q", "-m", "a's work")
    local ida = G.git(a.tree, "rev-parse", "HEAD")
    local blob = G.git(a.tree, "rev-parse", "HEAD:only-a.txt")
    expect(G.git(b.tree, "cat-file", "-e", ida, { ok = true }).ok):is(false)
    expect(G.git(b.tree, "cat-file", "-e", blob, { ok = true }).ok):is(false)
    expect(G.git(b.tree, "log", "--all", "--format=%s")).never:contains("a's work")
    expect(G.git(b.tree, "for-each-ref", "--format=%(refname)")):equals("refs/heads/main\nrefs/heads/sandbox/b")
    -- the store was not written to
    expect(G.git(repo, "cat-file", "-e", ida, { ok = true }).ok):is(false)
  end)

  it("syncs its commits back as its branch, fast-forward only unless forced", function()
    local ws = create{ source = repo }
    expect(ws:sync()):equals({ branch = "sandbox/w1", commits = 0, updated = false })
    G.write(ws.tree .. "/feature.txt", "agent feature\n")
    local id = ws:commit_all{ message = "agent: feature" }
    expect(ws:commits()):equals(1)
    local res = ws:sync()
    expect(res.updated):is(true)
    expect(res.created):is(true)
    expect(res.commits):equals(1)
    expect(G.git(repo, "rev-parse", "sandbox/w1")):equals(id)
    expect(G.git(repo, "show", "sandbox/w1:feature.txt")):equals("agent feature")
    expect(G.git(repo, "fsck", "--strict", { ok = true }).ok):is(true)
    -- again: nothing new
    expect(ws:sync().updated):is(false)
    -- the source's branch moved on its own: not a fast-forward
    G.git(repo, "checkout", "-q", "sandbox/w1")
    G.write(repo .. "/user.txt", "user\n")
    G.git(repo, "add", "-A")
    G.git(repo, "commit", "-q", "-m", "user: on the sandbox branch")
    G.git(repo, "checkout", "-q", "main")
    G.write(ws.tree .. "/more.txt", "more\n")
    local id2 = ws:commit_all{ message = "agent: more" }
    local before = G.git(repo, "rev-parse", "sandbox/w1")
    expect(function() ws:sync() end):fails("git.not_fast_forward")
    expect(G.git(repo, "rev-parse", "sandbox/w1")):equals(before)
    expect(ws:sync({ force = true }).updated):is(true)
    expect(G.git(repo, "rev-parse", "sandbox/w1")):equals(id2)
    -- never the branch checked out in the source
    G.git(repo, "checkout", "-q", "sandbox/w1")
    G.write(ws.tree .. "/last.txt", "last\n")
    ws:commit_all{ message = "agent: last" }
    expect(function() ws:sync() end):fails("git.checked_out")
    expect(G.git(repo, "rev-parse", "sandbox/w1")):equals(id2)
  end)

  it("continues an existing branch from its tip when asked, counting only its own commits", function()
    -- main moves on after feature-a forked from it
    G.write(repo .. "/src/later.c", "int later;\n")
    G.git(repo, "add", "-A")
    G.git(repo, "commit", "-q", "-m", "main: later")
    expect(function() create{ source = repo, branch = "feature-a" } end):fails("git.branch_exists")
    local ws = create{ source = repo, branch = "feature-a", continue = true }
    local t = ws.tree
    expect(G.git(t, "rev-parse", "HEAD")):equals(G.git(repo, "rev-parse", "feature-a"))
    expect(fs.sync.read(t .. "/feature/a.txt")):equals("feature a only\n")
    expect(ws.base_commit):equals(G.git(repo, "merge-base", "main", "feature-a"))
    -- its own commit, its own change: not main's later commit undone
    expect(#ws:log()):equals(1)
    local ch = ws:changes()
    expect(#ch.files):equals(1)
    expect(ch.files[1].path):equals("feature/a.txt")
    -- still nothing of the other branches
    expect(G.git(t, "cat-file", "-t", G.git(repo, "rev-parse", "secret-b"), { ok = true }).ok):is(false)
    expect(G.git(t, "status", "--porcelain")):equals("")
    expect(G.git(t, "fsck", "--strict", { ok = true }).ok):is(true)
    -- a new commit comes back to it by fast-forward
    G.write(t .. "/feature/more.txt", "more\n")
    local id = ws:commit_all{ message = "agent: more" }
    expect(ws:sync().updated):is(true)
    expect(G.git(repo, "rev-parse", "feature-a")):equals(id)
    expect(G.git(repo, "fsck", "--strict", { ok = true }).ok):is(true)
    ws:destroy()
    -- a branch checked out in the source, or carried changes: refused, nothing made
    G.git(repo, "checkout", "-q", "feature-a")
    expect(function() create{ source = repo, name = "w2", branch = "feature-a", continue = true } end):fails("git.checked_out")
    G.git(repo, "checkout", "-q", "main")
    expect(function() create{ source = repo, name = "w3", branch = "feature-a", continue = true, carry_changes = true } end)
      :fails("git.carry_mismatch")
    expect(#git.workspace.list()):equals(0)
  end)

  it("leaves no trace when destroyed: the source's refs and objects, the cache, the workspaces", function()
    local before = G.snapshot(repo)
    local ws = create{ source = repo }
    local other = create{ source = repo, name = "other", from = "feature-a" }
    G.write(ws.tree .. "/x.txt", "x\n")
    ws:commit_all{ message = "agent" }
    ws:destroy()
    other:destroy()
    expect(G.snapshot(repo)):equals(before)
    expect(uv.fs_stat(G.home .. "/cache/repos")):is_nil()
    ws:destroy() -- idempotent
    -- with sync, the source keeps exactly the branch and its objects
    ws = create{ source = repo }
    G.write(ws.tree .. "/y.txt", "y\n")
    local id = ws:commit_all{ message = "kept" }
    ws:sync()
    ws:destroy()
    local after = G.snapshot(repo)
    expect(after.cache):equals(before.cache)
    expect(after.workspaces):equals(before.workspaces)
    local want = G.lines(before.refs)
    want[#want + 1] = "refs/heads/sandbox/w1 " .. id
    table.sort(want)
    expect(after.refs):equals(table.concat(want, "\n"))
    local new = #G.lines(after.objects:gsub(",", "\n")) - #G.lines(before.objects:gsub(",", "\n"))
    expect(new):equals(3) -- the commit, its tree, the blob
  end)

  it("keeps a store per generation: the old workspace does not see the base move on", function()
    local old = create{ source = repo, name = "old" }
    G.write(repo .. "/later.txt", "later on main\n")
    G.git(repo, "add", "-A")
    G.git(repo, "commit", "-q", "-m", "main: later")
    local later = G.git(repo, "rev-parse", "main")
    local new = create{ source = repo, name = "new" }
    expect(new.stores[1].mode):equals("incremental")
    expect(new.stores[1].path).never:equals(old.stores[1].path)
    expect(G.git(new.tree, "log", "-1", "--format=%s")):equals("main: later")
    expect(G.git(old.tree, "cat-file", "-e", later, { ok = true }).ok):is(false)
    expect(G.git(new.tree, "fsck", "--strict", { ok = true }).ok):is(true)
    expect(#G.all_objects(new.tree)):equals(#G.objects_only_in(repo, { "main" }))
    -- main rewritten: a fresh generation, still only main's objects
    G.git(repo, "reset", "-q", "--hard", "main~2")
    G.write(repo .. "/rewritten.txt", "rewritten\n")
    G.git(repo, "add", "-A")
    G.git(repo, "commit", "-q", "-m", "main: rewritten")
    local third = create{ source = repo, name = "third" }
    expect(third.stores[1].mode):equals("full")
    expect(G.git(third.tree, "cat-file", "-e", later, { ok = true }).ok):is(false)
    local gens = native.store_inspect{ store = third.stores[1].store }
    expect(#gens):equals(3)
    old:destroy()
    expect(#native.store_inspect{ store = third.stores[1].store }):equals(2)
    new:destroy()
    third:destroy()
    expect(uv.fs_stat(third.stores[1].store)):is_nil()
  end)

  it("keeps other branches' objects out even when packed as delta bases", function()
    -- a big file on main and a bigger variant of it on secret-b; repacked so that git
    -- stores main's blob as a delta against secret-b's
    local lines = {}
    for i = 1, 400 do lines[i] = "line " .. i .. " of a fairly long shared file body" end
    local body = table.concat(lines, "\n") .. "\n"
    G.write(repo .. "/big.txt", body)
    G.git(repo, "add", "-A")
    G.git(repo, "commit", "-q", "-m", "main: big")
    G.git(repo, "checkout", "-q", "secret-b")
    G.write(repo .. "/big.txt", body .. "SECRET TAIL " .. string.rep("s", 4000) .. "\n")
    G.git(repo, "add", "-A")
    G.git(repo, "commit", "-q", "-m", "secret-b: big")
    G.git(repo, "checkout", "-q", "main")
    G.git(repo, "repack", "-q", "-a", "-d", "-f", "--window=50", "--depth=50")
    local mainblob = G.git(repo, "rev-parse", "main:big.txt")
    local secretblob = G.git(repo, "rev-parse", "secret-b:big.txt")
    local packs = fs.list(repo .. "/.git/objects/pack")
    local idx
    for _, e in ipairs(packs) do if e.name:match("%.idx$") then idx = repo .. "/.git/objects/pack/" .. e.name end end
    local verify = G.git(repo, "verify-pack", "-v", idx)
    -- the case under test: git stored main's blob as a delta on secret-b's
    expect(verify:match(mainblob .. " blob%s+%d+ %d+ %d+ %d+ (%x+)")):equals(secretblob)
    local ws = create{ source = repo }
    local have = G.set(G.all_objects(ws.tree))
    expect(have[mainblob]):is(true)
    expect(have[secretblob]):is_nil()
    expect(G.git(ws.tree, "show", "HEAD:big.txt") .. "\n"):equals(body)
    expect(G.git(ws.tree, "fsck", "--strict", { ok = true }).ok):is(true)
    -- the copied pack, and libgit2's for what could not be copied (that blob)
    expect(#fs.list(ws.stores[1].path .. "/objects/pack")):equals(4)
  end)

  it("starts in the subdirectory it was made from, and exposes its mounts", function()
    local ws = create{ source = repo .. "/src" }
    expect(ws.subdir):equals("src")
    expect(ws.cwd):equals("/workspace/src")
    expect(ws.mounts[1]):equals({ source = ws.tree, target = "/workspace", read_only = false })
    expect(ws.mounts[2].target):equals("/.foundry/objects-0")
    expect(ws.mounts[2].read_only):is(true)
    expect(fs.readlink(ws.path .. "/.foundry/objects-0")):equals(ws.mounts[2].source)
    -- relative alternates: the same line works at /workspace/.git/objects in a container
    expect(fs.sync.read(ws.gitdir .. "/objects/info/alternates")):equals("../../../.foundry/objects-0\n")
    local reopened = git.workspace.open(ws:record())
    expect(reopened.tree):equals(ws.tree)
    expect(reopened.mounts):equals(ws.mounts)
    expect(git.workspace.open("w1").branch):equals("sandbox/w1")
    expect(git.workspace.list()):equals({ { kind = "git", name = "w1", path = ws.path } })
    expect(function() create{ source = repo, name = "w2", subdir = "nope" } end):fails("git.not_found")
  end)

  it("carries uncommitted changes when asked, and refuses a dirty source otherwise", function()
    G.write(repo .. "/README.md", "edited, not committed\n")
    G.write(repo .. "/notes/new.txt", "new file\n")
    os.remove(repo .. "/src/lib.c")
    local before = G.snapshot(repo)
    local err = expect(function() create{ source = repo } end):fails("git.dirty")
    expect(err.message):contains("3 files")
    expect(err.hint):contains("carry_changes")
    expect(G.snapshot(repo)):equals(before)
    -- another base is unaffected by what main's work tree holds
    expect(function() create{ source = repo, name = "fa", from = "feature-a" }:destroy() end).never:fails()
    local ws = create{ source = repo, carry_changes = true }
    expect(fs.sync.read(ws.tree .. "/README.md")):equals("edited, not committed\n")
    expect(fs.sync.read(ws.tree .. "/notes/new.txt")):equals("new file\n")
    expect(fs.exists(ws.tree .. "/src/lib.c")):is(false)
    local st = G.git(ws.tree, "status", "--porcelain")
    expect(st):contains(" M README.md")
    expect(st):contains(" D src/lib.c")
    expect(st):contains("?? notes/")
    local after = G.snapshot(repo)
    expect({ after.refs, after.objects, after.status }):equals({ before.refs, before.objects, before.status })
  end)

  it("uses libgit2's checkout when .gitattributes asks for conversions", function()
    G.write(repo .. "/.gitattributes", "*.txt eol=crlf\n")
    G.write(repo .. "/doc.txt", "one\ntwo\n")
    G.git(repo, "add", "-A")
    G.git(repo, "commit", "-q", "-m", "crlf text")
    local ws = create{ source = repo }
    expect(ws.checkout.mode):equals("libgit2")
    expect(fs.sync.read(ws.tree .. "/doc.txt")):equals("one\r\ntwo\r\n")
    expect(G.git(ws.tree, "status", "--porcelain")):equals("")
  end)

  it("gives its files to the sandbox's user, who can then use git", function()
    if uv.getuid() ~= 0 then skip("needs root to chown") end
    local ws = create{ source = repo, owner = { uid = 1000, gid = 1000 } }
    for _, p in ipairs({ ws.tree, ws.tree .. "/src/app.c", ws.gitdir, ws.gitdir .. "/index", ws.gitdir .. "/HEAD" }) do
      expect(uv.fs_lstat(p).uid):equals(1000)
    end
    fs.chmod(G.root, tonumber("755", 8))
    -- (in a container the store is a mount; here uid 1000 must reach it through the cache)
    for _, d in ipairs({ G.home, G.home .. "/data", G.home .. "/data/workspaces", ws.path, G.home .. "/cache",
                         G.home .. "/cache/repos", G.home .. "/cache/repos/stores" }) do
      fs.chmod(d, tonumber("755", 8))
    end
    local function as1000(...)
      local argv = { "setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "git", "-C", ws.tree, ... }
      argv.env = { HOME = "/tmp", GIT_CONFIG_NOSYSTEM = "1" }
      return foundry.exec(argv)
    end
    expect(as1000("status", "--porcelain").stdout):equals("")
    G.write(ws.tree .. "/by-agent.txt", "x\n")
    uv.fs_chown(ws.tree .. "/by-agent.txt", 1000, 1000)
    expect(as1000("add", "by-agent.txt").ok):is(true)
    local r = as1000("commit", "-q", "-m", "as uid 1000")
    expect(r.stderr):equals("")
    expect(r.ok):is(true)
    -- carried changes belong to the sandbox's user too, new directories included
    G.write(repo .. "/newdir/deep/carried.txt", "c\n")
    local ws3 = create{ source = repo, name = "w3", owner = { uid = 1000, gid = 1000 }, carry_changes = true }
    expect(uv.fs_lstat(ws3.tree .. "/newdir").uid):equals(1000)
    expect(uv.fs_lstat(ws3.tree .. "/newdir/deep/carried.txt").uid):equals(1000)
    os.remove(repo .. "/newdir/deep/carried.txt")
    -- chown after the fact
    local ws2 = create{ source = repo, name = "w2" }
    ws2:chown(1000, 1000)
    expect(uv.fs_lstat(ws2.tree .. "/src/lib.c").uid):equals(1000)
  end)

  it("commits through the auto-commit entry point with the workspace's path", function()
    local ws = create{ source = repo }
    G.write(ws.tree .. "/hooked.txt", "x\n")
    local id = git.commit_all(ws.tree, { message = function(ch) return "auto: " .. ch[1].path end })
    expect(G.git(ws.tree, "log", "-1", "--format=%s")):equals("auto: hooked.txt")
    expect(G.git(ws.tree, "rev-parse", "sandbox/w1")):equals(id)
    expect(ws:log()[1].id):equals(id)
    expect(#ws:log({ all = true })):equals(3)
  end)

  it("shows its changes against the base, per file and as text", function()
    local ws = create{ source = repo }
    G.write(ws.tree .. "/src/app.c", "int main(void) { return 3; }\n")
    ws:commit_all{ message = "change app" }
    G.git(ws.tree, "mv", "src/lib.c", "src/lib2.c")
    G.write(ws.tree .. "/untracked.txt", "u\n")
    local ch = ws:changes()
    local by = {}
    for _, f in ipairs(ch.files) do by[f.path] = f.status end
    expect(by):equals({ ["src/app.c"] = "modified", ["src/lib2.c"] = "renamed", ["untracked.txt"] = "added" })
    local text = ws:diff()
    expect(text):contains("diff --git a/src/app.c b/src/app.c")
    expect(text):contains("+int main(void) { return 3; }")
    local stat = ws:diff({ stat = true })
    expect(stat):contains("src/lib.c => src/lib2.c")
    expect(stat):contains("3 files changed")
  end)

  it("never commits into an enclosing repository when the agent deletes .git", function()
    -- the user keeps their home in git, and Foundry's data lives under it
    G.git(G.root, "init", "-q", "-b", "main", G.root)
    local ws = create{ source = repo }
    local before = G.git(G.root, "rev-list", "--all", { ok = true }).stdout
    foundry.exec{ "rm", "-rf", ws.gitdir, check = true }
    G.write(ws.tree .. "/stolen.txt", "x\n")
    expect(function() git.commit_all(ws.tree, { message = "auto" }) end):fails("git")
    expect(function() git.status(ws.tree) end):fails("git")
    expect(G.git(G.root, "rev-list", "--all", { ok = true }).stdout):equals(before)
    expect(G.git(G.root, "ls-files")):equals("")
  end)

  it("refuses a git directory redirected by the agent", function()
    local ws = create{ source = repo }
    fs.write(ws.gitdir .. "/objects/info/alternates", "/etc\n")
    expect(function() ws:status() end):fails("git.tampered")
    fs.write(ws.gitdir .. "/objects/info/alternates", "../../../.foundry/objects-0\n")
    fs.write(ws.gitdir .. "/commondir", "/tmp\n")
    expect(function() ws:commit_all{ message = "x" } end):fails("git.tampered")
    os.remove(ws.gitdir .. "/commondir")
    expect(function() ws:status() end).never:fails()
    -- core.worktree pointing elsewhere is ignored: Foundry uses the tree it made
    G.git(ws.tree, "config", "core.worktree", G.root .. "/src")
    G.write(ws.tree .. "/mine.txt", "mine\n")
    local st = ws:status()
    expect(#st):equals(1)
    expect(st[1].path):equals("mine.txt")
  end)
end)

describe("workspace errors", function()
  local repo
  before_each(function()
    G.setup()
    repo = G.source()
  end)
  after_each(function() G.teardown() end)

  -- Each bad input raises `code` and changes nothing anywhere.
  local function refuses(code, spec, prepare)
    if prepare then prepare() end
    local before = G.snapshot(repo)
    local err = expect(function() git.workspace.create(spec) end):fails(code)
    expect(err.message).never:contains("\n")
    expect(G.snapshot(repo)):equals(before)
    return err
  end

  it("not a repository", function()
    fs.mkdir(G.root .. "/plain")
    refuses("git.not_a_repo", { source = G.root .. "/plain", name = "x" })
  end)

  it("an unknown base branch", function()
    local err = refuses("git.not_found", { source = repo, name = "x", from = "no-such-branch" })
    expect(err.message):contains("no-such-branch")
  end)

  it("a detached HEAD without from=", function()
    refuses("git.detached", { source = repo, name = "x" }, function() G.git(repo, "checkout", "-q", "--detach") end)
  end)

  it("an invalid or taken branch name", function()
    refuses("git.invalid_branch", { source = repo, name = "x", branch = "bad..name" })
    refuses("git.branch_exists", { source = repo, name = "x", branch = "feature-a" })
    refuses("git.branch_exists", { source = repo, name = "x", read_only = { "sandbox/x" } }, function()
      G.git(repo, "branch", "sandbox/x") end)
    G.git(repo, "branch", "-D", "sandbox/x")
    local ws = git.workspace.create{ source = repo, name = "first", branch = "agent/one" }
    refuses("git.branch_exists", { source = repo, name = "second", branch = "agent/one" })
    ws:destroy()
  end)

  it("an invalid workspace name, and one that exists", function()
    refuses("git.invalid_name", { source = repo, name = "../escape" })
    refuses("git.invalid_name", { source = repo, name = ".hidden" })
    local ws = git.workspace.create{ source = repo, name = "taken" }
    refuses("git.exists", { source = repo, name = "taken", branch = "other" })
    ws:destroy()
    fs.mkdir(G.home .. "/data/workspaces/stale")
    refuses("git.exists", { source = repo, name = "stale" })
  end)

  it("submodules, said plainly", function()
    local sub = G.git(repo, "rev-parse", "feature-a")
    G.git(repo, "update-index", "--add", "--cacheinfo", "160000," .. sub .. ",vendor/lib")
    G.write(repo .. "/.gitmodules", "[submodule \"vendor/lib\"]\n\tpath = vendor/lib\n\turl = https://example.com/lib.git\n")
    G.git(repo, "add", ".gitmodules")
    G.git(repo, "commit", "-q", "-m", "add a submodule")
    local err = refuses("git.submodules", { source = repo, name = "x" })
    expect(err.message):contains("vendor/lib")
  end)

  it("a dirty source (see carry_changes)", function()
    refuses("git.dirty", { source = repo, name = "x" }, function() G.write(repo .. "/README.md", "dirty\n") end)
  end)

  it("misuse is a plain error naming the option", function()
    expect(function() git.workspace.create{ source = repo } end):fails("name: expected string")
    expect(function() git.workspace.create{ source = repo, name = "x", form = "main" } end):fails("did you mean 'from'")
    expect(function() git.workspace.create("x") end):fails("expected a table")
  end)
end)

describe("a workspace from a remote", function()
  before_each(function() G.setup() end)
  after_each(function() G.teardown() end)

  it("mirrors the remote into the cache, starts from its default branch, and leaves nothing", function()
    local origin = G.source("origin")
    G.git(origin, "checkout", "-q", "feature-a") -- the remote's default branch
    local ws = git.workspace.create{ source = "file://" .. origin, name = "r" }
    expect(ws.base):equals("feature-a")
    expect(ws.source.url):equals("file://" .. origin)
    expect(G.git(ws.tree, "for-each-ref", "--format=%(refname)")):equals("refs/heads/feature-a\nrefs/heads/sandbox/r")
    local have = G.set(G.all_objects(ws.tree))
    for _, id in ipairs(G.objects_only_in(origin, { "secret-b" }, "feature-a")) do
      expect(have[id]):is_nil()
    end
    G.write(ws.tree .. "/r.txt", "r\n")
    ws:commit_all{ message = "remote work" }
    expect(ws:sync().updated):is(true)
    expect(G.git(ws.mirror, "rev-parse", "sandbox/r")):equals(G.git(ws.tree, "rev-parse", "HEAD"))
    ws:destroy()
    expect(uv.fs_stat(G.home .. "/cache/repos")):is_nil()
  end)
end)
