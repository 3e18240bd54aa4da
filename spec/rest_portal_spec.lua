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

  it("answers biconnector errors inside result with HTTP 200, auth errors at the top with 401", function()
    local status, a = post("/rest/biconnector.connector.add", J.encode({ auth = "initial-access", fields = { title = "x" } }))
    assert.equal(200, status)
    assert.is_nil(a.error)
    assert.equal("VALIDATION_REQUIRED_FIELD_MISSING", a.result.error.error)
    assert.is_string(a.result.error.error_description)
    assert.is_number(a.time.start) -- the time block is there as on success
    status, a = post("/rest/biconnector.connector.add", J.encode({ auth = "initial-access", fields = { bogus = 1 } }))
    assert.equal(200, status)
    assert.equal("VALIDATION_UNKNOWN_PARAMETERS", a.result.error.error)
    -- an order direction other than ASC/DESC: HTTP 400 ERROR_ARGUMENT at the top
    status, a = post("/rest/biconnector.connector.list", J.encode({ auth = "initial-access", order = { id = "UP" } }))
    assert.equal(400, status)
    assert.equal("ERROR_ARGUMENT", a.error)
    status = post("/rest/biconnector.connector.list", J.encode({ auth = "initial-access", order = { id = "desc" } }))
    assert.equal(200, status) -- the direction is case-insensitive
    -- a method the portal lacks is the REST layer's error: at the top
    status, a = post("/rest/biconnector.table.bogus", J.encode({ auth = "initial-access" }))
    assert.equal(404, status)
    assert.equal("ERROR_METHOD_NOT_FOUND", a.error)
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

  it("as an older portal (errors_at_top), answers them at the top level", function()
    portal:reset({ rate = 1000, burst = 1000, errors_at_top = true })
    local status, a = post("/rest/biconnector.connector.add", J.encode({ auth = "initial-access", fields = { title = "x" } }))
    assert.equal(200, status)
    assert.equal("VALIDATION_REQUIRED_FIELD_MISSING", a.error)
    assert.is_nil(a.result)
    status, a = post("/rest/1/hooksecret/biconnector.source.list", "{}")
    assert.equal(403, status)
    assert.equal("ACCESS_DENIED", a.error)
  end)

  it("refuses webhooks the biconnector methods except *.fields", function()
    for _, family in ipairs({ "connector", "source", "table", "dataset" }) do
      local status, a = post("/rest/1/hooksecret/biconnector." .. family .. ".list", "{}")
      assert.equal(200, status)
      assert.equal("ACCESS_DENIED", a.result.error.error, family)
      status, a = post("/rest/1/hooksecret/biconnector." .. family .. ".fields", "{}")
      assert.equal(200, status)
      assert.is_table(a.result.fields[1], family)
      assert.is_string(a.result.fields[1].title, family)
    end
  end)

  it("keeps tables as biconnector.table.* documents them: answers, validation codes, one store with dataset.*", function()
    local function call(method, params)
      params.auth = "initial-access"
      local status, a = post("/rest/" .. method, J.encode(params))
      assert.equal(200, status, method)
      return a.result, a
    end
    local function code_of(method, params)
      local r = call(method, params)
      return type(r) == "table" and type(r.error) == "table" and r.error.error or nil
    end
    portal:reset({ rate = 1000, burst = 1000, url_check = false })
    local cid = call("biconnector.connector.add", { fields = { title = "T", logo = "data:,", urlCheck = "c",
      urlTableList = "l", urlTableDescription = "d", urlData = "q", settings = { { code = "k", name = "K", type = "STRING" } } } }).id
    local sid = call("biconnector.source.add", { fields = { title = "S", connectorId = cid, settings = { k = "v" } } }).id
    local function tbl(name, fields) return { fields = { sourceId = sid, name = name, externalName = "Orders", externalCode = "orders",
      fields = fields or { { name = "ID", externalCode = "id", type = "int" }, { name = "AMOUNT", externalCode = "amount", type = "money" } } } } end
    -- the validation codes of table.add
    assert.equal("VALIDATION_DATASET_NAME_INVALID", code_of("biconnector.table.add", tbl("Orders")))
    assert.equal("VALIDATION_DATASET_NAME_TOO_LONG", code_of("biconnector.table.add", tbl("o" .. ("x"):rep(230))))
    assert.equal("FIELDS_EMPTY", code_of("biconnector.table.add", tbl("orders", J.array({}))))
    assert.equal("VALIDATION_FIELD_INVALID_TYPE", code_of("biconnector.table.add", tbl("orders", { { name = "ID", externalCode = "id", type = "INT" } })))
    assert.equal("DUPLICATE_FIELDS", code_of("biconnector.table.add", tbl("orders", { { name = "ID", externalCode = "a", type = "int" },
      { name = "ID", externalCode = "b", type = "int" } })))
    assert.equal("VALIDATION_DUPLICATE_FIELD_CODE", code_of("biconnector.table.add", tbl("orders", { { name = "A", externalCode = "id", type = "int" },
      { name = "B", externalCode = "id", type = "int" } })))
    assert.equal("VALIDATION_FIELD_NAME_INVALID_FORMAT", code_of("biconnector.table.add", tbl("orders", { { name = "id", externalCode = "id", type = "int" } })))
    assert.equal("VALIDATION_FIELD_NAME_TOO_LONG", code_of("biconnector.table.add", tbl("orders", { { name = ("A"):rep(33), externalCode = "id", type = "int" } })))
    assert.equal("VALIDATION_FIELD_MISSING_REQUIRED_PARAMETERS", code_of("biconnector.table.add", tbl("orders", { { name = "ID", externalCode = "id" } })))
    assert.equal("VALIDATION_READ_ONLY_FIELD", code_of("biconnector.table.add", (function() local t = tbl("orders") t.fields.externalId = 1 return t end)()))
    assert.equal("SOURCE_NOT_FOUND", code_of("biconnector.table.add", (function() local t = tbl("orders") t.fields.sourceId = 99 return t end)()))
    -- add -> result.id; get -> result.item with the columns, no sourceId; list -> a bare array with sourceId, no columns
    local id = call("biconnector.table.add", tbl("orders")).id
    assert.is_number(id)
    assert.equal("NAME_EXISTS", code_of("biconnector.table.add", tbl("orders")))
    local item = call("biconnector.table.get", { id = id }).item
    assert.equal("orders", item.name)
    assert.equal("rest", item.type)
    assert.equal(0, item.externalId)
    assert.is_nil(item.sourceId)
    assert.same({ "ID:int:id:true", "AMOUNT:money:amount:true" }, (function()
      local out = {} for i, f in ipairs(item.fields) do out[i] = f.name .. ":" .. f.type .. ":" .. f.externalCode .. ":" .. tostring(f.visible) end return out end)())
    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$", item.dateCreate)
    local list, whole = call("biconnector.table.list", { select = { "id", "sourceId", "name" } })
    assert.equal(1, #list)
    assert.equal(sid, list[1].sourceId)
    assert.is_nil(list[1].fields)
    assert.is_nil(whole.total)
    assert.is_nil(whole.next)
    assert.equal("VALIDATION_FIELD_NOT_ALLOWED_IN_SELECT", code_of("biconnector.table.list", { select = { "csvEncoding" } }))
    -- update: the description only
    assert.is_true(call("biconnector.table.update", { id = id, fields = { description = "All orders" } }))
    assert.equal("VALIDATION_IMMUTABLE_FIELD", code_of("biconnector.table.update", { id = id, fields = { name = "other" } }))
    assert.equal("INVALID_METHOD", code_of("biconnector.table.update", { id = id, fields = { fields = {} } }))
    assert.equal("VALIDATION_FIELDS_NOT_PROVIDED", code_of("biconnector.table.update", { id = id }))
    assert.equal("VALIDATION_ID_NOT_PROVIDED", code_of("biconnector.table.update", { fields = { description = "x" } }))
    assert.equal("VALIDATION_INVALID_ID_FORMAT", code_of("biconnector.table.get", { id = -3 }))
    assert.equal("DATASET_NOT_FOUND", code_of("biconnector.table.get", { id = 999 }))
    -- fields.update: update, add, delete; duplicates of existing columns refused
    local amount = item.fields[2].id
    assert.equal("VALIDATION_DUPLICATE_EXIST_CODE", code_of("biconnector.table.fields.update", { id = id, add = { { name = "X", externalCode = "id", type = "int" } } }))
    assert.equal("VALIDATION_DUPLICATE_EXIST_NAME", code_of("biconnector.table.fields.update", { id = id, add = { { name = "ID", externalCode = "x", type = "int" } } }))
    assert.equal("VALIDATION_FIELD_UPDATE_MISSING_REQUIRED_FIELDS", code_of("biconnector.table.fields.update", { id = id, update = { { id = amount } } }))
    assert.equal("VALIDATION_FIELD_DELETE_INVALID_ID", code_of("biconnector.table.fields.update", { id = id, delete = { "x" } }))
    assert.is_true(call("biconnector.table.fields.update", { id = id, update = { { id = amount, visible = false }, { id = 99999, visible = false } },
      add = { { name = "TZ", externalCode = "tz", type = "timezone" } } }))
    item = call("biconnector.table.get", { id = id }).item
    assert.is_false(item.fields[2].visible)
    assert.equal("TZ", item.fields[3].name)
    assert.equal("All orders", item.description)
    -- the deprecated family sees the same table; its delete fails as on a portal with BI Builder
    assert.equal("orders", call("biconnector.dataset.get", { id = id }).item.name)
    local status, a = post("/rest/biconnector.dataset.delete", J.encode({ auth = "initial-access", id = id }))
    assert.equal(500, status)
    assert.equal("INTERNAL_SERVER_ERROR", a.error)
    assert.equal("BX_ERROR", code_of("biconnector.source.delete", { id = sid })) -- a source with tables stays
    assert.is_true(call("biconnector.table.delete", { id = id }))
    assert.equal("DATASET_NOT_FOUND", code_of("biconnector.table.delete", { id = id }))
    -- source.get: the source's own fields in item.connection
    local src = call("biconnector.source.get", { id = sid }).item
    assert.equal("S", src.connection.title)
    assert.equal(cid, src.connectorId)
    -- its settings: a list of {code, name, type, value, id}, not the object source.add took
    assert.equal(1, #src.settings)
    assert.equal("k", src.settings[1].code)
    assert.equal("v", src.settings[1].value)
    assert.is_string(src.settings[1].type)
  end)

  it("pages the biconnector lists by page, 50 a page, no total or next; start is ignored", function()
    portal:control({ action = "seed", connectors = 120 })
    local _, p1 = post("/rest/biconnector.connector.list", J.encode({ auth = "initial-access" }))
    assert.equal(50, #p1.result)
    assert.is_nil(p1.total)
    assert.is_nil(p1.next)
    local _, p3 = post("/rest/biconnector.connector.list", J.encode({ auth = "initial-access", page = 3, start = 0 }))
    assert.equal(20, #p3.result)
    assert.equal(101, p3.result[1].id)
    local _, bad = post("/rest/biconnector.connector.list", J.encode({ auth = "initial-access", page = -2, start = 100 }))
    assert.equal(1, bad.result[1].id)
  end)

  it("as a portal without biconnector.table.* (without_tables), answers ERROR_METHOD_NOT_FOUND and deletes datasets", function()
    portal:reset({ rate = 1000, burst = 1000, without_tables = true })
    local status, a = post("/rest/biconnector.table.list", J.encode({ auth = "initial-access" }))
    assert.equal(404, status)
    assert.equal("ERROR_METHOD_NOT_FOUND", a.error)
    status, a = post("/rest/biconnector.dataset.list", J.encode({ auth = "initial-access" }))
    assert.equal(200, status)
    assert.same({}, a.result)
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
