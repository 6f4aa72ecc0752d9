--- foundry doctor
local errors = require "foundry.errors"
local common = require "foundry.cli._common"
local json = require "foundry.json"

local function check(name, fn)
  local ok, res, detail, fix = pcall(fn)
  if not ok then
    return { name = name, ok = false, detail = errors.message(res), fix = errors.is(res) and res.hint or nil }
  end
  if res == false then return { name = name, ok = false, detail = detail, fix = fix } end
  return { name = name, ok = true, detail = detail, warn = res == "warn" or nil, fix = res == "warn" and fix or nil }
end

local function human(bytes)
  local units = { "B", "KiB", "MiB", "GiB", "TiB" }
  local i = 1
  while bytes >= 1024 and i < #units do bytes = bytes / 1024; i = i + 1 end
  return string.format("%.1f %s", bytes, units[i])
end

return {
  summary = "Check that sandboxes can run here, and say how to fix what is missing",
  usage = "foundry doctor [--json]",
  flags = { { "json", help = "print JSON" } },
  max_args = 0,
  order = 30,
  run = function(opts)
    local uv = require "luv"
    local paths = require "foundry.paths"
    local sandbox = require "foundry.sandbox"
    local docker = require "foundry.docker"
    local results = {}
    local engine_ok = false
    results[#results + 1] = check("engine", function()
      local v = docker.version({ timeout = 3000 })
      engine_ok = true
      return true, string.format("Docker %s (API %s) at %s", v.Version or "?", docker.api_version(), docker.endpoint().host)
    end)
    if not engine_ok then
      local sock = (docker.endpoint().host or ""):match("^unix://(.*)$")
      if sock then
        local st = uv.fs_stat(sock)
        results[#results + 1] = check("permissions", function()
          if not st then return false, sock .. " does not exist", "start the engine: sudo systemctl start docker (or: sudo dockerd &)" end
          local fd = uv.fs_open(sock, "r", 0)
          if fd then uv.fs_close(fd) end
          return false, "cannot talk to " .. sock, "add yourself to the docker group: sudo usermod -aG docker $USER (then log in again)"
        end)
      end
    end
    results[#results + 1] = check("image", function()
      if not engine_ok then return false, "not checked (no engine)" end
      local img = sandbox.default_image()
      if docker.image_exists(img) then return true, img .. " is present" end
      return false, img .. " is missing", "build it: foundry image build (or set FOUNDRY_IMAGE / pass --image)"
    end)
    results[#results + 1] = check("shim", function()
      local p = sandbox.shim_path()
      local f = io.open(p, "rb")
      local head = f and f:read(4096) or ""
      if f then f:close() end
      if head:find("/lib64/ld-linux", 1, true) or head:find("/lib/ld-linux", 1, true) then
        return "warn", p .. " is dynamically linked", "rebuild it static: make"
      end
      return true, p
    end)
    results[#results + 1] = check("git", function()
      local r = require("foundry.exec").exec{ "git", "--version" }
      local v = r.ok and (r.stdout:gsub("\n", "")) or "no git program"
      return true, "workspaces with libgit2; " .. v .. (r.ok and "" or " (only needed to work on the branches yourself)")
    end)
    results[#results + 1] = check("disk", function()
      local dir = paths.data()
      local probe = dir
      while not uv.fs_stat(probe) and probe:match("/[^/]+$") do probe = probe:match("^(.*)/[^/]+$") end
      local st = uv.fs_statfs(probe ~= "" and probe or "/")
      if not st then return "warn", "cannot read free space of " .. dir end
      local free = st.bavail * st.bsize
      if free < 2 * 1024 ^ 3 then
        return false, human(free) .. " free under " .. dir, "free some space: foundry prune, docker system prune"
      end
      return true, human(free) .. " free under " .. dir
    end)
    results[#results + 1] = check("state", function()
      local state = require "foundry.state"
      local n = #state.sandboxes.list()
      return true, string.format("%s (schema %d, %d sandbox%s)", paths.db(), state.schema_version, n, n == 1 and "" or "es")
    end)
    results[#results + 1] = check("daemon", function()
      local ok, client = pcall(require, "foundry.daemon_client")
      if not ok or type(client) ~= "table" then return "warn", "not in this build: sandboxes have no egress", "update foundry" end
      local sok, st = pcall(client.call, "status", {})
      if sok then return true, "running" .. (type(st) == "table" and st.pid and (" (pid " .. st.pid .. ")") or "") end
      return "warn", "not running (started on demand by foundry new)", "foundry daemon start"
    end)
    local failed = 0
    for _, r in ipairs(results) do if not r.ok then failed = failed + 1 end end
    if opts.json then
      common.json({ ok = failed == 0, checks = json.array(results) })
    else
      for _, r in ipairs(results) do
        local mark = r.ok and (r.warn and "!" or "✓") or "✗"
        io.stdout:write(string.format("%s %-12s %s\n", mark, r.name, r.detail or ""))
        if r.fix then io.stdout:write("  fix: ", r.fix, "\n") end
      end
    end
    return failed == 0 and 0 or 1
  end,
}
