--- The Foundry daemon: one per user and host, long-lived, started on demand by the CLI
--- (`foundry daemon start`, or `require("foundry.daemon_client").ensure()`).
---
--- It owns the proxy engine (every sandbox's only way out), runs the sandboxes' hooks and
--- answers the CLI on a control socket. Everything it serves is rebuilt from the state
--- database when it starts, so a restart (or a crash) costs sandboxes a moment of egress,
--- never their registration.
---
--- Files, all under `paths.runtime()` (mode 0700):
---
---   control.sock   the control socket (0600): newline-delimited JSON
---   daemon.lock    flock'd while a daemon runs (the kernel releases it if the daemon dies)
---   daemon.pid     its pid
---   sb/<name>/     per-sandbox directory, bind-mounted into the container at /run/foundry:
---                  proxy.sock (the engine's listener) and hook-token (0444)
---
--- and its log at `paths.state()/daemon.log` (when started with `foundry daemon start`).
---
--- Protocol: one JSON object per line each way. A request is `{"id":N,"op":"...",...args}`;
--- the answer `{"id":N,"ok":true,"result":...}` or `{"id":N,"ok":false,"error":{"code":,
--- "message":,"hint":}}`. Ops: ping, status, register{sandbox=}, unregister{sandbox=},
--- reload{sandbox= | all=true}, lock_vault, shutdown.
local uv = require "luv"
local task = require "foundry._task"
local native = require "foundry._daemon"
local errors = require "foundry.errors"
local json = require "foundry.json"
local paths = require "foundry.paths"
local hooks = require "foundry.hooks"

local M = {}

M.PROTOCOL = 1
--- A request line longer than this closes the connection.
M.MAX_LINE = 1 << 20
--- Sandboxes in these states are not given a proxy socket when the daemon starts.
M.DEAD_STATES = { stopped = true, exited = true, failed = true, removing = true, removed = true,
  destroyed = true, error = true }

--- The daemon's files (see the module's description).
function M.files()
  local rt = paths.runtime()
  return {
    runtime = rt,
    socket = paths.control_socket(),
    lock = rt .. "/daemon.lock",
    pid = rt .. "/daemon.pid",
    log = paths.state() .. "/daemon.log",
  }
end

-- Unix socket paths longer than this do not fit in sockaddr_un (libuv would truncate).
M.MAX_SOCKET_PATH = 107

local function check_socket_path(path)
  if #path > M.MAX_SOCKET_PATH then
    errors.raise("daemon.path_too_long", "socket path too long (" .. #path .. " bytes, at most " ..
      M.MAX_SOCKET_PATH .. "): " .. path, "set XDG_RUNTIME_DIR (or FOUNDRY_HOME) to a shorter directory")
  end
  return path
end

local function version()
  local ok, f = pcall(require, "foundry")
  return ok and f.version or "?"
end

-- luv gives the pid as a float
local function getpid() return math.tointeger(uv.os_getpid()) end

local function now_ms()
  local s, us = uv.gettimeofday()
  return s * 1000 + us // 1000
end

local function optional(name)
  local ok, mod = pcall(require, name)
  if ok then return mod end
  if tostring(mod):find("module '" .. name .. "' not found", 1, true) then return nil, "not built in" end
  return nil, errors.message(mod)
end

-- ------------------------------------------------------------------ the daemon

local Daemon = {}
Daemon.__index = Daemon
Daemon.__name = "foundry.daemon.Daemon"
Daemon.__tostring = function(d) return "foundry.daemon.Daemon (" .. (d.running and "running" or "stopped") .. ")" end

--- A daemon, not yet started. `opts.log(line)` receives log lines (default: stderr).
function M.new(opts)
  opts = opts or {}
  return setmetatable({
    files = M.files(),
    write_log = opts.log or function(line) io.stderr:write(line, "\n"); io.stderr:flush() end,
    sandboxes = {},   -- [name] = {row=, socket=, registered_at=, events=, last_event_at=}
    conns = {},       -- control connections
    signals = {},
    ready_waiters = {},
    known_secrets = {},
    started_at = now_ms(),
  }, Daemon)
end

--- Write one line to the daemon's log, through the redaction engine when there is one.
function Daemon:log(level, fmt, ...)
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  local line = os.date("!%Y-%m-%dT%H:%M:%SZ") .. " " .. level .. " " .. msg
  self.write_log(self:redact(line))
end

-- Log lines go through the redaction engine: first the secrets the daemon took from its
-- environment, then the process-wide redactor (the vault's secrets once it is unlocked,
-- and the well-known token shapes).
function Daemon:redact(text)
  local redact = optional("foundry.redact")
  if not redact then return text end
  if self.redactor_stale then
    self.redactor_stale = false
    if self.env_redactor then self.env_redactor:close() end
    local ok, r = pcall(redact.new, self.known_secrets, { shapes = false })
    self.env_redactor = ok and r or nil
  end
  local ok, out = pcall(function()
    local t = text
    if self.env_redactor then t = (self.env_redactor:apply(t)) end
    return redact.text(t)
  end)
  return ok and out or "[log line withheld: redaction failed]"
end

-- The vault, when it exists and can be unlocked without a prompt (FOUNDRY_VAULT_KEYFILE,
-- FOUNDRY_VAULT_PASSPHRASE): its secrets feed the proxy and the redactor.
function Daemon:unlock_vault()
  local vault = optional("foundry.vault")
  if not vault or not vault.exists() then return false end
  local ok, err = pcall(function()
    local v = vault.default()
    v:unlock({ prompt = false })
    require("foundry.redact").set_global(v:redactor())
  end)
  if ok then
    self:log("info", "vault unlocked")
  else
    self:log("warn", "vault stays locked (%s): secrets come from the daemon's environment", errors.message(err))
  end
  return ok
end

--- A secret for the proxy engine: from the vault when it is unlocked, else from the
--- daemon's environment (the variable of the same name).
-- The vault entries `foundry auth import` and the shipped presets use for the secrets the
-- built-in gateways and the default policy name.
local VAULT_ALIASES = {
  ANTHROPIC_API_KEY = "anthropic", OPENAI_API_KEY = "openai", GEMINI_API_KEY = "gemini",
  GITHUB_TOKEN = "github", CLAUDE_CODE_OAUTH_TOKEN = "claude-oauth",
}

--- A secret for the proxy engine. `refs` are the sandbox's own references
--- ({ANTHROPIC_API_KEY = "vault:work-key"}, from its preset's credentials); then the vault
--- entry of that name, then the usual vault name for it (VAULT_ALIASES), then the daemon's
--- environment.
function Daemon:secret(name, refs)
  local value
  local vault = optional("foundry.vault")
  if vault and vault.exists() then
    local ok, v = pcall(function()
      local d = vault.default()
      if not d:unlocked() then return nil end
      local ref = refs and refs[name]
      local candidates = {}
      if type(ref) == "string" then candidates[#candidates + 1] = ref:match("^vault:(.+)$") or ref end
      candidates[#candidates + 1] = name
      candidates[#candidates + 1] = VAULT_ALIASES[name]
      for _, n in ipairs(candidates) do
        if d:has(n) then return d:get(n) end
      end
    end)
    if ok and type(v) == "string" then return v end
  end
  value = os.getenv(name)
  if value and self.known_secrets[name] ~= value then
    self.known_secrets[name] = value
    self.redactor_stale = true
  end
  return value
end

-- The audit table's columns; anything else a row carries goes into its `data`.
local AUDIT_FIELDS = { ts = true, sandbox = true, kind = true, decision = true, host = true,
  method = true, path = true, rule = true, reason = true, status = true, bytes_in = true,
  bytes_out = true, ms = true, data = true }

-- Audit rows from the daemon itself (hook decisions) and from the proxy engine.
function Daemon:audit(row)
  local audit = optional("foundry.audit")
  if not audit then return end
  local r, extra = {}, nil
  for k, v in pairs(row) do
    if AUDIT_FIELDS[k] then
      r[k] = v
    else
      extra = extra or {}
      extra[k] = v
    end
  end
  if extra then
    if type(r.data) == "table" then
      for k, v in pairs(extra) do if r.data[k] == nil then r.data[k] = v end end
    elseif r.data == nil then
      r.data = extra
    end
  end
  local ok, err = pcall(audit.append, r)
  if not ok then self:log("warn", "audit: %s", errors.message(err)) end
end

-- Keep the secret values of this process out of core dumps and other processes of the
-- same user (ptrace, /proc/<pid>/mem).
function Daemon:harden()
  local vault = optional("foundry.vault")
  if vault and type(vault.protect_process) == "function" and pcall(vault.protect_process) then
    self.hardened = "vault.protect_process"
    return
  end
  local ok, err = native.set_dumpable(false)
  self.hardened = ok and "PR_SET_DUMPABLE=0" or false
  if not ok then self:log("warn", "cannot make the daemon undumpable: %s", tostring(err)) end
end

-- ------------------------------------------------------------------ proxy engine

--- The proxy engine, created on first use. Raises `daemon.proxy_unavailable` when this
--- build has none (the control plane still works; sandboxes have no egress).
function Daemon:engine()
  if self.eng then return self.eng end
  local proxy, why = optional("foundry.proxy")
  if not proxy or type(proxy.engine) ~= "function" then
    self.eng_error = "the proxy engine (foundry.proxy) is not available: " .. (why or "it has no engine()")
    errors.raise("daemon.proxy_unavailable", self.eng_error,
      "this foundry was built without the proxy: sandboxes have no network until it is")
  end
  local ok, eng = pcall(proxy.engine, {
    ca_dir = paths.ca(),
    upstream_ca_file = os.getenv("FOUNDRY_UPSTREAM_CA_FILE"),
    secrets = function(name) return self:secret(name) end,
    audit = function(row) self:audit(row) end,
    guard = require("foundry.guards").new{ audit = function(row) self:audit(row) end }, -- git and GitHub API rules
    on_event = function(name, ev) return self:on_event(name, ev) end,
    log = function(level, msg) self:log(level, "proxy: %s", msg) end,
  })
  if not ok then
    self.eng_error = "cannot start the proxy engine: " .. errors.message(eng)
    errors.raise("daemon.proxy_unavailable", self.eng_error)
  end
  self.eng, self.eng_error = eng, nil
  return eng
end

-- The sandbox's network policy, from its row: the policy recorded at creation (a name,
-- a path or a table), else the default policy in the row's network mode.
-- JSON columns come back with every number a float (5.0); policies want integers.
local function integers(v)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = integers(x) end
  return out
end

local function policy_of(row)
  return require("foundry.policy").of_sandbox(integers(row))
end

local function placeholders_of(row)
  local data = type(row.data) == "table" and row.data or {}
  return data.placeholders or {}
end

-- The per-sandbox directory the container sees at /run/foundry: it must stay the same
-- directory for the container's life (a bind mount follows the inode), so it is created
-- when missing and never replaced; only the socket inside is re-created.
local function sandbox_dir(name)
  local dir = paths.sandbox_run(name)
  paths.ensure(paths.runtime() .. "/sb")
  if not uv.fs_stat(dir) then
    local ok, err = uv.fs_mkdir(dir, tonumber("755", 8))
    if not ok and not tostring(err):match("^EEXIST") then
      errors.raise("daemon.io", "cannot create " .. dir .. ": " .. tostring(err))
    end
  end
  -- The agent runs as another user inside the container: it must be able to enter the
  -- directory. Host users other than ours cannot: paths.runtime() is 0700.
  uv.fs_chmod(dir, tonumber("755", 8))
  return dir
end

-- Write the hook token where the shim reads it (/run/foundry/hook-token in the
-- container), readable by the container's user; rewritten only when it changed.
local function write_token(dir, token)
  local path = dir .. "/hook-token"
  local fs = require "foundry.fs"
  local cur = fs.sync.read(path)
  if cur == token .. "\n" then return path end
  fs.write(path, token .. "\n", { mode = tonumber("444", 8) })
  return path
end

--- Give the sandbox `name` its proxy socket (again): reads its row from the state
--- database, writes its hook token, registers it with the engine. Idempotent.
function Daemon:register(name)
  if type(name) ~= "string" or name == "" then errors.raise("usage", "register: sandbox name expected") end
  local state = require "foundry.state"
  local row = state.sandboxes.get(name)
  if not row then
    errors.raise("daemon.not_found", "no sandbox named '" .. name .. "'", "'foundry ls' lists the sandboxes")
  end
  local dir = sandbox_dir(name)
  if type(row.hook_token) == "string" and row.hook_token ~= "" then write_token(dir, row.hook_token) end
  local sock = check_socket_path(dir .. "/proxy.sock")
  local eng = self:engine()
  local prev = self.sandboxes[name]
  local pol = policy_of(row)
  if prev and type(eng.remove_sandbox) == "function" then pcall(eng.remove_sandbox, eng, name) end
  eng:add_sandbox{
    name = name, socket = sock, policy = pol, placeholders = placeholders_of(row),
    hook_token = row.hook_token, sandbox = row,
    secrets = function(secret) return self:secret(secret, (type(row.data) == "table" and row.data.secret_refs) or nil) end,
  }
  -- the container's user connects to it; only this sandbox's container can reach it
  if uv.fs_stat(sock) then uv.fs_chmod(sock, tonumber("666", 8)) end
  hooks.detach(name)
  self.sandboxes[name] = {
    row = row, socket = sock, registered_at = now_ms(), policy_files = pol.files,
    events = prev and prev.events or 0, last_event_at = prev and prev.last_event_at,
  }
  self:watch_policies()
  self:log("info", "registered %s (%s)", name, sock)
  return { sandbox = name, socket = sock }
end

--- Take the sandbox's socket away (its directory stays: the lifecycle removes it).
function Daemon:unregister(name)
  if type(name) ~= "string" or name == "" then errors.raise("usage", "unregister: sandbox name expected") end
  local reg = self.sandboxes[name]
  self.sandboxes[name] = nil
  hooks.detach(name)
  if self.eng and type(self.eng.remove_sandbox) == "function" then
    local ok, err = pcall(self.eng.remove_sandbox, self.eng, name)
    if not ok then self:log("warn", "unregister %s: %s", name, errors.message(err)) end
  end
  if reg then
    uv.fs_unlink(reg.socket)
    self:watch_policies()
    self:log("info", "unregistered %s", name)
  end
  return { sandbox = name, was_registered = reg ~= nil }
end

-- Re-read one sandbox's row and give the engine its policy again, in place: connections
-- in flight finish under the old policy; the socket is not touched.
function Daemon:reload_one(name)
  local reg = self.sandboxes[name]
  if not reg or not self.eng or type(self.eng.update_policy) ~= "function" then
    return self:register(name)
  end
  local row = require("foundry.state").sandboxes.get(name)
  if not row then
    errors.raise("daemon.not_found", "no sandbox named '" .. name .. "'", "'foundry ls' lists the sandboxes")
  end
  if row.hook_token ~= reg.row.hook_token then return self:register(name) end
  local pol = policy_of(row)
  self.eng:update_policy(name, pol)
  reg.row = row
  reg.policy_files = pol.files
  reg.policy_error = nil
  self:watch_policies()
  hooks.detach(name)
  self:log("info", "reloaded %s", name)
  return { sandbox = name, socket = reg.socket }
end

-- reload_one, with a failure kept for `status` (the previous policy stays in force).
-- Returns true, or false and the error.
function Daemon:try_reload(name)
  local ok, err = pcall(self.reload_one, self, name)
  if ok then return true end
  local reg = self.sandboxes[name]
  if reg then reg.policy_error = errors.message(err) end
  return false, err
end

--- Re-read sandboxes from the state database and apply their policies again (all the
--- registered ones when `name` is nil). A policy that does not load keeps the old one.
function Daemon:reload(name)
  if name then
    local ok, err = self:try_reload(name)
    if not ok then error(err, 0) end
    return { reloaded = json.array({ name }) }
  end
  local out, failed = {}, {}
  for n in pairs(self.sandboxes) do
    local ok, err = self:try_reload(n)
    if ok then
      out[#out + 1] = n
    else
      failed[#failed + 1] = { sandbox = n, error = errors.message(err) }
      self:log("error", "reload %s: %s", n, errors.message(err))
    end
  end
  table.sort(out)
  table.sort(failed, function(a, b) return a.sandbox < b.sandbox end)
  return { reloaded = json.array(out), failed = json.array(failed) }
end

-- ------------------------------------------------------------------ policy files

local function absolute(path) return require("foundry.fs").absolute(path) end

-- The paths whose change means the file `f` changed: itself and, for a symbolic link
-- (dotfile managers), the file it points to.
local function watched_paths(f)
  local a = absolute(f)
  local real = uv.fs_realpath(a)
  if real and real ~= a then return { a, real } end
  return { a }
end

--- Watch the files the registered sandboxes' policies were read from (their own and
--- what they extend). Editors replace a file rather than write it in place, so the
--- watch is on each file's directory, filtered by name.
function Daemon:watch_policies()
  if not self.running then return end
  local want = {}
  -- the vault too: a secret set, replaced or removed reaches the proxy at once
  local vault = optional("foundry.vault")
  local vpath = vault and vault.path and vault.path()
  if vpath and next(self.sandboxes) then
    local dir, base = absolute(vpath):match("^(.*)/([^/]+)$")
    if dir then want[dir] = { [base] = true } end
    self.vault_file = absolute(vpath)
  end
  for _, reg in pairs(self.sandboxes) do
    for _, f in ipairs(reg.policy_files or {}) do
      for _, path in ipairs(watched_paths(f)) do
        local dir, base = path:match("^(.*)/([^/]+)$")
        if dir then
          want[dir] = want[dir] or {}
          want[dir][base] = true
        end
      end
    end
  end
  self.watchers = self.watchers or {}
  for dir, w in pairs(self.watchers) do
    if not want[dir] then
      if not w.handle:is_closing() then w.handle:close() end
      self.watchers[dir] = nil
    end
  end
  for dir, files in pairs(want) do
    local w = self.watchers[dir]
    if not w then
      local h = uv.new_fs_event()
      local ok, err = h:start(dir, {}, function(werr, fname)
        if werr then self:log("warn", "watching %s: %s", dir, tostring(werr)) return end
        self:policy_changed(dir, fname)
      end)
      if ok then
        w = { handle = h }
        self.watchers[dir] = w
      else
        h:close()
        self:log("warn", "cannot watch %s for policy changes: %s (foundry policy reload still works)", dir, tostring(err))
      end
    end
    if w then w.files = files end
  end
end

Daemon.POLICY_SETTLE_MS = 200

--- A watched directory changed: once writes have settled, reload every sandbox whose
--- policy was read from a changed file. A policy that no longer loads keeps the old one
--- (the error goes to the log and to `foundry daemon status`).
function Daemon:policy_changed(dir, fname)
  local w = self.watchers and self.watchers[dir]
  if not w or not fname or not w.files[fname] then return end
  self.changed_policies = self.changed_policies or {}
  self.changed_policies[dir .. "/" .. fname] = true
  if self.policy_timer then self.policy_timer:stop() else self.policy_timer = uv.new_timer() end
  self.policy_timer:start(self.POLICY_SETTLE_MS, 0, function()
    local changed = self.changed_policies
    self.changed_policies = {}
    task.spawn(function() self:reload_changed(changed) end)
  end)
end

function Daemon:reload_changed(changed)
  if not self.running then return end
  local names = {}
  local all = self.vault_file and changed[self.vault_file]
  for name, reg in pairs(self.sandboxes) do
    if all then
      names[#names + 1] = name
    else
      local hit = false
      for _, f in ipairs(reg.policy_files or {}) do
        for _, path in ipairs(watched_paths(f)) do hit = hit or changed[path] ~= nil end
      end
      if hit then names[#names + 1] = name end
    end
  end
  table.sort(names)
  local files = {}
  for f in pairs(changed) do files[#files + 1] = f end
  table.sort(files)
  local done = {}
  for _, name in ipairs(names) do
    local ok, err = self:try_reload(name)
    if ok then
      done[#done + 1] = name
    else
      self:log("error", "policy of %s changed but does not load; it keeps the previous one: %s", name, errors.message(err))
    end
  end
  if #done > 0 then
    self:log("info", "%s changed (%s): reloaded %s", all and "the vault" or "policy file", table.concat(files, ", "),
      table.concat(done, ", "))
  end
end

--- Register every sandbox the state database holds that is not stopped or gone.
function Daemon:restore()
  local ok, state = pcall(require, "foundry.state")
  if not ok then
    self:log("error", "cannot read the state database: %s", errors.message(state))
    return 0
  end
  local rows_ok, rows = pcall(state.sandboxes.list, {})
  if not rows_ok then
    self:log("error", "cannot list sandboxes: %s", errors.message(rows))
    return 0
  end
  local n, failed = 0, 0
  for _, row in ipairs(rows) do
    if not M.DEAD_STATES[row.state] then
      local rok, err = pcall(self.register, self, row.name)
      if rok then
        n = n + 1
      else
        failed = failed + 1
        self:log("error", "restore %s: %s", row.name, errors.message(err))
        if errors.is(err, "daemon.proxy_unavailable") then break end
      end
    end
  end
  if n + failed > 0 then self:log("info", "restored %d sandbox%s (%d failed)", n, n == 1 and "" or "es", failed) end
  return n
end

-- ------------------------------------------------------------------ hook events

local EVENT_STATUS = {
  ["hooks.bad_signature"] = 401, ["hooks.malformed"] = 400, ["hooks.stale"] = 401,
  ["hooks.replay"] = 409,
}

--- Called by the proxy engine for `POST /_foundry/hook` on a sandbox's socket. The engine
--- checks the HMAC (X-Foundry-Token) with the sandbox's hook token and passes the decoded
--- event; the daemon refuses stale and replayed events (`hooks.check_fresh`) and runs the
--- sandbox's hooks. `{body=, token=}` (raw body and header) is accepted too and checked
--- here in full. Returns an HTTP status and a reason (for an engine that answers after).
function Daemon:on_event(name, ev)
  local reg = self.sandboxes[name]
  if not reg then return 404, "sandbox not registered" end
  local ok, event
  if type(ev) == "table" and type(ev.body) == "string" then
    ok, event = pcall(hooks.verify, name, reg.row.hook_token, ev.body, ev.token or ev.mac)
  else
    ok, event = pcall(hooks.check_fresh, name, ev)
  end
  if not ok then
    local code = errors.is(event) and event.code or "hooks.error"
    self:log("warn", "hook event for %s refused: %s", name, errors.message(event))
    self:audit{ sandbox = name, kind = "hook", decision = "deny", rule = code, reason = errors.message(event) }
    return EVENT_STATUS[code] or 400, errors.message(event)
  end
  reg.events = reg.events + 1
  reg.last_event_at = now_ms()
  reg.last_event = event.event
  self:audit{ sandbox = name, kind = "hook", decision = "allow", rule = event.event }
  hooks.dispatch(reg.row, event)
  return 204, "accepted"
end

-- Hook results and failures: the daemon's log, the sandbox's log, and the audit log.
function Daemon:hook_report(sandbox, level, message, data)
  self:log(level, "hook %s: %s", tostring(sandbox), message)
  local ok, state = pcall(require, "foundry.state")
  if ok and sandbox then
    pcall(state.logs.add, { sandbox = sandbox, stream = "hooks", text = self:redact(message) })
  end
  if level == "error" then
    self:audit{ sandbox = sandbox, kind = "hook", decision = "error", reason = self:redact(message),
      rule = data and data.code or nil }
  end
end

-- ------------------------------------------------------------------ status

function Daemon:status()
  local list = {}
  for name, reg in pairs(self.sandboxes) do
    list[#list + 1] = { name = name, socket = reg.socket, registered_at = reg.registered_at,
      events = reg.events, last_event = reg.last_event, last_event_at = reg.last_event_at,
      state = reg.row.state, policy_files = json.array(reg.policy_files or {}),
      policy_error = reg.policy_error }
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  local proxy
  if self.eng then
    proxy = { ready = true }
    if type(self.eng.stats) == "function" then
      local ok, s = pcall(self.eng.stats, self.eng)
      if ok then proxy.stats = s end
    end
  else
    proxy = { ready = false, error = self.eng_error or "not started" }
  end
  return {
    running = true, pid = getpid(), version = version(), protocol = M.PROTOCOL,
    started_at = self.started_at, uptime_ms = now_ms() - self.started_at,
    socket = self.files.socket, log = self.files.log, runtime = self.files.runtime,
    hardened = self.hardened or false,
    redaction = optional("foundry.redact") ~= nil,
    proxy = proxy, sandboxes = json.array(list),
  }
end

-- ------------------------------------------------------------------ control socket

local ops = {}

function ops.ping()
  return { pong = true, pid = getpid(), version = version(), protocol = M.PROTOCOL }
end

function ops.status(d) return d:status() end
--- The path of Foundry's CA certificate (created with the engine on first use): the
--- lifecycle mounts it into sandboxes. The daemon is its only creator, so two processes
--- never race to make two CAs.
function ops.ca(d) return { cert = d:engine():ca_cert() } end
function ops.register(d, req) return d:register(req.sandbox) end
function ops.unregister(d, req) return d:unregister(req.sandbox) end

function ops.reload(d, req)
  if req.all or req.sandbox == nil then return d:reload(nil) end
  return d:reload(req.sandbox)
end

function ops.lock_vault(d)
  local vault = optional("foundry.vault")
  if not vault or type(vault.lock) ~= "function" then
    errors.raise("daemon.unsupported", "this build has no vault to lock")
  end
  vault.lock()
  for k in pairs(d.known_secrets) do d.known_secrets[k] = nil end
  d:log("info", "vault locked")
  return { locked = true }
end

function ops.shutdown(d)
  d.shutdown_requested = true
  return { stopping = true, pid = getpid() }
end

M.ops = ops

local function error_table(err)
  if errors.is(err) then return { code = err.code, message = err.message, hint = err.hint } end
  return { code = "daemon.internal", message = tostring(err) }
end

function Daemon:_answer(conn, line)
  -- Requests wait until every sandbox is restored: "it answers" means "it is ready".
  while not self.ready and self.running do
    local w = task.wait("daemon.ready", nil, 60000)
    self.ready_waiters[#self.ready_waiters + 1] = w
    if not pcall(w.await, w) then break end
  end
  local ok, req = pcall(json.decode, line)
  local resp
  if not ok or type(req) ~= "table" or type(req.op) ~= "string" then
    resp = { ok = false, error = { code = "daemon.bad_request", message = "not a JSON request {op=...}" } }
  else
    local op = ops[req.op]
    if not op then
      resp = { id = req.id, ok = false, error = { code = "daemon.bad_request",
        message = "unknown op '" .. req.op .. "'" } }
    else
      local rok, res = pcall(op, self, req)
      if rok then
        resp = { id = req.id, ok = true, result = res == nil and json.null or res }
      else
        if not errors.is(res) then self:log("error", "op %s: %s", req.op, tostring(res)) end
        resp = { id = req.id, ok = false, error = error_table(res) }
      end
    end
  end
  if conn.pipe:is_closing() then return end
  local w = task.wait("daemon.reply", nil, 5000)
  conn.pipe:write(json.encode(resp) .. "\n", function() w:resolve() end)
  pcall(w.await, w)
  if self.shutdown_requested then self:stop("shutdown requested") end
end

function Daemon:_accept()
  local pipe = uv.new_pipe(false)
  if not self.server:accept(pipe) then pipe:close() return end
  -- The socket is 0600 in a 0700 directory; this also refuses any other user that
  -- somehow reaches it (root excepted, which could anyway).
  local fd = pipe:fileno()
  local okc, uid = pcall(native.peer_uid, fd)
  if not okc or (uid ~= uv.getuid() and uid ~= 0) then
    self:log("warn", "refused a control connection from uid %s", tostring(uid))
    pipe:close()
    return
  end
  local conn = { pipe = pipe, buf = "" }
  self.conns[conn] = true
  pipe:read_start(function(err, data)
    if err or not data then
      self.conns[conn] = nil
      if not pipe:is_closing() then pipe:close() end
      return
    end
    conn.buf = conn.buf .. data
    while true do
      local nl = conn.buf:find("\n", 1, true)
      if not nl then break end
      local line = conn.buf:sub(1, nl - 1)
      conn.buf = conn.buf:sub(nl + 1)
      if line:match("%S") then
        local t = task.spawn(self._answer, self, conn, line)
        t.name = "daemon request"
      end
    end
    if #conn.buf > M.MAX_LINE then
      self:log("warn", "control request longer than %d bytes: connection closed", M.MAX_LINE)
      self.conns[conn] = nil
      pipe:close()
    end
  end)
end

-- ------------------------------------------------------------------ lifecycle

local function check_runtime_dir(dir)
  paths.ensure(dir)
  local st = assert(uv.fs_stat(dir))
  if st.uid ~= uv.getuid() then
    errors.raise("daemon.insecure", dir .. " belongs to uid " .. st.uid .. ", not to you",
      "remove it, or set XDG_RUNTIME_DIR (or FOUNDRY_HOME) to a directory of your own")
  end
  if st.mode & tonumber("077", 8) ~= 0 then uv.fs_chmod(dir, tonumber("700", 8)) end
end

--- Take the lock, open the control socket, restore the sandboxes. Raises
--- `daemon.running` when another daemon holds the lock.
function Daemon:start()
  local f = self.files
  check_socket_path(f.socket)
  check_runtime_dir(f.runtime)
  local lock, holder = native.lock(f.lock)
  if not lock then
    errors.raise("daemon.running", "a foundry daemon is already running" ..
      ((holder or 0) > 0 and (" (pid " .. holder .. ")") or ""),
      "'foundry daemon status' shows it; 'foundry daemon stop' stops it")
  end
  self.lock = lock
  lock:write_pid()
  require("foundry.fs").write(f.pid, getpid() .. "\n", { mode = tonumber("600", 8), fsync = false })
  self:harden()
  hooks.reporter = function(...) return self:hook_report(...) end
  self:unlock_vault()

  -- We hold the lock: a socket file left here is a dead daemon's.
  uv.fs_unlink(f.socket)
  local server = uv.new_pipe(false)
  local ok, err = server:bind(f.socket)
  if not ok then
    server:close()
    self:release()
    errors.raise("daemon.socket", "cannot bind " .. f.socket .. ": " .. tostring(err))
  end
  uv.fs_chmod(f.socket, tonumber("600", 8))
  server:listen(128, function(lerr) if not lerr then self:_accept() end end)
  self.server = server

  for _, sig in ipairs({ "sigterm", "sigint" }) do
    local h = uv.new_signal()
    h:start(sig, function() self:stop("signal " .. sig) end)
    h:unref()
    self.signals[#self.signals + 1] = h
  end
  local hup = uv.new_signal()
  hup:start("sighup", function()
    task.spawn(function() self:log("info", "SIGHUP: reloading"); self:reload(nil) end)
  end)
  hup:unref()
  self.signals[#self.signals + 1] = hup

  self.running = true
  self:log("info", "foundry daemon %s started (pid %d), control socket %s", version(), getpid(), f.socket)
  -- The engine now, so `status` tells at once whether egress can work at all.
  local eok, eerr = pcall(self.engine, self)
  if not eok then self:log("error", "%s", errors.message(eerr)) end
  self:restore()
  self:set_ready()
  return self
end

function Daemon:set_ready()
  self.ready = true
  local ws = self.ready_waiters
  self.ready_waiters = {}
  for _, w in ipairs(ws) do w:resolve() end
end

function Daemon:release()
  if self.lock then
    uv.fs_unlink(self.files.pid)
    self.lock:close()
    self.lock = nil
  end
end

--- Stop serving: close the control socket, the proxy engine and every hook; release the
--- lock. Idempotent.
function Daemon:stop(reason)
  if not self.running then return end
  self.running = false
  self:log("info", "stopping (%s)", reason or "stop")
  for _, h in ipairs(self.signals) do if not h:is_closing() then h:close() end end
  self.signals = {}
  for _, w in pairs(self.watchers or {}) do if not w.handle:is_closing() then w.handle:close() end end
  self.watchers = {}
  if self.policy_timer then self.policy_timer:close(); self.policy_timer = nil end
  if self.server and not self.server:is_closing() then self.server:close() end
  uv.fs_unlink(self.files.socket)
  for conn in pairs(self.conns) do
    if not conn.pipe:is_closing() then conn.pipe:close() end
  end
  self.conns = {}
  for name in pairs(self.sandboxes) do hooks.detach(name) end
  if self.eng and type(self.eng.close) == "function" then
    local ok, err = pcall(self.eng.close, self.eng)
    if not ok then self:log("warn", "closing the proxy engine: %s", errors.message(err)) end
  end
  self.eng = nil
  -- Free the closed engine's userdata now, not during the host's shutdown (proxy.c's
  -- engine memory is released at host close; a later __gc must not find it).
  collectgarbage()
  hooks.reporter = nil
  local audit = optional("foundry.audit")
  if audit and audit.flush then pcall(audit.flush) end
  self:release()
  self:set_ready() -- requests still waiting get their answer (or a closed connection)
  if self.env_redactor then self.env_redactor:close(); self.env_redactor = nil end
  self:log("info", "stopped")
  local ws = self.stop_waiters or {}
  self.stop_waiters = {}
  for _, w in ipairs(ws) do w:resolve() end
end

--- Wait until the daemon stops.
function Daemon:serve()
  while self.running do
    local w = task.wait("daemon")
    self.stop_waiters = self.stop_waiters or {}
    table.insert(self.stop_waiters, w)
    w:await()
  end
end

--- `foundry daemon run`: start, serve until stopped (SIGTERM, SIGINT, the shutdown op).
function M.run(opts)
  opts = opts or {}
  local d = M.new(opts)
  d:start()
  d:serve()
  return 0
end

return M
