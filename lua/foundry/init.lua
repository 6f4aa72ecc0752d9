--- The Foundry API: the global `foundry` in `run`, `eval`, `repl` and tests, and
--- `require "foundry"` in modules. Submodules load on first use: `foundry.docker`,
--- `foundry.git`, `foundry.fs`, `foundry.json`, ...
local task = require "foundry._task"
local errors = require "foundry.errors"

local M = {}

M.version = "0.1.0"

--- Suspend the running task for `ms` milliseconds; other tasks run meanwhile.
---@param ms number
M.sleep = task.sleep

--- Start `fn(...)` as a new task. `task:join()` waits for it and returns its results
--- (or re-raises its error); `task:cancel()` stops it at its next wait.
---@param fn function
---@return Task
function M.spawn(fn, ...) return task.spawn(fn, ...) end

--- Let the other ready tasks run, then continue.
M.yield = task.yield

--- The running task (or nil outside one).
M.current = task.current

--- What every task is waiting for: `{ {id=, name=, waiting=, ms=}, ... }`.
M.tasks = task.list

--- Wait for all the tasks and return a list of their results' first values.
--- Raises the first error after all have finished.
function M.join_all(tasks)
  local out, first_err = {}, nil
  for i, t in ipairs(tasks) do
    local ok, v = pcall(t.join, t)
    if ok then out[i] = v elseif first_err == nil then first_err = v end
  end
  if first_err ~= nil then error(first_err, 0) end
  return out
end

--- Run each function as a task, wait for all, return their first results in order.
function M.parallel(fns)
  local ts = {}
  for i, fn in ipairs(fns) do ts[i] = task.spawn(fn) end
  return M.join_all(ts)
end

--- Run `fn(...)` as a task with a time limit; raises {code="timeout"} when it takes
--- longer (the task is cancelled at its current wait).
function M.timeout(ms, fn, ...)
  local t = task.spawn(fn, ...)
  local timer = require("luv").new_timer()
  local fired = false
  timer:start(ms, 0, function() fired = true; t:cancel() end)
  local res = table.pack(pcall(t.join, t))
  timer:close()
  if not res[1] then
    t:cancel()
    if fired and errors.is(res[2], "cancelled") then
      errors.raise("timeout", string.format("timed out after %d ms", ms))
    end
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end

--- Run `fn()` once after `ms` milliseconds, as a task (cancel it with `:cancel()`).
function M.after(ms, fn)
  return task.spawn(function() task.sleep(ms); return fn() end)
end

--- Run `fn()` every `ms` milliseconds, as a task, until it returns false or the task is
--- cancelled.
function M.every(ms, fn)
  return task.spawn(function()
    while true do
      task.sleep(ms)
      if fn() == false then return end
    end
  end)
end

M.error = errors.new
M.raise = errors.raise
M.is_error = errors.is

local lazy = {
  exec = function() return require("foundry.exec").exec end,
  json = function() return require "foundry.json" end,
  fs = function() return require "foundry.fs" end,
  uv = function() return require "luv" end,
  sandbox = function() return require "foundry.sandbox" end,
  test = function() return require "foundry.test" end,
  inspect = function() return require("foundry.inspect").inspect end,
}

return setmetatable(M, {
  __index = function(t, k)
    local f = lazy[k]
    local v
    if f then
      v = f()
    elseif type(k) == "string" and k:match("^[%a_][%w_]*$") then
      local ok, mod = pcall(require, "foundry." .. k)
      if not ok then
        if tostring(mod):find("module 'foundry." .. k .. "' not found", 1, true) then return nil end
        error(mod, 2)
      end
      v = mod
    end
    rawset(t, k, v)
    return v
  end,
})
