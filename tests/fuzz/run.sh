#!/usr/bin/env bash
# Build the libFuzzer targets for the vault file parser and the redactor with clang
# (-fsanitize=fuzzer,address,undefined) and run each for SECONDS (default 60).
#   tests/fuzz/run.sh [SECONDS]        FUZZ_BUILD=dir (default build-fuzz)
# Crashes are written to $FUZZ_BUILD/crashes/; the corpora stay in $FUZZ_BUILD/corpus/.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
out=${FUZZ_BUILD:-build-fuzz}
if ! command -v clang >/dev/null; then
  echo "fuzz: clang is not installed (apt-get install clang): skipped"
  exit 0
fi
mkdir -p "$out/corpus/vault" "$out/corpus/redact" "$out/crashes"
common=(-std=c11 -D_GNU_SOURCE -DFDR_NO_LUA -Iruntime -g)
fuzz=(-O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
srcs=(runtime/vault.c runtime/redact.c)
clang "${common[@]}" "${fuzz[@]}" tests/fuzz/fuzz_vault.c "${srcs[@]}" -lcrypto -o "$out/fuzz_vault"
clang "${common[@]}" "${fuzz[@]}" tests/fuzz/fuzz_redact.c "${srcs[@]}" -lcrypto -o "$out/fuzz_redact"
clang "${common[@]}" -O1 tests/fuzz/seed_vault.c "${srcs[@]}" -lcrypto -o "$out/seed_vault"
"$out/seed_vault" "$out/corpus/vault"
printf '\x03\x01sk-live-0123\xffhunter2hunter2\xffabcdBearer xyz sk-live-0123 hunter2hunter2 eyJ' \
  >"$out/corpus/redact/seed-0"
# inputs that once failed: every run replays them first
for t in vault redact; do
  [ -d "tests/fuzz/corpus/$t" ] && cp tests/fuzz/corpus/"$t"/* "$out/corpus/$t/" 2>/dev/null || true
done
status=0
for t in vault redact; do
  echo "== fuzz_$t for ${secs}s"
  if ! "$out/fuzz_$t" -max_total_time="$secs" -max_len=8192 -print_final_stats=1 \
      -artifact_prefix="$out/crashes/$t-" "$out/corpus/$t" 2>"$out/fuzz_$t.log"; then
    status=1
    echo "fuzz_$t: FAILED (see $out/fuzz_$t.log and $out/crashes/)"
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)" "$out/fuzz_$t.log" || true
done
exit $status
