#!/usr/bin/env bash
# Run Foundry's test suites and print one closing line: "N passed, N failed, N skipped".
#   tests/run.sh [c] [lua] [integration]   (default: all)
# FOUNDRY_BUILD selects the build directory (build-asan for `make asan`);
# FOUNDRY_VALGRIND=1 runs C tests and Lua specs under valgrind.
set -u
cd "$(dirname "$0")/.."
BUILD=${FOUNDRY_BUILD:-build}
suites=${*:-c lua integration fuzz}
passed=0 failed=0 skipped=0
vg=()
if [ "${FOUNDRY_VALGRIND:-0}" = 1 ]; then
  vg=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
      --suppressions=tests/valgrind.supp)
fi

tally() { # read "N passed, N failed[, N skipped]" from a log; a run without it fails
  local log=$1 rc=$2 line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
  if [ -z "$line" ]; then
    echo "  (no result line; exit $rc)"; failed=$((failed + 1)); return
  fi
  local p f s
  p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  s=$(echo "$line" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+' || echo 0)
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "  (exit $rc with no failed test: counted as a failure)"; failed=$((failed + 1))
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for suite in $suites; do
  case $suite in
  c)
    for t in "$BUILD"/tests/test_*; do
      [ -x "$t" ] || continue
      echo "== $t"
      "${vg[@]}" "$t" >"$tmp/out" 2>&1; rc=$?
      cat "$tmp/out"; tally "$tmp/out" $rc
    done ;;
  lua)
    echo "== foundry test tests/spec"
    "${vg[@]}" "$BUILD/foundry" test tests/spec 2>&1 | tee "$tmp/out"; rc=${PIPESTATUS[0]}
    tally "$tmp/out" "$rc" ;;
  integration)
    if [ -d tests/integration ] && ls tests/integration/*_spec.lua >/dev/null 2>&1; then
      echo "== foundry test tests/integration"
      "$BUILD/foundry" test tests/integration 2>&1 | tee "$tmp/out"; rc=${PIPESTATUS[0]}
      tally "$tmp/out" "$rc"
    fi ;;
  fuzz)
    # a short run of every libFuzzer target (FUZZ_SECONDS each); a script's exit status
    # is one test: a crash or a sanitizer report fails it
    for f in tests/fuzz/run.sh tests/fuzz/run_proxy.sh tests/fuzz/run_pktline.sh; do
      [ -x "$f" ] || [ -f "$f" ] || continue
      echo "== $f ${FUZZ_SECONDS:-10}s"
      if FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz} bash "$f" "${FUZZ_SECONDS:-10}" >"$tmp/out" 2>&1; then
        passed=$((passed + 1)); tail -3 "$tmp/out"
      else
        failed=$((failed + 1)); tail -20 "$tmp/out"
      fi
    done ;;
  *) echo "tests/run.sh: unknown suite '$suite' (c, lua, integration, fuzz)" >&2; exit 2 ;;
  esac
done
echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
