--- `foundry` - the command-line entry point. Every command is a module
--- `foundry.cli.<name>` returning `{name=, summary=, usage=, flags=, run=function(opts, args)}`.
local errors = require "foundry.errors"
local args = require "foundry.cli.args"
local host = require "foundry._host"
local task = require "foundry._task"

local aliases = { destroy = "rm", ["-h"] = "help", ["--help"] = "help", ["--version"] = "version" }

local EXIT = { ok = 0, failure = 1, usage = 2, not_found = 3, interrupted = 130 }

local function exit_code(err)
  if errors.is(err) then
    if err.code == "usage" then return EXIT.usage end
    if err.code == "not_found" or err.code:match("%.not_found$") then return EXIT.not_found end
    if err.code == "interrupted" then return EXIT.interrupted end
    if err.exit then return err.exit end
  end
  return EXIT.failure
end

local function print_error(err, json_mode, traceback)
  -- no secret reaches a terminal or a log through an error message
  local rok, redact = pcall(require, "foundry.redact")
  if rok then
    err = redact.error(err)
    if traceback then traceback = redact.text(traceback) end
  end
  local msg, hint, code
  if errors.is(err) then
    msg, hint, code = err.message or err.code, err.hint, err.code
  else
    msg, code = tostring(err), "error"
  end
  if json_mode then
    local json = require "foundry.json"
    io.stdout:write(json.encode({ error = { code = code, message = msg, hint = hint } }), "\n")
  else
    io.stderr:write("foundry: ", msg, "\n")
    if hint then io.stderr:write("  hint: ", hint, "\n") end
  end
  if traceback then io.stderr:write(traceback, "\n") end
end

--- Every command: {name=, summary=, group=} from the embedded modules.
local function commands()
  local out = {}
  for _, mod in ipairs(host.modules("foundry.cli.")) do
    local name = mod:sub(#"foundry.cli." + 1)
    if not name:find(".", 1, true) and name ~= "args" then
      local ok, cmd = pcall(require, mod)
      if ok and type(cmd) == "table" and cmd.run then
        out[#out + 1] = cmd
        cmd.name = cmd.name or name
      end
    end
  end
  table.sort(out, function(a, b)
    if (a.order or 50) ~= (b.order or 50) then return (a.order or 50) < (b.order or 50) end
    return a.name < b.name
  end)
  return out
end

local function load_command(name)
  name = aliases[name] or name
  if not name:match("^[%w][%w-]*$") then return nil end
  local ok, cmd = pcall(require, "foundry.cli." .. name:gsub("-", "_"))
  if not ok then
    if tostring(cmd):find("module 'foundry.cli.", 1, true) and tostring(cmd):find("not found", 1, true) then
      return nil
    end
    error(cmd, 0)
  end
  if type(cmd) ~= "table" or not cmd.run then return nil end
  cmd.name = cmd.name or name
  return cmd
end

local M = {}
M.commands = commands
M.load_command = load_command
M.EXIT = EXIT

--- Run a command by name with argv (a list) and return its exit status; errors are
--- printed as `foundry: message` plus a hint (a traceback with --debug).
function M.dispatch(argv)
  local i, debug_flag = 1, os.getenv("FOUNDRY_DEBUG") == "1"
  while argv[i] and argv[i]:sub(1, 1) == "-" and argv[i] ~= "-h" and argv[i] ~= "--help"
      and argv[i] ~= "--version" do
    if argv[i] == "--debug" then
      debug_flag = true
    else
      print_error(errors.new("usage", "unknown option '" .. argv[i] .. "' before the command",
        "options go after the command: foundry COMMAND --help"))
      return EXIT.usage
    end
    i = i + 1
  end
  task.set_debug(debug_flag)
  local name = argv[i]
  if not name then
    name = "help"
  end
  local json_mode = false
  for k = i + 1, #argv do
    if argv[k] == "--json" then json_mode = true end
    if argv[k] == "--" then break end
  end
  local traceback
  local function handler(e)
    traceback = debug_flag and debug.traceback(errors.message(e), 2) or nil
    return e
  end
  local ok, res = xpcall(function()
    local cmd = load_command(name)
    if not cmd then
      local names = {}
      for _, c in ipairs(commands()) do names[#names + 1] = c.name end
      for a in pairs(aliases) do if not a:match("^%-") then names[#names + 1] = a end end
      local near = require("foundry.util").did_you_mean(name, names)
      errors.raise("usage", "unknown command '" .. name .. "'" .. (near and (" — did you mean '" .. near .. "'?") or ""),
        "run 'foundry help' for the list of commands")
    end
    local rest = {}
    for k = i + 1, #argv do rest[#rest + 1] = argv[k] end
    if not cmd.raw_args then
      for _, a in ipairs(rest) do
        if a == "--" then break end
        if a == "-h" or a == "--help" then
          io.stdout:write(args.help(cmd))
          return 0
        end
        if cmd.stop_at_positional and a:sub(1, 1) ~= "-" then break end
      end
    end
    local opts, pos
    if cmd.raw_args then
      opts, pos = {}, rest
    else
      opts, pos = args.parse(cmd, rest)
    end
    opts.debug = debug_flag
    return cmd.run(opts, pos)
  end, handler)
  if ok then return math.tointeger(res) or 0 end
  print_error(res, json_mode, traceback)
  return exit_code(res)
end

--- The binary's entry point (runtime/main.c): argv[0] is the program.
function M.main(argv)
  _G.foundry = require "foundry"
  return M.dispatch(argv)
end

return M
