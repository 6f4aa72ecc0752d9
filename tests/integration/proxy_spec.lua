-- The proxy from inside real sandboxes: a --network none container (foundry-test:base,
-- read-only root, uid 1000, no capabilities) with foundry-shim as PID 1 bridging
-- 127.0.0.1:3128 to the sandbox's Unix socket, the proxy engine in this process, local
-- HTTP/HTTPS upstreams on the host mapped to the real provider names by the policy's
-- overrides, and the real curl and python inside.
local uv = require "luv"
local dh = require "tests.lib.docker"
local fs = foundry.fs
local json = foundry.json
package.path = "tests/lib/?.lua;" .. package.path
local fx = require "proxy_fixtures"
local proxy = require "foundry.proxy"

local BUILD = os.getenv("FOUNDRY_BUILD") or "build"
local SHIM = BUILD .. "/foundry-shim"
local SHIM_IN = "/usr/local/bin/foundry-shim"
local SECRET = "ghs_REALsecretVALUE_container_0123456789"
local S = dh.suite("proxy")

local plain, tls, engine, rows, dir, ph, c

local function abs(p)
  if p:sub(1, 1) == "/" then return p end
  return uv.cwd() .. "/" .. p
end

before_all(function()
  dh.require_engine(skip)
  if not fs.exists(SHIM) then skip(SHIM .. " is not built (make)") end
  dh.ensure_image()
  plain = fx.upstream(false)
  tls = fx.upstream(true)
  dir = fs.mkdtemp("/tmp/foundry-proxy-int-XXXXXX")
  fs.chmod(dir, tonumber("755", 8))
  engine, rows = fx.engine({ secrets = function(n) return n == "GITHUB_TOKEN" and SECRET or nil end })
  ph = { GITHUB_TOKEN = proxy.placeholder("GITHUB_TOKEN") }
  engine:add_sandbox{
    name = "int1", socket = dir .. "/run/proxy.sock", placeholders = ph,
    policy = {
      allow = { "example.test", "plain.test" },
      credentials = { { host = "api.github.com", header = "authorization", secret = "GITHUB_TOKEN" } },
      overrides = (function()
        local o = fx.overrides(tls.port)
        o["plain.test"] = "127.0.0.1:" .. plain.port
        return o
      end)(),
    },
  }
  -- the sandbox's trust: the system store, Foundry's CA (inspection) and the test
  -- upstreams' CA (tunnels, where the sandbox verifies the upstream itself)
  local bundle = fs.read("/etc/ssl/certs/ca-certificates.crt") .. fs.read(engine:ca_cert()) ..
    fs.read(fx.certs() .. "/ca.crt")
  fs.write(dir .. "/run/ca-bundle.pem", bundle)
  fs.chmod(dir .. "/run/ca-bundle.pem", tonumber("644", 8))
  local env = { FOUNDRY_PROXY_SOCKET = "/run/foundry/proxy.sock" }
  for _, k in ipairs({ "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy" }) do env[k] = "http://127.0.0.1:3128" end
  env.NO_PROXY, env.no_proxy = "localhost,127.0.0.1", "localhost,127.0.0.1"
  for _, k in ipairs({ "SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS" }) do
    env[k] = "/run/foundry/ca-bundle.pem"
  end
  env.GITHUB_TOKEN = ph.GITHUB_TOKEN
  c = S:run{
    entrypoint = { SHIM_IN, "init" }, user = "1000:1000", read_only = true, network = "none",
    cap_drop = { "ALL" }, security_opt = { "no-new-privileges:true" }, tmpfs = { "/tmp" },
    mounts = { { type = "bind", source = abs(SHIM), target = SHIM_IN, read_only = true },
               { type = "bind", source = dir .. "/run", target = "/run/foundry", read_only = true } },
    env = env, stop_timeout = 5, pids_limit = 256,
  }
end)

after_all(function()
  S:cleanup()
  if engine then engine:close() end
  if plain then plain.stop() end
  if tls then tls.stop() end
  if dir then fs.rm(dir) end
end)

local function sh(script)
  return c:exec{ "sh", "-c", script, timeout = 30000 }
end

describe("the proxy from inside a sandbox", function()
  it("allows and denies as the policy says", { timeout = 60000 }, function()
    local r = sh("curl -sS -m 10 https://example.test/echo")
    expect(r.status):equals(0)
    expect(json.decode(r.stdout).path):equals("/echo")
    r = sh("curl -sS -m 10 -o /dev/null -w '%{http_code}' http://plain.test/echo")
    expect(r.stdout):equals("200")
    r = sh("curl -sS -m 10 https://denied.test/ 2>&1; echo exit=$?")
    expect(r.stdout):matches("403")
    expect(r.stdout).never:matches("exit=0")
  end)

  it("carries a bulk download through an opaque tunnel intact, moved by the kernel", { timeout = 60000 }, function()
    local before = engine:stats().spliced
    local n = 24 * 1024 * 1024
    local r = sh("curl -sS -m 30 'https://example.test/bytes?n=" .. n .. "' | sha256sum")
    expect(r.status):equals(0)
    local want = foundry.exec{ "sh", "-c", "head -c " .. n .. " /dev/zero | tr '\\0' x | sha256sum" }.stdout
    expect(r.stdout:match("^%x+")):equals(want:match("^%x+"))
    expect(engine:stats().spliced):equals(before + 1)
  end)

  it("puts the real secret into inspected requests while the sandbox holds a placeholder", { timeout = 60000 }, function()
    local r = sh('curl -sS -m 10 -H "Authorization: token $GITHUB_TOKEN" https://api.github.com/echo-auth')
    expect(r.status):equals(0)
    -- the upstream received exactly the secret (masked on the way back: same length)
    expect(json.decode(r.stdout).you_sent):equals("token " .. string.rep("*", #SECRET))
    expect(r.stdout).never:contains(SECRET)
    -- nothing in the sandbox's environment, files or /proc has the secret
    local probe = sh("env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; grep -rs . /run/foundry /tmp 2>/dev/null | head -c 2000000")
    expect(probe.stdout).never:contains(SECRET)
    expect(probe.stdout):contains(ph.GITHUB_TOKEN)
  end)

  it("streams server-sent events incrementally to python", { timeout = 60000 }, function()
    local r = c:exec{ "python3", "-c", [[
import time, urllib.request
t0 = None
stamps = []
with urllib.request.urlopen("https://api.github.com/stream?n=4&ms=250", timeout=10) as resp:
    for line in resp:
        if line.startswith(b"data:"):
            now = time.monotonic()
            t0 = t0 or now
            stamps.append(now - t0)
print(",".join("%.3f" % s for s in stamps))
]], timeout = 30000 }
    expect(r.status):equals(0)
    local stamps = {}
    for s in r.stdout:gmatch("[%d.]+") do stamps[#stamps + 1] = tonumber(s) end
    expect(#stamps):equals(4)
    expect(stamps[4] - stamps[1]):gt(0.5)
  end)

  it("refuses address literals and metadata, and has no way out without the proxy", { timeout = 60000 }, function()
    for _, url in ipairs({ "http://169.254.169.254/latest/meta-data/", "http://0x7f.1:" .. plain.port .. "/",
                           "http://[::ffff:127.0.0.1]:" .. plain.port .. "/", "http://2130706433:" .. plain.port .. "/" }) do
      -- NO_PROXY names 127.0.0.1: take it away so that curl asks the proxy
      local r = sh("env -u NO_PROXY -u no_proxy curl -sS -m 10 -o /dev/null -w '%{http_code}' '" .. url .. "'")
      if r.stdout ~= "403" then error(url .. ": " .. r.stdout .. r.stderr) end
    end
    local r = sh("curl -sS -m 5 --noproxy '*' https://example.test/ 2>&1; echo exit=$?")
    expect(r.stdout).never:matches("exit=0")
    r = c:exec{ "python3", "-c", [[
import socket
try:
    socket.create_connection(("1.1.1.1", 443), timeout=3)
    print("connected")
except OSError as e:
    print("refused", e)
]], timeout = 20000 }
    expect(r.stdout):matches("^refused")
  end)

  it("audits every decision with the sandbox's name and never the secret", function()
    expect(#rows):gt(5)
    for _, row in ipairs(rows) do
      expect(row.sandbox):equals("int1")
      expect(json.encode(row)).never:contains(SECRET)
    end
  end)
end)
