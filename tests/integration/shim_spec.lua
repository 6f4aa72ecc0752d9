-- foundry-shim as PID 1 of real containers (foundry-test:base, read-only root, no network,
-- uid 1000, no capabilities), bind-mounted read-only as the lifecycle does: zombies
-- reaped, signals forwarded, exit status, a fast `docker stop`, the bridge carrying curl
-- through a --network none container to a Unix socket on the host (the real daemon and
-- proxy engine), egress back after the daemon is killed and restarted, and hook events
-- signed inside the container accepted by the daemon.
local uv = require "luv"
local net = dofile("tests/lib/net.lua")
local dh = require "tests.lib.docker"
local fs = foundry.fs
local json = foundry.json

local BUILD = os.getenv("FOUNDRY_BUILD") or "build"
local SHIM = BUILD .. "/foundry-shim"
local SHIM_IN = "/usr/local/bin/foundry-shim" -- where lib/foundry/sandbox.lua mounts it
local S = dh.suite("shim")

local dir
before_all(function()
  dh.require_engine(skip)
  if not fs.exists(SHIM) then skip(SHIM .. " is not built (make)") end
  dh.ensure_image()
end)
after_all(function() S:cleanup() end)
before_each(function()
  dir = fs.mkdtemp("/tmp/fsi-XXXXXX")
  fs.chmod(dir, tonumber("755", 8)) -- uid 1000 in the container enters it
end)
after_each(function()
  net.cleanup()
  fs.rm(dir)
end)

local function abs(p)
  if p:sub(1, 1) == "/" then return p end
  return uv.cwd() .. "/" .. p
end

-- A locked-down container with the shim as PID 1 (`cmd` after `init --`, or none).
local function sandbox(cmd, extra)
  extra = extra or {}
  local mounts = { { type = "bind", source = abs(SHIM), target = SHIM_IN, read_only = true } }
  for _, m in ipairs(extra.mounts or {}) do mounts[#mounts + 1] = m end
  local entry = { SHIM_IN, "init" }
  if cmd then entry[#entry + 1] = "--" end
  return S:run{
    entrypoint = entry, cmd = cmd, user = "1000:1000", read_only = true, network = "none",
    cap_drop = { "ALL" }, security_opt = { "no-new-privileges:true" }, tmpfs = { "/tmp" },
    mounts = mounts, env = extra.env, stop_timeout = 10, pids_limit = 256,
  }
end

describe("foundry-shim as PID 1", function()
  it("exits with the command's status, 128 + signal when it was killed", function()
    local c = sandbox({ "sh", "-c", "exit 7" })
    expect(c:wait{ timeout = 20000 }):equals(7)
    c:remove{ force = true }
    c = sandbox({ "sh", "-c", "kill -KILL $$" })
    expect(c:wait{ timeout = 20000 }):equals(137)
    c:remove{ force = true }
  end)

  it("reaps orphans (a PID 1 that does not reap leaves them as zombies)", { timeout = 60000 }, function()
    -- Five orphaned sleeps, then count the zombies. Python waits only for its own
    -- children, so as PID 1 it shows what happens without a reaper: the check can fail.
    local script = table.concat({
      "import subprocess, time",
      "for i in range(5): subprocess.Popen(['sh', '-c', '(sleep 0.2 &)']).wait()",
      "time.sleep(1)",
      "n = subprocess.run(['sh', '-c', 'ps -eo stat= | grep -c ^Z'], capture_output=True, text=True).stdout",
      "print('zombies=' + n.strip(), flush=True)",
    }, "\n")
    local plain = S:run{ cmd = { "python3", "-c", script }, user = "1000:1000", network = "none" }
    plain:wait{ timeout = 20000 }
    expect(plain:logs().stdout):matches("zombies=5")
    plain:remove{ force = true }
    local c = sandbox({ "python3", "-c", script })
    expect(c:wait{ timeout = 20000 }):equals(0)
    expect(c:logs().stdout):matches("zombies=0")
    c:remove{ force = true }
  end)

  it("forwards signals to the command and exits with its status", { timeout = 60000 }, function()
    local c = sandbox({ "sh", "-c",
      "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done" })
    expect(net.eventually(function() return c:logs().stdout:find("ready") end, 10000)):truthy()
    c:kill{ signal = "USR1" }
    expect(net.eventually(function() return c:logs().stdout:find("got%-usr1") end, 5000)):truthy()
    local t0 = net.now()
    c:stop{ t = 10 }
    expect(net.now() - t0):lt(3000)
    expect(c:wait{ timeout = 20000 }):equals(42)
    expect(c:logs().stdout):contains("got-term")
    c:remove{ force = true }
  end)

  it("keeps a container without a command alive for exec, and stops at once", { timeout = 60000 }, function()
    local c = sandbox(nil)
    local r = c:exec{ "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; id -u" }
    expect(r.stdout):contains(SHIM_IN .. " init")
    expect(r.stdout):contains("1000")
    -- orphans of an exec session are reaped by PID 1 too
    c:exec{ "sh", "-c", "for i in 1 2 3; do (sleep 0.1 &); done" }
    foundry.sleep(500)
    expect(c:exec{ "sh", "-c", "ps -eo stat= | grep -c '^Z' || true" }.stdout):equals("0\n")
    local t0 = net.now()
    c:stop{ t = 10 } -- a PID 1 that ignored SIGTERM would take the full 10 s
    expect(net.now() - t0):lt(2000)
    expect(c:wait{ timeout = 20000 }):equals(0)
    c:remove{ force = true }
  end)
end)

describe("foundry-shim in a --network none container", function()
  it("bridges curl to a Unix socket on the host, and to the same path once re-created", { timeout = 60000 }, function()
    local sock = dir .. "/proxy.sock"
    -- a tiny forward proxy: answers every request with what it was asked
    local function serve()
      local srv = net.unix_server(sock, function(s)
        local req = net.read_http_request(s)
        if not req then return end
        local body = "proxy saw: " .. req.line .. "\n"
        s:write("HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\nConnection: close\r\n\r\n" .. body)
      end)
      fs.chmod(sock, tonumber("666", 8))
      return srv
    end
    local srv = serve()
    local c = sandbox(nil, {
      env = { FOUNDRY_PROXY_SOCKET = "/run/foundry/proxy.sock" },
      mounts = { { type = "bind", source = dir, target = "/run/foundry", read_only = true } },
    })
    local function curl(url)
      return c:exec{ "curl", "-sS", "-m", "5", "-x", "http://127.0.0.1:3128", url, timeout = 20000 }
    end
    local r = curl("http://upstream.test/some/path")
    expect(r.status):equals(0)
    expect(r.stdout):equals("proxy saw: GET http://upstream.test/some/path HTTP/1.1\n")
    -- the container has no other way out: no resolver, no route
    r = c:exec{ "curl", "-sS", "-m", "3", "--noproxy", "*", "http://upstream.test/", timeout = 20000 }
    expect(r.status).never:equals(0)
    -- the server goes away: a proxy failure, and one line in the container's log
    srv.close()
    fs.rm(sock)
    r = curl("http://upstream.test/")
    expect(r.status).never:equals(0)
    expect(c:logs().stderr):contains("proxy socket /run/foundry/proxy.sock: No such file or directory")
    -- and comes back at the same path: the same bridge works, no restart
    srv = serve()
    r = curl("http://upstream.test/again")
    expect(r.status):equals(0)
    expect(r.stdout):contains("GET http://upstream.test/again")
    c:remove{ force = true }
    srv.close()
  end)

  it("signs hook events inside the container with the mounted token", { timeout = 60000 }, function()
    local sock = dir .. "/proxy.sock"
    local token = require("foundry.crypto").token(32)
    fs.write(dir .. "/hook-token", token .. "\n", { mode = tonumber("444", 8) })
    local reqs = {}
    local srv = net.unix_server(sock, function(s)
      reqs[#reqs + 1] = net.read_http_request(s)
      s:write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    end)
    fs.chmod(sock, tonumber("666", 8))
    local c = sandbox(nil, {
      env = { FOUNDRY_PROXY_SOCKET = "/run/foundry/proxy.sock" },
      mounts = { { type = "bind", source = dir, target = "/run/foundry", read_only = true } },
    })
    local r = c:exec{ SHIM_IN, "notify", "post-tool-use",
      stdin = '{"tool_name":"Write","tool_input":{"file_path":"/workspace/x"}}', timeout = 20000 }
    expect(r.status):equals(0)
    expect(r.stderr):equals("")
    expect(#reqs):equals(1)
    local want = foundry.exec{ "openssl", "dgst", "-sha256", "-hmac", token, "-r", stdin = reqs[1].body, check = true }
    expect(reqs[1].headers["x-foundry-token"]):equals(want.stdout:match("^(%x+)"))
    expect(json.decode(reqs[1].body).payload.tool_name):equals("Write")
    c:remove{ force = true }
    srv.close()
  end)
end)

describe("foundry-shim with the real daemon and proxy engine", function()
  local home, saved_home, client, state

  before_each(function()
    if not pcall(require, "foundry.proxy") then skip("no proxy engine in this build") end
    client = require "foundry.daemon_client"
    state = require "foundry.state"
    saved_home = os.getenv("FOUNDRY_HOME")
    home = fs.mkdtemp("/tmp/fsd-XXXXXX")
    uv.os_setenv("FOUNDRY_HOME", home)
  end)
  after_each(function()
    if not home then return end
    pcall(client.stop, { timeout = 2000 })
    state.close()
    if saved_home then uv.os_setenv("FOUNDRY_HOME", saved_home) else uv.os_unsetenv("FOUNDRY_HOME") end
    fs.rm(home)
    home = nil
  end)

  it("egress survives kill -9 of the daemon; hook events from inside are counted", { timeout = 120000 }, function()
    -- an upstream on the host's loopback, reachable only through the proxy's policy
    local port = net.free_port()
    local up = uv.new_tcp()
    assert(up:bind("127.0.0.1", port))
    up:listen(64, function()
      local cl = uv.new_tcp()
      up:accept(cl)
      cl:read_start(function(_, d)
        if not d then cl:close() return end
        if d:find("\r\n\r\n", 1, true) then
          cl:write("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nupstream\n",
            function() if not cl:is_closing() then cl:close() end end)
        end
      end)
    end)
    local token = require("foundry.crypto").token(32)
    state.sandboxes.insert{ name = "shimtest", state = "running", hook_token = token, network = "allowlist",
      data = { policy = { mode = "allowlist", allow = { "upstream.test" }, addresses = { "127.0.0.1/32" },
        overrides = { ["upstream.test"] = { address = "127.0.0.1", port = port } } } } }
    local pid = client.ensure().pid
    local run = home .. "/run/sb/shimtest"
    expect(fs.exists(run .. "/proxy.sock")):is(true)
    local c = sandbox(nil, {
      env = { FOUNDRY_PROXY_SOCKET = "/run/foundry/proxy.sock", HTTP_PROXY = "http://127.0.0.1:3128",
              http_proxy = "http://127.0.0.1:3128" },
      mounts = { { type = "bind", source = run, target = "/run/foundry", read_only = true } },
    })
    local function get()
      return c:exec{ "curl", "-sS", "-m", "5", "http://upstream.test/", timeout = 20000 }
    end
    local r = get()
    expect(r.stdout):equals("upstream\n")
    r = c:exec{ "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://elsewhere.test/",
      timeout = 20000 }
    expect(r.stdout):equals("403")

    uv.kill(pid, "sigkill")
    expect(net.eventually(function() return uv.kill(pid, 0) ~= 0 end, 5000)):truthy()
    expect(get().status).never:equals(0)
    expect(client.ensure().pid).never:equals(pid)
    expect(get().stdout):equals("upstream\n")

    r = c:exec{ SHIM_IN, "notify", "post-tool-use", stdin = '{"tool_name":"Edit"}', timeout = 20000 }
    expect(r.stderr):equals("")
    expect(net.eventually(function()
      local st = client.status()
      return st.sandboxes[1] and st.sandboxes[1].events == 1
    end, 5000)):truthy()
    c:remove{ force = true }
    up:close()
  end)
end)
