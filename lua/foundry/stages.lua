--- The setup pipeline of a sandbox: stages run in order with live progress, and a failure
--- (or Ctrl-C) undoes what was done, in reverse.
---
--- A stage is `{name=, run=function(sb, ctx) end, undo=function(sb, ctx) end}`. `run`
--- may return `ctx.skip(reason)` when it has nothing to do: the stage is reported as
--- skipped with that reason (an honest no-op). `undo` runs when a later stage fails, and
--- also for the failing stage itself, so it must tolerate a partial `run`.
---
--- Work that must finish once started, even when the pipeline is interrupted (creating a
--- container: the engine completes it whether we wait or not), goes through
--- `ctx.shield(fn)`: the stage may be cancelled while it waits, but rollback first waits
--- for every shielded call to end, so `undo` sees what it made.
---
---   local stages = require "foundry.stages"
---   stages.run(stages.compose(base, preset.stages), sb, ctx, { reporter = stages.reporter("auto") })
local uv = require "luv"
local task = require "foundry._task"
local errors = require "foundry.errors"
local util = require "foundry.util"

local M = {}

--- The default stage names, in order.
M.ORDER = { "provision", "system", "auth", "agent-config", "workspace", "deps", "mcp",
            "customize", "health", "ready" }

--- Stages that a preset may replace but not remove.
M.REQUIRED = { provision = true, ready = true }

local SKIP = { __name = "foundry.stages.Skip" }

--- The value a stage's `run` returns when it has nothing to do.
---@param reason string why (shown in progress and in --json events)
function M.skip(reason)
  return setmetatable({ reason = tostring(reason) }, SKIP)
end

local function is_skip(v) return type(v) == "table" and getmetatable(v) == SKIP end

local function now_ms()
  return uv.hrtime() / 1e6
end

local function err_fields(e)
  if errors.is(e) then return { code = e.code, message = e.message or e.code, hint = e.hint } end
  return { code = "error", message = errors.message(e) }
end

-- ------------------------------------------------------------------ reporters

local SPIN = { "⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏" }

local function fmt_ms(ms) return util.ms(math.floor(ms + 0.5)) end

local function color_on(out)
  if os.getenv("NO_COLOR") and os.getenv("NO_COLOR") ~= "" then return false end
  return out == io.stderr and uv.guess_handle(2) == "tty" or out == io.stdout and uv.guess_handle(1) == "tty"
end

local function one_line(s)
  return (tostring(s):gsub("%s*\n.*", ""))
end

-- Live progress on a terminal: one line a stage, a spinner and the elapsed time while it
-- runs, then ✓/✗/– and its time.
local function tty_reporter(out, opts)
  local color = opts.color
  if color == nil then color = color_on(out) end
  local function paint(code, s) return color and ("\27[" .. code .. "m" .. s .. "\27[0m") or s end
  local r = { kind = "tty" }
  local timer, cur, t0, frame = nil, nil, 0, 0
  local width = opts.width or 14
  local prefix = opts.label and (opts.label .. " ") or ""
  local function line(mark, name, tail)
    return string.format("  %s%s %-" .. width .. "s %s", prefix, mark, name, tail or "")
  end
  local function draw()
    if not cur then return end
    frame = frame % #SPIN + 1
    out:write("\r\27[2K", line(paint("36", SPIN[frame]), cur, paint("2", fmt_ms(now_ms() - t0))))
    out:flush()
  end
  local function stop()
    if timer then timer:stop() end
    if cur then out:write("\r\27[2K") end
    cur = nil
  end
  function r:event(ev)
    if ev.event == "start" then
      cur, t0, frame = ev.stage, now_ms(), 0
      draw()
      if not timer then timer = uv.new_timer() end
      timer:start(80, 80, draw)
    elseif ev.event == "done" then
      stop()
      out:write(line(paint("32", "✓"), ev.stage, paint("2", fmt_ms(ev.ms))), "\n")
    elseif ev.event == "skip" then
      stop()
      out:write(line(paint("2", "–"), ev.stage, paint("2", "skipped: " .. one_line(ev.reason))), "\n")
    elseif ev.event == "fail" then
      stop()
      out:write(line(paint("31", "✗"), ev.stage, fmt_ms(ev.ms) .. "  " .. paint("31", one_line(ev.error.message))), "\n")
    elseif ev.event == "undo" then
      out:write(line(paint("33", "↺"), ev.stage, paint("2", "undone " .. fmt_ms(ev.ms))), "\n")
    elseif ev.event == "undo_fail" then
      out:write(line(paint("31", "↺"), ev.stage, paint("31", "undo failed: " .. one_line(ev.error.message))), "\n")
    elseif ev.event == "note" then
      local keep = cur
      stop()
      out:write("  ", prefix, "  ", paint("2", one_line(ev.message)), "\n")
      if keep then cur = keep; draw(); timer:again() end
    end
    out:flush()
  end
  function r:close()
    stop()
    if timer then timer:close(); timer = nil end
  end
  return r
end

-- Plain lines for logs and pipes: one line when a stage ends.
local function plain_reporter(out, opts)
  local prefix = opts.label and (opts.label .. ": ") or ""
  local r = { kind = "plain" }
  function r:event(ev)
    local s
    if ev.event == "done" then
      s = string.format("[ok]   %s (%s)", ev.stage, fmt_ms(ev.ms))
    elseif ev.event == "skip" then
      s = string.format("[skip] %s: %s", ev.stage, one_line(ev.reason))
    elseif ev.event == "fail" then
      s = string.format("[FAIL] %s (%s): %s", ev.stage, fmt_ms(ev.ms), one_line(ev.error.message))
    elseif ev.event == "undo" then
      s = string.format("[undo] %s (%s)", ev.stage, fmt_ms(ev.ms))
    elseif ev.event == "undo_fail" then
      s = string.format("[undo] %s FAILED: %s", ev.stage, one_line(ev.error.message))
    elseif ev.event == "note" then
      s = "       " .. one_line(ev.message)
    end
    if s then out:write(prefix, s, "\n"); out:flush() end
  end
  function r:close() end
  return r
end

-- NDJSON: one object a line, {"stage":..., "event":"start|done|skip|fail|undo|undo_fail", "ms":...}.
local function json_reporter(out)
  local json = require "foundry.json"
  local r = { kind = "json" }
  function r:event(ev)
    out:write(json.encode(ev), "\n")
    out:flush()
  end
  function r:close() end
  return r
end

--- A progress reporter: "tty" (spinner lines), "plain" (a line a finished stage), "json"
--- (NDJSON events), "none", or "auto" (tty when `out` is a terminal, else plain).
--- `opts.out` (default io.stderr), `opts.label` (prefix, e.g. the sandbox name),
--- `opts.color`.
function M.reporter(kind, opts)
  opts = opts or {}
  local out = opts.out or io.stderr
  if kind == nil or kind == true or kind == "auto" then
    local fd = out == io.stdout and 1 or 2
    kind = (out == io.stderr or out == io.stdout) and uv.guess_handle(fd) == "tty" and "tty" or "plain"
  end
  if kind == "tty" then return tty_reporter(out, opts) end
  if kind == "plain" then return plain_reporter(out, opts) end
  if kind == "json" then return json_reporter(out) end
  if kind == "none" or kind == false then return { kind = "none", event = function() end, close = function() end } end
  if type(kind) == "table" and kind.event then return kind end
  error("stages.reporter: kind: expected 'auto', 'tty', 'plain', 'json' or 'none', got " .. tostring(kind), 2)
end

-- ------------------------------------------------------------------ composition

local function stage_from(name, v, where)
  if type(v) == "function" then return { name = name, run = v } end
  if type(v) == "table" then
    if type(v.run) ~= "function" then
      error(string.format("%sstage '%s': run: expected function, got %s", where or "", name, type(v.run)), 0)
    end
    if v.undo ~= nil and type(v.undo) ~= "function" then
      error(string.format("%sstage '%s': undo: expected function, got %s", where or "", name, type(v.undo)), 0)
    end
    return { name = name, run = v.run, undo = v.undo, description = v.description }
  end
  error(string.format("%sstage '%s': expected a function or {run=, undo=}, got %s", where or "", name, type(v)), 0)
end

local function names_of(list)
  local out = {}
  for _, s in ipairs(list) do out[#out + 1] = s.name end
  return out
end

local function index_of(list, name)
  for i, s in ipairs(list) do if s.name == name then return i end end
end

local function unknown(name, list, what)
  local near = util.did_you_mean(name, names_of(list))
  errors.raise("preset.invalid", string.format("%s: no stage named '%s'%s", what, name,
    near and (" — did you mean '" .. near .. "'?") or ""),
    "stages are: " .. table.concat(names_of(list), ", "))
end

--- Apply a preset's `stages = {remove=, replace=, add=}` to a list of stages (copied).
--- `remove` is a list of names; `replace` maps a name to a function or `{run=, undo=}`;
--- `add` is a list of `{name=, before=|after=, run=, undo=}` (default: before "ready").
function M.compose(base, spec)
  local list = {}
  for i, s in ipairs(base) do list[i] = util.copy(s) end
  if spec == nil then return list end
  for _, name in ipairs(spec.remove or {}) do
    local i = index_of(list, name)
    if not i then unknown(name, list, "stages.remove") end
    if M.REQUIRED[name] then
      errors.raise("preset.invalid", "stages.remove: stage '" .. name .. "' cannot be removed",
        "replace it instead: stages = { replace = { " .. name .. " = function(sb, ctx) ... end } }")
    end
    table.remove(list, i)
  end
  for _, name in ipairs(util.keys(spec.replace or {})) do
    local i = index_of(list, name)
    if not i then unknown(name, list, "stages.replace") end
    list[i] = stage_from(name, spec.replace[name], "stages.replace: ")
  end
  for k, add in ipairs(spec.add or {}) do
    local where = string.format("stages.add[%d]: ", k)
    if type(add) ~= "table" or type(add.name) ~= "string" then
      errors.raise("preset.invalid", where .. "expected {name=, run=, before=|after=}")
    end
    if index_of(list, add.name) then
      errors.raise("preset.invalid", where .. "a stage named '" .. add.name .. "' exists",
        "use stages.replace to change it")
    end
    local s = stage_from(add.name, add, where)
    local pos
    if add.before then
      pos = index_of(list, add.before)
      if not pos then unknown(add.before, list, where .. "before") end
    elseif add.after then
      pos = index_of(list, add.after)
      if not pos then unknown(add.after, list, where .. "after") end
      pos = pos + 1
    else
      pos = index_of(list, "ready") or (#list + 1)
    end
    table.insert(list, pos, s)
  end
  return list
end

-- ------------------------------------------------------------------ the default stages

-- Files of the sandbox user's home (a fresh tmpfs in every container).
local function home_files(sb, r)
  local git_user = require("foundry.exec").exec{ "git", "config", "--global", "--get-regexp", "^user\\.(name|email)$" }
  local name, email = "Foundry Agent", "agent@foundry.invalid"
  for k, v in (git_user.stdout or ""):gmatch("user%.(%a+) ([^\n]+)") do
    if k == "name" then name = v elseif k == "email" then email = v end
  end
  local cwd = sb:cwd()
  return {
    ["~/.gitconfig"] = table.concat({
      "[user]", "\tname = " .. name, "\temail = " .. email,
      "[safe]", "\tdirectory = *",
      "[init]", "\tdefaultBranch = main",
      "[push]", "\tautoSetupRemote = true", "" }, "\n")
      .. require("foundry.gitsafety").gitconfig(), -- SSH remotes of GitHub go through the proxy's git rules
    ["~/.profile"] = "[ -n \"$BASH_VERSION\" ] && [ -f \"$HOME/.bashrc\" ] && . \"$HOME/.bashrc\"\n",
    ["~/.bashrc"] = table.concat({
      "# written by foundry: the home directory is a tmpfs, rebuilt when the sandbox starts",
      "export PATH=\"$HOME/.local/bin:$PATH\"",
      "export NPM_CONFIG_PREFIX=\"$HOME/.local\" PIP_USER=1 PIP_BREAK_SYSTEM_PACKAGES=1",
      "export FOUNDRY_SANDBOX=" .. sb.name,
      "[ -z \"$PS1\" ] && return",
      "PS1='\\[\\e[36m\\][" .. sb.name .. "]\\[\\e[0m\\] \\w\\$ '",
      "HISTFILE=\"$HOME/.bash_history\"",
      "[ \"$PWD\" = \"$HOME\" ] && cd " .. cwd,
      "" }, "\n"),
    ["~/.tmux.conf"] = table.concat({
      "set -g mouse on", "set -g history-limit 50000", "set -g default-terminal screen-256color",
      "set -g status-left '[" .. sb.name .. "] '", "set -g status-left-length 40",
      "set -g status-right 'detach: C-b d, or C-p C-q outside tmux'", "set -g status-right-length 60",
      "set -g escape-time 10", "" }, "\n"),
  }
end

-- The MCP servers of spec `r`, in the shape the agents' files share (nil: none).
local function mcp_servers(r)
  local json = require "foundry.json"
  local servers = {}
  for name, s in pairs(r.mcp or {}) do
    if s then
      local cmd = type(s.command) == "table" and s.command or (s.command and { s.command }) or nil
      local entry = { env = s.env, url = s.url }
      if cmd then
        entry.command = cmd[1]
        local args = {}
        for i = 2, #cmd do args[#args + 1] = cmd[i] end
        for _, a in ipairs(s.args or {}) do args[#args + 1] = a end
        entry.args = json.array(args)
      end
      servers[name] = entry
    end
  end
  return next(servers) and servers or nil
end

-- What the agent runs after it used a tool (or finished a turn): the shim signs the event
-- and hands it to the daemon through the sandbox's socket; a failure never stops the agent.
local NOTIFY = "foundry-shim notify post-tool-use >/dev/null 2>&1"

--- The agent's own configuration files for spec `r`: its post-tool-use hook when the spec
--- has one (Claude Code: a PostToolUse hook; Gemini CLI: an AfterTool hook, with the hooks
--- system turned on; Codex: `notify`, run at the end of each turn with the event as its
--- last argument) and its MCP servers, merged where an agent keeps both in one file.
function M.agent_files(r)
  local json = require "foundry.json"
  local files = {}
  local agent = r.agent and r.agent.name
  local hook = r.hooks and r.hooks.post_tool_use
  local servers = mcp_servers(r)
  if agent == "claude" then
    if hook then
      files["~/.claude/settings.json"] = json.encode({
        hooks = { PostToolUse = { { matcher = "*", hooks = { { type = "command", command = NOTIFY .. " || true" } } } } },
      })
    end
    if servers then files["~/.claude.json"] = json.encode({ mcpServers = servers }) end
  elseif agent == "gemini" then
    local settings = {}
    if hook then
      -- Gemini parses a hook's stdout as JSON: it gets an empty object
      settings.tools = { enableHooks = true }
      settings.hooks = { AfterTool = { { matcher = "*", hooks = { { name = "foundry-notify", type = "command",
        command = NOTIFY .. "; echo '{}'" } } } } }
    end
    if servers then settings.mcpServers = servers end
    if next(settings) then files["~/.gemini/settings.json"] = json.encode(settings) end
  elseif agent == "codex" then
    local lines = {}
    if hook then
      -- top-level keys come before the tables; JSON arrays of strings are TOML arrays
      lines[#lines + 1] = "notify = " .. json.encode({ "/bin/sh", "-c",
        "printf '%s' \"$1\" | " .. NOTIFY .. " || true", "foundry-notify" })
      lines[#lines + 1] = ""
    end
    for _, name in ipairs(util.keys(servers or {})) do
      local e = servers[name]
      lines[#lines + 1] = "[mcp_servers." .. name .. "]"
      if e.command then lines[#lines + 1] = "command = " .. json.encode(e.command) end
      if e.args then lines[#lines + 1] = "args = " .. json.encode(e.args) end
      if e.url then lines[#lines + 1] = "url = " .. json.encode(e.url) end
      for _, k in ipairs(util.keys(e.env or {})) do
        lines[#lines + 1] = "env." .. k .. " = " .. json.encode(e.env[k])
      end
      lines[#lines + 1] = ""
    end
    if #lines > 0 then files["~/.codex/config.toml"] = table.concat(lines, "\n") end
  elseif servers then
    files["~/.config/foundry/mcp.json"] = json.encode({ mcpServers = servers })
  end
  return files
end

-- Run a preset's commands (shell strings, or functions given sb and ctx) in order.
local function run_commands(sb, ctx, list, what)
  for i, c in ipairs(list) do
    if type(c) == "function" then
      c(sb, ctx)
    else
      ctx.note(what .. ": " .. c)
      sb:sh(c, { what = string.format("%s[%d] '%s'", what, i, c) })
    end
  end
end

--- The default pipeline (fresh tables each call). Implementations live with the
--- sandbox (foundry.sandbox); see docs/presets.md for what each stage does.
function M.default()
  local sandbox = require "foundry.sandbox"
  return {
    { name = "provision", run = sandbox.stage_provision, undo = sandbox.undo_provision,
      description = "workspace, run directory, container" },
    { name = "system", description = "the home directory, user and tools",
      run = function(sb, ctx)
        local r = ctx.spec
        local files = home_files(sb, r)
        local out = sb:write_files(files, [[
          id -u
          for t in git tmux bash; do command -v $t >/dev/null 2>&1 && printf '%s ' $t; done; echo
        ]]).stdout
        local uid, tools = out:match("^(%d+)\n([^\n]*)")
        if tonumber(uid) ~= sandbox.UID then
          errors.raise("sandbox.bad_user", "processes run as uid " .. tostring(uid) .. ", not " .. sandbox.UID)
        end
        local have = {}
        for t in (tools or ""):gmatch("%S+") do have[t] = true end
        sb:_set_data("tools", have)
        if not have.git then ctx.note("the image has no git: the agent cannot commit") end
        if not have.tmux then ctx.note("the image has no tmux: sessions end when you detach") end
      end },
    { name = "auth", description = "credentials for the proxy (vault)",
      run = function(sb, ctx)
        local r = ctx.spec
        if r.network == "none" then return ctx.skip("network none: nothing can leave the sandbox") end
        if next(r.credentials or {}) == nil then return ctx.skip("no credentials configured") end
        local ok, vault = pcall(require, "foundry.vault")
        if not ok or type(vault) ~= "table" or not vault.check then
          return ctx.skip("vault not available")
        end
        -- every secret must be there (checked without unlocking: no secret enters this
        -- process); the daemon's proxy swaps the placeholders for them
        vault.check(r.credentials)
        -- the placeholders and vault references were recorded in provision (the
        -- container's environment is fixed when it is created); the daemon reads the
        -- real values from the vault when it registers the sandbox
        local n = 0
        for _ in pairs(sb.data.secret_refs or {}) do n = n + 1 end
        ctx.note(string.format("%d secret%s held by the host proxy", n, n == 1 and "" or "s"))
      end },
    { name = "agent-config", description = "the agent's settings and hooks",
      run = function(sb, ctx)
        local r = ctx.spec
        local files = M.agent_files(r)
        for path, content in pairs(r.files or {}) do files[path] = content end
        if next(files) == nil then return ctx.skip("nothing to configure for " .. tostring(r.agent.name)) end
        sb:write_files(files)
      end },
    { name = "workspace", description = "the work tree inside the sandbox, copies",
      run = function(sb, ctx)
        local r = ctx.spec
        for _, m in ipairs(r.copy or {}) do sandbox.copy_in(sb, m.source, m.target) end
        if not (sb.data.tools or {}).git then return ctx.skip("the image has no git") end
        local out = sb:sh("git -C /workspace rev-parse --abbrev-ref HEAD && test -w /workspace" ..
          (r.workdir and (" && test -d " .. util.shell_quote(sb:cwd())) or ""), { what = "workspace check", workdir = "/" }).stdout
        local branch = util.trim(out)
        if sb.branch and branch ~= sb.branch then
          errors.raise("sandbox.workspace", "the work tree is on " .. branch .. ", expected " .. sb.branch)
        end
      end },
    { name = "deps", description = "the preset's dependency commands",
      run = function(sb, ctx)
        local list = ctx.spec.deps or {}
        if #list == 0 then return ctx.skip("no deps configured") end
        run_commands(sb, ctx, list, "deps")
      end },
    { name = "mcp", description = "MCP servers for the agent",
      run = function(sb, ctx)
        if not mcp_servers(ctx.spec) then return ctx.skip("no MCP servers configured") end
        -- the agent's files hold them (written with its hooks by agent-config; again here,
        -- the same content, so a stage list without agent-config still gets them)
        sb:write_files(M.agent_files(ctx.spec))
      end },
    { name = "customize", description = "the preset's setup commands",
      run = function(sb, ctx)
        local list = ctx.spec.setup or {}
        if #list == 0 then return ctx.skip("no setup configured") end
        run_commands(sb, ctx, list, "setup")
      end },
    { name = "health", description = "the sandbox answers, as locked down as it should be",
      run = function(sb, ctx)
        local out = sb:sh([[
          test "$(id -u)" = 1000 || { echo "uid $(id -u)"; exit 1; }
          test -w /workspace || { echo "/workspace is not writable"; exit 1; }
          if touch /.foundry-root-check 2>/dev/null; then echo "the root filesystem is writable"; exit 1; fi
          tr '\0' ' ' < /proc/1/cmdline
        ]], { what = "health check", workdir = "/" }).stdout
        if not out:find("foundry-shim", 1, true) then
          errors.raise("sandbox.unhealthy", "PID 1 is not foundry-shim: " .. util.trim(out))
        end
        run_commands(sb, ctx, ctx.spec.health or {}, "health")
      end },
    { name = "ready", description = "recorded as running; the daemon told",
      run = function(sb, ctx)
        sb:_update({ state = "running" })
        local ok, registered, why = pcall(sandbox.register, sb)
        if not ok then
          ctx.note("proxy registration failed: " .. errors.message(registered))
        elseif not registered then
          ctx.note("no proxy: " .. tostring(why))
        end
      end,
      undo = function(sb) sandbox.unregister(sb.name) end },
  }
end

-- ------------------------------------------------------------------ running

local SIGNALS = { "sigint", "sigterm", "sighup" }

--- Run the stages for `sb` (any table; `sb.name` labels events). `ctx` is shared by the
--- stages; `ctx.skip`, `ctx.shield`, `ctx.note` and `ctx.interrupted` are set here.
---
--- `opts`: `reporter` (from M.reporter; closed at the end), `on_event(ev)` (also called
--- for every event, e.g. to store it), `signals` (true: SIGINT/SIGTERM/SIGHUP interrupt the
--- pipeline and roll it back instead of killing the process).
---
--- Returns the list of `{name=, status="done"|"skip", ms=, reason=}`. On failure the
--- completed stages are undone in reverse and the stage's error is raised with
--- `err.stage` set and the message prefixed with the stage name; an interrupt raises
--- `{code="interrupted"}`.
function M.run(list, sb, ctx, opts)
  opts = opts or {}
  ctx = ctx or {}
  local report = opts.reporter or M.reporter("none")
  local label = sb and sb.name
  local function emit(ev)
    ev.sandbox = label
    local sec, usec = uv.gettimeofday()
    ev.ts = sec * 1000 + usec // 1000
    local ok, e = pcall(report.event, report, ev)
    if not ok then io.stderr:write("foundry: progress: ", errors.message(e), "\n") end
    if opts.on_event then
      ok, e = pcall(opts.on_event, ev)
      if not ok then io.stderr:write("foundry: event: ", errors.message(e), "\n") end
    end
  end

  local shields = {}
  local current, current_name, interrupted
  ctx.skip = M.skip
  ctx.interrupted = false
  ctx.shield = function(fn, ...)
    local t = task.spawn(fn, ...)
    t.name = "shield " .. tostring(current_name)
    shields[#shields + 1] = t
    return t:join()
  end
  ctx.note = function(message)
    emit({ stage = current_name, event = "note", message = tostring(message) })
  end

  local sigs = {}
  if opts.signals then
    for _, name in ipairs(SIGNALS) do
      local h = uv.new_signal()
      h:start(name, function(signame)
        if interrupted then
          io.stderr:write("\nfoundry: still rolling back; wait for it to finish (or 'foundry prune' later)\n")
          return
        end
        interrupted = signame
        ctx.interrupted = signame
        if current then current:cancel() end
      end)
      sigs[#sigs + 1] = h
    end
  end
  local function finish()
    for _, h in ipairs(sigs) do if not h:is_closing() then h:close() end end
    sigs = {}
    pcall(report.close, report)
  end

  local results, done = {}, {}
  local failure, failed_stage
  local ok_all, perr = pcall(function()
    for _, st in ipairs(list) do
      if interrupted then break end
      current_name = st.name
      emit({ stage = st.name, event = "start" })
      local t0 = now_ms()
      current = task.spawn(function() return st.run(sb, ctx) end)
      current.name = "stage " .. st.name
      local ok, res = pcall(current.join, current)
      local t = current
      current = nil
      local ms = math.floor(now_ms() - t0 + 0.5)
      if not ok and t:status() ~= "done" and t:status() ~= "failed" then
        -- we were cancelled ourselves while joining: stop the stage and let it finish
        t:cancel()
        pcall(t.join, t)
      end
      if ok then
        if is_skip(res) then
          emit({ stage = st.name, event = "skip", ms = ms, reason = res.reason })
          results[#results + 1] = { name = st.name, status = "skip", ms = ms, reason = res.reason }
        else
          emit({ stage = st.name, event = "done", ms = ms })
          results[#results + 1] = { name = st.name, status = "done", ms = ms }
        end
        done[#done + 1] = st
      else
        if interrupted and errors.is(res, "cancelled") then
          res = errors.new("interrupted", string.format("interrupted (%s) during stage '%s'",
            interrupted:upper(), st.name))
        end
        failure, failed_stage = res, st
        emit({ stage = st.name, event = "fail", ms = ms, error = err_fields(res) })
        return
      end
    end
  end)
  if not ok_all then failure = failure or perr end
  if not failure and interrupted then
    failure = errors.new("interrupted", string.format("interrupted (%s)", interrupted:upper()))
  end
  if not failure then
    for _, t in ipairs(shields) do pcall(t.join, t) end
    finish()
    return results
  end

  -- Roll back: wait for shielded work, then undo the failed stage and every completed one.
  for _, t in ipairs(shields) do pcall(t.join, t) end
  local undo_errors = {}
  local todo = {}
  for _, st in ipairs(done) do todo[#todo + 1] = st end
  if failed_stage then todo[#todo + 1] = failed_stage end
  ctx.failed = failure
  for i = #todo, 1, -1 do
    local st = todo[i]
    if st.undo then
      current_name = st.name
      local t0 = now_ms()
      local t = task.spawn(function() return st.undo(sb, ctx) end)
      t.name = "undo " .. st.name
      local ok, e = pcall(t.join, t)
      local ms = math.floor(now_ms() - t0 + 0.5)
      if ok then
        emit({ stage = st.name, event = "undo", ms = ms })
      else
        undo_errors[#undo_errors + 1] = st.name .. ": " .. errors.message(e)
        emit({ stage = st.name, event = "undo_fail", ms = ms, error = err_fields(e) })
      end
    end
  end
  finish()

  local err
  if errors.is(failure) then
    err = util.copy(failure)
    setmetatable(err, errors.mt)
  else
    err = errors.new("stage.failed", errors.message(failure))
  end
  if failed_stage and err.code ~= "interrupted" then
    err.message = string.format("stage '%s' failed: %s", failed_stage.name, err.message or err.code)
  end
  err.stage = failed_stage and failed_stage.name or nil
  err.cause = failure
  if #undo_errors > 0 then
    err.undo_errors = undo_errors
    err.hint = "rollback was incomplete (" .. table.concat(undo_errors, "; ") ..
      "): run 'foundry prune' to remove what is left"
  end
  error(err, 0)
end

return M
