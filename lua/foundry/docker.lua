--- foundry.docker: the Docker Engine API, asynchronous, without the `docker` CLI.
---
--- Every call yields the running task until the engine answers; other tasks run
--- meanwhile. Plain tables in, plain tables out; failures raise error objects
--- (`docker.unreachable`, `docker.permission_denied`, `docker.not_found`,
--- `docker.conflict`, `docker.disconnected`, `timeout`, ...).
---
---   local docker = require "foundry.docker"
---   local c = docker.create{ image = "foundry-test:base", cmd = {"sleep", "infinity"},
---                            read_only = true, network = "none",
---                            labels = {["dev.foundry.test"] = "1"} }
---   c:start()
---   local r = c:exec{ "sh", "-c", "echo hi; exit 3" }   --> r.status == 3, r.stdout == "hi\n"
---   c:remove{ force = true }
---
--- The engine is `DOCKER_HOST` (unix:///path or tcp://host:port, TLS from
--- `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`) or unix:///var/run/docker.sock; the API version
--- is negotiated with the engine (at most 1.41, Debian 12's docker.io), or
--- `DOCKER_API_VERSION`.
local native = require "foundry._docker"
local task = require "foundry._task"
local errors = require "foundry.errors"
local json = require "foundry.json"
local uv = require "luv"

local M = {}

--- The newest Engine API version this module speaks (the engine may be newer).
M.API_VERSION = "1.41"
--- The oldest it accepts.
M.MIN_API_VERSION = "1.25"

local config = {
  host = nil,          -- nil: DOCKER_HOST or the default socket
  timeout = 60000,     -- ms, ordinary calls
  long_timeout = 1800000, -- ms, image import/build
}

-- ------------------------------------------------------------------ helpers

local function fail(what, msg, lvl) error(what .. ": " .. msg, (lvl or 2) + 1) end

local function check_type(what, name, v, want, optional)
  if v == nil and optional then return end
  if type(v) ~= want then
    fail(what, string.format("%s: expected %s, got %s", name, want, v == nil and "nil" or type(v)), 2)
  end
end

-- JSON nulls become nil, integral numbers integers (cjson decodes every number as a float)
local function strip_nulls(v)
  if v == json.null then return nil end
  if math.type(v) == "float" then return math.tointeger(v) or v end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = strip_nulls(x) end
  end
  return v
end

local function decode(s, what)
  if s == nil or s == "" then return nil end
  return strip_nulls(json.decode(s, what))
end

local function pct(s, keep)
  return (tostring(s):gsub("[^%w" .. (keep or "") .. "]", function(ch)
    return string.format("%%%02X", ch:byte())
  end))
end

local function query(q)
  if not q then return "" end
  local keys = {}
  for k, v in pairs(q) do if v ~= nil then keys[#keys + 1] = k end end
  if #keys == 0 then return "" end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    -- a list repeats the parameter (image import's changes=, build's t=)
    for _, x in ipairs(type(v) == "table" and v or { v }) do
      if x == true then x = "1" elseif x == false then x = "0" end
      parts[#parts + 1] = pct(k, "._-") .. "=" .. pct(x, "._~-")
    end
  end
  return "?" .. table.concat(parts, "&")
end

local function now() uv.update_time(); return uv.now() end

-- {label = {"a=b"}} from labels = {a="b"} or {"a=b", "c"}
local function label_filter(labels)
  if labels == nil then return nil end
  local out = {}
  if #labels > 0 then
    for _, l in ipairs(labels) do out[#out + 1] = tostring(l) end
  else
    for k, v in pairs(labels) do
      out[#out + 1] = v == true and k or (k .. "=" .. tostring(v))
    end
  end
  table.sort(out)
  return json.array(out)
end

local function filters(spec)
  local f = {}
  if spec.filters then for k, v in pairs(spec.filters) do f[k] = json.array(v) end end
  if spec.labels then f.label = label_filter(spec.labels) end
  if next(f) == nil then return nil end
  return json.encode(f)
end

-- Sizes: numbers are bytes; strings take k, m, g (powers of 1024): "512m".
local function bytes(what, name, v)
  if v == nil then return nil end
  if type(v) == "number" then return math.floor(v) end
  local n, unit = tostring(v):lower():match("^%s*([%d%.]+)%s*([kmgt]?)i?b?%s*$")
  if not n then fail(what, name .. ": expected bytes (a number or like \"512m\"), got " .. tostring(v), 3) end
  local mult = ({ [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3, t = 1024 ^ 4 })[unit]
  return math.floor(tonumber(n) * mult)
end

local function strings(what, name, v, allow_string)
  if v == nil then return nil end
  if type(v) == "string" and allow_string then return json.array{ v } end
  if type(v) ~= "table" then
    fail(what, string.format("%s: expected a list of strings, got %s", name, type(v)), 3)
  end
  local out = json.array{}
  for i, x in ipairs(v) do
    if type(x) ~= "string" and type(x) ~= "number" then
      fail(what, string.format("%s[%d]: expected string, got %s", name, i, type(x)), 3)
    end
    out[i] = tostring(x)
  end
  return out
end

-- ------------------------------------------------------------------ the engine

local function getenv(k)
  local v = os.getenv(k)
  if v == "" then return nil end
  return v
end

--- The engine endpoint and TLS settings in effect: `{host=, tls={ca=, cert=, key=, verify=}|nil}`.
---@return {host: string, tls: table|nil}
function M.endpoint()
  local host = config.host or getenv("DOCKER_HOST") or "unix:///var/run/docker.sock"
  local tls
  if host:match("^tcp://") and (getenv("DOCKER_TLS_VERIFY") or getenv("DOCKER_TLS") or config.tls) then
    local dir = getenv("DOCKER_CERT_PATH") or ((os.getenv("HOME") or "") .. "/.docker")
    tls = config.tls or {
      ca = dir .. "/ca.pem", cert = dir .. "/cert.pem", key = dir .. "/key.pem",
      verify = getenv("DOCKER_TLS_VERIFY") ~= nil,
    }
  end
  return { host = host, tls = tls }
end

--- Change module defaults: `host` (a DOCKER_HOST-style URL; nil: from the environment),
--- `tls` ({ca=, cert=, key=, verify=}), `timeout` (ms, default 60000) and `long_timeout`
--- (ms, image import and build, default 30 min). Returns the previous settings.
---@param opts {host?: string, tls?: table, timeout?: integer, long_timeout?: integer}
---@return table
function M.configure(opts)
  local old = {}
  for k, v in pairs(config) do old[k] = v end
  for k, v in pairs(opts or {}) do
    if k ~= "host" and k ~= "tls" and k ~= "timeout" and k ~= "long_timeout" then
      fail("docker.configure", "unknown option '" .. tostring(k) .. "' (host, tls, timeout, long_timeout)")
    end
    config[k] = v
  end
  if opts and opts.host == nil then config.host = nil end
  return old
end

local negotiated = {}

local TIMEOUT_HINT = "pass timeout= (ms) to the call, or docker.configure{timeout=}"

-- One HTTP exchange through the native transport; adds hints to timeouts.
local function raw(opts)
  local ep = M.endpoint()
  opts.host = ep.host
  opts.tls = ep.tls
  local ok, res, stream = pcall(native.request, opts)
  if not ok then
    if errors.is(res, "timeout") and not res.hint then res.hint = TIMEOUT_HINT end
    error(res, 0)
  end
  return res, stream
end

local function version_number(v)
  local a, b = tostring(v):match("^(%d+)%.(%d+)")
  return a and tonumber(a) * 1000 + tonumber(b) or 0
end

--- The API version used with the engine (negotiated once per host).
---@return string
function M.api_version()
  local env = getenv("DOCKER_API_VERSION")
  if env then return env end
  local key = M.endpoint().host
  if negotiated[key] then return negotiated[key] end
  local res = raw{ what = "docker.ping", path = "/_ping", timeout = config.timeout }
  if res.status ~= 200 then
    errors.raise("docker.engine", "docker.ping: the engine answered " .. res.status .. ": " .. tostring(res.body))
  end
  local server = res.headers["api-version"] or M.MIN_API_VERSION
  if version_number(server) < version_number(M.MIN_API_VERSION) then
    errors.raise("docker.version", string.format("the Docker engine at %s speaks API %s; Foundry needs %s or newer",
      key, server, M.MIN_API_VERSION), "upgrade Docker")
  end
  local v = version_number(server) < version_number(M.API_VERSION) and server or M.API_VERSION
  negotiated[key] = v
  return v
end

-- Hints for the engine's 404s and 409s.
local HINTS = {
  image = "build it (test image: bash tests/image/build.sh, or foundry image bootstrap) — nothing can be pulled here",
  container = "list containers with docker.containers{all=true} (or docker ps -a)",
  exec = "the exec instance is gone (its container was removed or restarted)",
  name = "choose another name, or remove the old container first",
}

local function engine_error(what, res, ctx)
  local body = decode(res.body, what) or {}
  local msg = type(body) == "table" and body.message or tostring(res.body)
  msg = tostring(msg or ""):gsub("%s+$", "")
  local lower = msg:gsub("^No such", "no such")
  local code, hint
  local s = res.status
  if s == 404 then
    code = "docker.not_found"
    if ctx and ctx.kind == "image_rm" then hint = "list images with foundry image ls --all"
    elseif lower:match("^no such image") or (ctx and ctx.kind == "image") then hint = HINTS.image
    elseif lower:match("^no such exec") then hint = HINTS.exec
    else hint = HINTS.container end
  elseif s == 409 then
    code = "docker.conflict"
    if lower:find("already in use", 1, true) then hint = HINTS.name end
  elseif s == 400 then
    code = "docker.bad_request"
  elseif s == 401 or s == 403 then
    code = "docker.denied"
  elseif s == 304 then
    code = "docker.not_modified"
  elseif lower:find("is marked read-only", 1, true) then
    code = "docker.denied"
    hint = "the container's root filesystem is read-only: copy into a writable bind or volume mount"
  else
    code = "docker.engine"
  end
  errors.raise(code, lower ~= "" and lower or (what .. ": the engine answered " .. s), hint,
    { status = s, what = what })
end

-- A versioned API call. opts: method, path, query, body (table: JSON; string: as is),
-- body_file, headers, mode, demux, timeout, ok (extra accepted statuses), ctx.
local function call(what, method, path, opts)
  opts = opts or {}
  local headers = opts.headers or {}
  local body = opts.body
  if type(body) == "table" then
    body = json.encode(body)
    headers["Content-Type"] = "application/json"
  end
  local timeout = opts.timeout
  if timeout == nil then timeout = config.timeout end
  local t0 = now()
  local version = M.api_version()
  if timeout and timeout > 0 then
    timeout = timeout - (now() - t0)
    if timeout <= 0 then
      errors.raise("timeout", what .. ": timed out", TIMEOUT_HINT)
    end
  end
  local res, stream = raw{
    what = what, method = method, path = "/v" .. version .. path .. query(opts.query),
    headers = headers, body = body, body_file = opts.body_file, mode = opts.mode,
    demux = opts.demux, timeout = timeout, max_body = opts.max_body,
  }
  local s = res.status
  if s >= 400 or (s == 304 and not (opts.ok and opts.ok[304])) then
    if stream then stream:close() end
    engine_error(what, res, opts.ctx)
  end
  return res, stream
end

local function call_json(what, method, path, opts)
  local res = call(what, method, path, opts)
  return decode(res.body, what), res
end

-- ------------------------------------------------------------------ streams

---@class foundry.docker.Stream
--- Bytes from the engine: `:read()` returns the next piece (and, for multiplexed
--- streams, `"stdout"` or `"stderr"`), nil at the end; raises `docker.disconnected` when
--- the engine goes away mid-stream. Attach and exec streams also `:write(data)` and
--- `:close_write()` (the process sees end of input). `:close()` is idempotent; streams
--- are to-be-closed (`local s <close> = ...`).
---@field read fun(self, timeout_ms?: integer): string|nil, string|nil
---@field read_all fun(self, timeout_ms?: integer): string, string|nil
---@field write fun(self, data: string)
---@field close_write fun(self)
---@field close fun(self)

---@class foundry.docker.EventStream
--- Engine events, decoded: `:next([timeout_ms])` returns the next event table or nil at
--- the end. `:close()` stops it.
local EventStream = {}
EventStream.__index = EventStream
EventStream.__name = "foundry.docker.EventStream"

--- The next event (a table as the engine sends it: Type, Action, Actor={ID=, Attributes=}, time=...),
--- nil when the stream ended. Raises `timeout` when none came within timeout_ms.
---@param timeout_ms? integer
---@return table|nil
function EventStream:next(timeout_ms)
  while true do
    local nl = self.buf:find("\n", 1, true)
    if nl then
      local line = self.buf:sub(1, nl - 1)
      self.buf = self.buf:sub(nl + 1)
      if line:match("%S") then return decode(line, "docker.events") end
    else
      local chunk = self.stream:read(timeout_ms)
      if chunk == nil then
        if self.buf:match("%S") then
          local line = self.buf
          self.buf = ""
          return decode(line, "docker.events")
        end
        return nil
      end
      self.buf = self.buf .. chunk
    end
  end
end

--- Iterate: `for ev in events:each() do ... end`.
function EventStream:each(timeout_ms)
  return function() return self:next(timeout_ms) end
end

function EventStream:close() self.stream:close() end
EventStream.__close = EventStream.close
function EventStream.__tostring() return "docker event stream" end

--- Engine events (containers, images, networks...), as a stream. `spec`:
--- `labels` ({key=value} or {"key=value"}: only objects with these labels), `filters`
--- (the engine's: {type={"container"}, event={"start","die"}, container={id}}),
--- `since`/`until` (unix seconds), `timeout` (ms until the engine answers).
---@param spec? {labels?: table, filters?: table, since?: number, ["until"]?: number, timeout?: integer}
---@return foundry.docker.EventStream
function M.events(spec)
  spec = spec or {}
  local _, stream = call("docker.events", "GET", "/events", {
    query = { filters = filters(spec), since = spec.since, ["until"] = spec["until"] },
    mode = "stream", timeout = spec.timeout,
  })
  return setmetatable({ stream = stream, buf = "" }, EventStream)
end

-- ------------------------------------------------------------------ system

--- Ping the engine. Returns "OK".
---@param opts? {timeout?: integer}
---@return string
function M.ping(opts)
  local version = M.api_version()
  local res = raw{ what = "docker.ping", path = "/v" .. version .. "/_ping",
    timeout = opts and opts.timeout or config.timeout }
  return res.body
end

--- The engine's version: {Version=, ApiVersion=, MinAPIVersion=, Os=, Arch=, ...}.
---@return table
function M.version(opts)
  return (call_json("docker.version", "GET", "/version", { timeout = opts and opts.timeout }))
end

--- System information: {Containers=, Images=, ServerVersion=, CgroupVersion=, ...}.
---@return table
function M.info(opts)
  return (call_json("docker.info", "GET", "/info", { timeout = opts and opts.timeout }))
end

-- ------------------------------------------------------------------ images

--- Images: a list of {id=, tags={...}, size=, created=, labels={}}. `spec`: `all`,
--- `labels`, `reference` (e.g. "foundry-test:*"), `filters`.
---@param spec? {all?: boolean, labels?: table, reference?: string, filters?: table, timeout?: integer}
---@return table[]
function M.images(spec)
  spec = spec or {}
  local f = {}
  for k, v in pairs(spec.filters or {}) do f[k] = v end
  if spec.reference then f.reference = { spec.reference } end
  local list = call_json("docker.images", "GET", "/images/json", {
    query = { all = spec.all or nil, filters = filters{ filters = f, labels = spec.labels } },
    timeout = spec.timeout,
  })
  local out = {}
  for i, im in ipairs(list or {}) do
    out[i] = { id = im.Id, tags = im.RepoTags or {}, size = im.Size, created = im.Created,
      labels = im.Labels or {}, parent = im.ParentId }
  end
  return out
end

local function image_path(name, what)
  check_type(what, "image", name, "string")
  return "/images/" .. pct(name, "._:/@-")
end

--- Inspect an image: the engine's table (Id, RepoTags, Config, Size, ...). Raises
--- `docker.not_found`.
---@param name string
---@return table
function M.image_inspect(name, opts)
  return (call_json("docker.image_inspect", "GET", image_path(name, "docker.image_inspect") .. "/json",
    { timeout = opts and opts.timeout, ctx = { kind = "image" } }))
end

--- True when the image exists locally.
---@param name string
---@return boolean
function M.image_exists(name, opts)
  local ok, err = pcall(M.image_inspect, name, opts)
  if ok then return true end
  if errors.is(err, "docker.not_found") then return false end
  error(err, 0)
end

--- Remove an image. `opts`: `force`, `noprune`. Returns the engine's list of
--- {Untagged=}/{Deleted=}.
---@param name string
---@param opts? {force?: boolean, noprune?: boolean, timeout?: integer}
---@return table[]
function M.image_remove(name, opts)
  opts = opts or {}
  return (call_json("docker.image_remove", "DELETE", image_path(name, "docker.image_remove"), {
    query = { force = opts.force or nil, noprune = opts.noprune or nil }, timeout = opts.timeout,
    ctx = { kind = "image_rm" },
  }))
end

--- Tag an image: `docker.image_tag("sha256:...", "repo:tag")`.
function M.image_tag(name, ref, opts)
  check_type("docker.image_tag", "ref", ref, "string")
  local repo, tag = ref:match("^(.+):([^:/]+)$")
  call("docker.image_tag", "POST", image_path(name, "docker.image_tag") .. "/tag", {
    query = { repo = repo or ref, tag = tag or "latest" }, timeout = opts and opts.timeout,
    ctx = { kind = "image" },
  })
end

-- Read a JSON-lines progress stream (import, build) to its end; returns the messages.
local function progress(what, stream, on_progress)
  local buf, msgs = "", {}
  local function handle(line)
    if not line:match("%S") then return end
    local m = decode(line, what)
    msgs[#msgs + 1] = m
    if m.error or m.errorDetail then
      stream:close()
      local detail = m.errorDetail and m.errorDetail.message or m.error
      errors.raise("docker.build_failed", what .. ": " .. tostring(detail):gsub("%s+$", ""), nil, { messages = msgs })
    end
    if on_progress then on_progress(m) end
  end
  while true do
    local chunk = stream:read()
    if chunk == nil then break end
    buf = buf .. chunk
    while true do
      local nl = buf:find("\n", 1, true)
      if not nl then break end
      handle(buf:sub(1, nl - 1))
      buf = buf:sub(nl + 1)
    end
  end
  handle(buf)
  stream:close()
  return msgs
end

local function tarball(what, spec, key_data, key_file)
  local data, file = spec[key_data], spec[key_file]
  if (data == nil) == (file == nil) then
    fail(what, "give exactly one of " .. key_data .. " (a tar archive as a string) or " .. key_file .. " (a path)", 3)
  end
  check_type(what, key_data, data, "string", true)
  check_type(what, key_file, file, "string", true)
  return data, file
end

--- Import a root filesystem tarball as an image (`docker import`). `spec`: `data` (the
--- tar as a string) or `file` (a path, streamed), `repo`, `tag`, `changes` (Dockerfile
--- instructions: {"CMD [\"/bin/bash\"]", "USER agent", ...}), `message`, `on_progress`
--- (called with each progress message), `timeout` (ms, default 30 min). Returns the new
--- image's id.
---@class foundry.docker.ImportSpec
---@field data? string the tar archive
---@field file? string a path to the tar archive (streamed)
---@field repo? string
---@field tag? string
---@field changes? string[] Dockerfile instructions
---@field message? string
---@field on_progress? fun(msg: table)
---@field timeout? integer ms
---@param spec foundry.docker.ImportSpec
---@return string
function M.image_import(spec)
  check_type("docker.image_import", "spec", spec, "table")
  local data, file = tarball("docker.image_import", spec, "data", "file")
  local _, stream = call("docker.image_import", "POST", "/images/create", {
    query = { fromSrc = "-", repo = spec.repo, tag = spec.tag, message = spec.message,
      changes = strings("docker.image_import", "changes", spec.changes) },
    body = data, body_file = file, mode = "stream",
    headers = { ["Content-Type"] = "application/x-tar" },
    timeout = spec.timeout or config.long_timeout, ctx = { kind = "image" },
  })
  local msgs = progress("docker.image_import", stream, spec.on_progress)
  local last = msgs[#msgs] or {}
  return last.status or last.id
end

--- Build an image from a context tarball (a Dockerfile at its root, or `dockerfile=`).
--- `spec`: `context` (tar string) or `context_file` (path), `tag` (or `tags`),
--- `dockerfile`, `buildargs` ({NAME=value}), `labels`, `nocache`, `pull` (false),
--- `network` (network mode for RUN, e.g. "none"), `on_progress` (called with each
--- message: {stream=} lines, {status=}, {aux={ID=}}), `timeout` (ms, default 30 min).
--- Returns the image id. A failing step raises `docker.build_failed` with `.messages`.
---@class foundry.docker.BuildSpec
---@field context? string the context tar archive
---@field context_file? string a path to it (streamed)
---@field tag? string
---@field tags? string[]
---@field dockerfile? string
---@field buildargs? table<string, string>
---@field labels? table<string, string>
---@field nocache? boolean
---@field network? string network mode of RUN steps
---@field on_progress? fun(msg: table)
---@field timeout? integer ms
---@param spec foundry.docker.BuildSpec
---@return string
function M.image_build(spec)
  check_type("docker.image_build", "spec", spec, "table")
  local data, file = tarball("docker.image_build", spec, "context", "context_file")
  local tags = strings("docker.image_build", "tags", spec.tags) or json.array{}
  if spec.tag then table.insert(tags, 1, spec.tag) end
  local q = {
    dockerfile = spec.dockerfile, t = tags, nocache = spec.nocache or nil,
    rm = spec.rm ~= false, forcerm = true, pull = spec.pull or nil, networkmode = spec.network,
    q = spec.quiet or nil,
    buildargs = spec.buildargs and json.encode(spec.buildargs) or nil,
    labels = spec.labels and json.encode(spec.labels) or nil,
  }
  local _, stream = call("docker.image_build", "POST", "/build", {
    query = q, body = data, body_file = file, mode = "stream",
    headers = { ["Content-Type"] = "application/x-tar" },
    timeout = spec.timeout or config.long_timeout,
  })
  local id
  local msgs = progress("docker.image_build", stream, function(m)
    if m.aux and m.aux.ID then id = m.aux.ID end
    if spec.on_progress then spec.on_progress(m) end
  end)
  if not id then
    for i = #msgs, 1, -1 do
      local s = msgs[i].stream and msgs[i].stream:match("Successfully built (%x+)")
      if s then id = s break end
    end
  end
  return id
end

-- ------------------------------------------------------------------ containers

---@class foundry.docker.Container
---@field id string the full container id
---@field name string|nil the name given at create (without "/")
---@field tty boolean|nil whether it was created with a TTY (nil: not known yet)
local Container = {}
Container.__index = Container
Container.__name = "foundry.docker.Container"

function Container:__tostring()
  return "docker container " .. (self.name or self.id:sub(1, 12))
end

local function cpath(self, suffix)
  return "/containers/" .. pct(self.id, "._-") .. (suffix or "")
end

--- A container object for an id or name, without asking the engine (see docker.get).
---@param id string
---@return foundry.docker.Container
function M.container(id)
  check_type("docker.container", "id", id, "string")
  return setmetatable({ id = id }, Container)
end

--- The container with this id or name, checked with the engine (raises `docker.not_found`).
---@param id string
---@return foundry.docker.Container
function M.get(id, opts)
  local c = M.container(id)
  local info = c:inspect(opts)
  c.id = info.Id
  c.name = info.Name and info.Name:gsub("^/", "") or nil
  c.tty = info.Config and info.Config.Tty or false
  return c
end

--- Inspect a container by id or name (docker.container(id):inspect()).
---@param id string
---@return table
function M.inspect(id, opts)
  return M.container(id):inspect(opts)
end

local CREATE_KEYS = {
  "image", "cmd", "entrypoint", "name", "hostname", "domainname", "user", "env", "workdir",
  "labels", "tty", "open_stdin", "stdin_once", "read_only", "network", "binds", "mounts",
  "tmpfs", "cap_drop", "cap_add", "security_opt", "memory", "memory_swap", "cpus",
  "cpu_shares", "pids_limit", "init", "auto_remove", "stop_signal", "stop_timeout",
  "extra_hosts", "dns", "shm_size", "ulimits", "devices", "privileged", "restart",
  "group_add", "sysctls", "ipc", "pid", "userns", "log_driver", "log_opts", "oom_score_adj",
  "exposed_ports", "port_bindings", "config", "host_config", "timeout", "platform",
  "network_disabled", "runtime", "stop_grace", "working_dir", "cgroup_parent", "storage_opt",
}
local CREATE_SET = {}
for _, k in ipairs(CREATE_KEYS) do CREATE_SET[k] = true end

-- env as {K=v} or {"K=v"} -> {"K=v"} sorted
local function env_list(what, v)
  if v == nil then return nil end
  check_type(what, "env", v, "table")
  local out = json.array{}
  for i, x in ipairs(v) do out[i] = tostring(x) end
  local keys = {}
  for k in pairs(v) do if type(k) == "string" then keys[#keys + 1] = k end end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if v[k] ~= false then out[#out + 1] = k .. "=" .. tostring(v[k]) end
  end
  return out
end

local function string_map(what, name, v)
  if v == nil then return nil end
  check_type(what, name, v, "table")
  local out = {}
  for k, x in pairs(v) do
    if type(k) ~= "string" then fail(what, name .. ": keys must be strings", 3) end
    out[k] = tostring(x)
  end
  return out
end

local function mounts_of(what, v)
  if v == nil then return nil end
  check_type(what, "mounts", v, "table")
  local out = json.array{}
  for i, m in ipairs(v) do
    local where = string.format("mounts[%d]", i)
    if type(m) ~= "table" then fail(what, where .. ": expected table, got " .. type(m), 3) end
    local target = m.target or m.destination or m.dst
    if type(target) ~= "string" then fail(what, where .. ".target: expected string, got " .. type(target), 3) end
    local typ = m.type or (m.source and "bind") or "volume"
    local o = { Type = typ, Source = m.source or m.src, Target = target, ReadOnly = m.read_only or nil }
    if typ == "bind" and type(o.Source) ~= "string" then
      fail(what, where .. ".source: expected string, got " .. type(o.Source), 3)
    end
    if typ == "bind" and (m.propagation or m.nonrecursive) then
      o.BindOptions = { Propagation = m.propagation, NonRecursive = m.nonrecursive }
    end
    if typ == "tmpfs" and (m.size or m.mode) then
      o.TmpfsOptions = { SizeBytes = bytes(what, where .. ".size", m.size), Mode = m.mode }
    end
    if typ == "volume" and (m.labels or m.nocopy) then
      o.VolumeOptions = { Labels = m.labels, NoCopy = m.nocopy }
    end
    out[i] = o
  end
  return out
end

-- tmpfs = {"/tmp", "/run"} or {["/tmp"] = "rw,size=64m,mode=1777"}
local function tmpfs_of(what, v)
  if v == nil then return nil end
  check_type(what, "tmpfs", v, "table")
  local out = {}
  for i, p in ipairs(v) do out[tostring(p)] = "" ; local _ = i end
  for k, o in pairs(v) do
    if type(k) == "string" then out[k] = o == true and "" or tostring(o) end
  end
  return out
end

local function cmd_of(what, name, v)
  if v == nil then return nil end
  if type(v) == "string" then return json.array{ "/bin/sh", "-c", v } end
  return strings(what, name, v)
end

--- The Engine API body of a create spec (see docker.create); exposed for tests and tools.
function M.create_body(spec)
  local what = "docker.create"
  check_type(what, "spec", spec, "table")
  for k in pairs(spec) do
    if not CREATE_SET[k] then
      local near = require("foundry.util").did_you_mean(tostring(k), CREATE_KEYS)
      fail(what, "unknown option '" .. tostring(k) .. "'" .. (near and (" — did you mean '" .. near .. "'?") or ""))
    end
  end
  check_type(what, "image", spec.image, "string")
  for _, k in ipairs{ "name", "hostname", "user", "workdir", "working_dir", "network", "stop_signal", "ipc", "pid",
      "restart" } do
    check_type(what, k, spec[k], "string", true)
  end
  local entrypoint = spec.entrypoint
  if type(entrypoint) == "string" then entrypoint = json.array{ entrypoint } end
  local hc = {
    Binds = strings(what, "binds", spec.binds),
    Mounts = mounts_of(what, spec.mounts),
    Tmpfs = tmpfs_of(what, spec.tmpfs),
    ReadonlyRootfs = spec.read_only or nil,
    NetworkMode = spec.network,
    CapDrop = strings(what, "cap_drop", spec.cap_drop, true),
    CapAdd = strings(what, "cap_add", spec.cap_add, true),
    SecurityOpt = strings(what, "security_opt", spec.security_opt, true),
    Memory = bytes(what, "memory", spec.memory),
    MemorySwap = bytes(what, "memory_swap", spec.memory_swap),
    NanoCpus = spec.cpus and math.floor(spec.cpus * 1e9) or nil,
    CpuShares = spec.cpu_shares,
    PidsLimit = spec.pids_limit,
    Init = spec.init,
    AutoRemove = spec.auto_remove or nil,
    ExtraHosts = strings(what, "extra_hosts", spec.extra_hosts),
    Dns = strings(what, "dns", spec.dns),
    ShmSize = bytes(what, "shm_size", spec.shm_size),
    Privileged = spec.privileged or nil,
    GroupAdd = strings(what, "group_add", spec.group_add),
    Sysctls = string_map(what, "sysctls", spec.sysctls),
    IpcMode = spec.ipc, PidMode = spec.pid, UsernsMode = spec.userns,
    OomScoreAdj = spec.oom_score_adj,
    Runtime = spec.runtime,
    CgroupParent = spec.cgroup_parent,
    StorageOpt = string_map(what, "storage_opt", spec.storage_opt),
    RestartPolicy = spec.restart and { Name = spec.restart } or nil,
    PortBindings = spec.port_bindings,
  }
  if spec.ulimits then
    hc.Ulimits = json.array{}
    for name, l in pairs(spec.ulimits) do
      local soft, hard = l, l
      if type(l) == "table" then soft, hard = l.soft or l[1], l.hard or l[2] or l.soft or l[1] end
      hc.Ulimits[#hc.Ulimits + 1] = { Name = name, Soft = soft, Hard = hard }
    end
  end
  if spec.devices then
    hc.Devices = json.array{}
    for i, d in ipairs(spec.devices) do
      if type(d) == "string" then
        local host, ctr, perms = d:match("^([^:]+):?([^:]*):?([rwm]*)$")
        d = { PathOnHost = host, PathInContainer = ctr ~= "" and ctr or host,
          CgroupPermissions = perms ~= "" and perms or "rwm" }
      end
      hc.Devices[i] = d
    end
  end
  if spec.log_driver then
    hc.LogConfig = { Type = spec.log_driver, Config = string_map(what, "log_opts", spec.log_opts) or {} }
  end
  for k, v in pairs(spec.host_config or {}) do hc[k] = v end
  local body = {
    Image = spec.image,
    Cmd = cmd_of(what, "cmd", spec.cmd),
    Entrypoint = entrypoint and strings(what, "entrypoint", entrypoint) or nil,
    Hostname = spec.hostname, Domainname = spec.domainname,
    User = spec.user,
    Env = env_list(what, spec.env),
    WorkingDir = spec.workdir or spec.working_dir,
    Labels = string_map(what, "labels", spec.labels),
    Tty = spec.tty or nil,
    OpenStdin = spec.open_stdin or nil,
    StdinOnce = spec.stdin_once or nil,
    AttachStdin = spec.open_stdin or nil,
    AttachStdout = true, AttachStderr = true,
    StopSignal = spec.stop_signal,
    StopTimeout = spec.stop_timeout or spec.stop_grace,
    NetworkDisabled = spec.network_disabled or nil,
    HostConfig = hc,
  }
  if spec.exposed_ports then
    body.ExposedPorts = {}
    for _, p in ipairs(spec.exposed_ports) do body.ExposedPorts[tostring(p)] = {} end
  end
  for k, v in pairs(spec.config or {}) do body[k] = v end
  return body
end

--- Create a container. `spec` (all optional but `image`):
---   image, cmd (list, or a string run by /bin/sh -c), entrypoint, name, hostname, user,
---   env ({K=v} or {"K=v"}), workdir, labels ({k=v}), tty, open_stdin, read_only,
---   network ("none", "bridge", "host", "container:<id>", a network name),
---   binds ({"/host:/ctr:ro"}), mounts ({{type="bind"|"volume"|"tmpfs", source=, target=,
---   read_only=}}), tmpfs ({"/tmp"} or {["/tmp"]="rw,size=64m"}), cap_drop, cap_add
---   ({"ALL"}), security_opt ({"no-new-privileges"}), memory (bytes or "512m"), cpus
---   (1.5), pids_limit, init (true: docker-init as PID 1), auto_remove, stop_signal,
---   stop_timeout (s), extra_hosts, dns, shm_size, ulimits ({nofile={soft=,hard=}}),
---   devices, privileged, group_add, sysctls, restart, log_driver/log_opts,
---   exposed_ports/port_bindings; `config`/`host_config`: raw Engine API fields merged in;
---   timeout (ms).
--- Raises `docker.not_found` (no such image) or `docker.conflict` (name in use).
---@param spec table
---@return foundry.docker.Container
function M.create(spec)
  local body = M.create_body(spec)
  local r = call_json("docker.create", "POST", "/containers/create", {
    query = { name = spec.name, platform = spec.platform }, body = body, timeout = spec.timeout,
    ctx = { kind = "image" },
  })
  local c = setmetatable({ id = r.Id, name = spec.name, tty = spec.tty and true or false,
    warnings = r.Warnings }, Container)
  return c
end

--- Create and start a container; returns it.
---@param spec table as docker.create
---@return foundry.docker.Container
function M.run(spec)
  local c = M.create(spec)
  local ok, err = pcall(c.start, c, { timeout = spec.timeout })
  if not ok then
    pcall(c.remove, c, { force = true })
    error(err, 0)
  end
  return c
end

--- Containers: a list of {id=, names={}, name=, image=, state=, status=, labels=,
--- created=}. `spec`: `all` (default true: stopped ones too), `labels`, `filters`.
---@param spec? {all?: boolean, labels?: table, filters?: table, timeout?: integer}
---@return table[]
function M.containers(spec)
  spec = spec or {}
  local list = call_json("docker.containers", "GET", "/containers/json", {
    query = { all = spec.all ~= false, filters = filters(spec) }, timeout = spec.timeout,
  })
  local out = {}
  for i, c in ipairs(list or {}) do
    local names = {}
    for j, n in ipairs(c.Names or {}) do names[j] = n:gsub("^/", "") end
    out[i] = { id = c.Id, names = names, name = names[1], image = c.Image, state = c.State,
      status = c.Status, labels = c.Labels or {}, created = c.Created }
  end
  return out
end

--- Inspect: the engine's table (Id, Name, State={Status=, Running=, ExitCode=...},
--- Config, HostConfig, Mounts, NetworkSettings, ...).
---@return table
function Container:inspect(opts)
  return (call_json("docker.inspect", "GET", cpath(self, "/json"), { timeout = opts and opts.timeout }))
end

--- Start. Starting a running container is not an error.
function Container:start(opts)
  call("docker.start", "POST", cpath(self, "/start"), { timeout = opts and opts.timeout, ok = { [304] = true } })
  return self
end

--- Stop: SIGTERM (or the container's stop signal), SIGKILL after `t` seconds (default:
--- the container's stop timeout, 10). Stopping a stopped container is not an error.
---@param opts? {t?: integer, timeout?: integer}
function Container:stop(opts)
  opts = opts or {}
  local t = opts.t
  local timeout = opts.timeout or (config.timeout + (t or 10) * 1000)
  call("docker.stop", "POST", cpath(self, "/stop"), { query = { t = t }, timeout = timeout, ok = { [304] = true } })
  return self
end

--- Send a signal (default SIGKILL). Raises `docker.conflict` when not running.
---@param opts? {signal?: string|integer, timeout?: integer}
function Container:kill(opts)
  opts = opts or {}
  call("docker.kill", "POST", cpath(self, "/kill"), { query = { signal = opts.signal }, timeout = opts.timeout })
  return self
end

--- Restart (stop with `t` seconds' grace, then start).
---@param opts? {t?: integer, timeout?: integer}
function Container:restart(opts)
  opts = opts or {}
  local timeout = opts.timeout or (config.timeout + (opts.t or 10) * 1000)
  call("docker.restart", "POST", cpath(self, "/restart"), { query = { t = opts.t }, timeout = timeout })
  return self
end

--- Wait until the container stops; returns its exit status (and the engine's error
--- message, if any). `condition`: "not-running" (default), "next-exit", "removed".
--- No time limit unless `timeout` (ms).
---@param opts? {condition?: string, timeout?: integer}
---@return integer status
function Container:wait(opts)
  opts = opts or {}
  local r = call_json("docker.wait", "POST", cpath(self, "/wait"), {
    query = { condition = opts.condition }, timeout = opts.timeout or 0,
  })
  return r.StatusCode, r.Error and r.Error.Message or nil
end

--- Remove. `force`: kill it first if running; `volumes`: its anonymous volumes too.
--- Removing a container that is already gone raises `docker.not_found` unless `missing_ok`.
---@param opts? {force?: boolean, volumes?: boolean, missing_ok?: boolean, timeout?: integer}
function Container:remove(opts)
  opts = opts or {}
  local ok, err = pcall(call, "docker.remove", "DELETE", cpath(self), {
    query = { force = opts.force or nil, v = opts.volumes or nil }, timeout = opts.timeout,
  })
  if not ok then
    if opts.missing_ok and errors.is(err, "docker.not_found") then return end
    -- removal already in progress (e.g. auto_remove) counts as removed when asked so
    if opts.missing_ok and errors.is(err, "docker.conflict")
        and tostring(err.message):find("in progress", 1, true) then
      return
    end
    error(err, 0)
  end
end

--- Resize the container's TTY.
---@param h integer rows
---@param w integer columns
function Container:resize(h, w, opts)
  check_type("docker.resize", "h", h, "number")
  check_type("docker.resize", "w", w, "number")
  call("docker.resize", "POST", cpath(self, "/resize"), { query = { h = math.floor(h), w = math.floor(w) },
    timeout = opts and opts.timeout })
end

--- Rename the container.
function Container:rename(name, opts)
  check_type("docker.rename", "name", name, "string")
  call("docker.rename", "POST", cpath(self, "/rename"), { query = { name = name }, timeout = opts and opts.timeout })
  self.name = name
end

local function known_tty(self, opts)
  if self.tty == nil then
    local info = self:inspect(opts)
    self.tty = info.Config and info.Config.Tty or false
  end
  return self.tty
end

--- The container's output. `opts`: `stdout`/`stderr` (default both), `since`, `tail`
--- ("all" or a count), `timestamps`. Without `follow`: returns {stdout=, stderr=}. With
--- `follow=true`: returns a Stream (`:read()` gives a piece and "stdout"/"stderr"; TTY
--- containers give one stream, "stdout") that ends when the container stops.
---@param opts? {follow?: boolean, stdout?: boolean, stderr?: boolean, since?: number, tail?: string|integer,
---  timestamps?: boolean, timeout?: integer}
---@return table|foundry.docker.Stream
function Container:logs(opts)
  opts = opts or {}
  local tty = known_tty(self, opts)
  local q = {
    follow = opts.follow or nil, stdout = opts.stdout ~= false, stderr = opts.stderr ~= false,
    since = opts.since, tail = opts.tail and tostring(opts.tail) or nil, timestamps = opts.timestamps or nil,
  }
  local _, stream = call("docker.logs", "GET", cpath(self, "/logs"), {
    query = q, mode = "stream", demux = not tty, timeout = opts.timeout,
  })
  if opts.follow then return stream end
  local out, err = stream:read_all(opts.timeout)
  stream:close()
  return { stdout = out, stderr = err or "" }
end

--- Copy a tar archive into the container, unpacked at `path` (a directory that exists).
--- `tar` is the archive as a string (see docker.tar). Raises `docker.denied` on a
--- read-only root filesystem outside its writable mounts.
---@param path string
---@param tar string
---@param opts? {no_overwrite_dir_non_dir?: boolean, copy_uid_gid?: boolean, timeout?: integer}
function Container:put_archive(path, tar, opts)
  check_type("docker.put_archive", "path", path, "string")
  check_type("docker.put_archive", "tar", tar, "string")
  opts = opts or {}
  call("docker.put_archive", "PUT", cpath(self, "/archive"), {
    query = { path = path, noOverwriteDirNonDir = opts.no_overwrite_dir_non_dir or nil,
      copyUIDGID = opts.copy_uid_gid or nil },
    body = tar, headers = { ["Content-Type"] = "application/x-tar" }, timeout = opts.timeout,
  })
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64I = {}
for i = 1, 64 do B64I[B64:byte(i)] = i - 1 end
local function unbase64(s)
  s = s:gsub("[^%w%+/]", "")
  local out, bits, n = {}, 0, 0
  for i = 1, #s do
    bits = (bits << 6) | B64I[s:byte(i)]
    n = n + 6
    if n >= 8 then
      n = n - 8
      out[#out + 1] = string.char((bits >> n) & 0xff)
    end
  end
  return table.concat(out)
end

--- Copy `path` out of the container: returns the tar archive (a string; see
--- docker.untar) and the path's stat {name=, size=, mode=, mtime=, linkTarget=}.
---@param path string
---@return string tar, table stat
function Container:get_archive(path, opts)
  check_type("docker.get_archive", "path", path, "string")
  local res = call("docker.get_archive", "GET", cpath(self, "/archive"), {
    query = { path = path }, timeout = opts and opts.timeout,
  })
  local stat = res.headers["x-docker-container-path-stat"]
  stat = stat and decode(unbase64(stat), "docker.get_archive") or nil
  return res.body, stat
end

-- ------------------------------------------------------------------ exec

local EXEC_KEYS = { stdin = true, env = true, user = true, workdir = true, tty = true,
  timeout = true, privileged = true, on_stdout = true, on_stderr = true, check = true,
  detach = true, height = true, width = true, working_dir = true }

local function exec_create(self, what, spec, attach_stdin)
  check_type(what, "spec", spec, "table")
  for k in pairs(spec) do
    if type(k) ~= "number" and not EXEC_KEYS[k] then
      local names = {}
      for n in pairs(EXEC_KEYS) do names[#names + 1] = n end
      table.sort(names)
      local near = require("foundry.util").did_you_mean(tostring(k), names)
      fail(what, "unknown option '" .. tostring(k) .. "'" .. (near and (" — did you mean '" .. near .. "'?") or ""), 3)
    end
  end
  local argv = json.array{}
  for i = 1, #spec do argv[i] = tostring(spec[i]) end
  if #argv == 0 then fail(what, "empty argv: expected {\"cmd\", \"arg\", ...}", 3) end
  local r = call_json(what, "POST", cpath(self, "/exec"), {
    body = {
      AttachStdin = attach_stdin or nil, AttachStdout = not spec.detach, AttachStderr = not spec.detach,
      Tty = spec.tty or nil, Cmd = argv, Env = env_list(what, spec.env), User = spec.user,
      WorkingDir = spec.workdir or spec.working_dir, Privileged = spec.privileged or nil,
      ConsoleSize = (spec.height and spec.width) and json.array{ spec.height, spec.width } or nil,
    },
    timeout = spec.timeout,
  })
  return r.Id
end

local function exec_inspect(id, opts)
  return (call_json("docker.exec_inspect", "GET", "/exec/" .. pct(id, "._-") .. "/json",
    { timeout = opts and opts.timeout }))
end

-- The exit status once the process is gone: the engine may need a moment after the
-- stream ends. A process still running 2 s after its output ended means the connection
-- was cut (an engine restart looks the same as a normal end on a hijacked stream), or
-- that it closed its stdout and stderr and carried on.
local function exec_status(id, what, cmd)
  local t0 = now()
  local i = 0
  while true do
    local info = exec_inspect(id)
    if not info.Running then return info.ExitCode or -1, info end
    if now() - t0 > 2000 then
      errors.raise("docker.disconnected", string.format(
        "%s: the output of %s ended but it still runs — the connection to Docker was lost?", what, tostring(cmd)),
        "if the engine restarted, retry; a process that closes stdout and stderr must be waited for differently")
    end
    i = i + 1
    task.sleep(math.min(i * 2, 50))
  end
end

-- A stream read's timeout error, made to name the operation and how to change it.
local function timeout_error(what, err, ms)
  if errors.is(err, "timeout") then
    errors.raise("timeout", string.format("%s: timed out after %d ms", what, ms), TIMEOUT_HINT)
  end
  error(err, 0)
end

local function exec_start(what, id, spec, deadline)
  local remaining
  if deadline then
    remaining = deadline - now()
    if remaining <= 0 then errors.raise("timeout", what .. ": timed out", TIMEOUT_HINT) end
  end
  local _, stream = call(what, "POST", "/exec/" .. pct(id, "._-") .. "/start", {
    body = { Detach = false, Tty = spec.tty or false }, mode = "hijack", demux = not spec.tty,
    timeout = remaining,
  })
  return stream
end

--- Run a command in the running container and wait for it. `spec` is
--- `{argv..., stdin=, env=, user=, workdir=, tty=, privileged=, timeout=, check=,
--- on_stdout=, on_stderr=}`: `stdin` (a string) is written then closed; with `tty`
--- stdout and stderr arrive merged as stdout; `on_stdout(chunk)`/`on_stderr(chunk)`
--- stream output as it comes (not kept in the result); `timeout` (ms, default none)
--- raises `timeout` (the process is left running: the engine cannot kill an exec);
--- `check=true` raises `docker.exec_failed` on a non-zero status.
--- Returns `{status=, stdout=, stderr=, ok=, id=}`.
---@param spec table
---@return {status: integer, stdout: string, stderr: string, ok: boolean, id: string}
function Container:exec(spec)
  local what = "docker.exec"
  local t0 = now()
  local deadline = spec and spec.timeout and t0 + spec.timeout or nil
  local stdin = spec and spec.stdin
  check_type(what, "stdin", stdin, "string", true)
  local id = exec_create(self, what, spec, stdin ~= nil)
  if spec.detach then
    call(what, "POST", "/exec/" .. pct(id, "._-") .. "/start", { body = { Detach = true } })
    return { id = id }
  end
  local stream <close> = exec_start(what, id, spec, deadline)
  local writer
  if stdin then
    -- a separate task, so output keeps flowing while a large input is written
    writer = task.spawn(function()
      if stdin ~= "" then stream:write(stdin) end
      stream:close_write()
    end)
  end
  local function left() return deadline and math.max(1, deadline - now()) or nil end
  local ok, out, err = pcall(function()
    if spec.on_stdout or spec.on_stderr then
      local o, e = {}, {}
      while true do
        local chunk, which = stream:read(left())
        if chunk == nil then break end
        which = which or "stdout"
        local cb = which == "stderr" and spec.on_stderr or spec.on_stdout
        if cb then cb(chunk) elseif which == "stderr" then e[#e + 1] = chunk else o[#o + 1] = chunk end
      end
      return table.concat(o), table.concat(e)
    end
    return stream:read_all(left())
  end)
  if writer then
    if not ok then stream:close() end
    -- the process may exit without reading its input: that is not an error here
    pcall(writer.join, writer)
  end
  stream:close()
  if not ok then timeout_error(what, out, spec.timeout) end
  local status = exec_status(id, what, spec[1])
  local r = { status = status, stdout = out, stderr = err or "", ok = status == 0, id = id }
  if spec.check and status ~= 0 then
    local last = r.stderr:match("([^\n]+)\n?$") or ""
    errors.raise("docker.exec_failed", string.format("%s exited with status %d%s", tostring(spec[1]), status,
      last ~= "" and (": " .. last) or ""), nil, { result = r })
  end
  return r
end

---@class foundry.docker.Exec
--- An interactive exec: `:read()`, `:write()`, `:close_write()`, `:close()` as a Stream,
--- `:resize(h, w)`, `:wait()` (the exit status, after the stream ended), `:inspect()`.
---@field id string
---@field stream foundry.docker.Stream
local Exec = {}
Exec.__index = Exec
Exec.__name = "foundry.docker.Exec"
function Exec:read(timeout_ms) return self.stream:read(timeout_ms) end
function Exec:read_all(timeout_ms) return self.stream:read_all(timeout_ms) end
function Exec:write(data) return self.stream:write(data) end
function Exec:close_write() return self.stream:close_write() end
function Exec:close() return self.stream:close() end
Exec.__close = Exec.close
function Exec:__tostring() return "docker exec " .. self.id:sub(1, 12) end
--- Resize the exec's TTY.
function Exec:resize(h, w, opts)
  call("docker.exec_resize", "POST", "/exec/" .. pct(self.id, "._-") .. "/resize",
    { query = { h = math.floor(h), w = math.floor(w) }, timeout = opts and opts.timeout })
end
--- The engine's view: {Running=, ExitCode=, Pid=, ...}.
function Exec:inspect(opts) return exec_inspect(self.id, opts) end
--- Wait for the stream to end (discarding unread output) and return the exit status.
function Exec:wait()
  while self.stream:read() do end
  self.stream:close()
  return (exec_status(self.id, "docker.exec_stream", self.cmd))
end

--- Start a command with its input and output as a stream: for terminals and long
--- conversations. `spec` as for exec (no stdin string: write to the stream; `tty=true`
--- for a terminal, `height`/`width` for its first size). Returns a foundry.docker.Exec.
---@param spec table
---@return foundry.docker.Exec
function Container:exec_stream(spec)
  local what = "docker.exec_stream"
  local id = exec_create(self, what, spec, true)
  local stream = exec_start(what, id, spec, spec.timeout and now() + spec.timeout or nil)
  return setmetatable({ id = id, stream = stream, tty = spec.tty or false, cmd = spec[1] }, Exec)
end

--- Attach to the container's main process: a Stream (multiplexed unless the container
--- has a TTY). `opts`: `stdin` (default true when the container keeps stdin open),
--- `stdout`/`stderr` (default true), `logs` (replay earlier output first), `timeout`.
---@param opts? {stdin?: boolean, stdout?: boolean, stderr?: boolean, logs?: boolean, timeout?: integer}
---@return foundry.docker.Stream
function Container:attach(opts)
  opts = opts or {}
  local tty = known_tty(self, opts)
  local _, stream = call("docker.attach", "POST", cpath(self, "/attach"), {
    query = { stream = true, stdin = opts.stdin ~= false, stdout = opts.stdout ~= false,
      stderr = opts.stderr ~= false, logs = opts.logs or nil },
    mode = "hijack", demux = not tty, timeout = opts.timeout,
  })
  return stream
end

-- ------------------------------------------------------------------ tar

local function octal(n, width)
  return string.format("%0" .. (width - 1) .. "o", n) .. "\0"
end

local function tar_header(name, size, mode, typeflag, linkname, mtime, uid, gid)
  local prefix = ""
  if #name > 100 then
    local cut = name:sub(1, 155):match("^(.*)/")
    if not cut or #name - #cut - 1 > 100 then
      error("docker.tar: path too long for ustar: " .. name, 3)
    end
    prefix, name = cut, name:sub(#cut + 2)
  end
  local function field(s, n) return s .. string.rep("\0", n - #s) end
  local h = field(name, 100) .. octal(mode, 8) .. octal(uid, 8) .. octal(gid, 8) ..
    octal(size, 12) .. octal(mtime, 12) .. "        " .. typeflag .. field(linkname or "", 100) ..
    "ustar\0" .. "00" .. field("", 32) .. field("", 32) .. octal(0, 8) .. octal(0, 8) ..
    field(prefix, 155) .. string.rep("\0", 12)
  local sum = 0
  for i = 1, #h do sum = sum + h:byte(i) end
  return h:sub(1, 148) .. string.format("%06o\0 ", sum) .. h:sub(157)
end

--- A tar archive (ustar) from a list of entries: `{name=, data=, mode=, type=
--- "file"|"dir"|"symlink", target=, uid=, gid=, mtime=}` (`mode` as an integer, default
--- 0644 for files and 0755 for directories). For put_archive.
---@class foundry.docker.TarEntry
---@field name string
---@field data? string
---@field mode? integer
---@field type? "file"|"dir"|"symlink"
---@field target? string
---@field uid? integer
---@field gid? integer
---@field mtime? integer
---@param entries foundry.docker.TarEntry[]
---@return string
function M.tar(entries)
  check_type("docker.tar", "entries", entries, "table")
  local out = {}
  for i, e in ipairs(entries) do
    if type(e.name) ~= "string" or e.name == "" then
      error(string.format("docker.tar: entries[%d].name: expected string", i), 2)
    end
    local typ = e.type or (e.data ~= nil and "file") or "dir"
    local flag, size, data = "0", 0, ""
    if typ == "file" then
      data = tostring(e.data or "")
      size = #data
    elseif typ == "dir" then
      flag = "5"
    elseif typ == "symlink" then
      flag = "2"
    else
      error(string.format("docker.tar: entries[%d].type: expected file, dir or symlink", i), 2)
    end
    local name = e.name:gsub("^/+", "")
    if typ == "dir" and name:sub(-1) ~= "/" then name = name .. "/" end
    local mode = e.mode or (typ == "dir" and 493 or typ == "symlink" and 511 or 420)
    out[#out + 1] = tar_header(name, size, mode, flag, e.target, e.mtime or os.time(), e.uid or 0, e.gid or 0)
    if size > 0 then
      out[#out + 1] = data
      if size % 512 ~= 0 then out[#out + 1] = string.rep("\0", 512 - size % 512) end
    end
  end
  out[#out + 1] = string.rep("\0", 1024)
  return table.concat(out)
end

--- The entries of a tar archive (as from get_archive): a list of {name=, type=
--- "file"|"dir"|"symlink"|"link"|"other", mode=, size=, data=, target=, uid=, gid=, mtime=}.
--- Understands ustar, GNU long names and pax path/linkpath/size.
---@param s string
---@return table[]
function M.untar(s)
  check_type("docker.untar", "s", s, "string")
  local out, pos = {}, 1
  local long_name, long_link, pax = nil, nil, nil
  local function num(field)
    field = field:gsub("[%z ]+$", ""):gsub("^[%z ]+", "")
    return tonumber(field, 8) or 0
  end
  local function cstr(field) return (field:gsub("%z.*$", "")) end
  while pos + 511 <= #s do
    local h = s:sub(pos, pos + 511)
    if h == string.rep("\0", 512) then break end
    local name = cstr(h:sub(1, 100))
    local mode = num(h:sub(101, 108))
    local uid, gid = num(h:sub(109, 116)), num(h:sub(117, 124))
    local size = num(h:sub(125, 136))
    local mtime = num(h:sub(137, 148))
    local flag = h:sub(157, 157)
    local link = cstr(h:sub(158, 257))
    local prefix = h:sub(258, 263) == "ustar\0" and cstr(h:sub(346, 500)) or ""
    if prefix ~= "" then name = prefix .. "/" .. name end
    local data = s:sub(pos + 512, pos + 511 + size)
    pos = pos + 512 + math.ceil(size / 512) * 512
    if flag == "L" then
      long_name = cstr(data)
    elseif flag == "K" then
      long_link = cstr(data)
    elseif flag == "x" then
      pax = {}
      for _, line in data:gmatch("(%d+) ([^\n]*)\n") do
        local k, v = line:match("^([^=]+)=(.*)$")
        if k then pax[k] = v end
      end
    elseif flag ~= "g" then -- (a global pax header is ignored)
      if pax and pax.size then
        -- the real size came in the pax header: re-read the data
        local real = tonumber(pax.size)
        local start = pos - math.ceil(size / 512) * 512
        data = s:sub(start, start + real - 1)
        pos = start + math.ceil(real / 512) * 512
        size = real
      end
      name = (pax and pax.path) or long_name or name
      link = (pax and pax.linkpath) or long_link or link
      long_name, long_link, pax = nil, nil, nil
      local typ = (flag == "0" or flag == "\0" or flag == "7") and "file" or flag == "5" and "dir"
        or flag == "2" and "symlink" or flag == "1" and "link" or "other"
      out[#out + 1] = { name = name, type = typ, mode = mode, size = size, uid = uid, gid = gid,
        mtime = mtime, data = typ == "file" and data or nil, target = link ~= "" and link or nil }
    end
  end
  return out
end

-- ------------------------------------------------------------------ misc

--- Transport statistics: {open=, pooled=} connections to the engine.
function M.stats() return native.stats() end

--- Close idle keep-alive connections to the engine.
function M.close_idle() native.close_idle() end

--- The raw transport, for Engine API calls this module does not wrap:
--- `docker.request{method=, path="/containers/json", query=, body=, mode=, demux=, timeout=}`
--- (the path without the version prefix). Returns {status=, headers=, body=} and, for
--- "stream"/"hijack" modes, a Stream. Raises on engine errors like the other calls.
function M.request(opts)
  check_type("docker.request", "opts", opts, "table")
  check_type("docker.request", "path", opts.path, "string")
  return call(opts.what or "docker.request", opts.method or "GET", opts.path, opts)
end

M.Container = Container
M.Exec = Exec

return M
