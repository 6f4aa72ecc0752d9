#!/usr/bin/env bash
# The daemon's start-up with N registered sandboxes (each gets its proxy socket and policy),
# its memory afterwards, and one `foundry daemon status` round trip.
#   bash bench/daemon.sh            (after make; N=100 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
F=${FOUNDRY:-build/foundry}
export FOUNDRY_HOME
FOUNDRY_HOME=$(mktemp -d /tmp/fdbench-XXXXXX)
trap '"$F" daemon stop >/dev/null 2>&1 || true; rm -rf "$FOUNDRY_HOME"' EXIT
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

for n in 0 ${N:-100}; do
  "$F" eval "local st = require 'foundry.state'
    for i = 1, $n do st.sandboxes.insert{ name = 'sb' .. i, state = 'running',
      hook_token = string.rep('t', 32) .. i } end" >/dev/null
  t=$(date +%s%N); "$F" daemon start >/dev/null; start=$(ms "$t")
  pid=$(cat "$FOUNDRY_HOME/run/daemon.pid")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  t=$(date +%s%N); for _ in $(seq 20); do "$F" daemon status >/dev/null; done; st=$(( $(ms "$t") / 20 ))
  printf '%4d sandboxes: start until it answers %4d ms, RSS %6d kB, status %3d ms\n' "$n" "$start" "$rss" "$st"
  "$F" daemon stop >/dev/null
  "$F" eval "local st = require 'foundry.state'; for _, r in ipairs(st.sandboxes.list{}) do st.sandboxes.delete(r.name) end" >/dev/null
done
