-- Presets: loading, extends, strict validation with file:line and suggestions, the
-- restricted environment, saving.
local preset = require "foundry.preset"
local stages = require "foundry.stages"
local fs = require "foundry.fs"
local uv = require "luv"

local dir, old_path, old_home
before_each(function()
  dir = fs.mkdtemp("/tmp/foundry-presets-XXXXXX")
  fs.mkdir(dir .. "/lib")
  old_path, old_home = os.getenv("FOUNDRY_PRESET_PATH"), os.getenv("FOUNDRY_HOME")
  uv.os_setenv("FOUNDRY_PRESET_PATH", dir .. "/lib")
  uv.os_setenv("FOUNDRY_HOME", dir .. "/home")
end)
after_each(function()
  require("foundry.state").close()
  if old_path then uv.os_setenv("FOUNDRY_PRESET_PATH", old_path) else uv.os_unsetenv("FOUNDRY_PRESET_PATH") end
  if old_home then uv.os_setenv("FOUNDRY_HOME", old_home) else uv.os_unsetenv("FOUNDRY_HOME") end
  fs.rm(dir)
end)

local function write(name, text)
  local path = dir .. "/" .. name
  fs.write(path, text)
  return path
end

describe("shipped presets", function()
  for _, name in ipairs({ "shell", "claude", "codex", "gemini" }) do
    it(name .. " loads and validates", function()
      local p, info = preset.load(name)
      expect(info.origin):equals("shipped")
      expect(p.agent.command[1]):is_a("string")
      expect(p.description):is_a("string")
      expect(p.extends):is_nil()
    end)
  end

  it("claude extends shell: maps merged, agent replaced, chain recorded", function()
    local p, info = preset.load("claude")
    expect(info.chain):equals({ "shell", "claude" })
    expect(p.agent.name):equals("claude")
    expect(p.env.TERM):equals("xterm-256color")
    expect(p.env.DISABLE_AUTOUPDATER):equals("1")
    expect(p.credentials.anthropic):equals("vault:anthropic")
    expect(p.network):equals("allowlist")
  end)

  it("are listed with their descriptions", function()
    local names = {}
    for _, e in ipairs(preset.list()) do if e.origin == "shipped" then names[#names + 1] = e.name end end
    expect(names):equals({ "claude", "codex", "gemini", "shell" })
  end)
end)

describe("validation", function()
  it("names the file, line and key of an unknown key, with a suggestion", function()
    local path = write("bad.lua", "return {\n  image = 'x',\n  netwrok = 'none',\n}\n")
    local err = expect(function() preset.load(path) end):fails("preset.invalid")
    expect(err.message):equals(path .. ":3: unknown key 'netwrok' — did you mean 'network'?")
  end)

  it("reports wrong types with the key path", function()
    local path = write("bad.lua", "return {\n  cpus = 'two',\n}\n")
    expect(function() preset.load(path) end):fails(":2: cpus: expected number, got 'two'")
    path = write("bad2.lua", "return {\n  mounts = {\n    '/a:/b',\n    { source = 1, target = '/x' },\n  },\n}\n")
    expect(function() preset.load(path) end):fails("mounts%[2%]%.source: expected string, got 1")
  end)

  it("reports bad values of an enum with a suggestion", function()
    local path = write("bad.lua", "return { network = 'alowlist' }")
    expect(function() preset.load(path) end):fails("network: 'alowlist' is not one of .* did you mean 'allowlist'")
  end)

  it("finds nested unknown keys", function()
    local path = write("bad.lua", "return {\n  agent = {\n    name = 'x',\n    comand = 'x',\n  },\n}\n")
    expect(function() preset.load(path) end):fails(":4: agent: unknown key 'comand' — did you mean 'command'")
  end)

  it("checks values: memory sizes, mounts, credentials, env names, workdir", function()
    local cases = {
      { "memory = '4 gigs'", "memory: expected a size" },
      { "mounts = { '/a' }", "mounts%[1%]: '/a' is not HOST:CONTAINER" },
      { "mounts = { '/a:rel' }", "must be absolute" },
      { "mounts = { '/a:/b:rx' }", "expected 'ro' or 'rw'" },
      { "credentials = { anthropic = 'sk-ant-123' }", "expected 'vault:NAME'" },
      { "env = { ['A B'] = 'x' }", "not a valid variable name" },
      { "workdir = '../up'", "relative path inside" },
      { "cpus = 0", "more than 0" },
      { "pids = 3", "at least 16" },
      { "stages = { remove = 'mcp' }", "stages%.remove: expected a list" },
      { "files = { ['.bashrc'] = 'x' }", "start with ~/" },
    }
    for i, c in ipairs(cases) do
      local path = write("v" .. i .. ".lua", "return { " .. c[1] .. " }")
      expect(function() preset.load(path) end):fails(c[2])
    end
  end)

  it("points at the line of a function value", function()
    local path = write("f.lua", "return {\n  stages = {\n    replace = {\n      deps = 42,\n    },\n  },\n}\n")
    expect(function() preset.load(path) end):fails(":4: stages%.replace%.deps: expected function or a table, got 42")
  end)

  it("refuses a file that does not return a table", function()
    local path = write("n.lua", "return 42")
    expect(function() preset.load(path) end):fails("returns a table, got number")
  end)

  it("reports syntax errors with the file and line", function()
    local path = write("s.lua", "return {\n  image = ,\n}")
    expect(function() preset.load(path) end):fails("s%.lua:2:")
  end)
end)

describe("extends", function()
  it("follows a relative path from the extending file", function()
    fs.mkdir(dir .. "/sub")
    write("sub/base.lua", "return { image = 'base:1', env = { A = '1', B = '2' }, mounts = { '/a:/a' } }")
    local path = write("child.lua", "return { extends = 'sub/base.lua', env = { B = false, C = '3' }, mounts = { '/c:/c:ro' } }")
    local p, info = preset.load(path)
    expect(p.image):equals("base:1")
    expect(p.env):equals({ A = "1", C = "3" })
    expect(p.mounts):equals({ "/a:/a", "/c:/c:ro" })
    expect(#info.chain):equals(2)
  end)

  it("finds names on FOUNDRY_PRESET_PATH before shipped presets", function()
    write("lib/team.lua", "return { extends = 'claude', image = 'team:1', setup = { 'make bootstrap' } }")
    local p = preset.load("team")
    expect(p.image):equals("team:1")
    expect(p.agent.name):equals("claude")
    expect(p.setup):equals({ "make bootstrap" })
  end)

  it("lets a library preset extend the shipped one of the same name", function()
    write("lib/claude.lua", "return { extends = 'claude', cpus = 4 }")
    local p, info = preset.load("claude")
    expect(info.origin):equals("library")
    expect(p.cpus):equals(4)
    expect(p.agent.name):equals("claude")
    expect(info.chain):equals({ "shell", "claude", dir .. "/lib/claude.lua" })
  end)

  it("detects cycles", function()
    write("lib/a.lua", "return { extends = 'b' }")
    write("lib/b.lua", "return { extends = 'a' }")
    expect(function() preset.load("a") end):fails("cycle")
  end)

  it("says when a name is not found, with a suggestion", function()
    local err = expect(function() preset.load("claud") end):fails("preset.not_found")
    expect(err.message):matches("did you mean 'claude'")
  end)

  it("combines stage changes along the chain", function()
    write("lib/p1.lua", "return { stages = { remove = { 'mcp' } } }")
    local path = write("p2.lua", [[
return {
  extends = 'p1',
  stages = { add = { { name = 'seed', after = 'deps', run = function(sb, ctx) end } } },
}]])
    local p = preset.load(path)
    local base = {}
    for i, n in ipairs(stages.ORDER) do base[i] = { name = n, run = function() end } end
    local names = {}
    for _, s in ipairs(stages.compose(base, p.stages)) do names[#names + 1] = s.name end
    expect(table.concat(names, " ")):equals("provision system auth agent-config workspace deps seed customize health ready")
  end)
end)

describe("the restricted environment", function()
  it("has no io, os.execute, require or load", function()
    local path = write("r.lua", "return { description = table.concat({ type(io), type(os.execute), type(require), type(load), type(os.getenv) }, ' ') }")
    expect(preset.load(path).description):equals("nil nil nil nil function")
  end)

  it("stops a preset that loops forever", function()
    local path = write("loop.lua", "while true do pcall(function() end) end")
    local old = preset.INSTRUCTION_BUDGET
    preset.INSTRUCTION_BUDGET = 100000
    local ok, err = pcall(preset.load, path)
    preset.INSTRUCTION_BUDGET = old
    expect(ok):is(false)
    expect(err.code):equals("preset.budget")
  end)
end)

describe("serialize", function()
  it("writes plain data that loads back to the same table", function()
    local p = { image = "img:1", network = "none", env = { A = "x y", ["B_2"] = "\"q\"" }, mounts = { "/a:/b:ro" },
                cpus = 1.5, memory = "2g", agent = { name = "bash", command = { "bash", "-l" } } }
    local path = write("saved.lua", preset.serialize(p, "saved by a test"))
    expect(preset.load(path)):equals(p)
  end)

  it("refuses functions", function()
    expect(function() preset.serialize({ setup = { function() end } }) end):fails("cannot save a function")
  end)
end)

describe("saved presets", function()
  it("saves plain data as a file recorded in the state database, found by name", function()
    local path = preset.save("mine", { extends = "shell", image = "img:2", env = { A = "1" } }, "saved by a test")
    expect(path):equals(dir .. "/home/data/presets/mine.lua")
    expect(fs.read(path)):matches("^%-%- saved by a test\n")
    local p, info = preset.load("mine")
    expect(info.origin):equals("saved")
    expect(p.image):equals("img:2")
    expect(p.agent.name):equals("bash")
    local found = false
    for _, e in ipairs(preset.list()) do if e.name == "mine" and e.origin == "saved" then found = true end end
    expect(found):is(true)
    preset.remove("mine")
    expect(fs.exists(path)):is(false)
    expect(function() preset.load("mine") end):fails("preset.not_found")
    expect(function() preset.remove("mine") end):fails("preset.not_found")
  end)

  it("refuses invalid names and invalid presets", function()
    expect(function() preset.save("../x", { image = "a" }) end):fails("usage")
    expect(function() preset.save("ok", { netwrok = "none" }) end):fails("did you mean 'network'")
  end)
end)

describe("parse_mount", function()
  it("expands ~ and relative host paths, keeps the mode", function()
    local home = os.getenv("HOME")
    expect(preset.parse_mount("~/x:/y:ro")):equals({ source = home .. "/x", target = "/y", read_only = true })
    expect(preset.parse_mount("rel:/y").source):equals(uv.cwd() .. "/rel")
    expect(preset.parse_mount({ source = "/a", target = "/b" })):equals({ source = "/a", target = "/b", read_only = false })
  end)
end)

describe("a preset's network policy", function()
  it("names a policy file relative to the preset's own file, kept absolute", function()
    fs.mkdir(dir .. "/p")
    write("p/strict.lua", "return { extends = 'default', allow = { 'registry.example.internal' } }\n")
    write("lib/team.lua", "return { policy = '../p/strict.lua' }\n")
    local p = preset.load("team")
    expect(p.policy):equals(dir .. "/p/strict.lua")
    local r = require("foundry.sandbox").resolve({ preset = "team" })
    expect(r.policy):equals(dir .. "/p/strict.lua")
  end)

  it("refuses a policy that does not load before anything is created, with file:line", function()
    write("bad.lua", "return { allow = { 'a.example' },\n  mode = 'sometimes' }\n")
    local err = expect(function() require("foundry.sandbox").resolve({ policy = dir .. "/bad.lua" }) end):fails("policy.invalid")
    expect(err.message):matches("bad%.lua:2: mode: 'sometimes' is not one of")
    write("syntax.lua", "return {\n  allow = { 'a.example' \n")
    err = expect(function() require("foundry.sandbox").resolve({ policy = dir .. "/syntax.lua" }) end):fails("policy.invalid")
    expect(err.message):matches("syntax%.lua:%d")
    expect(function() require("foundry.sandbox").resolve({ policy = "no-such-policy" }) end):fails("policy.not_found")
    -- a bad value in what the file extends: that file is checked on its own, with its line
    write("parent.lua", "return {\n  extends = 'default',\n  limits = {\n    rate = -5,\n  },\n}\n")
    write("child.lua", "return { extends = " .. string.format("%q", dir .. "/parent.lua") .. ", allow = { 'a.example' } }\n")
    err = expect(function() require("foundry.sandbox").resolve({ policy = dir .. "/child.lua" }) end):fails("policy.invalid")
    expect(err.message):matches("parent%.lua:4: limits%.rate: must not be negative")
  end)
end)
