--- Redaction: one engine for every output path (daemon log, audit log, sandbox logs,
--- terminal streams, error messages). Secret values become `[REDACTED:NAME]`; well-known
--- token shapes become `[REDACTED:<shape>]` (anthropic_key, openai_key, github_token,
--- github_pat, aws_access_key, slack_token, google_api_key, jwt, bearer).
---
---   local redact = require "foundry.redact"
---   local r = redact.new({ anthropic = key })
---   print(r:apply("sent " .. key))            --> sent [REDACTED:anthropic]
---   local s = r:stream()
---   io.write(s:push(chunk1), s:push(chunk2), s:finish())
---
--- A stream holds back only the bytes that could still begin a secret (a partial match at
--- the end of a chunk), so its output for any chunking equals `apply` of the whole text.
--- Interactive streams may call `:flush()` after a quiet period to show what is held back
--- (a secret split exactly there would then not be caught).
---
--- Structured secrets (a JSON credentials file, an .env file) are also matched by each
--- token-like part (16+ characters of A-Za-z0-9._~+/=- with a letter and a digit).
--- Secrets shorter than 4 bytes are not redacted: they are listed in the second result of
--- `new`.
local R = require "foundry._redact"

local M = {}

--- Shape labels, in matching order.
M.shapes = R.shapes

--- The shortest secret that is redacted.
M.MIN_SECRET = R.MIN_SECRET

---@class Redactor
---@field apply fun(self: Redactor, text: string): string, integer
---@field stream fun(self: Redactor): RedactStream
---@field names fun(self: Redactor): string[]
---@field close fun(self: Redactor)

---@class RedactStream
---@field push fun(self: RedactStream, chunk: string): string, integer
---@field finish fun(self: RedactStream): string, integer
---@field flush fun(self: RedactStream): string, integer
---@field pending fun(self: RedactStream): integer
---@field close fun(self: RedactStream)

--- A redactor over `secrets` ({NAME = value, ...}; may be nil). `opts.shapes=false`
--- (or `opts` = false) turns the token shapes off. Returns the redactor and the names
--- too short to redact.
---@param secrets? table<string, string>
---@param opts? {shapes?: boolean}|boolean
---@return Redactor, string[]
function M.new(secrets, opts)
  if secrets ~= nil and type(secrets) ~= "table" then
    error("redact.new: secrets: expected a table {NAME = value}, got " .. type(secrets), 2)
  end
  local shapes
  if type(opts) == "boolean" then
    shapes = opts
  elseif opts == nil or type(opts) == "table" then
    shapes = not (opts and opts.shapes == false)
  else
    error("redact.new: opts: expected a table, got " .. type(opts), 2)
  end
  return R.new(secrets, shapes)
end

local global

--- The process-wide redactor every output path uses: token shapes only until
--- `set_global` installs one over the loaded secrets (the daemon does, after unlocking:
--- `redact.set_global(vault.default():redactor())`).
---@return Redactor
function M.global()
  if not global then global = R.new(nil, true) end
  return global
end

--- Install `r` as the process-wide redactor (nil: back to shapes only).
function M.set_global(r) global = r end

--- `global():apply(text)`, first result only: the one call for a line of output.
---@param text string
---@return string
function M.text(text)
  return (M.global():apply(tostring(text)))
end

--- A copy of an error value safe to print: the message and hint of an error object,
--- or the string, redacted.
function M.error(err)
  local errors = require "foundry.errors"
  if errors.is(err) then
    local copy = {}
    for k, v in pairs(err) do copy[k] = type(v) == "string" and M.text(v) or v end
    return setmetatable(copy, getmetatable(err))
  end
  return M.text(tostring(err))
end

return M
