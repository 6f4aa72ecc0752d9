-- The vault: the Lua API, the foundry vault and foundry auth import commands run as real
-- processes, faults (wrong passphrase, damaged files, kill -9 and a full disk during set,
-- concurrent writers) and what a secret leaves behind in our own processes.
local uv = require "luv"
local fs = require "foundry.fs"
local json = require "foundry.json"
local vault = require "foundry.vault"
local V = require "foundry._vault"

-- The binary under test (when it is rebuilt during the run, Linux reports "… (deleted)").
local EXE = (uv.exepath():gsub(" %(deleted%)$", ""))
local PASS = "correct horse battery staple"
local CHEAP = { log2n = 10, r = 8, p = 1 }

local dir, home, path

-- A clean environment for child processes: nothing of ours leaks in by accident.
local function child_env(extra)
  local env = { FOUNDRY_HOME = home, PATH = os.getenv("PATH"), HOME = dir .. "/home" }
  if os.getenv("FOUNDRY_LUA_PATH") then env.FOUNDRY_LUA_PATH = os.getenv("FOUNDRY_LUA_PATH") end
  for _, k in ipairs({ "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" }) do
    if os.getenv(k) then env[k] = os.getenv(k) end
  end
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

local exec = require("foundry.exec").exec

-- Run `foundry ARGS...`; returns the exec result.
local function run(args, opts)
  opts = opts or {}
  local spec = { EXE, clear_env = true, env = child_env(opts.env), stdin = opts.stdin or "", timeout = 30000 }
  for _, a in ipairs(args) do spec[#spec + 1] = a end
  return exec(spec)
end

local function read(p) return fs.read(p) end

local function make_vault(kdf)
  local v = vault.init({ path = path, passphrase = PASS, kdf = kdf or CHEAP })
  v:set("alpha", "alpha-secret-value-1")
  v:set("beta", "beta-secret-value-2")
  return v
end

-- A child process we can watch and kill: spawn(argv, env) -> {pid=, stdin=, wait=fn}
local function spawn(args, env, with_stdin)
  local list = {}
  for k, v in pairs(child_env(env)) do list[#list + 1] = k .. "=" .. v end
  local stdin = with_stdin and uv.new_pipe(false) or nil
  local out, err = uv.new_pipe(false), uv.new_pipe(false)
  local status, signal, handle, pid
  local w = require("foundry._task").wait("child")
  local chunks = {}
  local pending = 3
  local function done() pending = pending - 1; if pending == 0 then w:resolve() end end
  handle, pid = uv.spawn(EXE, { args = args, env = list, stdio = { stdin, out, err } }, function(code, sig)
    status, signal = code, sig
    handle:close()
    done()
  end)
  assert(handle, pid)
  for _, p in ipairs({ out, err }) do
    p:read_start(function(_, data)
      if data then chunks[#chunks + 1] = data else p:close(); done() end
    end)
  end
  return {
    pid = pid,
    stdin = stdin,
    kill = function(sig) if not handle:is_closing() then handle:kill(sig) end end,
    wait = function()
      w:await()
      if stdin and not stdin:is_closing() then stdin:close() end
      return status, signal, table.concat(chunks)
    end,
  }
end

before_each(function()
  dir = fs.mkdtemp("/tmp/foundry-vault-spec-XXXXXX")
  home = dir .. "/fh"
  fs.mkdir(home .. "/data", tonumber("700", 8))
  fs.mkdir(dir .. "/home", tonumber("700", 8))
  path = home .. "/data/vault"
end)

after_each(function()
  vault.lock()
  fs.rm(dir)
end)

describe("vault API", function()
  it("stores, reads, lists and removes secrets", function()
    local v = make_vault()
    expect(v:get("alpha")):equals("alpha-secret-value-1")
    expect(v:set("alpha", "new-value")):is(false)
    expect(v:set("gamma", "x\0y")):is(true)
    expect(v:get("gamma")):equals("x\0y")
    local names = {}
    for _, e in ipairs(v:list()) do
      names[#names + 1] = e.name
      expect(e.size):is_a("number")
      expect(e.updated):ge(e.created)
      expect(e.value):is_nil()
    end
    expect(names):equals({ "alpha", "beta", "gamma" })
    v:rm("beta")
    expect(v:has("beta")):is(false)
    expect(function() v:rm("beta") end):fails("vault.missing")
    -- a second handle sees it all (another unlock of the same file)
    local w = vault.unlock({ path = path, passphrase = PASS })
    expect(w:get("alpha")):equals("new-value")
    expect(tostring(w)).never:matches("new%-value")
    expect(tostring(v)):matches("unlocked")
  end)

  it("never writes a value in clear", function()
    make_vault()
    local bytes = read(path)
    expect(bytes:find("alpha-secret-value-1", 1, true)):is_nil()
    expect(bytes:find("beta-secret-value-2", 1, true)):is_nil()
    expect(bytes:find("alpha", 1, true)):truthy() -- names are not secret
    expect(uv.fs_stat(path).mode & tonumber("777", 8)):equals(tonumber("600", 8))
  end)

  it("says 'wrong passphrase' and changes nothing", function()
    make_vault()
    local before = read(path)
    local err = expect(function() vault.unlock({ path = path, passphrase = "not it at all" }) end)
      :fails("vault.wrong_passphrase")
    expect(err.message):equals("wrong passphrase")
    expect(read(path)):equals(before)
  end)

  it("names a missing secret and the command that sets it", function()
    local v = make_vault()
    local err = expect(function() v:get("openai") end):fails("vault.missing")
    expect(err.message):contains("'openai'")
    expect(err.hint):equals("set it with: foundry vault set openai")
    expect(vault.resolve("vault:alpha", v)):equals("alpha-secret-value-1")
    expect(vault.resolve("plain value", v)):equals("plain value")
    expect(function() vault.resolve("vault:openai", v) end):fails("vault.missing")
  end)

  it("checks a preset's references without a key", function()
    make_vault():lock()
    local v = vault.open({ path = path })
    expect(v:unlocked()):is(false)
    expect(vault.refs({ a = "vault:alpha", b = { "vault:zeta", "env:X" }, c = 3 })):equals({ "alpha", "zeta" })
    vault.check({ anthropic = "vault:alpha" }, v)
    local err = expect(function() vault.check({ anthropic = "vault:alpha", openai = "vault:openai" }, v) end)
      :fails("vault.missing")
    expect(err.hint):contains("foundry vault set openai")
    expect(v:unlocked()):is(false)
  end)

  it("resolves through the process's default vault (FOUNDRY_HOME)", function()
    make_vault():lock()
    local old = os.getenv("FOUNDRY_HOME")
    uv.os_setenv("FOUNDRY_HOME", home)
    local ok, err = pcall(function()
      expect(vault.path()):equals(path)
      vault.default():unlock({ passphrase = PASS })
      expect(vault.get("beta")):equals("beta-secret-value-2")
      expect(vault.resolve("vault:alpha")):equals("alpha-secret-value-1")
    end)
    if old then uv.os_setenv("FOUNDRY_HOME", old) else uv.os_unsetenv("FOUNDRY_HOME") end
    assert(ok, err)
  end)

  it("wipes its keys on lock and needs the passphrase again", function()
    local v = make_vault()
    local w = vault.unlock({ path = path, passphrase = PASS })
    v:lock()
    expect(v:unlocked()):is(false)
    expect(function() v:unlock({ prompt = false }) end):fails("vault.locked")
    vault.lock() -- every handle of the process
    expect(w:unlocked()):is(false)
    v:unlock({ passphrase = PASS })
    expect(v:get("alpha")):equals("alpha-secret-value-1")
  end)

  it("outside a task a locked vault says so instead of waiting", function()
    make_vault():lock()
    local v = vault.open({ path = path })
    local co = coroutine.create(function() return v:get("alpha") end)
    local ok, err = coroutine.resume(co)
    expect(ok):is(false)
    expect(err.code):equals("vault.locked")
    expect(err.hint):contains("unlock it first")
    v:unlock({ passphrase = PASS })
    co = coroutine.create(function() return v:get("alpha") end) -- unlocked: get does not wait
    expect(select(2, coroutine.resume(co))):equals("alpha-secret-value-1")
  end)

  it("reads FOUNDRY_VAULT_PASSPHRASE once and wipes it from the environment", function()
    make_vault():lock()
    uv.os_setenv("FOUNDRY_VAULT_PASSPHRASE", PASS)
    local v = vault.unlock({ path = path, prompt = false })
    expect(os.getenv("FOUNDRY_VAULT_PASSPHRASE")):is_nil()
    expect(uv.os_environ().FOUNDRY_VAULT_PASSPHRASE):is_nil()
    expect(v:get("alpha")):equals("alpha-secret-value-1")
  end)

  it("works with a key file of mode 0600 and refuses a readable one", function()
    local kf = dir .. "/key"
    local v = vault.init({ path = path, key_file = kf })
    v:set("k", "key-file-secret")
    v:lock()
    expect(uv.fs_stat(kf).mode & tonumber("777", 8)):equals(tonumber("600", 8))
    expect(vault.open({ path = path }):info().kdf):equals("keyfile")
    expect(function() vault.unlock({ path = path, prompt = false }) end):fails("vault.locked")
    expect(vault.unlock({ path = path, key_file = kf }):get("k")):equals("key-file-secret")
    fs.chmod(kf, tonumber("644", 8))
    local err = expect(function() vault.unlock({ path = path, key_file = kf }) end):fails("vault.permissions")
    expect(err.message):contains("chmod 600")
  end)

  it("rekeys: new passphrase, same secrets", function()
    local v = make_vault()
    v:rekey({ passphrase = "another long passphrase", kdf = { log2n = 11 } })
    expect(v:get("beta")):equals("beta-secret-value-2")
    expect(function() vault.unlock({ path = path, passphrase = PASS }) end):fails("vault.wrong_passphrase")
    expect(vault.unlock({ path = path, passphrase = "another long passphrase" }):get("alpha"))
      :equals("alpha-secret-value-1")
    expect(V.info(path).log2n):equals(11)
  end)

  it("serialises writers in one process: both changes are kept", function()
    local v = make_vault()
    local w = vault.unlock({ path = path, passphrase = PASS })
    foundry.parallel({
      function() for i = 1, 5 do v:set("v" .. i, "from-v-" .. i) end end,
      function() for i = 1, 5 do w:set("w" .. i, "from-w-" .. i) end end,
    })
    local x = vault.unlock({ path = path, passphrase = PASS })
    expect(#x:list()):equals(12)
    expect(x:get("v5")):equals("from-v-5")
    expect(x:get("w5")):equals("from-w-5")
  end)

  it("runs the key derivation off the loop", function()
    local v = vault.init({ path = path, passphrase = PASS }) -- the default, slow parameters
    v:lock()
    expect(V.info(path).log2n):ge(15)
    local ticks, stop = 0, false
    local ticker = foundry.spawn(function()
      while not stop do foundry.sleep(5); ticks = ticks + 1 end
    end)
    local t0 = uv.hrtime()
    v:unlock({ passphrase = PASS })
    local ms = (uv.hrtime() - t0) / 1e6
    stop = true
    ticker:join()
    expect(ms):gt(20)
    -- the loop kept turning while scrypt ran (on the loop itself it would not turn at all;
    -- valgrind runs one thread at a time, so only a few turns are sure)
    expect(ticks):ge(os.getenv("FOUNDRY_VALGRIND") and 1 or 3)
  end)

  it("refuses damaged and exposed files, naming the problem", function()
    make_vault():lock()
    local good = read(path)
    local function with(bytes, code, pattern)
      fs.write(path, bytes, { mode = tonumber("600", 8) })
      local err = expect(function() vault.unlock({ path = path, passphrase = PASS }) end):fails(code)
      expect(err.message):matches(pattern)
      expect(err.message):contains(path)
    end
    with(good:sub(1, #good - 10), "vault.truncated", "truncated")
    with(good:sub(1, 50), "vault.truncated", "truncated")
    local i = 120
    with(good:sub(1, i - 1) .. string.char(good:byte(i) ~ 1) .. good:sub(i + 1), "vault.corrupt", "checksum")
    with("not a vault at all, just text\n", "vault.not_a_vault", "not a Foundry vault")
    with(good:sub(1, 8) .. "\0\9" .. good:sub(11), "vault.version", "version 9")
    fs.write(path, good, { mode = tonumber("600", 8) })
    fs.chmod(path, tonumber("644", 8))
    local err = expect(function() vault.open({ path = path }) end):fails("vault.permissions")
    expect(err.message):contains("chmod 600 " .. path)
    fs.chmod(path, tonumber("600", 8))
    expect(function() vault.open({ path = dir .. "/none" }) end):fails("vault.not_found")
  end)

  it("builds a redactor over its secrets", function()
    local v = make_vault()
    local r = v:redactor()
    expect((r:apply("a=alpha-secret-value-1 b=beta-secret-value-2"))):equals("a=[REDACTED:alpha] b=[REDACTED:beta]")
    expect(r:names()):equals({ "alpha", "beta" })
  end)

  it("misuse raises plain errors naming the argument", function()
    local v = make_vault()
    expect(function() v:get(3) end):fails("name: expected string")
    expect(function() v:set("x", nil) end):fails("value: expected string")
    expect(function() v:set("bad name", "v") end):fails("vault.invalid")
    expect(function() v:set("empty", "") end):fails("vault.invalid")
    expect(function() vault.open({ pth = "x" }) end):fails("did you mean 'path'")
    expect(function() vault.init({ path = path, passphrase = PASS }) end):fails("vault.exists")
    expect(function() vault.init({ path = dir .. "/v2", passphrase = "short" }) end):fails("at least 8")
  end)
end)

describe("foundry vault", function()
  local env = { FOUNDRY_VAULT_PASSPHRASE = PASS }

  it("set reads the value from stdin, never argv; get needs --reveal", function()
    make_vault():lock()
    local r = run({ "vault", "set", "openai" }, { env = env, stdin = "sk-proj-stdin-value-1234\n" })
    expect(r.status):equals(0)
    expect(r.stdout):equals("stored openai (24 bytes)\n")
    r = run({ "vault", "set", "openai", "on-the-command-line" }, { env = env })
    expect(r.status):equals(2)
    expect(r.stderr):contains("never taken from the command line")
    r = run({ "vault", "get", "openai" }, { env = env })
    expect(r.status):equals(2)
    expect(r.stdout .. r.stderr).never:contains("sk-proj-stdin-value")
    r = run({ "vault", "get", "openai", "--reveal" }, { env = env })
    expect(r.status):equals(0)
    expect(r.stdout):equals("sk-proj-stdin-value-1234\n")
    r = run({ "vault", "get", "nothing", "--reveal" }, { env = env })
    expect(r.status):equals(3)
    expect(r.stderr):contains("foundry vault set nothing")
  end)

  it("ls shows names, sizes and dates without a passphrase, never values", function()
    make_vault():lock()
    local r = run({ "vault", "ls" })
    expect(r.status):equals(0)
    expect(r.stdout):matches("^NAME%s+SIZE%s+CREATED%s+UPDATED\n")
    expect(r.stdout):contains("alpha")
    expect(r.stdout).never:contains("alpha-secret")
    r = run({ "vault", "ls", "--json" })
    local j = json.decode(r.stdout)
    expect(j.path):equals(path)
    expect(#j.secrets):equals(2)
    expect(j.secrets[1].name):equals("alpha")
    expect(j.secrets[1].size):equals(20)
    expect(r.stdout).never:contains("secret-value")
  end)

  it("wrong passphrase: exit 1, 'wrong passphrase', nothing changed", function()
    make_vault():lock()
    local before = read(path)
    local r = run({ "vault", "set", "alpha" }, { env = { FOUNDRY_VAULT_PASSPHRASE = "nope nope" }, stdin = "x" })
    expect(r.status):equals(1)
    expect(r.stderr):matches("^foundry: wrong passphrase\n")
    expect(read(path)):equals(before)
  end)

  it("refuses a damaged or exposed vault with a clear message", function()
    make_vault():lock()
    local good = read(path)
    fs.write(path, good:sub(1, #good - 1), { mode = tonumber("600", 8) })
    local r = run({ "vault", "ls" })
    expect(r.status):equals(1)
    expect(r.stderr):contains("truncated")
    local flipped = good:sub(1, 200) .. string.char(good:byte(201) ~ 0x40) .. good:sub(202)
    fs.write(path, flipped, { mode = tonumber("600", 8) })
    r = run({ "vault", "get", "alpha", "--reveal" }, { env = env })
    expect(r.status):equals(1)
    expect(r.stderr):contains("damaged (checksum mismatch)")
    fs.write(path, good, { mode = tonumber("640", 8) })
    r = run({ "vault", "ls" })
    expect(r.status):equals(1)
    expect(r.stderr):contains("chmod 600")
    fs.rm(path)
    r = run({ "vault", "ls" })
    expect(r.status):equals(3)
    expect(r.stderr):contains("foundry vault init")
  end)

  it("init, rm and rekey", function()
    local r = run({ "vault", "init" }, { env = env })
    expect(r.status):equals(0)
    expect(V.info(path).log2n):equals(vault.kdf_default().log2n)
    r = run({ "vault", "init" }, { env = env })
    expect(r.status):equals(1)
    expect(r.stderr):contains("already exists")
    run({ "vault", "set", "one" }, { env = env, stdin = "value-one" })
    r = run({ "vault", "rekey" },
      { env = { FOUNDRY_VAULT_PASSPHRASE = PASS, FOUNDRY_VAULT_NEW_PASSPHRASE = "brand new passphrase" } })
    expect(r.status):equals(0)
    r = run({ "vault", "get", "one", "--reveal" }, { env = { FOUNDRY_VAULT_PASSPHRASE = "brand new passphrase" } })
    expect(r.stdout):equals("value-one\n")
    r = run({ "vault", "rm", "one" }, { env = { FOUNDRY_VAULT_PASSPHRASE = "brand new passphrase" } })
    expect(r.status):equals(0)
    expect(V.info(path).entries):has_length(0)
  end)

  it("two concurrent sets: both entries present", function()
    make_vault():lock()
    local children = {}
    for i = 1, 4 do
      children[i] = foundry.spawn(function()
        return run({ "vault", "set", "c" .. i }, { env = env, stdin = "concurrent-" .. i })
      end)
    end
    for i = 1, 4 do expect(children[i]:join().status):equals(0) end
    local v = vault.unlock({ path = path, passphrase = PASS })
    for i = 1, 4 do expect(v:get("c" .. i)):equals("concurrent-" .. i) end
    expect(v:get("alpha")):equals("alpha-secret-value-1")
  end)

  it("kill -9 during set leaves the old vault or the new one, never a broken one", { timeout = 120000 }, function()
    make_vault():lock()
    local big = string.rep("0123456789abcdef", 60000) -- 960 KB: the write takes a while
    local outcomes = { old = 0, new = 0 }
    for round = 1, 12 do
      local c = spawn({ "vault", "set", "alpha" }, env, true)
      c.stdin:write(big .. round)
      c.stdin:shutdown()
      foundry.sleep(math.random(0, 60))
      c.kill("sigkill")
      c.wait()
      local v = vault.unlock({ path = path, passphrase = PASS })
      local got = v:get("alpha")
      v:lock()
      if got == big .. round then outcomes.new = outcomes.new + 1
      else
        expect(got == "alpha-secret-value-1" or got:sub(1, #big) == big):is(true)
        outcomes.old = outcomes.old + 1
      end
    end
    expect(outcomes.old + outcomes.new):equals(12)
  end)

  it("a full disk, or a writer killed mid-write, leaves the old vault", function()
    make_vault():lock()
    local before = read(path)
    -- SIGXFSZ kills the writer in the middle of writing the temporary file
    local r = exec({ "sh", "-c", "ulimit -f 32; exec \"$0\" vault set alpha", EXE,
      clear_env = true, env = child_env(env), stdin = string.rep("x", 500000) })
    expect(r.signal):equals(25) -- SIGXFSZ
    expect(read(path)):equals(before)
    local v = vault.unlock({ path = path, passphrase = PASS })
    expect(v:get("alpha")):equals("alpha-secret-value-1")
    -- the stale temporary file is removed by the next write
    local temps = 0
    for _, e in ipairs(fs.list(home .. "/data")) do if e.name:find(".tmp.", 1, true) then temps = temps + 1 end end
    expect(temps):equals(1)
    v:set("gamma", "g-value")
    temps = 0
    for _, e in ipairs(fs.list(home .. "/data")) do if e.name:find(".tmp.", 1, true) then temps = temps + 1 end end
    expect(temps):equals(0)
  end)

  it("lock tells the daemon, and says so when there is none", function()
    local r = run({ "vault", "lock" })
    expect(r.status):equals(0)
    expect(r.stdout):contains("no daemon is running")
  end)
end)

describe("secrets leave no trace in our processes", function()
  local env = { FOUNDRY_VAULT_PASSPHRASE = PASS }

  local function proc(pid, what)
    local f = io.open("/proc/" .. pid .. "/" .. what, "rb")
    if not f then return "" end
    local s = f:read("a")
    f:close()
    return s
  end

  it("not in argv, environ or ps of `foundry vault set`, nor in the file", function()
    make_vault():lock()
    local value = "sk-ant-api03-LEAKCHECK-" .. string.rep("Q", 30)
    local c = spawn({ "vault", "set", "anthropic" }, env, true)
    -- it unlocks first (scrubbing the passphrase), then waits for the value on stdin
    local environ
    for _ = 1, 200 do
      environ = proc(c.pid, "environ")
      if environ ~= "" and not environ:find(PASS, 1, true) then break end
      foundry.sleep(25)
    end
    expect(environ):contains("FOUNDRY_HOME=")
    expect(environ).never:contains(PASS)
    expect(proc(c.pid, "cmdline")).never:contains(PASS)
    local ps = exec({ "ps", "-eo", "pid,args" }).stdout
    expect(ps):contains(tostring(c.pid))
    expect(ps).never:contains(PASS)
    c.stdin:write(value)
    c.stdin:shutdown()
    local status, _, out = c.wait()
    expect(status):equals(0)
    expect(out).never:contains(value)
    expect(read(path)).never:contains(value)
    expect(read(path)).never:contains(PASS)
  end)

  it("not in the environ or argv of a process that keeps the vault unlocked", function()
    make_vault():lock()
    local code = "local v = require('foundry.vault').unlock{prompt=false}; assert(v:get('alpha')); " ..
      "require('foundry.vault').protect_process(); io.stdout:write('ready\\n'); io.stdout:flush(); foundry.sleep(20000)"
    local c = spawn({ "eval", code }, env, false)
    local environ
    for _ = 1, 400 do
      environ = proc(c.pid, "environ")
      if environ ~= "" and not environ:find(PASS, 1, true) then break end
      foundry.sleep(25)
    end
    foundry.sleep(100)
    expect(environ).never:contains(PASS)
    expect(proc(c.pid, "environ")).never:contains("alpha-secret-value-1")
    expect(proc(c.pid, "cmdline")).never:contains("alpha-secret-value-1")
    expect(proc(c.pid, "status")):contains("State:")
    local ps = exec({ "ps", "-eo", "pid,args" }).stdout
    expect(ps).never:contains("alpha-secret-value-1")
    expect(ps).never:contains(PASS)
    c.kill("sigkill")
    c.wait()
  end)

  it("protect_process makes the process undumpable", function()
    local r = run({ "eval", "require('foundry.vault').protect_process(); return require('foundry._vault').dumpable()" })
    expect(r.stdout):equals("false\n")
    r = run({ "eval", "return require('foundry._vault').dumpable()" })
    expect(r.stdout):equals("true\n")
  end)
end)

describe("foundry auth import", function()
  local secrets = {
    OPENAI = "sk-proj-IMPORTTEST-openai-0000000000001",
    GH = "gho_IMPORTTEST00000000000000000000000002",
    CLAUDE_ACCESS = "sk-ant-oat01-IMPORTTEST-access-000000003",
    CLAUDE_REFRESH = "sk-ant-ort01-IMPORTTEST-refresh-00000004",
    CODEX_REFRESH = "rt_IMPORTTEST-codex-refresh-0000000005",
    GEMINI = "AIzaIMPORTTEST-gemini-key-00000000000006",
  }

  local function setup_home()
    local h = dir .. "/home"
    fs.mkdir(h .. "/.claude"); fs.mkdir(h .. "/.codex"); fs.mkdir(h .. "/.gemini"); fs.mkdir(dir .. "/bin")
    fs.write(h .. "/.claude/.credentials.json", json.encode({ claudeAiOauth = {
      accessToken = secrets.CLAUDE_ACCESS, refreshToken = secrets.CLAUDE_REFRESH, expiresAt = 4102444800000 } }))
    fs.write(h .. "/.codex/auth.json", json.encode({ OPENAI_API_KEY = json.null,
      tokens = { access_token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", refresh_token = secrets.CODEX_REFRESH } }))
    fs.write(h .. "/.gemini/.env", 'GEMINI_API_KEY="' .. secrets.GEMINI .. '"\n')
    -- a stand-in for the GitHub CLI (the real one needs a GitHub login)
    fs.write(dir .. "/bin/gh", "#!/bin/sh\n[ \"$1 $2\" = 'auth token' ] && echo " .. secrets.GH .. "\n",
      { mode = tonumber("755", 8) })
  end

  it("finds env keys, gh and the Claude, Codex and Gemini files; stores them under preset names", function()
    setup_home()
    local e = { FOUNDRY_VAULT_PASSPHRASE = PASS, OPENAI_API_KEY = secrets.OPENAI,
      PATH = dir .. "/bin:" .. os.getenv("PATH") }
    -- without a terminal and without --yes: shows, stores nothing
    local r = run({ "auth", "import" }, { env = e })
    expect(r.status):equals(0)
    expect(r.stdout):contains("nothing stored")
    expect(vault.exists(path)):is(false)
    for _, s in pairs(secrets) do expect(r.stdout .. r.stderr).never:contains(s) end
    r = run({ "auth", "import", "--yes", "--json" }, { env = e })
    expect(r.status):equals(0)
    for _, s in pairs(secrets) do expect(r.stdout .. r.stderr).never:contains(s) end
    local j = json.decode(r.stdout)
    expect(j.created_vault):is(true)
    local by = {}
    for _, f in ipairs(j.found) do by[f.name] = f end
    expect(by.openai.sources):equals({ "env OPENAI_API_KEY" })
    expect(by.github.sources):equals({ "gh auth token" })
    expect(by.anthropic.sources[1]):contains(".credentials.json")
    for _, f in ipairs(j.found) do expect(f.imported):is(true) end
    local v = vault.unlock({ path = path, passphrase = PASS })
    expect(v:get("openai")):equals(secrets.OPENAI)
    expect(v:get("github")):equals(secrets.GH)
    expect(v:get("anthropic")):equals(secrets.CLAUDE_ACCESS)
    expect(v:get("gemini")):equals(secrets.GEMINI)
    expect(v:get("codex-auth")):contains(secrets.CODEX_REFRESH)
    expect(v:get("claude-code-credentials")):contains(secrets.CLAUDE_REFRESH)
    v:lock()
    -- again: everything is already there
    r = run({ "auth", "import", "--yes", "--json" }, { env = e })
    j = json.decode(r.stdout)
    for _, f in ipairs(j.found) do
      expect(f.status):equals("same")
      expect(f.imported):is(false)
    end
  end)

  it("finds nothing in an empty home", function()
    local r = run({ "auth", "import", "--yes" }, { env = { FOUNDRY_VAULT_PASSPHRASE = PASS } })
    expect(r.status):equals(0)
    expect(r.stdout):contains("no credentials found")
    expect(vault.exists(path)):is(false)
  end)
end)
