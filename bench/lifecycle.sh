#!/usr/bin/env bash
# Sandbox lifecycle benchmark, side by side in one run:
#   1. `foundry new -d` to ready on a 10 000-file repository (cached image) vs
#      `git worktree add` + `docker run -d` (same image, same lockdown flags) back to back;
#   2. `foundry rm -y` vs `docker rm -f` + `git worktree remove`;
#   3. `foundry ls` (and `ls -q`) with 50 sandboxes.
# Medians of RUNS runs (default 7). Uses a private FOUNDRY_HOME; cleans up after itself.
#   bash bench/lifecycle.sh            (IMAGE=foundry-test:base RUNS=7 LS_SANDBOXES=50)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FOUNDRY:-$PWD/build/foundry}
IMAGE=${IMAGE:-foundry-test:base}
RUNS=${RUNS:-7}
NLS=${LS_SANDBOXES:-50}
work=$(mktemp -d /tmp/foundry-bench-XXXXXX)
export FOUNDRY_HOME=$work/home FOUNDRY_IMAGE=$IMAGE
# private copies: a rebuild of build/ during the run must not pull the binary away
mkdir -p "$work/bin" && cp "$BIN" "$(dirname "$BIN")/foundry-shim" "$work/bin/"
[ -d "$(dirname "$BIN")/lib" ] && cp -r "$(dirname "$BIN")/lib" "$work/bin/"
F=$work/bin/foundry
cleanup() {
  "$F" rm -y --all --discard >/dev/null 2>&1 || true
  "$F" prune -y >/dev/null 2>&1 || true
  "$F" eval 'pcall(function() require("foundry.daemon_client").stop() end)' >/dev/null 2>&1 || true
  docker rm -f $(docker ps -aq --filter label=foundry.bench=1) >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
docker image inspect "$IMAGE" >/dev/null

ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "== repository: 10 000 files"
repo=$work/repo
git init -q -b main "$repo"
python3 - "$repo" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    p = os.path.join(root, "src", "m%03d" % d)
    os.makedirs(p)
    for f in range(100):
        with open(os.path.join(p, "f%03d.txt" % f), "w") as fh:
            fh.write("module %d file %d\n" % (d, f) * 20)
PY
git -C "$repo" add -A && git -C "$repo" -c user.name=b -c user.email=b@b commit -qm files
echo "   $(git -C "$repo" ls-files | wc -l) files"
cd "$repo"

# warm up: the image's layers, the daemon, git's caches
"$F" new -d -n warm >/dev/null 2>&1; "$F" rm -y warm >/dev/null
docker run -d --rm --label foundry.bench=1 "$IMAGE" true >/dev/null || true

new_t=(); ref_t=(); rm_t=(); refrm_t=(); wt_t=(); run_t=()
for i in $(seq 1 "$RUNS"); do
  t0=$(ms); "$F" new -d -n "b$i" >/dev/null 2>&1; t1=$(ms)
  new_t+=($((t1 - t0)))
  t0=$(ms)
  git -C "$repo" worktree add -q -b "ref$i" "$work/wt$i"
  tw=$(ms)
  docker run -d --label foundry.bench=1 --read-only --tmpfs /tmp --network none --cap-drop ALL \
    --security-opt no-new-privileges --user 1000:1000 --pids-limit 1024 --memory 4g --cpus 2 \
    -v "$work/wt$i:/workspace" "$IMAGE" sleep infinity >/dev/null
  t1=$(ms)
  ref_t+=($((t1 - t0))); wt_t+=($((tw - t0))); run_t+=($((t1 - tw)))
  t0=$(ms); "$F" rm -y "b$i" >/dev/null; t1=$(ms)
  rm_t+=($((t1 - t0)))
  t0=$(ms)
  docker rm -f $(docker ps -aq --filter label=foundry.bench=1) >/dev/null
  git -C "$repo" worktree remove --force "$work/wt$i"; git -C "$repo" branch -q -D "ref$i"
  t1=$(ms)
  refrm_t+=($((t1 - t0)))
done
new_m=$(printf '%s\n' "${new_t[@]}" | median)
ref_m=$(printf '%s\n' "${ref_t[@]}" | median)
rm_m=$(printf '%s\n' "${rm_t[@]}" | median)
refrm_m=$(printf '%s\n' "${refrm_t[@]}" | median)
echo "== create (median of $RUNS, ms): foundry new -d ${new_m}  |  git worktree add + docker run -d ${ref_m}  |  ratio $(awk -v a="$new_m" -v b="$ref_m" 'BEGIN { printf "%.2f", a / b }') (goal <= 1.20)"
echo "   foundry new:        ${new_t[*]}"
echo "   worktree + run:     ${ref_t[*]}"
echo "     git worktree add: ${wt_t[*]}"
echo "     docker run -d:    ${run_t[*]}"
echo "== remove (median, ms): foundry rm -y ${rm_m}  |  docker rm -f + git worktree remove ${refrm_m}"

echo "== foundry ls with $NLS sandboxes"
for i in $(seq 1 "$NLS"); do "$F" new -d -n "ls$i" >/dev/null 2>&1 & if (( i % 5 == 0 )); then wait; fi; done; wait
echo "   $("$F" ls -q | wc -l) sandboxes"
ls_t=(); lsq_t=(); lsj_t=()
for i in $(seq 1 15); do
  t0=$(ms); "$F" ls >/dev/null; t1=$(ms); ls_t+=($((t1 - t0)))
  t0=$(ms); "$F" ls --json >/dev/null; t1=$(ms); lsj_t+=($((t1 - t0)))
  t0=$(ms); "$F" ls -q >/dev/null; t1=$(ms); lsq_t+=($((t1 - t0)))
done
echo "   foundry ls (median of 15, ms): $(printf '%s\n' "${ls_t[@]}" | median)  |  --json $(printf '%s\n' "${lsj_t[@]}" | median)  |  -q $(printf '%s\n' "${lsq_t[@]}" | median)  (goal <= 20)"
t0=$(ms); docker ps -a --filter "label=dev.foundry.home=$FOUNDRY_HOME/state" >/dev/null; t1=$(ms)
echo "   for scale: docker ps (the CLI) $((t1 - t0)) ms"
t0=$(ms); "$F" rm -y --all >/dev/null; t1=$(ms)
echo "   foundry rm -y --all ($NLS sandboxes): $((t1 - t0)) ms"
