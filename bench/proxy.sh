#!/usr/bin/env bash
# The proxy benchmark, side by side in one run (docs/performance.md "Proxy"):
#   1. plain HTTP: direct vs Foundry vs squid (wrk; latency at 1 connection, req/s at 64)
#   2. HTTPS upstream with a credential swap: Foundry's gateway vs mitmproxy (reverse mode,
#      a header-swap script), both verifying the upstream (nginx, else socat)
#   3. CONNECT tunnel throughput vs direct (curl, 1 GB)
#   4. policy decision time with a 1 000-rule allowlist
#   5. memory with 100 sandboxes registered and 10 000 idle connections
# Bench-only Debian packages: wrk, squid, mitmproxy, nginx-light (socat, curl, openssl, python3 from deps).
#   bench/proxy.sh [SECONDS] [SECTION...]   (default 10 s per wrk run, every section)
#   sections: plain swap tunnel decide memory
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
only=" ${*:-plain swap tunnel decide memory} "
want() { [[ $only == *" $1 "* ]]; }
FOUNDRY=${FOUNDRY:-build/foundry}
for t in wrk squid mitmdump socat curl openssl; do
  command -v $t >/dev/null || { echo "bench/proxy.sh: needs $t (apt-get install wrk squid mitmproxy socat)" >&2; exit 2; }
done
ulimit -n 65536 2>/dev/null || true
tmp=$(mktemp -d /tmp/foundry-bench-proxy-XXXXXX)
pids=()
www=
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp" ${www:+"$www"}; }
trap cleanup EXIT
waitfile() { for _ in $(seq 200); do [ -s "$1" ] && return; sleep 0.05; done; echo "timeout waiting for $1" >&2; exit 1; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# certificates for the TLS upstream
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/ca.key" -out "$tmp/ca.crt" \
  -days 1 -subj "/CN=bench CA" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/srv.key" -out "$tmp/srv.csr" -subj /CN=bench.test 2>/dev/null
printf 'subjectAltName=DNS:bench.test,IP:127.0.0.1\n' >"$tmp/ext"
openssl x509 -req -in "$tmp/srv.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial -out "$tmp/srv.crt" -days 1 -extfile "$tmp/ext" 2>/dev/null
cat "$tmp/srv.crt" "$tmp/srv.key" >"$tmp/srv.pem"

# upstreams: plain (a luv server in its own process) and TLS: nginx answering itself
# (one worker, keep-alive), else socat in front of the plain one (a slower ceiling)
"$FOUNDRY" run bench/proxy_upstream.lua "$tmp/up.port" & pids+=($!)
waitfile "$tmp/up.port"; UP=$(cat "$tmp/up.port")
TLS=$(freeport)
if command -v nginx >/dev/null; then
  mkdir -p "$tmp/nginx"
  SF=$(freeport)
  www=$(mktemp -d /tmp/foundry-bench-www-XXXXXX) # readable by nginx's workers; no keys in it
  chmod 755 "$www"
  truncate -s 1G "$www/big" && chmod 644 "$www/big" # zeros; page-cached after the first read
  cat >"$tmp/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx; fastcgi_temp_path $tmp/nginx;
  uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
  keepalive_requests 1000000;
  server {  # the tunnel section's second upstream: a file sent with sendfile(2)
    listen 127.0.0.1:$SF;
    root $www;
    sendfile on;
    tcp_nopush on;
  }
  server {
    listen 127.0.0.1:$TLS ssl;
    ssl_certificate $tmp/srv.crt;
    ssl_certificate_key $tmp/srv.key;
    location / { default_type text/plain; return 200 "hello, world\n"; }
  }
}
CONF
  nginx -c "$tmp/nginx.conf" -e "$tmp/nginx-error.log" & pids+=($!)
  TLS_NAME="nginx, one worker"
else
  socat OPENSSL-LISTEN:$TLS,bind=127.0.0.1,fork,reuseaddr,cert="$tmp/srv.pem",verify=0 TCP:127.0.0.1:$UP & pids+=($!)
  TLS_NAME="socat in front of the plain upstream"
fi

# Foundry
"$FOUNDRY" run bench/proxy_server.lua "$tmp/fd.port" "$UP" "$TLS" "$tmp/ca.crt" & pids+=($!); FD_PID=$!
waitfile "$tmp/fd.port"; FD=$(cat "$tmp/fd.port")
# Foundry copying tunnels through user memory (the tunnel section compares)
"$FOUNDRY" run bench/proxy_server.lua "$tmp/fdc.port" "$UP" "$TLS" "$tmp/ca.crt" nosplice & pids+=($!); FDC_PID=$!
waitfile "$tmp/fdc.port"; FDC=$(cat "$tmp/fdc.port")

# squid: a plain forward proxy, no cache, no logs
SQ=$(freeport)
cat >"$tmp/squid.conf" <<CONF
http_port 127.0.0.1:$SQ
http_access allow all
cache deny all
access_log none
cache_log $tmp/squid-cache.log
pid_filename $tmp/squid.pid
coredump_dir $tmp
cache_mem 8 MB
forwarded_for delete
via off
shutdown_lifetime 0 seconds
CONF
squid -N -f "$tmp/squid.conf" & pids+=($!)

# mitmproxy: reverse mode to the TLS upstream, a script swapping the header
MP=$(freeport)
cat >"$tmp/swap.py" <<'PY'
def request(flow):
    if flow.request.headers.get("authorization") == "Bearer placeholder-0000000000000000":
        flow.request.headers["authorization"] = "Bearer real-secret-value-0123456789"
PY
mitmdump -q --mode "reverse:https://127.0.0.1:$TLS" --listen-host 127.0.0.1 --listen-port "$MP" \
  --set ssl_verify_upstream_trusted_ca="$tmp/ca.crt" --set confdir="$tmp/mitm" -s "$tmp/swap.py" & pids+=($!)

for p in $SQ $MP; do
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$p/" 2>/dev/null && break; sleep 0.1; done
done

cat >"$tmp/proxy.lua" <<LUA
wrk.path = "http://127.0.0.1:$UP/"
LUA
cat >"$tmp/swap.lua" <<'LUA'
wrk.headers["Authorization"] = "Bearer placeholder-0000000000000000"
LUA

# run NAME URL [wrk args...]: prints "NAME rps p50 p99"
run() {
  local name=$1 url=$2; shift 2
  local out
  out=$(wrk "$@" --latency "$url")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%-34s %10s req/s   p50 %-9s p99 %s\n' "$name" "$rps" "$p50" "$p99"
}

if want plain; then
echo "== plain HTTP, 1 connection (latency)"
run "direct" "http://127.0.0.1:$UP/" -t1 -c1 -d"$secs"s
run "foundry" "http://127.0.0.1:$FD/" -t1 -c1 -d"$secs"s -s "$tmp/proxy.lua"
run "squid" "http://127.0.0.1:$SQ/" -t1 -c1 -d"$secs"s -s "$tmp/proxy.lua"
echo "== plain HTTP, 64 connections (throughput)"
run "direct" "http://127.0.0.1:$UP/" -t2 -c64 -d"$secs"s
run "foundry" "http://127.0.0.1:$FD/" -t2 -c64 -d"$secs"s -s "$tmp/proxy.lua"
run "squid" "http://127.0.0.1:$SQ/" -t2 -c64 -d"$secs"s -s "$tmp/proxy.lua"
fi
if want swap; then
echo "== HTTPS upstream with a credential swap, 16 connections"
echo "(TLS upstream: $TLS_NAME)"
run "direct to the TLS upstream (ceiling)" "https://127.0.0.1:$TLS/" -t2 -c16 -d"$secs"s
run "foundry gateway" "http://127.0.0.1:$FD/_gw/bench/" -t2 -c16 -d"$secs"s -s "$tmp/swap.lua"
run "mitmproxy + swap script" "http://127.0.0.1:$MP/" -t2 -c16 -d"$secs"s -s "$tmp/swap.lua"
fi
if want tunnel; then
N=$((1 << 30))
# best of 5 for each, the four interleaved round by round: one run on a 2-core machine
# swings with whatever else runs, and a slow minute must not fall on one column only
speed() { local v; v=$(curl -s -o /dev/null -w '%{speed_download}' "$@" || echo 0); echo "${v%.*}"; }
best() { local b=0 v; for _ in 1 2 3; do v=$(speed "$@"); [ "$v" -gt "$b" ] && b=$v; done; echo "$b"; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in clock ticks
hz=$(getconf CLK_TCK)
# tunnel URL: direct, through Foundry splicing and copying, through squid
tunnel() {
  local url=$1 d=0 t=0 c=0 s=0 tc=0 cc=0 c0 v
  for _ in 1 2 3 4 5; do
    v=$(speed "$url"); [ "$v" -gt "$d" ] && d=$v
    c0=$(cpu "$FD_PID"); v=$(speed -p -x "http://127.0.0.1:$FD" "$url"); tc=$(( tc + $(cpu "$FD_PID") - c0 ))
    [ "$v" -gt "$t" ] && t=$v
    c0=$(cpu "$FDC_PID"); v=$(speed -p -x "http://127.0.0.1:$FDC" "$url"); cc=$(( cc + $(cpu "$FDC_PID") - c0 ))
    [ "$v" -gt "$c" ] && c=$v
    v=$(speed -p -x "http://127.0.0.1:$SQ" "$url"); [ "$v" -gt "$s" ] && s=$v
  done
  awk -v d="$d" -v t="$t" -v c="$c" -v s="$s" -v tc="$tc" -v cc="$cc" -v hz="$hz" 'BEGIN {
    printf "direct              %6.0f MB/s\n", d/1e6
    printf "foundry (splice)    %6.0f MB/s  %.2fx direct, proxy CPU %.2f s per GiB\n", t/1e6, t/d, tc/hz/5
    printf "foundry (copying)   %6.0f MB/s  %.2fx direct, proxy CPU %.2f s per GiB\n", c/1e6, c/d, cc/hz/5
    printf "squid               %6.0f MB/s  %.2fx direct\n", s/1e6, s/d }'
}
echo "== CONNECT tunnel, 1 GiB, best of 5: from the luv upstream (it burns a core writing)"
tunnel "http://127.0.0.1:$UP/bytes?n=$N"
if [ -n "${SF:-}" ]; then
  echo "== CONNECT tunnel, 1 GiB, best of 5: from nginx's sendfile (an upstream nearly free of CPU, as a remote one is)"
  tunnel "http://127.0.0.1:$SF/big"
fi
# eight bulk tunnels at once (256 MiB each): one loop thread carries them all
par() { local t0 ms; t0=$(date +%s%N)
  for _ in 1 2 3 4 5 6 7 8; do curl -s -o /dev/null "$@" "http://127.0.0.1:$UP/bytes?n=$((N / 4))" & done; wait
  ms=$(( ($(date +%s%N) - t0) / 1000000 )); echo $(( 2048 * 1000 / ms )); }
pd=$(par); c0=$(cpu "$FD_PID"); pt=$(par -p -x "http://127.0.0.1:$FD"); ptc=$(( $(cpu "$FD_PID") - c0 ))
c0=$(cpu "$FDC_PID"); pc=$(par -p -x "http://127.0.0.1:$FDC"); pcc=$(( $(cpu "$FDC_PID") - c0 ))
awk -v d="$pd" -v t="$pt" -v c="$pc" -v tc="$ptc" -v cc="$pcc" -v hz="$hz" 'BEGIN {
  printf "8 at once: direct %d MiB/s, foundry (splice) %d MiB/s (%.2fx, proxy CPU %.2f s), (copying) %d MiB/s (%.2fx, proxy CPU %.2f s)\n", d, t, t/d, tc/hz, c, c/d, cc/hz }'
# a link's worth: does a tunnel keep up with 1 GB/s offered (curl --limit-rate), as a fast
# network would offer it, rather than with two processes copying on loopback?
ld=$(best --limit-rate 1000M "http://127.0.0.1:$UP/bytes?n=$N")
lt=$(best --limit-rate 1000M -p -x "http://127.0.0.1:$FD" "http://127.0.0.1:$UP/bytes?n=$N")
awk -v d="$ld" -v t="$lt" 'BEGIN { printf "at 1 GB/s offered: direct %.0f MB/s, foundry (splice) %.0f MB/s (%.2fx)\n", d/1e6, t/1e6, t/d }'
fi
if want decide; then
echo "== policy decision, 1 000-rule allowlist"
"$FOUNDRY" eval '
local allow, hosts = {}, {}
for i = 1, 1000 do
  allow[i] = i % 2 == 0 and ("host" .. i .. ".example.net") or ("*.svc" .. i .. ".example.org")
  hosts[i] = i % 2 == 0 and ("host" .. i .. ".example.net") or ("a.b.svc" .. i .. ".example.org")
end
local p = require("foundry.policy").from_table({ allow = allow, deny = { "x.example.net" } })
local t = require("foundry.proxy").bench_decide(p.spec, hosts, 100)
table.sort(t)
return string.format("%d decisions: p50 %d ns, p99 %d ns", #t, t[#t // 2], t[math.floor(#t * 0.99)])'
fi
if want memory; then
echo "== memory"
"$FOUNDRY" run bench/proxy_memory.lua 100 10000
fi
