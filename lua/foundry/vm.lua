--- Restricted Lua VMs for user code that must not hurt the host: policies, hooks.
---
--- Each VM is its own `lua_State` with a memory budget, an instruction budget per call,
--- and only safe libraries (base without load of bytecode/dofile/require, string without
--- dump, table, math, utf8, os.time/clock/date). Values cross as plain data, copied;
--- functions stay inside and are called by name.
---
---   local vm = require("foundry.vm").new{ memory = 8 << 20, instructions = 1e6 }
---   local policy = vm:load(source, "@policies/mine.lua")   -- plain-data copy
---   if vm:has("on_request") then local verdict = vm:call("on_request", req) end
---
--- Errors are objects: `vm.budget` (instructions spent), `vm.memory` (limit hit),
--- `vm.syntax`, `vm.error` (the script raised). The host goes on either way.
local native = require "foundry._vm"

local M = {}

---@class VM
---@field load fun(self: VM, source: string, chunkname?: string): any
---@field call fun(self: VM, path: string, ...: any): ...
---@field has fun(self: VM, path: string): boolean
---@field stats fun(self: VM): {memory: integer, limit: integer, instructions: integer}
---@field close fun(self: VM)

--- Make a VM. `memory` in bytes (default 32 MiB), `instructions` per call (default 10e6),
--- `name` for error messages.
---@param opts? {memory?: integer, instructions?: integer, name?: string}
---@return VM
function M.new(opts)
  opts = opts or {}
  if opts.instructions then opts.instructions = math.tointeger(opts.instructions) or math.floor(opts.instructions) end
  return native.new(opts)
end

--- Load a file into a fresh VM: returns the VM and the plain-data copy of its result.
function M.load_file(path, opts)
  local f, err = io.open(path, "rb")
  if not f then require("foundry.errors").raise("not_found", "cannot open " .. path .. ": " .. tostring(err)) end
  local src = f:read("a")
  f:close()
  opts = opts or {}
  opts.name = opts.name or path
  local vm = M.new(opts)
  return vm, vm:load(src, "@" .. path)
end

return M
