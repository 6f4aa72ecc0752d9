--- Routes: a method and a path pattern to a handler.
---
---   local r = router.new()
---   r:add("GET", "/api/sandboxes/:name", function(req, res, params) ... end)
---   r:dispatch(req, res)   -- true when a route matched (or answered 405)
---
--- `:name` matches one path segment (percent-decoded into params.name); `*rest` the rest
--- of the path. Routes match in the order they were added.
local server = require "foundry.web.server"

local M = {}

local Router = {}
Router.__index = Router

function M.new() return setmetatable({ routes = {} }, Router) end

local function compile(pattern)
  local names, parts = {}, {}
  for seg in pattern:gmatch("/([^/]*)") do
    local name = seg:match("^:(.+)$")
    local rest = seg:match("^%*(.+)$")
    if name then
      names[#names + 1] = name
      parts[#parts + 1] = "/([^/]+)"
    elseif rest then
      names[#names + 1] = rest
      parts[#parts + 1] = "/(.*)"
    else
      parts[#parts + 1] = "/" .. seg:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
    end
  end
  if pattern == "/" then parts = { "/" } end
  return "^" .. table.concat(parts) .. "$", names
end

--- Add a route; `method` may be a list.
function Router:add(method, pattern, fn)
  local lua_pat, names = compile(pattern)
  local methods = {}
  for _, m in ipairs(type(method) == "table" and method or { method }) do methods[m] = true end
  self.routes[#self.routes + 1] = { methods = methods, pat = lua_pat, names = names, fn = fn, pattern = pattern }
end

--- Run the first matching route: returns true when one matched (or the path matched
--- with another method: 405 was sent), false when none did.
function Router:dispatch(req, res)
  local path_matched
  for _, r in ipairs(self.routes) do
    local caps = { req.path:match(r.pat) }
    if #caps > 0 or (#r.names == 0 and req.path:match(r.pat)) then
      local method = req.method == "HEAD" and "GET" or req.method
      if r.methods[method] then
        local params = {}
        for i, n in ipairs(r.names) do params[n] = server.pct_decode(caps[i]) end
        r.fn(req, res, params)
        return true
      end
      path_matched = path_matched or {}
      for m in pairs(r.methods) do path_matched[#path_matched + 1] = m end
    end
  end
  if path_matched then
    table.sort(path_matched)
    res:json(405, { error = { code = "web.method", message = req.method .. " is not allowed here" } },
      { allow = table.concat(path_matched, ", ") })
    return true
  end
  return false
end

return M
