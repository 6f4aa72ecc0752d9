--- foundry auth import [--yes] [--json]: put the credentials a developer already has on this
--- machine into the vault, under the names the shipped presets use.
local errors = require "foundry.errors"
local json = require "foundry.json"
local vault = require "foundry.vault"
local uv = require "luv"

local M = {}

-- Environment variables, in order of preference for each vault name.
M.ENV = {
  { "ANTHROPIC_API_KEY", "anthropic" },
  { "CLAUDE_CODE_OAUTH_TOKEN", "anthropic" },
  { "ANTHROPIC_AUTH_TOKEN", "anthropic" },
  { "OPENAI_API_KEY", "openai" },
  { "GEMINI_API_KEY", "gemini" },
  { "GOOGLE_API_KEY", "gemini" },
  { "GH_TOKEN", "github" },
  { "GITHUB_TOKEN", "github" },
  { "OPENROUTER_API_KEY", "openrouter" },
  { "MISTRAL_API_KEY", "mistral" },
  { "GROQ_API_KEY", "groq" },
  { "XAI_API_KEY", "xai" },
  { "DEEPSEEK_API_KEY", "deepseek" },
}

local function home() return os.getenv("HOME") or "/root" end

local function show_path(p)
  local h = home()
  if p:sub(1, #h + 1) == h .. "/" then return "~" .. p:sub(#h + 1) end
  return p
end

local function nonempty(s)
  if type(s) == "string" and s:match("%S") then return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
end

-- Read a file if it exists: contents, or nil; problems go to `notes`.
local function read_file(path, notes)
  local fs = require "foundry.fs"
  if not fs.stat(path) then return nil end
  local ok, data = pcall(fs.read, path)
  if not ok then
    notes[#notes + 1] = show_path(path) .. ": " .. errors.message(data)
    return nil
  end
  return data
end

local function read_json(path, notes)
  local data = read_file(path, notes)
  if not data then return nil end
  local ok, v = pcall(json.decode, data)
  if not ok or type(v) ~= "table" then
    notes[#notes + 1] = show_path(path) .. ": not valid JSON (skipped)"
    return nil
  end
  return v, data
end

local function on_path(cmd)
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    local st = uv.fs_stat(dir .. "/" .. cmd)
    if st and st.type == "file" then return true end
  end
  return false
end

local function expiry(ms)
  if type(ms) ~= "number" then return nil end
  local s = ms > 1e11 and ms // 1000 or ms
  local now = os.time()
  if s < now then return "expired " .. os.date("%Y-%m-%d %H:%M", s) end
  return "expires " .. os.date("%Y-%m-%d %H:%M", s)
end

--- Every credential found: { {name=, source=, value=, note=}, ... } in order of preference,
--- and notes about files that could not be read.
function M.discover()
  local found, notes = {}, {}
  local function add(name, source, value, note)
    value = nonempty(value)
    if value then found[#found + 1] = { name = name, source = source, value = value, note = note } end
  end
  for _, e in ipairs(M.ENV) do add(e[2], "env " .. e[1], os.getenv(e[1])) end

  -- Claude Code: ~/.claude/.credentials.json (OAuth login), ~/.claude.json (API key)
  local claude_dir = os.getenv("CLAUDE_CONFIG_DIR") or (home() .. "/.claude")
  local cpath = claude_dir .. "/.credentials.json"
  local creds, raw = read_json(cpath, notes)
  if creds then
    local o = type(creds.claudeAiOauth) == "table" and creds.claudeAiOauth or {}
    add("anthropic", show_path(cpath) .. " (OAuth access token)", o.accessToken, expiry(o.expiresAt))
    add("claude-code-credentials", show_path(cpath), raw, "the whole login, for the agent's own use")
  end
  local cj = read_json(home() .. "/.claude.json", notes)
  if cj then add("anthropic", "~/.claude.json (primaryApiKey)", cj.primaryApiKey) end

  -- Codex: ~/.codex/auth.json (API key, or ChatGPT login tokens)
  local codex_dir = os.getenv("CODEX_HOME") or (home() .. "/.codex")
  local apath = codex_dir .. "/auth.json"
  local auth, araw = read_json(apath, notes)
  if auth then
    local key = type(auth.OPENAI_API_KEY) == "string" and auth.OPENAI_API_KEY or nil
    add("openai", show_path(apath) .. " (OPENAI_API_KEY)", key)
    if type(auth.tokens) == "table" then
      add("codex-auth", show_path(apath), araw, "the ChatGPT login, for the agent's own use")
    end
  end

  -- Gemini CLI: ~/.gemini/.env (API key), ~/.gemini/oauth_creds.json (Google login)
  local gdir = home() .. "/.gemini"
  local env = read_file(gdir .. "/.env", notes)
  if env then
    for line in env:gmatch("[^\n]+") do
      local k, v = line:match("^%s*export%s+([%w_]+)%s*=%s*(.-)%s*$")
      if not k then k, v = line:match("^%s*([%w_]+)%s*=%s*(.-)%s*$") end
      if k == "GEMINI_API_KEY" or k == "GOOGLE_API_KEY" then
        v = v:match('^"(.*)"$') or v:match("^'(.*)'$") or v
        add("gemini", "~/.gemini/.env (" .. k .. ")", v)
      end
    end
  end
  local gpath = gdir .. "/oauth_creds.json"
  local gcreds, graw = read_json(gpath, notes)
  if gcreds and (gcreds.refresh_token or gcreds.access_token) then
    add("gemini-oauth", show_path(gpath), graw, expiry(gcreds.expiry_date))
  end
  local settings = read_json(gdir .. "/settings.json", notes)
  if settings then
    local sel = settings.selectedAuthType
    if type(settings.security) == "table" and type(settings.security.auth) == "table" then
      sel = sel or settings.security.auth.selectedType
    end
    if type(sel) == "string" then notes[#notes + 1] = "~/.gemini/settings.json: Gemini CLI signs in with " .. sel end
  end

  -- GitHub CLI
  if on_path("gh") then
    local ok, r = pcall(require("foundry.exec").exec, { "gh", "auth", "token", timeout = 5000 })
    if ok and r.ok then
      add("github", "gh auth token", r.stdout)
    elseif ok then
      notes[#notes + 1] = "gh auth token: " .. (nonempty(r.stderr) or ("exit " .. tostring(r.status)))
    end
  end
  return found, notes
end

-- One candidate per vault name (the first source found); the others are listed as
-- alternatives, or folded into the chosen one's sources when they hold the same value.
local function choose(found)
  local chosen, by_name, others = {}, {}, {}
  for _, c in ipairs(found) do
    local first = by_name[c.name]
    if not first then
      by_name[c.name] = c
      c.sources = { c.source }
      chosen[#chosen + 1] = c
    elseif first.value == c.value then
      first.sources[#first.sources + 1] = c.source
    else
      others[#others + 1] = c
    end
  end
  return chosen, others
end

local function ask(question)
  io.stderr:write(question, " [Y/n] ")
  io.stderr:flush()
  local line = io.stdin:read("l")
  if line == nil then return false end
  line = line:lower()
  return line == "" or line == "y" or line == "yes"
end

local function run(opts, args)
  if args[1] ~= "import" then
    errors.raise("usage", "unknown auth command '" .. tostring(args[1]) .. "'", "foundry auth import [--yes] [--json]")
  end
  vault.protect_process()
  local found, notes = M.discover()
  local chosen, others = choose(found)
  local interactive = uv.guess_handle(0) == "tty"
  local store = opts.yes or interactive

  local v, created_vault
  if #chosen > 0 and store then
    if vault.exists() then
      v = vault.unlock({ prompt = true })
    else
      v = vault.init({ prompt = true })
      created_vault = true
    end
  end

  local rows = {}
  for _, c in ipairs(chosen) do
    local status = "new"
    if v and v:has(c.name) then status = v:get(c.name) == c.value and "same" or "differs" end
    rows[#rows + 1] = { c = c, status = status, imported = false }
  end
  if not opts.json then
    if #chosen == 0 then
      io.stdout:write("no credentials found (looked at: API-key environment variables, ~/.claude, ~/.claude.json, ",
        "~/.codex/auth.json, ~/.gemini, gh auth token)\n")
    else
      io.stdout:write("found ", #chosen, " credential", #chosen == 1 and "" or "s", ":\n")
      for _, r in ipairs(rows) do
        local st = r.status == "new" and "new"
          or (r.status == "same" and "already in the vault" or "differs from the vault's")
        io.stdout:write(string.format("  %-26s %-52s %s%s\n", r.c.name, table.concat(r.c.sources, ", "), st,
          r.c.note and (" (" .. r.c.note .. ")") or ""))
      end
    end
    if #others > 0 then
      io.stdout:write("also found (not imported: the name is taken by the source above):\n")
      for _, c in ipairs(others) do
        io.stdout:write(string.format("  %-26s %s%s\n", c.name, c.source, c.note and (" (" .. c.note .. ")") or ""))
      end
    end
    for _, n in ipairs(notes) do io.stdout:write("note: ", n, "\n") end
    if created_vault then io.stdout:write("created vault ", v.path, "\n") end
  end

  local imported = 0
  for _, r in ipairs(rows) do
    if v and r.status ~= "same" then
      local yes = opts.yes or (interactive and ask(string.format("%s %s from %s?",
        r.status == "new" and "Store" or "Replace", r.c.name, r.c.sources[1])))
      if yes then
        v:set(r.c.name, r.c.value)
        r.imported = true
        imported = imported + 1
      end
    end
  end
  if v then v:lock() end

  if opts.json then
    local out = { vault = vault.path(), created_vault = created_vault or false, found = {}, also_found = {},
      notes = json.array(notes) }
    for _, r in ipairs(rows) do
      out.found[#out.found + 1] = { name = r.c.name, sources = r.c.sources, status = r.status,
        imported = r.imported, note = r.c.note }
    end
    for _, c in ipairs(others) do
      out.also_found[#out.also_found + 1] = { name = c.name, source = c.source, note = c.note }
    end
    out.found, out.also_found = json.array(out.found), json.array(out.also_found)
    out.dry_run = not store
    io.stdout:write(json.encode(out), "\n")
  elseif #chosen > 0 then
    if not store then
      io.stdout:write("nothing stored: standard input is not a terminal; run with --yes to import these\n")
    else
      io.stdout:write("imported ", imported, " credential", imported == 1 and "" or "s", " into ", vault.path(), "\n")
    end
  end
  return 0
end

return {
  summary = "Import the credentials already on this machine into the vault",
  usage = "foundry auth import [--yes] [--json]",
  description = [[
Looks where developers already keep credentials and offers to store them in the vault
under the names the presets use (never printing a value):

  anthropic     ANTHROPIC_API_KEY, CLAUDE_CODE_OAUTH_TOKEN, ANTHROPIC_AUTH_TOKEN,
                ~/.claude/.credentials.json (Claude Code login), ~/.claude.json
  openai        OPENAI_API_KEY, ~/.codex/auth.json
  gemini        GEMINI_API_KEY, GOOGLE_API_KEY, ~/.gemini/.env
  github        GH_TOKEN, GITHUB_TOKEN, 'gh auth token'
  claude-code-credentials, codex-auth, gemini-oauth
                the whole login files of Claude Code, Codex and Gemini CLI
  openrouter, mistral, groq, xai, deepseek   their *_API_KEY variables

CLAUDE_CONFIG_DIR and CODEX_HOME move those tools' directories as they do for the tools.
The first source found for a name is used; the others are listed. On a terminal each
credential is confirmed; --yes stores them all (for scripts). Without a terminal and
without --yes nothing is stored. The vault is created when there is none.]],
  flags = {
    { "yes", short = "y", help = "store everything found without asking" },
    { "json", help = "print what was found and stored as JSON (names and sources only)" },
  },
  min_args = 1, max_args = 1,
  order = 41,
  examples = { "foundry auth import", "FOUNDRY_VAULT_PASSPHRASE=... foundry auth import --yes --json" },
  run = run,
  discover = M.discover,
}
