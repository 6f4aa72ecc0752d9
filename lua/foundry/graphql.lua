--- GraphQL documents, parsed with an lpeg grammar (executable definitions of the
--- October 2021 specification: operations, selections, fields with aliases, arguments and
--- directives, fragments, inline fragments, variables and every kind of value).
---
--- The proxy uses it to judge each mutation field a request would run, never a substring:
---
---   local graphql = require "foundry.graphql"
---   local doc = graphql.parse('mutation M($id: ID!) { m: mergePullRequest(input: {pullRequestId: $id}) { clientMutationId } }')
---   for _, f in ipairs(graphql.mutation_fields(doc, { id = "PR_1" })) do
---     print(f.name, f.alias, f.args.input.pullRequestId)   --> mergePullRequest  m  PR_1
---   end
---
--- Values: strings and numbers are Lua values, `true`/`false`, `graphql.null`, enums
--- `{enum = "APPROVE"}`, variables `{var = "id"}` (replaced by `resolve`), lists and input
--- objects are tables. A document that does not parse raises `graphql.syntax`.
local lpeg = require "lpeg"
local errors = require "foundry.errors"

local P, R, S, V, C, Ct, Cc, Cg, Cmt = lpeg.P, lpeg.R, lpeg.S, lpeg.V, lpeg.C, lpeg.Ct, lpeg.Cc, lpeg.Cg, lpeg.Cmt

local M = {}

--- The null value (distinct from an absent argument).
M.null = setmetatable({}, { __name = "graphql.null", __tostring = function() return "null" end })

--- Documents larger than this are refused (the proxy reads at most 1 MiB of a body).
M.MAX_BYTES = 1 << 20
--- Selection sets nested deeper than this are refused.
M.MAX_DEPTH = 48

-- ------------------------------------------------------------------ lexical

local bom = P "\239\187\191"
local line_terminator = P "\r\n" + S "\r\n"
local comment = P "#" * (1 - S "\r\n") ^ 0
local ignored = (S " \t," + line_terminator + comment + bom) ^ 0

local name_start = R("az", "AZ") + P "_"
local name_char = name_start + R "09"
local name = C(name_start * name_char ^ 0)

local function tok(p) return p * ignored end
local function kw(word) return tok(P(word) * -name_char) end
local function sym(s) return tok(P(s)) end

local NAME = tok(name)

-- numbers: an int or float must not run into a name or a '.'
local digit = R "09"
local int_part = P "-" ^ -1 * (P "0" + R "19" * digit ^ 0)
local frac = P "." * digit ^ 1
local exp = S "eE" * S "+-" ^ -1 * digit ^ 1
local number = C(int_part * (frac * exp ^ -1 + exp) ^ -1) * -(name_start + P ".")
local NUMBER = tok(number / tonumber)

-- strings
local hex = R("09", "af", "AF")
local function utf8_of(cp)
  if cp >= 0xD800 and cp <= 0xDFFF then return nil end
  return utf8.char(cp)
end
local escape_map = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
-- \uD83D\uDE00: a surrogate pair is one character
local pair = P "\\u" * C(S "dD" * S "89abAB" * hex * hex) * P "\\u" * C(S "dD" * S "cdefCDEF" * hex * hex)
  / function(hi, lo)
      return utf8.char(0x10000 + ((tonumber(hi, 16) - 0xD800) << 10) + (tonumber(lo, 16) - 0xDC00))
    end
local u4 = Cmt(P "\\u" * C(hex * hex * hex * hex), function(_, pos, h)
  local s = utf8_of(tonumber(h, 16))
  if not s then return false end
  return pos, s
end)
local ubrace = Cmt(P "\\u{" * C(hex ^ 1) * P "}", function(_, pos, h)
  local cp = #h <= 6 and tonumber(h, 16)
  local s = cp and cp <= 0x10FFFF and utf8_of(cp)
  if not s then return false end
  return pos, s
end)
local simple_escape = P "\\" * C(S '"\\/bfnrt') / escape_map
local string_char = C((1 - S '"\\\r\n') ^ 1)
local plain_string = P '"' * lpeg.Cf(Cc "" * (string_char + pair + ubrace + u4 + simple_escape) ^ 0,
  function(a, b) return a .. b end) * P '"'

-- Block strings: raw text with \""" for a literal """; common indentation is removed and
-- blank first/last lines are dropped, as the specification says.
local function block_value(raw)
  raw = raw:gsub('\\"""', '"""')
  local lines = {}
  for line in (raw .. "\n"):gmatch("(.-)\r?\n") do lines[#lines + 1] = line end
  local common
  for i = 2, #lines do
    local ws, rest = lines[i]:match("^([ \t]*)(.*)$")
    if rest ~= "" and (not common or #ws < common) then common = #ws end
  end
  if common then
    for i = 2, #lines do lines[i] = lines[i]:sub(common + 1) end
  end
  while #lines > 0 and lines[1]:match("^[ \t]*$") do table.remove(lines, 1) end
  while #lines > 0 and lines[#lines]:match("^[ \t]*$") do table.remove(lines) end
  return table.concat(lines, "\n")
end
local block_string = P '"""' * C((P '\\"""' + (1 - P '"""')) ^ 0) * P '"""' / block_value
local STRING = tok(block_string + plain_string)

-- ------------------------------------------------------------------ syntax

local function node(kind) return function(t) t.kind = kind; return t end end
local function list(p) return Ct(p) end

-- Enums and variables are tagged by their metatables, so an input object with a field
-- named "enum" or "var" is not mistaken for one.
local Enum = { __name = "graphql.enum", __tostring = function(e) return e.enum end }
local Var = { __name = "graphql.variable", __tostring = function(v) return "$" .. v.var end }
local function enum(n) return setmetatable({ enum = n }, Enum) end
local function var(n) return setmetatable({ var = n }, Var) end
M.is_enum = function(v) return getmetatable(v) == Enum end
M.is_variable = function(v) return getmetatable(v) == Var end

local grammar = P {
  "document",
  document = ignored * Ct((V "definition") ^ 1) * -1,
  definition = V "operation" + V "fragment" + V "shorthand",

  shorthand = Ct(Cg(Cc "query", "operation") * Cg(V "selection_set", "selections")) / node "operation",
  operation = Ct(Cg(C(P "query" + P "mutation" + P "subscription") * -name_char * ignored, "operation")
    * Cg(NAME, "name") ^ -1
    * Cg(V "variable_definitions", "variables") ^ -1
    * Cg(V "directives", "directives") ^ -1
    * Cg(V "selection_set", "selections")) / node "operation",
  fragment = Ct(kw "fragment" * Cg(V "fragment_name", "name") * kw "on" * Cg(NAME, "type")
    * Cg(V "directives", "directives") ^ -1
    * Cg(V "selection_set", "selections")) / node "fragment",
  fragment_name = Cmt(NAME, function(_, pos, n) if n == "on" then return false end return pos, n end),

  selection_set = sym "{" * list(V "selection" ^ 1) * sym "}",
  selection = V "field" + V "inline_fragment" + V "spread",
  field = Ct((Cg(NAME, "alias") * sym ":") ^ -1 * Cg(NAME, "name")
    * Cg(V "arguments", "args") ^ -1
    * Cg(V "directives", "directives") ^ -1
    * Cg(V "selection_set", "selections") ^ -1) / node "field",
  spread = Ct(sym "..." * Cg(V "fragment_name", "name") * Cg(V "directives", "directives") ^ -1) / node "spread",
  inline_fragment = Ct(sym "..." * (kw "on" * Cg(NAME, "type")) ^ -1
    * Cg(V "directives", "directives") ^ -1
    * Cg(V "selection_set", "selections")) / node "inline",

  arguments = sym "(" * Ct((Cg(NAME * sym ":" * V "value")) ^ 1) * sym ")"
    / function(t) return t end,
  directives = list((Ct(sym "@" * Cg(NAME, "name") * Cg(V "arguments", "args") ^ -1)) ^ 1),

  variable_definitions = sym "(" * list(V "variable_definition" ^ 1) * sym ")",
  variable_definition = Ct(sym "$" * Cg(NAME, "name") * sym ":" * Cg(V "type", "type")
    * (sym "=" * Cg(V "value", "default")) ^ -1 * Cg(V "directives", "directives") ^ -1),
  type = (Ct(sym "[" * Cg(V "type", "of") * sym "]" * Cg(Cc "list", "kind")) + Ct(Cg(NAME, "name") * Cg(Cc "named", "kind")))
    * (sym "!" * Cc(true)) ^ -1 / function(t, nn) if nn then t.non_null = true end return t end,

  value = V "variable" + NUMBER + STRING
    + kw "true" * Cc(true) + kw "false" * Cc(false) + kw "null" * Cc(M.null)
    + V "list_value" + V "object_value"
    + NAME / enum,
  variable = sym "$" * NAME / var,
  list_value = sym "[" * Ct(V "value" ^ 0) * sym "]" / function(t) t.is_list = true return t end,
  object_value = sym "{" * Ct((Cg(NAME * sym ":" * V "value")) ^ 0) * sym "}",
}

-- Arguments and object fields arrive as a list of (name, value) pairs from Cg: turn them
-- into maps. lpeg's Ct with anonymous Cg of two values gives {name, value, name, value...}.
local function pairs_to_map(t)
  local out = {}
  for i = 1, #t, 2 do out[t[i]] = t[i + 1] end
  return out
end

local function fix_values(v)
  if type(v) ~= "table" or v == M.null or getmetatable(v) then return v end
  if v.is_list then
    v.is_list = nil
    for i, x in ipairs(v) do v[i] = fix_values(x) end
    return v
  end
  local map = pairs_to_map(v)
  for k, x in pairs(map) do map[k] = fix_values(x) end
  return map
end

local function fix_args(t)
  if not t then return nil end
  local map = pairs_to_map(t)
  for k, x in pairs(map) do map[k] = fix_values(x) end
  return map
end

local function fix_selections(sels, level)
  if level > M.MAX_DEPTH then
    errors.raise("graphql.syntax", "the GraphQL document nests selections deeper than " .. M.MAX_DEPTH)
  end
  for _, s in ipairs(sels or {}) do
    if s.args then s.args = fix_args(s.args) end
    for _, d in ipairs(s.directives or {}) do d.args = fix_args(d.args) end
    if s.selections then fix_selections(s.selections, level + 1) end
  end
end

-- ------------------------------------------------------------------ API

--- Parse a document. Returns `{operations = {...}, fragments = {name = def}}`; each
--- operation `{operation = "query"|"mutation"|"subscription", name=, variables=,
--- selections=}`, each selection a field `{kind="field", name=, alias=, args=,
--- selections=}`, a spread `{kind="spread", name=}` or an inline fragment
--- `{kind="inline", type=, selections=}`. Raises `graphql.syntax`.
---@param text string
---@return table
function M.parse(text)
  if type(text) ~= "string" then error("graphql.parse: expected a string, got " .. type(text), 2) end
  if #text > M.MAX_BYTES then
    errors.raise("graphql.syntax", "the GraphQL document is larger than " .. M.MAX_BYTES .. " bytes")
  end
  local ok, defs = pcall(lpeg.match, grammar, text)
  if not ok or not defs then
    local why = not ok and tostring(defs):gsub("^.-: ", "") or nil
    errors.raise("graphql.syntax", "the GraphQL document does not parse" .. (why and (" (" .. why .. ")") or ""))
  end
  local doc = { operations = {}, fragments = {} }
  for _, d in ipairs(defs) do
    if d.kind == "fragment" then
      if doc.fragments[d.name] then
        errors.raise("graphql.syntax", "fragment '" .. d.name .. "' is defined twice")
      end
      fix_selections(d.selections, 1)
      doc.fragments[d.name] = d
    else
      for _, v in ipairs(d.variables or {}) do
        if v.default ~= nil then v.default = fix_values(v.default) end
      end
      fix_selections(d.selections, 1)
      doc.operations[#doc.operations + 1] = d
    end
  end
  return doc
end

--- Replace variables in a value by their values from `vars` (a decoded JSON object);
--- a variable without a value becomes `graphql.null`, or its default from `defaults`.
function M.resolve(v, vars, defaults)
  if type(v) ~= "table" or v == M.null or getmetatable(v) == Enum then return v end
  if getmetatable(v) == Var then
    local x = vars and vars[v.var]
    if x == nil and defaults then x = defaults[v.var] end
    if x == nil then return M.null end
    return x
  end
  local out = {}
  for k, x in pairs(v) do out[k] = M.resolve(x, vars, defaults) end
  return out
end

-- The fields a selection set runs at its own level: fragment spreads and inline fragments
-- are expanded (each fragment once per path, so a cycle cannot loop).
local function expand(doc, sels, out, seen)
  for _, s in ipairs(sels or {}) do
    if s.kind == "field" then
      out[#out + 1] = s
    elseif s.kind == "inline" then
      expand(doc, s.selections, out, seen)
    elseif s.kind == "spread" then
      local f = doc.fragments[s.name]
      if not f then errors.raise("graphql.syntax", "unknown fragment '" .. s.name .. "'") end
      if not seen[s.name] then
        seen[s.name] = true
        expand(doc, f.selections, out, seen)
        seen[s.name] = nil
      end
    end
  end
  return out
end

--- Every top-level field of every mutation operation in `doc` (a parsed document or its
--- text), with arguments resolved against `variables`: `{name=, alias=, args=}`. Every
--- mutation operation is judged, whatever `operationName` the request names: the server
--- runs one, the proxy refuses if any would be refused.
---@param doc table|string
---@param variables? table
---@return {name: string, alias?: string, args: table, operation?: string}[]
function M.mutation_fields(doc, variables)
  if type(doc) == "string" then doc = M.parse(doc) end
  local out = {}
  for _, op in ipairs(doc.operations) do
    if op.operation == "mutation" then
      local defaults = {}
      for _, v in ipairs(op.variables or {}) do
        if v.default ~= nil then defaults[v.name] = v.default end
      end
      for _, f in ipairs(expand(doc, op.selections, {}, {})) do
        out[#out + 1] = { name = f.name, alias = f.alias, operation = op.name,
                          args = M.resolve(f.args or {}, type(variables) == "table" and variables or {}, defaults) }
      end
    end
  end
  return out
end

--- The kinds of operation in a document: a set like `{query = true, mutation = true}`.
function M.operation_kinds(doc)
  if type(doc) == "string" then doc = M.parse(doc) end
  local kinds = {}
  for _, op in ipairs(doc.operations) do kinds[op.operation] = true end
  return kinds
end

--- An enum or string argument's text (`APPROVE` from `{enum="APPROVE"}` or "APPROVE").
function M.text(v)
  if getmetatable(v) == Enum then return v.enum end
  if type(v) == "string" then return v end
  return nil
end

return M
