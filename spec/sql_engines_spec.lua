-- `biconnector serve postgresql://...` and `biconnector serve mysql://...`
-- against real servers the spec starts (spec/dbservers.lua): the sample shop
-- of `make demo` passes `biconnector verify`; hostile data and names get their
-- documented answers; the password never shows; a client that goes away
-- mid-answer cancels the query on the server; a server restart between two
-- requests costs the second nothing; the connection is reused.
local db = require "dbservers"
local S = require "serve_helpers"
local helpers = require "helpers"
local H = require "sql_helpers"
local cjson = require "cjson"

local TOKEN = "engines-token"

local HOSTILE = {
  postgresql = [[
    CREATE TABLE "select" ("from" bigint, "we""ird" text, "ünï" double precision, "n" numeric(38,10),
      "d" date, "ts" timestamp, "tz" timestamptz, "b" boolean, "u" uuid, "j" jsonb, "raw" bytea);
    INSERT INTO "select" VALUES
      (9223372036854775807, 'max', 'NaN', 12345678901234567890123456.0123456789, '1969-07-20', '2100-02-28 23:59:59', '2038-01-19 03:14:08+00', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, 2]}', '\x00ff'),
      (-9223372036854775807, '', 'Infinity', -0.0000000001, '1900-01-01', '1901-12-13 20:45:52', '1970-01-01 00:00:00+00', false, NULL, NULL, NULL),
      (0, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (1, 'x''; DROP TABLE "select"; --', 1.5, 0, '2024-02-29', '2024-02-29 12:00:00', '2024-02-29 12:00:00+02', true, NULL, '"s"', NULL);
    CREATE VIEW "v ü" AS SELECT "from", "we""ird" FROM "select";
  ]],
  mysql = [[
    CREATE TABLE `select` (`from` bigint, `we"ird` text, `ünï` double, `n` decimal(38,10),
      `d` date, `ts` datetime, `tz` timestamp NULL, `b` boolean, `u` char(36), `j` json, `raw` blob);
    INSERT INTO `select` VALUES
      (9223372036854775807, 'max', 1e308, 12345678901234567890123456.0123456789, '1969-07-20', '2100-02-28 23:59:59', '2038-01-19 03:14:07', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, 2]}', X'00ff'),
      (-9223372036854775807, '', -1e308, -0.0000000001, '1900-01-01', '1901-12-13 20:45:52', '1970-01-01 00:00:01', false, NULL, NULL, NULL),
      (0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (1, 'x''; DROP TABLE `select`; --', 1.5, 0, '2024-02-29', '2024-02-29 12:00:00', '2024-02-29 10:00:00', true, NULL, '"s"', NULL);
    CREATE VIEW `v ü` AS SELECT `from`, `we"ird` FROM `select`;
  ]],
}

-- What the hostile table serves, by engine: rows ordered by "from".
local HOSTILE_ROWS = {
  postgresql = {
    { -9223372036854775807, "", nil, -1e-10, "1900-01-01", "1901-12-13 20:45:52", "1970-01-01 00:00:00", 0 },
    { 0, nil, nil, nil, nil, nil, nil, nil },
    { 1, "x'; DROP TABLE \"select\"; --", 1.5, 0, "2024-02-29", "2024-02-29 12:00:00", "2024-02-29 10:00:00", 1 },
    { 9223372036854775807, "max", nil, 1.2345678901234568e25, "1969-07-20", "2100-02-28 23:59:59",
      "2038-01-19 03:14:08", 1 },
  },
  mysql = {
    { -9223372036854775807, "", -1e308, -1e-10, "1900-01-01", "1901-12-13 20:45:52", "1970-01-01 00:00:01", 0 },
    { 0, nil, nil, nil, nil, nil, nil, nil },
    { 1, "x'; DROP TABLE `select`; --", 1.5, 0, "2024-02-29", "2024-02-29 12:00:00", "2024-02-29 10:00:00", 1 },
    { 9223372036854775807, "max", 1e308, 1.2345678901234568e25, "1969-07-20", "2100-02-28 23:59:59",
      "2038-01-19 03:14:07", 1 },
  },
}

-- The query in flight on the server: PostgreSQL reads through a cursor (its
-- transaction stays open while rows remain; closing it ends the query), MySQL
-- streams the statement (SHOW PROCESSLIST shows it until it ends or is killed).
local ACTIVE = {
  postgresql = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bic_ro' AND xact_start IS NOT NULL",
  mysql = "SELECT count(*) FROM information_schema.processlist WHERE user = 'bic_ro' AND info LIKE '%FROM `big`%'",
}
local CONNECTIONS = {
  postgresql = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bic_ro'",
  mysql = "SELECT count(*) FROM information_schema.processlist WHERE user = 'bic_ro'",
}
local BIG = {
  postgresql = "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS s, g * 0.5 AS x FROM generate_series(1, 1000000) g;",
  mysql = "CREATE TABLE big AS SELECT seq AS id, md5(seq) AS s, seq * 0.5 AS x FROM seq_1_to_1000000;",
}

local function post(h, path, body) return S.post_json(h.port, path, body) end

-- Polls until fn() holds; bounded far beyond what the server needs.
local function eventually(fn) return helpers.poll(fn, 20, 0.05) ~= nil end

for _, engine in ipairs({ "postgresql", "mysql" }) do
  describe("biconnector serve " .. engine .. "://, on a real server", function()
    if H.skip_without(engine, "spec/sql_engines_spec.lua") then return end
    local srv, h

    setup(function()
      srv = db.start(engine)
      local ok, out = db.run(("%s %s/examples/sample/gen.lua --dialect %s --orders 500 > %s/sample.sql"):format(
        helpers.runtime, helpers.top, engine, srv.dir))
      assert(ok, out)
      local f = assert(io.open(srv.dir .. "/sample.sql"))
      srv:admin(f:read("*a"))
      f:close()
      srv:admin(HOSTILE[engine] .. BIG[engine])
      if engine == "postgresql" then srv:admin("GRANT SELECT ON ALL TABLES IN SCHEMA public TO bic_ro;") end
      h = H.serve_db(srv, TOKEN) -- the password from the environment, not the URL
    end)
    teardown(function() H.stop(h, srv) end)

    it("serves the sample shop and passes biconnector verify", function()
      local status, body = post(h, "/table_list", { connection = { token = TOKEN } })
      assert.equals(200, status, body)
      local codes = {}
      for _, t in ipairs(cjson.decode(body)) do codes[#codes + 1] = t.code end
      table.sort(codes)
      assert.same({ "big", "customers", "order_lines", "orders", "products", "select", "v ü" }, codes)
      -- the sample's tables (verify reads 64-bit extremes as doubles: the hostile table is checked below)
      local rc, out = H.verify(h.port, TOKEN, { "customers", "products", "orders", "order_lines", "big" })
      assert.equals(0, rc, out)
      assert.matches("0 FAIL", out)
      assert.matches("conforms", out)
    end)

    it("describes reserved words, quotes and UTF-8 as the database spells them, with the engine's type mapping", function()
      local status, body = post(h, "/table_description", { connection = { token = TOKEN }, table = "select" })
      assert.equals(200, status, body)
      local got = {}
      for _, f in ipairs(cjson.decode(body)) do got[#got + 1] = f.code .. ":" .. f.type end
      assert.same({ "from:int", 'we"ird:string', "ünï:double", "n:double", "d:date", "ts:datetime",
        "tz:datetime", "b:int", "u:string", "j:string" }, got) -- raw (bytes) is left out
    end)

    it("serves hostile values with their documented answers", function()
      local status, body = post(h, "/data", { connection = { token = TOKEN }, table = "select",
        fields = { "from", 'we"ird', "ünï", "n", "d", "ts", "tz", "b" } })
      assert.equals(200, status, body)
      local rows = cjson.decode(body)
      table.remove(rows, 1)
      table.sort(rows, function(a, b) return a[1] < b[1] end)
      local want = HOSTILE_ROWS[engine]
      assert.equals(#want, #rows)
      for i, row in ipairs(want) do
        for j = 1, 8 do
          local got = rows[i][j]
          if got == cjson.null then got = nil end
          if type(row[j]) == "number" and type(got) == "number" and row[j] ~= 0 then
            assert.is_true(math.abs(got - row[j]) <= math.abs(row[j]) * 1e-15,
              ("row %d col %d: %s ~= %s"):format(i, j, tostring(got), tostring(row[j])))
          else
            assert.equals(row[j], got, ("row %d col %d"):format(i, j))
          end
        end
      end
    end)

    it("sends values outside what urlData can carry as null, never wrong: far dates, unsigned 64-bit", function()
      if engine == "postgresql" then
        srv:admin([[CREATE TABLE far (id int, d date, ts timestamp);
          INSERT INTO far VALUES (1, '4713-01-01 BC', '0044-03-15 12:00:00 BC'), (2, '10000-01-01', '10000-01-01 00:00:00'),
            (3, '0001-01-01', '9999-12-31 23:59:59');
          GRANT SELECT ON far TO bic_ro;]])
      else
        srv:admin([[CREATE TABLE far (id int, d date, ts datetime, u bigint unsigned);
          INSERT INTO far VALUES (1, '1000-01-01', '1000-01-01 00:00:00', 18446744073709551615),
            (2, '9999-12-31', '9999-12-31 23:59:59', 9223372036854775807), (3, NULL, NULL, 0);]])
      end
      local status, body = post(h, "/data", { connection = { token = TOKEN }, table = "far" })
      assert.equals(200, status, body)
      local rows = cjson.decode(body)
      table.remove(rows, 1)
      table.sort(rows, function(a, b) return a[1] < b[1] end)
      for _, r in ipairs(rows) do for i = 1, #r do if r[i] == cjson.null then r[i] = "null" end end end
      if engine == "postgresql" then
        assert.same({ { 1, "null", "null" }, { 2, "null", "null" }, { 3, "0001-01-01", "9999-12-31 23:59:59" } }, rows)
      else
        -- lua-cjson reads 2^63-1 as a double: the exact digits are checked in the text
        assert.truthy(body:find(",9223372036854775807]", 1, true), body)
        rows[2][4] = "2^63-1"
        assert.same({ { 1, "1000-01-01", "1000-01-01 00:00:00", "null" },
          { 2, "9999-12-31", "9999-12-31 23:59:59", "2^63-1" }, { 3, "null", "null", 0 } }, rows)
      end
    end)

    it("treats injection attempts in every operator as values", function()
      local attempt = "x'; DROP TABLE \"select\"; --"
      if engine == "mysql" then attempt = "x'; DROP TABLE `select`; --" end
      local filters = {
        { ['we"ird'] = attempt }, { ['!we"ird'] = attempt }, { ['%we"ird'] = "'; DROP" },
        { ['!%we"ird'] = "' OR 1=1 --" }, { ['=%we"ird'] = "x'%" }, { ['>we"ird'] = "' OR ''='" },
        { ['@we"ird'] = { attempt, "') OR ('1'='1" } }, { ['!@we"ird'] = { "1) OR (1=1" } },
        { from = { operator = "between", from = "0", to = "1; DROP TABLE x" } },
      }
      local counts = {}
      for i, f in ipairs(filters) do
        local status, body = post(h, "/data", { connection = { token = TOKEN }, table = "select",
          fields = { "from" }, filter = f })
        counts[i] = status == 200 and (#cjson.decode(body) - 1) or status
      end
      assert.same({ 1, 3, 1, 4, 1, 2, 1, 4, 400 }, counts)
      assert.equals("4", srv:rows("SELECT count(*) FROM " .. (engine == "mysql" and "`select`" or '"select"'))[1])
    end)

    it("never shows the password: not in the banner, not in the log", function()
      local all = S.stdout(h) .. S.stderr(h)
      assert.is_nil(all:find(db.RO_PASSWORD, 1, true))
      assert.matches(engine .. "://" .. db.RO_USER .. "@127.0.0.1:" .. srv.port, all, 1, true)
    end)

    it("masks a password given in the URL: banner and title", function()
      local status, body, out = H.serve_with_password(srv)
      assert.equals(200, status, body)
      assert.is_nil(out:find(db.RO_PASSWORD, 1, true), out)
      assert.matches(engine .. "://" .. db.RO_USER .. ":***@127.0.0.1:" .. srv.port, out, 1, true)
      assert.matches('serving "bic"', out, 1, true)
    end)

    it("refuses to start with a wrong password, saying why without the password", function()
      local rc, out = H.serve_refused(srv:url(db.RO_USER, "Wrong-Pw-77"))
      assert.equals(1, rc, out)
      assert.matches(db.RO_USER, out, 1, true)
      assert.is_nil(out:find("Wrong-Pw-77", 1, true))
    end)

    it("cancels the server's query when the client goes away mid-answer (1M rows)", function()
      local c = S.send_data(h.port, TOKEN, "big")
      local first = assert(c:receive(65536 * 4))
      assert.matches("^HTTP/1.1 200", first)
      assert.equals("1", srv:rows(ACTIVE[engine])[1])
      c:close()
      assert.is_true(eventually(function() return srv:rows(ACTIVE[engine])[1] == "0" end),
        "the query still runs on the server after the client left")
      -- and the server answers the next request
      local status = post(h, "/data", { connection = { token = TOKEN }, table = "customers" })
      assert.equals(200, status)
    end)

    it("reuses its connection between requests", function()
      for _ = 1, 5 do
        assert.equals(200, (post(h, "/data", { connection = { token = TOKEN }, table = "products" })))
      end
      local n = tonumber(srv:rows(CONNECTIONS[engine])[1])
      local workers = #S.children(h.pid)
      assert.is_true(n >= 1 and n <= math.max(workers, 1), n .. " connections for " .. workers .. " workers")
    end)

    it("serves the tables of the schemas= option as schema.table, beside the default schema's", function()
      if engine == "postgresql" then
        srv:admin([[CREATE SCHEMA sales; CREATE TABLE sales.q1 (id int, "ü" text); INSERT INTO sales.q1 VALUES (1, 'a'), (2, 'b');
          CREATE TABLE sales.hidden (id int);
          GRANT USAGE ON SCHEMA sales TO bic_ro; GRANT SELECT ON sales.q1 TO bic_ro;]])
      else
        srv:admin([[CREATE DATABASE sales; CREATE TABLE sales.q1 (id int, `ü` text); INSERT INTO sales.q1 VALUES (1, 'a'), (2, 'b');
          CREATE TABLE sales.hidden (id int); GRANT SELECT ON sales.q1 TO 'bic_ro'@'%';]], "mysql")
      end
      -- listed beside the others (sales.hidden is not granted), described, a filter pushed down
      H.check_sales_q1(srv, { "big", "customers", "far", "order_lines", "orders", "products", "sales.q1", "select", "v ü" })
    end)

    it("answers the request after a server restart", function()
      assert.equals(200, (post(h, "/data", { connection = { token = TOKEN }, table = "customers" })))
      srv:restart()
      local status, body = post(h, "/data", { connection = { token = TOKEN }, table = "customers" })
      assert.equals(200, status, body)
      assert.is_true(#cjson.decode(body) > 1)
    end)
  end)
end
