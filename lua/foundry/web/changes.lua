--- The File Changes tab: what the sandbox changed against the commit it started from —
--- commits, uncommitted edits and new files — one entry a file with its unified diff.
--- From foundry.git (libgit2) when the sandbox's workspace is one of its workspaces;
--- from the text diff of the git-program fallback (foundry.worktree) otherwise.
local json = require "foundry.json"
local data = require "foundry.web.data"

local M = {}

--- The largest diff shown per file (bigger ones are cut, and say so).
M.MAX_PATCH = 256 * 1024

local STATUS = {
  added = "added", deleted = "deleted", modified = "modified", renamed = "renamed", copied = "copied",
  typechange = "typechange", untracked = "added", new = "added",
}

-- Split a unified diff (git diff output) into files.
function M.parse(text)
  local files = {}
  local cur
  local function finish()
    if cur then
      cur.patch = table.concat(cur.lines, "\n")
      if cur.patch ~= "" then cur.patch = cur.patch .. "\n" end
      cur.lines = nil
      files[#files + 1] = cur
    end
  end
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local a, b = line:match("^diff %-%-git a/(.-) b/(.-)$")
    if a then
      finish()
      cur = { path = b, old_path = a ~= b and a or nil, status = a ~= b and "renamed" or "modified",
        additions = 0, deletions = 0, binary = false, lines = {} }
    elseif cur then
      if #cur.lines == 0 and not line:match("^@@") then
        if line:match("^new file mode") then cur.status = "added"
        elseif line:match("^deleted file mode") then cur.status = "deleted"
        elseif line:match("^rename from ") then cur.status = "renamed"
        elseif line:match("^Binary files ") then cur.binary = true end
      else
        cur.lines[#cur.lines + 1] = line
        local c = line:sub(1, 1)
        if c == "+" then cur.additions = cur.additions + 1
        elseif c == "-" then cur.deletions = cur.deletions + 1 end
      end
    end
  end
  finish()
  local adds, dels = 0, 0
  for _, f in ipairs(files) do adds, dels = adds + f.additions, dels + f.deletions end
  return { files = files, additions = adds, deletions = dels }
end

-- Keep only the hunks of a patch (from its first "@@").
local function hunks(patch)
  if not patch then return nil end
  local at = patch:find("\n@@", 1, true)
  if patch:sub(1, 2) == "@@" then return patch end
  if at then return patch:sub(at + 1) end
  return ""
end

--- The changes of sandbox `sb`: `{base=, branch=, files={ {path=, old_path=, status=,
--- additions=, deletions=, binary=, truncated=, patch=} }, additions=, deletions=}`,
--- redacted.
function M.of(sb)
  local ws = sb:git_workspace()
  local d
  if type(ws.changes) == "function" then
    d = ws:changes({ max_bytes = M.MAX_PATCH })
  else
    d = M.parse(ws:diff({}))
  end
  local out = json.array()
  for _, f in ipairs(d.files or {}) do
    local patch = hunks(f.patch)
    local truncated = f.truncated or false
    if patch and #patch > M.MAX_PATCH then
      patch = patch:sub(1, M.MAX_PATCH):gsub("[^\n]*$", "")
      truncated = true
    end
    out[#out + 1] = {
      path = f.path, old_path = f.old_path, status = STATUS[f.status] or f.status or "modified",
      additions = f.additions or 0, deletions = f.deletions or 0, binary = f.binary or false,
      truncated = truncated, patch = patch,
    }
  end
  table.sort(out, function(a, b) return a.path < b.path end)
  return data.clean({ base = sb.base, branch = sb.branch, files = out, additions = d.additions or 0,
    deletions = d.deletions or 0 })
end

return M
