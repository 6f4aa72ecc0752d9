-- The stage pipeline: order, skip, rollback at every position, Ctrl-C, shields, progress.
local stages = require "foundry.stages"
local fs = require "foundry.fs"
local json = require "foundry.json"
local uv = require "luv"

local function buffer()
  local b = { parts = {} }
  function b:write(...) for _, s in ipairs({ ... }) do self.parts[#self.parts + 1] = s end end
  function b:flush() end
  function b:text() return table.concat(self.parts) end
  return b
end

-- Real stages that make real files under `dir` and remove them on undo.
local function file_stages(dir, n, log)
  local list = {}
  for i = 1, n do
    local name = "s" .. i
    list[i] = {
      name = name,
      run = function(sb, ctx)
        log[#log + 1] = "run " .. name
        fs.write(dir .. "/" .. name, name)
        if sb.fail_at == i then foundry.raise("test.boom", "boom at " .. name, "a hint") end
      end,
      undo = function()
        log[#log + 1] = "undo " .. name
        fs.rm(dir .. "/" .. name)
      end,
    }
  end
  return list
end

local dir
before_each(function() dir = fs.mkdtemp("/tmp/foundry-stages-XXXXXX") end)
after_each(function() fs.rm(dir) end)

describe("stages.run", function()
  it("runs every stage in order and reports start/done events", function()
    local log, events = {}, {}
    local res = stages.run(file_stages(dir, 3, log), { name = "t" }, {}, {
      on_event = function(ev) events[#events + 1] = ev.event .. ":" .. ev.stage end,
    })
    expect(log):equals({ "run s1", "run s2", "run s3" })
    expect(events):equals({ "start:s1", "done:s1", "start:s2", "done:s2", "start:s3", "done:s3" })
    expect(#res):equals(3)
    expect(res[2].status):equals("done")
    expect(res[2].ms):is_a("number")
    for i = 1, 3 do expect(fs.exists(dir .. "/s" .. i)):is(true) end
  end)

  it("reports a stage that returns ctx.skip(reason) as skipped, with the reason", function()
    local events = {}
    local list = {
      { name = "auth", run = function(_, ctx) return ctx.skip("vault not available") end },
      { name = "ready", run = function() end },
    }
    local res = stages.run(list, { name = "t" }, {}, { on_event = function(ev) events[#events + 1] = ev end })
    expect(res[1].status):equals("skip")
    expect(res[1].reason):equals("vault not available")
    expect(events[2].event):equals("skip")
    expect(events[2].reason):equals("vault not available")
    expect(events[2].sandbox):equals("t")
  end)

  for k = 1, 4 do
    it("undoes every completed stage in reverse when stage " .. k .. " of 4 fails, leaving nothing", function()
      local log, events = {}, {}
      local err = expect(function()
        stages.run(file_stages(dir, 4, log), { name = "t", fail_at = k }, {}, {
          on_event = function(ev) events[#events + 1] = ev end,
        })
      end):fails("test.boom")
      expect(err.stage):equals("s" .. k)
      expect(err.message):equals("stage 's" .. k .. "' failed: boom at s" .. k)
      expect(err.hint):equals("a hint")
      local want = {}
      for i = 1, k do want[#want + 1] = "run s" .. i end
      for i = k, 1, -1 do want[#want + 1] = "undo s" .. i end
      expect(log):equals(want)
      expect(fs.list(dir)):has_length(0)
      local fails = 0
      for _, ev in ipairs(events) do
        if ev.event == "fail" then
          fails = fails + 1
          expect(ev.stage):equals("s" .. k)
          expect(ev.error.code):equals("test.boom")
        end
      end
      expect(fails):equals(1)
    end)
  end

  it("keeps going through rollback when an undo fails and says what is left", function()
    local log = {}
    local list = file_stages(dir, 3, log)
    list[1].undo = function() error("cannot remove s1") end
    local events = {}
    local err = expect(function()
      stages.run(list, { name = "t", fail_at = 3 }, {}, { on_event = function(ev) events[#events + 1] = ev.event end })
    end):fails("test.boom")
    expect(err.undo_errors):has_length(1)
    expect(err.hint):matches("foundry prune")
    expect(events):contains("undo_fail")
    expect(fs.exists(dir .. "/s2")):is(false)
    expect(fs.exists(dir .. "/s1")):is(true)
  end)

  it("turns a plain error into a stage failure with the stage's name", function()
    local list = { { name = "deps", run = function() error("npm exploded", 0) end } }
    local err = expect(function() stages.run(list, { name = "t" }) end):fails("stage.failed")
    expect(err.message):equals("stage 'deps' failed: npm exploded")
  end)

  it("rolls back on SIGINT while a stage waits, and does not die of it", function()
    local log = {}
    local list = file_stages(dir, 2, log)
    list[3] = {
      name = "slow",
      run = function()
        fs.write(dir .. "/slow", "x")
        uv.kill(uv.os_getpid(), "sigint")
        foundry.sleep(10000)
        log[#log + 1] = "slow finished"
      end,
      undo = function() fs.rm(dir .. "/slow"); log[#log + 1] = "undo slow" end,
    }
    list[4] = { name = "never", run = function() log[#log + 1] = "never ran" end }
    local t0 = uv.hrtime()
    local err = expect(function()
      stages.run(list, { name = "t" }, {}, { signals = true })
    end):fails("interrupted")
    expect((uv.hrtime() - t0) / 1e6):lt(3000)
    expect(err.message):matches("SIGINT")
    expect(err.stage):equals("slow")
    expect(log):equals({ "run s1", "run s2", "undo slow", "undo s2", "undo s1" })
    expect(fs.list(dir)):has_length(0)
  end)

  it("waits for shielded work before rolling back, so undo sees what it made", function()
    local made
    local list = {
      {
        name = "provision",
        run = function(sb, ctx)
          ctx.shield(function()
            foundry.sleep(100) -- an engine call that completes even if nobody waits
            made = dir .. "/container"
            fs.write(made, "x")
            sb.made = made
          end)
        end,
        undo = function(sb) if sb.made then fs.rm(sb.made) end end,
      },
    }
    local sb = { name = "t" }
    local t = foundry.spawn(function() return stages.run(list, sb, {}, {}) end)
    foundry.sleep(20)
    t:cancel()
    expect(function() t:join() end):fails("cancelled")
    expect(made):equals(dir .. "/container")
    expect(fs.exists(made)):is(false)
  end)

  it("rolls back when the calling task is cancelled (e.g. by foundry.timeout)", function()
    local log = {}
    local list = file_stages(dir, 2, log)
    list[3] = { name = "hang", run = function() foundry.sleep(10000) end }
    expect(function()
      foundry.timeout(50, function() stages.run(list, { name = "t" }) end)
    end):fails("timeout")
    expect(log):equals({ "run s1", "run s2", "undo s2", "undo s1" })
    expect(fs.list(dir)):has_length(0)
  end)
end)

describe("stages.compose", function()
  local function base()
    local l = {}
    for i, n in ipairs(stages.ORDER) do l[i] = { name = n, run = function() end } end
    return l
  end
  local function names(l)
    local o = {}
    for i, s in ipairs(l) do o[i] = s.name end
    return table.concat(o, " ")
  end

  it("keeps the default order without a spec", function()
    expect(names(stages.compose(base()))):equals(table.concat(stages.ORDER, " "))
  end)

  it("removes, replaces and adds stages", function()
    local mine = function() end
    local l = stages.compose(base(), {
      remove = { "mcp", "deps" },
      replace = { customize = mine },
      add = { { name = "seed", after = "workspace", run = mine }, { name = "lint", before = "provision", run = mine },
              { name = "last", run = mine } },
    })
    expect(names(l)):equals("lint provision system auth agent-config workspace seed customize health last ready")
    expect(l[8].run):is(mine)
  end)

  it("refuses unknown names with a suggestion", function()
    local err = expect(function() stages.compose(base(), { remove = { "dpes" } }) end):fails("preset.invalid")
    expect(err.message):matches("did you mean 'deps'")
    expect(function() stages.compose(base(), { add = { { name = "x", after = "helth", run = print } } }) end)
      :fails("did you mean 'health'")
  end)

  it("refuses to remove provision or ready, and duplicate names", function()
    expect(function() stages.compose(base(), { remove = { "provision" } }) end):fails("cannot be removed")
    expect(function() stages.compose(base(), { add = { { name = "deps", run = print } } }) end):fails("exists")
  end)
end)

describe("stages.reporter", function()
  local function run_with(kind, fail)
    local out = buffer()
    local list = {
      { name = "provision", run = function() foundry.sleep(200) end },
      { name = "auth", run = function(_, ctx) return ctx.skip("vault not available") end },
      { name = "deps", run = function() if fail then error("exit 1", 0) end end, undo = function() end },
    }
    pcall(stages.run, list, { name = "t" }, {}, { reporter = stages.reporter(kind, { out = out, color = false }) })
    return out:text()
  end

  it("prints NDJSON events with stage, event and ms", function()
    local lines = {}
    for l in run_with("json", true):gmatch("[^\n]+") do lines[#lines + 1] = json.decode(l) end
    local seq = {}
    for _, ev in ipairs(lines) do seq[#seq + 1] = ev.event .. ":" .. ev.stage end
    expect(seq):equals({ "start:provision", "done:provision", "start:auth", "skip:auth", "start:deps",
                         "fail:deps", "undo:deps" })
    expect(lines[2].ms):ge(150)
    expect(lines[4].reason):equals("vault not available")
    expect(lines[6].error.message):equals("exit 1")
  end)

  it("prints one plain line per finished stage without escape codes", function()
    local text = run_with("plain", true)
    expect(text):matches("%[ok%]   provision %(%d+ms%)")
    expect(text):matches("%[skip%] auth: vault not available")
    expect(text):matches("%[FAIL%] deps")
    expect(text:find("\27", 1, true)):is_nil()
  end)

  it("draws a spinner while a stage runs, then a ✓/✗ line with its time", function()
    local text = run_with("tty", true)
    expect(text):contains("⠙")
    expect(text):matches("✓ provision%s+%d+ms")
    expect(text):matches("– auth%s+skipped: vault not available")
    expect(text):matches("✗ deps%s+%d+ms  exit 1")
    expect(text):contains("↺ deps")
  end)
end)

describe("the agent's own configuration files", function()
  local hooks = { post_tool_use = "commit" }
  local mcp = { files = { command = { "mcp-files", "--root", "/workspace" }, env = { LEVEL = "1" } } }

  -- Parse TOML with Python's tomllib: a real parser, not ours.
  local function toml(text)
    local r = foundry.exec{ "python3", "-c", "import json, sys, tomllib; print(json.dumps(tomllib.loads(sys.stdin.read())))",
      stdin = text }
    expect(r.status):equals(0)
    return json.decode(r.stdout)
  end

  it("gives Claude Code a PostToolUse hook and its MCP servers in their own files", function()
    local f = stages.agent_files{ agent = { name = "claude" }, hooks = hooks, mcp = mcp }
    local settings = json.decode(f["~/.claude/settings.json"])
    expect(settings.hooks.PostToolUse[1].hooks[1].command):matches("^foundry%-shim notify post%-tool%-use")
    expect(json.decode(f["~/.claude.json"]).mcpServers.files.command):equals("mcp-files")
  end)

  it("gives Gemini CLI an AfterTool hook (hooks turned on, JSON on stdout) merged with its MCP servers", function()
    local f = stages.agent_files{ agent = { name = "gemini" }, hooks = hooks, mcp = mcp }
    local settings = json.decode(f["~/.gemini/settings.json"])
    expect(settings.tools.enableHooks):equals(true)
    local h = settings.hooks.AfterTool[1]
    expect(h.matcher):equals("*")
    expect(h.hooks[1].type):equals("command")
    expect(h.hooks[1].command):matches("notify post%-tool%-use.*; echo '{}'$")
    expect(settings.mcpServers.files.args):equals({ "--root", "/workspace" })
  end)

  it("gives Codex a notify program before its MCP tables, in TOML a real parser reads", function()
    local f = stages.agent_files{ agent = { name = "codex" }, hooks = hooks, mcp = mcp }
    local t = toml(f["~/.codex/config.toml"])
    expect(t.notify[1]):equals("/bin/sh")
    expect(t.notify[3]):matches("notify post%-tool%-use")
    expect(t.mcp_servers.files.command):equals("mcp-files")
    expect(t.mcp_servers.files.env.LEVEL):equals("1")
    -- the program gets the event as its last argument: it reaches the shim's stdin
    local bin = fs.mkdtemp("/tmp/foundry-codex-XXXXXX")
    fs.write(bin .. "/foundry-shim", "#!/bin/sh\ncat > " .. bin .. "/got; echo \"$@\" > " .. bin .. "/args\n")
    fs.chmod(bin .. "/foundry-shim", tonumber("755", 8))
    local argv = { env = { PATH = bin .. ":/usr/bin:/bin" } }
    for i, a in ipairs(t.notify) do argv[i] = a end
    argv[#argv + 1] = '{"type":"agent-turn-complete"}'
    expect(foundry.exec(argv).status):equals(0)
    expect(fs.read(bin .. "/got")):equals('{"type":"agent-turn-complete"}')
    expect(fs.read(bin .. "/args")):equals("notify post-tool-use\n")
    fs.rm(bin)
  end)

  it("writes nothing for an agent without hooks or MCP servers", function()
    expect(next(stages.agent_files{ agent = { name = "codex" } })):is_nil()
    expect(next(stages.agent_files{ agent = { name = "gemini" } })):is_nil()
    expect(stages.agent_files{ agent = { name = "aider" }, mcp = mcp }["~/.config/foundry/mcp.json"]):matches("mcp%-files")
  end)
end)
