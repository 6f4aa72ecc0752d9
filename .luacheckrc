-- luacheck configuration (make lint)
std = "lua54"
max_line_length = 160
unused_args = false
read_globals = { "foundry" }
files["tests/**/*_spec.lua"] = {
  read_globals = { "describe", "it", "pending", "xit", "before_each", "after_each",
                   "before_all", "after_all", "expect", "skip" },
}
files["presets/**/*.lua"] = { read_globals = { "foundry" } }
files["policies/**/*.lua"] = { read_globals = { "foundry" } }
files["lua/foundry/cli/init.lua"] = { globals = { "foundry" } }
files["lua/foundry/cli/run.lua"] = { globals = { "arg" } }
