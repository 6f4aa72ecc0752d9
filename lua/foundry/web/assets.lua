--- The console's static files: its own page, script and style (embedded in the binary as
--- foundry.web.assets.*), and xterm.js, served from the system at run time — never
--- copied into Foundry.
---
--- xterm.js is looked for in this order:
---   1. $FOUNDRY_XTERM_DIR: a directory with a browser build (xterm.js, xterm.css), e.g.
---      node_modules/xterm/lib or node_modules/@xterm/xterm/lib;
---   2. /usr/share/javascript/xterm (Debian's libjs-xterm) when its xterm.js is a browser
---      build (in Debian 12 it is a 288-byte stub that `require`s missing files);
---   3. /usr/share/nodejs/xterm/lib (Debian's node-xterm, the same xterm.js 3.8 as
---      CommonJS modules): its modules, and the fit add-on, are joined into one script
---      with a 30-line module loader, once, when first asked for.
--- When none is there, the Terminal tab says which package to install.
local uv = require "luv"

local M = {}

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function size(path)
  local st = uv.fs_stat(path)
  return st and st.type == "file" and st.size or nil
end

-- A real browser build is large; Debian 12's libjs-xterm stub is 288 bytes.
local MIN_BUNDLE = 20000

M.SYSTEM_DIRS = { "/usr/share/javascript/xterm" }
M.NODE_DIR = "/usr/share/nodejs/xterm/lib"

-- Every .js file under `dir` (not tests), as module ids relative to `dir`, sorted.
local function js_files(dir, prefix, out, depth)
  out = out or {}
  depth = depth or 0
  if depth > 8 then return out end
  local req = uv.fs_scandir(dir)
  local names = {}
  while req do
    local n, t = uv.fs_scandir_next(req)
    if not n then break end
    names[#names + 1] = { n, t }
  end
  table.sort(names, function(a, b) return a[1] < b[1] end)
  for _, e in ipairs(names) do
    local n, t = e[1], e[2]
    local path = dir .. "/" .. n
    if t == "link" then
      local st = uv.fs_stat(path)
      t = st and st.type or "unknown"
    end
    if t == "directory" and n ~= "addons" then
      js_files(path, prefix .. n .. "/", out, depth + 1)
    elseif t == "file" and n:match("%.js$") and not n:match("%.test%.js$") then
      out[#out + 1] = { id = prefix .. n:sub(1, -4), path = path }
    end
  end
  return out
end

local LOADER = [[
/* xterm.js from Debian's node-xterm (CommonJS), joined by Foundry's web console */
(function () {
  "use strict";
  var defs = {}, cache = {};
  function resolve(from, p) {
    if (p.charAt(0) !== ".") return p;
    var parts = from.split("/"); parts.pop();
    p.split("/").forEach(function (s) {
      if (s === "..") parts.pop(); else if (s !== "." && s !== "") parts.push(s);
    });
    var id = parts.join("/");
    return id.replace(/\.js$/, "");
  }
  function load(id) {
    if (cache[id]) return cache[id].exports;
    var f = defs[id];
    if (!f) throw new Error("xterm: no module " + id);
    var m = { exports: {} };
    cache[id] = m;
    f(function (p) { return load(resolve(id, p)); }, m, m.exports);
    return m.exports;
  }
]]

local function bundle(dir)
  local files = js_files(dir, "")
  if #files == 0 then return nil end
  local out = { LOADER }
  local have = {}
  for _, f in ipairs(files) do
    local src = read(f.path)
    if src then
      src = src:gsub("//# sourceMappingURL=[^\n]*", "")
      out[#out + 1] = "defs[" .. string.format("%q", f.id) .. "] = function (require, module, exports) {\n" ..
        src .. "\n};\n"
      have[f.id] = true
    end
  end
  if not have.xterm then return nil end
  local fit = read(dir .. "/addons/fit/fit.js")
  if fit then
    out[#out + 1] = "defs[\"addons/fit/fit\"] = function (require, module, exports) {\n" ..
      fit:gsub("//# sourceMappingURL=[^\n]*", "") .. "\n};\n"
  end
  out[#out + 1] = "  window.FoundryXterm = { Terminal: load(\"xterm\"), fit: " ..
    (fit and "load(\"addons/fit/fit\")" or "null") .. " };\n})();\n"
  return table.concat(out)
end

local cached

--- xterm.js and its CSS: `{js=, css=, source=}`, or nil and why.
function M.xterm()
  if cached then return cached end
  local dirs = {}
  local env = os.getenv("FOUNDRY_XTERM_DIR")
  if env and env ~= "" then dirs[#dirs + 1] = env end
  for _, d in ipairs(M.SYSTEM_DIRS) do dirs[#dirs + 1] = d end
  for _, d in ipairs(dirs) do
    local n = size(d .. "/xterm.js")
    if n and n >= MIN_BUNDLE then
      local css = read(d .. "/xterm.css") or read(d .. "/../css/xterm.css") or ""
      cached = { js = read(d .. "/xterm.js") .. "\n;window.FoundryXterm = window.FoundryXterm || " ..
        "{ Terminal: window.Terminal && (window.Terminal.Terminal || window.Terminal), fit: null };\n",
        css = css, source = d }
      return cached
    end
  end
  if size(M.NODE_DIR .. "/xterm.js") then
    local js = bundle(M.NODE_DIR)
    if js then
      cached = { js = js, css = read(M.NODE_DIR .. "/xterm.css") or "", source = M.NODE_DIR .. " (joined)" }
      return cached
    end
  end
  return nil, "xterm.js was not found: install Debian's node-xterm (apt-get install node-xterm), or set " ..
    "FOUNDRY_XTERM_DIR to a directory holding a browser build of xterm.js"
end

--- Forget the cached xterm.js (tests).
function M.reset() cached = nil end

--- The console's own files: name -> {body=, type=}.
function M.own(name)
  if name == "app.js" then
    return { body = require("foundry.web.assets.app"), type = "text/javascript; charset=utf-8" }
  elseif name == "app.css" then
    return { body = require("foundry.web.assets.style"), type = "text/css; charset=utf-8" }
  end
  return nil
end

--- The page every route of the console serves (the script draws the rest).
function M.page()
  return require("foundry.web.assets.page")
end

return M
