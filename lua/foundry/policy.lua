--- Network policies: what a sandbox may reach, which requests are inspected, which
--- credentials the proxy adds, and an optional `on_request` hook. See docs/policies.md.
---
---   local policy = require "foundry.policy"
---   local p = policy.load("default")              -- policies/default.lua, or a path
---   local p2 = policy.extend(p, { allow = { "registry.example.org" } })
---   print(policy.explain(p2, "https://api.github.com/user", "GET").reason)
---
--- A policy file is a Lua chunk returning a table. It runs in a restricted VM
--- (foundry.vm): no I/O, a memory and instruction budget; its `on_request` function
--- stays in that VM and is called there, per request, with plain data.
local errors = require "foundry.errors"
local util = require "foundry.util"
local native = require "foundry._proxy"

local M = {}

M.MODES = { "none", "allowlist", "host-only", "open" }

--- Built-in gateways: `gateways = { anthropic = true }` or `{ anthropic = { secret = "X" } }`.
--- `oauth_secret` is used (as a bearer token) when `oauth = true`.
M.PROVIDERS = {
  anthropic = { host = "api.anthropic.com", header = "x-api-key", secret = "ANTHROPIC_API_KEY",
                oauth_secret = "CLAUDE_CODE_OAUTH_TOKEN", strip = { "x-api-key", "authorization" } },
  openai = { host = "api.openai.com", header = "authorization", format = "Bearer {secret}",
             secret = "OPENAI_API_KEY", strip = { "authorization" } },
  gemini = { host = "generativelanguage.googleapis.com", header = "x-goog-api-key",
             secret = "GEMINI_API_KEY", strip = { "x-goog-api-key", "authorization" }, query = "key" },
  github = { host = "api.github.com", header = "authorization", format = "Bearer {secret}",
             secret = "GITHUB_TOKEN", strip = { "authorization" } },
}

M.INSTRUCTIONS = 1000000    -- per on_request call
M.MEMORY = 16 * 1024 * 1024 -- per policy VM

-- ------------------------------------------------------------------ schema

local function list_of(e) return { list = e } end
local function map_of(e) return { map = e } end
local function record(f) return { record = f } end
local function one_of(...) return { one_of = { ... } } end

local strings = one_of("string", list_of("string"))
local hostspec = one_of("string", record({ host = "string", port = "integer" }))

local SCHEMA = record({
  description = "string",
  extends = "string",
  mode = { enum = M.MODES },
  allow = list_of(hostspec),
  deny = list_of(hostspec),
  addresses = list_of("string"),
  inspect = list_of(hostspec),
  rules = list_of(record({
    name = "string", host = "string", port = "integer", methods = strings, paths = strings,
    allow = "boolean", deny = "boolean", on_request = "boolean", reason = "string",
    body = "integer",
  })),
  credentials = list_of(record({
    name = "string", host = "string", port = "integer", header = "string", basic = "string",
    query = "string", format = "string", secret = "string", methods = strings, paths = strings,
    inject = "boolean", json = "boolean", strip = list_of("string"),
  })),
  gateways = map_of(one_of("boolean", record({
    host = "string", port = "integer", header = "string", format = "string", secret = "string",
    oauth = "boolean", strip = list_of("string"), query = "string",
  }))),
  overrides = map_of(one_of("string", record({ address = "string", port = "integer", tls = "boolean" }))),
  limits = record({
    connections = "integer", rate = "number", burst = "number", request_body = "integer",
    connect_timeout = "integer", idle_timeout = "integer", breaker_failures = "integer",
    breaker_cooldown = "integer",
  }),
  on_request = one_of("function", "string"),
  -- git smart-HTTP rules and GitHub API rules (foundry.gitsafety, foundry.github)
  git = "table",
  github = "table",
})

M.KEYS = util.keys(SCHEMA.record)

local function type_name(t)
  if type(t) == "string" then return t end
  if t.enum then return "one of '" .. table.concat(t.enum, "', '") .. "'" end
  if t.list then return "a list" end
  if t.map then return "a table of names" end
  if t.record then return "a table" end
  local names = {}
  for i, x in ipairs(t.one_of) do names[i] = type_name(x) end
  return table.concat(names, " or ")
end

local function matches(v, t)
  if type(t) == "string" then
    if t == "integer" then return math.type(v) == "integer" end
    if t == "function" then return type(v) == "function" or v == "<function>" end
    return type(v) == t
  end
  if t.enum then
    for _, e in ipairs(t.enum) do if v == e then return true end end
    return false
  end
  if t.list or t.map or t.record then return type(v) == "table" end
  for _, x in ipairs(t.one_of) do if matches(v, x) then return true end end
  return false
end

local show, key_path = util.show_value, util.key_path

local function fail(where, path, msg)
  local p = key_path(path)
  errors.raise("policy.invalid", (where or "policy") .. ": " .. (p ~= "" and (p .. ": ") or "") .. msg,
    "see docs/policies.md, or run: foundry policy check FILE", { where = where, key = path })
end

local function append(path, k)
  local p = util.copy(path)
  p[#p + 1] = k
  return p
end

local function check(v, t, path, where)
  if not matches(v, t) then
    if type(t) == "table" and t.enum and type(v) == "string" then
      local near = util.did_you_mean(v, t.enum)
      fail(where, path, string.format("%s is not %s%s", show(v), type_name(t),
        near and (" — did you mean '" .. near .. "'?") or ""))
    end
    fail(where, path, string.format("expected %s, got %s", type_name(t), show(v)))
  end
  if type(t) ~= "table" then return end
  if t.one_of then
    for _, x in ipairs(t.one_of) do
      if matches(v, x) then return check(v, x, path, where) end
    end
  elseif t.list then
    for k in pairs(v) do
      if math.type(k) ~= "integer" or k < 1 or k > #v then
        fail(where, append(path, k), "expected a list, but found the key " .. show(k))
      end
    end
    for i, x in ipairs(v) do check(x, t.list, append(path, i), where) end
  elseif t.map then
    for k, x in pairs(v) do
      if type(k) ~= "string" then fail(where, append(path, k), "keys must be strings") end
      check(x, t.map, append(path, k), where)
    end
  elseif t.record then
    local names = util.keys(t.record)
    for k, x in pairs(v) do
      local ft = type(k) == "string" and t.record[k]
      if not ft then
        local near = type(k) == "string" and util.did_you_mean(k, names)
        fail(where, append(path, k), string.format("unknown key %s%s", show(k),
          near and (" — did you mean '" .. near .. "'?") or (" (known: " .. table.concat(names, ", ") .. ")")))
      end
      check(x, ft, append(path, k), where)
    end
  end
end

-- ------------------------------------------------------------------ host patterns

local function as_list(v)
  if v == nil then return nil end
  if type(v) == "string" then return { v } end
  return v
end

--- Split "host", "host:port", "*.host", "[v6]:port" into a canonical pattern and port.
--- Returns nil, reason when it is not a valid pattern.
function M.parse_host(s, default_port)
  local host, port = s, default_port
  local h6, p6 = s:match("^(%[[^%]]+%]):(%d+)$")
  if h6 then host, port = h6, tonumber(p6)
  elseif not s:find(":.*:") then
    local h, p = s:match("^(.-):(%d+)$")
    if h then host, port = h, tonumber(p) end
  end
  if port and (port < 1 or port > 65535) then return nil, "port out of range" end
  if host == "*" then return "*", port end
  local wild = host:sub(1, 2) == "*."
  local name = wild and host:sub(3) or host
  if name:find("*", 1, true) then return nil, "'*' only as the whole host or as a leading '*.'" end
  local canon, kind = native.canonical_host(name)
  if not canon then return nil, "not a valid host name or address" end
  if wild and kind == "ip" then return nil, "'*.' needs a name, not an address" end
  return (wild and "*." or "") .. canon, port
end

local function host_entry(spec, path, where)
  local s, port = spec, nil
  if type(spec) == "table" then s, port = spec.host, spec.port end
  if type(s) ~= "string" then fail(where, path, "expected a host") end
  local pattern, p = M.parse_host(s, port)
  if not pattern then fail(where, path, show(s) .. ": " .. p) end
  return { pattern = pattern, host = pattern, port = p, src = key_path(path) }
end

local function check_glob(g, path, where)
  if g:sub(1, 1) ~= "/" and g ~= "*" and g ~= "**" then fail(where, path, "path globs start with '/'") end
  local _, stars = g:gsub("%*+", "")
  if stars > 6 then fail(where, path, "at most 6 '*' runs in a glob") end
end

local function upper_list(v)
  if not v then return nil end
  local out = {}
  for i, m in ipairs(v) do out[i] = m:upper() end
  return out
end

-- ------------------------------------------------------------------ normalise

--- Validate a policy table (plain data, as a file returns it) and return the normalised
--- form the engine compiles: every list explicit, hosts canonical, gateways expanded into
--- credentials, implied hosts added to allow/inspect. Raises `policy.invalid`.
function M.normalize(p, where)
  where = where or "policy"
  check(p, SCHEMA, {}, where)
  if p.git then require("foundry.gitsafety").validate(p.git, where .. ": git") end
  if p.github then require("foundry.github").compile(p.github, where .. ": github") end
  local out = {
    mode = p.mode or "allowlist", allow = {}, deny = {}, inspect = {}, addresses = {},
    rules = {}, credentials = {}, gateways = {}, overrides = {}, limits = util.copy(p.limits or {}),
    hook = p.on_request ~= nil,
  }
  local function add_allow(e) out.allow[#out.allow + 1] = e end
  local function add_inspect(e) out.inspect[#out.inspect + 1] = e end
  for i, h in ipairs(p.allow or {}) do add_allow(host_entry(h, { "allow", i }, where)) end
  for i, h in ipairs(p.deny or {}) do out.deny[#out.deny + 1] = host_entry(h, { "deny", i }, where) end
  for i, h in ipairs(p.inspect or {}) do
    local e = host_entry(h, { "inspect", i }, where)
    add_allow(e); add_inspect(e)
  end
  for i, a in ipairs(p.addresses or {}) do
    if not native.valid_cidr(a) then fail(where, { "addresses", i }, show(a) .. " is not an address or CIDR") end
    out.addresses[i] = a
  end
  local has_hook_rule = false
  for i, r in ipairs(p.rules or {}) do
    local path = { "rules", i }
    local n = (r.allow and 1 or 0) + (r.deny and 1 or 0) + (r.on_request and 1 or 0)
    if n ~= 1 then fail(where, path, "a rule says exactly one of allow = true, deny = true, on_request = true") end
    if r.on_request and not p.on_request then fail(where, append(path, "on_request"), "the policy has no on_request function") end
    local e = host_entry(r.host or "*", append(path, "host"), where)
    if r.port then e.port = r.port end
    for j, g in ipairs(as_list(r.paths) or {}) do check_glob(g, append(append(path, "paths"), j), where) end
    local rule = {
      host = e.pattern, port = e.port, src = r.name and ("rules." .. r.name) or key_path(path),
      methods = upper_list(as_list(r.methods)), paths = as_list(r.paths),
      action = r.deny and "deny" or r.on_request and "hook" or "allow",
      reason = r.reason, body = r.body,
    }
    has_hook_rule = has_hook_rule or r.on_request
    out.rules[#out.rules + 1] = rule
    if e.pattern ~= "*" then
      add_allow({ pattern = e.pattern, port = e.port, src = rule.src })
      add_inspect({ pattern = e.pattern, port = e.port, src = rule.src })
    end
  end
  if p.on_request and not has_hook_rule then
    out.rules[#out.rules + 1] = { host = "*", action = "hook", src = "on_request", body = 1 << 20 }
  end
  local function add_cred(c, path, src)
    local n = (c.header and 1 or 0) + (c.basic and 1 or 0) + (c.query and 1 or 0)
    if n ~= 1 then fail(where, path, "a credential says exactly one of header=, basic=, query=") end
    if not c.secret then fail(where, append(path, "secret"), "expected the name of a secret") end
    if c.format and not c.format:find("{secret}", 1, true) then
      fail(where, append(path, "format"), "the format must contain {secret}")
    end
    local e = host_entry(c.host or "*", append(path, "host"), where)
    if e.pattern == "*" then fail(where, append(path, "host"), "a credential names its host") end
    for j, g in ipairs(as_list(c.paths) or {}) do check_glob(g, append(append(path, "paths"), j), where) end
    out.credentials[#out.credentials + 1] = {
      host = e.pattern, port = c.port or e.port, src = src or key_path(path),
      header = c.header and c.header:lower(), basic = c.basic, query = c.query, format = c.format,
      secret = c.secret, methods = upper_list(as_list(c.methods)), paths = as_list(c.paths),
      inject = c.inject, json = c.json, strip = c.strip,
    }
    add_allow({ pattern = e.pattern, port = c.port or e.port, src = src or key_path(path) })
    add_inspect({ pattern = e.pattern, port = c.port or e.port, src = src or key_path(path) })
    return #out.credentials
  end
  for i, c in ipairs(p.credentials or {}) do add_cred(c, { "credentials", i }) end
  local names = util.keys(p.gateways or {})
  for _, name in ipairs(names) do
    local g = p.gateways[name]
    local path = { "gateways", name }
    if g ~= false then
      if not name:match("^[%w_-]+$") then fail(where, path, "gateway names are letters, digits, '-' and '_'") end
      local base = M.PROVIDERS[name]
      local spec = type(g) == "table" and g or {}
      if not base and not spec.host then
        local near = util.did_you_mean(name, util.keys(M.PROVIDERS))
        fail(where, path, "unknown provider" .. (near and (" — did you mean '" .. near .. "'?") or "")
          .. "; a gateway of your own names its host, header and secret")
      end
      base = base or {}
      local secret = spec.secret or (spec.oauth and base.oauth_secret) or base.secret
      local header, format = spec.header or base.header, spec.format or base.format
      if spec.oauth then header, format = "authorization", "Bearer {secret}" end
      local host = spec.host or base.host
      local src = "gateways." .. name
      local idx = add_cred({ host = host, header = header, format = format, secret = secret, inject = true,
        strip = spec.strip or base.strip or { header } }, path, src)
      local q = spec.query or base.query
      if q then add_cred({ host = host, query = q, secret = secret }, path, src) end
      out.gateways[#out.gateways + 1] = { name = name, host = host, port = spec.port or 443, credential = idx }
    end
  end
  for _, host in ipairs(util.keys(p.overrides or {})) do
    local v = p.overrides[host]
    local path = { "overrides", host }
    local pattern, port = M.parse_host(host)
    if not pattern or pattern:find("*", 1, true) then fail(where, path, "expected host or host:port") end
    local addr, aport, tls
    if type(v) == "string" then
      addr, aport = v:match("^%[?([^%]]-)%]?:(%d+)$")
      addr = addr or v
      aport = tonumber(aport)
    else
      addr, aport, tls = v.address, v.port, v.tls
    end
    local canon, kind = native.canonical_host(addr or "")
    if kind ~= "ip" then fail(where, path, "overrides map a host to an IP address (and port)") end
    out.overrides[#out.overrides + 1] = { host = pattern, port = port, address = canon, address_port = aport, tls = tls }
  end
  local l = out.limits
  for _, k in ipairs({ "connections", "rate", "burst", "request_body", "connect_timeout", "idle_timeout" }) do
    if l[k] and l[k] < 0 then fail(where, { "limits", k }, "must not be negative") end
  end
  return out
end

-- ------------------------------------------------------------------ loading

local function read_source(ref)
  if util.is_path(ref) then
    local f, err = io.open(ref, "rb")
    if not f then errors.raise("policy.not_found", "cannot open policy " .. ref .. ": " .. tostring(err)) end
    local src = f:read("a")
    f:close()
    return src, "@" .. ref, ref, ref
  end
  if not ref:match("^[%w_-]+$") then errors.raise("policy.not_found", "no policy named '" .. ref .. "'") end
  local dev = os.getenv("FOUNDRY_LUA_PATH")
  if dev and dev ~= "" then
    local file = dev .. "/../policies/" .. ref .. ".lua"
    local f = io.open(file, "rb")
    if f then
      local src = f:read("a")
      f:close()
      return src, "@policies/" .. ref .. ".lua", "policies/" .. ref .. ".lua", file
    end
  end
  local src = require("foundry._host").resource("policies/" .. ref .. ".lua")
  if not src then
    local names = {}
    for _, r in ipairs(require("foundry._host").resources("policies/")) do
      names[#names + 1] = r:match("^policies/(.-)%.lua$")
    end
    local near = util.did_you_mean(ref, names)
    errors.raise("policy.not_found", "no policy named '" .. ref .. "'",
      near and ("did you mean '" .. near .. "'?") or ("shipped policies: " .. table.concat(names, ", ")))
  end
  return src, "@policies/" .. ref .. ".lua", "policies/" .. ref .. ".lua"
end

local Policy = {}
Policy.__index = Policy
Policy.__name = "foundry.Policy"

--- Merge `child` over `parent`: lists are appended, tables of names merged, the rest
--- replaced. Neither is modified.
function M.merge(parent, child)
  local out = util.deepcopy(parent)
  for k, v in pairs(child) do
    if k == "extends" then -- luacheck: ignore 542 (consumed by the loader)
    elseif type(v) == "table" and type(out[k]) == "table" then
      if #v > 0 or next(v) == nil then
        for _, x in ipairs(v) do table.insert(out[k], x) end
      else
        for kk, vv in pairs(v) do out[k][kk] = vv end
      end
    else
      out[k] = v
    end
  end
  return out
end

local function new_policy(data, where, vm, files)
  local self = setmetatable({ data = data, where = where, vm = vm, files = files or {} }, Policy)
  self.spec = M.normalize(data, where)
  return self
end

-- The files a policy was read from: its own, then those of what it extends.
local function files_of(file, base)
  local out = { file }
  for _, f in ipairs(base and base.files or {}) do out[#out + 1] = f end
  return out
end

--- Load a policy by name (policies/NAME.lua, shipped) or path. Its code runs in a
--- restricted VM, which is kept for on_request. `extends = "NAME"` merges the named policy
--- under this one.
function M.load(ref, depth)
  depth = depth or 0
  if depth > 8 then errors.raise("policy.invalid", ref .. ": extends nests too deeply") end
  local src, chunk, where, file = read_source(ref)
  return M.from_source(src, chunk, where, depth, file)
end

--- Load a policy from source text (a chunk returning a table). `file`: the path it was
--- read from, if any (the daemon watches it: see Policy.files).
function M.from_source(src, chunkname, where, depth, file)
  local vmmod = require "foundry.vm"
  local vm = vmmod.new({ memory = M.MEMORY, instructions = M.INSTRUCTIONS, name = where })
  local ok, data = pcall(vm.load, vm, src, chunkname or "=policy")
  if not ok then
    vm:close()
    local msg = errors.message(data)
    if where and msg:sub(1, #where + 1) ~= where .. ":" then msg = where .. ": " .. msg end
    errors.raise("policy.invalid", msg, "a policy file is a Lua chunk returning a table")
  end
  if type(data) ~= "table" then
    vm:close()
    errors.raise("policy.invalid", (where or "policy") .. ": expected the file to return a table, got " .. type(data))
  end
  local base
  if data.extends then
    base = M.load(data.extends, (depth or 0) + 1)
    if data.on_request == nil and base.vm and base.data.on_request then
      vm:close()
      vm = base.vm
    elseif base.vm then
      base.vm:close()
    end
    data = M.merge(base.data, data)
  end
  if not data.on_request then vm:close(); vm = nil end
  local pok, pol = pcall(new_policy, data, where, vm, files_of(file, base))
  if pok then return pol end
  if vm then vm:close() end
  -- a value this file set is wrong: say on which line
  if errors.is(pol, "policy.invalid") and pol.where == where and where and pol.key then
    local line = util.line_of(src, pol.key)
    if line then pol.message = where .. ":" .. line .. pol.message:sub(#where + 1) end
  end
  error(pol, 0)
end

--- A policy from a plain table (a preset's, or built in code). `on_request` may be Lua
--- source text of a function expression; a function value is refused (it would run
--- outside the restricted VM).
function M.from_table(t, where)
  if getmetatable(t) == Policy then return t end
  if type(t) ~= "table" then error("policy: expected a table, got " .. type(t), 2) end
  local data = util.deepcopy(t)
  local vm
  if type(data.on_request) == "function" then
    errors.raise("policy.invalid", (where or "policy") .. ": on_request: a function here would run outside the restricted VM",
      "put the policy in a file (policy.load) or give on_request as source text")
  elseif type(data.on_request) == "string" and data.on_request ~= "<function>" then
    vm = require("foundry.vm").new({ memory = M.MEMORY, instructions = M.INSTRUCTIONS, name = where })
    local ok, err = pcall(vm.load, vm, "return { on_request = (" .. data.on_request .. ") }", "=" .. (where or "on_request"))
    if not ok then
      vm:close()
      errors.raise("policy.invalid", (where or "policy") .. ": on_request: " .. errors.message(err))
    end
  end
  local base
  if data.extends then
    base = M.load(data.extends)
    if not vm and base.vm and base.data.on_request then vm = base.vm elseif base.vm then base.vm:close() end
    data = M.merge(base.data, data)
  end
  return new_policy(data, where, vm, files_of(nil, base))
end

--- A new policy: `base` with `changes` merged over it (lists appended). The on_request
--- VM of the base is shared.
function M.extend(base, changes)
  base = M.from_table(base)
  local data = M.merge(base.data, changes)
  local self = setmetatable({ data = data, where = base.where, vm = base.vm, files = base.files }, Policy)
  self.spec = M.normalize(data, base.where)
  return self
end

--- Accept a policy object, a table or a name/path.
function M.resolve(p)
  if getmetatable(p) == Policy then return p end
  if type(p) == "string" then return M.load(p) end
  return M.from_table(p)
end

--- The names of the secrets the policy's credentials use.
function Policy:secret_names()
  local seen, out = {}, {}
  for _, c in ipairs(self.spec.credentials) do
    if not seen[c.secret] then seen[c.secret] = true; out[#out + 1] = c.secret end
  end
  table.sort(out)
  return out
end

--- Run on_request in the policy's VM. Returns "allow"|"deny", reason. A hook that
--- fails, loops or allocates without bound denies.
function Policy:on_request(req)
  if not self.vm then return "deny", "the policy has no on_request" end
  local ok, v, reason = pcall(self.vm.call, self.vm, "on_request", req)
  if not ok then
    local code = errors.is(v) and v.code or "vm.error"
    if code == "vm.budget" then return "deny", "on_request ran out of its instruction budget" end
    if code == "vm.memory" then return "deny", "on_request ran out of its memory budget" end
    return "deny", "on_request failed: " .. errors.message(v)
  end
  if v == true or v == nil or v == "allow" then return "allow", type(reason) == "string" and reason or nil end
  if type(v) == "table" then
    if v.allow or v.action == "allow" then return "allow", v.reason end
    return "deny", v.reason or "denied by on_request"
  end
  return "deny", type(reason) == "string" and reason or (type(v) == "string" and v ~= "deny" and v) or "denied by on_request"
end

function Policy:close()
  if self.vm then self.vm:close(); self.vm = nil end
end

local function integers(v)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = integers(x) end
  return out
end

--- The policy of a sandbox's state row: the one recorded at creation (a name, a path or
--- a table), else the default policy in the row's network mode; the hosts its preset
--- allows (`spec.allow`) are added to it.
function M.of_sandbox(row)
  local spec = type(row.spec) == "table" and row.spec or {}
  local data = type(row.data) == "table" and row.data or {}
  local p = data.policy or spec.policy
  local base
  if p ~= nil then
    base = M.resolve(integers(p))
  else
    local mode = row.network or spec.network
    if mode and mode ~= "allowlist" then
      base = M.from_table({ extends = "default", mode = mode })
    else
      base = M.load("default")
    end
  end
  if type(spec.allow) == "table" and #spec.allow > 0 then
    return M.extend(base, { allow = integers(spec.allow) })
  end
  return base
end

--- Names of the policies shipped in policies/.
function M.shipped()
  local out = {}
  for _, r in ipairs(require("foundry._host").resources("policies/")) do
    out[#out + 1] = r:match("^policies/(.-)%.lua$")
  end
  return out
end

-- ------------------------------------------------------------------ explain

local function split_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then scheme, rest = "https", url end
  scheme = scheme:lower()
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  path = path ~= "" and path or "/"
  path = path:gsub("#.*$", "")
  local p, q = path:match("^([^?]*)%??(.*)$")
  local host, port = authority, nil
  local h6, p6 = authority:match("^(%[.+%]):(%d+)$")
  if h6 then host, port = h6, tonumber(p6)
  elseif authority:match("^%[.+%]$") then host = authority
  else
    local h, pp = authority:match("^(.*):(%d+)$")
    if h then host, port = h, tonumber(pp) end
  end
  port = port or (scheme == "http" and 80 or 443)
  return scheme, host, port, p, q
end

--- Which rule decides a request and why: `{action="deny"|"tunnel"|"inspect", rule=,
--- reason=, how_to_allow=, host=, port=, hook=, credentials={...}, override=}`. Uses the
--- engine's own decision code. A URL without a scheme is https.
function M.explain(p, url, method)
  p = M.resolve(p)
  method = (method or "GET"):upper()
  local scheme, host, port, path, query = split_url(url)
  local gw = host == "127.0.0.1" and path:match("^/_gw/([%w_-]+)")
  if gw then
    for _, g in ipairs(p.spec.gateways) do
      if g.name == gw then
        local rest = path:sub(#gw + 6)
        return M.explain(p, "https://" .. g.host .. (rest ~= "" and rest or "/") .. (query ~= "" and ("?" .. query) or ""), method)
      end
    end
    return { action = "deny", rule = "gateways", reason = "no gateway named '" .. gw .. "'",
             how_to_allow = "add the provider to the policy's gateways" }
  end
  local r = native.decide(p.spec, host, port, method, path)
  r.port, r.path, r.method, r.scheme = port, path, method, scheme
  r.credentials = {}
  if r.action ~= "deny" then
    for _, c in ipairs(p.spec.credentials) do
      local hm = c.host == r.host or (c.host:sub(1, 2) == "*." and r.host and r.host:sub(-#c.host + 1) == c.host:sub(2))
      if hm and (not c.port or c.port == port) then
        r.credentials[#r.credentials + 1] = { secret = c.secret, rule = c.src,
          where = c.header and ("header " .. c.header) or c.basic and "basic auth" or ("query " .. c.query) }
      end
    end
    if r.action == "inspect" and scheme == "http" then r.action = "allow" end
    if r.action == "tunnel" and scheme == "http" then r.action = "allow" end
  end
  return r
end

return M
