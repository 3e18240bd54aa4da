-- `biconnector serve clickhouse://...` against a real ClickHouse server the
-- spec starts (spec/dbservers.lua; Debian's clickhouse-server, 18.16 here: the
-- path for servers without query parameters): every mapped type passes
-- `biconnector verify` and is served as documented (NULLs, UTF-8, 64-bit
-- extremes, UInt64 above 2^63-1, zero dates); hostile values in every
-- operator and hostile table and column names leave the data untouched and
-- the statement's shape unchanged; a client that leaves stops its query on
-- the server; accounts with readonly=2 and readonly=1 profiles; the password
-- never shows; a server failing mid-answer cuts the answer, never a short one
-- that looks whole. The escaping and rendering functions are checked first,
-- without a server, and then against the server's own reading.
local db = require "dbservers"
local S = require "serve_helpers"
local helpers = require "helpers"
local H = require "sql_helpers"
local socket = require "socket"
local cjson = require "cjson"
local core = require "biconnector.core"
local filter = require "biconnector.filter"

local TOKEN = "ch-token"

local quote, render = core.sql.clickhouse_quote, core.sql.clickhouse_render

describe("ClickHouse text rules (core.sql.clickhouse_quote, clickhouse_render)", function()
  it("quotes literals and names: backslash, quotes and control bytes escaped, every other byte as is", function()
    assert.equals([['it\'s']], quote("it's"))
    assert.equals([['a\\b\`c\"d']], quote('a\\b`c"d'))
    assert.equals([['\x00\x0A\x09\x7F ü']], quote("\0\n\t\127 ü"))
    assert.equals([[`we\`ird`]], quote("we`ird", "`"))
    assert.equals("''", quote(""))
    assert.equals("'\255\254'", quote("\255\254")) -- not UTF-8: still as is
    assert.has_error(function() quote("x", "[") end)
  end)

  it("fills $N outside quotes, names and comments; numbers as literals, strings quoted", function()
    local sql = render("SELECT $1, '$2', `$3`, \"$1\" -- $2\n, $3 /* $1 */ # $2\n, $2, $$ $1 $$, $4, $5",
      { "it's", 5, 1.5, true, core.null, n = 5 })
    assert.equals("SELECT 'it\\'s', '$2', `$3`, \"$1\" -- $2\n, 1.5 /* $1 */ # $2\n, 5, $$ $1 $$, 1, NULL", sql)
    assert.equals("SELECT -9007199254740991, 0.1, 1e+300, -0.5, 0.30000000000000004",
      (render("SELECT $1, $2, $3, $4, $5", { -9007199254740991, 0.1, 1e300, -0.5, 0.1 + 0.2 })))
    if math.mininteger then -- Lua 5.4 integers: all 64 bits
      assert.equals("SELECT -9223372036854775808", (render("SELECT $1", { math.mininteger })))
    end
  end)

  it("refuses a statement it cannot fill exactly", function()
    assert.same({ nil, "clickhouse: the statement names $3 but has 2 parameters" },
      { render("SELECT $3", { 1, 2 }) })
    assert.same({ nil, "clickhouse: the statement has an unterminated ' quote at byte 8" },
      { render("SELECT 'x $1", { 1 }) })
    assert.same({ nil, "clickhouse: the statement has an unterminated comment at byte 10" },
      { render("SELECT 1 /* $1", { 1 }) })
  end)

  it("sends strings as query parameters for servers that have them, escaped for TabSeparated and the URL", function()
    local sql, params = render("SELECT $1, $2, $3", { "it's\t\\ ü&x=1", 7, "" }, true)
    assert.equals("SELECT {p1:String}, 7, {p3:String}", sql)
    assert.equals("&param_p1=it%27s%5Ct%5C%5C%20%C3%BC%26x%3D1&param_p3=", params)
  end)
end)

-- A table of every mapped type: extremes, NULLs, UTF-8, zero dates.
local TYPES = {
  [[CREATE TABLE types (id Int64, i8 Int8, i16 Int16, i32 Int32, i64 Int64, u8 UInt8, u16 UInt16, u32 UInt32,
    u64 UInt64, f32 Float32, f64 Float64, dec Decimal(18, 4), dec9 Decimal(9, 2), d Date, dt DateTime,
    dtu DateTime('UTC'), dtt DateTime('Asia/Tokyo'), s String, fs FixedString(4), u UUID,
    e8 Enum8('a' = 1, 'b' = 2), e16 Enum16('big' = 1000), lc LowCardinality(String), ns Nullable(String),
    ni Nullable(Int32), nf Nullable(Float64), nd Nullable(Date), ndt Nullable(DateTime), arr Array(Int32),
    sarr Array(String), tup Tuple(Int32, String), nest Nested(k String, v Int32))
    ENGINE = MergeTree ORDER BY id]],
  [[INSERT INTO types VALUES
    (1, 127, 32767, 2147483647, 9223372036854775807, 255, 65535, 4294967295, 18446744073709551615, 0.1, 1e300,
     12345678901234.5678, 1234567.89, '2105-12-31', '2025-05-30 12:34:56', '2038-01-19 03:14:08',
     '2024-02-29 23:30:00', 'ünï "q" \\ tab\t nl\n', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'a', 'big',
     'low', NULL, NULL, NULL, NULL, NULL, [1, 2], ['x', 'it\'s'], (1, 'x'), ['k1'], [1]),
    (2, -128, -32768, -2147483648, -9223372036854775808, 0, 0, 0, 9223372036854775807, -1.5, nan,
     -0.0001, -0.01, 0, 0, 0, 0, '', '', '00000000-0000-0000-0000-000000000000', 'b', 'big', '', 'Привет', -5,
     2.5, '2024-02-29', '2024-02-29 12:00:00', [], [], (2, ''), [], []),
    (3, 0, 0, 0, 0, 1, 1, 1, 9223372036854775808, 3.25, inf, 0, 0, '2024-02-29', '2024-02-29 12:00:00',
     '2024-02-29 12:00:00', '2024-02-29 12:00:00', '日本語', 'abcd', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', 'a',
     'big', 'ü', '', 0, -inf, '1970-01-02', '1970-01-01 01:00:01', [-1], [''], (-3, 'ü'), ['a', 'b'], [1, 2])]],
}

local TYPE_CODES = { "id:int", "i8:int", "i16:int", "i32:int", "i64:int", "u8:int", "u16:int", "u32:int",
  "u64:int", "f32:double", "f64:double", "dec:double", "dec9:double", "d:date", "dt:datetime", "dtu:datetime",
  "dtt:datetime", "s:string", "fs:string", "u:string", "e8:string", "e16:string", "lc:string", "ns:string",
  "ni:int", "nf:double", "nd:date", "ndt:datetime", "arr:string", "sarr:string", "tup:string",
  "nest.k:string", "nest.v:string" }

-- What the types table serves, by id (cjson.null as "null"; 64-bit integers are
-- checked in the answer's text: lua-cjson reads them as doubles).
local TYPE_ROWS = {
  { 1, 127, 32767, 2147483647, "i64max", 255, 65535, 4294967295, "null", 0.1, 1e300, 12345678901234.568,
    1234567.89, "2105-12-31", "2025-05-30 12:34:56", "2038-01-19 03:14:08", "2024-02-29 23:30:00",
    'ünï "q" \\ tab\t nl\n', "ab\0\0", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a", "big", "low", "null", "null",
    "null", "null", "null", "[1,2]", "['x','it\\'s']", "(1,'x')", "['k1']", "[1]" },
  { 2, -128, -32768, -2147483648, "i64min", 0, 0, 0, "i64max", -1.5, "null", -0.0001, -0.01, "1970-01-01",
    "1970-01-01 01:00:00", "1970-01-01 00:00:00", "1970-01-01 09:00:00", "", "\0\0\0\0",
    "00000000-0000-0000-0000-000000000000", "b", "big", "", "Привет", -5, 2.5, "2024-02-29",
    "2024-02-29 12:00:00", "[]", "[]", "(2,'')", "[]", "[]" },
  { 3, 0, 0, 0, 0, 1, 1, 1, "null", 3.25, "null", 0, 0, "2024-02-29", "2024-02-29 12:00:00",
    "2024-02-29 12:00:00", "2024-02-29 12:00:00", "日本語", "abcd", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12", "a",
    "big", "ü", "", 0, "null", "1970-01-02", "1970-01-01 01:00:01", "[-1]", "['']", "(-3,'ü')", "['a','b']",
    "[1,2]" },
}

-- Hostile names: reserved words, quotes of every kind, backslashes, UTF-8.
local HOSTILE_TABLE = "select`; DROP TABLE types; --"
local HOSTILE = {
  "CREATE TABLE " .. quote(HOSTILE_TABLE, "`") .. " (`from` Int64, " .. quote('we"ird\'\\`', "`")
    .. " Nullable(String), `ünï` Float64) ENGINE = MergeTree ORDER BY `from`",
  "INSERT INTO " .. quote(HOSTILE_TABLE, "`") .. [[ VALUES (1, 'x\'; DROP TABLE types; --', 1.5),
    (2, '', -1), (3, NULL, 0), (4, 'back\\slash', 2)]],
  "CREATE VIEW " .. quote("v ü'\\", "`") .. " AS SELECT `from` FROM " .. quote(HOSTILE_TABLE, "`"),
}

local BIG = "CREATE TABLE big ENGINE = MergeTree ORDER BY id AS SELECT number AS id, "
  .. "hex(MD5(toString(number))) AS s, number * 0.5 AS x FROM numbers(1000000)"

local function eventually(fn, seconds) return helpers.poll(fn, seconds or 20) ~= nil end

-- The rows of a served answer without the header, NULL as "null".
local function rows_of(body)
  local rows = cjson.decode(body)
  table.remove(rows, 1)
  for _, r in ipairs(rows) do
    for i = 1, #r do if r[i] == cjson.null then r[i] = "null" end end
  end
  return rows
end

describe("biconnector serve clickhouse://, on a real server", function()
  local why = db.missing("clickhouse")
  if why then
    local msg = db.skip("clickhouse", why)
    return it("runs against a real ClickHouse server", function() pending(msg) end)
  end
  local srv, h

  local function post(body)
    if body.connection == nil then body.connection = { token = TOKEN } end
    return S.post_json(h.port, "/" .. (body.path or "data"), body)
  end

  setup(function()
    srv = db.start("clickhouse")
    srv:admin(TYPES)
    srv:admin(HOSTILE)
    srv:admin(BIG)
    h = H.serve_db(srv, TOKEN) -- the password from the environment, not the URL
  end)
  teardown(function() H.stop(h, srv) end)

  it("lists the tables and views of the URL's database, as ClickHouse spells them", function()
    local status, body = post({ path = "table_list" })
    assert.equals(200, status, body)
    local codes = {}
    for _, t in ipairs(cjson.decode(body)) do codes[#codes + 1] = t.code end
    table.sort(codes)
    assert.same({ "big", HOSTILE_TABLE, "types", "v ü'\\" }, codes)
  end)

  it("describes every mapped type: Nullable and LowCardinality unwrapped, composites as strings", function()
    local status, body = post({ path = "table_description", table = "types" })
    assert.equals(200, status, body)
    local got = {}
    for _, f in ipairs(cjson.decode(body)) do got[#got + 1] = f.code .. ":" .. f.type end
    assert.same(TYPE_CODES, got)
  end)

  it("serves every mapped type as documented: extremes, NULLs, UTF-8, UInt64 above 2^63-1 as null", function()
    local status, body = post({ table = "types" })
    assert.equals(200, status, body)
    -- 64-bit integers exactly, in the text (lua-cjson reads them as doubles)
    assert.truthy(body:find("[1,127,32767,2147483647,9223372036854775807,255,65535,4294967295,null,", 1, true), body)
    assert.truthy(body:find("[2,-128,-32768,-2147483648,-9223372036854775808,0,0,0,9223372036854775807,", 1, true))
    local rows = rows_of(body)
    table.sort(rows, function(a, b) return a[1] < b[1] end)
    assert.equals(3, #rows)
    for i, want in ipairs(TYPE_ROWS) do
      for j, v in ipairs(want) do
        if v ~= "i64max" and v ~= "i64min" then
          assert.same(v, rows[i][j], ("row %d, %s"):format(i, TYPE_CODES[j]))
        end
      end
    end
    -- the values that went as null are told in the log, with the first case
    assert.is_true(eventually(function()
      return S.stderr(h):find('field \\"u64\\", expected an integer, got text \\"18446744073709551615\\"', 1, true)
        ~= nil
    end, 5), S.stderr(h))
  end)

  it("passes biconnector verify on every mapped type and on a 1M-row table", function()
    local rc, out = H.verify(h.port, TOKEN, { "types", "big" })
    assert.equals(0, rc, out)
    assert.matches("0 FAIL", out)
    assert.matches("conforms", out)
  end)

  it("serves UInt64 as strings with uint64=string, and leaves composites out with composite=omit", function()
    local src = require("biconnector.sql").source({ url = srv:url(nil, nil, nil, "uint64=string&composite=omit"),
      log = function() end })
    local fields = assert(src:describe("types"))
    local types = {}
    for _, f in ipairs(fields) do types[f.code] = f.type end
    assert.equals("string", types.u64)
    assert.is_nil(types.arr)
    assert.is_nil(types.tup)
    assert.is_nil(types["nest.k"])
    local rows = src:data({ table = "types", select = { "id", "u64" }, fields = fields,
      filter = filter.parse({ [">u64"] = "9223372036854775807" }, fields) })
    local enc = core.rows.new(fields, { 1, 9 })
    repeat local _, done = rows:fill(enc, 65536) until done
    enc:finish()
    rows:close()
    src:close()
    -- compared as text, as match compares strings
    assert.same({ { "id", "u64" }, { 3, "9223372036854775808" } }, cjson.decode(enc:take()))
  end)

  it("filters every mapped type exactly as filter.match does on the served rows", function()
    local status, body = post({ table = "types" })
    assert.equals(200, status, body)
    local fields = cjson.decode(select(2, post({ path = "table_description", table = "types" })))
    local codes = {}
    for i, f in ipairs(fields) do codes[i] = f.code end
    local all = {}
    for _, r in ipairs(cjson.decode(body)) do
      if r[1] ~= "id" then
        local m = {}
        for j, c in ipairs(codes) do m[c] = r[j] ~= cjson.null and r[j] or nil end
        all[#all + 1] = m
      end
    end
    local filters = {
      { [">u64"] = 0 }, { ["!u64"] = 5 }, { ["<=i64"] = 0 }, { [">f32"] = 0.1 },
      { f32 = 0.1 }, { [">f64"] = 0 }, { ["!f64"] = 1 }, { f64 = cjson.null }, { [">dec"] = -0.001 },
      { dec9 = -0.01 }, { ["<d"] = "2200-01-01" }, { [">d"] = "1960-01-01" }, { d = "1970-01-01" },
      { ["<dt"] = "1970-01-01 01:00:01" }, { dtu = "1970-01-01 00:00:00" }, { [">dtt"] = "2024-02-29 12:00:00" },
      { ["<dtu"] = "2200-01-01 00:00:00" }, { e8 = "a" }, { [">e8"] = "a" }, { ["%e16"] = "BI" },
      { ["<u"] = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12" }, { fs = "abcd" }, { ["%lc"] = "O" }, { ns = cjson.null },
      { ["!ns"] = "Привет" }, { ["%ns"] = "при" }, { ["%s"] = "Ü" }, { ["%s"] = "\\" }, { ["=%s"] = "%\t%" },
      { ni = { -5, 0 } }, { nd = cjson.null }, { [">=ndt"] = "1970-01-01 00:00:00" },
    }
    for _, raw in ipairs(filters) do
      local ast = assert(filter.parse(cjson.decode(cjson.encode(raw)), fields))
      local want = {}
      for _, row in ipairs(all) do if filter.match(ast, row) then want[#want + 1] = row.id end end
      local st, b = post({ table = "types", select = { "id" }, filter = cjson.decode(cjson.encode(raw)) })
      assert.equals(200, st, b)
      local got = {}
      for _, r in ipairs(rows_of(b)) do got[#got + 1] = r[1] end
      table.sort(got)
      assert.same(want, got, cjson.encode(raw))
    end
  end)

  it("compares datetimes as the served text in a zone with daylight saving: an hour that reads twice", function()
    srv:admin("CREATE TABLE dst (id Int32, t DateTime) ENGINE = MergeTree ORDER BY id")
    -- 2025-10-26 02:30 in Berlin: 00:30 UTC (CEST) and 01:30 UTC (CET)
    srv:admin("INSERT INTO dst VALUES (1, 1761438600), (2, 1761442200), (3, 1761445800)")
    local function ids(f)
      local st, b = post({ table = "dst", select = { "id" }, filter = f })
      assert.equals(200, st, b)
      local got = {}
      for _, r in ipairs(rows_of(b)) do got[#got + 1] = r[1] end
      table.sort(got)
      return got
    end
    assert.same({ 1, 2 }, ids({ t = "2025-10-26 02:30:00" }))
    assert.same({ 1, 2 }, ids({ ["<t"] = "2025-10-26 02:45:00" }))
    assert.same({ 3 }, ids({ [">t"] = "2025-10-26 02:45:00" }))
  end)

  it("reads the server's literals back exactly: every byte, quotes, backslashes", function()
    local values = { "it's", "\\'", "'; DROP TABLE types; --", "`x`", '"', "\\", "a\0b", "ü\255" }
    local all = {}
    for b = 0, 255 do all[#all + 1] = string.char(b) end
    values[#values + 1] = table.concat(all)
    for _, v in ipairs(values) do
      local hex = v:gsub(".", function(c) return ("%02X"):format(c:byte()) end)
      assert.same({ hex }, srv:rows("SELECT hex(" .. quote(v) .. ")"), v)
      -- and as a name: the column ClickHouse creates is named so, byte for byte
      if not v:find("%z") then
        srv:admin("CREATE TABLE probe (" .. quote(v, "`") .. " Int8) ENGINE = Memory")
        local got = srv:rows("SELECT hex(name) FROM system.columns WHERE database = 'bic' AND table = 'probe'")
        srv:admin("DROP TABLE probe")
        assert.same({ hex }, got, v)
      end
    end
  end)

  it("treats hostile values in every operator as values: the data unchanged, byte for byte, same shape", function()
    local checksum = "SELECT * FROM types ORDER BY id"
    local before = srv:rows(checksum)
    local attempt = "x'; DROP TABLE types; --"
    local filters = {
      { s = attempt }, { ["!s"] = attempt }, { ["%s"] = "'; DROP" }, { ["!%s"] = "' OR 1=1 --" },
      { ["=%s"] = "x'%" }, { [">s"] = "' OR ''='" }, { ["<=s"] = "\\'); DROP TABLE types; --" },
      { ["@s"] = { attempt, "') OR ('1'='1" } }, { ["!@s"] = { "1) OR (1=1" } }, { ["%ns"] = "\\" },
      { s = "\0" }, { lc = "`; DROP TABLE types; --`" }, { ["!e8"] = "a' OR '1'='1" },
      { id = { operator = "between", from = "0", to = "1; DROP TABLE x" } },
      { ["<d"] = "2024-02-29'); DROP TABLE types; --" },
    }
    local counts = {}
    for i, f in ipairs(filters) do
      local st, b = post({ table = "types", select = { "id" }, filter = f })
      counts[i] = st == 200 and #cjson.decode(b) - 1 or st
    end
    assert.same({ 0, 3, 0, 3, 0, 2, 1, 0, 3, 0, 0, 0, 3, 400, 400 }, counts)
    assert.same(before, srv:rows(checksum))
    -- an account that may write still reads with readonly=2, and a statement
    -- is always one SELECT (a write cannot even be spelled)
    local rw = require("biconnector.sql").source({ url = srv:url(db.RW_USER, db.RW_PASSWORD), log = function() end })
    local conn = rw:conn()
    local rows = require("biconnector.sql").all_rows(conn, "SELECT value FROM system.settings WHERE name = $1",
      { "readonly" })
    assert.same({ { "2" } }, rows)
    local bad, err = conn:query("INSERT INTO types (id) VALUES ($1)", { 99 })
    assert.is_nil(bad)
    assert.matches("Syntax error", err)
    rw:close()
    assert.same(before, srv:rows(checksum))
    -- the shape: each value renders as one literal, nothing outside it
    for _, v in ipairs({ attempt, "\\", "'", "`", "$1", "--", "/*", "\0\n\t" }) do
      local text = assert(render("SELECT 1 FROM t WHERE s = $1 AND `$1` = 2", { v }))
      local inner = text:match("^SELECT 1 FROM t WHERE s = ('.*') AND `%$1` = 2$")
      assert.truthy(inner, text)
      assert.equals(inner, quote(v))
    end
  end)

  it("serves hostile table and column names, filters on them, and leaves the data as it was", function()
    local checksum = "SELECT * FROM " .. quote(HOSTILE_TABLE, "`") .. " ORDER BY `from`"
    local before = srv:rows(checksum)
    local col = 'we"ird\'\\`'
    local status, body = post({ path = "table_description", table = HOSTILE_TABLE })
    assert.equals(200, status, body)
    local codes = {}
    for _, f in ipairs(cjson.decode(body)) do codes[#codes + 1] = f.code .. ":" .. f.type end
    assert.same({ "from:int", col .. ":string", "ünï:double" }, codes)
    status, body = post({ table = HOSTILE_TABLE, filter = { ["!" .. col] = "x'; DROP TABLE types; --" } })
    assert.equals(200, status, body)
    local rows = rows_of(body)
    table.sort(rows, function(a, b) return a[1] < b[1] end)
    assert.same({ { 2, "", -1 }, { 3, "null", 0 }, { 4, "back\\slash", 2 } }, rows)
    status, body = post({ table = "v ü'\\", filter = { [">from"] = 2 } })
    assert.equals(200, status, body)
    assert.same({ { 3 }, { 4 } }, rows_of(body))
    -- a spelling the list does not give is unknown, whatever ClickHouse would make of it
    for _, code in ipairs({ "TYPES", "`types`", "bic.types", "system.users", "default.types", "system.one" }) do
      assert.equals(404, (post({ table = code })), code)
    end
    assert.same(before, srv:rows(checksum))
    assert.same({ "3" }, srv:rows("SELECT count() FROM types"))
  end)

  it("never shows the password: not in the banner, not in the log", function()
    local all = S.stdout(h) .. S.stderr(h)
    assert.is_nil(all:find(db.RO_PASSWORD, 1, true))
    assert.matches("clickhouse://" .. db.RO_USER .. "@127.0.0.1:" .. srv.port .. "/bic", all, 1, true)
  end)

  it("masks a password given in the URL, and refuses a wrong one saying why without it", function()
    local status, body, out = H.serve_with_password(srv)
    assert.equals(200, status, body)
    assert.is_nil(out:find(db.RO_PASSWORD, 1, true), out)
    assert.matches("clickhouse://" .. db.RO_USER .. ":***@127.0.0.1:" .. srv.port, out, 1, true)
    local rc, out2 = H.serve_refused(srv:url(db.RO_USER, "Wrong-Pw-77"))
    assert.equals(1, rc, out2)
    assert.matches("Wrong password for user " .. db.RO_USER, out2, 1, true)
    assert.is_nil(out2:find("Wrong-Pw-77", 1, true))
  end)

  it("refuses unknown URL options and bad choices, naming them", function()
    local sql = require "biconnector.sql"
    assert.same({ nil, 'clickhouse URL: unknown option "sslmode" (known: schemas, statement_timeout, '
      .. "connect_timeout, pool_size, uint64, composite, secure, ca_file, verify)" },
      { sql.parse_url("clickhouse://u@h/db?sslmode=require") })
    assert.same({ nil, 'clickhouse URL: uint64 expects int or string, got "text"' },
      { sql.parse_url("clickhouse://u@h/db?uint64=text") })
    local e, o = sql.parse_url("clickhouses://u:p@h/db?ca_file=/x.pem")
    assert.equals("clickhouse", e.engine)
    assert.equals("clickhouses://u@h/db", e.display(o))
    assert.equals("secure=1&ca_file=/x.pem", o.params)
  end)

  it("stops the server's query within a second when the client goes away mid-answer (1M rows)", function()
    local running = "SELECT count() FROM system.processes WHERE user = 'bic_ro' AND query LIKE '%FROM `big`%'"
    local c = S.send_data(h.port, TOKEN, "big")
    local first = assert(c:receive(65536 * 4))
    assert.matches("^HTTP/1.1 200", first)
    assert.same({ "1" }, srv:rows(running))
    c:close()
    local t0 = socket.gettime()
    assert.is_true(eventually(function() return srv:rows(running)[1] == "0" end), "the query still runs")
    local took = socket.gettime() - t0
    assert.is_true(took < 1, ("the query left system.processes %.2f s after the client"):format(took))
    -- and the server answers the next request
    assert.equals(200, (post({ table = "types" })))
  end)

  it("cuts an answer when the server fails mid-answer: never a short answer that looks whole", function()
    local file = os.tmpname() .. ".lua"
    local f = assert(io.open(file, "w"))
    f:write(("return require('biconnector.sql').connector({ url = %q, token = %q, queries = { boom = { sql = %q } } })")
      :format(srv:url(), TOKEN, "SELECT number AS n, throwIf(number = 150000) AS t FROM system.numbers "
        .. "LIMIT 200000 SETTINGS max_block_size = 1000"))
    f:close()
    local h2 = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0" }))
    local c = S.send_data(h2.port, TOKEN, "boom")
    local raw, _, partial = c:receive("*a")
    c:close()
    raw = raw or partial
    assert.is_nil(raw:find("\r\n0\r\n\r\n$"), "the answer looks whole")
    assert.is_nil(raw:find("150001", 1, true), "rows after the failure were served")
    local log = S.stderr(h2)
    S.stop(h2)
    os.remove(file)
    assert.matches("Value passed to 'throwIf' function is non zero", log, 1, true)
  end)

  it("serves the tables of the schemas= option as db.table, beside the URL's database's", function()
    srv:admin({ "CREATE DATABASE sales", "CREATE TABLE sales.q1 (id Int32, `ü` String) ENGINE = Memory",
      "INSERT INTO sales.q1 VALUES (1, 'a'), (2, 'b')" }, "default")
    -- listed beside the others, described, a filter pushed down
    H.check_sales_q1(srv, { "big", "dst", "sales.q1", HOSTILE_TABLE, "types", "v ü'\\" })
  end)

  it("works with a readonly=1 account (no setting sent), and says what it cannot do", function()
    local sql = require "biconnector.sql"
    local src = sql.source({ url = srv:url(db.RO_USER .. "1"), log = function() end })
    local fields = assert(src:describe("types"))
    local rows = src:data({ table = "types", select = { "id" }, fields = fields, limit = 2,
      filter = filter.parse({ ["%s"] = "NL" }, fields) })
    local enc = core.rows.new(fields, { 1 })
    repeat local _, done = rows:fill(enc, 65536) until done
    enc:finish()
    rows:close()
    src:close()
    assert.same({ { "id" }, { 1 } }, cjson.decode(enc:take()))
    local ok, err = pcall(function()
      return sql.source({ url = srv:url(db.RO_USER .. "1", nil, nil, "statement_timeout=5000"),
        log = function() end }):check()
    end)
    assert.is_false(ok)
    assert.matches("statement_timeout needs an account that may change settings", tostring(err.message or err), 1,
      true)
  end)

  it("answers the request after a server restart", function()
    assert.equals(200, (post({ table = "types" })))
    srv:restart()
    local status, body = post({ table = "types" })
    assert.equals(200, status, body)
    assert.equals(4, #cjson.decode(body))
  end)
end)
