-- The connect timeout covers name resolution: a resolver that never answers makes the
-- proxy answer 504 after limits.connect_timeout, not hang for the resolver's own timeout.
-- Runs in a private network and mount namespace (unshare -mn, as root): the resolver is a
-- UDP/TCP black hole on that namespace's 127.0.0.1:53, named by a resolv.conf bound over
-- /etc/resolv.conf there; no query leaves the namespace.
local fs = require "foundry.fs"
local uv = require "luv"

local bin = (uv.exepath() or "build/foundry"):gsub(" %(deleted%)$", "")

local ENGINE = [[
local proxy = require "foundry.proxy"
local fs = require "foundry.fs"
local dir = ...
local e = proxy.engine{ ca_dir = dir .. "/ca", audit = function(r)
  io.stderr:write("audit ", r.decision, " ", r.rule or "", " ", r.reason or "", "\n") end }
e:add_sandbox{ name = "s", policy = { allow = { "hang.test" }, limits = { connect_timeout = 1500 } } }
fs.write(dir .. "/port.tmp", tostring(e:listen_tcp{ sandbox = "s" }))
os.rename(dir .. "/port.tmp", dir .. "/port")
require("foundry._task").wait("serve"):await()
]]

local HOLE = [[
import socket, sys, threading
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 53))
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("127.0.0.1", 53)); t.listen(8)
open(sys.argv[1], "w").write("ready")
held = []
threading.Thread(target=lambda: [held.append(t.accept()) for _ in iter(int, 1)], daemon=True).start()
while True: u.recvfrom(4096)   # read and never answer
]]

local SCRIPT = [[
set -eu
dir=$1 bin=$2
ip link set lo up
printf 'nameserver 127.0.0.1\noptions timeout:30 attempts:1\n' >"$dir/resolv.conf"
mount --bind "$dir/resolv.conf" /etc/resolv.conf
python3 "$dir/hole.py" "$dir/hole.ready" & hole=$!
"$bin" run "$dir/engine.lua" "$dir" 2>"$dir/engine.log" & eng=$!
trap 'kill $hole $eng 2>/dev/null' EXIT
for _ in $(seq 200); do [ -s "$dir/port" ] && [ -s "$dir/hole.ready" ] && break; sleep 0.05; done
start=$(date +%s%N)
code=$(curl -s -m 20 -o "$dir/body" -w '%{http_code}' -x "http://127.0.0.1:$(cat "$dir/port")" http://hang.test/ || true)
echo "code=$code ms=$(( ($(date +%s%N) - start) / 1000000 ))"
cat "$dir/body"; echo
sleep 0.2
cat "$dir/engine.log"
]]

describe("name resolution", function()
  it("is covered by connect_timeout: a resolver that never answers gets a 504, not a hang", { timeout = 30000 }, function()
    local id = foundry.exec{ "id", "-u" }
    if id.stdout:match("^0") == nil or not fs.stat("/usr/bin/unshare")
        or foundry.exec{ "unshare", "-mn", "true" }.status ~= 0 then
      return skip("needs root and unshare(1) for a private network namespace")
    end
    local dir = fs.mkdtemp("/tmp/foundry-resolve-XXXXXX")
    fs.write(dir .. "/engine.lua", ENGINE)
    fs.write(dir .. "/hole.py", HOLE)
    fs.write(dir .. "/run.sh", SCRIPT)
    local r = foundry.exec{ "unshare", "-mn", "bash", dir .. "/run.sh", dir, bin }
    fs.rm(dir)
    expect(r.status):equals(0)
    local code, ms = r.stdout:match("code=(%d+) ms=(%d+)")
    expect(code):equals("504")
    expect(tonumber(ms)):gt(1400)
    expect(tonumber(ms)):lt(4000)
    expect(r.stdout):matches("limits%.connect_timeout")
    expect(r.stdout):matches("resolving hang%.test")
    expect(r.stdout):matches("audit deny limits%.connect_timeout")
  end)
end)
