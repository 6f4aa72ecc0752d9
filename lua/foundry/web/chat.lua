--- Talking to a sandbox's agent while it works: a message is recorded in the state
--- database (`state.chat`) and typed into the agent's terminal session — the tmux
--- session "main" that `foundry attach` and the console's Terminal share — with
--- `tmux send-keys`. What the agent shows back is read with `tmux capture-pane`.
local errors = require "foundry.errors"
local data = require "foundry.web.data"

local M = {}

--- The tmux session the agent runs in (see foundry.attach).
M.SESSION = "main"
--- The longest message accepted.
M.MAX_TEXT = 16 * 1024

local function has_session(sb)
  if not (sb.data.tools or {}).tmux then
    return false, "the sandbox's image has no tmux, so the agent's session cannot take messages"
  end
  local live = sb:live_state()
  if live ~= "running" then return false, "the sandbox is not running (" .. live .. ")" end
  local r = sb:exec{ "tmux", "has-session", "-t", M.SESSION, timeout = 10000 }
  if not r.ok then
    return false, "no agent session is running: open the Terminal tab (agent) or 'foundry attach " .. sb.name .. "'"
  end
  return true
end

--- Type `text` into the agent's session and press Enter. Returns true, or false and why.
function M.deliver(sb, text)
  local ok, why = has_session(sb)
  if not ok then return false, why end
  -- -l: the text is typed literally (no key names); "--": it may start with "-"
  local r = sb:exec{ "tmux", "send-keys", "-t", M.SESSION, "-l", "--", text, timeout = 10000 }
  if r.ok then r = sb:exec{ "tmux", "send-keys", "-t", M.SESSION, "Enter", timeout = 10000 } end
  if not r.ok then return false, "tmux send-keys failed: " .. (r.stderr:match("[^\n]+") or ("status " .. r.status)) end
  return true
end

--- Record a message from the console's user and deliver it. Returns the stored row.
function M.send(sb, text)
  if type(text) ~= "string" or not text:match("%S") then errors.raise("web.bad_request", "an empty message") end
  if #text > M.MAX_TEXT then errors.raise("web.too_large", "the message is longer than " .. M.MAX_TEXT .. " bytes") end
  text = text:gsub("%s+$", "")
  local state = require "foundry.state"
  local ok, delivered, why = pcall(M.deliver, sb, text)
  if not ok then delivered, why = false, errors.message(delivered) end
  local id = state.chat.add({ sandbox = sb.name, role = "user", text = text,
    data = { delivered = delivered, reason = why, via = "console" } })
  return state.chat.list({ sandbox = sb.name, since_id = id - 1, limit = 1 })[1]
end

--- The agent's screen: the last `lines` lines of its session, redacted.
function M.screen(sb, lines)
  local ok, why = has_session(sb)
  if not ok then return { available = false, reason = why } end
  local r = sb:exec{ "tmux", "capture-pane", "-p", "-J", "-t", M.SESSION, "-S", tostring(-(lines or 200)), timeout = 10000 }
  if not r.ok then return { available = false, reason = "tmux capture-pane failed" } end
  return { available = true, text = data.text((r.stdout:gsub("%s+$", ""))) }
end

return M
