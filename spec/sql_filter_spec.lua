-- Filter pushdown over a real SQLite file: for 400 generated filters (both
-- styles, every operator, nested AND/OR, NULLs, dates in every spelling,
-- % _ ! \ quotes and UTF-8 in values), the rows `biconnector serve
-- sqlite:///...` serves equal the rows filter.match selects over the whole
-- table; the SQL text never holds a filter value (bound parameters only); the
-- per-node fallback to match gives the same rows; an injection attempt changes
-- nothing and the file is never written. The table has date columns in every
-- storage SQLite allows (spec/sql_filter_cases.lua): those whose stored values
-- all have one form (canonical text, or Unix seconds) push down, the others
-- are matched in memory, and the answer is the same; a write that spoils a
-- column's form is seen at the next request.
local S = require "serve_helpers"
local H = require "sql_helpers"
local cases_mod = require "sql_filter_cases"
local filter = require "biconnector.filter"
local core = require "biconnector.core"
local cjson = require "cjson"

local JSON = { ["Content-Type"] = "application/json" }
local TABLE = 'filter "cases" ü'
local COUNT = tonumber(os.getenv("SQL_FILTER_COUNT") or "") or 400

local md5 = H.md5

local as_maps, sorted_ids = cases_mod.as_maps, cases_mod.sorted_ids

describe("SQL filter pushdown (sqlite)", function()
  local skip = not H.have_sqlite3("sql_filter_spec")
  local dir, db, h, cases, codes, sum_before
  setup(function()
    if skip then return end
    dir = H.tmpdir()
    db = dir .. "/cases.db"
    cases = cases_mod.new(7, "sqlite")
    H.sqlite(db, cases.sql("sqlite", TABLE))
    codes = cases_mod.codes(cases)
    sum_before = md5(db)
    h = S.start(S.serve_command({ "sqlite://" .. db, "--listen", "127.0.0.1:0", "--no-auth" }))
  end)
  teardown(function() H.stop(h, dir) end)
  before_each(function()
    if skip then pending(H.NO_SQLITE3) end
  end)

  local function data(body) return S.post_json(h.port, "/data", body) end

  it("describes the table with the cases' field types", function()
    local r = assert(S.request(h.port, "POST", "/table_description", cjson.encode({ table = TABLE }), JSON))
    assert.equals(200, r.status)
    local types = {}
    for _, f in ipairs(cjson.decode(r.body)) do types[f.code] = f.type end
    local want = {}
    for _, f in ipairs(cases.fields) do want[f.code] = f.type end
    assert.same(want, types)
  end)

  it("serves, for 400 generated filters, exactly the rows match selects over the whole table", function()
    cases_mod.check_served(cases, data, TABLE, COUNT, { values = true })
  end)

  -- The source in this process, with every data query traced.
  local function traced_source(extra)
    local traced = {}
    local opts = { url = "sqlite://" .. db, trace = function(sql, params) traced[#traced + 1] = { sql, params } end,
      log = function() end }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return require("biconnector.sql").source(opts), traced
  end

  local function read_all(src, q)
    local rows, applied, close = src:data(q)
    local codes_out = q.select
    local maps = {}
    if type(rows) == "table" and rows.fill then
      assert.is_true(applied.filter and applied.select and applied.limit)
      local sel = {}
      for i, c in ipairs(codes_out) do for j, f in ipairs(q.fields) do if f.code == c then sel[i] = j end end end
      local enc = core.rows.new(q.fields, sel)
      local parts = {}
      repeat
        local _, done = rows:fill(enc, 65536)
        parts[#parts + 1] = enc:take()
      until done
      enc:finish()
      parts[#parts + 1] = enc:take()
      maps = as_maps(cjson.decode(table.concat(parts)), codes_out)
      rows:close()
    else
      assert.is_false(applied.filter)
      -- as the connector does: the values as the encoder serves them (those that
      -- do not fit as null: applied.invalid), then match
      assert.equals("null", applied.invalid)
      local norm = core.rows.new(q.fields, nil, { invalid = applied.invalid })
      for row in rows do
        local served = assert(norm:normalize(row))
        if filter.match(q.filter, served) then maps[#maps + 1] = served end
      end
      norm:close()
      close()
      for _, m in ipairs(maps) do
        for _, c in ipairs(codes_out) do if m[c] == nil then m[c] = core.null end end
      end
      return maps, true
    end
    return maps, false
  end

  it("never writes a filter value into the SQL text: every value is a bound parameter", function()
    local src, traced = traced_source()
    local fields = assert(src:describe(TABLE))
    local quoted = {}
    for _, f in ipairs(fields) do quoted[#quoted + 1] = '"' .. f.code:gsub('"', '""') .. '"' end
    local values = 0
    for n = 1, COUNT do
      local ast = filter.parse(cjson.decode(cjson.encode(cases.filter(n % 4))), fields)
      if ast then
        read_all(src, { table = TABLE, select = codes, filter = ast, fields = fields })
        local sql, params = traced[#traced][1], traced[#traced][2]
        -- strip what may legitimately be in the text: quoted identifiers, the
        -- ESCAPE clause, constant groups; nothing else may be a literal
        local rest = sql:gsub('"[^"]*"', function() return "ID" end)
          :gsub("ESCAPE '!'", "ESC"):gsub("1=1", "T"):gsub("1=0", "F")
        assert.is_nil(rest:find("'", 1, true), "a quote in: " .. sql)
        assert.is_nil(rest:find("%d"), "a digit in: " .. sql)
        local _, marks = rest:gsub("%?", "")
        assert.equals(#params, marks, sql)
        values = values + #params
        -- and no string value of the filter appears in the text
        cases_mod.assert_no_values(ast, sql)
      end
    end
    assert.is_true(values > 400, "only " .. values .. " parameters bound")
  end)

  it("gives the same rows when part of a filter falls back to match in memory", function()
    -- column n retyped by the user: its comparisons are no longer left to SQL
    local src, traced = traced_source({ fields = { [TABLE] = { n = { type = "double" } } } })
    local fields = assert(src:describe(TABLE))
    local whole = read_all(src, { table = TABLE, select = codes, fields = fields })
    assert.equals(#cases.rows, #whole)
    local fallbacks, mixed = 0, 0
    for n = 1, 200 do
      local ast = filter.parse(cjson.decode(cjson.encode(cases.filter(n % 4))), fields)
      if ast then
        local want = {}
        for _, row in ipairs(whole) do if filter.match(ast, row) then want[#want + 1] = row end end
        local got, fell_back = read_all(src, { table = TABLE, select = codes, filter = ast, fields = fields })
        assert.same(sorted_ids(want), sorted_ids(got), "filter #" .. n)
        for _, r in ipairs(got) do r.n = nil end -- n is a double now: 5.0 vs 5 compares equal anyway
        if fell_back then
          fallbacks = fallbacks + 1
          if traced[#traced][1]:find("WHERE", 1, true) then mixed = mixed + 1 end
        end
      end
    end
    assert.is_true(fallbacks > 20, "only " .. fallbacks .. " filters fell back")
    assert.is_true(mixed > 5, "only " .. mixed .. " filters pushed part of an AND")
  end)

  it("pushes down the date columns whose stored values all have one form, and no other", function()
    local src, traced = traced_source()
    local fields = assert(src:describe(TABLE))
    local want = { d = true, ["dt`x"] = true, ["dt epoch"] = "epoch", ["d epoch"] = "epoch", ["dt iso"] = false,
      ["dt dotted"] = false, ["dt mixed"] = false, ["d mixed"] = false, ["dt bad day"] = false }
    for code, how in pairs(want) do
      local ast = assert(filter.parse({ [">=" .. code] = "2025-01-01", ["<" .. code] = "2025-06-01" }, fields))
      local _, pushed = read_all(src, { table = TABLE, select = codes, filter = ast, fields = fields })
      pushed = not pushed
      local sql, params = traced[#traced][1], traced[#traced][2]
      assert.equals(how ~= false, pushed, code .. ": " .. sql)
      if how == "epoch" then
        assert.equals("number", type(params[1]), code)
      elseif how then
        -- as text, in the order of the keys' text ("<" before ">=")
        assert.same({ "2025-06-01" .. (code == "d" and "" or " 00:00:00"),
          "2025-01-01" .. (code == "d" and "" or " 00:00:00") }, params)
      end
    end
  end)

  it("filters a DATETIME column of ISO text, Unix seconds and DD.MM.YYYY as it serves them (issue 20)", function()
    local path = dir .. "/mixed.db"
    H.sqlite(path, [[CREATE TABLE m (id INTEGER PRIMARY KEY, at DATETIME);
      INSERT INTO m VALUES (1, '2024-01-01T12:00:00Z'), (2, 1704110400), (3, '01.01.2024 12:00:00'),
        (4, '2024-01-01 12:00:00'), (5, 'not a date'), (6, '2025-03-01 00:00:00'), (7, NULL);]])
    local mh = S.start(S.serve_command({ "sqlite://" .. path, "--listen", "127.0.0.1:0", "--no-auth" }))
    local function ids(f)
      local r = assert(S.request(mh.port, "POST", "/data", cjson.encode({ table = "m", filter = f }), JSON))
      assert.equals(200, r.status, r.body)
      local out = {}
      for i, row in ipairs(cjson.decode(r.body)) do if i > 1 then out[#out + 1] = row[1] end end
      table.sort(out)
      return out
    end
    local ok, err = pcall(function()
      local r = assert(S.request(mh.port, "POST", "/data", cjson.encode({ table = "m" }), JSON))
      assert.same({ { "id", "at" }, { 1, "2024-01-01 12:00:00" }, { 2, "2024-01-01 12:00:00" },
        { 3, "2024-01-01 12:00:00" }, { 4, "2024-01-01 12:00:00" }, { 5, cjson.null },
        { 6, "2025-03-01 00:00:00" }, { 7, cjson.null } }, cjson.decode(r.body))
      assert.same({ 1, 2, 3, 4 }, ids({ at = "2024-01-01 12:00:00" }))
      assert.same({ 1, 2, 3, 4 }, ids({ [">=at"] = "2024-01-01", ["<at"] = "2024-01-02" })) -- a day window
      assert.same({ 1, 2, 3, 4 }, ids({ ["<at"] = "2025-01-01" }))                          -- not 5 (null)
      assert.same({ 5, 6, 7 }, ids({ ["!at"] = "2024-01-01 12:00:00" }))
      -- the column made canonical by another connection: pushed down at the next request
      H.sqlite(path, "UPDATE m SET at = '2024-01-01 12:00:00' WHERE id <= 3; DELETE FROM m WHERE id = 5;")
      local src = require("biconnector.sql").source({ url = "sqlite://" .. path, log = function() end })
      local fields = assert(src:describe("m"))
      local ast = filter.parse({ at = "2024-01-01 12:00:00" }, fields)
      local _, applied = src:data({ table = "m", select = { "id" }, filter = ast, fields = fields })
      assert.is_true(applied.filter)
      -- and spoilt again: matched in memory at once, by the same connection
      H.sqlite(path, "INSERT INTO m VALUES (8, 1704110400);")
      local rows
      rows, applied = src:data({ table = "m", select = { "id" }, filter = ast, fields = fields })
      assert.is_false(applied.filter)
      local got = {}
      for row in rows do got[#got + 1] = row.id end
      src:close()
      assert.same({ 1, 2, 3, 4, 8 }, ids({ at = "2024-01-01 12:00:00" }))
      assert.equals(7, #got) -- every row comes back (5 was deleted), the framework matches them
    end)
    S.stop(mh)
    assert(ok, err)
  end)

  it("treats '; DROP TABLE orders; -- as a value, and the file is never written", function()
    local status, body = data({ table = TABLE, filter = { ['s"tr'] = "'; DROP TABLE orders; --" } })
    assert.equals(200, status)
    local rows = cjson.decode(body)
    assert.is_true(#rows > 1)
    for i = 2, #rows do assert.equals("'; DROP TABLE orders; --", rows[i][4]) end
    status, body = data({ table = TABLE, filter = { ['%s"tr'] = "'; DROP" } })
    assert.equals(200, status)
    assert.is_true(#cjson.decode(body) > 1)
    status, body = data({ table = TABLE })
    assert.equals(200, status)
    assert.equals(#cases.rows + 1, #cjson.decode(body))
    assert.equals(sum_before, md5(db))
  end)
end)
