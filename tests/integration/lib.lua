-- Helpers for the lifecycle integration specs: a private FOUNDRY_HOME, a test repository,
-- the CLI as a child process, and the "zero trace" check. Loaded with dofile().
local uv = require "luv"
local fs = require "foundry.fs"
local json = require "foundry.json"
local util = require "foundry.util"

local L = {}
L.IMAGE = os.getenv("FOUNDRY_TEST_IMAGE") or "foundry-test:base"
L.exe = uv.exepath()

local saved = {}
local function setenv(k, v)
  if saved[k] == nil then saved[k] = os.getenv(k) or false end
  if v then uv.os_setenv(k, v) else uv.os_unsetenv(k) end
end

--- Skip unless the engine answers and the test image exists.
function L.require_engine()
  local docker = require "foundry.docker"
  local ok = pcall(docker.ping, { timeout = 3000 })
  if not ok then L.skip("no Docker engine (bash tests/lib/dockerd.sh)") end
  if not docker.image_exists(L.IMAGE) then L.skip("no " .. L.IMAGE .. " (bash tests/image/build.sh)") end
end

--- A fresh FOUNDRY_HOME and a repository with a few commits; returns {home=, repo=, root=}.
function L.setup()
  L.require_engine()
  local root = fs.mkdtemp("/tmp/foundry-it-XXXXXX")
  local ok, env = pcall(L._setup, root)
  if not ok then
    foundry.exec{ "rm", "-rf", root }
    error(env, 0)
  end
  return env
end

function L._setup(root)
  local env = { home = root .. "/home", repo = root .. "/repo", root = root }
  -- private copies of the binaries: a rebuild of build/ meanwhile must not pull them away
  local bindir = (uv.exepath():gsub(" %(deleted%)$", "")):match("^(.*)/")
  fs.mkdir(root .. "/bin")
  foundry.exec{ "cp", bindir .. "/foundry", bindir .. "/foundry-shim", root .. "/bin/", check = true }
  if fs.is_dir(bindir .. "/lib") then foundry.exec{ "cp", "-r", bindir .. "/lib", root .. "/bin/", check = true } end
  L.exe = root .. "/bin/foundry"
  setenv("FOUNDRY_HOME", env.home)
  setenv("FOUNDRY_IMAGE", L.IMAGE)
  setenv("FOUNDRY_PRESET_PATH", root .. "/presets")
  fs.mkdir(root .. "/presets")
  local function git(...)
    local argv = { "git", "-C", env.repo, ... }
    argv.check = true
    foundry.exec(argv)
  end
  foundry.exec{ "git", "init", "-q", "-b", "main", env.repo, check = true }
  git("config", "user.email", "t@example.com")
  git("config", "user.name", "Tester")
  fs.write(env.repo .. "/README.md", "# test\n")
  fs.mkdir(env.repo .. "/src")
  fs.write(env.repo .. "/src/app.txt", "app\n")
  git("add", ".")
  git("commit", "-q", "-m", "initial")
  git("branch", "feature")
  L.env = env
  return env
end

--- Stop the daemon the tests started, restore the environment, remove the files.
function L.teardown()
  if not L.env then return end
  pcall(function() require("foundry.daemon_client").stop({ timeout = 5000 }) end)
  pcall(function() require("foundry.sandbox").prune({}) end)
  require("foundry.state").close()
  for k, v in pairs(saved) do if v then uv.os_setenv(k, v) else uv.os_unsetenv(k) end end
  saved = {}
  foundry.exec{ "rm", "-rf", L.env.root }
  L.env = nil
end

--- Run the CLI: `L.cli{"new", "-d", cwd=, stdin=, timeout=}` -> {status=, stdout=, stderr=, json=}.
function L.cli(args)
  local argv = { L.exe }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  argv.cwd = args.cwd or (L.env and L.env.repo)
  argv.stdin = args.stdin
  argv.timeout = args.timeout or 120000
  argv.env = args.env
  local r = foundry.exec(argv)
  local ok, v = pcall(json.decode, r.stdout)
  if ok then r.json = v end
  return r
end

--- Like cli, but raises when the exit status is not `want` (default 0).
function L.ok(args, want)
  local r = L.cli(args)
  if r.status ~= (want or 0) then
    error(string.format("foundry %s: exit %d (wanted %d)\nstdout: %s\nstderr: %s", table.concat(args, " "),
      r.status, want or 0, r.stdout, r.stderr), 2)
  end
  return r
end

--- What Foundry has on the host for this home: containers, rows, run dirs, workspaces,
--- branches of the test repository (other than main/feature and `keep`).
function L.traces(keep)
  local docker = require "foundry.docker"
  local paths = require "foundry.paths"
  local t = {}
  for _, c in ipairs(docker.containers({ labels = { ["dev.foundry.home"] = paths.state() } })) do
    t[#t + 1] = "container " .. c.name
  end
  for _, r in ipairs(require("foundry.state").sandboxes.list()) do t[#t + 1] = "row " .. r.name end
  local ev = require("foundry.state").events.list({})
  for _, e in ipairs(ev) do if e.sandbox then t[#t + 1] = "event of " .. e.sandbox; break end end
  for _, dir in ipairs({ paths.runtime() .. "/sb", paths.workspaces() }) do
    if fs.is_dir(dir) then
      for _, e in ipairs(fs.list(dir)) do t[#t + 1] = "dir " .. dir .. "/" .. e.name end
    end
  end
  local keepset = { main = true, feature = true }
  for _, b in ipairs(keep or {}) do keepset[b] = true end
  local r = foundry.exec{ "git", "-C", L.env.repo, "for-each-ref", "--format=%(refname:short)", "refs/heads", check = true }
  for b in r.stdout:gmatch("[^\n]+") do if not keepset[b] then t[#t + 1] = "branch " .. b end end
  return t
end

function L.no_traces(keep)
  local t = L.traces(keep)
  if #t > 0 then error("left behind: " .. table.concat(t, ", "), 2) end
end

--- Run `script` (sh) on a fresh pseudo-terminal, feeding it `steps`: a list of
--- {resize={rows, cols}, send=bytes, sleep=s, expect=regex} done in that order; the
--- program must end within 10 s after the last step. Returns foundry.exec's result
--- (ok=false when a pattern was not seen or the program did not end).
L.PTY = [==[
import os, pty, sys, time, json, re, fcntl, termios, struct, select
steps = json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", sys.argv[1]])
out = b""
def read_until(pat, timeout):
    global out
    end = time.time() + timeout
    while time.time() < end:
        if pat and re.search(pat.encode(), out):
            return True
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                d = os.read(fd, 65536)
            except OSError:
                return False
            if not d:
                return False
            out += d
    return pat is None
ok = True
for s in steps:
    if "resize" in s:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", s["resize"][0], s["resize"][1], 0, 0))
    if "send" in s:
        os.write(fd, s["send"].encode())
    if "sleep" in s:
        time.sleep(s["sleep"])
    if "expect" in s and not read_until(s["expect"], s.get("timeout", 20)):
        ok = False
        sys.stderr.write("did not see %r\n" % s["expect"])
        break
end = time.time() + 10
status = None
while time.time() < end:
    read_until(None, 0.2)
    p, st = os.waitpid(pid, os.WNOHANG)
    if p:
        status = st
        break
if status is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    sys.stderr.write("the program did not end\n")
    ok = False
try:
    while True:
        r, _, _ = select.select([fd], [], [], 0.1)
        if not r:
            break
        d = os.read(fd, 65536)
        if not d:
            break
        out += d
except OSError:
    pass
sys.stdout.buffer.write(out)
sys.exit(0 if ok else 1)
]==]

function L.pty(script, steps)
  return foundry.exec{ "python3", "-c", L.PTY, script, json.encode(json.array(steps)), timeout = 120000 }
end

L.q = util.shell_quote
return L
