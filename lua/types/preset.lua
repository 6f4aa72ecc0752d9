---@meta
-- luacheck: ignore
-- LuaLS annotations for Foundry presets. Point your editor at lua/types (or the
-- installed share/foundry/types) and annotate a preset file:
--
--   ---@type foundry.Preset
--   return { extends = "claude", network = "allowlist", ... }
--
-- Unknown keys and wrong types are also refused when the preset loads, with file:line.

---@alias foundry.NetworkMode "none"|"allowlist"|"host-only"|"open"

---@alias foundry.Mount string|{source: string, target: string, read_only?: boolean} "HOST:CTR[:ro]"

---@alias foundry.Command string|fun(sb: foundry.Sandbox, ctx: foundry.StageContext) a shell command (sh -c, in the workspace) or a function

---@class foundry.Agent
---@field name? string "claude", "codex", "gemini", "bash", ...: picks its configuration format
---@field command? string|string[] what `attach` runs (in tmux)
---@field providers? string[] AI APIs it talks to through the proxy's gateways: "anthropic", "openai", "google"
---@field env? table<string, string|number|boolean>

---@class foundry.McpServer
---@field command? string|string[]
---@field args? string[]
---@field env? table<string, string>
---@field url? string

---@class foundry.StageSpec
---@field name string
---@field before? string add before this stage
---@field after? string add after this stage (default: before "ready")
---@field run fun(sb: foundry.Sandbox, ctx: foundry.StageContext): any return ctx.skip(reason) when there is nothing to do
---@field undo? fun(sb: foundry.Sandbox, ctx: foundry.StageContext) runs when a later stage fails (and for this one when it fails)
---@field description? string

---@class foundry.StageChanges
---@field remove? string[] stages to drop (not provision or ready)
---@field replace? table<string, fun(sb: foundry.Sandbox, ctx: foundry.StageContext)|{run: function, undo?: function}>
---@field add? foundry.StageSpec[]

---@class foundry.Hooks
---@field post_tool_use? "commit"|boolean|fun(event: table, sb: table) what the daemon does after the agent used a tool ("commit": commit all, push)
---@field debounce_ms? integer wait this long without a new event first (default 5000)
---@field push? boolean

---@class foundry.Preset
---@field description? string one line for `foundry preset ls`
---@field extends? string another preset: a name or a path (relative to this file)
---@field repo? string the repository (path or URL) when `foundry new` names none
---@field branch? string the sandbox's branch (default sandbox/NAME)
---@field from? string the branch to start from
---@field image? string
---@field network? foundry.NetworkMode
---@field allow? string[] hosts the allowlist adds
---@field policy? string a network policy (name or path; see docs/policies.md)
---@field agent? string|foundry.Agent
---@field providers? string[]
---@field credentials? table<string, string|false> provider -> "vault:NAME" (or "env:VAR")
---@field env? table<string, string|number|boolean|false> false removes a parent's variable
---@field mounts? foundry.Mount[]
---@field copy? foundry.Mount[] copied in when the sandbox is made
---@field cpus? number
---@field memory? string|integer "4g", "512m", or bytes
---@field pids? integer
---@field workdir? string a directory of the workspace where sessions start
---@field files? table<string, string|false> "~/path" or "/path" -> content, written by agent-config
---@field deps? foundry.Command|foundry.Command[] run by the deps stage
---@field setup? foundry.Command|foundry.Command[] run by the customize stage
---@field health? foundry.Command|foundry.Command[] extra checks for the health stage
---@field mcp? table<string, foundry.McpServer|false> MCP servers, in the agent's own format
---@field stages? foundry.StageChanges
---@field hooks? foundry.Hooks
---@field tmux? boolean attach through tmux (default true): sessions survive a detach
