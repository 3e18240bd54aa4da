-- core.http: the libcurl transport, clock, sleep, locks and atomic writes.
local helpers = require "helpers"
local core = require "biconnector.core"
local http = core.http
local control = require "portal.control"
local J = require "portal.jsonish"

describe("core.http", function()
  local portal
  setup(function() portal = control.start({ rate = 1000, burst = 1000 }) end)
  teardown(function() portal:stop() end)
  before_each(function() portal:reset({ rate = 1000, burst = 1000 }) end)

  it("sends method, headers and body and returns status, headers and body", function()
    local h = http.new()
    local res = assert(h:request { method = "PUT", url = portal.base .. "/_echo?x=1",
      headers = { ["X-Test"] = "yes", "X-Other: 2" }, body = "hello", user_agent = "ua/1" })
    assert.equal(200, res.status)
    assert.equal("application/json; charset=utf-8", res.headers["content-type"])
    local echo = J.decode(res.body)
    assert.equal("PUT", echo.method)
    assert.equal("hello", echo.body)
    assert.equal("x=1", echo.query)
    assert.equal("yes", echo.headers["x-test"])
    assert.equal("2", echo.headers["x-other"])
    assert.equal("ua/1", echo.headers["user-agent"])
    -- gzip and friends are offered; no 100-continue round trip
    assert.truthy(echo.headers["accept-encoding"]:find("gzip", 1, true))
    assert.is_nil(echo.headers["expect"])
    h:close()
  end)

  it("decodes gzip answers", function()
    local h = http.new()
    local res = assert(h:request { url = portal.base .. "/_gzip" })
    assert.equal("gzip", res.headers["content-encoding"])
    local answer = J.decode(res.body)
    assert.equal("compressed", answer.result)
    assert.equal(3000, #answer.padding)
    h:close()
  end)

  it("reuses one connection for successive requests (keep-alive)", function()
    local h = http.new()
    for _ = 1, 5 do assert.equal(200, assert(h:request { url = portal.base .. "/_echo" }).status) end
    assert.equal(1, portal:stats().stats.connections)
    h:close()
  end)

  it("reports a refused connection as surely not sent", function()
    local port = helpers.free_port() -- nothing listens there
    local h = http.new()
    local res, err = h:request { url = "http://127.0.0.1:" .. port .. "/" }
    assert.is_nil(res)
    assert.equal(7, err.code) -- CURLE_COULDNT_CONNECT
    assert.is_true(err.not_sent)
    assert.is_false(err.timeout)
    assert.matches("http error 7: .*onnect", tostring(err))
    h:close()
  end)

  it("reports a timeout after sending as possibly sent", function()
    portal:fault({ method = "profile", kind = "delay", delay = 1.5 })
    local h = http.new()
    local res, err = h:request { url = portal.base .. "/rest/1/hooksecret/profile", body = "{}", timeout = 0.3,
      headers = { ["Content-Type"] = "application/json" } }
    assert.is_nil(res)
    assert.equal(28, err.code) -- CURLE_OPERATION_TIMEDOUT
    assert.is_true(err.timeout)
    assert.is_false(err.not_sent)
    h:close()
  end)

  it("reports a dropped connection as possibly sent", function()
    portal:fault({ method = "profile", kind = "drop" })
    local h = http.new()
    local res, err = h:request { url = portal.base .. "/rest/1/hooksecret/profile", body = "{}" }
    assert.is_nil(res)
    assert.equal(52, err.code) -- CURLE_GOT_NOTHING
    assert.is_false(err.not_sent)
    h:close()
  end)

  it("reports a connection reset as possibly sent", function()
    portal:fault({ method = "profile", kind = "reset" })
    local h = http.new()
    local res, err = h:request { url = portal.base .. "/rest/1/hooksecret/profile", body = "{}" }
    assert.is_nil(res)
    assert.is_true(err.code == 56 or err.code == 52, tostring(err)) -- CURLE_RECV_ERROR (RST) or GOT_NOTHING
    assert.is_false(err.not_sent)
    h:close()
  end)

  it("aborts answers larger than max_body", function()
    local h = http.new()
    local res, err = h:request { url = portal.base .. "/_echo", body = ("x"):rep(5000), max_body = 1000 }
    assert.is_nil(res)
    assert.equal(23, err.code) -- CURLE_WRITE_ERROR
    assert.matches("larger than max_body %(1000 bytes%)", err.message)
    assert.equal(200, assert(h:request { url = portal.base .. "/_echo", body = "x", max_body = 1000 }).status)
    h:close()
  end)

  it("resends on a dying reused connection unless fresh_connect is asked", function()
    local h = http.new()
    local url = portal.base .. "/rest/1/hooksecret/test.items.add"
    assert(h:request { url = portal.base .. "/_echo" })
    portal:fault({ method = "test.items.add", kind = "drop_after" })
    -- libcurl's own behaviour: a reused connection closed without an answer is retried
    assert.equal(200, assert(h:request { url = url, body = "{}" }).status)
    assert.equal(2, portal:stats().stats.received["test.items.add"])
    portal:fault({ method = "test.items.add", kind = "drop_after" })
    local res, err = h:request { url = url, body = "{}", fresh_connect = true }
    assert.is_nil(res)
    assert.equal(52, err.code)
    assert.equal(3, portal:stats().stats.received["test.items.add"])
    h:close()
  end)

  it("honours libcurl's proxy environment variables", function()
    local cmd = ("http_proxy=%s %s -e 'local h=require(\"biconnector.core\").http.new(); local r=assert(h:request{url=\"http://proxied.invalid/_echo\"}); io.write(r.body)'")
      :format(portal.base, helpers.runtime)
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    local echo = assert(J.decode(out), out)
    assert.equal("http://proxied.invalid/_echo", echo.target)
  end)

  it("rejects misuse with an error and bad headers precisely", function()
    local h = http.new()
    assert.has_error(function() h:request("x") end)
    assert.has_error(function() h:request({}) end)
    assert.has_error(function() h:request({ url = portal.base, headers = { ["X"] = "a\r\nB: c" } }) end)
    assert.has_error(function() h:request({ url = portal.base, timeout = "soon" }) end)
    assert.has_error(function() h:request({ url = portal.base, timeout = 0 / 0 }) end, "request option 'timeout' must be from 0.001 to 1e6 seconds")
    assert.has_error(function() h:request({ url = portal.base, verify = "no" }) end, "request option 'verify' must be a boolean")
    h:close()
  end)

  it("closes once, refuses use after close, and is collectable", function()
    local h = http.new()
    assert.is_false(h:closed())
    h:close()
    h:close()
    assert.is_true(h:closed())
    assert.has_error(function() h:request { url = portal.base } end)
    local weak = setmetatable({}, { __mode = "v" })
    weak[1] = http.new()
    weak[1]:request { url = portal.base .. "/_echo" }
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)

  it("closes handles and locks at the end of a <close> scope #lua54", function()
    local chunk = assert(load([[
      local http, url, path = ...
      local h <close> = http.new()
      local lk <close> = assert(http.lock(path))
      assert(h:request { url = url })
      return h, lk
    ]]))
    local path = os.tmpname()
    local h, lk = chunk(http, portal.base .. "/_echo", path)
    assert.is_true(h:closed())
    assert.is_false(lk:held())
    os.remove(path)
  end)

  it("has a monotonic clock and a sleep", function()
    local a = http.now()
    http.sleep(0.01)
    assert.is_true(http.now() > a)
    assert.is_true(math.abs(http.time() - os.time()) < 5)
  end)

  it("has them as core.os's under the older names (core.http, core.process)", function()
    assert.equals(core.os.clock, http.now)
    assert.equals(core.os.time, http.time)
    assert.equals(core.os.sleep, http.sleep)
    assert.equals(core.os.lock, http.lock)
    assert.equals(core.os.write_atomic, http.write_atomic)
    assert.equals(core.os.clock, core.process.clock)
    assert.is_function(core.process.sleep)
    -- a sleep that does not wake for signals sleeps its time, whenever one arrives
    assert.is_true(core.process.trap("USR2"))
    local a = core.os.clock()
    os.execute(("(sleep 0.05; kill -USR2 %d) &"):format(core.process.getpid()))
    core.os.sleep(0.3)
    assert.is_true(core.os.clock() - a >= 0.3)
    local got = {}
    for _ = 1, 600 do -- until the signal came (it may come after the sleep on a slow machine)
      got = core.process.signals()
      if got[1] then break end
      core.os.sleep(0.05, true)
    end
    assert.same({ "USR2" }, got)
    -- one that wakes returns at once for a signal already pending
    assert.is_true(core.process.kill(core.process.getpid(), "USR2"))
    a = core.os.clock()
    core.os.sleep(30, true)
    assert.is_true(core.os.clock() - a < 30)
    assert.same({ "USR2" }, core.process.signals())
    -- NaN and negatives do not sleep
    a = core.os.clock()
    core.os.sleep(0 / 0)
    core.os.sleep(-1)
    assert.is_true(core.os.clock() - a < 1)
  end)

  it("writes files atomically and locks them with flock", function()
    local path = os.tmpname()
    assert.is_true(http.write_atomic(path, "one"))
    assert.is_true(http.write_atomic(path, "two"))
    local f = io.open(path)
    assert.equal("two", f:read("*a"))
    f:close()
    local lk = assert(http.lock(path .. ".lock"))
    assert.is_true(lk:held())
    -- another process cannot take the lock while we hold it
    local probe = ("flock -n %s true && echo free || echo busy"):format(path .. ".lock")
    local p = io.popen(probe)
    assert.equal("busy", p:read("*l"))
    p:close()
    lk:unlock()
    lk:unlock()
    assert.is_false(lk:held())
    p = io.popen(probe)
    assert.equal("free", p:read("*l"))
    p:close()
    -- a forgotten lock is released when collected
    local weak = setmetatable({}, { __mode = "v" })
    weak[1] = assert(http.lock(path .. ".lock"))
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
    p = io.popen(probe)
    assert.equal("free", p:read("*l"))
    p:close()
    local ok, err = http.write_atomic("/nonexistent-dir/x", "y")
    assert.is_nil(ok)
    assert.matches("cannot create a temporary file for /nonexistent%-dir/x", err)
    os.remove(path)
    os.remove(path .. ".lock")
  end)
end)
