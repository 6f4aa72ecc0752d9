--- foundry repeat
local errors = require "foundry.errors"

-- Drop --name/-n (and its value) so the new sandbox gets a fresh name.
local function without_name(argv)
  local out, skip = {}, false
  for _, a in ipairs(argv) do
    if skip then skip = false
    elseif a == "--name" or a == "-n" then skip = true
    elseif not a:match("^%-%-name=") then out[#out + 1] = a end
  end
  return out
end

return {
  summary = "Run the last 'new' or 'run' again with the same arguments (a fresh name)",
  usage = "foundry repeat [ARGS...]",
  description = [[
Repeats the most recent 'foundry new' or 'foundry run' from the history, without its
--name so the sandbox gets a fresh one. ARGS are appended (e.g. -d).]],
  raw_args = true,
  order = 13,
  run = function(_, args)
    local state = require "foundry.state"
    local last = state.history.last({ command = { "new", "run" } })
    if not last then errors.raise("history.not_found", "nothing to repeat: no 'foundry new' or 'foundry run' yet") end
    if args[1] == "-h" or args[1] == "--help" then
      io.stdout:write(require("foundry.cli.args").help(require("foundry.cli.repeat")))
      return 0
    end
    local argv = { last.command }
    for _, a in ipairs(last.command == "new" and without_name(last.argv) or last.argv) do argv[#argv + 1] = a end
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    if last.cwd then pcall(require("luv").chdir, last.cwd) end
    io.stderr:write("foundry ", table.concat(argv, " "), "\n")
    return require("foundry.cli").dispatch(argv)
  end,
}
