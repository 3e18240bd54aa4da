-- Helpers for the specs of the built-in server on the open internet (issue 16;
-- serve_fairness, serve_body_budget, serve_slow_clients, serve_framing,
-- serve_access_log, nginx_front): raw loopback sockets, answers read exactly as sent.
local socket = require "socket"
local S = require "serve_helpers"

local H = {}

H.TOKEN_BODY = "connection[token]=demo-token"

-- A connected TCP socket to 127.0.0.1:port, optionally from another loopback
-- source address (127.0.0.2: another client for the per-address limits).
function H.connect(port, from, timeout)
  local c = assert(socket.tcp())
  if from then assert(c:bind(from, 0)) end
  c:settimeout(timeout or 10)
  local ok, err = c:connect("127.0.0.1", port)
  if not ok then c:close() return nil, err end
  return c
end

-- Everything the server sends until it closes (or the timeout): raw text, and
-- how it ended: "closed" (the server closed it), "timeout", or another error.
function H.read_all(c, timeout)
  c:settimeout(timeout or 10)
  local out, err, partial = c:receive("*a")
  return out or partial or "", err or "closed"
end

-- Sends raw bytes on a fresh connection; returns all it got back and how the
-- connection ended ("closed" when the server closed it).
function H.exchange(port, data, timeout)
  local c = assert(H.connect(port, nil, timeout))
  c:send(data)
  local raw, err = H.read_all(c, timeout)
  c:close()
  return raw, err
end

-- Status lines in a raw reply: one request, one answer.
function H.status_lines(raw)
  local list = {}
  for code in raw:gmatch("HTTP/1%.%d (%d%d%d)") do list[#list + 1] = tonumber(code) end
  return list
end

-- Reads one answer with a Content-Length body (no more): status, headers, body.
function H.read_answer(c)
  local line, err = c:receive("*l")
  if not line then return nil, err end
  local status = tonumber(line:match("^HTTP/1%.%d (%d+)"))
  local headers = {}
  while true do
    local l = c:receive("*l")
    if not l then return nil, "headers cut" end
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.*)$")
    if k then headers[k:lower()] = v end
  end
  local body = ""
  local n = tonumber(headers["content-length"] or "")
  if n and n > 0 then body = c:receive(n) end
  return { status = status, headers = headers, body = body }
end

-- A request on a fresh connection (optionally from another loopback address),
-- read to its Content-Length: the answer or nil, err.
function H.post(port, path, body, opts)
  opts = opts or {}
  local c, err = H.connect(port, opts.from, opts.timeout or 10)
  if not c then return nil, err end
  local head = { "POST " .. path .. " HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
    "Content-Type: " .. (opts.type or "application/x-www-form-urlencoded"),
    "Content-Length: " .. #body }
  c:send(table.concat(head, "\r\n") .. "\r\n\r\n" .. body)
  local r, rerr = H.read_answer(c)
  c:close()
  return r, rerr
end

-- The lines of the server's stderr (its access log) that match a pattern, waiting
-- up to `seconds` (the line is written when the answer is finished) for `count` of them.
function H.log_lines(h, pattern, count, seconds)
  local deadline = socket.gettime() + (seconds or 5)
  local found
  repeat
    found = {}
    for line in S.stderr(h):gmatch("[^\n]+") do
      if line:find(pattern) then found[#found + 1] = line end
    end
    if #found >= (count or 1) then break end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return found
end

-- VmRSS and VmHWM of a process, in KiB.
function H.rss_kib(pid)
  local status = S.read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(status:match("VmRSS:%s*(%d+)")), tonumber(status:match("VmHWM:%s*(%d+)"))
end

-- Is 127.0.0.2 usable as a source address here (Linux routes all of 127/8 to lo)?
function H.second_loopback()
  local c = socket.tcp()
  local ok = c:bind("127.0.0.2", 0)
  c:close()
  return ok ~= nil
end

return H
