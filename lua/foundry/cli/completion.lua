--- foundry completion bash|zsh|fish
---
--- The scripts are generated from the commands themselves (names, summaries, flags,
--- flag values); sandbox and preset names are asked of `foundry ls -q` and
--- `foundry preset ls -q` when completing. A command declares what its positional
--- arguments are with `complete = "sandboxes" | "files" | {words...}`, a flag with
--- `complete = "presets" | "files" | "dirs"` (or `values`).
local errors = require "foundry.errors"

local function commands() return require("foundry.cli").commands() end

local ALIASES = { destroy = "rm" }

local function flag_words(cmd)
  local out = {}
  for _, f in ipairs(cmd.flags or {}) do
    out[#out + 1] = "--" .. f[1]
    if f.short then out[#out + 1] = "-" .. f.short end
  end
  out[#out + 1] = "--help"
  return out
end

local function sh_words(list) return table.concat(list, " ") end

local function bash()
  local cmds = commands()
  local names = {}
  for _, c in ipairs(cmds) do names[#names + 1] = c.name end
  for a in pairs(ALIASES) do names[#names + 1] = a end
  table.sort(names)
  local o = {}
  local function w(...) for _, s in ipairs({ ... }) do o[#o + 1] = s end end
  w("# bash completion for foundry: eval \"$(foundry completion bash)\"\n")
  w("_foundry() {\n")
  w("  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n")
  w("  local IFS=$' \\t\\n'\n")
  w("  if [ \"$COMP_CWORD\" -eq 1 ]; then\n")
  w("    COMPREPLY=($(compgen -W '", sh_words(names), " --help --version --debug' -- \"$cur\")); return\n")
  w("  fi\n")
  w("  local cmd=${COMP_WORDS[1]}\n")
  for a, target in pairs(ALIASES) do w("  [ \"$cmd\" = ", a, " ] && cmd=", target, "\n") end
  -- flags taking a value
  w("  case \"$cmd:$prev\" in\n")
  for _, c in ipairs(cmds) do
    for _, f in ipairs(c.flags or {}) do
      if f.type and f.type ~= "boolean" then
        local pats = { c.name .. ":--" .. f[1] }
        if f.short then pats[#pats + 1] = c.name .. ":-" .. f.short end
        local action
        if f.values then action = "COMPREPLY=($(compgen -W '" .. sh_words(f.values) .. "' -- \"$cur\"))"
        elseif f.complete == "presets" then action = "COMPREPLY=($(compgen -W \"$(foundry preset ls -q 2>/dev/null)\" -- \"$cur\"))"
        elseif f.complete == "dirs" then action = "COMPREPLY=($(compgen -d -- \"$cur\"))"
        elseif f.complete == "files" then action = "COMPREPLY=($(compgen -f -- \"$cur\"))"
        else action = "COMPREPLY=()" end
        w("    ", table.concat(pats, "|"), ") ", action, "; return;;\n")
      end
    end
  end
  w("  esac\n")
  w("  if [[ $cur == -* ]]; then\n    case $cmd in\n")
  for _, c in ipairs(cmds) do
    w("      ", c.name, ") COMPREPLY=($(compgen -W '", sh_words(flag_words(c)), "' -- \"$cur\"));;\n")
  end
  w("    esac\n    return\n  fi\n")
  w("  case $cmd in\n")
  for _, c in ipairs(cmds) do
    local comp = c.complete
    if comp == "sandboxes" then
      w("    ", c.name, ") COMPREPLY=($(compgen -W \"$(foundry ls -q 2>/dev/null)\" -- \"$cur\"));;\n")
    elseif comp == "files" then
      w("    ", c.name, ") COMPREPLY=($(compgen -f -- \"$cur\"));;\n")
    elseif comp == "dirs" then
      w("    ", c.name, ") COMPREPLY=($(compgen -d -- \"$cur\"));;\n")
    elseif type(comp) == "table" then
      w("    ", c.name, ")\n      if [ \"$COMP_CWORD\" -eq 2 ]; then COMPREPLY=($(compgen -W '", sh_words(comp),
        "' -- \"$cur\"))\n")
      if c.name == "preset" then
        w("      else COMPREPLY=($(compgen -W \"$(foundry preset ls -q 2>/dev/null)\" -f -- \"$cur\")); fi;;\n")
      else
        w("      fi;;\n")
      end
    end
  end
  w("  esac\n}\n")
  w("complete -o default -F _foundry foundry\n")
  return table.concat(o)
end

local function zsh_escape(s) return (s or ""):gsub("'", "'\\''"):gsub(":", "\\:") end

local function zsh()
  local cmds = commands()
  local o = {}
  local function w(...) for _, s in ipairs({ ... }) do o[#o + 1] = s end end
  w("#compdef foundry\n# zsh completion for foundry: foundry completion zsh > \"${fpath[1]}/_foundry\"\n")
  w("_foundry_sandboxes() { local -a s; s=(${(f)\"$(foundry ls -q 2>/dev/null)\"}); compadd -a s }\n")
  w("_foundry_presets() { local -a s; s=(${(f)\"$(foundry preset ls -q 2>/dev/null)\"}); compadd -a s }\n")
  w("_foundry() {\n  local -a commands\n  commands=(\n")
  for _, c in ipairs(cmds) do w("    '", c.name, ":", zsh_escape(c.summary), "'\n") end
  for a, t in pairs(ALIASES) do w("    '", a, ":alias of ", t, "'\n") end
  w("  )\n  if (( CURRENT == 2 )); then _describe command commands; return; fi\n")
  w("  local cmd=${words[2]}\n")
  for a, t in pairs(ALIASES) do w("  [[ $cmd == ", a, " ]] && cmd=", t, "\n") end
  w("  case $cmd in\n")
  for _, c in ipairs(cmds) do
    local specs = {}
    for _, f in ipairs(c.flags or {}) do
      local action = ""
      if f.type and f.type ~= "boolean" then
        if f.values then action = ":" .. (f.arg or "value") .. ":(" .. table.concat(f.values, " ") .. ")"
        elseif f.complete == "presets" then action = ":preset:_foundry_presets"
        elseif f.complete == "files" then action = ":file:_files"
        elseif f.complete == "dirs" then action = ":directory:_files -/"
        else action = ":" .. (f.arg or "value") .. ": " end
      end
      local rep = f.type == "list" and "*" or ""
      local help = "[" .. zsh_escape(f.help):gsub("[%[%]]", "") .. "]"
      if f.short then
        specs[#specs + 1] = "'" .. rep .. "(-" .. f.short .. " --" .. f[1] .. ")'{-" .. f.short .. ",--" .. f[1] .. "}'" .. help .. action .. "'"
      else
        specs[#specs + 1] = "'" .. rep .. "--" .. f[1] .. help .. action .. "'"
      end
    end
    local comp = c.complete
    if comp == "sandboxes" then specs[#specs + 1] = "'*:sandbox:_foundry_sandboxes'"
    elseif comp == "files" then specs[#specs + 1] = "'*:file:_files'"
    elseif comp == "dirs" then specs[#specs + 1] = "'*:directory:_files -/'"
    elseif type(comp) == "table" then specs[#specs + 1] = "'1:subcommand:(" .. table.concat(comp, " ") .. ")'" end
    w("    ", c.name, ") _arguments -s ", table.concat(specs, " "), ";;\n")
  end
  w("  esac\n}\n")
  w("if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _foundry \"$@\"; else compdef _foundry foundry; fi\n")
  return table.concat(o)
end

local function fish_escape(s) return "'" .. (s or ""):gsub("\\", "\\\\"):gsub("'", "\\'") .. "'" end

local function fish()
  local cmds = commands()
  local o = {}
  local function w(...) for _, s in ipairs({ ... }) do o[#o + 1] = s end end
  w("# fish completion for foundry: foundry completion fish > ~/.config/fish/completions/foundry.fish\n")
  w("complete -c foundry -f\n")
  for _, c in ipairs(cmds) do
    w("complete -c foundry -n __fish_use_subcommand -a ", c.name, " -d ", fish_escape(c.summary), "\n")
  end
  for a, t in pairs(ALIASES) do
    w("complete -c foundry -n __fish_use_subcommand -a ", a, " -d ", fish_escape("alias of " .. t), "\n")
  end
  for _, c in ipairs(cmds) do
    local names = { c.name }
    for a, t in pairs(ALIASES) do if t == c.name then names[#names + 1] = a end end
    local cond = "'__fish_seen_subcommand_from " .. table.concat(names, " ") .. "'"
    for _, f in ipairs(c.flags or {}) do
      local parts = { "complete -c foundry -n ", cond, " -l ", f[1] }
      if f.short then parts[#parts + 1] = " -s " .. f.short end
      if f.type and f.type ~= "boolean" then
        parts[#parts + 1] = " -r"
        if f.values then parts[#parts + 1] = " -a " .. fish_escape(table.concat(f.values, " "))
        elseif f.complete == "presets" then parts[#parts + 1] = " -a '(foundry preset ls -q 2>/dev/null)'"
        elseif f.complete == "files" or f.complete == "dirs" then parts[#parts + 1] = " -F" end
      end
      parts[#parts + 1] = " -d " .. fish_escape(f.help)
      w(table.concat(parts), "\n")
    end
    local comp = c.complete
    if comp == "sandboxes" then w("complete -c foundry -n ", cond, " -a '(foundry ls -q 2>/dev/null)'\n")
    elseif comp == "files" or comp == "dirs" then w("complete -c foundry -n ", cond, " -F\n")
    elseif type(comp) == "table" then w("complete -c foundry -n ", cond, " -a ", fish_escape(table.concat(comp, " ")), "\n") end
  end
  return table.concat(o)
end

return {
  summary = "Print a shell completion script (bash, zsh, fish)",
  usage = "foundry completion bash|zsh|fish",
  description = [[
Prints a script that completes commands, flags, flag values, sandbox names and preset
names. Install it:
  bash  echo 'eval "$(foundry completion bash)"' >> ~/.bashrc
  zsh   foundry completion zsh > "${fpath[1]}/_foundry"   (then restart zsh)
  fish  foundry completion fish > ~/.config/fish/completions/foundry.fish]],
  min_args = 1, max_args = 1,
  order = 90,
  complete = { "bash", "zsh", "fish" },
  run = function(_, args)
    local shell = args[1]
    local gen = ({ bash = bash, zsh = zsh, fish = fish })[shell]
    if not gen then
      local near = require("foundry.util").did_you_mean(shell, { "bash", "zsh", "fish" })
      errors.raise("usage", "no completion for '" .. shell .. "': bash, zsh or fish" ..
        (near and (" — did you mean '" .. near .. "'?") or ""))
    end
    io.stdout:write(gen())
    return 0
  end,
}
