--- foundry vault init|set|get|ls|rm|rekey|lock
local errors = require "foundry.errors"
local json = require "foundry.json"
local vault = require "foundry.vault"
local uv = require "luv"

local function out_json(v) io.stdout:write(json.encode(v), "\n") end

local function date(t) return t and os.date("%Y-%m-%d %H:%M", t) or "" end

local function need_name(args, sub)
  local name = args[2]
  if not name then
    errors.raise("usage", "missing NAME: foundry vault " .. sub .. " NAME", "see 'foundry vault --help'")
  end
  return name
end

-- Unlock for a command: --key-file, then the environment, then the terminal.
local function unlock(opts)
  vault.protect_process()
  return vault.unlock({ key_file = opts["key-file"], prompt = true })
end

-- The value for `set`: hidden prompt on a terminal, else all of standard input minus one
-- trailing newline. Never argv: other users see argv in ps.
local function read_value(name)
  local value
  if uv.guess_handle(0) == "tty" then
    value = require("foundry._vault").read_secret("Value for " .. name .. " (input hidden): ")
  else
    value = io.stdin:read("a") or ""
    value = value:gsub("\r?\n$", "", 1)
  end
  if value == "" then
    errors.raise("vault.invalid", "no value for " .. name .. " (empty input)",
      "type it at the prompt, or pipe it: printf %s \"$KEY\" | foundry vault set " .. name)
  end
  return value
end

local sub = {}

function sub.init(opts)
  local path = vault.path()
  vault.protect_process()
  local v = vault.init({ key_file = opts["key-file"], prompt = true })
  local info = v:info()
  v:lock()
  if opts.json then
    out_json({ path = path, kdf = info.kdf, key_file = opts["key-file"] or os.getenv(vault.ENV_KEYFILE) })
  else
    io.stdout:write("created vault ", path, info.kdf == "keyfile"
      and (" (unlocked by key file " .. (opts["key-file"] or os.getenv(vault.ENV_KEYFILE)) .. ")")
      or " (passphrase, scrypt)", "\n")
  end
  return 0
end

function sub.set(opts, args)
  local name = need_name(args, "set")
  if args[3] then
    errors.raise("usage", "the value is never taken from the command line (other users can see it in ps)",
      "type it at the prompt, or pipe it: printf %s \"$KEY\" | foundry vault set " .. name)
  end
  local v = unlock(opts)
  local value = read_value(name)
  local created = v:set(name, value)
  v:lock()
  if opts.json then
    out_json({ name = name, size = #value, created = created })
  else
    io.stdout:write(created and "stored " or "replaced ", name, " (", #value, " bytes)\n")
  end
  return 0
end

function sub.get(opts, args)
  local name = need_name(args, "get")
  if not opts.reveal then
    errors.raise("usage", "refusing to print the secret " .. name .. " without --reveal",
      "foundry vault get " .. name .. " --reveal")
  end
  local v = unlock(opts)
  local value = v:get(name)
  v:lock()
  if opts.json then out_json({ name = name, value = value }) else io.stdout:write(value, "\n") end
  return 0
end

function sub.ls(opts)
  local v = vault.open()
  local entries = v:list()
  if opts.json then
    local info = v:info()
    for _, e in ipairs(entries) do
      if e.used_by then e.used_by = json.array(e.used_by) end
    end
    out_json({ path = v.path, kdf = info.kdf, secrets = json.array(entries) })
    return 0
  end
  if #entries == 0 then
    io.stdout:write("no secrets in ", v.path, " (add one: foundry vault set NAME)\n")
    return 0
  end
  local used = false
  for _, e in ipairs(entries) do used = used or e.used_by ~= nil end
  local cols = {
    { "NAME", "name" }, { "SIZE", function(e) return tostring(e.size) end },
    { "CREATED", function(e) return date(e.created) end },
    { "UPDATED", function(e) return date(e.updated) end },
  }
  if used then
    cols[#cols + 1] = { "USED BY", function(e) return table.concat(e.used_by or {}, ", ") end }
  end
  require("foundry.cli._common").table(entries, cols)
  return 0
end

function sub.rm(opts, args)
  local name = need_name(args, "rm")
  local v = unlock(opts)
  v:rm(name)
  v:lock()
  if opts.json then out_json({ name = name, removed = true }) else io.stdout:write("removed ", name, "\n") end
  return 0
end

function sub.rekey(opts)
  local v = unlock(opts)
  v:rekey({ key_file = opts["new-key-file"], prompt = true })
  local info = v:info()
  v:lock()
  if opts.json then
    out_json({ path = v.path, kdf = info.kdf, secrets = #info.entries })
  else
    io.stdout:write("rekeyed ", v.path, " (", #info.entries, " secret", #info.entries == 1 and "" or "s",
      " re-encrypted under a new data key)\n")
  end
  return 0
end

function sub.lock(opts)
  -- This process holds no key; the daemon may. Tell it to wipe its keys.
  local has_client, client = pcall(require, "foundry.daemon_client")
  if not has_client then
    errors.raise("vault.unsupported", "this build cannot reach the daemon (no foundry.daemon_client)")
  end
  local ok, res = pcall(client.call, "lock_vault", {}, { timeout = 5000 })
  local locked, note = true, nil
  if not ok then
    if errors.is(res, "daemon.unreachable") then
      note = "no daemon is running: no process holds the vault unlocked"
    else
      error(res, 0)
    end
  end
  if opts.json then
    out_json({ locked = locked, daemon = ok })
  else
    io.stdout:write(ok and "the daemon wiped its vault keys\n" or (note .. "\n"))
  end
  return 0
end

return {
  summary = "Manage encrypted secrets: init, set, get, ls, rm, rekey, lock",
  usage = "foundry vault init|set NAME|get NAME --reveal|ls|rm NAME|rekey|lock [--key-file PATH] [--json]",
  description = [[
Secrets live in one encrypted file (foundry.paths: $XDG_DATA_HOME/foundry/vault, or under
$FOUNDRY_HOME), mode 0600. Each value is encrypted with AES-256-GCM under a data key; the
data key is unlocked by a passphrase (scrypt) or a key file (mode 0600).

  init            create the vault (new passphrase, typed twice; or --key-file PATH,
                  created with 32 random bytes when missing)
  set NAME        store a secret: typed at a hidden prompt, or read from standard input
                  (one trailing newline dropped) - never from the command line
  get NAME        print a secret; refuses without --reveal
  ls              names, sizes and dates (never values); needs no passphrase
  rm NAME         remove a secret
  rekey           new passphrase (or --new-key-file), new data key, same secrets
  lock            tell the daemon to wipe the keys it holds in memory

Unlocking uses, in order: --key-file, FOUNDRY_VAULT_KEYFILE (key-file vaults),
FOUNDRY_VAULT_PASSPHRASE (wiped from the process environment once read), then a prompt on
the terminal. rekey takes the new passphrase from FOUNDRY_VAULT_NEW_PASSPHRASE or a prompt.
Presets refer to secrets as "vault:NAME". 'foundry auth import' fills the vault from the
credentials already on this machine.]],
  flags = {
    { "json", help = "print the result as JSON" },
    { "reveal", help = "get: really print the secret" },
    { "key-file", type = "string", arg = "PATH", help = "unlock (or, for init, lock) with this key file" },
    { "new-key-file", type = "string", arg = "PATH", help = "rekey: lock with this key file from now on" },
  },
  min_args = 1, max_args = 3,
  order = 40,
  examples = {
    "foundry vault init",
    "foundry vault set anthropic",
    "printf %s \"$OPENAI_API_KEY\" | foundry vault set openai",
    "foundry vault ls",
    "foundry vault get github --reveal",
  },
  run = function(opts, args)
    local name = args[1]
    local fn = sub[name]
    if not fn then
      local names = {}
      for k in pairs(sub) do names[#names + 1] = k end
      table.sort(names)
      local near = require("foundry.util").did_you_mean(name, names)
      errors.raise("usage", "unknown vault command '" .. name .. "'" ..
        (near and (" — did you mean '" .. near .. "'?") or ""),
        "one of: " .. table.concat(names, ", "))
    end
    if name ~= "set" and name ~= "get" and name ~= "rm" and args[2] then
      errors.raise("usage", "unexpected argument '" .. args[2] .. "' for foundry vault " .. name)
    end
    if (name == "get" or name == "rm") and args[3] then
      errors.raise("usage", "unexpected argument '" .. args[3] .. "' for foundry vault " .. name)
    end
    return fn(opts, args)
  end,
}
