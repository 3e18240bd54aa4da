-- core.sql over a real SQLite file (made with the sqlite3 command-line tool):
-- open, bound parameters, fetch, fill into the urlData encoder, read-only,
-- errors, the hand-over between Lua states.
local core = require "biconnector.core"
local json = require "biconnector.json"

local helpers = require "helpers"
local sh = helpers.sh

local function has_sqlite3()
  return sh("command -v sqlite3 >/dev/null 2>&1")
end

local function tmpdir() return helpers.tmpdir("sql") end

local function make_db(path, sql)
  local p = assert(io.popen("sqlite3 '" .. path .. "'", "w"))
  p:write(sql)
  assert(p:close())
end

local function decode(text) return assert(json.decode(text)) end

describe("core.sql (sqlite)", function()
  local dir, db
  setup(function()
    if not has_sqlite3() then return end
    dir = tmpdir()
    db = dir .. "/t.db"
    make_db(db, [[
      CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, price REAL, born DATE, seen DATETIME, data BLOB);
      INSERT INTO t VALUES (1, 'Ann', 1.5, '2024-01-31', '2024-01-31 10:20:30', x'00ff');
      INSERT INTO t VALUES (2, 'Борис', NULL, NULL, '2024-02-01T08:00:00Z', NULL);
      INSERT INTO t VALUES (3, 'x''y', 3, 'not a date', 1700000000, 'text');
    ]])
  end)
  teardown(function()
    helpers.rmdir(dir)
  end)
  before_each(function()
    if not has_sqlite3() then
      io.stderr:write("\n*** SKIPPED: the sqlite3 command-line tool is missing\n")
      pending("SKIPPED: sqlite3 command-line tool missing")
    end
  end)

  it("lists sqlite among the engines of this build", function()
    local found = false
    for _, e in ipairs(core.sql.engines) do if e == "sqlite" then found = true end end
    assert.is_true(found)
  end)

  it("refuses an unknown engine, naming the ones it has", function()
    local c, err = core.sql.open("oracle", {})
    assert.is_nil(c)
    assert.matches('unknown database engine "oracle" %(this build has: sqlite', err)
  end)

  it("says why a file cannot be opened", function()
    local c, err = core.sql.open("sqlite", { path = dir .. "/missing.db" })
    assert.is_nil(c)
    assert.equals("cannot open database " .. dir .. "/missing.db: No such file or directory", err)
    c, err = core.sql.open("sqlite", { path = dir })
    assert.is_nil(c)
    assert.matches("it is a directory", err)
    local f = assert(io.open(dir .. "/junk.db", "w"))
    f:write(string.rep("this is not a database\n", 200))
    f:close()
    c, err = core.sql.open("sqlite", { path = dir .. "/junk.db" })
    assert.is_nil(c)
    assert.matches("cannot open database .*junk.db: file is not a database", err)
    c, err = core.sql.open("sqlite", {})
    assert.is_nil(c)
    assert.equals("sqlite: no database file given", err)
  end)

  it("checks option types", function()
    assert.has_error(function() core.sql.open("sqlite", { path = {} }) end,
      "option 'path' is a table, expected a string")
    assert.has_error(function() core.sql.open("sqlite", { path = db .. "\0x" }) end,
      "option 'path' contains a zero byte")
    assert.has_error(function() core.sql.open("sqlite", { path = db, busy_timeout_ms = "x" }) end,
      "option 'busy_timeout_ms' is a string, expected a number")
    local ok, err = pcall(core.sql.open, "sqlite", { path = db, busy_timeout_ms = 0 / 0 })
    assert.is_false(ok)
    assert.matches("option 'busy_timeout_ms' is %S+, expected %-2147483648%S* to 2147483647", err)
    assert.has_error(function() core.sql.open("sqlite", { path = db, read_only = 0 }) end,
      "option 'read_only' is a number, expected a boolean")
  end)

  it("runs a query with bound parameters and fetches rows", function()
    local c = assert(core.sql.open("sqlite", { path = db }))
    assert.equals("sqlite", c:engine())
    local cur = assert(c:query("SELECT id, name, price FROM t WHERE id >= ? AND name <> ? ORDER BY id",
      { 2, "nobody" }))
    assert.same({ { name = "id", type = "INTEGER" }, { name = "name", type = "TEXT" },
      { name = "price", type = "REAL" } }, cur:columns())
    local r = cur:fetch()
    assert.equals(2, r[1]); assert.equals("Борис", r[2]); assert.is_nil(r[3])
    r = cur:fetch()
    assert.equals(3, r[1]); assert.equals("x'y", r[2]); assert.equals(3, r[3])
    assert.is_nil(cur:fetch())
    assert.is_true(cur:done())
    cur:close()
    cur:close() -- twice is fine
    assert.has_error(function() cur:fetch() end)
    c:close()
  end)

  it("binds nil (with params.n), booleans, floats and text that looks like SQL", function()
    local c = assert(core.sql.open("sqlite", { path = db }))
    local cur = assert(c:query("SELECT ? IS NULL, ?, ?, ?", { n = 4, nil, true, 2.5, "'; DROP TABLE t; --" }))
    local r = cur:fetch()
    assert.equals(1, r[1]); assert.equals(1, r[2]); assert.equals(2.5, r[3]); assert.equals("'; DROP TABLE t; --", r[4])
    cur:close()
    cur = assert(c:query("SELECT count(*) FROM t"))
    assert.equals(3, cur:fetch()[1])
    cur:close()
    c:close()
  end)

  it("refuses writes, several statements and a wrong parameter count", function()
    local c = assert(core.sql.open("sqlite", { path = db }))
    local cur, err = c:query("DELETE FROM t")
    assert.is_nil(cur)
    assert.equals("only statements that read are allowed", err)
    cur, err = c:query("SELECT 1; DELETE FROM t")
    assert.is_nil(cur)
    assert.equals("one SQL statement only (more text follows the first)", err)
    cur, err = c:query("SELECT ?", {})
    assert.is_nil(cur)
    assert.equals("the statement has 1 parameters, 0 given", err)
    cur, err = c:query("SELECT nope FROM t")
    assert.is_nil(cur)
    assert.equals("no such column: nope", err)
    cur = c:query("PRAGMA query_only = 0")
    if cur then cur:fetch() cur:close() end
    cur = assert(c:query("SELECT count(*) FROM t"))
    assert.equals(3, cur:fetch()[1])
    cur:close()
    c:close()
    assert.has_error(function() c:query("SELECT 1") end)
  end)

  it("fills the urlData encoder in C, converting by field type", function()
    local c = assert(core.sql.open("sqlite", { path = db }))
    local fields = {
      { code = "id", type = "int" }, { code = "name", type = "string" }, { code = "price", type = "double" },
      { code = "born", type = "date" }, { code = "seen", type = "datetime" },
    }
    local enc = core.rows.new(fields)
    local cur = assert(c:query("SELECT id, name, price, born, seen FROM t ORDER BY id"))
    local added, done, nulled, col, why = cur:fill(enc, 1048576)
    assert.equals(3, added)
    assert.is_true(done)
    assert.equals(1, nulled) -- 'not a date'
    assert.equals(4, col)
    assert.equals('expected a date (YYYY-MM-DD or a time number), got text "not a date"', why)
    enc:finish()
    assert.same({
      { "id", "name", "price", "born", "seen" },
      { 1, "Ann", 1.5, "2024-01-31", "2024-01-31 10:20:30" },
      { 2, "Борис", json.null, json.null, "2024-02-01 08:00:00" },
      { 3, "x'y", 3, json.null, "2023-11-14 22:13:20" },
    }, decode(enc:take()))
    assert.equals(3, enc:count())
    -- a finished cursor adds nothing more
    assert.equals(0, (cur:fill(core.rows.new(fields), 10)))
    cur:close()
    c:close()
  end)

  it("stops filling once max_bytes are pending, and resumes", function()
    local c = assert(core.sql.open("sqlite", { path = db }))
    local enc = core.rows.new({ { code = "id", type = "int" } })
    local cur = assert(c:query(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) SELECT i FROM n"))
    local total, rounds = 0, 0
    while true do
      local added, done = cur:fill(enc, 100)
      assert.is_true(enc:pending() < 100 + 20)
      enc:take()
      total = total + added
      rounds = rounds + 1
      if done then break end
    end
    assert.equals(1000, total)
    assert.is_true(rounds > 10)
    cur:close()
    c:close()
  end)

  it("writes a BLOB that is not UTF-8 as null and one that is as text", function()
    local c = assert(core.sql.open("sqlite", { path = db }))
    local enc = core.rows.new({ { code = "data", type = "string" } })
    local cur = assert(c:query("SELECT data FROM t ORDER BY id"))
    local added, _, nulled, col, why = cur:fill(enc)
    assert.equals(3, added); assert.equals(1, nulled); assert.equals(1, col)
    assert.equals("expected a string, got invalid UTF-8 (a BLOB)", why)
    enc:finish()
    assert.same({ { "data" }, { json.null }, { json.null }, { "text" } }, decode(enc:take()))
    cur:close()
    c:close()
  end)

  it("refuses an encoder of another width", function()
    local c = assert(core.sql.open("sqlite", { path = db }))
    local cur = assert(c:query("SELECT id, name FROM t"))
    assert.has_error(function() cur:fill(core.rows.new({ { code = "id", type = "int" } })) end,
      "the encoder has 1 columns, the cursor 2")
    local enc = core.rows.new({ { code = "id", type = "int" }, { code = "n", type = "string" } })
    enc:finish()
    assert.has_error(function() cur:fill(enc) end)
    cur:close()
    c:close()
  end)

  it("keeps the connection while a cursor is open, and hands a cursor over by id", function()
    local c = assert(core.sql.open("sqlite", { path = db }))
    local cur = assert(c:query("SELECT id FROM t ORDER BY id"))
    c:close()
    assert.equals(1, cur:fetch()[1])
    local id = cur:detach()
    assert.has_error(function() cur:fetch() end)
    local back = assert(core.sql.attach(id))
    assert.equals(2, back:fetch()[1])
    local again, err = core.sql.attach(id)
    assert.is_nil(again); assert.equals("no such detached cursor", err)
    id = back:detach()
    assert.is_true(core.sql.discard(id))
    assert.is_false(core.sql.discard(id))
    collectgarbage()
  end)

  it("says a locked database is locked after the busy timeout", function()
    local lockdb = dir .. "/locked.db"
    make_db(lockdb, "CREATE TABLE a (x); INSERT INTO a VALUES (1);")
    local out = dir .. "/locker.out"
    -- a writer holding an exclusive lock until its standard input closes
    local w = assert(io.popen("sqlite3 '" .. lockdb .. "' > '" .. out .. "'", "w"))
    w:write("BEGIN EXCLUSIVE;\nDELETE FROM a;\n.print locked\n")
    w:flush()
    local c = assert(core.sql.open("sqlite", { path = lockdb, busy_timeout_ms = 50 }))
    local seen = false
    for _ = 1, 500 do
      local f = io.open(out)
      if f then seen = f:read("*a"):find("locked") ~= nil f:close() end
      if seen then break end
      core.process.sleep(0.01)
    end
    assert.is_true(seen)
    local cur, err = c:query("SELECT x FROM a")
    local r
    if cur then r, err = cur:fetch() cur:close() end
    assert.is_nil(r)
    assert.equals("database is locked", err)
    w:write("ROLLBACK;\n")
    w:close()
    cur = assert(c:query("SELECT x FROM a"))
    assert.equals(1, cur:fetch()[1])
    cur:close()
    c:close()
  end)
end)
