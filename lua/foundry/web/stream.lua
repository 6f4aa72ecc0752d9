--- Live updates for the console's pages, as Server-Sent Events (`GET /api/stream`).
---
--- The state database is the meeting point: the CLI, the daemon and this console all
--- write to it, so the stream polls it (every `interval_ms`) and sends what is new:
---
---   event: fleet          every sandbox (when anything in the list changed)
---   event: notification   a new notification
---   event: sandbox        the watched sandbox in detail (when it changed; {gone=true}
---                         once it is removed)
---   event: log            a setup event or log line of the watched sandbox
---   event: audit          an audit row of the watched sandbox
---   event: chat           a chat message of the watched sandbox
---
--- Query: `sandbox=NAME` to watch one; cursors `event=`, `log=`, `audit=`, `chat=`,
--- `note=` (ids already seen; without them the last rows are sent first). A client that
--- reconnects passes the cursors it has, so nothing is sent twice.
local json = require "foundry.json"
local errors = require "foundry.errors"
local task = require "foundry._task"
local data = require "foundry.web.data"

local M = {}

M.interval_ms = 500
M.detail_ms = 1000   -- the watched sandbox's detail asks the engine for its container
M.fleet_ms = 2000
M.heartbeat_ms = 15000
M.appear_ms = 15000  -- how long a watched sandbox may take to appear before it is "gone"

local function int(v)
  local n = math.tointeger(tonumber(v))
  return n and n >= 0 and n or nil
end

local function event(name, value)
  return "event: " .. name .. "\ndata: " .. json.encode(value) .. "\n\n"
end

--- Serve one stream until the client goes away or the console closes.
function M.serve(req, res, console)
  local q = req.query
  local name = q.sandbox ~= "" and q.sandbox or nil
  local cur = { event = int(q.event), log = int(q.log), audit = int(q.audit), chat = int(q.chat), note = int(q.note) }
  local watch_fleet = q.fleet ~= "0"
  if not res:start(200, { ["content-type"] = "text/event-stream; charset=utf-8", ["x-accel-buffering"] = "no" }) then
    return
  end
  if not res:write("retry: 2000\n\n") then return end
  local last_fleet, last_detail = nil, nil
  local last_fleet_at, last_detail_at, last_beat = -math.huge, -math.huge, 0
  local clock = 0
  local gone = false
  while not res:closed() and not console.closing do
    local out = {}
    if watch_fleet and clock - last_fleet_at >= M.fleet_ms then
      last_fleet_at = clock
      local ok, fleet = pcall(data.fleet)
      if ok then
        fleet.now = nil
        local enc = json.encode(fleet)
        if enc ~= last_fleet then
          last_fleet = enc
          out[#out + 1] = "event: fleet\ndata: " .. enc .. "\n\n"
        end
      end
      local nok, notes, ncur = pcall(data.notifications, cur.note, cur.note and 100 or 20)
      if nok then
        for _, n in ipairs(notes) do out[#out + 1] = event("notification", n) end
        cur.note = ncur
      end
    end
    if name and not gone then
      local ok, d = true, nil
      if clock - last_detail_at >= M.detail_ms then
        last_detail_at = clock
        ok, d = pcall(data.detail, name)
      end
      if ok then
        local enc = d and json.encode(d)
        if enc and enc ~= last_detail then
          last_detail = enc
          out[#out + 1] = "event: sandbox\ndata: " .. enc .. "\n\n"
        end
        local lok, rows, c = pcall(data.logs, name, { event = cur.event, log = cur.log }, 500)
        if lok then
          for _, r in ipairs(rows) do out[#out + 1] = event("log", r) end
          cur.event, cur.log = c.event, c.log
        end
        local aok, arows, acur = pcall(data.audit, name, cur.audit, 500)
        if aok then
          for _, r in ipairs(arows) do out[#out + 1] = event("audit", r) end
          cur.audit = acur
        end
        local cok, crows, ccur = pcall(data.chat, name, cur.chat, 500)
        if cok then
          for _, r in ipairs(crows) do out[#out + 1] = event("chat", r) end
          cur.chat = ccur
        end
      elseif errors.is(d, "sandbox.not_found") and (last_detail or clock >= M.appear_ms) then
        -- (a sandbox the console just started creating may not have its row yet)
        gone = true
        out[#out + 1] = event("sandbox", { name = name, gone = true })
      end
    end
    if #out == 0 and clock - last_beat >= M.heartbeat_ms then
      out[1] = ": keep-alive\n\n"
    end
    if #out > 0 then
      last_beat = clock
      if not res:write(table.concat(out)) then return end
    end
    task.sleep(M.interval_ms)
    clock = clock + M.interval_ms
  end
end

return M
