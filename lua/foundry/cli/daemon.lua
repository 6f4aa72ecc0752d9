--- foundry daemon start|stop|restart|status|run [--json]
local errors = require "foundry.errors"
local json = require "foundry.json"
local util = require "foundry.util"

local SUBCOMMANDS = { "status", "start", "stop", "restart", "run" }

local function out(opts, value, text)
  if opts.json then
    io.stdout:write(json.encode(value), "\n")
  else
    io.stdout:write(text, "\n")
  end
end

local function ago(ms)
  if not ms then return "-" end
  local s, us = require("luv").gettimeofday()
  return util.ms(math.max(0, s * 1000 + us // 1000 - ms)) .. " ago"
end

local function proxy_line(p)
  if not p.ready then return "unavailable: " .. tostring(p.error) end
  local s = p.stats
  if not s then return "ready" end
  return string.format("ready (%d open connections; %d requests, %d denied, %d tunnels of which %d spliced, %d inspected)",
    s.connections or 0, s.requests or 0, s.denied or 0, s.tunnels or 0, s.spliced or 0, s.inspected or 0)
end

local function print_status(st)
  local lines = {
    string.format("foundry daemon: running (pid %d, up %s, version %s)", st.pid, util.ms(st.uptime_ms), st.version),
    string.format("  socket     %s", st.socket),
    string.format("  log        %s", st.log),
    "  proxy      " .. proxy_line(st.proxy),
    string.format("  hardened   %s", st.hardened or "no (the process may be dumped or traced)"),
    string.format("  sandboxes  %d registered", #st.sandboxes),
  }
  if #st.sandboxes > 0 then
    lines[#lines + 1] = string.format("    %-24s %-10s %7s  %s", "NAME", "STATE", "EVENTS", "LAST EVENT")
    for _, sb in ipairs(st.sandboxes) do
      lines[#lines + 1] = string.format("    %-24s %-10s %7d  %s", sb.name, sb.state or "-", sb.events or 0,
        sb.last_event and (sb.last_event .. ", " .. ago(sb.last_event_at)) or "-")
      if sb.policy_error then
        lines[#lines + 1] = "      policy not reloaded (the previous one applies): " .. sb.policy_error
      end
    end
  end
  return table.concat(lines, "\n")
end

local function not_running(opts)
  local files = require("foundry.daemon").files()
  out(opts, { running = false, socket = files.socket, log = files.log }, "foundry daemon: not running")
  return 3
end

local actions = {}

function actions.status(opts)
  local st = require("foundry.daemon_client").status()
  if not st then return not_running(opts) end
  st.sandboxes = json.array(st.sandboxes or {}) -- [] even when empty
  out(opts, st, print_status(st))
  return 0
end

function actions.start(opts)
  local client = require "foundry.daemon_client"
  local r, started = client.start()
  local files = require("foundry.daemon").files()
  out(opts, { running = true, started = started, pid = r.pid, socket = files.socket, log = files.log },
    started and string.format("foundry daemon started (pid %d); log: %s", r.pid, files.log)
      or string.format("foundry daemon already running (pid %d)", r.pid))
  return 0
end

function actions.stop(opts)
  local pid = require("foundry.daemon_client").stop()
  out(opts, { stopped = pid ~= nil, pid = pid or json.null },
    pid and string.format("foundry daemon stopped (pid %d)", pid) or "foundry daemon: not running")
  return 0
end

function actions.restart(opts)
  local client = require "foundry.daemon_client"
  local old = client.stop()
  local r = client.start()
  out(opts, { running = true, pid = r.pid, previous_pid = old or json.null },
    string.format("foundry daemon restarted (pid %d%s)", r.pid, old and (", was " .. old) or ""))
  return 0
end

function actions.run()
  return require("foundry.daemon").run()
end

return {
  summary = "Start, stop or inspect the daemon (the proxy and the hooks)",
  usage = "foundry daemon [status|start|stop|restart|run] [--json]",
  description = [[
The daemon is one long-lived process per user and host: it holds every sandbox's proxy
socket (their only way out), runs their hooks, and answers the CLI on a control socket
($XDG_RUNTIME_DIR/foundry/control.sock, mode 0600). Commands that need it start it on
demand, as tmux starts its server; on restart it re-registers every sandbox from the state
database, so sandboxes regain egress without being recreated.

  status    whether it runs, its pid, uptime, proxy and registered sandboxes
            (exit status 3 when it is not running)
  start     start it in the background (log under the state directory) and wait until it
            answers; nothing to do when one already runs
  stop      ask it to shut down; SIGTERM, then SIGKILL, if it does not within 5 s
  restart   stop, then start
  run       run it in the foreground (for systemd units and debugging)]],
  flags = { { "json", help = "print the result as JSON" } },
  max_args = 1,
  order = 60,
  examples = { "foundry daemon status", "foundry daemon start", "foundry daemon status --json" },
  run = function(opts, args)
    local sub = args[1] or "status"
    local action = actions[sub]
    if not action then
      local near = util.did_you_mean(sub, SUBCOMMANDS)
      errors.raise("usage", "unknown daemon command '" .. sub .. "'" ..
        (near and (" — did you mean '" .. near .. "'?") or ""), "one of: " .. table.concat(SUBCOMMANDS, ", "))
    end
    return action(opts)
  end,
}
