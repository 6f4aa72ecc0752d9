#!/usr/bin/env bash
# State database benchmarks, side by side in one run:
#   - audit rows/s: foundry.audit batched (the proxy's path) vs one transaction per row vs
#     the same INSERTs without hashing (foundry._db) vs the sqlite3 CLI inserting the same
#     rows in one transaction (the reference: SQLite itself, no Lua, no hashing);
#   - audit verify rows/s;
#   - state.sandboxes.list() with 50 sandboxes (in process), and `foundry eval` listing
#     them end to end vs `sqlite3` doing the same SELECT (process start included).
#
#   bench/db.sh [ROWS]          (default 50000; FOUNDRY=path/to/foundry)
set -euo pipefail
cd "$(dirname "$0")/.."
FOUNDRY=${FOUNDRY:-build/foundry}
ROWS=${1:-50000}
tmp=$(mktemp -d /tmp/foundry-bench-db-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export FOUNDRY_HOME=$tmp/home

ms() { echo $(( $(date +%s%N) / 1000000 )); }

echo "== foundry state benchmarks: $ROWS audit rows, $(nproc) cores, SQLite $(sqlite3 --version | cut -d' ' -f1)"

"$FOUNDRY" eval "
local uv = require 'luv'
local state = require 'foundry.state'
local audit = require 'foundry.audit'
local ROWS = $ROWS
local function now() uv.update_time(); return uv.hrtime() / 1e6 end
local function row(i)
  return { sandbox = 'bench-' .. (i % 10), kind = 'net', decision = i % 5 == 0 and 'deny' or 'allow',
    host = 'api.example.com', method = 'POST', path = '/v1/messages?n=' .. i, rule = 'anthropic-gateway',
    status = 200, bytes_in = 1200 + i % 100, bytes_out = 48000, ms = 12.5 + (i % 7) }
end
local function report(name, n, t) print(string.format('%-44s %9.0f rows/s  (%d rows, %.0f ms)', name, n / (t / 1000), n, t)) end
state.db()

local t0 = now()
for i = 1, ROWS do audit.append(row(i)) end
audit.flush()
report('audit.append, batched (256 rows/tx)', ROWS, now() - t0)

local n1 = math.min(ROWS, 2000)
local w = audit.writer{ max_rows = 1 }
t0 = now()
for i = 1, n1 do w:append(row(i)) end
w:close()
report('audit.append, one transaction per row', n1, now() - t0)

local c = state.db()
c:exec('CREATE TABLE plain AS SELECT * FROM audit WHERE 0')
t0 = now()
c:transaction(function()
  for i = 1, ROWS do
    local r = row(i)
    c:run('INSERT INTO plain (ts, sandbox, kind, decision, host, method, path, rule, status, bytes_in, bytes_out, ms, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      state.now(), r.sandbox, r.kind, r.decision, r.host, r.method, r.path, r.rule, r.status, r.bytes_in, r.bytes_out, r.ms, '', '')
  end
end)
report('foundry._db INSERTs, no hashing, one tx', ROWS, now() - t0)

t0 = now()
local v = audit.verify()
assert(v.ok)
report('audit.verify', v.rows, now() - t0)

for i = 1, 50 do state.sandboxes.insert{ name = 'sb-' .. i, state = 'running', image = 'foundry:latest', branch = 'sandbox/sb-' .. i, spec = { cpus = 2, memory = '4g', env = { 'A=1' } } } end
local reps = 200
t0 = now()
for _ = 1, reps do assert(#state.sandboxes.list() == 50) end
local t = (now() - t0) / reps
print(string.format('%-44s %9.3f ms', 'state.sandboxes.list(), 50 rows, in process', t))
"

# The reference: the sqlite3 CLI inserting the same rows in one transaction.
db=$tmp/ref.db
sqlite3 "$db" "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
  CREATE TABLE audit (id INTEGER PRIMARY KEY, ts INTEGER, sandbox TEXT, kind TEXT, decision TEXT, host TEXT,
    method TEXT, path TEXT, rule TEXT, reason TEXT, status INTEGER, bytes_in INTEGER, bytes_out INTEGER,
    ms REAL, data TEXT, prev_hash TEXT, hash TEXT);
  CREATE INDEX a1 ON audit(sandbox, id); CREATE INDEX a2 ON audit(ts);" >/dev/null
awk -v n="$ROWS" 'BEGIN {
  print "BEGIN;"
  for (i = 1; i <= n; i++)
    printf "INSERT INTO audit (ts, sandbox, kind, decision, host, method, path, rule, status, bytes_in, bytes_out, ms, prev_hash, hash) VALUES (%d, '\''bench-%d'\'', '\''net'\'', '\''%s'\'', '\''api.example.com'\'', '\''POST'\'', '\''/v1/messages?n=%d'\'', '\''anthropic-gateway'\'', 200, %d, 48000, %.1f, '\''%064d'\'', '\''%064d'\'');\n", 1700000000000 + i, i % 10, (i % 5 == 0) ? "deny" : "allow", i, 1200 + i % 100, 12.5 + i % 7, i - 1, i
  print "COMMIT;"
}' >"$tmp/insert.sql"
t0=$(ms); sqlite3 "$db" <"$tmp/insert.sql"; t1=$(ms)
awk -v n="$ROWS" -v t=$((t1 - t0)) 'BEGIN { printf "%-44s %9.0f rows/s  (%d rows, %d ms)\n", "sqlite3 CLI INSERTs, one tx (reference)", n / (t / 1000), n, t }'

# End to end: a process that opens the state database and lists 50 sandboxes.
reps=20
t0=$(ms); for _ in $(seq $reps); do "$FOUNDRY" eval 'return #require("foundry.state").sandboxes.list()' >/dev/null; done; t1=$(ms)
t2=$(ms); for _ in $(seq $reps); do sqlite3 "$FOUNDRY_HOME/state/foundry.db" 'SELECT * FROM sandboxes ORDER BY created_at, id' >/dev/null; done; t3=$(ms)
t4=$(ms); for _ in $(seq $reps); do "$FOUNDRY" eval 'return 1' >/dev/null; done; t5=$(ms)
awk -v a=$((t1 - t0)) -v b=$((t3 - t2)) -v c=$((t5 - t4)) -v n=$reps 'BEGIN {
  printf "%-44s %9.1f ms\n", "foundry eval: open state, list 50 sandboxes", a / n
  printf "%-44s %9.1f ms\n", "foundry eval: return 1 (process baseline)", c / n
  printf "%-44s %9.1f ms\n", "sqlite3 CLI: same SELECT (reference)", b / n
}'
