-- Credentials end to end: a secret in the vault, a sandbox made with `foundry new` from a
-- preset that names it, the daemon's proxy engine, and the real curl inside the sandbox
-- reaching a local TLS stand-in for api.anthropic.com (mapped by the policy's overrides).
-- The upstream must see the real key; the sandbox (environment, files, /proc, responses)
-- must see only its placeholder. The CA the proxy inspects with is mounted into the
-- sandbox, so clients verify inspected hosts without any per-preset setup.
local L = dofile("tests/integration/lib.lua")
L.skip = skip
package.path = "tests/lib/?.lua;" .. package.path
local pfx = require "proxy_fixtures"
local net = dofile("tests/lib/net.lua")
local fs = require "foundry.fs"
local uv = require "luv"

local SECRET = "sk-ant-api03-REALkeyHeldOnlyByTheHost-0123456789abcdef"
local env, up
local saved = {}

local function setenv(k, v)
  if saved[k] == nil then saved[k] = os.getenv(k) or false end
  uv.os_setenv(k, v)
end

local function sh(name, script)
  local r = L.cli{ "exec", name, "sh", "-c", "(" .. script .. ") 2>&1" }
  return { status = r.status, out = (r.stdout or "") .. (r.stderr or "") }
end

before_all(function()
  env = L.setup()
  up = pfx.upstream(true)
  setenv("FOUNDRY_UPSTREAM_CA_FILE", pfx.certs() .. "/ca.crt")
  setenv("FOUNDRY_VAULT_PASSPHRASE", "correct horse battery staple")
  L.ok{ "vault", "init" }
  setenv("FOUNDRY_VAULT_PASSPHRASE", "correct horse battery staple")
  L.ok{ "vault", "set", "work-anthropic", stdin = SECRET }
  setenv("FOUNDRY_VAULT_PASSPHRASE", "correct horse battery staple")
  L.ok{ "daemon", "start" }
  fs.write(env.root .. "/policy.lua", string.format(
    'return { extends = "default", overrides = { ["api.anthropic.com"] = "127.0.0.1:%d", ["example.test"] = "127.0.0.1:%d" },'
      .. ' allow = { "example.test" }, inspect = { "example.test" } }\n', up.port, up.port))
  fs.write(env.root .. "/presets/cred.lua", string.format([[
return {
  policy = %q,
  agent = { name = "shell", command = { "bash" }, providers = { "anthropic" } },
  credentials = { anthropic = "vault:work-anthropic" },
}
]], env.root .. "/policy.lua"))
  L.ok{ "new", "-d", "-n", "cred", "-p", "cred" }
end)

after_all(function()
  pcall(L.cli, { "rm", "-y", "cred" })
  L.teardown()
  if up then up.stop() end
  for k, v in pairs(saved) do if v then uv.os_setenv(k, v) else uv.os_unsetenv(k) end end
  net.cleanup()
end)

describe("credentials", function()
  it("gives the sandbox a per-sandbox placeholder and the gateway URL, never the key", function()
    local r = sh("cred", "env")
    expect(r.status):equals(0)
    expect(r.out).never:contains(SECRET)
    local key = r.out:match("ANTHROPIC_API_KEY=([^\n]+)")
    expect(key):truthy()
    expect(key):matches("^sk%-ant%-") -- the shape clients check, random per sandbox
    expect(key).never:equals(SECRET)
    expect(r.out):contains("ANTHROPIC_BASE_URL=http://127.0.0.1:3128/_gw/anthropic")
    -- nowhere in the sandbox's files or processes either
    r = sh("cred", "grep -rl 'REALkeyHeldOnlyByTheHost' /workspace /tmp /home /run/foundry /proc/*/environ 2>/dev/null; echo done")
    expect(r.out).never:contains("REALkey")
    expect(r.out):contains("done")
  end)

  it("adds the real key at the gateway: the upstream sees it, the sandbox does not", function()
    local r = sh("cred", [[curl -sS -m 10 "$ANTHROPIC_BASE_URL/echo-auth" -H "x-api-key: $ANTHROPIC_API_KEY"]])
    expect(r.status):equals(0)
    -- the upstream echoes the key it received back in the body: the proxy masks the real
    -- key (only the real key is masked, so this shows the upstream received it)
    expect(r.out).never:contains(SECRET)
    local sent = r.out:match('"you_sent": "([^"]*)"')
    expect(sent):equals(string.rep("*", #SECRET))
  end)

  it("mounts Foundry's CA: clients verify inspected hosts with no setup", function()
    local r = sh("cred", "echo $SSL_CERT_FILE $GIT_SSL_CAINFO $NODE_EXTRA_CA_CERTS; test -s $SSL_CERT_FILE && echo bundle-ok")
    expect(r.out):contains("/run/foundry/ca-bundle.crt /run/foundry/ca-bundle.crt /run/foundry/ca.crt")
    expect(r.out):contains("bundle-ok")
    -- an inspected HTTPS host: the proxy presents a leaf from Foundry's CA; curl verifies it
    r = sh("cred", "curl -sS -m 10 https://example.test/echo")
    expect(r.status):equals(0)
    expect(r.out):contains('"path"')
    -- the CA's key is not in the sandbox
    r = sh("cred", "ls /run/foundry; grep -l 'PRIVATE KEY' /run/foundry/* 2>/dev/null; echo end")
    expect(r.out).never:contains("PRIVATE")
    expect(r.out).never:contains("ca.key")
  end)

  it("leaves the secret nowhere after the session: files, logs, audit, state, ps, /proc", function()
    -- a failing request and a hook-less session have run; make sure audit rows are written
    foundry.sleep(300)
    L.ok{ "audit", "--json" }
    -- every file under FOUNDRY_HOME (state DB and its WAL, daemon log, run dirs, workspaces;
    -- the vault file is encrypted) and the test's repository
    local r = foundry.exec{ "grep", "-rlF", SECRET, env.home, env.repo }
    expect(r.stdout):equals("")
    -- the command lines and environments of every process on the host (the daemon's
    -- included: it read the passphrase, never the secret, from its environment)
    r = foundry.exec{ "sh", "-c", "ps -eo args; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'" }
    expect(r.stdout).never:contains(SECRET)
    -- and the container's logs
    r = L.cli{ "logs", "cred" }
    expect(r.stdout .. r.stderr).never:contains(SECRET)
  end)

  it("refuses hosts the policy does not name, with a JSON 403 the agent can act on", function()
    local r = sh("cred", "curl -sS -m 10 -o /dev/stderr -w '%{http_code}' http://not-allowed.example/")
    expect(r.out):contains("403")
    expect(r.out):contains("how_to_allow")
  end)

  it("uses a key replaced in the vault at once, without a reload or a new sandbox", { timeout = 30000 }, function()
    local NEW = "sk-ant-api03-ROTATEDkey-" .. string.rep("x", 40)
    setenv("FOUNDRY_VAULT_PASSPHRASE", "correct horse battery staple")
    L.ok{ "vault", "set", "work-anthropic", stdin = NEW }
    local sent
    for _ = 1, 50 do
      local r = sh("cred", [[curl -sS -m 10 "$ANTHROPIC_BASE_URL/echo-auth" -H "x-api-key: $ANTHROPIC_API_KEY"]])
      expect(r.out).never:contains(NEW)
      sent = r.out:match('"you_sent": "([^"]*)"')
      if sent == string.rep("*", #NEW) then break end
      foundry.sleep(100)
    end
    expect(sent):equals(string.rep("*", #NEW)) -- the new key, masked on its way back
    expect(fs.read(L.cli{ "daemon", "status", "--json" }.stdout:match('"log":"([^"]+)"'))):contains("the vault changed")
  end)
end)
