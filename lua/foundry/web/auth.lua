--- Who may use the web console: the holder of its access token, on this machine.
---
--- - A random 256-bit token is made when the console starts and printed in its URL
---   (`http://127.0.0.1:PORT/?token=...`). The first request with it gets a session
---   cookie (HttpOnly, SameSite=Strict, another random 256-bit value) and a redirect to
---   the same page without the token, so the token leaves the address bar and history.
---   Scripts may send `Authorization: Bearer TOKEN` instead. Every comparison is
---   constant-time.
--- - The Host header must name the console's own address (127.0.0.1, localhost or [::1]
---   with its port): a page on another site that rebinds its DNS name to 127.0.0.1 is
---   refused (DNS rebinding).
--- - Requests that change something must come from the console's own pages: an Origin
---   header, when present, must be the console's; bodies must be JSON (a cross-site form
---   cannot send that without a CORS preflight, which the console never answers).
--- - Terminal WebSockets carry a ticket: HMAC-SHA-256 (a key made at start) over the
---   sandbox's name, an expiry (60 s) and a nonce; each ticket opens one connection.
local crypto = require "foundry.crypto"

local M = {}

M.TICKET_TTL_MS = 60 * 1000

local function now_ms()
  local s, us = require("luv").gettimeofday()
  return s * 1000 + us // 1000
end

local Guard = {}
Guard.__index = Guard
Guard.__name = "foundry.web.Guard"
function Guard:__tostring() return "foundry.web.Guard (port " .. tostring(self.port) .. ")" end

--- A guard for a console bound to `host`:`port`. `opts.token` (64 hex digits) reuses a
--- token; by default a new one is made.
function M.new(host, port, opts)
  opts = opts or {}
  local token = opts.token or crypto.token(32)
  if type(token) ~= "string" or not token:match("^%x+$") or #token < 32 then
    error("web.auth.new: token: expected at least 32 hex digits", 2)
  end
  local g = setmetatable({
    host = host, port = port,
    token = token,
    session = crypto.token(32),
    key = crypto.random_bytes(32),
    used = {},        -- nonce -> expiry of tickets already used
    now = opts.now or now_ms,
  }, Guard)
  g.cookie_name = "foundry_console_" .. tostring(port)
  g.hosts = {}
  local names = { "127.0.0.1", "localhost", "[::1]" }
  if host and host ~= "127.0.0.1" and host ~= "::1" and host ~= "localhost" and host ~= "0.0.0.0" and host ~= "::" then
    names[#names + 1] = host:find(":", 1, true) and ("[" .. host .. "]") or host
  end
  for _, n in ipairs(names) do
    g.hosts[n .. ":" .. port] = true
    if port == 80 then g.hosts[n] = true end
  end
  g.origins = {}
  for h in pairs(g.hosts) do g.origins["http://" .. h] = true end
  return g
end

--- The console's URL with the token (what `foundry serve` prints).
function Guard:url(path)
  local h = self.host
  if h == "0.0.0.0" or h == "::" or h == nil then h = "127.0.0.1" end
  if h:find(":", 1, true) then h = "[" .. h .. "]" end
  return "http://" .. h .. ":" .. self.port .. (path or "/") .. "?token=" .. self.token
end

--- True when the Host header names this console.
function Guard:host_ok(req)
  local h = req.headers.host
  return type(h) == "string" and self.hosts[h:lower()] == true
end

--- True when the request has no Origin, or the console's own.
function Guard:origin_ok(req)
  local o = req.headers.origin
  if o == nil then return true end
  return self.origins[o:lower()] == true
end

--- True when the query's token is the console's.
function Guard:token_ok(value)
  return type(value) == "string" and #value == #self.token and crypto.equal(value, self.token)
end

--- How the request is authenticated: "cookie", "bearer", or nil.
function Guard:authenticated(req)
  local c = req:cookies()[self.cookie_name]
  if type(c) == "string" and #c == #self.session and crypto.equal(c, self.session) then return "cookie" end
  local auth = req.headers.authorization
  local bearer = type(auth) == "string" and auth:match("^[Bb]earer%s+(%S+)%s*$")
  if bearer and self:token_ok(bearer) then return "bearer" end
  return nil
end

--- The Set-Cookie value that signs a browser in.
function Guard:set_cookie()
  return self.cookie_name .. "=" .. self.session .. "; Path=/; HttpOnly; SameSite=Strict"
end

local function mac(key, name, exp, nonce)
  return crypto.hex(crypto.hmac_sha256(key, "terminal\0" .. name .. "\0" .. exp .. "\0" .. nonce))
end

--- A ticket for one terminal connection to sandbox `name`, valid `ttl_ms` (60 s).
function Guard:ticket(name, ttl_ms)
  local exp = self.now() + (ttl_ms or M.TICKET_TTL_MS)
  local nonce = crypto.token(12)
  return string.format("%d~%s~%s", exp, nonce, mac(self.key, name, exp, nonce))
end

--- Check (and use up) a ticket for sandbox `name`. Returns true, or false and why.
function Guard:check_ticket(name, ticket)
  if type(ticket) ~= "string" or type(name) ~= "string" then return false, "no ticket" end
  local exp, nonce, sig = ticket:match("^(%d+)~(%x+)~(%x+)$")
  if not exp or #sig ~= 64 or #nonce ~= 24 then return false, "malformed ticket" end
  local good = mac(self.key, name, exp, nonce)
  if not crypto.equal(good, sig:lower()) then return false, "bad signature" end
  local now = self.now()
  if tonumber(exp) < now then return false, "expired ticket" end
  for n, e in pairs(self.used) do if e < now then self.used[n] = nil end end
  if self.used[nonce] then return false, "ticket already used" end
  self.used[nonce] = tonumber(exp)
  return true
end

return M
