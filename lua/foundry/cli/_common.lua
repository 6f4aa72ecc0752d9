--- Helpers shared by the sandbox commands (not a command: no `run`).
local errors = require "foundry.errors"
local json = require "foundry.json"
local util = require "foundry.util"
local uv = require "luv"

local M = {}

--- Print `v` as one line of JSON on stdout.
function M.json(v)
  io.stdout:write(json.encode(v), "\n")
end

--- True when file descriptor `fd` is a terminal.
function M.isatty(fd)
  return uv.guess_handle(fd) == "tty"
end

--- Print rows as aligned columns: `cols` = { {"NAME", "name"}, ... } (header, key or fn).
function M.table(rows, cols, out)
  out = out or io.stdout
  local cells, widths = {}, {}
  local header = {}
  for i, c in ipairs(cols) do header[i] = c[1]; widths[i] = #c[1] end
  for r, row in ipairs(rows) do
    cells[r] = {}
    for i, c in ipairs(cols) do
      local v = type(c[2]) == "function" and c[2](row) or row[c[2]]
      v = v == nil and "" or tostring(v)
      cells[r][i] = v
      widths[i] = math.max(widths[i], utf8.len(v) or #v)
    end
  end
  local function line(vals)
    local parts = {}
    for i, v in ipairs(vals) do
      if i == #vals then parts[i] = v
      else parts[i] = v .. string.rep(" ", widths[i] - (utf8.len(v) or #v)) end
    end
    out:write((table.concat(parts, "  "):gsub("%s+$", "")), "\n")
  end
  line(header)
  for _, c in ipairs(cells) do line(c) end
end

--- "3s ago", "5m ago", "2h ago", "4d ago" from epoch milliseconds.
function M.ago(ms)
  if not ms then return "" end
  local s, us = uv.gettimeofday()
  local d = (s * 1000 + us // 1000 - ms) // 1000
  if d < 60 then return math.max(d, 0) .. "s ago" end
  if d < 3600 then return d // 60 .. "m ago" end
  if d < 86400 then return d // 3600 .. "h ago" end
  return d // 86400 .. "d ago"
end

--- ISO 8601 UTC from epoch milliseconds.
function M.iso(ms)
  if not ms then return nil end
  return os.date("!%Y-%m-%dT%H:%M:%SZ", ms // 1000)
end

--- Ask a yes/no question on the terminal; false without one (use -y in scripts).
function M.confirm(question)
  if not M.isatty(0) then
    errors.raise("usage", question:gsub("%?$", "") .. ": confirmation needed", "pass -y to confirm without a terminal")
  end
  io.stderr:write(question, " [y/N] ")
  io.stderr:flush()
  local answer = io.stdin:read("l")
  return answer ~= nil and answer:lower():match("^y") ~= nil
end

--- Ask for a line on the terminal with a default.
function M.ask(question, default)
  io.stderr:write(question, default and default ~= "" and (" [" .. default .. "]") or "", ": ")
  io.stderr:flush()
  local answer = io.stdin:read("l")
  if answer == nil then errors.raise("interrupted", "no answer (end of input)") end
  answer = util.trim(answer)
  if answer == "" then return default end
  return answer
end

--- The names given, or every sandbox with --all; raises usage when neither.
function M.names(opts, args, what)
  if opts.all then
    local out = {}
    for _, row in ipairs(require("foundry.state").sandboxes.list()) do out[#out + 1] = row.name end
    return out
  end
  if #args == 0 then errors.raise("usage", what .. ": name a sandbox (or --all)", "'foundry ls' lists them") end
  return args
end

--- Run `fn(name)` for each name. One name: its error propagates (the CLI prints it,
--- `{"error":...}` with --json) and its result is printed with --json. Several: each
--- error is printed (or kept in the --json array) and the rest go on; the exit code is 1
--- when one failed, else 3 when one was not found, else 0.
function M.each(names, opts, fn)
  if #names == 1 then
    local res = fn(names[1]) or { name = names[1], ok = true }
    if opts.json then M.json(res) end
    return 0
  end
  -- up to four at a time: most of the work is waiting for the engine and the disk
  local outcomes = {}
  local task = require "foundry._task"
  for first = 1, #names, 4 do
    local batch = {}
    for i = first, math.min(first + 3, #names) do
      batch[#batch + 1] = { i, task.spawn(fn, names[i]) }
    end
    for _, b in ipairs(batch) do outcomes[b[1]] = table.pack(pcall(b[2].join, b[2])) end
  end
  local results, failed, missing = {}, false, false
  for i, name in ipairs(names) do
    local ok, res = outcomes[i][1], outcomes[i][2]
    if ok then
      results[#results + 1] = res or { name = name, ok = true }
    else
      local code = errors.is(res) and res.code or "error"
      if code == "not_found" or code:match("%.not_found$") then missing = true else failed = true end
      results[#results + 1] = { name = name, ok = false,
        error = { code = code, message = errors.message(res), hint = errors.is(res) and res.hint or nil } }
      if not opts.json then
        io.stderr:write("foundry: ", errors.message(res), "\n")
        if errors.is(res) and res.hint then io.stderr:write("  hint: ", res.hint, "\n") end
      end
    end
  end
  if opts.json then M.json(json.array(results)) end
  return failed and 1 or missing and 3 or 0
end

return M
