--- Test helpers over luv: stream sockets as tasks see them, small servers, and
--- long-running processes. Load with `local net = dofile("tests/lib/net.lua")`.
local uv = require "luv"
local task = require "foundry._task"
local errors = require "foundry.errors"

local M = {}

-- ---------------------------------------------------------------- streams

local Stream = {}
Stream.__index = Stream

--- Wrap a connected luv stream (pipe or tcp).
function M.stream(h)
  local s = setmetatable({ h = h, chunks = {}, eof = false }, Stream)
  h:read_start(function(err, data)
    if err then
      s.err, s.eof = err, true
    elseif data then
      s.chunks[#s.chunks + 1] = data
    else
      s.eof = true
    end
    local w = s.waiter
    if w then s.waiter = nil; w:resolve() end
  end)
  return s
end

--- The next chunk, or nil at the end of the stream (or on a reset: see s.err).
function Stream:read(timeout)
  while #self.chunks == 0 and not self.eof do
    local w = task.wait("net.read", function() self.waiter = nil end, timeout or 10000)
    self.waiter = w
    w:await()
  end
  return table.remove(self.chunks, 1)
end

--- Everything until the end of the stream.
function Stream:read_all(timeout)
  local out = {}
  for chunk in function() return self:read(timeout) end do out[#out + 1] = chunk end
  return table.concat(out)
end

--- Read until `pattern` (plain) has been seen; returns everything read so far.
function Stream:read_until(pattern, timeout)
  local buf = ""
  while not buf:find(pattern, 1, true) do
    local c = self:read(timeout)
    if not c then break end
    buf = buf .. c
  end
  return buf
end

--- Put back data read too far.
function Stream:unread(data)
  if data and data ~= "" then table.insert(self.chunks, 1, data) end
end

local function stream_op(what, start)
  local w = task.wait(what, nil, 10000)
  start(function(err)
    if err then w:reject(errors.new("io.error", what .. ": " .. tostring(err))) else w:resolve() end
  end)
  return w:await()
end

function Stream:write(data)
  return stream_op("net.write", function(cb) self.h:write(data, cb) end)
end

function Stream:shutdown()
  return stream_op("net.shutdown", function(cb) self.h:shutdown(cb) end)
end

function Stream:close()
  if not self.h:is_closing() then self.h:close() end
end

local function connect(h, what, ...)
  local args = table.pack(...)
  local w = task.wait(what, nil, 10000)
  args[args.n + 1] = function(err)
    if err then w:reject(errors.new("io.connect", what .. ": " .. tostring(err))) else w:resolve() end
  end
  h:connect(table.unpack(args, 1, args.n + 1))
  local ok, err = pcall(w.await, w)
  if not ok then h:close(); error(err, 0) end
  return M.stream(h)
end

function M.tcp_connect(host, port) return connect(uv.new_tcp(), "tcp connect", host, port) end
function M.unix_connect(path) return connect(uv.new_pipe(false), "unix connect", path) end

--- A free TCP port on 127.0.0.1 (free when asked: good enough for tests).
function M.free_port()
  local t = uv.new_tcp()
  t:bind("127.0.0.1", 0)
  local port = t:getsockname().port
  t:close()
  return port
end

--- True when something listens on TCP `port` (IPv4 or IPv6), from /proc/net/tcp*.
function M.tcp_listening(port)
  local hex = string.format(":%04X ", port)
  for _, f in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    local fh = io.open(f)
    if fh then
      for line in fh:lines() do
        -- sl local_address rem_address st ...; st 0A is LISTEN
        local loc, st = line:match("^%s*%d+: (%x+:%x+) %x+:%x+ (%x%x)")
        if loc and st == "0A" and (loc .. " "):find(hex, 1, true) then fh:close() return true end
      end
      fh:close()
    end
  end
  return false
end

-- ---------------------------------------------------------------- servers

--- A Unix-socket server: `handler(stream)` runs in its own task per connection.
--- Returns {path=, accepted=, close=fn}; close() stops listening and waits for the
--- handlers (it does not unlink the socket file).
function M.unix_server(path, handler)
  local srv = uv.new_pipe(false)
  assert(srv:bind(path))
  local tasks = {}
  local self = { path = path, accepted = 0 }
  assert(srv:listen(512, function(err)
    if err then return end
    local c = uv.new_pipe(false)
    if not srv:accept(c) then c:close() return end
    self.accepted = self.accepted + 1
    local s = M.stream(c)
    tasks[#tasks + 1] = task.spawn(function()
      local ok, e = pcall(handler, s)
      s:close()
      if not ok then error(e, 0) end
    end)
  end))
  function self.close()
    if not srv:is_closing() then srv:close() end
    for _, t in ipairs(tasks) do pcall(t.join, t) end
  end
  return self
end

--- Parse one HTTP/1.1 request (headers and a Content-Length body) from a stream.
function M.read_http_request(s)
  local buf = s:read_until("\r\n\r\n")
  local head, rest = buf:match("^(.-\r\n)\r\n(.*)$")
  if not head then return nil end
  local line = head:match("^([^\r\n]*)")
  local req = { line = line, headers = {} }
  req.method, req.target = line:match("^(%S+) (%S+)")
  for k, v in head:gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do req.headers[k:lower()] = v end
  local n = tonumber(req.headers["content-length"] or "0")
  while #rest < n do
    local c = s:read()
    if not c then break end
    rest = rest .. c
  end
  req.body = rest:sub(1, n)
  return req
end

-- ---------------------------------------------------------------- processes

local function environment(env)
  local merged = {}
  for k, v in pairs(uv.os_environ()) do merged[k] = v end
  for k, v in pairs(env or {}) do
    if v == false then merged[k] = nil else merged[k] = tostring(v) end
  end
  local list = {}
  for k, v in pairs(merged) do list[#list + 1] = k .. "=" .. v end
  return list
end

--- Start a process and keep it running: returns p with p.pid, p:kill(sig),
--- p:wait(timeout_ms) -> status, signal, p:stderr() and p:stdout() (so far).
function M.start(argv, opts)
  opts = opts or {}
  local out, err = uv.new_pipe(false), uv.new_pipe(false)
  local p = { out = {}, err = {}, done = false }
  local pending = 3
  local function finish()
    pending = pending - 1
    if pending == 0 then
      p.done = true
      if p.waiter then local w = p.waiter; p.waiter = nil; w:resolve() end
    end
  end
  local args = {}
  for i = 2, #argv do args[#args + 1] = argv[i] end
  local handle, pid
  handle, pid = uv.spawn(argv[1], {
    args = args, stdio = { nil, out, err }, env = environment(opts.env), cwd = opts.cwd,
  }, function(code, sig)
    p.status, p.signal = code, sig
    handle:close()
    finish()
  end)
  if not handle then
    out:close(); err:close()
    error("cannot start " .. argv[1] .. ": " .. tostring(pid), 2)
  end
  p.pid = pid
  M.started[#M.started + 1] = p
  out:read_start(function(_, c) if c then p.out[#p.out + 1] = c else out:close(); finish() end end)
  err:read_start(function(_, c) if c then p.err[#p.err + 1] = c else err:close(); finish() end end)
  function p:kill(sig)
    if not self.done and not handle:is_closing() then handle:kill(sig or "sigterm") end
  end
  function p:wait(timeout)
    if not self.done then
      local w = task.wait("process " .. argv[1], function() self.waiter = nil end, timeout or 10000)
      self.waiter = w
      w:await()
    end
    return self.status, self.signal
  end
  --- Stop it (SIGKILL) and wait: for cleanups.
  function p:stop()
    if not self.done then self:kill("sigkill"); pcall(self.wait, self, 5000) end
  end
  function p:stderr() return table.concat(self.err) end
  function p:stdout() return table.concat(self.out) end
  return p
end

--- Processes started by M.start, for M.cleanup.
M.started = {}

--- Kill (SIGKILL) and wait for every process M.start started that is still running:
--- call it in after_each so a failed test leaves nothing behind.
function M.cleanup()
  local list = M.started
  M.started = {}
  for _, p in ipairs(list) do p:stop() end
end

--- Poll `fn` every `step` ms until it returns a true value or `timeout` ms pass.
function M.eventually(fn, timeout, step)
  local deadline = uv.hrtime() + (timeout or 5000) * 1e6
  while true do
    local v = fn()
    if v then return v end
    if uv.hrtime() > deadline then return v end
    task.sleep(step or 20)
  end
end

--- Milliseconds, monotonic.
function M.now() return uv.hrtime() / 1e6 end

return M
