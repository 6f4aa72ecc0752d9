-- Workspaces inside a real container: the mounts ws.mounts names (the work tree at
-- /workspace, the shared stores read-only at /.foundry/objects-N), a read-only root, no
-- network, the sandbox's user 1000 - and the real git inside sees only its branches.
local G = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../spec/git_lib.lua")
local git = require "foundry.git"
local docker = require "foundry.docker"
local uv = require "luv"

local IMAGE = os.getenv("FOUNDRY_TEST_IMAGE") or "foundry-test:base"

describe("a workspace in a container", function()
  local repo, c
  before_each(function()
    if uv.getuid() ~= 0 then skip("needs root (the files go to uid 1000)") end
    if not pcall(docker.ping, { timeout = 3000 }) then skip("no Docker engine (bash tests/lib/dockerd.sh)") end
    if not docker.image_exists(IMAGE) then skip("no " .. IMAGE .. " (bash tests/image/build.sh)") end
    G.setup()
    repo = G.source()
  end)
  after_each(function()
    if c then pcall(function() c:remove({ force = true }) end); c = nil end
    G.teardown()
  end)

  local function start(ws)
    local mounts = {}
    for _, m in ipairs(ws.mounts) do
      mounts[#mounts + 1] = { type = "bind", source = m.source, target = m.target, read_only = m.read_only }
    end
    c = docker.create{ image = IMAGE, cmd = { "sleep", "infinity" }, user = "1000:1000", network = "none",
                       read_only = true, tmpfs = { ["/tmp"] = "rw,size=16m,mode=1777" }, mounts = mounts,
                       workdir = ws.cwd, env = { "HOME=/tmp", "GIT_CONFIG_NOSYSTEM=1" },
                       labels = { ["dev.foundry.test"] = "git" } }
    c:start()
  end
  local function sh(script)
    local r = c:exec{ "sh", "-c", script }
    if r.status ~= 0 then error("in the container: " .. script .. ": " .. (r.stderr or "") .. (r.stdout or ""), 2) end
    return (r.stdout:gsub("\n$", ""))
  end

  it("runs the real git as uid 1000 on exactly its own branches", function()
    local ws = git.workspace.create{ source = repo, name = "ctr", owner = { uid = 1000, gid = 1000 } }
    start(ws)
    expect(sh("id -u")):equals("1000")
    expect(sh("git status --porcelain")):equals("")
    expect(sh("git for-each-ref --format='%(refname)'")):equals("refs/heads/main\nrefs/heads/sandbox/ctr")
    expect(sh("git log --all --format=%s")):equals("main: add lib\nmain: initial")
    local inside = G.set(G.lines(sh("git cat-file --batch-all-objects --batch-check='%(objectname)'")))
    for _, id in ipairs(G.objects_only_in(repo, { "feature-a", "secret-b" }, "main")) do
      expect(inside[id]):is_nil()
    end
    expect(#G.lines(sh("git cat-file --batch-all-objects --batch-check='%(objectname)'"))):equals(#G.objects_only_in(repo, { "main" }))
    -- the agent's work: commit, rebase, stash; the store is read-only and untouched
    sh("echo agent > agent.txt && git add agent.txt && git commit -qm 'agent: in the container'")
    sh("echo two >> agent.txt && git commit -qam two && GIT_SEQUENCE_EDITOR=\"sed -i -e '2s/^pick/squash/'\" GIT_EDITOR=true git rebase -q -i main")
    sh("echo wip > wip.txt && git stash -q -u && git stash pop -q && rm wip.txt")
    expect(sh("git rev-list --count main..HEAD")):equals("1")
    expect(sh("touch /.foundry/objects-0/x 2>&1 || echo read-only")):contains("read-only")
    expect(sh("git fsck 2>&1 && echo ok")):contains("ok")
    -- and the host carries on from there: commit what is left, sync into the source
    sh("echo more > more.txt")
    local id = ws:commit_all{ message = "host: the rest" }
    expect(id):matches("^%x+$")
    expect(sh("git log -1 --format=%s")):equals("host: the rest")
    expect(ws:sync().commits):equals(2)
    expect(G.git(repo, "show", "sandbox/ctr:agent.txt")):equals("agent\ntwo")
    c:remove({ force = true }); c = nil
    ws:destroy()
    expect(uv.fs_stat(G.home .. "/cache/repos")):is_nil()
  end)
end)
