-- The PostgreSQL, MySQL/MariaDB and ClickHouse drivers of core.sql (src/sql_pg.c,
-- src/sql_mysql.c, src/sql_clickhouse.c) against real servers the spec starts
-- (spec/dbservers.lua):
-- values by type, bound parameters, read-only sessions, statement timeouts,
-- password masking, cancelling an answer left unread, reconnecting after a
-- server restart.
local db = require "dbservers"
local H = require "sql_helpers"
local helpers = require "helpers"
local core = require "biconnector.core"

-- 2^63 - 1 and -2^63 as the drivers hand them out: integers under Lua 5.4,
-- text under LuaJIT, whose numbers hold integers exactly up to 2^53 only
-- (src/compat.h; docs/database.md)
local luajit = math.type == nil
local INT64_MAX = luajit and "9223372036854775807" or math.maxinteger
local INT64_MIN = luajit and "-9223372036854775808" or math.mininteger

local ENGINES = {
  postgresql = {
    ph = function(i) return "$" .. i end,
    setup = [[
      CREATE TABLE t (id bigint, f double precision, r real, n numeric(38,10), b boolean, s text,
        d date, ts timestamp, tz timestamptz, j jsonb, u uuid, a int[]);
      INSERT INTO t VALUES
        (9223372036854775807, 'NaN', 0.1, 1234567890123456789012345678.0123456789, true, 'h' || chr(233) || 'llo',
         '1900-01-01', '2100-01-01 01:02:03.5', '2024-05-06 07:08:09+02', '{"a": 1}',
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2}'),
        (-9223372036854775808, '-Infinity', 'Infinity', -0.0000000001, false, '', '1969-12-31', NULL, NULL, NULL, NULL, NULL);
      CREATE TABLE big AS SELECT g AS id, md5(g::text) AS s FROM generate_series(1, 1000000) g;
      GRANT SELECT ON ALL TABLES IN SCHEMA public TO bic_ro;
    ]],
    expect = {
      { INT64_MAX, 0 / 0, 0.1, "1234567890123456789012345678.0123456789", true, "h\195\169llo",
        "1900-01-01", "2100-01-01 01:02:03.5", "2024-05-06 05:08:09", '{"a": 1}',
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{1,2}" },
      { INT64_MIN, -math.huge, math.huge, "-0.0000000001", false, "", "1969-12-31" },
    },
    types = { "bigint", "double precision", "real", "numeric", "boolean", "text", "date",
      "timestamp without time zone", "timestamp with time zone", "jsonb", "uuid", "" },
    active = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bic_ro' AND xact_start IS NOT NULL",
    sleep = "SELECT pg_sleep(5)",
    readonly_err = "read%-only transaction",
    timeout_err = "statement timeout",
  },
  mysql = {
    ph = function() return "?" end,
    setup = [[
      CREATE TABLE t (id bigint, f double, r float, n decimal(38,10), b boolean, s varchar(100),
        d date, ts datetime(1), tz timestamp NULL, j json, u char(36), a blob);
      INSERT INTO t VALUES
        (9223372036854775807, 1e308, 0.1, 1234567890123456789012345678.0123456789, true, 'h]] .. "\195\169" .. [[llo',
         '1900-01-01', '2100-01-01 01:02:03.5', '2024-05-06 07:08:09', '{"a": 1}',
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'xy'),
        (-9223372036854775808, -1e-308, NULL, -0.0000000001, false, '', '0000-00-00', NULL, NULL, NULL, NULL, NULL);
      CREATE TABLE big AS SELECT seq AS id, md5(seq) AS s FROM seq_1_to_1000000;
    ]],
    expect = {
      { INT64_MAX, 1e308, 0.1, "1234567890123456789012345678.0123456789", 1, "h\195\169llo",
        "1900-01-01", "2100-01-01 01:02:03.5", "2024-05-06 07:08:09", '{"a": 1}',
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "xy" },
      { INT64_MIN, -1e-308, nil, "-0.0000000001", 0, "" },
    },
    types = { "bigint", "double", "float", "decimal", "tinyint(1)", "varchar", "date", "datetime", "timestamp",
      "text", "char", "blob" },
    active = "SELECT count(*) FROM information_schema.processlist WHERE user = 'bic_ro' AND info LIKE '%big b%'",
    sleep = "SELECT sleep(5)",
    readonly_err = "READ ONLY transaction",
    timeout_err = "max_statement_time",
  },
  clickhouse = {
    ph = function(i) return "$" .. i end,
    setup = {
      [[CREATE TABLE t (id Int64, f Float64, r Float32, n Decimal(38, 10), b UInt8, s String, d Date, ts DateTime,
        tz DateTime('UTC'), j String, u UUID, a Array(Int32)) ENGINE = MergeTree ORDER BY id]],
      [[INSERT INTO t VALUES
        (9223372036854775807, nan, 0.1, 1234567890123456789012345678.0123456789, 1, 'h]] .. "\195\169" .. [[llo',
         '2105-12-31', '2100-01-01 01:02:03', '2024-05-06 05:08:09', '{"a": 1}',
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', [1, 2]),
        (-9223372036854775808, -inf, inf, -0.0000000001, 0, '', 0, 0, 0, '', '00000000-0000-0000-0000-000000000000', [])]],
      "CREATE TABLE big ENGINE = MergeTree ORDER BY id AS SELECT number AS id, hex(MD5(toString(number))) AS s "
        .. "FROM numbers(1000000)",
    },
    expect = {
      { INT64_MAX, 0 / 0, 0.1, "1234567890123456789012345678.0123456789", 1, "h\195\169llo",
        "2105-12-31", "2100-01-01 01:02:03", "2024-05-06 05:08:09", '{"a": 1}',
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "[1,2]" },
      -- the zero date and time as what they hold: the epoch in the server's zone (Europe/Berlin) and in UTC
      { INT64_MIN, -math.huge, math.huge, "-0.0000000001", 0, "", "1970-01-01",
        "1970-01-01 01:00:00", "1970-01-01 00:00:00", "", "00000000-0000-0000-0000-000000000000", "[]" },
    },
    types = { "Int64", "Float64", "Float32", "Decimal(38, 10)", "UInt8", "String", "Date", "DateTime",
      "DateTime('UTC')", "String", "UUID", "Array(Int32)" },
    active = "SELECT count() FROM system.processes WHERE user = 'bic_ro' AND query LIKE '%big b%'",
    cross = "SELECT b.id, b.s FROM big b", -- streams until TCP holds it: no cross join needed
    sleep = "SELECT sleepEachRow(0.5) FROM numbers(10) SETTINGS max_block_size = 1",
    -- every statement is one SELECT: a write cannot even be spelled
    readonly_err = "Syntax error",
    timeout_err = "Timeout exceeded",
  },
}

local function open(srv, user, password, extra)
  local o = { host = "127.0.0.1", port = srv.port, user = user or db.RO_USER,
    password = password or db.RO_PASSWORD, database = db.DATABASE }
  for k, v in pairs(extra or {}) do o[k] = v end
  return core.sql.open(srv.engine, o)
end

local function all(cur)
  local rows = {}
  while true do
    local row, err = cur:fetch()
    if not row then
      assert(err == nil, err)
      cur:close()
      return rows
    end
    rows[#rows + 1] = row
  end
end

-- Polls until fn() is true; the bound is the server's own behaviour (its answer
-- to the cancel), not a guessed sleep: 20 s is far beyond it.
local function eventually(fn) return helpers.poll(fn, 20, 0.05) ~= nil end

for _, engine in ipairs({ "postgresql", "mysql", "clickhouse" }) do
  local E = ENGINES[engine]
  describe("core.sql " .. engine .. " driver, on a real server", function()
    if H.skip_without(engine, "spec/sql_drivers_spec.lua") then return end
    local srv

    setup(function()
      srv = db.start(engine)
      srv:admin(E.setup)
    end)
    teardown(function()
      if srv then srv:stop() end
    end)

    it("is one of the engines of this build", function()
      local have = {}
      for _, e in ipairs(core.sql.engines) do have[e] = true end
      assert.is_true(have[engine])
    end)

    it("hands out values by type: 64-bit extremes, special floats, exact decimals, UTF-8, dates in UTC", function()
      local c = assert(open(srv))
      local cur = assert(c:query("SELECT * FROM t ORDER BY id DESC"))
      local types = {}
      for i, col in ipairs(cur:columns()) do types[i] = col.type end
      assert.same(E.types, types)
      local rows = all(cur)
      assert.equal(2, #rows)
      for r, want in ipairs(E.expect) do
        for i = 1, 12 do
          local got, exp = rows[r][i], want[i]
          if exp ~= exp then
            assert.is_true(got ~= got, ("row %d column %d: NaN expected, got %s"):format(r, i, tostring(got)))
          else
            assert.equal(exp, got, ("row %d column %d"):format(r, i))
          end
        end
      end
      c:close()
    end)

    it("binds parameters: an injection attempt is a value, the table stays", function()
      local c = assert(open(srv))
      local hostile = "x' OR '1'='1'; DROP TABLE t; --"
      local rows = all(assert(c:query("SELECT id FROM t WHERE s = " .. E.ph(1), { hostile })))
      assert.same({}, rows)
      rows = all(assert(c:query("SELECT id FROM t WHERE s = " .. E.ph(1) .. " OR id = " .. E.ph(2),
        { "h\195\169llo", 5 })))
      assert.same({ { INT64_MAX } }, rows)
      rows = all(assert(c:query("SELECT count(*) FROM t WHERE s = " .. E.ph(1), { n = 1 })))
      assert.equal(0, tonumber(rows[1][1]))
      assert.same({ "2" }, srv:rows("SELECT count(*) FROM t"))
      c:close()
    end)

    it("opens read-only sessions: an account that may write cannot write through it", function()
      local c = assert(open(srv, db.RW_USER, db.RW_PASSWORD))
      local cur, err = c:query("DELETE FROM t")
      assert.is_nil(cur)
      assert.matches(E.readonly_err, err)
      assert.same({ "2" }, srv:rows("SELECT count(*) FROM t"))
      c:close()
    end)

    it("never prints the password: a failed login says who, not with what", function()
      local conn, err = open(srv, db.RO_USER, "Wrong-Secret-42")
      assert.is_nil(conn)
      assert.matches(db.RO_USER, err, 1, true)
      assert.is_nil(err:find("Wrong-Secret-42", 1, true))
    end)

    it("passes TLS options through: TLS required from a server without TLS is refused", function()
      local params = ({ postgresql = "sslmode=require", mysql = "ssl=true", clickhouse = "secure=1" })[engine]
      local conn, err = open(srv, nil, nil, { params = params })
      assert.is_nil(conn)
      assert.matches("SSL", err:upper(), 1, true)
      conn, err = open(srv, nil, nil, { params = "no_such_option=1" })
      assert.is_nil(conn)
      assert.matches("no_such_option", err, 1, true)
      if engine == "postgresql" then -- (MySQL takes a bare name as a flag: ssl means ssl=true)
        conn, err = open(srv, nil, nil, { params = "connect_timeout=5&novalue" })
        assert.is_nil(conn)
        assert.equal("postgresql: connection parameter without a value: novalue", err)
      end
    end)

    it("stops a statement at the statement timeout", function()
      local c = assert(open(srv, nil, nil, { statement_timeout_ms = 300 }))
      local cur, err = c:query(E.sleep)
      if cur then
        local row
        row, err = cur:fetch()
        -- MariaDB's SLEEP() ends early and returns 1 when interrupted
        if row then err = "slept: " .. tostring(row[1]) end
        cur:close()
      end
      assert.matches(E.timeout_err, err)
      c:close()
    end)

    it("cancels the query on the server when a cursor is closed with rows unread", function()
      local c = assert(open(srv))
      local cur = assert(c:query(E.cross or "SELECT a.id FROM big a, big b"))
      for _ = 1, 10 do assert(cur:fetch()) end
      assert.equal("1", srv:rows(E.active)[1])
      cur:close()
      assert.is_true(eventually(function() return srv:rows(E.active)[1] == "0" end),
        "the query still runs on the server")
      -- the connection is still good
      assert.same({ { 1 } }, all(assert(c:query("SELECT 1"))))
      c:close()
    end)

    it("reconnects once when the server restarted between two queries", function()
      local c = assert(open(srv))
      assert.same({ { 1 } }, all(assert(c:query("SELECT 1"))))
      srv:restart()
      assert.same({ { 2 } }, all(assert(c:query("SELECT 2"))))
      c:close()
    end)
  end)
end
