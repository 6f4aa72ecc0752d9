--- foundry preset ls|show|rm|check
local errors = require "foundry.errors"
local json = require "foundry.json"
local common = require "foundry.cli._common"

local SUB = { "ls", "show", "rm", "check" }

-- A resolved preset as plain data: functions become "<function file:line>".
local function plain(v)
  if type(v) == "function" then
    local info = debug.getinfo(v, "S")
    return string.format("<function %s:%d>", info.short_src, info.linedefined)
  end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = plain(x) end
  return out
end

local function ls(opts)
  local preset = require "foundry.preset"
  local list = preset.list()
  if opts.quiet then
    local seen = {}
    for _, p in ipairs(list) do
      if not seen[p.name] then io.stdout:write(p.name, "\n"); seen[p.name] = true end
    end
    return 0
  end
  if opts.json then
    common.json(json.array(list))
    return 0
  end
  common.table(list, {
    { "NAME", "name" },
    { "ORIGIN", function(p) return p.origin .. (p.shadowed and " (shadowed)" or "") end },
    { "DESCRIPTION", function(p) return p.description or (p.path or "") end },
  })
  return 0
end

local function show(opts, args)
  local preset = require "foundry.preset"
  if #args ~= 1 then errors.raise("usage", "preset show: name one preset", "usage: foundry preset show NAME|PATH") end
  local p, info = preset.load(args[1])
  if opts.json then
    common.json({ name = info.name, origin = info.origin, path = info.path, chain = info.chain, preset = plain(p) })
    return 0
  end
  io.stdout:write("-- ", info.name, " (", info.origin, info.path and (": " .. info.path) or "", ")\n")
  if #info.chain > 1 then io.stdout:write("-- extends: ", table.concat(info.chain, " <- "), "\n") end
  io.stdout:write(preset.serialize(plain(p)))
  return 0
end

local function rm(opts, args)
  local preset = require "foundry.preset"
  if #args == 0 then errors.raise("usage", "preset rm: name the saved presets to remove") end
  return common.each(args, opts, function(name)
    preset.remove(name)
    if not opts.json then io.stdout:write("removed preset ", name, "\n") end
    return { name = name, removed = true }
  end)
end

local function check(opts, args)
  local preset = require "foundry.preset"
  if #args == 0 then errors.raise("usage", "preset check: name presets or preset files to check") end
  return common.each(args, opts, function(ref)
    local _, info = preset.load(ref)
    if not opts.json then
      io.stdout:write("ok  ", info.path or info.name, #info.chain > 1 and ("  (" .. table.concat(info.chain, " <- ") .. ")") or "", "\n")
    end
    return { name = info.name, ok = true, path = info.path, chain = info.chain }
  end)
end

return {
  summary = "List, show, check and remove presets",
  usage = "foundry preset ls|show|rm|check [NAME|PATH...] [--json]",
  description = [[
  ls              every preset visible by name: FOUNDRY_PRESET_PATH directories, the
                  config directory's presets/, presets saved with 'new --save-as', and the
                  shipped ones (shell, claude, codex, gemini)
  show NAME|PATH  the preset with 'extends' resolved, as Lua (or JSON)
  rm NAME...      remove presets saved with --save-as
  check REF...    load and validate presets: errors name the file, line and key]],
  flags = {
    { "json", help = "print JSON" },
    { "quiet", short = "q", help = "ls: names only" },
  },
  min_args = 1,
  order = 40,
  complete = { "ls", "show", "rm", "check" },
  examples = { "foundry preset ls", "foundry preset show claude", "foundry preset check ./team.lua" },
  run = function(opts, args)
    local sub = table.remove(args, 1)
    if sub == "ls" or sub == "list" then return ls(opts) end
    if sub == "show" then return show(opts, args) end
    if sub == "rm" or sub == "remove" then return rm(opts, args) end
    if sub == "check" then return check(opts, args) end
    local near = require("foundry.util").did_you_mean(sub, SUB)
    errors.raise("usage", "unknown preset command '" .. sub .. "'" .. (near and (" — did you mean '" .. near .. "'?") or ""),
      "foundry preset ls|show|rm|check")
  end,
}
