-- The driver of bench/git.sh: foundry.git workspaces vs `git worktree add/remove`, timed
-- in this one process, alternating which goes first. Usage: foundry run bench/git.lua DIR ROUNDS
local uv = require "luv"
local fs = require "foundry.fs"
local dir, rounds = arg[1], tonumber(arg[2] or "5")
assert(dir, "usage: foundry run bench/git.lua DIR ROUNDS")

local function now() uv.update_time(); return uv.hrtime() / 1e6 end
local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  if #s == 0 then return 0 end
  return #s % 2 == 1 and s[(#s + 1) // 2] or (s[#s // 2] + s[#s // 2 + 1]) / 2
end
local function git(...)
  local r = foundry.exec{ "git", ... }
  if not r.ok then error("git " .. table.concat({ ... }, " ") .. ": " .. r.stderr) end
end
local function settle(why)
  io.stdout:write("  (waiting 40 s: " .. why .. ")\n"); io.stdout:flush()
  foundry.exec{ "sync" }
  foundry.sleep(40000)
end

local results = {}
for _, name in ipairs({ "r10k", "r100k" }) do
  local repo = dir .. "/" .. name
  local work = dir .. "/run-" .. name
  fs.rm(work)
  fs.mkdir(work)
  -- every Foundry directory on the same file system as the worktrees
  uv.os_setenv("FOUNDRY_HOME", work .. "/home")
  package.loaded["foundry.git"] = nil
  package.loaded["foundry.workspace"] = nil
  local gitm = require "foundry.git"
  settle("a quiet file system before " .. name)
  -- both tools then start from a warm page cache (round 1 would otherwise charge the
  -- cold reads to whichever goes first)
  foundry.exec{ "sh", "-c", "cat '" .. repo .. "'/.git/objects/pack/* > /dev/null; git -C '" .. repo ..
    "' status --porcelain > /dev/null" }
  local r = { wt = {}, ws = {}, wt_rm = {}, ws_rm = {}, detail = {} }
  local wss = {}
  for i = 1, rounds do
    local function do_wt()
      local t0 = now()
      git("-C", repo, "worktree", "add", "-q", "-b", "bench-wt-" .. i, work .. "/wt-" .. i, "main")
      r.wt[i] = now() - t0
    end
    local function do_ws()
      local t0 = now()
      wss[i] = gitm.workspace.create{ source = repo, name = "ws-" .. i }
      r.ws[i] = now() - t0
      r.detail[i] = { store = wss[i].stores[1].mode, checkout = wss[i].checkout }
    end
    if i % 2 == 1 then do_wt(); do_ws() else do_ws(); do_wt() end
    local tm = wss[i].timings or {}
    io.stdout:write(string.format("  %s #%d  worktree add %6.0f ms   workspace.create %6.0f ms  (store %s %d ms, " ..
      "checkout %d ms, source status %d ms, setup %d ms)\n", name, i, r.wt[i], r.ws[i], r.detail[i].store,
      tm.stores_ms or 0, tm.checkout_ms or 0, tm.status_ms or 0, tm.setup_ms or 0))
    io.stdout:flush()
  end
  settle("ext4 makes new inodes slow right after mass deletion; removals next")
  for i = 1, rounds do
    local function do_wt()
      local t0 = now()
      git("-C", repo, "worktree", "remove", work .. "/wt-" .. i)
      r.wt_rm[i] = now() - t0
      git("-C", repo, "branch", "-q", "-D", "bench-wt-" .. i)
    end
    local function do_ws()
      local t0 = now()
      wss[i]:destroy()
      r.ws_rm[i] = now() - t0
    end
    if i % 2 == 1 then do_wt(); do_ws() else do_ws(); do_wt() end
    io.stdout:write(string.format("  %s #%d  worktree remove %6.0f ms   workspace.destroy %6.0f ms\n",
      name, i, r.wt_rm[i], r.ws_rm[i]))
    io.stdout:flush()
  end
  fs.rm(work)
  results[name] = r
end

local function rest(t) local o = {}; for i = 2, #t do o[#o + 1] = t[i] end; return o end
print()
print("| repository | git worktree add | workspace.create, first | workspace.create, Nth | Nth / worktree | " ..
  "first / worktree | git worktree remove | workspace.destroy |")
print("|---|---|---|---|---|---|---|---|")
for _, name in ipairs({ "r10k", "r100k" }) do
  local r = results[name]
  local wt, nth, first = median(r.wt), median(rest(r.ws)), r.ws[1]
  print(string.format("| %s | %.0f ms | %.0f ms | %.0f ms | %.2f× | %.2f× | %.0f ms | %.0f ms |", name, wt, first, nth,
    nth / wt, first / wt, median(r.wt_rm), median(r.ws_rm)))
end
print(string.format("\n(medians of %d rounds; Nth = rounds 2..%d; libgit2 %s; %d CPUs)", rounds, rounds,
  require("foundry.git").version(), uv.available_parallelism and uv.available_parallelism() or 0))
