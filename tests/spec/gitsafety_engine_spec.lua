-- Git safety and the GitHub API rules through the real proxy engine on the host: the
-- real git and curl use the engine as their HTTPS proxy; it terminates TLS with Foundry's
-- CA, asks foundry.guards, and forwards to a local TLS stand-in for github.com and
-- api.github.com (tests/lib/git_http_server.py) mapped by the policy's overrides.
local F = dofile("tests/lib/git_fixture.lua")
local net = dofile("tests/lib/net.lua")
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]+$")
package.path = here .. "/../lib/?.lua;" .. package.path
local pfx = require "proxy_fixtures"
local guards = require "foundry.guards"
local json = require "foundry.json"
local fs = require "foundry.fs"

local SECRET = "ghs_REALtoken_for_the_upstream_0123456789"

local fx, engine, rows, ca, port, ws, ph

local function audit_rows(kind)
  local out = {}
  for _, r in ipairs(rows) do if r.kind == kind then out[#out + 1] = r end end
  return out
end

before_all(function()
  local certs = pfx.certs()
  fx = F.new({ tls = { cert = certs .. "/server.crt", key = certs .. "/server.key" } })
  fx:seed("acme/app", { README = "hello\n", [".github/workflows/ci.yml"] = "on: push\n" }, { "feature" }, { "v1" })
  fx:seed("other/lib", { ["lib.c"] = "int x;\n" })
  -- the sandbox's workspace: a clone made beside the proxy, as the lifecycle makes it
  ws = fx.dir .. "/ws"
  fx.env = { GIT_SSL_CAINFO = certs .. "/ca.crt" }
  fx:must(fx.dir, "clone", "-q", "-b", "main", "https://127.0.0.1:" .. fx.port .. "/acme/app.git", ws)
  fx:must(ws, "checkout", "-q", "-b", "sandbox/t1")
  local base = fx:must(ws, "rev-parse", "HEAD")
  local g = guards.new{ audit = function(r) rows[#rows + 1] = r end }
  engine, rows, ca = pfx.engine({ guard = g, secrets = function(n) return n == "GITHUB_TOKEN" and SECRET or nil end })
  ph = { GITHUB_TOKEN = require("foundry.proxy").placeholder("GITHUB_TOKEN") }
  local row = { name = "t1", branch = "sandbox/t1", base = "main", workspace = ws, repo = fx.dir .. "/seed-acme-app",
                spec = { repos = { "https://github.com/acme/app" } }, data = { ws = { base_commit = base } } }
  engine:add_sandbox{ name = "t1", policy = { extends = "github", overrides = pfx.overrides(fx.port) },
                      placeholders = ph, sandbox = row }
  port = engine:listen_tcp{ sandbox = "t1" }
  -- from now on git goes through the engine, trusting Foundry's CA only
  fx.env = { HTTPS_PROXY = "http://127.0.0.1:" .. port, https_proxy = "http://127.0.0.1:" .. port,
             GIT_SSL_CAINFO = ca }
  fx:must(ws, "remote", "set-url", "origin", "https://github.com/acme/app.git")
end)

after_all(function()
  if engine then engine:close() end
  if fx then fx:close() end
  net.cleanup()
end)

local function commit(msg, files)
  for path, content in pairs(files or { ["work.txt"] = msg .. "\n" }) do
    local d = path:match("^(.*)/[^/]+$")
    if d then foundry.exec{ "mkdir", "-p", ws .. "/" .. d, check = true } end
    fs.write(ws .. "/" .. path, content)
  end
  fx:must(ws, "add", "-A")
  fx:must(ws, "commit", "-qm", msg)
  return fx:must(ws, "rev-parse", "HEAD")
end

local function refused(r, rule, pattern)
  expect(r.ok):equals(false)
  expect(r.stderr):matches("remote: foundry: push refused by the sandbox's git policy %(rule: " .. rule:gsub("%-", "%%-") .. "%)")
  expect(r.stderr):contains("! [remote rejected]")
  if pattern then expect(r.stderr):matches(pattern) end
  expect(fx:reached("/git-receive-pack")):equals(0)
end

describe("git through the engine", function()
  it("pushes the sandbox's own branch, with the real token added on the way", function()
    local head = commit("first")
    fx:clear_log()
    local r = fx:git(ws, "push", "-u", "origin", "sandbox/t1")
    if not r.ok then error(r.stderr) end
    expect(fx:upstream_ref("acme/app", "sandbox/t1")):equals(head)
    local sent = fx:log()
    expect(#sent):gt(1)
    for _, e in ipairs(sent) do
      -- Basic x-access-token:<real token>, never the placeholder; v0 protocol only
      expect(e.authorization):equals("Basic " .. foundry.exec{ "base64", "-w0", stdin = "x-access-token:" .. SECRET }.stdout)
      expect(e.git_protocol == nil or e.git_protocol == json.null):equals(true)
    end
    local git_rows = audit_rows("git")
    expect(git_rows[#git_rows].rule):equals("git.push")
    expect(git_rows[#git_rows].decision):equals("allow")
  end)

  it("refuses a push to main, a force push and a workflow change, with git's remote: lines", function()
    commit("more")
    fx:clear_log()
    local main = fx:upstream_ref("acme/app", "main")
    refused(fx:git(ws, "push", "origin", "HEAD:main"), "protected", "main is a protected branch")
    expect(fx:upstream_ref("acme/app", "main")):equals(main)
    fx:must(ws, "push", "-q", "origin", "sandbox/t1")
    local pushed = fx:upstream_ref("acme/app", "sandbox/t1")
    expect(pushed):equals(fx:must(ws, "rev-parse", "HEAD"))
    fx:clear_log()
    fx:must(ws, "commit", "-q", "--amend", "-m", "rewritten")
    refused(fx:git(ws, "push", "--force", "origin", "sandbox/t1"), "fast-forward")
    fx:must(ws, "reset", "-q", "--hard", pushed)
    commit("ci", { [".github/workflows/x.yml"] = "on: push\n" })
    refused(fx:git(ws, "push", "origin", "sandbox/t1"), "restricted", "%.github/workflows/x%.yml")
    fx:must(ws, "reset", "-q", "--hard", pushed)
    expect(fx:upstream_ref("acme/app", "sandbox/t1")):equals(pushed)
    -- the engine's audit rows say it too
    local denied = 0
    for _, r in ipairs(rows) do if r.decision == "deny" and (r.rule or ""):match("^git%.push") then denied = denied + 1 end end
    expect(denied):gt(2)
  end)

  it("refuses a push from /tmp to another repository, with nothing sent upstream", function()
    local tmp = fx.dir .. "/elsewhere"
    fx:must(fx.dir, "init", "-q", tmp)
    fs.write(tmp .. "/evil.txt", "x\n")
    fx:must(tmp, "add", "-A")
    fx:must(tmp, "commit", "-qm", "evil")
    fx:clear_log()
    refused(fx:git(tmp, "push", "https://github.com/other/lib.git", "HEAD:refs/heads/main"), "repository")
    expect(#fx:log()):equals(0)
  end)

  it("shows the sandbox its branch, its base and tags; hides the rest", function()
    local r = fx:git(ws, "ls-remote", "origin")
    expect(r.ok):equals(true)
    expect(r.stdout):contains("refs/heads/sandbox/t1")
    expect(r.stdout):contains("refs/heads/main")
    expect(r.stdout):contains("refs/tags/v1")
    expect(r.stdout).never:contains("refs/heads/feature")
    expect(fx:git(ws, "fetch", "origin", "main").ok):equals(true)
    r = fx:git(ws, "fetch", "origin", "feature")
    expect(r.ok):equals(false)
    expect(r.stderr):contains("couldn't find remote ref feature")
  end)

  it("rewrites SSH remotes to HTTPS so they take the same path", function()
    fs.write(fx.home .. "/.gitconfig", fs.sync.read(fx.home .. "/.gitconfig") .. require("foundry.gitsafety").gitconfig())
    local r = fx:git(ws, "push", "git@github.com:acme/app.git", "HEAD:main")
    refused(r, "protected")
    r = fx:git(ws, "ls-remote", "ssh://git@github.com/acme/app")
    expect(r.ok):equals(true)
    expect(r.stdout).never:contains("refs/heads/feature")
  end)
end)

describe("the GitHub API through the engine", function()
  local function api(method, path, body)
    return pfx.curl{ proxy_port = port, cacert = ca, method = method, url = "https://api.github.com" .. path,
                     headers = { "Authorization: Bearer " .. ph.GITHUB_TOKEN, "Content-Type: application/json" },
                     data = body and json.encode(body) or nil }
  end

  it("refuses merging (REST and GraphQL) with a 403 gh can print; nothing reaches GitHub", function()
    fx:clear_log()
    local r = api("PUT", "/repos/acme/app/pulls/1/merge", {})
    expect(r.status):equals(403)
    expect(r.json.message):matches("^foundry: merging pull requests is not allowed")
    r = api("POST", "/graphql", { query = 'mutation { m: mergePullRequest(input: {pullRequestId: "PR_1"}) { clientMutationId } }' })
    expect(r.status):equals(403)
    expect(r.json.errors[1].message):matches("merging pull requests")
    r = api("POST", "/repos/acme/app/pulls/1/reviews", { event = "APPROVE" })
    expect(r.status):equals(403)
    r = api("PUT", "/repos/acme/app/contents/README", { message = "m", content = "eA==", branch = "main" })
    expect(r.status):equals(403)
    expect(#fx:log()):equals(0)
  end)

  it("lets reads, comments and a pull request from its own branch through, with the real token", function()
    fx:clear_log()
    expect(api("GET", "/repos/acme/app/pulls").status):equals(200)
    expect(api("POST", "/repos/acme/app/issues/1/comments", { body = "done" }).status):equals(200)
    local pr = api("POST", "/repos/acme/app/pulls", { head = "sandbox/t1", base = "main", title = "x" })
    expect(pr.status):equals(201)
    local sent = fx:log()
    expect(#sent):equals(3)
    expect(sent[1].authorization):equals("Bearer " .. SECRET)
    -- it opened that one: it may close it; not another
    expect(api("PATCH", "/repos/acme/app/pulls/" .. pr.json.number, { state = "closed" }).status):equals(200)
    expect(api("PATCH", "/repos/acme/app/pulls/" .. (pr.json.number + 100), { state = "closed" }).status):equals(403)
    expect(api("POST", "/repos/acme/app/pulls", { head = "feature", base = "main", title = "x" }).status):equals(403)
    local gh_rows = audit_rows("github")
    expect(#gh_rows):gt(5)
  end)
end)
