-- foundry.state: schema, migrations, accessors, and the state surviving concurrent
-- processes and kill -9.
local db = require "foundry.db"
local fs = require "foundry.fs"
local json = require "foundry.json"
local state = require "foundry.state"
local uv = require "luv"

-- Every test gets its own FOUNDRY_HOME; state.db() follows the change.
local H = dofile("tests/lib/home.lua")
local home, leave

before_each(function() home, leave = H.enter("/tmp/foundry-state-XXXXXX") end)
after_each(function() leave() end)

local function dbfile() return home .. "/state/foundry.db" end

-- Run `code` in a child `foundry eval` with this test's FOUNDRY_HOME.
local function child(code, extra)
  local spec = { uv.exepath(), "eval", "--json", code, env = { FOUNDRY_HOME = home } }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return foundry.exec(spec)
end

describe("schema", function()
  it("is created from an empty directory, with the version in user_version", function()
    local c = state.db()
    expect(fs.stat(home .. "/state").type):equals("directory")
    expect(c:row("PRAGMA user_version").user_version):equals(state.schema_version)
    local names = {}
    for _, r in ipairs(c:query("SELECT name FROM sqlite_master WHERE type = 'table'")) do names[r.name] = true end
    for _, t in ipairs({ "meta", "sandboxes", "presets", "history", "events", "logs", "audit", "chat",
      "subtasks", "notifications", "queue" }) do
      expect(names[t]):is(true)
    end
    expect(c:row("PRAGMA journal_mode").journal_mode):equals("wal")
  end)

  it("re-opens idempotently, keeping the data", function()
    state.sandboxes.insert{ name = "keep" }
    state.close()
    local c = state.db()
    expect(c:row("PRAGMA user_version").user_version):equals(state.schema_version)
    expect(state.sandboxes.get("keep").name):equals("keep")
    state.close()
    expect(#state.sandboxes.list()):equals(1)
  end)

  it("refuses a database from a newer Foundry", function()
    state.db()
    state.close()
    local c = db.open(dbfile())
    c:exec("PRAGMA user_version = " .. (state.schema_version + 7))
    c:close()
    local err = expect(function() state.db() end):fails("state.schema_newer")
    expect(err.message):equals(string.format("state database is from a newer Foundry (schema %d > %d)",
      state.schema_version + 7, state.schema_version))
    expect(err.hint):matches("upgrade")
  end)

  it("applies migrations in one transaction: a failing step leaves the old schema", function()
    state.db()
    state.close()
    local n = #state.migrations
    state.migrations[n + 1] = "CREATE TABLE added (x); CREATE TABLE broken (;"
    local ok, err = pcall(state.db)
    state.migrations[n + 1] = nil
    expect(ok):is(false)
    expect(err.code):equals("db.error")
    local c <close> = db.open(dbfile())
    expect(c:row("PRAGMA user_version").user_version):equals(n)
    expect(c:row("SELECT name FROM sqlite_master WHERE name = 'added'")):is_nil()
  end)

  it("migrates an older schema forward", function()
    state.db()
    state.close()
    local n = #state.migrations
    state.migrations[n + 1] = function(c) c:exec("ALTER TABLE presets ADD COLUMN extra TEXT") end
    state.schema_version = n + 1
    local ok, err = pcall(function()
      local c = state.db()
      expect(c:row("PRAGMA user_version").user_version):equals(n + 1)
      state.presets.put{ name = "p" }
      c:run("UPDATE presets SET extra = 'x'")
      expect(state.presets.get("p").extra):equals("x")
    end)
    state.close()
    state.migrations[n + 1] = nil
    state.schema_version = n
    if not ok then error(err, 0) end
  end)

  it("follows FOUNDRY_HOME when it changes", function()
    state.sandboxes.insert{ name = "here" }
    local other = fs.mkdtemp("/tmp/foundry-state-XXXXXX")
    uv.os_setenv("FOUNDRY_HOME", other)
    expect(#state.sandboxes.list()):equals(0)
    uv.os_setenv("FOUNDRY_HOME", home)
    expect(#state.sandboxes.list()):equals(1)
    fs.rm(other)
  end)
end)

describe("sandboxes", function()
  it("inserts, gets, updates, lists and deletes", function()
    local row = state.sandboxes.insert{ name = "a", branch = "sandbox/a", image = "img", network = "allowlist",
      spec = { cpus = 2, env = { "A=1" } } }
    expect(row.id):equals(1)
    expect(row.state):equals("creating")
    expect(row.pid):equals(uv.os_getpid())
    expect(row.created_at):equals(row.updated_at)
    expect(math.abs(row.created_at - state.now())):lt(5000)
    expect(row.spec.env):equals({ "A=1" })
    expect(row.data):equals({})
    local up = state.sandboxes.update("a", { state = "running", container_id = "c1", data = { port = 7 } })
    expect(up.state):equals("running")
    expect(up.container_id):equals("c1")
    expect(up.data.port):equals(7)
    expect(up.updated_at):ge(row.updated_at)
    state.sandboxes.insert{ name = "b", state = "stopped" }
    expect(#state.sandboxes.list()):equals(2)
    local running = state.sandboxes.list{ state = "running" }
    expect(#running):equals(1)
    expect(running[1].name):equals("a")
    expect(#state.sandboxes.list{ state = { "running", "stopped" } }):equals(2)
    expect(state.sandboxes.delete("a")):is(true)
    expect(state.sandboxes.delete("a")):is(false)
    expect(state.sandboxes.get("a")):is_nil()
  end)

  it("raises state.name_taken for a name in use", function()
    state.sandboxes.insert{ name = "x" }
    local err = expect(function() state.sandboxes.insert{ name = "x" } end):fails("state.name_taken")
    expect(err.message):equals("a sandbox named 'x' already exists")
    expect(err.name):equals("x")
    state.sandboxes.insert{ name = "y" }
    expect(function() state.sandboxes.update("y", { name = "x" }) end):fails("state.name_taken")
  end)

  it("finds free names and takes them atomically with {unique=true}", function()
    expect(state.sandboxes.unique_name("w")):equals("w")
    state.sandboxes.insert{ name = "w" }
    state.sandboxes.insert{ name = "w-3" }
    state.sandboxes.insert{ name = "w-x" }
    state.sandboxes.insert{ name = "ww-2" }
    expect(state.sandboxes.unique_name("w")):equals("w-2")
    expect(state.sandboxes.insert({ name = "w" }, { unique = true }).name):equals("w-2")
    expect(state.sandboxes.insert({ name = "w" }, { unique = true }).name):equals("w-4")
    -- LIKE/GLOB characters in the base are plain characters
    state.sandboxes.insert{ name = "p%_" }
    expect(state.sandboxes.unique_name("p%_")):equals("p%_-2")
    expect(state.sandboxes.unique_name("p")):equals("p")
  end)

  it("raises state.not_found when updating a missing sandbox", function()
    local err = expect(function() state.sandboxes.update("nope", { state = "x" }) end):fails("state.not_found")
    expect(err.message):equals("no sandbox named 'nope'")
  end)

  it("checks fields: unknown names with a suggestion, wrong types, bad names", function()
    expect(function() state.sandboxes.insert{ name = "a", netwrok = "none" } end):fails("did you mean 'network'")
    expect(function() state.sandboxes.insert{ name = "a", pid = "1" } end):fails("pid: expected integer, got string")
    expect(function() state.sandboxes.insert{ name = "a/b" } end):fails("not a valid sandbox name")
    expect(function() state.sandboxes.insert{} end):fails("name: expected string")
    expect(#state.sandboxes.list()):equals(0)
  end)

  it("takes the sandbox's events, logs, chat and subtasks with it, but not history or audit", function()
    state.sandboxes.insert{ name = "gone" }
    state.events.add{ sandbox = "gone", kind = "created" }
    state.logs.add{ sandbox = "gone", stream = "stdout", text = "hi" }
    state.chat.add{ sandbox = "gone", role = "user", text = "hello" }
    state.subtasks.add{ sandbox = "gone", title = "t" }
    state.notifications.add{ sandbox = "gone", title = "done" }
    state.history.add{ command = "new", argv = { "new", "-n", "gone" }, sandbox = "gone" }
    local audit = require "foundry.audit"
    audit.append{ sandbox = "gone", kind = "net", decision = "allow" }
    audit.flush()
    state.sandboxes.delete("gone")
    local c = state.db()
    for _, t in ipairs({ "events", "logs", "chat", "subtasks" }) do
      expect(c:row("SELECT count(*) AS n FROM " .. t).n):equals(0)
    end
    expect(c:row("SELECT count(*) AS n FROM history").n):equals(1)
    expect(c:row("SELECT count(*) AS n FROM notifications").n):equals(1)
    expect(c:row("SELECT count(*) AS n FROM audit").n):equals(1)
  end)

  it("moves the children along when a sandbox is renamed", function()
    state.sandboxes.insert{ name = "old" }
    state.logs.add{ sandbox = "old", stream = "stdout", text = "x" }
    state.sandboxes.update("old", { name = "new" })
    expect(state.logs.list{ sandbox = "new" }[1].text):equals("x")
  end)

  it("refuses children of a sandbox that does not exist", function()
    expect(function() state.logs.add{ sandbox = "ghost", stream = "stdout", text = "x" } end):fails("state.not_found")
    -- events without a sandbox are global
    expect(state.events.add{ kind = "daemon.started" }):equals(1)
  end)
end)

describe("history", function()
  it("adds, finishes, finds the last of a command and lists oldest first", function()
    local id1 = state.history.add{ command = "new", argv = { "new", "-n", "a" }, cwd = "/r" }
    state.history.add{ command = "ls", argv = { "ls" } }
    local id3 = state.history.add{ command = "run", argv = { "run", "p.lua" }, cwd = "/r", sandbox = "s" }
    state.history.finish(id1, 0)
    expect(state.history.last().id):equals(id3)
    expect(state.history.last{ command = "new" }.argv):equals({ "new", "-n", "a" })
    expect(state.history.last{ command = "new" }.status):equals(0)
    expect(state.history.last{ command = { "new", "run" } }.id):equals(id3)
    expect(state.history.last{ command = "rm" }):is_nil()
    local all = state.history.list()
    expect(#all):equals(3)
    expect(all[1].id):equals(id1)
    local last2 = state.history.list{ limit = 2 }
    expect({ last2[1].command, last2[2].command }):equals({ "ls", "run" })
    expect(state.history.list{ command = "run" }[1].sandbox):equals("s")
  end)

  it("keeps at most max_rows entries", function()
    local max = state.history.max_rows
    state.history.max_rows = 50
    for i = 1, 200 do state.history.add{ command = "c" .. i } end
    state.history.max_rows = max
    local rows = state.history.list()
    expect(#rows):le(150)
    expect(#rows):ge(50)
    expect(rows[#rows].command):equals("c200")
  end)
end)

describe("events and logs", function()
  before_each(function() state.sandboxes.insert{ name = "s" } end)

  it("lists logs after an id, or the tail", function()
    for i = 1, 10 do
      state.logs.add{ sandbox = "s", stream = i % 2 == 0 and "stderr" or "stdout", text = "line " .. i }
    end
    local tailrows = state.logs.list{ sandbox = "s", limit = 3 }
    expect({ tailrows[1].text, tailrows[3].text }):equals({ "line 8", "line 10" })
    local after = state.logs.list{ sandbox = "s", since_id = 4, limit = 2 }
    expect({ after[1].text, after[2].text }):equals({ "line 5", "line 6" })
    expect(#state.logs.list{ sandbox = "s" }):equals(10)
    expect(#state.logs.list{ sandbox = "s", since_id = 10 }):equals(0)
  end)

  it("lists events since a time, with data decoded", function()
    state.events.add{ sandbox = "s", kind = "old", data = { n = 1 }, ts = 1000 }
    state.events.add{ sandbox = "s", kind = "new", data = { list = { 1, 2 } } }
    local rows = state.events.list{ sandbox = "s", since = 2000 }
    expect(#rows):equals(1)
    expect(rows[1].kind):equals("new")
    expect(#rows[1].data.list):equals(2)
    expect(#state.events.list{ sandbox = "s" }):equals(2)
    expect(state.events.list{ sandbox = "s", limit = 1 }[1].kind):equals("new")
  end)

  it("checks its arguments", function()
    expect(function() state.logs.add{ sandbox = "s", text = "x" } end):fails("stream is required")
    expect(function() state.logs.list{ sandbox = "s", limit = -1 } end):fails("limit")
    expect(function() state.events.list{ sandboxx = "s" } end):fails("did you mean 'sandbox'")
  end)
end)

describe("presets", function()
  it("puts (replacing), gets, lists and deletes", function()
    state.presets.put{ name = "b", source = "saved", path = "/p/b.lua" }
    state.presets.put{ name = "a", source = "library", path = "/p/a.lua" }
    local first = state.presets.get("b")
    state.presets.put{ name = "b", source = "saved", path = "/p/b2.lua" }
    local b = state.presets.get("b")
    expect(b.path):equals("/p/b2.lua")
    expect(b.created_at):equals(first.created_at)
    local names = {}
    for _, p in ipairs(state.presets.list()) do names[#names + 1] = p.name end
    expect(names):equals({ "a", "b" })
    expect(state.presets.delete("a")):is(true)
    expect(state.presets.get("a")):is_nil()
    expect(state.presets.delete("a")):is(false)
  end)
end)

describe("queue", function()
  it("hands items out oldest first, once, and marks them done", function()
    local id1 = state.queue.push{ kind = "push", payload = { branch = "b1" } }
    local id2 = state.queue.push{ kind = "push", payload = { branch = "b2" } }
    local a = state.queue.claim()
    local b = state.queue.claim()
    expect({ a.id, b.id }):equals({ id1, id2 })
    expect(a.payload.branch):equals("b1")
    expect(a.state):equals("running")
    expect(a.attempts):equals(1)
    expect(state.queue.claim()):is_nil()
    state.queue.done(a.id)
    expect(state.queue.list{ state = "done" }[1].id):equals(id1)
  end)

  it("retries failures with backoff, then gives up", function()
    local id = state.queue.push{ kind = "k", max_attempts = 2 }
    local it1 = state.queue.claim()
    expect(state.queue.fail(it1.id, foundry.error("x", "engine down"))):equals("pending")
    expect(state.queue.claim()):is_nil() -- not before its backoff
    local row = state.queue.list()[1]
    expect(row.error):equals("engine down")
    expect(row.next_at - state.now()):gt(500)
    state.db():run("UPDATE queue SET next_at = 0 WHERE id = ?", id)
    local it2 = state.queue.claim()
    expect(it2.attempts):equals(2)
    expect(state.queue.fail(it2.id, "again")):equals("failed")
    expect(state.queue.claim()):is_nil()
    expect(function() state.queue.done(999) end):fails("state.not_found")
  end)

  it("filters by kind, respects delay_ms, and re-hands items whose worker died", function()
    state.queue.push{ kind = "later", delay_ms = 60000 }
    state.queue.push{ kind = "a" }
    state.queue.push{ kind = "b" }
    expect(state.queue.claim{ kind = "b" }.kind):equals("b")
    local a = state.queue.claim()
    expect(a.kind):equals("a")
    expect(state.queue.claim()):is_nil()
    local lease = state.queue.lease_ms
    state.queue.lease_ms = -1
    local again = state.queue.claim{ kind = "a" }
    state.queue.lease_ms = lease
    expect(again.id):equals(a.id)
    expect(again.attempts):equals(2)
  end)
end)

describe("chat, notifications, subtasks", function()
  before_each(function() state.sandboxes.insert{ name = "s" } end)

  it("adds and lists chat messages", function()
    state.chat.add{ sandbox = "s", role = "user", text = "hi" }
    state.chat.add{ sandbox = "s", role = "agent", text = "hello", data = { tokens = 3 } }
    local rows = state.chat.list{ sandbox = "s" }
    expect({ rows[1].role, rows[2].role }):equals({ "user", "agent" })
    expect(rows[2].data.tokens):equals(3)
  end)

  it("adds, lists and marks notifications read", function()
    local id = state.notifications.add{ sandbox = "s", level = "error", title = "setup failed", text = "deps" }
    state.notifications.add{ title = "daemon restarted" }
    expect(#state.notifications.list{ unread = true }):equals(2)
    expect(state.notifications.mark_read(id)):equals(1)
    expect(#state.notifications.list{ unread = true }):equals(1)
    expect(state.notifications.list{ unread = false }[1].id):equals(id)
    expect(state.notifications.mark_read()):equals(1)
    expect(#state.notifications.list{ unread = true }):equals(0)
  end)

  it("adds, lists and updates subtasks", function()
    local id = state.subtasks.add{ sandbox = "s", title = "write tests" }
    state.subtasks.add{ sandbox = "s", title = "fix bug", state = "running" }
    state.subtasks.update(id, { state = "done", data = { pr = 4 } })
    local done = state.subtasks.list{ sandbox = "s", state = "done" }
    expect(#done):equals(1)
    expect(done[1].data.pr):equals(4)
    expect(#state.subtasks.list{ sandbox = "s" }):equals(2)
    expect(function() state.subtasks.update(999, { state = "x" }) end):fails("state.not_found")
  end)
end)

describe("times", function()
  it("parses durations, dates and epoch milliseconds", function()
    local now = state.now()
    expect(math.abs(state.parse_time("10m") - (now - 600000))):lt(2000)
    expect(math.abs(state.parse_time("2h") - (now - 7200000))):lt(2000)
    expect(state.parse_time("2024-05-01T12:00:00Z")):equals(1714564800000)
    expect(state.parse_time("1714564800000")):equals(1714564800000)
    expect(state.parse_time(5)):equals(5)
    expect(function() state.parse_time("yesterday") end):fails("usage")
    expect(state.format_time(1714564800123, true)):equals("2024-05-01T12:00:00.123Z")
  end)
end)

describe("a full disk", function()
  it("raises db.full and leaves a database that opens and keeps what was committed", { timeout = 30000 }, function()
    local mnt = fs.mkdtemp("/tmp/foundry-full-XXXXXX")
    local m = foundry.exec{ "mount", "-t", "tmpfs", "-o", "size=640k,mode=0700", "tmpfs", mnt }
    if not m.ok then
      fs.rm(mnt)
      skip("cannot mount a small tmpfs here (" .. m.stderr:gsub("%s+$", "") .. ")")
    end
    local ok, err = pcall(function()
      uv.os_setenv("FOUNDRY_HOME", mnt)
      fs.write(mnt .. "/ballast", string.rep("b", 128 * 1024))
      state.sandboxes.insert{ name = "s" }
      local id = state.logs.add{ sandbox = "s", stream = "stdout", text = "committed" }
      local full
      for _ = 1, 1000 do
        local okw, e = pcall(state.logs.add, { sandbox = "s", stream = "stdout", text = string.rep("x", 16384) })
        if not okw then full = e break end
      end
      expect(full and full.code):equals("db.full")
      expect(full.hint):matches("free disk space")
      state.close()
      local c <close> = db.open(mnt .. "/state/foundry.db")
      expect(c:row("PRAGMA integrity_check").integrity_check):equals("ok")
      expect(c:row("SELECT text FROM logs WHERE id = ?", id).text):equals("committed")
      c:close()
      -- once space is freed, writing works again
      fs.unlink(mnt .. "/ballast")
      state.logs.add{ sandbox = "s", stream = "stdout", text = "after" }
      expect(state.logs.list{ sandbox = "s", limit = 1 }[1].text):equals("after")
    end)
    state.close()
    uv.os_setenv("FOUNDRY_HOME", home)
    foundry.exec{ "umount", mnt }
    fs.rm(mnt)
    if not ok then error(err, 0) end
  end)
end)

describe("concurrent processes", function()
  it("lets exactly one of several processes take a name", { timeout = 30000 }, function()
    state.db() -- schema in place, so the children race on the insert itself
    local start = state.now() + 700
    local code = string.format([[
      local state = require "foundry.state"
      local uv = require "luv"
      while state.now() < %d do uv.sleep(1) end
      local ok, err = pcall(state.sandboxes.insert, { name = "race" })
      return ok and "won" or err.code]], start)
    local fns = {}
    for i = 1, 4 do fns[i] = function() return child(code) end end
    local results = foundry.parallel(fns)
    local won, taken = 0, 0
    for _, r in ipairs(results) do
      expect(r.stderr):equals("")
      local v = json.decode(r.stdout)
      if v == "won" then won = won + 1 elseif v == "state.name_taken" then taken = taken + 1 end
    end
    expect(won):equals(1)
    expect(taken):equals(3)
    expect(#state.sandboxes.list()):equals(1)
  end)

  it("gives processes inserting with {unique=true} distinct names", { timeout = 30000 }, function()
    state.db()
    local start = state.now() + 700
    local code = string.format([[
      local state = require "foundry.state"
      local uv = require "luv"
      while state.now() < %d do uv.sleep(1) end
      local names = {}
      for i = 1, 5 do names[i] = state.sandboxes.insert({ name = "u" }, { unique = true }).name end
      return names]], start)
    local results = foundry.parallel({ function() return child(code) end, function() return child(code) end,
      function() return child(code) end })
    local seen, n = {}, 0
    for _, r in ipairs(results) do
      expect(r.stderr):equals("")
      for _, name in ipairs(json.decode(r.stdout)) do
        expect(seen[name]):is_nil()
        seen[name], n = true, n + 1
      end
    end
    expect(n):equals(15)
    expect(#state.sandboxes.list()):equals(15)
  end)

  it("survives kill -9 at any moment during writes", { timeout = 60000 }, function()
    local writer = [[
      local state = require "foundry.state"
      local audit = require "foundry.audit"
      local i = 0
      while true do
        i = i + 1
        local name = "k" .. ROUND .. "-" .. i
        state.sandboxes.insert({ name = name, spec = { i = i } })
        state.events.add{ sandbox = name, kind = "created", data = { i = i } }
        state.logs.add{ sandbox = name, stream = "stdout", text = string.rep("x", i % 500) }
        state.sandboxes.update(name, { state = "running" })
        audit.append{ sandbox = name, kind = "net", decision = "allow", host = "h", path = "/" .. i }
        if i % 3 == 0 then state.sandboxes.delete("k" .. ROUND .. "-" .. (i - 1)) end
        if i % 7 == 0 then audit.flush() end
        state.queue.push{ kind = "k", payload = { i = i } }
        local item = state.queue.claim()
        if item then state.queue.done(item.id) end
      end]]
    for round = 1, 4 do
      -- coreutils timeout sends a real SIGKILL after a random time
      local secs = string.format("%.3f", 0.25 + math.random() * 0.6)
      local r = foundry.exec{ "timeout", "-s", "KILL", secs, uv.exepath(), "eval",
        "local ROUND = " .. round .. "\n" .. writer, env = { FOUNDRY_HOME = home } }
      expect(r.stderr):equals("")
      -- killed by SIGKILL (timeout passes the signal on), not ended by an error
      expect(r.signal == 9 or r.status == 137):is(true)
      local c <close> = db.open(dbfile())
      expect(c:row("PRAGMA integrity_check").integrity_check):equals("ok")
      expect(c:query("PRAGMA foreign_key_check")):equals({})
      expect(c:row("SELECT count(*) AS n FROM sandboxes").n):gt(round == 1 and 0 or -1)
      c:close()
      local audit = require "foundry.audit"
      local v = audit.verify()
      expect(v.ok):is(true)
      state.close()
    end
  end)
end)
