--- JSON through lua-cjson: `encode`, `decode` (raising error objects), `null`, `array`.
local cjson = require "cjson"
local errors = require "foundry.errors"

local M = {}
local enc = cjson.new()
enc.encode_empty_table_as_object(true)
enc.encode_escape_forward_slash(false)
enc.decode_array_with_array_mt(true)
enc.encode_invalid_numbers(false)

M.null = cjson.null
M.array_mt = cjson.array_mt

--- Mark a table as an array, so an empty one encodes as `[]`.
function M.array(t) return setmetatable(t or {}, cjson.array_mt) end

--- Encode a value. Raises `json.encode` on functions, cycles, NaN.
function M.encode(v)
  local ok, s = pcall(enc.encode, v)
  if not ok then errors.raise("json.encode", "cannot encode JSON: " .. tostring(s)) end
  return s
end

--- Decode text. Raises `json.decode` with the position on malformed input.
function M.decode(s, what)
  local ok, v = pcall(enc.decode, s)
  if not ok then
    errors.raise("json.decode", (what or "JSON") .. ": " .. tostring(v):gsub("^Expected", "expected"))
  end
  return v
end

return M
