-- biconnector.rest against the local portal: calls, errors, renewal, limits,
-- retries and faults, paging, batches.
local helpers = require "helpers"
local rest = require "biconnector.rest"
local core = require "biconnector.core"
local control = require "portal.control"

local FAST = { rate = 1000, burst = 1000 }

describe("biconnector.rest", function()
  local portal
  setup(function() portal = control.start(FAST) end)
  teardown(function() portal:stop() end)
  before_each(function() portal:reset(FAST) end)

  local function webhook_client(extra) return portal:webhook_client(extra) end
  local function oauth_client(extra)
    local o = portal:oauth_options({ backoff_base = 0.01, rate = 1000, burst = 1000 })
    for k, v in pairs(extra or {}) do o[k] = v end
    return assert(rest.new(o))
  end

  describe("calls", function()
    it("returns the result, and the whole answer from call_raw", function()
      local c = webhook_client()
      local me = assert(c:call("profile"))
      assert.equal("1", me.ID)
      local raw = assert(c:call_raw("test.echo", { a = "b" }))
      assert.equal("b", raw.result.a)
      assert.is_table(raw.time)
      assert.equal(1, portal:stats().stats.executed["test.echo"])
    end)

    it("reads chunked answers", function()
      local res = assert(webhook_client():call("test.chunked"))
      assert.equal(("chunk"):rep(100), res.text)
    end)

    it("sends the User-Agent biconnector-lua/VERSION", function()
      local seen
      local h = core.http.new()
      local c = webhook_client({ transport = function(req) seen = req return h:request(req) end })
      assert(c:call("profile"))
      assert.equal("biconnector-lua/" .. core.version, seen.user_agent)
      assert.equal("biconnector-lua/" .. core.version, rest.USER_AGENT)
    end)

    it("turns portal errors into error objects", function()
      local c = webhook_client()
      local res, err = c:call("no.such.method")
      assert.is_nil(res)
      assert.equal("ERROR_METHOD_NOT_FOUND", err.code)
      assert.equal(404, err.status)
      assert.equal("no.such.method", err.method)
      assert.is_false(err.retryable)
      assert.equal("Bitrix24 REST no.such.method: ERROR_METHOD_NOT_FOUND (HTTP 404): Method not found!", tostring(err))
      assert.is_true(rest.is_error(err))
      -- the biconnector methods need an application, as on a real portal, which
      -- says so inside result with HTTP 200
      local _, denied = c:call("biconnector.source.list")
      assert.equal("ACCESS_DENIED", denied.code)
      assert.equal(200, denied.status)
    end)

    it("never shows the webhook code or tokens in errors and logs", function()
      local logged = {}
      local c = assert(rest.new { webhook = portal.base .. "/rest/1/wrongsecretcode/", log = function(_, m) logged[#logged + 1] = m end,
        transport = function() return nil, { message = "failed for " .. portal.base .. "/rest/1/wrongsecretcode/profile", not_sent = true } end,
        max_retries = 2, backoff_base = 0.001 })
      local _, err = c:call("profile")
      assert.equal("CONNECT_FAILED", err.code)
      assert.is_nil(tostring(err):find("wrongsecretcode", 1, true))
      assert.truthy(tostring(err):find("***", 1, true))
      assert.equal(2, #logged)
      for _, m in ipairs(logged) do assert.is_nil(m:find("wrongsecretcode", 1, true)) end
      local o = assert(rest.new(portal:oauth_options({ client_secret = "topsecretvalue" })))
      portal:control({ action = "expire" })
      local _, rerr = o:call("profile")
      assert.equal("invalid_client", rerr.code)
      assert.is_nil(tostring(rerr):find("topsecretvalue", 1, true))
      assert.is_nil(tostring(rerr):find("initial-refresh", 1, true))
    end)

    it("reports parameters it cannot encode and answers that are not JSON", function()
      local c = webhook_client()
      local _, err = c:call("test.echo", { f = print })
      assert.equal("INVALID_PARAMS", err.code)
      assert.matches("cannot encode the parameters: cannot encode a function at %$%.f", err.description)
      assert.is_nil(portal:stats().stats.received["test.echo"])
      local html = webhook_client({ transport = function() return { status = 200, headers = {}, body = "<html>maintenance</html>" } end })
      local _, herr = html:call("profile")
      assert.equal("INVALID_RESPONSE", herr.code)
      assert.equal(200, herr.status)
      assert.matches("the answer is not JSON: <html>maintenance", herr.description)
    end)

    it("rejects misuse by raising", function()
      local c = webhook_client()
      assert.has_error(function() c:call(nil) end)
      assert.has_error(function() c:call("profile", "x") end)
      assert.is_nil((rest.new { webhook = "ftp://x/rest/1/abc/" }))
      assert.is_nil((rest.new { portal = "x.bitrix24.ru" }))
    end)
  end)

  describe("OAuth", function()
    it("renews once on expired_token, saves the new pair and goes on", function()
      local seen = {}
      local c = oauth_client({ on_tokens = function(t) seen[#seen + 1] = t end })
      portal:control({ action = "expire", after = 3 })
      for i = 1, 10 do assert.equal(i, tonumber(c:call("test.echo", { n = i }).n)) end
      local s = portal:stats()
      assert.equal(1, s.stats.renewals)
      assert.equal(1, s.stats.expired_answers)
      assert.equal(1, #seen)
      assert.equal(c.store:get().access_token, seen[1].access_token)
      assert.equal(s.state.valid_refresh[1], c.store:get().refresh_token)
      assert.are_not.equal("initial-refresh", seen[1].refresh_token)
    end)

    it("reports a failed renewal without retrying forever", function()
      local c = oauth_client()
      portal:control({ action = "expire" })
      -- the refresh token was already used elsewhere
      local used = assert(core.http.new():request { url = portal.oauth_url .. "?grant_type=refresh_token&client_id=local.test.app&client_secret=appsecret&refresh_token=initial-refresh" })
      assert.equal(200, used.status)
      local _, err = c:call("profile")
      assert.equal("invalid_grant", err.code)
      assert.equal("profile", err.method)
      assert.equal(1, portal:stats().stats.renewal_failures)
    end)

    it("a wrong access token is NO_AUTH_FOUND (401), final, with no renewal and the token masked", function()
      local o = portal:oauth_options({ backoff_base = 0.01, rate = 1000, burst = 1000 })
      o.access_token = "not-a-token-of-this-portal"
      local c = assert(rest.new(o))
      local _, err = c:call("profile")
      assert.equal("NO_AUTH_FOUND", err.code)
      assert.equal(401, err.status)
      assert.equal(1, err.attempts)
      assert.is_nil(tostring(err):find("not-a-token", 1, true))
      local s = portal:stats().stats
      assert.equal(0, s.renewals + s.renewal_failures)
    end)
  end)

  describe("limits", function()
    it("paces a flat-out script with the leaky bucket (scaled: 20/s, burst 10)", function()
      portal:reset({ rate = 20, burst = 10 })
      local c = webhook_client({ rate = 20, burst = 10 })
      for i = 1, 60 do assert(c:call("test.echo", { n = i })) end
      local s = portal:stats().stats
      assert.equal(60, s.executed["test.echo"])
      print(("\n  scaled limiter: 60 calls at 20/s burst 10, the portal sent %d x 503"):format(s.sent_503))
    end)

    it("shares one bucket between clients of one portal with the same limits", function()
      portal:reset({ rate = 20, burst = 10 })
      local a = webhook_client({ rate = 20, burst = 10, max_retries = 0 })
      local b = webhook_client({ rate = 20, burst = 10, max_retries = 0 })
      assert.equal(a.bucket, b.bucket)
      for i = 1, 30 do
        assert(a:call("test.echo", { n = i }))
        assert(b:call("test.echo", { n = i }))
      end
      assert.equal(0, portal:stats().stats.sent_503)
      local own = webhook_client({ rate = 20, burst = 10, shared_bucket = false })
      assert.are_not.equal(a.bucket, own.bucket)
    end)

    it("retries QUERY_LIMIT_EXCEEDED with backoff, even for a create", function()
      portal:fault({ method = "test.items.add", kind = "query_limit", count = 2 })
      local c = webhook_client()
      assert.equal(1, c:call("test.items.add", { fields = { TITLE = "x" } }))
      local s = portal:stats().stats
      assert.equal(3, s.received["test.items.add"])
      assert.equal(1, s.executed["test.items.add"])
      assert.equal(2, c.counters.retries)
    end)

    it("waits for operating_reset_at on OPERATION_TIME_LIMIT when that is near enough", function()
      local slept = {}
      local c = webhook_client({ sleep = function(s) slept[#slept + 1] = s end })
      portal:fault({ method = "profile", kind = "time_limit", reset_in = 30 })
      assert(c:call("profile"))
      assert.is_true(slept[#slept] > 25 and slept[#slept] <= 31)
      portal:fault({ method = "profile", kind = "time_limit", reset_in = 300 })
      local _, err = c:call("profile")
      assert.equal("OPERATION_TIME_LIMIT", err.code)
      assert.equal(429, err.status)
      assert.is_true(err.retryable)
      assert.equal(2, portal:stats().stats.sent_429)
    end)

    it("on an OPERATION_TIME_LIMIT without its time block, waits for the last success's operating_reset_at", function()
      -- b24restdocs limits.md: "For the first retry, refer to operating_reset_at from the
      -- last successful response"; it retried after 0.5 s, 1 s, ... and gave up in 31 s
      local slept = {}
      local c = webhook_client({ sleep = function(s) slept[#slept + 1] = s end })
      portal:control({ action = "operating", method = "profile", value = 100, reset_in = 40 })
      assert(c:call("profile"))
      assert.equal(0, #slept)
      portal:fault({ method = "profile", kind = "time_limit", no_time = true })
      assert(c:call("profile"))
      assert.equal(1, #slept)
      assert.is_true(slept[1] > 35 and slept[1] <= 41, tostring(slept[1]))
      assert.equal(1, portal:stats().stats.sent_429)
      -- with no success before to tell it: backoff, as before
      slept = {}
      c = webhook_client({ sleep = function(s) slept[#slept + 1] = s end })
      portal:fault({ method = "test.items.list", kind = "time_limit", no_time = true })
      assert(c:call("test.items.list"))
      assert.equal(1, #slept)
      assert.is_true(slept[1] < 2, tostring(slept[1]))
    end)

    it("slows a method down as its operating time nears the limit", function()
      local slept = {}
      local c = webhook_client({ sleep = function(s) slept[#slept + 1] = s end })
      portal:control({ action = "operating", method = "profile", value = 100, reset_in = 600 })
      assert(c:call("profile"))
      assert(c:call("profile"))
      assert.equal(0, #slept) -- 100 of 480 s: no pause
      portal:control({ action = "operating", method = "profile", value = 400, reset_in = 600 })
      assert(c:call("profile"))
      assert(c:call("profile"))
      assert.equal(1, #slept) -- 83%: paused once, proportionally
      assert.is_true(slept[1] > 0 and slept[1] <= 10)
      portal:control({ action = "operating", method = "profile", value = 470, reset_in = 20 })
      assert(c:call("profile"))
      assert(c:call("profile"))
      assert.is_true(slept[#slept] > 15) -- 98%: waits for the oldest basket to drop
      assert.equal(0, portal:stats().stats.sent_429)
    end)
  end)

  describe("faults", function()
    local function received(method) return portal:stats().stats.received[method] or 0 end

    it("never repeats a create after a dropped connection", function()
      portal:fault({ method = "test.items.add", kind = "drop" })
      local c = webhook_client()
      local res, err = c:call("test.items.add", {})
      assert.is_nil(res)
      assert.equal("TRANSPORT_ERROR", err.code)
      assert.is_true(err.maybe_executed)
      assert.is_false(err.retryable)
      assert.matches("not repeated: test.items.add creates objects", tostring(err))
      assert.equal(1, received("test.items.add"))
    end)

    it("never repeats a create after a TCP reset", function()
      portal:fault({ method = "test.items.add", kind = "reset" })
      local _, err = webhook_client():call("test.items.add", {})
      assert.equal("TRANSPORT_ERROR", err.code)
      assert.is_true(err.maybe_executed)
      assert.equal(1, received("test.items.add"))
    end)

    it("spreads retries with jitter: each delay within [half, full] step", function()
      local c = webhook_client({ backoff_base = 1, backoff_max = 8 })
      local seen = {}
      for attempt = 1, 5 do
        local d = c:backoff(attempt)
        local step = math.min(8, 2 ^ (attempt - 1))
        assert.is_true(d >= step / 2 and d <= step, ("attempt %d: %g"):format(attempt, d))
        seen[d] = true
      end
      local distinct = 0
      for _ in pairs(seen) do distinct = distinct + 1 end
      assert.equal(5, distinct)
    end)

    it("never repeats a create whose kept-alive connection dies unanswered", function()
      -- libcurl would resend on a fresh connection by itself: creates get their own
      local c = webhook_client()
      assert(c:call("profile"))
      portal:fault({ method = "test.items.add", kind = "drop_after" })
      local res, err = c:call("test.items.add", {})
      assert.is_nil(res)
      assert.is_true(err.maybe_executed)
      local s = portal:stats()
      assert.equal(1, s.stats.received["test.items.add"])
      assert.equal(1, s.state.item_count)
      -- reads keep using the kept-alive connection
      local before = s.stats.connections
      assert(c:call("profile"))
      assert(c:call("profile"))
      assert.equal(before, portal:stats().stats.connections)
    end)

    it("never repeats a create after the answer was lost", function()
      portal:fault({ method = "test.items.add", kind = "drop_after" })
      local _, err = webhook_client():call("test.items.add", {})
      assert.equal("TRANSPORT_ERROR", err.code)
      local s = portal:stats()
      assert.equal(1, s.stats.received["test.items.add"])
      assert.equal(1, s.state.item_count) -- it was executed: hence no repeat
    end)

    it("never repeats a create after a timeout", function()
      portal:fault({ method = "test.items.add", kind = "delay", delay = 1 })
      local _, err = webhook_client({ timeout = 0.3 }):call("test.items.add", {})
      assert.equal("TIMEOUT", err.code)
      assert.is_true(err.maybe_executed)
      assert.equal(1, received("test.items.add"))
    end)

    it("never repeats a create after a 500", function()
      portal:fault({ method = "test.items.add", kind = "status500" })
      local _, err = webhook_client():call("test.items.add", {})
      assert.equal("INTERNAL_SERVER_ERROR", err.code)
      assert.equal(500, err.status)
      assert.equal(1, received("test.items.add"))
    end)

    it("treats methods the user marks as creates the same way, batches too", function()
      portal:fault({ method = "test.echo", kind = "drop" })
      local c = webhook_client({ create_methods = { "test.echo" } })
      local _, err = c:call("test.echo", {})
      assert.is_true(err.maybe_executed)
      assert.equal(1, received("test.echo"))
      portal:fault({ method = "batch", kind = "drop" })
      local _, berr = c:batch({ "profile", "test.items.add" })
      assert.is_true(berr.maybe_executed)
      assert.equal(1, received("batch"))
    end)

    it("repeats reads after resets, timeouts and 500s", function()
      portal:fault({ method = "profile", kind = "drop" })
      portal:fault({ method = "profile", kind = "reset" })
      portal:fault({ method = "profile", kind = "status500" })
      -- the timeout must pass the delay, and leave the answered attempt ample time
      portal:fault({ method = "profile", kind = "delay", delay = 4 })
      local c = webhook_client({ timeout = 1 })
      assert.equal("1", c:call("profile").ID)
      assert.equal(5, received("profile"))
      assert.equal(4, c.counters.retries)
    end)

    it("repeats a create whose request surely never left", function()
      local h, calls = core.http.new(), 0
      local c = webhook_client({ transport = function(req)
        calls = calls + 1
        if calls == 1 then return nil, { code = 7, message = "Couldn't connect", not_sent = true } end
        return h:request(req)
      end })
      assert.equal(1, c:call("test.items.add", {}))
      assert.equal(1, received("test.items.add"))
    end)

    it("gives up on a dead portal after max_retries with CONNECT_FAILED", function()
      local port = helpers.free_port() -- nothing listens there
      local c = assert(rest.new { webhook = "http://127.0.0.1:" .. port .. "/rest/1/abcd/", max_retries = 3, backoff_base = 0.001 })
      local _, err = c:call("profile")
      assert.equal("CONNECT_FAILED", err.code)
      assert.equal(4, err.attempts)
      assert.matches("gave up after 4 attempts", tostring(err))
    end)

    it("gives up on a portal name that does not resolve after one retry, not the whole schedule", function()
      -- .invalid never resolves (RFC 6761): a mistyped portal is said in about a second, not 24 s
      local slept = {}
      local c = assert(rest.new { webhook = "https://no-such-portal.invalid/rest/1/abcd/",
        sleep = function(sec) slept[#slept + 1] = sec end })
      local _, err = c:call("profile")
      assert.equal("CONNECT_FAILED", err.code)
      assert.equal(6, err.curl_code)
      assert.equal(2, err.attempts)
      assert.equal(1, #slept)
      assert.matches("does not resolve", tostring(err))
    end)
  end)

  describe("each", function()
    local function check_once(iter)
      local seen, n = {}, 0
      for item in iter do
        local id = tonumber(item.ID or item.id)
        assert.is_nil(seen[id], "item " .. tostring(id) .. " seen twice")
        seen[id] = true
        n = n + 1
      end
      return n, seen
    end

    it("yields each of 1,234 items exactly once with start/next", function()
      portal:control({ action = "seed", items = 1234 })
      local c = webhook_client()
      local n, seen = check_once(c:each("test.items.list", {}))
      assert.equal(1234, n)
      for i = 1, 1234 do assert.is_true(seen[i]) end
      assert.equal(25, portal:stats().stats.executed["test.items.list"])
    end)

    it("yields each of 1,234 items exactly once in the fast mode (ID order, >ID, start=-1)", function()
      portal:control({ action = "seed", items = 1234 })
      local c = webhook_client()
      local n, seen = check_once(c:each("test.items.list", { filter = { [">ID"] = 0 } }, { mode = "fast" }))
      assert.equal(1234, n)
      for i = 1, 1234 do assert.is_true(seen[i]) end
      assert.equal(25, portal:stats().stats.executed["test.items.list"])
    end)

    it("pages the biconnector lists by page until a short page", function()
      portal:control({ action = "seed", connectors = 1234 })
      local c = oauth_client()
      local n = check_once(c:each("biconnector.connector.list", { select = { "id", "title" } }))
      assert.equal(1234, n)
      assert.equal(25, portal:stats().stats.executed["biconnector.connector.list"])
      assert.equal(1234, #assert(c.connector:list()))
    end)

    it("raises the error object from the iterator, list returns nil, err", function()
      local c = webhook_client()
      local ok, err = pcall(function() for _ in c:each("no.such.list", {}) do end end)
      assert.is_false(ok)
      assert.equal("ERROR_METHOD_NOT_FOUND", err.code)
      local res, lerr = c:list("no.such.list")
      assert.is_nil(res)
      assert.equal("ERROR_METHOD_NOT_FOUND", lerr.code)
    end)
  end)

  describe("batch", function()
    it("sends 120 named commands in 3 requests with every result under its key", function()
      local cmds = {}
      for i = 1, 120 do cmds[("k%03d"):format(i)] = { "test.echo", { n = i } } end
      local c = webhook_client()
      local results, errors, extra = c:batch(cmds)
      assert.is_table(results)
      assert.is_nil(next(errors))
      for i = 1, 120 do assert.equal(tostring(i), results[("k%03d"):format(i)].n) end
      assert.equal(3, extra.requests)
      local s = portal:stats().stats
      assert.equal(3, s.batches)
      assert.equal(3, s.received.batch)
      assert.equal(120, s.executed["test.echo"])
    end)

    it("keys positional commands by position and resolves $result references", function()
      local c = webhook_client()
      local results, errors = c:batch({
        { key = "item", method = "test.items.add", params = { fields = { TITLE = "hello" } } },
        { key = "read", method = "test.items.get", params = { id = "$result[item]" } },
        "profile",
        { "no.such" },
      })
      assert.equal(1, results.item)
      assert.equal("hello", results.read.TITLE)
      assert.equal("1", results[3].ID)
      assert.equal("ERROR_METHOD_NOT_FOUND", errors[4].code)
      assert.equal("no.such", errors[4].method)
    end)

    it("honours halt: nothing after the first failing command runs", function()
      local cmds = {}
      for i = 1, 120 do cmds[i] = { "test.echo", { n = i } } end
      cmds[60] = { "no.such" }
      local c = webhook_client()
      local results, errors, extra = c:batch(cmds, { halt = true })
      assert.equal(59, (function() local n = 0 for _ in pairs(results) do n = n + 1 end return n end)())
      assert.equal("ERROR_METHOD_NOT_FOUND", errors[60].code)
      assert.is_nil(results[61])
      assert.equal(2, extra.requests)
      assert.equal(59, portal:stats().stats.executed["test.echo"])
      -- without halt the rest runs
      portal:reset(FAST)
      results, errors, extra = c:batch(cmds)
      assert.equal(119, (function() local n = 0 for _ in pairs(results) do n = n + 1 end return n end)())
      assert.equal(3, extra.requests)
      assert.equal("ERROR_METHOD_NOT_FOUND", errors[60].code)
    end)
  end)
end)
