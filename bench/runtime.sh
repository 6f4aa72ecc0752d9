#!/usr/bin/env bash
# Runtime benchmarks (issue 2): start-up cost and the async round trip.
#   bash bench/runtime.sh        (after make; results into docs/performance.md by hand)
set -euo pipefail
cd "$(dirname "$0")/.."
F=${FOUNDRY:-build/foundry}
N=${N:-200}

startup() { # mean wall time of N runs of a command, in ms
  local start end
  start=$(date +%s%N)
  for _ in $(seq "$N"); do "$@" >/dev/null; done
  end=$(date +%s%N)
  echo "scale=3; ($end - $start) / 1000000 / $N" | bc
}

echo "== start-up ($N runs each, same shell loop)"
lua_ms=$(startup lua5.4 -e 'return 1')
fdr_ms=$(startup "$F" eval 'return 1')
echo "lua5.4 -e 'return 1':        ${lua_ms} ms"
echo "foundry eval 'return 1':     ${fdr_ms} ms"
echo "ratio foundry/lua:           $(echo "scale=2; $fdr_ms / $lua_ms" | bc)x"

# FOUNDRY_OLD=path/to/another/foundry: the two binaries and lua5.4 interleaved, 10 rounds
# of N/2 runs each, the best round of each kept (an A/B on a noisy machine)
if [ -n "${FOUNDRY_OLD:-}" ]; then
  best_l=999999; best_o=999999; best_n=999999; n=$((N / 2))
  for _ in $(seq 10); do
    l=$(N=$n startup lua5.4 -e 'return 1'); o=$(N=$n startup "$FOUNDRY_OLD" eval 'return 1'); f=$(N=$n startup "$F" eval 'return 1')
    best_l=$(echo "if ($l < $best_l) $l else $best_l" | bc); best_o=$(echo "if ($o < $best_o) $o else $best_o" | bc)
    best_n=$(echo "if ($f < $best_n) $f else $best_n" | bc)
  done
  echo "A/B best of 10: lua5.4 $best_l ms, $FOUNDRY_OLD $best_o ms ($(echo "scale=2; $best_o / $best_l" | bc)x), $F $best_n ms ($(echo "scale=2; $best_n / $best_l" | bc)x)"
fi

echo
echo "== async round trip (in one foundry process)"
"$F" eval '
local uv, task = require "luv", require "foundry._task"
local N = 200000
local function t() uv.update_time(); return uv.hrtime() end
local function f(x) return x end
local t0 = t() for i = 1, N do f(i) end local call = (t() - t0) / N
-- a wait resolved by a loop callback: one yield + one resume through the runtime
local async = uv.new_async(function() end)
t0 = t()
for i = 1, N // 10 do
  local w = task.wait("bench")
  local tm = uv.new_timer()
  tm:start(0, 0, function() tm:close(); w:resolve(i) end)
  w:await()
end
local timer_rt = (t() - t0) / (N // 10)
async:close()
-- a wait resolved by another task: queued resume (idle handle), no I/O
local w
local other = foundry.spawn(function() for i = 1, N do while not w do foundry.yield() end local x = w; w = nil; x:resolve(i) end end)
t0 = t()
for i = 1, N do w = task.wait("bench"); w:await() end
local task_rt = (t() - t0) / N
other:join()
t0 = t() for i = 1, N do foundry.yield() end local yield_rt = (t() - t0) / N
return string.format("plain Lua call:                     %8.1f ns\nyield+resume via another task:      %8.1f ns (%.0fx a call)\nforundry.yield() round trip:        %8.1f ns\nwait resolved from a timer callback: %7.1f ns (includes a timer and a loop turn)",
  call, task_rt, task_rt / call, yield_rt, timer_rt)
' | sed 's/forundry/foundry/'
