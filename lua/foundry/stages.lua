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
