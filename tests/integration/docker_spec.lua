-- foundry.docker against the real engine: every call, streams, concurrency, errors.
-- Needs dockerd (bash tests/lib/dockerd.sh) and builds foundry-test:base when missing.
local docker = require "foundry.docker"
local errors = require "foundry.errors"
local uv = require "luv"
local dh = require "tests.lib.docker"

local S = dh.suite("docker")
local IMAGE = dh.IMAGE

local function now() uv.update_time(); return uv.now() end

local function is_root() return foundry.exec{ "id", "-u" }.stdout == "0\n" end

-- This binary (a rebuild while tests run leaves "(deleted)" on the old one's path).
local function self_exe() return (uv.exepath():gsub(" %(deleted%)$", "")) end

-- Run `fn` with DOCKER_HOST set to `host` (nil: unset), restoring it after.
local function with_host(host, fn)
  local old = os.getenv("DOCKER_HOST")
  if host then uv.os_setenv("DOCKER_HOST", host) else uv.os_unsetenv("DOCKER_HOST") end
  local ok, err = pcall(fn)
  if old then uv.os_setenv("DOCKER_HOST", old) else uv.os_unsetenv("DOCKER_HOST") end
  if not ok then error(err, 0) end
end

-- A unix-socket relay in front of the engine that can cut every connection at once, the
-- way an engine restart does.
local function relay(path)
  os.remove(path)
  local server = uv.new_pipe(false)
  assert(server:bind(path))
  local conns = {}
  local r = { path = path, accepted = 0 }
  assert(server:listen(16, function()
    local client = uv.new_pipe(false)
    server:accept(client)
    r.accepted = r.accepted + 1
    local up = uv.new_pipe(false)
    conns[#conns + 1] = client
    conns[#conns + 1] = up
    up:connect("/var/run/docker.sock", function(err)
      if err then client:close(); up:close(); return end
      client:read_start(function(e, data)
        if e or not data then
          if not up:is_closing() then up:shutdown() end
        elseif not up:is_closing() then
          up:write(data)
        end
      end)
      up:read_start(function(e, data)
        if e or not data then
          if not client:is_closing() then client:close() end
          if not up:is_closing() then up:close() end
        elseif not client:is_closing() then
          client:write(data)
        end
      end)
    end)
  end))
  function r.cut()
    for _, h in ipairs(conns) do if not h:is_closing() then h:close() end end
    conns = {}
  end
  function r.close()
    r.cut()
    server:close()
    os.remove(path)
  end
  return r
end

before_all(function()
  dh.require_engine(skip)
  dh.ensure_image()
end)

after_all(function()
  S:cleanup()
  docker.close_idle()
end)

describe("the engine", function()
  it("answers ping, version and info", function()
    expect(docker.ping()):equals("OK")
    local v = docker.version()
    expect(v.ApiVersion):matches("^1%.%d+$")
    expect(docker.api_version()):equals(
      tonumber(v.ApiVersion:match("%.(%d+)")) < 41 and v.ApiVersion or "1.41")
    local info = docker.info()
    expect(info.ServerVersion):equals(v.Version)
    expect(info.Containers):is_a("number")
  end)

  it("reuses keep-alive connections for consecutive calls", function()
    docker.close_idle()
    for _ = 1, 5 do docker.ping() end
    local st = docker.stats()
    expect(st.open):equals(1)
    expect(st.pooled):equals(1)
  end)
end)

describe("the example from the issue", function()
  it("runs as written", function()
    local c = docker.create{ image = "foundry-test:base", cmd = {"sleep", "infinity"},
                             read_only = true, network = "none", labels = S:label{ ["dev.foundry.test"] = "1" } }
    c:start()
    local r = c:exec{ "sh", "-c", "echo hi; exit 3" }
    expect(r.status):equals(3)
    expect(math.type(r.status)):equals("integer")
    expect(r.stdout):equals("hi\n")
    expect(r.stderr):equals("")
    c:remove{ force = true }
    expect(function() c:inspect() end):fails("docker.not_found")
  end)
end)

describe("containers", function()
  it("create applies the full host configuration", function()
    local dir = foundry.fs.mkdtemp("/tmp/foundry-docker-XXXXXX")
    foundry.fs.chmod(dir, tonumber("755", 8))
    foundry.fs.write(dir .. "/hello.txt", "from the host\n")
    local c = S:create{
      cmd = { "sleep", "infinity" }, name = "foundry-test-cfg-" .. S.tag,
      hostname = "sbx", user = "agent", env = { FOO = "bar", EMPTY = "" }, workdir = "/home/agent",
      read_only = true, network = "none", init = true,
      binds = { dir .. ":/hostdir:ro" },
      mounts = { { type = "tmpfs", target = "/scratch", size = "16m" } },
      tmpfs = { ["/tmp"] = "rw,size=32m,mode=1777", ["/home/agent"] = "rw,uid=1000,gid=1000" },
      cap_drop = { "ALL" }, cap_add = { "CHOWN" }, security_opt = { "no-new-privileges" },
      memory = "256m", cpus = 0.5, pids_limit = 64,
    }
    c:start()
    local info = c:inspect()
    local hc = info.HostConfig
    expect(info.Name):equals("/foundry-test-cfg-" .. S.tag)
    expect(info.Config.Hostname):equals("sbx")
    expect(info.Config.User):equals("agent")
    expect(info.Config.Env):contains("FOO=bar")
    expect(info.Config.WorkingDir):equals("/home/agent")
    expect(info.Config.Labels[dh.LABEL]):equals("1")
    expect(hc.ReadonlyRootfs):is(true)
    expect(hc.NetworkMode):equals("none")
    expect(hc.Init):is(true)
    expect(hc.CapDrop):equals({ "ALL" })
    expect(hc.CapAdd):equals({ "CHOWN" })
    expect(hc.SecurityOpt):equals({ "no-new-privileges" })
    expect(hc.Memory):equals(256 * 1024 * 1024)
    expect(hc.NanoCpus):equals(500000000)
    expect(hc.PidsLimit):equals(64)
    expect(hc.Binds):equals({ dir .. ":/hostdir:ro" })
    expect(hc.Tmpfs["/tmp"]):equals("rw,size=32m,mode=1777")
    expect(hc.Mounts[1].Type):equals("tmpfs")

    -- and they hold inside
    local r = c:exec{ "sh", "-c", table.concat({
      "id -u", "pwd", "cat /hostdir/hello.txt", "echo $FOO",
      "touch /root-write 2>/dev/null && echo rootfs-writable || echo rootfs-ro",
      "touch /tmp/x && echo tmp-ok", "touch /home/agent/x && echo home-ok",
      "ls /sys/class/net | tr '\\n' ' '; echo",
      "grep CapEff /proc/self/status",
      "grep NoNewPrivs /proc/self/status",
      "cat /proc/1/comm",
    }, "; ") }
    expect(r.stderr):equals("")
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    expect(lines[1]):equals("1000")
    expect(lines[2]):equals("/home/agent")
    expect(lines[3]):equals("from the host")
    expect(lines[4]):equals("bar")
    expect(lines[5]):equals("rootfs-ro")
    expect(lines[6]):equals("tmp-ok")
    expect(lines[7]):equals("home-ok")
    expect(lines[8]):equals("lo ")
    expect(lines[9]):matches("CapEff:%s+0+$") -- a non-root user keeps no capabilities
    expect(lines[10]):matches("NoNewPrivs:%s+1")
    expect(lines[11]):equals("docker-init")
    c:remove{ force = true }
    foundry.fs.rm(dir)
  end)

  it("rejects unknown create options with a suggestion", function()
    expect(function() docker.create{ image = IMAGE, readonly = true } end)
      :fails("unknown option 'readonly' — did you mean 'read_only'")
    expect(function() docker.create{ cmd = { "true" } } end):fails("image: expected string, got nil")
    expect(function() docker.create{ image = IMAGE, cap_drop = 5 } end):fails("cap_drop: expected a list")
  end)

  it("starts, stops, restarts, kills, waits and removes", function()
    local c = S:create{ cmd = { "sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.05; done" } }
    expect(c:inspect().State.Status):equals("created")
    c:start()
    c:start() -- already running: not an error
    expect(c:inspect().State.Running):is(true)
    c:stop{ t = 5 }
    expect(c:inspect().State.ExitCode):equals(42)
    c:stop() -- already stopped: not an error
    c:restart{ t = 1 }
    local info = c:inspect()
    expect(info.State.Running):is(true)
    expect(info.RestartCount):equals(0)
    c:kill{ signal = "KILL" }
    expect(c:wait()):equals(137)
    expect(function() c:kill() end):fails("docker.conflict")
    c:remove()
    expect(function() c:remove() end):fails("docker.not_found")
    c:remove{ missing_ok = true }
  end)

  it("waits for the exit status", function()
    local c = S:run{ cmd = { "sh", "-c", "sleep 0.2; exit 7" } }
    local t0 = now()
    expect(c:wait()):equals(7)
    expect(now() - t0):gt(100)
    c:remove()
  end)

  it("lists containers by label", function()
    local tag = "list-" .. S.tag
    local a = S:create{ cmd = { "true" }, labels = { ["dev.foundry.test.case"] = tag } }
    local b = S:create{ cmd = { "true" }, labels = { ["dev.foundry.test.case"] = tag } }
    local list = docker.containers{ labels = { ["dev.foundry.test.case"] = tag } }
    local ids = {}
    for _, x in ipairs(list) do ids[x.id] = x end
    expect(#list):equals(2)
    expect(ids[a.id].state):equals("created")
    expect(ids[b.id].labels["dev.foundry.test.case"]):equals(tag)
    expect(ids[a.id].image):equals(IMAGE)
    -- running only
    expect(#docker.containers{ all = false, labels = { ["dev.foundry.test.case"] = tag } }):equals(0)
    a:remove(); b:remove()
    expect(#docker.containers{ labels = { ["dev.foundry.test.case"] = tag } }):equals(0)
  end)

  it("gets a container by name", function()
    local name = "foundry-test-get-" .. S.tag
    local c = S:create{ cmd = { "true" }, name = name, tty = true }
    local g = docker.get(name)
    expect(g.id):equals(c.id)
    expect(g.name):equals(name)
    expect(g.tty):is(true)
    c:rename(name .. "-2")
    expect(docker.get(name .. "-2").id):equals(c.id)
    c:remove()
  end)

  it("creates and removes 20 containers in parallel", { timeout = 120000 }, function()
    local fns = {}
    for i = 1, 20 do
      fns[i] = function()
        local c = S:create{ cmd = { "sleep", "infinity" }, network = "none",
          labels = { ["dev.foundry.test.case"] = "parallel-" .. S.tag } }
        c:start()
        local r = c:exec{ "echo", tostring(i) }
        c:remove{ force = true }
        return { id = c.id, out = r.stdout }
      end
    end
    local t0 = now()
    local res = foundry.parallel(fns)
    local ms = now() - t0
    local seen = {}
    for i, r in ipairs(res) do
      expect(r.out):equals(i .. "\n")
      expect(seen[r.id]):is_nil()
      seen[r.id] = true
    end
    expect(#docker.containers{ labels = { ["dev.foundry.test.case"] = "parallel-" .. S.tag } }):equals(0)
    -- connections beyond the pool's size were closed
    expect(docker.stats().pooled):le(8)
    io.stderr:write(string.format("      (20 containers created, started, exec'd, removed in %d ms)\n", ms))
  end)
end)

describe("exec", function()
  local c
  before_all(function() c = S:run{ cmd = { "sleep", "infinity" }, network = "none" } end)
  after_all(function() if c then c:remove{ force = true, missing_ok = true } end end)

  it("separates stdout and stderr and reports the status", function()
    local r = c:exec{ "sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 5" }
    expect(r.stdout):equals("out1\nout2\n")
    expect(r.stderr):equals("err1\nerr2\n")
    expect(r.status):equals(5)
    expect(r.ok):is(false)
  end)

  it("passes env, user and workdir", function()
    local r = c:exec{ "sh", "-c", "echo $A $B; id -un; pwd", env = { A = "1", B = "two words" },
      user = "agent", workdir = "/tmp" }
    expect(r.stdout):equals("1 two words\nagent\n/tmp\n")
  end)

  it("carries binary data both ways unchanged", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local blob = string.rep(table.concat(all), 4099) -- ~1 MiB, not a multiple of frames
    local r = c:exec{ "cat", stdin = blob }
    expect(#r.stdout):equals(#blob)
    expect(r.stdout == blob):is(true)
    -- binary on stderr, interleaved with stdout
    r = c:exec{ "sh", "-c", "head -c 100000 /dev/zero; cat >&2", stdin = blob }
    expect(r.stdout == string.rep("\0", 100000)):is(true)
    expect(r.stderr == blob):is(true)
  end)

  it("streams 64 MiB through stdout", { timeout = 120000 }, function()
    local t0 = now()
    local r = c:exec{ "python3", "-c",
      "import sys\nb = bytes(range(256)) * 4096\nfor _ in range(64): sys.stdout.buffer.write(b)" }
    local ms = now() - t0
    expect(r.status):equals(0)
    expect(#r.stdout):equals(64 * 1024 * 1024)
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local mib = string.rep(table.concat(all), 4096)
    expect(r.stdout == string.rep(mib, 64)):is(true)
    io.stderr:write(string.format("      (64 MiB through exec stdout in %d ms)\n", ms))
  end)

  it("streams output to callbacks as it comes", function()
    local chunks, errs = {}, {}
    local t0 = now()
    local first
    local r = c:exec{ "sh", "-c", "echo a; sleep 0.3; echo b >&2; echo c",
      on_stdout = function(s) first = first or (now() - t0); chunks[#chunks + 1] = s end,
      on_stderr = function(s) errs[#errs + 1] = s end }
    expect(table.concat(chunks)):equals("a\nc\n")
    expect(table.concat(errs)):equals("b\n")
    expect(r.stdout):equals("")
    expect(first):lt(250) -- "a" arrived before the sleep ended
  end)

  it("feeds stdin and half-closes it", function()
    local r = c:exec{ "sh", "-c", "wc -c; echo done", stdin = string.rep("x", 10 * 1024 * 1024) }
    expect(r.stdout):equals("10485760\ndone\n")
    r = c:exec{ "sh", "-c", "cat; echo eof", stdin = "" }
    expect(r.stdout):equals("eof\n")
  end)

  it("runs with a TTY: output merged, CRLF line ends", function()
    local r = c:exec{ "sh", "-c", "echo out; echo err >&2; exit 2", tty = true }
    expect(r.stdout):equals("out\r\nerr\r\n")
    expect(r.stderr):equals("")
    expect(r.status):equals(2)
  end)

  it("talks to an interactive process through a stream", function()
    local e <close> = c:exec_stream{ "sh", "-c", "while read l; do echo \"got $l\"; done; echo bye; exit 4" }
    e:write("one\n")
    expect(e:read(5000)):equals("got one\n")
    e:write("two\n")
    local data, which = e:read(5000)
    expect(data):equals("got two\n")
    expect(which):equals("stdout")
    e:close_write()
    expect(e:read(5000)):equals("bye\n")
    expect(e:wait()):equals(4)
  end)

  it("resizes an exec TTY", function()
    local e <close> = c:exec_stream{ "sh", "-c", "sleep 0.5; stty size", tty = true, height = 10, width = 20 }
    e:resize(33, 111)
    local out = e:read_all(10000)
    expect(out):matches("33 111")
    expect(e:wait()):equals(0)
  end)

  it("fails clearly for a missing command and an exited container", function()
    local r = c:exec{ "no-such-command-xyz" }
    expect(r.status):ge(126) -- the engine's "cannot execute"
    expect(r.stdout .. r.stderr):contains("executable file not found")
    local d = S:create{ cmd = { "true" } }
    expect(function() d:exec{ "true" } end):fails("docker.conflict")
    d:remove()
  end)

  it("raises exec_failed with check=true", function()
    local err = expect(function() c:exec{ "sh", "-c", "echo nope >&2; exit 9", check = true } end)
      :fails("docker.exec_failed")
    expect(err.message):equals("sh exited with status 9: nope")
    expect(err.result.status):equals(9)
  end)

  it("times out and stays usable", function()
    local t0 = now()
    local err = expect(function() c:exec{ "sleep", "5", timeout = 300 } end):fails("timeout")
    expect(err.hint):matches("timeout=")
    expect(now() - t0):lt(2000)
    expect(c:exec{ "echo", "still" }.stdout):equals("still\n")
  end)

  it("runs detached", function()
    local r = c:exec{ "sh", "-c", "echo detached > /tmp/d", detach = true }
    expect(r.id):is_a("string")
    for _ = 1, 50 do
      if c:exec{ "cat", "/tmp/d" }.stdout == "detached\n" then return end
      foundry.sleep(20)
    end
    error("the detached exec did not run")
  end)
end)

describe("attach, logs, resize", function()
  it("attaches to a container's stdin and stdout", function()
    local c = S:create{ cmd = { "sh", "-c", "read l; echo \"hello $l\"; echo warn >&2; exit 3" },
      open_stdin = true, stdin_once = true }
    local s <close> = c:attach{}
    c:start()
    s:write("world\n")
    s:close_write()
    local out, err = s:read_all(10000)
    expect(out):equals("hello world\n")
    expect(err):equals("warn\n")
    expect(c:wait()):equals(3)
    c:remove()
  end)

  it("returns logs, separated or followed", function()
    local c = S:run{ cmd = { "sh", "-c", "echo one; echo two >&2; sleep 0.4; echo three; sleep 0.4" } }
    local f <close> = c:logs{ follow = true }
    local got = {}
    while true do
      local data, which = f:read(10000)
      if not data then break end
      got[#got + 1] = which .. ":" .. data
    end
    local text = table.concat(got)
    expect(text):contains("stdout:one\n")
    expect(text):contains("stderr:two\n")
    expect(text):contains("stdout:three\n")
    expect(c:wait()):equals(0)
    local l = c:logs{}
    expect(l.stdout):equals("one\nthree\n")
    expect(l.stderr):equals("two\n")
    expect(c:logs{ stderr = false }.stderr):equals("")
    expect(c:logs{ tail = 1 }.stdout):equals("three\n")
    c:remove()
  end)

  it("returns a TTY container's logs as one stream", function()
    local c = S:run{ cmd = { "sh", "-c", "echo a; echo b >&2" }, tty = true }
    c:wait()
    local l = c:logs{}
    expect(l.stdout):equals("a\r\nb\r\n")
    c:remove()
  end)

  it("resizes a container TTY", function()
    local c = S:run{ cmd = { "sh", "-c", "sleep 0.6; stty size" }, tty = true }
    c:resize(40, 100)
    expect(c:wait()):equals(0)
    expect(c:logs{}.stdout):matches("40 100")
    c:remove()
  end)
end)

describe("archives", function()
  it("copies files in and out", function()
    local c = S:run{ cmd = { "sleep", "infinity" }, network = "none" }
    local bin = {}
    for i = 0, 255 do bin[#bin + 1] = string.char(255 - i) end
    bin = string.rep(table.concat(bin), 3000)
    c:put_archive("/home/agent", docker.tar{
      { name = "proj", type = "dir" },
      { name = "proj/hello.txt", data = "hello\n", mode = tonumber("640", 8), uid = 1000, gid = 1000 },
      { name = "proj/blob.bin", data = bin },
      { name = "proj/link", type = "symlink", target = "hello.txt" },
    })
    local r = c:exec{ "sh", "-c", "cat /home/agent/proj/link; stat -c '%a %u' /home/agent/proj/hello.txt; " ..
      "wc -c < /home/agent/proj/blob.bin" }
    expect(r.stdout):equals("hello\n640 1000\n768000\n")
    local tar, stat = c:get_archive("/home/agent/proj")
    expect(stat.name):equals("proj")
    local files = {}
    for _, e in ipairs(docker.untar(tar)) do files[e.name] = e end
    expect(files["proj/hello.txt"].data):equals("hello\n")
    expect(files["proj/blob.bin"].data == bin):is(true)
    expect(files["proj/link"].type):equals("symlink")
    expect(files["proj/link"].target):equals("hello.txt")
    expect(function() c:get_archive("/no/such/path") end):fails("docker.not_found")
    c:remove{ force = true }
  end)

  it("refuses to copy into a read-only root filesystem", function()
    local c = S:run{ cmd = { "sleep", "infinity" }, read_only = true }
    local err = expect(function() c:put_archive("/etc", docker.tar{ { name = "x", data = "y" } }) end)
      :fails("docker.denied")
    expect(err.message):matches("read%-only")
    c:remove{ force = true }
  end)

  it("round-trips long names through tar and untar", function()
    local long = string.rep("d", 80) .. "/" .. string.rep("f", 90) .. ".txt"
    local t = docker.tar{ { name = long, data = "x" } }
    expect(#t % 512):equals(0)
    expect(docker.untar(t)[1].name):equals(long)
  end)
end)

describe("images", function()
  it("lists and inspects images", function()
    local list = docker.images{ reference = "foundry-test" }
    local found
    for _, im in ipairs(list) do
      for _, t in ipairs(im.tags) do if t == IMAGE then found = im end end
    end
    expect(found):truthy()
    expect(found.size):gt(1000000)
    local info = docker.image_inspect(IMAGE)
    expect(info.Id):equals(found.id)
    expect(docker.image_exists(IMAGE)):is(true)
    expect(docker.image_exists("foundry-test:no-such-tag")):is(false)
  end)

  it("imports a root filesystem tarball", function()
    local tag = "import-" .. S.tag
    local seen = 0
    local id = docker.image_import{
      data = docker.tar{ { name = "etc", type = "dir" }, { name = "etc/motd", data = "imported\n" } },
      repo = "foundry-test", tag = tag,
      changes = { "LABEL dev.foundry.test=1", "ENV X=1", 'CMD ["/bin/true"]' },
      on_progress = function() seen = seen + 1 end,
    }
    expect(id):matches("^sha256:")
    expect(seen):gt(0)
    local info = docker.image_inspect("foundry-test:" .. tag)
    expect(info.Id):equals(id)
    expect(info.Config.Labels[dh.LABEL]):equals("1")
    expect(info.Config.Env):contains("X=1")
    -- a container from it sees the file
    local c = S:create{ image = "foundry-test:" .. tag, cmd = { "/bin/true" } }
    local tar = c:get_archive("/etc/motd")
    expect(docker.untar(tar)[1].data):equals("imported\n")
    c:remove()
    docker.image_tag(id, "foundry-test:" .. tag .. "-again")
    expect(docker.image_inspect("foundry-test:" .. tag .. "-again").Id):equals(id)
    docker.image_remove("foundry-test:" .. tag .. "-again")
    docker.image_remove("foundry-test:" .. tag)
    expect(docker.image_exists("foundry-test:" .. tag)):is(false)
  end)

  it("imports from a file, streamed", function()
    local dir = foundry.fs.mkdtemp("/tmp/foundry-docker-XXXXXX")
    local path = dir .. "/rootfs.tar"
    local big = string.rep("0123456789abcdef", 4 * 65536) -- 4 MiB, many file chunks
    foundry.fs.write(path, docker.tar{ { name = "big", data = big } })
    local tag = "file-" .. S.tag
    docker.image_import{ file = path, repo = "foundry-test", tag = tag, changes = { "LABEL dev.foundry.test=1" } }
    local c = S:create{ image = "foundry-test:" .. tag, cmd = { "x" } }
    expect(docker.untar((c:get_archive("/big")))[1].data == big):is(true)
    c:remove()
    docker.image_remove("foundry-test:" .. tag)
    foundry.fs.rm(dir)
    expect(function() docker.image_import{ file = dir .. "/none.tar", repo = "x" } end):fails("cannot open")
  end)

  it("builds from a context tarball with streamed progress", { timeout = 120000 }, function()
    local tag = "foundry-test:build-" .. S.tag
    local lines = {}
    local id = docker.image_build{
      context = docker.tar{
        { name = "Dockerfile", data = "FROM " .. IMAGE .. "\nCOPY hello.txt /hello.txt\n" ..
          "RUN echo built > /built\nLABEL dev.foundry.test=1\n" },
        { name = "hello.txt", data = "from the context\n" },
      },
      tag = tag, network = "none",
      on_progress = function(m) if m.stream then lines[#lines + 1] = m.stream end end,
    }
    expect(id):matches("^sha256:")
    expect(table.concat(lines)):contains("Step 1/4")
    local c = S:run{ image = tag, cmd = { "sleep", "infinity" } }
    expect(c:exec{ "cat", "/hello.txt", "/built" }.stdout):equals("from the context\nbuilt\n")
    c:remove{ force = true }
    docker.image_remove(tag)
  end)

  it("reports a failing build step", { timeout = 120000 }, function()
    local err = expect(function()
      docker.image_build{ context = docker.tar{ { name = "Dockerfile", data = "FROM " .. IMAGE .. "\nRUN exit 3\n" } },
        network = "none" }
    end):fails("docker.build_failed")
    expect(err.message):contains("non-zero code: 3")
  end)
end)

describe("foundry image", function()
  local function foundry_cli(...)
    return foundry.exec{ self_exe(), ... }
  end

  it("builds a directory, lists and removes the image", { timeout = 120000 }, function()
    local dir = foundry.fs.mkdtemp("/tmp/foundry-docker-ctx-XXXXXX")
    foundry.fs.write(dir .. "/Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY note /note\nLABEL dev.foundry.test=1\n")
    foundry.fs.write(dir .. "/note", "from the cli\n")
    local name = "foundry-test:cli-" .. S.tag
    local r = foundry_cli("image", "build", dir, "-t", name, "--base", IMAGE, "--network", "none", "--json")
    expect(r.status):equals(0)
    local last = r.stdout:match("([^\n]+)\n$")
    local res = require("foundry.json").decode(last)
    expect(res.image):equals(name)
    expect(res.id):matches("^sha256:")
    r = foundry_cli("image", "ls", "--json")
    expect(r.status):equals(0)
    local found
    for _, im in ipairs(require("foundry.json").decode(r.stdout)) do
      for _, t in ipairs(im.tags) do if t == name then found = im end end
    end
    expect(found.kind):equals("built")
    local c = S:create{ image = name, cmd = { "true" } }
    expect(docker.untar((c:get_archive("/note")))[1].data):equals("from the cli\n")
    c:remove()
    r = foundry_cli("image", "rm", name)
    expect(r.status):equals(0)
    expect(docker.image_exists(name)):is(false)
    r = foundry_cli("image", "rm", name)
    expect(r.status):equals(3) -- not found
    expect(r.stderr):contains("no such image")
    r = foundry_cli("image", "bild")
    expect(r.status):equals(2)
    expect(r.stderr):contains("did you mean 'build'")
    foundry.fs.rm(dir)
  end)
end)

describe("events", function()
  it("streams events filtered by label", function()
    local tag = "events-" .. S.tag
    local ev <close> = docker.events{ labels = { ["dev.foundry.test.case"] = tag } }
    local other = S:create{ cmd = { "true" } } -- not ours: filtered out
    local c = S:create{ cmd = { "true" }, labels = { ["dev.foundry.test.case"] = tag } }
    c:start()
    local actions = {}
    while #actions < 3 do
      local e = ev:next(10000)
      expect(e.Actor.ID):equals(c.id)
      actions[#actions + 1] = e.Action
    end
    expect(actions):equals({ "create", "start", "die" })
    c:remove(); other:remove()
  end)
end)

describe("errors", function()
  it("says when no engine is running (no socket file)", function()
    with_host("unix:///tmp/foundry-no-such-docker.sock", function()
      local err = expect(function() docker.ping() end):fails("docker.unreachable")
      expect(err.message):equals(
        "cannot reach Docker at unix:///tmp/foundry-no-such-docker.sock: no such file — is dockerd running?")
      expect(err.hint):matches("dockerd")
    end)
  end)

  it("says when nobody listens on the socket", function()
    local path = "/tmp/foundry-dead-" .. S.tag .. ".sock"
    local p = uv.new_pipe(false)
    assert(p:bind(path)) -- bound, never listening: connections are refused
    with_host("unix://" .. path, function()
      local t0 = now()
      local err = expect(function() docker.create{ image = IMAGE } end):fails("docker.unreachable")
      expect(err.message):equals("cannot reach Docker at unix://" .. path .. ": connection refused — is dockerd running?")
      expect(now() - t0):lt(1000)
    end)
    p:close()
    os.remove(path)
  end)

  it("says when the socket's permissions deny us", { timeout = 30000 }, function()
    if not is_root() then skip("needs root to switch to an unprivileged user") end
    local exe = self_exe()
    local r = foundry.exec{ "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", exe, "eval",
      "local ok, e = pcall(require('foundry.docker').ping); return e.code .. '|' .. e.message .. '|' .. e.hint",
      env = { DOCKER_HOST = "unix:///var/run/docker.sock", HOME = "/tmp" } }
    expect(r.stderr):equals("")
    local code, msg, hint = r.stdout:match("^(.-)|(.-)|(.-)\n$")
    expect(code):equals("docker.permission_denied")
    expect(msg):equals("cannot reach Docker at unix:///var/run/docker.sock: permission denied")
    expect(hint):matches("docker group")
  end)

  it("names a missing image and a missing container", function()
    local err = expect(function() S:create{ image = "foundry-test:no-such-tag" } end):fails("docker.not_found")
    expect(err.message):matches("no such image: foundry%-test:no%-such%-tag")
    expect(err.hint):matches("build")
    err = expect(function() docker.container("foundry-no-such-container"):inspect() end):fails("docker.not_found")
    expect(err.message):equals("no such container: foundry-no-such-container")
    expect(function() docker.container("foundry-no-such-container"):start() end):fails("docker.not_found")
    expect(function() docker.image_remove("foundry-test:no-such-tag") end):fails("docker.not_found")
  end)

  it("reports a name conflict", function()
    local name = "foundry-test-dup-" .. S.tag
    local c = S:create{ cmd = { "true" }, name = name }
    local err = expect(function() S:create{ cmd = { "true" }, name = name } end):fails("docker.conflict")
    expect(err.message):contains("already in use")
    expect(err.hint):matches("another name")
    c:remove()
  end)

  it("times out any call, with the limit configurable", function()
    local c = S:run{ cmd = { "sleep", "infinity" } }
    local t0 = now()
    local err = expect(function() c:wait{ timeout = 200 } end):fails("timeout")
    expect(err.message):matches("docker.wait")
    expect(now() - t0):lt(1500)
    -- the default limit, for calls not given one
    local old = docker.configure{ timeout = 150 }
    local ok, e2 = pcall(docker.request, { method = "POST", path = "/containers/" .. c.id .. "/wait" })
    docker.configure(old)
    expect(ok):is(false)
    expect(errors.is(e2, "timeout")):is(true)
    expect(docker.ping()):equals("OK")
    c:remove{ force = true }
  end)

  it("ends a stream with an error when the engine goes away mid-stream", function()
    local r = relay("/tmp/foundry-relay-" .. S.tag .. ".sock")
    local c = S:run{ cmd = { "sh", "-c", "while :; do echo tick; sleep 0.05; done" } }
    with_host("unix://" .. r.path, function()
      local f = c:logs{ follow = true }
      expect(f:read(5000)):contains("tick")
      r.cut()
      local err = expect(function() while f:read(5000) do end end):fails("docker.disconnected")
      expect(err.message):contains("closed mid-stream")
      f:close()
      -- a pending call is resumed with an error too
      local waiter = foundry.spawn(function() return c:wait() end)
      foundry.sleep(100)
      r.cut()
      expect(function() waiter:join() end):fails("docker.disconnected")
      -- and an exec stream: a hijacked connection's end looks normal, the status tells
      local e = c:exec_stream{ "cat" }
      e:write("x\n")
      expect(e:read(5000)):equals("x\n")
      r.cut()
      expect(function() e:wait() end):fails("docker.disconnected")
      e:close()
    end)
    docker.close_idle()
    r.close()
    c:remove{ force = true }
  end)

  it("resumes callers with an error when a real engine is killed or restarted", { timeout = 90000 }, function()
    -- A dockerd of our own in fresh mount, PID and network namespaces (its state on a
    -- tmpfs), so the shared engine is untouched. Needs root and unshare.
    if not is_root() or not foundry.exec{ "sh", "-c", "command -v unshare && command -v dockerd" }.ok then
      skip("needs root, unshare and dockerd")
    end
    local dir = foundry.fs.mkdtemp("/tmp/foundry-docker-restart-XXXXXX")
    foundry.fs.write(dir .. "/restart.lua", [[
local docker = require "foundry.docker"
local out = {}
for _, sig in ipairs{ "-KILL", "-TERM" } do
  local ev = docker.events{}
  local pid = io.open("/var/run/docker.pid"):read("l")
  local reader = foundry.spawn(function() return pcall(function() while ev:next(30000) do end end) end)
  -- a buffered call whose answer never completes (the event stream, not streamed)
  local waiter = foundry.spawn(function() return pcall(docker.request, { path = "/events", timeout = 0 }) end)
  foundry.sleep(200)
  foundry.exec{ "kill", sig, pid }
  local ok, err = reader:join()
  ev:close()
  out[#out + 1] = sig .. " events " .. (ok and "ended" or err.code)
  local wok, werr = waiter:join()
  out[#out + 1] = sig .. " call " .. (wok and "ok" or werr.code)
  foundry.exec{ "sh", "-c", "while kill -0 " .. pid .. " 2>/dev/null; do sleep 0.1; done", timeout = 30000 }
  foundry.exec{ "bash", "tests/lib/dockerd.sh", check = true }
  out[#out + 1] = sig .. " ping " .. docker.ping()
end
print(table.concat(out, "\n"))
]])
    local r = foundry.exec{ "unshare", "-m", "-p", "-n", "-f", "--mount-proc", "bash", "-c", table.concat({
      "set -e", "mount --make-rprivate /", "mount -t tmpfs tmpfs /run", "mkdir -p /run/lock",
      "mount -t tmpfs tmpfs /var/lib/docker", "ip link set lo up",
      "DOCKERD_LOG=" .. dir .. "/dockerd.log bash tests/lib/dockerd.sh >/dev/null",
      "\"$0\" run " .. dir .. "/restart.lua",
      "kill $(cat /var/run/docker.pid)",
    }, "\n"), self_exe(), timeout = 80000 }
    foundry.fs.rm(dir)
    expect(r.stderr):equals("")
    expect(r.stdout):equals(table.concat({
      "-KILL events docker.disconnected", "-KILL call docker.disconnected", "-KILL ping OK",
      "-TERM events docker.disconnected", "-TERM call docker.disconnected", "-TERM ping OK",
    }, "\n") .. "\n")
  end)

  it("rejects bad endpoints", function()
    with_host("ssh://example", function()
      expect(function() docker.ping() end):fails("unsupported scheme 'ssh'")
    end)
    with_host("tcp://127.0.0.1:1", function()
      local err = expect(function() docker.ping() end):fails("docker.unreachable")
      expect(err.message):contains("connection refused")
    end)
  end)
end)

describe("TLS", function()
  local dir, proc, port, out_pipe
  before_all(function()
    if not foundry.exec{ "sh", "-c", "command -v python3 && command -v openssl" }.ok then
      skip("needs python3 and openssl")
    end
    dir = foundry.fs.mkdtemp("/tmp/foundry-docker-tls-XXXXXX")
    local script = table.concat({
      "set -e",
      "ec='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'",
      "openssl req -x509 $ec -keyout ca.key -out ca.pem -days 1 -subj /CN=foundry-test-ca 2>/dev/null",
      "openssl req $ec -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null",
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > server.ext",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 " ..
        "-extfile server.ext 2>/dev/null",
      "openssl req $ec -keyout key.pem -out client.csr -subj /CN=client 2>/dev/null",
      "printf 'extendedKeyUsage=clientAuth\\n' > client.ext",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 1 " ..
        "-extfile client.ext 2>/dev/null",
      "mkdir other && cp cert.pem key.pem other/",
      "cd other && openssl req -x509 $ec -keyout ca.key -out ca.pem -days 1 -subj /CN=other 2>/dev/null",
    }, "\n")
    foundry.exec{ "sh", "-c", script, cwd = dir, check = true }
    out_pipe = uv.new_pipe(false)
    local w = require("foundry._task").wait("tls proxy port", nil, 10000)
    local buf = ""
    proc = uv.spawn("python3", {
      args = { "tests/integration/docker_tls_proxy.py", dir .. "/server.pem", dir .. "/server.key",
        dir .. "/ca.pem", "/var/run/docker.sock" },
      stdio = { nil, out_pipe, 2 },
    }, function() end)
    out_pipe:read_start(function(_, data)
      if data then
        buf = buf .. data
        local p = buf:match("^(%d+)\n")
        if p and not port then port = tonumber(p); w:resolve() end
      end
    end)
    w:await()
  end)
  after_all(function()
    if proc then proc:kill("sigterm"); proc:close() end
    if out_pipe then out_pipe:close() end
    docker.close_idle()
    if dir then foundry.fs.rm(dir) end
  end)

  local function with_tls(env, fn)
    local old = {}
    for k, v in pairs(env) do old[k] = os.getenv(k) or false; uv.os_setenv(k, v) end
    local ok, err = pcall(with_host, "tcp://127.0.0.1:" .. port, fn)
    for k, v in pairs(old) do if v then uv.os_setenv(k, v) else uv.os_unsetenv(k) end end
    docker.close_idle()
    if not ok then error(err, 0) end
  end

  it("speaks to a TLS engine with client certificates, streams included", function()
    with_tls({ DOCKER_TLS_VERIFY = "1", DOCKER_CERT_PATH = dir }, function()
      expect(docker.ping()):equals("OK")
      local c = S:run{ cmd = { "sleep", "infinity" }, network = "none" }
      local r = c:exec{ "sh", "-c", "cat; echo err >&2; exit 6", stdin = string.rep("t", 300000) }
      expect(#r.stdout):equals(300000)
      expect(r.stderr):equals("err\n")
      expect(r.status):equals(6)
      c:remove{ force = true }
    end)
  end)

  it("refuses an engine whose certificate it cannot verify", function()
    with_tls({ DOCKER_TLS_VERIFY = "1", DOCKER_CERT_PATH = dir .. "/other" }, function()
      local err = expect(function() docker.ping() end):fails("docker.tls")
      expect(err.hint):matches("DOCKER_CERT_PATH")
    end)
  end)
end)

describe("cleanup", function()
  it("leaves no containers behind", function()
    -- every test removed its own; after_all sweeps whatever a failure left
    local left = S:leftovers()
    local names = {}
    for _, c in ipairs(left) do names[#names + 1] = c.name .. " (" .. c.state .. ")" end
    expect(table.concat(names, ", ")):equals("")
  end)
end)
