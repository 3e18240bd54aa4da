-- keep-alive POST client: client.lua PORT PATH BODY N
local socket = require "socket"
local port, path, body, n = arg[1], arg[2], arg[3], tonumber(arg[4])
local c = assert(socket.connect("127.0.0.1", tonumber(port)))
local req = "POST " .. path .. " HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
for _ = 1, n do
  assert(c:send(req))
  local len, chunked
  while true do
    local line = assert(c:receive("*l"))
    if line == "" then break end
    local l = line:match("^[Cc]ontent%-[Ll]ength: *(%d+)")
    if l then len = tonumber(l) end
    if line:lower():find("transfer%-encoding: *chunked") then chunked = true end
  end
  if len then assert(c:receive(len)) elseif chunked then
    while true do
      local sz = tonumber(assert(c:receive("*l")), 16)
      if sz == 0 then assert(c:receive("*l")) break end
      assert(c:receive(sz)); assert(c:receive("*l"))
    end
  end
end
c:close()
