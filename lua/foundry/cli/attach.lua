--- foundry attach [NAME | --last]
local errors = require "foundry.errors"

return {
  summary = "Attach the terminal to a sandbox's session (detach: Ctrl-P Ctrl-Q)",
  usage = "foundry attach [NAME | --last] [--command CMD] [--session NAME]",
  description = [[
Opens the sandbox's tmux session (created on first attach, running the preset's agent)
on this terminal. Ctrl-P Ctrl-Q (or tmux's C-b d) detaches and leaves the session
running; attaching again returns to it. A stopped sandbox is started first.]],
  flags = {
    { "last", short = "l", help = "the most recently created sandbox" },
    { "command", short = "c", type = "string", arg = "CMD", help = "run CMD (sh -c) instead of the agent, in its own session" },
    { "session", short = "s", type = "string", arg = "NAME", help = "the tmux session (default main)" },
    { "no-tmux", help = "no tmux: the command ends when you detach" },
    { "detach-keys", type = "string", arg = "KEYS", help = "the detach sequence (default ctrl-p,ctrl-q)" },
  },
  max_args = 1,
  order = 4,
  complete = "sandboxes",
  run = function(opts, args)
    local sandbox = require "foundry.sandbox"
    local sb
    if opts.last then sb = sandbox.last()
    elseif args[1] then sb = sandbox.get(args[1])
    else errors.raise("usage", "attach: name a sandbox, or --last", "'foundry ls' lists them") end
    local command = opts.command and { "sh", "-c", opts.command } or nil
    local status = sb:attach({
      command = command,
      session = opts.session or (command and "cmd-" .. tostring(os.time()) or nil),
      tmux = not opts["no-tmux"],
      detach_keys = opts["detach-keys"],
    })
    if status == "detached" then return 0 end
    return math.tointeger(status) or 0
  end,
}
