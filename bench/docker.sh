#!/usr/bin/env bash
# foundry.docker vs the docker CLI, side by side in one run, against the local engine:
#   1. a sandbox cycle: create + start + exec `true` + remove (force), N times
#      - foundry.docker in one process (how Foundry uses it)
#      - one `foundry eval` process per cycle (process start included)
#      - the docker CLI: docker create; docker start; docker exec; docker rm -f
#   2. exec round trip: `true` in a running container, M times
#      - foundry.docker (c:exec{"true"}) vs `docker exec C true`
#   3. API round trip (container inspect), M times: c:inspect() vs `docker inspect C`
#      (mostly the transport's own cost: the engine answers from memory)
# Prints milliseconds per operation (median and mean) and the ratio foundry/CLI.
#
#   bench/docker.sh [N] [M]      (default 10 cycles, 30 execs; FOUNDRY=path/to/foundry)
set -euo pipefail
cd "$(dirname "$0")/.."
FOUNDRY=${FOUNDRY:-build/foundry}
N=${1:-10}
M=${2:-30}
IMAGE=${IMAGE:-foundry-test:base}
LABEL=dev.foundry.bench=docker

bash tests/lib/dockerd.sh >/dev/null
bash tests/image/build.sh >/dev/null
cleanup() { docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f >/dev/null 2>&1 || true; }
trap cleanup EXIT

now() { date +%s%N; }
# stats "label" ns... -> prints "label median mean" in ms
stats() {
  local label=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v l="$label" '{ a[NR] = $1 / 1e6; s += $1 / 1e6 }
    END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%s %.1f %.1f\n", l, m, s / NR }'
}

echo "== foundry.docker vs docker CLI: $N cycles, $M execs; engine $(docker version -f '{{.Server.Version}}' 2>/dev/null), $(nproc) cores"

# 1a. foundry.docker, in process
inproc=$("$FOUNDRY" eval "
local docker = require 'foundry.docker'
local uv = require 'luv'
local function ns() return uv.hrtime() end
docker.ping() -- negotiate once, like a running Foundry
local cyc, ex = {}, {}
for i = 1, $N do
  local t0 = ns()
  local c = docker.create{ image = '$IMAGE', cmd = { 'sleep', 'infinity' }, network = 'none',
    labels = { ['dev.foundry.bench'] = 'docker' } }
  c:start()
  local r = c:exec{ 'true' }
  assert(r.status == 0)
  c:remove{ force = true }
  cyc[#cyc + 1] = ns() - t0
end
local c = docker.create{ image = '$IMAGE', cmd = { 'sleep', 'infinity' }, network = 'none',
  labels = { ['dev.foundry.bench'] = 'docker' } }
c:start()
c:exec{ 'true' }
for i = 1, $M do
  local t0 = ns()
  assert(c:exec{ 'true' }.status == 0)
  ex[#ex + 1] = ns() - t0
end
local ver = {}
for i = 1, $M do
  local t0 = ns()
  c:inspect()
  ver[#ver + 1] = ns() - t0
end
c:remove{ force = true }
return table.concat(cyc, ' ') .. '|' .. table.concat(ex, ' ') .. '|' .. table.concat(ver, ' ')
")
IFS='|' read -r cyc_f exec_f ver_f <<<"$inproc"

# 1b. foundry eval per cycle (process start included)
proc=()
for _ in $(seq "$N"); do
  t0=$(now)
  "$FOUNDRY" eval "
local docker = require 'foundry.docker'
local c = docker.create{ image = '$IMAGE', cmd = { 'sleep', 'infinity' }, network = 'none',
  labels = { ['dev.foundry.bench'] = 'docker' } }
c:start(); assert(c:exec{ 'true' }.status == 0); c:remove{ force = true }" >/dev/null
  proc+=($(( $(now) - t0 )))
done

# 1c. docker CLI
cli=()
for _ in $(seq "$N"); do
  t0=$(now)
  id=$(docker create --network none --label "$LABEL" "$IMAGE" sleep infinity)
  docker start "$id" >/dev/null
  docker exec "$id" true
  docker rm -f "$id" >/dev/null
  cli+=($(( $(now) - t0 )))
done

# 2. docker exec round trip
id=$(docker run -d --network none --label "$LABEL" "$IMAGE" sleep infinity)
docker exec "$id" true
cli_exec=()
for _ in $(seq "$M"); do
  t0=$(now)
  docker exec "$id" true
  cli_exec+=($(( $(now) - t0 )))
done
# 3. docker inspect round trip
cli_ver=()
for _ in $(seq "$M"); do
  t0=$(now)
  docker inspect "$id" >/dev/null
  cli_ver+=($(( $(now) - t0 )))
done
docker rm -f "$id" >/dev/null

# shellcheck disable=SC2086
{
  stats cycle_foundry $cyc_f
  stats cycle_foundry_process "${proc[@]}"
  stats cycle_cli "${cli[@]}"
  stats exec_foundry $exec_f
  stats exec_cli "${cli_exec[@]}"
  stats ver_foundry $ver_f
  stats ver_cli "${cli_ver[@]}"
} | awk '
  { med[$1] = $2; mean[$1] = $3 }
  END {
    printf "%-44s %10s %10s %8s\n", "operation", "median ms", "mean ms", "ratio"
    printf "%-44s %10.1f %10.1f %8s\n", "create+start+exec+rm: docker CLI", med["cycle_cli"], mean["cycle_cli"], "1.00"
    printf "%-44s %10.1f %10.1f %8.2f\n", "create+start+exec+rm: foundry.docker", med["cycle_foundry"], mean["cycle_foundry"], med["cycle_foundry"] / med["cycle_cli"]
    printf "%-44s %10.1f %10.1f %8.2f\n", "create+start+exec+rm: foundry eval (process)", med["cycle_foundry_process"], mean["cycle_foundry_process"], med["cycle_foundry_process"] / med["cycle_cli"]
    printf "%-44s %10.1f %10.1f %8s\n", "exec true: docker exec", med["exec_cli"], mean["exec_cli"], "1.00"
    printf "%-44s %10.1f %10.1f %8.2f\n", "exec true: foundry.docker", med["exec_foundry"], mean["exec_foundry"], med["exec_foundry"] / med["exec_cli"]
    printf "%-44s %10.1f %10.1f %8s\n", "inspect: docker inspect", med["ver_cli"], mean["ver_cli"], "1.00"
    printf "%-44s %10.2f %10.2f %8.3f\n", "inspect: foundry.docker", med["ver_foundry"], mean["ver_foundry"], med["ver_foundry"] / med["ver_cli"]
  }'
