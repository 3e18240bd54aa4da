-- client.connector / .source / .dataset against the local portal: the whole
-- provisioning life cycle, with the portal's state checked after every step,
-- and the documented rules checked before anything is sent.
local rest = require "biconnector.rest"
local control = require "portal.control"

local FAST = { rate = 1000, burst = 1000 }

local function connector_fields()
  return {
    title = "Sales", logo = "data:image/png;base64,AAAA", description = "Sales data",
    urlCheck = "https://bi.example.com/check", urlTableList = "https://bi.example.com/table_list",
    urlTableDescription = "https://bi.example.com/table_description", urlData = "https://bi.example.com/data",
    settings = { { code = "token", name = "API token", type = "STRING" }, { code = "shop", name = "Shop", type = "INT" } },
    sort = 200, supportMapping = true, sourceCode = "sales",
  }
end

local function key(id) return ("%d"):format(id) end
local function count(t) local n = 0 for _ in pairs(t or {}) do n = n + 1 end return n end

describe("biconnector services", function()
  local portal, client
  setup(function() portal = control.start(FAST) end)
  teardown(function() portal:stop() end)
  before_each(function()
    portal:reset(FAST)
    client = assert(rest.new(portal:oauth_options({ rate = 1000, burst = 1000 })))
  end)

  it("provisions connector, source and dataset, then removes them in reverse order", function()
    -- connector.add
    local cid = assert(client.connector:add(connector_fields()))
    local st = portal:stats().state
    assert.equal(1, count(st.connectors))
    local c = st.connectors[key(cid)]
    assert.equal("Sales", c.title)
    assert.equal("sales", c.sourceCode)
    assert.equal(2, #c.settings)
    assert.equal("INT", c.settings[2].type)
    -- source.add
    local sid = assert(client.source:add({ title = "Main shop", connectorId = cid, settings = { token = "abc", shop = 7 } }))
    st = portal:stats().state
    assert.equal(cid, st.sources[key(sid)].connectorId)
    assert.equal("abc", st.sources[key(sid)].settings.token)
    -- dataset.add
    local did = assert(client.dataset:add({ name = "sales_deals", externalName = "Deals", externalCode = "deals", sourceId = sid,
      description = "All deals", fields = {
        { type = "int", name = "ID", externalCode = "id" },
        { type = "string", name = "TITLE", externalCode = "title" },
      } }))
    st = portal:stats().state
    local d = st.datasets[key(did)]
    assert.equal(sid, d.sourceId)
    assert.equal(2, #d.fields)
    -- dataset fields update: add one, hide one, delete one
    local title_id, id_id = d.fields[2].id, d.fields[1].id
    assert.is_true(client.dataset:fields_update(did, {
      add = { { type = "datetime", name = "CLOSED", externalCode = "closed" } },
      update = { { id = id_id, visible = false } },
      delete = { title_id },
    }))
    d = portal:stats().state.datasets[key(did)]
    assert.equal(2, #d.fields)
    assert.equal("ID", d.fields[1].name)
    assert.is_false(d.fields[1].visible)
    assert.equal("CLOSED", d.fields[2].name)
    assert.equal("datetime", d.fields[2].type)
    -- list and get
    local list = assert(client.connector:list())
    assert.equal(1, #list)
    assert.equal(cid, list[1].id)
    assert.equal("Main shop", assert(client.source:get(sid)).title)
    assert.equal("sales_deals", assert(client.dataset:get(did)).name)
    assert.equal(1, #assert(client.dataset:list({ filter = { sourceId = sid } })))
    assert.equal(0, #assert(client.dataset:list({ filter = { sourceId = sid + 100 } })))
    -- update
    assert.is_true(client.connector:update(cid, { title = "Sales v2" }))
    assert.is_true(client.source:update(sid, { title = "Shop 1", active = false }))
    assert.is_true(client.dataset:update(did, { description = "Deals, all of them" }))
    st = portal:stats().state
    assert.equal("Sales v2", st.connectors[key(cid)].title)
    assert.is_false(st.sources[key(sid)].active)
    assert.equal("Deals, all of them", st.datasets[key(did)].description)
    -- a connector with sources cannot go first
    local _, err = client.connector:delete(cid)
    assert.equal("CONNECTOR_DELETE_RESTRICTED", err.code)
    -- delete in reverse order
    assert.is_true(client.dataset:delete(did))
    assert.equal(0, count(portal:stats().state.datasets))
    assert.is_true(client.source:delete(sid))
    assert.equal(0, count(portal:stats().state.sources))
    assert.is_true(client.connector:delete(cid))
    assert.equal(0, count(portal:stats().state.connectors))
    local _, gone = client.connector:get(cid)
    assert.equal("CONNECTOR_NOT_FOUND", gone.code)
  end)

  it("asks connector.fields and drops keys an older portal does not know", function()
    portal:reset({ rate = 1000, burst = 1000, connector_fields_without = { "sourceCode" } })
    local warnings = {}
    client = assert(rest.new(portal:oauth_options({ log = function(level, m) warnings[#warnings + 1] = level .. ": " .. m end })))
    local cid, dropped = assert(client.connector:add(connector_fields()))
    assert.same({ "sourceCode" }, dropped)
    assert.matches("dropping connector field%(s%) the portal does not know: sourceCode", warnings[1])
    local c = portal:stats().state.connectors[key(cid)]
    assert.is_nil(c.sourceCode)
    assert.equal(1, portal:stats().stats.executed["biconnector.connector.fields"])
    -- strict mode complains instead, before sending
    local res, err = client.connector:add(connector_fields(), { strict = true })
    assert.is_nil(res)
    assert.equal("VALIDATION_UNKNOWN_PARAMETERS", err.code)
    assert.matches("sourceCode", err.description)
    assert.equal(1, portal:stats().stats.executed["biconnector.connector.add"])
  end)

  -- name, service, method, arguments, expected code, expected text in the description
  local cases = {
    { "missing title", "connector", "add", function() local f = connector_fields() f.title = nil return f end,
      "VALIDATION_REQUIRED_FIELD_MISSING", "fields.title is required" },
    { "bad setting type", "connector", "add", function() local f = connector_fields() f.settings[2].type = "BOOL" return f end,
      "VALIDATION_SETTINGS_INVALID_TYPE", "fields.settings[2].type must be STRING or INT, got BOOL" },
    { "long setting code", "connector", "add", function() local f = connector_fields() f.settings[1].code = ("x"):rep(512) return f end,
      "VALIDATION_SETTINGS_TOO_LONG", "fields.settings[1].code must be shorter than 512" },
    { "settings not a list", "connector", "add", function() local f = connector_fields() f.settings = { token = "x" } return f end,
      "VALIDATION_SETTINGS_INVALID_TYPE", "fields.settings must be an array" },
    { "long sourceCode", "connector", "add", function() local f = connector_fields() f.sourceCode = ("s"):rep(65) return f end,
      "VALIDATION_INVALID_FIELD_TYPE", "sourceCode must be at most 64" },
    { "sort not a number", "connector", "add", function() local f = connector_fields() f.sort = "first" return f end,
      "VALIDATION_INVALID_FIELD_TYPE", "fields.sort must be a number" },
    { "source without connector", "source", "add", function() return { title = "x", settings = {} } end,
      "VALIDATION_REQUIRED_FIELD_MISSING", "fields.connectorId is required" },
    { "source settings as list", "source", "add", function() return { title = "x", connectorId = 1, settings = { "a" } } end,
      "VALIDATION_INVALID_FIELD_TYPE", "fields.settings must be a table keyed by setting code" },
    { "dataset name with capitals", "dataset", "add", function() return { name = "Sales", externalName = "S", externalCode = "s", sourceId = 1,
      fields = { { type = "int", name = "ID", externalCode = "id" } } } end,
      "VALIDATION_DATASET_NAME_INVALID", "fields.name must start with a letter" },
    { "dataset name too long", "dataset", "add", function() return { name = "s" .. ("a"):rep(230), externalName = "S", externalCode = "s", sourceId = 1,
      fields = { { type = "int", name = "ID", externalCode = "id" } } } end,
      "VALIDATION_DATASET_NAME_TOO_LONG", "at most 230" },
    { "field type", "dataset", "add", function() return { name = "s", externalName = "S", externalCode = "s", sourceId = 1,
      fields = { { type = "bool", name = "ID", externalCode = "id" } } } end,
      "VALIDATION_FIELD_INVALID_TYPE", "fields.fields[1].type must be int, string, double, date or datetime, got bool" },
    { "field name lower case", "dataset", "add", function() return { name = "s", externalName = "S", externalCode = "s", sourceId = 1,
      fields = { { type = "int", name = "ID", externalCode = "id" }, { type = "int", name = "qty", externalCode = "q" } } } end,
      "VALIDATION_FIELD_NAME_INVALID", "fields.fields[2].name must start with a letter and use A-Z" },
    { "field name too long", "dataset", "add", function() return { name = "s", externalName = "S", externalCode = "s", sourceId = 1,
      fields = { { type = "int", name = ("A"):rep(33), externalCode = "id" } } } end,
      "VALIDATION_FIELD_NAME_TOO_LONG", "at most 32" },
    { "duplicate field name", "dataset", "add", function() return { name = "s", externalName = "S", externalCode = "s", sourceId = 1,
      fields = { { type = "int", name = "ID", externalCode = "id" }, { type = "int", name = "ID", externalCode = "id2" } } } end,
      "VALIDATION_DUPLICATE_FIELD_NAME", "fields.fields[2].name ID is used twice" },
    { "duplicate external code", "dataset", "add", function() return { name = "s", externalName = "S", externalCode = "s", sourceId = 1,
      fields = { { type = "int", name = "A", externalCode = "id" }, { type = "int", name = "B", externalCode = "id" } } } end,
      "VALIDATION_DUPLICATE_FIELD_EXTERNAL_CODE", "fields.fields[2].externalCode id is used twice" },
    { "dataset rename", "dataset", "update", function() return 1, { name = "other" } end,
      "VALIDATION_IMMUTABLE_FIELD", "fields.name cannot be changed" },
    { "update without id", "connector", "update", function() return nil, { title = "x" } end,
      "VALIDATION_REQUIRED_FIELD_MISSING", "id must be a number" },
    { "fields_update unknown key", "dataset", "fields_update", function() return 1, { rename = {} } end,
      "VALIDATION_UNKNOWN_PARAMETERS", "changes.rename is not one of add, update, delete" },
    { "fields_update visible", "dataset", "fields_update", function() return 1, { update = { { id = 1, visible = "no" } } } end,
      "VALIDATION_INVALID_FIELD_TYPE", "update[1].visible must be a boolean" },
    { "fields_update bad add", "dataset", "fields_update", function() return 1, { add = { { type = "int", name = "1X", externalCode = "x" } } } end,
      "VALIDATION_FIELD_NAME_INVALID", "add[1].name" },
  }
  for _, case in ipairs(cases) do
    it("refuses before sending: " .. case[1], function()
      local service = client[case[2]]
      local res, err = service[case[3]](service, case[4]())
      assert.is_nil(res)
      assert.equal(case[5], err.code)
      assert.truthy(err.description:find(case[6], 1, true), err.description)
      assert.matches("^biconnector%." .. case[2] .. "%.", err.method)
      local executed = portal:stats().stats.executed
      assert.is_nil(executed["biconnector." .. case[2] .. "." .. case[3]])
    end)
  end

  it("passes the portal's own validation errors through", function()
    local _, err = client.source:add({ title = "x", connectorId = 99, settings = { a = "b" } })
    assert.equal("CONNECTOR_NOT_FOUND", err.code)
    assert.equal("biconnector.source.add", err.method)
    local cid = assert(client.connector:add(connector_fields()))
    local sid = assert(client.source:add({ title = "x", connectorId = cid, settings = { token = "t" } }))
    local ds = { name = "deals", externalName = "D", externalCode = "d", sourceId = sid, fields = { { type = "int", name = "ID", externalCode = "id" } } }
    assert(client.dataset:add(ds))
    local _, dup = client.dataset:add(ds)
    assert.equal("DATASET_ALREADY_EXIST", dup.code)
    local _, restricted = client.source:delete(sid)
    assert.equal("SOURCE_DELETE_RESTRICTED", restricted.code)
  end)
end)
