--- Sandboxes: a git workspace + a locked-down container + a proxy registration + a row
--- in the state database. The API scripts and presets drive, and the CLI is built on.
---
---   local sandbox = require "foundry.sandbox"
---   local sb = sandbox.create{ repo = ".", preset = "claude", branch = "fix-123" }
---   print(sb:exec{ "git", "status", "--short" }.stdout)
---   sb:destroy()
---
--- Creation runs the stages of foundry.stages (provision, system, auth, agent-config,
--- workspace, deps, mcp, customize, health, ready); a failure, or Ctrl-C with
--- `signals=true`, undoes what was done and leaves nothing behind.
local uv = require "luv"
local errors = require "foundry.errors"
local json = require "foundry.json"
local paths = require "foundry.paths"
local util = require "foundry.util"

local M = {}

--- Where the sandbox's user lives inside the container (a tmpfs).
M.HOME = "/home/agent"
M.UID = 1000
M.WORKSPACE = "/workspace"
--- The per-sandbox run directory inside the container (proxy socket, hook token).
M.RUN_DIR = "/run/foundry"
M.SHIM_PATH = "/usr/local/bin/foundry-shim"
M.DEFAULTS = { network = "allowlist", cpus = 2, memory = "4g", pids = 1024 }

--- The default image: $FOUNDRY_IMAGE, else the one `foundry image build` makes.
function M.default_image()
  local env = os.getenv("FOUNDRY_IMAGE")
  if env and env ~= "" then return env end
  return "foundry/sandbox:latest"
end

local function state() return require "foundry.state" end
local remove_containers -- below, with destroy
local function docker() return require "foundry.docker" end

-- ------------------------------------------------------------------ names

--- True when `name` can name a sandbox (and its branch and container).
function M.valid_name(name)
  return type(name) == "string" and #name <= 63 and name:match("^[%w][%w_.-]*$") ~= nil
    and not name:match("%.%.") and not name:match("%.lock$") and not name:match("%.$")
end

local function check_name(name)
  if not M.valid_name(name) then
    errors.raise("usage", "'" .. tostring(name) .. "' is not a valid sandbox name",
      "use up to 63 letters, digits, '.', '_' and '-', starting with a letter or digit")
  end
end

-- A name from the repository: its directory name, lower-cased, safe characters only.
local function base_name(repo)
  local b = tostring(repo or "sandbox"):gsub("%.git/?$", ""):gsub("/+$", ""):match("([^/:]+)$") or "sandbox"
  b = b:lower():gsub("[^%w_.-]+", "-"):gsub("^[^%w]+", ""):gsub("%.+", "."):gsub("[-.]+$", "")
  if b == "" then b = "sandbox" end
  return b:sub(1, 40)
end

-- A short tag for this Foundry home, so two homes (tests, users) never share names.
local function home_tag()
  local fh = os.getenv("FOUNDRY_HOME")
  if not fh or fh == "" then return nil end
  return require("foundry.crypto").sha256_hex(paths.state()):sub(1, 8)
end

--- The labels on everything Foundry makes for sandbox `name`.
function M.labels(name)
  return {
    ["dev.foundry.managed"] = "true",
    ["dev.foundry.sandbox"] = name,
    ["dev.foundry.home"] = paths.state(),
    ["dev.foundry.version"] = require("foundry").version,
  }
end

--- The engine's name for the container of sandbox `name`.
function M.container_name(name)
  local tag = home_tag()
  return tag and ("foundry-" .. tag .. "-" .. name) or ("foundry-" .. name)
end

-- ------------------------------------------------------------------ mounts

local DANGEROUS_HOME = { ".ssh", ".aws", ".config/gh", ".gnupg", ".docker", ".kube", ".netrc",
                         ".npmrc", ".pypirc", ".config/gcloud", ".azure" }

-- Remove "." and "..", double slashes; absolute paths only.
local function normalize(path)
  local parts = {}
  for p in path:gmatch("[^/]+") do
    if p == ".." then parts[#parts] = nil elseif p ~= "." then parts[#parts + 1] = p end
  end
  return "/" .. table.concat(parts, "/")
end

local function real(path)
  local r = uv.fs_realpath(path)
  return r
end

-- Every spelling of a path worth comparing: as written (normalized) and with symlinks
-- resolved (itself, or its nearest existing parent plus the rest).
local function spellings(path)
  local out, seen = {}, {}
  local function add(p) if p and not seen[p] then seen[p] = true; out[#out + 1] = p end end
  local n = normalize(path)
  add(n)
  local rest, cur = "", n
  while cur ~= "" do
    local r = real(cur == "" and "/" or cur)
    if r then add(normalize(r .. rest)); break end
    local parent, last = cur:match("^(.*)/([^/]*)$")
    rest = "/" .. last .. rest
    cur = parent
  end
  return out
end

--- The host paths no sandbox may see: credentials, the engine's socket, Foundry's own
--- secrets. `{path=, why=}`.
function M.dangerous_paths()
  local home = os.getenv("HOME") or "/root"
  local list = {}
  for _, p in ipairs(DANGEROUS_HOME) do list[#list + 1] = { path = home .. "/" .. p, why = "~/" .. p .. " holds credentials" } end
  for _, s in ipairs({ "/var/run/docker.sock", "/run/docker.sock", "/var/lib/docker", "/run/containerd" }) do
    list[#list + 1] = { path = s, why = s .. " controls the container engine" }
  end
  local dh = os.getenv("DOCKER_HOST")
  if dh and dh:match("^unix://") then list[#list + 1] = { path = dh:sub(8), why = "DOCKER_HOST is the container engine" } end
  list[#list + 1] = { path = paths.data(), why = "Foundry's data (the vault, the CA key) lives there" }
  list[#list + 1] = { path = paths.state(), why = "Foundry's state database lives there" }
  list[#list + 1] = { path = paths.config(), why = "Foundry's configuration lives there" }
  list[#list + 1] = { path = paths.runtime(), why = "Foundry's control socket lives there" }
  return list
end

local function inside(a, b) -- a is b or under b
  return a == b or b == "/" or a:sub(1, #b + 1) == b .. "/"
end

--- Raise `mount.denied` when host path `source` is, is inside, or contains a dangerous
--- path (symlinks and ".." resolved).
function M.check_mount(source, what)
  for _, d in ipairs(M.dangerous_paths()) do
    for _, s in ipairs(spellings(source)) do
      for _, dp in ipairs(spellings(d.path)) do
        if inside(s, dp) or inside(dp, s) then
          errors.raise("mount.denied", string.format("refusing to %s %s: %s%s", what or "mount", source, d.why,
            s ~= dp and not inside(s, dp) and (" (" .. source .. " contains " .. dp .. ")") or ""),
            "pass --allow-dangerous-mount if you really mean to expose it to the sandbox")
        end
      end
    end
  end
end

-- ------------------------------------------------------------------ the spec

local PRESET_KEYS = {}
for _, k in ipairs(require("foundry.preset").KEYS) do PRESET_KEYS[k] = true end
local EXTRA_KEYS = { name = true, preset = true, allow_dangerous_mount = true, carry_changes = true }

local function plain_copy(v)
  if type(v) == "function" then return nil end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = plain_copy(x) end
  return out
end

local function as_list(v)
  if v == nil then return {} end
  if type(v) ~= "table" then return { v } end
  return v
end

--- Merge a preset (name, path or table) and explicit options into the full spec of a
--- sandbox, validated. Explicit options win; maps (env, ...) merge; lists append.
function M.resolve(spec)
  if type(spec) ~= "table" then error("sandbox.create: expected a table, got " .. type(spec), 3) end
  local preset = require "foundry.preset"
  local own = {}
  for k, v in pairs(spec) do
    if not PRESET_KEYS[k] and not EXTRA_KEYS[k] then
      local names = util.keys(PRESET_KEYS)
      for n in pairs(EXTRA_KEYS) do names[#names + 1] = n end
      local near = util.did_you_mean(tostring(k), names)
      error("sandbox.create: unknown option '" .. tostring(k) .. "'" .. (near and (" — did you mean '" .. near .. "'?") or ""), 3)
    end
    if PRESET_KEYS[k] then own[k] = v end
  end
  preset.validate(own, { file = "sandbox.create" })
  local base, info = {}, nil
  if type(spec.preset) == "string" then
    base, info = preset.load(spec.preset)
  elseif type(spec.preset) == "table" then
    base = spec.preset
    info = { name = spec.preset.name or "(table)" }
  elseif spec.preset ~= nil then
    error("sandbox.create: preset: expected a name, a path or a table, got " .. type(spec.preset), 3)
  end
  local merged = preset.merge(base, own)
  for k, v in pairs(merged.env or {}) do if v == false then merged.env[k] = nil end end
  local r = util.copy(merged)
  r.name = spec.name
  r.preset_name = info and info.name or nil
  r.allow_dangerous_mount = spec.allow_dangerous_mount and true or false
  r.carry_changes = spec.carry_changes and true or false
  for k, v in pairs(M.DEFAULTS) do if r[k] == nil then r[k] = v end end
  r.image = r.image or M.default_image()
  r.mounts, r.copy = {}, {}
  for _, m in ipairs(as_list(merged.mounts)) do r.mounts[#r.mounts + 1] = preset.parse_mount(m) end
  for _, m in ipairs(as_list(merged.copy)) do r.copy[#r.copy + 1] = preset.parse_mount(m, true) end
  r.deps, r.setup, r.health = as_list(merged.deps), as_list(merged.setup), as_list(merged.health)
  local agent = merged.agent
  if type(agent) == "string" then agent = { name = agent, command = { agent } } end
  agent = util.copy(agent or { name = "bash", command = { "bash", "-l" } })
  if type(agent.command) == "string" then agent.command = { agent.command } end
  agent.command = agent.command or { agent.name or "bash" }
  agent.name = agent.name or agent.command[1]
  r.agent = agent
  if r.tmux == nil then r.tmux = true end
  if r.name ~= nil then check_name(r.name) end
  if type(r.policy) == "string" then
    -- the daemon loads it later, from another directory: a path is kept absolute, and a
    -- policy that does not load stops the creation here, before anything exists
    local ref = r.policy
    if util.is_path(ref) then ref = require("foundry.fs").absolute(ref) end
    r.policy = ref
    require("foundry.policy").load(ref):close()
  end
  return r
end

-- The part of a spec that can be stored (and shown): no functions.
local function storable(spec)
  local out = plain_copy(spec)
  out.stages = spec.stages and { custom = true } or nil
  return out
end

-- ------------------------------------------------------------------ the object

---@class foundry.Sandbox
---@field name string
---@field state string
---@field branch string|nil
---@field image string
---@field network string
---@field workspace string|nil host path of the work tree
---@field repo string|nil
---@field created_at integer milliseconds since the epoch
local Sandbox = {}
Sandbox.__index = Sandbox
Sandbox.__name = "foundry.Sandbox"
M.Sandbox = Sandbox

function Sandbox:__tostring() return "sandbox " .. self.name end

local function from_row(row)
  local sb = setmetatable({}, Sandbox)
  sb:_load(row)
  return sb
end

function Sandbox:_load(row)
  self.row = row
  self.name = row.name
  self.state = row.state
  self.repo = row.repo
  self.branch = row.branch
  self.base = row.base
  self.image = row.image
  self.network = row.network
  self.preset = row.preset
  self.workspace = row.workspace
  self.container_id = row.container_id
  self.created_at = row.created_at
  self.spec = row.spec or {}
  self.data = row.data or {}
end

--- Re-read the sandbox from the state database.
function Sandbox:refresh()
  local row = state().sandboxes.get(self.name)
  if not row then errors.raise("sandbox.not_found", "sandbox '" .. self.name .. "' no longer exists") end
  self:_load(row)
  return self
end

-- Record fields in the state row (and on the object).
function Sandbox:_update(fields)
  local row = state().sandboxes.update(self.name, fields)
  self:_load(row)
end

function Sandbox:_set_data(k, v)
  local d = util.copy(self.data or {})
  d[k] = v
  self:_update({ data = d })
end

--- The container object (foundry.docker.Container), or nil when none was made yet.
function Sandbox:container()
  if not self.container_id then return nil end
  return docker().container(self.container_id)
end

-- The container, or raise.
local function need_container(sb)
  local c = sb:container()
  if not c then errors.raise("sandbox.no_container", "sandbox '" .. sb.name .. "' has no container", "foundry rm " .. sb.name) end
  return c
end

--- The environment of processes in the sandbox (container env, plus the agent's).
function Sandbox:env()
  return self.data.env or {}
end

-- The directory sessions start in.
function Sandbox:cwd()
  local wd = self.spec.workdir
  return wd and (M.WORKSPACE .. "/" .. wd) or M.WORKSPACE
end

--- Run a command in the sandbox as its user and wait: `{argv..., stdin=, env=, workdir=,
--- timeout=, check=, tty=, on_stdout=, on_stderr=}` (a string is run by `sh -c`).
--- Returns `{status=, stdout=, stderr=, ok=}`.
function Sandbox:exec(spec)
  if type(spec) == "string" then spec = { "sh", "-c", spec } end
  if type(spec) ~= "table" then error("sandbox:exec: expected {argv...} or a string, got " .. type(spec), 2) end
  local c = need_container(self)
  local s = util.copy(spec)
  s.user = tostring(M.UID) .. ":" .. tostring(M.UID)
  s.workdir = s.workdir or self:cwd()
  local env = util.copy(self:env())
  for k, v in pairs(spec.env or {}) do env[k] = v end
  s.env = env
  local ok, r = pcall(c.exec, c, s)
  if ok then return r end
  if errors.is(r, "docker.conflict") or errors.is(r, "docker.not_found") then
    local live = self:live_state()
    if live ~= "running" then
      errors.raise(live == "missing" and "sandbox.missing" or "sandbox.stopped",
        "sandbox '" .. self.name .. "' is " .. (live == "missing" and "missing its container" or "stopped"),
        live == "missing" and ("remove it: foundry rm " .. self.name .. " (or foundry prune)") or ("start it: foundry start " .. self.name))
    end
  end
  error(r, 0)
end

--- Run a shell script (bash -l when the image has bash) in the workspace; raises
--- `sandbox.command_failed` on a non-zero status.
function Sandbox:sh(script, opts)
  opts = opts or {}
  local r = self:exec{ "sh", "-c", script, stdin = opts.stdin, workdir = opts.workdir, env = opts.env,
                       on_stdout = opts.on_stdout, on_stderr = opts.on_stderr, timeout = opts.timeout }
  if not r.ok and opts.check ~= false then
    local last = (r.stderr or ""):match("([^\n]+)\n?$") or (r.stdout or ""):match("([^\n]+)\n?$") or ""
    errors.raise("sandbox.command_failed", string.format("%s exited with status %d%s",
      opts.what or "command", r.status, last ~= "" and (": " .. last) or ""), nil, { result = r })
  end
  return r
end

--- Write files into the sandbox: `{ [path] = content }` where path starts with "~/" (the
--- home directory) or "/" (a writable place: the workspace, /tmp). One exec for all;
--- `then_script` (sh) runs in the same exec afterwards. Returns the exec's result.
function Sandbox:write_files(files, then_script)
  local entries, dirs = {}, {}
  for _, path in ipairs(util.keys(files)) do
    local content = files[path]
    if content ~= false and content ~= nil then
      local abs = path:gsub("^~/", M.HOME .. "/")
      if not abs:match("^/") then error("sandbox:write_files: '" .. path .. "' must start with ~/ or /", 2) end
      local rel = abs:sub(2)
      local d = rel:match("^(.*)/[^/]+$")
      local parts = {}
      while d and d ~= "" do
        if not dirs[d] then parts[#parts + 1] = d; dirs[d] = true end
        d = d:match("^(.*)/[^/]+$")
      end
      for i = #parts, 1, -1 do
        if not parts[i]:match("^home/?$") then
          entries[#entries + 1] = { name = parts[i] .. "/", type = "dir", mode = tonumber("755", 8), uid = M.UID, gid = M.UID }
        end
      end
      entries[#entries + 1] = { name = rel, data = tostring(content), mode = tonumber("644", 8), uid = M.UID, gid = M.UID }
    end
  end
  if #entries == 0 then
    if then_script then return self:sh(then_script, { what = "setup" }) end
    return
  end
  -- keep existing directories' modes: create missing ones only
  local tar = docker().tar(entries)
  return self:sh("tar -x --no-overwrite-dir -f - -C / && cd " .. util.shell_quote(self:cwd()) .. " 2>/dev/null; " ..
    (then_script or ":"), { stdin = tar, workdir = "/", what = "writing files" })
end

--- Stop the container (sessions end; the workspace stays). Idempotent.
function Sandbox:stop(opts)
  local c = need_container(self)
  c:stop({ t = opts and opts.t or 5 })
  self:_update({ state = "stopped" })
  return self
end

--- Start a stopped sandbox again: the container, then its home directory (a fresh
--- tmpfs) is set up again by the system, agent-config and mcp stages. Idempotent.
function Sandbox:start()
  local c = need_container(self)
  local was = self:live_state()
  c:start()
  if was ~= "running" then
    local stages = require "foundry.stages"
    local ctx = { spec = self.spec, skip = stages.skip, note = function() end, shield = function(f) return f() end }
    for _, st in ipairs(stages.default()) do
      if st.name == "system" or st.name == "agent-config" or st.name == "mcp" then st.run(self, ctx) end
    end
  end
  self:_update({ state = "running" })
  pcall(M.register, self)
  return self
end

--- The container's state from the engine: "running", "exited", "missing", ...
function Sandbox:live_state()
  local c = self:container()
  if not c then return "missing" end
  local ok, info = pcall(c.inspect, c)
  if not ok then
    if errors.is(info, "docker.not_found") then return "missing" end
    error(info, 0)
  end
  return info.State and info.State.Status or "unknown"
end

--- A plain table describing the sandbox (what `--json` prints).
function Sandbox:info(live)
  local st = self.state
  if live ~= nil then
    if live == "missing" and st ~= "creating" then st = "missing"
    elseif live == "exited" or live == "created" then st = st == "creating" and st or "stopped"
    elseif live == "running" and st == "stopped" then st = "running" end
  end
  return {
    name = self.name,
    state = st,
    branch = self.branch,
    base = self.base,
    image = self.image,
    network = self.network,
    workspace = self.workspace,
    repo = self.repo,
    preset = self.preset,
    agent = self.spec.agent and self.spec.agent.name or nil,
    container = self.container_id and self.container_id:sub(1, 12) or nil,
    created_at = os.date("!%Y-%m-%dT%H:%M:%SZ", (self.created_at or 0) // 1000),
  }
end

-- ------------------------------------------------------------------ git workspace

--- The workspace implementation: foundry.git's workspaces (libgit2, branch isolation by
--- construction).
function M.workspaces()
  return require("foundry.git").workspace
end

-- The workspace of this sandbox (reopened from what provision recorded).
function Sandbox:git_workspace()
  if self._ws then return self._ws end
  local rec = self.data.ws
  if not rec then errors.raise("sandbox.no_workspace", "sandbox '" .. self.name .. "' has no workspace") end
  self._ws = M.workspaces().open(rec)
  return self._ws
end

--- Bring the sandbox's commits into the user's repository as its branch. Returns what
--- the git module reports ({branch=, commits=, ...}).
function Sandbox:sync(opts)
  local ws = self:git_workspace()
  return ws:sync(opts)
end

--- The sandbox's changes against where it started (`opts.stat`: a summary).
function Sandbox:diff(opts)
  local ws = self:git_workspace()
  return ws:diff(opts)
end

-- ------------------------------------------------------------------ daemon

local function daemon_client()
  local ok, client = pcall(require, "foundry.daemon_client")
  if ok and type(client) == "table" then return client end
  return nil
end

--- Tell the daemon about the sandbox (its proxy socket, hooks). Returns true when done,
--- false and why when there is no daemon to tell.
function M.register(sb)
  -- network none registers too: its policy (mode none) refuses every host, and the socket
  -- carries the agent's hook events (auto-commit); no bridge or proxy variables point at it
  local client = daemon_client()
  if not client then return false, "the daemon is not available in this build" end
  if client.ensure then client.ensure() end
  client.call("register", { sandbox = sb.name })
  return true
end

function M.unregister(name)
  local client = daemon_client()
  if not client then return false end
  local ok = pcall(function()
    if client.running and not client.running() then return end
    client.call("unregister", { sandbox = name })
  end)
  return ok
end

-- ------------------------------------------------------------------ provisioning

--- The foundry-shim binary bind-mounted into containers: $FOUNDRY_SHIM, or next to the
--- foundry binary, or in ../libexec/foundry/.
function M.shim_path()
  local env = os.getenv("FOUNDRY_SHIM")
  local exe = uv.exepath() or ""
  local dir = exe:match("^(.*)/[^/]*$") or "."
  local tried, list = {}, {}
  if env and env ~= "" then list[1] = env end
  list[#list + 1] = dir .. "/foundry-shim"
  list[#list + 1] = dir .. "/../libexec/foundry/foundry-shim"
  for _, p in ipairs(list) do
    tried[#tried + 1] = p
    local st = uv.fs_stat(p)
    if st and st.type == "file" then return (uv.fs_realpath(p)) end
  end
  errors.raise("sandbox.no_shim", "foundry-shim not found (looked at " .. table.concat(tried, ", ") .. ")",
    "build it with 'make', or set FOUNDRY_SHIM to its path")
end

--- Environment variables the proxy's gateways need per provider (the values inside
--- the sandbox are placeholders; the proxy holds the real keys).
-- Providers a preset names (agent.providers, credentials keys) and what the sandbox gets
-- for each: the gateway's base URL on the proxy, and the variable holding the key, which
-- inside the sandbox is only a per-sandbox placeholder. `slot` is the secret's name in
-- the network policy (policy.lua's gateways and policies/default.lua).
M.GATEWAYS = {
  anthropic = { slot = "ANTHROPIC_API_KEY", key_env = { "ANTHROPIC_API_KEY" },
                env = { ANTHROPIC_BASE_URL = "/_gw/anthropic" } },
  openai = { slot = "OPENAI_API_KEY", key_env = { "OPENAI_API_KEY" }, env = { OPENAI_BASE_URL = "/_gw/openai/v1" } },
  gemini = { slot = "GEMINI_API_KEY", key_env = { "GEMINI_API_KEY" },
             env = { GOOGLE_GEMINI_BASE_URL = "/_gw/gemini", GEMINI_API_BASE_URL = "/_gw/gemini" } },
  github = { slot = "GITHUB_TOKEN", key_env = { "GH_TOKEN", "GITHUB_TOKEN" }, env = {} },
}
M.GATEWAYS.google = M.GATEWAYS.gemini
M.PROXY = "http://127.0.0.1:3128"

-- Where the CA files are inside the sandbox (in the per-sandbox run directory).
M.CA_CERT = M.RUN_DIR .. "/ca.crt"
M.CA_BUNDLE = M.RUN_DIR .. "/ca-bundle.crt"
local CA_ENV = { "SSL_CERT_FILE", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT",
                 "CARGO_HTTP_CAINFO", "AWS_CA_BUNDLE" }

--- The secrets a sandbox needs, with a fresh random placeholder for each:
--- `placeholders` {SLOT = placeholder} (what the proxy swaps), `refs` {SLOT = "vault:NAME"}
--- (where the daemon reads the real value). A credentials key that is not a known
--- provider is taken as the slot itself (a user-defined service in the policy).
function M.secret_slots(r)
  local placeholders, refs = {}, {}
  local providers = {}
  for _, p in ipairs(r.providers or {}) do providers[p] = true end
  for _, p in ipairs(r.agent and r.agent.providers or {}) do providers[p] = true end
  for p in pairs(r.credentials or {}) do providers[p] = true end
  local proxy = require "foundry.proxy"
  for p in pairs(providers) do
    local g = M.GATEWAYS[p]
    local slot = g and g.slot or p
    placeholders[slot] = placeholders[slot] or proxy.placeholder(slot)
    local ref = r.credentials and r.credentials[p]
    if type(ref) == "string" then refs[slot] = ref end
  end
  return placeholders, refs
end

--- The container's environment for spec `r` (`r.placeholders` from secret_slots).
function M.container_env(name, r)
  local env = { HOME = M.HOME, USER = "agent", LANG = "C.UTF-8", FOUNDRY_SANDBOX = name }
  if r.network ~= "none" then
    env.FOUNDRY_PROXY_SOCKET = M.RUN_DIR .. "/proxy.sock"
    for _, k in ipairs({ "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy" }) do env[k] = M.PROXY end
    env.NO_PROXY, env.no_proxy = "localhost,127.0.0.1,::1", "localhost,127.0.0.1,::1"
    if r.ca then
      for _, k in ipairs(CA_ENV) do env[k] = M.CA_BUNDLE end
      env.NODE_EXTRA_CA_CERTS = M.CA_CERT
    end
    local placeholders = r.placeholders or {}
    for p, g in pairs(M.GATEWAYS) do
      if placeholders[g.slot] and p ~= "google" then
        for k, v in pairs(g.env) do env[k] = M.PROXY .. v end
        for _, k in ipairs(g.key_env) do env[k] = placeholders[g.slot] end
      end
    end
    for slot, value in pairs(placeholders) do
      if env[slot] == nil and slot:match("^[%u_][%u%d_]*$") then env[slot] = value end
    end
  end
  for k, v in pairs(r.env or {}) do env[k] = tostring(v) end
  for k, v in pairs(r.agent and r.agent.env or {}) do env[k] = tostring(v) end
  return env
end

--- Write Foundry's CA certificate and a bundle (the host's trusted CAs plus Foundry's) into
--- the sandbox's run directory. The daemon owns the CA (it makes it once, per user); the
--- CA key never leaves the host. Returns false and why when there is no daemon to ask.
function M.install_ca(sb)
  local client = daemon_client()
  if not client then return false, "the daemon is not available in this build" end
  local ok, res = pcall(function()
    if client.ensure then client.ensure() end
    return client.call("ca", {})
  end)
  if not ok or type(res) ~= "table" or type(res.cert) ~= "string" then
    return false, "no CA from the daemon: " .. errors.message(res)
  end
  local fs = require "foundry.fs"
  local cert = fs.read(res.cert)
  local run = paths.sandbox_run(sb.name)
  local system = ""
  for _, f in ipairs({ "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt" }) do
    local s = fs.sync.read(f)
    if s then system = s break end
  end
  fs.write(run .. "/ca.crt", cert, { mode = tonumber("444", 8), fsync = false })
  fs.write(run .. "/ca-bundle.crt", system .. (system:sub(-1) == "\n" and "" or "\n") .. cert,
    { mode = tonumber("444", 8), fsync = false })
  return true
end

local function tmpfs_opts(size, extra)
  return "rw,exec,nosuid,nodev,size=" .. size .. (extra or "")
end

--- The docker.create spec of sandbox `sb` (resolved spec `r`, workspace mounts `wsm`).
function M.container_spec(sb, r, wsm)
  local mounts = {}
  for _, m in ipairs(wsm or {}) do mounts[#mounts + 1] = { type = "bind", source = m.source, target = m.target, read_only = m.read_only } end
  mounts[#mounts + 1] = { type = "bind", source = M.shim_path(), target = M.SHIM_PATH, read_only = true }
  mounts[#mounts + 1] = { type = "bind", source = paths.sandbox_run(sb.name), target = M.RUN_DIR, read_only = true }
  for _, m in ipairs(r.mounts or {}) do mounts[#mounts + 1] = { type = "bind", source = m.source, target = m.target, read_only = m.read_only } end
  return {
    name = M.container_name(sb.name),
    hostname = sb.name:gsub("[^%w-]", "-"):sub(1, 63),
    image = r.image,
    entrypoint = { M.SHIM_PATH, "init" },
    user = M.UID .. ":" .. M.UID,
    env = M.container_env(sb.name, r),
    workdir = M.WORKSPACE,
    labels = M.labels(sb.name),
    read_only = true,
    network = "none",
    mounts = mounts,
    tmpfs = {
      ["/tmp"] = tmpfs_opts("1g", ",mode=1777"),
      [M.HOME] = tmpfs_opts("2g", ",uid=" .. M.UID .. ",gid=" .. M.UID .. ",mode=0755"),
    },
    cap_drop = { "ALL" },
    security_opt = { "no-new-privileges:true" },
    memory = r.memory,
    cpus = r.cpus,
    pids_limit = r.pids,
    stop_timeout = 5,
  }
end

--- Stage `provision`: the run directory, the workspace, the container (started).
function M.stage_provision(sb, ctx)
  local r = ctx.spec
  local fs = require "foundry.fs"
  local d = docker()
  local shim = M.shim_path()
  if not d.image_exists(r.image) then
    errors.raise("image.not_found", "image " .. r.image .. " is not on this engine",
      r.image == M.default_image() and "build it: foundry image build (or pass --image IMAGE)" or "pull or build it, or pass --image IMAGE")
  end
  local run = paths.sandbox_run(sb.name)
  paths.ensure(paths.runtime() .. "/sb")
  fs.mkdir(run, tonumber("755", 8))
  fs.chmod(run, tonumber("755", 8))
  fs.write(run .. "/hook-token", sb.row.hook_token .. "\n", { mode = tonumber("444", 8), fsync = false })
  local impl = M.workspaces()
  ctx.shield(function()
    -- a branch named on purpose (-b, branch=) is continued when it exists; the default
    -- sandbox/NAME is not (an earlier sandbox's kept commits: the error says how)
    local ws = impl.create{ source = sb.repo, name = sb.name, branch = r.branch, from = r.from, subdir = r.workdir,
                            carry_changes = r.carry_changes or nil, continue = r.branch ~= nil or nil,
                            owner = uv.getuid() == 0 and { uid = M.UID, gid = M.UID } or nil }
    sb._ws = ws
    local wsd = util.copy(sb.data)
    wsd.ws = ws:record()
    sb:_update({ data = wsd })
  end)
  local ws = sb._ws
  local data = util.copy(sb.data)
  if r.network ~= "none" then
    r.placeholders, r.secret_refs = M.secret_slots(r)
    data.placeholders, data.secret_refs = r.placeholders, r.secret_refs
    local ok, why = M.install_ca(sb)
    r.ca = ok
    if not ok then ctx.note("no TLS inspection CA in the sandbox: " .. tostring(why)) end
  end
  data.env = M.container_env(sb.name, r)
  data.shim = shim
  sb:_update({ workspace = ws.tree, branch = ws.branch, base = ws.base, data = data })
  local spec = M.container_spec(sb, r, ws.mounts)
  ctx.shield(function()
    local c = d.create(spec)
    sb:_update({ container_id = c.id })
    c:start()
  end)
end

--- Undo of `provision`: the container (by id and by label), the workspace, the run
--- directory.
function M.undo_provision(sb)
  remove_containers(sb.name, sb.container_id)
  local ws = sb._ws
  if not ws and sb.data.ws then
    local ok, w = pcall(sb.git_workspace, sb)
    if ok then ws = w end
  end
  if ws then ws:destroy({}) end
  require("foundry.fs").rm(paths.sandbox_run(sb.name))
end

--- Copy host path `source` (a file or a directory's contents) to `target` in the sandbox.
function M.copy_in(sb, source, target)
  local st = uv.fs_stat(source)
  if not st then errors.raise("mount.not_found", "cannot copy " .. source .. ": no such file or directory") end
  local exec = require("foundry.exec").exec
  local tar
  if st.type == "directory" then
    tar = exec{ "tar", "-C", source, "-cf", "-", ".", check = true }.stdout
  else
    local data = require("foundry.fs").read(source)
    local tdir = target:match("^(.*)/[^/]+$")
    local q = util.shell_quote
    sb:sh(string.format("mkdir -p %s && cat > %s && chmod %o %s", q(tdir ~= "" and tdir or "/"), q(target),
      st.mode & tonumber("777", 8), q(target)), { stdin = data, workdir = "/", what = "copy " .. source })
    return
  end
  sb:sh("mkdir -p " .. util.shell_quote(target) .. " && tar -x --no-same-owner -f - -C " .. util.shell_quote(target),
    { stdin = tar, workdir = "/", what = "copy " .. source })
end

-- ------------------------------------------------------------------ create

--- Create a sandbox and run its setup stages. `spec`: any preset key (repo, branch,
--- from, image, network, mounts, copy, env, cpus, memory, pids, workdir, agent, ...),
--- plus `name`, `preset` (a name, path or table) and `allow_dangerous_mount`. `opts`:
--- `progress` ("auto", "tty", "plain", "json", "none" (default), or a reporter),
--- `signals` (true: Ctrl-C rolls back), `on_event(ev)`.
---@return foundry.Sandbox
function M.create(spec, opts)
  opts = opts or {}
  local r = M.resolve(spec)
  if not r.allow_dangerous_mount then
    for _, m in ipairs(r.mounts) do M.check_mount(m.source, "mount") end
    for _, m in ipairs(r.copy) do M.check_mount(m.source, "copy") end
  end
  for _, m in ipairs(r.mounts) do
    if not uv.fs_stat(m.source) then
      errors.raise("mount.not_found", "cannot mount " .. m.source .. ": no such file or directory")
    end
    if m.target == M.WORKSPACE or m.target == M.RUN_DIR or m.target == M.SHIM_PATH or m.target == M.HOME then
      errors.raise("usage", "cannot mount over " .. m.target .. ": Foundry uses it")
    end
  end
  for _, m in ipairs(r.copy) do
    if not uv.fs_stat(m.source) then errors.raise("mount.not_found", "cannot copy " .. m.source .. ": no such file or directory") end
  end
  r.repo = M.find_repo(r.repo)
  local st = state()
  local row = st.sandboxes.insert({
    name = r.name or base_name(r.repo),
    state = "creating",
    repo = r.repo,
    image = r.image,
    network = r.network,
    preset = r.preset_name,
    hook_token = require("foundry.crypto").token(32),
    spec = storable(r),
  }, { unique = r.name == nil })
  local sb = from_row(row)
  sb.resolved = r
  local stages = require "foundry.stages"
  local list = stages.compose(stages.default(), r.stages)
  local reporter = stages.reporter(opts.progress or "none", { label = opts.label, out = opts.out })
  local ok, err = pcall(stages.run, list, sb, { spec = r, opts = opts }, {
    reporter = reporter,
    signals = opts.signals,
    on_event = function(ev)
      pcall(st.events.add, { sandbox = sb.name, kind = "stage", data = ev })
      if opts.on_event then opts.on_event(ev) end
    end,
  })
  if not ok then
    -- the stages undid their work; the row goes too (history keeps the command)
    pcall(st.sandboxes.delete, sb.name)
    error(err, 0)
  end
  return sb:refresh()
end

--- The repository a sandbox is made from: a URL as given, a path made absolute, or the
--- repository around the current directory.
function M.find_repo(repo)
  if repo and (repo:match("^%a[%w+.-]*://") or repo:match("^[%w._-]+@[%w._-]+:")) then return repo end
  local dir = repo and (repo:match("^/") and repo or (uv.cwd() .. "/" .. repo)) or uv.cwd()
  dir = dir:gsub("^~/", (os.getenv("HOME") or "/root") .. "/")
  if not uv.fs_stat(dir) then errors.raise("repo.not_found", "no such directory: " .. dir) end
  local r = require("foundry.exec").exec{ "git", "-C", dir, "rev-parse", "--show-toplevel" }
  if not r.ok then
    local bare = require("foundry.exec").exec{ "git", "-C", dir, "rev-parse", "--is-bare-repository" }
    if bare.ok and util.trim(bare.stdout) == "true" then return (uv.fs_realpath(dir)) end
    errors.raise("repo.not_found", dir .. " is not in a git repository",
      repo and nil or "run foundry new inside a repository, or name one: foundry new PATH|URL")
  end
  return util.trim(r.stdout)
end

-- ------------------------------------------------------------------ lookups

--- The sandbox named `name`; raises `sandbox.not_found`.
---@return foundry.Sandbox
function M.get(name)
  if type(name) ~= "string" then error("sandbox.get: name: expected string, got " .. type(name), 2) end
  local row = state().sandboxes.get(name)
  if not row then
    local names = {}
    for _, r in ipairs(state().sandboxes.list()) do names[#names + 1] = r.name end
    local near = util.did_you_mean(name, names)
    errors.raise("sandbox.not_found", "no sandbox named '" .. name .. "'" .. (near and (" — did you mean '" .. near .. "'?") or ""),
      "'foundry ls' lists the sandboxes")
  end
  return from_row(row)
end

--- The most recently created sandbox; raises `sandbox.not_found` when there is none.
function M.last()
  local rows = state().sandboxes.list()
  if #rows == 0 then errors.raise("sandbox.not_found", "there are no sandboxes", "create one: foundry new") end
  return from_row(rows[#rows])
end

--- Every sandbox, oldest first. `opts.live`: ask the engine for each container's state
--- (one call for all) and put it in `sb.live`.
---@return foundry.Sandbox[]
function M.list(opts)
  opts = opts or {}
  -- ask the engine first: it answers while the database is read
  local engine
  if opts.live then
    engine = require("foundry._task").spawn(function()
      return docker().containers({ labels = { ["dev.foundry.home"] = paths.state() } })
    end)
  end
  local out = {}
  for _, row in ipairs(state().sandboxes.list()) do out[#out + 1] = from_row(row) end
  if engine then
    local by_id = {}
    local ok, cs = pcall(engine.join, engine)
    if ok then
      for _, c in ipairs(cs) do by_id[c.id] = c.state end
      for _, sb in ipairs(out) do sb.live = sb.container_id and by_id[sb.container_id] or "missing" end
    else
      for _, sb in ipairs(out) do sb.live = nil end
    end
  end
  return out
end

-- ------------------------------------------------------------------ destroy

local function pid_alive(pid)
  if not pid or pid <= 0 then return false end
  local ok = uv.kill(pid, 0)
  return ok == 0 or ok == true
end

-- Remove whatever the engine holds for `name` (by id and by label).
function remove_containers(name, id)
  local d = docker()
  if id then
    local ok, err = pcall(function() d.container(id):remove({ force = true, volumes = true, missing_ok = true }) end)
    if not ok and not errors.is(err, "docker.not_found") then error(err, 0) end
  end
  local cs = d.containers({ labels = { ["dev.foundry.sandbox"] = name, ["dev.foundry.home"] = paths.state() } })
  for _, c in ipairs(cs) do
    d.container(c.id):remove({ force = true, volumes = true, missing_ok = true })
  end
end
M._remove_containers = remove_containers

--- Destroy the sandbox: sync its commits into the user's repository (unless
--- `opts.discard`), then remove the container, the workspace, the run directory and the
--- row (history stays). `opts.keep_branch`: leave the branch even without new commits.
--- Returns {name=, synced=...}.
function Sandbox:destroy(opts)
  opts = opts or {}
  local result = { name = self.name, removed = true }
  local st = state()
  -- the sandbox's commits first: nothing is removed when they cannot be kept
  local ws
  if self.data.ws then
    local ok, w = pcall(self.git_workspace, self)
    if ok then ws = w else result.workspace_error = errors.message(w) end
  end
  if ws and not opts.discard and ws.sync then
    local ok, res = pcall(ws.sync, ws, { keep_branch = opts.keep_branch, on_destroy = true })
    if not ok then
      errors.raise("sandbox.sync_failed", "cannot keep the commits of '" .. self.name .. "': " .. errors.message(res) ..
        "; nothing was removed", "fix that and try again, or remove it anyway with --discard (its commits are lost)")
    end
    result.synced = res
  end
  if self.state ~= "removing" then pcall(self._update, self, { state = "removing" }) end
  M.unregister(self.name)
  remove_containers(self.name, self.container_id)
  if ws then ws:destroy({ keep_branch = opts.keep_branch }) end
  require("foundry.fs").rm(paths.sandbox_run(self.name))
  st.sandboxes.delete(self.name)
  return result
end

--- Find and remove what a crashed or killed Foundry left behind: containers labelled
--- for this home without a row, rows whose creator died mid-way or whose container is
--- gone, run directories without a row. `opts.dry_run`: only report. Returns
--- `{containers={...}, rows={...}, dirs={...}}`.
function M.prune(opts)
  opts = opts or {}
  local st = state()
  local d = docker()
  local found = { containers = json.array{}, rows = json.array{}, dirs = json.array{}, workspaces = json.array{} }
  local rows = {}
  for _, row in ipairs(st.sandboxes.list()) do rows[row.name] = row end
  -- rows: creating (creator dead), removing (interrupted rm), or container gone
  local cs = d.containers({ labels = { ["dev.foundry.home"] = paths.state() } })
  local live_ids = {}
  for _, c in ipairs(cs) do live_ids[c.id] = c end
  for name, row in pairs(rows) do
    local dead_creator = (row.state == "creating" or row.state == "removing") and not pid_alive(row.pid)
    local gone = row.state ~= "creating" and row.state ~= "removing" and not (row.container_id and live_ids[row.container_id])
    if dead_creator or gone then
      found.rows[#found.rows + 1] = { name = name, state = row.state, reason = dead_creator and "its creator died" or "its container is gone" }
      if not opts.dry_run then
        local sb = from_row(row)
        local ok, err = pcall(sb.destroy, sb, { discard = dead_creator })
        if not ok then found.rows[#found.rows].error = errors.message(err) end
      end
      rows[name] = nil
    end
  end
  -- containers without a row
  for _, c in ipairs(cs) do
    local name = c.labels and c.labels["dev.foundry.sandbox"]
    if not (name and rows[name] and rows[name].container_id == c.id) and not (name and rows[name] and rows[name].state == "creating") then
      found.containers[#found.containers + 1] = { id = c.id:sub(1, 12), name = c.name, sandbox = name }
      if not opts.dry_run then pcall(function() d.container(c.id):remove({ force = true, volumes = true, missing_ok = true }) end) end
    end
  end
  -- run directories without a row
  local sbdir = paths.runtime() .. "/sb"
  local req = uv.fs_scandir(sbdir)
  while req do
    local n = uv.fs_scandir_next(req)
    if not n then break end
    if not rows[n] then
      found.dirs[#found.dirs + 1] = sbdir .. "/" .. n
      if not opts.dry_run then require("foundry.fs").rm(sbdir .. "/" .. n) end
    end
  end
  -- workspaces without a row (also those whose creation was interrupted)
  local impl = M.workspaces()
  for _, ws in ipairs(impl.list()) do
    if ws.name and not rows[ws.name] then
      found.workspaces[#found.workspaces + 1] = ws.path or ws.name
      if not opts.dry_run then pcall(impl.destroy, ws) end
    end
  end
  return found
end

-- ------------------------------------------------------------------ attach

--- Attach the terminal to the sandbox: its agent (or `opts.command`) in a tmux session
--- that survives detaching (Ctrl-P Ctrl-Q, or tmux's own prefix-d). Returns the exit
--- status, and "detached" when the user detached.
function Sandbox:attach(opts)
  return require("foundry.attach").attach(self, opts or {})
end

-- ------------------------------------------------------------------ presets as programs

--- `foundry run PRESET.lua [ARGS]`: create the sandbox a preset describes (progress
--- on the terminal, Ctrl-C rolls back), then attach to its agent when there is a
--- terminal. Without one, prints the sandbox's name. Returns the exit status.
function M.run_preset(p, info, arg)
  local tty = uv.guess_handle(1) == "tty" and uv.guess_handle(0) == "tty"
  local st = state()
  local argv = { info and info.path or "?" }
  for i = 1, #(arg or {}) do argv[#argv + 1] = arg[i] end
  local hid = st.history.add({ command = "run", argv = argv, cwd = uv.cwd() })
  local ok, sb = pcall(M.create, { preset = p }, { progress = "auto", signals = true })
  pcall(st.history.finish, hid, ok and 0 or 1)
  if not ok then error(sb, 0) end
  if info and info.name then pcall(sb._update, sb, { preset = info.path or info.name }) end
  if tty then
    local status = sb:attach({})
    return status == "detached" and 0 or (math.tointeger(status) or 0)
  end
  io.stdout:write(sb.name, "\n")
  return 0
end

return M
