-- core.server (libmicrohttpd driven from the Lua thread) with plain Lua handlers,
-- over real loopback HTTP; the server runs as a subprocess (spec/serve_plain_server.lua).
local helpers = require "helpers"
local S = require "serve_helpers"
local socket = require "socket"
local cjson = require "cjson"
local core = require "biconnector.core"

local function start(env)
  return S.start(helpers.runtime .. " spec/serve_plain_server.lua", env)
end

describe("core.server userdata", function()
  it("opens on a free port, closes once, and close is safe twice", function()
    local srv = assert(core.server.new { port = 0, handler = function() return 200, {}, "" end })
    assert.is_true(srv:port() > 0)
    assert.matches("port %d+", tostring(srv))
    srv:close()
    srv:close()
    assert.matches("closed", tostring(srv))
    assert.has_error(function() srv:port() end, "the server is closed")
    assert.has_error(function() srv:run() end, "the server is closed")
  end)

  it("is collectable, and the collector closes its socket", function()
    local weak = setmetatable({}, { __mode = "v" })
    local port
    do
      local srv = assert(core.server.new { port = 0, handler = function() end })
      port = srv:port()
      weak[1] = srv
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
    -- the port is free again: a new server can take it
    local again = assert(core.server.new { port = port, handler = function() end })
    again:close()
  end)

  it("closes through a to-be-closed variable #lua54", function()
    local chunk = assert(load([[
      local core = ...
      local kept
      do
        local srv <close> = assert(core.server.new { port = 0, handler = function() end })
        kept = srv
      end
      return tostring(kept)
    ]]))
    assert.matches("closed", chunk(core))
  end)

  it("rejects bad options with a message naming the option", function()
    assert.has_error(function() core.server.new {} end, "option 'handler' must be a function")
    assert.has_error(function() core.server.new { handler = print, port = "x" } end,
      "option 'port' is a string, expected a number")
    assert.has_error(function() core.server.new { handler = print, port = 70000 } end)
    assert.has_error(function() core.server.new { handler = print, port = 0, max_body = -1 } end)
  end)

  it("opens nothing when an option is bad, and frees its socket on close", function()
    local listing = os.tmpname()
    local function open_fds() -- no io.popen: its pipe would be counted, or not, by a race
      os.execute("ls /proc/" .. S.self_pid() .. "/fd > " .. listing)
      local n = select(2, S.read_file(listing):gsub("\n", ""))
      return n
    end
    local before = open_fds()
    for _ = 1, 20 do
      assert.has_error(function() core.server.new { handler = print, port = 0, timeout = "soon" } end,
        "option 'timeout' is a string, expected a number")
      assert.has_error(function() core.server.new { handler = print, port = 0, connections = 0 } end)
      local srv = assert(core.server.new { handler = print, port = 0 })
      srv:close()
    end
    assert.equals(before, open_fds())
    os.remove(listing)
  end)

  it("answers nil and a message when the port is taken", function()
    local srv = assert(core.server.new { port = 0, handler = function() end })
    local again, err = core.server.new { port = srv:port(), handler = function() end }
    assert.is_nil(again)
    assert.matches("cannot listen on 127.0.0.1:%d+: Address already in use", err)
    srv:close()
  end)

  it("listen() hands out a listening socket and its port", function()
    local fd, port = core.server.listen("127.0.0.1", 0)
    assert.is_number(fd)
    assert.is_true(port > 0)
    local srv = assert(core.server.new { fd = fd, handler = function() end })
    assert.equals(port, srv:port())
    srv:close()
    local none, err = core.server.listen("no-such-host.invalid", 0)
    assert.is_nil(none)
    assert.matches("cannot resolve no%-such%-host%.invalid", err)
  end)

  it("run() returns when its time is up", function()
    local srv = assert(core.server.new { port = 0, handler = function() end })
    assert.equals("timeout", srv:run(0.05))
    srv:close()
  end)
end)

describe("core.server over HTTP", function()
  local h
  setup(function() h = start({ MAX_BODY = "1000", TIMEOUT = "1" }) end)
  teardown(function() S.stop(h) end)

  local function ok_after()
    local r = assert(S.request(h.port, "POST", "/echo", "ping"))
    assert.equals(200, r.status)
    assert.is_true(S.alive(h.pid))
  end

  -- GET path is answered with status and exactly body.
  local function assert_get(path, status, body)
    local r = assert(S.request(h.port, "GET", path))
    assert.equals(status, r.status)
    assert.equals(body, r.body)
  end

  it("hands method, path, query, lower-case headers, body and remote to the handler", function()
    local r = assert(S.request(h.port, "POST", "/echo?a=1&b=two", "hello=world",
      { ["X-Custom"] = "Value", ["Content-Type"] = "application/x-www-form-urlencoded" }))
    assert.equals(200, r.status)
    assert.equals("application/json", r.headers["content-type"])
    local req = cjson.decode(r.body)
    assert.equals("POST", req.method)
    assert.equals("/echo", req.path)
    assert.same({ a = "1", b = "two" }, req.query)
    assert.equals("Value", req.headers["x-custom"])
    assert.equals("application/x-www-form-urlencoded", req.headers["content-type"])
    assert.equals("hello=world", req.body)
    assert.equals("127.0.0.1", req.remote)
  end)

  it("streams an iterator with chunked transfer", function()
    local r = assert(S.request(h.port, "GET", "/stream?n=50&size=1000"))
    assert.equals(200, r.status)
    assert.equals("chunked", r.headers["transfer-encoding"])
    assert.equals(50 * 1000, #r.body)
    assert.equals(("x"):rep(999) .. "\n", r.body:sub(1, 1000))
  end)

  it("skips empty chunks from an iterator", function()
    assert_get("/empties", 200, "part1\npart2\npart3\n")
  end)

  it("serves others while an iterator gives only empty chunks, and drops it once its client is gone", function()
    local c = helpers.connect(h.port, 5)
    c:send("GET /forever_empty HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.matches("^HTTP/1.1 200", c:receive("*l"))
    ok_after()
    c:close()
    local log = S.wait_stderr(h, "finish /forever_empty", true)
    -- nothing is ever written, so the idle timeout is what notices the client left
    local how = log:match("finish /forever_empty (%a+)")
    assert.is_truthy(how == "timeout" or how == "aborted", log)
    ok_after()
  end)

  it("answers 204 with no body when the handler gives nil", function()
    assert_get("/empty", 204, "")
  end)

  it("answers 500 with a JSON error when the handler raises, and serves on", function()
    local r = assert(S.request(h.port, "POST", "/raise", "x"))
    assert.equals(500, r.status)
    assert.equals("internal_error", cjson.decode(r.body).error)
    ok_after()
    assert.matches("request handler failed: .*handler raised on purpose", S.stderr(h))
  end)

  it("answers 500 when the handler raises a value that is not a string", function()
    local r = assert(S.request(h.port, "GET", "/raise_table"))
    assert.equals(500, r.status)
    assert.matches("request handler failed: %(error object is a table value%)", S.stderr(h))
    ok_after()
  end)

  it("logs a finish callback that raises, the answer already sent", function()
    assert_get("/bad_finish", 200, "fine")
    assert.matches("finish callback failed: .*finish raised on purpose",
      S.wait_stderr(h, "finish raised on purpose", true))
    ok_after()
  end)

  it("answers 500 when the handler returns something that is not an answer", function()
    for _, path in ipairs({ "/bad_status", "/bad_body", "/bad_header" }) do
      local r = assert(S.request(h.port, "GET", path))
      assert.equals(500, r.status, path)
      assert.equals("internal_error", cjson.decode(r.body).error)
    end
    local log = S.stderr(h)
    assert.matches("status is a string, expected a number", log)
    assert.matches("body is a table, expected a string, an iterator function or nil", log)
    assert.matches("header 'X%-Bad' is not valid", log)
    ok_after()
  end)

  it("cuts the stream when the iterator raises or yields a non-string, and serves on", function()
    local r, err = S.request(h.port, "GET", "/stream?n=100&size=100&fail_at=5")
    assert.is_nil(r) -- the chunked body never ends properly
    assert.is_truthy(err:find("truncated chunk", 1, true) or err:find("bad chunk header", 1, true), err)
    local r2, err2 = S.request(h.port, "GET", "/bad_chunk")
    assert.is_nil(r2, err2)
    assert.matches("body iterator failed: .*iterator broke at chunk 5", S.stderr(h))
    assert.matches("finish /stream%?n=100 error chunks=5", S.stderr(h)) -- our cut, not the client's
    assert.matches("chunk is a number, expected a string or nil", S.stderr(h))
    ok_after()
  end)

  it("answers 413 with a JSON body to a body over the limit, by length or chunked", function()
    local r = assert(S.request(h.port, "POST", "/echo", ("a"):rep(1001)))
    assert.equals(413, r.status)
    assert.equals("payload_too_large", cjson.decode(r.body).error)
    local c = helpers.connect(h.port, 10)
    local chunk = ("b"):rep(600)
    c:send("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      ("%x\r\n%s\r\n"):format(#chunk, chunk):rep(3) .. "0\r\n\r\n")
    local raw = c:receive("*a")
    c:close()
    assert.matches("^HTTP/1.1 413", raw)
    assert.matches("payload_too_large", raw)
    -- exactly at the limit is fine
    local exact = assert(S.request(h.port, "POST", "/echo", ("a"):rep(1000)))
    assert.equals(200, exact.status)
  end)

  it("drops a connection that sends headers and stalls, serving others meanwhile", function()
    local c = helpers.connect(h.port, 5)
    c:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    ok_after() -- served while the stalled one waits
    local started = socket.gettime()
    local data, err = c:receive("*a")
    c:close()
    assert.equals("", data or "") -- closed without an answer after the idle timeout
    assert.is_true(socket.gettime() - started < 5, "the server dropped the stalled client: " .. tostring(err))
    ok_after()
  end)

  it("stops the iterator and frees it when the client disconnects mid-stream", function()
    local c = helpers.connect(h.port, 10)
    c:send("GET /stream?n=999999&size=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert(c:receive(200000))
    c:close()
    local log = S.wait_stderr(h, "finish /stream%?n=999999 %a+ chunks=%d+\n")
    local how, chunks = log:match("finish /stream%?n=999999 (%a+) chunks=(%d+)")
    assert.is_not_nil(how, log)
    assert.equals("aborted", how)
    assert.is_true(tonumber(chunks) < 999999)
    ok_after()
  end)
end)

describe("core.server connection limit", function()
  it("holds a connection over the limit back until another one closes", function()
    local h = start({ CONNECTIONS = "2", TIMEOUT = "30" })
    local ok, err = pcall(function()
      local idle = {}
      for i = 1, 2 do
        idle[i] = socket.tcp()
        idle[i]:settimeout(5)
        assert(idle[i]:connect("127.0.0.1", h.port))
        -- one answered request proves the server holds the connection; it then stays open, idle
        idle[i]:send("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.matches("^HTTP/1.1 200", idle[i]:receive("*l"))
        local length
        repeat
          local line = assert(idle[i]:receive("*l"))
          length = length or tonumber(line:lower():match("^content%-length:%s*(%d+)"))
        until line == ""
        assert(idle[i]:receive(assert(length)))
      end
      local third = socket.tcp()
      third:settimeout(0.5)
      assert(third:connect("127.0.0.1", h.port)) -- the kernel's backlog takes it
      third:send("GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
      local _, waiting = third:receive("*l")
      assert.equals("timeout", waiting) -- not served while two connections are open
      idle[1]:close()
      third:settimeout(10)
      local status_line = third:receive("*l")
      assert.matches("^HTTP/1.1 200", status_line)
      third:close()
      idle[2]:close()
    end)
    S.stop(h)
    assert(ok, err)
  end)
end)

describe("core.server graceful stop", function()
  it("on SIGTERM stops accepting, finishes the answer in flight, and exits 0", function()
    local h = start({ GRACE = "10" })
    local c = helpers.connect(h.port, 20)
    -- 20 MB streamed: far more than the socket buffers hold, so it is in flight
    c:send("GET /stream?n=20000&size=1000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert(c:receive(100000))
    os.execute("kill -TERM " .. h.pid)
    -- new connections are refused once the listening socket is gone
    local refused = false
    for _ = 1, 100 do
      local probe = socket.tcp()
      probe:settimeout(1)
      local ok = probe:connect("127.0.0.1", h.port)
      probe:close()
      if not ok then refused = true break end
      socket.sleep(0.02)
    end
    assert.is_true(refused)
    local rest = c:receive("*a")
    c:close()
    assert.matches("0\r\n\r\n$", rest) -- the chunked answer ended properly
    assert.equals(0, S.wait_exit(h, 15))
    S.stop(h)
    assert.matches("finish /stream%?n=20000 ok chunks=20000", h.stderr)
    assert.matches("run returned TERM", h.stderr)
  end)

  it("server:stop() from a handler makes run() return", function()
    local h = start()
    local r = assert(S.request(h.port, "GET", "/stop"))
    assert.equals("stopping", r.body)
    assert.equals(0, S.wait_exit(h, 10))
    S.stop(h)
    assert.matches("run returned stopped", h.stderr)
  end)
end)
