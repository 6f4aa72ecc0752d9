#!/usr/bin/env bash
# Build and run the proxy's fuzz targets for a short while each (libFuzzer, clang).
#   tests/fuzz/run_proxy.sh [SECONDS]     (default 30 per target)
# Exit 0 with "N passed, N failed" when no target found a crash.
set -u
cd "$(dirname "$0")/../.."
secs=${1:-30}
out=${FUZZ_OUT:-build/fuzz}
mkdir -p "$out"
if ! command -v clang >/dev/null; then
  echo "run_proxy.sh: clang is needed (tools/deps.sh installs it)" >&2
  exit 2
fi
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iproxy -D_GNU_SOURCE)
passed=0 failed=0
seed() { # a few valid inputs to start from
  mkdir -p "$out/corpus_$1"
  case $1 in
  http)
    printf '\x07GET http://example.test/a?b=c HTTP/1.1\r\nHost: example.test\r\nContent-Length: 3\r\n\r\nabc' >"$out/corpus_http/1"
    printf '\x03CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\n\x16\x03\x01' >"$out/corpus_http/2"
    printf '\x05HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' >"$out/corpus_http/3"
    printf '\x01POST /_gw/anthropic/v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n' >"$out/corpus_http/4" ;;
  addr)
    for s in 127.0.0.1 0x7f.1 2130706433 '[::ffff:127.0.0.1]' api.github.com '*.example.com' 10.0.0.0/8 '[::1]:8080' 017700000001; do
      printf '%s' "$s" >"$out/corpus_addr/$(printf '%s' "$s" | md5sum | cut -c1-8)"
    done ;;
  esac
}
for t in http addr; do
  seed $t
  srcs=(tests/fuzz/fuzz_$t.c proxy/addr.c proxy/match.c)
  [ $t = http ] && srcs+=(proxy/http.c)
  if ! clang "${flags[@]}" "${srcs[@]}" -lhttp_parser -o "$out/fuzz_$t" 2>"$out/build_$t.log"; then
    cat "$out/build_$t.log" >&2
    failed=$((failed + 1)); continue
  fi
  echo "== fuzz_$t ($secs s)"
  if "$out/fuzz_$t" -max_total_time="$secs" -max_len=4096 -artifact_prefix="$out/crash_$t-" \
      "$out/corpus_$t" >"$out/run_$t.log" 2>&1; then
    passed=$((passed + 1))
    grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" "$out/run_$t.log" | tail -1
  else
    failed=$((failed + 1))
    tail -40 "$out/run_$t.log"
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
