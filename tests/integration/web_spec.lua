-- The web console against real sandboxes (the engine and the test image): the terminal
-- WebSocket into a TTY exec (round trip, resize, redaction), File Changes after a change
-- made inside the container, chat typed into the agent's tmux session, and a sandbox
-- created and removed through the API, leaving no trace.
local L = dofile("tests/integration/lib.lua")
L.skip = skip
local json = require "foundry.json"
local W = dofile("tests/lib/web.lua")

-- Patterns for ws_client.py are Python regular expressions. Bash switches bracketed paste
-- off (ESC [?2004l) before a command's output.
local BP = "(?:\\x1b\\[\\?2004l)?\\r?"

local env
before_all(function()
  env = L.setup()
  L.ok{ "new", "-d", "-n", "web", "--network", "none" }
  W.start{ repo = env.repo }
end)
after_all(function()
  W.stop()
  pcall(function() require("foundry.redact").set_global(nil) end)
  pcall(L.cli, { "rm", "-y", "--discard", "web" })
  L.teardown()
end)
after_each(function() W.settle() end)

describe("terminal", function()
  it("runs a shell in the sandbox over the WebSocket: echo hi comes back", { timeout = 60000 }, function()
    local r = W.ws(W.terminal_url("web", "shell"), {
      { expect = "[$#] ", timeout = 20 },
      { send_binary = "echo hi\r" },
      { expect = "\\n" .. BP .. "hi\\r\\n", timeout = 20 },
      { send_binary = "id -u; pwd\r" },
      { expect = "\\n" .. BP .. "1000\\r\\n/workspace\\r\\n", timeout = 20 },
      { close = 1000 },
    })
    expect(r.status):equals(101)
    if not r.ok then error(r.error .. "\n" .. r.output, 0) end
    expect(r.output):matches("[\r\n]hi\r\n")
  end)

  it("forwards resizes to the TTY", { timeout = 60000 }, function()
    local r = W.ws(W.terminal_url("web", "shell") .. "&rows=30&cols=90", {
      { expect = "[$#] ", timeout = 20 },
      { send_binary = "stty size\r" },
      { expect = "\\n" .. BP .. "30 90\\r\\n", timeout = 20 },
      { send_text = json.encode({ type = "resize", rows = 41, cols = 123 }) },
      { sleep = 0.3 },
      { send_binary = "stty size\r" },
      { expect = "\\n" .. BP .. "41 123\\r\\n", timeout = 20 },
      { close = 1000 },
    })
    if not r.ok then error(r.error .. "\n" .. r.output, 0) end
  end)

  it("redacts secrets from the terminal's output, even split across reads", { timeout = 60000 }, function()
    local redact = require "foundry.redact"
    local secret = "s3cr3t-" .. string.rep("Kq8", 8)
    redact.set_global(redact.new({ deploy_key = secret }))
    -- printed in two halves with a pause between: the redactor holds back the first half
    local half = #secret // 2
    local cmd = string.format("printf '%%s' %s; sleep 0.3; printf '%%s\\n' %s\r", secret:sub(1, half), secret:sub(half + 1))
    local r = W.ws(W.terminal_url("web", "shell"), {
      { expect = "[$#] ", timeout = 20 },
      { send_binary = cmd },
      { expect = "\\[REDACTED:deploy_key\\]", timeout = 20 },
      { close = 1000 },
    })
    redact.set_global(nil)
    if not r.ok then error(r.error .. "\n" .. r.output, 0) end
    -- the command line itself was typed in halves too; the secret never appears whole
    expect(r.output).never:contains(secret)
  end)

  it("attaches to the agent's tmux session in agent mode", { timeout = 60000 }, function()
    local sb = require("foundry.sandbox").get("web")
    if not (sb.data.tools or {}).tmux then return skip("the test image has no tmux") end
    local r = W.ws(W.terminal_url("web", "agent"), {
      { expect = "[$#] ", timeout = 20 },
      { send_binary = "echo from-$TMUX_PANE-pane\r" },
      { expect = "from-%\\d+-pane", timeout = 20 },
      { close = 1000 },
    })
    if not r.ok then error(r.error .. "\n" .. r.output, 0) end
    local ls = sb:exec{ "tmux", "ls" }
    expect(ls.stdout):contains("main:")
  end)
end)

describe("file changes", function()
  it("shows a file the agent wrote inside the container", { timeout = 60000 }, function()
    local sb = require("foundry.sandbox").get("web")
    sb:sh("echo 'written inside' > /workspace/inside.txt && echo more >> /workspace/README.md")
    local r = W.http{ "GET", "/api/sandboxes/web/changes" }
    expect(r.status):equals(200)
    local by = {}
    for _, f in ipairs(r.json.files) do by[f.path] = f end
    expect(by["inside.txt"].status):equals("added")
    expect(by["inside.txt"].patch):contains("+written inside")
    expect(by["README.md"].status):equals("modified")
    expect(by["README.md"].patch):contains("+more")
    -- and the editor sees the same file, and can change it for the agent
    local f = W.http{ "GET", "/api/sandboxes/web/files?path=inside.txt" }
    expect(f.json.content):equals("written inside\n")
    local w = W.http{ "PUT", "/api/sandboxes/web/files?path=inside.txt", json = { content = "edited in the console\n",
      sha256 = f.json.sha256 } }
    expect(w.status):equals(200)
    expect(sb:sh("cat /workspace/inside.txt; stat -c %u /workspace/inside.txt").stdout)
      :equals("edited in the console\n1000\n")
  end)
end)

describe("chat", function()
  it("types a message into the agent's session and records it", { timeout = 60000 }, function()
    local sb = require("foundry.sandbox").get("web")
    if not (sb.data.tools or {}).tmux then return skip("the test image has no tmux") end
    sb:sh("tmux has-session -t main 2>/dev/null || tmux new-session -d -s main bash")
    local r = W.http{ "POST", "/api/sandboxes/web/chat", json = { text = "echo chat-$((40+2))" } }
    expect(r.status):equals(201)
    expect(r.json.data.delivered):is(true)
    local screen
    for _ = 1, 50 do
      screen = W.http{ "GET", "/api/sandboxes/web/screen" }.json
      if screen.available and screen.text:find("chat%-42") then break end
      foundry.sleep(100)
    end
    expect(screen.text):contains("chat-42")
    local rows = require("foundry.state").chat.list({ sandbox = "web" })
    expect(rows[#rows].text):equals("echo chat-$((40+2))")
    expect(rows[#rows].data.delivered):is(true)
  end)
end)

describe("fleet actions", function()
  it("creates a sandbox through the API (stages visible as they run) and removes it without trace",
    { timeout = 180000 }, function()
    local r = W.http{ "POST", "/api/sandboxes", json = { name = "viaweb", network = "none" } }
    expect(r.status):equals(202)
    expect(r.json.name):equals("viaweb")
    local detail
    for _ = 1, 600 do
      detail = W.http{ "GET", "/api/sandboxes/viaweb" }.json
      if detail and detail.state == "running" then break end
      foundry.sleep(100)
    end
    expect(detail.state):equals("running")
    local marks = {}
    for _, s in ipairs(detail.stages) do marks[#marks + 1] = s.name .. "=" .. s.status end
    for _, s in ipairs(detail.stages) do
      if s.status ~= "done" and s.status ~= "skipped" then error("stage not finished: " .. table.concat(marks, " "), 0) end
    end
    local fleet = W.http{ "GET", "/api/sandboxes" }.json.sandboxes
    local names = {}
    for _, sb in ipairs(fleet) do names[#names + 1] = sb.name end
    expect(names):contains("viaweb")
    expect(W.http{ "POST", "/api/sandboxes", json = { name = "viaweb" } }.status):equals(409)
    expect(W.http{ "POST", "/api/sandboxes", json = { name = "../bad" } }.status):equals(400)
    local d = W.http{ "DELETE", "/api/sandboxes/viaweb" }
    expect(d.status):equals(202)
    for _ = 1, 300 do
      if W.http{ "GET", "/api/sandboxes/viaweb" }.status == 404 then break end
      foundry.sleep(100)
    end
    expect(W.http{ "GET", "/api/sandboxes/viaweb" }.status):equals(404)
    local traces = {}
    for _, t in ipairs(L.traces()) do if t:find("viaweb", 1, true) then traces[#traces + 1] = t end end
    expect(traces):equals({})
    require("foundry.audit").flush()
    local acts = {}
    for _, row in ipairs(require("foundry.audit").query({ sandbox = "viaweb", kind = "console" })) do
      acts[#acts + 1] = row.rule
    end
    expect(acts):equals({ "create", "remove" })
  end)
end)

describe("the page in a browser", function()
  it("draws the HUD, runs the terminal and shows changes in headless Chromium, with no script or CSP error",
    { timeout = 150000 }, function()
    local chromium
    for _, c in ipairs({ "chromium", "chromium-browser" }) do
      if foundry.exec{ "sh", "-c", "command -v " .. c }.ok then chromium = c; break end
    end
    if not chromium then return skip("no chromium (apt-get install chromium)") end
    local shots = os.getenv("FOUNDRY_WEB_SHOTS") or env.root
    local function tab(name)
      return "Array.from(document.querySelectorAll('.hud-tabs .tab')).find(b => b.textContent.startsWith('" ..
        name .. "')).click() || true"
    end
    local steps = {
      { ["goto"] = W.console.guard:url("/sandbox/web") .. "#logs" },
      { wait = "document.querySelectorAll('.stage').length === 10 && document.querySelectorAll('.logline').length > 5" },
      { shot = shots .. "/hud-logs.png" },
      { eval = tab("Terminal") },
      { wait = "(document.querySelector('.term-status') || {}).textContent === 'connected (agent)'", timeout = 30 },
      { sleep = 1.5 },
      { type = "echo browser-was-here > /tmp/from-browser; echo typed-in-the-browser" },
      { key = "Enter" },
      { sleep = 1.5 },
      { shot = shots .. "/hud-terminal.png" },
      { eval = tab("File Changes") },
      { wait = "document.querySelectorAll('.diff-file').length > 0" },
      { shot = shots .. "/hud-changes.png" },
      { eval = tab("Editor") },
      { wait = "Array.from(document.querySelectorAll('.tree .item')).some(i => i.textContent === 'README.md')" },
      { eval = "Array.from(document.querySelectorAll('.tree .item')).find(i => i.textContent === 'README.md').click() || true" },
      { wait = "(document.querySelector('.edit-area textarea') || {}).value !== undefined" },
      { eval = "var t = document.querySelector('.edit-area textarea'); t.value += 'saved from the browser\\n'; " ..
          "t.dispatchEvent(new Event('input')); " ..
          "Array.from(document.querySelectorAll('button')).find(b => b.textContent === 'Save').click() || true" },
      { wait = "Array.from(document.querySelectorAll('.toast')).some(t => t.textContent.startsWith('saved README.md'))" },
      { shot = shots .. "/hud-editor.png" },
      { eval = tab("Chat") },
      { wait = "document.querySelector('.composer textarea') !== null" },
      { eval = "var c = document.querySelector('.composer textarea'); c.value = 'echo hello-from-chat'; " ..
          "document.querySelector('.composer button').click() || true" },
      { wait = "Array.from(document.querySelectorAll('.msg.user')).some(m => m.textContent.includes('hello-from-chat'))" },
      { wait = "document.querySelector('.screen pre').textContent.includes('hello-from-chat')", timeout = 15 },
      { shot = shots .. "/hud-chat.png" },
      { eval = tab("Audit") },
      { wait = "document.querySelectorAll('table.audit tbody tr').length > 0" },
      { shot = shots .. "/hud-audit.png" },
      { eval = "document.querySelector('.sb-head h1').textContent + ' ' + document.querySelector('.sb-head .badge').textContent" },
      { ["goto"] = W.base .. "/" },
      { wait = "document.querySelectorAll('tbody tr td.name-cell').length > 0" },
      { shot = shots .. "/fleet.png" },
    }
    local r = foundry.exec{ "python3", "tests/lib/cdp.py", chromium, json.encode(json.array(steps)), timeout = 140000 }
    local ok, out = pcall(json.decode, r.stdout)
    if not ok then error("cdp.py: " .. r.stdout .. r.stderr, 0) end
    if not out.ok then error("browser: " .. tostring(out.error) .. "\n" .. table.concat(out.console, "\n"), 0) end
    -- errors, exceptions and anything about the Content-Security-Policy; not xterm's
    -- performance warnings
    local bad = {}
    for _, line in ipairs(out.console) do
      if not line:match("^log%.warning") or line:find("Content Security Policy", 1, true) then bad[#bad + 1] = line end
    end
    expect(bad):equals({})
    expect(out.results[#out.results]):equals("web running")
    local sb = require("foundry.sandbox").get("web")
    expect(sb:sh("cat /tmp/from-browser").stdout):equals("browser-was-here\n")
    expect(sb:sh("tail -n 1 /workspace/README.md").stdout):equals("saved from the browser\n")
  end)
end)
