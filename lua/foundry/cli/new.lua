--- foundry new [REPO] [options]
local errors = require "foundry.errors"
local common = require "foundry.cli._common"

local NETWORKS = { "none", "allowlist", "host-only", "open" }

local FLAGS = {
  { "name", short = "n", type = "string", arg = "NAME", help = "the sandbox's name (default: from the repository, made unique)" },
  { "branch", short = "b", type = "string", arg = "BRANCH", help = "its branch (default sandbox/NAME); an existing branch is continued from its tip" },
  { "from", type = "string", arg = "REF", help = "start the branch from REF (default: the repository's current branch)" },
  { "preset", short = "p", type = "string", arg = "PRESET", complete = "presets", help = "a preset name or file (see foundry preset ls)" },
  { "image", type = "string", arg = "IMAGE", help = "the container image (default $FOUNDRY_IMAGE or foundry/sandbox:latest)" },
  { "network", type = "string", values = NETWORKS, arg = "MODE", help = "egress through the proxy: none, allowlist (default), host-only, open" },
  { "policy", type = "string", arg = "POLICY", complete = "files", help = "the network policy: a file or a shipped policy's name (see foundry policy ls)" },
  { "volume", short = "v", type = "list", arg = "HOST:CTR[:ro]", complete = "files", help = "bind-mount a host path (repeatable)" },
  { "copy", type = "list", arg = "HOST:CTR", complete = "files", help = "copy a host file or directory in (repeatable)" },
  { "env", short = "e", type = "list", arg = "KEY=VAL", help = "set an environment variable (repeatable)" },
  { "cpus", type = "number", arg = "N", help = "CPU limit (default 2)" },
  { "memory", type = "string", arg = "SIZE", help = "memory limit, e.g. 4g (default 4g)" },
  { "pids", type = "number", arg = "N", help = "process limit (default 1024)" },
  { "wd", type = "string", arg = "SUBDIR", help = "start sessions in this directory of the workspace" },
  { "save-as", type = "string", arg = "PRESET", help = "also save these options as a preset" },
  { "detach", short = "d", help = "do not attach after creating" },
  { "allow-dangerous-mount", help = "allow mounting credential and engine paths (~/.ssh, the Docker socket, ...)" },
  { "carry-changes", help = "copy the repository's uncommitted changes into the new workspace (else a dirty repository is refused)" },
  { "json", help = "print the sandbox as JSON (stage events as NDJSON on stderr)" },
}

local M = {
  summary = "Create a sandbox from a repository and attach to it",
  usage = "foundry new [REPO] [-n NAME] [-b BRANCH] [--from REF] [-p PRESET] [options]",
  description = [[
REPO is a path or URL (default: the repository of the current directory). The sandbox is
a git work tree of its own branch mounted at /workspace in a locked-down container
(read-only root, no capabilities, no network but the proxy, uid 1000). Setup runs in
stages with live progress; a failure or Ctrl-C undoes everything. On a terminal, and
without -d, it attaches when ready; with no arguments at all it asks a few questions.]],
  flags = FLAGS,
  max_args = 1,
  order = 1,
  complete = "dirs",
  examples = {
    "foundry new                      # guided, in a repository",
    "foundry new -p claude -b fix-login",
    "foundry new ~/src/app -d -v ~/datasets:/data:ro -e NODE_ENV=test --json",
  },
}

--- The options as a command line again (for history and `repeat`).
function M.to_argv(opts, args)
  local argv = {}
  for _, f in ipairs(FLAGS) do
    local v = opts[f[1]]
    if f.type == "list" then
      for _, x in ipairs(v or {}) do argv[#argv + 1] = "--" .. f[1]; argv[#argv + 1] = tostring(x) end
    elseif f.type then
      if v ~= nil then argv[#argv + 1] = "--" .. f[1]; argv[#argv + 1] = tostring(v) end
    elseif v then
      argv[#argv + 1] = "--" .. f[1]
    end
  end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return argv
end

local function parse_env(list)
  local env = {}
  for _, kv in ipairs(list or {}) do
    local k, v = kv:match("^([%a_][%w_]*)=(.*)$")
    if not k then
      local name = kv:match("^([%a_][%w_]*)$")
      if name and os.getenv(name) then k, v = name, os.getenv(name)
      else errors.raise("usage", "--env '" .. kv .. "': expected KEY=VALUE") end
    end
    env[k] = v
  end
  return env
end

-- The spec for sandbox.create from the command line.
function M.spec(opts, args)
  local spec = {
    repo = args[1], name = opts.name, branch = opts.branch, from = opts.from, preset = opts.preset,
    image = opts.image, network = opts.network, policy = opts.policy, cpus = opts.cpus, memory = opts.memory,
    pids = opts.pids and math.tointeger(opts.pids) or nil, workdir = opts.wd,
    allow_dangerous_mount = opts["allow-dangerous-mount"] or nil,
    carry_changes = opts["carry-changes"] or nil,
  }
  if opts.pids and not spec.pids then errors.raise("usage", "--pids: expected a whole number") end
  if #(opts.volume or {}) > 0 then spec.mounts = opts.volume end
  if #(opts.copy or {}) > 0 then spec.copy = opts.copy end
  local env = parse_env(opts.env)
  if next(env) then spec.env = env end
  return spec
end

-- What --save-as keeps: the options that describe a kind of sandbox, not this one.
local function preset_of(spec)
  local p = {}
  for _, k in ipairs({ "image", "network", "policy", "cpus", "memory", "pids", "workdir", "mounts", "copy", "env", "from" }) do
    p[k] = spec[k]
  end
  p.extends = spec.preset
  -- the saved file lives elsewhere: paths in it are kept absolute
  local fs, util = require "foundry.fs", require "foundry.util"
  for _, k in ipairs({ "policy", "extends" }) do
    if p[k] and util.is_path(p[k]) then p[k] = fs.absolute(p[k]) end
  end
  if spec.repo then p.repo = require("foundry.sandbox").find_repo(spec.repo) end
  if p.mounts then
    local preset = require "foundry.preset"
    for i, m in ipairs(p.mounts) do
      local mm = preset.parse_mount(m)
      p.mounts[i] = mm.source .. ":" .. mm.target .. (mm.read_only and ":ro" or "")
    end
  end
  return p
end

local function wizard(opts, args)
  local sandbox = require "foundry.sandbox"
  local preset = require "foundry.preset"
  io.stderr:write("New sandbox (Enter keeps the [default]; Ctrl-C cancels)\n")
  local ok, repo = pcall(sandbox.find_repo, nil)
  args[1] = common.ask("  repository (path or URL)", ok and repo or nil)
  if not args[1] then errors.raise("usage", "a repository is needed") end
  local names = {}
  for _, p in ipairs(preset.list()) do if not p.shadowed then names[#names + 1] = p.name end end
  local p = common.ask("  preset (" .. table.concat(names, ", ") .. ")", "shell")
  if p ~= "shell" then opts.preset = p end
  local name = common.ask("  name", "from the repository")
  if name ~= "from the repository" then opts.name = name end
  local branch = common.ask("  branch", "sandbox/NAME")
  if branch ~= "sandbox/NAME" then opts.branch = branch end
  local net = common.ask("  network (none, allowlist, host-only, open)", "allowlist")
  if net ~= "allowlist" then opts.network = net end
end

function M.run(opts, args)
  local sandbox = require "foundry.sandbox"
  local state = require "foundry.state"
  local interactive = common.isatty(0) and common.isatty(1) and not opts.json
  local given = #args > 0
  for _, f in ipairs(FLAGS) do
    local v = opts[f[1]]
    if (f.type == "list" and #(v or {}) > 0) or (f.type ~= "list" and v ~= nil and v ~= false) then given = true end
  end
  if not given and interactive then wizard(opts, args) end
  local spec = M.spec(opts, args)
  local hid = state.history.add({ command = "new", argv = M.to_argv(opts, args), cwd = require("luv").cwd() })
  local ok, sb = pcall(sandbox.create, spec, {
    progress = opts.json and "json" or "auto",
    signals = true,
  })
  if not ok then
    pcall(state.history.finish, hid, 1)
    error(sb, 0)
  end
  pcall(state.history.finish, hid, 0)
  if opts["save-as"] then
    local path = require("foundry.preset").save(opts["save-as"], preset_of(spec),
      "saved by `foundry new --save-as " .. opts["save-as"] .. "`")
    if not opts.json then io.stderr:write("saved preset ", opts["save-as"], " (", path, ")\n") end
  end
  if opts.json then
    common.json(sb:info())
    return 0
  end
  io.stdout:write(string.format("sandbox %s is ready: branch %s, workspace %s\n", sb.name, sb.branch or "?", sb.workspace or "?"))
  if interactive and not opts.detach then
    local status = sb:attach({})
    return status == "detached" and 0 or (math.tointeger(status) or 0)
  end
  io.stdout:write("  foundry attach ", sb.name, "    foundry exec ", sb.name, " -- CMD    foundry rm ", sb.name, "\n")
  return 0
end

return M
