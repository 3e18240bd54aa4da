-- filter.to_sql against a real SQLite database: for a generated table of
-- 1,200 rows (all five field types, NULLs, awkward strings) and 400 generated
-- filters (every operator of both styles, nested AND/OR, NULLs, form-style
-- string values), the rows the SQL selects are exactly the rows match selects.
--
-- luasql has no bound parameters, so this spec alone substitutes each
-- parameter into the SQL text as a quoted SQL literal (strings with '
-- doubled, numbers with all 17 digits); the library itself never does that.
local filter = require "biconnector.filter"
local null = require("biconnector").null
local sqlite = require "luasql.sqlite3"

local FIELDS = {
  { code = "ID", name = "ID", type = "int" },
  { code = "N", name = "N", type = "int" },
  { code = "X", name = "X", type = "double" },
  { code = "S", name = "S", type = "string" },
  { code = "D", name = "D", type = "date" },
  { code = "DT", name = "DT", type = "datetime" },
}
-- some columns carry names that need quoting
local COLUMNS = { ID = "id", N = "n", X = "x value", S = 's"tr', D = "d", DT = "dt`x" }

local seed = 4242
local function rand(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return math.floor(seed / 65536) % n + 1
end
local function pick(list) return list[rand(#list)] end

local INTS = { -50, -7, -1, 0, 1, 2, 3, 5, 8, 13, 21, 42, 50 }
local DOUBLES = { -2.5, -1, 0, 0.1, 0.5, 1, 1.5, 2.25, 3.125, 10, 99.99, 1e6 }
local STRINGS = { "apple", "Apple", "APPLE pie", "a_b", "a%b", "aXb", "50%", "x!y", "back\\slash", "it's",
  'say "hi"', "Привет", "привет", "", "ümlaut", "a", "b", "ab", "ba", "pineapple", "--", "x; DROP TABLE t" }
local DATES = { "2024-02-29", "2024-12-31", "2025-01-01", "2025-05-30", "2025-05-31", "2025-06-01", "2026-11-22" }
local TIMES = { "00:00:00", "08:30:00", "12:00:00", "17:01:55", "23:59:59" }

local function maybe_null(v)
  if rand(8) == 1 then return null end
  return v
end

local ROWS = {}
for i = 1, 1200 do
  ROWS[i] = {
    ID = i,
    N = maybe_null(pick(INTS)),
    X = maybe_null(pick(DOUBLES)),
    S = maybe_null(pick(STRINGS)),
    D = maybe_null(pick(DATES)),
    DT = maybe_null(pick(DATES) .. " " .. pick(TIMES)),
  }
end

local function literal(v)
  if v == null or v == nil then return "NULL" end
  if type(v) == "number" then
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  assert(type(v) == "string" and not v:find("%z"))
  return "'" .. v:gsub("'", "''") .. "'"
end

local function ident(name) return '"' .. name:gsub('"', '""') .. '"' end

local env, db
setup(function()
  env = assert(sqlite.sqlite3())
  db = assert(env:connect(":memory:"))
  assert(db:execute(("CREATE TABLE t (%s INTEGER PRIMARY KEY, %s INTEGER, %s REAL, %s TEXT, %s TEXT, %s TEXT)")
    :format(ident(COLUMNS.ID), ident(COLUMNS.N), ident(COLUMNS.X), ident(COLUMNS.S), ident(COLUMNS.D),
      ident(COLUMNS.DT))))
  assert(db:execute("BEGIN"))
  for _, r in ipairs(ROWS) do
    assert(db:execute(("INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s)")
      :format(literal(r.ID), literal(r.N), literal(r.X), literal(r.S), literal(r.D), literal(r.DT))))
  end
  assert(db:execute("COMMIT"))
end)

teardown(function()
  if db then db:close() end
  if env then env:close() end
end)

local function sql_ids(where, params)
  local i = 0
  local sql = where:gsub("%?", function()
    i = i + 1
    return literal(params[i])
  end)
  assert.equal(#params, i)
  local cur = assert(db:execute("SELECT " .. ident(COLUMNS.ID) .. " FROM t WHERE " .. sql .. " ORDER BY 1"))
  local ids = {}
  local id = cur:fetch()
  while id do
    ids[#ids + 1] = math.floor(tonumber(id))
    id = cur:fetch()
  end
  cur:close()
  return ids
end

local function match_ids(ast)
  local ids = {}
  for _, r in ipairs(ROWS) do
    if filter.match(ast, r) then ids[#ids + 1] = r.ID end
  end
  return ids
end

---------------------------------------------------------------- generated filters

local TYPE_OF = {}
for _, f in ipairs(FIELDS) do TYPE_OF[f.code] = f.type end

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

-- a value for field code, as JSON would send it or (sometimes) as a form would: text
local function value_for(code)
  local t = TYPE_OF[code]
  local v
  if t == "int" then
    v = code == "ID" and rand(1300) - 50 or pick(INTS)
  elseif t == "double" then
    v = pick(DOUBLES)
  elseif t == "string" then
    v = pick(STRINGS)
  elseif t == "date" then
    v = pick(DATE_SPELLINGS)(pick(DATES))
  else
    if rand(6) == 1 then
      v = pick(DATES) -- a date alone means midnight
    else
      v = pick(DATETIME_SPELLINGS)(pick(DATES), pick(TIMES))
    end
  end
  if type(v) == "number" and rand(3) == 1 then v = string.format(v == math.floor(v) and "%d" or "%.17g", v) end
  return v
end

local function list_for(code)
  local l = {}
  for i = 1, rand(4) do l[i] = value_for(code) end
  return l
end

local PATTERNS = { "a%", "%a", "%pp%", "_pple", "a_b", "%!%", "A%", "%'%", "П%", "%", "", "__", "%\\%" }

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

local CODES = { "ID", "N", "X", "S", "D", "DT" }

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
    elseif spec[2] == "like" then v = pick({ "a", "A", "pp", "%", "_", "!", "'", "ри", "", "a_b", "50%" })
    else v = pick(PATTERNS) end
    group[spec[1] .. code] = v
  else
    local spec
    repeat spec = pick(STYLE_B) until like_ok or spec[2] ~= "like"
    local obj = { operator = spec[1] }
    if spec[2] == "scalar" then obj.value = value_for(code)
    elseif spec[2] == "list" then obj.value = list_for(code)
    elseif spec[2] == "range" then obj.from, obj.to = value_for(code), value_for(code)
    elseif spec[2] == "like" then obj.value = pick({ "a", "A", "pp", "%", "_", "!", "" }) end
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

local function collect_ops(node, seen)
  if node.kind == "group" then
    seen[node.logic] = true
    for _, item in ipairs(node.items) do collect_ops(item, seen) end
  else
    seen[node.op] = true
  end
end

describe("filter.to_sql on SQLite", function()
  it("selects exactly the rows filter.match selects, for 400 generated filters", function()
    local seen, partial = {}, 0
    for n = 1, 400 do
      local raw = gen_group(n % 4)
      local ast, err = filter.parse(raw, FIELDS)
      assert.is_nil(err)
      if ast then
        collect_ops(ast, seen)
        local where, params = filter.to_sql(ast, { dialect = "sqlite", columns = COLUMNS })
        local want, got = match_ids(ast), sql_ids(where, params)
        if #want > 0 and #want < #ROWS then partial = partial + 1 end
        assert.same(want, got, ("filter #%d: %s"):format(n, where))
      end
    end
    -- every operator and both kinds of group were exercised
    for _, op in ipairs({ "eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "like", "not_like", "pattern",
      "between", "is_null", "not_null", "and", "or" }) do
      assert.is_true(seen[op] == true, "operator never generated: " .. op)
    end
    -- the filters discriminate: most select some rows but not all
    assert.is_true(partial > 200, "only " .. partial .. " filters selected a proper subset")
  end)

  it("agrees on NULLs: != and NOT IN keep NULL rows, comparisons drop them", function()
    local cases = {
      { { ["!N"] = 5 }, function(r) return r.N == null or r.N ~= 5 end },
      { { ["!@N"] = { 5, 8 } }, function(r) return r.N == null or (r.N ~= 5 and r.N ~= 8) end },
      { { [">N"] = 0 }, function(r) return r.N ~= null and r.N > 0 end },
      { { ["=N"] = null }, function(r) return r.N == null end },
      { { ["!S"] = null }, function(r) return r.S ~= null end },
      { { ["!%S"] = "a" }, function(r) return r.S == null or not r.S:lower():find("a", 1, true) end },
      { { X = { operator = "between", from = 0, to = 2 } }, function(r) return r.X ~= null and r.X >= 0 and r.X <= 2 end },
    }
    for i, case in ipairs(cases) do
      local ast = assert(filter.parse(case[1], FIELDS))
      local want = {}
      for _, r in ipairs(ROWS) do
        if case[2](r) then want[#want + 1] = r.ID end
      end
      assert.is_true(#want > 0 and #want < #ROWS)
      assert.same(want, match_ids(ast), "match, case " .. i)
      assert.same(want, sql_ids(filter.to_sql(ast, { dialect = "sqlite", columns = COLUMNS })), "sql, case " .. i)
    end
  end)
end)
