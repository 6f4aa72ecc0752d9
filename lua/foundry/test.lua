--- Foundry's spec runner: `foundry test [PATH...]`.
---
--- A spec file uses the globals `describe`, `it`, `pending`, `before_each`, `after_each`,
--- `before_all`, `after_all`, `expect` and `skip`. Each `it` runs in its own task, on the
--- real loop with the real native modules; after each test the runner fails the test if it
--- left tasks waiting or libuv handles open (luv's tap.lua does the same).
---
---   describe("math", function()
---     it("adds", function() expect(1 + 1):equals(2) end)
---     it("waits", { timeout = 500 }, function() foundry.sleep(10) end)
---   end)
local task = require "foundry._task"
local host = require "foundry._host"
local errors = require "foundry.errors"
local inspect = require("foundry.inspect").inspect

local M = {}

-- ---------------------------------------------------------------- expectations

local Expect = {}
Expect.__index = function(self, k)
  if k == "never" then
    return setmetatable({ value = rawget(self, "value"), negated = not rawget(self, "negated") }, Expect)
  end
  return Expect[k]
end

local function show(v)
  local s = inspect(v)
  if #s > 400 then s = s:sub(1, 400) .. "…" end
  return s
end

-- Deep equality; returns false and the path of the first difference.
local function deep_equal(a, b, path)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    return false, path
  end
  for k, v in pairs(a) do
    local ok, p = deep_equal(v, b[k], path .. "[" .. inspect(k) .. "]")
    if not ok then return false, p end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "[" .. inspect(k) .. "]" end
  end
  return true
end
M.deep_equal = deep_equal

function Expect:check(ok, msg)
  if self.negated then ok = not ok; msg = msg:gsub("^expected", "expected not") end
  if not ok then error(msg, 3) end
  return self
end

function Expect:equals(want)
  local ok, path = deep_equal(self.value, want, "")
  local msg = "expected " .. show(self.value) .. " to equal " .. show(want)
  if not ok and path and path ~= "" then msg = msg .. " (first difference at " .. path .. ")" end
  return self:check(ok, msg)
end
Expect.eq = Expect.equals

function Expect:is(want)
  return self:check(rawequal(self.value, want), "expected " .. show(self.value) .. " to be " .. show(want))
end

function Expect:truthy() return self:check(not not self.value, "expected " .. show(self.value) .. " to be truthy") end
function Expect:falsy() return self:check(not self.value, "expected " .. show(self.value) .. " to be falsy") end
function Expect:is_nil() return self:check(self.value == nil, "expected " .. show(self.value) .. " to be nil") end

function Expect:is_a(typ)
  return self:check(type(self.value) == typ, "expected " .. show(self.value) .. " to be a " .. typ)
end

function Expect:matches(pattern)
  local s = self.value
  return self:check(type(s) == "string" and s:find(pattern) ~= nil,
    "expected " .. show(s) .. " to match " .. show(pattern))
end

function Expect:contains(x)
  local v, ok = self.value, false
  if type(v) == "string" then
    ok = v:find(x, 1, true) ~= nil
  elseif type(v) == "table" then
    for _, e in pairs(v) do if deep_equal(e, x, "") then ok = true break end end
  end
  return self:check(ok, "expected " .. show(v) .. " to contain " .. show(x))
end

local function compare(op, name)
  return function(self, n)
    return self:check(type(self.value) == "number" and op(self.value, n),
      "expected " .. show(self.value) .. " to be " .. name .. " " .. show(n))
  end
end
Expect.gt = compare(function(a, b) return a > b end, ">")
Expect.ge = compare(function(a, b) return a >= b end, ">=")
Expect.lt = compare(function(a, b) return a < b end, "<")
Expect.le = compare(function(a, b) return a <= b end, "<=")

function Expect:near(want, eps)
  eps = eps or 1e-9
  return self:check(type(self.value) == "number" and math.abs(self.value - want) <= eps,
    "expected " .. show(self.value) .. " to be within " .. eps .. " of " .. want)
end

function Expect:has_length(n)
  local v = self.value
  local len = (type(v) == "string" or type(v) == "table") and #v or nil
  return self:check(len == n, "expected length " .. n .. ", got " .. tostring(len) .. " for " .. show(v))
end

--- expect(fn):fails(pattern_or_code): fn must raise; a string is matched against the
--- error's message (Lua pattern) or equals its code. Returns the error for more checks.
function Expect:fails(what)
  local fn = self.value
  if type(fn) ~= "function" then error("expect(...):fails needs a function", 2) end
  local ok, err = pcall(fn)
  if self.negated then
    if not ok then error("expected no error, got: " .. errors.message(err), 2) end
    return self
  end
  if ok then error("expected an error" .. (what and (" matching " .. show(what)) or "") .. ", got none", 2) end
  if what then
    local msg = errors.message(err)
    local code = errors.is(err) and err.code or nil
    if not (code == what or tostring(msg):find(what)) then
      error("expected an error matching " .. show(what) .. ", got: " .. (code and ("[" .. code .. "] ") or "") .. tostring(msg), 2)
    end
  end
  return err
end

function Expect:succeeds()
  local ok, err = pcall(self.value)
  if not ok then error("expected no error, got: " .. errors.message(err), 2) end
  return self
end

function M.expect(v) return setmetatable({ value = v, negated = false }, Expect) end

-- ---------------------------------------------------------------- collection

local SKIP = setmetatable({}, { __tostring = function() return "skip" end })

local function new_suite(name, parent)
  return { name = name, parent = parent, children = {}, before_each = {}, after_each = {},
           before_all = {}, after_all = {} }
end

local function full_name(node)
  local parts = {}
  while node and node.name do table.insert(parts, 1, node.name); node = node.parent end
  return table.concat(parts, " ")
end

local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  return info and (info.short_src .. ":" .. (info.currentline or 0)) or "?"
end

local function collect(path, env_extra)
  local root = new_suite(nil, nil)
  local cur = root
  local env = setmetatable({}, { __index = _G })
  env.describe = function(name, fn)
    local s = new_suite(name, cur)
    s.where = where(2)
    table.insert(cur.children, s)
    local prev = cur
    cur = s
    fn()
    cur = prev
  end
  env.it = function(name, opts, fn)
    if type(opts) == "function" then fn, opts = opts, {} end
    table.insert(cur.children, { test = true, name = name, fn = fn, opts = opts or {}, parent = cur, where = where(2) })
  end
  env.pending = function(name)
    table.insert(cur.children, { test = true, name = name, pending = true, parent = cur, where = where(2) })
  end
  env.xit = env.pending
  env.before_each = function(fn) table.insert(cur.before_each, fn) end
  env.after_each = function(fn) table.insert(cur.after_each, fn) end
  env.before_all = function(fn) table.insert(cur.before_all, fn) end
  env.after_all = function(fn) table.insert(cur.after_all, fn) end
  env.expect = M.expect
  env.skip = function(reason)
    local mt = { __index = SKIP, __tostring = function() return "skip: " .. tostring(reason) end }
    error(setmetatable({ reason = reason }, mt), 0)
  end
  for k, v in pairs(env_extra or {}) do env[k] = v end
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local code = f:read("a")
  f:close()
  local fn, cerr = load(code, "@" .. path, "t", env)
  if not fn then return nil, cerr end
  local ok, rerr = pcall(fn)
  if not ok then return nil, errors.message(rerr) end
  return root
end

-- ---------------------------------------------------------------- running

local function is_skip(e) return type(e) == "table" and getmetatable(e) and getmetatable(e).__index == SKIP end

-- Run fn in its own task with a time limit; returns ok, err, traceback.
local function run_in_task(fn, timeout_ms)
  local tb
  local t = task.spawn(function()
    return xpcall(fn, function(e)
      if not is_skip(e) then tb = debug.traceback(errors.message(e), 2) end
      return e
    end)
  end)
  t.name = "test"
  local uv = require "luv"
  local timer = uv.new_timer()
  local timed_out = false
  timer:start(timeout_ms, 0, function() timed_out = true; t:cancel() end)
  local ok, a, b = pcall(t.join, t)
  timer:close()
  if timed_out then
    return false, errors.new("timeout", "test timed out after " .. timeout_ms .. " ms" ..
      (t.waiting and (" (waiting for " .. t.waiting .. ")") or "")), nil
  end
  if not ok then return false, a, nil end
  return a, b, tb
end

local function failure_location(err, tb, test)
  -- The first frame in a spec file, else where the test was declared.
  local msg = errors.message(err)
  if type(msg) == "string" then
    local loc = msg:match("^([^%s:]+_spec%.lua:%d+):")
    if loc then return loc, msg:gsub("^[^%s:]+_spec%.lua:%d+: ", "") end
  end
  if tb then
    for line in tb:gmatch("[^\n]+") do
      local loc = line:match("^%s*([^%s:]+_spec%.lua:%d+):")
      if loc then return loc, msg end
    end
  end
  return test.where, msg
end

function M.run(paths, opts)
  opts = opts or {}
  local out = opts.out or io.stdout
  local verbose = opts.verbose
  local stats = { passed = 0, failed = 0, skipped = 0, failures = {} }
  local filter = opts.filter
  local default_timeout = opts.timeout or 60000

  local function report_fail(name, loc, msg, tb)
    stats.failed = stats.failed + 1
    table.insert(stats.failures, { name = name, where = loc, message = msg, traceback = tb })
    out:write("FAIL ", name, "\n     ", loc, ": ", tostring(msg), "\n")
    if opts.debug and tb then out:write(tb, "\n") end
    out:flush()
  end

  local function run_hooks(list, node_name)
    for _, h in ipairs(list) do
      local ok, err, tb = run_in_task(h, default_timeout)
      if not ok and not is_skip(err) then
        return false, err, tb
      elseif not ok then
        return false, err
      end
    end
    return true
  end

  local function chain(node, field, reverse)
    local lists = {}
    local n = node
    while n do table.insert(lists, 1, n[field]); n = n.parent end
    local all = {}
    if reverse then
      for i = #lists, 1, -1 do for _, f in ipairs(lists[i]) do all[#all + 1] = f end end
    else
      for _, l in ipairs(lists) do for _, f in ipairs(l) do all[#all + 1] = f end end
    end
    return all
  end

  local function run_test(t)
    local name = full_name(t)
    if filter and not name:find(filter) then return end
    if t.pending then
      stats.skipped = stats.skipped + 1
      if verbose then out:write("skip ", name, " (pending)\n") end
      return
    end
    local handles0 = host.active_handles()
    local t0 = require("luv").hrtime()
    local ok, err, tb = run_hooks(chain(t.parent, "before_each"))
    if ok then
      ok, err, tb = run_in_task(t.fn, t.opts.timeout or default_timeout)
    end
    local aok, aerr, atb = run_hooks(chain(t.parent, "after_each", true))
    if ok and not aok then ok, err, tb = aok, aerr, atb end
    local ms = (require("luv").hrtime() - t0) / 1e6
    if ok then
      -- leak check: give closing handles one turn of the loop to finish
      foundry.sleep(0)
      local waiting = task.list()
      local leaked = host.active_handles() - handles0
      if leaked > 0 then
        ok, err = false, errors.new("leak", string.format("left %d libuv handle%s open (timers, sockets, processes)", leaked, leaked == 1 and "" or "s"))
      elseif #waiting > 1 then
        local names = {}
        for _, w in ipairs(waiting) do if w.name ~= "main" and w.name ~= "test" then names[#names + 1] = w.name .. " waiting for " .. w.waiting end end
        if #names > 0 then ok, err = false, errors.new("leak", "left tasks running: " .. table.concat(names, ", ")) end
      end
    end
    if ok then
      stats.passed = stats.passed + 1
      if verbose then out:write(string.format("ok   %s (%.0f ms)\n", name, ms)) end
    elseif is_skip(err) then
      stats.skipped = stats.skipped + 1
      out:write("skip ", name, ": ", tostring(err.reason), "\n")
    else
      local loc, msg = failure_location(err, tb, t)
      report_fail(name, loc, msg, tb)
    end
  end

  local function run_suite(s)
    local ok, err, tb = run_hooks(s.before_all)
    if not ok then
      local count = 0
      local function countt(n) for _, c in ipairs(n.children) do if c.test then count = count + 1 else countt(c) end end end
      countt(s)
      if is_skip(err) then
        stats.skipped = stats.skipped + count
        out:write("skip ", full_name(s) ~= "" and full_name(s) or "file", " (", count, " tests): ", tostring(err.reason), "\n")
      else
        local loc, msg = failure_location(err, tb, s)
        report_fail((full_name(s) ~= "" and full_name(s) or "file") .. " (before_all; " .. count .. " tests not run)", loc or s.where or "?", msg, tb)
      end
    else
      for _, c in ipairs(s.children) do
        if c.test then run_test(c) else run_suite(c) end
      end
    end
    local aok, aerr, atb = run_hooks(s.after_all)
    if not aok and not is_skip(aerr) then
      local loc, msg = failure_location(aerr, atb, s)
      report_fail((full_name(s) ~= "" and full_name(s) or "file") .. " (after_all)", loc or "?", msg, atb)
    end
  end

  for _, path in ipairs(paths) do
    local root, err = collect(path, opts.env)
    if not root then
      report_fail(path, path, "cannot load: " .. tostring(err))
    else
      local before = stats.passed + stats.failed
      run_suite(root)
      if not verbose then
        out:write(string.format("%-5s %s (%d)\n", "file", path, stats.passed + stats.failed - before))
      end
    end
  end
  return stats
end

--- Spec files under the given paths (files as given, directories searched for *_spec.lua).
function M.find(paths)
  local fs = require "foundry.fs"
  local out = {}
  local function walk(p)
    local st = fs.stat(p)
    if not st then errors.raise("not_found", "no such file or directory: " .. p) end
    if st.type == "directory" then
      for _, e in ipairs(fs.list(p)) do
        local child = p .. "/" .. e.name
        if e.type == "directory" then walk(child)
        elseif e.name:match("_spec%.lua$") then out[#out + 1] = child end
      end
    else
      out[#out + 1] = p
    end
  end
  for _, p in ipairs(paths) do walk((p:gsub("/$", ""))) end
  return out
end

return M
