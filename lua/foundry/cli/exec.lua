--- foundry exec NAME [--] CMD...
local errors = require "foundry.errors"
local common = require "foundry.cli._common"

return {
  summary = "Run a command in a sandbox",
  usage = "foundry exec NAME [-i] [-t] [-w DIR] [-e KEY=VAL] [--] CMD [ARGS...]",
  description = [[
Runs CMD as the sandbox's user in its workspace, streaming its output; the exit status
is CMD's. -i passes standard input; -t gives it a terminal (with the detach key and
window resizing, as attach). --json prints {status=, stdout=, stderr=} instead.]],
  flags = {
    { "interactive", short = "i", help = "pass standard input to the command" },
    { "tty", short = "t", help = "give the command a terminal" },
    { "workdir", short = "w", type = "string", arg = "DIR", help = "run in DIR (default: the workspace)" },
    { "env", short = "e", type = "list", arg = "KEY=VAL", help = "set an environment variable (repeatable)" },
    { "json", help = "collect the output and print {status, stdout, stderr}" },
  },
  min_args = 2,
  stop_at_positional = true,
  order = 5,
  complete = "sandboxes",
  run = function(opts, args)
    local sandbox = require "foundry.sandbox"
    local sb = sandbox.get(args[1])
    local argv = {}
    for i = 2, #args do argv[#argv + 1] = args[i] end
    if argv[1] == "--" then table.remove(argv, 1) end
    if #argv == 0 then errors.raise("usage", "exec: no command given", "usage: foundry exec NAME [--] CMD [ARGS...]") end
    local env = {}
    for _, kv in ipairs(opts.env or {}) do
      local k, v = kv:match("^([%a_][%w_]*)=(.*)$")
      if not k then errors.raise("usage", "--env '" .. kv .. "': expected KEY=VALUE") end
      env[k] = v
    end
    if opts.tty then
      local status = require("foundry.attach").attach(sb, { command = argv, tmux = false })
      return status == "detached" and 0 or (math.tointeger(status) or 0)
    end
    local spec = { table.unpack(argv) }
    spec.env = env
    spec.workdir = opts.workdir
    if opts.interactive then spec.stdin = io.stdin:read("a") or "" end
    if not opts.json then
      spec.on_stdout = function(s) io.stdout:write(s); io.stdout:flush() end
      spec.on_stderr = function(s) io.stderr:write(s); io.stderr:flush() end
    end
    local r = sb:exec(spec)
    if opts.json then common.json({ status = r.status, stdout = r.stdout, stderr = r.stderr }) end
    return r.status
  end,
}
