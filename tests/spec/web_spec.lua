-- The web console without a container engine: its security (token, cookie, Host,
-- origin, CSP, terminal tickets, the editor's confinement), its JSON API over real
-- state, the live stream, the diff of a real git workspace, chat. A real server in this
-- process; curl and a raw WebSocket client (tests/lib/ws_client.py) as clients.
local fs = require "foundry.fs"
local json = require "foundry.json"
local uv = require "luv"
local W = dofile("tests/lib/web.lua")

local H = dofile("tests/lib/home.lua")
local home, leave, repo, ws

local function git(...)
  local argv = { "git", "-C", repo, ... }
  argv.check = true
  return foundry.exec(argv)
end

before_all(function()
  home, leave = H.enter("/tmp/foundry-web-XXXXXX", "home")
  repo = home .. "/repo"
  foundry.exec{ "git", "init", "-q", "-b", "main", repo, check = true }
  git("config", "user.email", "t@example.com")
  git("config", "user.name", "Tester")
  fs.write(repo .. "/README.md", "# test\nline two\n")
  fs.mkdir(repo .. "/src")
  fs.write(repo .. "/src/app.txt", "app\n")
  git("add", ".")
  git("commit", "-q", "-m", "initial")
  -- a sandbox row with a real workspace (no container: the engine is not needed here)
  local sandbox = require "foundry.sandbox"
  ws = sandbox.workspaces().create{ source = repo, name = "alpha" }
  require("foundry.state").sandboxes.insert{ name = "alpha", state = "running", repo = repo, branch = ws.branch,
    base = ws.base, image = "foundry-test:base", network = "none", workspace = ws.tree or ws.path,
    data = { ws = ws.record and ws:record() or ws } }
  W.start{ repo = repo }
end)

after_all(function()
  W.stop()
  pcall(function() ws:destroy({}) end)
  leave()
end)

after_each(function() W.settle() end)

describe("access", function()
  it("answers 401 without the token, 303 with a session cookie for it, 200 with the cookie", function()
    local r = W.http{ "GET", "/", auth = false }
    expect(r.status):equals(401)
    expect(r.body):contains("foundry serve")
    r = W.http{ "GET", "/api/sandboxes", auth = false }
    expect(r.status):equals(401)
    expect(r.json.error.code):equals("web.unauthorized")
    r = W.http{ "GET", "/?token=" .. W.token, auth = false }
    expect(r.status):equals(303)
    expect(r.headers.location):equals("/")
    local cookie = r.headers["set-cookie"]
    expect(cookie):matches("^foundry_console_%d+=%x+; Path=/; HttpOnly; SameSite=Strict$")
    r = W.http{ "GET", "/", auth = false, headers = { Cookie = cookie:match("^([^;]+)") } }
    expect(r.status):equals(200)
    expect(r.body):contains("/assets/app.js")
    r = W.http{ "GET", "/sandbox/alpha?token=" .. W.token .. "&x=1", auth = false }
    expect(r.status):equals(303)
    expect(r.headers.location):equals("/sandbox/alpha?x=1")
  end)

  it("refuses a wrong token, cookie or bearer (and a token one digit short)", function()
    local wrong = W.token:sub(1, -2) .. (W.token:sub(-1) == "0" and "1" or "0")
    expect(W.http{ "GET", "/?token=" .. wrong, auth = false }.status):equals(401)
    expect(W.http{ "GET", "/?token=" .. W.token:sub(1, -2), auth = false }.status):equals(401)
    expect(W.http{ "GET", "/api/sandboxes", auth = false, headers = { Authorization = "Bearer " .. wrong } }.status):equals(401)
    local name = W.console.guard.cookie_name
    expect(W.http{ "GET", "/api/sandboxes", auth = false, headers = { Cookie = name .. "=" .. W.token } }.status):equals(401)
    expect(W.http{ "GET", "/api/sandboxes", auth = "cookie" }.status):equals(200)
    -- the token in a query does not authenticate the API (it belongs in the page URL only)
    expect(W.http{ "GET", "/api/sandboxes?token=" .. W.token, auth = false }.status):equals(401)
  end)

  it("refuses another Host (DNS rebinding) even with the token, and takes localhost", function()
    local r = W.http{ "GET", "/api/sandboxes", headers = { Host = "evil.example:" .. W.console.port } }
    expect(r.status):equals(421)
    r = W.http{ "GET", "/?token=" .. W.token, auth = false, headers = { Host = "attacker.test" } }
    expect(r.status):equals(421)
    expect(r.headers["set-cookie"]):equals(nil)
    r = W.http{ "GET", "/api/sandboxes", headers = { Host = "localhost:" .. W.console.port } }
    expect(r.status):equals(200)
    r = W.http{ "GET", "/api/sandboxes", headers = { Host = "127.0.0.1:1" .. W.console.port } }
    expect(r.status):equals(421)
  end)

  it("sends a strict CSP and the other protective headers on every answer, and no CORS", function()
    for _, r in ipairs({
      W.http{ "GET", "/" }, W.http{ "GET", "/", auth = false }, W.http{ "GET", "/nowhere" },
      W.http{ "GET", "/api/sandboxes", headers = { Host = "evil.example" } },
      W.http{ "GET", "/api/sandboxes", headers = { Origin = "http://evil.example" } },
    }) do
      local csp = r.headers["content-security-policy"]
      expect(csp):matches("default%-src 'none'")
      expect(csp):matches("script%-src 'self';")
      expect(csp).never:matches("unsafe")
      expect(csp):matches("frame%-ancestors 'none'")
      expect(r.headers["x-content-type-options"]):equals("nosniff")
      expect(r.headers["referrer-policy"]):equals("no-referrer")
      expect(r.headers["access-control-allow-origin"]):equals(nil)
    end
    local pre = W.http{ "OPTIONS", "/api/sandboxes", headers = { Origin = "http://evil.example",
      ["Access-Control-Request-Method"] = "DELETE" } }
    expect(pre.status):equals(405)
    expect(pre.headers["access-control-allow-origin"]):equals(nil)
  end)

  it("refuses changes from another origin, and bodies that are not JSON", function()
    local r = W.http{ "POST", "/api/sandboxes/alpha/chat", json = { text = "hi" },
      headers = { Origin = "http://evil.example" } }
    expect(r.status):equals(403)
    r = W.http{ "POST", "/api/sandboxes/alpha/chat", body = "text=hi",
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } }
    expect(r.status):equals(415)
    expect(#require("foundry.state").chat.list({ sandbox = "alpha" })):equals(0)
  end)

  it("records refusals in the audit log", function()
    W.http{ "GET", "/api/sandboxes", headers = { Host = "rebind.example" } }
    require("foundry.audit").flush()
    local rows = require("foundry.audit").query({ kind = "console", decision = "deny" })
    local seen = false
    for _, row in ipairs(rows) do if row.rule == "host" then seen = true end end
    expect(seen):is(true)
  end)
end)

describe("terminal tickets", function()
  local function port() return W.console.port end

  it("refuses a forged, expired, reused or misdirected ticket with 401 before any upgrade", function()
    local g = W.console.guard
    local good = g:ticket("alpha")
    local exp, nonce, mac = good:match("^(%d+)~(%x+)~(%x+)$")
    local cases = {
      forged = exp .. "~" .. nonce .. "~" .. string.rep("0", 64),
      tampered_expiry = (tonumber(exp) + 3600000) .. "~" .. nonce .. "~" .. mac,
      expired = g:ticket("alpha", -1000),
      other_sandbox = g:ticket("beta"),
      malformed = "abc",
      none = nil,
    }
    for what, t in pairs(cases) do
      local r = W.ws("/ws/terminal/alpha?mode=shell" .. (t and ("&ticket=" .. t) or ""), {})
      if r.status ~= 401 then error(what .. ": status " .. tostring(r.status), 0) end
      expect(r.body):contains("ticket")
    end
    -- a good ticket opens once (the sandbox has no container: the bridge says so and closes)
    local r1 = W.ws("/ws/terminal/alpha?mode=shell&ticket=" .. good, { { wait_close = 10 } })
    expect(r1.status):equals(101)
    expect(table.concat(r1.texts)):contains("not running")
    local r2 = W.ws("/ws/terminal/alpha?mode=shell&ticket=" .. good, {})
    expect(r2.status):equals(401)
    expect(port()):gt(0)
  end)

  it("needs the session and the console's Origin besides the ticket", function()
    local g = W.console.guard
    expect(W.ws("/ws/terminal/alpha?ticket=" .. g:ticket("alpha"), {}, { cookie = false }).status):equals(401)
    expect(W.ws("/ws/terminal/alpha?ticket=" .. g:ticket("alpha"), {}, { origin = "http://evil.example" }).status):equals(403)
    expect(W.ws("/ws/terminal/alpha?ticket=" .. g:ticket("alpha"), {}, { origin = false }).status):equals(403)
  end)

  it("is handed out by the API, bound to the sandbox, for 60 seconds", function()
    local url = W.terminal_url("alpha", "shell")
    local exp = tonumber(url:match("ticket=(%d+)~"))
    expect(exp - require("foundry.state").now()):gt(50000)
    expect(exp - require("foundry.state").now()):lt(61000)
    local r = W.http{ "POST", "/api/sandboxes/nosuch/terminal", json = {} }
    expect(r.status):equals(404)
  end)
end)

describe("fleet and settings", function()
  it("lists the sandboxes as JSON with their state, branch, image and network", function()
    local r = W.http{ "GET", "/api/sandboxes" }
    expect(r.status):equals(200)
    expect(r.headers["content-type"]):matches("^application/json")
    local list = r.json.sandboxes
    expect(#list):equals(1)
    expect(list[1].name):equals("alpha")
    expect(list[1].branch):equals("sandbox/alpha")
    expect(list[1].image):equals("foundry-test:base")
    expect(list[1].network):equals("none")
    expect(list[1].created_ms):is_a("number")
    -- no container was made: the engine's view (when it answers) says so
    if r.json.engine then expect(list[1].state):equals("missing") end
    r = W.http{ "GET", "/api/sandboxes/alpha" }
    expect(r.json.name):equals("alpha")
    expect(#r.json.stages):equals(10)
    expect(r.json.stages[1].name):equals("provision")
    expect(W.http{ "GET", "/api/sandboxes/nosuch" }.status):equals(404)
  end)

  it("shows the vault's secret names and never a value", function()
    local vault = require "foundry.vault"
    local secret = "sk-ant-api03-" .. string.rep("Zq9", 20)
    local v = vault.init{ passphrase = "correct horse battery", kdf = { log2n = 10, r = 8, p = 1 } }
    v:set("anthropic", secret)
    v:set("github", "ghp_" .. string.rep("a1B2", 9))
    local r = W.http{ "GET", "/api/settings" }
    expect(r.status):equals(200)
    local names = {}
    for _, s in ipairs(r.json.vault.secrets) do names[#names + 1] = s.name; expect(s.size):equals(nil) end
    table.sort(names)
    expect(names):equals({ "anthropic", "github" })
    expect(r.body).never:contains(secret)
    expect(r.body).never:contains("ghp_")
    expect(r.json.defaults.stages[10]):equals("ready")
    v:lock()
  end)
end)

describe("live stream", function()
  it("sends a new log row of the watched sandbox as it is written, redacted", { timeout = 20000 }, function()
    local state = require "foundry.state"
    local token = "ghp_" .. string.rep("Xy7", 12)
    local writer = foundry.after(800, function()
      state.logs.add{ sandbox = "alpha", stream = "agent", text = "pushed with " .. token .. " ok" }
      state.chat.add{ sandbox = "alpha", role = "agent", text = "done" }
    end)
    local r = W.http{ "GET", "/api/stream?sandbox=alpha&fleet=0", timeout = 3 }
    writer:join()
    expect(r.status):equals(200)
    expect(r.headers["content-type"]):matches("^text/event%-stream")
    local logs, chats, detail = {}, {}, nil
    for name, payload in r.body:gmatch("event: (%w+)\ndata: ([^\n]*)\n\n") do
      local v = json.decode(payload)
      if name == "log" then logs[#logs + 1] = v end
      if name == "chat" then chats[#chats + 1] = v end
      if name == "sandbox" then detail = v end
    end
    expect(detail.name):equals("alpha")
    local found
    for _, l in ipairs(logs) do if l.kind == "log" and l.stream == "agent" then found = l end end
    expect(found.text):equals("pushed with [REDACTED:github_token] ok")
    expect(r.body).never:contains(token)
    expect(chats[#chats].text):equals("done")
  end)

  it("resumes after the cursors it is given: nothing twice", { timeout = 20000 }, function()
    local state = require "foundry.state"
    local last = state.logs.list({ sandbox = "alpha", limit = 1 })[1].id
    state.logs.add{ sandbox = "alpha", stream = "agent", text = "after the cursor" }
    local r = W.http{ "GET", "/api/stream?sandbox=alpha&fleet=0&log=" .. last .. "&event=999999&audit=999999&chat=999999",
      timeout = 2 }
    local texts = {}
    for payload in r.body:gmatch("event: log\ndata: ([^\n]*)\n\n") do texts[#texts + 1] = json.decode(payload).text end
    expect(texts):equals({ "after the cursor" })
  end)
end)

describe("editor", function()
  local root
  before_all(function()
    root = require("foundry.state").sandboxes.get("alpha").workspace
    fs.write(home .. "/outside.txt", "host secret file\n")
    uv.fs_symlink(home, root .. "/escape")                 -- a directory link out
    uv.fs_symlink(home .. "/outside.txt", root .. "/link.txt") -- a file link out
  end)

  local function get(path, raw)
    return W.http{ "GET", "/api/sandboxes/alpha/files?path=" .. path, raw_path = raw }
  end

  it("lists the work tree and reads a file with its hash", function()
    local r = get("")
    expect(r.status):equals(200)
    local names = {}
    for _, e in ipairs(r.json.entries) do names[#names + 1] = e.name end
    expect(names[1]):equals("src") -- directories first
    expect(table.concat(names, " ")).never:contains(".git")
    r = get("src/app.txt")
    expect(r.json.content):equals("app\n")
    expect(r.json.sha256):equals(require("foundry.crypto").sha256_hex("app\n"))
  end)

  it("refuses .., absolute paths, encoded traversal, symlinks out and the git directory", function()
    for _, p in ipairs({ "../outside.txt", "..%2Foutside.txt", "%2E%2E/outside.txt", "src/../../outside.txt",
                         "/etc/passwd", "%2Fetc%2Fpasswd", "escape/outside.txt", "link.txt", ".git/config",
                         "src/./app.txt", "src//app.txt", "a%00b" }) do
      local r = get(p)
      if r.status ~= 403 and r.status ~= 404 then error(p .. ": status " .. tostring(r.status) .. " " .. r.body, 0) end
      expect(r.body).never:contains("host secret file")
    end
    expect(get("escape/outside.txt").status):equals(403)
    expect(get("link.txt").status):equals(403)
    for _, p in ipairs({ "../outside.txt", "link.txt", "escape/outside.txt", "escape/new.txt", ".git/hooks/pre-commit" }) do
      local r = W.http{ "PUT", "/api/sandboxes/alpha/files?path=" .. p, json = { content = "owned\n", create = true } }
      if r.status ~= 403 then error("write " .. p .. ": status " .. tostring(r.status) .. " " .. r.body, 0) end
    end
    expect(fs.read(home .. "/outside.txt")):equals("host secret file\n")
    expect(fs.exists(home .. "/new.txt")):is(false)
  end)

  it("writes atomically, keeps the mode, and refuses to overwrite a file that changed since", function()
    local path = root .. "/src/app.txt"
    uv.fs_chmod(path, tonumber("755", 8))
    local r = get("src/app.txt")
    local w = W.http{ "PUT", "/api/sandboxes/alpha/files?path=src/app.txt", json = { content = "edited\n", sha256 = r.json.sha256 } }
    expect(w.status):equals(200)
    expect(fs.read(path)):equals("edited\n")
    expect(uv.fs_stat(path).mode & tonumber("777", 8)):equals(tonumber("755", 8))
    -- the agent changes it meanwhile: the stale save is refused and the agent's text stays
    fs.write(path, "agent's version\n")
    local stale = W.http{ "PUT", "/api/sandboxes/alpha/files?path=src/app.txt", json = { content = "mine\n", sha256 = w.json.sha256 } }
    expect(stale.status):equals(409)
    expect(fs.read(path)):equals("agent's version\n")
    -- new files: create=true, and only when absent
    local c = W.http{ "PUT", "/api/sandboxes/alpha/files?path=docs/new.md", json = { content = "# new\n", create = true } }
    expect(c.status):equals(200)
    expect(fs.read(root .. "/docs/new.md")):equals("# new\n")
    expect(W.http{ "PUT", "/api/sandboxes/alpha/files?path=docs/new.md", json = { content = "x", create = true } }.status):equals(409)
    expect(W.http{ "PUT", "/api/sandboxes/alpha/files?path=src/app.txt", json = { content = "x" } }.status):equals(400)
    local left = {}
    for _, e in ipairs(fs.list(root .. "/src")) do left[#left + 1] = e.name end
    expect(left):equals({ "app.txt" }) -- no temporary file left behind
  end)

  it("shows a file holding a secret redacted, and marks it", function()
    fs.write(root .. "/.env", "GITHUB_TOKEN=ghp_" .. string.rep("Qw3", 12) .. "\n")
    local r = get(".env")
    expect(r.json.content):equals("GITHUB_TOKEN=[REDACTED:github_token]\n")
    expect(r.json.redacted):is(true)
    fs.rm(root .. "/.env")
  end)

  it("does not hang on a FIFO the sandbox made", { timeout = 10000 }, function()
    foundry.exec{ "mkfifo", root .. "/pipe", check = true }
    expect(get("pipe").status):equals(403)
    fs.rm(root .. "/pipe")
  end)
end)

describe("file changes", function()
  it("returns a change made in the workspace, per file with its diff", function()
    local root = require("foundry.state").sandboxes.get("alpha").workspace
    fs.write(root .. "/README.md", "# test\nline two changed\n")
    fs.write(root .. "/added.txt", "brand new\n")
    local r = W.http{ "GET", "/api/sandboxes/alpha/changes" }
    expect(r.status):equals(200)
    local by = {}
    for _, f in ipairs(r.json.files) do by[f.path] = f end
    expect(by["README.md"].status):equals("modified")
    expect(by["README.md"].patch):contains("-line two\n+line two changed\n")
    expect(by["README.md"].patch):matches("^@@ ")
    expect(by["added.txt"].status):equals("added")
    expect(by["added.txt"].additions):equals(1)
    expect(r.json.additions):gt(1)
  end)

  it("parses the git program's unified diff the same way (the worktree fallback)", function()
    local changes = require "foundry.web.changes"
    local d = changes.parse(table.concat({
      "diff --git a/a.txt b/a.txt", "index 1..2 100644", "--- a/a.txt", "+++ b/a.txt", "@@ -1 +1 @@", "-x", "+y",
      "diff --git a/n.txt b/n.txt", "new file mode 100644", "--- /dev/null", "+++ b/n.txt", "@@ -0,0 +1,2 @@", "+1", "+2",
      "diff --git a/old.bin b/new.bin", "similarity index 90%", "rename from old.bin", "rename to new.bin",
      "Binary files a/old.bin and b/new.bin differ", "" }, "\n"))
    expect(#d.files):equals(3)
    expect(d.files[1].status):equals("modified")
    expect(d.files[1].patch):equals("@@ -1 +1 @@\n-x\n+y\n")
    expect(d.files[2].status):equals("added")
    expect(d.files[2].additions):equals(2)
    expect(d.files[3].status):equals("renamed")
    expect(d.files[3].old_path):equals("old.bin")
    expect(d.files[3].binary):is(true)
    expect(d.additions):equals(3)
  end)
end)

describe("chat", function()
  it("stores a message, and says it was not delivered when no agent session runs", function()
    local r = W.http{ "POST", "/api/sandboxes/alpha/chat", json = { text = "please run the tests" } }
    expect(r.status):equals(201)
    expect(r.json.text):equals("please run the tests")
    expect(r.json.data.delivered):is(false)
    local rows = require("foundry.state").chat.list({ sandbox = "alpha" })
    expect(rows[#rows].text):equals("please run the tests")
    expect(rows[#rows].role):equals("user")
    expect(W.http{ "POST", "/api/sandboxes/alpha/chat", json = { text = "  " } }.status):equals(400)
    local g = W.http{ "GET", "/api/sandboxes/alpha/chat" }
    expect(g.json.messages[#g.json.messages].text):equals("please run the tests")
  end)
end)

describe("assets", function()
  it("serves the page, its script and style, and xterm.js from the system", function()
    expect(W.http{ "GET", "/assets/app.js" }.headers["content-type"]):matches("^text/javascript")
    expect(W.http{ "GET", "/assets/app.css" }.headers["content-type"]):matches("^text/css")
    local x = W.http{ "GET", "/assets/xterm.js" }
    local have = require("foundry.web.assets").xterm()
    if have then
      expect(x.status):equals(200)
      expect(x.body):contains("FoundryXterm")
    else
      expect(x.status):equals(404)
      expect(x.body):contains("node-xterm")
    end
  end)
end)

describe("foundry serve", function()
  local net = dofile("tests/lib/net.lua")
  after_each(function() net.cleanup() end)

  it("prints its URL as JSON, serves it, and stops cleanly on SIGTERM", { timeout = 30000 }, function()
    local p = net.start({ uv.exepath(), "serve", "--port", "0", "--json" }, { env = { FOUNDRY_HOME = home .. "/home" } })
    local line = net.eventually(function() return p:stdout():match("^[^\n]+\n") end, 10000)
    expect(line).never:equals(nil)
    local info = json.decode(line)
    expect(info.url):matches("^http://127%.0%.0%.1:%d+/%?token=%x+$")
    expect(#info.url:match("token=(%x+)")):equals(64)
    expect(info.pid):equals(p.pid)
    local r = foundry.exec{ "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", info.url }
    expect(r.stdout):equals("303")
    r = foundry.exec{ "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", info.base_url }
    expect(r.stdout):equals("401")
    p:kill("sigterm")
    local status = p:wait(10000)
    expect(status):equals(0)
  end)

  it("refuses a port in use when it was asked for, with a hint", { timeout = 30000 }, function()
    local r = foundry.exec{ uv.exepath(), "serve", "--port", tostring(W.console.port), env = { FOUNDRY_HOME = home .. "/home" },
      timeout = 20000 }
    expect(r.status):equals(1)
    expect(r.stderr):contains("cannot listen on 127.0.0.1:" .. W.console.port)
    expect(r.stderr):contains("--port")
  end)
end)

describe("the HTTP server", function()
  local net = dofile("tests/lib/net.lua")
  local function raw(data)
    local s = net.tcp_connect("127.0.0.1", W.console.port)
    s:write(data)
    local out = s:read_all(10000)
    s:close()
    return out
  end
  local function host() return "Host: 127.0.0.1:" .. W.console.port .. "\r\n" end
  local auth = function() return "Authorization: Bearer " .. W.token .. "\r\n" end

  it("answers malformed input with 400 and closes", function()
    expect(raw("NOT HTTP AT ALL\r\n\r\n")):matches("^HTTP/1%.1 400 ")
    expect(raw("GET / HTTP/1.1\r\n" .. host() .. host() .. "\r\n")):matches("^HTTP/1%.1 400 ")
  end)

  it("answers a body over the limit with 413 before reading it", function()
    local out = raw("PUT /api/sandboxes/alpha/files?path=x HTTP/1.1\r\n" .. host() .. auth() ..
      "Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n{")
    expect(out):matches("^HTTP/1%.1 413 ")
  end)

  it("answers pipelined requests in order on one connection", function()
    local req = "GET /api/sandboxes/alpha HTTP/1.1\r\n" .. host() .. auth() .. "\r\n"
    local out = raw(req .. req:gsub("/alpha", "/nosuch") .. "GET /api/info HTTP/1.1\r\n" .. host() .. auth() ..
      "Connection: close\r\n\r\n")
    local statuses = {}
    for st in out:gmatch("HTTP/1%.1 (%d+) ") do statuses[#statuses + 1] = tonumber(st) end
    expect(statuses):equals({ 200, 404, 200 })
  end)
end)
