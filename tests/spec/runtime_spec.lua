-- The runtime's async model: tasks, waits, sleep, exec, errors.
local uv = require "luv"

local function now() uv.update_time(); return uv.now() end

describe("tasks", function()
  it("runs spawned tasks concurrently", function()
    local t0 = now()
    local ts = {}
    for i = 1, 3 do
      ts[i] = foundry.spawn(function() foundry.sleep(100); return i * 10 end)
    end
    for i = 1, 3 do expect(ts[i]:join()):equals(i * 10) end
    expect(now() - t0):lt(250)
  end)

  it("runs three tasks that each sleep and run a child process concurrently", function()
    local t0 = now()
    local ts = {}
    for i = 1, 3 do
      ts[i] = foundry.spawn(function()
        foundry.sleep(200)
        return foundry.exec { "sh", "-c", "sleep 0.3; echo " .. i }.stdout
      end)
    end
    expect(foundry.join_all(ts)):equals({ "1\n", "2\n", "3\n" })
    local elapsed = now() - t0
    expect(elapsed):ge(500)  -- each task took 0.5 s ...
    expect(elapsed):lt(1200) -- ... and together far less than 3 x 0.5 s
  end)

  it("runs timers: after and every", function()
    local hits = 0
    local e = foundry.every(10, function() hits = hits + 1; return hits < 3 end)
    local a = foundry.after(5, function() return "later" end)
    expect(a:join()):equals("later")
    e:join()
    expect(hits):equals(3)
  end)

  it("returns every result from join", function()
    local t = foundry.spawn(function(a, b) return a, nil, b end, 1, 2)
    local a, b, c = t:join()
    expect({ a, b, c }):equals({ 1, nil, 2 })
  end)

  it("re-raises a task's error in join, error objects intact", function()
    local t = foundry.spawn(function() foundry.raise("x.y", "went wrong", "do this") end)
    local err = expect(function() t:join() end):fails("x.y")
    expect(err.hint):equals("do this")
    expect(tostring(err)):equals("went wrong")
  end)

  it("joins a task that already finished", function()
    local t = foundry.spawn(function() return "done" end)
    foundry.sleep(5)
    expect(t:status()):equals("done")
    expect(t:join()):equals("done")
  end)

  it("cancels a waiting task with a 'cancelled' error", function()
    local t = foundry.spawn(function() foundry.sleep(10000) end)
    foundry.yield() -- the spawned task runs first, up to its wait
    expect(t.waiting):equals("sleep")
    expect(t:cancel()):is(true)
    expect(function() t:join() end):fails("cancelled")
  end)

  it("lets a task refuse to join itself", function()
    local me
    local t = foundry.spawn(function() return pcall(function() return me:join() end) end)
    me = t
    local ok, err = t:join()
    expect(ok):is(false)
    expect(err):matches("cannot join itself")
  end)

  it("refuses to wait outside a task, with a clear message", function()
    local co = coroutine.create(function() foundry.sleep(1) end)
    local ok, err = coroutine.resume(co)
    expect(ok):is(false)
    expect(err):matches("not directly in a task")
  end)

  it("keeps running other tasks while one yields", function()
    local order = {}
    local a = foundry.spawn(function() for i = 1, 3 do order[#order + 1] = "a" .. i; foundry.yield() end end)
    local b = foundry.spawn(function() for i = 1, 3 do order[#order + 1] = "b" .. i; foundry.yield() end end)
    a:join(); b:join()
    expect(table.concat(order, " ")):equals("a1 b1 a2 b2 a3 b3")
  end)

  it("times out with foundry.timeout", function()
    local err = expect(function() foundry.timeout(20, function() foundry.sleep(5000) end) end):fails("timeout")
    expect(err.message):matches("20 ms")
    expect(foundry.timeout(1000, function() return 7 end)):equals(7)
  end)

  it("runs <close> variables when a task is cancelled", function()
    local closed = false
    local t = foundry.spawn(function()
      local guard <close> = setmetatable({}, { __close = function() closed = true end }) -- luacheck: ignore 211
      foundry.sleep(10000)
    end)
    foundry.yield()
    t:cancel()
    pcall(t.join, t)
    expect(closed):is(true)
  end)

  it("waits completed before they are awaited", function()
    local w = require("foundry._task").wait("early")
    w:resolve(1, 2)
    local a, b = w:await()
    expect({ a, b }):equals({ 1, 2 })
  end)
end)

describe("exec", function()
  it("captures status, stdout and stderr", function()
    local r = foundry.exec { "sh", "-c", "echo out; echo err >&2; exit 3" }
    expect(r.status):equals(3)
    expect(r.stdout):equals("out\n")
    expect(r.stderr):equals("err\n")
    expect(r.ok):is(false)
  end)

  it("feeds stdin and sets cwd and env", function()
    local r = foundry.exec { "sh", "-c", "cat; pwd; echo $FOO", stdin = "in\n", cwd = "/tmp", env = { FOO = "bar" } }
    expect(r.stdout):equals("in\n/tmp\nbar\n")
  end)

  it("streams output to callbacks", function()
    local chunks = {}
    local r = foundry.exec { "sh", "-c", "echo a; sleep 0.05; echo b", on_stdout = function(c) chunks[#chunks + 1] = c end }
    expect(r.status):equals(0)
    expect(table.concat(chunks)):equals("a\nb\n")
    expect(#chunks):ge(2)
  end)

  it("handles large binary output", function()
    local r = foundry.exec { "head", "-c", tostring(8 * 1024 * 1024), "/dev/urandom" }
    expect(#r.stdout):equals(8 * 1024 * 1024)
  end)

  it("raises exec.spawn with a hint for a missing program", function()
    local err = expect(function() foundry.exec { "no-such-program-xyz" } end):fails("exec.spawn")
    expect(err.hint):matches("PATH")
  end)

  it("raises exec.failed with check=true", function()
    local err = expect(function() foundry.exec { "sh", "-c", "echo nope >&2; exit 4", check = true } end):fails("exec.failed")
    expect(err.message):matches("status 4: nope")
  end)

  it("kills the child on timeout", function()
    local t0 = now()
    expect(function() foundry.exec { "sleep", "10", timeout = 50 } end):fails("timeout")
    expect(now() - t0):lt(2000)
    foundry.sleep(50) -- let the child's exit close its handles
  end)
end)

describe("fs", function()
  local dir
  before_each(function() dir = foundry.fs.mkdtemp("/tmp/foundry-spec-XXXXXX") end)
  after_each(function() foundry.fs.rm(dir) end)

  it("writes atomically and reads back", function()
    foundry.fs.write(dir .. "/a.txt", "hello", { mode = tonumber("600", 8) })
    expect(foundry.fs.read(dir .. "/a.txt")):equals("hello")
    expect(foundry.fs.stat(dir .. "/a.txt").mode & tonumber("777", 8)):equals(tonumber("600", 8))
  end)

  it("makes and removes trees", function()
    foundry.fs.mkdir(dir .. "/x/y/z")
    foundry.fs.write(dir .. "/x/y/z/f", "1")
    expect(foundry.fs.is_dir(dir .. "/x/y")):is(true)
    foundry.fs.rm(dir .. "/x")
    expect(foundry.fs.exists(dir .. "/x")):is(false)
  end)

  it("raises io errors naming the path", function()
    local err = expect(function() foundry.fs.read(dir .. "/missing") end):fails("io.enoent")
    expect(err.message):contains(dir .. "/missing")
  end)
end)

describe("json", function()
  it("round-trips and reports bad input", function()
    expect(foundry.json.decode(foundry.json.encode({ a = { 1, 2 }, b = "x" }))):equals({ a = { 1, 2 }, b = "x" })
    expect(foundry.json.encode(foundry.json.array())):equals("[]")
    expect(function() foundry.json.decode("{bad") end):fails("json.decode")
    local v = foundry.json.decode('{"cpus": 2, "ratio": 0.5, "list": [1, 2.5, 3]}')
    expect(math.type(v.cpus)):equals("integer")
    expect(math.type(v.ratio)):equals("float")
    expect(math.type(v.list[1])):equals("integer")
    expect(foundry.json.encode(v)):equals('{"cpus":2,"list":[1,2.5,3],"ratio":0.5}')
  end)
end)

describe("the CLI's errors", function()
  local bin = (require("luv").exepath() or "build/foundry"):gsub(" %(deleted%)$", "")
  it("redact secrets in error messages, plain and --json", function()
    local r = foundry.exec { bin, "eval", 'error("token ghp_abcdefghijklmnopqrstuvwxyz0123456789AB")' }
    expect(r.status):equals(1)
    expect(r.stderr):contains("[REDACTED:")
    expect(r.stderr).never:contains("ghp_abcdefghijklmnopqrstuvwxyz0123456789AB")
    r = foundry.exec { bin, "eval", "--json", 'foundry.raise("x", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789")' }
    expect(foundry.json.decode(r.stdout).error.message):matches("REDACTED")
  end)

  it("map codes to exit statuses and print FILE:LINE", function()
    local r = foundry.exec { bin, "eval", "x(" }
    expect(r.status):equals(1)
    expect(r.stderr):matches("^foundry: %(eval%):1: ")
    r = foundry.exec { bin, "nosuchcommand" }
    expect(r.status):equals(2)
    r = foundry.exec { bin, "eval", 'foundry.raise("thing.not_found", "gone", "make it")' }
    expect(r.status):equals(3)
    expect(r.stderr):equals("foundry: gone\n  hint: make it\n")
    r = foundry.exec { bin, "--debug", "eval", "error('deep')" }
    expect(r.stderr):contains("stack traceback")
  end)
end)
