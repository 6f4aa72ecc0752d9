--- A tiny reverse proxy for the git safety tests and benchmark: the smallest thing that
--- drives a gitsafety guard the way the proxy engine does (classify, request, response),
--- so the rules can be tested with the real `git` before and besides the real engine.
---
---   local gp = dofile("tests/lib/git_proxy.lua")
---   local p = gp.start{ upstream = port, host = "github.com", guard = guard }
---   -- git clone http://127.0.0.1:<p.port>/owner/name.git
---   p:close()
---
--- Plain HTTP on both sides (TLS is the engine's business, not the rules'); every answer
--- closes its connection. `opts.handler(req)` may replace the guard: it returns a verdict
--- or nil to forward unchanged. `p.forwarded` counts requests that reached the upstream.
local uv = require "luv"
local task = require "foundry._task"
local errors = require "foundry.errors"
local net = dofile("tests/lib/net.lua")

local M = {}

-- Read from a net stream with a byte count, without quadratic concatenation.
local Reader = {}
Reader.__index = Reader

local function reader(s) return setmetatable({ s = s, buf = "" }, Reader) end

function Reader:fill()
  local c = self.s:read(30000)
  if not c then return false end
  self.buf = self.buf .. c
  return true
end

function Reader:until_crlf2()
  while true do
    local i = self.buf:find("\r\n\r\n", 1, true)
    if i then
      local head = self.buf:sub(1, i + 1)
      self.buf = self.buf:sub(i + 4)
      return head
    end
    if not self:fill() then return nil end
  end
end

function Reader:line()
  while true do
    local i = self.buf:find("\r\n", 1, true)
    if i then
      local l = self.buf:sub(1, i - 1)
      self.buf = self.buf:sub(i + 2)
      return l
    end
    if not self:fill() then return nil end
  end
end

function Reader:bytes(n)
  local parts, have = { self.buf }, #self.buf
  while have < n do
    local c = self.s:read(30000)
    if not c then return nil end
    parts[#parts + 1] = c
    have = have + #c
  end
  local all = table.concat(parts)
  self.buf = all:sub(n + 1)
  return all:sub(1, n)
end

function Reader:rest()
  local parts = { self.buf }
  while true do
    local c = self.s:read(30000)
    if not c then break end
    parts[#parts + 1] = c
  end
  self.buf = ""
  return table.concat(parts)
end

local function parse_head(head)
  local first = head:match("^([^\r\n]*)")
  local headers, order = {}, {}
  for k, v in head:gmatch("\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
    local lk = k:lower()
    headers[lk] = headers[lk] and (headers[lk] .. ", " .. v) or v
    order[#order + 1] = { k, v }
  end
  return first, headers, order
end

local function read_body(r, headers, until_eof)
  if (headers["transfer-encoding"] or ""):lower():find("chunked", 1, true) then
    local parts = {}
    while true do
      local l = r:line()
      if not l then return nil end
      local n = tonumber(l:match("^%x+"), 16)
      if not n then return nil end
      if n == 0 then
        repeat l = r:line() until not l or l == ""
        break
      end
      parts[#parts + 1] = r:bytes(n)
      r:line()
    end
    return table.concat(parts)
  end
  local n = tonumber(headers["content-length"] or "")
  if n then return r:bytes(n) end
  if until_eof then return r:rest() end
  return ""
end

local HOP = { connection = true, ["keep-alive"] = true, ["proxy-connection"] = true, te = true,
              trailer = true, ["transfer-encoding"] = true, upgrade = true, ["content-length"] = true,
              host = true }

local function send_response(s, resp)
  local out = { string.format("HTTP/1.1 %d %s\r\n", resp.status, resp.reason or "OK") }
  for k, v in pairs(resp.headers or {}) do
    if not HOP[k:lower()] then out[#out + 1] = k .. ": " .. v .. "\r\n" end
  end
  out[#out + 1] = "Content-Length: " .. #(resp.body or "") .. "\r\nConnection: close\r\n\r\n"
  s:write(table.concat(out))
  if resp.body and resp.body ~= "" then s:write(resp.body) end
end

-- Send `req` to the upstream and read its whole response.
local function forward(self, req, remove)
  local up = net.tcp_connect("127.0.0.1", self.upstream)
  local drop = {}
  for _, h in ipairs(remove or {}) do drop[h:lower()] = true end
  local out = { req.method .. " " .. req.target .. " HTTP/1.1\r\n", "Host: " .. self.host .. "\r\n" }
  for _, kv in ipairs(req.order) do
    local lk = kv[1]:lower()
    if not HOP[lk] and not drop[lk] then out[#out + 1] = kv[1] .. ": " .. kv[2] .. "\r\n" end
  end
  out[#out + 1] = "Content-Length: " .. #req.body .. "\r\nConnection: close\r\n\r\n"
  up:write(table.concat(out))
  if #req.body > 0 then up:write(req.body) end
  self.forwarded = self.forwarded + 1
  local r = reader(up)
  local head = r:until_crlf2()
  if not head then up:close(); errors.raise("io.error", "the upstream closed without answering") end
  local first, headers = parse_head(head)
  local status, reason = first:match("^HTTP/1%.%d (%d+) ?(.*)$")
  local body = req.method == "HEAD" and "" or read_body(r, headers, true)
  up:close()
  return { status = tonumber(status), reason = reason, headers = headers, body = body }
end

local function handle(self, s)
  local r = reader(s)
  local head = r:until_crlf2()
  if not head then return end
  local first, headers, order = parse_head(head)
  local method, target = first:match("^(%S+) (%S+)")
  local body = read_body(r, headers, false) or ""
  local path, query = target:match("^([^?]*)%??(.*)$")
  local req = { method = method, target = target, host = self.host, path = path, query = query,
                headers = headers, order = order, body = body }
  local verdict
  if self.handler then
    verdict = self.handler(req)
  elseif self.guard:classify(req) then
    verdict = self.guard:request(req)
  end
  self.verdicts[#self.verdicts + 1] = verdict or { action = "forward" }
  if verdict and verdict.action == "respond" then
    return send_response(s, verdict)
  end
  local resp = forward(self, req, verdict and verdict.remove_headers)
  if verdict and verdict.filter then resp = self.guard:response(req, resp) end
  send_response(s, resp)
end

--- Start the proxy: `{upstream = port, host = "github.com", guard = g | handler = fn}`.
--- Returns `{port=, forwarded=, verdicts={...}, close=}`.
function M.start(opts)
  local self = { upstream = opts.upstream, host = opts.host or "github.com", guard = opts.guard,
                 handler = opts.handler, forwarded = 0, verdicts = {}, tasks = {} }
  local srv = uv.new_tcp()
  assert(srv:bind("127.0.0.1", 0))
  self.port = srv:getsockname().port
  assert(srv:listen(128, function(err)
    if err then return end
    local c = uv.new_tcp()
    if not srv:accept(c) then c:close() return end
    local s = net.stream(c)
    local t = task.spawn(function()
      local ok, e = pcall(handle, self, s)
      if not ok then
        self.errors = self.errors or {}
        self.errors[#self.errors + 1] = errors.message(e)
        pcall(send_response, s, { status = 502, headers = { ["content-type"] = "text/plain" },
                                  body = "git_proxy: " .. errors.message(e) .. "\n" })
      end
      s:close()
    end)
    self.tasks[#self.tasks + 1] = t
  end))
  function self.close()
    if not srv:is_closing() then srv:close() end
    for _, t in ipairs(self.tasks) do pcall(t.join, t) end
  end
  return self
end

return M
