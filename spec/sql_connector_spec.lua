-- biconnector.sql.connector's options over the sample database (titles,
-- renamed / hidden / retyped fields, query tables, table globs, token, check),
-- and docs/database.md's Lua examples run against it.
local helpers = require "helpers"
local H = require "sql_helpers"
local cjson = require "cjson"

local function call(c, path, body)
  local status, text = helpers.post_json(c, path, body, { log = function() end })
  local ok, decoded = pcall(cjson.decode, text)
  return status, ok and decoded or text
end

-- A docs block with the sample's path in place of /srv/shop.db.
local function doc_chunk(code, db, name)
  return helpers.load((code:gsub("/srv/shop%.db", db)), name)
end

describe("biconnector.sql.connector", function()
  local skip = not H.have_sqlite3("sql_connector_spec")
  local dir, db
  setup(function()
    if skip then return end
    dir = H.tmpdir()
    db = H.sample(dir, "--orders 100")
  end)
  teardown(function() H.rmdir(dir) end)
  before_each(function()
    if skip then pending(H.NO_SQLITE3) end
  end)

  local function shop(extra)
    local opts = {
      url = "sqlite://" .. db, title = "Shop", token = "tok", cache = false,
      tables = "orders,cust*,!customers_*",
      titles = { orders = "Orders" },
      fields = { orders = { amount = { name = "Amount, EUR" }, note = false, shipped_on = { type = "string" },
        customer_id = { code = "customer" } } },
      queries = { big_orders = { title = "Big orders", sql = "SELECT o.id AS id, c.name AS name, o.amount AS amount "
        .. "FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.amount > 1000" } },
      log = function() end,
    }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return require("biconnector.sql").connector(opts)
  end

  it("checks the token setting", function()
    local c = shop()
    assert.same({ { code = "token", name = "Token", type = "STRING" } }, c.settings)
    assert.equals(403, (call(c, "/check", { connection = { token = "nope" } })))
    assert.equals(403, (call(c, "/check", { connection = {} })))
    assert.equals(200, (call(c, "/check", { connection = { token = "tok" } })))
  end)

  it("runs its own check after the token", function()
    local c = shop({ check = function(conn) return conn.who == "me", "not you" end })
    local status, body = call(c, "/check", { connection = { token = "tok", who = "you" } })
    assert.equals(403, status)
    assert.equals("not you", body.message)
    assert.equals(200, (call(c, "/check", { connection = { token = "tok", who = "me" } })))
  end)

  it("lists the globbed tables with their titles, then the query tables", function()
    local status, body = call(shop(), "/table_list", { connection = { token = "tok" } })
    assert.equals(200, status)
    assert.same({ { code = "customers", title = "customers" }, { code = "orders", title = "Orders" },
      { code = "big_orders", title = "Big orders" } }, body)
    assert.equals(404, (call(shop(), "/table_description", { connection = { token = "tok" }, table = "products" })))
  end)

  it("renames, titles, hides and retypes fields", function()
    local status, body = call(shop(), "/table_description", { connection = { token = "tok" }, table = "orders" })
    assert.equals(200, status)
    local by = {}
    for i, f in ipairs(body) do by[f.code] = f by[f.code].i = i end
    assert.is_nil(by.note)
    assert.is_nil(by.customer_id)
    assert.equals("customer", by.customer.name)
    assert.equals("int", by.customer.type)
    assert.equals("Amount, EUR", by.amount.name)
    assert.equals("string", by.shipped_on.type)
    -- data by the new code; a filter on the renamed field goes to its column
    status, body = call(shop(), "/data", { connection = { token = "tok" }, table = "orders",
      select = { "id", "customer", "shipped_on" }, filter = { customer = 10 } })
    assert.equals(200, status)
    assert.same({ "id", "customer", "shipped_on" }, body[1])
    for i = 2, #body do assert.equals(10, body[i][2]) end
    -- the retyped field's filter is matched in memory
    status, body = call(shop(), "/data", { connection = { token = "tok" }, table = "orders",
      select = { "id", "shipped_on" }, filter = { ["%shipped_on"] = "2022-0" } })
    assert.equals(200, status)
    assert.is_true(#body > 1)
    for i = 2, #body do assert.matches("^2022%-0", body[i][2]) end
  end)

  it("serves a table defined by a query, with a limit", function()
    local status, body = call(shop(), "/table_description", { connection = { token = "tok" }, table = "big_orders" })
    assert.equals(200, status)
    assert.same({ "id", "name", "amount" }, { body[1].code, body[2].code, body[3].code })
    status, body = call(shop(), "/data", { connection = { token = "tok" }, table = "big_orders",
      filter = { [">amount"] = 5000 }, limit = 3 })
    assert.equals(200, status)
    assert.is_true(#body >= 2 and #body <= 4)
    for i = 2, #body do assert.is_true(body[i][3] > 5000) end
  end)

  it("filters a date column that stores Unix seconds (fields dates = \"epoch\") exactly as match", function()
    local evdb = dir .. "/events.db"
    H.sqlite(evdb, [[
      CREATE TABLE ev (id INTEGER PRIMARY KEY, at DATETIME, day DATE);
      INSERT INTO ev VALUES (1, 1704067199, 1704067199), (2, 1704067200, 1704067200), (3, 1704153600, 1704153600),
        (4, NULL, NULL), (5, 1717200000, 1717200000);
    ]])
    local c = require("biconnector.sql").connector({ url = "sqlite://" .. evdb, cache = false,
      fields = { ev = { at = { dates = "epoch" }, day = { dates = "epoch" } } } })
    local status, all = call(c, "/data", { table = "ev" })
    assert.equals(200, status)
    assert.same({ "id", "at", "day" }, all[1])
    assert.same({ 1, "2023-12-31 23:59:59", "2023-12-31" }, all[2])
    local fields = select(2, call(c, "/table_description", { table = "ev" }))
    local filter = require "biconnector.filter"
    for _, f in ipairs({ { [">=at"] = "2024-01-01" }, { ["<at"] = "01.01.2024 00:00:00" }, { day = "2024-01-02" },
      { ["!day"] = "2024-01-01" }, { at = { operator = "between", from = "2024-01-01", to = "2024-01-02" } },
      { ["=at"] = cjson.null } }) do
      local ast = assert(filter.parse(f, fields))
      local want = {}
      for i = 2, #all do
        local row = { id = all[i][1], at = all[i][2], day = all[i][3] }
        if filter.match(ast, row) then want[#want + 1] = all[i][1] end
      end
      local st, body = call(c, "/data", { table = "ev", filter = f, select = { "id" } })
      assert.equals(200, st)
      local got = {}
      for i = 2, #body do got[#got + 1] = body[i][1] end
      table.sort(got)
      assert.same(want, got, cjson.encode(f))
    end
  end)

  it("maps declared types as docs/database.md's table says, BLOBs left out", function()
    local tdb = dir .. "/types.db"
    H.sqlite(tdb, [[
      CREATE TABLE "select" ("from" INTEGER, a INT, b BIGINT, c TINYINT, d REAL, e DOUBLE, f FLOAT,
        g TEXT, h VARCHAR(20), i CHAR(2), j CLOB, k DATE, l DATETIME, m TIMESTAMP, n BOOLEAN, o BLOB, p,
        q NUMERIC, r DECIMAL(10,2), s JSON, "group by" TEXT, "Ключ ""q""" INTEGER);
      INSERT INTO "select" ("from", "group by", "Ключ ""q""") VALUES (1, 'x', 7);
    ]])
    local c = require("biconnector.sql").connector({ url = "sqlite://" .. tdb, cache = false })
    local status, body = call(c, "/table_description", { table = "select" })
    assert.equals(200, status)
    local got = {}
    for _, f in ipairs(body) do got[#got + 1] = f.code .. "=" .. f.type end
    assert.same({ "from=int", "a=int", "b=int", "c=int", "d=double", "e=double", "f=double", "g=string",
      "h=string", "i=string", "j=string", "k=date", "l=datetime", "m=datetime", "n=int", "p=string",
      "q=double", "r=double", "s=string", "group by=string", 'Ключ "q"=int' }, got)
    -- reserved words, spaces, quotes and UTF-8 in names: selected, filtered, served
    status, body = call(c, "/data", { table = "select", select = { 'Ключ "q"', "group by", "from" },
      filter = { ["from"] = 1, ['>=Ключ "q"'] = 7 } })
    assert.equals(200, status)
    assert.same({ { 'Ключ "q"', "group by", "from" }, { 7, "x", 1 } }, body)
  end)

  it("refuses bad options with a message naming them", function()
    local sql = require "biconnector.sql"
    assert.has_error(function() sql.connector({ url = "sqlite://" .. db, token = "" }) end,
      "biconnector.sql.connector: token must be a non-empty string")
    assert.has_error(function() sql.source({ url = "sqlite://" .. db, queries = { x = "SELECT 1" } }) end,
      'biconnector.sql.source: queries must map a table code to {sql = "SELECT ...", title = ...}')
    assert.has_error(function() sql.source({ url = "oracle://x" }) end)
    local ok, err = pcall(sql.source, "ftp://x")
    assert.is_false(ok)
    assert.matches("not a database URL: ftp://x", err)
  end)

  it("runs docs/database.md's Lua examples", function()
    local blocks = helpers.lua_blocks("docs/database.md")
    assert.equals(3, #blocks)
    local c = doc_chunk(blocks[1], db, "=database.md connector")()
    assert.equals("Shop", c.title)
    local status, body = call(c, "/table_list", { connection = {} }) -- SHOP_TOKEN unset: no authentication
    assert.equals(200, status)
    assert.same({ "customers", "orders", "big_orders" }, { body[1].code, body[2].code, body[3].code })
    status, body = call(c, "/data", { connection = {}, table = "big_orders", limit = 2 })
    assert.equals(200, status)
    assert.same({ "id", "name", "amount" }, body[1])

    local mixed = doc_chunk(blocks[2], db, "=database.md mixed")()
    status, body = call(mixed, "/data", { connection = {}, table = "orders", select = { "id", "status" }, limit = 2 })
    assert.equals(200, status)
    assert.same({ { "id", "status" }, { 1, body[2][2] }, { 2, body[3][2] } }, body)
    status, body = call(mixed, "/data", { connection = {}, table = "rates", filter = { currency = "EUR" } })
    assert.equals(200, status)
    assert.same({ { "currency", "rate" }, { "EUR", 1.08 } }, body)

    local columns, row, added, done, json = doc_chunk(blocks[3], db, "=database.md core.sql")()
    assert.same({ { name = "id", type = "INTEGER" }, { name = "amount", type = "REAL" } }, columns)
    assert.is_number(row[1])
    assert.is_true(done)
    local rows = cjson.decode(json)
    assert.equals(added + 1, #rows)
    assert.same({ "id", "amount" }, rows[1])
  end)
end)
