-- Redaction through the Lua API: secrets by name, token shapes, streams split anywhere,
-- error objects, the process-wide redactor.
local redact = require "foundry.redact"
local errors = require "foundry.errors"

local KEY = "sk-ant-api03-" .. string.rep("k", 40)
local GH = "ghp_" .. string.rep("A1", 18)

describe("redact.new and apply", function()
  it("replaces secret values with their names", function()
    local r = redact.new({ anthropic = KEY, db_password = "hunter2-but-longer" })
    local out, n = r:apply("key=" .. KEY .. " pw=hunter2-but-longer end")
    expect(out):equals("key=[REDACTED:anthropic] pw=[REDACTED:db_password] end")
    expect(n):equals(2)
    expect(r:names()):equals({ "anthropic", "db_password" })
    expect(tostring(r)):matches("^foundry.redact.Redactor")
    expect(tostring(r):find("hunter2", 1, true)):is_nil()
  end)

  it("replaces token shapes without being told the values", function()
    local r = redact.new()
    expect((r:apply("token " .. GH))):equals("token [REDACTED:github_token]")
    expect((r:apply("Authorization: Bearer abcdef.ghijkl-123\n"))):equals("Authorization: Bearer [REDACTED:bearer]\n")
    expect((r:apply("AKIAIOSFODNN7EXAMPLE"))):equals("[REDACTED:aws_access_key]")
    expect((r:apply("nothing secret here"))):equals("nothing secret here")
    expect(redact.shapes()):contains("jwt")
    local plain = redact.new(nil, { shapes = false })
    expect((plain:apply("token " .. GH))):equals("token " .. GH)
    expect((redact.new(nil, false):apply(GH))):equals(GH)
  end)

  it("lists secrets too short to redact", function()
    local r, skipped = redact.new({ pin = "123", ok = "long-enough" })
    expect(skipped):equals({ "pin" })
    expect((r:apply("123 long-enough"))):equals("123 [REDACTED:ok]")
  end)

  it("catches the tokens inside a structured secret", function()
    local blob = '{"access_token":"ya29.a0Af-TOKEN0123456789xyz",' ..
      '"refresh_token":"1//0gREFRESH0123456789abc","scope":"email"}'
    local r = redact.new({ ["gemini-oauth"] = blob })
    expect((r:apply("sent ya29.a0Af-TOKEN0123456789xyz"))):equals("sent [REDACTED:gemini-oauth]")
    expect((r:apply("scope: email"))):equals("scope: email")
  end)

  it("raises plain errors on misuse", function()
    expect(function() redact.new("x") end):fails("secrets: expected a table")
    expect(function() redact.new({ a = 1 }) end):fails("expected a string value")
    local r = redact.new()
    r:close()
    expect(function() r:apply("x") end):fails("closed")
  end)
end)

describe("redaction streams", function()
  it("catches a secret split across chunks, wherever the split", function()
    local r = redact.new({ anthropic = KEY })
    local text = "line one\nkey: " .. KEY .. "\nBearer abcdefghij12345 done\n"
    local want = r:apply(text)
    expect(want):equals("line one\nkey: [REDACTED:anthropic]\nBearer [REDACTED:bearer] done\n")
    for cut = 1, #text - 1 do
      local s = r:stream()
      local got = s:push(text:sub(1, cut)) .. s:push(text:sub(cut + 1)) .. s:finish()
      expect(got):equals(want)
    end
    local s = r:stream()
    local parts = {}
    for i = 1, #text do parts[#parts + 1] = s:push(text:sub(i, i)) end
    parts[#parts + 1] = s:finish()
    expect(table.concat(parts)):equals(want)
  end)

  it("holds back only what could still be a secret", function()
    local r = redact.new({ anthropic = KEY })
    local s = r:stream()
    expect(s:push("hello world\n")):equals("hello world\n")
    expect(s:pending()):equals(0)
    expect(s:push("x " .. KEY:sub(1, 20))):equals("x ")
    expect(s:pending()):equals(20)
    expect(s:flush()):equals(KEY:sub(1, 20)) -- an idle flush shows it, as asked
    expect(s:finish()):equals("")
    expect(tostring(s)):matches("0 bytes held")
    s:close()
    expect(function() s:push("x") end):fails("closed")
  end)

  it("gives what apply gives for random texts and chunkings", function()
    local names = {}
    local secrets = {}
    local alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    math.randomseed(7)
    for i = 1, 30 do
      local t = {}
      for k = 1, math.random(6, 40) do
        local c = math.random(1, #alphabet)
        t[k] = alphabet:sub(c, c)
      end
      secrets["s" .. i] = table.concat(t)
      names[i] = "s" .. i
    end
    local r = redact.new(secrets)
    local fill = { "the ", "log ", "\n", "Bearer ", "sk-", "ghp_", "eyJ", ".", " ", "AKIA" }
    for _ = 1, 100 do
      local parts = {}
      for _ = 1, math.random(5, 40) do
        if math.random(3) == 1 then parts[#parts + 1] = secrets[names[math.random(#names)]]
        else parts[#parts + 1] = fill[math.random(#fill)] end
      end
      local text = table.concat(parts)
      local want = r:apply(text)
      for _, v in pairs(secrets) do expect(want:find(v, 1, true)):is_nil() end
      local s, got, i = r:stream(), {}, 1
      while i <= #text do
        local n = math.random(1, 7)
        got[#got + 1] = s:push(text:sub(i, i + n - 1))
        i = i + n
      end
      got[#got + 1] = s:finish()
      expect(table.concat(got)):equals(want)
    end
  end)
end)

describe("the process-wide redactor", function()
  after_each(function() redact.set_global(nil) end)

  it("redacts shapes by default and the installed secrets once set", function()
    expect(redact.text("x " .. GH)):equals("x [REDACTED:github_token]")
    redact.set_global(redact.new({ db = "a-db-password-123" }))
    expect(redact.text("pw a-db-password-123")):equals("pw [REDACTED:db]")
  end)

  it("redacts error objects for printing", function()
    redact.set_global(redact.new({ db = "a-db-password-123" }))
    local e = errors.new("x.failed", "login with a-db-password-123 failed", "retry a-db-password-123")
    local safe = redact.error(e)
    expect(safe.code):equals("x.failed")
    expect(safe.message):equals("login with [REDACTED:db] failed")
    expect(safe.hint):equals("retry [REDACTED:db]")
    expect(errors.is(safe, "x.failed")):is(true)
    expect(e.message):contains("a-db-password-123") -- the original is untouched
    expect(redact.error("plain a-db-password-123")):equals("plain [REDACTED:db]")
  end)
end)
