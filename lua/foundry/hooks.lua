--- Hooks: Lua the daemon runs when something happens inside a sandbox.
---
--- The agent's post-tool-use hook runs `foundry-shim notify post-tool-use` inside the
--- container; the shim posts a signed event over the sandbox's proxy socket; the proxy hands
--- it to the daemon, which checks it (`hooks.verify`) and calls `hooks.dispatch(sandbox,
--- event)`. Each sandbox's handlers come from its preset:
---
---   hooks = { post_tool_use = "commit", debounce_ms = 5000, push = true }
---   hooks = { post_tool_use = function(sb, event) ... end }
---
--- or are attached by code with `hooks.on(name, event, fn)`. A handler runs in its own task
--- with the sandbox row and the event `{event=, payload=, ts=, nonce=}`; a handler that
--- fails is reported (daemon log, the sandbox's log, the audit log) and never stops the
--- daemon or the other handlers.
---
--- `hooks.debounce(ms, fn)` is the building block for "after N ms without a new event".
local uv = require "luv"
local task = require "foundry._task"
local errors = require "foundry.errors"

local M = {}

--- How far an event's `ts` may be from the daemon's clock (seconds), and how long nonces
--- are remembered: a replayed event is refused either way.
M.WINDOW_S = 120

-- ------------------------------------------------------------------ debounce

local Debounce = {}
Debounce.__index = Debounce
Debounce.__call = function(self, ...) return self:push(...) end
Debounce.__name = "foundry.hooks.Debounce"

--- `fn(calls)` runs in a task `ms` milliseconds after the last call of the returned object,
--- with `calls` = the argument lists of every call since the last run (`calls[i].n` and
--- `calls[i][1..n]`). Calls that arrive while `fn` runs start a new quiet period; runs never
--- overlap. `opts.on_error(err)` receives errors from `fn` (default: they are dropped after
--- `hooks.report`). The object has:
---
---   d(...)        record a call (re)starting the quiet period
---   d:flush()     run now if calls are pending (waits for the run)
---   d:cancel()    forget pending calls
---   d:idle()      wait until nothing is pending or running
---   d:close()     cancel, and refuse later calls
---   d.runs        number of completed runs
---@param ms integer
---@param fn fun(calls: table[])
---@param opts? {on_error?: fun(err: any), name?: string}
function M.debounce(ms, fn, opts)
  if math.type(ms) ~= "integer" or ms < 0 then error("hooks.debounce: ms: expected a non-negative integer", 2) end
  if type(fn) ~= "function" then error("hooks.debounce: fn: expected function, got " .. type(fn), 2) end
  opts = opts or {}
  return setmetatable({ ms = ms, fn = fn, on_error = opts.on_error, name = opts.name or "debounce",
    pending = {}, runs = 0, idle_waiters = {} }, Debounce)
end

function Debounce:_notify_idle()
  if self.timer or self.running then return end
  local ws = self.idle_waiters
  self.idle_waiters = {}
  for _, w in ipairs(ws) do w:resolve() end
end

function Debounce:_stop_timer()
  if self.timer then
    self.timer:stop()
    self.timer:close()
    self.timer = nil
  end
end

function Debounce:_run()
  if self.running then
    -- the timer fired during a run: run again when it ends
    self.again = true
    return
  end
  local calls = self.pending
  self.pending = {}
  if #calls == 0 then self:_notify_idle() return end
  self.running = task.spawn(function()
    local ok, err = pcall(self.fn, calls)
    self.runs = self.runs + 1
    self.running = nil
    if not ok then
      if self.on_error then pcall(self.on_error, err) end
    end
    if self.again then
      self.again = false
      if not self.timer then self:_run() end
    end
    self:_notify_idle()
  end)
  self.running.name = self.name
end

function Debounce:push(...)
  if self.closed then error("hooks.debounce: closed", 2) end
  self.pending[#self.pending + 1] = table.pack(...)
  if not self.timer then self.timer = uv.new_timer() end
  self.timer:stop()
  self.timer:start(self.ms, 0, function()
    self:_stop_timer()
    self:_run()
  end)
end

function Debounce:flush()
  self:_stop_timer()
  if #self.pending > 0 then self:_run() end
  self:idle()
end

function Debounce:cancel()
  self:_stop_timer()
  self.pending = {}
  self:_notify_idle()
end

function Debounce:idle()
  while self.timer or self.running do
    local w = task.wait("hooks.debounce idle")
    self.idle_waiters[#self.idle_waiters + 1] = w
    w:await()
  end
end

function Debounce:close()
  self.closed = true
  self:cancel()
end

-- ------------------------------------------------------------------ reporting

--- Where hook failures and results go. The daemon sets `M.reporter = fn(sandbox_name,
--- level, message, data)`; without one they go to stderr.
M.reporter = nil

--- Report a hook's result or failure (never raises).
function M.report(sandbox, level, message, data)
  local r = M.reporter
  if r then
    local ok = pcall(r, sandbox, level, message, data)
    if ok then return end
  end
  io.stderr:write(string.format("foundry: hook %s: %s: %s\n", tostring(sandbox), level, message))
end

-- ------------------------------------------------------------------ verification

local seen = {} -- [sandbox] = { [nonce] = expiry (s) }

local function reject(code, message)
  errors.raise(code, message)
end

--- Check a decoded hook event (its signature already checked): the shape
--- `{event=, ts=, nonce=}`, `ts` within WINDOW_S of now, and a nonce not seen before for
--- this sandbox. Returns the event, or raises `hooks.malformed`, `hooks.stale` or
--- `hooks.replay`.
---@param sandbox string
---@param ev table
---@return table
function M.check_fresh(sandbox, ev)
  -- JSON decoders give 1.7e9 as a float: any whole number will do
  local ts = type(ev) == "table" and math.tointeger(ev.ts)
  if type(ev) ~= "table" or type(ev.event) ~= "string" or type(ev.nonce) ~= "string"
      or #ev.nonce < 16 or not ts then
    reject("hooks.malformed", "hook event is not {event=, payload=, ts=, nonce=}")
  end
  ev.ts = ts
  local now = os.time()
  if math.abs(now - ev.ts) > M.WINDOW_S then
    reject("hooks.stale", string.format("hook event is %d s away from the daemon's clock", now - ev.ts))
  end
  local mine = seen[sandbox]
  if not mine then mine = {}; seen[sandbox] = mine end
  for n, exp in pairs(mine) do if exp < now then mine[n] = nil end end
  if mine[ev.nonce] then reject("hooks.replay", "hook event replayed (nonce already used)") end
  mine[ev.nonce] = now + 2 * M.WINDOW_S
  return ev
end

--- Check a hook event as the shim sends it: `mac_hex` must be HMAC-SHA256(token, body) in
--- hex, then as `check_fresh`. Returns the decoded event, or raises
--- `hooks.bad_signature`, `hooks.malformed`, `hooks.stale` or `hooks.replay`.
---@param sandbox string
---@param token string the sandbox's hook token
---@param body string
---@param mac_hex string|nil
---@return table
function M.verify(sandbox, token, body, mac_hex)
  local crypto = require "foundry.crypto"
  if type(token) ~= "string" or token == "" then
    reject("hooks.bad_signature", "sandbox '" .. sandbox .. "' has no hook token")
  end
  if type(body) ~= "string" or type(mac_hex) ~= "string" then
    reject("hooks.bad_signature", "hook event without a signature")
  end
  local want = crypto.hex(crypto.hmac_sha256(token, body))
  if not crypto.equal(want, mac_hex:lower()) then
    reject("hooks.bad_signature", "hook event signature does not match the sandbox's token")
  end
  local ok, ev = pcall(require("foundry.json").decode, body)
  if not ok then reject("hooks.malformed", "hook event is not JSON") end
  return M.check_fresh(sandbox, ev)
end

-- ------------------------------------------------------------------ handlers

local attached = {} -- [sandbox name] = { [event] = { fn, ... } }
local closers = {}  -- [sandbox name] = { fn, ... } run by detach

local function key(event) return (tostring(event):gsub("-", "_")) end

--- Attach `fn(sandbox_row, event)` to `event` ("post-tool-use" and "post_tool_use" are
--- the same) for the sandbox `name`.
function M.on(name, event, fn)
  if type(name) ~= "string" then error("hooks.on: name: expected string, got " .. type(name), 2) end
  if type(fn) ~= "function" then error("hooks.on: fn: expected function, got " .. type(fn), 2) end
  local t = attached[name] or {}
  attached[name] = t
  local k = key(event)
  t[k] = t[k] or {}
  table.insert(t[k], fn)
end

--- Run `fn()` when the sandbox's hooks are detached (close its debouncers).
function M.on_detach(name, fn)
  closers[name] = closers[name] or {}
  table.insert(closers[name], fn)
end

--- Forget every handler of the sandbox `name` (and close what they hold).
function M.detach(name)
  attached[name] = nil
  seen[name] = nil
  local cs = closers[name]
  closers[name] = nil
  for _, fn in ipairs(cs or {}) do pcall(fn) end
end

--- True when handlers are attached to `name` (for any event).
function M.attached(name) return attached[name] ~= nil end

-- The hooks settings of a sandbox: its spec's (recorded at creation), else its preset's.
local function settings(row)
  local spec = type(row.spec) == "table" and row.spec or {}
  if type(spec.hooks) == "table" then return spec.hooks, "spec" end
  if type(spec.preset) == "table" and type(spec.preset.hooks) == "table" then return spec.preset.hooks, "spec" end
  if type(row.preset) == "string" and row.preset ~= "" then
    local ok, p = pcall(function() return require("foundry.preset").load(row.preset) end)
    if ok and type(p) == "table" and type(p.hooks) == "table" then return p.hooks, "preset" end
    if not ok then
      M.report(row.name, "error", "cannot load preset '" .. row.preset .. "' for its hooks: " .. errors.message(p))
    end
  end
  return nil
end

--- Attach the handlers a sandbox's settings ask for (once; `hooks.detach` forgets them):
--- `post_tool_use = "commit"` or `true` is `hooks.auto_commit{debounce_ms=, push=}`, a
--- function is called for every event. Returns the number of handlers attached.
function M.attach(row)
  if attached[row.name] then return 0 end
  attached[row.name] = {}
  local cfg = settings(row)
  if not cfg then return 0 end
  local n = 0
  local ptu = cfg.post_tool_use
  if ptu == "commit" or ptu == true then
    M.on(row.name, "post_tool_use", M.auto_commit{ debounce_ms = cfg.debounce_ms, push = cfg.push })
    n = n + 1
  elseif type(ptu) == "function" then
    M.on(row.name, "post_tool_use", ptu)
    n = n + 1
  end
  for k, v in pairs(cfg) do
    if type(v) == "function" and k ~= "post_tool_use" then
      M.on(row.name, k, v)
      n = n + 1
    end
  end
  return n
end

--- Run the handlers of `sandbox` (a state row) for `event` ({event=, payload=, ...}), each
--- in its own task. Returns the tasks (join them to wait); failures are reported, not
--- raised.
---@param sandbox table a sandbox row (name, workspace, branch, ...)
---@param event table
---@return table tasks
function M.dispatch(sandbox, event)
  if type(sandbox) ~= "table" or type(sandbox.name) ~= "string" then
    error("hooks.dispatch: sandbox: expected a sandbox row", 2)
  end
  if type(event) ~= "table" or type(event.event) ~= "string" then
    error("hooks.dispatch: event: expected {event=...}", 2)
  end
  if not attached[sandbox.name] then M.attach(sandbox) end
  local fns = (attached[sandbox.name] or {})[key(event.event)] or {}
  local tasks = {}
  for i, fn in ipairs(fns) do
    local t = task.spawn(function()
      local ok, err = pcall(fn, sandbox, event)
      if not ok then
        M.report(sandbox.name, "error", string.format("%s hook #%d failed: %s", event.event, i, errors.message(err)),
          { event = event.event, code = errors.is(err) and err.code or nil })
      end
    end)
    t.name = "hook " .. sandbox.name .. " " .. event.event
    tasks[#tasks + 1] = t
  end
  return tasks
end

-- ------------------------------------------------------------------ auto-commit

--- The shipped post-tool-use hook: after `debounce_ms` (5000) without a new event, commit
--- every change in the sandbox's workspace and (with `push`, the default) push its branch.
--- `message(changes)` may return the commit message. Needs `foundry.git.commit_all`.
---@param opts? {debounce_ms?: integer, push?: boolean, message?: fun(changes: table): string}
---@return fun(sandbox: table, event: table)
function M.auto_commit(opts)
  opts = opts or {}
  local ms = opts.debounce_ms or 5000
  local per = {} -- [sandbox name] = debouncer
  return function(sb, event)
    local d = per[sb.name]
    if not d then
      d = M.debounce(ms, function(calls)
        M.commit_and_push(sb, calls, opts)
      end, {
        name = "auto-commit " .. sb.name,
        on_error = function(err)
          M.report(sb.name, "error", "auto-commit failed: " .. errors.message(err),
            { code = errors.is(err) and err.code or nil })
        end,
      })
      per[sb.name] = d
      M.on_detach(sb.name, function() per[sb.name] = nil; d:close() end)
    end
    d(event)
  end
end

-- The tools named by a batch of post-tool-use events (Claude Code's payload has
-- tool_name), counted: "Edit ×3, Write".
local function tools_of(calls)
  local counts, order = {}, {}
  for _, c in ipairs(calls) do
    local ev = c[1]
    local p = type(ev) == "table" and ev.payload
    local name = type(p) == "table" and type(p.tool_name) == "string" and p.tool_name or nil
    if name then
      if not counts[name] then order[#order + 1] = name; counts[name] = 0 end
      counts[name] = counts[name] + 1
    end
  end
  local out = {}
  for _, n in ipairs(order) do out[#out + 1] = counts[n] > 1 and (n .. " ×" .. counts[n]) or n end
  return table.concat(out, ", ")
end

--- The default auto-commit message: how many files, which (up to 20), and which tools
--- changed them.
function M.default_message(changes, calls)
  local files = {}
  for i, c in ipairs(changes) do
    if i > 20 then files[#files + 1] = "  … and " .. (#changes - 20) .. " more"; break end
    local kind = c.worktree or c.index or "changed"
    files[#files + 1] = "  " .. (kind == "untracked" and "added" or kind) .. ": " .. c.path
  end
  local tools = tools_of(calls or {})
  return string.format("foundry: auto-commit %d file%s%s\n\n%s\n", #changes, #changes == 1 and "" or "s",
    tools ~= "" and (" (" .. tools .. ")") or "", table.concat(files, "\n"))
end

--- Commit all changes of `sb.workspace` and push: the body of auto_commit's run, after
--- `#calls` events. Returns the new commit's id, or nil when there was nothing to commit.
function M.commit_and_push(sb, calls, opts)
  local ok, git = pcall(require, "foundry.git")
  if not ok or type(git) ~= "table" or type(git.commit_all) ~= "function" then
    errors.raise("hooks.unavailable", "auto-commit needs foundry.git.commit_all, which this build does not have")
  end
  if type(sb.workspace) ~= "string" or sb.workspace == "" then
    errors.raise("hooks.no_workspace", "sandbox '" .. sb.name .. "' has no workspace to commit")
  end
  local message = opts.message
  local id = git.commit_all(sb.workspace, {
    -- commit_all retries while the agent's own git holds index.lock
    message = function(changes)
      if type(message) == "function" then return message(changes, calls) end
      return message or M.default_message(changes, calls)
    end,
  })
  if not id then
    M.report(sb.name, "info", "auto-commit: nothing to commit")
    return nil
  end
  M.report(sb.name, "info", string.format("auto-commit %s after %d event%s", id:sub(1, 12), #calls,
    #calls == 1 and "" or "s"))
  if opts.push ~= false then
    if type(git.push) == "function" then
      git.push(sb.workspace, { sandbox = sb })
      M.report(sb.name, "info", "auto-commit " .. id:sub(1, 12) .. " pushed")
    elseif sb.container_id then
      -- pushed from inside the sandbox, through the proxy's git rules (foundry.hooks_git)
      local r = require("foundry.hooks_git").push(sb)
      M.report(sb.name, r.ok and "info" or "warn", r.message, { rule = r.rule, refused = r.refused })
      if r.refused then M.dispatch(sb, { event = "push_denied", payload = { rule = r.rule, reason = r.reason } }) end
    elseif not opts._push_noted then
      opts._push_noted = true
      M.report(sb.name, "warn", "auto-commit: not pushed (this build's foundry.git cannot push yet)")
    end
  end
  return id
end

return M
