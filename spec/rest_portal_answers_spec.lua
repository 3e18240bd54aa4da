-- biconnector.rest against a scripted portal (a transport answering from a
-- list): answers a faithful or a broken portal may give, checked one by one.
local rest = require "biconnector.rest"
local json = require "biconnector.json"

-- A client whose transport answers from `answers` in turn (the last one
-- repeats); each answer is {status=, body=}, {err=} or function(req).
local function scripted(answers, opts)
  local sent, i = {}, 0
  opts = opts or {}
  if not opts.portal and not opts.client_endpoint then
    opts.webhook = opts.webhook or "https://portal.example/rest/1/hooksecret/"
  end
  opts.transport = function(req)
    sent[#sent + 1] = req
    i = i + 1
    local a = answers[math.min(i, #answers)]
    if type(a) == "function" then return a(req, i) end
    if a.err then return nil, a.err end
    return { status = a.status or 200, headers = {}, body = a.body }
  end
  opts.sleep = function() end
  opts.shared_bucket = false
  opts.backoff_base = 0.001
  return assert(rest.new(opts)), sent
end

local function page_of(first, n)
  local t = {}
  for k = 1, n do t[k] = { ID = tostring(first + k - 1) } end
  return t
end

describe("biconnector.rest (review)", function()
  describe("answers without result", function()
    it("an empty object or array at 200 is an INVALID_RESPONSE error, not nil without an error", function()
      for _, body in ipairs({ "{}", "[]", '{"time":{"start":1}}' }) do
        local c = scripted({ { body = body } })
        local r, err = c:call("profile")
        assert.is_nil(r)
        assert.is_true(rest.is_error(err), body)
        assert.equal("INVALID_RESPONSE", err.code)
        assert.equal(200, err.status)
      end
    end)

    it("a redirect (http to https, a moved portal) names where it points", function()
      local c = scripted({ function()
        return { status = 301, headers = { location = "https://portal.example/rest/1/hooksecret/profile" }, body = "<html>Moved</html>" }
      end })
      local _, err = c:call("profile")
      assert.equal("INVALID_RESPONSE", err.code)
      assert.equal(301, err.status)
      assert.matches("redirects to https://portal.example/rest/1/***/profile", tostring(err), 1, true)
    end)

    it("a null result is a result", function()
      local c = scripted({ { body = '{"result":null,"time":{}}' } })
      local r, err = c:call("profile")
      assert.is_nil(err)
      assert.equal(json.null, r)
    end)
  end)

  describe("creates", function()
    it("crm.deal.add.json and CRM.DEAL.ADD are creates: not repeated after a 500", function()
      for _, m in ipairs({ "crm.deal.add.json", "CRM.Deal.Add" }) do
        local c, sent = scripted({ { status = 500, body = '{"error":"INTERNAL_SERVER_ERROR","error_description":"x"}' },
          { body = '{"result":1}' } })
        local r, err = c:call(m, { fields = { TITLE = "t" } })
        assert.is_nil(r)
        assert.is_true(err.maybe_executed, m)
        assert.equal(1, #sent, m)
      end
    end)

    it("create_methods and mark_create ignore case and .json", function()
      local c, sent = scripted({ { err = { message = "reset", code = 56 } } },
        { create_methods = { "im.notify.system.Add" } })
      c:mark_create("tasks.task.complete.json")
      local _, err = c:call("im.notify.system.add.json", {})
      assert.is_true(err.maybe_executed)
      _, err = c:call("TASKS.TASK.COMPLETE", {})
      assert.is_true(err.maybe_executed)
      assert.equal(2, #sent)
    end)
  end)

  describe("webhook addresses", function()
    it("accepts the address with a sample method, as Bitrix24 shows it", function()
      for _, url in ipairs({ "https://portal.example/rest/1/hooksecret/profile.json",
        "https://portal.example/rest/1/hooksecret/profile", "https://portal.example/rest/1/hooksecret",
        "https://portal.example/rest/1/hooksecret/?x=1" }) do
        local c, sent = scripted({ { body = '{"result":{"ID":"1"}}' } }, { webhook = url })
        assert(c:call("user.current"))
        assert.equal("https://portal.example/rest/1/hooksecret/user.current", sent[1].url, url)
      end
    end)

    it("an OAuth portal given as https://PORTAL/rest/ is not doubled into /rest/rest/", function()
      for _, portal in ipairs({ "portal.example", "https://portal.example/", "https://portal.example/rest/",
        "portal.example/rest" }) do
        local c, sent = scripted({ { body = '{"result":1}' } }, { portal = portal, access_token = "acc-token" })
        assert(c:call("profile"))
        assert.equal("https://portal.example/rest/profile", sent[1].url, portal)
      end
    end)

    it("still refuses an address without user and code", function()
      local c, err = rest.new { webhook = "https://portal.example/rest/", transport = function() end }
      assert.is_nil(c)
      assert.matches("USER_ID/CODE", err)
    end)
  end)

  describe("paging that does not advance", function()
    local function drain(c, method, opts)
      local n = 0
      local ok, err = pcall(function()
        for _ in c:each(method, {}, opts) do
          n = n + 1
          if n > 10000 then error("endless") end
        end
      end)
      return ok, err, n
    end

    it("start mode: the same next twice raises PAGING_STUCK", function()
      local c, sent = scripted({ { body = json.encode({ result = page_of(1, 50), next = 50, total = 500 }) } })
      local ok, err = drain(c, "crm.deal.list")
      assert.is_false(ok)
      assert.is_true(rest.is_error(err))
      assert.equal("PAGING_STUCK", err.code)
      assert.equal(2, #sent)
    end)

    it("page mode: a portal ignoring page raises PAGING_STUCK", function()
      local c, sent = scripted({ { body = json.encode({ result = page_of(1, 50) }) } })
      local ok, err, n = drain(c, "biconnector.connector.list")
      assert.is_false(ok)
      assert.equal("PAGING_STUCK", err.code)
      assert.equal(50, n)
      assert.equal(2, #sent)
    end)

    it("fast mode: a portal ignoring >ID raises PAGING_STUCK", function()
      local c, sent = scripted({ { body = json.encode({ result = page_of(1, 50) }) } })
      local ok, err = drain(c, "crm.deal.list", { mode = "fast" })
      assert.is_false(ok)
      assert.equal("PAGING_STUCK", err.code)
      assert.equal(2, #sent)
    end)

    it("each over a method whose result is no list raises NOT_A_LIST instead of yielding nothing", function()
      for _, body in ipairs({ '{"result":{"ID":"1","NAME":"x"}}', '{"result":true}', '{"result":"text"}' }) do
        local c = scripted({ { body = body } })
        local ok, err = drain(c, "profile")
        assert.is_false(ok)
        assert.equal("NOT_A_LIST", err.code, body)
      end
      for _, body in ipairs({ '{"result":[]}', '{"result":{"items":[]}}', '{"result":null}' }) do
        local c = scripted({ { body = body } })
        local ok, _, n = drain(c, "crm.item.list")
        assert.is_true(ok, body)
        assert.equal(0, n)
      end
    end)

    it("page mode stops at total: exactly 50 items with total = 50 is one request", function()
      local c, sent = scripted({ { body = json.encode({ result = page_of(1, 50), total = 50 }) },
        { body = json.encode({ result = {} }) } })
      local ok, _, n = drain(c, "biconnector.source.list")
      assert.is_true(ok)
      assert.equal(50, n)
      assert.equal(1, #sent)
    end)

    it("page mode on a list that answers with next (and reads start): every item once", function()
      local all = page_of(1, 120)
      local c, sent = scripted({ function(req)
        local p = json.decode(req.body)
        local from = tonumber(p.start) or 0 -- this portal ignores page
        local items = {}
        for k = from + 1, math.min(from + 50, #all) do items[#items + 1] = all[k] end
        local answer = { result = items, total = #all }
        if from + 50 < #all then answer.next = from + 50 end
        return { status = 200, headers = {}, body = json.encode(answer) }
      end })
      local ids = {}
      for item in c:each("biconnector.dataset.list") do ids[#ids + 1] = tonumber(item.ID) end
      assert.equal(120, #ids)
      for k = 1, 120 do assert.equal(k, ids[k]) end
      assert.equal(3, #sent)
      assert.is_nil(json.decode(sent[1].body).start)
      assert.equal(2, json.decode(sent[2].body).page)
    end)

    it("page mode without total: 50 then 1 item is two requests, 51 items", function()
      local c, sent = scripted({ { body = json.encode({ result = page_of(1, 50) }) },
        { body = json.encode({ result = page_of(51, 1) }) } })
      local ok, _, n = drain(c, "biconnector.source.list")
      assert.is_true(ok)
      assert.equal(51, n)
      assert.equal(2, #sent)
      assert.equal(1, json.decode(sent[1].body).page)
      assert.equal(2, json.decode(sent[2].body).page)
    end)
  end)

  describe("connector fields the portal knows", function()
    local FIELDS = { title = "T", logo = "data:,", urlCheck = "http://x/c", urlTableList = "http://x/l",
      urlTableDescription = "http://x/d", urlData = "http://x/q", sourceCode = "sc",
      settings = { { code = "token", name = "Token", type = "STRING" } } }

    local function add_with(fields_answer)
      local c, sent = scripted({ { body = json.encode({ result = fields_answer }) }, { body = '{"result":{"id":7}}' } },
        { portal = "portal.example", access_token = "acc-token" })
      local id, dropped = c.connector:add(FIELDS)
      return id, dropped, sent
    end

    it("keyed by name (as the portal answers): unknown keys are dropped", function()
      local id, dropped, sent = add_with({ fields = { title = {}, logo = {}, urlCheck = {}, urlTableList = {},
        urlTableDescription = {}, urlData = {}, settings = {} } })
      assert.equal(7, id)
      assert.same({ "sourceCode" }, dropped)
      assert.is_nil(json.decode(sent[2].body).fields.sourceCode)
    end)

    it("an answer whose shape names no known key drops nothing (every field is sent)", function()
      local id, dropped, sent = add_with({ fields = { { title = "Title", type = "string", isRequired = true },
        { title = "Logo", type = "string", isRequired = true } } })
      assert.equal(7, id)
      assert.same({}, dropped)
      local f = json.decode(sent[2].body).fields
      assert.equal("sc", f.sourceCode)
      assert.equal("http://x/q", f.urlData)
    end)
  end)

  describe("renewal answers", function()
    local EXPIRED = { status = 401, body = '{"error":"expired_token","error_description":"The access token provided has expired."}' }
    local function renewed(endpoint)
      return { body = json.encode({ access_token = "acc-2", refresh_token = "ref-2", expires_in = 3600,
        client_endpoint = endpoint, member_id = "m", scope = "biconnector", user_id = 1 }) }
    end
    local OAUTH = { portal = "http://127.0.0.1:9/", access_token = "acc-1", refresh_token = "ref-1",
      client_id = "app.1", client_secret = "app-secret" }
    local function with(extra)
      local o = {}
      for k, v in pairs(OAUTH) do o[k] = v end
      for k, v in pairs(extra or {}) do o[k] = v end
      return o
    end

    it("a client_endpoint on another host (the docs' example portal) is not followed", function()
      local c, sent = scripted({ EXPIRED, renewed("https://example.bitrix24.com/rest/"), { body = '{"result":{"ID":"1"}}' } }, with())
      assert(c:call("profile"))
      assert.equal("GET", sent[2].method)
      assert.equal("http://127.0.0.1:9/rest/profile", sent[3].url)
      assert.equal("acc-2", json.decode(sent[3].body).auth)
    end)

    it("one on the same host is followed; follow_client_endpoint = true follows any", function()
      local c, sent = scripted({ EXPIRED, renewed("http://127.0.0.1:9/b24/rest/"), { body = '{"result":1}' } }, with())
      assert(c:call("profile"))
      assert.equal("http://127.0.0.1:9/b24/rest/profile", sent[3].url)
      c, sent = scripted({ EXPIRED, renewed("http://127.0.0.2:9/rest"), { body = '{"result":1}' } },
        with({ follow_client_endpoint = true }))
      assert(c:call("profile"))
      assert.equal("http://127.0.0.2:9/rest/profile", sent[3].url)
    end)

    it("an answer without a refresh_token keeps the one we had, for the next renewal", function()
      local store = require("biconnector.tokens").memory()
      local c, sent = scripted({ EXPIRED, { body = '{"access_token":"acc-2","expires_in":3600}' }, { body = '{"result":1}' },
        EXPIRED, renewed(nil), { body = '{"result":2}' } }, with({ store = store }))
      assert.equal(1, c:call("profile"))
      assert.equal("ref-1", store:get().refresh_token)
      assert.equal(2, c:call("profile"))
      assert.matches("refresh_token=ref%-1", sent[5].url)
      assert.equal("ref-2", store:get().refresh_token)
    end)

    it("secrets are masked also as they appear URL-encoded in a transport message", function()
      local secret, refresh = "se/cr+et=1", "re/fr+esh=2"
      local c = scripted({ EXPIRED, function(req)
        return nil, { message = "failed for " .. req.url, code = 56 }
      end }, with({ client_secret = secret, refresh_token = refresh }))
      local _, err = c:call("profile")
      local text = tostring(err)
      assert.matches("RENEWAL_FAILED", text)
      assert.matches("client_secret=***", text, 1, true)
      assert.is_nil(text:find("se%2Fcr", 1, true))
      assert.is_nil(text:find("re%2Ffr", 1, true))
    end)

    it("never from https to plain http", function()
      local c, sent = scripted({ EXPIRED, renewed("http://portal.example/rest/"), { body = '{"result":1}' } },
        with({ portal = "portal.example" }))
      assert(c:call("profile"))
      assert.equal("https://portal.example/rest/profile", sent[3].url)
    end)
  end)

  describe("batch keys", function()
    local function echo_batch()
      -- answers every command with its own line, keyed as sent
      return function(req)
        local cmd = json.decode(req.body).cmd
        local result = {}
        for k, line in pairs(cmd) do result[k] = line end
        return { status = 200, headers = {}, body = json.encode({ result = { result = result, result_error = {} }, time = {} }) }
      end
    end

    it("an array with holes loses no command; numeric keys go first, in numeric order", function()
      local c, sent = scripted({ echo_batch() })
      local results, errors = c:batch({ [1] = "a.get", [3] = "c.get", [10] = "j.get", [2] = nil, x = "x.get" })
      assert.same({}, errors)
      assert.same({ [1] = "a.get", [3] = "c.get", [10] = "j.get", x = "x.get" }, results)
      assert.matches('"cmd":{"1":"a.get","3":"c.get","10":"j.get","x":"x.get"}', sent[1].body, 1, true)
      -- a border-fooling shape: three keys, #t may well be 3
      results = c:batch({ [1] = "a.get", [3] = "c.get", y = "y.get" })
      assert.same({ [1] = "a.get", [3] = "c.get", y = "y.get" }, results)
    end)

    it("when a later chunk fails, the error carries what the earlier chunks did", function()
      local echo = echo_batch()
      local c, sent = scripted({ echo, { err = { message = "reset", code = 56 } } })
      local cmds = {}
      for i = 1, 60 do cmds[i] = "crm.deal.add?fields[TITLE]=" .. i end
      local results, err = c:batch(cmds)
      assert.is_nil(results)
      assert.equal(2, #sent)
      assert.is_true(err.maybe_executed)
      local n = 0
      for _ in pairs(err.results) do n = n + 1 end
      assert.equal(50, n)
      assert.equal("crm.deal.add?fields[TITLE]=1", err.results[1])
      assert.equal(1, err.extra.requests - 1)
    end)

    it("a plain array keeps its positions; two commands under one key are refused before sending", function()
      local c, sent = scripted({ echo_batch() })
      local results = c:batch({ "a.get", "b.get" })
      assert.same({ "a.get", "b.get" }, results)
      assert.has_error(function() c:batch({ { "a.get", key = "k" }, { "b.get", key = "k" } }) end,
        "batch: the key k names two commands")
      assert.equal(1, #sent)
    end)
  end)

  describe("a refusal after an ambiguous failure", function()
    it("a repeated delete answering NOT_FOUND says the first attempt may have done it", function()
      local c, sent = scripted({ { status = 500, body = '{"error":"INTERNAL_SERVER_ERROR","error_description":"x"}' },
        { body = '{"error":"CONNECTOR_NOT_FOUND","error_description":"Connector not found"}' } },
        { portal = "portal.example", access_token = "acc-token" })
      local ok, err = c.connector:delete(5)
      assert.is_nil(ok)
      assert.equal(2, #sent)
      assert.equal("CONNECTOR_NOT_FOUND", err.code)
      assert.is_true(err.after_ambiguous)
      assert.matches("may have been executed", tostring(err))
    end)

    it("a plain refusal carries no such note", function()
      local c = scripted({ { body = '{"error":"CONNECTOR_NOT_FOUND","error_description":"Connector not found"}' } },
        { portal = "portal.example", access_token = "acc-token" })
      local _, err = c.connector:delete(5)
      assert.is_nil(err.after_ambiguous)
    end)
  end)

  describe("options", function()
    it("a zero rate, a burst below 1 or a negative timeout are refused, not slept on forever", function()
      for _, bad in ipairs({ { rate = 0 }, { burst = 0 }, { timeout = -1 }, { max_retries = -1 }, { rate = "fast" }, { rate = 0 / 0 } }) do
        bad.webhook = "https://portal.example/rest/1/hooksecret/"
        bad.transport = function() end
        local c, err = rest.new(bad)
        assert.is_nil(c)
        assert.matches("option [%w_]+ must be a", err)
      end
      assert(rest.new { webhook = "https://portal.example/rest/1/hooksecret/", transport = function() end,
        rate = 5, burst = 250, max_retries = 0, backoff_base = 0 })
    end)
  end)

  describe("the status table of protocol.md", function()
    local function answer(status, code)
      return { status = status, body = json.encode({ error = code, error_description = code .. " happened" }) }
    end
    local OK = { body = '{"result":{"ID":"1"},"time":{}}' }

    local final = { { 401, "NO_AUTH_FOUND" }, { 403, "ACCESS_DENIED" }, { 403, "INVALID_CREDENTIALS" },
      { 403, "insufficient_scope" }, { 403, "user_access_error" }, { 400, "INVALID_REQUEST" },
      { 500, "PORTAL_DELETED" }, { 503, "OVERLOAD_LIMIT" }, { 405, "ERROR_BATCH_METHOD_NOT_ALLOWED" },
      { 400, "ERROR_BATCH_LENGTH_EXCEEDED" }, { 200, "VALIDATION_FIELDS_NOT_PROVIDED" } }
    for _, case in ipairs(final) do
      it(("%d %s is final: one request, a readable error"):format(case[1], case[2]), function()
        local c, sent = scripted({ answer(case[1], case[2]), OK })
        local r, err = c:call("crm.deal.list")
        assert.is_nil(r)
        assert.equal(1, #sent)
        assert.equal(case[2], err.code)
        assert.equal(case[1], err.status)
        assert.is_false(err.retryable)
        assert.equal(("Bitrix24 REST crm.deal.list: %s (HTTP %d): %s happened"):format(case[2], case[1], case[2]), tostring(err))
      end)
    end

    for _, case in ipairs({ { 503, "QUERY_LIMIT_EXCEEDED" }, { 500, "INTERNAL_SERVER_ERROR" }, { 500, "ERROR_UNEXPECTED_ANSWER" } }) do
      it(("%d %s is retried for a read"):format(case[1], case[2]), function()
        local c, sent = scripted({ answer(case[1], case[2]), answer(case[1], case[2]), OK })
        assert.equal("1", c:call("crm.deal.list").ID)
        assert.equal(3, #sent)
      end)
    end

    it("503 QUERY_LIMIT_EXCEEDED is retried for a create too (refused, not executed); 500 is not", function()
      local c, sent = scripted({ answer(503, "QUERY_LIMIT_EXCEEDED"), { body = '{"result":5}' } })
      assert.equal(5, c:call("crm.deal.add", { fields = { TITLE = "x" } }))
      assert.equal(2, #sent)
      c, sent = scripted({ answer(500, "INTERNAL_SERVER_ERROR"), { body = '{"result":5}' } })
      local _, err = c:call("crm.deal.add", { fields = { TITLE = "x" } })
      assert.is_true(err.maybe_executed)
      assert.equal(1, #sent)
    end)

    it("an answer larger than max_body is final (ANSWER_TOO_LARGE), not downloaded again and again", function()
      local c, sent = scripted({ { err = { code = 23, message = "the answer is larger than max_body (268435456 bytes)" } } })
      local _, err = c:call("crm.deal.list")
      assert.equal("ANSWER_TOO_LARGE", err.code)
      assert.equal(1, #sent)
      _, err = c:call("crm.deal.add", {})
      assert.is_true(err.maybe_executed)
    end)

    it("429 OPERATION_TIME_LIMIT waits until time.operating_reset_at, then repeats", function()
      local slept = {}
      local now = 1000000
      local c, sent = scripted({ { status = 429, body = json.encode({ error = "OPERATION_TIME_LIMIT",
        error_description = "Method is blocked due to operation time limit.",
        time = { operating = 480, operating_reset_at = now + 7 } }) }, OK },
        { time = function() return now end })
      c.sleep = function(d) slept[#slept + 1] = d now = now + d end
      assert.equal("1", c:call("crm.deal.list").ID)
      assert.equal(2, #sent)
      local waited = 0
      for _, d in ipairs(slept) do waited = waited + d end
      assert.is_true(waited >= 7 and waited < 8, "waited " .. waited)
    end)
  end)
end)
