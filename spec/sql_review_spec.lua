-- The SQL path reviewed as a user with a real database would use it: edge
-- values and filters whose answers were wrong, each case failing before its fix.
local helpers = require "helpers"
local H = require "sql_helpers"
local json = require "biconnector.json"

local luajit = math.type == nil

-- A connector over the SQLite file (no cache, the token "t", warnings kept).
local function connector(db, logs)
  return require("biconnector.sql").connector { url = "sqlite://" .. db, token = "t", cache = false,
    log = function(_, m) if logs then logs[#logs + 1] = m end end }
end

-- POSTs a form body (the token added): -> status, the body as text.
local function form(c, path, body)
  return helpers.post_form(c, path, "connection[token]=t&" .. body)
end

describe("SQL review: SQLite", function()
  local skip = not H.have_sqlite3("sql_review_spec")
  local dir
  setup(function()
    if skip then return end
    dir = H.tmpdir()
  end)
  teardown(function() H.rmdir(dir) end)
  before_each(function()
    if skip then pending(H.NO_SQLITE3) end
  end)

  it("says why a listed table with no column to serve cannot be described", function()
    -- before: /table_list listed it and /table_description answered 404 "unknown table"
    local db = dir .. "/blob.db"
    H.sqlite(db, "CREATE TABLE onlyblob (b BLOB); INSERT INTO onlyblob VALUES (x'00'); CREATE TABLE ok (id INTEGER);")
    local c = connector(db)
    local status, body = form(c, "/table_list", "searchString=")
    assert.equals(200, status)
    assert.equals('[{"code":"ok","title":"ok"},{"code":"onlyblob","title":"onlyblob"}]', body)
    for _, req in ipairs({ { "/table_description", "table=onlyblob" }, { "/data", "table=onlyblob" } }) do
      status, body = form(c, req[1], req[2])
      assert.equals(404, status)
      assert.matches('table \\"onlyblob\\" has no column that can be served', body, 1, true)
    end
    status, body = form(c, "/data", "table=nope")
    assert.equals(404, status)
    assert.matches('unknown table \\"nope\\"', body, 1, true)
  end)

  it("serves generated columns, and not a virtual table's hidden ones", function()
    -- before: pragma_table_info leaves generated columns out, so b was unknown
    local db = dir .. "/gen.db"
    H.sqlite(db, "CREATE TABLE gen (a INT, b INT GENERATED ALWAYS AS (a * 2) VIRTUAL, "
      .. "c TEXT GENERATED ALWAYS AS ('x' || a) STORED); INSERT INTO gen(a) VALUES (3), (4);"
      .. "CREATE VIRTUAL TABLE docs USING fts5(title); INSERT INTO docs VALUES ('Hello');")
    local c = connector(db)
    local status, body = form(c, "/table_description", "table=gen")
    assert.equals(200, status)
    assert.equals('[{"code":"a","name":"a","type":"int"},{"code":"b","name":"b","type":"int"},'
      .. '{"code":"c","name":"c","type":"string"}]', body)
    status, body = form(c, "/data", "table=gen&filter[b]=8&filter[c]=x4")
    assert.equals(200, status)
    assert.equals('[["a","b","c"],[4,8,"x4"]]', body)
    status, body = form(c, "/table_description", "table=docs")
    assert.equals(200, status)
    assert.equals('[{"code":"title","name":"title","type":"string"}]', body)
  end)

  it("lists a virtual table but not the shadow tables SQLite keeps for it", function()
    -- before: FTS5's docs_config, docs_content, docs_data, docs_docsize and
    -- docs_idx (and an R*Tree's rt_node, rt_parent, rt_rowid) were listed and served
    local db = dir .. "/shadow.db"
    H.sqlite(db, "CREATE TABLE plain (a INT); CREATE VIEW v AS SELECT a FROM plain;"
      .. "CREATE VIRTUAL TABLE docs USING fts5(title); INSERT INTO docs VALUES ('Hello');"
      .. "CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1);")
    local c = connector(db)
    local status, body = form(c, "/table_list", "searchString=")
    assert.equals(200, status)
    local codes = {}
    for _, t in ipairs(json.decode(body)) do codes[#codes + 1] = t.code end
    assert.same({ "docs", "plain", "rt", "v" }, codes)
    status, body = form(c, "/data", "table=docs")
    assert.equals(200, status)
    assert.equals('[["title"],["Hello"]]', body)
    status, body = form(c, "/data", "table=docs_content")
    assert.equals(404, status, body)
  end)

  describe("integers beyond 2^53", function()
    local db
    setup(function()
      if skip then return end
      db = dir .. "/big.db"
      H.sqlite(db, [[
        CREATE TABLE t (id INTEGER, j JSON);
        INSERT INTO t VALUES (9007199254740993, 'a');
        INSERT INTO t VALUES (9007199254740992, 'b');
        INSERT INTO t VALUES (9223372036854775807, 'c');
        INSERT INTO t VALUES (-9223372036854775807, 'd');
        INSERT INTO t VALUES (1, 'e');
      ]])
    end)

    local ALL = '[["id","j"],[9007199254740993,"a"],[9007199254740992,"b"],[9223372036854775807,"c"],'
      .. '[-9223372036854775807,"d"],[1,"e"]]'

    it("serves them exactly when the filter is matched in memory too", function()
      -- a JSON column is matched in memory: the rows come to Lua, where LuaJIT's
      -- numbers served 9007199254740993 as 9007199254740992 and 2^63-1 as null
      local logs = {}
      local c = connector(db, logs)
      local status, body = form(c, "/data", "table=t")
      assert.equals(200, status)
      assert.equals(ALL, body)
      status, body = form(c, "/data", "table=t&filter[!j]=zzz")
      assert.equals(200, status)
      assert.equals(ALL, body)
      assert.same({}, logs)
      -- and they compare as the integers they are
      status, body = form(c, "/data", "table=t&filter[0][LOGIC]=OR&filter[0][j]=zzz&filter[0][%3Eid]=5&select[]=j")
      assert.equals(200, status)
      assert.equals('[["j"],["a"],["b"],["c"]]', body)
    end)

    it("core.sql's cursor:fetch gives them exactly", function()
      local core = require "biconnector.core"
      local conn = assert(core.sql.open("sqlite", { path = db }))
      local cur = assert(conn:query("SELECT id FROM t WHERE j = ?", { "a" }))
      local row = cur:fetch()
      if luajit then
        assert.equals("9007199254740993", row[1]) -- a double cannot hold it
      else
        assert.equals(9007199254740993, row[1])
        assert.equals("integer", math.type(row[1]))
      end
      cur:close()
      conn:close()
    end)

    it("a filter value selects the integer it spells, or is refused where it cannot be held", function()
      local c = connector(db)
      for _, f in ipairs({ "filter[id]=9007199254740993", "filter[j]=a&filter[id]=9007199254740993",
        "filter[%3Cid]=9007199254740993", "filter[0][LOGIC]=OR&filter[0][j]=zzz&filter[0][id]=9007199254740992" }) do
        local status, body = form(c, "/data", "table=t&select[]=j&" .. f)
        if luajit then
          -- "9007199254740993" reads as 2^53 in a double: it selected the row 2^53
          assert.equals(400, status, f)
          assert.matches("within ±%(2%^53 %- 1%) under LuaJIT", body, 1, false)
        else
          local want = ({ ['[["j"],["a"]]'] = true, ['[["j"],["b"]]'] = true,
            ['[["j"],["b"],["d"],["e"]]'] = true })
          assert.equals(200, status, f)
          assert.is_true(want[body], f .. ": " .. body)
        end
      end
      if not luajit then
        local status, body = form(c, "/data", "table=t&select[]=j&filter[%3Cid]=9007199254740993")
        assert.equals(200, status)
        assert.equals('[["j"],["b"],["d"],["e"]]', body)
      end
      local status, body = form(c, "/data", "table=t&select[]=j&filter[id]=9007199254740991")
      assert.equals(200, status)
      assert.equals('[["j"]]', body)
    end)
  end)
end)

-- The same review on real servers (spec/dbservers.lua): each case is a filter
-- whose answer differed from filter.match over the served rows.
local db = require "dbservers"

-- The ids of the rows an answer holds (its first column).
local function ids(body)
  local rows = assert(json.decode(body), body)
  local out = {}
  for i = 2, #rows do out[#out + 1] = rows[i][1] end
  return out
end

local ENGINES = {
  postgresql = {
    dotted = {
      [[CREATE TABLE "a.b" (id int, "x.y" text)]], [[INSERT INTO "a.b" VALUES (1, 'p')]], "CREATE SCHEMA a",
      "CREATE TABLE a.b (id int, z text)", "INSERT INTO a.b VALUES (2, 'q')", "GRANT USAGE ON SCHEMA a TO bic_ro",
      "GRANT SELECT ON a.b TO bic_ro",
    },
    -- schema s's table k (the code "s.k" with schemas=s) and a table u of the
    -- own schema with a column named "s.k"
    column_dotted = {
      "CREATE SCHEMA s", "CREATE TABLE s.k (id int)", "INSERT INTO s.k VALUES (7)", "GRANT USAGE ON SCHEMA s TO bic_ro",
      "GRANT SELECT ON s.k TO bic_ro", [[CREATE TABLE u (id int, "s.k" text)]], "INSERT INTO u VALUES (1, 'x')",
    },
    sql = {
      [[CREATE TABLE t (id int, b boolean, r real, x double precision)]],
      [[INSERT INTO t VALUES (1, true, 0.1, 1), (2, false, 1.5, -0.0), (3, NULL, NULL, NULL), (4, true, 3.4e38, 0)]],
    },
    cases = {
      -- a boolean is served 1/0 and filtered in match, which got Lua booleans:
      -- every one went as null and no filter on it held
      { "select[]=id&select[]=b", '[["id","b"],[1,1],[2,0],[3,null],[4,1]]' },
      { "filter[b]=1", { 1, 4 } }, { "filter[b]=0", { 2 } }, { "filter[!b]=1", { 2, 3 } },
      { "filter[b][operator]=IS%20NULL", { 3 } },
      -- a real is served as its shortest decimal (0.1), which its float8 is not
      { "filter[r]=0.1", { 1 } }, { "filter[%3E%3Dr]=0.1", { 1, 2, 4 } }, { "filter[%3C%3Dr]=0.1", { 1 } },
      { "filter[r]=3.4e38", { 4 } }, { "filter[@r][]=0.1&filter[@r][]=1.5", { 1, 2 } },
      { "filter[@x][]=0", { 2, 4 } },
    },
  },
  mysql = {
    dotted = { "CREATE TABLE `a.b` (id int, `x.y` text)", "INSERT INTO `a.b` VALUES (1, 'p')" },
    column_dotted = {
      "CREATE DATABASE s", "CREATE TABLE s.k (id int)", "INSERT INTO s.k VALUES (7)", "GRANT SELECT ON s.* TO 'bic_ro'@'%'",
      "CREATE TABLE u (id int, `s.k` text)", "INSERT INTO u VALUES (1, 'x')",
    },
    sql = {
      [[CREATE TABLE t (id int, ub bigint unsigned)]],
      [[INSERT INTO t VALUES (1, 18446744073709551615), (2, 9223372036854775807), (3, 9223372036854775808), (4, 0), (5, NULL)]],
    },
    cases = {
      -- above 2^63-1 served as null, so compared: SQL compared the value
      { "select[]=id&select[]=ub", '[["id","ub"],[1,null],[2,9223372036854775807],[3,null],[4,0],[5,null]]' },
      { "filter[%3Eub]=0", { 2 } }, { "filter[%3E%3Dub]=0", { 2, 4 } },
      { "filter[ub][operator]=IS%20NULL", { 1, 3, 5 } }, { "filter[ub][operator]=IS%20NOT%20NULL", { 2, 4 } },
      { "filter[!ub]=0", { 1, 2, 3, 5 } }, { "filter[%3Cub]=5", { 4 } }, { "filter[@ub][]=0&filter[@ub][]=1", { 4 } },
    },
  },
  clickhouse = {
    dotted = {
      "CREATE DATABASE a", "CREATE TABLE a.b (id Int32, z String) ENGINE = Memory",
      "INSERT INTO a.b VALUES (2, 'q')", "CREATE TABLE bic.`a.b` (id Int32, `x.y` String) ENGINE = Memory",
      "INSERT INTO bic.`a.b` VALUES (1, 'p')",
    },
    column_dotted = {
      "CREATE DATABASE s", "CREATE TABLE s.k (id Int32) ENGINE = Memory", "INSERT INTO s.k VALUES (7)",
      "CREATE TABLE bic.u (id Int32, `s.k` String) ENGINE = Memory", "INSERT INTO bic.u VALUES (1, 'x')",
    },
    sql = {
      "CREATE TABLE bic.t (id Int32, e Nullable(Enum8('sad' = 1, 'ok' = 2)), f Nullable(FixedString(4)), "
        .. "x Float64, y Float32) ENGINE = Memory",
      "INSERT INTO bic.t VALUES (1, 'ok', 'ab', -0.0, -0.0), (2, NULL, NULL, 0, 0), (3, 'sad', 'abcd', 1, 1)",
    },
    cases = {
      -- toString of a Nullable(Enum) failed on the NULL's slot: a 500
      { "filter[e]=ok", { 1 } }, { "filter[%3Ee]=pk", { 3 } }, { "filter[!e]=ok", { 2, 3 } },
      { "filter[%25e]=s", { 3 } },
      -- a FixedString is served with its zero bytes, which toString dropped
      { "select[]=id&select[]=f", '[["id","f"],[1,"ab\\u0000\\u0000"],[2,null],[3,"abcd"]]' },
      { "filter[f]=ab", {} }, { "filter[%3C%3Df]=ab", {} }, { "filter[f]=abcd", { 3 } },
      -- IN told -0 from 0 by its bits
      { "filter[@x][]=0", { 1, 2 } }, { "filter[@x][]=-0", { 1, 2 } }, { "filter[!@x][]=0", { 3 } },
      { "filter[@y][]=0", { 1, 2 } }, { "filter[x]=-0", { 1, 2 } },
    },
  },
}

for _, engine in ipairs({ "postgresql", "mysql", "clickhouse" }) do
  describe("SQL review: " .. engine, function()
    local why = db.missing(engine)
    if why then
      local msg = db.skip(engine, why)
      return it("runs against a real server", function() pending(msg) end)
    end
    local srv, c
    setup(function()
      srv = db.start(engine)
      for _, statement in ipairs(ENGINES[engine].sql) do srv:admin(statement) end
      c = require("biconnector.sql").connector { url = srv:url(), token = "t", cache = false, log = function() end }
    end)
    teardown(function() if srv then srv:stop() end end)

    it("answers each filter as filter.match does over the served rows", function()
      for _, case in ipairs(ENGINES[engine].cases) do
        local status, body = form(c, "/data", "table=t&" .. case[1])
        assert.equals(200, status, case[1] .. ": " .. body)
        if type(case[2]) == "string" then
          assert.equals(case[2], body, case[1])
        else
          local got = ids(body)
          table.sort(got)
          assert.same(case[2], got, case[1])
        end
      end
    end)

    it("serves a table named \"a.b\" as itself with schemas=a", function()
      -- before: PostgreSQL listed "a.b" twice (the default schema's and schema
      -- a's b) and served only schema a's; MariaDB listed it and answered 404
      for _, statement in ipairs(ENGINES[engine].dotted) do srv:admin(statement) end
      local cs = require("biconnector.sql").connector { url = srv:url() .. "?schemas=a", token = "t", cache = false,
        log = function() end }
      local status, body = form(cs, "/table_list", "searchString=a.b")
      assert.equals(200, status)
      assert.equals('[{"code":"a.b","title":"a.b"}]', body)
      status, body = form(cs, "/data", "table=a.b")
      assert.equals(200, status, body)
      assert.equals('[["id","x.y"],[1,"p"]]', body)
      status, body = form(cs, "/data", "table=a.b&filter[x.y]=p&filter[%3Eid]=0")
      assert.equals(200, status, body)
      assert.equals('[["id","x.y"],[1,"p"]]', body)
    end)

    it("quotes a column named as another schema's table code as one name, and keeps each source's codes", function()
      -- before: the codes of other schemas were one map per engine module, which
      -- quoted columns too: u's column "s.k" went as "s"."k" (an error), and a
      -- second source on another database, whose own table is named "s.k",
      -- made the first read its own schema's "s.k" (none: a 500)
      for _, statement in ipairs(ENGINES[engine].column_dotted) do srv:admin(statement) end
      local cs = require("biconnector.sql").connector { url = srv:url() .. "?schemas=s", token = "t", cache = false,
        log = function() end }
      local status, body = form(cs, "/table_list", "searchString=")
      assert.equals(200, status, body)
      assert.matches('{"code":"s.k","title":"s.k"}', body, 1, true)
      for _, req in ipairs({ "table=u", "table=u&filter[s.k]=x", "table=u&select[]=id&select[]=s.k" }) do
        status, body = form(cs, "/data", req)
        assert.equals(200, status, req .. ": " .. body)
        assert.equals('[["id","s.k"],[1,"x"]]', body, req)
      end
      status, body = form(cs, "/data", "table=s.k")
      assert.equals(200, status, body)
      assert.equals('[["id"],[7]]', body)
      if engine ~= "postgresql" then return end
      srv:admin("CREATE DATABASE bic2")
      srv:admin("GRANT CONNECT ON DATABASE bic2 TO bic_ro")
      srv:admin([[CREATE TABLE "s.k" (id int); INSERT INTO "s.k" VALUES (8); GRANT SELECT ON "s.k" TO bic_ro]], "bic2")
      local other = require("biconnector.sql").connector { url = srv:url(nil, nil, "bic2"), token = "t", cache = false,
        log = function() end }
      for _ = 1, 2 do
        for _, source in ipairs({ other, cs }) do
          status, body = form(source, "/table_list", "searchString=s.k")
          assert.equals(200, status, body)
          assert.equals('[{"code":"s.k","title":"s.k"}]', body)
        end
        for _, pair in ipairs({ { cs, '[["id"],[7]]' }, { other, '[["id"],[8]]' } }) do
          status, body = form(pair[1], "/data", "table=s.k")
          assert.equals(200, status, body)
          assert.equals(pair[2], body)
        end
      end
    end)
  end)
end
