-- foundry.git on repositories: open, resolve, status, commit_all, diff, log, mirror.
-- Real repositories made with the real git, which is also the oracle.
local G = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "git_lib.lua")
local git = require "foundry.git"
local fs = require "foundry.fs"
local uv = require "luv"

describe("git repositories", function()
  local repo
  before_each(function()
    G.setup()
    repo = G.source()
  end)
  after_each(function() G.teardown() end)

  it("discovers a repository from a directory inside it", function()
    local r = git.open(repo .. "/src")
    expect(r.workdir):equals(repo .. "/")
    expect(r.gitdir):equals(repo .. "/.git/")
    expect(r.prefix):equals("src")
    expect(r.head.branch):equals("main")
    expect(r.head.id):equals(G.git(repo, "rev-parse", "main"))
    expect(r.bare):is(false)
  end)

  it("says plainly when a path is not a repository", function()
    fs.mkdir(G.root .. "/plain")
    local err = expect(function() git.open(G.root .. "/plain") end):fails("git.not_a_repo")
    expect(err.message):contains("not a git repository")
    expect(function() git.open(G.root .. "/missing") end):fails("git.not_a_repo")
  end)

  it("resolves the current branch, a named one, a remote-tracking one", function()
    local r = git.open(repo)
    local cur = r:resolve()
    expect(cur):equals({ ref = "refs/heads/main", name = "main", id = G.git(repo, "rev-parse", "main"), remote = false })
    expect(r:resolve("secret-b").id):equals(G.git(repo, "rev-parse", "secret-b"))
    G.git(repo, "update-ref", "refs/remotes/origin/main", "main")
    G.git(repo, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
    expect(r:resolve("origin/main").ref):equals("refs/remotes/origin/main")
    expect(r:resolve("origin").ref):equals("refs/remotes/origin/main") -- the remote's default branch
    expect(function() r:resolve("nope") end):fails("git.not_found")
  end)

  it("refuses a detached HEAD or an unborn branch as the base, with a clear error", function()
    G.git(repo, "checkout", "-q", "--detach", "main")
    local err = expect(function() git.open(repo):resolve() end):fails("git.detached")
    expect(err.hint):contains("from=")
    local empty = G.root .. "/empty"
    G.git(G.root, "init", "-q", empty)
    expect(function() git.open(empty):resolve() end):fails("git.unborn")
  end)

  it("lists status like git status --porcelain", function()
    G.write(repo .. "/README.md", "changed\n")
    G.write(repo .. "/new.txt", "new\n")
    G.git(repo, "rm", "-q", "src/lib.c")
    local st = git.status(repo)
    table.sort(st, function(a, b) return a.path < b.path end)
    expect(st):equals({
      { path = "README.md", worktree = "modified" },
      { path = "new.txt", worktree = "untracked" },
      { path = "src/lib.c", index = "deleted" },
    })
    expect(#git.status(repo, { untracked = false })):equals(2)
  end)

  it("commits everything like add -A, with the configured author, and is a no-op when clean", function()
    G.write(repo .. "/README.md", "changed\n")
    G.write(repo .. "/dir/new.txt", "new\n")
    os.remove(repo .. "/src/lib.c")
    G.write(repo .. "/.gitignore", "*.log\n")
    G.write(repo .. "/debug.log", "ignored\n")
    local id = git.commit_all(repo, { message = "agent: everything" })
    expect(id):matches("^%x+$")
    expect(G.git(repo, "rev-parse", "HEAD")):equals(id)
    expect(G.git(repo, "log", "-1", "--format=%an <%ae>|%s")):equals("Source Owner <owner@example.com>|agent: everything")
    expect(G.git(repo, "status", "--porcelain")):equals("")
    local files = G.git(repo, "show", "--name-status", "--format=", "HEAD")
    expect(files):contains("M\tREADME.md")
    expect(files):contains("A\tdir/new.txt")
    expect(files):contains("D\tsrc/lib.c")
    expect(files).never:contains("debug.log")
    expect(git.commit_all(repo, { message = "again" })):is_nil()
    expect(G.git(repo, "rev-parse", "HEAD")):equals(id)
    -- a message from the changes, as the auto-commit hook does
    G.write(repo .. "/x.txt", "x\n")
    git.commit_all(repo, { message = function(changes) return "hook: " .. #changes .. " file(s)" end })
    expect(G.git(repo, "log", "-1", "--format=%s")):equals("hook: 1 file(s)")
  end)

  it("waits for a foreign index.lock, and says git.locked when it stays", function()
    G.write(repo .. "/a.txt", "a\n")
    local lock = repo .. "/.git/index.lock"
    fs.write(lock, "")
    local t = foundry.spawn(function() return git.commit_all(repo, { message = "after the lock" }) end)
    foundry.sleep(300)
    expect(t:status()).never:equals("done")
    os.remove(lock)
    local id = t:join()
    expect(id):equals(G.git(repo, "rev-parse", "HEAD"))
    G.write(repo .. "/b.txt", "b\n")
    fs.write(lock, "")
    expect(function() git.commit_all(repo, { message = "x", lock_timeout = 200 }) end):fails("git.locked")
    os.remove(lock)
  end)

  it("does not commit in the middle of a merge or rebase", function()
    G.write(repo .. "/a.txt", "a\n")
    fs.write(repo .. "/.git/MERGE_HEAD", G.git(repo, "rev-parse", "feature-a") .. "\n")
    expect(function() git.commit_all(repo, { message = "x" }) end):fails("git.busy")
    os.remove(repo .. "/.git/MERGE_HEAD")
  end)

  it("diffs the work tree against a base: status, renames, new files, binary, text", function()
    local base = G.git(repo, "rev-parse", "HEAD")
    G.write(repo .. "/src/app.c", "int main(void) { return 1; }\n")
    G.git(repo, "mv", "src/lib.c", "src/library.c")
    G.write(repo .. "/untracked.txt", "hello\n")
    G.git(repo, "rm", "-q", "README.md")
    fs.write(repo .. "/blob.bin", "\0\1\2\3binary\0")
    G.git(repo, "add", "blob.bin")
    G.git(repo, "commit", "-q", "-m", "commit some of it")
    local d = git.diff(repo, { base = base })
    local by = {}
    for _, f in ipairs(d.files) do by[f.path] = f end
    expect(by["src/app.c"].status):equals("modified")
    expect(by["src/app.c"].patch):contains("-int main(void) { return 0; }\n+int main(void) { return 1; }")
    expect(by["src/app.c"].additions):equals(1)
    expect(by["src/library.c"].status):equals("renamed")
    expect(by["src/library.c"].old_path):equals("src/lib.c")
    expect(by["untracked.txt"].status):equals("added")
    expect(by["untracked.txt"].patch):contains("+hello")
    expect(by["README.md"].status):equals("deleted")
    expect(by["blob.bin"].binary):is(true)
    -- the text agrees with git's own diff of the same trees
    local gitnames = G.git(repo, "diff", "--name-status", "-M", base, "HEAD")
    expect(gitnames):contains("R100\tsrc/lib.c\tsrc/library.c")
    expect(git.diff(repo, { base = base, patch = false }).files[1].patch):is_nil()
  end)

  it("logs commits newest first, with a range", function()
    local l = git.log(repo, { rev = "secret-b" })
    expect(#l):equals(3)
    expect(l[1].summary):equals("secret-b: the secret")
    expect(l[1].author.name):equals("Source Owner")
    expect(l[1].parents[1]):equals(G.git(repo, "rev-parse", "main"))
    local only = git.log(repo, { rev = "secret-b", hide = "main" })
    expect(#only):equals(1)
    expect(function() git.log(repo, { rev = "nope" }) end):fails("git.not_found")
  end)

  it("validates branch names like git check-ref-format", function()
    expect(git.valid_branch("sandbox/x-1")):is(true)
    for _, bad in ipairs({ "a..b", "-x", "HEAD", "a b", "x.lock", "a~1", "a:b", "", "/a" }) do
      expect(git.valid_branch(bad)):is(false)
    end
  end)

  it("raises plain errors for misuse", function()
    expect(function() git.open(nil) end):fails("path: expected string")
    expect(function() require("foundry._git").status({ gitdir = 1 }) end):fails("gitdir: expected string")
  end)
end)

describe("git mirrors", function()
  before_each(function() G.setup() end)
  after_each(function() G.teardown() end)

  it("mirrors a remote into the cache and brings it up to date", function()
    local origin = G.source("origin")
    local url = "file://" .. origin
    local path = git.mirror(url)
    expect(path):matches("^" .. G.home:gsub("%p", "%%%0") .. "/cache/repos/mirrors/origin%-%x+%.git$")
    expect(G.git(path, "rev-parse", "--is-bare-repository")):equals("true")
    expect(G.git(path, "for-each-ref", "--format=%(refname)")):equals("refs/heads/feature-a\nrefs/heads/main\nrefs/heads/secret-b")
    expect(G.git(path, "symbolic-ref", "HEAD")):equals("refs/heads/main")
    G.write(origin .. "/new.txt", "new\n")
    G.git(origin, "add", "-A")
    G.git(origin, "commit", "-q", "-m", "new on main")
    G.git(origin, "branch", "-D", "feature-a")
    git.mirror(url)
    expect(G.git(path, "rev-parse", "main")):equals(G.git(origin, "rev-parse", "main"))
    expect(G.git(path, "for-each-ref", "--format=%(refname)")).never:contains("feature-a")
    -- a plain path works too
    local p2 = git.mirror(origin)
    expect(p2).never:equals(path)
  end)

  it("leaves nothing in the cache when the first fetch fails", function()
    expect(function() git.mirror("file://" .. G.root .. "/nothing-here") end):fails("git")
    expect(G.listing(G.home .. "/cache/repos/mirrors")):equals("")
  end)

  -- A server that always asks for Basic credentials and records what it was given.
  local function auth_server()
    local seen = {}
    local server = uv.new_tcp()
    server:bind("127.0.0.1", 0)
    server:listen(16, function()
      local c = uv.new_tcp()
      server:accept(c)
      local buf = ""
      c:read_start(function(err, chunk)
        if err or not chunk then c:close(); return end
        buf = buf .. chunk
        if buf:find("\r\n\r\n", 1, true) then
          seen[#seen + 1] = buf:match("[Aa]uthorization: ([^\r]+)") or false
          c:write("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            function() c:close() end)
          buf = ""
        end
      end)
    end)
    return server, seen, server:getsockname().port
  end

  it("asks the credential callback when the server wants credentials, and says when they are refused", function()
    local server, seen, port = auth_server()
    local url = "http://127.0.0.1:" .. port .. "/r.git"
    local ok, err = pcall(git.mirror, url)
    expect(ok):is(false)
    expect(err.code):equals("git.auth_required")
    expect(err.url):contains("127.0.0.1")
    expect(err.allowed):contains("userpass")
    local asked = {}
    ok, err = pcall(git.mirror, url, { credentials = function(req)
      asked[#asked + 1] = req
      return { username = "agent", password = "s3cret" }
    end })
    expect(ok):is(false)
    expect(err.code):equals("git.auth")
    expect(#asked):equals(1)
    expect(asked[1].url):contains("/r.git")
    -- the server saw the credentials the callback gave, and nothing was left behind
    local found = false
    for _, h in ipairs(seen) do if h and h:find("YWdlbnQ6czNjcmV0", 1, true) then found = true end end
    expect(found):is(true) -- base64("agent:s3cret")
    expect(tostring(err)).never:contains("s3cret")
    expect(G.listing(G.home .. "/cache/repos/mirrors")):equals("")
    server:close()
  end)
end)
