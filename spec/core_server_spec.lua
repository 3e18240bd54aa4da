-- core.server answers built from what a handler returns, over real loopback HTTP
-- in this process (the server runs until the finish callback stops it).
local helpers = require "helpers"
local core = require "biconnector.core"
local socket = require "socket"

-- Serves one request with handler's answer; returns the raw HTTP answer and
-- what the finish callback was told.
local function serve_once(answer)
  local srv, finished
  srv = assert(core.server.new { port = 0, handler = function()
    local status, headers, body = answer()
    return status, headers, body, function(how) finished = how; srv:stop() end
  end })
  local client = assert(socket.tcp())
  assert(client:connect("127.0.0.1", srv:port()))
  assert(client:send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
  assert.equals("stopped", srv:run(20))
  srv:close()
  client:settimeout(10)
  local raw = client:receive("*a")
  client:close()
  return raw, finished
end

describe("core.server.new options", function()
  it("refuses an option it does not know, naming it (a misspelt limit would silently keep its default)", function()
    local ok, err = pcall(core.server.new, { port = 0, handler = function() end, max_bodys = 10 })
    assert.is_false(ok)
    assert.matches("unknown option 'max_bodys'", err, 1, true)
    ok, err = pcall(core.server.new, { port = 0, handler = function() end, [1] = true })
    assert.is_false(ok)
    assert.matches("unknown option 1", err, 1, true)
    -- every documented name is taken
    local srv = assert(core.server.new({ handler = function() end, host = "127.0.0.1", port = 0, reuse_port = false,
      max_body = 1024, max_bodies = 4096, timeout = 5, request_timeout = 5, connections = 8, per_address = 0, grace = 1,
      refused = function() end }))
    srv:close()
  end)
end)

describe("core.server answers", function()
  it("take a Content-Length from the handler as MHD's own, in any case (no 500)", function()
    for _, name in ipairs({ "Content-Length", "content-length" }) do
      local raw = serve_once(function() return 200, { [name] = 5, ["X-A"] = "1" }, "hello" end)
      assert.matches("^HTTP/1.1 200", raw)
      assert.matches("\r\nX%-A: 1\r\n", raw)
      assert.matches("\r\n\r\nhello$", raw)
      local _, count = raw:lower():gsub("content%-length", "")
      assert.equals(1, count)
    end
  end)

  it("ignore a wrong Content-Length: the body decides", function()
    local raw = serve_once(function() return 200, { ["Content-Length"] = "99" }, "hello" end)
    assert.matches("\r\nContent%-Length: 5\r\n", raw)
  end)

  it("still call finish, with \"error\", when the answer is refused and a 500 goes out", function()
    local cases = {
      function() return "teapot", {}, "x" end,
      function() return 200, { ["X-Bad"] = "a\r\nInjected: yes" }, "x" end,
      function() return 200, { ["X-Bad"] = "a\r\nInjected: yes" }, function() return "chunk" end end,
      function() return 200, {}, {} end,
    }
    local refs = helpers.registry_refs
    collectgarbage()
    local before = refs()
    for i, answer in ipairs(cases) do
      local raw, finished = serve_once(answer)
      assert.matches("^HTTP/1.1 500", raw, 1, false, i)
      assert.equals("error", finished, i)
    end
    collectgarbage()
    assert.equals(before, refs()) -- the handler, the iterator and finish are released
  end)

  it("drop an idle connection after a fractional timeout (rounded up, not down to none)", function()
    local srv = assert(core.server.new { port = 0, timeout = 0.2, handler = function() end })
    local client = assert(socket.tcp())
    assert(client:connect("127.0.0.1", srv:port()))
    assert.equals("timeout", srv:run(1.8)) -- MHD's 1 s, with room to spare
    assert.equals(0, srv:connections())
    client:settimeout(5)
    local _, err = client:receive("*a")
    assert.equals("closed", err) -- the server closed it (not "timeout": still open)
    client:close()
    srv:close()
  end)
end)
