-- Engine memory for bench/proxy.sh: RSS with N sandboxes registered (Unix sockets), then
-- with CONNS idle connections spread over them.
--   foundry run bench/proxy_memory.lua N CONNS
local n, conns = tonumber((...)) or 100, tonumber(select(2, ...)) or 10000
local uv = require "luv"
local fs = require "foundry.fs"
local proxy = require "foundry.proxy"
local function rss()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmRSS:%s+(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end
collectgarbage()
local base = rss()
local dir = fs.mkdtemp("/tmp/foundry-bench-mem-XXXXXX")
local e = proxy.engine{ ca_dir = dir .. "/ca", audit = function() end }
local policy = require("foundry.policy").load("default")
for i = 1, n do
  e:add_sandbox{ name = "sb" .. i, socket = dir .. "/sb" .. i .. "/proxy.sock", policy = policy,
                 placeholders = proxy.placeholders(policy) }
end
collectgarbage()
local with_sandboxes = rss()
-- idle connections from a child process (so their client ends are not counted here)
local child = uv.spawn("python3", { args = { "-c", [[
import socket, sys, time
n, dir, conns = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
socks = []
for i in range(conns):
    s = socket.socket(socket.AF_UNIX)
    s.connect("%s/sb%d/proxy.sock" % (dir, i % n + 1))
    socks.append(s)
print("ok", flush=True)
time.sleep(30)
]], tostring(n), dir, tostring(conns) }, stdio = { nil, 1, 2 } }, function() end)
local t0 = uv.now()
while e:stats().connections < conns and uv.now() - t0 < 20000 do foundry.sleep(100) end
foundry.sleep(500)
local with_conns = rss()
print(string.format("memory: base %.1f MB; %d sandboxes registered: %.1f MB (+%.1f); %d idle connections: %.1f MB (+%.1f)",
  base, n, with_sandboxes, with_sandboxes - base, e:stats().connections, with_conns, with_conns - with_sandboxes))
child:kill("sigterm")
child:close()
e:close()
foundry.sleep(100)
fs.rm(dir)
