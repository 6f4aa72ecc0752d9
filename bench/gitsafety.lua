-- Git safety benchmark (bench/gitsafety.sh): the time to push a 50 MB pack directly to a
-- local git smart-HTTP server over TLS (git http-backend), and through Foundry's proxy
-- engine on the inspected path (TLS terminated with Foundry's CA, the push parsed and
-- judged by foundry.gitsafety against the sandbox's objects, forwarded over TLS).
--   foundry run bench/gitsafety.lua [MB] [RUNS]
local F = dofile("tests/lib/git_fixture.lua")
package.path = "tests/lib/?.lua;" .. package.path
local pfx = require "proxy_fixtures"
local guards = require "foundry.guards"
local fs = require "foundry.fs"
local uv = require "luv"

local args = { ... }
local MB = tonumber(args[1]) or 50
local RUNS = tonumber(args[2]) or 3

local certs = pfx.certs()
local fx = F.new({ tls = { cert = certs .. "/server.crt", key = certs .. "/server.key" } })
local ok, err = pcall(function()
  local repos = {}
  for i = 1, RUNS do
    for _, kind in ipairs({ "direct", "proxied" }) do
      local name = "bench/" .. kind .. i
      fx:seed(name, { README = "bench\n" })
      repos[#repos + 1] = "github.com/" .. name
    end
  end
  -- the sandbox's workspace: main plus one commit carrying MB of incompressible data
  local ws = fx.dir .. "/ws"
  fx:must(fx.dir, "init", "-q", ws)
  fs.write(ws .. "/README", "bench\n")
  fx:must(ws, "add", "-A")
  fx:must(ws, "commit", "-qm", "initial")
  fx:must(ws, "checkout", "-q", "-b", "sandbox/bench")
  local chunks = {}
  for i = 1, MB do chunks[i] = require("foundry.crypto").random_bytes(1 << 20) end
  fs.write(ws .. "/blob.bin", table.concat(chunks))
  chunks = nil
  collectgarbage()
  fx:must(ws, "add", "-A")
  fx:must(ws, "commit", "-qm", "big")
  local rows = {}
  local g = guards.new{ audit = function(r) rows[#rows + 1] = r end }
  local engine, _, ca = pfx.engine({ guard = g, secrets = function() return "token" end })
  local row = { name = "bench", branch = "sandbox/bench", base = "main", workspace = ws, spec = { repos = repos }, data = {} }
  engine:add_sandbox{ name = "bench", placeholders = {}, sandbox = row,
                      policy = { extends = "github", overrides = pfx.overrides(fx.port), git = { max_bytes = (MB + 16) << 20 },
                                 limits = { request_body = (MB + 32) << 20 } } }
  local port = engine:listen_tcp{ sandbox = "bench" }

  local function push(kind, i)
    local url
    if kind == "direct" then
      fx.env = { GIT_SSL_CAINFO = certs .. "/ca.crt" }
      url = "https://127.0.0.1:" .. fx.port .. "/bench/direct" .. i .. ".git"
    else
      fx.env = { HTTPS_PROXY = "http://127.0.0.1:" .. port, GIT_SSL_CAINFO = ca }
      url = "https://github.com/bench/proxied" .. i .. ".git"
    end
    uv.update_time()
    local t0 = uv.hrtime()
    local r = fx:git(ws, "-c", "http.postBuffer=1048576", "push", "-q", url, "sandbox/bench")
    local ms = (uv.hrtime() - t0) / 1e6
    if not r.ok then error(kind .. " push failed: " .. r.stderr) end
    return ms
  end

  local times = { direct = {}, proxied = {} }
  for i = 1, RUNS do
    -- alternate, so drift (page cache, CPU frequency) hits both alike
    times.direct[i] = push("direct", i)
    times.proxied[i] = push("proxied", i)
  end
  local function median(t)
    local c = { table.unpack(t) }
    table.sort(c)
    return c[(#c + 1) // 2]
  end
  local d, p = median(times.direct), median(times.proxied)
  local pushed = 0
  for _, r in ipairs(rows) do if r.rule == "git.push" and r.decision == "allow" then pushed = pushed + 1 end end
  print(string.format("git push of a %d MB pack, median of %d runs each (TLS both ways)", MB, RUNS))
  print(string.format("  direct to git http-backend:          %7.0f ms  (%.1f MB/s)", d, MB * 1000 / d))
  print(string.format("  through Foundry (inspected, judged): %7.0f ms  (%.1f MB/s)", p, MB * 1000 / p))
  print(string.format("  ratio (direct time / Foundry time):  %.2fx   (goal >= 0.8x)", d / p))
  print(string.format("  pushes the guard judged and allowed: %d", pushed))
  engine:close()
end)
fx:close()
if not ok then error(err, 0) end
