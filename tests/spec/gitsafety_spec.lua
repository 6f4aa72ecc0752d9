-- foundry.gitsafety: the push rules as plain functions (attacks first), the advertisement
-- filter, repositories and URLs, then the real `git` against a local smart-HTTP upstream
-- through a guard (tests/lib/git_proxy.lua drives it the way the proxy engine does).
local gs = require "foundry.gitsafety"
local pktline = require "foundry.pktline"
local F = dofile("tests/lib/git_fixture.lua")
local gp = dofile("tests/lib/git_proxy.lua")
local net = dofile("tests/lib/net.lua")

local Z = string.rep("0", 40)
local A = string.rep("a", 40)
local B = string.rep("b", 40)
local C = string.rep("c", 40)

-- A push judged with fake objects: `ff[old..new]` says fast-forwards, `paths` the changes.
local function judge(commands, extra)
  local o = {
    sandbox_branch = "sandbox/t1", commands = commands,
    is_fast_forward = function(old, new) return (extra and extra.ff or {})[old .. new] == true end,
    changed_paths = function() return extra and extra.paths or { "src/main.c" } end,
  }
  for k, v in pairs(extra or {}) do if k ~= "ff" and k ~= "paths" then o[k] = v end end
  return gs.check_push(o)
end

describe("check_push refuses", function()
  it("a push to main, master, release/* and production (protected)", function()
    for _, b in ipairs({ "main", "master", "release/1.0", "release/1/hotfix", "production" }) do
      local v = judge({ { old = A, new = B, ref = "refs/heads/" .. b } }, { ff = { [A .. B] = true } })
      expect(v.allow):equals(false)
      expect(v.rule):equals("protected")
      expect(v.reason):matches("protected")
    end
  end)

  it("the upstream's default branch, whatever its name", function()
    local v = judge({ { old = A, new = B, ref = "refs/heads/trunk" } }, { default_branch = "trunk", ff = { [A .. B] = true } })
    expect(v.rule):equals("protected")
  end)

  it("a push to another branch, and the creation of a new branch", function()
    local v = judge({ { old = A, new = B, ref = "refs/heads/feature" } }, { ff = { [A .. B] = true } })
    expect(v.rule):equals("branch")
    expect(v.reason):matches("only to its branch sandbox/t1")
    v = judge({ { old = Z, new = B, ref = "refs/heads/new-branch" } })
    expect(v.rule):equals("branch")
  end)

  it("tags, notes and any ref that is not a branch", function()
    for _, ref in ipairs({ "refs/tags/v9", "refs/notes/commits", "refs/remotes/origin/main", "refs/pull/1/head" }) do
      local v = judge({ { old = Z, new = B, ref = ref } })
      expect(v.allow):equals(false)
      expect(v.rule):equals("branch")
    end
  end)

  it("deleting a branch, its own included", function()
    local v = judge({ { old = A, new = Z, ref = "refs/heads/sandbox/t1" } })
    expect(v.rule):equals("delete")
    v = judge({ { old = A, new = Z, ref = "refs/heads/feature" } })
    expect(v.rule):equals("delete")
  end)

  it("a non-fast-forward of its own branch (+refspec, --force, --force-with-lease)", function()
    local v = judge({ { old = A, new = B, ref = "refs/heads/sandbox/t1" } }, { ff = {} })
    expect(v.rule):equals("fast-forward")
    expect(v.reason):matches("not a fast%-forward")
    -- a check that fails is a refusal, not a pass
    v = gs.check_push{ sandbox_branch = "sandbox/t1", commands = { { old = A, new = B, ref = "refs/heads/sandbox/t1" } },
                       is_fast_forward = function() error("objects unreadable") end, changed_paths = function() return {} end }
    expect(v.rule):equals("fast-forward")
    expect(v.reason):matches("objects unreadable")
    -- and no check at all is a refusal
    v = gs.check_push{ sandbox_branch = "sandbox/t1", commands = { { old = A, new = B, ref = "refs/heads/sandbox/t1" } } }
    expect(v.allow):equals(false)
  end)

  it("changes to .github/workflows, .github/actions and CODEOWNERS anywhere", function()
    for _, p in ipairs({ ".github/workflows/x.yml", ".github/actions/setup/action.yml", "CODEOWNERS",
                         ".github/CODEOWNERS", "docs/CODEOWNERS", ".GitHub/Workflows/X.yml" }) do
      local v = judge({ { old = A, new = B, ref = "refs/heads/sandbox/t1" } }, { ff = { [A .. B] = true }, paths = { "README", p } })
      expect(v.allow):equals(false)
      expect(v.rule):equals("restricted")
      expect(v.reason):contains(p)
    end
    -- a new branch is judged too
    local v = judge({ { old = Z, new = B, ref = "refs/heads/sandbox/t1" } }, { paths = { ".github/workflows/ci.yml" } })
    expect(v.rule):equals("restricted")
    -- a failing path check refuses
    v = gs.check_push{ sandbox_branch = "sandbox/t1", commands = { { old = Z, new = B, ref = "refs/heads/sandbox/t1" } },
                       changed_paths = function() error("boom") end }
    expect(v.rule):equals("restricted")
  end)

  it("a pack over the size limit", function()
    local v = judge({ { old = A, new = B, ref = "refs/heads/sandbox/t1" } },
      { ff = { [A .. B] = true }, max_bytes = 1000, pack_bytes = 1001 })
    expect(v.rule):equals("size")
    expect(v.refs[1].reason):matches("limit is 1000")
  end)

  it("the whole push when one command is refused (--mirror, several refspecs)", function()
    local v = judge({ { old = A, new = B, ref = "refs/heads/sandbox/t1" }, { old = Z, new = C, ref = "refs/heads/main" },
                      { old = Z, new = C, ref = "refs/tags/v2" } }, { ff = { [A .. B] = true } })
    expect(v.allow):equals(false)
    expect(v.rule):equals("protected")
    expect(v.refs[1].reason):equals("refused with the rest of this push")
    expect(v.refs[2].rule):equals("protected")
    expect(v.refs[3].rule):equals("branch")
  end)

  it("the sandbox's own branch when it is named like a protected one", function()
    local v = gs.check_push{ sandbox_branch = "main", commands = { { old = A, new = B, ref = "refs/heads/main" } },
                             is_fast_forward = function() return true end, changed_paths = function() return {} end }
    expect(v.rule):equals("protected")
  end)
end)

describe("check_push allows", function()
  it("a fast-forward of its own branch, and its creation", function()
    local v = judge({ { old = A, new = B, ref = "refs/heads/sandbox/t1" } }, { ff = { [A .. B] = true } })
    expect(v.allow):equals(true)
    expect(v.refs[1].reason):is_nil()
    v = judge({ { old = Z, new = B, ref = "refs/heads/sandbox/t1" } })
    expect(v.allow):equals(true)
  end)

  it("branches the policy allows, and reports warn-only paths", function()
    local v = judge({ { old = Z, new = B, ref = "refs/heads/agent/extra" } },
      { allowed_patterns = { "agent/*" }, warn = { "package.json" }, paths = { "package.json", "src/x" } })
    expect(v.allow):equals(true)
    expect(v.warnings[1]):matches("package%.json")
  end)

  it("restricted paths the policy removed", function()
    local v = judge({ { old = A, new = B, ref = "refs/heads/sandbox/t1" } },
      { ff = { [A .. B] = true }, paths = { ".github/workflows/x.yml" }, restricted = {} })
    expect(v.allow):equals(true)
  end)

  it("raises on misuse", function()
    expect(function() gs.check_push{ commands = {} } end):fails("sandbox_branch")
    expect(function() gs.check_push{ sandbox_branch = "x", commands = {}, protected = "main" } end):fails("protected")
  end)
end)

describe("patterns", function()
  it("matches paths like .gitignore-style rules", function()
    expect(gs.path_match(".github/workflows/", ".github/workflows/a/b.yml")):equals(true)
    expect(gs.path_match(".github/workflows/", ".github/workflowsx")):equals(false)
    expect(gs.path_match("CODEOWNERS", "a/b/CODEOWNERS")):equals(true)
    expect(gs.path_match("CODEOWNERS", "CODEOWNERS.md")):equals(false)
    expect(gs.path_match("*.pem", "keys/x.pem")):equals(true)
    expect(gs.path_match("src/*.c", "src/a.c")):equals(true)
    expect(gs.path_match("src/*.c", "src/x/a.c")):equals(false)
    expect(gs.path_match("src/**/*.c", "src/x/y/a.c")):equals(true)
    expect(gs.path_match("infra", "infra/main.tf")):equals(true)
    expect(gs.path_match("deploy/prod", "deploy/prod/x.yml")):equals(true)
    expect(gs.path_match("a.b", "axb")):equals(false) -- "." is literal
  end)

  it("matches branches with * across slashes", function()
    expect(gs.branch_match("release/*", "release/1.0")):equals(true)
    expect(gs.branch_match("release/*", "release/1/x")):equals(true)
    expect(gs.branch_match("release/*", "releases/1")):equals(false)
    expect(gs.branch_match("main", "main2")):equals(false)
    expect(gs.branch_match("v?", "v1")):equals(true)
  end)
end)

describe("filter_advertisement", function()
  local function adv()
    return pktline.parse_advertisement(pktline.build_advertisement{
      service = "git-upload-pack",
      capabilities = "multi_ack side-band-64k symref=HEAD:refs/heads/main allow-tip-sha1-in-want allow-reachable-sha1-in-want agent=x",
      refs = { { id = A, name = "HEAD" }, { id = A, name = "refs/heads/main" }, { id = B, name = "refs/heads/sandbox/t1" },
               { id = C, name = "refs/heads/feature" }, { id = C, name = "refs/pull/1/head" },
               { id = B, name = "refs/tags/v1" }, { id = A, name = "refs/tags/v1^{}" } } })
  end

  it("keeps the sandbox's branch and tags, drops HEAD with its hidden branch", function()
    local f, facts = gs.filter_advertisement(adv(), { sandbox_branch = "sandbox/t1" })
    local names = {}
    for _, r in ipairs(f.refs) do names[#names + 1] = r.name end
    expect(names):equals({ "refs/heads/sandbox/t1", "refs/tags/v1", "refs/tags/v1^{}" })
    expect(f.capabilities):equals("multi_ack side-band-64k agent=x")
    expect(facts.default_branch):equals("main")
    expect(facts.hidden):equals(4)
    expect(facts.tips[C]):equals(true)
    -- a valid stream: git can read it again
    local again = pktline.parse_advertisement(pktline.build_advertisement(f))
    expect(#again.refs):equals(3)
    expect(again.capabilities):equals(f.capabilities)
  end)

  it("keeps read-only branches (and HEAD, with its symref) when the policy names them", function()
    local f = gs.filter_advertisement(adv(), { sandbox_branch = "sandbox/t1", read = { "main" }, tags = false })
    local names = {}
    for _, r in ipairs(f.refs) do names[#names + 1] = r.name end
    expect(names):equals({ "HEAD", "refs/heads/main", "refs/heads/sandbox/t1" })
    expect(f.capabilities):contains("symref=HEAD:refs/heads/main")
  end)

  it("gives an empty repository's line when nothing is left", function()
    local f = gs.filter_advertisement(adv(), { sandbox_branch = "nothing", tags = false })
    local body = pktline.build_advertisement(f)
    expect(body):contains(Z .. " capabilities^{}")
    expect(#pktline.parse_advertisement(body).refs):equals(0)
  end)
end)

describe("repositories", function()
  it("names a repository the same way from every URL form", function()
    for _, u in ipairs({ "https://github.com/Acme/App.git", "https://github.com/acme/app", "https://x-access-token:t@github.com/acme/app/",
                         "http://github.com/acme/app.git", "git@github.com:acme/app.git", "ssh://git@github.com/acme/app",
                         "ssh://git@github.com:22/acme/app.git", "git://github.com/acme/app" }) do
      expect(gs.repo_of_url(u)):equals("github.com/acme/app")
    end
    expect(gs.repo_of_url("https://github.com/acme")):is_nil()
    expect(gs.repo_of_url("/local/path")):is_nil()
    expect(gs.repo_of_url("https://github.com/acme/app/tree/main")):is_nil()
  end)

  it("parses smart-HTTP paths and services", function()
    local g = gs.parse_git_path("github.com", "/Acme/App.git/git-receive-pack")
    expect(g.repo):equals("github.com/acme/app")
    expect(g.endpoint):equals("git-receive-pack")
    expect(gs.parse_git_path("github.com", "/acme/app/info/refs").endpoint):equals("info/refs")
    expect(gs.parse_git_path("github.com", "/acme/app/pulls")):is_nil()
    expect(gs.parse_git_path("github.com", "/acme/app/objects/info/packs")):is_nil()
    expect(gs.parse_git_path("github.com", "/../app/info/refs")):is_nil()
    expect(gs.service_of("info/refs", "service=git-receive-pack")):equals("git-receive-pack")
    expect(gs.service_of("info/refs", "service=git-shell")):is_nil()
    expect(gs.service_of("info/refs", "")):is_nil()
  end)

  it("rewrites SSH remotes to HTTPS for git", function()
    local cfg = gs.gitconfig()
    expect(cfg):contains('[url "https://github.com/"]')
    expect(cfg):contains("insteadOf = git@github.com:")
    expect(cfg):contains("insteadOf = ssh://git@github.com/")
  end)
end)

-- ------------------------------------------------------------------ the real git

describe("with the real git through a guard", function()
  local fx, proxy, rows, guard, url, other_url, ws, base

  local function start_proxy(rules)
    if proxy then proxy.close() end
    rows = {}
    guard = gs.guard{ sandbox = "t1", branch = "sandbox/t1", objects = ws .. "/.git/objects", base = base,
                      repos = { "https://github.com/acme/app.git" }, rules = rules,
                      audit = function(r) rows[#rows + 1] = r end }
    proxy = gp.start{ upstream = fx.port, host = "github.com", guard = guard }
    url = "http://127.0.0.1:" .. proxy.port .. "/acme/app.git"
    other_url = "http://127.0.0.1:" .. proxy.port .. "/other/lib.git"
  end

  before_all(function()
    fx = F.new()
    fx:seed("acme/app", { README = "hello\n", [".github/workflows/ci.yml"] = "on: push\n" }, { "feature" }, { "v1" })
    fx:seed("other/lib", { ["lib.c"] = "int x;\n" })
    -- feature gets a commit of its own (nothing the sandbox may see points at it)
    local f = fx.dir .. "/feature"
    fx:must(fx.dir, "clone", "-q", "-b", "feature", "http://127.0.0.1:" .. fx.port .. "/acme/app.git", f)
    require("foundry.fs").write(f .. "/secret.txt", "not for the sandbox\n")
    fx:must(f, "add", "-A")
    fx:must(f, "commit", "-qm", "feature work")
    fx:must(f, "push", "-q", "origin", "feature")
    -- the sandbox: a clone of the base branch, on its own branch (objects on the host)
    ws = fx.dir .. "/ws"
    fx:must(fx.dir, "clone", "-q", "--single-branch", "-b", "main", "http://127.0.0.1:" .. fx.port .. "/acme/app.git", ws)
    fx:must(ws, "checkout", "-q", "-b", "sandbox/t1")
    base = fx:must(ws, "rev-parse", "HEAD")
    start_proxy()
    fx:must(ws, "remote", "set-url", "origin", url)
  end)

  after_all(function()
    if proxy then proxy.close() end
    if fx then fx:close() end
    net.cleanup()
  end)

  local function commit(msg, files)
    for path, content in pairs(files or { ["work.txt"] = msg .. "\n" }) do
      local d = path:match("^(.*)/[^/]+$")
      if d then require("foundry.exec").exec{ "mkdir", "-p", ws .. "/" .. d, check = true } end
      require("foundry.fs").write(ws .. "/" .. path, content)
    end
    fx:must(ws, "add", "-A")
    fx:must(ws, "commit", "-qm", msg)
    return fx:must(ws, "rev-parse", "HEAD")
  end

  -- A refused push: git exits non-zero, prints our remote: lines and a rejected ref, and
  -- no receive-pack request reached the upstream.
  local function refused(r, rule, pattern)
    expect(r.ok):equals(false)
    expect(r.stderr):matches("remote: foundry: push refused by the sandbox's git policy %(rule: " .. rule:gsub("%-", "%%-") .. "%)")
    expect(r.stderr):contains("! [remote rejected]")
    if pattern then expect(r.stderr):matches(pattern) end
    expect(fx:reached("/git-receive-pack")):equals(0)
  end

  it("allows pushing its own branch, and fast-forwards of it", function()
    commit("first")
    fx:clear_log()
    local r = fx:git(ws, "push", "-u", "origin", "sandbox/t1")
    expect(r.ok):equals(true)
    expect(fx:upstream_ref("acme/app", "sandbox/t1")):equals(fx:must(ws, "rev-parse", "HEAD"))
    expect(fx:reached("/git-receive-pack")):equals(1)
    local head = commit("second")
    expect(fx:git(ws, "push").ok):equals(true)
    expect(fx:upstream_ref("acme/app", "sandbox/t1")):equals(head)
    -- the upstream was asked for protocol v0: its advertisement is what the guard filtered
    for _, e in ipairs(fx:log()) do expect(e.git_protocol == nil or e.git_protocol == require("foundry.json").null):equals(true) end
    local last = rows[#rows]
    expect(last.decision):equals("allow")
    expect(last.rule):equals("git.push")
  end)

  it("refuses a push to main", function()
    commit("to main")
    fx:clear_log()
    local main = fx:upstream_ref("acme/app", "main")
    refused(fx:git(ws, "push", "origin", "HEAD:main"), "protected", "main is a protected branch")
    expect(fx:upstream_ref("acme/app", "main")):equals(main)
    expect(rows[#rows].decision):equals("deny")
    expect(rows[#rows].rule):equals("git.push.protected")
  end)

  it("refuses a push to another branch, and to a new branch", function()
    fx:clear_log()
    local feature = fx:upstream_ref("acme/app", "feature")
    refused(fx:git(ws, "push", "origin", "HEAD:refs/heads/feature"), "branch", "pushes only to its branch sandbox/t1")
    expect(fx:upstream_ref("acme/app", "feature")):equals(feature)
    refused(fx:git(ws, "push", "origin", "HEAD:brand-new"), "branch")
    expect(fx:upstream_ref("acme/app", "brand-new")):is_nil()
  end)

  it("refuses deleting a branch", function()
    fx:must(ws, "push", "-q", "origin", "HEAD:sandbox/t1")
    fx:clear_log()
    refused(fx:git(ws, "push", "origin", ":sandbox/t1"), "delete", "deleting branches")
    refused(fx:git(ws, "push", "origin", "--delete", "sandbox/t1"), "delete")
    expect(fx:upstream_ref("acme/app", "sandbox/t1")):equals(fx:must(ws, "rev-parse", "HEAD"))
  end)

  it("refuses rewritten history: +refspec, --force, --force-with-lease", function()
    local pushed = fx:must(ws, "rev-parse", "HEAD")
    fx:must(ws, "commit", "-q", "--amend", "-m", "rewritten")
    fx:clear_log()
    refused(fx:git(ws, "push", "origin", "+sandbox/t1:sandbox/t1"), "fast-forward", "not a fast%-forward")
    refused(fx:git(ws, "push", "--force", "origin", "sandbox/t1"), "fast-forward")
    refused(fx:git(ws, "push", "--force-with-lease=sandbox/t1:" .. pushed, "origin", "sandbox/t1"), "fast-forward")
    expect(fx:upstream_ref("acme/app", "sandbox/t1")):equals(pushed)
    fx:must(ws, "reset", "-q", "--hard", pushed)
  end)

  it("refuses --mirror", function()
    fx:clear_log()
    local r = fx:git(ws, "push", "--mirror", "origin")
    expect(r.ok):equals(false)
    expect(r.stderr):matches("remote: foundry: push refused")
    expect(fx:reached("/git-receive-pack")):equals(0)
    expect(fx:upstream_ref("acme/app", "feature")).never:is_nil()
  end)

  it("refuses a push that adds .github/workflows/x.yml, and one that edits CODEOWNERS", function()
    local before = fx:must(ws, "rev-parse", "HEAD")
    commit("ci", { [".github/workflows/x.yml"] = "on: push\njobs: {}\n" })
    fx:clear_log()
    refused(fx:git(ws, "push", "origin", "sandbox/t1"), "restricted", "%.github/workflows/x%.yml")
    fx:must(ws, "reset", "-q", "--hard", before)
    -- hidden under later commits that do not touch it
    commit("owners", { ["docs/CODEOWNERS"] = "* @me\n" })
    commit("innocent")
    refused(fx:git(ws, "push", "origin", "sandbox/t1"), "restricted", "docs/CODEOWNERS")
    fx:must(ws, "reset", "-q", "--hard", before)
    expect(fx:upstream_ref("acme/app", "sandbox/t1")):equals(before)
  end)

  it("does not blame the sandbox for workflow files already upstream", function()
    -- the base already has .github/workflows/ci.yml; a new branch from it is fine
    local r = fx:git(ws, "push", "origin", "HEAD:refs/heads/sandbox/t1")
    expect(r.ok):equals(true)
  end)

  it("refuses a push from /tmp to another repository's URL, with nothing sent upstream", function()
    local tmp = fx.dir .. "/elsewhere"
    fx:must(fx.dir, "init", "-q", tmp)
    require("foundry.fs").write(tmp .. "/evil.txt", "x\n")
    fx:must(tmp, "add", "-A")
    fx:must(tmp, "commit", "-qm", "evil")
    fx:clear_log()
    local r = fx:git(tmp, "push", other_url, "HEAD:refs/heads/main")
    refused(r, "repository", "may not push to github%.com/other/lib")
    -- not even the advertisement went upstream
    expect(#fx:log()):equals(0)
    r = fx:git(tmp, "push", other_url, "HEAD:refs/heads/sandbox/t1")
    refused(r, "repository")
  end)

  it("judges pushes of commits the sandbox's objects lack, from the pack (quarantine)", function()
    -- a clone in /tmp of the same repository, with its own objects
    local tmp = fx.dir .. "/clone2"
    fx:must(fx.dir, "clone", "-q", "-b", "sandbox/t1", url, tmp)
    require("foundry.fs").write(tmp .. "/other.txt", "from elsewhere\n")
    fx:must(tmp, "add", "-A")
    fx:must(tmp, "commit", "-qm", "elsewhere")
    local r = fx:git(tmp, "push", "origin", "HEAD:sandbox/t1")
    expect(r.ok):equals(true)
    fx:must(ws, "pull", "-q", "--ff-only", "origin", "sandbox/t1")
    require("foundry.exec").exec{ "mkdir", "-p", tmp .. "/.github/workflows", check = true }
    require("foundry.fs").write(tmp .. "/.github/workflows/evil.yml", "on: push\n")
    fx:must(tmp, "add", "-A")
    fx:must(tmp, "commit", "-qm", "evil ci")
    fx:clear_log()
    refused(fx:git(tmp, "push", "origin", "HEAD:sandbox/t1"), "restricted", "evil%.yml")
  end)

  it("hides other branches: ls-remote, fetch by name and fetch by id", function()
    local r = fx:git(ws, "ls-remote", "origin")
    expect(r.ok):equals(true)
    expect(r.stdout):contains("refs/heads/sandbox/t1")
    expect(r.stdout):contains("refs/tags/v1")
    expect(r.stdout).never:contains("refs/heads/main")
    expect(r.stdout).never:contains("refs/heads/feature")
    r = fx:git(ws, "fetch", "origin", "feature")
    expect(r.ok):equals(false)
    expect(r.stderr):contains("couldn't find remote ref feature")
    local feature = fx:upstream_ref("acme/app", "feature")
    fx:must(fx.dir .. "/root/acme/app.git", "config", "uploadpack.allowAnySHA1InWant", "true")
    fx:clear_log()
    -- git itself does not ask for an object it was not shown...
    r = fx:git(ws, "fetch", "origin", feature)
    expect(r.ok):equals(false)
    expect(r.stderr):contains("unadvertised object " .. feature)
    -- ...and a client that does is refused by the guard, with git's own ERR packet
    local s = net.tcp_connect("127.0.0.1", proxy.port)
    local body = pktline.pkt("want " .. feature .. " multi_ack_detailed side-band-64k ofs-delta\n") .. "0000" .. pktline.pkt("done\n")
    s:write("POST /acme/app.git/git-upload-pack HTTP/1.1\r\nHost: github.com\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
    local out = s:read_all()
    s:close()
    expect(out):contains("ERR foundry: upload-pack: not our ref " .. feature)
    expect(fx:reached("/git-upload-pack")):equals(0)
  end)

  it("lets the policy name read-only branches", function()
    start_proxy({ read = { "main" } })
    fx:must(ws, "remote", "set-url", "origin", url)
    local r = fx:git(ws, "fetch", "origin", "main")
    expect(r.ok):equals(true)
    r = fx:git(ws, "ls-remote", "origin")
    expect(r.stdout):contains("refs/heads/main")
    expect(r.stdout).never:contains("refs/heads/feature")
    -- readable is not writable
    refused(fx:git(ws, "push", "origin", "HEAD:main"), "protected")
    start_proxy()
    fx:must(ws, "remote", "set-url", "origin", url)
  end)

  it("lets a large push through: git's probe, then a chunked body", function()
    local head = commit("large", { ["large.bin"] = require("foundry.crypto").random_bytes(200000) })
    fx:clear_log()
    local r = fx:git(ws, "-c", "http.postBuffer=4096", "push", "origin", "sandbox/t1")
    if not r.ok then error(r.stderr) end
    expect(fx:upstream_ref("acme/app", "sandbox/t1")):equals(head)
    expect(fx:reached("/git-receive-pack")):equals(2) -- the probe ("0000") and the push
    -- to another repository the probe is answered here, and the push refused
    fx:clear_log()
    refused(fx:git(ws, "-c", "http.postBuffer=4096", "push", other_url, "HEAD:refs/heads/x"), "repository")
    expect(#fx:log()):equals(0)
  end)

  it("refuses a push over the size limit", function()
    start_proxy({ max_bytes = 2000 })
    fx:must(ws, "remote", "set-url", "origin", url)
    commit("big", { ["big.bin"] = require("foundry.crypto").random_bytes(8000) })
    fx:clear_log()
    refused(fx:git(ws, "push", "origin", "sandbox/t1"), "size", "limit is 2000")
    fx:must(ws, "reset", "-q", "--hard", "HEAD~1")
    start_proxy()
    fx:must(ws, "remote", "set-url", "origin", url)
  end)

  it("fails closed on malformed requests", function()
    local function post(path, body, headers)
      local s = net.tcp_connect("127.0.0.1", proxy.port)
      local h = { "POST " .. path .. " HTTP/1.1", "Host: github.com", "Content-Length: " .. #body,
                  "Content-Type: application/x-git-receive-pack-request" }
      for _, x in ipairs(headers or {}) do h[#h + 1] = x end
      s:write(table.concat(h, "\r\n") .. "\r\n\r\n" .. body)
      local out = s:read_all()
      s:close()
      return out
    end
    fx:clear_log()
    local out = post("/acme/app.git/git-receive-pack", "0032garbage")
    expect(out):matches("^HTTP/1.1 400")
    out = post("/acme/app.git/git-receive-pack", pktline.pkt(A .. " " .. B .. " refs/heads/sandbox/t1\0report-status\n") .. "0000PACKjunk")
    expect(out):matches("^HTTP/1.1 400")
    -- a delete command crafted by hand reaches the delete rule, not the upstream
    out = post("/acme/app.git/git-receive-pack", pktline.pkt(A .. " " .. Z .. " refs/heads/feature\0report-status side-band-64k\n") .. "0000")
    expect(out):matches("^HTTP/1.1 200")
    expect(out):contains("foundry: deleting branches")
    out = post("/acme/app.git/git-upload-pack", "not gzip", { "Content-Encoding: gzip" })
    expect(out):matches("^HTTP/1.1 400")
    out = post("/acme/app.git/git-receive-pack", "x", { "Content-Encoding: deflate" })
    expect(out):matches("^HTTP/1.1 415")
    expect(fx:reached("-pack")):equals(0)
  end)
end)
