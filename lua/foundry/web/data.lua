--- What the web console shows, as plain tables safe to send to a browser: every string
--- passes through the redaction engine (foundry.redact) and is made valid UTF-8.
--- The JSON handlers (foundry.web.api) and the live stream (foundry.web.stream) share it.
local errors = require "foundry.errors"
local json = require "foundry.json"

local M = {}

local function state() return require "foundry.state" end
local function sandbox() return require "foundry.sandbox" end

--- Replace every byte sequence that is not UTF-8 with U+FFFD.
function M.utf8(s)
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while i <= #s do
    local ok, bad = utf8.len(s, i)
    if ok then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = "\u{FFFD}"
    i = bad + 1
  end
  return table.concat(out)
end

--- Text for the browser: redacted, then valid UTF-8.
function M.text(s)
  if s == nil then return nil end
  local redact = require "foundry.redact"
  return M.utf8(redact.text(tostring(s)))
end

--- A deep copy of `v` with every string key and value cleaned by M.text.
function M.clean(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "string" then return M.text(v) end
  if t ~= "table" or v == json.null or depth > 20 then return v end
  local out = {}
  for k, x in pairs(v) do
    out[type(k) == "string" and M.utf8(k) or k] = M.clean(x, depth + 1)
  end
  return setmetatable(out, getmetatable(v) == json.array_mt and json.array_mt or nil)
end

-- ------------------------------------------------------------------ stages

--- The setup pipeline of sandbox `name` from its recorded events: one entry a stage, in
--- order (the default stages first, then any a preset added), `{name=, status=, ms=,
--- reason=, error=}` where status is "pending", "running", "done", "skipped", "failed" or
--- "undone".
function M.stages(name, events)
  local order = require("foundry.stages").ORDER
  events = events or state().events.list({ sandbox = name })
  local by, seen_order = {}, {}
  for _, n in ipairs(order) do
    by[n] = { name = n, status = "pending" }
    seen_order[#seen_order + 1] = n
  end
  for _, e in ipairs(events) do
    local d = e.kind == "stage" and type(e.data) == "table" and e.data or nil
    local sname = d and d.stage
    if sname then
      local s = by[sname]
      if not s then
        s = { name = sname, status = "pending" }
        by[sname] = s
        seen_order[#seen_order + 1] = sname
      end
      local ev = d.event
      if ev == "start" then s.status, s.started_at = "running", e.ts
      elseif ev == "done" then s.status, s.ms = "done", d.ms
      elseif ev == "skip" then s.status, s.ms, s.reason = "skipped", d.ms, d.reason
      elseif ev == "fail" then s.status, s.ms, s.error = "failed", d.ms, d.error and d.error.message
      elseif ev == "undo" then s.status = "undone"
      elseif ev == "undo_fail" then s.status, s.error = "failed", d.error and d.error.message
      elseif ev == "note" then s.note = d.message end
    end
  end
  local out = json.array()
  for _, n in ipairs(seen_order) do out[#out + 1] = by[n] end
  return M.clean(out)
end

-- ------------------------------------------------------------------ sandboxes

-- One row of the fleet: what `foundry ls --json` prints, plus times and progress.
local function summary(sb, live)
  local info = sb:info(live)
  info.created_ms = sb.created_at
  info.error = sb.row and sb.row.error or nil
  info.tmux = (sb.data.tools or {}).tmux and true or false
  if info.state == "creating" or info.state == "removing" then
    local st = M.stages(sb.name)
    local done, total, current = 0, #st, nil
    for _, s in ipairs(st) do
      if s.status == "done" or s.status == "skipped" then done = done + 1 end
      if s.status == "running" then current = s.name end
    end
    info.progress = { done = done, total = total, current = current }
  end
  return info
end

--- Every sandbox (oldest first), with the engine's view of its container when the
--- engine answers (`engine=false` in the result when it does not).
function M.fleet()
  local ok, list = pcall(sandbox().list, { live = true })
  local engine = true
  if not ok then
    list = sandbox().list({})
    engine = false
  end
  local out = json.array()
  for _, sb in ipairs(list) do
    if sb.live == nil then engine = false end
    out[#out + 1] = summary(sb, sb.live)
  end
  return { sandboxes = M.clean(out), engine = engine, now = state().now() }
end

--- One sandbox in detail: the fleet row, its stages, its agent and where things are.
--- Raises `sandbox.not_found`.
function M.detail(name)
  local sb = sandbox().get(name)
  local ok, live = pcall(sb.live_state, sb)
  local d = summary(sb, ok and live or nil)
  d.stages = M.stages(name)
  d.agent = sb.spec.agent and { name = sb.spec.agent.name, command = sb.spec.agent.command } or nil
  d.tools = {}
  for k, v in pairs(sb.data.tools or {}) do if v then d.tools[#d.tools + 1] = k end end
  table.sort(d.tools)
  d.tools = json.array(d.tools)
  local env = {}
  for k in pairs(sb.spec.env or {}) do env[#env + 1] = k end
  table.sort(env)
  d.env_names = json.array(env)
  d.limits = { cpus = sb.spec.cpus, memory = sb.spec.memory, pids = sb.spec.pids }
  d.live = ok and live or nil
  return M.clean(d)
end

-- ------------------------------------------------------------------ logs

--- Log entries of sandbox `name` (setup events and log lines) after the cursors
--- `{event=, log=}` (ids; nil: the last `limit`). Returns entries ordered by time and the
--- new cursors.
function M.logs(name, cursors, limit)
  cursors = cursors or {}
  limit = limit or 500
  local st = state()
  local evs = st.events.list({ sandbox = name, since_id = cursors.event, limit = limit })
  local lines = st.logs.list({ sandbox = name, since_id = cursors.log, limit = limit })
  local out = json.array()
  local ev_cur, log_cur = cursors.event or 0, cursors.log or 0
  for _, e in ipairs(evs) do
    out[#out + 1] = { id = "e" .. e.id, ts = e.ts, kind = e.kind, data = e.data }
    ev_cur = math.max(ev_cur, e.id)
  end
  for _, l in ipairs(lines) do
    out[#out + 1] = { id = "l" .. l.id, ts = l.ts, kind = "log", stream = l.stream, text = l.text }
    log_cur = math.max(log_cur, l.id)
  end
  table.sort(out, function(a, b)
    if a.ts ~= b.ts then return a.ts < b.ts end
    return a.id < b.id
  end)
  return M.clean(out), { event = ev_cur, log = log_cur }
end

--- Audit rows of sandbox `name` after id `after` (nil: the last `limit`).
function M.audit(name, after, limit)
  local audit = require "foundry.audit"
  local rows = audit.query({ sandbox = name, after_id = after, limit = limit or 500 })
  local out = json.array()
  local cur = after or 0
  for _, r in ipairs(rows) do
    r.prev_hash, r.hash = nil, nil
    if type(r.data) == "string" then
      local ok, v = pcall(json.decode, r.data)
      if ok then r.data = v end
    end
    out[#out + 1] = r
    cur = math.max(cur, r.id)
  end
  return M.clean(out), cur
end

--- Chat messages of sandbox `name` after id `after` (nil: the last `limit`).
function M.chat(name, after, limit)
  local rows = state().chat.list({ sandbox = name, since_id = after, limit = limit or 500 })
  local cur = after or 0
  for _, r in ipairs(rows) do cur = math.max(cur, r.id) end
  return M.clean(json.array(rows)), cur
end

--- Notifications after id `after` (nil: the last `limit`), newest last.
function M.notifications(after, limit)
  local rows = state().notifications.list({ since_id = after, limit = limit or 20 })
  local cur = after or 0
  for _, r in ipairs(rows) do cur = math.max(cur, r.id) end
  return M.clean(json.array(rows)), cur
end

-- ------------------------------------------------------------------ settings

--- Defaults, presets, the vault's secret names (never values) and the console itself.
function M.settings(console)
  local sb = sandbox()
  local out = {
    defaults = {
      image = sb.default_image(), network = sb.DEFAULTS.network, cpus = sb.DEFAULTS.cpus,
      memory = sb.DEFAULTS.memory, pids = sb.DEFAULTS.pids, workspace = sb.WORKSPACE, home = sb.HOME,
      user = sb.UID, stages = json.array(require("foundry.stages").ORDER),
    },
    presets = json.array(),
    vault = { exists = false, secrets = json.array() },
    paths = { state = require("foundry.paths").state(), db = require("foundry.paths").db() },
  }
  local ok, presets = pcall(function() return require("foundry.preset").list() end)
  if ok then
    for _, p in ipairs(presets) do
      if not p.shadowed then
        out.presets[#out.presets + 1] = { name = p.name, origin = p.origin, description = p.description }
      end
    end
  end
  local vok, vault = pcall(require, "foundry.vault")
  if vok and vault.exists() then
    out.vault.exists = true
    local lok, err = pcall(function()
      local v = vault.default()
      out.vault.unlocked = v:unlocked()
      for _, e in ipairs(v:list()) do
        -- names and dates only: a value's length says something about it too
        out.vault.secrets[#out.vault.secrets + 1] = { name = e.name, updated = e.updated or e.mtime or e.created,
          used_by = e.used_by }
      end
    end)
    if not lok then out.vault.error = errors.message(err) end
  end
  local dok, endpoint = pcall(function() return require("foundry.docker").endpoint() end)
  if dok then out.engine = { host = endpoint.host, tls = endpoint.tls ~= nil } end
  if console then
    out.console = { url = console.base_url, host = console.host, port = console.port,
      version = require("foundry").version, xterm = console.xterm_source }
  end
  return M.clean(out)
end

return M
