-- Sandboxes end to end against the real engine and the test image: the CLI's commands,
-- flags, --json shapes and exit codes; the locked-down defaults; rollback; zero trace.
local L = dofile("tests/integration/lib.lua")
L.skip = skip
local uv = require "luv"
local fs = require "foundry.fs"
local json = require "foundry.json"
local stages = require "foundry.stages"

local env
before_all(function() env = L.setup() end)
after_all(function() L.teardown() end)

describe("foundry new", function()
  it("prints one JSON object with the documented fields, and NDJSON stage events on stderr", function()
    local r = L.ok{ "new", "-d", "--json", "-n", "shape" }
    local sb = r.json
    for _, k in ipairs({ "name", "state", "branch", "image", "network", "workspace", "created_at" }) do
      expect(sb[k]):is_a("string")
    end
    expect(sb.name):equals("shape")
    expect(sb.state):equals("running")
    expect(sb.branch):equals("sandbox/shape")
    expect(sb.image):equals(L.IMAGE)
    expect(sb.network):equals("allowlist")
    expect(sb.created_at):matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$")
    local seen = {}
    for line in r.stderr:gmatch("[^\n]+") do
      local ev = json.decode(line)
      expect(ev.stage):is_a("string")
      if ev.event ~= "start" and ev.event ~= "note" then expect(ev.ms):is_a("number") end
      seen[ev.stage .. ":" .. ev.event] = true
    end
    for _, name in ipairs(stages.ORDER) do
      expect(seen[name .. ":start"]):is(true)
      expect(seen[name .. ":done"] or seen[name .. ":skip"]):is(true)
    end
    expect(seen["auth:skip"]):is(true)
    L.ok{ "rm", "-y", "shape" }
    L.no_traces()
  end)

  it("refuses a taken name (exit 1) and gives two unnamed sandboxes distinct names", function()
    L.ok{ "new", "-d", "-n", "dup" }
    local r = L.cli{ "new", "-d", "-n", "dup", "--json" }
    expect(r.status):equals(1)
    expect(r.json.error.code):equals("state.name_taken")
    local a = L.ok{ "new", "-d", "--json" }.json
    local b = L.ok{ "new", "-d", "--json" }.json
    expect(a.name):equals("repo")
    expect(b.name):equals("repo-2")
    L.ok{ "rm", "-y", "dup", "repo", "repo-2" }
    L.no_traces()
  end)

  it("honours -b, --from, --image, --network, -e, --cpus, --memory, --pids, --wd, -v, --copy", function()
    fs.write(env.root .. "/data.txt", "mounted\n")
    fs.mkdir(env.root .. "/tocopy/sub")
    fs.write(env.root .. "/tocopy/sub/x.txt", "copied\n")
    fs.write(env.root .. "/one.txt", "one\n")
    local r = L.ok{ "new", "-d", "--json", "-n", "flags", "-b", "work/flags", "--from", "feature", "--image", L.IMAGE,
      "--network", "none", "-e", "GREETING=hello world", "--cpus", "1.5", "--memory", "512m", "--pids", "256",
      "--wd", "src", "-v", env.root .. "/data.txt:/data/data.txt:ro", "--copy", env.root .. "/tocopy:/tmp/copied",
      "--copy", env.root .. "/one.txt:/workspace/one.txt" }
    expect(r.json.branch):equals("work/flags")
    expect(r.json.network):equals("none")
    local out = L.ok{ "exec", "flags", "sh", "-c",
      'pwd; echo "$GREETING"; cat /data/data.txt; cat /tmp/copied/sub/x.txt; cat /workspace/one.txt; ' ..
      'git -C /workspace rev-parse --abbrev-ref HEAD; echo no > /data/data.txt 2>/dev/null || echo ro; ' ..
      'env | grep -c _PROXY= || true' }.stdout
    expect(out):equals("/workspace/src\nhello world\nmounted\ncopied\none\nwork/flags\nro\n0\n")
    local info = require("foundry.docker").container(require("foundry.sandbox").get("flags").container_id):inspect()
    expect(info.HostConfig.NanoCpus):equals(1500000000)
    expect(info.HostConfig.Memory):equals(512 * 1024 * 1024)
    expect(info.HostConfig.PidsLimit):equals(256)
    L.ok{ "rm", "-y", "flags" }
    L.no_traces()
  end)

  it("saves the flags as a preset with --save-as, usable with -p", function()
    L.ok{ "new", "-d", "-n", "saver", "--network", "none", "-e", "A=1", "--save-as", "mine" }
    local show = L.ok{ "preset", "show", "mine", "--json" }.json
    expect(show.origin):equals("saved")
    expect(show.preset.network):equals("none")
    expect(show.preset.env.A):equals("1")
    local r = L.ok{ "new", "-d", "--json", "-n", "fromsaved", "-p", "mine" }
    expect(r.json.network):equals("none")
    expect(L.ok{ "exec", "fromsaved", "printenv", "A" }.stdout):equals("1\n")
    L.ok{ "rm", "-y", "saver", "fromsaved" }
    L.ok{ "preset", "rm", "mine" }
    L.no_traces()
  end)

  it("fails with exit 2 on bad usage and 3 when a preset is not found", function()
    expect(L.cli{ "new", "--netwrok", "none" }.status):equals(2)
    expect(L.cli{ "new", "--network", "everywhere" }.status):equals(2)
    local r = L.cli{ "new", "-d", "-p", "no-such-preset", "--json" }
    expect(r.status):equals(3)
    expect(r.json.error.code):equals("preset.not_found")
    L.no_traces()
  end)
end)

describe("the sandbox's defaults", function()
  local sb
  before_all(function()
    sb = require("foundry.sandbox").create({ name = "locked", repo = env.repo })
  end)
  after_all(function() if sb then sb:destroy({ discard = true }) end end)

  local function sh(script) return sb:exec{ "sh", "-c", script } end

  it("runs as uid 1000 with no capabilities and no new privileges", function()
    local out = sh("id -u; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status").stdout
    expect(out):matches("^1000\n")
    expect(out):matches("CapEff:%s+0000000000000000")
    expect(out):matches("CapPrm:%s+0000000000000000")
    expect(out):matches("CapBnd:%s+0000000000000000")
    expect(out):matches("NoNewPrivs:%s+1")
  end)

  it("has a read-only root: writes fail, rm -rf / is a no-op", function()
    expect(sh("touch /usr/bin/evil").ok):is(false)
    expect(sh("echo x > /etc/passwd").ok):is(false)
    sh("rm -rf / 2>/dev/null; rm -rf /usr /etc /bin 2>/dev/null")
    local out = sh("test -x /bin/sh && test -s /etc/passwd && test -d /usr/bin && echo intact").stdout
    expect(out):equals("intact\n")
  end)

  it("has no network interface but lo", function()
    local out = sh("ls /sys/class/net").stdout
    expect(out):equals("lo\n")
    expect(sh("cat /proc/net/route | wc -l").stdout):equals("1\n")
  end)

  it("has writable, executable tmpfs /tmp and home, and a writable workspace", function()
    local out = sh([[
      printf '#!/bin/sh\necho ran-$1\n' > /tmp/t.sh && chmod +x /tmp/t.sh && /tmp/t.sh tmp
      cp /tmp/t.sh ~/t.sh && ~/t.sh home
      grep -E ' (/tmp|/home/agent) ' /proc/mounts | cut -d' ' -f2,3
      echo hi > /workspace/w.txt && cat /workspace/w.txt]]).stdout
    expect(out):contains("ran-tmp\nran-home\n")
    expect(out):contains("/tmp tmpfs")
    expect(out):contains("/home/agent tmpfs")
    expect(out):contains("hi\n")
  end)

  it("runs foundry-shim as PID 1, mounted read-only", function()
    local out = sh("tr '\\0' ' ' < /proc/1/cmdline; echo; cp /bin/true /usr/local/bin/foundry-shim 2>/dev/null && echo overwritten").stdout
    expect(out):matches("^/usr/local/bin/foundry%-shim init")
    expect(out).never:contains("overwritten")
  end)

  it("is created with the locked-down engine settings and labels", function()
    local info = sb:container():inspect()
    local hc = info.HostConfig
    expect(hc.ReadonlyRootfs):is(true)
    expect(hc.NetworkMode):equals("none")
    expect(hc.CapDrop):equals({ "ALL" })
    expect(hc.SecurityOpt):contains("no-new-privileges:true")
    expect(hc.PidsLimit):equals(1024)
    expect(hc.Memory):equals(4 * 1024 ^ 3)
    expect(hc.NanoCpus):equals(2e9)
    expect(info.Config.User):equals("1000:1000")
    expect(info.Config.Labels["dev.foundry.sandbox"]):equals("locked")
    expect(info.Config.Labels["dev.foundry.managed"]):equals("true")
    expect(info.Config.Labels["dev.foundry.home"]):equals(require("foundry.paths").state())
    local ws
    for _, m in ipairs(info.Mounts) do if m.Destination == "/workspace" then ws = m end end
    expect(ws.RW):is(true)
  end)
end)

describe("mounts", function()
  local sandbox = require "foundry.sandbox"
  local home = os.getenv("HOME")

  it("refuses credential and engine paths, their parents and what is inside them", function()
    for _, p in ipairs({ home .. "/.ssh", home .. "/.ssh/id_rsa", home .. "/.aws", home .. "/.config/gh",
                         home .. "/.gnupg", home .. "/.docker", home .. "/.kube", home .. "/.netrc",
                         home .. "/.npmrc", home .. "/.pypirc", "/var/run/docker.sock", home, "/",
                         home .. "/x/../.ssh", home .. "/.config" }) do
      local err = expect(function() sandbox.check_mount(p) end):fails("mount.denied")
      expect(err.hint):matches("allow%-dangerous%-mount")
    end
    local fine = fs.mkdtemp("/tmp/foundry-mount-XXXXXX")
    expect(function() sandbox.check_mount(fine) end).never:fails()
    fs.rm(fine)
    -- Foundry's own home (vault, CA key, state) is refused too
    expect(function() sandbox.check_mount(env.home) end):fails("mount.denied")
  end)

  it("resolves symlinks before deciding", function()
    fs.symlink(home, env.root .. "/innocent")
    expect(function() sandbox.check_mount(env.root .. "/innocent") end):fails("mount.denied")
    expect(function() sandbox.check_mount(env.root .. "/innocent/../innocent/.ssh") end):fails("mount.denied")
  end)

  it("refuses them from the CLI (exit 1, nothing made) unless --allow-dangerous-mount", function()
    local r = L.cli{ "new", "-d", "--json", "-n", "danger", "-v", "/var/run/docker.sock:/var/run/docker.sock" }
    expect(r.status):equals(1)
    expect(r.json.error.code):equals("mount.denied")
    L.no_traces()
    local ok = L.ok{ "new", "-d", "--json", "-n", "danger", "--allow-dangerous-mount", "-v", home .. ":/host:ro" }
    expect(ok.json.name):equals("danger")
    L.ok{ "rm", "-y", "danger" }
    L.no_traces()
  end)
end)

describe("rollback", function()
  local sandbox = require "foundry.sandbox"
  for i, after in ipairs(stages.ORDER) do
    it("leaves zero trace when a stage fails after " .. after, function()
      local err = expect(function()
        sandbox.create({ name = "rb" .. i, repo = env.repo, preset = {
          stages = { add = { { name = "boom", after = after, run = function() error("injected failure", 0) end } } },
        } })
      end):fails("stage.failed")
      expect(err.stage):equals("boom")
      expect(err.message):matches("injected failure")
      expect(err.undo_errors):is_nil()
      L.no_traces()
    end)
  end

  it("leaves zero trace when a stage of its own fails (a failing setup command)", function()
    local r = L.cli{ "new", "-d", "--json", "-n", "badsetup", "-p", env.root .. "/bad.lua" }
    expect(r.status):equals(3)
    fs.write(env.root .. "/bad.lua", "return { extends = 'shell', setup = { 'echo about to fail; exit 5' } }")
    r = L.cli{ "new", "-d", "--json", "-n", "badsetup", "-p", env.root .. "/bad.lua" }
    expect(r.status):equals(1)
    expect(r.json.error.message):matches("stage 'customize' failed: setup%[1%]")
    expect(r.stderr):contains('"event":"undo"')
    L.no_traces()
  end)

  it("fails in auth, before anything runs inside, when the preset's secret is not in the vault", function()
    local r = L.cli{ "new", "-d", "--json", "-n", "noauth", "-p", "claude" }
    expect(r.status).never:equals(0)
    expect(r.json.error.message):matches("^stage 'auth' failed")
    expect(r.json.error.hint):matches("foundry vault")
    L.no_traces()
  end)

  it("rolls back on Ctrl-C during new", function()
    fs.write(env.root .. "/slow.lua", "return { setup = { 'sleep 30' } }")
    local exited = require("foundry._task").wait("foundry new to exit")
    local proc, pid
    proc, pid = uv.spawn(L.exe, { args = { "new", "-d", "-n", "ctrlc", "-p", env.root .. "/slow.lua" }, cwd = env.repo },
      function(code) proc:close(); exited:resolve(code) end)
    local started = false
    for _ = 1, 300 do
      foundry.sleep(100)
      local ok, evs = pcall(require("foundry.state").events.list, { sandbox = "ctrlc" })
      for _, e in ipairs(ok and evs or {}) do
        if e.data and e.data.stage == "customize" and e.data.event == "start" then started = true end
      end
      if started then break end
    end
    expect(started):is(true)
    foundry.sleep(300)
    uv.kill(pid, "sigint")
    local code = exited:await()
    expect(code):equals(130)
    L.no_traces()
  end)
end)

describe("kill -9 during new, then prune", function()
  -- Kill at fixed delays, and when a given stage has started (so the kill lands mid-way
  -- however fast creation is on this machine).
  local cases = { { delay = 40 }, { delay = 120 }, { stage = "provision" }, { stage = "system" }, { stage = "health" } }
  for i, case in ipairs(cases) do
    it("repairs everything when killed " .. (case.delay and ("after " .. case.delay .. " ms") or ("in stage " .. case.stage)), function()
      local name = "k" .. i
      local exited = require("foundry._task").wait("foundry new to exit")
      local proc, pid
      proc, pid = uv.spawn(L.exe, { args = { "new", "-d", "-n", name }, cwd = env.repo },
        function(_, sig) proc:close(); exited:resolve(sig) end)
      if case.delay then
        foundry.sleep(case.delay)
      else
        for _ = 1, 2000 do
          local ok, evs = pcall(require("foundry.state").events.list, { sandbox = name })
          local hit = false
          for _, e in ipairs(ok and evs or {}) do
            if e.data and e.data.stage == case.stage and e.data.event == "start" then hit = true end
          end
          if hit then break end
          foundry.sleep(2)
        end
      end
      uv.kill(pid, "sigkill")
      expect(exited:await()):equals(9)
      local r = L.ok{ "prune", "-y", "--json" }
      expect(r.json):is_a("table")
      L.no_traces()
    end)
  end
end)

describe("foundry rm", function()
  -- The source's branch holds these commits (newest first, one per line); nothing else of
  -- the sandbox is left; the branch is deleted for the next test.
  local function kept(branch, subjects)
    local n = select(2, subjects:gsub("\n", ""))
    local log = foundry.exec{ "git", "-C", env.repo, "log", "--format=%s", "-" .. n, branch, check = true }.stdout
    expect(log):equals(subjects)
    L.no_traces({ branch })
    foundry.exec{ "git", "-C", env.repo, "branch", "-D", branch, check = true }
  end

  it("keeps the sandbox's commits as its branch, and nothing else", function()
    L.ok{ "new", "-d", "-n", "keeper" }
    L.ok{ "exec", "keeper", "sh", "-c", "echo change > file.txt && git add file.txt && git commit -qm 'from the sandbox'" }
    local r = L.ok{ "rm", "-y", "keeper", "--json" }
    expect(r.json.synced.commits):equals(1)
    kept("sandbox/keeper", "from the sandbox\n")
  end)

  it("lets a new sandbox continue a removed one's branch with -b, and says so when it is not asked to", function()
    L.ok{ "new", "-d", "-n", "first" }
    L.ok{ "exec", "first", "sh", "-c", "echo one > one.txt && git add one.txt && git commit -qm one" }
    L.ok{ "rm", "-y", "first" }
    -- the same name again: its branch holds the kept commit, and the error says how to go on
    local again = L.cli{ "new", "-d", "-n", "first" }
    expect(again.status):equals(1)
    expect(again.stderr):matches("branch 'sandbox/first' already exists")
    expect(again.stderr):matches("foundry new %-b sandbox/first")
    L.no_traces({ "sandbox/first" })
    -- continued: the commit is there, counted as the sandbox's, and the next one comes back
    L.ok{ "new", "-d", "-n", "second", "-b", "sandbox/first" }
    local r = L.ok{ "exec", "second", "sh", "-c", "cat one.txt && git log --format=%s -1" }
    expect(r.stdout):equals("one\none\n")
    L.ok{ "exec", "second", "sh", "-c", "echo two > two.txt && git add two.txt && git commit -qm two" }
    local rm = L.ok{ "rm", "-y", "second", "--json" }
    expect(rm.json.synced.commits):equals(2)
    kept("sandbox/first", "two\none\n")
  end)

  it("leaves no branch without commits unless --keep-branch, and drops commits with --discard", function()
    L.ok{ "new", "-d", "-n", "plain" }
    L.ok{ "rm", "-y", "plain" }
    L.no_traces()
    L.ok{ "new", "-d", "-n", "kb" }
    L.ok{ "rm", "-y", "kb", "--keep-branch" }
    L.no_traces({ "sandbox/kb" })
    foundry.exec{ "git", "-C", env.repo, "branch", "-D", "sandbox/kb", check = true }
    L.ok{ "new", "-d", "-n", "disc" }
    L.ok{ "exec", "disc", "sh", "-c", "echo x > y && git add y && git commit -qm y" }
    L.ok{ "rm", "-y", "disc", "--discard" }
    L.no_traces()
  end)

  it("asks for confirmation without a terminal (exit 2), says not found with exit 3, removes --all", function()
    L.ok{ "new", "-d", "-n", "c1" }
    L.ok{ "new", "-d", "-n", "c2" }
    expect(L.cli{ "rm", "c1" }.status):equals(2)
    local nf = L.cli{ "rm", "-y", "nope", "--json" }
    expect(nf.status):equals(3)
    expect(nf.json.error.code):equals("sandbox.not_found")
    local mixed = L.cli{ "rm", "-y", "nope", "c1", "--json" }
    expect(mixed.status):equals(3)
    expect(#mixed.json):equals(2)
    L.ok{ "destroy", "-y", "--all" }
    L.no_traces()
  end)
end)

describe("foundry run", function()
  it("creates the sandbox a preset file describes (no terminal: prints its name)", function()
    fs.write(env.root .. "/p.lua", "return { extends = 'shell', network = 'none', env = { FROM_PRESET = 'yes' } }")
    local r = L.ok{ "run", env.root .. "/p.lua" }
    local name = r.stdout:match("^(%S+)\n$")
    expect(name):equals("repo")
    expect(L.ok{ "exec", name, "printenv", "FROM_PRESET" }.stdout):equals("yes\n")
    expect(L.ok{ "info", name, "--json" }.json.network):equals("none")
    L.ok{ "rm", "-y", name }
    L.no_traces()
  end)

  it("runs the example that drives three sandboxes from three branches in parallel", function()
    local r = L.ok{ "run", "presets/examples/three-branches.lua", env.repo, "main", "feature", "main", "--", "git rev-parse --abbrev-ref HEAD",
      cwd = require("luv").cwd() }
    local seen = 0
    for _ in r.stdout:gmatch("== [%w.-]+ %(from %w+%): exit 0\n") do seen = seen + 1 end
    expect(seen):equals(3)
    expect(r.stdout):contains("(from feature)")
    L.no_traces()
  end)

  it("checks the shipped examples", function()
    for _, f in ipairs({ "node-app.lua", "offline.lua" }) do L.ok{ "preset", "check", "presets/examples/" .. f, cwd = require("luv").cwd() } end
  end)
end)

describe("ten sandboxes at once", function()
  it("creates them in parallel with distinct names, lists them, removes them all", function()
    local fns = {}
    for i = 1, 10 do fns[i] = function() return L.cli{ "new", "-d", "--json" } end end
    local results = foundry.parallel(fns)
    local names = {}
    for _, r in ipairs(results) do
      if r.status ~= 0 then error("new failed: " .. r.stdout .. r.stderr) end
      names[r.json.name] = true
    end
    local count = 0
    for _ in pairs(names) do count = count + 1 end
    expect(count):equals(10)
    local ls = L.ok{ "ls", "--json" }.json
    expect(#ls):equals(10)
    for _, s in ipairs(ls) do expect(s.state):equals("running") end
    L.ok{ "rm", "-y", "--all" }
    L.no_traces()
  end)
end)

describe("the other commands", function()
  before_all(function() L.ok{ "new", "-d", "-n", "cmds" } end)
  after_all(function() L.cli{ "rm", "-y", "--discard", "cmds" } end)

  it("ls: table, -q, --json", function()
    expect(L.ok{ "ls" }.stdout):matches("NAME%s+STATE%s+BRANCH")
    expect(L.ok{ "ls", "-q" }.stdout):equals("cmds\n")
    expect(L.ok{ "ls", "--json" }.json[1].name):equals("cmds")
  end)

  it("info: text and --json; exit 3 for an unknown name", function()
    expect(L.ok{ "info", "cmds" }.stdout):matches("branch%s+sandbox/cmds")
    local j = L.ok{ "info", "cmds", "--json" }.json
    expect(j.container_state):equals("running")
    expect(#j.stages):equals(#stages.ORDER)
    expect(L.cli{ "info", "nope" }.status):equals(3)
  end)

  it("exec: status, --json, -i, -e, -w", function()
    local r = L.cli{ "exec", "cmds", "sh", "-c", "echo out; echo err >&2; exit 7" }
    expect(r.status):equals(7)
    expect(r.stdout):equals("out\n")
    expect(r.stderr):equals("err\n")
    local j = L.ok{ "exec", "--json", "cmds", "sh", "-c", "echo x" }.json
    expect(j):equals({ status = 0, stdout = "x\n", stderr = "" })
    expect(L.ok{ "exec", "-i", "cmds", "--", "cat", stdin = "piped" }.stdout):equals("piped")
    expect(L.ok{ "exec", "-e", "K=v", "-w", "/tmp", "cmds", "sh", "-c", "echo $K; pwd" }.stdout):equals("v\n/tmp\n")
  end)

  it("logs: the stage events, --json, --tail", function()
    expect(L.ok{ "logs", "cmds" }.stdout):matches("stage provision done")
    local lines = {}
    for l in L.ok{ "logs", "cmds", "--json" }.stdout:gmatch("[^\n]+") do lines[#lines + 1] = json.decode(l) end
    expect(#lines):gt(10)
    local tail = 0
    for _ in L.ok{ "logs", "cmds", "--tail", "3" }.stdout:gmatch("[^\n]+") do tail = tail + 1 end
    expect(tail):le(6)
  end)

  it("stop and start: the state follows, the home is set up again", function()
    expect(L.ok{ "stop", "cmds", "--json" }.json.state):equals("stopped")
    expect(L.ok{ "ls", "--json" }.json[1].state):equals("stopped")
    local r = L.cli{ "exec", "--json", "cmds", "true" }
    expect(r.status):equals(1)
    expect(r.json.error.hint):equals("start it: foundry start cmds")
    expect(L.ok{ "start", "cmds", "--json" }.json.state):equals("running")
    expect(L.ok{ "exec", "cmds", "cat", "/home/agent/.gitconfig" }.stdout):contains("[safe]")
  end)

  it("diff and sync", function()
    L.ok{ "exec", "cmds", "sh", "-c", "echo a > a.txt && git add a.txt && git commit -qm a && echo b > b.txt" }
    local stat = L.ok{ "diff", "cmds", "--stat" }.stdout
    expect(stat):contains("a.txt")
    expect(stat):contains("b.txt")
    expect(L.ok{ "diff", "cmds" }.stdout):contains("+b")
    expect(L.ok{ "diff", "cmds", "--json" }.json.diff):contains("a.txt")
    local s = L.ok{ "sync", "cmds", "--json" }.json
    expect(s.commits):equals(1)
    expect(s.branch):equals("sandbox/cmds")
    foundry.exec{ "git", "-C", env.repo, "branch", "-D", "sandbox/cmds", check = true }
  end)

  it("prune: nothing to do, then an orphan container and a stale row", function()
    expect(L.ok{ "prune", "--dry-run", "--json" }.json.containers):equals({})
    local docker = require "foundry.docker"
    local sandbox = require "foundry.sandbox"
    local c = docker.create({ image = L.IMAGE, cmd = { "true" }, labels = sandbox.labels("ghost") })
    local dry = L.ok{ "prune", "--dry-run", "--json" }.json
    expect(#dry.containers):equals(1)
    expect(L.cli{ "prune" }.status):equals(2)
    L.ok{ "prune", "-y" }
    expect(function() c:inspect() end):fails("docker.not_found")
    expect(L.ok{ "ls", "-q" }.stdout):equals("cmds\n")
  end)

  it("repeat: the last new again, with a fresh name", function()
    L.ok{ "new", "-d", "-n", "rep", "-e", "R=1" }
    local r = L.ok{ "repeat", "--json" }
    expect(r.json.name):equals("repo")
    expect(L.ok{ "exec", "repo", "printenv", "R" }.stdout):equals("1\n")
    L.ok{ "rm", "-y", "rep", "repo" }
  end)

  it("preset ls/show/check", function()
    expect(L.ok{ "preset", "ls" }.stdout):contains("claude")
    expect(L.ok{ "preset", "ls", "-q" }.stdout):contains("shell\n")
    expect(L.ok{ "preset", "show", "claude" }.stdout):contains("anthropic")
    fs.write(env.root .. "/presets/typo.lua", "return {\n  netwrok = 'none',\n}\n")
    local r = L.cli{ "preset", "check", "typo" }
    expect(r.status):equals(1)
    expect(r.stderr):contains("typo.lua:2: unknown key 'netwrok' — did you mean 'network'?")
    expect(L.cli{ "preset", "bogus" }.status):equals(2)
  end)

  it("doctor: checks with --json", function()
    local r = L.cli{ "doctor", "--json" }
    local names = {}
    for _, c in ipairs(r.json.checks) do names[c.name] = c.ok end
    expect(names.engine):is(true)
    expect(names.image):is(true)
    expect(names.state):is(true)
  end)

  it("completion: bash completes commands, flags and sandbox names", function()
    local script = L.ok{ "completion", "bash" }.stdout
    fs.write(env.root .. "/c.bash", script)
    local function complete(line)
      local words = {}
      for w in line:gmatch("%S+") do words[#words + 1] = w end
      if line:match("%s$") then words[#words + 1] = "" end
      local quoted = {}
      for i, w in ipairs(words) do quoted[i] = L.q(w) end
      local prog = string.format("PATH=%s:$PATH; source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _foundry; echo \"${COMPREPLY[*]}\"",
        L.q(L.exe:match("^(.*)/")), L.q(env.root .. "/c.bash"), table.concat(quoted, " "), #words - 1)
      return foundry.exec{ "bash", "-c", prog, cwd = env.repo, check = true }.stdout
    end
    expect(complete("foundry ne")):equals("new\n")
    expect(complete("foundry new --net")):equals("--network\n")
    expect(complete("foundry new --network al")):equals("allowlist\n")
    expect(complete("foundry attach cm")):equals("cmds\n")
    expect(L.ok{ "completion", "zsh" }.stdout):contains("#compdef foundry")
    expect(L.ok{ "completion", "fish" }.stdout):contains("complete -c foundry")
    expect(L.cli{ "completion", "tcsh" }.status):equals(2)
  end)
  it("refuses a dirty repository, and carries its changes with --carry-changes", function()
    fs.write(env.repo .. "/README.md", "# test, edited\n")
    fs.write(env.repo .. "/untracked.txt", "new\n")
    local r = L.cli{ "new", "-d", "-n", "dirty" }
    expect(r.status):equals(1)
    expect(r.stderr):contains("--carry-changes")
    L.ok{ "new", "-d", "-n", "dirty", "--carry-changes" }
    local out = L.ok{ "exec", "dirty", "--", "sh", "-c", "cd /workspace && cat README.md untracked.txt" }.stdout
    expect(out):equals("# test, edited\nnew\n")
    L.ok{ "rm", "-y", "--discard", "dirty" }
    foundry.exec{ "git", "-C", env.repo, "checkout", "--", "README.md", check = true }
    fs.unlink(env.repo .. "/untracked.txt")
  end)
end)

describe("a sandbox with network none", function()
  before_all(function()
    fs.write(env.root .. "/presets/offline.lua",
      'return { network = "none", hooks = { post_tool_use = "commit", debounce_ms = 300 } }\n')
    L.ok{ "new", "-d", "-n", "offline", "-p", "offline" }
  end)
  after_all(function() pcall(L.cli, { "rm", "-y", "--discard", "offline" }) end)

  local function sh(script)
    local r = L.cli{ "exec", "offline", "sh", "-c", "cd /workspace && (" .. script .. ") 2>&1" }
    return { status = r.status, out = (r.stdout or "") .. (r.stderr or "") }
  end

  it("has no proxy to reach: nothing listens on 127.0.0.1:3128, the socket refuses every host", function()
    expect(sh("env | grep -ci '^https\\?_proxy=' || true").out):equals("0\n")
    expect(sh("curl -s -m 5 -o /dev/null -x http://127.0.0.1:3128 http://example.test/; echo $?").out):equals("7\n")
    local r = sh([[python3 -c 'import socket
s = socket.socket(socket.AF_UNIX); s.connect("/run/foundry/proxy.sock")
s.sendall(b"GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
print(s.recv(65536).decode())']])
    expect(r.out):matches("^HTTP/1.1 403")
    expect(r.out):matches('"rule"%s*:%s*"mode"')
  end)

  it("still gets its hook events: the agent's edits are committed", { timeout = 60000 }, function()
    local before = tonumber(sh("git rev-list --count HEAD").out)
    expect(sh("echo offline > offline.txt; echo '{}' | foundry-shim notify post-tool-use").status):equals(0)
    local done = false
    for _ = 1, 100 do
      if tonumber(sh("git rev-list --count HEAD").out) == before + 1 then done = true; break end
      foundry.sleep(200)
    end
    expect(done):truthy()
    expect(sh("git status --porcelain").out):equals("")
    expect(sh("git show --stat --format= HEAD").out):matches("offline%.txt")
  end)
end)
