-- A fast local upstream for bench/proxy.lua: HTTP/1.1 keep-alive on 127.0.0.1.
--   foundry run bench/proxy_upstream.lua PORTFILE
-- GET /bytes?n=N streams N bytes; anything else answers 200 with a 13-byte body.
local uv = require "luv"
local portfile = arg and arg[1] or (...)
local server = uv.new_tcp()
server:bind("127.0.0.1", 0)
local SMALL = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nhello, world\n"
local CHUNK = string.rep("x", 1 << 20)

local function stream(client, n)
  client:write(string.format("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", n))
  local function pump()
    while n > 0 do
      local k = math.min(n, #CHUNK)
      n = n - k
      client:write(k == #CHUNK and CHUNK or CHUNK:sub(1, k))
      if client:get_write_queue_size() > (8 << 20) then
        local t = uv.new_timer()
        t:start(1, 0, function() t:close(); pump() end)
        return
      end
    end
  end
  pump()
end

server:listen(1024, function()
  local client = uv.new_tcp()
  server:accept(client)
  client:nodelay(true)
  local buf = ""
  client:read_start(function(err, data)
    if err or not data then client:close(); return end
    buf = buf .. data
    while true do
      local e = buf:find("\r\n\r\n", 1, true)
      if not e then break end
      local head = buf:sub(1, e)
      buf = buf:sub(e + 4)
      local n = head:match("^GET [^ ]*/bytes%?n=(%d+)")
      if n then stream(client, tonumber(n)) else client:write(SMALL) end
    end
  end)
end)
local f = io.open(portfile .. ".tmp", "w")
f:write(tostring(server:getsockname().port))
f:close()
os.rename(portfile .. ".tmp", portfile)
local w = require("foundry._task").wait("serve")
w:await()
