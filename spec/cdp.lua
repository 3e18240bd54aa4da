-- A small Chrome DevTools Protocol client over luasocket, for the dev page
-- spec and `make screenshot`: starts headless Chromium (Debian `chromium`)
-- with a fresh profile, connects to its page target over a WebSocket (RFC
-- 6455, client frames masked with a zero key), sends commands and evaluates
-- JavaScript. Every wait is bounded by the deadline the caller gives.
local socket = require "socket"
local cjson = require "cjson"

local CDP = {}
CDP.__index = CDP

CDP.CHROMIUM = os.getenv("BIC_CHROMIUM") or "/usr/bin/chromium"

-- The flags Chromium needs to run headless as root in a container, with no
-- network of its own (no updates, sync, QUIC) and a profile nobody else uses.
CDP.FLAGS = { "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-dev-shm-usage", "--disable-breakpad", "--disable-crash-reporter", "--no-default-browser-check",
  "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0" }

local helpers = require "helpers"
local read_file, execute_ok, shell_quote = helpers.read_file, helpers.sh, helpers.q

-- Is Chromium there? -> true | false, why
function CDP.available()
  local f = io.open(CDP.CHROMIUM, "r")
  if not f then return false, CDP.CHROMIUM .. " is not installed (Debian package chromium)" end
  f:close()
  return true
end

-- One HTTP GET on the DevTools port (for /json/list).
local function http_get(port, path, deadline)
  local c = socket.tcp()
  c:settimeout(math.max(0.1, deadline - socket.gettime()))
  assert(c:connect("127.0.0.1", port))
  c:send(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"):format(path, port))
  local length
  repeat -- Chromium keeps the connection open: read by Content-Length
    local line = assert(c:receive("*l"))
    length = length or tonumber(line:lower():match("^content%-length:%s*(%d+)"))
  until line == ""
  local body = assert(c:receive(length or 0))
  c:close()
  return body
end

-- CDP.start({ window = "1280,800", deadline_seconds = 30 }) -> client | nil, err
function CDP.start(opts)
  opts = opts or {}
  local seconds = opts.deadline_seconds or 30
  local dir = helpers.tmpdir("chromium")
  local self = setmetatable({ dir = dir, next_id = 0, events = {} }, CDP)
  local args = { CDP.CHROMIUM }
  for _, f in ipairs(CDP.FLAGS) do args[#args + 1] = f end
  args[#args + 1] = "--user-data-dir=" .. dir
  args[#args + 1] = "--window-size=" .. (opts.window or "1280,800")
  args[#args + 1] = "about:blank"
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = shell_quote(a) end
  self.log = dir .. ".log"
  self.pid = helpers.spawn(table.concat(quoted, " "), shell_quote(self.log))
  -- Chromium writes the port it took (and the browser's path) to DevToolsActivePort
  local deadline = socket.gettime() + seconds
  local port = helpers.poll(function()
    return tonumber((read_file(dir .. "/DevToolsActivePort") or ""):match("^(%d+)\n"))
  end, seconds, 0.05)
  if not port then
    local log = read_file(self.log) or ""
    self:close()
    return nil, "chromium did not open its DevTools port within " .. seconds .. " s: " .. log:sub(1, 2000)
  end
  self.port = port
  local ws_url = helpers.poll(function()
    local ok, list = pcall(function() return cjson.decode(http_get(port, "/json/list", deadline)) end)
    if ok and type(list) == "table" then
      for _, t in ipairs(list) do
        if t.type == "page" and t.webSocketDebuggerUrl then return t.webSocketDebuggerUrl end
      end
    end
  end, math.max(0, deadline - socket.gettime()), 0.05)
  if not ws_url then
    self:close()
    return nil, "chromium listed no page target"
  end
  local ok, err = self:connect(ws_url, deadline)
  if not ok then
    self:close()
    return nil, err
  end
  return self
end

function CDP:connect(url, deadline)
  local host, port, path = url:match("^ws://([^:/]+):(%d+)(/.*)$")
  local c = socket.tcp()
  c:settimeout(math.max(0.1, deadline - socket.gettime()))
  local ok, err = c:connect(host, tonumber(port))
  if not ok then return nil, "connect " .. url .. ": " .. tostring(err) end
  c:send(("GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    .. "Sec-WebSocket-Key: Ymljb25uZWN0b3Itc3BlYw==\r\nSec-WebSocket-Version: 13\r\n\r\n"):format(path, host, port))
  local status = c:receive("*l")
  if not status or not status:match("^HTTP/1%.1 101") then
    return nil, "websocket handshake refused: " .. tostring(status)
  end
  repeat
    local line = c:receive("*l")
    if not line then return nil, "websocket handshake cut" end
  until line == ""
  self.sock = c
  return true
end

-- One text frame, masked with the key 0 (RFC 6455 wants masking; any key does).
local function frame(opcode, payload)
  local n = #payload
  local head
  if n < 126 then
    head = string.char(0x80 + opcode, 0x80 + n)
  elseif n < 65536 then
    head = string.char(0x80 + opcode, 0x80 + 126, math.floor(n / 256), n % 256)
  else
    local bytes = {}
    for i = 8, 1, -1 do bytes[i] = n % 256 n = math.floor(n / 256) end
    head = string.char(0x80 + opcode, 0x80 + 127, table.unpack and table.unpack(bytes) or unpack(bytes))
  end
  return head .. "\0\0\0\0" .. payload
end

local function receive_exact(sock, n)
  local data, err, partial = sock:receive(n)
  if not data then return nil, err, partial end
  return data
end

-- The next whole message: text | nil, err
function CDP:receive_message(deadline)
  local parts = {}
  while true do
    self.sock:settimeout(math.max(0.01, deadline - socket.gettime()))
    local head, err = receive_exact(self.sock, 2)
    if not head then return nil, "websocket: " .. tostring(err) end
    local b1, b2 = head:byte(1, 2)
    local fin, opcode, len = b1 >= 128, b1 % 16, b2 % 128
    if len == 126 then
      local ext = assert(receive_exact(self.sock, 2))
      len = ext:byte(1) * 256 + ext:byte(2)
    elseif len == 127 then
      local ext = assert(receive_exact(self.sock, 8))
      len = 0
      for i = 1, 8 do len = len * 256 + ext:byte(i) end
    end
    local mask = b2 >= 128 and assert(receive_exact(self.sock, 4)) or nil
    local payload = len > 0 and assert(receive_exact(self.sock, len)) or ""
    assert(mask == nil, "the server masked a frame")
    if opcode == 8 then return nil, "websocket closed by chromium" end
    if opcode == 9 then
      self.sock:send(frame(10, payload))
    elseif opcode ~= 10 then
      parts[#parts + 1] = payload
      if fin then return table.concat(parts) end
    end
  end
end

-- send(method, params, seconds) -> result | raises with the protocol's error
function CDP:send(method, params, seconds)
  self.next_id = self.next_id + 1
  local id = self.next_id
  local msg = { id = id, method = method }
  if params and next(params) then msg.params = params end
  local deadline = socket.gettime() + (seconds or 30)
  assert(self.sock:send(frame(1, cjson.encode(msg))))
  while true do
    local text, err = self:receive_message(deadline)
    if not text then error(method .. ": " .. err, 2) end
    local m = cjson.decode(text)
    if m.id == id then
      if m.error then error(method .. ": " .. tostring(m.error.message) .. " " .. tostring(m.error.data or ""), 2) end
      return m.result
    elseif m.method then
      self.events[#self.events + 1] = m
    end
  end
end

-- evaluate(js, seconds) -> the value (JSON-able), raising on a JS exception.
-- A promise is awaited.
function CDP:evaluate(js, seconds)
  local r = self:send("Runtime.evaluate", { expression = js, returnByValue = true, awaitPromise = true }, seconds)
  if r.exceptionDetails then
    local e = r.exceptionDetails
    error("javascript: " .. tostring(e.exception and e.exception.description or e.text), 2)
  end
  local v = r.result.value
  if v == cjson.null then return nil end
  return v
end

-- wait_for(js, seconds) -> the first truthy value of js, evaluated until the deadline.
function CDP:wait_for(js, seconds, what)
  local last = helpers.poll(function() return self:evaluate(js, seconds) end, seconds, 0.02)
  if last ~= nil then return last end
  error(("%s: not true within %g s: %s"):format(what or "wait_for", seconds, js), 2)
end

local function navigate_once(self, url, seconds)
  self.events = {}
  self:send("Page.navigate", { url = url }, seconds)
  local deadline = socket.gettime() + (seconds or 30)
  while true do
    for _, e in ipairs(self.events) do
      if e.method == "Page.loadEventFired" then return true end
    end
    local text, err = self:receive_message(deadline)
    if not text then error("navigate " .. url .. ": " .. err, 3) end
    local m = cjson.decode(text)
    if m.method then self.events[#self.events + 1] = m end
  end
end

-- Navigates and waits for the page's load event. By way of about:blank: a
-- link that differs from the page shown only in its #fragment would otherwise
-- not load the page again (and fire no load event).
function CDP:navigate(url, seconds)
  if not self.page_enabled then
    self:send("Page.enable")
    self.page_enabled = true
  end
  navigate_once(self, "about:blank", seconds)
  return navigate_once(self, url, seconds)
end

-- A PNG of the page as it is now, width x height CSS pixels.
function CDP:screenshot(width, height)
  self:send("Emulation.setDeviceMetricsOverride",
    { width = width, height = height, deviceScaleFactor = 1, mobile = false })
  local r = self:send("Page.captureScreenshot", { format = "png", captureBeyondViewport = false })
  return CDP.base64_decode(r.data)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function CDP.base64_decode(text)
  local value = {}
  for i = 1, 64 do value[B64:byte(i)] = i - 1 end
  local out, bits, nbits = {}, 0, 0
  for i = 1, #text do
    local v = value[text:byte(i)]
    if v then
      bits = bits * 64 + v
      nbits = nbits + 6
      if nbits >= 8 then
        nbits = nbits - 8
        local b = math.floor(bits / 2 ^ nbits)
        out[#out + 1] = string.char(b)
        bits = bits - b * 2 ^ nbits
      end
    end
  end
  return table.concat(out)
end

-- Closes the browser (Browser.close, then SIGKILL if it lingers) and removes the profile.
function CDP:close()
  if self.sock then
    pcall(self.send, self, "Browser.close", nil, 5)
    self.sock:close()
    self.sock = nil
  end
  if self.pid then
    helpers.poll(function() return not execute_ok("kill -0 " .. self.pid .. " 2>/dev/null") end, 10, 0.05)
    os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
    self.pid = nil
  end
  os.execute(("rm -rf %s %s"):format(shell_quote(self.dir), shell_quote(self.log)))
end

return CDP
