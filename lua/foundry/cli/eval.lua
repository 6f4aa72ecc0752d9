--- foundry eval CODE|-
local run = require "foundry.cli.run"

return {
  summary = "Evaluate Lua code with the Foundry API and print what it returns",
  usage = "foundry eval [--json] CODE|-",
  description = [[
CODE is a Lua chunk; '-' reads it from standard input. Values the chunk returns are
printed (tables pretty-printed; JSON with --json). A bare expression works too:
foundry eval '1 + 1' prints 2.]],
  flags = { { "json", help = "print the returned values as JSON" } },
  min_args = 1, max_args = 1,
  order = 81,
  examples = { "foundry eval 'return foundry.exec{\"uname\", \"-r\"}.stdout'", "echo 'return 1 + 1' | foundry eval -" },
  run = function(opts, args)
    local code, name = args[1], "=(eval)"
    if code == "-" then
      code, name = io.stdin:read("a") or "", "=(stdin)"
    end
    local fn = run.compile(code, name, true)
    local res = table.pack(fn())
    run.print_values(res, opts.json)
    return 0
  end,
}
