-- Found by a conformance review of the four endpoints against protocol.md
-- (sections 2 and 2.1), the seeds and Bitrix24's own client (module
-- biconnector, ExternalSource/Source/Rest.php):
-- - what Bitrix24 accepts is decided by PHP's empty(), which is true for "0"
--   as well as for "": a table list holding an element whose code or title is
--   "0", or a description holding a column whose code, name or type is "0", is
--   refused whole (checkTableList, checkTableDescription); a check answered
--   200 with the body "0" is "cannot connect" (`if (!$answer)`);
-- - a style A group may hold a field named OPERATOR: it is no style B object;
-- - urlCheck "checks the availability of the connection to the external
--   source" (the seed): a database source says so when it cannot reach it.
local S = require "serve_helpers"
local H = require "sql_helpers"
local cjson = require "cjson"
local connector = require "biconnector.connector"

local TOKEN = "review-token"

local function post(port, path, form) return H.post_form(port, path, form, TOKEN) end

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
    local h = H.serve_sqlite(dir, "calls.db", [[
      CREATE TABLE calls (id INTEGER, OPERATOR TEXT, value INTEGER);
      INSERT INTO calls VALUES (1, 'Anna', 10), (2, 'Boris', 20), (3, 'Vera', 30);
    ]], TOKEN)
    local ok, err = pcall(check_calls, function(form) return post(h.port, "/data", form) end)
    S.stop(h)
    H.rmdir(dir)
    assert(ok, err)
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

  it("a table or field code with a control byte, which every request naming it is refused for (400), is refused too",
    function()
    -- listed, then "table: the code \"tab\9x\" holds a control byte" on every table_description and data
    assert.equals('connector definition: tables[1].code "tab\\9x" holds a control byte (0x09 at byte 4): '
      .. 'requests naming it are refused (400); table and field codes never hold one',
      refused({ tables = { { code = "tab\tx", title = "T" } }, describe = { ["tab\tx"] = { { code = "id", name = "ID", type = "int" } } } }))
    assert.equals('connector definition: describe["t"][1].code "i\\0d" holds a control byte (0x00 at byte 2): '
      .. 'requests naming it are refused (400); table and field codes never hold one',
      refused({ describe = { t = { { code = "i\0d", name = "ID", type = "int" } } } }))
    -- a title or name may hold one (only codes travel back in requests)
    assert.is_true(connector.is_connector(connector.new(def({ tables = { { code = "t", title = "T\tx" } },
      describe = { t = { { code = "id", name = "I\tD", type = "int" } } } }))))
    local c = connector.new(def({
      tables = function() return { { code = "t", title = "T" }, { code = "u\127", title = "U" } } end,
      describe = function() return { { code = "id\n", name = "ID", type = "int" } } end,
      log = function() end,
    }))
    local status, _, body = c:handle({ method = "POST", path = "/table_list", headers = {}, body = "searchString=" })
    assert.equals(500, status)
    assert.matches('tables()[2].code \\"u\\\\127\\" holds a control byte (0x7F at byte 2)', body, 1, true)
    status, _, body = c:handle({ method = "POST", path = "/table_description", headers = {}, body = "table=t" })
    assert.equals(500, status)
    assert.matches('describe(\\"t\\")[1].code \\"id\\\\n\\" holds a control byte (0x0A at byte 3)', body, 1, true)
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

-- urlCheck "checks the availability of the connection to the external source
-- [and] authenticates the user" (the seed, connector/index.md): a database
-- source that cannot reach its database must not answer /check with 200, or
-- Bitrix24 makes a source whose every data request then fails.
describe("serve sqlite:// whose database went away after it started", function()
  if H.skip_without("sqlite", "spec/endpoint_review_spec.lua") then return end
  local dir, h
  setup(function()
    dir = H.tmpdir()
    h = H.serve_sqlite(dir, "gone.db", "CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1);", TOKEN)
  end)
  teardown(function()
    if h then S.stop(h) end
    H.rmdir(dir)
  end)

  it("answers /check 503 naming the database, still 403 for a wrong token, and 200 once it is back", function()
    assert(os.remove(dir .. "/gone.db"))
    local status, body = post(h.port, "/check", "")
    assert.equals(503, status, cjson.encode(body))
    assert.equals("service_unavailable", body.error)
    assert.matches("^check: cannot open database .*gone%.db", body.message)
    local r = assert(S.request(h.port, "POST", "/check", "connection%5Btoken%5D=wrong"))
    assert.equals(403, r.status) -- the token first: nothing about the database to a stranger
    H.sqlite(dir .. "/gone.db", "CREATE TABLE t (id INTEGER);")
    status, body = post(h.port, "/check", "")
    assert.equals(200, status, cjson.encode(body))
    assert.same({ ok = true }, body)
  end)
end)

describe("serve postgresql:// whose server stopped after it started", function()
  local db = require "dbservers"
  local why = db.missing("postgresql")
  if why then
    local msg = db.skip("postgresql", why)
    return it("runs against a real server", function() pending(msg) end)
  end
  local srv, h
  setup(function()
    srv = db.start("postgresql")
    srv:admin("CREATE TABLE t (id integer); INSERT INTO t VALUES (1); GRANT SELECT ON t TO " .. db.RO_USER .. ";")
    h = H.serve_db(srv, TOKEN)
  end)
  teardown(function() H.stop(h, srv) end)

  it("answers /check 503 while it is down, and 200 once it is back", function()
    assert.equals(200, (post(h.port, "/check", "")))
    assert(os.execute(srv:as_user(("%s/pg_ctl -D %s -m fast -w -t 30 stop >/dev/null"):format(srv.bin, H.q(srv.data)))))
    local status, body = post(h.port, "/check", "")
    assert.equals(503, status, cjson.encode(body))
    assert.equals("service_unavailable", body.error)
    assert.matches("^check: ", body.message)
    assert(srv:start_server())
    status, body = post(h.port, "/check", "")
    assert.equals(200, status, cjson.encode(body))
  end)
end)
