-- Found by a review of the connector author's contract (docs/connector.md)
-- through connector files served by `biconnector serve` and in process:
-- - a table list given as a map ({deals = {code =, title =}}), statically or
--   from a tables function, was answered `[]`: no table, no word why;
-- - a field list given as a map keyed by code was refused as listing no field;
-- - a handler raising a value that is not a string (error(), error(nil),
--   error({code = 1})) was logged as "failed: table: 0x55..." (the framework's
--   own wrapper, or the value's address), which tells the author nothing.
local S = require "serve_helpers"
local helpers = require "helpers"
local cjson = require "cjson"
local connector = require "biconnector.connector"

local FIELDS = { { code = "id", name = "ID", type = "int" } }

local function make(def)
  def.title = def.title or "review"
  def.settings = def.settings or {}
  def.check = def.check or function() return true end
  def.describe = def.describe or { deals = FIELDS }
  def.tables = def.tables or { { code = "deals", title = "Deals" } }
  def.data = def.data or function() return { { 1 } } end
  return connector.new(def)
end

local function definition_error(def)
  local ok, err = pcall(make, def)
  assert.is_false(ok)
  return err
end

describe("framework review: lists that are maps", function()
  it("a static table list given as a map is a definition error", function()
    local err = definition_error({ tables = { deals = { code = "deals", title = "Deals" } } })
    assert.equals('connector definition: tables must be a list of {code, title} (found key "deals")', err)
  end)

  it("a table list from tables() given as a map is a 500 naming it, not an empty list", function()
    local logged = {}
    local c = make({
      tables = function() return { deals = { code = "deals", title = "Deals" } } end,
      describe = function() return FIELDS end,
      log = function(_, message) logged[#logged + 1] = message end,
    })
    local status, body = helpers.post_form(c, "/table_list", "searchString=")
    assert.equals(500, status)
    assert.equals('tables() must be a list of {code, title} (found key "deals")', cjson.decode(body).message)
    assert.equals('tables() must be a list of {code, title} (found key "deals")', logged[1])
    -- a list with a stray key too: what the key holds would silently be left out
    c = make({ tables = function() return { { code = "a", title = "A" }, b = { code = "b", title = "B" } } end,
      describe = function() return FIELDS end, log = function() end })
    status, body = helpers.post_form(c, "/table_list", "")
    assert.equals(500, status)
    assert.equals('tables() must be a list of {code, title} (found key "b")', cjson.decode(body).message)
  end)

  it("a field list given as a map is said to be one, statically and from describe()", function()
    local map = { id = { name = "ID", type = "int" } }
    local err = definition_error({ describe = { deals = map } })
    assert.equals('connector definition: describe["deals"] must be a list of {code, name, type} (found key "id")', err)
    local c = make({ describe = function() return map end, log = function() end })
    local status, body = helpers.post_form(c, "/table_description", "table=deals")
    assert.equals(500, status)
    assert.equals('describe("deals") must be a list of {code, name, type} (found key "id")', cjson.decode(body).message)
  end)

  it("lists as the docs write them still pass", function()
    local c = make({ tables = function() return { { code = "deals", title = "Deals" } } end,
      describe = function() return FIELDS end })
    local status, body = helpers.post_form(c, "/table_list", "")
    assert.equals(200, status)
    assert.equals('[{"code":"deals","title":"Deals"}]', body)
    status, body = helpers.post_form(c, "/table_description", "table=deals")
    assert.equals(200, status)
    assert.equals('[{"code":"id","name":"ID","type":"int"}]', body)
  end)
end)

describe("framework review: a handler raising something other than a string", function()
  local function logged_for(raise)
    local logged = {}
    local c = make({ data = raise, log = function(level, message) logged[#logged + 1] = level .. " " .. message end })
    local status, body = helpers.post_form(c, "/data", "table=deals")
    assert.equals(500, status)
    assert.matches("^data failed %(error id %x+%)$", cjson.decode(body).message)
    return logged[1]
  end

  it("says what was raised", function()
    assert.equals("error data failed: nil (error raised with no message)", logged_for(function() error() end))
    assert.equals("error data failed: nil (error raised with no message)", logged_for(function() error(nil) end))
    assert.equals('error data failed: a table error value {"code":1}', logged_for(function() error({ code = 1 }) end))
    assert.equals("error data failed: false", logged_for(function() error(false) end))
    -- what was right stays so
    assert.equals("error data failed: tbl msg", logged_for(function() error({ message = "tbl msg" }) end))
    assert.equals("error data failed: custom", logged_for(function()
      error(setmetatable({}, { __tostring = function() return "custom" end }))
    end))
    -- (LuaJIT adds the position to a number as to a string)
    assert.matches("^error data failed: .*42$", logged_for(function() error(42) end))
  end)
end)

describe("framework review: through biconnector serve", function()
  local h, file
  setup(function()
    file = helpers.tmp_path("connector.lua")
    helpers.write_file(file, [[
local biconnector = require "biconnector"
return biconnector.connector {
  title = "map tables", settings = {}, check = function() return true end,
  tables = function() return { deals = { code = "deals", title = "Deals" } } end,
  describe = function() return { { code = "id", name = "ID", type = "int" } } end,
  data = function() error({ code = 7 }) end,
}
]])
    h = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "1" }))
  end)
  teardown(function()
    S.stop(h)
    os.remove(file)
  end)

  local function post(path, body)
    local r = assert(S.request(h.port, "POST", path, body, { ["Content-Type"] = "application/x-www-form-urlencoded" }))
    return r.status, cjson.decode(r.body)
  end

  it("answers a map table list with a 500 naming it and logs a table error value readably", function()
    local status, body = post("/table_list", "searchString=")
    assert.equals(500, status)
    assert.equals('tables() must be a list of {code, title} (found key "deals")', body.message)
    status, body = post("/data", "table=deals")
    assert.equals(500, status)
    local log = S.wait_stderr(h, "a table error value", true)
    -- (the server's log line quotes the message)
    assert.matches('data failed: a table error value {\\"code\\":7}', log, 1, true)
    assert.matches(body.id, log, 1, true)
  end)
end)

-- Array rows in described order whose last values are nil: Lua's length of
-- {1, "a", nil} is 2, as wide as a select of two of three fields, and "auto"
-- (docs/connector.md, /data) then reads the array rows in select order. A
-- later row of three values was refused as "array row has 3 values, expected
-- at most 2", which does not say why two were expected.
describe("framework review: the first array row's width", function()
  local F3 = { { code = "id", name = "ID", type = "int" }, { code = "s", name = "S", type = "string" },
    { code = "n", name = "N", type = "int" } }

  local function answer(rows, form)
    local c = make({ tables = { { code = "t", title = "T" } }, describe = { t = F3 },
      data = function() return rows end, log = function() end })
    local status, body = helpers.post_form(c, "/data", form)
    return status, cjson.decode(body)
  end

  it("says why a wider row was refused when the first one put array rows in select order", function()
    for _, filtered in ipairs({ "", "&filter%5B%3Eid%5D=0" }) do
      local status, body = answer({ { 1, "a", nil }, { 2, "b", 5 } }, "table=t&select%5B%5D=id&select%5B%5D=s" .. filtered)
      assert.equals(500, status)
      assert.equals('table "t", row 2: array row has 3 values, expected at most 2: the first array row had 2, '
        .. "as many as the select, so array rows are read in select order (write a missing value as "
        .. "biconnector.null, not nil)", body.message)
    end
  end)

  it("with null in place of the trailing nil, the rows are read in described order", function()
    local null = require("biconnector").null
    local status, body = answer({ { 1, "a", null }, { 2, "b", 5 } }, "table=t&select%5B%5D=s&select%5B%5D=id")
    assert.equals(200, status)
    assert.same({ { "s", "id" }, { "a", 1 }, { "b", 2 } }, body)
    -- a row wider than the described fields keeps the short message
    status, body = answer({ { 1, "a", 5, 6 } }, "table=t")
    assert.equals(500, status)
    assert.equals('table "t", row 1: array row has 4 values, expected at most 3', body.message)
  end)
end)

-- data returning one map row instead of a list of rows ({id = 1} for
-- {{id = 1}}), or rows keyed by id, was answered with the header alone: 200
-- and no row, no word why.
describe("framework review: data returning a table that is no list of rows", function()
  local function answer(result, form)
    local logged = {}
    local c = make({ data = function() return result end,
      log = function(_, message) logged[#logged + 1] = message end })
    local status, body = helpers.post_form(c, "/data", form or "table=deals")
    return status, cjson.decode(body), logged[1]
  end

  it("is a 500 naming the key, with or without a filter left to the framework", function()
    for _, form in ipairs({ "table=deals", "table=deals&filter%5B%3Eid%5D=0" }) do
      local status, body, logged = answer({ id = 1 }, form)
      assert.equals(500, status)
      local want = 'data("deals") must return a list of rows, an iterator or a cursor, got a table with key "id" '
        .. "and no row 1 (one row goes in a list: {row})"
      assert.equals(want, body.message)
      assert.equals(want, logged)
      status, body = answer({ [7] = { 7 }, [9] = { 9 } }, form)
      assert.equals(500, status)
      assert.matches("got a table with key %d and no row 1", body.message)
    end
  end)

  it("an empty list is still no rows", function()
    local status, body = answer({})
    assert.equals(200, status)
    assert.same({ { "id" } }, body)
  end)
end)

-- applied.invalid = "null" (docs/connector.md, /data): values that do not fit
-- go as null, "counted and logged once per answer as a warning". For a list or
-- an iterator handed back with no close, the warning was never logged: the
-- release that tells it did nothing when there was nothing to close. And an
-- applied.invalid the framework does not know made handle raise (core.rows.new's
-- argument error) instead of a 500 naming it.
describe("framework review: applied.invalid", function()
  local function answer(rows, applied, form)
    local logged = {}
    local c = make({ data = function() return rows, applied end,
      log = function(level, message) logged[#logged + 1] = level .. " " .. message end })
    local status, body, _, info = helpers.post_form(c, "/data", form or "table=deals")
    if info.close then info.close() end
    return status, cjson.decode(body), logged
  end

  it("logs the values sent as null once per answer, for a list and for an iterator", function()
    local iterator = function()
      local i = 0
      return function()
        i = i + 1
        return ({ { "abc" }, { 2 }, { "x" } })[i]
      end
    end
    for _, case in ipairs({ { "list", function() return { { "abc" }, { 2 }, { "x" } } end },
      { "iterator", iterator } }) do
      for _, form in ipairs({ "table=deals", "table=deals&filter%5B%21id%5D=5" }) do
        local status, body, logged = answer(case[2](), { invalid = "null" }, form)
        assert.equals(200, status, case[1])
        assert.same({ { "id" }, { cjson.null }, { 2 }, { cjson.null } }, body, case[1])
        assert.same({ 'warn table "deals": 2 values did not fit the described type and went as null '
          .. '(first: field "id", expected an integer, got string "abc")' }, logged, case[1] .. " " .. form)
      end
    end
  end)

  it("is a 500 naming it when it is neither \"error\" nor \"null\"", function()
    for _, v in ipairs({ "skip", true }) do
      local ok, status, body = pcall(answer, { { 1 } }, { invalid = v })
      assert.is_true(ok, tostring(status))
      assert.equals(500, status)
      assert.equals(('data("deals"): applied.invalid must be "error" or "null", got %s'):format(
        type(v) == "string" and '"' .. v .. '"' or tostring(v)), body.message)
    end
    local status, body = answer({ { 1 } }, { invalid = "error" })
    assert.equals(200, status)
    assert.same({ { "id" }, { 1 } }, body)
  end)
end)

-- connector.failure(status, message) answers that status; the JSON "error"
-- code named only a few (400, 403, 404, 405, 415, 500, 503, 504): a 401 or a
-- 429 a handler raised was answered {"error":"bad_request"}, a 502
-- {"error":"internal_error"}.
describe("framework review: the error code of a failure's status", function()
  it("names the common statuses a handler raises", function()
    local cases = { [401] = "unauthorized", [408] = "request_timeout", [409] = "conflict", [410] = "gone",
      [413] = "payload_too_large", [422] = "unprocessable_entity", [429] = "too_many_requests",
      [502] = "bad_gateway", [503] = "service_unavailable", [504] = "gateway_timeout",
      [418] = "bad_request", [599] = "internal_error" }
    for status, code in pairs(cases) do
      local c = make({ data = function() error(connector.failure(status, "why")) end, log = function() end })
      local got, body = helpers.post_form(c, "/data", "table=deals")
      assert.equals(status, got)
      assert.equals(code, cjson.decode(body).error, status)
      assert.equals("data: why", cjson.decode(body).message)
    end
  end)
end)

-- A static table list bounds what is served: with a describe function an
-- unlisted code was 404, with a static describe holding it the table was
-- described and its data served although /table_list never offered it.
describe("framework review: a table a static list does not give", function()
  it("is unknown on /table_description and /data, with a static describe or a function", function()
    local extra = { { code = "secret", name = "Secret", type = "string" } }
    for _, describe_ in ipairs({ { deals = FIELDS, hidden = extra },
      function(_, code) return ({ deals = FIELDS, hidden = extra })[code] end }) do
      local c = make({ describe = describe_, data = function() return { { "x" } } end })
      for _, path in ipairs({ "/table_description", "/data" }) do
        local status, body = helpers.post_form(c, path, "table=hidden")
        assert.equals(404, status, path)
        assert.same({ error = "not_found", message = 'unknown table "hidden"' }, cjson.decode(body))
      end
      assert.equals(200, (helpers.post_form(c, "/table_description", "table=deals")))
    end
    -- a tables function: describe alone decides (the list is the handler's)
    local c = make({ tables = function() return { { code = "deals", title = "Deals" } } end,
      describe = { deals = FIELDS, hidden = extra }, data = function() return { { "x" } } end })
    assert.equals(200, (helpers.post_form(c, "/data", "table=hidden")))
  end)
end)

-- A tables function answering one code twice: /table_list listed it twice
-- (Bitrix24 takes the code as the table's externalCode, so two entries name
-- one table, and which title is meant is unclear). It is refused as the
-- framework refuses every answer the protocol forbids: a 500 naming the code.
-- A static list with a repeated code is a definition error already.
describe("framework review: a table code tables() repeats", function()
  local h, file
  setup(function()
    file = helpers.tmp_path("connector.lua")
    helpers.write_file(file, [[
local biconnector = require "biconnector"
return biconnector.connector {
  title = "twice", settings = {}, check = function() return true end,
  tables = function(_, search)
    if search == "one" then return { { code = "deals", title = "Deals" } } end
    return { { code = "deals", title = "Deals" }, { code = "leads", title = "Leads" }, { code = "deals", title = "Deals (old)" } }
  end,
  describe = function() return { { code = "id", name = "ID", type = "int" } } end,
  data = function() return { { 1 } } end,
}
]])
    h = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "1" }))
  end)
  teardown(function()
    S.stop(h)
    os.remove(file)
  end)

  local function post(path, body)
    local r = assert(S.request(h.port, "POST", path, body, { ["Content-Type"] = "application/x-www-form-urlencoded" }))
    return r.status, cjson.decode(r.body)
  end

  it("is a 500 naming the repeated code, logged with the answer's error id", function()
    local status, body = post("/table_list", "searchString=")
    assert.equals(500, status)
    assert.equals("internal_error", body.error)
    assert.equals('tables()[3].code "deals" repeats tables()[1]', body.message)
    local log = S.wait_stderr(h, "repeats tables", true)
    assert.matches(body.id, log, 1, true)
    -- an answer without the repeat is served as before
    status, body = post("/table_list", "searchString=one")
    assert.equals(200, status)
    assert.same({ { code = "deals", title = "Deals" } }, body)
  end)

  it("stays a definition error in a static list", function()
    local err = definition_error({ tables = { { code = "deals", title = "Deals" }, { code = "deals", title = "Again" } } })
    assert.equals('connector definition: tables[2].code "deals" repeats tables[1]', err)
  end)
end)
