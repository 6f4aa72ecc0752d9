--- The proxy engine: a sandbox's only way out. See docs/lua-api.md "foundry.proxy".
---
---   local proxy = require "foundry.proxy"
---   local engine = proxy.engine{ ca_dir = paths.ca(), secrets = function(name) ... end,
---                                audit = function(row) ... end,
---                                on_event = function(sandbox, event) ... end }
---   engine:add_sandbox{ name = "s1", socket = dir .. "/proxy.sock", policy = "default",
---                       placeholders = { GITHUB_TOKEN = proxy.placeholder("GITHUB_TOKEN") },
---                       hook_token = token }
---   engine:update_policy("s1", policy.load("default"))
---   engine:remove_sandbox("s1"); engine:close()
---
--- The data path is C (proxy/proxy.c); this module resolves policies and secrets, keeps
--- each sandbox's policy VM for on_request, and decodes hook events.
local native = require "foundry._proxy"
local policy = require "foundry.policy"
local errors = require "foundry.errors"
local task = require "foundry._task"

local M = {}

local Engine = {}
Engine.__index = Engine
Engine.__name = "foundry.proxy.Engine"

local function check_name(fn, name)
  if type(name) ~= "string" or not name:match("^[%w][%w._-]*$") then
    error(fn .. ": name: expected a sandbox name, got " .. tostring(name), 3)
  end
end

--- Make an engine. Options:
--- - `ca_dir`: where Foundry's CA lives (created on first use; default paths.ca()).
--- - `upstream_ca_file`: extra CA certificates trusted for upstreams (tests).
--- - `splice`: false copies opaque tunnels through the proxy's memory instead of letting
---   the kernel move them with splice(2) (default true; benchmarks compare the two).
--- - `secrets(name) -> value|nil`: the real value of a secret; may wait (the vault).
---   Default: the daemon's environment.
--- - `audit(row)`: every decision, `{sandbox=, kind=, decision=, host=, method=, path=,
---   rule=, reason=, status=, bytes_in=, bytes_out=, ms=}`; runs on the proxy's path:
---   it must not wait (spawn a task for that).
--- - `on_event(sandbox, event)`: a verified hook event (a table); runs in its own task.
--- - `guard`: a foundry.guards object deciding git and GitHub API requests (optional).
function M.engine(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("proxy.engine: expected a table of options", 2) end
  local self = setmetatable({ sandboxes = {}, secrets = opts.secrets or os.getenv,
                              on_event = opts.on_event }, Engine)
  local ca_dir = opts.ca_dir or require("foundry.paths").ca()
  local sandboxes = self.sandboxes
  local json = require "cjson.safe"
  self.guard = opts.guard
  local guard = opts.guard and opts.guard:callbacks(function(name) return sandboxes[name] end) or {}
  self.native = native.engine({
    guard_want = guard.guard_want, guard = guard.guard, guard_response = guard.guard_response,
    ca_dir = ca_dir,
    upstream_ca_file = opts.upstream_ca_file or nil,
    splice = opts.splice,
    audit = opts.audit,
    hook = function(name, req)
      local sb = sandboxes[name]
      if not sb then return "deny", "unknown sandbox" end
      return sb.policy:on_request(req)
    end,
    event = function(name, body)
      local ev = json.decode(body)
      if type(ev) ~= "table" then return false end
      local handler = self.on_event
      if handler then
        task.spawn(function()
          local ok, err = pcall(handler, name, ev)
          if not ok then io.stderr:write("foundry: on_event for ", name, ": ", errors.message(err), "\n") end
        end)
      end
      return true
    end,
  })
  return self
end

-- `lookup`: the sandbox's own secrets function (add_sandbox{secrets=}), else the engine's.
local function resolve_secrets(self, p, lookup)
  local out = {}
  lookup = lookup or self.secrets
  for _, name in ipairs(p:secret_names()) do
    local v = lookup(name)
    if v ~= nil and type(v) ~= "string" then
      error("proxy: secrets(" .. name .. ") returned a " .. type(v) .. ", expected a string or nil", 3)
    end
    out[name] = v
  end
  return out
end

--- Register a sandbox: listen on the Unix socket `socket` (parent directories made 0755,
--- the socket 0666 so the container's user can connect; a stale socket is replaced).
--- `policy`: a policy object, table, or name/path. `placeholders`: {SECRET_NAME = value}
--- as the sandbox sees them. `hook_token`: the key of the hook events' HMAC. `secrets`:
--- optional `function(name) -> value` for this sandbox (its preset's vault references),
--- used instead of the engine's.
function Engine:add_sandbox(spec)
  if type(spec) ~= "table" then error("add_sandbox: expected a table", 2) end
  check_name("add_sandbox", spec.name)
  if self.sandboxes[spec.name] then
    errors.raise("proxy.exists", "sandbox '" .. spec.name .. "' is already registered with the proxy")
  end
  local p = policy.resolve(spec.policy or "default")
  if spec.socket then
    local dir = spec.socket:match("^(.*)/[^/]+$")
    if dir and dir ~= "" then
      local fs = require "foundry.fs"
      fs.mkdir(dir, tonumber("755", 8))
    end
  end
  if spec.secrets ~= nil and type(spec.secrets) ~= "function" then error("add_sandbox: secrets: expected a function", 2) end
  local secrets = resolve_secrets(self, p, spec.secrets)
  self.native:_add(spec.name, spec.socket, p.spec, secrets, spec.placeholders or {}, spec.hook_token)
  self.sandboxes[spec.name] = { policy = p, placeholders = spec.placeholders or {}, socket = spec.socket,
                                row = spec.sandbox, secrets = spec.secrets }
end

--- Listen on TCP too (tests, benchmarks): `{host="127.0.0.1", port=0, sandbox=name}` -> port.
function Engine:listen_tcp(spec)
  spec = spec or {}
  check_name("listen_tcp", spec.sandbox)
  return self.native:listen_tcp(spec.host or "127.0.0.1", spec.port or 0, spec.sandbox)
end

--- Replace a sandbox's policy. Requests already in flight finish under the old one; the
--- next request on any connection uses the new one. A policy that does not validate
--- raises and the old one stays.
function Engine:update_policy(name, p)
  check_name("update_policy", name)
  local sb = self.sandboxes[name]
  if not sb then errors.raise("proxy.not_found", "no sandbox named '" .. name .. "' in the proxy") end
  p = policy.resolve(p)
  local secrets = resolve_secrets(self, p, sb.secrets)
  self.native:_update(name, p.spec, secrets, sb.placeholders)
  if sb.policy ~= p then sb.policy:close() end
  sb.policy = p
end

--- Stop serving a sandbox: its socket is removed and its connections closed.
function Engine:remove_sandbox(name)
  check_name("remove_sandbox", name)
  local sb = self.sandboxes[name]
  self.sandboxes[name] = nil
  if self.guard then self.guard:forget(name) end
  local removed = self.native:remove_sandbox(name)
  if sb then sb.policy:close() end
  return removed
end

--- Counters: `{connections=, requests=, denied=, tunnels=, inspected=, leaf_minted=,
--- sandboxes={name={connections=, requests=, denied=, bytes_in=, bytes_out=}}}`.
function Engine:stats() return self.native:stats() end

--- The PEM file of Foundry's CA certificate (mounted into sandboxes).
function Engine:ca_cert() return self.native:ca_cert() end

--- The policy object a sandbox runs with.
function Engine:policy(name) return self.sandboxes[name] and self.sandboxes[name].policy end

function Engine:close()
  if self.closed then return end
  self.closed = true
  for name, sb in pairs(self.sandboxes) do
    self.sandboxes[name] = nil
    sb.policy:close()
  end
  self.native:close()
end
Engine.__close = Engine.close

function Engine:__tostring() return tostring(self.native) end

-- ------------------------------------------------------------------ placeholders

local ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local B64URL = ALNUM .. "-_"

local function random_string(n, alphabet)
  local bytes = require("foundry.crypto").random_bytes(n)
  local out = {}
  for i = 1, n do
    local b = bytes:byte(i) % #alphabet + 1
    out[i] = alphabet:sub(b, b)
  end
  return table.concat(out)
end

local function b64url(s)
  local enc = require("foundry.crypto").base64 and require("foundry.crypto").base64(s)
  if not enc then
    local t = {}
    for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local v = a * 65536 + (b or 0) * 256 + (c or 0)
      local n = b and (c and 4 or 3) or 2
      for k = 1, n do
        local idx = (v >> (6 * (4 - k))) & 63
        t[#t + 1] = B64URL:sub(idx + 1, idx + 1)
      end
    end
    enc = table.concat(t)
  end
  return (enc:gsub("+", "-"):gsub("/", "_"):gsub("=", ""))
end

--- A random placeholder in the shape clients expect for the secret `name` (so client-side
--- format checks pass): `sk-ant-api03-...` for Anthropic keys, a JWT shape for OAuth
--- tokens, `ghp_...` for GitHub, `sk-proj-...` for OpenAI, `AIza...` for Gemini, else
--- `foundry-placeholder-...`. Every call gives a new value.
function M.placeholder(name)
  name = tostring(name or ""):upper()
  if name:find("OAUTH") or name:find("JWT") then
    local header = b64url('{"alg":"HS256","typ":"JWT"}')
    local payload = b64url('{"sub":"foundry-placeholder","iat":0,"exp":4102444800,"n":"' .. random_string(16, ALNUM) .. '"}')
    return header .. "." .. payload .. "." .. random_string(43, B64URL)
  elseif name:find("ANTHROPIC") or name:find("CLAUDE") then
    return "sk-ant-api03-" .. random_string(93, B64URL) .. "AA"
  elseif name:find("OPENAI") then
    return "sk-proj-" .. random_string(48, ALNUM)
  elseif name:find("GITHUB") or name:find("GH_") then
    return "ghp_" .. random_string(36, ALNUM)
  elseif name:find("GEMINI") or name:find("GOOGLE") then
    return "AIza" .. random_string(35, B64URL)
  end
  return "foundry-placeholder-" .. random_string(32, ALNUM)
end

--- Placeholders for every secret a policy uses: {NAME = placeholder}.
function M.placeholders(p)
  local out = {}
  for _, name in ipairs(policy.resolve(p):secret_names()) do out[name] = M.placeholder(name) end
  return out
end

--- The engine's decision code, for explain and benchmarks.
M.decide = native.decide
M.bench_decide = native.bench_decide
M.canonical_host = native.canonical_host

return M
