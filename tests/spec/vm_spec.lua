-- Restricted VMs: user code cannot reach the host, loop forever or eat memory.
local vmlib = require "foundry.vm"

describe("foundry.vm", function()
  it("loads a chunk and returns plain data, functions as markers", function()
    local vm <close> = vmlib.new { name = "p" }
    local t = vm:load("return { mode = 'allowlist', allow = {'a.com'}, on_request = function() end }", "=p")
    expect(t.mode):equals("allowlist")
    expect(t.allow):equals({ "a.com" })
    expect(t.on_request):equals("<function>")
    expect(vm:has("on_request")):is(true)
    expect(vm:has("nope")):is(false)
  end)

  it("calls functions with copied arguments and results", function()
    local vm <close> = vmlib.new {}
    vm:load([[return { rules = { check = function(req) return req.host == "x" and "allow" or "deny", #req.headers end } }]])
    local verdict, n = vm:call("rules.check", { host = "x", headers = { "a", "b" } })
    expect(verdict):equals("allow")
    expect(n):equals(2)
  end)

  it("offers no io, os.execute, require, debug, dofile or bytecode", function()
    local vm <close> = vmlib.new {}
    local t = vm:load([[return { io = type(io), exec = type(os.execute), req = type(require), dbg = type(debug),
      dofile = type(dofile), dump = type(string.dump), getenv = type(os.getenv), time = type(os.time),
      loadbc = select(2, load("\27Lua")) }]])
    expect(t):equals({ io = "nil", exec = "nil", req = "nil", dbg = "nil", dofile = "nil", dump = "nil",
      getenv = "nil", time = "function", loadbc = t.loadbc })
    expect(t.loadbc):matches("binary")
  end)

  it("protects the string metatable", function()
    local vm <close> = vmlib.new {}
    expect(function() vm:load("getmetatable('').__index = {}") end):fails("vm.error")
    expect(vm:load("return getmetatable('')")):equals("string")
  end)

  it("stops an infinite loop with vm.budget, and the VM is usable after", function()
    local vm <close> = vmlib.new { instructions = 100000 }
    vm:load("return { spin = function() while true do end end, ok = function() return 1 end }")
    local err = expect(function() vm:call("spin") end):fails("vm.budget")
    expect(err.message):matches("instructions")
    expect(vm:call("ok")):equals(1)
  end)

  it("cannot swallow the budget error with pcall", function()
    local vm <close> = vmlib.new { instructions = 100000 }
    vm:load("return { f = function() while true do pcall(function() while true do end end) end end }")
    expect(function() vm:call("f") end):fails("vm.budget")
  end)

  it("stops a 1 GB string with vm.memory, and the host goes on", function()
    local vm <close> = vmlib.new { memory = 4 << 20 }
    vm:load("return { big = function() return string.rep('x', 1 << 30) end, grow = function() local t = {} for i = 1, 1e9 do t[i] = i end end }")
    expect(function() vm:call("big") end):fails("vm.memory")
    expect(function() vm:call("grow") end):fails("vm.memory")
    expect(vm:stats().memory):lt(4 << 20)
  end)

  it("reports syntax and runtime errors with the chunk name and line", function()
    local vm <close> = vmlib.new {}
    expect(function() vm:load("return {", "@mypolicy.lua") end):fails("vm.syntax")
    vm:load("return { f = function() error('nope') end }", "@mypolicy.lua")
    local err = expect(function() vm:call("f") end):fails("vm.error")
    expect(err.message):matches("mypolicy.lua:1: nope")
  end)

  it("refuses to pass functions or userdata in", function()
    local vm <close> = vmlib.new {}
    vm:load("return { f = function(x) return x end }")
    expect(function() vm:call("f", io.stdout) end):fails("plain data")
  end)

  it("refuses __gc finalizers (Lua runs them with hooks off)", function()
    local vm <close> = vmlib.new { instructions = 100000 }
    expect(function() vm:load("setmetatable({}, { __gc = function() while true do end end }) return {}") end)
      :fails("__gc metamethods are not allowed")
    expect(function() vm:load("setmetatable({}, { __gc = false }) return {}") end):fails("__gc")
    expect(vm:load("local mt = {} local t = setmetatable({}, mt) mt.__index = { x = 1 } return t.x")):equals(1)
  end)
end)
