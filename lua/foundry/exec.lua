--- Child processes, asynchronously: `foundry.exec{"git", "status", cwd=...}`.
local uv = require "luv"
local task = require "foundry._task"
local errors = require "foundry.errors"

local M = {}

local function environment(env, clear)
  if env == nil then return nil end
  local merged = {}
  if not clear then
    for k, v in pairs(uv.os_environ()) do merged[k] = v end
  end
  for k, v in pairs(env) do
    if v == false then merged[k] = nil else merged[k] = tostring(v) end
  end
  local list = {}
  for k, v in pairs(merged) do list[#list + 1] = k .. "=" .. v end
  table.sort(list)
  return list
end

--- Run a command and wait for it.
---
--- `spec` is `{argv..., cwd=, env=, clear_env=, stdin=, timeout=, check=,
--- on_stdout=, on_stderr=}`. `env` is merged into the current environment (`false`
--- removes a variable) unless `clear_env`. `stdin` is a string written then closed.
--- `on_stdout(chunk)`/`on_stderr(chunk)` stream output as it comes (they run in a loop
--- callback: they must not wait); streamed output is not kept in the result.
--- `check=true` raises `exec.failed` on a non-zero exit.
---
--- Returns `{status=, signal=, stdout=, stderr=, ok=}`.
---@return {status: integer, signal: integer, stdout: string, stderr: string, ok: boolean}
function M.exec(spec)
  if type(spec) ~= "table" then error("exec: expected a table {argv...}, got " .. type(spec), 2) end
  local argv = {}
  for i = 1, #spec do argv[i] = tostring(spec[i]) end
  if #argv == 0 then error("exec: empty argv", 2) end
  local stdin = spec.stdin ~= nil and uv.new_pipe(false) or nil
  local out, err = uv.new_pipe(false), uv.new_pipe(false)
  local args = {}
  for i = 2, #argv do args[#args + 1] = argv[i] end
  local handle, pid
  local status, signal
  local outbuf, errbuf = {}, {}
  local pending = 3
  local w
  local function done()
    pending = pending - 1
    if pending == 0 and w then
      w:resolve({
        status = status, signal = signal, pid = pid, ok = status == 0 and signal == 0,
        stdout = table.concat(outbuf), stderr = table.concat(errbuf),
      })
    end
  end
  handle, pid = uv.spawn(argv[1], {
    args = args,
    stdio = { stdin or nil, out, err },
    cwd = spec.cwd,
    env = environment(spec.env, spec.clear_env),
  }, function(code, sig)
    status, signal = code, sig
    if handle and not handle:is_closing() then handle:close() end
    done()
  end)
  if not handle then
    if stdin then stdin:close() end
    out:close(); err:close()
    local name = tostring(pid):match("^(%u+)") or "ERROR"
    local hint
    if name == "ENOENT" then
      hint = spec.cwd and ("check that '" .. argv[1] .. "' is installed and that " .. spec.cwd .. " exists")
        or ("check that '" .. argv[1] .. "' is installed and on PATH")
    end
    errors.raise("exec.spawn", "cannot run '" .. argv[1] .. "': " .. tostring(pid):gsub("^%u+: ", ""), hint)
  end
  local function reader(buf, cb)
    return function(rerr, chunk)
      if rerr or not chunk then
        done()
      elseif cb then
        cb(chunk)
      else
        buf[#buf + 1] = chunk
      end
    end
  end
  out:read_start(function(e, c) if not c then out:close() end reader(outbuf, spec.on_stdout)(e, c) end)
  err:read_start(function(e, c) if not c then err:close() end reader(errbuf, spec.on_stderr)(e, c) end)
  if stdin then
    local data = spec.stdin
    if data ~= "" then stdin:write(tostring(data)) end
    stdin:shutdown(function() stdin:close() end)
  end
  w = task.wait("exec " .. argv[1], function()
    -- cancelled or timed out: stop the child; the pipes close on its exit
    if handle and not handle:is_closing() then
      handle:kill("sigterm")
      local t = uv.new_timer()
      t:start(2000, 0, function()
        t:close()
        if handle and not handle:is_closing() then handle:kill("sigkill") end
      end)
      t:unref()
    end
  end, spec.timeout)
  local r = w:await()
  if spec.check and not r.ok then
    local msg = r.stderr:match("([^\n]+)\n?$") or ""
    errors.raise("exec.failed", string.format("%s exited with %s%s", argv[1],
      r.signal ~= 0 and ("signal " .. r.signal) or ("status " .. r.status),
      msg ~= "" and (": " .. msg) or ""), nil, { result = r })
  end
  return r
end

return M
