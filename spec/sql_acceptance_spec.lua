-- Found by an acceptance test of `biconnector serve DATABASE-URL` played as
-- Bitrix24 plays it (protocol.md, sections 2 and 2.1) over loopback HTTP,
-- with form bodies (PHP brackets, Bitrix24's encoding) and JSON bodies: each
-- `describe` is one bug, checked on a real server.
local S = require "serve_helpers"
local H = require "sql_helpers"
local cjson = require "cjson"

local TOKEN = "acceptance-token"

-- The ids (first column) of an urlData answer, in order; the status and body otherwise.
local function ids(status, body)
  assert.equals(200, status, type(body) == "string" and body or cjson.encode(body))
  if type(body) == "string" then body = cjson.decode(body) end
  local out = {}
  for i = 2, #body do
    assert.equals(#body[1], #body[i])
    out[#out + 1] = body[i][1]
  end
  return out
end

local function form(port, text) return H.post_form(port, "/data", "table=pivot&select[]=id&" .. text, TOKEN) end

local function json(port, filter)
  return S.post_json(port, "/data", { connection = { token = TOKEN }, table = "pivot", select = { "id" },
    filter = filter })
end

-- A pivot's columns are named by years: PHP reads the key of filter[2024]=5
-- as the integer 2024, JSON's {"2024": 5} keeps the text, and the filter knew
-- only the text ("filter[2024]: neither a field condition nor a group").
describe("serve sqlite:// of a table whose field codes are integers' text (a pivot's years)", function()
  if not H.have_sqlite3("spec/sql_acceptance_spec.lua") then
    return it("needs the sqlite3 tool", function() pending(H.NO_SQLITE3) end)
  end
  local dir, h
  setup(function()
    dir = H.tmpdir()
    h = H.serve_sqlite(dir, "pivot.db", [[
      CREATE TABLE pivot (id INTEGER, "2024" INTEGER, "2025" REAL, "-1" TEXT, "1" TEXT);
      INSERT INTO pivot VALUES (1, 5, 1.5, 'a', 'x'), (2, 7, 2.5, 'b', 'y'), (3, NULL, 3.5, NULL, 'z');
    ]], TOKEN)
  end)
  teardown(function() H.stop(h, dir) end)

  it("reads filter[2024]=... in a form as the field 2024, as JSON's {\"2024\": ...}, in every shape", function()
    local cases = {
      { "filter[2024]=5", { ["2024"] = "5" }, { 1 } },
      { "filter[2024]=", { ["2024"] = cjson.null }, { 3 } },
      { "filter[-1]=b", { ["-1"] = "b" }, { 2 } },
      { "filter[1]=z", { ["1"] = "z" }, { 3 } },
      { "filter[2024][]=5&filter[2024][]=7", { ["2024"] = { "5", "7" } }, { 1, 2 } },
      { "filter[2024][1]=7&filter[2024][0]=5", { ["2024"] = { "5", "7" } }, { 1, 2 } },
      { "filter[2024][operator]=%3E&filter[2024][value]=5", { ["2024"] = { operator = ">", value = "5" } }, { 2 } },
      { "filter[2025][OPERATOR]=between&filter[2025][from]=2&filter[2025][to]=4",
        { ["2025"] = { operator = "between", from = "2", to = "4" } }, { 2, 3 } },
      { "filter[2024]=7&filter[%3E2025]=1", { ["2024"] = "7", [">2025"] = "1" }, { 2 } },
      { "filter[0][LOGIC]=OR&filter[0][2024]=5&filter[0][2025]=3.5",
        { { LOGIC = "OR", ["2024"] = "5", ["2025"] = "3.5" } }, { 1, 3 } },
    }
    for _, c in ipairs(cases) do
      assert.same(c[3], ids(form(h.port, c[1])), c[1])
      assert.same(c[3], ids(json(h.port, c[2])), c[1] .. " (JSON)")
    end
  end)

  it("still reads a list of groups under integer keys as groups, also where 1 is a field", function()
    -- PHP's list filter[0], filter[1] arrives keyed 1, 2: the field "1" must not take the group
    assert.same({ 1, 2 }, ids(form(h.port, "filter[0][LOGIC]=OR&filter[0][0][2024]=5&filter[0][1][2024]=7")))
    assert.same({ 2 }, ids(form(h.port, "filter[0][2024]=7&filter[1][2025]=2.5")))
  end)
end)

-- A connector file's fields renamed a column onto another column's code
-- (fields = {t = {i = {code = "s"}}} where t has a column s): the description
-- kept the first column under that code and left the other out without a
-- word; a code emptied by a rename was logged as column "" rather than by the
-- column's name.
describe("a connector file whose fields give a column another column's code, or an empty one", function()
  if not H.have_sqlite3("spec/sql_acceptance_spec.lua") then
    return it("needs the sqlite3 tool", function() pending(H.NO_SQLITE3) end)
  end
  local dir, h
  setup(function()
    dir = H.tmpdir()
    H.sqlite(dir .. "/t.db", [[
      CREATE TABLE t (id INTEGER, i INTEGER, d REAL, s TEXT);
      INSERT INTO t VALUES (1, 5, 1.5, 'a');
    ]])
    local f = assert(io.open(dir .. "/conn.lua", "w"))
    f:write(([[
      return require("biconnector.sql").connector { url = "sqlite://%s/t.db", token = %q,
        fields = { t = { i = { code = "s" }, d = { code = "" } } } }
    ]]):format(dir, TOKEN))
    f:close()
    h = S.start(S.serve_command({ dir .. "/conn.lua", "--listen", "127.0.0.1:0", "--workers", "1" }))
  end)
  teardown(function() H.stop(h, dir) end)

  it("serves the first column under the code and names the one left out, and the column whose code is empty", function()
    local status, fields = H.post_form(h.port, "/table_description", "table=t", TOKEN)
    assert.equals(200, status)
    local codes = {}
    for i, fd in ipairs(fields) do codes[i] = fd.code .. ":" .. fd.type end
    assert.same({ "id:int", "s:int" }, codes)
    local log = S.wait_stderr(h, 'column "s" is not served', true)
    assert.matches('table "t": column "s" is not served: its code "s" is already column "i"\'s', log, 1, true)
    assert.matches('table "t": column "d" is not served: its code is empty', log, 1, true)
  end)
end)

-- A connector file's datetime_offset = "+02:00" on PostgreSQL labelled the
-- timestamptz instants it read in UTC with +02:00: 15:01:55 UTC was answered
-- 2025-05-31T15:01:55+02:00, two hours off (MySQL's TIMESTAMP alike). The
-- session now runs at the offset: the instant is right, and a filter compares
-- the wall-clock time the answer shows.
local db = require "dbservers"
local OFFSET_TABLE = {
  postgresql = [[
    CREATE TABLE at (id int, tz timestamptz, ts timestamp);
    INSERT INTO at VALUES (1, '2025-05-31 15:01:55+00', '2025-05-31 15:01:55'), (2, '1970-01-01 00:00:01+00', NULL),
      (3, NULL, '2025-05-31 17:01:55');
    GRANT SELECT ON at TO bic_ro;]],
  mysql = [[
    SET time_zone = '+00:00';
    CREATE TABLE at (id int, tz timestamp NULL, ts datetime);
    INSERT INTO at VALUES (1, '2025-05-31 15:01:55', '2025-05-31 15:01:55'), (2, '1970-01-01 00:00:01', NULL),
      (3, NULL, '2025-05-31 17:01:55');]],
}
for _, engine in ipairs({ "postgresql", "mysql" }) do
  describe("datetime_offset = \"+02:00\" on a real " .. engine .. " server", function()
    local why = db.missing(engine)
    if why then
      local msg = db.skip(engine, why)
      return it("runs against a real " .. engine .. " server", function() pending(msg) end)
    end
    local srv, dir, h
    setup(function()
      srv = db.start(engine)
      srv:admin(OFFSET_TABLE[engine])
      dir = H.tmpdir()
      local f = assert(io.open(dir .. "/conn.lua", "w"))
      f:write(([[
        return require("biconnector.sql").connector { url = %q, token = %q, datetime_offset = "+02:00" }
      ]]):format(srv:url(), TOKEN))
      f:close()
      h = S.start(S.serve_command({ dir .. "/conn.lua", "--listen", "127.0.0.1:0", "--workers", "1" }))
    end)
    teardown(function()
      H.stop(h, dir)
      if srv then srv:stop() end
    end)

    local function rows(extra)
      local status, body = H.post_form(h.port, "/data", "table=at&" .. (extra or ""), TOKEN)
      assert.equals(200, status, type(body) == "string" and body or cjson.encode(body))
      for _, r in ipairs(body) do for i = 1, #r do if r[i] == cjson.null then r[i] = "null" end end end
      return body
    end

    it("answers an instant column's values at the offset, the same instants, and filters on the time shown", function()
      assert.same({ { "id", "tz", "ts" },
        { 1, "2025-05-31T17:01:55+02:00", "2025-05-31T15:01:55+02:00" },
        { 2, "1970-01-01T02:00:01+02:00", "null" },
        { 3, "null", "2025-05-31T17:01:55+02:00" } }, rows("filter[%3Eid]=0"))
      assert.same({ 1 }, ids(200, rows("select[]=id&filter[tz]=2025-05-31+17:01:55")))
      assert.same({ 1, 3 }, ids(200, rows("select[]=id&filter[!tz]=1970-01-01+02:00:01")))
      assert.same({ 2 }, ids(200, rows("select[]=id&filter[%3Ctz]=1970-01-01+02:00:02")))
      assert.same({ 3 }, ids(200, rows("select[]=id&filter[ts]=2025-05-31+17:01:55")))
    end)

    it("still answers with an offset the server refuses as a session zone (MariaDB: beyond +13:00)", function()
      local f = assert(io.open(dir .. "/far.lua", "w"))
      f:write(([[
        return require("biconnector.sql").connector { url = %q, token = %q, datetime_offset = "+14:00" }
      ]]):format(srv:url(), TOKEN))
      f:close()
      local far = S.start(S.serve_command({ dir .. "/far.lua", "--listen", "127.0.0.1:0", "--workers", "1" }))
      local status, body = H.post_form(far.port, "/data", "table=at&select[]=id&filter[id]=1", TOKEN)
      S.stop(far)
      assert.equals(200, status, type(body) == "string" and body or cjson.encode(body))
      assert.same({ { "id" }, { 1 } }, body)
    end)
  end)
end
