-- foundry.audit: the hash-chained audit log, its batching writer, tamper detection, and
-- the `foundry audit` / `foundry history` commands.
local audit = require "foundry.audit"
local crypto = require "foundry.crypto"
local db = require "foundry.db"
local fs = require "foundry.fs"
local json = require "foundry.json"
local state = require "foundry.state"
local uv = require "luv"

local H = dofile("tests/lib/home.lua")
local home, leave

before_each(function() home, leave = H.enter("/tmp/foundry-audit-XXXXXX") end)
after_each(function() leave() end)

local function dbfile() return home .. "/state/foundry.db" end

local function add(n, extra)
  for i = 1, n do
    local row = { sandbox = "s" .. (i % 3), kind = "net", decision = i % 4 == 0 and "deny" or "allow",
      host = "api.example.com", method = "GET", path = "/v1/items/" .. i, rule = "allow-example",
      status = 200, bytes_in = 10 * i, bytes_out = 100 * i, ms = i / 7, data = { i = i } }
    for k, v in pairs(extra or {}) do row[k] = v end
    audit.append(row)
  end
  return audit.flush()
end

-- Tamper with the file from outside, as someone with the sqlite3 CLI would.
local function tamper(sql, ...)
  state.close()
  local c <close> = db.open(dbfile())
  c:run(sql, ...)
end

local function foundry_cli(...)
  local spec = { uv.exepath(), ... }
  spec.env = { FOUNDRY_HOME = home }
  return foundry.exec(spec)
end

describe("append", function()
  it("stores every field, chains hashes from 64 zeros and records the head", function()
    expect(add(3)):equals(3)
    local c = state.db()
    local rows = c:query("SELECT * FROM audit ORDER BY id")
    expect(#rows):equals(3)
    local r = rows[1]
    expect(r.id):equals(1)
    expect(r.prev_hash):equals(string.rep("0", 64))
    expect({ r.sandbox, r.kind, r.decision, r.host, r.method, r.path, r.rule, r.status, r.bytes_in, r.bytes_out })
      :equals({ "s1", "net", "allow", "api.example.com", "GET", "/v1/items/1", "allow-example", 200, 10, 100 })
    expect(r.ms):equals(1 / 7)
    expect(json.decode(r.data).i):equals(1)
    expect(r.hash):equals(crypto.sha256_hex(audit.canonical(r)))
    expect(rows[2].prev_hash):equals(rows[1].hash)
    expect(rows[3].prev_hash):equals(rows[2].hash)
    expect(c:row("SELECT value FROM meta WHERE key = 'audit_head'").value):equals("3 " .. rows[3].hash)
  end)

  it("hashes in C exactly what the documented canonical encoding says", function()
    local base = { id = 7, ts = 1714564800123, sandbox = "s", kind = "net", decision = "deny", host = "h|x",
      method = "GET", path = "/a:b", rule = "", reason = "r", status = 403, bytes_in = 0, bytes_out = -1,
      data = '{"k":1}', prev_hash = string.rep("a", 64) }
    for _, ms in ipairs({ 0, 5, 5.0, 0.1, -2.5, 1 / 3, 2 ^ 70, math.mininteger + 0.0 }) do
      base.ms = ms
      expect(audit.hash(base)):equals(crypto.sha256_hex(audit.canonical(base)))
    end
    base.status, base.host = nil, nil
    expect(audit.hash(base)):equals(crypto.sha256_hex(audit.canonical(base)))
  end)

  it("encodes rows canonically: absent fields differ from empty ones, numbers read back alike", function()
    local a = audit.canonical{ id = 1, ts = 5, kind = "net", host = "" , prev_hash = "0" }
    local b = audit.canonical{ id = 1, ts = 5, kind = "net", prev_hash = "0" }
    expect(a == b):is(false)
    -- a REAL column gives 5.0 back for 5
    expect(audit.canonical{ id = 1, ms = 5 }):equals(audit.canonical{ id = 1, ms = 5.0 })
    -- field boundaries cannot be shifted
    expect(audit.canonical{ id = 1, host = "a|b" } == audit.canonical{ id = 1, host = "a", method = "b" }):is(false)
  end)

  it("checks rows: unknown fields, types, decision, kind", function()
    expect(function() audit.append{ kind = "net", hots = "x" } end):fails("did you mean 'host'")
    expect(function() audit.append{ kind = "net", status = "200" } end):fails("status: expected integer")
    expect(function() audit.append{ kind = "net", decision = "maybe" } end):fails("decision")
    expect(function() audit.append{ host = "x" } end):fails("kind is required")
    expect(function() audit.append{ kind = "net", ms = 0 / 0 } end):fails("finite")
    expect(audit.default_writer:pending()):equals(0)
  end)

  it("writes a buffered row after flush_ms without being asked", function()
    audit.append{ kind = "hook", sandbox = "x", reason = "post-tool-use" }
    expect(state.db():row("SELECT count(*) AS n FROM audit").n):equals(0)
    foundry.sleep(250)
    expect(state.db():row("SELECT count(*) AS n FROM audit").n):equals(1)
    expect(audit.default_writer:pending()):equals(0)
  end)

  it("writes a full buffer at once, in one transaction per batch", function()
    local w = audit.writer{ max_rows = 50, flush_ms = 60000 }
    for i = 1, 120 do w:append{ kind = "net", path = "/" .. i } end
    expect(state.db():row("SELECT count(*) AS n FROM audit").n):equals(100)
    expect(w:pending()):equals(20)
    w:close()
    expect(state.db():row("SELECT count(*) AS n FROM audit").n):equals(120)
    expect(audit.verify().ok):is(true)
  end)

  it("keeps rows when a write fails and writes them later", function()
    state.db()
    local ro = db.open(dbfile(), { readonly = true })
    local w = audit.writer{ flush_ms = 60000 }
    w:append{ kind = "net", path = "/a" }
    w:append{ kind = "net", path = "/b" }
    expect(function() w:flush(ro) end):fails("db.readonly")
    ro:close()
    expect(w:pending()):equals(2)
    expect(w:flush()):equals(2)
    w:close()
    local v = audit.verify()
    expect(v.ok):is(true)
    expect(v.rows):equals(2)
  end)

  it("records how many rows it dropped when its buffer overflowed", function()
    local w = audit.writer{ max_buffer = 20, max_rows = 1000, flush_ms = 60000 }
    for i = 1, 25 do w:append{ kind = "net", path = "/" .. i } end
    expect(w:pending()):le(20)
    local kept = w:pending()
    expect(w:flush()):equals(kept + 1)
    w:close()
    local rows = state.db():query("SELECT * FROM audit ORDER BY id")
    expect(rows[1].kind):equals("audit")
    expect(rows[1].reason):matches("^" .. (25 - kept) .. " audit rows dropped")
    expect(rows[2].path):equals("/" .. (25 - kept + 1))
    expect(rows[#rows].path):equals("/25")
  end)

  it("writes buffered rows when the process exits, from every writer", { timeout = 20000 }, function()
    local r = foundry_cli("eval", [[
      local audit = require "foundry.audit"
      audit.append{ kind = "net", host = "at-exit" }
      _G.w = audit.writer{ flush_ms = 60000 }
      _G.w:append{ kind = "net", host = "own-writer" }]])
    expect(r.stderr):equals("")
    expect(r.status):equals(0)
    local hosts = {}
    for _, row in ipairs(state.db():query("SELECT host FROM audit ORDER BY id")) do hosts[#hosts + 1] = row.host end
    table.sort(hosts)
    expect(hosts):equals({ "at-exit", "own-writer" })
  end)

  it("writes rows buffered for one database into that one when FOUNDRY_HOME changes", function()
    audit.append{ kind = "net", host = "first" }
    local other = fs.mkdtemp("/tmp/foundry-audit-XXXXXX")
    uv.os_setenv("FOUNDRY_HOME", other)
    audit.flush()
    audit.append{ kind = "net", host = "second" }
    audit.flush()
    local rows = state.db():query("SELECT host FROM audit")
    expect(rows):equals({ { host = "second" } })
    -- switching databases (state.db() closes the old connection) writes pending rows first
    audit.append{ kind = "net", host = "third" }
    uv.os_setenv("FOUNDRY_HOME", home)
    expect(state.db():query("SELECT host FROM audit ORDER BY id")):equals({ { host = "first" } })
    expect(audit.default_writer:pending()):equals(0)
    state.close()
    local c <close> = db.open(other .. "/state/foundry.db")
    expect(c:query("SELECT host FROM audit ORDER BY id")):equals({ { host = "second" }, { host = "third" } })
    c:close()
    fs.rm(other)
  end)

  it("keeps one chain when several processes append at once", { timeout = 30000 }, function()
    state.db()
    local code = [[
      local audit = require "foundry.audit"
      for i = 1, 300 do
        audit.append{ kind = "net", sandbox = "p" .. require("luv").os_getpid(), path = "/" .. i }
        if i % 37 == 0 then audit.flush() end
      end]]
    local rs = foundry.parallel({ function() return foundry_cli("eval", code) end,
      function() return foundry_cli("eval", code) end, function() return foundry_cli("eval", code) end })
    for _, r in ipairs(rs) do expect(r.stderr):equals("") end
    local v = audit.verify()
    expect(v.ok):is(true)
    expect(v.rows):equals(900)
  end)
end)

describe("query", function()
  it("returns the tail, or rows from a time or an id, filtered", function()
    add(10)
    expect(#audit.query()):equals(10)
    local last3 = audit.query{ limit = 3 }
    expect({ last3[1].id, last3[3].id }):equals({ 8, 10 })
    expect(#audit.query{ sandbox = "s1" }):equals(4)
    expect(#audit.query{ decision = "deny" }):equals(2)
    local after = audit.query{ after_id = 4, limit = 2 }
    expect({ after[1].id, after[2].id }):equals({ 5, 6 })
    state.db():run("UPDATE audit SET ts = 1000 WHERE id <= 5") -- (breaks the chain; fine here)
    expect(#audit.query{ since = 2000 }):equals(5)
    expect(#audit.query{ since = "1h" }):equals(5)
    expect(function() audit.query{ sandbx = "x" } end):fails("did you mean 'sandbox'")
  end)

  it("follows new rows until the callback returns false", function()
    add(2)
    local seen = {}
    local follower = foundry.spawn(function()
      audit.query{ limit = 1, interval_ms = 20, follow = function(r)
        seen[#seen + 1] = r.path
        if #seen == 4 then return false end
      end }
    end)
    while #seen == 0 do foundry.sleep(5) end -- the follower has read the existing rows
    audit.append{ kind = "net", path = "/new1" }
    audit.append{ kind = "net", path = "/new2" }
    audit.append{ kind = "net", path = "/new3" }
    audit.flush()
    follower:join()
    expect(seen):equals({ "/v1/items/2", "/new1", "/new2", "/new3" })
  end)

  it("stops following when its task is cancelled", function()
    local t = foundry.spawn(function() audit.query{ follow = function() end, interval_ms = 10 } end)
    foundry.sleep(30)
    t:cancel()
    expect(function() t:join() end):fails("cancelled")
  end)
end)

describe("verify", function()
  it("passes an empty log and an intact one", function()
    expect(audit.verify()):equals({ ok = true, rows = 0, head = { id = 0, hash = string.rep("0", 64) } })
    add(50)
    local v = audit.verify()
    expect(v.ok):is(true)
    expect(v.rows):equals(50)
    expect(v.head.id):equals(50)
  end)

  it("finds a modified field", function()
    add(10)
    tamper("UPDATE audit SET decision = 'allow' WHERE id = 4")
    local v = audit.verify()
    expect(v.ok):is(false)
    expect(v.first_bad_id):equals(4)
    expect(v.rows):equals(3)
    expect(v.reason):matches("row 4 was modified")
  end)

  it("finds a modified row whose hash was recomputed (the next link breaks)", function()
    add(10)
    local c = state.db()
    local r = c:row("SELECT * FROM audit WHERE id = 6")
    r.path = "/innocent"
    local h = audit.hash(r)
    tamper("UPDATE audit SET path = ?, hash = ? WHERE id = 6", r.path, h)
    local v = audit.verify()
    expect(v.first_bad_id):equals(7)
    expect(v.reason):matches("row 7 does not follow row 6")
  end)

  it("finds a deleted row", function()
    add(10)
    tamper("DELETE FROM audit WHERE id = 5")
    local v = audit.verify()
    expect(v.ok):is(false)
    expect(v.first_bad_id):equals(5)
    expect(v.reason):matches("row 5 is missing")
  end)

  it("finds the first row deleted", function()
    add(3)
    tamper("DELETE FROM audit WHERE id = 1")
    expect(audit.verify().first_bad_id):equals(1)
  end)

  it("finds rows deleted from the end", function()
    add(10)
    tamper("DELETE FROM audit WHERE id >= 9")
    local v = audit.verify()
    expect(v.ok):is(false)
    expect(v.first_bad_id):equals(9)
    expect(v.reason):matches("rows were removed from the end")
  end)

  it("finds the tail cut even after new rows were appended", function()
    add(10)
    tamper("DELETE FROM audit WHERE id >= 9")
    add(2)
    local v = audit.verify()
    expect(v.ok):is(false)
    expect(v.first_bad_id):equals(9)
  end)

  it("finds two rows swapped", function()
    add(10)
    -- swap rows 3 and 4 whole (hashes included), as a reordering would
    tamper("UPDATE audit SET id = -3 WHERE id = 3")
    tamper("UPDATE audit SET id = 3 WHERE id = 4")
    tamper("UPDATE audit SET id = 4 WHERE id = -3")
    local v = audit.verify()
    expect(v.ok):is(false)
    expect(v.first_bad_id):equals(3)
  end)

  it("finds a forged row inserted in the middle", function()
    add(5)
    local c = state.db()
    local r4 = c:row("SELECT * FROM audit WHERE id = 4")
    tamper("UPDATE audit SET id = id + 100 WHERE id >= 5")
    local forged = { id = 5, ts = r4.ts, kind = "net", decision = "allow", host = "evil", prev_hash = r4.hash }
    forged.hash = audit.hash(forged)
    tamper("INSERT INTO audit (id, ts, kind, decision, host, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
      forged.id, forged.ts, forged.kind, forged.decision, forged.host, forged.prev_hash, forged.hash)
    local v = audit.verify()
    expect(v.ok):is(false)
    expect(v.first_bad_id):equals(6)
  end)

  it("stays verifiable after pruning old rows", function()
    add(10)
    state.db():run("UPDATE audit SET ts = 1000 WHERE id <= 4")
    -- rewrite hashes of the rows whose ts changed, as if they had been written then
    local c = state.db()
    local prev = string.rep("0", 64)
    for _, r in ipairs(c:query("SELECT * FROM audit ORDER BY id")) do
      r.prev_hash = prev
      r.hash = audit.hash(r)
      c:run("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", r.prev_hash, r.hash, r.id)
      prev = r.hash
    end
    c:run("UPDATE meta SET value = ? WHERE key = 'audit_head'", "10 " .. prev)
    expect(audit.verify().ok):is(true)
    expect(audit.prune{ before = 2000 }):equals(4)
    local v = audit.verify()
    expect(v.ok):is(true)
    expect(v.rows):equals(6)
    add(1)
    expect(audit.verify().rows):equals(7)
  end)
end)

describe("foundry audit", function()
  it("prints a table, NDJSON with --json, and filters", { timeout = 20000 }, function()
    add(6)
    state.close()
    local r = foundry_cli("audit")
    expect(r.status):equals(0)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    expect(#lines):equals(7)
    expect(lines[1]):matches("^TIME%s+SANDBOX%s+DECISION%s+KIND%s+REQUEST%s+RULE%s+STATUS")
    expect(lines[2]):matches("allow%s+net%s+GET api%.example%.com /v1/items/1%s+allow%-example%s+200")
    local j = foundry_cli("audit", "s1", "--json", "--limit", "1")
    expect(j.status):equals(0)
    local one = json.decode(j.stdout)
    expect(one.id):equals(4)
    expect(one.sandbox):equals("s1")
    expect(one.data.i):equals(4)
    local d = foundry_cli("audit", "--json", "--decision", "deny")
    local n = 0
    for l in d.stdout:gmatch("[^\n]+") do n = n + 1; expect(json.decode(l).decision):equals("deny") end
    expect(n):equals(1)
    expect(foundry_cli("audit", "--since", "whenever").status):equals(2)
    local v = foundry_cli("audit", "--sandbox", "s2", "--json")
    for l in v.stdout:gmatch("[^\n]+") do expect(json.decode(l).sandbox):equals("s2") end
  end)

  it("follows with -f until interrupted", { timeout = 20000 }, function()
    add(1)
    state.close()
    local out = {}
    local pipe = uv.new_pipe(false)
    local env = {}
    for k, v in pairs(uv.os_environ()) do env[#env + 1] = k .. "=" .. v end
    env[#env + 1] = "FOUNDRY_HOME=" .. home
    local w = require("foundry._task").wait("audit -f")
    local proc
    proc = uv.spawn(uv.exepath(), { args = { "audit", "-f", "--json" }, stdio = { nil, pipe, nil }, env = env },
      function(code, sig) proc:close(); w:resolve(code, sig) end)
    pipe:read_start(function(_, chunk) if chunk then out[#out + 1] = chunk else pipe:close() end end)
    foundry.sleep(600)
    audit.append{ kind = "net", host = "followed" }
    audit.flush()
    foundry.sleep(700)
    proc:kill("sigint") -- like Ctrl-C
    local code, sig = w:await()
    expect({ code, sig }):equals({ 0, 0 })
    foundry.sleep(10)
    local text = table.concat(out)
    expect(text):contains('"host":"followed"')
    expect(text):contains('"path":"/v1/items/1"')
  end)

  it("verify exits 0 when intact and 1 naming the first bad row when tampered", { timeout = 20000 }, function()
    add(5)
    state.close()
    local ok = foundry_cli("audit", "verify")
    expect(ok.status):equals(0)
    expect(ok.stdout):matches("intact: 5 rows")
    tamper("UPDATE audit SET host = 'other.example.com' WHERE id = 2")
    local bad = foundry_cli("audit", "verify")
    expect(bad.status):equals(1)
    expect(bad.stderr):matches("row 2 was modified")
    local j = foundry_cli("audit", "verify", "--json")
    expect(j.status):equals(1)
    expect(json.decode(j.stdout).first_bad_id):equals(2)
  end)
end)

describe("foundry history", function()
  it("lists past commands, as text and JSON", { timeout = 20000 }, function()
    local empty = foundry_cli("history")
    expect(empty.status):equals(0)
    state.history.add{ command = "new", argv = { "new", "-n", "my box" }, cwd = "/src" }
    local id = state.history.add{ command = "rm", argv = { "rm", "my box" } }
    state.history.finish(id, 3)
    state.close()
    local r = foundry_cli("history")
    expect(r.status):equals(0)
    expect(r.stdout):contains("foundry new -n 'my box'   (in /src)")
    expect(r.stdout):matches("   3  foundry rm 'my box'")
    local j = json.decode(foundry_cli("history", "--json", "--limit", "1").stdout)
    expect(#j):equals(1)
    expect(j[1].command):equals("rm")
    expect(j[1].status):equals(3)
    expect(j[1].argv):equals({ "rm", "my box" })
  end)
end)
