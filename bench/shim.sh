#!/usr/bin/env bash
# foundry-shim's bridge (127.0.0.1:3128 -> the sandbox's Unix socket) side by side with
# the same path through socat (TCP-LISTEN,fork -> UNIX-CONNECT, the usual tool for it) and
# with no bridge at all (the client on the Unix socket directly), in one run.
#
#   bash bench/shim.sh                 (after make; needs socat: apt-get install socat)
#   N=20000 BYTES=1073741824 bash bench/shim.sh
#
# Reports: round-trip latency of 64-byte messages on one connection (p50/p99), download
# and upload throughput on one connection, and new connections per second (1 round
# trip each, 8 clients at a time). Every path ends at the same upstream (bench/shim_load).
set -euo pipefail
cd "$(dirname "$0")/.."
SHIM=${SHIM:-build/foundry-shim}
N=${N:-20000}
BYTES=${BYTES:-1073741824}
CONNS=${CONNS:-4000}
command -v socat >/dev/null || { echo "bench/shim.sh: needs socat (apt-get install socat)" >&2; exit 1; }
[ -x "$SHIM" ] || { echo "bench/shim.sh: $SHIM missing (make)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/shimbench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

cc -O2 -o "$tmp/load" bench/shim_load.c -lpthread
sock=$tmp/up.sock
"$tmp/load" serve "$sock" & pids+=($!)
FOUNDRY_PROXY_SOCKET=$sock FOUNDRY_PROXY_LISTEN=127.0.0.1:13128 "$SHIM" init & pids+=($!)
socat TCP-LISTEN:13129,bind=127.0.0.1,reuseaddr,fork UNIX-CONNECT:"$sock" & pids+=($!)
sleep 0.5

declare -A addr=([direct]="unix:$sock" [foundry-shim]="tcp:127.0.0.1:13128" [socat]="tcp:127.0.0.1:13129")
order=(direct foundry-shim socat)
printf '%-13s %10s %10s %12s %12s %12s\n' path p50_us p99_us down_MB/s up_MB/s conns/s
for p in "${order[@]}"; do
  a=${addr[$p]}
  rr=$("$tmp/load" rr "$a" "$N")
  down=$("$tmp/load" bulk "$a" "$BYTES")
  up=$("$tmp/load" upload "$a" "$BYTES")
  cs=$("$tmp/load" conns "$a" "$CONNS" 8)
  printf '%-13s %10s %10s %12s %12s %12s\n' "$p" \
    "$(sed -E 's/.*p50_us=([0-9.]+).*/\1/' <<<"$rr")" "$(sed -E 's/.*p99_us=([0-9.]+).*/\1/' <<<"$rr")" \
    "${down#MBps=}" "${up#MBps=}" "$(sed -E 's/conns_per_s=([0-9]+).*/\1/' <<<"$cs")"
done
echo
echo "shim RSS after the run: $(awk '/VmRSS/ {print $2, $3}' /proc/"${pids[1]}"/status)"
