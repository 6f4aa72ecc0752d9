--- Files, asynchronously (libuv's thread pool): the running task waits, others run.
local uv = require "luv"
local task = require "foundry._task"
local errors = require "foundry.errors"

local M = {}

-- Call luv fs function `f` with a callback that completes a wait; raise on error.
local function call(what, path, f, ...)
  local w = task.wait(what)
  local args = table.pack(...)
  args.n = args.n + 1
  args[args.n] = function(err, ...)
    if err then w:reject(errors.from_uv(what .. " " .. tostring(path), err)) else w:resolve(...) end
  end
  local req, err = f(table.unpack(args, 1, args.n))
  if not req then w:reject(errors.from_uv(what .. " " .. tostring(path), err)) end
  return w:await()
end

--- Read a whole file.
function M.read(path)
  local fd = call("open", path, uv.fs_open, path, "r", 0)
  local ok, data = pcall(function()
    local st = call("stat", path, uv.fs_fstat, fd)
    local chunks, off = {}, 0
    local size = math.max(st.size, 1)
    while true do
      local s = call("read", path, uv.fs_read, fd, math.min(math.max(size - off, 65536), 1 << 24), off)
      if s == "" then break end
      chunks[#chunks + 1] = s
      off = off + #s
    end
    return table.concat(chunks)
  end)
  call("close", path, uv.fs_close, fd)
  if not ok then error(data, 0) end
  return data
end

--- Write a file atomically: a temporary file in the same directory, fsync, rename.
--- `opts.mode` (default 0644 as an integer, e.g. tonumber("600", 8)).
function M.write(path, data, opts)
  opts = opts or {}
  local mode = opts.mode or 420
  local tmp = string.format("%s.tmp.%d.%d", path, uv.os_getpid(), math.random(1 << 30))
  local fd = call("open", tmp, uv.fs_open, tmp, "w", mode)
  local ok, err = pcall(function()
    local off = 0
    while off < #data do
      local n = call("write", tmp, uv.fs_write, fd, data:sub(off + 1, off + (1 << 24)), off)
      off = off + n
    end
    if opts.fsync ~= false then call("fsync", tmp, uv.fs_fsync, fd) end
  end)
  call("close", tmp, uv.fs_close, fd)
  if not ok then pcall(call, "unlink", tmp, uv.fs_unlink, tmp); error(err, 0) end
  if opts.mode then call("chmod", tmp, uv.fs_chmod, tmp, mode) end
  call("rename", path, uv.fs_rename, tmp, path)
end

--- Append to a file (created with mode 0644 when missing).
function M.append(path, data)
  local fd = call("open", path, uv.fs_open, path, "a", 420)
  local ok, err = pcall(call, "write", path, uv.fs_write, fd, data, -1)
  call("close", path, uv.fs_close, fd)
  if not ok then error(err, 0) end
end

--- `stat` table, or nil when the path does not exist.
function M.stat(path)
  local ok, st = pcall(call, "stat", path, uv.fs_stat, path)
  if ok then return st end
  if errors.is(st, "io.enoent") or errors.is(st, "io.enotdir") then return nil end
  error(st, 0)
end

--- lstat (does not follow a final symlink), or nil when missing.
function M.lstat(path)
  local ok, st = pcall(call, "lstat", path, uv.fs_lstat, path)
  if ok then return st end
  if errors.is(st, "io.enoent") or errors.is(st, "io.enotdir") then return nil end
  error(st, 0)
end

function M.exists(path) return M.stat(path) ~= nil end

function M.is_dir(path)
  local st = M.stat(path)
  return st ~= nil and st.type == "directory"
end

--- Names in a directory (sorted), or raise.
function M.list(path)
  local names = {}
  local req = call("scandir", path, uv.fs_scandir, path)
  while true do
    local name, typ = uv.fs_scandir_next(req)
    if not name then break end
    names[#names + 1] = { name = name, type = typ }
  end
  table.sort(names, function(a, b) return a.name < b.name end)
  return names
end

--- mkdir -p, with `mode` (default 0755) for the directories it creates.
function M.mkdir(path, mode)
  mode = mode or 493
  local st = M.stat(path)
  if st then
    if st.type ~= "directory" then errors.raise("io.eexist", "mkdir " .. path .. ": exists and is not a directory") end
    return
  end
  local parent = path:match("^(.+)/[^/]+/?$")
  if parent and parent ~= path then M.mkdir(parent, mode) end
  local ok, err = pcall(call, "mkdir", path, uv.fs_mkdir, path, mode)
  if not ok and not errors.is(err, "io.eexist") then error(err, 0) end
end

--- rm -rf: removes a file or a directory tree; no error when missing. Does not follow
--- symlinks.
function M.rm(path)
  local st = M.lstat(path)
  if not st then return end
  if st.type == "directory" then
    for _, e in ipairs(M.list(path)) do M.rm(path .. "/" .. e.name) end
    call("rmdir", path, uv.fs_rmdir, path)
  else
    call("unlink", path, uv.fs_unlink, path)
  end
end

function M.unlink(path) return call("unlink", path, uv.fs_unlink, path) end
function M.rename(a, b) return call("rename", a, uv.fs_rename, a, b) end
function M.chmod(path, mode) return call("chmod", path, uv.fs_chmod, path, mode) end
function M.symlink(target, path) return call("symlink", path, uv.fs_symlink, target, path) end
function M.readlink(path) return call("readlink", path, uv.fs_readlink, path) end
function M.realpath(path) return call("realpath", path, uv.fs_realpath, path) end
function M.mkdtemp(template) return call("mkdtemp", template, uv.fs_mkdtemp, template) end

--- Copy a file (mode kept).
function M.copy(src, dst) return call("copyfile", src, uv.fs_copyfile, src, dst) end

--- `path` made absolute without touching the disk: `~/` is the home directory, a relative
--- path is taken from `base` (default: the current directory), and `.` and `..` are
--- collapsed (symbolic links are kept: a link stays the name the user gave).
function M.absolute(path, base)
  if path == "~" or path:sub(1, 2) == "~/" then path = (os.getenv("HOME") or "/") .. path:sub(2) end
  if path:sub(1, 1) ~= "/" then path = (base or uv.cwd() or "/") .. "/" .. path end
  local out = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." then
      out[#out] = nil
    elseif part ~= "." then
      out[#out + 1] = part
    end
  end
  return "/" .. table.concat(out, "/")
end

-- Synchronous helpers for places that cannot wait (a require'd file's top level).
M.sync = {}
function M.sync.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

return M
