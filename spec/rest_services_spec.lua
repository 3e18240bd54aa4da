-- client.connector / .source / .table (and the deprecated .dataset) against the
-- local portal: the whole provisioning life cycle, with the portal's state
-- checked after every step, and the documented rules checked before anything
-- is sent.
local rest = require "biconnector.rest"
local control = require "portal.control"

-- the connector's URLs are not served: the portal does not call urlCheck here
local FAST = { rate = 1000, burst = 1000, url_check = false }

local function connector_fields()
  return {
    title = "Sales", logo = "data:image/png;base64,AAAA", description = "Sales data",
    urlCheck = "https://bi.example.com/check", urlTableList = "https://bi.example.com/table_list",
    urlTableDescription = "https://bi.example.com/table_description", urlData = "https://bi.example.com/data",
    settings = { { code = "token", name = "API token", type = "STRING" }, { code = "shop", name = "Shop", type = "INT" } },
    sort = 200, supportMapping = true, sourceCode = "sales",
  }
end

local function table_fields(source_id, extra)
  local t = { name = "sales_deals", externalName = "Deals", externalCode = "deals", sourceId = source_id,
    description = "All deals", fields = {
      { type = "int", name = "ID", externalCode = "id" },
      { type = "string", name = "TITLE", externalCode = "title" },
      { type = "money", name = "AMOUNT", externalCode = "amount" },
    } }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
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

  it("provisions connector, source and table, then removes them in reverse order", function()
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
    -- table.add
    local tid = assert(client.table:add(table_fields(sid)))
    st = portal:stats().state
    local t = st.tables[key(tid)]
    assert.equal(sid, t.sourceId)
    assert.equal(3, #t.fields)
    assert.equal("money", t.fields[3].type)
    -- table fields update: add one, hide one, delete one
    local title_id, id_id = t.fields[2].id, t.fields[1].id
    assert.is_true(client.table:fields_update(tid, {
      add = { { type = "datetime", name = "CLOSED", externalCode = "closed" } },
      update = { { id = id_id, visible = false } },
      delete = { title_id },
    }))
    t = portal:stats().state.tables[key(tid)]
    assert.equal(3, #t.fields)
    assert.equal("ID", t.fields[1].name)
    assert.is_false(t.fields[1].visible)
    assert.equal("CLOSED", t.fields[3].name)
    assert.equal("datetime", t.fields[3].type)
    -- list and get: get unwraps result.item (a source's own fields out of item.connection)
    local list = assert(client.connector:list())
    assert.equal(1, #list)
    assert.equal(cid, list[1].id)
    local source = assert(client.source:get(sid))
    assert.equal("Main shop", source.title)
    assert.equal(cid, source.connectorId)
    -- the portal answers settings as a list of {code, name, type, value, id}: keyed by code here, as add takes them
    assert.equal("abc", source.settings.token)
    assert.equal("token", source.settingsList[1].code)
    assert.equal("abc", source.settingsList[1].value)
    assert.equal("Sales", assert(client.connector:get(cid)).title)
    local got = assert(client.table:get(tid))
    assert.equal("sales_deals", got.name)
    assert.equal(3, #got.fields)
    assert.equal(1, #assert(client.table:list({ filter = { sourceId = sid } })))
    assert.equal(0, #assert(client.table:list({ filter = { sourceId = sid + 100 } })))
    assert.equal("title", assert(client.table:fields()).fields[1].title ~= nil and "title")
    -- update: a table changes its description only
    assert.is_true(client.connector:update(cid, { title = "Sales v2" }))
    assert.is_true(client.source:update(sid, { title = "Shop 1", active = false }))
    assert.is_true(client.table:update(tid, { description = "Deals, all of them" }))
    st = portal:stats().state
    assert.equal("Sales v2", st.connectors[key(cid)].title)
    assert.is_false(st.sources[key(sid)].active)
    assert.equal("Deals, all of them", st.tables[key(tid)].description)
    -- a connector with sources cannot go first, nor a source with tables
    local _, err = client.connector:delete(cid)
    assert.equal("CONNECTOR_DELETE_RESTRICTED", err.code)
    local _, restricted = client.source:delete(sid)
    assert.equal("BX_ERROR", restricted.code)
    -- delete in reverse order
    assert.is_true(client.table:delete(tid))
    assert.equal(0, count(portal:stats().state.tables))
    assert.is_true(client.source:delete(sid))
    assert.equal(0, count(portal:stats().state.sources))
    assert.is_true(client.connector:delete(cid))
    assert.equal(0, count(portal:stats().state.connectors))
    local _, gone = client.connector:get(cid)
    assert.equal("CONNECTOR_NOT_FOUND", gone.code)
    local _, missing = client.table:get(tid)
    assert.equal("DATASET_NOT_FOUND", missing.code) -- no TABLE_NOT_FOUND exists
  end)

  it("keeps the deprecated client.dataset: the same tables, whose delete the portal refuses with HTTP 500", function()
    local cid = assert(client.connector:add(connector_fields()))
    local sid = assert(client.source:add({ title = "Main shop", connectorId = cid, settings = { token = "abc", shop = 7 } }))
    local did = assert(client.dataset:add(table_fields(sid)))
    assert.equal("sales_deals", assert(client.table:get(did)).name)
    assert.equal(1000 + did, portal:stats().state.tables[key(did)].externalId) -- dataset.add made a BI Builder dataset too
    assert.is_true(client.dataset:fields_update(did, { add = { { type = "date", name = "DAY", externalCode = "day" } } }))
    assert.equal(4, #assert(client.dataset:get(did)).fields)
    -- a 500 of a delete is retried as any ambiguous failure of a read: keep that short here
    local quick = assert(rest.new(portal:oauth_options({ rate = 1000, burst = 1000, max_retries = 1, backoff_base = 0.001 })))
    local _, err = quick.dataset:delete(did)
    quick:close()
    assert.equal("INTERNAL_SERVER_ERROR", err.code)
    assert.equal(500, err.status)
    assert.is_true(client.table:delete(did))
  end)

  it("asks connector.fields and drops keys an older portal does not know", function()
    portal:reset({ rate = 1000, burst = 1000, url_check = false, connector_fields_without = { "sourceCode" } })
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

  it("counts the documented length limits in characters, not bytes (Cyrillic text is two bytes a character)", function()
    -- protocol.md 3.1/3.2: setting code and name under 512, sourceCode up to 64,
    -- a table's externalName and externalCode at most 512 (characters)
    local f = connector_fields()
    f.settings[1].name = ("Ж"):rep(300)  -- 300 characters, 600 bytes
    f.sourceCode = ("ж"):rep(40)         -- 40 characters, 80 bytes
    local cid = assert(client.connector:add(f))
    assert.equal(("Ж"):rep(300), portal:stats().state.connectors[key(cid)].settings[1].name)
    local sid = assert(client.source:add({ title = "Main shop", connectorId = cid, settings = { token = "abc", shop = 7 } }))
    local tid = assert(client.table:add(table_fields(sid, { externalName = ("Сделки "):rep(60), externalCode = ("с"):rep(400) })))
    assert.equal(("с"):rep(400), portal:stats().state.tables[key(tid)].externalCode)
    -- past the limit in characters: still refused before sending
    local res, err = client.table:add(table_fields(sid, { name = "other", externalName = ("Ж"):rep(513) }))
    assert.is_nil(res)
    assert.equal("VALIDATION_INVALID_FIELD_TYPE", err.code)
    assert.truthy(err.description:find("at most 512 characters (has 513)", 1, true), err.description)
    f = connector_fields()
    f.settings[1].code = ("ж"):rep(512)
    res, err = client.connector:add(f)
    assert.is_nil(res)
    assert.truthy(err.description:find("shorter than 512 characters (has 512)", 1, true), err.description)
    -- a connector definition takes the same setting
    local c = require("biconnector.connector").new({ title = "T", settings = { { code = "t", name = ("Ж"):rep(300), type = "STRING" } },
      check = function() return true end, tables = {}, describe = {}, data = function() return {} end })
    assert.equal(("Ж"):rep(300), c.settings[1].name)
  end)

  local function with_columns(columns) return function() return table_fields(1, { fields = columns }) end end

  -- name, service, method, arguments, expected code, expected text in the description
  local cases = {
    { "missing title", "connector", "add", function() local f = connector_fields() f.title = nil return f end,
      "VALIDATION_REQUIRED_FIELD_MISSING", "fields.title is required" },
    { "bad setting type", "connector", "add", function() local f = connector_fields() f.settings[2].type = "BOOL" return f end,
      "VALIDATION_SETTINGS_INVALID_TYPE", "fields.settings[2].type must be STRING or INT, got BOOL" },
    { "long setting code", "connector", "add", function() local f = connector_fields() f.settings[1].code = ("x"):rep(512) return f end,
      "VALIDATION_SETTINGS_CODE_TOO_LONG", "fields.settings[1].code must be shorter than 512" },
    -- the codes biconnector.connector.add documents (b24restdocs connector-add.md, "Possible Error Codes")
    { "long setting name", "connector", "add", function() local f = connector_fields() f.settings[1].name = ("й"):rep(512) return f end,
      "VALIDATION_SETTINGS_NAME_TOO_LONG", "fields.settings[1].name must be shorter than 512" },
    { "setting without a name", "connector", "add", function() local f = connector_fields() f.settings[1].name = nil return f end,
      "VALIDATION_SETTINGS_MISSING_REQUIRED_FIELDS", "fields.settings[1].name must be a non-empty string" },
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
    { "table without source", "table", "add", function() local t = table_fields(1) t.sourceId = nil return t end,
      "VALIDATION_REQUIRED_FIELD_MISSING", "fields.sourceId is required" },
    { "table name with capitals", "table", "add", function() return table_fields(1, { name = "Sales" }) end,
      "VALIDATION_DATASET_NAME_INVALID", "fields.name must start with a letter" },
    { "table name too long", "table", "add", function() return table_fields(1, { name = "s" .. ("a"):rep(230) }) end,
      "VALIDATION_DATASET_NAME_TOO_LONG", "at most 230" },
    { "externalCode too long", "table", "add", function() return table_fields(1, { externalCode = ("c"):rep(513) }) end,
      "VALIDATION_INVALID_FIELD_TYPE", "fields.externalCode must be at most 512" },
    { "externalName too long", "table", "add", function() return table_fields(1, { externalName = ("n"):rep(513) }) end,
      "VALIDATION_INVALID_FIELD_TYPE", "fields.externalName must be at most 512" },
    { "a read-only key", "table", "add", function() return table_fields(1, { externalId = 5 }) end,
      "VALIDATION_READ_ONLY_FIELD", "fields.externalId is read-only" },
    { "an unknown key", "table", "add", function() return table_fields(1, { color = "red" }) end,
      "VALIDATION_UNKNOWN_PARAMETERS", "fields.color is not a table field" },
    { "no columns", "table", "add", with_columns({}), "FIELDS_EMPTY", "fields.fields is empty" },
    { "column type", "table", "add", with_columns({ { type = "bool", name = "ID", externalCode = "id" } }),
      "VALIDATION_FIELD_INVALID_TYPE", "fields.fields[1].type must be int, string, double, date, datetime, money or timezone, got bool" },
    { "column type in capitals", "table", "add", with_columns({ { type = "INT", name = "ID", externalCode = "id" } }),
      "VALIDATION_FIELD_INVALID_TYPE", "got INT (types are case-sensitive: int)" },
    { "column name lower case", "table", "add", with_columns({ { type = "int", name = "ID", externalCode = "id" }, { type = "int", name = "qty", externalCode = "q" } }),
      "VALIDATION_FIELD_NAME_INVALID_FORMAT", "fields.fields[2].name must start with a letter and use A-Z" },
    { "column name too long", "table", "add", with_columns({ { type = "int", name = ("A"):rep(33), externalCode = "id" } }),
      "VALIDATION_FIELD_NAME_TOO_LONG", "at most 32" },
    { "column without type", "table", "add", with_columns({ { name = "ID", externalCode = "id" } }),
      "VALIDATION_FIELD_MISSING_REQUIRED_PARAMETERS", "fields.fields[1] must have name, externalCode and type" },
    { "column visible on add", "table", "add", with_columns({ { type = "int", name = "ID", externalCode = "id", visible = false } }),
      "VALIDATION_UNKNOWN_PARAMETERS", "columns are created visible" },
    { "duplicate column name", "table", "add", with_columns({ { type = "int", name = "ID", externalCode = "id" }, { type = "int", name = "ID", externalCode = "id2" } }),
      "DUPLICATE_FIELDS", "fields.fields[2].name ID is used twice" },
    { "duplicate column code", "table", "add", with_columns({ { type = "int", name = "A", externalCode = "id" }, { type = "int", name = "B", externalCode = "id" } }),
      "VALIDATION_DUPLICATE_FIELD_CODE", "fields.fields[2].externalCode id is used twice" },
    { "duplicate column name (dataset)", "dataset", "add", with_columns({ { type = "int", name = "ID", externalCode = "id" }, { type = "int", name = "ID", externalCode = "id2" } }),
      "VALIDATION_DUPLICATE_FIELD_NAME", "fields.fields[2].name ID is used twice" },
    { "table rename", "table", "update", function() return 1, { name = "other" } end,
      "VALIDATION_IMMUTABLE_FIELD", "fields.name cannot be changed (set once by add; only description changes): a new name is a new table" },
    { "table externalName", "table", "update", function() return 1, { externalName = "Other" } end,
      "VALIDATION_IMMUTABLE_FIELD", "fields.externalName cannot be changed" },
    { "table columns by update", "table", "update", function() return 1, { fields = {} } end,
      "INVALID_METHOD", "use fields_update" },
    { "dataset rename", "dataset", "update", function() return 1, { name = "other" } end,
      "VALIDATION_IMMUTABLE_FIELD", "fields.name cannot be changed" },
    { "update without id", "connector", "update", function() return nil, { title = "x" } end,
      "VALIDATION_ID_NOT_PROVIDED", "id is missing" },
    { "get with a bad id", "table", "get", function() return "x1" end,
      "VALIDATION_INVALID_ID_FORMAT", "id must be a positive integer, got x1" },
    { "fields_update unknown key", "table", "fields_update", function() return 1, { rename = {} } end,
      "VALIDATION_UNKNOWN_PARAMETERS", "changes.rename is not one of add, update, delete" },
    { "fields_update visible", "table", "fields_update", function() return 1, { update = { { id = 1, visible = "no" } } } end,
      "VALIDATION_INVALID_FIELD_TYPE", "update[1].visible must be a boolean" },
    { "fields_update without visible", "table", "fields_update", function() return 1, { update = { { id = 1 } } } end,
      "VALIDATION_FIELD_UPDATE_MISSING_REQUIRED_FIELDS", "update[1] must have id" },
    { "fields_update bad delete", "table", "fields_update", function() return 1, { delete = { 0 } } end,
      "VALIDATION_FIELD_DELETE_INVALID_ID", "delete[1] must be a column id" },
    { "fields_update bad add", "table", "fields_update", function() return 1, { add = { { type = "int", name = "1X", externalCode = "x" } } } end,
      "VALIDATION_FIELD_NAME_INVALID_FORMAT", "add[1].name" },
    { "fields_update add of an existing code", "table", "fields_update", function()
      return 1, { add = { { type = "int", name = "X", externalCode = "id" } } }, { current = { { id = 4, name = "ID", externalCode = "id" } } } end,
      "VALIDATION_DUPLICATE_EXIST_CODE", "the table already has a column with externalCode id (id 4)" },
    { "fields_update delete of another table's column", "table", "fields_update", function()
      return 1, { delete = { 9 } }, { current = { { id = 4, name = "ID", externalCode = "id" } } } end,
      "VALIDATION_FIELD_NOT_FOUND", "delete[1]: column 9 is not a column of table 1" },
  }
  for _, case in ipairs(cases) do
    it("refuses before sending: " .. case[1], function()
      local service = client[case[2]]
      local res, err = service[case[3]](service, case[4]())
      assert.is_nil(res)
      assert.equal(case[5], err.code)
      assert.truthy(err.description:find(case[6], 1, true), err.description)
      assert.matches("^biconnector%." .. case[2] .. "%.", err.method)
      assert.equal("local", err.kind)
      local received = portal:stats().stats.received
      assert.is_nil(received["biconnector." .. case[2] .. "." .. case[3]:gsub("_", ".")])
    end)
  end

  it("passes the portal's own validation errors through, from inside result, as errors", function()
    local _, err = client.source:add({ title = "x", connectorId = 99, settings = { a = "b" } })
    assert.equal("CONNECTOR_NOT_FOUND", err.code)
    assert.equal("biconnector.source.add", err.method)
    assert.equal(200, err.status)
    assert.is_false(err.retryable)
    local cid = assert(client.connector:add(connector_fields()))
    local sid = assert(client.source:add({ title = "x", connectorId = cid, settings = { token = "t" } }))
    local t = table_fields(sid)
    assert(client.table:add(t))
    local _, dup = client.table:add(t)
    assert.equal("NAME_EXISTS", dup.code)
    local _, old = client.dataset:add(t)
    assert.equal("DATASET_ALREADY_EXIST", old.code)
    -- each refused once: no retry of a validation error
    local received = portal:stats().stats.received
    assert.equal(2, received["biconnector.table.add"])
    assert.equal(1, received["biconnector.source.add"] - 1)
  end)

  it("takes `result: false` from update, delete and fields.update for what it is: not done", function()
    local cid = assert(client.connector:add(connector_fields()))
    local sid = assert(client.source:add({ title = "x", connectorId = cid, settings = { token = "t" } }))
    local tid = assert(client.table:add(table_fields(sid)))
    local calls = {
      { "biconnector.connector.update", function() return client.connector:update(cid, { title = "New" }) end },
      { "biconnector.source.update", function() return client.source:update(sid, { title = "New" }) end },
      { "biconnector.table.update", function() return client.table:update(tid, { description = "New" }) end },
      { "biconnector.table.fields.update", function()
        return client.table:fields_update(tid, { add = { { type = "int", name = "N", externalCode = "n" } } })
      end },
      { "biconnector.table.delete", function() return client.table:delete(tid) end },
      { "biconnector.source.delete", function() return client.source:delete(sid) end },
      { "biconnector.connector.delete", function() return client.connector:delete(cid) end },
    }
    for _, case in ipairs(calls) do
      portal:fault({ method = case[1], kind = "result_false" })
      local ok, err = case[2]()
      assert.is_nil(ok, case[1])
      assert.equal("RESULT_FALSE", err.code, case[1])
      assert.equal(case[1], err.method)
      assert.equal("answer", err.kind)
      assert.is_false(err.retryable)
      assert.truthy(err.description:find("result false", 1, true), err.description)
    end
    -- nothing was changed, and the same calls go through once the portal answers true
    local st = portal:stats().state
    assert.equal("Sales", st.connectors[key(cid)].title)
    for _, case in ipairs(calls) do assert.is_true((case[2]()), case[1]) end
  end)
end)
