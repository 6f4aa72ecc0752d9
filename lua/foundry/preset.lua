--- Presets: a Lua file returning a table that describes a sandbox.
---
---   return {
---     extends = "shell",                       -- a name or a path
---     image = "foundry/sandbox:1",
---     network = "allowlist", allow = { "npm-registry.example.internal" },
---     env = { NODE_ENV = "development" },
---     mounts = { "~/datasets:/data:ro" },
---     setup = { "npm ci" },
---     stages = { add = { { name = "seed", after = "deps", run = function(sb, ctx) ... end } } },
---   }
---
--- Validation is strict: an unknown key, a wrong type or a bad value is an error naming
--- the file, line and key path, with the nearest valid key ("unknown key 'netwrok' — did
--- you mean 'network'?"). Presets found by name run with a restricted set of globals (no
--- io, os.execute, require, load) and an instruction budget; their functions get the
--- sandbox and stage context as arguments.
---
--- Names are looked up in: the directories of FOUNDRY_PRESET_PATH (colon-separated), then
--- `<config>/presets/`, then presets saved with `foundry new --save-as`, then the presets
--- shipped inside the binary (shell, claude, codex, gemini). A preset that extends its own
--- name gets the next one down that list (so `~/.config/foundry/presets/claude.lua` can
--- say `extends = "claude"` to adjust the shipped one).
local errors = require "foundry.errors"
local util = require "foundry.util"

local M = {}

M.NETWORKS = { "none", "allowlist", "host-only", "open" }

-- ------------------------------------------------------------------ schema

local T = {}
local function list_of(e) return { list = e } end
local function map_of(e) return { map = e } end
local function record(fields) return { record = fields } end
local function one_of(...) return { one_of = { ... } } end

local commands = one_of("string", "function", list_of(one_of("string", "function")))
local mount = one_of("string", record({ source = "string", target = "string", read_only = "boolean" }))
local stage = one_of("function", record({ run = "function", undo = "function", description = "string" }))

T.preset = record({
  description = "string",
  extends = "string",
  repo = "string",
  branch = "string",
  from = "string",
  image = "string",
  network = { enum = M.NETWORKS },
  allow = list_of("string"),
  policy = "string",
  agent = one_of("string", record({
    name = "string",
    command = one_of("string", list_of("string")),
    providers = list_of("string"),
    env = map_of(one_of("string", "number", "boolean")),
  })),
  providers = list_of("string"),
  credentials = map_of(one_of("string", "boolean")),
  env = map_of(one_of("string", "number", "boolean")),
  mounts = list_of(mount),
  copy = list_of(mount),
  cpus = "number",
  memory = one_of("string", "integer"),
  pids = "integer",
  workdir = "string",
  files = map_of(one_of("string", "boolean")),
  deps = commands,
  setup = commands,
  health = commands,
  mcp = map_of(one_of("boolean", record({
    command = one_of("string", list_of("string")),
    args = list_of("string"),
    env = map_of("string"),
    url = "string",
  }))),
  stages = record({
    remove = list_of("string"),
    replace = map_of(stage),
    add = list_of(record({ name = "string", before = "string", after = "string", run = "function",
                           undo = "function", description = "string" })),
  }),
  hooks = record({
    post_tool_use = one_of("function", "boolean", { enum = { "commit" } }),
    debounce_ms = "integer",
    push = "boolean",
  }),
  tmux = "boolean",
})

M.KEYS = util.keys(T.preset.record)

local function type_name(t)
  if type(t) == "string" then return t end
  if t.enum then return "one of '" .. table.concat(t.enum, "', '") .. "'" end
  if t.list then return "a list" end
  if t.map then return "a table of names" end
  if t.record then return "a table" end
  if t.one_of then
    local names = {}
    for i, x in ipairs(t.one_of) do names[i] = type_name(x) end
    return table.concat(names, " or ")
  end
  return "?"
end

local function matches_type(v, t)
  if type(t) == "string" then
    if t == "integer" then return math.type(v) == "integer" end
    return type(v) == t
  end
  if t.enum then
    for _, e in ipairs(t.enum) do if v == e then return true end end
    return false
  end
  if t.list or t.map or t.record then return type(v) == "table" end
  if t.one_of then
    for _, x in ipairs(t.one_of) do if matches_type(v, x) then return true end end
  end
  return false
end

local show, key_path = util.show_value, util.key_path

-- Best-effort line of a key path in the source text: each named key is searched after
-- the previous one. A function value knows its own line.
local line_of = util.line_of

local function fail(where, path, value, msg, shown)
  local loc = where.file or "preset"
  local line = line_of(where.source, path, value)
  if line then loc = loc .. ":" .. line end
  local p = key_path(shown or path)
  errors.raise("preset.invalid", loc .. ": " .. (p ~= "" and (p .. ": ") or "") .. msg, where.hint)
end

local function check(v, t, path, where)
  if not matches_type(v, t) then
    if t.enum and type(v) == "string" then
      local near = util.did_you_mean(v, t.enum)
      fail(where, path, v, string.format("%s is not %s%s", show(v), type_name(t),
        near and (" — did you mean '" .. near .. "'?") or ""))
    end
    fail(where, path, v, string.format("expected %s, got %s", type_name(t), show(v)))
  end
  if type(t) ~= "table" then return end
  if t.one_of then
    for _, x in ipairs(t.one_of) do
      if matches_type(v, x) then return check(v, x, path, where) end
    end
  elseif t.list then
    for k in pairs(v) do
      if math.type(k) ~= "integer" or k < 1 or k > #v then
        local p = util.copy(path); p[#p + 1] = k
        fail(where, p, v, "expected a list, but found the key " .. show(k))
      end
    end
    for i, x in ipairs(v) do
      local p = util.copy(path); p[#p + 1] = i
      check(x, t.list, p, where)
    end
  elseif t.map then
    for k, x in pairs(v) do
      local p = util.copy(path); p[#p + 1] = k
      if type(k) ~= "string" then fail(where, p, x, "keys must be strings, got " .. show(k)) end
      check(x, t.map, p, where)
    end
  elseif t.record then
    local names = util.keys(t.record)
    for k, x in pairs(v) do
      local p = util.copy(path); p[#p + 1] = k
      local ft = type(k) == "string" and t.record[k]
      if not ft then
        local near = type(k) == "string" and util.did_you_mean(k, names)
        fail(where, p, nil, string.format("unknown key %s%s", show(k),
          near and (" — did you mean '" .. near .. "'?") or (" (known: " .. table.concat(names, ", ") .. ")")), path)
      end
      check(x, ft, p, where)
    end
  end
end

local function check_values(p, where)
  local function bad(path, value, msg) fail(where, path, value, msg) end
  if p.cpus and p.cpus <= 0 then bad({ "cpus" }, p.cpus, "must be more than 0") end
  if p.pids and p.pids < 16 then bad({ "pids" }, p.pids, "must be at least 16") end
  if type(p.memory) == "string" and not p.memory:lower():match("^%d+[kmg]?b?$") then
    bad({ "memory" }, p.memory, "expected a size like '512m' or '4g', got " .. show(p.memory))
  end
  for _, key in ipairs({ "mounts", "copy" }) do
    for i, m in ipairs(p[key] or {}) do
      local ok, err = pcall(M.parse_mount, m, key == "copy")
      if not ok then bad({ key, i }, m, errors.message(err)) end
    end
  end
  for name, ref in pairs(p.credentials or {}) do
    if type(ref) == "string" and not ref:match("^vault:[%w._/-]+$") and not ref:match("^env:[%w_]+$") then
      bad({ "credentials", name }, ref, "expected 'vault:NAME' or 'env:VAR', got " .. show(ref))
    end
  end
  for name, v in pairs(p.env or {}) do
    if not name:match("^[%a_][%w_]*$") then bad({ "env", name }, v, "not a valid variable name") end
  end
  if p.workdir and (p.workdir:match("^/") or p.workdir:match("%.%.")) then
    bad({ "workdir" }, p.workdir, "must be a relative path inside the workspace")
  end
  for path in pairs(p.files or {}) do
    if not (path:match("^~/") or path:match("^/")) then
      bad({ "files", path }, nil, "file paths start with ~/ (the home directory) or /")
    end
  end
end

--- Check a preset table. `where` = {file=, source=} names the file for messages.
--- Raises `preset.invalid` with file:line: key path: problem.
function M.validate(p, where)
  where = where or {}
  if type(p) ~= "table" then
    errors.raise("preset.invalid", (where.file or "preset") .. ": a preset returns a table, got " .. type(p))
  end
  check(p, T.preset, {}, where)
  check_values(p, where)
  return p
end

-- ------------------------------------------------------------------ mounts

local function expand_home(path)
  if path == "~" then return os.getenv("HOME") or "/root" end
  if path:sub(1, 2) == "~/" then return (os.getenv("HOME") or "/root") .. path:sub(2) end
  return path
end

--- `"HOST:CTR[:ro|rw]"` or `{source=, target=, read_only=}` → `{source=, target=, read_only=}`.
--- `~` is expanded; a relative host path is taken from the current directory.
function M.parse_mount(m, is_copy)
  local src, dst, mode
  if type(m) == "table" then
    src, dst, mode = m.source, m.target, m.read_only and "ro" or nil
  elseif type(m) == "string" then
    src, dst, mode = m:match("^([^:]+):([^:]+):?([^:]*)$")
    if not src then
      errors.raise("usage", string.format("'%s' is not HOST:CONTAINER%s", m, is_copy and "" or "[:ro]"))
    end
    if mode == "" then mode = nil end
  else
    errors.raise("usage", "a mount is 'HOST:CONTAINER[:ro]' or {source=, target=}")
  end
  if mode and mode ~= "ro" and mode ~= "rw" then
    errors.raise("usage", string.format("mount mode '%s': expected 'ro' or 'rw'", mode))
  end
  if is_copy and mode then errors.raise("usage", "--copy takes HOST:CONTAINER (no mode)") end
  if type(dst) ~= "string" or not dst:match("^/") then
    errors.raise("usage", string.format("container path '%s' must be absolute", tostring(dst)))
  end
  if type(src) ~= "string" or src == "" then errors.raise("usage", "host path is empty") end
  src = expand_home(src)
  if not src:match("^/") then src = require("luv").cwd() .. "/" .. src end
  return { source = src, target = dst, read_only = mode == "ro" }
end

-- ------------------------------------------------------------------ loading

local SAFE_GLOBALS = { "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
                       "tostring", "type", "xpcall", "setmetatable", "getmetatable", "rawequal",
                       "rawget", "rawset", "rawlen", "string", "table", "math", "utf8", "_VERSION" }

-- The globals a preset found by name sees.
local function preset_env()
  local env = {}
  for _, k in ipairs(SAFE_GLOBALS) do env[k] = _G[k] end
  env.os = { getenv = os.getenv, time = os.time, date = os.date, clock = os.clock }
  env.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    io.stderr:write(table.concat(parts, "\t"), "\n")
  end
  local f = require "foundry"
  env.foundry = {
    version = f.version, sleep = f.sleep, raise = f.raise, error = f.error, is_error = f.is_error,
    parallel = f.parallel, timeout = f.timeout, json = require "foundry.json",
  }
  env._G = env
  return env
end

M.INSTRUCTION_BUDGET = 10000000

-- Run a preset chunk with the restricted globals and an instruction budget.
local function eval(source, chunkname)
  local fn, err = load(source, chunkname, "t", preset_env())
  if not fn then errors.raise("preset.syntax", tostring(err)) end
  local spent = false
  debug.sethook(function()
    spent = true
    error("preset took too long to load (instruction budget spent)", 2)
  end, "", M.INSTRUCTION_BUDGET)
  local ok, res = pcall(fn)
  debug.sethook()
  if not ok then
    if spent then errors.raise("preset.budget", chunkname:gsub("^@", "") .. ": took too long to load (a loop?)") end
    if errors.is(res) then error(res, 0) end
    errors.raise("preset.error", tostring(res))
  end
  return res
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

local is_path = util.is_path

--- Valid names for saved presets.
function M.valid_name(name)
  return type(name) == "string" and name:match("^[%w][%w._-]*$") ~= nil and #name <= 64
end

-- Library directories, in order.
local function library_dirs()
  local dirs = {}
  for d in (os.getenv("FOUNDRY_PRESET_PATH") or ""):gmatch("[^:]+") do dirs[#dirs + 1] = expand_home(d) end
  dirs[#dirs + 1] = require("foundry.paths").config() .. "/presets"
  return dirs
end

local function state_presets()
  local ok, state = pcall(require, "foundry.state")
  if ok and type(state) == "table" and type(state.presets) == "table" then return state.presets end
end

-- Every place `name` is found, best first: {origin=, name=, path=, source=, id=}.
local function candidates(name)
  local out = {}
  for _, d in ipairs(library_dirs()) do
    local path = d .. "/" .. name .. ".lua"
    local src = read(path)
    if src then out[#out + 1] = { origin = "library", name = name, path = path, source = src, id = "file:" .. path } end
  end
  local sp = state_presets()
  if sp and sp.get then
    local ok, row = pcall(sp.get, name)
    local src = ok and row and row.path and read(row.path)
    if src then
      out[#out + 1] = { origin = "saved", name = name, path = row.path, source = src, id = "file:" .. row.path }
    end
  end
  local host = require "foundry._host"
  local src = host.resource("presets/" .. name .. ".lua")
  if src then out[#out + 1] = { origin = "shipped", name = name, source = src, id = "shipped:" .. name } end
  return out
end

--- Find a preset by name or path (`base` resolves relative paths; `after` = the id of the
--- preset to skip past, for a preset extending its own name). Returns
--- `{origin=, name=, path=, source=, id=}` or raises `preset.not_found`.
function M.find(ref, base, after)
  if type(ref) ~= "string" or ref == "" then error("preset.find: expected a name or path", 2) end
  if is_path(ref) then
    local path = expand_home(ref)
    if not path:match("^/") then path = (base or require("luv").cwd()) .. "/" .. path end
    local src = read(path)
    if not src then
      errors.raise("preset.not_found", "no preset file " .. path)
    end
    return { origin = "path", name = path:match("([^/]+)%.lua$") or path, path = path, source = src, id = "file:" .. path }
  end
  if not M.valid_name(ref) then errors.raise("preset.not_found", "'" .. ref .. "' is not a preset name or path") end
  local list = candidates(ref)
  local start = 1
  if after then
    for i, c in ipairs(list) do if c.id == after then start = i + 1 end end
  end
  if list[start] then return list[start] end
  local names = {}
  for _, p in ipairs(M.list()) do names[#names + 1] = p.name end
  local near = util.did_you_mean(ref, names)
  errors.raise("preset.not_found", "no preset named '" .. ref .. "'" .. (near and (" — did you mean '" .. near .. "'?") or ""),
    "see 'foundry preset ls'")
end

local MERGE_MAPS = { env = true, credentials = true, files = true, mcp = true }
local MERGE_LISTS = { mounts = true, copy = true, allow = true, providers = true, deps = true, setup = true, health = true }

local function as_list(v)
  if v == nil then return {} end
  if type(v) ~= "table" then return { v } end
  return v
end

--- Merge `child` over `parent` (both validated): scalars are replaced, env/credentials/
--- files/mcp merged by key (a `false` value removes the key), lists (mounts, copy, allow,
--- providers, deps, setup, health) concatenated, agent/hooks merged by field, stages
--- combined.
function M.merge(parent, child)
  local out = util.copy(parent)
  for k, v in pairs(child) do
    if MERGE_MAPS[k] then
      local m = util.copy(parent[k] or {})
      for kk, vv in pairs(v) do m[kk] = vv end
      out[k] = m
    elseif MERGE_LISTS[k] then
      local l = {}
      for _, x in ipairs(as_list(parent[k])) do l[#l + 1] = x end
      for _, x in ipairs(as_list(v)) do l[#l + 1] = x end
      out[k] = l
    elseif (k == "agent" or k == "hooks") and type(v) == "table" and type(parent[k]) == "table" then
      local m = util.copy(parent[k])
      for kk, vv in pairs(v) do m[kk] = vv end
      out[k] = m
    elseif k == "stages" and parent.stages then
      local s = { remove = {}, replace = {}, add = {} }
      for _, src in ipairs({ parent.stages, v }) do
        for _, n in ipairs(src.remove or {}) do s.remove[#s.remove + 1] = n end
        for n, f in pairs(src.replace or {}) do s.replace[n] = f end
        for _, a in ipairs(src.add or {}) do s.add[#s.add + 1] = a end
      end
      out.stages = s
    else
      out[k] = v
    end
  end
  out.extends = nil
  return out
end

-- Drop the keys a merge marked false.
local function prune_false(p)
  for k in pairs(MERGE_MAPS) do
    if p[k] then for kk, vv in pairs(p[k]) do if vv == false then p[k][kk] = nil end end end
  end
  return p
end

--- Resolve a table already loaded from `found` (with `extends` followed). Returns the
--- merged preset and its chain of names/paths (most basic first).
local function resolve(tbl, found, seen, depth)
  local where = { file = found.path or (found.origin .. " preset '" .. found.name .. "'"), source = found.source }
  M.validate(tbl, where)
  -- a policy file named relative to the preset means relative to the preset's file
  if type(tbl.policy) == "string" and is_path(tbl.policy) then
    local fs = require "foundry.fs"
    tbl.policy = fs.absolute(tbl.policy, found.path and fs.absolute(dirname(found.path)))
  end
  if not tbl.extends then return tbl, { found.path or found.name } end
  if depth > 16 then errors.raise("preset.invalid", where.file .. ": 'extends' goes more than 16 deep") end
  local base = found.path and dirname(found.path) or nil
  local after = (tbl.extends == found.name and not is_path(tbl.extends)) and found.id or nil
  local parent_found = M.find(tbl.extends, base, after)
  if seen[parent_found.id] then
    errors.raise("preset.invalid", where.file .. ": 'extends' makes a cycle through " .. (parent_found.path or parent_found.name))
  end
  seen[parent_found.id] = true
  local parent_tbl = eval(parent_found.source, "@" .. (parent_found.path or ("presets/" .. parent_found.name .. ".lua")))
  local parent, chain = resolve(parent_tbl, parent_found, seen, depth + 1)
  chain[#chain + 1] = found.path or found.name
  return M.merge(parent, tbl), chain
end

--- Load a preset by name or path, follow `extends`, validate every file. Returns the
--- merged preset (a plain table) and `{name=, origin=, path=, chain={...}}`.
function M.load(ref, opts)
  opts = opts or {}
  local found = M.find(ref, opts.base)
  local tbl = eval(found.source, "@" .. (found.path or ("presets/" .. found.name .. ".lua")))
  local p, chain = resolve(tbl, found, { [found.id] = true }, 0)
  return prune_false(p), { name = found.name, origin = found.origin, path = found.path, chain = chain }
end

--- Resolve a table that a file already returned (`foundry run FILE.lua`): validate it
--- against its source and follow `extends` relative to the file.
function M.from_table(tbl, path)
  local found = { origin = "path", name = path:match("([^/]+)%.lua$") or path, path = path, source = read(path), id = "file:" .. path }
  local p, chain = resolve(tbl, found, { [found.id] = true }, 0)
  return prune_false(p), { name = found.name, origin = "path", path = path, chain = chain }
end

--- Every preset visible by name: `{name=, origin=, path=, description=, shadowed=}`.
function M.list()
  local seen, out = {}, {}
  local function add(name, origin, path, source)
    local desc
    if source then
      local ok, t = pcall(eval, source, "@" .. (path or name))
      if ok and type(t) == "table" and type(t.description) == "string" then desc = t.description end
    end
    out[#out + 1] = { name = name, origin = origin, path = path, description = desc, shadowed = seen[name] or nil }
    seen[name] = true
  end
  for _, d in ipairs(library_dirs()) do
    local uv = require "luv"
    local req = uv.fs_scandir(d)
    local names = {}
    while req do
      local n = uv.fs_scandir_next(req)
      if not n then break end
      if n:match("%.lua$") and M.valid_name(n:sub(1, -5)) then names[#names + 1] = n end
    end
    table.sort(names)
    for _, n in ipairs(names) do add(n:sub(1, -5), "library", d .. "/" .. n, read(d .. "/" .. n)) end
  end
  local sp = state_presets()
  if sp and sp.list then
    local ok, rows = pcall(sp.list)
    for _, row in ipairs(ok and rows or {}) do
      local src = row.path and read(row.path)
      if src then add(row.name, "saved", row.path, src) end
    end
  end
  local host = require "foundry._host"
  for _, r in ipairs(host.resources("presets/")) do
    local name = r:match("^presets/([^/]+)%.lua$")
    if name then add(name, "shipped", nil, host.resource(r)) end
  end
  return out
end

-- ------------------------------------------------------------------ saving

local function serialize(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t ~= "table" then error("cannot save a " .. t .. " in a preset", 0) end
  local inner = indent .. "  "
  local parts = {}
  if #v > 0 then
    for _, x in ipairs(v) do parts[#parts + 1] = serialize(x, inner) end
    local one = "{ " .. table.concat(parts, ", ") .. " }"
    if #one < 80 and not one:find("\n") then return one end
    return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. ",\n" .. indent .. "}"
  end
  for _, k in ipairs(util.keys(v)) do
    local key = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k or ("[" .. serialize(k) .. "]")
    parts[#parts + 1] = key .. " = " .. serialize(v[k], inner)
  end
  if #parts == 0 then return "{}" end
  return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. ",\n" .. indent .. "}"
end

--- Lua source of a preset made of plain data (what --save-as writes).
function M.serialize(p, comment)
  return (comment and ("-- " .. comment .. "\n") or "") .. "return " .. serialize(p) .. "\n"
end

--- Where `foundry new --save-as NAME` writes presets (recorded in the state database).
function M.saved_dir()
  return require("foundry.paths").data() .. "/presets"
end

--- Save a preset of plain data under `name` (validated first): a Lua file in
--- `saved_dir()`, recorded in the state database. Returns its path.
function M.save(name, p, comment)
  if not M.valid_name(name) then
    errors.raise("usage", "'" .. tostring(name) .. "' is not a valid preset name",
      "use letters, digits, '.', '_' and '-'")
  end
  M.validate(p, { file = "preset '" .. name .. "'" })
  local source = M.serialize(p, comment)
  local fs = require "foundry.fs"
  local dir = M.saved_dir()
  require("foundry.paths").ensure(dir)
  local path = dir .. "/" .. name .. ".lua"
  fs.write(path, source)
  require("foundry.state").presets.put({ name = name, source = "saved", path = path })
  return path
end

--- Delete a saved preset (its file and its record). Raises preset.not_found when there
--- is none.
function M.remove(name)
  local state = require "foundry.state"
  local row = state.presets.get(name)
  if not row then
    errors.raise("preset.not_found", "no saved preset named '" .. tostring(name) .. "'",
      "only presets saved with --save-as are removed this way; library files are yours to delete")
  end
  if row.path then require("foundry.fs").rm(row.path) end
  state.presets.delete(name)
end

-- ------------------------------------------------------------------ running

--- `foundry run PRESET.lua [ARGS]`: create the sandbox the preset describes, run its
--- stages, then its agent attached (on a terminal). Returns the exit status.
function M.run_file(path, tbl, arg)
  local p, info = M.from_table(tbl, path)
  local sandbox = require "foundry.sandbox"
  return sandbox.run_preset(p, info, arg)
end

return M
