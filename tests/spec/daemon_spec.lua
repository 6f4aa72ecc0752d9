-- The daemon: the CLI (start, stop, status, run), the single-instance lock, the control
-- socket and its protocol, on-demand start, restart restoring every registration with
-- the real proxy engine (egress through the shim's bridge comes back), hook events
-- (signed by the shim, checked, replay refused) and hook failures reported.
local uv = require "luv"
local net = dofile("tests/lib/net.lua")
local fs = foundry.fs
local json = foundry.json

local BUILD = os.getenv("FOUNDRY_BUILD") or "build"
local BIN = BUILD .. "/foundry"
local SHIM = BUILD .. "/foundry-shim"

local H = dofile("tests/lib/home.lua")
local home, leave
local client, daemon, state, hooks

before_all(function()
  client = require "foundry.daemon_client"
  daemon = require "foundry.daemon"
  state = require "foundry.state"
  hooks = require "foundry.hooks"
end)

before_each(function()
  home, leave = H.enter("/tmp/fd-XXXXXX") -- short: socket paths must fit in 108 bytes
end)

after_each(function()
  pcall(client.stop, { timeout = 2000 })
  net.cleanup()
  leave()
end)

local function foundry_cmd(...)
  local argv = { BIN, ... }
  argv.timeout = 20000
  return foundry.exec(argv)
end

local function mode(path)
  local st = fs.lstat(path)
  return st and string.format("%o", st.mode & tonumber("777", 8))
end

local function pid_alive(pid)
  return uv.kill(pid, 0) == 0
end

-- A plain HTTP upstream on 127.0.0.1 that answers every request with `body`.
local function upstream(body)
  local port = net.free_port()
  local srv = uv.new_tcp()
  assert(srv:bind("127.0.0.1", port))
  local count = 0
  srv:listen(64, function()
    local c = uv.new_tcp()
    srv:accept(c)
    local buf = ""
    c:read_start(function(_, d)
      if not d then c:close() return end
      buf = buf .. d
      if buf:find("\r\n\r\n", 1, true) then
        count = count + 1
        c:write("HTTP/1.1 200 OK\r\nContent-Length: " .. #body .. "\r\nConnection: close\r\n\r\n" .. body,
          function() if not c:is_closing() then c:close() end end)
      end
    end)
  end)
  return { port = port, close = function() srv:close() end, count = function() return count end }
end

-- A sandbox row whose policy lets it reach `upstream.test`, mapped to the local upstream.
local function add_sandbox(name, port, token)
  return state.sandboxes.insert{
    name = name, state = "running", hook_token = token or ("token-" .. name .. "-0123456789abcdef"),
    data = { policy = {
      mode = "allowlist", allow = { "upstream.test" }, addresses = { "127.0.0.1/32" },
      overrides = { ["upstream.test"] = { address = "127.0.0.1", port = port } },
    } },
  }
end

-- GET http://upstream.test/ through a stream connected to a proxy (socket or bridge).
local function proxied_get(s)
  s:write("GET http://upstream.test/ HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n")
  local r = s:read_all(5000)
  s:close()
  return r
end

describe("foundry daemon (the command)", function()
  it("starts in the background, answers, and reports its status", function()
    local r = foundry_cmd("daemon", "status")
    expect(r.status):equals(3)
    expect(r.stdout):matches("not running")
    r = foundry_cmd("daemon", "start")
    expect(r.status):equals(0)
    expect(r.stdout):matches("^foundry daemon started %(pid %d+%)")
    r = foundry_cmd("daemon", "status", "--json")
    expect(r.status):equals(0)
    local st = json.decode(r.stdout)
    st.pid = math.tointeger(st.pid)
    expect(st.running):is(true)
    expect(pid_alive(st.pid)):is(true)
    expect(st.socket):equals(home .. "/run/control.sock")
    expect(st.sandboxes):equals({})
    expect(r.stdout):contains('"sandboxes":[]')
    expect(st.hardened):truthy()
    -- the control socket is the owner's only
    expect(mode(home .. "/run")):equals("700")
    expect(mode(home .. "/run/control.sock")):equals("600")
    expect(fs.read(home .. "/run/daemon.pid")):equals(st.pid .. "\n")
    expect(fs.read(home .. "/state/daemon.log")):matches("foundry daemon .* started %(pid " .. st.pid .. "%)")
    -- start again: nothing to do
    r = foundry_cmd("daemon", "start", "--json")
    expect(json.decode(r.stdout).started):is(false)
    expect(json.decode(r.stdout).pid):equals(st.pid)
  end)

  it("refuses a second daemon, naming the first", function()
    expect(foundry_cmd("daemon", "start").status):equals(0)
    local pid = client.ping().pid
    local r = foundry_cmd("daemon", "run")
    expect(r.status):equals(1)
    expect(r.stderr):contains("a foundry daemon is already running (pid " .. pid .. ")")
    expect(r.stderr):contains("hint:")
    expect(client.ping().pid):equals(pid)
  end)

  it("stops, leaving no socket or pid file; stop when none runs is not an error", function()
    expect(foundry_cmd("daemon", "start").status):equals(0)
    local pid = client.ping().pid
    local r = foundry_cmd("daemon", "stop")
    expect(r.status):equals(0)
    expect(r.stdout):equals("foundry daemon stopped (pid " .. pid .. ")\n")
    expect(net.eventually(function() return not pid_alive(pid) end, 3000)):truthy()
    expect(fs.exists(home .. "/run/control.sock")):is(false)
    expect(fs.exists(home .. "/run/daemon.pid")):is(false)
    r = foundry_cmd("daemon", "stop", "--json")
    expect(r.status):equals(0)
    expect(json.decode(r.stdout).stopped):is(false)
  end)

  it("stops on SIGTERM as on the shutdown request", function()
    local p = net.start({ BIN, "daemon", "run" })
    expect(net.eventually(function() return client.ping(500) end, 5000)):truthy()
    p:kill("sigterm")
    expect(p:wait(5000)):equals(0)
    expect(p:stderr()):matches("stopping %(signal sigterm%)")
    expect(fs.exists(home .. "/run/control.sock")):is(false)
  end)

  it("comes back after kill -9: the lock dies with the process, the stale socket is replaced", function()
    expect(foundry_cmd("daemon", "start").status):equals(0)
    local pid = client.ping().pid
    uv.kill(pid, "sigkill")
    expect(net.eventually(function() return not pid_alive(pid) end, 3000)):truthy()
    expect(fs.exists(home .. "/run/control.sock")):is(true) -- left behind
    local err = expect(function() client.call("ping") end):fails("daemon.unreachable")
    expect(err.hint):matches("foundry daemon start")
    expect(client.status()):is_nil()
    local r = foundry_cmd("daemon", "start")
    expect(r.status):equals(0)
    expect(client.ping().pid).never:equals(pid)
  end)

  it("restart gives a new daemon", function()
    expect(foundry_cmd("daemon", "start").status):equals(0)
    local pid = client.ping().pid
    local r = foundry_cmd("daemon", "restart", "--json")
    expect(r.status):equals(0)
    local res = json.decode(r.stdout)
    expect(res.previous_pid):equals(pid)
    expect(res.pid).never:equals(pid)
    expect(client.ping().pid):equals(res.pid)
  end)

  it("rejects an unknown subcommand with a suggestion", function()
    local r = foundry_cmd("daemon", "stpo")
    expect(r.status):equals(2)
    expect(r.stderr):contains("did you mean 'stop'?")
  end)
end)

describe("daemon_client", function()
  it("ensure() starts a daemon on demand, once", function()
    expect(client.ping()):is_nil()
    local r = client.ensure()
    expect(r.pid):gt(0)
    expect(client.ensure().pid):equals(r.pid)
    expect(client.call("ping").pid):equals(r.pid)
  end)

  it("raises the daemon's own error objects", function()
    client.ensure()
    local err = expect(function() client.call("register", { sandbox = "nope" }) end):fails("daemon.not_found")
    expect(err.message):equals("no sandbox named 'nope'")
    expect(err.hint):matches("foundry ls")
    expect(function() client.call("no_such_op") end):fails("daemon.bad_request")
  end)

  it("answers a malformed line with an error, and closes an endless one", function()
    client.ensure()
    local s = net.unix_connect(home .. "/run/control.sock")
    s:write("this is not json\n")
    local resp = json.decode(s:read_until("\n", 3000))
    expect(resp.ok):is(false)
    expect(resp.error.code):equals("daemon.bad_request")
    -- over a megabyte without a newline: the daemon hangs up
    local chunk = string.rep("x", 65536)
    for _ = 1, 20 do if not pcall(s.write, s, chunk) then break end end
    expect(s:read_all(3000)):equals("")
    s:close()
    expect(client.ping()):truthy()
  end)
end)

describe("daemon and the proxy engine", function()
  before_each(function()
    local ok = pcall(require, "foundry.proxy")
    if not ok then skip("no proxy engine in this build") end
  end)

  it("registers and unregisters a sandbox's socket on request", function()
    local up = upstream("hello")
    client.ensure()
    add_sandbox("web", up.port)
    local res = client.call("register", { sandbox = "web" })
    expect(res.socket):equals(home .. "/run/sb/web/proxy.sock")
    expect(mode(home .. "/run/sb/web")):equals("755")
    expect(mode(home .. "/run/sb/web/hook-token")):equals("444")
    expect(fs.read(home .. "/run/sb/web/hook-token")):equals("token-web-0123456789abcdef\n")
    expect(proxied_get(net.unix_connect(res.socket))):matches("\r\n\r\nhello$")
    local st = client.status()
    expect(#st.sandboxes):equals(1)
    expect(st.sandboxes[1].name):equals("web")
    expect(st.proxy.ready):is(true)
    expect(client.call("unregister", { sandbox = "web" }).was_registered):is(true)
    expect(fs.exists(res.socket)):is(false)
    expect(fs.is_dir(home .. "/run/sb/web")):is(true) -- the bind-mounted directory stays
    expect(#client.status().sandboxes):equals(0)
    up.close()
  end)

  it("restores every registration after kill -9: egress through the shim's bridge comes back",
    { timeout = 30000 }, function()
    if not fs.exists(SHIM) then skip(SHIM .. " is not built") end
    local up = upstream("through the bridge")
    add_sandbox("alpha", up.port)
    add_sandbox("beta", up.port)
    state.sandboxes.insert{ name = "gone", state = "stopped" }
    expect(foundry_cmd("daemon", "start").status):equals(0)
    local st = client.status()
    local names = {}
    for _, sb in ipairs(st.sandboxes) do names[#names + 1] = sb.name end
    expect(names):equals({ "alpha", "beta" })
    -- the container's side: the shim's bridge to alpha's socket
    local port = net.free_port()
    net.start({ SHIM, "init" }, { env = {
      FOUNDRY_PROXY_SOCKET = home .. "/run/sb/alpha/proxy.sock", FOUNDRY_PROXY_LISTEN = "127.0.0.1:" .. port } })
    expect(net.eventually(function() return net.tcp_listening(port) end, 3000)):truthy()
    expect(proxied_get(net.tcp_connect("127.0.0.1", port))):matches("through the bridge$")
    -- the daemon dies: no egress
    uv.kill(st.pid, "sigkill")
    expect(net.eventually(function() return not pid_alive(st.pid) end, 3000)):truthy()
    expect(proxied_get(net.tcp_connect("127.0.0.1", port))):equals("")
    -- a new daemon re-creates the sockets; the same bridge works again, no restart
    expect(client.ensure().pid).never:equals(st.pid)
    expect(proxied_get(net.tcp_connect("127.0.0.1", port))):matches("through the bridge$")
    expect(proxied_get(net.unix_connect(home .. "/run/sb/beta/proxy.sock"))):matches("through the bridge$")
    expect(fs.exists(home .. "/run/sb/gone/proxy.sock")):is(false)
    up.close()
  end)

  it("applies a changed policy on reload without touching the socket", function()
    local up = upstream("ok")
    client.ensure()
    add_sandbox("web", up.port)
    client.call("register", { sandbox = "web" })
    local sock = home .. "/run/sb/web/proxy.sock"
    expect(proxied_get(net.unix_connect(sock))):matches("ok$")
    local ino = fs.stat(sock).ino
    state.sandboxes.update("web", { data = { policy = { mode = "allowlist", allow = { "other.test" } } } })
    expect(client.call("reload", { sandbox = "web" }).reloaded):equals({ "web" })
    expect(proxied_get(net.unix_connect(sock))):matches("^HTTP/1.1 403")
    expect(fs.stat(sock).ino):equals(ino)
    up.close()
  end)

  it("reloads a sandbox when its policy file changes; an edit that does not load keeps the old one", { timeout = 30000 }, function()
    local up = upstream("ok")
    client.ensure()
    local file = home .. "/policy.lua"
    local function write_policy(src)
      fs.write(file .. ".tmp", src)
      assert(uv.fs_rename(file .. ".tmp", file)) -- as editors save
    end
    local function allowing(host)
      return ("return { allow = { %q }, addresses = { '127.0.0.1/32' },\n" ..
        "  overrides = { ['upstream.test'] = { address = '127.0.0.1', port = %d } } }\n"):format(host, up.port)
    end
    write_policy(allowing("upstream.test"))
    state.sandboxes.insert{ name = "web", state = "running", hook_token = "token-web-0123456789abcdef",
      data = { policy = file } }
    client.call("register", { sandbox = "web" })
    local sock = home .. "/run/sb/web/proxy.sock"
    local function until_status(pattern)
      local r
      for _ = 1, 100 do
        r = proxied_get(net.unix_connect(sock))
        if r:match(pattern) then return r end
        foundry.sleep(50)
      end
      return r
    end
    expect(proxied_get(net.unix_connect(sock))):matches("^HTTP/1.1 200")
    expect(client.status().sandboxes[1].policy_files):equals({ file })

    write_policy(allowing("other.test"))
    expect(until_status("^HTTP/1.1 403")):matches("^HTTP/1.1 403")

    write_policy("return { allow = { 'upstream.test' }\n")
    local st
    for _ = 1, 100 do
      st = client.status().sandboxes[1]
      if st.policy_error then break end
      foundry.sleep(50)
    end
    expect(st.policy_error):matches("policy%.lua:%d")
    expect(proxied_get(net.unix_connect(sock))):matches("^HTTP/1.1 403") -- the previous policy
    -- the command says so too, and fails
    local r = client.call("reload", { all = true })
    expect(#r.failed):equals(1)
    expect(r.failed[1].sandbox):equals("web")
    local cmd = foundry_cmd("policy", "reload")
    expect(cmd.status):equals(1)
    expect(cmd.stderr):matches("web keeps its previous policy: .*policy%.lua:%d")

    write_policy(allowing("upstream.test"))
    expect(until_status("^HTTP/1.1 200")):matches("^HTTP/1.1 200")
    expect(client.status().sandboxes[1].policy_error):is_nil()

    -- a policy that is a symbolic link (a dotfile manager's): editing its target counts
    fs.mkdir(home .. "/dotfiles")
    local target = home .. "/dotfiles/policy.lua"
    fs.write(target, allowing("upstream.test"))
    assert(uv.fs_unlink(file))
    assert(uv.fs_symlink(target, file))
    client.call("reload", { sandbox = "web" }) -- the link is new: watched from now on
    expect(proxied_get(net.unix_connect(sock))):matches("^HTTP/1.1 200")
    fs.write(target .. ".tmp", allowing("other.test"))
    assert(uv.fs_rename(target .. ".tmp", target))
    expect(until_status("^HTTP/1.1 403")):matches("^HTTP/1.1 403")
    expect(fs.read(client.status().log)):matches("policy file changed %(" .. file:gsub("%p", "%%%0") .. "%): reloaded web")
    up.close()
  end)

  describe("hook events", function()
    local TOKEN = "hook-token-for-events-0123456789"

    local function notify(sock, payload)
      return foundry.exec{ SHIM, "notify", "post-tool-use", stdin = payload or "{}",
        env = { FOUNDRY_PROXY_SOCKET = sock, FOUNDRY_HOOK_TOKEN_FILE = home .. "/run/sb/web/hook-token" } }
    end

    local function post(sock, body, mac)
      local s = net.unix_connect(sock)
      s:write("POST /_foundry/hook HTTP/1.1\r\nHost: 127.0.0.1:3128\r\nContent-Type: application/json\r\n" ..
        "Content-Length: " .. #body .. "\r\nX-Foundry-Token: " .. mac .. "\r\nConnection: close\r\n\r\n" .. body)
      local r = s:read_all(3000)
      s:close()
      return r:match("^HTTP/1.1 (%d+)")
    end

    local function sign(body, key)
      local crypto = require "foundry.crypto"
      return crypto.hex(crypto.hmac_sha256(key or TOKEN, body))
    end

    local function events()
      local st = client.status()
      return st.sandboxes[1] and st.sandboxes[1].events or 0
    end

    before_each(function()
      if not fs.exists(SHIM) then skip(SHIM .. " is not built") end
    end)

    it("counts events the shim signs; refuses forged, replayed and stale ones", { timeout = 30000 }, function()
      local up = upstream("x")
      client.ensure()
      add_sandbox("web", up.port, TOKEN)
      local sock = client.call("register", { sandbox = "web" }).socket
      local r = notify(sock, '{"tool_name":"Edit"}')
      expect(r.stderr):equals("")
      expect(net.eventually(function() return events() == 1 end, 3000)):truthy()
      expect(client.status().sandboxes[1].last_event):equals("post-tool-use")

      -- forged: signed with another key
      local body = json.encode({ event = "post-tool-use", payload = {}, ts = os.time(), nonce = string.rep("a", 32) })
      expect(post(sock, body, sign(body, "not-the-token"))):equals("403")
      -- replayed: a correctly signed body sent twice counts once
      expect(post(sock, body, sign(body))):equals("200")
      expect(post(sock, body, sign(body))):equals("200")
      -- stale: signed, but an hour old
      local old = json.encode({ event = "post-tool-use", payload = {}, ts = os.time() - 3600,
        nonce = string.rep("b", 32) })
      expect(post(sock, old, sign(old))):equals("200")
      foundry.sleep(300)
      expect(events()):equals(2)
      local log = fs.read(home .. "/state/daemon.log")
      expect(log):contains("refused: hook event replayed")
      expect(log):contains("refused: hook event is 3600 s away")
      up.close()
    end)
  end)
end)

describe("daemon (in this process)", function()
  local d
  after_each(function()
    if d then d:stop(); d = nil end
  end)

  it("makes its runtime directory the owner's only, even when it was not", function()
    fs.mkdir(home .. "/run", tonumber("755", 8))
    fs.chmod(home .. "/run", tonumber("755", 8))
    d = daemon.new({ log = function() end }):start()
    expect(mode(home .. "/run")):equals("700")
    expect(mode(home .. "/run/control.sock")):equals("600")
  end)

  it("refuses to start while another holds the lock", function()
    d = daemon.new({ log = function() end }):start()
    local err = expect(function() daemon.new({ log = function() end }):start() end):fails("daemon.running")
    expect(err.message):contains("(pid " .. math.tointeger(uv.os_getpid()) .. ")")
  end)

  it("refuses socket paths that do not fit in sockaddr_un", function()
    local deep = home .. "/" .. string.rep("d", 100)
    uv.os_setenv("FOUNDRY_HOME", deep)
    expect(function() daemon.new({ log = function() end }):start() end):fails("daemon.path_too_long")
    uv.os_setenv("FOUNDRY_HOME", home)
  end)

  it("reports a failing hook and goes on; the next handler still runs", function()
    local lines = {}
    d = daemon.new({ log = function(l) lines[#lines + 1] = l end }):start()
    state.sandboxes.insert{ name = "hk", state = "running", hook_token = "t0123456789" }
    -- registered without the engine: the hook path does not need it
    d.sandboxes.hk = { row = state.sandboxes.get("hk"), socket = "-", events = 0 }
    hooks.attach(d.sandboxes.hk.row)
    local ran = false
    hooks.on("hk", "post-tool-use", function() error("boom in a hook") end)
    hooks.on("hk", "post-tool-use", function() ran = true end)
    local nonce = require("foundry.crypto").token(16)
    local status = d:on_event("hk", { event = "post-tool-use", ts = os.time(), nonce = nonce })
    expect(status):equals(204)
    expect(net.eventually(function() return ran and #state.logs.list{ sandbox = "hk" } > 0 end, 5000)):is(true)
    expect(table.concat(lines, "\n")):contains("boom in a hook")
    local logs = state.logs.list{ sandbox = "hk" }
    expect(#logs):equals(1)
    expect(logs[1].stream):equals("hooks")
    expect(logs[1].text):contains("boom in a hook")
    expect(d.running):is(true)
    hooks.detach("hk")
  end)

  it("redacts secrets it serves from its log", function()
    local lines = {}
    uv.os_setenv("FOUNDRY_TEST_SECRET", "s3cr3t-value-0123456789abcdef")
    d = daemon.new({ log = function(l) lines[#lines + 1] = l end }):start()
    expect(d:secret("FOUNDRY_TEST_SECRET")):equals("s3cr3t-value-0123456789abcdef")
    d:log("info", "upstream said: %s and ghp_%s", "s3cr3t-value-0123456789abcdef", string.rep("A", 36))
    uv.os_unsetenv("FOUNDRY_TEST_SECRET")
    local last = lines[#lines]
    expect(last).never:contains("s3cr3t-value")
    expect(last):contains("[REDACTED:FOUNDRY_TEST_SECRET]")
    expect(last).never:contains("ghp_AAAA")
  end)
end)
