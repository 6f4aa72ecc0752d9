--- foundry help [COMMAND]
local args = require "foundry.cli.args"

local groups = {
  { "Sandboxes", 0, 39 },
  { "Network, credentials and audit", 40, 69 },
  { "Scripting", 70, 89 },
  { "Other", 90, 1000 },
}

return {
  summary = "Show the commands, or one command's help",
  usage = "foundry help [COMMAND]",
  max_args = 1,
  order = 91,
  run = function(_, a)
    local cli = require "foundry.cli"
    if a[1] then
      local cmd = cli.load_command(a[1])
      if not cmd then
        require("foundry.errors").raise("usage", "unknown command '" .. a[1] .. "'", "run 'foundry help' for the list")
      end
      io.stdout:write(args.help(cmd))
      return 0
    end
    local out = {
      "foundry - run AI coding agents in locked-down, ephemeral Docker sandboxes",
      "",
      "usage: foundry [--debug] COMMAND [OPTIONS] [ARGS]",
    }
    local cmds = cli.commands()
    for _, g in ipairs(groups) do
      local lines = {}
      for _, c in ipairs(cmds) do
        local o = c.order or 50
        if o >= g[2] and o <= g[3] then
          lines[#lines + 1] = string.format("  %-12s %s", c.name, c.summary or "")
        end
      end
      if #lines > 0 then
        out[#out + 1] = ""
        out[#out + 1] = g[1] .. ":"
        for _, l in ipairs(lines) do out[#out + 1] = l end
      end
    end
    out[#out + 1] = ""
    out[#out + 1] = "Run 'foundry COMMAND --help' for a command's options. Most commands take --json."
    out[#out + 1] = "--debug (before the command, or FOUNDRY_DEBUG=1) adds tracebacks to errors."
    out[#out + 1] = ""
    out[#out + 1] = "Exit status: 0 ok, 1 failure, 2 usage error, 3 not found, 130 interrupted."
    io.stdout:write(table.concat(out, "\n"), "\n")
    return 0
  end,
}
