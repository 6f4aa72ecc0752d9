--- Error objects: `{code=, message=, hint=}` with a `__tostring`, raised by every
--- Foundry API on a failure of the world. Misuse raises plain errors instead.
local M = {}

local mt = debug.getregistry()["foundry.Error"]
M.mt = mt

--- Make an error object.
---@param code string stable machine-readable code, e.g. "docker.not_found"
---@param message string one line saying what happened
---@param hint? string how to fix it
---@return table
function M.new(code, message, hint, extra)
  local e = setmetatable({ code = code, message = message, hint = hint }, mt)
  if extra then for k, v in pairs(extra) do e[k] = v end end
  return e
end

--- Raise an error object (never returns).
function M.raise(code, message, hint, extra)
  error(M.new(code, message, hint, extra), 0)
end

--- True when `e` is a Foundry error object (and has `code`, if given).
function M.is(e, code)
  return getmetatable(e) == mt and (code == nil or e.code == code)
end

--- Turn luv's "ENOENT: no such file or directory: path" into an error object.
function M.from_uv(what, err, name)
  local msg = tostring(err or "unknown error"):gsub("^%u+: ", "")
  return M.new("io." .. string.lower(name or tostring(err):match("^(%u+):") or "error"),
    what .. ": " .. msg)
end

--- The one-line text of any error value.
function M.message(e)
  if getmetatable(e) == mt then return e.message or e.code end
  return tostring(e)
end

return M
