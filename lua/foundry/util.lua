--- Small helpers shared by the library.
local M = {}

--- Levenshtein distance (small strings only).
function M.distance(a, b)
  local la, lb = #a, #b
  if la == 0 then return lb end
  if lb == 0 then return la end
  local prev = {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    local cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, lb do
      local cost = ca == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[lb]
end

--- The nearest of `candidates` to `word`, if close enough to be a likely typo.
function M.did_you_mean(word, candidates)
  local best, bestd
  for _, c in ipairs(candidates) do
    local d = M.distance(word, c)
    if not bestd or d < bestd then best, bestd = c, d end
  end
  if best and bestd <= math.max(2, #word // 3) then return best end
end

--- Sorted keys of a table.
function M.keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out, function(a, b) return tostring(a) < tostring(b) end)
  return out
end

--- Shallow copy.
function M.copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

--- Deep copy of plain data.
function M.deepcopy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = M.deepcopy(x) end
  return setmetatable(out, getmetatable(v))
end

--- Quote a string for a POSIX shell.
function M.shell_quote(s)
  s = tostring(s)
  if s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Trim whitespace.
function M.trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

--- Split on a plain separator.
function M.split(s, sep)
  local out, i = {}, 1
  while true do
    local j = s:find(sep, i, true)
    if not j then out[#out + 1] = s:sub(i); break end
    out[#out + 1] = s:sub(i, j - 1)
    i = j + #sep
  end
  return out
end

--- Human-readable duration from milliseconds.
function M.ms(n)
  if n < 1000 then return string.format("%dms", n) end
  if n < 60000 then return string.format("%.1fs", n / 1000) end
  return string.format("%dm%02ds", n // 60000, (n % 60000) // 1000)
end

--- A value as a validation message shows it: 'text', 42, true, table, function.
function M.show_value(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  if type(v) == "table" or type(v) == "function" then return type(v) end
  return tostring(v)
end

--- A key path as configuration errors name it: {"mounts", 2, "source"} -> mounts[2].source
function M.key_path(path)
  local out = {}
  for _, k in ipairs(path) do
    if math.type(k) == "integer" then out[#out + 1] = "[" .. k .. "]"
    elseif type(k) == "string" and k:match("^[%a_][%w_]*$") then out[#out + 1] = (#out > 0 and "." or "") .. k
    else out[#out + 1] = "[" .. string.format("%q", tostring(k)) .. "]" end
  end
  return table.concat(out)
end

--- True when `ref` names a file (it has a "/" or ends in ".lua") rather than a shipped
--- preset or policy by name.
function M.is_path(ref) return ref:find("/", 1, true) ~= nil or ref:match("%.lua$") ~= nil end

--- The line of `src` (Lua source of a table) where the key path `path` (a list of keys)
--- is set, or the line a function `value` was defined on; nil when it cannot tell.
function M.line_of(src, path, value)
  if type(value) == "function" then
    local info = debug.getinfo(value, "S")
    if info and info.linedefined and info.linedefined > 0 then return info.linedefined end
  end
  if not src then return nil end
  local pos, line = 1, nil
  for _, k in ipairs(path) do
    if type(k) == "string" then
      local esc = k:gsub("%p", "%%%0")
      local s = src:find("%f[%w_]" .. esc .. "%f[^%w_]%s*=", pos)
        or src:find("%[%s*[\"']" .. esc .. "[\"']%s*%]%s*=", pos)
      if not s then break end
      pos = s + 1
      local _, n = src:sub(1, s):gsub("\n", "")
      line = n + 1
    end
  end
  return line
end

return M
