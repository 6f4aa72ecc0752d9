--- Terminals: raw mode that is always undone, the window size, and resize events.
---
---   tty.with_raw(0, function() ... end)   -- restored on return, error, cancel, exit, crash
---   local w <close> = tty.on_resize(function(rows, cols) ... end)
local native = require "foundry._tty"
local uv = require "luv"

local M = {}

--- True when `fd` is a terminal.
---@param fd integer
function M.isatty(fd) return native.isatty(fd) end

--- The window size of terminal `fd` (default 1, standard output): rows, cols. Falls back
--- to $LINES/$COLUMNS, then 24x80.
---@return integer rows, integer cols
function M.size(fd)
  local rows, cols = native.size(fd or 1)
  if rows then return rows, cols end
  return tonumber(os.getenv("LINES")) or 24, tonumber(os.getenv("COLUMNS")) or 80
end

--- Put terminal `fd` into raw mode (no echo, no line editing, no signals from keys).
--- Prefer `with_raw`. Raises `tty.not_a_tty`.
function M.raw(fd) return native.raw(fd) end

--- Put back the settings saved by `raw` (idempotent). Returns true when it did.
function M.restore() return native.restore() end

--- Run `fn(...)` with terminal `fd` in raw mode; the terminal is restored however `fn`
--- ends (return, error, task cancelled), and by the runtime at exit or on a crash.
function M.with_raw(fd, fn, ...)
  native.raw(fd)
  local _ <close> = setmetatable({}, { __close = function() native.restore() end })
  return fn(...)
end

--- Call `cb(rows, cols)` whenever the window of `fd` (default 1) changes size (SIGWINCH).
--- Returns a handle: `:close()` (also `<close>`) stops it.
function M.on_resize(cb, fd)
  local sig = uv.new_signal()
  sig:start("sigwinch", function()
    local rows, cols = M.size(fd or 1)
    cb(rows, cols)
  end)
  local h = {}
  function h.close()
    if not sig:is_closing() then sig:close() end
  end
  return setmetatable(h, { __close = h.close, __gc = h.close })
end

return M
