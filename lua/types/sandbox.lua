---@meta
-- luacheck: ignore
-- LuaLS annotations for the sandbox API (`foundry.sandbox`, `foundry.stages`).

---@class foundry.SandboxSpec: foundry.Preset
---@field name? string
---@field preset? string|foundry.Preset a preset name, path, or table
---@field allow_dangerous_mount? boolean

---@class foundry.SandboxInfo
---@field name string
---@field state "creating"|"running"|"stopped"|"missing"|"removing"
---@field branch string
---@field base string
---@field image string
---@field network foundry.NetworkMode
---@field workspace string
---@field repo string
---@field preset? string
---@field agent? string
---@field container? string
---@field created_at string ISO 8601, UTC

---@class foundry.ExecResult
---@field status integer
---@field stdout string
---@field stderr string
---@field ok boolean

---@class foundry.Sandbox
---@field name string
---@field state string
---@field branch string
---@field base string
---@field image string
---@field network string
---@field workspace string host path of the work tree
---@field repo string
---@field created_at integer ms since the epoch
local Sandbox = {}
---@param spec string|{[integer]: string, stdin?: string, env?: table<string,string>, workdir?: string, timeout?: integer, tty?: boolean, on_stdout?: fun(s: string), on_stderr?: fun(s: string)}
---@return foundry.ExecResult
function Sandbox:exec(spec) end
---@param script string
---@param opts? {stdin?: string, workdir?: string, env?: table, what?: string, check?: boolean}
---@return foundry.ExecResult
function Sandbox:sh(script, opts) end
---@param files table<string, string> "~/path" or "/path" -> content
function Sandbox:write_files(files) end
---@param opts? {command?: string[], session?: string, tmux?: boolean, detach_keys?: string}
---@return integer|"detached"
function Sandbox:attach(opts) end
---@return foundry.Sandbox
function Sandbox:stop() end
---@return foundry.Sandbox
function Sandbox:start() end
---@param opts? {keep_branch?: boolean, discard?: boolean}
---@return {name: string, removed: boolean, synced?: table}
function Sandbox:destroy(opts) end
---@return {branch: string, commits: integer, updated: boolean}
function Sandbox:sync(opts) end
---@param opts? {stat?: boolean}
---@return string
function Sandbox:diff(opts) end
---@return foundry.SandboxInfo
function Sandbox:info() end
---@return foundry.docker.Container|nil
function Sandbox:container() end

---@class foundry.StageContext
---@field spec foundry.SandboxSpec the resolved spec (preset merged with options)
---@field skip fun(reason: string): table return it from run: "nothing to do"
---@field note fun(message: string) a line under the running stage
---@field shield fun(fn: function, ...): ... work that finishes even when interrupted
---@field interrupted string|false the signal that interrupted the pipeline
---@field failed? table the error being rolled back (in undo)

---@class foundry.sandbox
local sandbox = {}
---@param spec foundry.SandboxSpec
---@param opts? {progress?: "auto"|"tty"|"plain"|"json"|"none", signals?: boolean, on_event?: fun(ev: table)}
---@return foundry.Sandbox
function sandbox.create(spec, opts) end
---@return foundry.Sandbox
function sandbox.get(name) end
---@return foundry.Sandbox
function sandbox.last() end
---@param opts? {live?: boolean}
---@return foundry.Sandbox[]
function sandbox.list(opts) end
---@param opts? {dry_run?: boolean}
function sandbox.prune(opts) end
