-- Datetimes with an offset (2024-08-30T12:19:57+02:00, the urlData example of
-- b24restdocs connector/index.md) when a connector declares `datetime_offset`,
-- and of SQL sources (PostgreSQL timestamptz): the row encoder (core.rows, C),
-- a connector file served by `biconnector serve` and checked by verify, SQLite
-- through the C cursor path and the worker-thread path, a real PostgreSQL. The
-- default stays "YYYY-MM-DD HH:MM:SS".
local core = require "biconnector.core"
local json = require "biconnector.json"
local S = require "serve_helpers"
local H = require "sql_helpers"

local FIELDS = { { code = "at", type = "datetime" }, { code = "day", type = "date" } }

local function encode(rows, offset)
  local enc = core.rows.new(FIELDS, nil, offset and { datetime_offset = offset } or nil)
  for _, row in ipairs(rows) do assert(enc:add(row)) end
  enc:finish()
  local out = json.decode(enc:take())
  enc:close()
  table.remove(out, 1)
  return out
end

-- POSTs a form body to a connector object's endpoint (in process); -> status, decoded answer.
local function ask(c, path, body)
  local status, answer = require("helpers").post_form(c, path, body)
  return status, json.decode(answer)
end

describe("core.rows datetime_offset", function()
  -- value, offset (nil: the default), what the datetime column answers
  local cases = {
    { "2024-08-30 12:19:57", nil, "2024-08-30 12:19:57" },
    { "2024-08-30T12:19:57+05:00", nil, "2024-08-30 12:19:57" },
    { 1725013197, nil, "2024-08-30 10:19:57" },
    { "2024-08-30 12:19:57", "+02:00", "2024-08-30T12:19:57+02:00" },   -- no zone: at the declared offset
    { "2024-08-30T12:19:57+05:00", "+02:00", "2024-08-30T12:19:57+05:00" }, -- its own zone kept
    { "2024-08-30T12:19:57.250-0330", "+02:00", "2024-08-30T12:19:57-03:30" },
    { "2024-08-30T12:19:57Z", "+02:00", "2024-08-30T12:19:57+00:00" },
    { 1725013197, "+02:00", "2024-08-30T12:19:57+02:00" },             -- an instant, shown at the offset
    { 1725013197, "-05:30", "2024-08-30T04:49:57-05:30" },
    { 1725013197, "Z", "2024-08-30T10:19:57+00:00" },
    { { year = 2024, month = 8, day = 30, hour = 12, min = 19, sec = 57 }, "+02:00", "2024-08-30T12:19:57+02:00" },
    { "30.08.2024 12:19:57", "+01:00", "2024-08-30T12:19:57+01:00" },
  }
  for _, c in ipairs(cases) do
    it(("%s at %s -> %s"):format(json.encode(c[1]), tostring(c[2]), c[3]), function()
      assert.equal(c[3], encode({ { at = c[1] } }, c[2])[1][1])
    end)
  end

  it("leaves dates alone, keeps null, and compares wall-clock times for the filter (normalize)", function()
    local out = encode({ { at = json.null, day = "2024-08-30T23:30:00-02:00" }, { day = 1725013197 } }, "+09:00")
    assert.equal(json.null, out[1][1])
    assert.equal("2024-08-30", out[1][2])
    assert.equal("2024-08-30", out[2][2])
    local enc = core.rows.new(FIELDS, nil, { datetime_offset = "+09:00" })
    assert.same({ at = "2024-08-30 12:19:57" }, enc:normalize({ at = "2024-08-30T12:19:57+05:00" }))
    enc:close()
  end)

  it("refuses an offset it cannot write", function()
    for _, bad in ipairs({ "+2", "+24:00", "02:00", "+02:60", true, 120 }) do
      local ok, err = pcall(core.rows.new, FIELDS, nil, { datetime_offset = bad })
      assert.is_false(ok, tostring(bad))
      assert.matches('datetime_offset must be "%+HH:MM", "%-HH:MM" or "Z"', err)
    end
  end)
end)

describe("a connector declaring datetime_offset", function()
  local file, server
  setup(function()
    file = os.tmpname() .. ".lua"
    local f = assert(io.open(file, "w"))
    f:write([[
return require("biconnector").connector {
  title = "Offsets", settings = {}, check = function() return true end,
  datetime_offset = "+02:00",
  tables = { { code = "events", title = "Events" } },
  describe = { events = { { code = "id", name = "ID", type = "int" }, { code = "at", name = "At", type = "datetime" } } },
  data = function()
    return { { id = 1, at = "2024-08-30 12:19:57" }, { id = 2, at = 1725013197 }, { id = 3, at = "2024-08-30T09:00:00+05:00" } }
  end,
}
]])
    f:close()
    server = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0" }))
  end)
  teardown(function()
    if server then S.stop(server) end
    os.remove(file)
  end)

  it("answers urlData with offsets over HTTP, and verify accepts them", function()
    local r = assert(S.request(server.port, "POST", "/data", "table=events", { ["Content-Type"] = "application/x-www-form-urlencoded" }))
    assert.equal(200, r.status, r.body)
    assert.same({ { "id", "at" }, { 1, "2024-08-30T12:19:57+02:00" }, { 2, "2024-08-30T12:19:57+02:00" },
      { 3, "2024-08-30T09:00:00+05:00" } }, json.decode(r.body))
    -- a filter still compares the wall-clock time as written
    r = assert(S.request(server.port, "POST", "/data", "table=events&filter[%3E%3Dat]=2024-08-30%2012:00:00",
      { ["Content-Type"] = "application/x-www-form-urlencoded" }))
    assert.same({ { "id", "at" }, { 1, "2024-08-30T12:19:57+02:00" }, { 2, "2024-08-30T12:19:57+02:00" } },
      json.decode(r.body))
    local report = require("biconnector.verify").run("http://127.0.0.1:" .. server.port, { allow_local = true })
    assert(report.ok and report.summary.WARN == 0, require("biconnector.verify").format(report))
  end)

  it("a definition's offset is checked when it loads", function()
    local connector = require "biconnector.connector"
    local def = { title = "x", settings = {}, check = function() return true end, tables = {}, describe = {},
      data = function() return {} end }
    for _, good in ipairs({ true, "Z", "+02:00", "-11:30", "+23:59" }) do
      def.datetime_offset = good
      assert(connector.new(def))
    end
    for _, bad in ipairs({ "+2", "+24:00", "UTC", 2, false }) do
      def.datetime_offset = bad
      local ok, err = pcall(connector.new, def)
      assert.is_false(ok, tostring(bad))
      assert.matches('connector definition: datetime_offset must be true %(UTC%) or "%+HH:MM", "%-HH:MM", "Z"', err)
    end
  end)
end)

describe("a SQL source with datetime_offset", function()
  if not H.have_sqlite3("datetime_offset_spec.lua") then
    it("needs the sqlite3 tool", function() pending("SKIPPED: the sqlite3 command-line tool is missing") end)
    return
  end
  local dir, db
  setup(function()
    dir = H.tmpdir()
    db = dir .. "/events.db"
    H.sqlite(db, [[CREATE TABLE events (id INTEGER, at DATETIME, note TEXT);
      INSERT INTO events VALUES (1, '2024-08-30 12:19:57', 'a'), (2, '2024-08-30T12:19:57+05:00', 'b'), (3, NULL, 'c');]])
  end)
  teardown(function() H.rmdir(dir) end)

  it("writes its datetimes with the offset, through the C cursor on a job's thread and the filtering path", function()
    local sql = require "biconnector.sql"
    local c = sql.connector({ url = "sqlite://" .. db, datetime_offset = "+03:00" })
    local plain = sql.connector({ url = "sqlite://" .. db })
    finally(function() c.source:close() plain.source:close() end) -- busted keeps one finally per test
    local status, rows = ask(c, "/data", "table=events&select[]=id&select[]=at")
    assert.equal(200, status)
    assert.same({ { "id", "at" }, { 1, "2024-08-30T12:19:57+03:00" }, { 2, "2024-08-30T12:19:57+05:00" }, { 3, json.null } }, rows)
    -- a filter on a column SQLite cannot compare exactly: rows go through the framework's encoder
    status, rows = ask(c, "/data", "table=events&select[]=id&select[]=at&filter[%25note]=b")
    assert.equal(200, status)
    assert.same({ { "id", "at" }, { 2, "2024-08-30T12:19:57+05:00" } }, rows)
    -- (the /data answers above are encoded on a core.sql job's thread: under nginx too, docs/database.md)
    -- without the option: the default
    status, rows = ask(plain, "/data", "table=events&select[]=at")
    assert.equal(200, status)
    assert.same({ { "at" }, { "2024-08-30 12:19:57" }, { "2024-08-30 12:19:57" }, { json.null } }, rows)
  end)
end)

describe("PostgreSQL timestamptz with datetime_offset = true", function()
  local dbs = require "dbservers"
  local why = dbs.missing("postgresql")
  if why then
    local msg = dbs.skip("postgresql", why)
    return it("runs against a real server", function() pending(msg) end)
  end
  local pg
  setup(function()
    pg = dbs.start("postgresql")
    pg:admin([[CREATE TABLE events (id int, at timestamptz, naive timestamp);
      INSERT INTO events VALUES (1, '2024-08-30 12:19:57+02', '2024-08-30 12:19:57'), (2, NULL, NULL);
      GRANT SELECT ON ALL TABLES IN SCHEMA public TO bic_ro;]])
  end)
  teardown(function() if pg then pg:stop() end end)

  it("answers the instants exactly, in UTC with +00:00", function()
    local sql = require "biconnector.sql"
    local c = sql.connector({ url = pg:url(), datetime_offset = true })
    local plain = sql.connector({ url = pg:url() })
    finally(function() c.source:close() plain.source:close() end)
    local status, rows = ask(c, "/data", "table=events")
    assert.equal(200, status, json.encode(rows))
    assert.same({ { "id", "at", "naive" }, { 1, "2024-08-30T10:19:57+00:00", "2024-08-30T12:19:57+00:00" },
      { 2, json.null, json.null } }, rows)
    status, rows = ask(plain, "/data", "table=events&select[]=at")
    assert.equal(200, status)
    assert.same({ { "at" }, { "2024-08-30 10:19:57" }, { json.null } }, rows)
  end)
end)
