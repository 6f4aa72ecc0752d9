-- The proxy engine end to end on the host: real curl and python clients through
-- engine:listen_tcp (and the Unix socket), real HTTP/HTTPS upstreams on 127.0.0.1 mapped to
-- the real provider names with the policy's overrides.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]+$")
package.path = here .. "/../lib/?.lua;" .. package.path
local fx = require "proxy_fixtures"
local proxy = require "foundry.proxy"
local json = require "foundry.json"
local fs = require "foundry.fs"
local crypto = require "foundry.crypto"
local uv = require "luv"

local SECRET = "ghs_REALsecretVALUE_0123456789abcdef"
local ANTHROPIC = "sk-ant-REAL-anthropic-key-0123456789"

local plain, tls
local engine, rows, ca

local function secrets(name)
  return ({ GITHUB_TOKEN = SECRET, ANTHROPIC_API_KEY = ANTHROPIC })[name]
end

local function start(policy, opts)
  engine, rows, ca = fx.engine(opts or { secrets = secrets })
  local ph = { GITHUB_TOKEN = proxy.placeholder("GITHUB_TOKEN"), ANTHROPIC_API_KEY = proxy.placeholder("ANTHROPIC_API_KEY") }
  engine:add_sandbox{ name = "s1", policy = policy, placeholders = ph, hook_token = "tok-s1" }
  local port = engine:listen_tcp{ sandbox = "s1" }
  return port, ph
end

local function last_row(kind)
  for i = #rows, 1, -1 do
    if not kind or rows[i].kind == kind then return rows[i] end
  end
end

before_all(function()
  plain = fx.upstream(false)
  tls = fx.upstream(true)
end)

after_all(function()
  if plain then plain.stop() end
  if tls then tls.stop() end
end)

after_each(function()
  if engine then engine:close(); engine = nil end
end)

describe("allowlist", function()
  it("forwards allowed plain HTTP and refuses the rest with a JSON 403", function()
    local port = start({ allow = { "example.test" }, overrides = fx.overrides(plain.port) })
    local r = fx.curl{ proxy_port = port, url = "http://example.test/echo?q=1" }
    expect(r.status):equals(200)
    expect(r.json.path):equals("/echo")
    expect(r.json.query):equals("q=1")
    expect(r.json.headers["proxy-connection"]):is_nil()
    local d = fx.curl{ proxy_port = port, url = "http://not-allowed.test/echo" }
    expect(d.status):equals(403)
    expect(d.json.rule):equals("allow")
    expect(d.json.reason):matches("not in the allowlist")
    expect(d.json.how_to_allow):matches("not%-allowed%.test")
    local row = last_row()
    expect(row.decision):equals("deny")
    expect(row.host):equals("not-allowed.test")
    expect(row.status):equals(403)
  end)

  it("tunnels CONNECT to allowed hosts without decrypting, verifying end to end", function()
    local port = start({ allow = { "example.test" }, overrides = fx.overrides(tls.port) })
    local r = fx.curl{ proxy_port = port, url = "https://example.test/echo", cacert = fx.certs() .. "/ca.crt" }
    expect(r.status):equals(200)
    expect(r.json.path):equals("/echo")
    -- the client verified the upstream's own certificate: nothing was minted
    expect(engine:stats().leaf_minted):equals(0)
    local d = fx.curl{ proxy_port = port, url = "https://other.test/", cacert = fx.certs() .. "/ca.crt" }
    expect(d.exit):gt(0)
    expect(d.headers):matches("403")
  end)

  it("honours deny before allow, wildcards and ports", function()
    local port = start({ allow = { "*.example.test", "example.test:8080" }, deny = { "bad.example.test" },
                         overrides = { ["a.example.test"] = "127.0.0.1:" .. plain.port, ["bad.example.test"] = "127.0.0.1:" .. plain.port,
                                       ["example.test"] = "127.0.0.1:" .. plain.port } })
    expect(fx.curl{ proxy_port = port, url = "http://a.example.test/echo" }.status):equals(200)
    local d = fx.curl{ proxy_port = port, url = "http://bad.example.test/echo" }
    expect(d.status):equals(403)
    expect(d.json.rule):equals("deny[1]")
    expect(fx.curl{ proxy_port = port, url = "http://example.test:8080/echo" }.status):equals(200)
    expect(fx.curl{ proxy_port = port, url = "http://example.test/echo" }.status):equals(403)
  end)

  it("sends the URL's host upstream, not a Host header naming another site (fronting)", function()
    local port = start({ allow = { "example.test" }, overrides = fx.overrides(plain.port) })
    local r = fx.curl{ proxy_port = port, url = "http://example.test/echo", headers = { "Host: evil.test" } }
    expect(r.status):equals(200)
    expect(r.json.headers.host):equals("example.test")
  end)

  it("refuses everything in mode none", function()
    local port = start({ mode = "none" })
    local d = fx.curl{ proxy_port = port, url = "http://example.test/" }
    expect(d.status):equals(403)
    expect(d.json.rule):equals("mode")
  end)
end)

describe("HTTP/1.1", function()
  it("answers pipelined requests in order, HEAD without a body", function()
    local port = start({ allow = { "example.test" }, overrides = fx.overrides(plain.port) })
    local r = foundry.exec{ "python3", "-c", [[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
req = lambda m, p: ("%s http://example.test%s HTTP/1.1\r\nHost: example.test\r\n\r\n" % (m, p)).encode()
s.sendall(req("GET", "/echo?n=1") + req("HEAD", "/echo?n=2") + req("GET", "/echo?n=3"))
s.settimeout(5)
out = b""
while out.count(b"HTTP/1.1 200") < 3 or not out.rstrip().endswith(b"}"):
    d = s.recv(65536)
    if not d: break
    out += d
sys.stdout.write(out.decode())
]], tostring(port) }
    local out = r.stdout
    local q1, q3 = out:find('"query": "n=1"', 1, true), out:find('"query": "n=3"', 1, true)
    expect(q1):truthy()
    expect(q3):gt(q1)
    expect(out).never:contains('"query": "n=2"') -- HEAD: headers only
    local _, n = out:gsub("HTTP/1.1 200", "")
    expect(n):equals(3)
  end)

  it("carries chunked uploads, 100-continue and large bodies both ways", function()
    local port = start({ allow = { "example.test" }, overrides = fx.overrides(plain.port) })
    local r = fx.curl{ proxy_port = port, url = "http://example.test/echo", method = "POST",
                       headers = { "Transfer-Encoding: chunked" }, data = "chunked-body" }
    expect(r.json.body):equals("chunked-body")
    local big = string.rep("0123456789abcdef", 2 * 65536) -- 2 MiB: curl sends Expect: 100-continue
    local dir = fs.mkdtemp("/tmp/foundry-proxy-big-XXXXXX")
    fs.write(dir .. "/big", big)
    r = fx.curl{ proxy_port = port, url = "http://example.test/echo", method = "POST", data = "@" .. dir .. "/big" }
    fs.rm(dir)
    expect(r.status):equals(200)
    expect(#r.json.body):equals(#big)
    r = fx.curl{ proxy_port = port, url = "http://example.test/bytes?n=5000000" }
    expect(#r.body):equals(5000000)
  end)
end)

describe("addresses", function()
  local encodings = { "127.0.0.1", "2130706433", "0x7f000001", "017700000001", "0x7f.1", "127.1",
                      "0177.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
                      "169.254.169.254", "0xa9fea9fe", "[::ffff:169.254.169.254]", "100.100.100.200",
                      "10.0.0.1", "192.168.1.1", "[fd00::1]", "0", "224.0.0.1" }

  it("refuses every encoding of loopback, private and metadata addresses, even in open mode", function()
    local port = start({ mode = "open" })
    for _, host in ipairs(encodings) do
      local r = fx.curl{ proxy_port = port, url = "http://" .. host .. ":" .. plain.port .. "/echo", extra = { "--path-as-is" } }
      if r.status ~= 403 then error(host .. ": expected 403, got " .. r.status .. " " .. r.body) end
      local c = fx.curl{ proxy_port = port, url = "https://" .. host .. ":" .. tls.port .. "/", extra = { "-k" } }
      if c.exit == 0 then error(host .. ": CONNECT was not refused") end
    end
    -- nothing reached the upstream: every row is a denial
    for _, row in ipairs(rows) do expect(row.decision):equals("deny") end
  end)

  it("refuses a name that resolves to loopback (rebinding), checked on the address connected", function()
    local port = start({ allow = { "localhost" } })
    local r = fx.curl{ proxy_port = port, url = "http://localhost:" .. plain.port .. "/echo" }
    expect(r.status):equals(403)
    expect(r.json.reason):matches("loopback")
    local c = fx.curl{ proxy_port = port, url = "https://localhost:" .. tls.port .. "/", extra = { "-k" } }
    expect(c.exit):gt(0)
    expect(last_row().reason):matches("resolves to .*loopback")
  end)

  it("connects to a private address the policy names", function()
    local port = start({ allow = { "localhost" }, addresses = { "127.0.0.0/8", "::1" } })
    local r = fx.curl{ proxy_port = port, url = "http://localhost:" .. plain.port .. "/echo" }
    expect(r.status):equals(200)
    local named = start and nil
    engine:close()
    port = start({ allow = { "127.0.0.1" } })
    expect(fx.curl{ proxy_port = port, url = "http://127.0.0.1:" .. plain.port .. "/echo" }.status):equals(200)
    expect(fx.curl{ proxy_port = port, url = "http://0x7f.1:" .. plain.port .. "/echo" }.status):equals(200)
    expect(named):is_nil()
  end)

  it("refuses malformed hosts", function()
    local port = start({ mode = "open" })
    for _, host in ipairs({ "1.2.3.09", "256.1.1.1", "a..b" }) do
      local r = fx.curl{ proxy_port = port, url = "http://" .. host .. "/" }
      expect(r.status):equals(400)
    end
  end)
end)

describe("inspection and credentials", function()
  local function gh_policy(port)
    return { credentials = { { host = "api.github.com", header = "authorization", secret = "GITHUB_TOKEN" },
                             { host = "github.com", basic = "x-access-token", secret = "GITHUB_TOKEN", inject = true,
                               paths = { "/*/*/info/refs", "/*/*/git-upload-pack", "/*/*/git-receive-pack" } } },
             overrides = fx.overrides(port) }
  end

  it("swaps the placeholder for the real secret at the upstream, and the client never sees it", function()
    local port, ph = start(gh_policy(tls.port))
    local r = fx.curl{ proxy_port = port, cacert = ca, url = "https://api.github.com/echo",
                       headers = { "Authorization: token " .. ph.GITHUB_TOKEN } }
    expect(r.status):equals(200)
    -- the upstream got the real secret ...
    expect(r.body).never:contains(SECRET)
    -- ... which the echo endpoint proves without revealing it:
    local e = fx.curl{ proxy_port = port, cacert = ca, url = "https://api.github.com/echo-auth",
                       headers = { "Authorization: token " .. ph.GITHUB_TOKEN } }
    expect(e.status):equals(200)
    expect(e.json.you_sent):equals("token " .. string.rep("*", #SECRET))
    expect(e.headers).never:contains(SECRET)
    expect(e.headers):contains("X-Echo: token " .. string.rep("*", #SECRET))
    local row = last_row("inspect")
    expect(row.credential):is(true)
    for _, rw in ipairs(rows) do
      expect(json.encode(rw)).never:contains(SECRET)
    end
  end)

  it("sends the secret upstream in place of the placeholder and asks for identity encoding", function()
    local port, ph = start(gh_policy(tls.port))
    local r = fx.curl{ proxy_port = port, cacert = ca, url = "https://api.github.com/echo",
                       headers = { "Authorization: Bearer " .. ph.GITHUB_TOKEN } }
    -- the echo masks the secret: every byte of it became '*', so its length shows through
    expect(r.json.headers.authorization):equals("Bearer " .. string.rep("*", #SECRET))
    expect(r.json.headers["accept-encoding"]):equals("identity")
  end)

  it("injects Basic x-access-token on git paths before any 401, and only there", function()
    local port = start(gh_policy(tls.port))
    local r = fx.curl{ proxy_port = port, cacert = ca, url = "https://github.com/o/r.git/info/refs?service=git-upload-pack" }
    expect(r.status):equals(200)
    local auth = r.json.headers.authorization
    expect(auth):matches("^Basic ")
    -- decoded, it is x-access-token:<masked secret>
    local other = fx.curl{ proxy_port = port, cacert = ca, url = "https://github.com/o/r/settings" }
    expect(other.json.headers.authorization):is_nil()
  end)

  it("does not swap a placeholder for a host its credential does not name", function()
    local port, ph = start({ allow = { "example.test" }, inspect = { "example.test" },
                             credentials = { { host = "api.github.com", header = "authorization", secret = "GITHUB_TOKEN" } },
                             overrides = fx.overrides(tls.port) })
    local r = fx.curl{ proxy_port = port, cacert = ca, url = "https://example.test/echo",
                       headers = { "Authorization: token " .. ph.GITHUB_TOKEN } }
    expect(r.status):equals(200)
    expect(r.json.headers.authorization):equals("token " .. ph.GITHUB_TOKEN)
  end)

  it("keeps two sandboxes' placeholders apart", function()
    local port, ph1 = start(gh_policy(tls.port))
    local ph2 = { GITHUB_TOKEN = proxy.placeholder("GITHUB_TOKEN") }
    engine:add_sandbox{ name = "s2", policy = gh_policy(tls.port), placeholders = ph2 }
    local port2 = engine:listen_tcp{ sandbox = "s2" }
    -- s2 presenting s1's placeholder gets nothing swapped
    local r = fx.curl{ proxy_port = port2, cacert = ca, url = "https://api.github.com/echo",
                       headers = { "Authorization: token " .. ph1.GITHUB_TOKEN } }
    expect(r.json.headers.authorization):equals("token " .. ph1.GITHUB_TOKEN)
    local own = fx.curl{ proxy_port = port2, cacert = ca, url = "https://api.github.com/echo",
                         headers = { "Authorization: token " .. ph2.GITHUB_TOKEN } }
    expect(own.json.headers.authorization):equals("token " .. string.rep("*", #SECRET))
    expect(port):gt(0)
  end)

  it("masks a secret split across reads of a streamed body", function()
    local port, ph = start(gh_policy(tls.port))
    -- /echo returns the body we send; send the placeholder in the body (not swapped: no
    -- json rule) and the real secret itself, which must come back masked
    local r = fx.curl{ proxy_port = port, cacert = ca, url = "https://api.github.com/echo", method = "POST",
                       data = string.rep("a", 16379) .. SECRET .. string.rep("b", 100) }
    expect(r.status):equals(200)
    expect(r.body).never:contains(SECRET)
    expect(r.body):contains(string.rep("*", #SECRET))
    expect(ph):truthy()
  end)

  it("swaps a placeholder in a JSON body where a credential says json = true", function()
    local port, ph = start({ credentials = { { host = "api.github.com", header = "x-token", secret = "GITHUB_TOKEN", json = true } },
                             overrides = fx.overrides(tls.port) })
    local r = fx.curl{ proxy_port = port, cacert = ca, url = "https://api.github.com/echo", method = "POST",
                       headers = { "Content-Type: application/json" }, data = '{"token":"' .. ph.GITHUB_TOKEN .. '"}' }
    expect(r.status):equals(200)
    expect(r.json.body):equals('{"token":"' .. string.rep("*", #SECRET) .. '"}')
    expect(r.json.headers["content-length"]):equals(tostring(#('{"token":"' .. SECRET .. '"}')))
  end)

  it("serves several requests over one inspected tunnel, upstream kept alive", function()
    local port = start(gh_policy(tls.port))
    local r = foundry.exec{ "curl", "-sS", "-m", "10", "-x", "http://127.0.0.1:" .. port, "--cacert", ca,
      "https://api.github.com/echo?i=1", "https://api.github.com/bytes?n=300000", "https://api.github.com/echo?i=3" }
    expect(r.status):equals(0)
    expect(r.stdout):contains('"query": "i=1"')
    expect(r.stdout):contains('"query": "i=3"')
    expect(#r.stdout):gt(300000)
    local connects, gets = 0, 0
    for _, row in ipairs(rows) do
      if row.method == "CONNECT" then connects = connects + 1 elseif row.method == "GET" then gets = gets + 1 end
    end
    expect(connects):equals(1)
    expect(gets):equals(3)
  end)

  it("refuses a Host header that differs from the tunnel's host", function()
    local port = start(gh_policy(tls.port))
    local r = fx.curl{ proxy_port = port, cacert = ca, url = "https://api.github.com/echo", headers = { "Host: evil.test" } }
    expect(r.status):equals(403)
    expect(r.json.reason):matches("Host header")
  end)

  it("streams server-sent events incrementally through inspection", function()
    local port = start(gh_policy(tls.port))
    local arrivals = {}
    local t0
    local r = foundry.exec{ "curl", "-sN", "-m", "10", "-x", "http://127.0.0.1:" .. port, "--cacert", ca,
      "https://api.github.com/stream?n=5&ms=150",
      on_stdout = function(chunk)
        uv.update_time()
        if not t0 then t0 = uv.now() end
        for _ in chunk:gmatch("data: token") do arrivals[#arrivals + 1] = uv.now() - t0 end
      end }
    expect(r.status):equals(0)
    expect(#arrivals):equals(5)
    -- spread over time as sent (4 gaps of 150 ms), not delivered at the end
    expect(arrivals[5] - arrivals[1]):gt(400)
  end)

  it("fails closed when the upstream certificate does not verify", function()
    engine, rows, ca = fx.engine({ secrets = secrets, upstream_ca_file = false })
    engine:add_sandbox{ name = "s1", policy = gh_policy(tls.port), placeholders = {} }
    local port = engine:listen_tcp{ sandbox = "s1" }
    local r = fx.curl{ proxy_port = port, cacert = ca, url = "https://api.github.com/echo" }
    expect(r.status):equals(502)
    expect(r.json.reason):matches("certificate")
  end)
end)

describe("gateways", function()
  it("forwards /_gw/anthropic to the API over TLS with the real key", function()
    local port = start({ gateways = { anthropic = true }, overrides = fx.overrides(tls.port) })
    local r = fx.curl{ url = "http://127.0.0.1:" .. port .. "/_gw/anthropic/v1/messages?beta=true", method = "POST",
                       headers = { "x-api-key: " .. proxy.placeholder("ANTHROPIC_API_KEY"), "Content-Type: application/json" },
                       data = '{"model":"x"}' }
    expect(r.status):equals(200)
    expect(r.json.path):equals("/v1/messages")
    expect(r.json.query):equals("beta=true")
    expect(r.json.headers.host):equals("api.anthropic.com")
    expect(r.json.headers["x-api-key"]):equals(string.rep("*", #ANTHROPIC))
    expect(r.json.body):equals('{"model":"x"}')
    expect(last_row().kind):equals("gateway")
    local e = fx.curl{ url = "http://127.0.0.1:" .. port .. "/_gw/anthropic/echo-auth" }
    expect(e.body).never:contains(ANTHROPIC)
  end)

  it("uses the OAuth bearer for Anthropic when the policy says oauth, and OpenAI's bearer", function()
    local OAUTH = "sk-ant-oat01-REAL-oauth-token-0123456789"
    local OPENAI = "sk-REAL-openai-key-0123456789"
    engine, rows, ca = fx.engine({ secrets = function(n)
      return ({ CLAUDE_CODE_OAUTH_TOKEN = OAUTH, OPENAI_API_KEY = OPENAI })[n]
    end })
    engine:add_sandbox{ name = "s1", policy = { gateways = { anthropic = { oauth = true }, openai = true },
                                               overrides = fx.overrides(tls.port) } }
    local port = engine:listen_tcp{ sandbox = "s1" }
    local r = fx.curl{ url = "http://127.0.0.1:" .. port .. "/_gw/anthropic/v1/messages",
                       headers = { "Authorization: Bearer " .. proxy.placeholder("CLAUDE_CODE_OAUTH_TOKEN"), "x-api-key: junk" } }
    expect(r.json.headers.authorization):equals("Bearer " .. string.rep("*", #OAUTH))
    expect(r.json.headers["x-api-key"]):is_nil()
    r = fx.curl{ url = "http://127.0.0.1:" .. port .. "/_gw/openai/v1/chat/completions", method = "POST", data = "{}" }
    expect(r.json.path):equals("/v1/chat/completions")
    expect(r.json.headers.host):equals("api.openai.com")
    expect(r.json.headers.authorization):equals("Bearer " .. string.rep("*", #OPENAI))
  end)

  it("says which secret is missing, and refuses unknown gateways", function()
    local port = start({ gateways = { openai = true }, overrides = fx.overrides(tls.port) })
    local r = fx.curl{ url = "http://127.0.0.1:" .. port .. "/_gw/openai/v1/models" }
    expect(r.status):equals(503)
    expect(r.json.how_to_allow):matches("OPENAI_API_KEY")
    local u = fx.curl{ url = "http://127.0.0.1:" .. port .. "/_gw/nope/x" }
    expect(u.status):equals(404)
  end)

  it("streams a gateway response as it comes", function()
    local port = start({ gateways = { anthropic = true }, overrides = fx.overrides(tls.port) })
    local first, last
    foundry.exec{ "curl", "-sN", "-m", "10", "http://127.0.0.1:" .. port .. "/_gw/anthropic/stream?n=4&ms=200",
      on_stdout = function(chunk)
        uv.update_time()
        first = first or uv.now()
        if chunk:find("token 3", 1, true) then last = uv.now() end
      end }
    expect(last - first):gt(400)
  end)
end)

describe("on_request", function()
  local function hook_policy(src)
    return { allow = { "example.test" }, overrides = fx.overrides(plain.port),
             rules = { { host = "example.test", paths = { "/hook/**" }, on_request = true, body = 4096 } },
             on_request = src }
  end

  it("lets the policy decide with the method, path, query, headers and body", function()
    local port = start(hook_policy([[function(req)
      if req.method == "POST" and req.body:find("please") and req.headers["x-ask"] == "yes" and req.query == "a=1" then
        return "allow", "asked nicely"
      end
      return "deny", "say please to " .. req.path
    end]]))
    local ok = fx.curl{ proxy_port = port, url = "http://example.test/hook/x?a=1", method = "POST", data = "please",
                        headers = { "X-Ask: yes" } }
    expect(ok.status):equals(200)
    expect(ok.json.body):equals("please")
    local no = fx.curl{ proxy_port = port, url = "http://example.test/hook/x", method = "POST", data = "now" }
    expect(no.status):equals(403)
    expect(no.json.reason):equals("say please to /hook/x")
    -- requests no rule sends to the hook do not run it
    expect(fx.curl{ proxy_port = port, url = "http://example.test/other" }.status):equals(200)
  end)

  it("reads the body for the hook on a kept-alive connection with an idle upstream", function()
    local port = start(hook_policy([[function(req) return req.body == "yes" and "allow" or "deny" end]]))
    local r = foundry.exec{ "python3", "-c", [[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(5)
def ask(raw):
    s.sendall(raw)
    out = b""
    while b"\r\n\r\n" not in out:
        out += s.recv(65536)
    head, body = out.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < n:
        body += s.recv(65536)
    return head.split(b"\r\n")[0].decode()
print(ask(b"GET http://example.test/other HTTP/1.1\r\nHost: example.test\r\n\r\n"))
print(ask(b"POST http://example.test/hook/x HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nyes"))
print(ask(b"POST http://example.test/hook/x HTTP/1.1\r\nHost: example.test\r\nContent-Length: 2\r\n\r\nno"))
]], tostring(port) }
    expect(r.stdout):equals("HTTP/1.1 200 OK\nHTTP/1.1 200 OK\nHTTP/1.1 403 Forbidden\n")
  end)

  it("contains a hook that loops forever or allocates without bound; the engine goes on", function()
    local port = start(hook_policy([[function(req)
      if req.path == "/hook/loop" then while true do end end
      if req.path == "/hook/alloc" then local s = "x" while true do s = s .. s end end
      return "allow"
    end]]))
    local t0 = uv.hrtime()
    local a = fx.curl{ proxy_port = port, url = "http://example.test/hook/loop" }
    expect(a.status):equals(403)
    expect(a.json.reason):matches("budget")
    local b = fx.curl{ proxy_port = port, url = "http://example.test/hook/alloc" }
    expect(b.status):equals(403)
    expect(b.json.reason):matches("memory")
    expect((uv.hrtime() - t0) / 1e6):lt(5000)
    expect(fx.curl{ proxy_port = port, url = "http://example.test/hook/fine" }.status):equals(200)
  end)
end)

describe("reload", function()
  it("takes effect for the next request without closing the sandbox", function()
    local port = start({ allow = { "example.test" }, overrides = fx.overrides(plain.port) })
    expect(fx.curl{ proxy_port = port, url = "http://example.test/echo" }.status):equals(200)
    engine:update_policy("s1", { allow = { "other.test" }, overrides = fx.overrides(plain.port) })
    expect(fx.curl{ proxy_port = port, url = "http://example.test/echo" }.status):equals(403)
    -- a policy that does not validate is refused and the last good one stays
    expect(function() engine:update_policy("s1", { allow = { "bad host" } }) end):fails("policy.invalid")
    expect(fx.curl{ proxy_port = port, url = "http://example.test/echo" }.status):equals(403)
  end)

  it("applies to a kept-alive connection's next request", function()
    local port = start({ allow = { "example.test" }, overrides = fx.overrides(plain.port) })
    local sock = uv.new_tcp()
    local w = require("foundry._task").wait("connect")
    sock:connect("127.0.0.1", port, function(err) w:resolve(err) end)
    expect(w:await()):is_nil()
    local buf = ""
    local got
    sock:read_start(function(_, chunk)
      if chunk then buf = buf .. chunk end
      if got and buf:find("\r\n\r\n") then local g = got; got = nil; g:resolve() end
    end)
    local function request()
      buf = ""
      got = require("foundry._task").wait("response", nil, 5000)
      sock:write("GET http://example.test/echo HTTP/1.1\r\nHost: example.test\r\n\r\n")
      got:await()
      foundry.sleep(50)
      return buf
    end
    expect(request()):matches("^HTTP/1.1 200")
    engine:update_policy("s1", { allow = { "other.test" } })
    expect(request()):matches("^HTTP/1.1 403")
    sock:close()
  end)
end)

describe("hook events", function()
  it("delivers events signed with the sandbox's token and refuses forged ones", function()
    local events = {}
    engine, rows, ca = fx.engine({ on_event = function(sb, ev) events[#events + 1] = { sb, ev } end })
    engine:add_sandbox{ name = "s1", policy = {}, hook_token = "tok-s1" }
    engine:add_sandbox{ name = "s2", policy = {}, hook_token = "tok-s2" }
    local p1 = engine:listen_tcp{ sandbox = "s1" }
    local body = '{"event":"post-tool-use","tool":"Edit"}'
    local mac = crypto.hex(crypto.hmac_sha256("tok-s1", body))
    local ok = fx.curl{ url = "http://127.0.0.1:" .. p1 .. "/_foundry/hook", method = "POST", data = body,
                        headers = { "X-Foundry-Token: " .. mac } }
    expect(ok.status):equals(200)
    local bad = fx.curl{ url = "http://127.0.0.1:" .. p1 .. "/_foundry/hook", method = "POST", data = body,
                         headers = { "X-Foundry-Token: " .. crypto.hex(crypto.hmac_sha256("tok-s2", body)) } }
    expect(bad.status):equals(403)
    local none = fx.curl{ url = "http://127.0.0.1:" .. p1 .. "/_foundry/hook", method = "POST", data = body }
    expect(none.status):equals(403)
    foundry.sleep(20)
    expect(#events):equals(1)
    expect(events[1][1]):equals("s1")
    expect(events[1][2].tool):equals("Edit")
  end)
end)

describe("unix sockets and limits", function()
  it("serves a sandbox on its Unix socket (0666, stale socket replaced)", function()
    local dir = fs.mkdtemp("/tmp/foundry-proxy-sock-XXXXXX")
    local path = dir .. "/sb/s1/proxy.sock"
    fs.mkdir(dir .. "/sb/s1")
    fs.write(path, "") -- not a socket: must not be removed ...
    engine, rows, ca = fx.engine({})
    expect(function() engine:add_sandbox{ name = "s1", socket = path, policy = {} } end):fails("proxy.listen")
    fs.rm(path)
    engine:add_sandbox{ name = "s1", socket = path, policy = { allow = { "example.test" }, overrides = fx.overrides(plain.port) } }
    expect(fs.stat(path).mode & 511):equals(438)
    local r = foundry.exec{ "python3", "-c", [[
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"GET http://example.test/echo HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
out = b""
while True:
    d = s.recv(65536)
    if not d: break
    out += d
sys.stdout.write(out.decode().split("\r\n\r\n", 1)[1])
]], path }
    expect(json.decode(r.stdout).path):equals("/echo")
    engine:remove_sandbox("s1")
    expect(fs.stat(path)):is_nil()
    -- a socket left by a dead daemon is replaced
    local stale = uv.new_pipe(false)
    stale:bind(path)
    stale:close()
    engine:add_sandbox{ name = "s1", socket = path, policy = {} }
    fs.rm(dir)
  end)

  it("limits the request rate and body size, and keeps serving", function()
    local port = start({ allow = { "example.test" }, overrides = fx.overrides(plain.port),
                         limits = { rate = 1, burst = 2, request_body = 100 } })
    local codes = {}
    for i = 1, 4 do codes[i] = fx.curl{ proxy_port = port, url = "http://example.test/echo" }.status end
    expect(codes[1]):equals(200)
    expect(codes[4]):equals(429)
    engine:update_policy("s1", { allow = { "example.test" }, overrides = fx.overrides(plain.port), limits = { request_body = 100 } })
    local big = fx.curl{ proxy_port = port, url = "http://example.test/echo", method = "POST", data = string.rep("x", 1000) }
    expect(big.status):equals(413)
    expect(fx.curl{ proxy_port = port, url = "http://example.test/echo" }.status):equals(200)
  end)

  it("opens a circuit breaker after repeated upstream failures, without counting its refusals", function()
    local port = start({ allow = { "example.test" }, overrides = { ["example.test"] = "127.0.0.1:1" },
                         limits = { breaker_failures = 2, breaker_cooldown = 60000 } })
    expect(fx.curl{ proxy_port = port, url = "http://example.test/" }.status):equals(502)
    expect(fx.curl{ proxy_port = port, url = "http://example.test/" }.status):equals(502)
    local r = fx.curl{ proxy_port = port, url = "http://example.test/" }
    expect(r.status):equals(503)
    expect(r.json.rule):equals("limits.breaker")
    expect(r.json.reason):matches("2 times")
    -- the breaker's own refusals did not count: still 2
    expect(fx.curl{ proxy_port = port, url = "http://example.test/" }.json.reason):matches("2 times")
  end)

  it("passes WebSocket upgrades through", function()
    local port = start({ allow = { "example.test" }, overrides = fx.overrides(plain.port) })
    local sock = uv.new_tcp()
    local w = require("foundry._task").wait("connect")
    sock:connect("127.0.0.1", port, function(err) w:resolve(err) end)
    expect(w:await()):is_nil()
    local buf, want = "", nil
    sock:read_start(function(_, chunk)
      if chunk then buf = buf .. chunk end
      if want and buf:find(want.pattern) then local g = want.w; want = nil; g:resolve() end
    end)
    local function wait_for(pattern)
      want = { pattern = pattern, w = require("foundry._task").wait("read", nil, 5000) }
      if buf:find(pattern) then want = nil; return end
      want.w:await()
    end
    sock:write("GET http://example.test/ws HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n" ..
      "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
    wait_for("\r\n\r\n")
    expect(buf):matches("^HTTP/1.1 101")
    expect(buf):matches("[Uu]pgrade: websocket")
    buf = ""
    sock:write("\x81\x05hello")
    wait_for("hello")
    expect(buf):equals("echo:\x81\x05hello")
    sock:close()
  end)
end)

describe("bulk tunnels", function()
  local task = require "foundry._task"
  local MiB = 1 << 20

  -- Deterministic bytes that are not one repeated block.
  local function payload(n, seed)
    local parts, block = {}, {}
    for i = 1, 256 do block[i] = string.char((i * 31 + seed) % 256) end
    block = table.concat(block)
    for i = 1, n // 256 do parts[i] = block:sub(1 + i % 7) .. block:sub(1, i % 7) end
    return table.concat(parts)
  end

  -- A raw TCP upstream on 127.0.0.1: reads until EOF, then answers the SHA-256 of what
  -- it read, a newline and `reply`, and closes. `abort` = bytes after which it resets.
  local function sink(reply, abort)
    local server = uv.new_tcp()
    server:bind("127.0.0.1", 0)
    server:listen(8, function()
      local c = uv.new_tcp()
      server:accept(c)
      local got = {}
      local n = 0
      c:read_start(function(err, chunk)
        if chunk then
          got[#got + 1] = chunk
          n = n + #chunk
          if abort and n >= abort then c:read_stop(); c:close() end
          return
        end
        c:read_stop()
        if err then c:close(); return end
        c:write(crypto.sha256_hex(table.concat(got)) .. "\n" .. reply, function() c:close() end)
      end)
    end)
    return server, server:getsockname().port
  end

  -- CONNECT through the proxy, send `data`, half-close, read to the end.
  local function through(port, upport, data)
    local sock = type(port) == "string" and uv.new_pipe() or uv.new_tcp()
    local w = task.wait("connect", nil, 5000)
    if type(port) == "string" then
      sock:connect(port, function(err) w:resolve(err) end)
    else
      sock:connect("127.0.0.1", port, function(err) w:resolve(err) end)
    end
    expect(w:await()):is_nil()
    local buf, head = {}, nil
    local done = task.wait("tunnel", nil, 20000)
    local acc = ""
    sock:read_start(function(err, chunk)
      if not chunk then sock:close(); done:resolve(err or true); return end
      if head then buf[#buf + 1] = chunk; return end
      acc = acc .. chunk
      local e = acc:find("\r\n\r\n", 1, true)
      if e then
        head = acc:sub(1, e + 3)
        if #acc > e + 3 then buf[1] = acc:sub(e + 4) end
        if not head:match("^HTTP/1.1 200") then sock:close(); done:resolve(head); return end
        sock:write(data)
        sock:shutdown()
      end
    end)
    sock:write(("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"):format(upport, upport))
    local ended = done:await()
    return head, table.concat(buf), ended
  end

  local function run(opts)
    local reply = payload(5 * MiB + 77, 3)
    local server, upport = sink(reply)
    local extra = { secrets = secrets, splice = opts and opts.splice }
    engine, rows, ca = fx.engine(extra)
    local dir = fs.mkdtemp("/tmp/foundry-splice-XXXXXX")
    local port
    if opts and opts.unix then
      port = dir .. "/proxy.sock"
      engine:add_sandbox{ name = "s1", socket = port, policy = { allow = { "127.0.0.1" } } }
    else
      engine:add_sandbox{ name = "s1", policy = { allow = { "127.0.0.1" } } }
      port = engine:listen_tcp{ sandbox = "s1" }
    end
    local data = payload(3 * MiB + 5, 9)
    local head, got, ended = through(port, upport, data)
    server:close()
    expect(head):matches("^HTTP/1.1 200")
    expect(ended):equals(true)
    expect(#got):equals(64 + 1 + #reply)
    expect(got:sub(1, 64)):equals(crypto.sha256_hex(data)) -- what the upstream received
    expect(got:sub(66) == reply):truthy()                 -- what the client received
    for _ = 1, 100 do
      if engine:stats().connections == 0 then break end
      foundry.sleep(10)
    end
    expect(engine:stats().connections):equals(0)
    local row = last_row("tunnel")
    expect(row.bytes_out):equals(#data)
    expect(row.bytes_in):equals(#got)
    fs.rm(dir)
    return engine:stats()
  end

  it("moves a bulk tunnel with splice(2), intact both ways, half-close and all", function()
    expect(run().spliced):equals(1)
  end)

  it("splices from a sandbox's Unix socket too", function()
    expect(run({ unix = true }).spliced):equals(1)
  end)

  it("copies the same tunnel through memory when splice is off", function()
    expect(run({ splice = false }).spliced):equals(0)
  end)

  it("keeps small tunnels out of the kernel path", function()
    local server, upport = sink("short")
    engine, rows, ca = fx.engine{ secrets = secrets }
    engine:add_sandbox{ name = "s1", policy = { allow = { "127.0.0.1" } } }
    local port = engine:listen_tcp{ sandbox = "s1" }
    local head, got = through(port, upport, "hello")
    server:close()
    expect(head):matches("^HTTP/1.1 200")
    expect(got):equals(crypto.sha256_hex("hello") .. "\nshort")
    expect(engine:stats().spliced):equals(0)
  end)

  it("closes the client when the upstream goes away in the middle of a spliced tunnel", function()
    local server, upport = sink("", 2 * MiB)
    engine, rows, ca = fx.engine{ secrets = secrets }
    engine:add_sandbox{ name = "s1", policy = { allow = { "127.0.0.1" } } }
    local port = engine:listen_tcp{ sandbox = "s1" }
    local head, got, ended = through(port, upport, payload(16 * MiB, 1))
    server:close()
    expect(head):matches("^HTTP/1.1 200")
    expect(got):equals("")
    expect(ended):truthy()
    expect(engine:stats().spliced):equals(1)
    for _ = 1, 100 do
      if engine:stats().connections == 0 then break end
      foundry.sleep(10)
    end
    expect(engine:stats().connections):equals(0)
  end)
end)
