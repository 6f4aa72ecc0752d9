--- The console's Terminal tab: a WebSocket joined to a TTY `docker exec` in the sandbox.
---
--- Modes: "agent" attaches to the agent's tmux session "main" (the one `foundry attach`
--- uses; made, running the agent, when missing) when the image has tmux; "shell" is a
--- login shell of its own. Browser -> sandbox: binary messages are keystrokes; text
--- messages are JSON controls: {"type":"resize","rows":R,"cols":C} and {"type":"input",
--- "data":"..."}. Sandbox -> browser: binary messages, the terminal's output after the
--- redaction engine, and a final text message {"type":"exit","code":N} when the process
--- ends.
---
--- The redaction stream holds back output that could be the beginning of a secret until
--- the next bytes decide. A terminal cannot wait for ever, so what is held is shown after
--- a quiet period: 40 ms when it is a few bytes (a prompt ending in "sk-" must not lag),
--- 2 s once it is `HOLD_BYTES` or more — by then it is most likely a secret being printed
--- slowly, and the rest will come. A secret printed in two parts more than 2 s apart, the
--- first under 8 bytes long, is not caught.
local task = require "foundry._task"
local errors = require "foundry.errors"
local json = require "foundry.json"
local util = require "foundry.util"

local M = {}

--- How long output the redactor holds back may wait before it is shown anyway: short
--- holds, and holds of HOLD_BYTES or more.
M.FLUSH_MS = 40
M.HOLD_MS = 2000
M.HOLD_BYTES = 8

local function clamp(n, lo, hi, default)
  n = math.tointeger(tonumber(n))
  if not n then return default end
  return math.max(lo, math.min(hi, n))
end

--- The command for `mode` in sandbox `sb`.
function M.argv(sb, mode)
  local command = (sb.spec.agent and sb.spec.agent.command) or { "bash", "-l" }
  local tools = sb.data.tools or {}
  local argv = {}
  if mode == "shell" then
    argv = tools.bash and { "bash", "-l" } or { "sh", "-l" }
  elseif tools.tmux and sb.spec.tmux ~= false then
    argv = { "tmux", "new-session", "-A", "-s", "main", "-c", sb:cwd() }
    for _, a in ipairs(command) do argv[#argv + 1] = a end
  else
    for _, a in ipairs(command) do argv[#argv + 1] = a end
  end
  return argv
end

--- Run the terminal for `ws` in sandbox `sb` until either side ends. `opts`: mode,
--- rows, cols, log(level, msg).
function M.bridge(ws, sb, opts)
  opts = opts or {}
  local rows, cols = clamp(opts.rows, 2, 500, 24), clamp(opts.cols, 10, 1000, 80)
  local c = sb:container()
  if not c or sb:live_state() ~= "running" then
    ws:send(json.encode({ type = "error", message = "the sandbox is not running" }))
    ws:close(1011, "not running")
    return
  end
  local argv = M.argv(sb, opts.mode)
  local env = util.copy(sb:env())
  env.TERM = "xterm-256color"
  env.COLORTERM = "truecolor"
  argv.tty, argv.env, argv.user, argv.workdir = true, env, "1000:1000", sb:cwd()
  argv.height, argv.width = rows, cols
  local ex = c:exec_stream(argv)
  pcall(ex.resize, ex, rows, cols)
  local stream = require("foundry.redact").global():stream()

  local reader = task.spawn(function()
    while true do
      local held = stream:pending()
      local ok, chunk = pcall(ex.read, ex, held >= M.HOLD_BYTES and M.HOLD_MS or held > 0 and M.FLUSH_MS or nil)
      if not ok then
        if errors.is(chunk, "timeout") then
          local out = stream:flush()
          if out ~= "" and not ws:send(out, "binary") then return end
        elseif errors.is(chunk, "cancelled") then
          error(chunk, 0)
        else
          break -- the engine went away: end the session
        end
      elseif chunk == nil then
        break
      else
        local out = stream:push(chunk)
        if out ~= "" and not ws:send(out, "binary") then return end
      end
    end
    local rest = stream:finish()
    if rest ~= "" then ws:send(rest, "binary") end
    local iok, info = pcall(ex.inspect, ex)
    ws:send(json.encode({ type = "exit", code = iok and info.ExitCode or json.null }))
    ws:close(1000, "exited")
  end)
  reader.name = "terminal output " .. sb.name

  local ok, err = pcall(function()
    while true do
      local m = ws:recv()
      if not m then break end
      if m.op == "binary" then
        ex:write(m.data)
      else
        local dok, msg = pcall(json.decode, m.data)
        if dok and type(msg) == "table" then
          if msg.type == "resize" then
            local r, cl = clamp(msg.rows, 2, 500, nil), clamp(msg.cols, 10, 1000, nil)
            if r and cl then pcall(ex.resize, ex, r, cl) end
          elseif msg.type == "input" and type(msg.data) == "string" then
            ex:write(msg.data)
          end
        end
      end
    end
  end)
  pcall(ex.close, ex)
  if reader:status() ~= "done" and reader:status() ~= "failed" then reader:cancel() end
  pcall(reader.join, reader)
  stream:close()
  if not ws.closed then ws:close(1000, "closed") end
  if not ok and errors.is(err, "cancelled") then error(err, 0) end
  if not ok and opts.log then opts.log("warn", "terminal " .. sb.name .. ": " .. errors.message(err)) end
end

return M
