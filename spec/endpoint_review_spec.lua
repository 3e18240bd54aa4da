-- Found by a conformance review of the four endpoints against protocol.md
-- (sections 2 and 2.1) and Bitrix24's own client (module biconnector,
-- ExternalSource/Source/Rest.php): what Bitrix24 accepts is decided by PHP's
-- empty(), which is true for "0" as well as for "". A table list holding an
-- element whose code or title is "0", or a description holding a column whose
-- code, name or type is "0", is refused whole ("checkTableList",
-- "checkTableDescription"); a check answered 200 with the body "0" is "cannot
-- connect" (`if (!$answer)`).
local S = require "serve_helpers"
local H = require "sql_helpers"
local cjson = require "cjson"
local connector = require "biconnector.connector"

local TOKEN = "review-token"

local function post(port, path, form)
  local r = assert(S.request(port, "POST", path, "connection%5Btoken%5D=" .. TOKEN .. "&" .. form,
    { ["Content-Type"] = "application/x-www-form-urlencoded" }))
  local ok, decoded = pcall(cjson.decode, r.body)
  return r.status, ok and decoded or r.body
end

describe("serve sqlite:// with a table or column named \"0\" (empty to Bitrix24's PHP)", function()
  if not H.have_sqlite3("spec/endpoint_review_spec.lua") then
    return it("needs the sqlite3 tool", function() pending("the sqlite3 command-line tool is missing") end)
  end
  local dir, h
  setup(function()
    dir = H.tmpdir()
    H.sqlite(dir .. "/zero.db", [[
      CREATE TABLE orders (id INTEGER PRIMARY KEY, "0" TEXT, note TEXT);
      INSERT INTO orders VALUES (1, 'zero', 'a'), (2, 'zero', 'b');
      CREATE TABLE "0" (id INTEGER);
      CREATE TABLE "00" (id INTEGER);
    ]])
    h = S.start(S.serve_command({ "sqlite://" .. dir .. "/zero.db", "--listen", "127.0.0.1:0", "--workers", "1" }),
      { BICONNECTOR_TOKEN = TOKEN })
  end)
  teardown(function()
    if h then S.stop(h) end
    H.rmdir(dir)
  end)

  it("leaves them out with a warning, so that Bitrix24 does not refuse the whole list or description", function()
    local status, list = post(h.port, "/table_list", "searchString=")
    assert.equals(200, status, cjson.encode(list))
    local codes = {}
    for i, t in ipairs(list) do
      codes[i] = t.code
      assert.is_true(t.code ~= "" and t.code ~= "0" and t.title ~= "" and t.title ~= "0", cjson.encode(t))
    end
    table.sort(codes)
    assert.same({ "00", "orders" }, codes)
    local st, fields = post(h.port, "/table_description", "table=orders")
    assert.equals(200, st, cjson.encode(fields))
    assert.same({ { code = "id", name = "id", type = "int" }, { code = "note", name = "note", type = "string" } }, fields)
    local sd, rows = post(h.port, "/data", "table=orders")
    assert.equals(200, sd, cjson.encode(rows))
    assert.same({ { "id", "note" }, { 1, "a" }, { 2, "b" } }, rows)
    -- what no list offers is no table, and no field
    assert.equals(404, (post(h.port, "/table_description", "table=0")))
    assert.equals(400, (post(h.port, "/data", "table=orders&select%5B%5D=0")))
    local log = S.wait_stderr(h, 'column \\"0\\" is not served', true):gsub('\\"', '"')
    assert.matches('table "0" is not served: its name is "0", which Bitrix24 reads as empty', log, 1, true)
    assert.matches('table "orders": column "0" is not served: its code is "0", which Bitrix24 reads as empty', log, 1, true)
  end)
end)

-- A table with a column named OPERATOR (a call centre's, a carrier's): in a
-- nested group of style A (filter[0][OPERATOR]=Anna, as the PHP example reads
-- it) that column is a field, not style B's operator key. The SQL source and a
-- Lua connector answer alike.
local CALLS_FIELDS = { { code = "id", name = "id", type = "int" }, { code = "OPERATOR", name = "OPERATOR", type = "string" },
  { code = "value", name = "value", type = "int" } }
local CALLS_ROWS = { { 1, "Anna", 10 }, { 2, "Boris", 20 }, { 3, "Vera", 30 } }
local CALLS_CASES = {
  { "filter%5B0%5D%5BLOGIC%5D=OR&filter%5B0%5D%5BOPERATOR%5D=Anna&filter%5B0%5D%5Bid%5D=3", 200, { { "id" }, { 1 }, { 3 } } },
  { "filter%5B0%5D%5BOPERATOR%5D=Boris", 200, { { "id" }, { 2 } } },
  { "filter%5Bsub%5D%5BOPERATOR%5D=Boris", 200, { { "id" }, { 2 } } },
  { "filter%5Bg%5D%5BLOGIC%5D=OR&filter%5Bg%5D%5BOPERATOR%5D=Vera&filter%5Bg%5D%5Bvalue%5D=10", 200, { { "id" }, { 1 }, { 3 } } },
  { "filter%5Bsub%5D%5B%21OPERATOR%5D=Boris&filter%5Bsub%5D%5B%3Evalue%5D=15", 200, { { "id" }, { 3 } } },
  -- style B on the field itself still reads its operator object
  { "filter%5BOPERATOR%5D%5Boperator%5D=LIKE&filter%5BOPERATOR%5D%5Bvalue%5D=er", 200, { { "id" }, { 3 } } },
  { "filter%5Bvalue%5D%5Boperator%5D=%3E&filter%5Bvalue%5D%5Bvalue%5D=15", 200, { { "id" }, { 2 }, { 3 } } },
  -- an operator object on a field that does not exist is still said so
  { "filter%5Bnope%5D%5Boperator%5D=%3D&filter%5Bnope%5D%5Bvalue%5D=1", 400, 'filter[nope]: unknown field \\"nope\\"' },
}

local function check_calls(answer)
  for _, case in ipairs(CALLS_CASES) do
    local status, body = answer("table=calls&select%5B%5D=id&" .. case[1])
    assert.equals(case[2], status, case[1] .. " -> " .. cjson.encode(body))
    if case[2] == 200 then
      assert.same(case[3], body, case[1])
    else
      assert.matches(case[3], body.message and cjson.encode(body.message) or tostring(body), 1, true)
    end
  end
end

describe("a filter group holding a field named OPERATOR (style A), as Bitrix24 sends it in a form", function()
  it("is read as a group by a Lua connector", function()
    local c = connector.new({
      title = "calls", settings = {}, check = function() return true end,
      tables = { { code = "calls", title = "Calls" } }, describe = { calls = CALLS_FIELDS },
      data = function() return CALLS_ROWS end,
    })
    check_calls(function(form)
      local status, _, body = c:handle({ method = "POST", path = "/data", headers = {}, body = form })
      return status, cjson.decode(body)
    end)
  end)
  if not H.have_sqlite3("spec/endpoint_review_spec.lua") then return end
  it("is read as a group by serve sqlite://, answering as the Lua connector", function()
    local dir = H.tmpdir()
    H.sqlite(dir .. "/calls.db", [[
      CREATE TABLE calls (id INTEGER, OPERATOR TEXT, value INTEGER);
      INSERT INTO calls VALUES (1, 'Anna', 10), (2, 'Boris', 20), (3, 'Vera', 30);
    ]])
    local h = S.start(S.serve_command({ "sqlite://" .. dir .. "/calls.db", "--listen", "127.0.0.1:0", "--workers", "1" }),
      { BICONNECTOR_TOKEN = TOKEN })
    local ok, err = pcall(check_calls, function(form) return post(h.port, "/data", form) end)
    S.stop(h)
    H.rmdir(dir)
    assert(ok, err)
  end)
end)

describe("biconnector.sql options that would put \"0\" in /table_list", function()
  local sql = require "biconnector.sql"
  it("are refused when the source is made, naming the key", function()
    local url = "sqlite:///nonexistent/never-opened.db"
    local cases = {
      { { titles = { orders = "0" } },
        'titles["orders"] must be a non-empty string other than "0" (the title /table_list answers; Bitrix24 reads "0" as empty), got "0"' },
      { { queries = { ["0"] = { sql = "SELECT 1" } } },
        'queries: a table code must be a non-empty string other than "0" (Bitrix24 reads "0" as empty), got "0"' },
    }
    for _, case in ipairs(cases) do
      local opts = case[1]
      opts.url = url
      local ok, err = pcall(sql.source, opts)
      assert.is_false(ok)
      assert.equals("biconnector.sql.source: " .. case[2], (tostring(err):gsub("^[^:]*:%d+: ", "")))
    end
  end)
end)

describe("a connector definition or handler answer holding \"0\" where Bitrix24 needs a value", function()
  local function def(over)
    local d = {
      title = "zero", settings = {}, check = function() return true end,
      tables = { { code = "t", title = "T" } },
      describe = { t = { { code = "id", name = "ID", type = "int" } } },
      data = function() return {} end,
    }
    for k, v in pairs(over) do d[k] = v end
    return d
  end
  local function refused(over)
    local ok, err = pcall(connector.new, def(over))
    assert.is_false(ok)
    return tostring(err)
  end

  it("is refused in a static definition, naming the place", function()
    assert.equals('connector definition: tables[1].code must be a non-empty string other than "0" '
      .. '(Bitrix24 reads "0" as empty), got "0"',
      refused({ tables = { { code = "0", title = "T" } }, describe = { ["0"] = { { code = "id", name = "ID", type = "int" } } } }))
    assert.equals('connector definition: tables[1].title must be a non-empty string other than "0" '
      .. '(Bitrix24 reads "0" as empty), got "0"', refused({ tables = { { code = "t", title = "0" } } }))
    assert.equals('connector definition: describe["t"][1].code must be a non-empty string other than "0" '
      .. '(Bitrix24 reads "0" as empty), got "0"', refused({ describe = { t = { { code = "0", name = "ID", type = "int" } } } }))
    assert.equals('connector definition: describe["t"][1].name must be a non-empty string other than "0" '
      .. '(Bitrix24 reads "0" as empty), got "0"', refused({ describe = { t = { { code = "id", name = "0", type = "int" } } } }))
    -- "00", "0.0", " 0" are not empty to PHP
    assert.is_true(connector.is_connector(connector.new(def({ tables = { { code = "00", title = "0.0" } },
      describe = { ["00"] = { { code = " 0", name = "00", type = "int" } } } }))))
  end)

  it("from a tables or describe function is a 500 naming the element, not an answer Bitrix24 refuses whole", function()
    local c = connector.new(def({
      tables = function() return { { code = "t", title = "T" }, { code = "u", title = "0" } } end,
      describe = function() return { { code = "id", name = "0", type = "int" } } end,
      log = function() end,
    }))
    local http = { method = "POST", path = "/table_list", headers = {}, body = "searchString=" }
    local status, _, body = c:handle(http)
    assert.equals(500, status)
    assert.matches('tables()[2].title must be a non-empty string other than \\"0\\"', body, 1, true)
    http.path, http.body = "/table_description", "table=t"
    status, _, body = c:handle(http)
    assert.equals(500, status)
    assert.matches('describe(\\"t\\")[1].name must be a non-empty string other than \\"0\\"', body, 1, true)
  end)
end)
