#!/usr/bin/env bash
# Build and run the pkt-line fuzz target for a short while (libFuzzer, clang).
#   tests/fuzz/run_pktline.sh [SECONDS]     (default 60)
# Prints "N passed, N failed"; exit 0 when no crash was found.
set -u
cd "$(dirname "$0")/../.."
secs=${1:-60}
out=${FUZZ_OUT:-build/fuzz}
mkdir -p "$out/corpus_pktline"
if ! command -v clang >/dev/null; then
  echo "run_pktline.sh: clang is needed" >&2
  exit 2
fi
# seeds: a push, an advertisement, a fetch (the first byte picks the parser)
python3 - "$out/corpus_pktline" <<'PY'
import sys
d = sys.argv[1]
def pkt(s): return b"%04x" % (len(s) + 4) + s
z, a = b"0" * 40, b"1" * 40
open(d + "/push", "wb").write(b"\0" + pkt(z + b" " + a + b" refs/heads/x\0report-status side-band-64k\n") +
                              b"0000PACK\0\0\0\2\0\0\0\0")
open(d + "/advert", "wb").write(b"\1" + pkt(b"# service=git-upload-pack\n") + b"0000" +
                                pkt(a + b" HEAD\0symref=HEAD:refs/heads/main agent=x\n") +
                                pkt(a + b" refs/heads/main\n") + pkt(a + b" refs/tags/v1^{}\n") + b"0000")
open(d + "/fetch", "wb").write(b"\2" + pkt(b"want " + a + b" ofs-delta\n") + b"0000" +
                               pkt(b"have " + a + b"\n") + pkt(b"done\n"))
PY
if ! clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DFDR_NO_LUA -Iproxy \
    -D_GNU_SOURCE tests/fuzz/fuzz_pktline.c proxy/pktline.c -o "$out/fuzz_pktline" 2>"$out/build_pktline.log"; then
  cat "$out/build_pktline.log" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
echo "== fuzz_pktline ($secs s)"
if "$out/fuzz_pktline" -max_total_time="$secs" -max_len=8192 -artifact_prefix="$out/crash_pktline-" \
    "$out/corpus_pktline" >"$out/run_pktline.log" 2>&1; then
  grep -E "^#[0-9]+ *DONE|stat::number_of_executed_units" "$out/run_pktline.log" | tail -1
  echo "1 passed, 0 failed"
else
  tail -30 "$out/run_pktline.log" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
