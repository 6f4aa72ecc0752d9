--- The web console: the fleet of sandboxes and, for each, a HUD with Logs, Terminal,
--- File Changes, Editor, Audit and Chat, in a browser on this machine.
---
---   local web = require "foundry.web"
---   local console = web.start{ port = 0 }     -- binds 127.0.0.1
---   print(console.url)                        -- http://127.0.0.1:PORT/?token=...
---   console:wait()                            -- until console:close()
---
--- `foundry serve` runs it in the foreground; the daemon can run it too (see
--- docs/architecture.md "Web console"). Every request passes `Console:handle`: the Host
--- check, the token or session cookie, the origin check for changes, then the routes.
--- See foundry.web.auth for the security model.
local errors = require "foundry.errors"
local task = require "foundry._task"
local server = require "foundry.web.server"
local router = require "foundry.web.router"
local auth = require "foundry.web.auth"
local assets = require "foundry.web.assets"

local M = {}

M.DEFAULT_PORT = 7420

local function csp(port)
  local ws = {}
  -- (an IPv6 literal is not a valid CSP source: [::1] relies on 'self')
  for _, h in ipairs({ "127.0.0.1", "localhost" }) do ws[#ws + 1] = "ws://" .. h .. ":" .. port end
  return table.concat({
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "font-src 'self'",
    "connect-src 'self' " .. table.concat(ws, " "), "base-uri 'none'", "form-action 'none'",
    "frame-ancestors 'none'",
  }, "; ")
end

--- The headers on every answer.
function M.security_headers(port)
  return {
    ["content-security-policy"] = csp(port),
    ["x-content-type-options"] = "nosniff",
    ["x-frame-options"] = "DENY",
    ["referrer-policy"] = "no-referrer",
    ["cache-control"] = "no-store",
    ["cross-origin-opener-policy"] = "same-origin",
    ["cross-origin-resource-policy"] = "same-origin",
    ["permissions-policy"] = "camera=(), microphone=(), geolocation=(), usb=()",
  }
end

local Console = {}
Console.__index = Console
Console.__name = "foundry.web.Console"
function Console:__tostring() return "foundry.web.Console (" .. (self.base_url or "closed") .. ")" end

function Console:log(level, msg)
  if self.opts.log then pcall(self.opts.log, level, require("foundry.redact").text(msg)) end
end

--- Record a console action (or a refusal) in the audit log.
function Console:audit(req, sandbox, action, extra, decision)
  local ok, audit = pcall(require, "foundry.audit")
  if not ok then return end
  pcall(audit.append, { sandbox = sandbox, kind = "console", decision = decision or "allow", method = req.method,
    path = req.path, rule = action, data = extra })
end

--- Run `fn` as a task the console owns (creating, removing): cancelled when it closes.
function Console:background(name, fn)
  local t
  t = task.spawn(function()
    local ok, err = pcall(fn)
    self.jobs[t] = nil
    if not ok and not errors.is(err, "cancelled") then self:log("error", name .. ": " .. errors.message(err)) end
  end)
  t.name = "console " .. name
  self.jobs[t] = true
  return t
end

local PAGE_HEADERS = { ["content-type"] = "text/html; charset=utf-8" }

local function deny_page(res, status, title, text)
  local esc = function(s) return (s:gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" })) end
  res:send(status, "<!doctype html><meta charset=utf-8><title>Foundry</title><link rel=stylesheet href=/assets/app.css>" ..
    "<main class=denied><h1>" .. esc(title) .. "</h1><p>" .. esc(text) .. "</p></main>", PAGE_HEADERS)
end

local function is_api(path) return path:sub(1, 5) == "/api/" or path:sub(1, 4) == "/ws/" end

-- Every request: Host, authentication, origin, then the routes.
function Console:handle(req, res)
  local g = self.guard
  if not g:host_ok(req) then
    self:audit(req, nil, "host", { host = req.headers.host }, "deny")
    return res:send(421, "This console answers only to its own address (127.0.0.1 or localhost).\n",
      { ["content-type"] = "text/plain; charset=utf-8" })
  end
  if req.method == "OPTIONS" then
    return res:send(405, "", { allow = "GET, HEAD, POST, PUT, DELETE" }) -- no CORS preflight, ever
  end
  -- The token in the URL: trade it for the session cookie, and take it out of the URL.
  local qtoken = req.query.token
  if qtoken and (req.method == "GET" or req.method == "HEAD") and not is_api(req.path) then
    if not g:token_ok(qtoken) then
      self:audit(req, nil, "token", nil, "deny")
      return deny_page(res, 401, "Wrong access token", "This link's token is not this console's. Use the URL " ..
        "that 'foundry serve' printed last (a new one is made each time it starts).")
    end
    local rest = {}
    for pair in req.query_string:gmatch("[^&]+") do
      if not pair:match("^token=") then rest[#rest + 1] = pair end
    end
    local loc = req.path .. (#rest > 0 and ("?" .. table.concat(rest, "&")) or "")
    if not loc:match("^/[^/\\]") and loc ~= "/" then loc = "/" end
    return res:send(303, "", { location = loc, ["set-cookie"] = g:set_cookie() })
  end
  if not g:authenticated(req) then
    if is_api(req.path) then
      return res:json(401, { error = { code = "web.unauthorized", message = "no valid session or token",
        hint = "open the URL that 'foundry serve' printed" } })
    end
    return deny_page(res, 401, "Sign-in needed", "Open the URL that 'foundry serve' printed: it carries this " ..
      "console's access token. (The token is made anew each time the console starts.)")
  end
  local changes = req.method ~= "GET" and req.method ~= "HEAD"
  if changes or req.path:sub(1, 4) == "/ws/" then
    if not g:origin_ok(req) or (req.path:sub(1, 4) == "/ws/" and req.headers.origin == nil) then
      self:audit(req, nil, "origin", { origin = req.headers.origin }, "deny")
      return res:json(403, { error = { code = "web.origin", message = "cross-origin request refused" } })
    end
  end
  if changes and req.body ~= "" and not (req.headers["content-type"] or ""):lower():match("^application/json") then
    return res:json(415, { error = { code = "web.media_type", message = "send JSON (Content-Type: application/json)" } })
  end
  if changes and (req.method == "POST" or req.method == "PUT") and
      not (req.headers["content-type"] or ""):lower():match("^application/json") then
    return res:json(415, { error = { code = "web.media_type", message = "send JSON (Content-Type: application/json)" } })
  end
  if not self.router:dispatch(req, res) then
    if is_api(req.path) then
      return res:json(404, { error = { code = "web.not_found", message = "no such endpoint: " .. req.path } })
    end
    return res:send(404, "not found\n", { ["content-type"] = "text/plain; charset=utf-8" })
  end
end

-- The terminal's WebSocket: the ticket, then the bridge.
function Console:terminal(req, res, params)
  local name = params.name
  local ok, why = self.guard:check_ticket(name, req.query.ticket)
  if not ok then
    self:audit(req, name, "terminal", { reason = why }, "deny")
    return res:json(401, { error = { code = "web.ticket", message = "terminal ticket refused: " .. why } })
  end
  local sok, sb = pcall(require("foundry.sandbox").get, name)
  if not sok then return res:json(404, { error = { code = "sandbox.not_found", message = errors.message(sb) } }) end
  local wok, ws = pcall(req.upgrade_websocket, req, res)
  if not wok then
    if errors.is(ws, "cancelled") then error(ws, 0) end
    return res:json(400, { error = { code = "web.bad_request", message = errors.message(ws) } })
  end
  self:audit(req, name, "terminal", { mode = req.query.mode })
  require("foundry.web.terminal").bridge(ws, sb, { mode = req.query.mode, rows = req.query.rows,
    cols = req.query.cols, log = function(l, m) self:log(l, m) end })
end

function Console:_routes()
  local r = router.new()
  self.router = r
  local page = function(_, res) res:send(200, assets.page(), PAGE_HEADERS) end
  r:add("GET", "/", page)
  r:add("GET", "/fleet", page)
  r:add("GET", "/settings", page)
  r:add("GET", "/sandbox/:name", page)
  r:add("GET", "/assets/:file", function(_, res, p)
    if p.file == "xterm.js" or p.file == "xterm.css" then
      local x, why = assets.xterm()
      if not x then
        return res:send(404, "/* " .. why .. " */\n", { ["content-type"] = "text/plain; charset=utf-8" })
      end
      return res:send(200, p.file == "xterm.js" and x.js or x.css, {
        ["content-type"] = p.file == "xterm.js" and "text/javascript; charset=utf-8" or "text/css; charset=utf-8" })
    end
    local a = assets.own(p.file)
    if not a then return res:send(404, "not found\n", { ["content-type"] = "text/plain; charset=utf-8" }) end
    res:send(200, a.body, { ["content-type"] = a.type })
  end)
  r:add("GET", "/favicon.svg", function(_, res)
    res:send(200, '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><path fill="#5aa9ff" ' ..
      'd="M8 1l6 3.5v7L8 15l-6-3.5v-7z"/></svg>', { ["content-type"] = "image/svg+xml" })
  end)
  r:add("GET", "/api/info", function(_, res)
    local x, why = assets.xterm()
    res:json(200, { version = require("foundry").version, port = self.port, host = self.host,
      xterm = x and x.source or false, xterm_error = not x and why or nil, repo = self.repo })
  end)
  r:add("GET", "/ws/terminal/:name", function(req, res, p) return self:terminal(req, res, p) end)
  require("foundry.web.api").routes(r, self)
end

--- Start a console. `opts`: host ("127.0.0.1"), port (7420; 0: any free port), token
--- (reuse one: 64 hex digits), repo (the default repository for new sandboxes),
--- log(level, message). Returns the console: `url` (with the token), `base_url`,
--- `port`, `close()`, `wait()`.
function M.start(opts)
  opts = opts or {}
  local self = setmetatable({ opts = opts, host = opts.host or "127.0.0.1", jobs = {} }, Console)
  if opts.repo then self.repo = opts.repo end
  self.server = server.new{
    host = self.host, port = opts.port or M.DEFAULT_PORT,
    handler = function(req, res) return self:handle(req, res) end,
    log = function(level, msg) self:log(level, msg) end,
  }
  self.server:listen()
  self.port = self.server.port
  self.server.opts.headers = M.security_headers(self.port)
  self.guard = auth.new(self.host, self.port, { token = opts.token })
  self.url = self.guard:url("/")
  local h = self.host:find(":", 1, true) and ("[" .. self.host .. "]") or self.host
  if h == "0.0.0.0" or h == "[::]" then h = "127.0.0.1" end
  self.base_url = "http://" .. h .. ":" .. self.port .. "/"
  local x = assets.xterm()
  self.xterm_source = x and x.source or false
  self:_routes()
  return self
end

--- Stop serving: the listener, every connection, every job (a sandbox being created is
--- rolled back). Idempotent.
function Console:close()
  if self.closing then return end
  self.closing = true
  self.server:close()
  for t in pairs(self.jobs) do
    local st = t:status()
    if st ~= "done" and st ~= "failed" then t:cancel() end
  end
  for t in pairs(self.jobs) do pcall(t.join, t) end
  self.jobs = {}
end

--- Wait until the console is closed.
function Console:wait() self.server:wait() end

return M
