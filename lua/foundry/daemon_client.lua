--- Talking to the Foundry daemon from the CLI (and from scripts).
---
---   local client = require "foundry.daemon_client"
---   client.ensure()                                  -- start it if nothing answers
---   client.call("register", { sandbox = "web-1" })   -- the result, or raises
---
--- `call` raises `daemon.unreachable` (with a hint) when no daemon answers, `timeout`
--- when it does not answer in time, and the daemon's own error objects (their `code`,
--- `message` and `hint` as the daemon raised them) when an operation fails.
local uv = require "luv"
local task = require "foundry._task"
local errors = require "foundry.errors"
local json = require "foundry.json"
local paths = require "foundry.paths"

local M = {}

--- How long `start` (and so `ensure`) waits for a new daemon to answer.
M.START_TIMEOUT_MS = 5000
--- Default time limit of one call.
M.CALL_TIMEOUT_MS = 30000

local next_id = 0

-- JSON numbers decode as floats (5.0); pids, counts and times are integers.
local function integers(v)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) ~= "table" then return v end
  for k, x in pairs(v) do v[k] = integers(x) end
  return v
end

local function unreachable(path, err)
  return errors.new("daemon.unreachable", "the foundry daemon is not running (" ..
    path .. ": " .. tostring(err):gsub("^%u+: ", "") .. ")",
    "start it with 'foundry daemon start' (commands that need it start it themselves)")
end

--- Send one request and return the daemon's result. `opts.timeout` in ms.
---@param op string
---@param args? table
---@param opts? {timeout?: integer}
---@return any
function M.call(op, args, opts)
  if type(op) ~= "string" then error("daemon_client.call: op: expected string, got " .. type(op), 2) end
  local timeout = opts and opts.timeout or M.CALL_TIMEOUT_MS
  local path = paths.control_socket()
  next_id = next_id + 1
  local req = {}
  for k, v in pairs(args or {}) do req[k] = v end
  req.op, req.id = op, next_id
  local line = json.encode(req) .. "\n"

  local pipe = uv.new_pipe(false)
  local buf, done = "", false
  local w
  local function finish(ok, v)
    if done then return end
    done = true
    if not pipe:is_closing() then pipe:close() end
    if ok then w:resolve(v) else w:reject(v) end
  end
  w = task.wait("daemon " .. op, function()
    done = true
    if not pipe:is_closing() then pipe:close() end
  end, timeout)
  local cok, cerr = pipe:connect(path, function(err)
    if err then return finish(false, unreachable(path, err)) end
    pipe:write(line)
    pipe:read_start(function(rerr, data)
      if rerr then return finish(false, unreachable(path, rerr)) end
      if not data then
        return finish(false, errors.new("daemon.unreachable",
          "the foundry daemon closed the connection without answering '" .. op .. "'",
          "see its log: " .. require("foundry.daemon").files().log))
      end
      buf = buf .. data
      local nl = buf:find("\n", 1, true)
      if nl then finish(true, buf:sub(1, nl - 1)) end
    end)
  end)
  if not cok then finish(false, unreachable(path, cerr)) end
  local ok, answer = pcall(w.await, w)
  if not ok then
    if errors.is(answer, "timeout") then
      errors.raise("daemon.timeout", "the foundry daemon did not answer '" .. op .. "' within " .. timeout .. " ms",
        "see its log: " .. require("foundry.daemon").files().log)
    end
    error(answer, 0)
  end
  local dok, resp = pcall(json.decode, answer)
  if not dok or type(resp) ~= "table" then
    errors.raise("daemon.protocol", "the foundry daemon sent something that is not JSON")
  end
  if resp.ok then
    if resp.result == json.null then return nil end
    return integers(resp.result)
  end
  local e = type(resp.error) == "table" and resp.error or {}
  errors.raise(e.code or "daemon.error", e.message or "the daemon failed", e.hint ~= json.null and e.hint or nil)
end

--- The daemon's ping answer `{pid=, version=, protocol=}`, or nil when none answers.
function M.ping(timeout)
  local ok, r = pcall(M.call, "ping", nil, { timeout = timeout or 2000 })
  if ok then return r end
  return nil, r
end

--- True when a daemon answers (none is started).
function M.running(timeout)
  return M.ping(timeout) ~= nil
end

--- Its status (see `foundry daemon status --json`), or nil when it is not running.
function M.status()
  local ok, r = pcall(M.call, "status", nil, { timeout = 5000 })
  if ok then return r end
  if errors.is(r, "daemon.unreachable") then return nil end
  error(r, 0)
end

-- The last lines of the log written since byte `from`.
local function log_tail(path, from, n)
  local f = io.open(path, "rb")
  if not f then return "" end
  f:seek("set", from or 0)
  local text = f:read("a") or ""
  f:close()
  local lines = {}
  for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return table.concat(lines, "\n", math.max(1, #lines - (n or 5) + 1))
end

--- Start a daemon in the background (setsid, output to its log file) and wait until it
--- answers. Returns its ping answer and true, or the running one's and false when one
--- already answers. Raises `daemon.start_failed` with the end of its log.
function M.start(opts)
  opts = opts or {}
  local r = M.ping()
  if r then return r, false end
  local files = require("foundry.daemon").files()
  paths.ensure(paths.state())
  paths.ensure(files.runtime)
  -- one old log kept
  local st = uv.fs_stat(files.log)
  if st and st.size > 10 * 1024 * 1024 then uv.fs_rename(files.log, files.log .. ".1") end
  local fd = assert(uv.fs_open(files.log, "a", tonumber("600", 8)))
  local from = (uv.fs_fstat(fd) or {}).size or 0
  -- This very program. Linux reports " (deleted)" once the file was replaced (a rebuild,
  -- an upgrade): then the new file at that path, or, while there is none, our own image.
  local exe = opts.exe or (uv.exepath():gsub(" %(deleted%)$", ""))
  if not uv.fs_stat(exe) and uv.fs_stat("/proc/self/exe") then exe = "/proc/self/exe" end
  local exited, status
  local handle, pid
  handle, pid = uv.spawn(exe, {
    args = { "daemon", "run" },
    stdio = { nil, fd, fd },
    detached = true,
    cwd = "/",
  }, function(code, sig)
    exited, status = true, sig ~= 0 and ("signal " .. sig) or ("status " .. code)
    handle:close()
  end)
  uv.fs_close(fd)
  if not handle then
    errors.raise("daemon.start_failed", "cannot start the foundry daemon: " .. tostring(pid))
  end
  -- The daemon outlives this command; do not keep the loop alive for it.
  handle:unref()
  local deadline = uv.hrtime() + (opts.timeout or M.START_TIMEOUT_MS) * 1e6
  while true do
    r = M.ping(1000)
    if r then return r, true end
    if exited or uv.hrtime() > deadline then break end
    task.sleep(25)
  end
  -- Another `start` may have won the race: its daemon answers, ours refused.
  r = M.ping(1000)
  if r then return r, false end
  local tail = log_tail(files.log, from, 5)
  local why = exited and (" (it exited with " .. status .. ")")
    or (" within " .. (opts.timeout or M.START_TIMEOUT_MS) .. " ms")
  errors.raise("daemon.start_failed", "the foundry daemon did not start" .. why ..
    (tail ~= "" and (":\n" .. tail) or ""), "its log is " .. files.log)
end

--- The daemon's ping answer, starting one first when none answers (as tmux starts its
--- server).
function M.ensure(opts)
  local r = M.ping()
  if r then return r end
  return (M.start(opts))
end

-- True while some process holds the daemon's lock.
local function lock_held()
  local native = require "foundry._daemon"
  local lk = native.lock(require("foundry.daemon").files().lock)
  if lk then lk:close() return false end
  return true
end

--- Stop the daemon: ask it to shut down, wait for it to go (SIGTERM, then SIGKILL, if it
--- does not within `opts.timeout` ms, default 5000). Returns the pid it had, or nil when
--- none was running.
function M.stop(opts)
  opts = opts or {}
  local r = M.ping()
  local files = require("foundry.daemon").files()
  local pid = r and r.pid
  if not pid then
    if not lock_held() then return nil end
    -- holds the lock but does not answer: stuck
    local f = io.open(files.lock)
    pid = f and tonumber((f:read("l") or ""):match("%d+"))
    if f then f:close() end
    if not pid then return nil end
  else
    pcall(M.call, "shutdown", nil, { timeout = 2000 })
  end
  local function gone(ms)
    local deadline = uv.hrtime() + ms * 1e6
    while lock_held() do
      if uv.hrtime() > deadline then return false end
      task.sleep(20)
    end
    return true
  end
  if gone(opts.timeout or 5000) then return pid end
  uv.kill(pid, "sigterm")
  if gone(2000) then return pid end
  uv.kill(pid, "sigkill")
  if gone(2000) then return pid end
  errors.raise("daemon.stop_failed", "the foundry daemon (pid " .. pid .. ") does not stop")
end

return M
