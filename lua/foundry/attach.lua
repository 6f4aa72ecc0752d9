--- Interactive terminals into a sandbox: the engine's hijacked exec stream, the local
--- terminal in raw mode (restored on every way out), window-size changes forwarded, and a
--- detach key (Ctrl-P Ctrl-Q by default). With tmux in the image the session lives on
--- after a detach: attaching again returns to it.
local uv = require "luv"
local task = require "foundry._task"
local errors = require "foundry.errors"
local util = require "foundry.util"

local M = {}

--- Parse "ctrl-p,ctrl-q" (docker's notation) into the bytes to watch for.
function M.parse_keys(spec)
  local out = {}
  for part in tostring(spec):gmatch("[^,]+") do
    local c = part:lower():match("^ctrl%-(.)$")
    if c and c:match("[a-z@%[\\%]%^_]") then
      out[#out + 1] = string.char(c:byte() & 0x1f)
    elseif #part == 1 then
      out[#out + 1] = part
    else
      errors.raise("usage", "detach keys: '" .. part .. "' is not a key (use e.g. ctrl-p,ctrl-q)")
    end
  end
  if #out == 0 then errors.raise("usage", "detach keys: none given") end
  return table.concat(out)
end

--- A filter for input bytes: returns a function(data) -> bytes to forward, detached?.
--- Bytes that may start the detach sequence are held until the next key decides.
function M.detach_filter(keys)
  local held = ""
  return function(data)
    local out = {}
    for i = 1, #data do
      local b = data:sub(i, i)
      local try = held .. b
      if try == keys then
        held = ""
        return table.concat(out), true
      elseif keys:sub(1, #try) == try then
        held = try
      else
        out[#out + 1] = held
        held = ""
        if keys:sub(1, 1) == b then held = b else out[#out + 1] = b end
      end
    end
    return table.concat(out), false
  end
end

--- Attach the terminal to sandbox `sb`. `opts`: `command` (a list; default the agent),
--- `session` (tmux session, default "main"), `tmux` (false: no tmux), `detach_keys`
--- ("ctrl-p,ctrl-q"). Returns the command's exit status, or "detached".
function M.attach(sb, opts)
  opts = opts or {}
  local tty = require "foundry.tty"
  if not tty.isatty(0) or not tty.isatty(1) then
    errors.raise("usage", "attach needs a terminal on standard input and output",
      "from scripts use 'foundry exec NAME CMD...'")
  end
  local keys = M.parse_keys(opts.detach_keys or "ctrl-p,ctrl-q")
  if sb:live_state() ~= "running" then sb:start() end
  local c = sb:container()
  local rows, cols = tty.size(1)
  local command = opts.command or (sb.spec.agent and sb.spec.agent.command) or { "bash", "-l" }
  local tools = sb.data.tools or {}
  local use_tmux = opts.tmux ~= false and sb.spec.tmux ~= false and tools.tmux
  local argv = {}
  if use_tmux then
    argv = { "tmux", "new-session", "-A", "-s", opts.session or "main", "-c", sb:cwd() }
  end
  for _, a in ipairs(command) do argv[#argv + 1] = a end
  local env = util.copy(sb:env())
  env.TERM = os.getenv("TERM") or "xterm-256color"
  if env.TERM == "dumb" then env.TERM = "xterm-256color" end
  argv.tty, argv.env, argv.user, argv.workdir = true, env, "1000:1000", sb:cwd()
  argv.height, argv.width = rows, cols

  local ex = c:exec_stream(argv)
  pcall(ex.resize, ex, rows, cols)

  local filter = M.detach_filter(keys)
  local inbox, waiter = {}, nil
  local detached, input_closed, done = false, false, false
  local function wake()
    if waiter then local w = waiter; waiter = nil; w:resolve() end
  end
  local stdin = uv.new_tty(0, true)
  stdin:read_start(function(err, data)
    if err or not data then
      input_closed = true
    else
      local fwd, hit = filter(data)
      if fwd ~= "" then inbox[#inbox + 1] = fwd end
      if hit then detached = true end
    end
    wake()
  end)
  local writer = task.spawn(function()
    while not done do
      if #inbox == 0 and not detached and not input_closed then
        waiter = task.wait("attach input")
        waiter:await()
      end
      if #inbox > 0 then
        local data = table.concat(inbox)
        inbox = {}
        ex:write(data)
      end
      if detached then ex:close(); return end
      if input_closed then ex:close_write(); return end
    end
  end)
  writer.name = "attach input"
  local resize = tty.on_resize(function(r, w)
    local t = task.spawn(function() pcall(ex.resize, ex, r, w) end)
    t.name = "attach resize"
  end, 1)
  local sigs = {}
  for _, name in ipairs({ "sigterm", "sighup" }) do
    local h = uv.new_signal()
    h:start(name, function() detached = true; wake() end)
    sigs[#sigs + 1] = h
  end

  local ok, err = pcall(tty.with_raw, 0, function()
    while true do
      local chunk = ex:read()
      if not chunk then break end
      io.stdout:write(chunk)
      io.stdout:flush()
    end
  end)
  done = true
  stdin:read_stop()
  stdin:close()
  resize:close()
  for _, h in ipairs(sigs) do h:close() end
  wake()
  if writer:status() ~= "done" and writer:status() ~= "failed" then writer:cancel() end
  pcall(writer.join, writer)
  pcall(ex.close, ex)
  if detached then
    io.stderr:write("\r\n[detached from ", sb.name, use_tmux and "; the session goes on" or "", ": foundry attach ", sb.name, "]\r\n")
    return "detached"
  end
  if not ok and not errors.is(err, "docker.disconnected") then error(err, 0) end
  local iok, info = pcall(ex.inspect, ex)
  return iok and info.ExitCode or 0
end

return M
