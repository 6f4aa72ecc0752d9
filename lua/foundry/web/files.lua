--- The editor's files: read, list and write inside a sandbox's work tree, and nowhere
--- else. The sandbox's agent owns that tree and may plant symlinks or swap directories at
--- any moment, so the checks here are only the first line: the C side (foundry._web
--- fs_read/fs_write) opens every component relative to its parent with O_NOFOLLOW, which
--- refuses a symlink wherever it appears, even one made between two calls. The git
--- directory (.git) is not the editor's business and is refused.
local web = require "foundry._web"
local errors = require "foundry.errors"
local data = require "foundry.web.data"

local M = {}

--- The largest file the editor opens or saves.
M.MAX_BYTES = 1024 * 1024

--- Check a path relative to the work tree: returns it normalised ("" means the root), or
--- raises `web.denied` for an absolute path, a ".." or "." component, an empty
--- component, a NUL byte or the git directory.
function M.check(path)
  if path == nil or path == "" or path == "/" then return "" end
  if type(path) ~= "string" then errors.raise("web.denied", "path: expected a string") end
  if #path > 4096 then errors.raise("web.denied", "path too long") end
  if path:find("\0", 1, true) then errors.raise("web.denied", "path contains a NUL byte") end
  if path:sub(1, 1) == "/" then errors.raise("web.denied", "absolute paths are refused: paths are relative to /workspace") end
  local parts = {}
  for seg in (path .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = seg end
  if parts[#parts] == "" and #parts > 1 then parts[#parts] = nil end -- one trailing slash
  for _, seg in ipairs(parts) do
    if seg == ".." then errors.raise("web.denied", "'..' is refused: paths stay inside the workspace") end
    if seg == "." or seg == "" then errors.raise("web.denied", "empty or '.' path components are refused") end
  end
  if parts[1] == ".git" then errors.raise("web.denied", "the git directory is not editable here") end
  return table.concat(parts, "/")
end

-- The host directory of the sandbox's work tree.
local function root_of(sb)
  local root = sb.workspace
  if type(root) ~= "string" or root == "" then
    errors.raise("web.no_workspace", "sandbox '" .. sb.name .. "' has no workspace (yet)")
  end
  return root
end

local function is_text(s)
  return utf8.len(s) ~= nil and not s:find("\0", 1, true)
end

--- Read `path` in sandbox `sb`: a directory `{type="directory", path=, entries={...}}`
--- (sorted, directories first, .git left out) or a file `{type="file", path=, size=,
--- content=, sha256=, binary=, redacted=, too_large=}`. Content is redacted; a file whose
--- content changed under redaction is marked `redacted` (the editor does not save it).
function M.read(sb, path)
  local rel = M.check(path)
  local r = web.fs_read(root_of(sb), rel == "" and "." or rel, M.MAX_BYTES)
  r.path = rel
  if r.type == "directory" then
    local list = {}
    for _, e in ipairs(r.entries) do
      if not (rel == "" and e.name == ".git") and not e.name:match("^%.foundry%-edit%-") then
        list[#list + 1] = { name = data.utf8(e.name), type = e.type, size = e.size }
      end
    end
    table.sort(list, function(a, b)
      local ad, bd = a.type == "directory", b.type == "directory"
      if ad ~= bd then return ad end
      return a.name < b.name
    end)
    r.entries = require("foundry.json").array(list)
    return r
  end
  if r.data then
    if is_text(r.data) then
      local shown = require("foundry.redact").text(r.data)
      r.content = shown
      r.redacted = shown ~= r.data or nil
    else
      r.binary = true
    end
    r.data = nil
  end
  return r
end

--- Write `content` to `path` in sandbox `sb`, atomically; `opts.sha256` (what `read`
--- returned) refuses to overwrite a file that changed since (`web.conflict`); a new file
--- needs `opts.create` (and must not exist: `web.conflict`). Returns `{type="file", path=, size=, sha256=}`.
function M.write(sb, path, content, opts)
  opts = opts or {}
  local rel = M.check(path)
  if rel == "" then errors.raise("web.denied", "a file path is needed") end
  if type(content) ~= "string" then errors.raise("web.bad_request", "content: expected a string") end
  if #content > M.MAX_BYTES then errors.raise("web.too_large", "the file is larger than the editor's limit") end
  if not opts.sha256 and not opts.create then
    errors.raise("web.bad_request", "sha256 (of the version edited) or create=true is required")
  end
  local r = web.fs_write(root_of(sb), rel, content, { if_sha256 = opts.sha256, mkdirs = opts.create or false,
    exclusive = (opts.create and not opts.sha256) or false })
  r.path = rel
  return r
end

return M
