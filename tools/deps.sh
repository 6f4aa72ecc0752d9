#!/usr/bin/env bash
# Install Foundry's build and test dependencies from Debian's archive (as root).
# A no-op when everything is present.
set -euo pipefail
pkgs=(
  build-essential pkg-config
  liblua5.4-dev lua5.4 libuv1-dev lua-luv-dev lua-lpeg-dev lua-cjson-dev
  libssl-dev libgit2-dev libsqlite3-dev libedit-dev libhttp-parser-dev
  git curl ca-certificates python3 openssl
  docker.io debootstrap iproute2 procps valgrind lua-check
  socat  # bench/shim.sh: the reference bridge the shim is measured against
  clang  # tests/fuzz/run_proxy.sh: libFuzzer targets for the proxy's parsers
  node-xterm  # the web console's terminal: xterm.js, served from the system (libjs-xterm's is a stub)
  chromium  # tests/integration/web_spec.lua: the console in a headless browser
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: run as root (or: sudo make deps)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
