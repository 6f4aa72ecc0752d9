-- foundry-shim on the host: init (exit status, signals, reaping, idle mode), the bridge
-- from TCP to the proxy's Unix socket, and notify's signed hook events. The same binary
-- runs as PID 1 inside real containers in tests/integration/shim_spec.lua.
local net = dofile("tests/lib/net.lua")
local fs = foundry.fs
local json = foundry.json

local SHIM = (os.getenv("FOUNDRY_BUILD") or "build") .. "/foundry-shim"

local dir
before_all(function()
  if not fs.exists(SHIM) then skip(SHIM .. " is not built (make)") end
end)
before_each(function()
  -- short: a Unix socket path must fit in 108 bytes
  dir = fs.mkdtemp("/tmp/fshim-XXXXXX")
end)
after_each(function()
  net.cleanup()
  if dir then fs.rm(dir) end
end)

local function shim(args, opts)
  local argv = { SHIM }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv.env, argv.stdin, argv.timeout = opts and opts.env, opts and opts.stdin, 10000
  return foundry.exec(argv)
end

local function read(path)
  return fs.exists(path) and fs.read(path) or ""
end

-- The processes whose parent is `pid`: { {pid=, state=, comm=}, ... }.
local function children_of(pid)
  local out = {}
  for _, e in ipairs(fs.list("/proc")) do
    if e.name:match("^%d+$") then
      local stat = fs.sync.read("/proc/" .. e.name .. "/stat") or ""
      -- pid (comm) state ppid ...; comm may hold spaces and parentheses
      local comm, state, ppid = stat:match("^%d+ %((.*)%) (%S) (%d+)")
      if ppid and tonumber(ppid) == pid then
        out[#out + 1] = { pid = tonumber(e.name), state = state, comm = comm }
      end
    end
  end
  return out
end

describe("foundry-shim init", function()
  it("exits with the command's status", function()
    expect(shim({ "init", "--", "sh", "-c", "exit 0" }).status):equals(0)
    expect(shim({ "init", "--", "sh", "-c", "exit 7" }).status):equals(7)
    expect(shim({ "init", "true" }).status):equals(0)
  end)

  it("exits with 128 + the signal when the command is killed", function()
    expect(shim({ "init", "--", "sh", "-c", "kill -KILL $$" }).status):equals(137)
    expect(shim({ "init", "--", "sh", "-c", "kill -SEGV $$" }).status):equals(139)
  end)

  it("exits 127 when the command does not exist, and says so", function()
    local r = shim({ "init", "--", "/nonexistent/cmd" })
    expect(r.status):equals(127)
    expect(r.stderr):matches("cannot run /nonexistent/cmd")
  end)

  it("refuses an unknown option with status 2", function()
    local r = shim({ "init", "--bogus" })
    expect(r.status):equals(2)
    expect(r.stderr):matches("unknown option")
  end)

  it("forwards signals to the command's whole process group", function()
    local log = dir .. "/log"
    -- The child and a grandchild both record what they receive; TERM ends both.
    local script = [[
      sh -c 'trap "" USR1 HUP WINCH; trap "echo grandchild-term >> $0; exit 0" TERM
             touch $0.gc; while :; do sleep 0.02; done' "$1" &
      trap 'echo usr1 >> "$1"' USR1
      trap 'echo hup >> "$1"' HUP
      trap 'echo winch >> "$1"' WINCH
      trap 'echo term >> "$1"; wait; exit 42' TERM
      touch "$1.ready"
      while :; do sleep 0.02; done
    ]]
    local p = net.start({ SHIM, "init", "--", "sh", "-c", script, "sh", log })
    expect(net.eventually(function() return fs.exists(log .. ".ready") and fs.exists(log .. ".gc") end)):truthy()
    for _, sig in ipairs({ "sigusr1", "sighup", "sigwinch" }) do
      p:kill(sig)
      foundry.sleep(80)
    end
    expect(net.eventually(function() return read(log):find("winch") end)):truthy()
    p:kill("sigterm")
    local status = p:wait(5000)
    expect(status):equals(42)
    local got = read(log)
    for _, want in ipairs({ "usr1", "hup", "winch", "term", "grandchild-term" }) do
      expect(got):contains(want)
    end
  end)

  it("reaps orphaned descendants (as a subreaper outside a PID namespace)", function()
    -- Each (sleep &) is orphaned at once; without a reaper above it, it would be
    -- reparented elsewhere, and once dead it would linger as a zombie of the shim.
    local p = net.start({ SHIM, "init", "--", "sh", "-c",
      "for i in 1 2 3 4 5; do (sleep 0.3 &); done; sleep 2" })
    local orphans = net.eventually(function()
      local n = 0
      for _, c in ipairs(children_of(p.pid)) do if c.comm == "sleep" then n = n + 1 end end
      return n == 5 and n
    end, 2000)
    expect(orphans):equals(5)
    foundry.sleep(600)
    local zombies = {}
    for _, c in ipairs(children_of(p.pid)) do
      if c.state == "Z" then zombies[#zombies + 1] = c.comm end
    end
    expect(zombies):equals({})
    p:kill("sigterm")
    expect(p:wait(5000)):equals(143)
  end)

  it("stays up without a command, ignores SIGHUP, and exits 0 at once on SIGTERM", function()
    local p = net.start({ SHIM, "init" })
    foundry.sleep(100)
    p:kill("sighup")
    foundry.sleep(100)
    expect(p.done):is(false)
    local t0 = net.now()
    p:kill("sigterm")
    expect(p:wait(2000)):equals(0)
    expect(net.now() - t0):lt(500)
  end)
end)

describe("foundry-shim bridge", function()
  local port, sock
  before_each(function()
    port = net.free_port()
    sock = dir .. "/proxy.sock"
  end)

  local function bridge()
    local p = net.start({ SHIM, "init" }, { env = {
      FOUNDRY_PROXY_SOCKET = sock, FOUNDRY_PROXY_LISTEN = "127.0.0.1:" .. port } })
    -- listening before anything else happens (found without connecting, which the
    -- bridge would relay to the test's server)
    expect(net.eventually(function() return net.tcp_listening(port) end, 3000)):truthy()
    return p
  end

  -- A server that reads to the end, then answers with what it got and closes: only a
  -- bridge that passes the client's half-close on lets this finish.
  local function counting_server()
    return net.unix_server(sock, function(s)
      local data = s:read_all()
      s:write(string.format("got %d bytes, sum %d\n", #data, #data > 0 and data:byte(1) + data:byte(-1) or 0))
      s:write(data:sub(1, 1024))
    end)
  end

  -- What the server answered; "" when the bridge closed the connection (writing to a
  -- connection the bridge already closed may fail: that is the same answer).
  local function roundtrip(data)
    local c = net.tcp_connect("127.0.0.1", port)
    if not (pcall(c.write, c, data) and pcall(c.shutdown, c)) then c:close() return "" end
    local r = c:read_all()
    c:close()
    return r
  end

  it("relays both ways and passes half-close through", function()
    local srv = counting_server()
    local p = bridge()
    local data = string.rep("0123456789abcdef", 200000) -- 3.2 MB
    local r = roundtrip(data)
    expect(r:sub(1, 40)):matches("^got 3200000 bytes, sum " .. (("0"):byte() + ("f"):byte()) .. "\n")
    expect(r:sub(-1024)):equals(data:sub(1, 1024))
    p:kill("sigterm"); p:wait()
    srv.close()
  end)

  it("carries 300 concurrent connections", { timeout = 60000 }, function()
    local srv = counting_server()
    local p = bridge()
    local fns = {}
    for i = 1, 300 do
      fns[i] = function()
        local payload = string.rep(string.char(65 + i % 26), 1000 + i)
        return roundtrip(payload):match("^got (%d+) bytes")
      end
    end
    local res = foundry.parallel(fns)
    for i = 1, 300 do expect(tonumber(res[i])):equals(1000 + i) end
    expect(srv.accepted):equals(300)
    p:kill("sigterm"); p:wait()
    srv.close()
  end)

  it("streams: the server's first bytes arrive before the server is done", function()
    local go
    local srv = net.unix_server(sock, function(s)
      local w = require("foundry._task").wait("test.go", nil, 5000)
      go = w
      s:write("first\n")
      w:await()
      s:write("second\n")
    end)
    local p = bridge()
    local c = net.tcp_connect("127.0.0.1", port)
    expect(c:read(3000)):equals("first\n")
    go:resolve()
    expect(c:read(3000)):equals("second\n")
    expect(c:read(3000)):is_nil()
    c:close()
    p:kill("sigterm"); p:wait()
    srv.close()
  end)

  it("takes the socket and the address from --proxy-socket and --proxy-listen too", function()
    local srv = counting_server()
    local p = net.start({ SHIM, "init", "--proxy-socket", sock, "--proxy-listen", "127.0.0.1:" .. port })
    expect(net.eventually(function() return net.tcp_listening(port) end, 3000)):truthy()
    expect(roundtrip("12345")):matches("^got 5 bytes")
    p:kill("sigterm"); p:wait()
    srv.close()
  end)

  it("closes the client when the socket is missing, logging at most once a second", function()
    local p = bridge()
    for _ = 1, 5 do
      local c = net.tcp_connect("127.0.0.1", port)
      c:write("GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n")
      expect(c:read_all(3000)):equals("")
      c:close()
    end
    p:kill("sigterm"); p:wait()
    local lines = {}
    for l in p:stderr():gmatch("[^\n]+") do lines[#lines + 1] = l end
    expect(#lines):equals(1)
    expect(lines[1]):matches("proxy socket .*proxy%.sock: No such file or directory")
  end)

  it("reconnects per connection: a re-created socket works without restarting the shim", function()
    local srv = counting_server()
    local p = bridge()
    expect(roundtrip("abc")):matches("^got 3 bytes")
    srv.close()
    fs.rm(sock) -- libuv unlinks it on close already; a crashed daemon would leave it
    expect(roundtrip("abc")):equals("")
    srv = counting_server()
    expect(roundtrip("abcd")):matches("^got 4 bytes")
    p:kill("sigterm"); p:wait()
    srv.close()
  end)
end)

describe("foundry-shim notify", function()
  local sock, tokfile
  local TOKEN = "hook-token-" .. string.rep("x", 40)
  before_each(function()
    sock = dir .. "/proxy.sock"
    tokfile = dir .. "/hook-token"
    fs.write(tokfile, TOKEN .. "\n")
  end)

  local function env()
    return { FOUNDRY_PROXY_SOCKET = sock, FOUNDRY_HOOK_TOKEN_FILE = tokfile }
  end

  -- Serve one request, answer `status`, and hand the request to the test.
  local function hook_server(status, requests)
    return net.unix_server(sock, function(s)
      local req = net.read_http_request(s)
      requests[#requests + 1] = req
      s:write("HTTP/1.1 " .. status .. " X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    end)
  end

  local function openssl_hmac(key, body)
    local r = foundry.exec{ "openssl", "dgst", "-sha256", "-hmac", key, "-r", stdin = body, check = true }
    return r.stdout:match("^(%x+)")
  end

  it("posts the event, signed with HMAC-SHA256 of the body under the token (as OpenSSL computes it)", function()
    local reqs = {}
    local srv = hook_server(204, reqs)
    local payload = '{"session_id":"abc","tool_name":"Edit","tool_input":{"file_path":"/workspace/a.txt"}}'
    local r = shim({ "notify", "post-tool-use" }, { env = env(), stdin = payload .. "\n" })
    srv.close()
    expect(r.status):equals(0)
    expect(r.stderr):equals("")
    expect(#reqs):equals(1)
    local req = reqs[1]
    expect(req.line):equals("POST /_foundry/hook HTTP/1.1")
    expect(req.headers["content-type"]):equals("application/json")
    expect(req.headers["x-foundry-token"]):equals(openssl_hmac(TOKEN, req.body))
    local ev = json.decode(req.body)
    expect(ev.event):equals("post-tool-use")
    expect(ev.payload.tool_name):equals("Edit")
    expect(ev.payload.tool_input.file_path):equals("/workspace/a.txt")
    expect(math.abs(ev.ts - os.time())):lt(5)
    expect(ev.nonce):matches("^%x+$")
    expect(#ev.nonce):equals(32)
  end)

  it("uses a fresh nonce every time", function()
    local reqs = {}
    local srv = net.unix_server(sock, function(s)
      reqs[#reqs + 1] = net.read_http_request(s)
      s:write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    end)
    shim({ "notify", "stop" }, { env = env(), stdin = "{}" })
    shim({ "notify", "stop" }, { env = env(), stdin = "{}" })
    srv.close()
    expect(#reqs):equals(2)
    expect(json.decode(reqs[1].body).nonce).never:equals(json.decode(reqs[2].body).nonce)
  end)

  it("sends stdin that is not JSON as a string, and no stdin as null", function()
    local reqs = {}
    local srv = net.unix_server(sock, function(s)
      reqs[#reqs + 1] = net.read_http_request(s)
      s:write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    end)
    shim({ "notify", "x" }, { env = env(), stdin = 'not json "quoted"\n\ttab {' })
    shim({ "notify", "x" }, { env = env(), stdin = "" })
    shim({ "notify", "x" }, { env = env(), stdin = '{"a": [1, 2' })
    srv.close()
    expect(json.decode(reqs[1].body).payload):equals('not json "quoted"\n\ttab {')
    expect(json.decode(reqs[2].body).payload):is(json.null)
    expect(json.decode(reqs[3].body).payload):equals('{"a": [1, 2')
    for _, req in ipairs(reqs) do
      expect(req.headers["x-foundry-token"]):equals(openssl_hmac(TOKEN, req.body))
    end
  end)

  it("drops a payload over 1 MiB but still delivers the event, marked truncated", function()
    local reqs = {}
    local srv = hook_server(200, reqs)
    local big = '{"x":"' .. string.rep("a", (1 << 20) + 10) .. '"}'
    local r = shim({ "notify", "post-tool-use" }, { env = env(), stdin = big })
    srv.close()
    expect(r.status):equals(0)
    local ev = json.decode(reqs[1].body)
    expect(ev.payload):is(json.null)
    expect(ev.truncated):is(true)
    expect(#reqs[1].body):lt(1000)
  end)

  it("exits 0 and says why when the socket is missing", function()
    local r = shim({ "notify", "post-tool-use" }, { env = env(), stdin = "{}" })
    expect(r.status):equals(0)
    expect(r.stderr):matches("notify post%-tool%-use: connect .*proxy%.sock: No such file")
  end)

  it("exits 0 and says why when the token is unreadable, without connecting", function()
    local reqs = {}
    local srv = hook_server(200, reqs)
    fs.unlink(tokfile)
    local r = shim({ "notify", "post-tool-use" }, { env = env(), stdin = "{}" })
    srv.close()
    expect(r.status):equals(0)
    expect(r.stderr):matches("cannot read the hook token")
    expect(#reqs):equals(0)
  end)

  it("reports a refusal from the daemon, still exiting 0", function()
    local reqs = {}
    local srv = hook_server(403, reqs)
    local r = shim({ "notify", "post-tool-use" }, { env = env(), stdin = "{}" })
    srv.close()
    expect(r.status):equals(0)
    expect(r.stderr):matches("answered HTTP 403")
  end)

  it("gives up after 2 seconds when the daemon does not answer", { timeout = 15000 }, function()
    local release = {}
    local srv = net.unix_server(sock, function(s)
      net.read_http_request(s)
      local w = require("foundry._task").wait("test.hold", nil, 5000)
      release[1] = w
      pcall(w.await, w)
    end)
    local t0 = net.now()
    local r = shim({ "notify", "post-tool-use" }, { env = env(), stdin = "{}" })
    local ms = net.now() - t0
    release[1]:resolve()
    srv.close()
    expect(r.status):equals(0)
    expect(r.stderr):matches("Connection timed out")
    expect(ms):gt(1500)
    expect(ms):lt(3500)
  end)

  it("refuses a missing or malformed event name with status 2", function()
    expect(shim({ "notify" }, { stdin = "" }).status):equals(2)
    expect(shim({ "notify", "bad event" }, { stdin = "" }).status):equals(2)
    expect(shim({ "notify", string.rep("e", 65) }, { stdin = "" }).status):equals(2)
  end)
end)
