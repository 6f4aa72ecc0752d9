--- git's pkt-line messages, as the proxy reads and writes them (C: proxy/pktline.c).
---
---   local pktline = require "foundry.pktline"
---   local push = pktline.parse_push(body)          -- {commands={{old=, new=, ref=}}, ...}
---   local adv = pktline.parse_advertisement(body)  -- {service=, refs={{id=, name=}}, ...}
---   local reply = pktline.report_status{ refs = {{ ref = "refs/heads/main", reason = "protected" }},
---                                        messages = { "push refused" }, sideband = 65520 }
---
--- Every parser is strict: what git would not send raises `git.malformed`.
local native = require "foundry._pktline"

local M = {}

M.FLUSH = native.FLUSH

---@class foundry.pktline.Push
---@field commands {old: string, new: string, ref: string}[]
---@field capabilities string
---@field shallow string[]
---@field options string[] push options (git push -o)
---@field pack_offset integer where the packfile starts in the body (1-based)
---@field pack_bytes integer
---@field hexsz integer 40 (SHA-1) or 64 (SHA-256)

--- Parse a receive-pack request body (the push): shallow lines, the command list with
--- the capabilities after the first command's NUL, push options, then the packfile.
---@param body string
---@return foundry.pktline.Push
M.parse_push = native.parse_push

---@class foundry.pktline.Advertisement
---@field service string|nil "git-upload-pack" or "git-receive-pack" (smart HTTP's first line)
---@field version integer 0 or 1
---@field refs {id: string, name: string}[] in order; peeled tags end in "^{}"
---@field capabilities string
---@field shallow string[]
---@field hexsz integer

--- Parse a ref advertisement (info/refs, protocol v0/v1; v2 is refused).
---@param body string
---@return foundry.pktline.Advertisement
M.parse_advertisement = native.parse_advertisement

--- Write an advertisement: `{service=, refs=, capabilities=, shallow=, hexsz=}` as
--- parse_advertisement returns it. With no refs, the "capabilities^{}" line of an empty
--- repository carries the capabilities.
---@param adv table
---@return string
M.build_advertisement = native.build_advertisement

--- Parse an upload-pack request (a fetch round, v0 stateless RPC):
--- `{wants = {id...}, haves = n, capabilities =, done = bool}`.
---@param body string
---@return {wants: string[], haves: integer, capabilities: string, done: boolean}
M.parse_upload = native.parse_upload

--- A receive-pack result git prints: `{unpack = "ok", refs = {{ref=, reason=}...},
--- messages = {...}, sideband = 0|1000|65520}`. A ref without a reason is "ok"; with one,
--- git prints ` ! [remote rejected] <ref> (<reason>)`. Messages go on side-band 2 and git
--- prints each as `remote: <message>` (they are dropped without side-band).
---@param spec {unpack?: string, refs: {ref: string, reason?: string}[], messages?: string[], sideband?: integer}
---@return string
M.report_status = native.report_status

--- An "ERR <message>" packet: git dies with `fatal: remote error: <message>`.
M.error_packet = native.error_packet

--- One data packet.
M.pkt = native.pkt

--- Is `name` a valid full ref name ("refs/...", git check-ref-format rules)?
M.ref_valid = native.ref_valid

--- Does the capability list contain `name` (or `name=value`)?
M.caps_has = native.caps_has

--- The side-band packet size a client asked for in `caps`: 65520 for side-band-64k, 1000
--- for side-band, 0 for none.
function M.sideband(caps)
  if native.caps_has(caps, "side-band-64k") then return 65520 end
  if native.caps_has(caps, "side-band") then return 1000 end
  return 0
end

return M
