--- Small cryptographic primitives (OpenSSL): hashes, MACs, random bytes.
---
---   crypto.sha256(data)            -> 32 raw bytes   (crypto.hex(...) for text)
---   crypto.hmac_sha256(key, data)  -> 32 raw bytes
---   crypto.random_bytes(n)         -> n bytes from the system CSPRNG
---   crypto.token(n)                -> n random bytes as 2n hex characters
---   crypto.equal(a, b)             -> boolean, constant time over the bytes (use it to
---                                     compare MACs and tokens, never ==)
---   crypto.sha256_tuple(tag, ...)   -> hex SHA-256 of tag and the values (nil, numbers,
---                                     strings) framed unambiguously: "|~" for nil, else
---                                     "|<length>:<text>"; numbers as integers when they
---                                     have an integer value (5 and 5.0 alike), else %.17g
local native = require "foundry._crypto"

local M = {}

---@type fun(data: string): string
M.sha256 = native.sha256
---@type fun(key: string, data: string): string
M.hmac_sha256 = native.hmac_sha256
---@type fun(n: integer): string
M.random_bytes = native.random_bytes
---@type fun(a: string, b: string): boolean
M.equal = native.equal
---@type fun(s: string): string
M.hex = native.hex
---@type fun(tag: string, ...: string|number|nil): string
M.sha256_tuple = native.sha256_tuple

--- SHA-256 of data as 64 lowercase hex characters.
---@param data string
---@return string
function M.sha256_hex(data) return native.hex(native.sha256(data)) end

--- A random token: `n` bytes (default 32) as hex.
---@param n? integer
---@return string
function M.token(n) return native.hex(native.random_bytes(n or 32)) end

return M
