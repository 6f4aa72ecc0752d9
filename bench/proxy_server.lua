-- The Foundry side of bench/proxy.sh: an engine with one sandbox on TCP.
--   foundry run bench/proxy_server.lua PORTFILE UPSTREAM_PORT TLS_PORT CA_FILE [nosplice]
-- Policy: 127.0.0.1 allowed (plain HTTP and CONNECT), and a gateway "bench" to
-- bench.test (mapped to TLS_PORT) that swaps the sandbox's placeholder for BENCH_KEY.
-- (plain HTTP goes to whatever 127.0.0.1 port the client names: the upstream's)
local portfile, _, tlsport, cafile, splice = ...
local proxy = require "foundry.proxy"
local fs = require "foundry.fs"
local e = proxy.engine{
  ca_dir = fs.mkdtemp("/tmp/foundry-bench-ca-XXXXXX"),
  upstream_ca_file = cafile,
  splice = splice ~= "nosplice",
  secrets = function(n) return n == "BENCH_KEY" and "real-secret-value-0123456789" or nil end,
  audit = function() end,
}
e:add_sandbox{
  name = "bench",
  policy = {
    allow = { "127.0.0.1" },
    gateways = { bench = { host = "bench.test", header = "authorization", format = "Bearer {secret}", secret = "BENCH_KEY" } },
    overrides = { ["bench.test"] = "127.0.0.1:" .. tlsport },
    limits = { rate = 0, connections = 100000 },
  },
  placeholders = { BENCH_KEY = "placeholder-0000000000000000" },
}
local port = e:listen_tcp{ sandbox = "bench" }
fs.write(portfile .. ".tmp", tostring(port))
os.rename(portfile .. ".tmp", portfile)
local w = require("foundry._task").wait("serve")
w:await()
