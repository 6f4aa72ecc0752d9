--- JSON: `encode` (our own: sorted keys, `json.array` for `[]`), `decode` (lua-cjson),
--- `null`. Both raise error objects on bad input.
local cjson = require "cjson"
local errors = require "foundry.errors"

local M = {}
local dec = cjson.new()
dec.decode_max_depth(200)

M.null = cjson.null
M.array_mt = { __name = "json.array" }

--- Mark a table as an array, so an empty one encodes as `[]`.
function M.array(t) return setmetatable(t or {}, M.array_mt) end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
local function escape_char(c) return escapes[c] or string.format("\\u%04x", c:byte()) end

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', escape_char) .. '"'
end

local encode_value

local function is_array(t)
  if getmetatable(t) == M.array_mt then return true end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
    count = count + 1
  end
  return count == n
end

function encode_value(v, out, depth, pretty, indent)
  local t = type(v)
  if v == nil or v == M.null then
    out[#out + 1] = "null"
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("cannot encode " .. tostring(v)) end
    if math.type(v) == "integer" then
      out[#out + 1] = string.format("%d", v)
    elseif v == math.floor(v) and math.abs(v) < 2 ^ 53 then
      out[#out + 1] = string.format("%d", v)
    else
      out[#out + 1] = string.format("%.17g", v)
    end
  elseif t == "string" then
    out[#out + 1] = encode_string(v)
  elseif t == "table" then
    if depth > 100 then error("nesting too deep (a cycle?)") end
    local nl = pretty and ("\n" .. string.rep("  ", indent + 1)) or ""
    local close_nl = pretty and ("\n" .. string.rep("  ", indent)) or ""
    if is_array(v) then
      if #v == 0 then out[#out + 1] = "[]" return end
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = nl
        encode_value(v[i], out, depth + 1, pretty, indent + 1)
      end
      out[#out + 1] = close_nl .. "]"
    else
      local keys = {}
      for k in pairs(v) do
        local kt = type(k)
        if kt == "string" then keys[#keys + 1] = k
        elseif kt == "number" then keys[#keys + 1] = k
        else error("cannot encode a " .. kt .. " key") end
      end
      if #keys == 0 then out[#out + 1] = "{}" return end
      table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = nl .. encode_string(tostring(k)) .. (pretty and ": " or ":")
        encode_value(v[k], out, depth + 1, pretty, indent + 1)
      end
      out[#out + 1] = close_nl .. "}"
    end
  else
    error("cannot encode a " .. t)
  end
end

--- Encode a value (keys sorted). `opts.pretty` indents. Raises `json.encode` on
--- functions, cycles, NaN.
function M.encode(v, opts)
  local out = {}
  local ok, err = pcall(encode_value, v, out, 0, opts and opts.pretty, 0)
  if not ok then errors.raise("json.encode", "cannot encode JSON: " .. tostring(err):gsub("^.-:%d+: ", "")) end
  return table.concat(out)
end

-- lua-cjson 2.1 decodes every number as a float: give integral values back as integers
-- (JSON does not tell 2 from 2.0; Lua code compares with math.type and formats with %d).
local function integers(v, depth)
  local t = type(v)
  if t == "number" then
    return math.tointeger(v) or v
  elseif t == "table" and depth < 200 then
    for k, x in pairs(v) do
      local tx = type(x)
      if tx == "number" or tx == "table" then v[k] = integers(x, depth + 1) end
    end
  end
  return v
end

--- Decode text (integral numbers come back as integers). Raises `json.decode` on
--- malformed input.
function M.decode(s, what)
  local ok, v = pcall(dec.decode, s)
  if not ok then
    errors.raise("json.decode", (what or "JSON") .. ": " .. tostring(v):gsub("^Expected", "expected"))
  end
  return integers(v, 0)
end

return M
