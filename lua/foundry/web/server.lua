--- A small HTTP/1.1 and WebSocket server on Foundry's loop: sockets through luv, requests
--- read by libhttp_parser and frames coded in C (`foundry._web`), one task per connection.
---
---   local server = require "foundry.web.server"
---   local s = server.new{ host = "127.0.0.1", port = 0, handler = function(req, res)
---     res:send(200, "hello\n", { ["content-type"] = "text/plain" })
---   end }
---   s:listen()            -- s.port is the port bound
---   ...
---   s:close()
---
--- The handler runs in the connection's task and may wait. `req` has `method`, `target`,
--- `path` (raw, without the query), `query` (decoded {name = value}), `headers` (lower-case
--- names), `body`, `cookies()`, `peer` ({ip=, port=}) and `upgrade_websocket()`. `res` has
--- `send(status, body, headers)`, `json(status, value, headers)`, `start(status, headers)`
--- then `write(chunk)` (a stream: the connection closes when the handler returns), and
--- `closed()`. Headers in `opts.headers` go on every response.
local uv = require "luv"
local task = require "foundry._task"
local web = require "foundry._web"
local errors = require "foundry.errors"
local json = require "foundry.json"

local M = {}

M.REASONS = {
  [101] = "Switching Protocols", [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other", [304] = "Not Modified",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [409] = "Conflict", [410] = "Gone", [413] = "Content Too Large",
  [415] = "Unsupported Media Type", [421] = "Misdirected Request", [426] = "Upgrade Required",
  [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable",
}

M.DEFAULTS = {
  max_body = 4 * 1024 * 1024,     -- the largest request body
  max_connections = 256,
  idle_ms = 75000,                -- a keep-alive connection without a request is closed
  write_ms = 30000,               -- a peer that does not read for this long is dropped
  max_message = 1024 * 1024,      -- the largest WebSocket message
}

-- ------------------------------------------------------------------ helpers

local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.pct_decode = pct_decode

--- Decode a query string: "a=1&b=x%20y" -> {a="1", b="x y"} (the first of repeated names).
function M.parse_query(q)
  local out = {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = pct_decode((k:gsub("+", " ")))
    if out[k] == nil then out[k] = pct_decode((v:gsub("+", " "))) end
  end
  return out
end

local function status_line(status)
  return string.format("HTTP/1.1 %d %s\r\n", status, M.REASONS[status] or "Status")
end

local function header_block(headers)
  local names = {}
  for k in pairs(headers) do names[#names + 1] = k end
  table.sort(names)
  local out = {}
  for _, k in ipairs(names) do
    local v = headers[k]
    if v ~= false and v ~= nil then
      v = tostring(v)
      if v:find("[\r\n]") or k:find("[^%w%-]") then error("web.server: bad header " .. k, 3) end
      out[#out + 1] = k .. ": " .. v .. "\r\n"
    end
  end
  return table.concat(out)
end

-- ------------------------------------------------------------------ connections

local Conn = {}
Conn.__index = Conn

-- Wake the connection's task, if it waits.
function Conn:wake(...)
  local w = self.waiter
  if w then
    self.waiter = nil
    w:resolve(...)
  end
end

--- Write bytes and wait until they are handed to the kernel. False when the connection
--- is closed (or closes meanwhile).
function Conn:write(data)
  if self.closed then return false end
  local w = task.wait("web.write", nil, self.server.opts.write_ms)
  local ok, req = pcall(self.tcp.write, self.tcp, data, function(err) w:resolve(err == nil) end)
  if not ok or not req then w:resolve(false) end
  local wok, res = pcall(w.await, w)
  if not wok then
    self:close()
    if errors.is(res, "cancelled") then error(res, 0) end
    return false
  end
  if not res then self:close() end
  return res and not self.closed
end

--- Close the socket (idempotent); wakes the task.
function Conn:close()
  if self.closed then return end
  self.closed = true
  self.server.conns[self] = nil
  if not self.tcp:is_closing() then self.tcp:close() end
  if self.parser then self.parser:close() end
  if self.ws then self.ws:_closed() end
  self:wake()
end

-- The socket's bytes: HTTP requests until an upgrade, then WebSocket frames.
function Conn:on_data(data)
  if self.ws then return self.ws:_feed(data) end
  if self.bad then return end -- the answer to malformed input is on its way
  local ok, reqs, rest, cont = pcall(self.parser.feed, self.parser, data)
  if not ok then
    self.bad = reqs
    self:wake()
    return
  end
  if cont then pcall(self.tcp.write, self.tcp, "HTTP/1.1 100 Continue\r\n\r\n") end
  for _, r in ipairs(reqs) do self.queue[#self.queue + 1] = r end
  if rest then
    self.upgrade_rest = rest
    self.tcp:read_stop()
  end
  if #reqs > 0 then self:wake() end
end

-- The next request, or nil when the connection ends (closed, idle, malformed).
function Conn:next_request()
  while #self.queue == 0 do
    if self.closed then return nil end
    if self.bad then
      local e = self.bad
      local status = type(e) == "table" and e.status or 400
      local body = (errors.message(e) or "bad request") .. "\n"
      self:write(status_line(status) .. header_block({ ["content-type"] = "text/plain; charset=utf-8",
        ["content-length"] = #body, connection = "close" }) .. "\r\n" .. body)
      self:close()
      return nil
    end
    local w = task.wait("web.request", function() self.waiter = nil end, self.server.opts.idle_ms)
    self.waiter = w
    local ok, err = pcall(w.await, w)
    if not ok then
      self:close()
      if errors.is(err, "cancelled") then error(err, 0) end
      return nil
    end
  end
  return table.remove(self.queue, 1)
end

-- ------------------------------------------------------------------ requests and responses

local Req = {}
Req.__index = Req

--- Cookies as {name = value}.
function Req:cookies()
  if self._cookies then return self._cookies end
  local out = {}
  for pair in (self.headers.cookie or ""):gmatch("[^;]+") do
    local k, v = pair:match("^%s*([^=%s]+)%s*=%s*(.-)%s*$")
    if k and out[k] == nil then out[k] = v end
  end
  self._cookies = out
  return out
end

local Res = {}
Res.__index = Res

local function base_headers(res, headers)
  local h = {}
  for k, v in pairs(res.conn.server.opts.headers or {}) do h[k] = v end
  for k, v in pairs(headers or {}) do h[k:lower()] = v end
  return h
end

--- A whole response. `body` is a string (may be empty).
function Res:send(status, body, headers)
  if self.sent then error("web.server: response already sent", 2) end
  self.sent, self.status = true, status
  body = body or ""
  local h = base_headers(self, headers)
  h["content-length"] = #body
  if not self.keep_alive then h.connection = "close" end
  if self.req.method == "HEAD" then body = "" end
  return self.conn:write(status_line(status) .. header_block(h) .. "\r\n" .. body)
end

--- A JSON response.
function Res:json(status, value, headers)
  local h = { ["content-type"] = "application/json; charset=utf-8" }
  for k, v in pairs(headers or {}) do h[k] = v end
  return self:send(status, json.encode(value), h)
end

--- Begin a streamed response (no length: it ends when the connection closes).
function Res:start(status, headers)
  if self.sent then error("web.server: response already sent", 2) end
  self.sent, self.status, self.streaming = true, status, true
  self.keep_alive = false
  local h = base_headers(self, headers)
  h.connection = "close"
  return self.conn:write(status_line(status) .. header_block(h) .. "\r\n")
end

--- Write a piece of a streamed response; false when the peer has gone.
function Res:write(chunk)
  if not self.streaming then error("web.server: write before start", 2) end
  return self.conn:write(chunk)
end

--- True when the peer has gone (or the server is closing).
function Res:closed() return self.conn.closed end

-- ------------------------------------------------------------------ WebSocket

local WS = {}
WS.__index = WS
WS.__name = "foundry.web.WebSocket"
function WS:__tostring() return "foundry.web.WebSocket (" .. (self.closed and "closed" or "open") .. ")" end

local function ws_wake(ws)
  local w = ws.waiter
  if w then ws.waiter = nil; w:resolve() end
end

function WS:_feed(data)
  if self.closed then return end
  local ok, msgs = pcall(self.decoder.feed, self.decoder, data)
  if not ok then
    local code = type(msgs) == "table" and msgs.close or 1002
    self:_send_raw(web.ws_frame("close", string.pack(">I2", code)))
    self.conn:close()
    return
  end
  for _, m in ipairs(msgs) do
    if m.op == "ping" then
      self:_send_raw(web.ws_frame("pong", m.data))
    elseif m.op == "close" then
      if not self.close_sent then
        self.close_sent = true
        self:_send_raw(web.ws_frame("close", m.code and string.pack(">I2", m.code) or ""))
      end
      self.peer_close = m.code or 1005
      self.closed = true
      -- the server closes the TCP connection after the closing handshake (RFC 6455 7.1.1)
      self.conn:close()
    elseif m.op == "text" or m.op == "binary" then
      self.inbox[#self.inbox + 1] = m
    end
  end
  ws_wake(self)
end

function WS:_closed()
  self.closed = true
  if self.decoder then self.decoder:close() end
  ws_wake(self)
end

-- Queue a frame without waiting (control frames from the read callback).
function WS:_send_raw(frame)
  if self.conn.closed then return end
  pcall(self.conn.tcp.write, self.conn.tcp, frame)
end

--- The next message `{op="text"|"binary", data=}`, or nil once the connection closed.
--- `timeout_ms` raises `timeout` when nothing came.
function WS:recv(timeout_ms)
  while #self.inbox == 0 do
    if self.closed then return nil end
    local w = task.wait("web.ws.recv", function() self.waiter = nil end, timeout_ms)
    self.waiter = w
    w:await()
  end
  return table.remove(self.inbox, 1)
end

--- Send a message (op "text" by default, or "binary"); false when the connection closed.
function WS:send(data, op)
  if self.closed or self.close_sent then return false end
  return self.conn:write(web.ws_frame(op or "text", data))
end

--- Start the closing handshake (code 1000 by default) and close the connection.
function WS:close(code, reason)
  if not self.closed and not self.close_sent then
    self.close_sent = true
    local payload = string.pack(">I2", code or 1000) .. (reason or ""):sub(1, 120)
    self.conn:write(web.ws_frame("close", payload))
  end
  self.conn:close()
end

--- Accept the request as a WebSocket (RFC 6455): answer 101 and return the socket, or
--- raise `web.bad_request` (the caller answers 400) when it is not a valid handshake.
function Req:upgrade_websocket(res, extra_headers)
  local h = self.headers
  local conn_tokens = (h.connection or ""):lower()
  if self.method ~= "GET" or not self.upgrade or (h.upgrade or ""):lower() ~= "websocket"
      or not conn_tokens:find("upgrade", 1, true) then
    errors.raise("web.bad_request", "not a WebSocket handshake")
  end
  if h["sec-websocket-version"] ~= "13" then
    errors.raise("web.bad_request", "unsupported WebSocket version (13 is spoken)")
  end
  local accept = web.ws_accept(h["sec-websocket-key"] or "")
  local conn = self.conn
  local hdrs = base_headers(res, extra_headers)
  hdrs.upgrade, hdrs.connection, hdrs["sec-websocket-accept"] = "websocket", "Upgrade", accept
  hdrs["content-security-policy"], hdrs["content-type"] = nil, nil
  res.sent, res.status, res.streaming = true, 101, true
  local ws = setmetatable({ conn = conn, inbox = {}, decoder = web.ws_decoder{
    server = true, max = conn.server.opts.max_message } }, WS)
  if not conn:write(status_line(101) .. header_block(hdrs) .. "\r\n") then
    ws.closed = true
    return ws
  end
  conn.ws = ws
  local rest = conn.upgrade_rest
  conn.upgrade_rest = nil
  if rest and rest ~= "" then ws:_feed(rest) end
  if not conn.closed then
    conn.tcp:read_start(function(err, data)
      if err or not data then conn:close() else conn:on_data(data) end
    end)
  end
  return ws
end

-- ------------------------------------------------------------------ the server

local Server = {}
Server.__index = Server
Server.__name = "foundry.web.Server"
function Server:__tostring()
  return "foundry.web.Server (" .. (self.tcp and ((self.host or "?") .. ":" .. tostring(self.port)) or "closed") .. ")"
end

--- A server, not yet listening. `opts`: host ("127.0.0.1"), port (0: any free one),
--- handler(req, res), headers (on every response), max_body, max_connections, idle_ms,
--- write_ms, max_message, log(level, message).
function M.new(opts)
  if type(opts) ~= "table" or type(opts.handler) ~= "function" then
    error("web.server.new: expected {handler=function(req, res) ... end, ...}", 2)
  end
  local o = {}
  for k, v in pairs(M.DEFAULTS) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  return setmetatable({ opts = o, conns = {}, tasks = {}, host = o.host or "127.0.0.1", port = o.port or 0 }, Server)
end

function Server:log(level, msg)
  if self.opts.log then pcall(self.opts.log, level, msg) end
end

--- Bind and listen. Raises `web.bind` (address in use, permission).
function Server:listen()
  local tcp = uv.new_tcp()
  local ok, err = tcp:bind(self.host, self.port)
  if ok then ok, err = tcp:listen(128, function(lerr)
      if not lerr then self:_accept() end
    end)
  end
  if not ok then
    tcp:close()
    local name = tostring(err):match("^(%u+)")
    errors.raise("web.bind", "cannot listen on " .. self.host .. ":" .. tostring(self.port) .. ": " .. tostring(err),
      name == "EADDRINUSE" and "another program uses that port: pick another with --port (0: any free port)" or nil,
      { errno = name })
  end
  self.tcp = tcp
  local addr = tcp:getsockname()
  self.port = addr.port
  return self
end

function Server:_accept()
  local client = uv.new_tcp()
  if not self.tcp or not self.tcp:accept(client) then client:close() return end
  local count = 0
  for _ in pairs(self.conns) do count = count + 1 end
  if count >= self.opts.max_connections then
    self:log("warn", "too many connections: one refused")
    client:close()
    return
  end
  client:nodelay(true)
  local conn = setmetatable({ server = self, tcp = client, parser = web.parser(self.opts.max_body), queue = {},
    peer = client:getpeername() or {} }, Conn)
  self.conns[conn] = true
  client:read_start(function(err, data)
    if err or not data then conn:close() else conn:on_data(data) end
  end)
  local t
  t = task.spawn(function()
    local ok, e = pcall(self._serve, self, conn)
    if not ok and not errors.is(e, "cancelled") then self:log("error", "connection: " .. errors.message(e)) end
    conn:close()
    self.tasks[t] = nil
    if self.closing and next(self.tasks) == nil and self.close_waiter then
      local w = self.close_waiter
      self.close_waiter = nil
      w:resolve()
    end
  end)
  t.name = "web connection"
  self.tasks[t] = true
end

function Server:_serve(conn)
  while not conn.closed do
    local r = conn:next_request()
    if not r then return end
    local path, query = r.target:match("^([^?#]*)%??([^#]*)")
    local req = setmetatable(r, Req)
    req.path, req.query_string = path or r.target, query or ""
    req.query = M.parse_query(req.query_string)
    req.conn, req.peer = conn, conn.peer
    local res = setmetatable({ conn = conn, req = req, keep_alive = r.keep_alive and not r.upgrade }, Res)
    local ok, err = pcall(self.opts.handler, req, res)
    if not ok then
      if errors.is(err, "cancelled") then error(err, 0) end
      self:log("error", r.method .. " " .. (req.path or "?") .. ": " .. errors.message(err))
      if not res.sent and not conn.closed then
        res.keep_alive = false
        res:send(500, "internal error\n", { ["content-type"] = "text/plain; charset=utf-8" })
      end
      return
    end
    if conn.ws then
      -- the handler returned: the socket's conversation is over
      if not conn.ws.closed then conn.ws:close(1001, "going away") end
      return
    end
    if not res.sent then res:send(204, "") end
    if res.streaming or not res.keep_alive or r.upgrade then return end
  end
end

--- Stop: no new connections; open ones are closed and their tasks cancelled. Waits
--- (at most `timeout_ms`, 5000) for the tasks to end. Idempotent.
function Server:close(timeout_ms)
  if self.closing then return end
  self.closing = true
  if self.tcp and not self.tcp:is_closing() then self.tcp:close() end
  self.tcp = nil
  for conn in pairs(self.conns) do conn:close() end
  local current = task.current()
  local pending = false
  for t in pairs(self.tasks) do
    if t ~= current then
      pending = true
      local st = t:status()
      if st ~= "done" and st ~= "failed" then t:cancel() end
    end
  end
  local ws = self.serve_waiters or {}
  self.serve_waiters = nil
  for _, w in ipairs(ws) do w:resolve() end
  if pending and next(self.tasks) ~= nil and current then
    local w = task.wait("web.close", function() self.close_waiter = nil end, timeout_ms or 5000)
    self.close_waiter = w
    pcall(w.await, w)
  end
end

--- Wait until the server is closed.
function Server:wait()
  while not self.closing do
    local w = task.wait("web.serve")
    self.serve_waiters = self.serve_waiters or {}
    self.serve_waiters[#self.serve_waiters + 1] = w
    w:await()
  end
end

return M
