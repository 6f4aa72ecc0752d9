--- The console's JSON API. Every handler calls the same Lua API the CLI does
--- (foundry.sandbox, foundry.state, foundry.audit); errors come back as
--- `{"error":{"code":,"message":,"hint":}}` with a status from their code.
---
---   GET    /api/sandboxes                  the fleet
---   POST   /api/sandboxes                  create {repo, preset, name, branch, from,
---                                          network, image} (202: setup runs on)
---   GET    /api/sandboxes/:name            one sandbox, with its stages
---   DELETE /api/sandboxes/:name[?discard=1]  remove (202; commits are synced first)
---   POST   /api/sandboxes/:name/stop|start
---   GET    /api/sandboxes/:name/logs       setup events and log lines
---   GET    /api/sandboxes/:name/changes    the diff against its base, per file
---   GET    /api/sandboxes/:name/files?path=    a directory listing or a file
---   PUT    /api/sandboxes/:name/files?path=    {content, sha256 | create=true}
---   GET    /api/sandboxes/:name/audit[?after=]
---   GET    /api/sandboxes/:name/chat, POST {text}
---   GET    /api/sandboxes/:name/screen     the agent's screen (tmux)
---   POST   /api/sandboxes/:name/terminal   {mode} -> {url} with a ticket (60 s, one use)
---   GET    /api/settings                   defaults, presets, vault names, the console
local errors = require "foundry.errors"
local json = require "foundry.json"
local data = require "foundry.web.data"

local M = {}

local STATUS = {
  usage = 400, ["web.bad_request"] = 400, ["web.denied"] = 403, ["web.conflict"] = 409,
  ["web.too_large"] = 413, ["state.name_taken"] = 409, ["docker.conflict"] = 409,
  ["mount.denied"] = 403, ["web.no_workspace"] = 409, ["sandbox.no_container"] = 409,
  ["sandbox.no_workspace"] = 409, ["docker.unreachable"] = 503, timeout = 504,
}

--- The HTTP status for an error value.
function M.status_of(err)
  if not errors.is(err) then return 500 end
  local code = err.code or ""
  if STATUS[code] then return STATUS[code] end
  if code == "not_found" or code:match("%.not_found$") then return 404 end
  return 422
end

--- Send an error as JSON.
function M.fail(res, err)
  local status = M.status_of(err)
  local e = errors.is(err) and { code = err.code, message = data.text(err.message or err.code), hint = data.text(err.hint) }
    or { code = "internal", message = "internal error" }
  return res:json(status, { error = e })
end

local function body_json(req)
  if req.body == "" then return {} end
  local ok, v = pcall(json.decode, req.body)
  if not ok or type(v) ~= "table" then errors.raise("web.bad_request", "the body is not a JSON object") end
  return v
end

local function str(v, what, max)
  if v == nil or v == json.null or v == "" then return nil end
  if type(v) ~= "string" then errors.raise("web.bad_request", what .. ": expected a string") end
  if #v > (max or 4096) then errors.raise("web.bad_request", what .. ": too long") end
  return v
end

-- The default name for a sandbox of `repo` (as `foundry new` picks it), made unique.
local function name_for(repo)
  local b = tostring(repo or "sandbox"):gsub("%.git/?$", ""):gsub("/+$", ""):match("([^/:]+)$") or "sandbox"
  b = b:lower():gsub("[^%w_.-]+", "-"):gsub("^[^%w]+", ""):gsub("%.+", "."):gsub("[-.]+$", "")
  if b == "" then b = "sandbox" end
  return require("foundry.state").sandboxes.unique_name(b:sub(1, 40))
end

--- Register the API's routes on `router` for `console` (foundry.web).
function M.routes(r, console)
  local sandbox = require "foundry.sandbox"
  local state = require "foundry.state"

  -- wrap: run the handler, turning raised errors into JSON answers
  local function api(fn)
    return function(req, res, params)
      local ok, err = pcall(fn, req, res, params)
      if ok then return end
      if errors.is(err, "cancelled") then error(err, 0) end
      if not errors.is(err) then console:log("error", req.method .. " " .. req.path .. ": " .. tostring(err)) end
      if not res.sent then M.fail(res, err) end
    end
  end

  r:add("GET", "/api/sandboxes", api(function(_, res)
    res:json(200, data.fleet())
  end))

  r:add("POST", "/api/sandboxes", api(function(req, res)
    local b = body_json(req)
    local spec = {
      repo = str(b.repo, "repo"), preset = str(b.preset, "preset", 256), branch = str(b.branch, "branch", 256),
      from = str(b.from, "from", 256), network = str(b.network, "network", 32), image = str(b.image, "image", 512),
      name = str(b.name, "name", 63),
    }
    if spec.network and not ({ none = true, allowlist = true, ["host-only"] = true, open = true })[spec.network] then
      errors.raise("web.bad_request", "network: expected none, allowlist, host-only or open")
    end
    spec.repo = sandbox.find_repo(spec.repo or console.repo)
    if spec.name then
      if not sandbox.valid_name(spec.name) then
        errors.raise("web.bad_request", "'" .. spec.name .. "' is not a valid sandbox name",
          "use up to 63 letters, digits, '.', '_' and '-', starting with a letter or digit")
      end
      if state.sandboxes.get(spec.name) then
        errors.raise("state.name_taken", "a sandbox named '" .. spec.name .. "' exists")
      end
    else
      spec.name = name_for(spec.repo)
    end
    sandbox.resolve(spec) -- a bad preset or option fails here, before anything starts
    local hid = state.history.add({ command = "new", argv = { "(console)", spec.name }, cwd = spec.repo })
    console:background("create " .. spec.name, function()
      local ok, err = pcall(sandbox.create, spec, { progress = "none" })
      pcall(state.history.finish, hid, ok and 0 or 1)
      if ok then
        pcall(state.notifications.add, { sandbox = spec.name, level = "info", title = "sandbox " .. spec.name .. " is ready" })
      else
        if errors.is(err, "cancelled") then error(err, 0) end
        console:log("warn", "create " .. spec.name .. ": " .. errors.message(err))
        pcall(state.notifications.add, { sandbox = spec.name, level = "error", title = "sandbox " .. spec.name .. " failed",
          text = data.text(errors.message(err)), data = { stage = errors.is(err) and err.stage or nil,
            hint = errors.is(err) and data.text(err.hint) or nil } })
      end
    end)
    console:audit(req, spec.name, "create", { repo = spec.repo, preset = spec.preset })
    res:json(202, { name = spec.name, state = "creating" })
  end))

  r:add("GET", "/api/sandboxes/:name", api(function(_, res, p)
    res:json(200, data.detail(p.name))
  end))

  r:add("DELETE", "/api/sandboxes/:name", api(function(req, res, p)
    local sb = sandbox.get(p.name)
    local discard = req.query.discard == "1" or req.query.discard == "true"
    if sb.state ~= "removing" then pcall(sb._update, sb, { state = "removing" }) end
    console:background("remove " .. sb.name, function()
      local ok, out = pcall(sb.destroy, sb, { discard = discard })
      if ok then
        local synced = out and out.synced
        pcall(state.notifications.add, { sandbox = sb.name, level = "info", title = "sandbox " .. sb.name .. " removed",
          text = synced and synced.updated and
            string.format("%d commit(s) kept on branch %s", synced.commits or 0, synced.branch or "?") or nil })
      else
        local err = out
        if errors.is(err, "cancelled") then error(err, 0) end
        pcall(sb._update, sb, { state = "running", error = data.text(errors.message(err)) })
        pcall(state.notifications.add, { sandbox = sb.name, level = "error", title = "could not remove " .. sb.name,
          text = data.text(errors.message(err)), data = { hint = errors.is(err) and data.text(err.hint) or nil } })
      end
    end)
    console:audit(req, sb.name, "remove", { discard = discard })
    res:json(202, { name = sb.name, state = "removing" })
  end))

  r:add("POST", "/api/sandboxes/:name/stop", api(function(req, res, p)
    local sb = sandbox.get(p.name)
    sb:stop()
    console:audit(req, sb.name, "stop")
    res:json(200, data.detail(sb.name))
  end))

  r:add("POST", "/api/sandboxes/:name/start", api(function(req, res, p)
    local sb = sandbox.get(p.name)
    sb:start()
    console:audit(req, sb.name, "start")
    res:json(200, data.detail(sb.name))
  end))

  r:add("GET", "/api/sandboxes/:name/logs", api(function(req, res, p)
    sandbox.get(p.name)
    local rows, cur = data.logs(p.name, { event = math.tointeger(tonumber(req.query.event)),
      log = math.tointeger(tonumber(req.query.log)) }, 1000)
    res:json(200, { entries = rows, cursors = cur })
  end))

  r:add("GET", "/api/sandboxes/:name/changes", api(function(_, res, p)
    local sb = sandbox.get(p.name)
    res:json(200, require("foundry.web.changes").of(sb))
  end))

  r:add("GET", "/api/sandboxes/:name/files", api(function(req, res, p)
    local sb = sandbox.get(p.name)
    res:json(200, data.clean(require("foundry.web.files").read(sb, req.query.path)))
  end))

  r:add("PUT", "/api/sandboxes/:name/files", api(function(req, res, p)
    local sb = sandbox.get(p.name)
    local b = body_json(req)
    local files = require "foundry.web.files"
    local path = files.check(req.query.path)
    local out = files.write(sb, path, b.content, { sha256 = str(b.sha256, "sha256", 64), create = b.create == true })
    console:audit(req, sb.name, "write", { path = path, bytes = out.size })
    res:json(200, data.clean(out))
  end))

  r:add("GET", "/api/sandboxes/:name/audit", api(function(req, res, p)
    sandbox.get(p.name)
    local rows, cur = data.audit(p.name, math.tointeger(tonumber(req.query.after)), 500)
    res:json(200, { rows = rows, cursor = cur })
  end))

  r:add("GET", "/api/sandboxes/:name/chat", api(function(req, res, p)
    sandbox.get(p.name)
    local rows, cur = data.chat(p.name, math.tointeger(tonumber(req.query.after)), 500)
    res:json(200, { messages = rows, cursor = cur })
  end))

  r:add("POST", "/api/sandboxes/:name/chat", api(function(req, res, p)
    local sb = sandbox.get(p.name)
    local b = body_json(req)
    local row = require("foundry.web.chat").send(sb, b.text)
    console:audit(req, sb.name, "chat", { delivered = row.data and row.data.delivered })
    res:json(201, data.clean(row))
  end))

  r:add("GET", "/api/sandboxes/:name/screen", api(function(req, res, p)
    local sb = sandbox.get(p.name)
    res:json(200, require("foundry.web.chat").screen(sb, math.tointeger(tonumber(req.query.lines)) or 200))
  end))

  r:add("POST", "/api/sandboxes/:name/terminal", api(function(req, res, p)
    local sb = sandbox.get(p.name)
    local b = body_json(req)
    local mode = b.mode == "shell" and "shell" or "agent"
    local ticket = console.guard:ticket(sb.name)
    res:json(200, { url = "/ws/terminal/" .. sb.name .. "?mode=" .. mode .. "&ticket=" .. ticket,
      expires_in_ms = require("foundry.web.auth").TICKET_TTL_MS })
  end))

  r:add("GET", "/api/settings", api(function(_, res)
    res:json(200, data.settings(console))
  end))

  r:add("GET", "/api/stream", function(req, res)
    require("foundry.web.stream").serve(req, res, console)
  end)
end

return M
