--- Encrypted secrets: one vault file per user (`foundry.paths.vault()`), each secret
--- AES-256-GCM under a data key that a passphrase (scrypt) or a key file unlocks.
---
---   local vault = require "foundry.vault"
---   local v = vault.unlock()              -- FOUNDRY_VAULT_KEYFILE, FOUNDRY_VAULT_PASSPHRASE or a prompt
---   v:set("anthropic", key)
---   local key = v:get("anthropic")
---   v:lock()                              -- wipes the keys held in memory
---
--- Presets name secrets as "vault:NAME"; `vault.resolve("vault:NAME")` returns the value
--- and `vault.check(refs)` fails early, without a key, when one is missing.
---
--- Unlocking runs scrypt on the libuv thread pool (the calling task waits, the loop does
--- not), so `unlock`, `init`, `set`, `rm` and `rekey` must run in a task; `get`, `list`
--- and `has` are synchronous (they re-read the file only when another process changed it).
--- Values returned to Lua are ordinary strings: Lua cannot wipe them. Keys, and values
--- while the C side holds them, live in locked memory that is wiped after use.
local V = require "foundry._vault"
local errors = require "foundry.errors"
local paths = require "foundry.paths"

local M = {}

M.ENV_PASSPHRASE = "FOUNDRY_VAULT_PASSPHRASE"
M.ENV_KEYFILE = "FOUNDRY_VAULT_KEYFILE"
M.ENV_NEW_PASSPHRASE = "FOUNDRY_VAULT_NEW_PASSPHRASE"

--- Where the vault lives (honours FOUNDRY_HOME and XDG_DATA_HOME).
function M.path() return paths.vault() end

local function getenv(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

local function check_opts(fname, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(fname .. ": expected a table of options, got " .. type(opts), 3) end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for a in pairs(allowed) do names[#names + 1] = a end
      local near = require("foundry.util").did_you_mean(tostring(k), names)
      error(fname .. ": unknown option '" .. tostring(k) .. "'" ..
        (near and (" (did you mean '" .. near .. "'?)") or ""), 3)
    end
  end
  return opts
end

local function missing(name, path)
  errors.raise("vault.missing", "secret '" .. name .. "' is not in the vault (" .. path .. ")",
    "set it with: foundry vault set " .. name, { name = name, exit = 3 })
end

-- Every unlocked C handle in this process, so vault.lock() can wipe them all.
local live = setmetatable({}, { __mode = "k" })

-- Hook "which presets use this secret": fn(name) -> list of preset names.
local usage_fn

---@class Vault
---@field path string
local Vault = {}
Vault.__index = Vault

function Vault:__tostring()
  local h = rawget(self, "_h")
  return string.format("foundry.vault (%s, %s)", self.path, (h and not h:locked()) and "unlocked" or "locked")
end

function Vault:__close() self:lock() end

--- The header and the names, sizes and dates of the secrets: readable without a key.
---@return {version: integer, kdf: string, generation: integer, entries: table[]}
function Vault:info() return V.info(self.path) end

--- True when keys are held in memory.
function Vault:unlocked()
  local h = rawget(self, "_h")
  return h ~= nil and not h:locked()
end

-- A prompt is possible: standard input is a terminal (so never in a detached daemon) and
-- there is a controlling terminal to read the passphrase from.
-- `prompt=true` (the CLI) only needs the controlling terminal, so a value can come on a
-- pipe while the passphrase is typed.
local function interactive(prompt)
  if prompt == false then return false end
  if prompt ~= true and require("luv").guess_handle(0) ~= "tty" then return false end
  return V.has_tty()
end

-- How to unlock, from options, then the environment, then a terminal prompt.
local function unlock_how(path, opts)
  local info = V.info(path)
  if opts.passphrase then return { passphrase = opts.passphrase } end
  if opts.key_file then return { key_file = opts.key_file } end
  if info.kdf == "keyfile" then
    local kf = getenv(M.ENV_KEYFILE)
    if kf then return { key_file = kf } end
    errors.raise("vault.locked", "the vault " .. path .. " is locked with a key file",
      "give its path: --key-file PATH or FOUNDRY_VAULT_KEYFILE")
  end
  if getenv(M.ENV_PASSPHRASE) then return { env = M.ENV_PASSPHRASE } end
  if interactive(opts.prompt) then return { prompt = "Vault passphrase: " } end
  errors.raise("vault.locked", "the vault " .. path .. " is locked and there is no passphrase",
    "set FOUNDRY_VAULT_PASSPHRASE, use a key file (--key-file), or run on a terminal")
end

--- Unlock with `{passphrase=}` or `{key_file=}`; with neither, FOUNDRY_VAULT_KEYFILE (for a
--- key-file vault), FOUNDRY_VAULT_PASSPHRASE (read once, then wiped from this process's
--- environment) or a prompt on the terminal when standard input is one (`prompt=true`:
--- whenever there is a controlling terminal; `prompt=false`: never). Raises
--- `vault.wrong_passphrase`, `vault.wrong_key_file`, `vault.locked`, ... Returns self.
function Vault:unlock(opts)
  opts = check_opts("vault:unlock", opts, { passphrase = true, key_file = true, prompt = true })
  if self:unlocked() then return self end
  local h = V.unlock(self.path, unlock_how(self.path, opts))
  self._h = h
  live[h] = true
  return self
end

local function handle(self)
  if not self:unlocked() then
    -- Unlocking waits for scrypt on the thread pool: only a task can wait.
    local task = require("foundry._task")
    if not task.current() or not coroutine.isyieldable() then
      errors.raise("vault.locked", "the vault " .. self.path .. " is locked",
        "unlock it first, from a task: vault.default():unlock()")
    end
    self:unlock()
  end
  return self._h
end

--- The value of secret `name`; raises `vault.missing` naming it and the command to set it.
---@param name string
---@return string
function Vault:get(name)
  if type(name) ~= "string" then error("vault:get: name: expected string, got " .. type(name), 2) end
  local h = handle(self)
  local ok, v = pcall(h.get, h, name)
  if not ok then
    if errors.is(v, "vault.missing") then missing(name, self.path) end
    error(v, 0)
  end
  return v
end

--- True when the vault holds `name` (no key needed).
function Vault:has(name)
  if self:unlocked() then return self._h:has(name) end
  for _, e in ipairs(V.info(self.path).entries) do
    if e.name == name then return true end
  end
  return false
end

--- Store `value` as `name` (replacing it); returns true when it is new. Another process
--- writing at the same time is serialised by a lock: both changes are kept.
---@param name string
---@param value string
---@return boolean created
function Vault:set(name, value)
  if type(name) ~= "string" then error("vault:set: name: expected string, got " .. type(name), 2) end
  if type(value) ~= "string" then error("vault:set: value: expected string, got " .. type(value), 2) end
  if value == "" then errors.raise("vault.invalid", "refusing to store an empty value for " .. name) end
  return handle(self):set(name, value)
end

--- Remove secret `name`; raises `vault.missing` when there is none.
function Vault:rm(name)
  if type(name) ~= "string" then error("vault:rm: name: expected string, got " .. type(name), 2) end
  local h = handle(self)
  local ok, err = pcall(h.rm, h, name)
  if not ok then
    if errors.is(err, "vault.missing") then missing(name, self.path) end
    error(err, 0)
  end
end

--- Names, sizes and dates (unix seconds) of every secret, sorted by name; never values.
--- Works locked. With a usage hook set (`vault.set_usage`), each entry has `used_by`.
---@return {name: string, size: integer, created: integer, updated: integer, used_by?: string[]}[]
function Vault:list()
  local entries = self:unlocked() and self._h:list() or V.info(self.path).entries
  if usage_fn then
    for _, e in ipairs(entries) do e.used_by = usage_fn(e.name) end
  end
  return entries
end

-- The new key for init and rekey: options, then the environment, then a prompt (twice).
local function new_how(opts, env_name, prompt)
  if opts.passphrase then return { passphrase = opts.passphrase } end
  if opts.key_file then
    local fs = require "foundry.fs"
    if not fs.stat(opts.key_file) then V.make_key_file(opts.key_file) end
    return { key_file = opts.key_file }
  end
  if getenv(env_name) then return { env = env_name } end
  if interactive(opts.prompt) then return { prompt = prompt, confirm = true } end
  errors.raise("vault.locked", "no passphrase for the vault",
    "set " .. env_name .. ", use a key file (--key-file), or run on a terminal")
end

--- A new passphrase (or key file) and a new data key; every secret re-encrypted. Options:
--- `passphrase`, `key_file` (created, mode 0600, when missing), `kdf` ({log2n=, r=, p=});
--- without them FOUNDRY_VAULT_NEW_PASSPHRASE or a prompt.
function Vault:rekey(opts)
  opts = check_opts("vault:rekey", opts, { passphrase = true, key_file = true, kdf = true, prompt = true })
  local h = handle(self)
  h:rekey(new_how(opts, M.ENV_NEW_PASSPHRASE, "New vault passphrase: "), opts.kdf)
end

--- A redactor (`foundry.redact`) over every secret in the vault, built in C without
--- copying values into Lua.
function Vault:redactor(shapes)
  return handle(self):redactor(shapes ~= false)
end

--- Wipe the keys held in memory; the next get/set unlocks again.
function Vault:lock()
  local h = rawget(self, "_h")
  if h then h:lock(); live[h] = nil end
  self._h = nil
end

Vault.close = Vault.lock

local function new_vault(path)
  return setmetatable({ path = path }, Vault)
end

--- The vault at `opts.path` (default: `vault.path()`), still locked: `list`, `has` and
--- `info` work without a key. Raises `vault.not_found` (with the command to create it),
--- `vault.permissions`, `vault.truncated`, `vault.corrupt`, `vault.version`, ...
---@return Vault
function M.open(opts)
  opts = check_opts("vault.open", opts, { path = true })
  local path = opts.path or M.path()
  V.info(path) -- refuse a missing, damaged or exposed file now
  return new_vault(path)
end

--- `vault.open` + `:unlock`: options `path`, `passphrase`, `key_file`, `prompt`.
---@return Vault
function M.unlock(opts)
  opts = check_opts("vault.unlock", opts, { path = true, passphrase = true, key_file = true, prompt = true })
  local v = M.open({ path = opts.path })
  return v:unlock({ passphrase = opts.passphrase, key_file = opts.key_file, prompt = opts.prompt })
end

--- True when a vault file exists at `path` (default: `vault.path()`).
function M.exists(path)
  return require("luv").fs_lstat(path or M.path()) ~= nil
end

--- Create a vault; returns it unlocked. Options: `path`, `passphrase` (at least 8
--- characters) or `key_file` (created with 32 random bytes, mode 0600, when missing),
--- `kdf` ({log2n=, r=, p=}; default scrypt N=2^16, r=8, p=1). Without a passphrase or key
--- file: FOUNDRY_VAULT_KEYFILE, FOUNDRY_VAULT_PASSPHRASE, or a prompt (twice).
---@return Vault
function M.init(opts)
  opts = check_opts("vault.init", opts, { path = true, passphrase = true, key_file = true, kdf = true, prompt = true })
  local path = opts.path or M.path()
  if M.exists(path) then
    errors.raise("vault.exists", "a vault already exists at " .. path,
      "change its passphrase with: foundry vault rekey")
  end
  paths.ensure(path:match("^(.*)/[^/]*$") or ".")
  local o = opts
  if not o.passphrase and not o.key_file and getenv(M.ENV_KEYFILE) then
    o = { key_file = getenv(M.ENV_KEYFILE), kdf = opts.kdf }
  end
  local h = V.create(path, new_how(o, M.ENV_PASSPHRASE, "New vault passphrase: "), opts.kdf)
  local v = new_vault(path)
  v._h = h
  live[h] = true
  return v
end

local default_vault

--- The process's vault at `vault.path()` (opened once; unlocked on first use).
---@return Vault
function M.default()
  local path = M.path()
  if not default_vault or default_vault.path ~= path then
    default_vault = M.open({ path = path })
  end
  return default_vault
end

--- `vault.default():get(name)`: the daemon unlocks once and reads secrets through this.
function M.get(name) return M.default():get(name) end

--- Wipe every key this process holds (every unlocked vault). The daemon calls this when
--- told `foundry vault lock`.
function M.lock()
  for h in pairs(live) do h:lock() end
  live = setmetatable({}, { __mode = "k" })
  if default_vault then default_vault._h = nil end
end

--- The secret name in a "vault:NAME" reference, or nil.
function M.ref_name(ref)
  if type(ref) ~= "string" then return nil end
  return ref:match("^vault:(.+)$")
end

--- Resolve a preset value: "vault:NAME" becomes the secret (from `v`, default the
--- process's vault); anything else is returned as is. Raises `vault.missing`.
function M.resolve(ref, v)
  local name = M.ref_name(ref)
  if not name then return ref end
  return (v or M.default()):get(name)
end

--- Every "vault:NAME" name in a value (a string or a nested table), sorted, unique.
function M.refs(value)
  local set, out = {}, {}
  local function walk(x, depth)
    if depth > 32 then return end
    if type(x) == "string" then
      local n = M.ref_name(x)
      if n then set[n] = true end
    elseif type(x) == "table" then
      for _, y in pairs(x) do walk(y, depth + 1) end
    end
  end
  walk(value, 0)
  for n in pairs(set) do out[#out + 1] = n end
  table.sort(out)
  return out
end

--- Fail early, without a key, when `value` (a reference, or a table such as a preset's
--- credentials) names a secret the vault does not hold: raises `vault.missing` for the
--- first one, or `vault.not_found` when there is no vault at all.
function M.check(value, v)
  local names = M.refs(value)
  if #names == 0 then return end
  v = v or M.default()
  local have = {}
  for _, e in ipairs(v:list()) do have[e.name] = true end
  for _, n in ipairs(names) do
    if not have[n] then missing(n, v.path) end
  end
end

--- Set the "which presets use this secret" hook for `ls`: fn(name) -> {preset names}.
--- The preset library fills this in; until then `used_by` is absent.
function M.set_usage(fn) usage_fn = fn end

--- Make this process undumpable (no core dumps, no ptrace or /proc/<pid>/mem from other
--- processes of the user). The process that keeps the vault unlocked (the daemon) calls it
--- at start; the vault commands call it too.
function M.protect_process() return V.protect_process() end

--- The default key derivation parameters ({kdf="scrypt", log2n=, r=, p=}).
function M.kdf_default() return V.kdf_default() end

return M
