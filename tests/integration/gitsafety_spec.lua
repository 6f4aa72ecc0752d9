-- Git safety end to end: a real sandbox (foundry new, the daemon, the shim's bridge, the
-- proxy engine with its guards) whose real git and curl reach a local TLS stand-in for
-- github.com and api.github.com (tests/lib/git_http_server.py, mapped by the policy's
-- overrides). Pushes of the sandbox's own branch go through; every other push is refused
-- with git's remote: lines and nothing reaching the upstream; auto-commit commits once
-- after a burst of hook events and pushes through the same rules.
local L = dofile("tests/integration/lib.lua")
L.skip = skip
local F = dofile("tests/lib/git_fixture.lua")
local net = dofile("tests/lib/net.lua")
package.path = "tests/lib/?.lua;" .. package.path
local pfx = require "proxy_fixtures"
local fs = require "foundry.fs"
local uv = require "luv"

local env, fx
local SECRET = "ghs_REALtokenForTheUpstream_0123456789"
local saved = {}

local function setenv(k, v)
  saved[k] = saved[k] or os.getenv(k) or false
  uv.os_setenv(k, v)
end

-- Run a shell script in the sandbox as its user; returns {status=, out=} (stdout+stderr).
local function sh(script)
  local r = L.cli{ "exec", "gs", "sh", "-c", "cd /workspace && (" .. script .. ") 2>&1" }
  return { status = r.status, out = (r.stdout or "") .. (r.stderr or "") }
end

local function refused(r, rule)
  expect(r.status).never:equals(0)
  expect(r.out):matches("remote: foundry: push refused by the sandbox's git policy %(rule: " .. rule:gsub("%-", "%%-") .. "%)")
  expect(r.out):contains("[remote rejected]")
  expect(fx:reached("/git-receive-pack")):equals(0)
end

before_all(function()
  env = L.setup()
  local certs = pfx.certs()
  fx = F.new({ tls = { cert = certs .. "/server.crt", key = certs .. "/server.key" } })
  -- the upstream holds the user's repository; the user's clone names it as origin
  fs.mkdir(fx.root .. "/acme")
  fx:must(fx.dir, "init", "-q", "--bare", fx.root .. "/acme/app.git")
  fx:must(env.repo, "push", "-q", fx.root .. "/acme/app.git", "main", "feature")
  fx:must(env.repo, "remote", "add", "origin", "https://github.com/acme/app.git")
  fx:seed("other/lib", { ["lib.c"] = "int x;\n" })
  -- the daemon trusts the stand-in's CA for upstreams and holds the real token
  setenv("FOUNDRY_UPSTREAM_CA_FILE", certs .. "/ca.crt")
  setenv("GITHUB_TOKEN", SECRET)
  L.ok{ "daemon", "start" }
  fs.write(env.root .. "/policy.lua", string.format(
    'return { extends = "github", overrides = { ["github.com"] = "127.0.0.1:%d", ["api.github.com"] = "127.0.0.1:%d" } }\n',
    fx.port, fx.port))
  fs.write(env.root .. "/presets/gs.lua", string.format([[
return {
  policy = %q,
  hooks = { post_tool_use = "commit", debounce_ms = 1500, push = true },
}
]], env.root .. "/policy.lua"))
  L.ok{ "new", "-d", "-n", "gs", "-p", "gs" }
  local r = sh("git remote add origin https://github.com/acme/app.git || git remote set-url origin https://github.com/acme/app.git")
  expect(r.status):equals(0)
end)

after_all(function()
  pcall(L.cli, { "rm", "-y", "gs" })
  L.teardown()
  if fx then fx:close() end
  for k, v in pairs(saved) do if v then uv.os_setenv(k, v) else uv.os_unsetenv(k) end end
  net.cleanup()
end)

describe("git inside a sandbox", function()
  it("pushes its own branch through the proxy, with the real token added there", function()
    fx:clear_log()
    local r = sh("echo work > work.txt && git add -A && git commit -qm work && git push -u origin HEAD:sandbox/gs")
    if r.status ~= 0 then error(r.out) end
    local head = sh("git rev-parse HEAD").out:gsub("%s+$", "")
    expect(fx:upstream_ref("acme/app", "sandbox/gs")):equals(head)
    local sent = fx:log()
    expect(#sent):gt(0)
    for _, e in ipairs(sent) do
      expect(e.authorization):matches("^Basic ")
    end
    -- the sandbox never held the token
    expect(sh("env; cat ~/.gitconfig").out).never:contains(SECRET)
  end)

  it("refuses a push to main, another branch, a new branch, a deletion", function()
    fx:clear_log()
    refused(sh("git push origin HEAD:main"), "protected")
    refused(sh("git push origin HEAD:refs/heads/feature"), "branch")
    refused(sh("git push origin HEAD:brand-new"), "branch")
    refused(sh("git push origin :sandbox/gs"), "delete")
    expect(fx:upstream_ref("acme/app", "brand-new")):is_nil()
  end)

  it("refuses +refspec, --force, --force-with-lease, --mirror", function()
    local pushed = fx:upstream_ref("acme/app", "sandbox/gs")
    expect(sh("git commit -q --amend -m rewritten").status):equals(0)
    fx:clear_log()
    refused(sh("git push origin +HEAD:sandbox/gs"), "fast-forward")
    refused(sh("git push --force origin HEAD:sandbox/gs"), "fast-forward")
    refused(sh("git push --force-with-lease=sandbox/gs:" .. pushed .. " origin HEAD:sandbox/gs"), "fast-forward")
    local m = sh("git push --mirror origin")
    expect(m.status).never:equals(0)
    expect(m.out):contains("remote: foundry: push refused")
    expect(fx:reached("/git-receive-pack")):equals(0)
    expect(fx:upstream_ref("acme/app", "sandbox/gs")):equals(pushed)
    expect(sh("git reset -q --hard " .. pushed).status):equals(0)
  end)

  it("refuses a push adding .github/workflows/x.yml", function()
    fx:clear_log()
    refused(sh("mkdir -p .github/workflows && echo 'on: push' > .github/workflows/x.yml && git add -A && " ..
               "git commit -qm ci && git push origin HEAD:sandbox/gs"), "restricted")
    expect(sh("git reset -q --hard HEAD~1").status):equals(0)
  end)

  it("refuses a push from /tmp to another repository's URL, and SSH remotes take the same path", function()
    fx:clear_log()
    refused(sh("cd /tmp && rm -rf evil && git init -q evil && cd evil && echo x > x && git add x && " ..
               "git commit -qm x && git push https://github.com/other/lib.git HEAD:refs/heads/main"), "repository")
    expect(#fx:log()):equals(0)
    refused(sh("git push git@github.com:acme/app.git HEAD:main"), "protected")
  end)

  it("fetches its own branch, its base and tags, never another branch", function()
    local r = sh("git ls-remote origin")
    expect(r.status):equals(0)
    expect(r.out):contains("refs/heads/sandbox/gs")
    expect(r.out).never:contains("refs/heads/feature")
    r = sh("git fetch origin feature")
    expect(r.status).never:equals(0)
    expect(r.out):contains("couldn't find remote ref feature")
  end)

  it("is refused merging through the API with curl; reading is fine", function()
    fx:clear_log()
    local r = sh("curl -sS -X PUT -H 'Authorization: Bearer x' https://api.github.com/repos/acme/app/pulls/1/merge -d '{}'")
    expect(r.out):contains("foundry: merging pull requests is not allowed")
    r = sh("curl -sS https://api.github.com/repos/acme/app/pulls")
    expect(r.out):contains('"ok": true')
    expect(#fx:log()):equals(1)
  end)
end)

describe("auto-commit", function()
  local function upstream_count()
    local r = fx:git(fx.root .. "/acme/app.git", "rev-list", "--count", "sandbox/gs")
    return tonumber((r.stdout:gsub("%s", ""))) or 0
  end

  it("commits once after a burst of 20 hook events and pushes through the git rules", { timeout = 60000 }, function()
    local before = upstream_count()
    local script = {}
    for i = 1, 20 do
      script[#script + 1] = "echo change" .. i .. " > auto" .. i .. ".txt; echo '{}' | foundry-shim notify post-tool-use; sleep 0.05"
    end
    expect(sh(table.concat(script, "; ")).status):equals(0)
    expect(net.eventually(function() return upstream_count() > before end, 30000, 200)):truthy()
    foundry.sleep(2500) -- no second commit from the same burst
    expect(upstream_count()):equals(before + 1)
    expect(sh("git status --porcelain").out):equals("")
    -- later events: one more commit
    expect(sh("echo again > auto1.txt; echo '{}' | foundry-shim notify post-tool-use").status):equals(0)
    expect(net.eventually(function() return upstream_count() == before + 2 end, 30000, 200)):truthy()
  end)

  it("reports an auto-push the rules refuse, and nothing reaches the upstream", { timeout = 60000 }, function()
    local before = fx:upstream_ref("acme/app", "sandbox/gs")
    fx:clear_log()
    expect(sh("mkdir -p .github/workflows && echo 'on: push' > .github/workflows/auto.yml && " ..
              "echo '{}' | foundry-shim notify post-tool-use").status):equals(0)
    local denied = net.eventually(function()
      local a = L.cli{ "audit", "gs", "--json" }
      return (a.stdout or ""):find("git.push.restricted", 1, true) ~= nil
    end, 30000, 300)
    expect(denied):truthy()
    expect(fx:upstream_ref("acme/app", "sandbox/gs")):equals(before)
    expect(fx:reached("/git-receive-pack")):equals(0)
  end)
end)
