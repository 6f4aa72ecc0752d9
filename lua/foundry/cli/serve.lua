--- foundry serve [--port N] [--host ADDR] [--json] [--open]
local errors = require "foundry.errors"
local json = require "foundry.json"

local M = {
  summary = "Serve the web console (the fleet, and a HUD per sandbox) on 127.0.0.1",
  usage = "foundry serve [--port N] [--host 127.0.0.1] [--repo PATH] [--open] [--json]",
  description = [[
Serves the web console until Ctrl-C: every sandbox with its state, and for each a HUD
with Logs, Terminal, File Changes, Editor, Audit and Chat tabs, its setup stages, and a
settings page (defaults, presets, the vault's secret names — never values).

It listens on 127.0.0.1 (port 7420, or any free port when that one is taken) and prints
a URL carrying a random access token: open that URL (the token is traded for a
session cookie). Requests with another Host than 127.0.0.1/localhost are refused, and
so is everything without the token or the cookie. Secret values are redacted from
everything it shows, terminal output included: unlock the vault first
(FOUNDRY_VAULT_KEYFILE or FOUNDRY_VAULT_PASSPHRASE, or it asks on a terminal) so its
secrets are known to the redactor.]],
  flags = {
    { "port", short = "p", type = "number", arg = "N", help = "the port (default 7420; 0: any free port)" },
    { "host", type = "string", arg = "ADDR",
      help = "the address to listen on (default 127.0.0.1; others expose the console to the network)" },
    { "repo", type = "string", arg = "PATH", complete = "dirs",
      help = "the default repository for sandboxes made in the console (default: the current directory's)" },
    { "open", help = "open the console in the browser (xdg-open)" },
    { "json", help = "print {url=, port=, host=, pid=} as one JSON line when listening" },
  },
  max_args = 0,
  order = 30,
  examples = {
    "foundry serve                 # then open the printed URL",
    "foundry serve --port 0 --json # any free port; the URL as JSON",
  },
}

local LOOPBACK = { ["127.0.0.1"] = true, ["::1"] = true, localhost = true }

-- Load the vault's secrets into the redactor, as the daemon does: without a prompt when
-- a key file or passphrase is in the environment, else with one on a terminal.
local function unlock_vault(interactive)
  local ok, vault = pcall(require, "foundry.vault")
  if not ok or not vault.exists() then return "no vault" end
  local uok, err = pcall(function()
    local v = vault.default()
    v:unlock({ prompt = interactive })
    require("foundry.redact").set_global(v:redactor())
  end)
  if uok then return "unlocked" end
  return "locked (" .. errors.message(err) .. ")"
end

function M.run(opts)
  local uv = require "luv"
  local web = require "foundry.web"
  local host = opts.host or "127.0.0.1"
  if host == "localhost" then host = "127.0.0.1" end
  local port = opts.port and math.tointeger(opts.port)
  if opts.port and (not port or port < 0 or port > 65535) then
    errors.raise("usage", "--port: expected a number from 0 to 65535")
  end
  local interactive = uv.guess_handle(0) == "tty" and not opts.json
  local vault_state = unlock_vault(interactive)
  local repo
  local rok, found = pcall(require("foundry.sandbox").find_repo, opts.repo)
  if rok then repo = found elseif opts.repo then error(found, 0) end
  local function log(level, msg)
    io.stderr:write(os.date("%H:%M:%S"), " ", level, " ", msg, "\n")
  end
  local ok, console = pcall(web.start, { host = host, port = port or web.DEFAULT_PORT, repo = repo, log = log })
  if not ok and port == nil and errors.is(console, "web.bind") and console.errno == "EADDRINUSE" then
    ok, console = pcall(web.start, { host = host, port = 0, repo = repo, log = log })
  end
  if not ok then error(console, 0) end
  if opts.json then
    io.stdout:write(json.encode({ url = console.url, base_url = console.base_url, port = console.port,
      host = console.host, pid = math.tointeger(uv.os_getpid()), vault = vault_state,
      xterm = console.xterm_source or false }), "\n")
  else
    io.stdout:write("Foundry console on ", console.base_url, "\n\n  ", console.url, "\n\n")
    if not LOOPBACK[host] then
      io.stdout:write("  warning: listening on ", host, ": other machines can reach this console (over plain HTTP)\n")
    end
    if vault_state ~= "unlocked" then
      io.stdout:write("  vault: ", vault_state, ": secrets are redacted by token shape only\n")
    end
    if not console.xterm_source then
      io.stdout:write("  terminal: xterm.js not found (apt-get install node-xterm, or set FOUNDRY_XTERM_DIR)\n")
    end
    io.stdout:write("  Ctrl-C stops it.\n")
  end
  io.stdout:flush()
  if opts.open then
    require("foundry").spawn(function()
      local r = pcall(require("foundry.exec").exec, { "xdg-open", console.url, timeout = 10000 })
      if not r then log("warn", "could not run xdg-open: open the URL yourself") end
    end)
  end
  local sigs = {}
  for _, name in ipairs({ "sigint", "sigterm", "sighup" }) do
    local h = uv.new_signal()
    -- stop listening now; the command's task then closes the rest (and waits for it)
    h:start(name, function() console.server:close() end)
    sigs[#sigs + 1] = h
  end
  console:wait()
  console:close()
  for _, h in ipairs(sigs) do if not h:is_closing() then h:close() end end
  if not opts.json then io.stderr:write("console stopped\n") end
  return 0
end

return M
