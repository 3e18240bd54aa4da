-- filter.to_sql on date/datetime columns that store seconds since the epoch
-- (opts.dates = "epoch"): against a real SQLite table of epoch numbers, the rows
-- the SQL selects are exactly the rows match selects on the same rows written
-- as the row encoder writes them (UTC, floored). Without the option the same
-- SQL compares numbers with text and selects wrong rows: the spec shows that too.
--
-- luasql has no bound parameters, so this spec substitutes each parameter into
-- the SQL text as a literal (numbers only here, and quoted text: sql_helpers).
local filter = require "biconnector.filter"
local null = require("biconnector").null
local H = require "sql_helpers"

local FIELDS = {
  { code = "ID", name = "ID", type = "int" },
  { code = "D", name = "D", type = "date" },
  { code = "DT", name = "DT", type = "datetime" },
}

local seed = 777
local function rand(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return math.floor(seed / 65536) % n + 1
end
local function pick(list) return list[rand(#list)] end

-- days around which the rows and the filter values cluster (one before 1970)
local DAYS = { "1969-12-31", "2024-02-29", "2024-12-31", "2025-01-01", "2025-05-31", "2025-06-01" }
local TIMES = { "00:00:00", "00:00:01", "08:30:00", "17:01:55", "23:59:59" }
local OFFSETS = { 0, 1, 30600, 61315, 86399, 86399.5, 0.25, 43200 }

local function epoch_of(day) -- UTC midnight, apart from the library's own conversion
  local y, m, d = day:match("(%d+)-(%d+)-(%d+)")
  local t = os.time { year = tonumber(y), month = tonumber(m), day = tonumber(d), hour = 0 }
  return t + (t - os.time(os.date("!*t", t))) -- os.time reads local time: add the offset back
end

local ROWS, EPOCH = {}, {}
for i = 1, 600 do
  local e = rand(9) == 1 and null or epoch_of(pick(DAYS)) + pick(OFFSETS)
  local et = rand(9) == 1 and null or epoch_of(pick(DAYS)) + pick(OFFSETS)
  EPOCH[i] = { e, et }
  ROWS[i] = {
    ID = i,
    D = e == null and null or os.date("!%Y-%m-%d", math.floor(e)),
    DT = et == null and null or os.date("!%Y-%m-%d %H:%M:%S", math.floor(et)),
  }
end

local db -- the epoch numbers in a SQLite table in memory
setup(function()
  local statements = { "CREATE TABLE t (id INTEGER PRIMARY KEY, d NUMERIC, dt NUMERIC)" }
  for i, r in ipairs(EPOCH) do
    statements[#statements + 1] = ("INSERT INTO t VALUES (%d, %s, %s)"):format(i, H.literal(r[1]), H.literal(r[2]))
  end
  db = H.memory_db(statements)
end)
teardown(function() if db then db.close() end end)

local function sql_ids(where, params) return db.ids(where, params, "id") end
local function match_ids(ast) return H.match_ids(ast, ROWS, "ID") end

local function value_for(code)
  if code == "D" then
    local d = pick(DAYS)
    return pick { d, d:gsub("(%d+)-(%d+)-(%d+)", "%3.%2.%1"), d .. " 17:01:55" }
  end
  return pick(DAYS) .. pick { " ", "T" } .. pick(TIMES)
end

local function condition(group)
  local code = pick { "D", "DT" }
  local kind = rand(6)
  if kind == 1 then
    group[pick { "", "=", "!=", "!", "<>", ">", ">=", "<", "<=" } .. code] = value_for(code)
  elseif kind == 2 then
    local l = {}
    for i = 1, rand(4) - 1 do l[i] = value_for(code) end
    group[pick { "@", "!@" } .. code] = l
  elseif kind == 3 then
    group[pick { "=", "!" } .. code] = null
  elseif kind == 4 then
    group[code] = { operator = "BETWEEN", from = value_for(code), to = value_for(code) }
  elseif kind == 5 then
    group[code] = { operator = pick { "IN", "NOT IN" }, value = { value_for(code), value_for(code) } }
  else
    group[code] = { operator = pick { "=", "!=", ">", ">=", "<", "<=" }, value = value_for(code) }
  end
end

local function gen_filter()
  local f = {}
  for _ = 1, rand(2) do condition(f) end
  if rand(3) == 1 then
    local g = { LOGIC = pick { "AND", "OR" } }
    for _ = 1, 1 + rand(2) do condition(g) end
    f[#f + 1] = g
  end
  return f
end

describe("filter.to_sql with dates stored as epoch seconds", function()
  it("selects exactly the rows match selects (300 generated filters, both options' spellings)", function()
    local differs_as_text, proper = 0, 0
    for n = 1, 300 do
      local obj = gen_filter()
      local ast = assert(filter.parse(obj, FIELDS))
      local expected = match_ids(ast)
      local dates = n % 2 == 0 and "epoch" or { D = "epoch", DT = "epoch" }
      local got = sql_ids(filter.to_sql(ast, { dialect = "sqlite", dates = dates }))
      assert.same(expected, got)
      if #expected > 0 and #expected < #ROWS then proper = proper + 1 end
      local as_text = sql_ids(filter.to_sql(ast, { dialect = "sqlite" }))
      if #as_text ~= #expected then differs_as_text = differs_as_text + 1 end
    end
    assert.is_true(proper >= 150, "too few filters select a proper subset: " .. proper)
    -- the limit this option closes: compared as text, most filters select wrong rows
    assert.is_true(differs_as_text >= 150, "as text, only " .. differs_as_text .. " filters differ")
  end)

  it("writes day ranges for a date and one-second ranges for a datetime", function()
    local ast = assert(filter.parse({ D = "2025-05-31", [">DT"] = "2025-05-31 17:01:55" }, FIELDS))
    local where, params = filter.to_sql(ast, { dialect = "postgres", dates = "epoch" })
    assert.equal([[("DT" >= $1 AND ("D" >= $2 AND "D" < $3))]], where)
    assert.same({ 1748710916, 1748649600, 1748736000 }, params)
    -- per field: a text column beside an epoch one
    where, params = filter.to_sql(ast, { dialect = "sqlite", dates = { DT = "epoch" } })
    assert.equal([[("DT" >= ? AND "D" = ?)]], where)
    assert.same({ 1748710916, "2025-05-31" }, params)
  end)

  it("refuses LIKE on an epoch column and a storage it does not know, saying which", function()
    -- parse already refuses LIKE on a date field; an AST built by hand reaches to_sql
    local ast = { kind = "cond", field = "D", type = "date", op = "like", value = "2025" }
    assert.has_error(function() filter.to_sql(ast, { dates = "epoch" }) end,
      'filter.to_sql: "like" on field "D", whose column stores epoch seconds (opts.dates), cannot be written in SQL')
    assert.has_error(function() filter.to_sql(ast, { dates = "unix" }) end,
      'filter.to_sql: dates must be "text", "epoch" or a map field code -> one of them, got "unix"')
    assert.has_error(function() filter.to_sql(ast, { dates = { D = "ms" } }) end,
      'filter.to_sql: dates["D"] must be "text" or "epoch", got "ms"')
  end)
end)
