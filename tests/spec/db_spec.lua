-- foundry.db: SQLite connections (runtime/db.c).
local db = require "foundry.db"
local fs = require "foundry.fs"
local uv = require "luv"

local dir
local function tmpdb(name) return dir .. "/" .. (name or "t.db") end

before_each(function() dir = fs.mkdtemp("/tmp/foundry-db-XXXXXX") end)
after_each(function() fs.rm(dir) end)

describe("db.open", function()
  it("opens in WAL mode with foreign keys on, creating the file with mode 0600", function()
    local c <close> = db.open(tmpdb())
    expect(c:row("PRAGMA journal_mode").journal_mode):equals("wal")
    expect(c:row("PRAGMA foreign_keys").foreign_keys):equals(1)
    expect(c:row("PRAGMA synchronous").synchronous):equals(1) -- NORMAL
    expect(fs.stat(tmpdb()).mode & 511):equals(tonumber("600", 8))
    expect(tostring(c)):equals("foundry.db.Connection (" .. tmpdb() .. ")")
  end)

  it("checks its options", function()
    expect(function() db.open(tmpdb(), { readonly = "yes" }) end):fails("readonly: expected boolean")
    expect(function() db.open(tmpdb(), { busy_timeout = 5 }) end):fails("did you mean 'busy_timeout_ms'")
    expect(function() db.open(nil) end):fails("path: expected string")
  end)

  it("does not create a file with create=false", function()
    local err = expect(function() db.open(tmpdb("none.db"), { create = false }) end):fails("db.error")
    expect(err.message):matches("cannot open")
    expect(fs.exists(tmpdb("none.db"))):falsy()
  end)

  it("raises db.corrupt for a file that is not a database", function()
    fs.write(tmpdb(), string.rep("this is not a database\n", 200))
    local err = expect(function() db.open(tmpdb()) end):fails("db.corrupt")
    expect(err.hint):matches("move it aside")
  end)
end)

describe("statements", function()
  local c
  before_each(function()
    c = db.open(":memory:")
    c:exec([[CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, n INTEGER,
             x REAL, b BLOB);
             CREATE TABLE child (id INTEGER PRIMARY KEY, tname TEXT REFERENCES t(name))]])
  end)
  after_each(function() c:close() end)

  it("keeps integers integers, floats floats, NULL absent, blobs as strings", function()
    c:run("INSERT INTO t (name, n, x, b) VALUES (?, ?, ?, X'00ff10')", "a", 9007199254740993, 1.5)
    local r = c:row("SELECT * FROM t")
    expect(math.type(r.n)):equals("integer")
    expect(r.n):equals(9007199254740993)
    expect(math.type(r.x)):equals("float")
    expect(r.b):equals("\0\255\16")
    c:run("INSERT INTO t (name) VALUES (?)", "b")
    local r2 = c:row("SELECT * FROM t WHERE name = 'b'")
    expect(r2.n):is_nil()
    expect(r2.x):is_nil()
    expect(r2.id):equals(2)
  end)

  it("binds strings with any bytes, booleans as 1/0, nil as NULL", function()
    local s = "a\0b\255c"
    c:run("INSERT INTO t (name, n, x) VALUES (?, ?, ?)", s, true, nil)
    local r = c:row("SELECT name, n, length(CAST(name AS BLOB)) AS len FROM t")
    expect(r.name):equals(s)
    expect(r.len):equals(5)
    expect(r.n):equals(1)
  end)

  it("binds named parameters from a table, missing names as NULL", function()
    c:run("INSERT INTO t (name, n, x) VALUES (:name, @n, $x)", { name = "a", n = 3 })
    local r = c:row("SELECT * FROM t WHERE name = :name", { name = "a" })
    expect(r.n):equals(3)
    expect(r.x):is_nil()
    expect(c:row("SELECT ?2 AS two, ?1 AS one", { "first", "second" })):equals({ two = "second", one = "first" })
    expect(c:row("SELECT ? AS a, ? AS b", { 1, 2 })):equals({ a = 1, b = 2 })
    -- SQLite numbers a bare ? after ?2 as 3
    expect(c:row("SELECT ?2 AS a, ? AS b", { "x", "y", "z" })):equals({ a = "y", b = "z" })
  end)

  it("returns {changes=, last_id=} from run and nil from row when nothing matches", function()
    local r = c:run("INSERT INTO t (name) VALUES (?)", "a")
    expect(r):equals({ changes = 1, last_id = 1 })
    c:run("INSERT INTO t (name) VALUES (?)", "b")
    expect(c:run("UPDATE t SET n = 1").changes):equals(2)
    expect(c:row("SELECT * FROM t WHERE name = ?", "zz")):is_nil()
    expect(c:query("SELECT * FROM t WHERE name = ?", "zz")):equals({})
    expect(#c:query("SELECT * FROM t ORDER BY id")):equals(2)
  end)

  it("refuses misuse: extra parameters, tables as values, several statements", function()
    expect(function() c:query("SELECT ?", 1, 2) end):fails("2 parameters given, the statement takes 1")
    expect(function() c:query("SELECT ?, ?", 1, {}) end):fails("cannot bind")
    expect(function() c:query("SELECT 1; SELECT 2") end):fails("several statements")
    -- the statement cache is still sound after those errors
    expect(c:row("SELECT ? AS v", 7).v):equals(7)
  end)

  it("reuses cached statements and survives evictions", function()
    for i = 1, 200 do
      local sql = "SELECT " .. (i % 80) .. " AS v, ? AS w"
      expect(c:row(sql, i)):equals({ v = i % 80, w = i })
    end
  end)

  it("raises db.error quoting the SQL's first 80 characters", function()
    local long = "SELECT * FROM no_such_table WHERE " .. string.rep("a = 1 AND ", 20) .. "1"
    local err = expect(function() c:query(long) end):fails("db.error")
    expect(err.message):matches("no such table: no_such_table")
    expect(err.message):contains('(in "SELECT * FROM no_such_table WHERE a = 1 AND')
    expect(err.message):contains('...")')
    local quoted = err.message:match('%(in "(.*)%.%.%."%)')
    expect(#quoted):equals(80)
    local err2 = expect(function() c:exec("CREATE TABLE\n\n  bad(") end):fails("db.error")
    expect(err2.message):contains('(in "CREATE TABLE bad(")')
  end)

  it("raises db.constraint naming a unique violation's columns", function()
    c:run("INSERT INTO t (name) VALUES ('a')")
    local err = expect(function() c:run("INSERT INTO t (name) VALUES ('a')") end):fails("db.constraint")
    expect(err.constraint):equals("unique")
    expect(err.columns):equals("t.name")
    expect(err.message):matches("UNIQUE constraint failed: t.name")
    local fk = expect(function() c:run("INSERT INTO child (tname) VALUES ('nope')") end):fails("db.constraint")
    expect(fk.constraint):equals("foreignkey")
    local nn = expect(function() c:run("INSERT INTO t (name) VALUES (NULL)") end):fails("db.constraint")
    expect(nn.constraint):equals("notnull")
  end)
end)

describe("transactions", function()
  local c
  before_each(function()
    c = db.open(tmpdb())
    c:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
  end)
  after_each(function() c:close() end)

  local function count() return c:row("SELECT count(*) AS n FROM t").n end

  it("commits and returns the function's results", function()
    local a, b = c:transaction(function(x)
      expect(c:in_transaction()):is(true)
      c:run("INSERT INTO t (v) VALUES (?)", x)
      return 1, "two"
    end, "x")
    expect({ a, b }):equals({ 1, "two" })
    expect(c:in_transaction()):is(false)
    expect(count()):equals(1)
  end)

  it("rolls back on error and re-raises the same error value", function()
    local e = foundry.error("my.code", "boom")
    local ok, err = pcall(c.transaction, c, function()
      c:run("INSERT INTO t (v) VALUES ('x')")
      error(e)
    end)
    expect(ok):is(false)
    expect(err):is(e)
    expect(count()):equals(0)
    expect(c:in_transaction()):is(false)
  end)

  it("nests with savepoints: an inner failure undoes only the inner part", function()
    c:transaction(function()
      c:run("INSERT INTO t (v) VALUES ('outer')")
      local ok = pcall(c.transaction, c, function()
        c:run("INSERT INTO t (v) VALUES ('inner')")
        error("inner fails")
      end)
      expect(ok):is(false)
      c:transaction(function() c:run("INSERT INTO t (v) VALUES ('inner2')") end)
    end)
    local vs = {}
    for _, r in ipairs(c:query("SELECT v FROM t ORDER BY id")) do vs[#vs + 1] = r.v end
    expect(vs):equals({ "outer", "inner2" })
  end)

  it("refuses to wait inside a transaction, and rolls back", function()
    expect(function()
      c:transaction(function()
        c:run("INSERT INTO t (v) VALUES ('x')")
        foundry.sleep(1)
      end)
    end):fails("must not wait")
    expect(count()):equals(0)
  end)

  it("refuses to close a connection inside its own transaction", function()
    expect(function() c:transaction(function() c:close() end) end):fails("inside its transaction")
    expect(c:is_open()):is(true)
  end)

  it("waits at most busy_timeout_ms for another writer, then raises db.busy", function()
    local other <close> = db.open(tmpdb(), { busy_timeout_ms = 100 })
    local t0 = uv.hrtime()
    local err
    c:transaction(function()
      c:run("INSERT INTO t (v) VALUES ('held')")
      err = expect(function() other:run("INSERT INTO t (v) VALUES ('blocked')") end):fails("db.busy")
    end)
    local ms = (uv.hrtime() - t0) / 1e6
    expect(ms):ge(90)
    expect(ms):lt(3000)
    expect(err.hint):matches("try again")
    -- readers are not blocked by a writer in WAL mode, and the lock is free afterwards
    other:run("INSERT INTO t (v) VALUES ('later')")
    expect(count()):equals(2)
  end)
end)

describe("failures of the world", function()
  it("raises db.readonly on a read-only connection", function()
    local w = db.open(tmpdb())
    w:exec("CREATE TABLE t (v)")
    local r <close> = db.open(tmpdb(), { readonly = true })
    expect(function() r:run("INSERT INTO t VALUES (1)") end):fails("db.readonly")
    w:close()
  end)

  it("raises db.full when the disk (here: max_page_count) is full, and the file stays sound", function()
    local c = db.open(tmpdb())
    c:exec("CREATE TABLE t (v TEXT)")
    c:transaction(function() c:run("INSERT INTO t VALUES ('kept')") end)
    local pages = c:row("PRAGMA page_count").page_count
    c:exec("PRAGMA max_page_count = " .. (pages + 2))
    local err = expect(function()
      c:transaction(function()
        for _ = 1, 100 do c:run("INSERT INTO t VALUES (?)", string.rep("x", 4000)) end
      end)
    end):fails("db.full")
    expect(err.hint):matches("free disk space")
    expect(c:in_transaction()):is(false)
    c:close()
    local again <close> = db.open(tmpdb())
    expect(again:row("PRAGMA integrity_check").integrity_check):equals("ok")
    expect(again:query("SELECT v FROM t")):equals({ { v = "kept" } })
  end)
end)

describe("closing", function()
  it("is idempotent, through close, <close> and the garbage collector", function()
    local c = db.open(":memory:")
    c:close()
    c:close()
    expect(c:is_open()):is(false)
    expect(tostring(c)):equals("foundry.db.Connection (closed)")
    expect(function() c:query("SELECT 1") end):fails("closed")
    do local d <close> = db.open(":memory:"); expect(d:is_open()):is(true) end
    for _ = 1, 50 do db.open(":memory:"):exec("CREATE TABLE x (y)") end
    collectgarbage()
    collectgarbage()
  end)
end)
