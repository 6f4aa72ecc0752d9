-- Raw mode is undone on every way out: return, error, os.exit, a fatal signal.
local uv = require "luv"
local util = require "foundry.util"

-- Run `script` (sh) on a fresh pseudo-terminal and return what it printed.
local PTY = [==[
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", sys.argv[1]])
out = b""
while True:
    try:
        d = os.read(fd, 4096)
    except OSError:
        break
    if not d:
        break
    out += d
os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
]==]

local function on_pty(script)
  local r = foundry.exec{ "python3", "-c", PTY, script, check = true }
  return (r.stdout:gsub("\r", ""))
end

local exe = uv.exepath()
local function foundry_eval(code)
  return util.shell_quote(exe) .. " eval " .. util.shell_quote(code)
end

local function settings(out)
  local lines = {}
  for l in out:gmatch("[^\n]+") do if l:match("^%x+:%x+:%x+:%x+:") then lines[#lines + 1] = l end end
  return lines
end

describe("tty", function()
  before_all(function()
    if not foundry.exec{ "python3", "-c", "import pty" }.ok then skip("python3 with pty is needed") end
  end)

  it("is raw inside with_raw, and restored after an error", function()
    local out = on_pty("stty -g; " .. foundry_eval([[
      local tty = require "foundry.tty"
      pcall(tty.with_raw, 0, function()
        io.stdout:write(foundry.exec{ "sh", "-c", "stty -g < /dev/tty" }.stdout)
        error("boom")
      end)
      return "after"
    ]]) .. "; stty -g")
    local s = settings(out)
    expect(#s):equals(3)
    expect(s[2]).never:equals(s[1])
    expect(s[3]):equals(s[1])
  end)

  it("is restored when the program exits while raw", function()
    local out = on_pty("stty -g; " .. foundry_eval([[require("foundry.tty").raw(0); os.exit(3)]]) .. "; stty -g")
    local s = settings(out)
    expect(#s):equals(2)
    expect(s[2]):equals(s[1])
  end)

  it("is restored when the program dies of a fatal signal while raw", function()
    local out = on_pty("stty -g; " .. foundry_eval([[
      require("foundry.tty").raw(0)
      local uv = require "luv"
      uv.kill(uv.os_getpid(), "sigabrt")
      foundry.sleep(1000)
    ]]) .. "; echo status=$?; stty -g")
    local s = settings(out)
    expect(out):matches("status=134")
    expect(s[2]):equals(s[1])
  end)

  it("reports the window size of a terminal and refuses raw mode on a pipe", function()
    local out = on_pty("stty rows 33 cols 101; " .. foundry_eval([[return table.concat({ require("foundry.tty").size(0) }, "x")]]))
    expect(out):contains("33x101")
    expect(function() require("foundry.tty").raw(99) end):fails("tty.not_a_tty")
  end)
end)
