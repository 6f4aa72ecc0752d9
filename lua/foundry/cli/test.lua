--- foundry test [PATH...]
local testlib = require "foundry.test"

return {
  summary = "Run Lua spec files (describe/it/expect) inside the Foundry host",
  usage = "foundry test [--filter PATTERN] [--verbose] [PATH...]",
  description = [[
Runs every *_spec.lua under the given files and directories (default: tests/spec, or
spec/) with the real native modules and loop. Each test runs in its own task; a test
fails if it raises, times out, or leaves tasks or libuv handles behind. Use it for your
own policies and presets too. Ends with the line 'N passed, N failed, N skipped'.

In a spec: describe(name, fn), it(name, [{timeout=ms},] fn), pending(name),
before_each/after_each/before_all/after_all(fn), skip(reason), and
expect(v):equals(x) / :is(x) / :truthy() / :falsy() / :matches(pat) / :contains(x) /
:gt(n) / :near(x, eps) / :has_length(n) / :fails([pattern|code]) / .never:...]],
  flags = {
    { "filter", short = "f", type = "string", arg = "PATTERN", help = "run only tests whose full name matches (Lua pattern)" },
    { "verbose", short = "v", help = "print every test with its time" },
    { "timeout", type = "number", arg = "MS", help = "per-test time limit (default 60000)" },
  },
  order = 82,
  run = function(opts, args)
    local paths = args
    if #paths == 0 then
      local fs = require "foundry.fs"
      paths = { fs.is_dir("tests/spec") and "tests/spec" or "spec" }
    end
    local files = testlib.find(paths)
    local stats = testlib.run(files, { verbose = opts.verbose, filter = opts.filter, timeout = opts.timeout, debug = opts.debug })
    if #stats.failures > 0 then
      io.stdout:write("\nfailures:\n")
      for _, f in ipairs(stats.failures) do
        io.stdout:write("  ", f.where, ": ", f.name, "\n")
      end
    end
    io.stdout:write(string.format("%d passed, %d failed, %d skipped\n", stats.passed, stats.failed, stats.skipped))
    return stats.failed > 0 and 1 or 0
  end,
}
