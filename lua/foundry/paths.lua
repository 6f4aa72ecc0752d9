--- Where Foundry keeps things. Everything moves under one directory when FOUNDRY_HOME is
--- set (tests do this); otherwise the XDG base directories are used.
---
--- | name    | FOUNDRY_HOME set   | default                                    |
--- |---------|--------------------|--------------------------------------------|
--- | config  | $FOUNDRY_HOME/config | $XDG_CONFIG_HOME/foundry (~/.config/foundry) |
--- | data    | $FOUNDRY_HOME/data   | $XDG_DATA_HOME/foundry (~/.local/share/foundry) |
--- | state   | $FOUNDRY_HOME/state  | $XDG_STATE_HOME/foundry (~/.local/state/foundry) |
--- | cache   | $FOUNDRY_HOME/cache  | $XDG_CACHE_HOME/foundry (~/.cache/foundry) |
--- | runtime | $FOUNDRY_HOME/run    | $XDG_RUNTIME_DIR/foundry, else /tmp/foundry-$UID |
local M = {}

local function home()
  return os.getenv("HOME") or "/root"
end

local function uid()
  local ok, uv = pcall(require, "luv")
  if ok and uv.getuid then return uv.getuid() end
  return 0
end

local function dir(kind)
  local fh = os.getenv("FOUNDRY_HOME")
  if fh and fh ~= "" then
    local sub = { config = "config", data = "data", state = "state", cache = "cache", runtime = "run" }
    return fh .. "/" .. sub[kind]
  end
  if kind == "config" then return (os.getenv("XDG_CONFIG_HOME") or (home() .. "/.config")) .. "/foundry" end
  if kind == "data" then return (os.getenv("XDG_DATA_HOME") or (home() .. "/.local/share")) .. "/foundry" end
  if kind == "state" then return (os.getenv("XDG_STATE_HOME") or (home() .. "/.local/state")) .. "/foundry" end
  if kind == "cache" then return (os.getenv("XDG_CACHE_HOME") or (home() .. "/.cache")) .. "/foundry" end
  local rt = os.getenv("XDG_RUNTIME_DIR")
  if rt and rt ~= "" then return rt .. "/foundry" end
  return "/tmp/foundry-" .. uid()
end

function M.config() return dir("config") end
function M.data() return dir("data") end
function M.state() return dir("state") end
function M.cache() return dir("cache") end
function M.runtime() return dir("runtime") end

--- The state database.
function M.db() return M.state() .. "/foundry.db" end
--- The vault file.
function M.vault() return M.data() .. "/vault" end
--- The daemon's control socket.
function M.control_socket() return M.runtime() .. "/control.sock" end
--- Per-sandbox directory bind-mounted into the container (proxy socket lives here).
function M.sandbox_run(name) return M.runtime() .. "/sb/" .. name end
--- Workspaces (git dir + work tree) of sandboxes.
function M.workspaces() return M.data() .. "/workspaces" end
--- Cached mirrors of remote repositories and shared object stores.
function M.repos() return M.cache() .. "/repos" end
--- Foundry's own CA (certificate and key).
function M.ca() return M.data() .. "/ca" end

--- Create `path` (and parents) with mode 0700 if missing; returns path. Synchronous,
--- so it can run anywhere.
function M.ensure(path)
  local uv = require "luv"
  local parts, cur = {}, ""
  for p in path:gmatch("[^/]+") do parts[#parts + 1] = p end
  for _, p in ipairs(parts) do
    cur = cur .. "/" .. p
    if not uv.fs_stat(cur) then
      local ok, err = uv.fs_mkdir(cur, tonumber("700", 8))
      if not ok and not tostring(err):match("^EEXIST") then
        require("foundry.errors").raise("io.mkdir", "cannot create " .. cur .. ": " .. tostring(err),
          "check permissions, or set FOUNDRY_HOME to a writable directory")
      end
    end
  end
  return path
end

return M
