#!/usr/bin/env bash
# Vault and redaction benchmarks, side by side in one run:
#   1. redaction of an MB-sized log stream (default 100 MB) with 100 secrets loaded plus
#      the token shapes: foundry.redact (whole text, and as a stream of 64 KiB chunks)
#      against the naive way, one plain search per secret over the whole text
#      (Lua's string.find(s, secret, i, true): memchr for the first byte, then memcmp);
#      each measured 3 times (best and median; CPU time is steadier than wall time on a
#      shared machine), and `apply` once more at the end, when the allocator reuses memory;
#   2. unlock time with the default key derivation (scrypt N=2^16, r=8, p=1) and, for
#      scale, with N=2^15 and N=2^17.
# Usage: bench/vault.sh [MB]      FOUNDRY_BUILD=build-dir (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FOUNDRY_BUILD:-build}
MB=${1:-100}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -m 700 "$tmp/data"

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
FOUNDRY_HOME=$tmp BENCH_MB=$MB "$BUILD/foundry" eval - <<'LUA'
local uv = require "luv"
local redact = require "foundry.redact"
local vault = require "foundry.vault"

local function now() return uv.hrtime() / 1e9 end
-- Wall time is inflated when other work shares the machine; CPU time (os.clock) much less.
local function timed(fn)
  local w, c = now(), os.clock()
  local a, b = fn()
  return now() - w, os.clock() - c, a, b
end
local MB = tonumber(os.getenv("BENCH_MB"))
math.randomseed(42)

-- 100 secrets shaped like real credentials (40-60 characters of base64url after a prefix)
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local prefixes = { "sk-ant-api03-", "sk-proj-", "ghp_", "xoxb-", "", "", "", "AIza" }
local secrets, names = {}, {}
for i = 1, 100 do
  local t = { prefixes[i % #prefixes + 1] }
  for k = 2, math.random(40, 60) do
    local c = math.random(#alphabet)
    t[k] = alphabet:sub(c, c)
  end
  names[i] = string.format("secret%03d", i)
  secrets[names[i]] = table.concat(t)
end

-- Log-like text: words, paths, hex ids, JSON, with a secret in about one line in 2000.
local words = { "GET", "POST", "/v1/messages", "200", "info", "debug", "request", "response", "took",
  "ms", "user", "the", "tool", "call", "read", "file", "src/main.c", "error", "retrying", "bytes",
  "{\"type\":\"text\",", "\"role\":\"assistant\"}", "commit", "a3f9c2e", "pushed", "branch",
  "sandbox/web-1", "Authorization:", "content-type:", "application/json", "token", "ask", "be" }
local block = {}
local size = 0
local n = 0
while size < 4 * 1024 * 1024 do
  local line = {}
  for k = 1, math.random(6, 16) do line[k] = words[math.random(#words)] end
  n = n + 1
  if n % 2000 == 0 then line[#line + 1] = secrets[names[math.random(100)]] end
  local s = os.date("!%Y-%m-%dT%H:%M:%SZ", 1700000000 + n) .. " " .. table.concat(line, " ") .. "\n"
  block[#block + 1] = s
  size = size + #s
end
block = table.concat(block)
local reps = math.max(1, math.floor(MB * 1024 * 1024 / #block + 0.5))
local text = string.rep(block, reps)
local mb = #text / (1024 * 1024)
io.write(string.format("input: %.1f MB of log lines, 100 secrets + %d token shapes\n", mb, #redact.shapes()))

local REPS = 3
-- Best and median of REPS runs: wall and CPU time.
local function measure(fn)
  local walls, cpus, a, b = {}, {}, nil, nil
  for i = 1, REPS do
    collectgarbage()
    walls[i], cpus[i], a, b = timed(fn)
  end
  table.sort(walls)
  table.sort(cpus)
  return { wall = walls[1], wall_med = walls[(REPS + 1) // 2], cpu = cpus[1], cpu_med = cpus[(REPS + 1) // 2] }, a, b
end

local function report(what, m, extra)
  io.write(string.format("%-34s cpu best %5.3f s %5.0f MB/s, median %5.0f MB/s | wall best %5.0f MB/s  %s\n",
    what, m.cpu, mb / m.cpu, mb / m.cpu_med, mb / m.wall, extra or ""))
end

local r = redact.new(secrets)
local m_apply, out, count = measure(function() return r:apply(text) end)
report("foundry.redact apply", m_apply, "(" .. count .. " replacements)")

local chunks = {}
local chunk = 65536
for i = 1, #text, chunk do chunks[#chunks + 1] = text:sub(i, i + chunk - 1) end
local streamed
local m_stream = measure(function()
  local s, parts = r:stream(), {}
  for i = 1, #chunks do parts[i] = s:push(chunks[i]) end
  parts[#parts + 1] = s:finish()
  streamed = parts
end)
assert(table.concat(streamed) == out, "stream and apply differ")
report("foundry.redact stream, 64 KiB", m_stream)
chunks, streamed = nil, nil

local plain = redact.new(secrets, { shapes = false })
local m_plain, plain_out, pcount = measure(function() return plain:apply(text) end)
report("foundry.redact, secrets only", m_plain, "(" .. pcount .. " replacements)")

-- naive: one search per secret over the whole text, then the replacements
local nhits
local m_naive, naive = measure(function()
  local hits = {}
  for _, name in ipairs(names) do
    local v = secrets[name]
    local i = 1
    while true do
      local a, b = string.find(text, v, i, true)
      if not a then break end
      hits[#hits + 1] = { a, b, name }
      i = b + 1
    end
  end
  table.sort(hits, function(x, y) return x[1] < y[1] end)
  local res, pos = {}, 1
  for _, h in ipairs(hits) do
    res[#res + 1] = text:sub(pos, h[1] - 1)
    res[#res + 1] = "[REDACTED:" .. h[3] .. "]"
    pos = h[2] + 1
  end
  res[#res + 1] = text:sub(pos)
  nhits = #hits
  return table.concat(res)
end)
report("naive, a plain search per secret", m_naive, "(" .. nhits .. " replacements)")
assert(naive == plain_out, "naive and foundry.redact (secrets only) differ")
local m_again = measure(function() return r:apply(text) end)
report("foundry.redact apply, again (warm)", m_again)
io.write(string.format("speed-up over naive (best cpu): %.1fx with shapes, %.1fx secrets only\n",
  m_naive.cpu / m_apply.cpu, m_naive.cpu / m_plain.cpu))
text, out, naive, plain_out = nil, nil, nil, nil
collectgarbage()

-- unlock time
local home = os.getenv("FOUNDRY_HOME")
local function unlock_time(log2n)
  local path = string.format("%s/data/vault-%d", home, log2n)
  local v = vault.init({ path = path, passphrase = "benchmark passphrase", kdf = { log2n = log2n, r = 8, p = 1 } })
  v:set("x", "y")
  v:lock()
  local times = {}
  for i = 1, 5 do
    local t = now()
    local u = vault.unlock({ path = path, passphrase = "benchmark passphrase" })
    times[i] = (now() - t) * 1000
    u:lock()
  end
  table.sort(times)
  return times[3], times[1], times[5]
end
local d = vault.kdf_default()
for _, l in ipairs({ d.log2n - 1, d.log2n, d.log2n + 1 }) do
  local med, lo, hi = unlock_time(l)
  io.write(string.format("unlock, scrypt N=2^%d r=%d p=%d (%d MiB)%s: median %.0f ms (min %.0f, max %.0f, 5 runs)\n",
    l, d.r, d.p, 128 * d.r * (1 << l) // (1024 * 1024), l == d.log2n and " [default]" or "", med, lo, hi))
end
LUA
