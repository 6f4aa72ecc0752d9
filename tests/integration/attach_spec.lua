-- foundry attach on a real pseudo-terminal: raw mode, typing, window resizes, the detach
-- key, the session surviving a detach, and the terminal restored afterwards.
local L = dofile("tests/integration/lib.lua")
L.skip = skip

local env
before_all(function()
  env = L.setup()
  if not foundry.exec{ "python3", "-c", "import pty" }.ok then skip("python3 with pty is needed") end
  require("foundry.sandbox").create({ name = "att", repo = env.repo })
end)
after_all(function()
  pcall(function() require("foundry.sandbox").get("att"):destroy({ discard = true }) end)
  L.teardown()
end)

local function settings(out)
  local lines = {}
  for l in out:gsub("\r", ""):gmatch("[^\n]+") do if l:match("^%x+:%x+:%x+:%x+:") then lines[#lines + 1] = l end end
  return lines
end

local function attach_script(extra)
  return "stty -g; " .. L.q(L.exe) .. " attach att" .. (extra or "") .. "; echo status=$?; stty -g"
end

describe("foundry attach", function()
  it("types into the session, forwards resizes, detaches with Ctrl-P Ctrl-Q, restores the terminal", function()
    local r = L.pty(attach_script(), {
      { sleep = 1.5 },
      { send = "echo hello-$((6*7))\r", expect = "hello-42" },
      { resize = { 40, 120 }, sleep = 0.5 },
      { send = "stty size\r", expect = "(39|40) 120" }, -- tmux keeps a row for its status line
      { send = "\16\17", expect = "detached from att" },
      { expect = "status=0" },
    })
    if not r.ok then error(r.stderr .. "\n" .. r.stdout:sub(-600):gsub("\27", "^["), 0) end
    local s = settings(r.stdout)
    expect(#s):equals(2)
    expect(s[2]):equals(s[1])
    local ls = L.ok{ "exec", "att", "tmux", "ls" }.stdout
    expect(ls):matches("^main:")
  end)

  it("returns to the same session after a detach, and ends when the shell exits", function()
    local r = L.pty(attach_script(), {
      { expect = "hello-42" },
      { send = "echo again-$((1+1))\r", expect = "again-2" },
      { send = "exit\r", expect = "status=0" },
    })
    if not r.ok then error(r.stderr .. "\n" .. r.stdout:sub(-600):gsub("\27", "^["), 0) end
    expect(L.cli{ "exec", "att", "tmux", "ls" }.status).never:equals(0)
  end)

  it("holds a lone Ctrl-P until the next key decides", function()
    local r = L.pty(attach_script(" --no-tmux --command 'cat -v'"), {
      { sleep = 1 },
      { send = "\16x\r", expect = "\\^Px" },
      { send = "\4", expect = "status=0" },
    })
    if not r.ok then error(r.stderr .. "\n" .. r.stdout:sub(-600):gsub("\27", "^["), 0) end
  end)

  it("new with no arguments on a terminal asks a few questions, creates, then attaches", function()
    local r = L.pty("cd " .. L.q(env.repo) .. " && " .. L.q(L.exe) .. " new; echo status=$?", {
      { expect = "repository" }, { send = "\r", expect = "preset" }, { send = "\r", expect = "name" },
      { send = "wiz\r", expect = "branch" }, { send = "\r", expect = "network" },
      { send = "none\r", expect = "\\[wiz\\]", timeout = 60 },
      { send = "\16\17", expect = "status=0" },
    })
    if not r.ok then error(r.stderr .. "\n" .. r.stdout:sub(-600):gsub("\27", "^["), 0) end
    local info = L.ok{ "info", "wiz", "--json" }.json
    expect(info.network):equals("none")
    expect(info.branch):equals("sandbox/wiz")
    L.ok{ "rm", "-y", "wiz" }
  end)

  it("refuses without a terminal (exit 2)", function()
    expect(L.cli{ "attach", "att" }.status):equals(2)
  end)
end)
