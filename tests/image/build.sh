#!/usr/bin/env bash
# Build the test image foundry-test:base: a minimal Debian bookworm root filesystem made
# with debootstrap (no registry is reachable here, so nothing is pulled), with a non-root
# user `agent` (uid 1000, home /home/agent), imported into the local engine.
#
#   bash tests/image/build.sh          # no-op when the image exists
#   FORCE=1 bash tests/image/build.sh  # rebuild (reusing the cached rootfs when current)
#
# Caches under tests/image/cache/ (gitignored): rootfs-<recipe>.tar, the finished root
# filesystem (so `docker rmi` + rebuild is a few seconds), and debs/, debootstrap's package
# cache. The recipe hash covers this script, so editing it invalidates the rootfs tarball.
# The Debian mirror is the one apt uses here (/etc/apt/sources.list{,.d/*}), or $MIRROR.
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
self=$here/$(basename "$0")
IMAGE=${IMAGE:-foundry-test:base}
SUITE=${SUITE:-bookworm}
PACKAGES=bash,coreutils,git,curl,ca-certificates,tmux,procps,iproute2,python3
cache=$here/cache
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }
say() { echo "image: $* [$(elapsed)]"; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE exists (FORCE=1 rebuilds)"
  exit 0
fi

recipe=$( { cat "$self"; echo "$SUITE $PACKAGES"; } | sha256sum | cut -c1-12)
tarball=$cache/rootfs-$recipe.tar
mkdir -p "$cache/debs"

# The first mirror apt is configured with for $SUITE itself (not -updates/-security), from
# one-line (.list) or deb822 (.sources) files.
find_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                       if ($(i + 1) == s) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" 'function flush() { if (deb && uri != "" && (" " suites " ") ~ (" " s " ")) { print uri; found = 1 }
                                         deb = 0; uri = ""; suites = "" }
                       /^[ \t]*$/ { flush(); if (found) exit; next }
                       /^Types:/ { deb = ($0 ~ /[ \t]deb([ \t]|$)/) }
                       /^URIs:/ { uri = $2 }
                       /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
                       /^Enabled:[ \t]*no/ { deb = 0 }
                       END { if (!found) flush() }' "$f"
  done
}

if [ ! -f "$tarball" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "image: debootstrap needs root (or run once as root to fill $cache)" >&2
    exit 1
  fi
  command -v debootstrap >/dev/null || { echo "image: debootstrap missing (make deps)" >&2; exit 1; }
  mirror=${MIRROR:-$(find_mirror | head -1)}
  if [ -z "$mirror" ]; then
    echo "image: no apt mirror for '$SUITE' in /etc/apt/sources.list{,.d/*}; set MIRROR=" >&2
    exit 1
  fi
  root=$(mktemp -d /tmp/foundry-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  say "debootstrap $SUITE (minbase) from $mirror"
  if ! debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$cache/debs" \
      "$SUITE" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1; then
    echo "image: debootstrap failed; last lines of $cache/debootstrap.log:" >&2
    tail -n 20 "$cache/debootstrap.log" >&2
    exit 1
  fi
  say "debootstrap done"
  chroot "$root" /usr/sbin/useradd --uid 1000 --user-group --create-home \
    --home-dir /home/agent --shell /bin/bash agent
  # Smaller and reproducible-ish: no package lists, caches or logs in the image.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
    "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/*
  : > "$root/etc/machine-id"
  tar -C "$root" --numeric-owner --xattrs -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  rm -rf "$root"
  trap - EXIT
  # Older recipes' tarballs are dead weight.
  find "$cache" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$recipe.tar" -delete
  say "rootfs cached: $tarball ($(du -h "$tarball" | cut -f1))"
else
  say "using cached rootfs $tarball"
fi

docker import \
  --change 'CMD ["/bin/bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'WORKDIR /' \
  --change "LABEL dev.foundry.image=test-base dev.foundry.recipe=$recipe" \
  - "$IMAGE" <"$tarball" >/dev/null
say "imported $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
