#!/usr/bin/env bash
# Make sure a Docker engine answers on /var/run/docker.sock (as root, no systemd needed).
# Idempotent: installs Debian's docker.io when dockerd is missing, starts dockerd in the
# background when nothing answers (log: $DOCKERD_LOG, default /tmp/foundry-dockerd.log),
# then waits up to DOCKERD_TIMEOUT seconds (default 60) for the engine to answer /_ping.
#   bash tests/lib/dockerd.sh        (exit 0: the engine answers)
set -euo pipefail
sock=/var/run/docker.sock
log=${DOCKERD_LOG:-/tmp/foundry-dockerd.log}
timeout=${DOCKERD_TIMEOUT:-60}

ping() { curl -fsS --max-time 2 --unix-socket "$sock" http://localhost/_ping >/dev/null 2>&1; }

if ping; then
  echo "dockerd: engine answers on $sock"
  exit 0
fi
if ! command -v curl >/dev/null; then
  echo "dockerd: curl is needed to ping the engine (apt-get install curl)" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "dockerd: docker.io is not installed; run as root (or: sudo make deps)" >&2
    exit 1
  fi
  echo "dockerd: installing docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "dockerd: no engine answers on $sock and starting one needs root" >&2
  exit 1
fi
if pgrep -x dockerd >/dev/null; then
  echo "dockerd: a dockerd process exists but does not answer yet; waiting"
else
  # A stale socket or pid file from a killed engine makes the new one refuse to start.
  [ -S "$sock" ] && rm -f "$sock"
  [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null \
    && rm -f /var/run/docker.pid
  echo "dockerd: starting dockerd (log: $log)"
  setsid nohup dockerd >>"$log" 2>&1 </dev/null &
fi
start=$(date +%s)
until ping; do
  if [ $(($(date +%s) - start)) -ge "$timeout" ]; then
    echo "dockerd: no engine answered on $sock within ${timeout}s; last lines of $log:" >&2
    tail -n 20 "$log" >&2 2>/dev/null || true
    exit 1
  fi
  sleep 0.5
done
echo "dockerd: engine answers on $sock after $(($(date +%s) - start))s"
