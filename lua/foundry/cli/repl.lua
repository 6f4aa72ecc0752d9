--- foundry repl
local errors = require "foundry.errors"
local inspect = require("foundry.inspect").inspect
local task = require "foundry._task"

local M = {
  summary = "Interactive Lua with the Foundry API (async calls work at the prompt)",
  usage = "foundry repl",
  description = [[
Type Lua statements or expressions; `=expr` and bare expressions print their value
(tables pretty-printed). Incomplete input continues on the next line. Calls that wait
(foundry.sleep, foundry.exec, docker, git...) work at the prompt and other tasks keep
running. Ctrl-C discards the line, or interrupts the running code; Ctrl-D exits.
History is kept in the state directory. With standard input not a terminal, lines are
read and evaluated in order without prompts (scripted use).]],
  max_args = 0,
  order = 83,
}

local function compile(src)
  local body = src:gsub("^=", "return ")
  local fn, rerr = load("return " .. body, "=stdin", "t")
  if fn then return fn end
  local err
  fn, err = load(body, "=stdin", "t")
  if fn then return fn end
  if err:match("<eof>$") or rerr:match("<eof>$") then return nil, "incomplete" end
  return nil, err
end

local function print_results(res)
  for i = 1, res.n do
    local v = res[i]
    io.stdout:write(i > 1 and "\t" or "", type(v) == "string" and string.format("%q", v) or inspect(v))
  end
  if res.n > 0 then io.stdout:write("\n") end
  io.stdout:flush()
end

local function report(err)
  local msg = errors.message(err)
  io.stderr:write("error: ", tostring(msg), "\n")
  if errors.is(err) and err.hint then io.stderr:write("  hint: ", err.hint, "\n") end
end

-- Evaluate one chunk in its own task, so Ctrl-C can interrupt or cancel just it.
local function evaluate(fn, rl)
  local t = task.spawn(function()
    if rl then rl.guard(task.current(), coroutine.running()) end
    return table.pack(fn())
  end)
  t.name = "repl"
  local ok, res = pcall(t.join, t)
  if rl then rl.guard(nil) end
  if ok then print_results(res) else report(res) end
end

function M.run()
  local tty = require("foundry._readline").isatty(0)
  if not tty then
    local buf = ""
    for line in io.lines() do
      buf = buf == "" and line or (buf .. "\n" .. line)
      local fn, err = compile(buf)
      if fn then
        evaluate(fn)
        buf = ""
      elseif err ~= "incomplete" then
        report(err)
        buf = ""
      end
    end
    if buf ~= "" then report(select(2, load(buf, "=stdin"))) end
    return 0
  end
  local rl = require "foundry._readline"
  local paths = require "foundry.paths"
  local hist = paths.ensure(paths.state()) .. "/repl_history"
  rl.read_history(hist)
  io.stdout:write("Foundry ", foundry.version, " (", _VERSION, ") — Ctrl-D to exit\n")
  local buf = ""
  while true do
    local line = rl.read(buf == "" and "> " or ">> ")
    if line == nil then io.stdout:write("\n") break end
    if line:match("%S") then rl.add_history(line) end
    buf = buf == "" and line or (buf .. "\n" .. line)
    if buf:match("^%s*$") then
      buf = ""
    else
      local fn, err = compile(buf)
      if fn then
        evaluate(fn, rl)
        buf = ""
      elseif err ~= "incomplete" then
        report(err)
        buf = ""
      end
    end
  end
  rl.write_history(hist)
  return 0
end

return M
