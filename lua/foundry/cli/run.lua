--- foundry run FILE.lua [ARGS...]
local errors = require "foundry.errors"

local M = {
  summary = "Run a Lua program (a script, or a preset) with the Foundry API",
  usage = "foundry run FILE.lua [ARGS...]",
  description = [[
Runs FILE with the global `foundry` and `arg` set as the standalone lua interpreter does
(arg[0] is FILE). A file that returns a table is a preset: the sandbox it describes is
created (progress on the terminal, Ctrl-C rolls back) and its agent runs attached.]],
  min_args = 1,
  stop_at_positional = true,
  order = 80,
}

--- Compile `code`; with `expr` a bare expression is accepted too ("1 + 1").
function M.compile(code, chunkname, expr)
  if expr then
    local fn = load("return " .. code, chunkname, "t")
    if fn then return fn end
  end
  local fn, err = load(code, chunkname, "t")
  if not fn then errors.raise("lua.syntax", err) end
  return fn
end

--- Print returned values: tables pretty-printed, or all as one JSON value.
function M.print_values(res, json_mode)
  if json_mode then
    local json = require "foundry.json"
    local v = res.n == 1 and res[1] or (res.n == 0 and json.null or { table.unpack(res, 1, res.n) })
    if v == nil then v = json.null end
    io.stdout:write(json.encode(v), "\n")
    return
  end
  local inspect = require("foundry.inspect").inspect
  for i = 1, res.n do
    local v = res[i]
    io.stdout:write(type(v) == "string" and v or inspect(v), "\n")
  end
end

function M.run(opts, args)
  local path = args[1]
  local f, err = io.open(path, "rb")
  if not f then
    errors.raise("not_found", "cannot open " .. path .. ": " .. tostring(err):gsub("^[^:]*: ", ""))
  end
  local code = f:read("a")
  f:close()
  code = code:gsub("^#![^\n]*", "")
  local fn, cerr = load(code, "@" .. path, "t")
  if not fn then errors.raise("lua.syntax", cerr) end
  local argt = { [0] = path }
  for i = 2, #args do argt[i - 1] = args[i] end
  _G.arg = argt
  local res = table.pack(fn(table.unpack(argt)))
  local v = res[1]
  if type(v) == "table" and res.n == 1 and getmetatable(v) == nil then
    -- a file that returns a table is a preset: create its sandbox, run its agent
    return require("foundry.preset").run_file(path, v, argt)
  end
  if math.type(v) == "integer" and res.n == 1 then return v end
  return 0
end

return M
