#!/usr/bin/env bash
# Run the benchmarks: every bench/*.sh, or the ones named (make bench BENCH="runtime docker").
# They compare Foundry side by side with the reference tools in one run; the numbers go
# into docs/performance.md by hand, with the command that produced them. Some need tools
# that are not build dependencies (hyperfine, wrk, squid, mitmproxy, socat): each script
# says what it is missing.
set -u
cd "$(dirname "$0")/.."
names=${BENCH:-${*:-}}
if [ -z "$names" ]; then
  names=$(for f in bench/*.sh; do b=$(basename "$f" .sh); [ "$b" = run ] || echo "$b"; done)
fi
status=0
for n in $names; do
  echo "=== bench/$n.sh"
  bash "bench/$n.sh" || { echo "bench/$n.sh: exit $?"; status=1; }
done
exit $status
