--- Command-line parsing for `foundry` commands.
---
--- A command declares `flags = { {name, short=, type="boolean|string|number|list",
--- values={...}, arg="NAME", help=...}, ... }`; `parse(cmd, argv)` returns the options
--- table and the positional arguments, or raises a usage error (exit 2) that says what is
--- wrong and suggests the nearest flag.
local errors = require "foundry.errors"
local util = require "foundry.util"

local M = {}

local function usage_error(cmd, msg, hint)
  errors.raise("usage", msg, hint or ("see 'foundry " .. cmd.name .. " --help'"))
end

function M.parse(cmd, argv, first)
  local flags, byname, byshort = cmd.flags or {}, {}, {}
  for _, f in ipairs(flags) do
    byname[f[1]] = f
    if f.short then byshort[f.short] = f end
  end
  local opts, pos = {}, {}
  for _, f in ipairs(flags) do
    if f.type == "list" then opts[f[1]] = {} end
    if f.default ~= nil then opts[f[1]] = f.default end
  end
  local function set(f, value, shown)
    local key = f[1]
    if f.type == "boolean" or f.type == nil then
      opts[key] = true
      return
    end
    if value == nil then usage_error(cmd, "option " .. shown .. " needs a value" ..
      (f.arg and (" (" .. f.arg .. ")") or "")) end
    if f.type == "number" then
      local n = tonumber(value)
      if not n then usage_error(cmd, "option " .. shown .. ": expected a number, got '" .. value .. "'") end
      value = n
    end
    if f.values then
      local okv = false
      for _, v in ipairs(f.values) do if v == value then okv = true end end
      if not okv then
        local near = util.did_you_mean(value, f.values)
        usage_error(cmd, string.format("option %s: '%s' is not one of %s%s", shown, value,
          table.concat(f.values, ", "), near and (" — did you mean '" .. near .. "'?") or ""))
      end
    end
    if f.type == "list" then table.insert(opts[key], value) else opts[key] = value end
  end
  local i = first or 1
  local stop = false
  while i <= #argv do
    local a = argv[i]
    if stop or a == "-" or a:sub(1, 1) ~= "-" then
      pos[#pos + 1] = a
      if cmd.stop_at_positional then stop = true end
    elseif a == "--" then
      stop = true
    elseif a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local f = byname[name]
      if not f then
        local names = {}
        for _, x in ipairs(flags) do names[#names + 1] = x[1] end
        names[#names + 1] = "help"
        local near = util.did_you_mean(name, names)
        usage_error(cmd, "unknown option '--" .. name .. "'" .. (near and (" — did you mean '--" .. near .. "'?") or ""))
      end
      if f.type ~= "boolean" and f.type ~= nil and value == nil then
        i = i + 1
        value = argv[i]
      elseif (f.type == "boolean" or f.type == nil) and value ~= nil then
        usage_error(cmd, "option --" .. name .. " takes no value")
      end
      set(f, value, "--" .. name)
    else
      -- short flags, possibly bundled: -dy, -n NAME, -nNAME
      local j = 2
      while j <= #a do
        local c = a:sub(j, j)
        local f = byshort[c]
        if not f then usage_error(cmd, "unknown option '-" .. c .. "'") end
        if f.type == "boolean" or f.type == nil then
          set(f, nil, "-" .. c)
          j = j + 1
        else
          local value = a:sub(j + 1)
          if value == "" then i = i + 1; value = argv[i] end
          set(f, value, "-" .. c)
          break
        end
      end
    end
    i = i + 1
  end
  if cmd.min_args and #pos < cmd.min_args then
    usage_error(cmd, "missing argument" .. (cmd.usage and (": usage: " .. cmd.usage) or ""))
  end
  if cmd.max_args and #pos > cmd.max_args then
    usage_error(cmd, "unexpected argument '" .. pos[cmd.max_args + 1] .. "'" ..
      (cmd.usage and (": usage: " .. cmd.usage) or ""))
  end
  return opts, pos
end

--- The --help text of a command.
function M.help(cmd)
  local out = { "usage: " .. (cmd.usage or ("foundry " .. cmd.name)), "" }
  if cmd.summary then out[#out + 1] = cmd.summary end
  if cmd.description then out[#out + 1] = ""; out[#out + 1] = cmd.description:gsub("%s+$", "") end
  if cmd.flags and #cmd.flags > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "options:"
    for _, f in ipairs(cmd.flags) do
      local left = (f.short and ("-" .. f.short .. ", ") or "    ") .. "--" .. f[1]
      if f.type and f.type ~= "boolean" then left = left .. " " .. (f.arg or "VALUE") end
      out[#out + 1] = string.format("  %-28s %s", left, f.help or "")
    end
  end
  if cmd.examples then
    out[#out + 1] = ""
    out[#out + 1] = "examples:"
    for _, e in ipairs(cmd.examples) do out[#out + 1] = "  " .. e end
  end
  return table.concat(out, "\n") .. "\n"
end

return M
