-- The largest filters the caps let through (docs/filter.md, "Limits") run on
-- every engine, pushed down whole, and answer the rows filter.match selects;
-- the next size up is a 400 naming the cap, never a 500 from the engine:
-- SQLite (a file: its limits of 32766 bound parameters, expressions 1000 deep
-- and LIKE patterns of 50000 bytes), PostgreSQL and MariaDB (servers the spec
-- starts, 65535 parameters each). Once with the default caps (`biconnector
-- serve URL`), once with the maxima a connector file may set
-- (filter_limits = filter.MAX_LIMITS): 20,000 bound parameters from one list
-- or one OR group on a date column, which every engine writes as ranges. A
-- WHERE past 2 MiB (possible only with raised limits) is matched in memory.
local db = require "dbservers"
local S = require "serve_helpers"
local H = require "sql_helpers"
local filter = require "biconnector.filter"
local cjson = require "cjson"

local JSON = { ["Content-Type"] = "application/json" }
local ROWS = 300
local DAY0 = 946684800 -- 2000-01-01 UTC

local function day(i) return os.date("!%Y-%m-%d", DAY0 + i * 86400) end
local function moment(i) return os.date("!%Y-%m-%d %H:%M:%S", DAY0 + i * 86400 + 3600) end
local NEEDLE = ("n%_!"):rep(4096) -- 16384 bytes, each % _ ! escaped in SQL: a 32770-byte pattern

-- The table: id, name (one holds the longest needle), d (date), ts (datetime);
-- on SQLite also ep, a DATETIME column of Unix seconds (pushed down as ranges).
local function table_sql(engine)
  local types = {
    sqlite = { "INTEGER PRIMARY KEY", "TEXT", "DATE", "DATETIME" },
    postgresql = { "integer PRIMARY KEY", "text", "date", "timestamp" },
    mysql = { "int PRIMARY KEY", "longtext", "date", "datetime" },
  }
  local t = types[engine]
  local out = { ("CREATE TABLE big (id %s, name %s, d %s, ts %s%s);"):format(t[1], t[2], t[3], t[4],
    engine == "sqlite" and ", ep DATETIME" or "") }
  for i = 1, ROWS do
    local name = i == 7 and ("x" .. NEEDLE .. "y") or ("name " .. i)
    if engine == "mysql" then name = name:gsub("\\", "\\\\") end
    out[#out + 1] = ("INSERT INTO big VALUES (%d, '%s', '%s', '%s'%s);"):format(i, name, day(i * 7), moment(i * 7),
      engine == "sqlite" and (", %d"):format(DAY0 + i * 7 * 86400 + 3600) or "")
  end
  return table.concat(out, "\n")
end

local function range(n, f)
  local t = {}
  for i = 1, n do t[i] = f(i) end
  return t
end

-- One OR group of n conditions, each in a group of its own (style A nesting).
local function or_group(n, f)
  local g = { LOGIC = "OR" }
  for i = 1, n do g[tostring(i)] = f(i) end
  return { g }
end

-- A filter nested `depth` groups deep around cond, ORs and ANDs in turn,
-- each with a condition that leaves cond's answer as it is.
local function nested(depth, cond)
  local node = cond
  for i = 2, depth do
    if i % 2 == 0 then node = { LOGIC = "OR", node, { ["<id"] = 0 } }
    else node = { LOGIC = "AND", node, { [">id"] = 0 } } end
  end
  return node
end

for _, engine in ipairs({ "sqlite", "postgresql", "mysql" }) do
  describe("the largest filters the caps allow, on " .. engine, function()
    local why
    if engine == "sqlite" then
      why = not H.have_sqlite3("sql_filter_limits_spec") and "the sqlite3 command-line tool is missing" or nil
    else
      why = db.missing(engine)
    end
    if why then
      local msg = engine == "sqlite" and ("SKIPPED: " .. why) or db.skip(engine, why)
      return it("runs on " .. engine, function() pending(msg) end)
    end
    local dir, srv, url, plain, maxed, all, fields

    setup(function()
      dir = H.tmpdir()
      if engine == "sqlite" then
        H.sqlite(dir .. "/big.db", table_sql("sqlite"))
        url = "sqlite://" .. dir .. "/big.db"
      else
        srv = db.start(engine)
        srv:admin(table_sql(engine))
        if engine == "postgresql" then srv:admin("GRANT SELECT ON big TO bic_ro;") end
        url = srv:url()
      end
      local file = io.open(dir .. "/maxed.lua", "w")
      file:write(("return require('biconnector.sql').connector { url = %q, "
        .. "filter_limits = require('biconnector.filter').MAX_LIMITS }\n"):format(url))
      file:close()
      plain = S.start(S.serve_command({ url, "--listen", "127.0.0.1:0", "--no-auth", "--workers", "1" }))
      maxed = S.start(S.serve_command({ dir .. "/maxed.lua", "--listen", "127.0.0.1:0", "--workers", "1" }))
      local r = assert(S.request(plain.port, "POST", "/table_description", cjson.encode({ table = "big" }), JSON))
      fields = cjson.decode(r.body)
      r = assert(S.request(plain.port, "POST", "/data", cjson.encode({ table = "big" }), JSON))
      all = {}
      local rows = cjson.decode(r.body)
      for i = 2, #rows do
        local m = {}
        for j, f in ipairs(fields) do m[f.code] = rows[i][j] end
        all[#all + 1] = m
      end
      assert.equals(ROWS, #all)
    end)
    teardown(function()
      if plain then S.stop(plain) end
      if maxed then S.stop(maxed) end
      if srv then srv:stop() end
      H.rmdir(dir)
    end)

    -- The ids /data answers for the filter, and those filter.match selects.
    local function check(h, raw, limits)
      local r = assert(S.request(h.port, "POST", "/data", cjson.encode({ table = "big", filter = raw,
        select = { "id" } }), JSON))
      assert.equals(200, r.status, r.body:sub(1, 300))
      local got = {}
      for i, row in ipairs(cjson.decode(r.body)) do if i > 1 then got[#got + 1] = row[1] end end
      table.sort(got)
      local ast = assert(filter.parse(cjson.decode(cjson.encode(raw)), fields, limits))
      local want = {}
      for _, row in ipairs(all) do if filter.match(ast, row) then want[#want + 1] = row.id end end
      assert.same(want, got)
      return #got
    end
    local function refused(h, raw, message)
      local r = assert(S.request(h.port, "POST", "/data", cjson.encode({ table = "big", filter = raw }), JSON))
      assert.equals(400, r.status, r.body:sub(1, 300))
      assert.equals(message, cjson.decode(r.body).message)
    end

    local L, M = filter.LIMITS, filter.MAX_LIMITS
    local date_field = engine == "sqlite" and "ep" or "ts"

    it("runs the largest list, OR group, LIKE value and nesting of the default caps, and refuses more", function()
      assert.equals(ROWS, check(plain, { ["@id"] = range(L.list, function(i) return i - 2000 + ROWS end) }))
      assert.is_true(check(plain, { ["!@d"] = range(L.list, function(i) return day(2 * i) end) }) > 0)
      assert.is_true(check(plain, or_group(L.conditions, function(i) return { [date_field] = moment(i) } end)) > 0)
      assert.equals(1, check(plain, { ["%name"] = NEEDLE:sub(1, L.like) }))
      assert.equals(1, check(plain, { ["=%name"] = "x" .. ("n%_!"):rep(255) .. "%" }))
      assert.is_true(check(plain, nested(32, { ["@id"] = range(L.conditions - 31, function(i) return i end) })) > 0)
      refused(plain, { ["@id"] = range(L.list + 1, function(i) return i end) },
        "filter[@id]: a list of 5001 values is over the limit of 5000 values (filter_limits.list)")
      refused(plain, or_group(L.conditions + 1, function(i) return { [date_field] = moment(i) } end),
        "filter: 5001 conditions (a list of n values counting n) are over the limit of 5000 (filter_limits.conditions)")
      refused(plain, { ["%name"] = NEEDLE:sub(1, L.like + 1) },
        "filter[%name]: a LIKE value of 1025 bytes is over the limit of 1024 bytes (filter_limits.like)")
      local r = assert(S.request(plain.port, "POST", "/data", cjson.encode({ table = "big",
        filter = nested(33, { id = 1 }) }), JSON))
      assert.equals(400, r.status)
      assert.matches("groups nest deeper than 32 levels", cjson.decode(r.body).message, 1, true)
    end)

    it("runs the largest filters of the maxima a connector may set: 20,000 parameters, a 32770-byte pattern", function()
      local lists = range(M.list, function(i) return moment(2 * i) end) -- the even days: about half the rows
      assert.is_true(check(maxed, { ["@" .. date_field] = lists }, M) > 0)
      assert.is_true(check(maxed, { ["!@" .. date_field] = lists }, M) > 0)
      assert.is_true(check(maxed, or_group(M.conditions, function(i) return { [date_field] = moment(i) } end), M) > 0)
      assert.equals(1, check(maxed, { ["%name"] = NEEDLE }, M))
      assert.equals(ROWS, check(maxed, { ["!%name"] = NEEDLE, LOGIC = "OR", ["%name"] = NEEDLE }, M))
      refused(maxed, { ["@id"] = range(M.list + 1, function(i) return i end) },
        "filter[@id]: a list of 10001 values is over the limit of 10000 values (filter_limits.list)")
      refused(maxed, { ["%name"] = NEEDLE .. "x" },
        "filter[%name]: a LIKE value of 16385 bytes is over the limit of 16384 bytes (filter_limits.like)")
    end)

    it("pushes those filters down whole (one statement, within the engine's parameters)", function()
      local traced
      local src = require("biconnector.sql").source({ url = url, log = function() end,
        trace = function(sql, params) traced = { sql, params } end })
      local described = assert(src:describe("big"))
      local function pushed(raw, limits)
        local ast = assert(filter.parse(raw, described, limits))
        local rows, applied, close = src:data({ table = "big", select = { "id" }, filter = ast, fields = described })
        if type(rows) == "table" and rows.close then rows:close() elseif close then close() end
        assert.is_true(applied.filter, traced[1]:sub(1, 200))
        return #traced[2]
      end
      assert.equals(2 * M.list, pushed({ ["@" .. date_field] = range(M.list, function(i) return moment(i) end) }, M))
      assert.equals(2 * M.conditions,
        pushed(or_group(M.conditions, function(i) return { [date_field] = moment(i) } end), M))
      assert.equals(1, pushed({ ["%name"] = NEEDLE }, M))
      -- SQLite's d holds date text, compared as it is; the servers' dates are ranges
      assert.equals((engine == "sqlite" and 1 or 2) * L.list,
        pushed({ ["!@d"] = range(L.list, function(i) return day(i) end) }))
      -- past 2 MiB of SQL text and parameters (130 LIKE values of 16 KiB, escaped
      -- to 32 KiB each): not sent, matched in memory, the same rows
      local raw = or_group(130, function(i) return { ["%name"] = NEEDLE:sub(1, -2) .. ("!abcdefghij"):sub(i % 11 + 1, i % 11 + 1) } end)
      local ast = assert(filter.parse(raw, described, M))
      local rows, applied, close = src:data({ table = "big", select = { "id" }, filter = ast, fields = described })
      assert.is_false(applied.filter)
      assert.is_nil(traced[1]:find("WHERE", 1, true))
      local ids = {}
      for row in rows do if filter.match(ast, row) then ids[#ids + 1] = row.id end end
      close()
      assert.same({ 7 }, ids)
      src:close()
    end)
  end)
end
