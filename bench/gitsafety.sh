#!/usr/bin/env bash
# Git safety benchmark (docs/performance.md "Git safety"): a 50 MB pack pushed directly
# to a local git smart-HTTP server over TLS, and through Foundry's proxy engine on the
# inspected path (TLS terminated, the push judged by foundry.gitsafety, forwarded over
# TLS), side by side in one run. Goal: >= 0.8x direct.
#   bench/gitsafety.sh [MB] [RUNS]   (default 50 MB, 3 runs each)
set -euo pipefail
cd "$(dirname "$0")/.."
FOUNDRY=${FOUNDRY:-build/foundry}
for t in git python3 openssl; do
  command -v $t >/dev/null || { echo "bench/gitsafety.sh: needs $t" >&2; exit 2; }
done
exec "$FOUNDRY" run bench/gitsafety.lua "${1:-50}" "${2:-3}"
