-- Review of the REST side as a demanding user and as Bitrix24 judges it
-- (protocol.md 3, 3.1, 3.2), against the local portal.
local rest = require "biconnector.rest"
local control = require "portal.control"
local register = require "biconnector.register"
local helpers = require "helpers"

local FAST = { rate = 1000, burst = 1000, url_check = false }

describe("REST user review", function()
  local portal
  setup(function() portal = control.start(FAST) end)
  teardown(function() portal:stop() end)
  before_each(function() portal:reset(FAST) end)

  local function client_for(extra)
    local o = { rate = 1000, burst = 1000, backoff_base = 0.001 }
    for k, v in pairs(extra or {}) do o[k] = v end
    local c = assert(rest.new(portal:oauth_options(o)))
    finally(function() c:close() end)
    return c
  end

  it("each/list page a biconnector list named with .json or in upper case by page, not only its first 50", function()
    portal:control({ action = "seed", connectors = 120 })
    local c = client_for()
    local list = assert(c:list("biconnector.connector.list.json"))
    assert.equal(120, #list)
    list = assert(c:list("BICONNECTOR.CONNECTOR.LIST"))
    assert.equal(120, #list)
  end)

  it("each/list start at the page or start the caller gives, not silently at the first", function()
    portal:control({ action = "seed", connectors = 120, items = 120 })
    local c = client_for()
    local list = assert(c:list("biconnector.connector.list", { page = 2 }))
    assert.equal(70, #list) -- pages 2 and 3
    assert.equal(51, list[1].id)
    list = assert(c:list("test.items.list", { start = 100 }))
    assert.equal(20, #list)
    assert.equal(101, list[1].ID)
    list = assert(c:list("test.items.list", { start = 0 }))
    assert.equal(120, #list)
  end)

  it("register: a column type Bitrix24 does not know goes as string, with a warning; a rerun changes nothing", function()
    local connector = {
      title = "Odd", definition = {}, settings = { { code = "token", name = "Token", type = "STRING" } },
      handle = function(_, req)
        if req.path == "/table_list" then return 200, {}, '[{"code":"t1","title":"T1"}]' end
        return 200, {}, '[{"code":"a","name":"A","type":"int"},{"code":"b","name":"B","type":"Boolean"},' ..
          '{"code":"c","name":"C","type":"money"}]'
      end,
    }
    local lines = {}
    local function run()
      return register.run { connector = connector, base_url = "https://h.example.com", client = client_for(),
        settings = { token = "t" }, tables = { { table = "t1" } }, print = function(l) lines[#lines + 1] = l end }
    end
    local result, err = run()
    assert(result, tostring(err))
    local t = select(2, next(portal:stats().state.tables))
    assert.same({ "int", "string", "money" }, { t.fields[1].type, t.fields[2].type, t.fields[3].type })
    assert.equal(1, #result.warnings)
    assert.matches("table t1: column type%(s%) Bitrix24 does not know, registered as string %(as BI Builder reads them%): b %(Boolean%)",
      result.warnings[1])
    assert.matches("warning: table t1: column type", table.concat(lines, "\n"))
    local before = portal:stats()
    result = assert(run())
    assert.equal("unchanged", result.tables[1].action)
    assert.same(before.state, portal:stats().state)
  end)

  it("register: a described field without a type is an error naming it, before anything is sent", function()
    local connector = {
      title = "Typeless", definition = {}, settings = { { code = "token", name = "Token", type = "STRING" } },
      handle = function(_, req)
        if req.path == "/table_list" then return 200, {}, '[{"code":"t1","title":"T1"}]' end
        return 200, {}, '[{"code":"a","name":"A","type":"int"},{"code":"b","name":"B"}]'
      end,
    }
    local result, err = register.run { connector = connector, base_url = "https://h.example.com", client = client_for(),
      settings = { token = "t" }, tables = { { table = "t1" } } }
    assert.is_nil(result)
    assert.equal("the connector's table_description of t1: field 2 (b) has no type", err)
    assert.is_nil(next(portal:stats().stats.received)) -- no REST call at all
  end)

  describe("batch with halt and a biconnector error inside result (which the portal does not halt on)", function()
    it("sends nothing after it: a command that is no biconnector read waits for the next request", function()
      local c = client_for()
      local results, errors, extra = c:batch({
        { key = "bad", method = "biconnector.connector.delete", params = { id = 99 } },
        { key = "after", method = "test.items.add", params = { fields = { TITLE = "x" } } },
      }, { halt = true })
      assert.equal("CONNECTOR_NOT_FOUND", errors.bad.code)
      assert.is_nil(results.after)
      assert.is_nil(errors.after)
      assert.equal(1, extra.requests)
      assert.is_nil(portal:stats().stats.received["test.items.add"])
    end)

    it("reads share the request and their results after the failing one are dropped; the rest is never sent", function()
      portal:control({ action = "seed", connectors = 1 })
      local c = client_for()
      local results, errors, extra = c:batch({
        { key = "schema", method = "biconnector.connector.fields" },
        { key = "one", method = "biconnector.connector.get", params = { id = 1 } },
        { key = "missing", method = "biconnector.connector.get", params = { id = 9 } },
        { key = "list", method = "biconnector.connector.list" },
        { key = "delete", method = "biconnector.connector.delete", params = { id = 1 } },
      }, { halt = true })
      assert.equal(1, extra.requests)
      assert.is_table(results.schema)
      assert.equal("seed 1", results.one.item.title)
      assert.equal("CONNECTOR_NOT_FOUND", errors.missing.code)
      assert.is_nil(results.list) -- the portal ran it; with halt it is not reported
      assert.is_nil(extra.time.list)
      assert.is_nil(results.delete)
      assert.is_nil(portal:stats().stats.received["biconnector.connector.delete"])
      assert.equal(1, select(2, next(portal:stats().state.connectors)).id)
    end)

    it("without a failure the commands all run, in as many requests as the splits need, references resolved", function()
      local c = client_for()
      local results, errors, extra = c:batch({
        { key = "c", method = "biconnector.connector.add", params = { fields = { title = "T", logo = "data:,",
          urlCheck = "https://x/c", urlTableList = "https://x/l", urlTableDescription = "https://x/d",
          urlData = "https://x/q", settings = { { code = "t", name = "T", type = "STRING" } } } } },
        { key = "got", method = "biconnector.connector.get", params = { id = "$result[c][id]" } },
        { key = "s", method = "biconnector.source.add", params = { fields = { title = "S", connectorId = "$result[c][id]",
          settings = { t = "v" } } } },
      }, { halt = true })
      assert.is_nil(next(errors))
      assert.equal(2, extra.requests) -- source.add, a write, goes after the connector.add request came back
      assert.equal("T", results.got.item.title)
      assert.equal(1, results.s.id)
      assert.equal(1, select(2, next(portal:stats().state.sources)).connectorId)
    end)

    it("without halt nothing changes: one request, the command after the failing one runs", function()
      local c = client_for()
      local results, errors, extra = c:batch({
        { key = "bad", method = "biconnector.connector.delete", params = { id = 99 } },
        { key = "after", method = "test.items.add", params = { fields = { TITLE = "x" } } },
      })
      assert.equal("CONNECTOR_NOT_FOUND", errors.bad.code)
      assert.equal(1, results.after)
      assert.equal(1, extra.requests)
    end)

    it("a chunk_size below 1 is refused (it would send nothing, or never end)", function()
      local c = client_for()
      for _, n in ipairs({ 0, -1, 0.5 }) do
        assert.has_error(function() c:batch({ "profile" }, { chunk_size = n }) end,
          "batch: chunk_size must be an integer from 1 to 50, got " .. tostring(n))
      end
    end)
  end)

  describe("call and register renewing from the environment", function()
    local function run3(env, command, args)
      return helpers.run3(("BIC_BUILD=%s BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access"
        .. " BITRIX24_REFRESH_TOKEN=initial-refresh BITRIX24_CLIENT_ID=local.test.app BITRIX24_CLIENT_SECRET=appsecret"
        .. " BITRIX24_OAUTH_URL=%s %s %s bin/biconnector %s %s"):format(helpers.q(helpers.build), helpers.q(portal.base),
        helpers.q(portal.oauth_url), env, helpers.runtime, command, args))
    end

    it("without a token store, renew, do the call, and say on stderr that the pair is not kept", function()
      portal:control({ action = "expire" })
      local rc, out, err = run3("", "call", "profile")
      local _
      assert.equal(0, rc, err)
      assert.matches('"ID": "1"', out, 1, true)
      assert.matches("biconnector: warning: the access token was renewed, and no token store keeps the new pair:"
        .. " BITRIX24_REFRESH_TOKEN is now spent", err, 1, true)
      assert.matches("set BITRIX24_TOKENS_FILE=PATH (or BITRIX24_TOKENS_REDIS)", err, 1, true)
      assert.equal(1, portal:stats().stats.renewals)
      -- what the warning says: the same environment cannot renew again
      portal:control({ action = "expire" })
      rc, _, err = run3("", "call", "profile")
      assert.equal(1, rc)
      assert.matches("invalid_grant", err, 1, true)
      -- register alike (a fresh pair, as after a new authorization)
      portal:control({ action = "tokens", access_token = "initial-access", refresh_token = "initial-refresh" })
      portal:control({ action = "expire" })
      rc, _, err = run3("", "register", "examples/minimal.lua --base-url https://bi.example.com")
      assert.equal(0, rc, err)
      assert.matches("no token store keeps the new pair", err, 1, true)
      -- no renewal, no warning
      portal:control({ action = "tokens", access_token = "initial-access", refresh_token = "initial-refresh" })
      rc, _, err = run3("", "call", "profile")
      assert.equal(0, rc, err)
      assert.is_nil(err:find("warning", 1, true))
      -- with a store: renewed once, kept, and the next run uses the kept pair
      portal:control({ action = "tokens", access_token = "initial-access", refresh_token = "initial-refresh" })
      portal:control({ action = "expire" })
      local before = portal:stats().stats.renewals
      local file = helpers.tmp_path("review-tokens")
      finally(function() os.remove(file) os.remove(file .. ".lock") end)
      for _ = 1, 2 do
        local code, o, e = run3("BITRIX24_TOKENS_FILE=" .. helpers.q(file), "call", "profile")
        assert.equal(0, code, e)
        assert.matches('"ID": "1"', o, 1, true)
        assert.is_nil(e:find("warning", 1, true))
      end
      assert.equal(before + 1, portal:stats().stats.renewals)
    end)

    it("a webhook or an access token alone is unchanged (no renewal to refuse)", function()
      local rc, out = run3("BITRIX24_REFRESH_TOKEN=", "call", "profile")
      assert.equal(0, rc)
      assert.matches('"ID": "1"', out, 1, true)
    end)
  end)

  it("OAuth: a pair taken from the shared store that has expired too is renewed from, in the same call", function()
    -- b renewed an hour ago into the store; a, idle since before that, still holds the first pair
    local store = require("biconnector.rest.tokens").memory()
    local a = client_for({ store = store })
    local b = client_for({ store = store })
    portal:control({ action = "expire" })
    assert(b:call("profile"))
    portal:control({ action = "expire" })
    local me, err = a:call("profile")
    assert.is_nil(err)
    assert.equal("1", me.ID)
    local st = portal:stats()
    assert.equal(2, st.stats.renewals)
    assert.equal(0, st.stats.renewal_failures)
    assert.equal(a.tokens.access_token, store:get().access_token)
    -- a token that keeps expiring is still renewed at most once per call
    portal:control({ action = "expire" })
    portal:fault({ kind = "expired", method = "profile", count = 1 }) -- the renewed token is refused once more
    me, err = a:call("profile")
    assert.is_nil(me)
    assert.equal("expired_token", err.code)
    assert.equal(3, portal:stats().stats.renewals)
  end)

  it("register: a connector of the same title but another sourceCode is not taken over (a new one is made, with a note)", function()
    local c = require("biconnector.connector").load("examples/minimal.lua")
    local client = client_for()
    local lines = {}
    local function run(code, base)
      return assert(register.run { connector = c, base_url = base, client = client, source_code = code,
        print = function(l) lines[#lines + 1] = l end })
    end
    assert.equal("created", run("minimal_prod", "https://prod.example.com").connector.action)
    local r = run("minimal_staging", "https://staging.example.com")
    assert.equal("created", r.connector.action)
    assert.equal(2, r.connector.id)
    assert.matches('note: connector 1 has the title "Minimal example" but sourceCode minimal_prod: not this one',
      table.concat(lines, "\n"), 1, true)
    local st = portal:stats().state
    assert.equal("https://prod.example.com/check", st.connectors["1"].urlCheck)
    assert.equal("minimal_prod", st.connectors["1"].sourceCode)
    assert.equal("https://staging.example.com/check", st.connectors["2"].urlCheck)
    -- each is found again by its own sourceCode; a connector without sourceCode is still found by title
    assert.equal("unchanged", run("minimal_prod", "https://prod.example.com").connector.action)
    assert.equal("unchanged", run("minimal_staging", "https://staging.example.com").connector.action)
  end)

  it("register: on a portal that knows sourceCode, a connector of the title without one is still found by title", function()
    local c = require("biconnector.connector").load("examples/minimal.lua")
    local client = client_for()
    local fields = register.connector_fields(c, { base_url = "https://h.example.com" })
    fields.sourceCode = nil
    assert(client.connector:add(fields))
    local r = assert(register.run { connector = c, base_url = "https://h.example.com", client = client })
    assert.equal("updated", r.connector.action) -- its sourceCode is set now
    assert.equal("title", r.connector.matched_by)
    assert.equal("minimal_example", portal:stats().state.connectors["1"].sourceCode)
  end)

  it("takes webhook, portal and client_endpoint addresses whose scheme is in capitals (HTTP://)", function()
    local up = function(u) return (u:gsub("^http://", "HTTP://")) end
    local c = portal:webhook_client({ webhook = up(portal.webhook) })
    assert.equal(portal.webhook, c.endpoint)
    assert.equal(1, tonumber(assert(c:call("test.echo", { x = 1 })).x))
    c = client_for({ portal = up(portal.base) })
    assert.equal(portal.base .. "/rest/", c.endpoint)
    assert.equal(1, tonumber(assert(c:call("test.echo", { x = 1 })).x))
    c = client_for({ portal = false, client_endpoint = up(portal.base) .. "/rest/" })
    assert.equal(portal.base .. "/rest/", c.endpoint)
    assert.equal("https://oauth.bitrix24.tech/oauth/token/", rest.oauth_url("HTTPS://oauth.bitrix24.tech"))
  end)

  it("batch called as a method (call, biconnector call batch) holding a create is not repeated after an ambiguous failure", function()
    local c = portal:webhook_client()
    portal:fault({ kind = "drop_after", method = "batch", count = 1 }) -- executed, the answer lost
    local r, err = c:call("batch", { cmd = { a = "test.items.echo?x=1", b = "test.items.add.json?fields[TITLE]=x" } })
    assert.is_nil(r)
    assert.is_true(err.maybe_executed)
    assert.matches("not repeated: batch creates objects", tostring(err), 1, true)
    assert.equal(1, portal:stats().state.item_count)
    assert.equal(1, portal:stats().stats.received.batch)
    -- a batch of reads is repeated as before
    portal:fault({ kind = "drop_after", method = "batch", count = 1 })
    r, err = c:call("batch", { cmd = { "test.items.get?id=1", "profile" } })
    assert.is_nil(err)
    assert.equal("x", r.result[1].TITLE) -- a list sent, a list back (PHP encodes keys 0..n-1 as an array)
    assert.equal(3, portal:stats().stats.received.batch)
  end)

  it("register: keys a portal adds to a connector's settings (an id each) are ignored: a rerun changes nothing", function()
    portal:reset({ rate = 1000, burst = 1000, url_check = false, grown_keys = true })
    local c = require("biconnector.connector").load("examples/minimal.lua")
    local client = client_for()
    local function run(extra)
      local o = { connector = c, base_url = "https://h.example.com", client = client, settings = { token = "t" } }
      for k, v in pairs(extra or {}) do o[k] = v end
      return assert(register.run(o))
    end
    assert.equal("created", run().connector.action)
    assert.is_number(client.connector:get(1).settings[1].id) -- the portal does add one
    local r = run()
    assert.equal("unchanged", r.connector.action)
    assert.equal("unchanged", r.source.action)
    assert.is_nil(portal:stats().stats.received["biconnector.connector.update"])
    -- a setting's name that changed is still a change; a setting no longer in the file too
    local renamed = require("biconnector.connector").new({ title = c.title, source_code = "minimal_example",
      settings = { { code = "token", name = "Token (new)", type = "STRING" } }, check = function() return true end,
      tables = {}, describe = {}, data = function() return {} end })
    assert.equal("updated", run({ connector = renamed }).connector.action)
    local fewer = require("biconnector.connector").new({ title = c.title, source_code = "minimal_example", settings = {},
      check = function() return true end, tables = {}, describe = {}, data = function() return {} end })
    assert.equal("updated", run({ connector = fewer, settings = false }).connector.action)
    assert.same({}, portal:stats().state.connectors["1"].settings)
  end)

  it("register: a --base-url with a query or a fragment is a usage error (the endpoint paths would land in it)", function()
    for _, base in ipairs({ "https://h.example.com/bi?key=1", "https://h.example.com/bi#x" }) do
      local out, err = { text = "" }, { text = "" }
      function out.write(self, ...) self.text = self.text .. table.concat({ ... }) end
      err.write = out.write
      assert.equal(2, register.main({ "examples/minimal.lua", "--base-url", base, "--dry-run" }, out, err, function() end))
      assert.matches("--base-url must have no query or fragment (the endpoints are URL/check, URL/data, ...), got " .. base,
        err.text, 1, true)
    end
    -- a space or UTF-8 text the portal would store as is, and Bitrix24 could not call
    for base, byte in pairs({ ["https://h.example.com/a b"] = "byte 0x20 at 24 is not allowed in a URL (write %20)",
        ["https://h.example.com/\208\190"] = "byte 0xD0 at 23 is not allowed in a URL (write %D0)" }) do
      local out, err = { text = "" }, { text = "" }
      function out.write(self, ...) self.text = self.text .. table.concat({ ... }) end
      err.write = out.write
      assert.equal(2, register.main({ "examples/minimal.lua", "--base-url", base, "--dry-run" }, out, err, function() end))
      assert.matches("--base-url must be percent-encoded: " .. byte, err.text, 1, true)
    end
  end)

  it("register: a new --title with the default source title updates the connector only (its one source and tables kept)", function()
    local c = require("biconnector.connector").new({ title = "Minimal example", settings = { { code = "token", name = "Token",
      type = "STRING" } }, check = function() return true end, tables = { { code = "cities", title = "Cities" } },
      describe = { cities = { { code = "id", name = "ID", type = "int" } } }, data = function() return {} end })
    local client = client_for()
    local lines = {}
    local function run(title)
      return assert(register.run { connector = c, base_url = "https://h.example.com", client = client, title = title,
        settings = { token = "m1n" }, tables = { { table = "cities" } }, print = function(l) lines[#lines + 1] = l end })
    end
    run()
    local before = portal:stats().stats.received
    local r = run("Minimal (renamed)")
    assert.equal("updated", r.connector.action)
    assert.equal("unchanged", r.source.action)
    assert.equal(1, r.source.id)
    assert.equal("unchanged", r.tables[1].action)
    local after = portal:stats()
    assert.equal(1, after.stats.received["biconnector.connector.update"])
    assert.equal(before["biconnector.source.add"], after.stats.received["biconnector.source.add"])
    assert.equal(before["biconnector.table.add"], after.stats.received["biconnector.table.add"])
    assert.matches('note: source 1 "Minimal example" is the only source of connector 1: taken as this one', table.concat(lines, "\n"), 1, true)
    -- and again: nothing to do
    r = run("Minimal (renamed)")
    assert.equal("unchanged", r.connector.action)
    assert.equal("unchanged", r.source.action)
    assert.equal(1, #(function() local t = {} for k in pairs(portal:stats().state.sources) do t[#t + 1] = k end return t end)())
    -- a --source-title that no source has is a new source, as before
    r = assert(register.run { connector = c, base_url = "https://h.example.com", client = client, title = "Minimal (renamed)",
      source_title = "Second", settings = { token = "m1n" } })
    assert.equal("created", r.source.action)
  end)

  describe("an error inside result with a status other than 200 (protocol.md 3.1)", function()
    it("is reported by its own code and description, not HTTP_<status>, for any method and status", function()
      local c = client_for()
      portal:fault({ kind = "error_in_result", method = "biconnector.connector.list", status = 400,
        code = "ERROR_ARGUMENT", description = "Invalid order direction." })
      local r, err = c:call("biconnector.connector.list", { order = { id = "UP" } })
      assert.is_nil(r)
      assert.equal("ERROR_ARGUMENT", err.code)
      assert.equal("Invalid order direction.", err.description)
      assert.equal(400, err.status)
      assert.is_false(err.retryable)
      assert.equal(1, portal:stats().stats.received["biconnector.connector.list"])
      -- a 500 of a read: the inner code, and repeated as a 500 is
      portal:fault({ kind = "error_in_result", method = "profile", status = 500, code = "ERROR_UNEXPECTED_ANSWER", count = 7 })
      r, err = c:call("profile")
      assert.is_nil(r)
      assert.equal("ERROR_UNEXPECTED_ANSWER", err.code)
      assert.equal(500, err.status)
      assert.is_true(err.retryable)
      -- call_raw and each alike
      portal:fault({ kind = "error_in_result", method = "biconnector.source.list", status = 403, code = "ACCESS_DENIED" })
      r, err = c:list("biconnector.source.list")
      assert.is_nil(r)
      assert.equal("ACCESS_DENIED", err.code)
      assert.equal(403, err.status)
    end)

    it("QUERY_LIMIT_EXCEEDED there is retried, even for a create, as at the top level", function()
      local c = client_for()
      portal:fault({ kind = "error_in_result", method = "test.items.add", status = 503, code = "QUERY_LIMIT_EXCEEDED", count = 2 })
      local id, err = c:call("test.items.add", { fields = { TITLE = "x" } })
      assert.is_nil(err)
      assert.equal(1, id)
      local s = portal:stats().stats
      assert.equal(3, s.received["test.items.add"])
      assert.equal(1, s.executed["test.items.add"])
      assert.equal(2, c.counters.sent_503)
    end)

    it("OPERATION_TIME_LIMIT there waits for its operating_reset_at, as at the top level", function()
      local slept = {}
      local c = client_for({ sleep = function(s) slept[#slept + 1] = s end, shared_bucket = false })
      portal:fault({ kind = "error_in_result", method = "biconnector.connector.list", status = 429,
        code = "OPERATION_TIME_LIMIT", reset_in = 30 })
      assert(c:call("biconnector.connector.list"))
      local longest = 0
      for _, s in ipairs(slept) do longest = math.max(longest, s) end
      assert.is_true(longest > 25 and longest <= 31, table.concat(slept, " "))
      assert.equal(2, portal:stats().stats.received["biconnector.connector.list"])
    end)

    it("expired_token there renews the token once and repeats the call", function()
      local c = client_for()
      portal:fault({ kind = "error_in_result", method = "biconnector.connector.list", status = 401, code = "expired_token" })
      local r, err = c:call("biconnector.connector.list")
      assert.is_nil(err)
      assert.same({}, r)
      assert.equal(1, portal:stats().stats.renewals)
      assert.equal(1, c.counters.renewals)
    end)

    -- the portal's error codes come in varying case (b24restdocs, the Go SDK's
    -- error page): the policy reads them case-insensitively, the code the
    -- caller sees is the documented spelling
    it("reads EXPIRED_TOKEN and query_limit_exceeded as expired_token and QUERY_LIMIT_EXCEEDED", function()
      local c = client_for({ sleep = function() end, shared_bucket = false })
      portal:fault({ kind = "error_in_result", method = "biconnector.connector.list", status = 401, code = "EXPIRED_TOKEN" })
      local r, err = c:call("biconnector.connector.list")
      assert.is_nil(err)
      assert.same({}, r)
      assert.equal(1, c.counters.renewals)
      portal:fault({ kind = "error_in_result", method = "biconnector.connector.list", status = 503,
        code = "query_limit_exceeded" })
      r, err = c:call("biconnector.connector.list")
      assert.is_nil(err)
      assert.same({}, r)
      assert.equal(4, portal:stats().stats.received["biconnector.connector.list"]) -- each refusal, then the repeat
      assert.equal(1, c.counters.sent_503)
      portal:fault({ kind = "error_in_result", method = "biconnector.connector.list", status = 401, code = "Expired_Token",
        count = 5 })
      r, err = c:call("biconnector.connector.list")
      assert.is_nil(r)
      assert.equal("expired_token", err.code)
    end)
  end)

  describe("biconnector call batch with failed commands", function()
    local function call_batch(params, env)
      return helpers.run3(("BIC_BUILD=%s BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access %s %s bin/biconnector call batch %s")
        :format(helpers.q(helpers.build), helpers.q(portal.base), env or "", helpers.runtime, helpers.q(params)))
    end
    local json = require "biconnector.json"

    it("exits 1, prints the whole answer, and names the failed keys and codes on one stderr line", function()
      local rc, out, err = call_batch('{"cmd": {"a": "profile", "b": "no.such.method", "c": "biconnector.connector.get?id=99"}}')
      assert.equal(1, rc, err)
      local answer = json.decode(out)
      assert.equal("1", answer.result.a.ID)
      assert.equal("ERROR_METHOD_NOT_FOUND", answer.result_error.b.error)
      assert.equal("CONNECTOR_NOT_FOUND", answer.result.c.error.error) -- the biconnector error inside result
      assert.equal("biconnector call: batch: 2 command(s) failed: b ERROR_METHOD_NOT_FOUND, c CONNECTOR_NOT_FOUND\n", err)
      -- --raw (the whole answer), a webhook, a cmd list (keys 0..n-1): the same exit and line
      rc, out, err = helpers.run3(("BIC_BUILD=%s BITRIX24_WEBHOOK=%s %s bin/biconnector call batch %s --raw")
        :format(helpers.q(helpers.build), helpers.q(portal.webhook), helpers.runtime,
          helpers.q('{"cmd": ["no.such.method", "profile"]}')))
      assert.equal(1, rc)
      assert.equal("1", json.decode(out).result.result["1"].ID)
      assert.equal("biconnector call: batch: 1 command(s) failed: 0 ERROR_METHOD_NOT_FOUND\n", err)
    end)

    it("with halt=1 alike: exits 1 naming the failing command, the ones after it not run", function()
      local rc, out, err = call_batch('{"halt": 1, "cmd": ["profile", "no.such.method", "test.items.add?fields[TITLE]=x"]}')
      assert.equal(1, rc, err)
      local answer = json.decode(out)
      assert.equal("1", answer.result[1].ID)
      assert.equal("ERROR_METHOD_NOT_FOUND", answer.result_error["1"].error)
      assert.equal(0, portal:stats().state.item_count)
      assert.equal("biconnector call: batch: 1 command(s) failed: 1 ERROR_METHOD_NOT_FOUND\n", err)
      -- a biconnector error inside result, which the portal does not halt on, fails the run too
      rc, out, err = call_batch('{"halt": 1, "cmd": ["biconnector.source.get?id=7", "profile"]}')
      assert.equal(1, rc, err)
      assert.equal("SOURCE_NOT_FOUND", json.decode(out).result[1].error.error)
      assert.equal("biconnector call: batch: 1 command(s) failed: 0 SOURCE_NOT_FOUND\n", err)
    end)

    it("sends a cmd object's commands in the order written: halt stops where it was written, references resolve", function()
      local parts = {}
      for i = 1, 20 do
        local line = ("test.echo?n=%d"):format(i)
        if i == 12 then line = "no.such.method" end
        if i == 5 then line = "test.echo?prev=$result[k04][n]" end
        parts[#parts + 1] = ('"k%02d": "%s"'):format(i, line)
      end
      local rc, out, err = call_batch('{"halt": 1, "cmd": {' .. table.concat(parts, ", ") .. '}}')
      assert.equal(1, rc, err)
      local answer = json.decode(out)
      for i = 1, 11 do assert.is_table(answer.result[("k%02d"):format(i)], ("k%02d"):format(i)) end
      assert.equal("4", answer.result.k05.prev)
      for i = 13, 20 do assert.is_nil(answer.result[("k%02d"):format(i)], ("k%02d"):format(i)) end
      assert.equal("biconnector call: batch: 1 command(s) failed: k12 ERROR_METHOD_NOT_FOUND\n", err)
    end)

    it("a batch whose every command succeeded exits 0 with nothing on stderr", function()
      local rc, out, err = call_batch('{"halt": 1, "cmd": {"a": "profile", "b": "biconnector.connector.list"}}')
      assert.equal(0, rc, err)
      assert.equal("", err)
      assert.equal("1", json.decode(out).result.a.ID)
      rc, out, err = call_batch('{"cmd": ["profile", "server.time"]}')
      assert.equal(0, rc, err)
      assert.equal("", err)
      assert.equal("1", json.decode(out).result[1].ID)
    end)
  end)
end)
