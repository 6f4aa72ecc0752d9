-- foundry.hooks: debounce, event verification (signature, freshness, replay), attaching a
-- sandbox's handlers from its settings, dispatch and failure reporting.
local hooks = require "foundry.hooks"
local crypto = require "foundry.crypto"
local json = foundry.json
local uv = require "luv"

local function now() uv.update_time(); return uv.now() end

describe("hooks.debounce", function()
  it("runs once after a burst, with every call, and again after later calls", function()
    local runs = {}
    local d = hooks.debounce(100, function(calls) runs[#runs + 1] = { n = #calls, at = now() } end)
    local t0 = now()
    for i = 1, 20 do d(i); foundry.sleep(5) end -- a burst of 20 within ~100 ms
    d:idle()
    expect(#runs):equals(1)
    expect(runs[1].n):equals(20)
    expect(runs[1].at - t0):gt(100 + 19 * 5 - 10) -- after the last call's quiet period
    d("later")
    d:idle()
    expect(#runs):equals(2)
    expect(runs[2].n):equals(1)
    expect(d.runs):equals(2)
  end)

  it("passes each call's arguments", function()
    local got
    local d = hooks.debounce(10, function(calls) got = calls end)
    d("a", 1)
    d("b", nil, 3)
    d:idle()
    expect(got[1][1]):equals("a")
    expect(got[1][2]):equals(1)
    expect(got[2].n):equals(3)
    expect(got[2][3]):equals(3)
  end)

  it("never overlaps runs: calls during a run make one more run after it", function()
    local active, max_active, runs = 0, 0, 0
    local d = hooks.debounce(20, function()
      active = active + 1
      max_active = math.max(max_active, active)
      foundry.sleep(100)
      active = active - 1
      runs = runs + 1
    end)
    d(1)
    foundry.sleep(40) -- the first run is under way
    d(2)
    d(3)
    d:idle()
    expect(max_active):equals(1)
    expect(runs):equals(2)
  end)

  it("flush runs now; cancel forgets; close refuses more calls", function()
    local runs = 0
    local d = hooks.debounce(10000, function() runs = runs + 1 end)
    d(1)
    local t0 = now()
    d:flush()
    expect(runs):equals(1)
    expect(now() - t0):lt(1000)
    d(2)
    d:cancel()
    d:idle()
    expect(runs):equals(1)
    d:close()
    expect(function() d(3) end):fails("closed")
  end)

  it("reports a failing run to on_error and keeps working", function()
    local errs, ok_runs = {}, 0
    local d = hooks.debounce(10, function(calls)
      if calls[1][1] == "bad" then error("hook exploded") end
      ok_runs = ok_runs + 1
    end, { on_error = function(e) errs[#errs + 1] = tostring(e) end })
    d("bad")
    d:idle()
    d("good")
    d:idle()
    expect(#errs):equals(1)
    expect(errs[1]):contains("hook exploded")
    expect(ok_runs):equals(1)
  end)

  it("refuses bad arguments", function()
    expect(function() hooks.debounce(-1, function() end) end):fails("non%-negative")
    expect(function() hooks.debounce(10, "x") end):fails("expected function")
  end)
end)

describe("hooks.verify", function()
  local TOKEN = "a-sandbox-hook-token-0123456789"
  local function event(over)
    local ev = { event = "post-tool-use", payload = { tool_name = "Edit" }, ts = os.time(),
      nonce = crypto.token(16) }
    for k, v in pairs(over or {}) do ev[k] = v end
    return json.encode(ev)
  end
  local function mac(body, key) return crypto.hex(crypto.hmac_sha256(key or TOKEN, body)) end

  after_each(function() hooks.detach("v1"); hooks.detach("v2") end)

  it("accepts an event signed with the sandbox's token", function()
    local body = event()
    local ev = hooks.verify("v1", TOKEN, body, mac(body))
    expect(ev.event):equals("post-tool-use")
    expect(ev.payload.tool_name):equals("Edit")
    expect(math.type(ev.ts)):equals("integer")
    -- upper-case hex is the same signature
    local body2 = event()
    expect(hooks.verify("v1", TOKEN, body2, mac(body2):upper()).event):equals("post-tool-use")
  end)

  it("refuses a wrong, missing or foreign signature", function()
    local body = event()
    expect(function() hooks.verify("v1", TOKEN, body, mac(body, "another-token")) end):fails("hooks.bad_signature")
    expect(function() hooks.verify("v1", TOKEN, body, nil) end):fails("hooks.bad_signature")
    expect(function() hooks.verify("v1", TOKEN, body .. " ", mac(body)) end):fails("hooks.bad_signature")
    expect(function() hooks.verify("v1", "", body, mac(body, "")) end):fails("hooks.bad_signature")
  end)

  it("refuses a replay for the same sandbox, but not the same nonce elsewhere", function()
    local body = event()
    hooks.verify("v1", TOKEN, body, mac(body))
    expect(function() hooks.verify("v1", TOKEN, body, mac(body)) end):fails("hooks.replay")
    expect(hooks.verify("v2", TOKEN, body, mac(body)).event):equals("post-tool-use")
  end)

  it("refuses stale and future events, and malformed ones", function()
    local old = event({ ts = os.time() - hooks.WINDOW_S - 5 })
    expect(function() hooks.verify("v1", TOKEN, old, mac(old)) end):fails("hooks.stale")
    local future = event({ ts = os.time() + hooks.WINDOW_S + 5 })
    expect(function() hooks.verify("v1", TOKEN, future, mac(future)) end):fails("hooks.stale")
    local nonce = event({ nonce = "short" })
    expect(function() hooks.verify("v1", TOKEN, nonce, mac(nonce)) end):fails("hooks.malformed")
    local notjson = "{not json"
    expect(function() hooks.verify("v1", TOKEN, notjson, mac(notjson)) end):fails("hooks.malformed")
  end)
end)

describe("hooks: attach and dispatch", function()
  after_each(function() hooks.detach("sb1"); hooks.reporter = nil end)

  it("runs every handler of the event in its own task; a failing one is reported, the others run", function()
    local reports, ran = {}, {}
    hooks.reporter = function(sb, level, msg) reports[#reports + 1] = { sb = sb, level = level, msg = msg } end
    local row = { name = "sb1", spec = {} }
    hooks.on("sb1", "post-tool-use", function(sb, ev) ran[#ran + 1] = sb.name .. ":" .. ev.event end)
    hooks.on("sb1", "post_tool_use", function() error("handler two broke") end)
    hooks.on("sb1", "stop", function() ran[#ran + 1] = "stop" end)
    local tasks = hooks.dispatch(row, { event = "post-tool-use" })
    expect(#tasks):equals(2)
    for _, t in ipairs(tasks) do t:join() end
    expect(ran):equals({ "sb1:post-tool-use" })
    expect(#reports):equals(1)
    expect(reports[1].level):equals("error")
    expect(reports[1].msg):contains("handler two broke")
  end)

  it("attaches auto-commit when the settings say commit, and nothing when they say false", function()
    expect(hooks.attach({ name = "sb1", spec = { hooks = { post_tool_use = "commit", debounce_ms = 50 } } })):equals(1)
    expect(hooks.attached("sb1")):is(true)
    hooks.detach("sb1")
    expect(hooks.attached("sb1")):is(false)
    expect(hooks.attach({ name = "sb1", spec = { hooks = { post_tool_use = false } } })):equals(0)
    hooks.detach("sb1")
    expect(hooks.attach({ name = "sb1", spec = {} })):equals(0)
  end)

  it("debounces auto-commit per sandbox and closes it on detach", function()
    local reports = {}
    hooks.reporter = function(_, level, msg) reports[#reports + 1] = level .. ": " .. msg end
    local row = { name = "sb1", workspace = "/nonexistent",
      spec = { hooks = { post_tool_use = "commit", debounce_ms = 30 } } }
    for _ = 1, 5 do hooks.dispatch(row, { event = "post-tool-use" }) end
    foundry.sleep(150)
    -- one run for the burst: a commit, or (without foundry.git) one clear failure
    expect(#reports):equals(1)
    for _, t in ipairs(hooks.dispatch(row, { event = "post-tool-use" })) do t:join() end
    hooks.detach("sb1") -- the pending run is dropped with the sandbox
    foundry.sleep(80)
    expect(#reports):equals(1)
  end)
end)

describe("hooks.auto_commit with a real repository", function()
  local repo, reports
  local function git(...)
    local argv = { "git", "-C", repo, ... }
    argv.check = true
    return foundry.exec(argv).stdout
  end
  local function commits() return tonumber((git("rev-list", "--count", "HEAD"):gsub("%s", ""))) end

  before_each(function()
    local ok, g = pcall(require, "foundry.git")
    if not ok or type(g.commit_all) ~= "function" then skip("foundry.git.commit_all is not in this build") end
    repo = foundry.fs.mkdtemp("/tmp/fac-XXXXXX")
    foundry.exec{ "git", "init", "-q", repo, check = true }
    git("-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-q", "--allow-empty", "-m", "init")
    git("config", "user.name", "Sandbox Agent")
    git("config", "user.email", "agent@example.test")
    reports = {}
    hooks.reporter = function(_, level, msg) reports[#reports + 1] = level .. ": " .. msg end
  end)
  after_each(function()
    hooks.detach("ac")
    hooks.reporter = nil
    if repo then foundry.fs.rm(repo) end
  end)

  local function row(ms)
    return { name = "ac", workspace = repo, spec = { hooks = { post_tool_use = "commit", debounce_ms = ms } } }
  end
  local function event(tool) return { event = "post-tool-use", payload = { tool_name = tool } } end

  it("commits once after a burst of 20 events, and again after later events", { timeout = 20000 }, function()
    local r = row(300)
    for i = 1, 20 do
      foundry.fs.write(repo .. "/f" .. i .. ".txt", "change " .. i .. "\n")
      hooks.dispatch(r, event(i % 4 == 0 and "Write" or "Edit"))
      foundry.sleep(10)
    end
    expect(commits()):equals(1) -- nothing yet: the burst is still going
    foundry.sleep(800)
    expect(commits()):equals(2)
    local msg = git("log", "-1", "--format=%an|%B")
    expect(msg):matches("^Sandbox Agent|foundry: auto%-commit 20 files %(Edit ×15, Write ×5%)")
    expect(msg):contains("added: f1.txt")
    expect(git("status", "--porcelain")):equals("")
    -- later: one more event, one more commit
    foundry.fs.write(repo .. "/f1.txt", "changed again\n")
    hooks.dispatch(r, event("Edit"))
    foundry.sleep(800)
    expect(commits()):equals(3)
    expect(git("log", "-1", "--format=%s")):equals("foundry: auto-commit 1 file (Edit)\n")
    -- an event without changes commits nothing
    hooks.dispatch(r, event("Read"))
    foundry.sleep(800)
    expect(commits()):equals(3)
    expect(table.concat(reports, "\n")):contains("nothing to commit")
  end)

  it("waits for the agent's own index.lock instead of failing", { timeout = 20000 }, function()
    foundry.fs.write(repo .. "/.git/index.lock", "")
    foundry.fs.write(repo .. "/x.txt", "x\n")
    hooks.dispatch(row(50), event("Edit"))
    foundry.sleep(600)
    expect(commits()):equals(1)
    foundry.fs.unlink(repo .. "/.git/index.lock")
    foundry.sleep(1000)
    expect(commits()):equals(2)
    for _, r in ipairs(reports) do expect(r).never:matches("^error") end
  end)

  it("reports a failure (no such workspace) and keeps the daemon's other hooks going", function()
    local bad = { name = "ac", workspace = repo .. "/nope",
      spec = { hooks = { post_tool_use = "commit", debounce_ms = 20 } } }
    hooks.dispatch(bad, event("Edit"))
    foundry.sleep(300)
    expect(reports[1]):matches("^error: auto%-commit failed")
  end)
end)
