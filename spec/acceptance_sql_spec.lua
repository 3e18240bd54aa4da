-- Found by an acceptance test of `biconnector serve DATABASE-URL` on real
-- PostgreSQL, MariaDB and ClickHouse servers, played as Bitrix24 plays it
-- (protocol.md, sections 2 and 2.1) over loopback HTTP with form bodies:
-- each `describe` is one bug, checked on the server the spec starts.
local S = require "serve_helpers"
local H = require "sql_helpers"
local cjson = require "cjson"

local TOKEN = "acceptance-sql-token"

-- h: the serve handle; a request without an answer fails with the server's log
-- (ci32 under ASan: one /data of a 6-row table had no answer in 30 s, cause unknown).
local function post(h, path, form)
  local ok, status, body = pcall(H.post_form, h.port, path, form, TOKEN)
  if not ok then
    error(("%s %s: %s\nthe server's log:\n%s"):format(path, form, tostring(status), S.stderr(h):sub(-3000)), 2)
  end
  assert.equals(200, status, type(body) == "string" and body or cjson.encode(body))
  return body
end

-- The first column of an urlData answer's rows.
local function ids(body)
  local out = {}
  for i = 2, #body do out[#out + 1] = body[i][1] end
  return out
end

-- A column whose type is a domain over a domain was described by the inner
-- domain's name, an unknown type: a `string` field served as text ("2",
-- "1.50"), its filters matched in memory. One level of domain was resolved,
-- two were not.
describe("PostgreSQL columns of domains over domains", function()
  if H.skip_without("postgresql", "spec/acceptance_sql_spec.lua") then return end
  local db = require "dbservers"
  local srv, h
  setup(function()
    srv = db.start("postgresql")
    srv:admin([[
      CREATE TYPE mood AS ENUM ('sad', 'ok');
      CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
      CREATE DOMAIN posint2 AS posint;
      CREATE DOMAIN money2 AS numeric(5,2);
      CREATE DOMAIN money3 AS money2;
      CREATE DOMAIN stamp AS timestamp(0);
      CREATE DOMAIN stamp2 AS stamp;
      CREATE DOMAIN day2 AS date;
      CREATE DOMAIN day3 AS day2;
      CREATE DOMAIN mood2 AS mood;
      CREATE DOMAIN mood3 AS mood2;
      CREATE DOMAIN ints AS integer[];
      CREATE DOMAIN ints2 AS ints;
      CREATE TABLE dom (id int, p posint2, m money3, s stamp2, d day3, e mood3, a ints2);
      INSERT INTO dom VALUES (1, 2, 1.5, '2024-01-01 10:00:00', '2024-01-01', 'ok', '{1,2}'),
        (2, 7, -3.25, '1969-07-20 20:17:40', '1969-07-20', 'sad', '{}'),
        (3, NULL, NULL, NULL, NULL, NULL, NULL);
      GRANT SELECT ON dom TO bic_ro;
    ]])
    h = H.serve_db(srv, TOKEN)
  end)
  teardown(function()
    if h then S.stop(h) end
    if srv then srv:stop() end
  end)

  it("describes them by the innermost base type and serves their values so", function()
    local types = {}
    for _, f in ipairs(post(h, "/table_description", "table=dom")) do types[f.code] = f.type end
    assert.same({ id = "int", p = "int", m = "double", s = "datetime", d = "date", e = "string", a = "string" }, types)
    assert.same({ { "id", "p", "m", "s", "d", "e", "a" },
      { 1, 2, 1.5, "2024-01-01 10:00:00", "2024-01-01", "ok", "{1,2}" },
      { 2, 7, -3.25, "1969-07-20 20:17:40", "1969-07-20", "sad", "{}" },
      { 3, cjson.null, cjson.null, cjson.null, cjson.null, cjson.null, cjson.null } },
      post(h, "/data", "table=dom"))
  end)

  it("filters them as their base types, as PostgreSQL selects", function()
    local cases = {
      { "filter[%3Ep]=5", "p > 5" },
      { "filter[p]=2", "p = 2" },
      { "filter[%3Cm]=0", "m < 0" },
      { "filter[m]=1.5", "m = 1.5" },
      { "filter[%3E%3Ds]=01.01.2000", "s >= '2000-01-01'" },
      { "filter[s]=2024-01-01T10:00:00", "s = '2024-01-01 10:00:00'" },
      { "filter[%3Cd]=1970-01-01", "d < '1970-01-01'" },
      { "filter[!e]=ok", "e IS NULL OR e::text <> 'ok'" },
      { "filter[%25e]=S", "e::text ILIKE '%s%'" },
      { "filter[a]={1,2}", "a::text = '{1,2}'" },
      { "filter[p]=", "p IS NULL" },
    }
    for _, c in ipairs(cases) do
      local want = {}
      for _, line in ipairs(srv:rows("SELECT id FROM dom WHERE " .. c[2] .. " ORDER BY id")) do
        want[#want + 1] = tonumber(line)
      end
      local got = ids(post(h, "/data", "table=dom&select[]=id&" .. c[1]))
      table.sort(got)
      assert.same(want, got, c[1])
    end
  end)
end)

-- Decimals the nearest double can carry, but not in 64 bytes of text: a
-- MySQL DECIMAL(65,30) value (66 characters) or a PostgreSQL numeric of many
-- digits (DBL_MAX as its 309 digits, 1e-400 as 400 zeros) went as null, and
-- a filter on such a column still selected the row (SQL compared the number).
-- On PostgreSQL any filter on a numeric column holding a value beyond a
-- double's range (or one that rounds to zero) was a 500: the cast to float8
-- raised "out of range".
local BIG_DEC = "12345678901234567890123456789012345.123456789012345678901234567890"
local DEC_CASES = {
  -- {form filter, ids}
  { "filter[%3Ed]=1", { 1, 3, 5 } },
  { "filter[%3Ed]=1e34", { 1, 5 } },
  { "filter[d]=0", { 4 } },
  { "filter[d]=", { 2, 6 } },
  { "filter[!d]=1.5", { 1, 2, 4, 5, 6 } },
  { "filter[%3C%3Dd]=0", { 4 } },
  { "filter[%40d][]=1.5&filter[%40d][]=0", { 3, 4 } },
}

describe("long decimals", function()
  local db = require "dbservers"
  for _, engine in ipairs({ "postgresql", "mysql" }) do
    describe("on " .. engine, function()
      if H.skip_without(engine, "spec/acceptance_sql_spec.lua") then return end
      local srv, h
      setup(function()
        srv = db.start(engine)
        if engine == "postgresql" then
          -- 1: 66 characters; 2: beyond a double (null); 4: rounds to 0; 5: DBL_MAX in 309 digits;
          -- 6: NaN (null)
          srv:admin(([[
            CREATE TABLE decs (id int, d numeric);
            INSERT INTO decs VALUES (1, %s), (2, 1e400), (3, 1.5), (4, 1e-400),
              (5, 1.7976931348623157e308), (6, 'NaN');
            GRANT SELECT ON decs TO bic_ro;
          ]]):format(BIG_DEC))
        else
          -- MySQL's DECIMAL holds neither NaN nor values beyond a double: 2 and 6 NULL
          srv:admin(([[
            CREATE TABLE decs (id int, d decimal(65,30));
            INSERT INTO decs VALUES (1, %s), (2, NULL), (3, 1.5), (4, 0.000000000000000000000000000000),
              (5, 99999999999999999999999999999999999.999999999999999999999999999999), (6, NULL);
          ]]):format(BIG_DEC))
        end
        h = H.serve_db(srv, TOKEN)
      end)
      teardown(function()
        if h then S.stop(h) end
        if srv then srv:stop() end
      end)

      it("serves them as the nearest double", function()
        local body = post(h, "/data", "table=decs")
        local want = engine == "postgresql"
          and { 1.2345678901234568e34, cjson.null, 1.5, 0, 1.7976931348623157e308, cjson.null }
          or { 1.2345678901234568e34, cjson.null, 1.5, 0, 1e35, cjson.null }
        local got = {}
        for i = 2, #body do got[body[i][1]] = body[i][2] end
        assert.same(want, got)
      end)

      it("filters them as the doubles served", function()
        for _, c in ipairs(DEC_CASES) do
          local got = ids(post(h, "/data", "table=decs&select[]=id&" .. c[1]))
          table.sort(got)
          assert.same(c[2], got, c[1])
        end
      end)
    end)
  end
end)

-- MariaDB lists a sequence in information_schema.tables (table_type
-- SEQUENCE), and it was served as a table of its state (next_not_cached_value,
-- minimum_value, ...); PostgreSQL's sequences are not listed. A sequence is
-- no table of data: it is neither listed nor served, in the URL's database
-- or one of schemas=.
describe("MariaDB sequences", function()
  if H.skip_without("mysql", "spec/acceptance_sql_spec.lua") then return end
  local db = require "dbservers"
  local srv
  setup(function()
    srv = db.start("mysql")
    srv:admin([[
      CREATE TABLE t (id int);
      CREATE SEQUENCE s1;
      CREATE TABLE ver (id int) WITH SYSTEM VERSIONING;
      CREATE VIEW v AS SELECT id FROM t;
      CREATE DATABASE sales;
      CREATE TABLE sales.q1 (id int);
      CREATE SEQUENCE sales.s2;
      GRANT SELECT ON sales.* TO bic_ro;
    ]])
  end)
  teardown(function() if srv then srv:stop() end end)

  it("lists and serves the tables and views, not the sequences", function()
    local src = require("biconnector.sql").source({ url = srv:url(nil, nil, nil, "schemas=sales"), log = function() end })
    local codes = {}
    for _, t in ipairs(src:table_list()) do codes[#codes + 1] = t.code end
    table.sort(codes)
    assert.same({ "sales.q1", "t", "v", "ver" }, codes)
    assert.is_nil(src:describe("s1"))
    assert.is_nil(src:describe("sales.s2"))
    src:close()
  end)
end)

-- docs/database.md, "Names": "A PostgreSQL table the account may not SELECT
-- is not listed either: 404, not a 500 from the database." A table granted
-- in a schema of schemas= whose USAGE the account lacks was listed and
-- described, and /data was a 500 (`permission denied for schema hr`).
describe("PostgreSQL schemas= naming a schema the account may not use", function()
  if H.skip_without("postgresql", "spec/acceptance_sql_spec.lua") then return end
  local db = require "dbservers"
  local srv, h
  setup(function()
    srv = db.start("postgresql")
    srv:admin([[
      CREATE TABLE t (id int);
      INSERT INTO t VALUES (1);
      GRANT SELECT ON t TO bic_ro;
      CREATE SCHEMA hr;
      CREATE TABLE hr.staff (id int);
      GRANT SELECT ON hr.staff TO bic_ro;
      CREATE SCHEMA sales;
      GRANT USAGE ON SCHEMA sales TO bic_ro;
      CREATE TABLE sales.q1 (id int);
      INSERT INTO sales.q1 VALUES (5);
      GRANT SELECT ON sales.q1 TO bic_ro;
    ]])
    h = H.serve_db(srv, TOKEN, "schemas=hr,sales")
  end)
  teardown(function()
    if h then S.stop(h) end
    if srv then srv:stop() end
  end)

  it("lists only what it can read, and answers 404 for the rest", function()
    local codes = {}
    for _, t in ipairs(post(h, "/table_list", "searchString=")) do codes[#codes + 1] = t.code end
    assert.same({ "t", "sales.q1" }, codes)
    assert.same({ { "id" }, { 5 } }, post(h, "/data", "table=sales.q1"))
    for _, path in ipairs({ "/table_description", "/data" }) do
      local status, body = H.post_form(h.port, path, "table=hr.staff", TOKEN)
      assert.equals(404, status, path .. ": " .. cjson.encode(body))
      assert.matches('unknown table "hr.staff"', body.message, 1, true)
    end
  end)
end)

-- docs/database.md, "Errors": a listed table none of whose columns can be
-- served is a 404 saying so. A PostgreSQL table of no columns at all
-- (CREATE TABLE x ()) was listed, then called an unknown table.
describe("PostgreSQL table of no columns", function()
  if H.skip_without("postgresql", "spec/acceptance_sql_spec.lua") then return end
  local db = require "dbservers"
  local srv, h
  setup(function()
    srv = db.start("postgresql")
    srv:admin([[
      CREATE TABLE empty_cols ();
      GRANT SELECT ON empty_cols TO bic_ro;
      CREATE TABLE t (id int);
      GRANT SELECT ON t TO bic_ro;
    ]])
    h = H.serve_db(srv, TOKEN)
  end)
  teardown(function()
    if h then S.stop(h) end
    if srv then srv:stop() end
  end)

  it("is listed, and described and served as a 404 naming why, not as an unknown table", function()
    local codes = {}
    for _, t in ipairs(post(h, "/table_list", "searchString=")) do codes[#codes + 1] = t.code end
    assert.same({ "empty_cols", "t" }, codes)
    for _, path in ipairs({ "/table_description", "/data" }) do
      local status, body = H.post_form(h.port, path, "table=empty_cols", TOKEN)
      assert.equals(404, status, path .. ": " .. cjson.encode(body))
      assert.matches('table "empty_cols" has no column that can be served', body.message, 1, true)
    end
    -- a table that does not exist stays unknown
    local status, body = H.post_form(h.port, "/table_description", "table=nope", TOKEN)
    assert.equals(404, status)
    assert.matches('unknown table "nope"', body.message, 1, true)
  end)
end)

-- A PostgreSQL materialized view created WITH NO DATA (never refreshed) was
-- listed and described, and /data was a 500 ("materialized view ... has not
-- been populated"): nothing can be read from it. It is not listed, and
-- describe and /data answer 404 unknown table saying why (REFRESH it); a
-- listed view that becomes unreadable so (REFRESH ... WITH NO DATA, or a view
-- over such a view) answers /data with a 404 naming it, not a 500.
describe("PostgreSQL materialized views never populated", function()
  if H.skip_without("postgresql", "spec/acceptance_sql_spec.lua") then return end
  local db = require "dbservers"
  local srv, h
  setup(function()
    srv = db.start("postgresql")
    srv:admin([[
      CREATE TABLE src (id int);
      INSERT INTO src VALUES (1), (2);
      CREATE MATERIALIZED VIEW mv_empty AS SELECT id FROM src WITH NO DATA;
      CREATE MATERIALIZED VIEW mv_full AS SELECT id FROM src;
      CREATE MATERIALIZED VIEW mv_later AS SELECT id FROM src;
      CREATE VIEW over_empty AS SELECT id FROM mv_empty;
      GRANT SELECT ON ALL TABLES IN SCHEMA public TO bic_ro;
    ]])
    h = H.serve_db(srv, TOKEN)
  end)
  teardown(function()
    if h then S.stop(h) end
    if srv then srv:stop() end
  end)

  local function refused(path, tbl)
    local status, body = H.post_form(h.port, path, "table=" .. tbl, TOKEN)
    assert.equals(404, status, path .. ": " .. cjson.encode(body))
    return body.message
  end

  it("is not listed, and is an unknown table saying to REFRESH it", function()
    local codes = {}
    for _, t in ipairs(post(h, "/table_list", "searchString=")) do codes[#codes + 1] = t.code end
    assert.same({ "mv_full", "mv_later", "over_empty", "src" }, codes)
    for _, path in ipairs({ "/table_description", "/data" }) do
      local message = refused(path, "mv_empty")
      assert.matches('unknown table "mv_empty"', message, 1, true)
      assert.matches("REFRESH MATERIALIZED VIEW", message, 1, true)
    end
    assert.same({ { "id" }, { 1 }, { 2 } }, post(h, "/data", "table=mv_full"))
  end)

  it("answers /data of a view that cannot be read so with a 404 naming it", function()
    local message = refused("/data", "over_empty")
    assert.matches('"mv_empty" has not been populated', message, 1, true)
    assert.matches("REFRESH MATERIALIZED VIEW", message, 1, true)
    -- listed and described, then emptied: describe, then data
    assert.same({ { "id" }, { 1 }, { 2 } }, post(h, "/data", "table=mv_later"))
    srv:admin("REFRESH MATERIALIZED VIEW mv_later WITH NO DATA;")
    for _, path in ipairs({ "/table_description", "/data" }) do
      assert.matches("REFRESH MATERIALIZED VIEW", refused(path, "mv_later"), 1, true)
    end
  end)
end)

-- MariaDB's spatial types beyond GEOMETRY, POINT, LINESTRING and POLYGON
-- (MULTIPOINT, MULTILINESTRING, MULTIPOLYGON, GEOMETRYCOLLECTION) were
-- described as `string` fields and served as null (their WKB bytes are no
-- text): docs/database.md leaves spatial types out. And a view whose table
-- was dropped was listed, then described as an unknown table without a word
-- of why (information_schema has no columns for it): it is not listed, and
-- describe and /data say why. A view whose definer is gone failed as if the
-- account's password were wrong.
describe("MariaDB spatial columns and views that cannot be resolved", function()
  if H.skip_without("mysql", "spec/acceptance_sql_spec.lua") then return end
  local db = require "dbservers"
  local srv, h
  setup(function()
    srv = db.start("mysql")
    srv:admin([[
      CREATE TABLE geo (id int, g GEOMETRY, p POINT, mp MULTIPOINT, ml MULTILINESTRING, mpo MULTIPOLYGON,
        gc GEOMETRYCOLLECTION, name varchar(10));
      INSERT INTO geo VALUES (1, ST_GeomFromText('POINT(1 2)'), ST_GeomFromText('POINT(1 2)'),
        ST_GeomFromText('MULTIPOINT(1 1, 2 2)'), ST_GeomFromText('MULTILINESTRING((0 0,1 1))'),
        ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,1 1,0 0)))'),
        ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1))'), 'a');
      CREATE TABLE gone (id int);
      CREATE VIEW v_gone AS SELECT id FROM gone;
      CREATE VIEW v_ok AS SELECT id, name FROM geo;
      DROP TABLE gone;
      CREATE DEFINER = 'nobody'@'localhost' SQL SECURITY DEFINER VIEW v_definer AS SELECT id FROM geo;
    ]])
    h = H.serve_db(srv, TOKEN)
  end)
  teardown(function()
    if h then S.stop(h) end
    if srv then srv:stop() end
  end)

  it("leaves every spatial column out", function()
    local codes = {}
    for _, f in ipairs(post(h, "/table_description", "table=geo")) do codes[#codes + 1] = f.code end
    assert.same({ "id", "name" }, codes)
    assert.same({ { "id", "name" }, { 1, "a" } }, post(h, "/data", "table=geo"))
  end)

  it("does not list a view it cannot resolve, and says why", function()
    local codes = {}
    for _, t in ipairs(post(h, "/table_list", "searchString=")) do codes[#codes + 1] = t.code end
    assert.same({ "geo", "v_definer", "v_ok" }, codes)
    for _, path in ipairs({ "/table_description", "/data" }) do
      local status, body = H.post_form(h.port, path, "table=v_gone", TOKEN)
      assert.equals(404, status, path .. ": " .. cjson.encode(body))
      assert.matches('unknown table "v_gone": a view', body.message, 1, true)
    end
  end)

  -- MariaDB answers a view whose DEFINER account does not exist with
  -- "Access denied for user 'bic_ro'@'%' (using password: YES)", as if the
  -- account's password were wrong: the 500 of a failed query says what it means
  it("says what MariaDB's access denied means for a view whose definer is gone", function()
    local status, body = H.post_form(h.port, "/data", "table=v_definer", TOKEN)
    assert.equals(500, status, cjson.encode(body))
    assert.matches("Access denied for user", body.message, 1, true)
    assert.matches("DEFINER", body.message, 1, true)
  end)
end)

-- A PostgreSQL account granted SELECT on some columns of a table only (GRANT
-- SELECT (id, name) ON staff: the way to keep a salary out of BI) could not
-- see the table at all: it was not listed (has_table_privilege is false), an
-- unknown table. It is listed, with the columns it may read; MariaDB did so
-- already.
describe("PostgreSQL tables granted by column", function()
  if H.skip_without("postgresql", "spec/acceptance_sql_spec.lua") then return end
  local db = require "dbservers"
  local srv, h
  setup(function()
    srv = db.start("postgresql")
    srv:admin([[
      CREATE TABLE staff (id int, name text, salary int);
      INSERT INTO staff VALUES (1, 'ann', 100), (2, 'bob', 200);
      REVOKE ALL ON staff FROM bic_ro;
      GRANT SELECT (id, name) ON staff TO bic_ro;
      CREATE TABLE secret (id int);
      REVOKE ALL ON secret FROM bic_ro;
    ]])
    h = H.serve_db(srv, TOKEN)
  end)
  teardown(function()
    if h then S.stop(h) end
    if srv then srv:stop() end
  end)

  it("lists the table, described and served by the columns the account may read", function()
    assert.same({ { code = "staff", title = "staff" } }, post(h, "/table_list", "searchString="))
    local codes = {}
    for _, f in ipairs(post(h, "/table_description", "table=staff")) do codes[#codes + 1] = f.code end
    assert.same({ "id", "name" }, codes)
    assert.same({ { "id", "name" }, { 2, "bob" } }, post(h, "/data", "table=staff&filter[%3Eid]=1"))
    local status, body = H.post_form(h.port, "/data", "table=staff&select[]=salary", TOKEN)
    assert.equals(400, status)
    assert.matches('unknown field in select: "salary"', body.message, 1, true)
    status = H.post_form(h.port, "/table_description", "table=secret", TOKEN)
    assert.equals(404, status)
  end)
end)

-- A ClickHouse table of the Set engine (the right side of `IN set`) was
-- listed and described, and /data was a 500: "Method read is not supported
-- by storage Set". It holds no rows a SELECT can read: not listed, and an
-- unknown table saying why.
describe("ClickHouse Set tables", function()
  if H.skip_without("clickhouse", "spec/acceptance_sql_spec.lua") then return end
  local db = require "dbservers"
  local srv, h
  setup(function()
    srv = db.start("clickhouse")
    srv:admin({
      "CREATE TABLE t (id Int32) ENGINE = TinyLog",
      "INSERT INTO t VALUES (1)",
      "CREATE TABLE ids (id Int32) ENGINE = Set",
      "INSERT INTO ids VALUES (1)",
    })
    h = H.serve_db(srv, TOKEN)
  end)
  teardown(function()
    if h then S.stop(h) end
    if srv then srv:stop() end
  end)

  it("is not listed, and is an unknown table saying why", function()
    assert.same({ { code = "t", title = "t" } }, post(h, "/table_list", "searchString="))
    for _, path in ipairs({ "/table_description", "/data" }) do
      local status, body = H.post_form(h.port, path, "table=ids", TOKEN)
      assert.equals(404, status, path .. ": " .. cjson.encode(body))
      assert.matches('unknown table "ids": a table of the Set engine', body.message, 1, true)
    end
  end)
end)
