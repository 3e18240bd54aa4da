-- The local test portal itself, spoken to with raw HTTP: the fixture the REST
-- specs rely on must behave as protocol.md describes.
local http = require("biconnector.core").http
local control = require "portal.control"
local J = require "portal.jsonish"

describe("local portal", function()
  local portal, h
  setup(function()
    portal = control.start({ rate = 1000, burst = 1000 })
    h = http.new()
  end)
  teardown(function() h:close() portal:stop() end)
  before_each(function() portal:reset({ rate = 1000, burst = 1000 }) end)

  local function post(path, body, ctype)
    local res = assert(h:request { method = "POST", url = portal.base .. path, body = body,
      headers = { ["Content-Type"] = ctype or "application/json" } })
    return res.status, J.decode(res.body)
  end

  it("takes JSON and PHP-bracket form bodies alike, auth in body or query", function()
    local status, a = post("/rest/biconnector.connector.add", J.encode({ auth = "initial-access", fields = {
      title = "T", logo = "data:,", urlCheck = "c", urlTableList = "l", urlTableDescription = "d", urlData = "q",
      settings = { { code = "k", name = "K", type = "STRING" } } } }))
    assert.equal(200, status)
    assert.equal(1, a.result.id)
    local form = "fields[title]=F&fields[logo]=data%3A%2C&fields[urlCheck]=c&fields[urlTableList]=l" ..
      "&fields[urlTableDescription]=d&fields[urlData]=q&fields[settings][0][code]=k&fields[settings][0][name]=K" ..
      "&fields[settings][0][type]=INT"
    local _, b = post("/rest/biconnector.connector.add?auth=initial-access", form, "application/x-www-form-urlencoded")
    assert.equal(2, b.result.id)
    local c = portal:stats().state.connectors["2"]
    assert.equal("F", c.title)
    assert.equal("INT", c.settings[1].type)
  end)

  it("answers validation errors with HTTP 200 and auth errors with 401", function()
    local status, a = post("/rest/biconnector.connector.add", J.encode({ auth = "initial-access", fields = { title = "x" } }))
    assert.equal(200, status)
    assert.equal("VALIDATION_REQUIRED_FIELD_MISSING", a.error)
    status, a = post("/rest/biconnector.connector.add", J.encode({ auth = "initial-access", fields = { bogus = 1 } }))
    assert.equal(200, status)
    assert.equal("VALIDATION_UNKNOWN_PARAMETERS", a.error)
    status, a = post("/rest/profile", "{}")
    assert.equal(401, status)
    assert.equal("NO_AUTH_FOUND", a.error)
    status, a = post("/rest/1/wrong/profile", "{}")
    assert.equal(401, status)
    assert.equal("NO_AUTH_FOUND", a.error)
    status, a = post("/rest/profile", J.encode({ auth = "no-such-token" }))
    assert.equal(401, status)
    assert.equal("NO_AUTH_FOUND", a.error)
    portal:control({ action = "expire" })
    status, a = post("/rest/profile", J.encode({ auth = "initial-access" }))
    assert.equal(401, status)
    assert.equal("expired_token", a.error)
  end)

  it("renews tokens once per refresh token", function()
    local url = portal.oauth_url .. "?grant_type=refresh_token&client_id=local.test.app&client_secret=appsecret&refresh_token=initial-refresh"
    local first = J.decode(assert(h:request { url = url }).body)
    assert.is_string(first.access_token)
    assert.equal(portal.base .. "/rest/", first.client_endpoint)
    local again = assert(h:request { url = url })
    assert.equal(400, again.status)
    assert.equal("invalid_grant", J.decode(again.body).error)
    local _, ok = post("/rest/profile", J.encode({ auth = first.access_token }))
    assert.equal("1", ok.result.ID)
    local s = portal:stats().stats
    assert.equal(1, s.renewals)
    assert.equal(1, s.renewal_failures)
  end)

  it("limits with a leaky bucket: 503 QUERY_LIMIT_EXCEEDED above the burst", function()
    portal:reset({ rate = 0.001, burst = 3 })
    local statuses = {}
    for i = 1, 5 do statuses[i] = (post("/rest/1/hooksecret/profile", "{}")) end
    assert.same({ 200, 200, 200, 503, 503 }, statuses)
    assert.equal(2, portal:stats().stats.sent_503)
  end)

  it("runs batch commands in the order sent, with references and halt", function()
    local body = '{"halt":1,"cmd":{"z":"test.items.add?fields%5BTITLE%5D=one","a":"test.items.get?id=$result[z]",' ..
      '"m":"no.such","b":"profile"}}'
    local _, r = post("/rest/1/hooksecret/batch", body)
    assert.equal(1, r.result.result.z)
    assert.equal("one", r.result.result.a.TITLE)
    assert.equal("ERROR_METHOD_NOT_FOUND", r.result.result_error.m.error)
    assert.is_nil(r.result.result.b)
    local _, too_many = post("/rest/1/hooksecret/batch", J.encode({ cmd = (function()
      local t = {} for i = 1, 51 do t[i] = "profile" end return t end)() }))
    assert.equal("ERROR_BATCH_LENGTH_EXCEEDED", too_many.error)
  end)

  it("pages test.items.list with total/next, and without them for start=-1", function()
    portal:control({ action = "seed", items = 120 })
    local _, p1 = post("/rest/1/hooksecret/test.items.list", "{}")
    assert.equal(50, #p1.result)
    assert.equal(120, p1.total)
    assert.equal(50, p1.next)
    local _, p3 = post("/rest/1/hooksecret/test.items.list", '{"start":100}')
    assert.equal(20, #p3.result)
    assert.is_nil(p3.next)
    local _, fast = post("/rest/1/hooksecret/test.items.list", '{"start":-1,"filter":{">ID":110},"order":{"ID":"ASC"}}')
    assert.equal(10, #fast.result)
    assert.equal(111, fast.result[1].ID)
    assert.is_nil(fast.total)
  end)
end)
