-- Generated filter cases shared by the SQL specs (filter_sql_spec, sql_filter_spec,
-- and the PostgreSQL/MariaDB ones): a table of rows with all five field types,
-- NULLs and awkward strings, and filters in both styles (every operator, nested
-- AND/OR, NULLs, dates in every spelling, % _ ! \ quotes and UTF-8 in values).
-- Deterministic: the same cases on Lua 5.4 and LuaJIT for a seed.
--
--   local cases = require("sql_filter_cases").new(seed [, engine])
--   cases.fields            -- { {code, name, type}, ... }: codes need quoting in SQL
--   cases.columns           -- code -> column name (for filter.to_sql's columns)
--   cases.rows              -- 1,200 rows keyed by code (biconnector.null for NULL)
--   cases.filter(depth)     -- one raw filter object (call again for the next)
--   cases.sql(dialect, table) -- CREATE TABLE + INSERT text: "sqlite", "postgresql", "mysql"
--   cases.ops               -- the operators and groups every run must exercise
--   cases.stored            -- with an engine: the extra date columns and how each stores dates
--
-- With an engine ("sqlite", "postgresql", "mysql"), the table has extra date
-- and datetime columns that store dates as that engine may: SQLite text in
-- every spelling the row encoder reads (ISO with T/Z/offsets/fractions,
-- DD.MM.YYYY, a date alone, HH:MM), Unix seconds (with fractions), mixed in
-- one column, and values that are no date ('2024-02-30 10:00:00', 'abc');
-- PostgreSQL fractions of a second, time zones, BC, infinity and year 10000;
-- MySQL fractions, TIMESTAMP, the zero date and zero or impossible months and
-- days. The filters then also compare with the first and last days served.
--
-- and the checks the specs share: M.check_served (the served rows equal
-- filter.match's for every generated filter), M.assert_no_values.
local null = require("biconnector").null
local filter = require "biconnector.filter"
local cjson = require "cjson"
local assert = require "luassert"

local M = {}

M.ops = { "eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "like", "not_like", "pattern", "between",
  "is_null", "not_null", "and", "or" }

local INTS = { -50, -7, -1, 0, 1, 2, 3, 5, 8, 13, 21, 42, 50 }
local DOUBLES = { -2.5, -1, 0, 0.1, 0.5, 1, 1.5, 2.25, 3.125, 10, 99.99, 1e6 }
local STRINGS = { "apple", "Apple", "APPLE pie", "a_b", "a%b", "aXb", "50%", "x!y", "back\\slash", "it's",
  'say "hi"', "Привет", "привет", "", "ümlaut", "a", "b", "ab", "ba", "pineapple", "--", "x; DROP TABLE t",
  "'; DROP TABLE orders; --" }
local DATES = { "2024-02-29", "2024-12-31", "2025-01-01", "2025-05-30", "2025-05-31", "2025-06-01", "2026-11-22" }
local TIMES = { "00:00:00", "08:30:00", "12:00:00", "17:01:55", "23:59:59" }

local DATE_SPELLINGS = {
  function(d) return d end,
  function(d) local y, m, dd = d:match("(%d+)-(%d+)-(%d+)") return dd .. "." .. m .. "." .. y end,
  function(d) return d .. " 00:00:00" end,
  function(d) return d .. "T00:00:00Z" end,
}
local DATETIME_SPELLINGS = {
  function(d, t) return d .. " " .. t end,
  function(d, t) local y, m, dd = d:match("(%d+)-(%d+)-(%d+)") return dd .. "." .. m .. "." .. y .. " " .. t end,
  function(d, t) return d .. "T" .. t end,
  function(d, t) return d .. "T" .. t .. "+02:00" end,
  function(d, t) return d .. "T" .. t .. ".250Z" end,
}
local PATTERNS = { "a%", "%a", "%pp%", "_pple", "a_b", "%!%", "A%", "%'%", "П%", "%", "", "__", "%\\%" }
local LIKES = { "a", "A", "pp", "%", "_", "!", "'", "ри", "", "a_b", "50%", "\\", '"' }

local STYLE_A = {
  { "", "scalar" }, { "=", "scalar" }, { "!=", "scalar" }, { "!", "scalar" }, { "<>", "scalar" },
  { ">", "scalar" }, { ">=", "scalar" }, { "<", "scalar" }, { "<=", "scalar" },
  { "@", "list" }, { "!@", "list" }, { "", "list" }, { "!", "list" }, { "=", "null" }, { "!", "null" },
  { "%", "like" }, { "!%", "like" }, { "=%", "pattern" }, { "%=", "pattern" }, { "~", "pattern" },
}
local STYLE_B = {
  { "=", "scalar" }, { "EQ", "scalar" }, { "eq", "scalar" }, { "!=", "scalar" }, { "<>", "scalar" },
  { "NEQ", "scalar" }, { ">", "scalar" }, { "GT", "scalar" }, { ">=", "scalar" }, { "gte", "scalar" },
  { "<", "scalar" }, { "Lt", "scalar" }, { "<=", "scalar" }, { "LTE", "scalar" },
  { "IN", "list" }, { "not in", "list" }, { "NOT IN", "list" }, { "IS NULL", "none" }, { "is not null", "none" },
  { "BETWEEN", "range" }, { "LIKE", "like" }, { "NOT LIKE", "like" },
}

-- Field codes are the column names, and they need quoting in every dialect.
local FIELDS = {
  { code = "id", name = "ID", type = "int" },
  { code = "n", name = "N", type = "int" },
  { code = "x value", name = "X", type = "double" },
  { code = 's"tr', name = "S", type = "string" },
  { code = "d", name = "D", type = "date" },
  { code = "dt`x", name = "DT", type = "datetime" },
}

-- Seconds since 1970-01-01 00:00:00 UTC of "YYYY-MM-DD" and "HH:MM:SS".
local function epoch(day, time)
  local y, m, d = day:match("(%d+)-(%d+)-(%d+)")
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * (m > 2 and m - 3 or m + 9) + 2) / 5) + d - 1
  local days = era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
  local hh, mi, ss = (time or "00:00:00"):match("(%d+):(%d+):(%d+)")
  return days * 86400 + tonumber(hh) * 3600 + tonumber(mi) * 60 + tonumber(ss)
end
local function dotted(day) local y, m, d = day:match("(%d+)-(%d+)-(%d+)") return d .. "." .. m .. "." .. y end

-- The extra date columns by engine: code, field type, SQL type, and the value
-- stored for a row from a day, a time and a draw (rand(n) -> 1..n).
local STORED = {
  sqlite = {
    { "dt epoch", "datetime", "DATETIME", function(d, t, r) return epoch(d, t) + ({ 0, 0, 0.5, 0.999 })[r(4)] end },
    { "d epoch", "date", "DATE", function(d, _, r) return epoch(d) + ({ 0, 1, 43200, 86399, 86399.75 })[r(5)] end },
    { "dt iso", "datetime", "DATETIME", function(d, t, r)
      return d .. "T" .. t .. ({ "Z", "+02:00", ".250Z", "", "-0530" })[r(5)] end },
    { "dt dotted", "datetime", "DATETIME", function(d, t) return dotted(d) .. " " .. t end },
    { "dt mixed", "datetime", "TIMESTAMP", function(d, t, r)
      local forms = {
        function() return d .. " " .. t end, function() return d .. "T" .. t .. "Z" end,
        function() return epoch(d, t) end, function() return dotted(d) .. " " .. t end,
        function() return d end, function() return d .. " " .. t:sub(1, 5) end,
        function() return d .. " " .. t .. ".5" end,
        function() return "2024-02-30 10:00:00" end, function() return "abc" end, function() return 1e15 end,
      }
      return forms[r(#forms)]()
    end },
    { "d mixed", "date", "DATE", function(d, t, r)
      local forms = {
        function() return d end, function() return dotted(d) end, function() return d .. " " .. t end,
        function() return epoch(d, t) end, function() return "2025-02-29" end, function() return "xyz" end,
      }
      return forms[r(#forms)]()
    end },
    -- canonical text, but now and then a day that is none: not pushed down
    { "dt bad day", "datetime", "DATETIME", function(d, t, r)
      return r(40) == 1 and "2024-02-30 " .. t or d .. " " .. t end },
  },
  postgresql = {
    { "ts frac", "datetime", "timestamp(3)", function(d, t, r) return d .. " " .. t .. ({ "", ".5", ".999", ".001" })[r(4)] end },
    { "tz", "datetime", "timestamptz", function(d, t, r) return d .. " " .. t .. ({ "+00", "+02", "-05:30", ".25+00" })[r(4)] end },
    { "d far", "date", "date", function(d, _, r)
      return ({ d, d, d, "infinity", "-infinity", "0044-03-15 BC", "10000-01-01", "0001-01-01", "9999-12-31" })[r(9)] end },
    { "ts far", "datetime", "timestamp", function(d, t, r)
      return ({ d .. " " .. t, d .. " " .. t, "infinity", "-infinity", "0044-03-15 12:00:00 BC", "10000-01-01 00:00:00",
        "0001-01-01 00:00:00", "9999-12-31 23:59:59", "9999-12-31 23:59:59.5" })[r(9)] end },
  },
  mysql = {
    { "ts frac", "datetime", "datetime(3)", function(d, t, r) return d .. " " .. t .. ({ "", ".5", ".999", ".001" })[r(4)] end },
    { "tz", "datetime", "timestamp(6) NULL", function(d, t, r) return d .. " " .. t .. ({ "", ".25" })[r(2)] end },
    { "d zero", "date", "date", function(d, _, r)
      return ({ d, d, d, "0000-00-00", "2024-00-15", "2024-05-00", "0000-01-01", "2024-02-30", "9999-12-31" })[r(9)] end },
    { "dt zero", "datetime", "datetime", function(d, t, r)
      return ({ d .. " " .. t, d .. " " .. t, "0000-00-00 00:00:00", "2024-00-15 " .. t, "2024-02-30 " .. t,
        "0000-01-01 00:00:00", "9999-12-31 23:59:59" })[r(7)] end },
  },
}
M.STORED = STORED

-- Filter values at the ends of what can be served, for the engines' runs.
-- (not 0001-01-01 or 0000-01-01 themselves: PostgreSQL's SQL names the
-- bounds '0001-01-01' and '10000-01-01', and assert_no_values would take them
-- for values in the SQL text)
local FAR_DATES = { "0000-06-15", "0001-01-02", "1969-12-31", "9999-12-31" }

local SQL_TYPES = {
  sqlite = { int = "INTEGER", double = "REAL", string = "TEXT", date = "DATE", datetime = "DATETIME" },
  postgresql = { int = "INTEGER", double = "DOUBLE PRECISION", string = "TEXT", date = "DATE",
                 datetime = "TIMESTAMP" },
  -- binary collation: MySQL's default compares text case-insensitively, match does not
  mysql = { int = "INT", double = "DOUBLE", string = "TEXT COLLATE utf8mb4_bin", date = "DATE",
            datetime = "DATETIME" },
}

function M.new(seed, engine)
  seed = seed or 4242
  -- Park-Miller: products stay below 2^53, the same draws on every runtime
  local function rand(n)
    seed = seed * 48271 % 2147483647
    return math.floor(seed / 256) % n + 1
  end
  local function pick(list) return list[rand(#list)] end
  local function maybe_null(v)
    if rand(8) == 1 then return null end
    return v
  end

  local fields, stored = {}, {}
  for i, f in ipairs(FIELDS) do fields[i] = f end
  for _, x in ipairs(engine and STORED[engine] or {}) do
    fields[#fields + 1] = { code = x[1], name = x[1], type = x[2] }
    stored[#stored + 1] = { code = x[1], sql = x[3], value = x[4] }
  end
  local c = { fields = fields, columns = {}, rows = {}, ops = M.ops, stored = stored, engine = engine }
  for _, f in ipairs(fields) do c.columns[f.code] = f.code end
  local TYPE_OF = {}
  for _, f in ipairs(fields) do TYPE_OF[f.code] = f.type end
  local CODES = {}
  for i, f in ipairs(fields) do CODES[i] = f.code end

  for i = 1, 1200 do
    c.rows[i] = {
      id = i, n = maybe_null(pick(INTS)), ["x value"] = maybe_null(pick(DOUBLES)), ['s"tr'] = maybe_null(pick(STRINGS)),
      d = maybe_null(pick(DATES)), ["dt`x"] = maybe_null(pick(DATES) .. " " .. pick(TIMES)),
    }
    for _, x in ipairs(stored) do
      c.rows[i][x.code] = maybe_null(x.value(pick(DATES), pick(TIMES), rand))
    end
  end

  -- a value for field code, as JSON would send it or (sometimes) as a form would: text
  local function value_for(code)
    local t = TYPE_OF[code]
    local v
    if t == "int" then
      v = code == "id" and rand(1300) - 50 or pick(INTS)
    elseif t == "double" then
      v = pick(DOUBLES)
    elseif t == "string" then
      v = pick(STRINGS)
    elseif t == "date" then
      v = pick(DATE_SPELLINGS)((engine and rand(10) == 1) and pick(FAR_DATES) or pick(DATES))
    elseif engine and rand(10) == 1 then
      v = pick(FAR_DATES) .. " " .. pick({ "00:00:00", "23:59:59" })
    else
      if rand(6) == 1 then v = pick(DATES) -- a date alone means midnight
      else v = pick(DATETIME_SPELLINGS)(pick(DATES), pick(TIMES)) end
    end
    if type(v) == "number" and rand(3) == 1 then v = string.format(v == math.floor(v) and "%d" or "%.17g", v) end
    return v
  end

  local function list_for(code)
    local l = {}
    for i = 1, rand(4) do l[i] = value_for(code) end
    return l
  end

  local function gen_condition(group)
    local code = pick(CODES)
    local like_ok = TYPE_OF[code] == "string"
    if rand(2) == 1 then
      local spec
      repeat spec = pick(STYLE_A) until like_ok or (spec[2] ~= "like" and spec[2] ~= "pattern")
      local v
      if spec[2] == "scalar" then v = value_for(code)
      elseif spec[2] == "list" then v = list_for(code)
      elseif spec[2] == "null" then v = null
      elseif spec[2] == "like" then v = pick(LIKES)
      else v = pick(PATTERNS) end
      group[spec[1] .. code] = v
    else
      local spec
      repeat spec = pick(STYLE_B) until like_ok or spec[2] ~= "like"
      local obj = { operator = spec[1] }
      if spec[2] == "scalar" then obj.value = value_for(code)
      elseif spec[2] == "list" then obj.value = list_for(code)
      elseif spec[2] == "range" then obj.from, obj.to = value_for(code), value_for(code)
      elseif spec[2] == "like" then obj.value = pick(LIKES) end
      group[code] = obj
    end
  end

  local function gen_group(depth)
    local group = {}
    if rand(2) == 1 then group.LOGIC = pick({ "OR", "AND", "or" }) end
    for _ = 1, rand(3) do gen_condition(group) end
    if depth > 0 then
      for i = 1, rand(3) - 1 do
        group[rand(2) == 1 and i or ("g" .. i)] = gen_group(depth - 1)
      end
    end
    return group
  end
  c.filter = gen_group

  -- The table as SQL text for a dialect.
  function c.sql(dialect, tbl)
    local T = assert(SQL_TYPES[dialect], "unknown dialect " .. tostring(dialect))
    local q = dialect == "mysql" and "`" or '"'
    local function ident(name) return q .. name:gsub(q, q .. q) .. q end
    local function lit(v)
      if v == null or v == nil then return "NULL" end
      if type(v) == "number" then
        if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
        return string.format("%.17g", v)
      end
      local s = v:gsub("'", "''")
      if dialect == "mysql" then s = s:gsub("\\", "\\\\") end
      return "'" .. s .. "'"
    end
    local cols, names, sql_type = {}, {}, {}
    for _, x in ipairs(stored) do sql_type[x.code] = x.sql end
    for i, f in ipairs(fields) do
      cols[i] = ident(f.code) .. " " .. (sql_type[f.code] or T[f.type]) .. (i == 1 and " PRIMARY KEY" or "")
      names[i] = ident(f.code)
    end
    local out = { "CREATE TABLE " .. ident(tbl) .. " (" .. table.concat(cols, ", ") .. ");" }
    -- MySQL: keep the zero date and zero or impossible months and days as they are
    if dialect == "mysql" and #stored > 0 then table.insert(out, 1, "SET SESSION sql_mode = 'ALLOW_INVALID_DATES';") end
    for first = 1, #c.rows, 200 do
      local values = {}
      for r = first, math.min(first + 199, #c.rows) do
        local cells = {}
        for i, f in ipairs(fields) do cells[i] = lit(c.rows[r][f.code]) end
        values[#values + 1] = "(" .. table.concat(cells, ", ") .. ")"
      end
      out[#out + 1] = "INSERT INTO " .. ident(tbl) .. " (" .. table.concat(names, ", ") .. ") VALUES "
        .. table.concat(values, ", ") .. ";"
    end
    return table.concat(out, "\n") .. "\n"
  end

  return c
end

-- The operators and groups of an AST (to check that a run exercised them all).
function M.collect_ops(node, seen)
  seen = seen or {}
  if node.kind == "group" then
    seen[node.logic] = true
    for _, item in ipairs(node.items) do M.collect_ops(item, seen) end
  else
    seen[node.op] = true
  end
  return seen
end

-- The field codes of the cases, in order.
function M.codes(c)
  local codes = {}
  for i, f in ipairs(c.fields) do codes[i] = f.code end
  return codes
end

-- Rows of a /data answer (a header row, then arrays in field order) as maps by code.
function M.as_maps(rows, codes)
  local out = {}
  for i = 2, #rows do
    local m = {}
    for j, code in ipairs(codes) do m[code] = rows[i][j] end
    out[#out + 1] = m
  end
  return out
end

function M.sorted_ids(maps)
  local ids = {}
  for i, m in ipairs(maps) do ids[i] = m.id end
  table.sort(ids)
  return ids
end

-- The check a server pushing filters down must pass: for `count` generated
-- filters, the rows data({table, filter}) serves are exactly the rows
-- filter.match selects over the whole table; every operator is generated and
-- more than 200 filters select a proper subset. data(body) -> status, body
-- text (one POST /data). opts.label starts each failure message;
-- opts.values also compares every served row's values with the match's.
function M.check_served(c, data, tbl, count, opts)
  opts = opts or {}
  local label = opts.label and (opts.label .. " ") or ""
  local codes = M.codes(c)
  local status, body = data({ table = tbl })
  assert.equals(200, status, body)
  local all = M.as_maps(cjson.decode(body), codes)
  assert.equals(#c.rows, #all)
  local seen, partial = {}, 0
  for n = 1, count do
    local raw = c.filter(n % 4)
    -- the filter as the server receives it (JSON turns list keys into strings)
    local sent = cjson.decode(cjson.encode(raw))
    local ast, err = filter.parse(sent, c.fields)
    assert.is_nil(err, "filter #" .. n)
    local want = {}
    if ast then
      M.collect_ops(ast, seen)
      for _, row in ipairs(all) do
        if filter.match(ast, row) then want[#want + 1] = row end
      end
    else
      want = all
    end
    status, body = data({ table = tbl, filter = sent })
    assert.equals(200, status, body)
    local got = M.as_maps(cjson.decode(body), codes)
    assert.same(M.sorted_ids(want), M.sorted_ids(got), ("%sfilter #%d: %s"):format(label, n, cjson.encode(sent)))
    if #want > 0 and #want < #all then partial = partial + 1 end
    if opts.values then
      local by_id = {}
      for _, r in ipairs(got) do by_id[r.id] = r end
      for _, r in ipairs(want) do assert.same(r, by_id[r.id]) end
    end
  end
  for _, op in ipairs(M.ops) do
    assert.is_true(seen[op] == true, "operator never generated: " .. op)
  end
  assert.is_true(partial > 200, "only " .. partial .. " filters selected a proper subset")
end

-- The check of a database server's own pushdown: a source on url, every data
-- query traced, reads `count` generated filters of table tbl; each statement
-- holds as many placeholders (matches of `mark`: "%$%d+" or "%?") as it has
-- bound parameters and no filter value in its text; more than 400 values go
-- as parameters and more than 300 filters are pushed down whole.
function M.check_pushed(c, url, tbl, count, mark)
  local traced = {}
  local src = require("biconnector.sql").source({ url = url, log = function() end,
    trace = function(sql, params) traced[#traced + 1] = { sql, params } end })
  local fields = assert(src:describe(tbl))
  local codes = M.codes(c)
  local values, pushed = 0, 0
  for n = 1, count do
    local ast = filter.parse(cjson.decode(cjson.encode(c.filter(n % 4))), fields)
    if ast then
      local rows, applied, close = src:data({ table = tbl, select = codes, filter = ast, fields = fields })
      if applied.filter then pushed = pushed + 1 end
      if type(rows) == "table" and rows.close then rows:close() elseif close then close() end
      local sql, params = traced[#traced][1], traced[#traced][2]
      assert.equals(#params, select(2, sql:gsub(mark, "")), sql)
      values = values + #params
      M.assert_no_values(ast, sql)
    end
  end
  src:close()
  assert.is_true(values > 400, "only " .. values .. " parameters bound")
  assert.is_true(pushed > 300, "only " .. pushed .. " filters pushed down whole")
end

-- Fails when a string value of the filter AST stands in the SQL text (every
-- value must be a bound parameter); names made of letters only are let by.
function M.assert_no_values(ast, sql)
  local function each(node)
    if node.kind == "group" then for _, i in ipairs(node.items) do each(i) end return end
    for _, v in ipairs(node.values or { node.value, node.from, node.to }) do
      if type(v) == "string" and #v >= 2 and not v:match("^[%a_]+$") then
        assert.is_nil(sql:find(v, 1, true), ("value %q in: %s"):format(v, sql))
      end
    end
  end
  each(ast)
end

return M
