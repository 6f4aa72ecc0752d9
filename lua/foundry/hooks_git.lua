--- The push half of auto-commit: the daemon pushes a sandbox's branch the way the agent
--- would, with `git push` inside the sandbox, so the push takes the same path through the
--- proxy and is judged by the same rules (foundry.gitsafety) as every other push; nothing
--- runs git on the host against the agent's repository.
---
---   local r = require("foundry.hooks_git").push(row)
---   --> { ok = true, message = "pushed sandbox/x to origin" }
---   --> { ok = false, refused = true, rule = "restricted", reason = "...", message = "..." }
local errors = require "foundry.errors"

local M = {}

M.TIMEOUT = 120000
M.WORKSPACE = "/workspace"

-- The rule and reasons from the refusal git printed: "remote: foundry: ..." lines.
local function refusal(out)
  local rule = out:match("remote: foundry: push refused by the sandbox's git policy %(rule: ([%w%-]+)%)")
  local reasons = {}
  for line in out:gmatch("remote: foundry: ([^\n]-)%s*\n") do
    if not line:match("^push refused by") then reasons[#reasons + 1] = line end
  end
  return rule, reasons
end

--- The URL the sandbox pushes to when its workspace has no `origin`: the HTTPS URL of the
--- first repository it was made for (foundry.guards.repos_of). May wait.
function M.remote_url(row)
  local gitsafety = require "foundry.gitsafety"
  for _, r in ipairs(require("foundry.guards").repos_of(row)) do
    local id = gitsafety.repo_of_url(r) or (r:match("^[%w.-]+/[^/]+/[^/]+$") and r:lower():gsub("%.git$", ""))
    if id then return "https://" .. id .. ".git" end
  end
  return nil
end

--- Push the sandbox's branch (`row.branch`) from inside its container. Never raises for a
--- refusal or a failed push: returns `{ok=, refused=, rule=, reason=, message=, output=}`.
--- `opts.sandbox` is the foundry.Sandbox to use (default: sandbox.get(row.name)).
function M.push(row, opts)
  opts = opts or {}
  if type(row) ~= "table" or type(row.name) ~= "string" then error("hooks_git.push: expected a sandbox row", 2) end
  if type(row.branch) ~= "string" or row.branch == "" then
    return { ok = false, message = "auto-push: sandbox '" .. row.name .. "' has no branch" }
  end
  local sb = opts.sandbox or require("foundry.sandbox").get(row.name)
  local origin = sb:exec{ "git", "-C", M.WORKSPACE, "remote", "get-url", "--push", "origin", timeout = 30000 }
  local target = origin.ok and "origin" or M.remote_url(row)
  if not target then
    return { ok = false, skipped = true, message = "auto-push: the sandbox has no remote to push to" }
  end
  local r = sb:exec{ "git", "-C", M.WORKSPACE, "push", "--porcelain", target, "HEAD:refs/heads/" .. row.branch,
                     timeout = opts.timeout or M.TIMEOUT }
  local out = (r.stdout or "") .. (r.stderr or "")
  if r.ok then
    return { ok = true, output = out, message = "auto-push: pushed " .. row.branch .. " to " .. target }
  end
  local rule, reasons = refusal(out)
  if rule then
    local reason = reasons[1] or "refused"
    return { ok = false, refused = true, rule = rule, reason = reason, output = out,
             message = "auto-push: refused by the git policy (" .. rule .. "): " .. reason }
  end
  local last = out:match("([^\n]+)\n?$") or ("exit " .. tostring(r.status))
  return { ok = false, output = out, message = "auto-push: git push failed: " .. last }
end

--- Raise instead of returning a failure (for scripts that want straight-line code).
function M.must_push(row, opts)
  local r = M.push(row, opts)
  if not r.ok then errors.raise(r.refused and "git.push_refused" or "git.push_failed", r.message) end
  return r
end

return M
