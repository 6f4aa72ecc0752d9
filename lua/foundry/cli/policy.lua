--- foundry policy check|explain|ls|show
local errors = require "foundry.errors"
local json = require "foundry.json"

local SUB = { "check", "explain", "ls", "show", "reload" }

local function out_json(v) io.stdout:write(json.encode(v), "\n") end

-- A policy from FILE, a shipped NAME, or SANDBOX (its recorded policy).
local function find(ref)
  local policy = require "foundry.policy"
  local fs = require "foundry.fs"
  if require("foundry.util").is_path(ref) or fs.stat(ref) then return policy.load(ref) end
  for _, n in ipairs(policy.shipped()) do
    if n == ref then return policy.load(ref) end
  end
  local ok, state = pcall(require, "foundry.state")
  if ok then
    local found, row = pcall(state.sandboxes.get, ref)
    if found and row then return policy.of_sandbox(row), row end
  end
  errors.raise("policy.not_found", "no policy file, shipped policy or sandbox named '" .. ref .. "'",
    "shipped policies: " .. table.concat(policy.shipped(), ", "))
end

local function check(opts, args)
  if #args ~= 1 then errors.raise("usage", "policy check: name one FILE", "usage: foundry policy check FILE") end
  local p = find(args[1])
  local s = p.spec
  local summary = {
    ok = true, mode = s.mode, allow = #s.allow, deny = #s.deny, rules = #s.rules,
    credentials = #s.credentials, gateways = {}, secrets = p:secret_names(), on_request = p.vm ~= nil,
  }
  for i, g in ipairs(s.gateways) do summary.gateways[i] = g.name end
  p:close()
  if opts.json then out_json(summary); return 0 end
  io.stdout:write(string.format("%s: ok (mode %s; %d allowed host patterns, %d denied, %d rules, %d credentials%s%s)\n",
    args[1], s.mode, summary.allow, summary.deny, summary.rules, summary.credentials,
    #summary.gateways > 0 and ("; gateways " .. table.concat(summary.gateways, ", ")) or "",
    summary.on_request and "; on_request" or ""))
  if #summary.secrets > 0 then io.stdout:write("secrets used: ", table.concat(summary.secrets, ", "), "\n") end
  return 0
end

local function explain(opts, args)
  if #args < 2 or #args > 3 then
    errors.raise("usage", "policy explain: FILE|NAME|SANDBOX URL [METHOD]", "usage: foundry policy explain FILE URL [METHOD]")
  end
  local policy = require "foundry.policy"
  local p = find(args[1])
  local r = policy.explain(p, args[2], args[3])
  p:close()
  if opts.json then out_json(r); return r.action == "deny" and 1 or 0 end
  local verb = ({ deny = "DENY", tunnel = "ALLOW (tunnel, not decrypted)", inspect = "ALLOW (inspected)",
                  allow = "ALLOW" })[r.action] or r.action
  io.stdout:write(string.format("%s %s %s\n", verb, r.method or "", args[2]))
  io.stdout:write("  rule:   ", r.rule or "-", "\n")
  io.stdout:write("  reason: ", r.reason or "-", "\n")
  if r.address_class then io.stdout:write("  address: ", r.host, " (", r.address_class, ")\n") end
  if r.hook then io.stdout:write("  on_request decides (", r.hook, ")\n") end
  if r.override then io.stdout:write("  upstream override: ", r.override, "\n") end
  for _, c in ipairs(r.credentials or {}) do
    io.stdout:write("  credential: ", c.secret, " in ", c.where, " (", c.rule, ")\n")
  end
  if r.how_to_allow then io.stdout:write("  to allow: ", r.how_to_allow, "\n") end
  return r.action == "deny" and 1 or 0
end

local function ls(opts)
  local policy = require "foundry.policy"
  local list = {}
  for _, n in ipairs(policy.shipped()) do
    local p = policy.load(n)
    list[#list + 1] = { name = n, description = p.data.description, mode = p.spec.mode }
    p:close()
  end
  if opts.json then out_json(json.array and json.array(list) or list); return 0 end
  for _, x in ipairs(list) do io.stdout:write(string.format("%-12s %-10s %s\n", x.name, x.mode, x.description or "")) end
  return 0
end

local function show(opts, args)
  if #args ~= 1 then errors.raise("usage", "policy show: name one policy") end
  local p = find(args[1])
  local spec = p.spec
  p:close()
  if opts.json then out_json(spec); return 0 end
  io.stdout:write(require("foundry.inspect").inspect(spec), "\n")
  return 0
end

-- Ask the daemon to give sandboxes their policy again (validated there; a policy that
-- does not load keeps the old one, and the daemon's log says why).
local function reload(opts, args)
  local client = require "foundry.daemon_client"
  if not client.running() then
    errors.raise("daemon.not_running", "the daemon is not running: no sandbox has a proxy to reload",
      "foundry daemon start")
  end
  local names, failed = {}, {}
  if #args == 0 then
    local r = client.call("reload", { all = true })
    for _, n in ipairs(r.reloaded or {}) do names[#names + 1] = n end
    for _, f in ipairs(r.failed or {}) do failed[#failed + 1] = f end
  else
    for _, name in ipairs(args) do
      local ok, r = pcall(client.call, "reload", { sandbox = name })
      if ok then
        for _, n in ipairs(r.reloaded or {}) do names[#names + 1] = n end
      elseif errors.is(r, "policy.invalid") or errors.is(r, "policy.not_found") then
        failed[#failed + 1] = { sandbox = name, error = errors.message(r) }
      else
        error(r, 0)
      end
    end
  end
  if opts.json then
    out_json({ reloaded = json.array(names), failed = json.array(failed) })
    return #failed > 0 and 1 or 0
  end
  if #names > 0 then io.stdout:write("reloaded: ", table.concat(names, ", "), "\n") end
  if #names == 0 and #failed == 0 then io.stdout:write("no sandbox reloaded\n") end
  for _, f in ipairs(failed) do
    io.stderr:write("foundry: ", f.sandbox, " keeps its previous policy: ", f.error, "\n")
  end
  return #failed > 0 and 1 or 0
end

return {
  summary = "Check and explain network policies",
  usage = "foundry policy check FILE | explain FILE|NAME|SANDBOX URL [METHOD] | ls | show NAME | reload [SANDBOX...]",
  description = [[
A network policy decides what a sandbox may reach through the proxy (docs/policies.md).

  check FILE                  validate a policy file; errors name the key path
  explain FILE|SANDBOX URL [METHOD]
                              which rule decides a request, and why (exit 1 when denied)
  ls                          the shipped policies
  show FILE|NAME|SANDBOX      the normalised policy the engine compiles
  reload [SANDBOX...]         give running sandboxes their policy again (all when none
                              named); connections stay open, the next request obeys it]],
  flags = { { "json", help = "print the result as JSON" } },
  min_args = 1,
  order = 40,
  examples = {
    "foundry policy check my-policy.lua",
    "foundry policy explain default https://api.github.com/repos/o/r/pulls POST",
    "foundry policy explain my-sandbox http://169.254.169.254/latest/meta-data",
  },
  run = function(opts, args)
    local sub = table.remove(args, 1)
    if sub == "check" then return check(opts, args) end
    if sub == "explain" then return explain(opts, args) end
    if sub == "ls" then return ls(opts) end
    if sub == "show" then return show(opts, args) end
    if sub == "reload" then return reload(opts, args) end
    local near = require("foundry.util").did_you_mean(sub or "", SUB)
    errors.raise("usage", "policy: unknown subcommand '" .. tostring(sub) .. "'" .. (near and (" — did you mean '" .. near .. "'?") or ""),
      "subcommands: " .. table.concat(SUB, ", "))
  end,
}
