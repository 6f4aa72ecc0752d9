--- Fixtures for the proxy specs (host side; reusable by the container tests): a test CA
--- and server certificate for the real provider names, local upstreams (HTTP and HTTPS,
--- tests/lib/proxy_upstream.py), an engine with a TCP listener, and curl through it.
local uv = require "luv"
local fs = require "foundry.fs"
local json = require "foundry.json"

local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]+$") or "tests/lib"

M.NAMES = { "api.anthropic.com", "api.openai.com", "generativelanguage.googleapis.com",
            "github.com", "api.github.com", "example.test", "localhost" }

--- A directory with ca.crt, server.crt/server.key for M.NAMES and 127.0.0.1.
function M.certs()
  if M._certs then return M._certs end
  local dir = fs.mkdtemp("/tmp/foundry-proxy-certs-XXXXXX")
  local function run(argv)
    argv.check = true
    argv.cwd = dir
    return foundry.exec(argv)
  end
  run({ "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=proxy test upstream CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign" })
  run({ "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=upstream" })
  local sans = {}
  for i, n in ipairs(M.NAMES) do sans[i] = "DNS:" .. n end
  sans[#sans + 1] = "IP:127.0.0.1"
  fs.write(dir .. "/ext.cnf", "subjectAltName=" .. table.concat(sans, ",") .. "\nextendedKeyUsage=serverAuth\n")
  run({ "openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf" })
  M._certs = dir
  return dir
end

--- Start an upstream; returns {port=, stop=function}. tls=true serves HTTPS.
function M.upstream(tls)
  local dir = fs.mkdtemp("/tmp/foundry-proxy-up-XXXXXX")
  local portfile = dir .. "/port"
  local args = { here .. "/proxy_upstream.py", portfile }
  if tls then
    local c = M.certs()
    args[#args + 1] = c .. "/server.crt"
    args[#args + 1] = c .. "/server.key"
  end
  local handle
  handle = uv.spawn("python3", { args = args, stdio = { nil, nil, 2 } }, function()
    if handle and not handle:is_closing() then handle:close() end
  end)
  assert(handle, "cannot start python3")
  for _ = 1, 200 do
    if fs.stat(portfile) then break end
    foundry.sleep(20)
  end
  local port = tonumber(fs.read(portfile))
  assert(port, "the upstream did not start")
  return {
    port = port,
    stop = function()
      if not handle:is_closing() then handle:kill("sigterm") end
      for _ = 1, 100 do
        if handle:is_closing() then break end
        foundry.sleep(10)
      end
      fs.rm(dir)
    end,
  }
end

--- curl through the proxy: opts = {proxy_port=, url=, method=, headers={}, data=,
--- cacert=, extra={...}, timeout=}. Returns {status=http code, body=, headers=, exit=}.
function M.curl(o)
  local dir = fs.mkdtemp("/tmp/foundry-proxy-curl-XXXXXX")
  local argv = { "curl", "-sS", "-m", tostring(o.timeout or 10), "-o", dir .. "/body",
                 "-D", dir .. "/headers", "-w", "%{http_code}" }
  if o.proxy_port then argv[#argv + 1] = "-x"; argv[#argv + 1] = "http://127.0.0.1:" .. o.proxy_port end
  if o.cacert then argv[#argv + 1] = "--cacert"; argv[#argv + 1] = o.cacert end
  if o.method then argv[#argv + 1] = "-X"; argv[#argv + 1] = o.method end
  for _, h in ipairs(o.headers or {}) do argv[#argv + 1] = "-H"; argv[#argv + 1] = h end
  if o.data then argv[#argv + 1] = "--data-binary"; argv[#argv + 1] = o.data end
  for _, x in ipairs(o.extra or {}) do argv[#argv + 1] = x end
  argv[#argv + 1] = o.url
  local r = foundry.exec(argv)
  local out = { status = tonumber(r.stdout) or 0, exit = r.status, stderr = r.stderr }
  out.body = fs.stat(dir .. "/body") and fs.read(dir .. "/body") or ""
  out.headers = fs.stat(dir .. "/headers") and fs.read(dir .. "/headers") or ""
  fs.rm(dir)
  local ok, decoded = pcall(json.decode, out.body)
  if ok then out.json = decoded end
  return out
end

--- An engine trusting the test CA for upstreams, with audit rows collected in .rows.
function M.engine(extra)
  local proxy = require "foundry.proxy"
  local ca_dir = fs.mkdtemp("/tmp/foundry-proxy-ca-XXXXXX")
  local rows = {}
  local opts = { ca_dir = ca_dir, upstream_ca_file = M.certs() .. "/ca.crt",
                 audit = function(r) rows[#rows + 1] = r end }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local e = proxy.engine(opts)
  return e, rows, ca_dir .. "/ca.crt", ca_dir
end

--- Overrides mapping every name in M.NAMES to the upstream's port.
function M.overrides(port)
  local o = {}
  for _, n in ipairs(M.NAMES) do o[n] = "127.0.0.1:" .. port end
  return o
end

return M
