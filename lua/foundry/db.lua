--- SQLite databases: `local c = foundry.db.open(path)`.
---
--- A thin layer over the native `foundry._db`: option checking and documentation. Most code
--- wants `foundry.state` (the state database, its schema and accessors) instead.
---
--- The API is synchronous: statements run on the loop thread, which is fine for the short
--- queries Foundry makes; when another process holds the write lock, SQLite waits at most
--- `busy_timeout_ms` (default 5000) and then raises `db.busy`.
---
--- Parameters: `c:query("... WHERE a = ? AND b = ?", 1, "x")` binds by position;
--- `c:query("... WHERE a = :a", {a = 1})` binds by name (`:a`, `@a`, `$a`; `?` takes
--- `t[1]`, `t[2]`, ...). nil is NULL (a missing name binds NULL), booleans are 1/0,
--- strings are TEXT (any bytes). Rows are tables keyed by column name; integers stay Lua
--- integers; a NULL column is absent from the row (`row.x == nil`).
---
--- Errors are error objects: `db.busy`, `db.constraint` (`err.constraint` is "unique",
--- "foreignkey", "notnull", "check" or "primarykey"; `err.columns` names the unique
--- columns, e.g. "sandboxes.name"), `db.corrupt`, `db.readonly`, `db.full`, `db.error`.
--- SQL errors quote the first 80 characters of the statement.
local native = require "foundry._db"

local M = {}

---@class foundry.db.Connection
---@field exec fun(self, sql: string) run one or more statements (DDL); no parameters, no rows
---@field query fun(self, sql: string, ...: any): table[] every row
---@field row fun(self, sql: string, ...: any): table|nil the first row
---@field run fun(self, sql: string, ...: any): {changes: integer, last_id: integer}
---@field transaction fun(self, fn: function, ...: any): ... BEGIN IMMEDIATE .. COMMIT around fn(...)
---@field close fun(self) idempotent
---@field path fun(self): string|nil
---@field in_transaction fun(self): boolean
---@field is_open fun(self): boolean

--- The SQLite library version, e.g. "3.40.1".
M.sqlite_version = native.sqlite_version

local OPTS = { readonly = "boolean", busy_timeout_ms = "number", create = "boolean" }

--- Open (creating it unless `create=false` or `readonly`) the database at `path`, in WAL
--- mode with foreign keys on and `synchronous=NORMAL` (a commit survives a crash of the
--- process; a power loss may lose the last commits but never corrupts the file). A new file
--- is created with mode 0600.
---
--- `c:transaction(fn, ...)` runs `fn(...)` inside `BEGIN IMMEDIATE` .. `COMMIT` (a
--- `SAVEPOINT` when nested) and returns its results; when fn raises, the transaction is
--- rolled back and the error re-raised. fn must not wait (no sleep, exec or other I/O): a
--- transaction is a synchronous critical section, so no other task can slip statements
--- into it.
---@param path string a file, or ":memory:"
---@param opts? {readonly?: boolean, busy_timeout_ms?: integer, create?: boolean}
---@return foundry.db.Connection
function M.open(path, opts)
  if type(path) ~= "string" then error("db.open: path: expected string, got " .. type(path), 2) end
  if opts ~= nil then
    if type(opts) ~= "table" then error("db.open: opts: expected table, got " .. type(opts), 2) end
    for k, v in pairs(opts) do
      local want = OPTS[k]
      if not want then
        local util = require "foundry.util"
        local near = util.did_you_mean(tostring(k), util.keys(OPTS))
        error("db.open: unknown option '" .. tostring(k) .. "'" ..
          (near and (" — did you mean '" .. near .. "'?") or ""), 2)
      end
      if type(v) ~= want then error("db.open: " .. k .. ": expected " .. want .. ", got " .. type(v), 2) end
    end
  end
  return native.open(path, opts)
end

--- Run `fn()` when Foundry shuts down, after the last task ended and before Lua closes:
--- synchronous code only (buffered writers flush here). Errors are printed, not raised.
---@param fn function
M.at_exit = native.at_exit

return M
