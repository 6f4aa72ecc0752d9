-- Helpers for the web console's specs: the console in this process, curl as the HTTP
-- client, tests/lib/ws_client.py as the WebSocket client. Loaded with dofile().
local uv = require "luv"
local json = require "foundry.json"

local W = {}

--- Start a console on a free port (W.console, W.base, W.token).
function W.start(opts)
  opts = opts or {}
  local web = require "foundry.web"
  W.console = web.start({ port = 0, repo = opts.repo, log = function() end })
  W.base = W.console.base_url:gsub("/$", "")
  W.token = W.console.guard.token
  W.cookie = W.console.guard.cookie_name .. "=" .. W.console.guard.session
  return W.console
end

--- Wait until the console has no connection open (after a client exits).
function W.settle()
  local s = W.console and W.console.server
  for _ = 1, 200 do
    if not s or (next(s.conns) == nil and next(s.tasks) == nil) then return end
    foundry.sleep(10)
  end
end

function W.stop()
  if W.console then W.console:close() end
  W.console = nil
end

--- An HTTP request with curl: `W.http{"GET", "/api/x", auth=true|"cookie"|false,
--- headers={...}, body=, json=, timeout=}` -> {status=, headers=, body=, json=}.
function W.http(req)
  local argv = { "curl", "-s", "-i", "--http1.1", "-X", req[1], "--max-time", tostring(req.timeout or 20) }
  local headers = req.headers or {}
  if req.auth == "cookie" then
    headers.Cookie = W.cookie
  elseif req.auth ~= false then
    headers.Authorization = "Bearer " .. W.token
  end
  local body = req.body
  if req.json ~= nil then
    body = json.encode(req.json)
    headers["Content-Type"] = headers["Content-Type"] or "application/json"
  end
  for k, v in pairs(headers) do argv[#argv + 1] = "-H"; argv[#argv + 1] = k .. ": " .. v end
  if body then argv[#argv + 1] = "--data-binary"; argv[#argv + 1] = "@-" end
  if req.raw_path then argv[#argv + 1] = "--path-as-is" end
  argv[#argv + 1] = W.base .. req[2]
  argv.stdin = body
  argv.timeout = ((req.timeout or 20) + 5) * 1000
  local r = foundry.exec(argv)
  local out = r.stdout
  local res = { headers = {}, raw = out, exit = r.status }
  -- skip "100 Continue" heads
  while out:match("^HTTP/1%.1 100") do out = out:gsub("^.-\r\n\r\n", "", 1) end
  local head, rest = out:match("^(.-)\r\n\r\n(.*)$")
  head = head or out
  res.status = tonumber(head:match("^HTTP/%S+ (%d+)"))
  for line in head:gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then res.headers[k:lower()] = v end
  end
  res.body = rest or ""
  local ok, v = pcall(json.decode, res.body)
  if ok then res.json = v end
  return res
end

--- Run the WebSocket client: `W.ws(path, steps, {origin=, cookie=, host=})` -> its JSON.
function W.ws(path, steps, opts)
  opts = opts or {}
  local argv = { "python3", "tests/lib/ws_client.py", "ws://127.0.0.1:" .. W.console.port .. path,
    json.encode(json.array(steps)) }
  local origin = opts.origin == nil and ("http://127.0.0.1:" .. W.console.port) or opts.origin
  if origin then argv[#argv + 1] = "--origin"; argv[#argv + 1] = origin end
  local cookie = opts.cookie == nil and W.cookie or opts.cookie
  if cookie then argv[#argv + 1] = "--cookie"; argv[#argv + 1] = cookie end
  if opts.host then argv[#argv + 1] = "--host"; argv[#argv + 1] = opts.host end
  argv.timeout = 90000
  local r = foundry.exec(argv)
  local ok, v = pcall(json.decode, r.stdout)
  if not ok then error("ws_client: " .. r.stdout .. r.stderr, 2) end
  v.stderr = r.stderr
  return v
end

--- A terminal ticket's URL for sandbox `name` through the API.
function W.terminal_url(name, mode)
  local r = W.http{ "POST", "/api/sandboxes/" .. name .. "/terminal", json = { mode = mode or "shell" } }
  assert(r.status == 200, "terminal ticket: " .. tostring(r.status) .. " " .. r.body)
  return r.json.url
end

W.uv = uv
return W
