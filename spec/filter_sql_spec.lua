-- filter.to_sql against a real SQLite database: for a generated table of
-- 1,200 rows (all five field types, NULLs, awkward strings) and 400 generated
-- filters (every operator of both styles, nested AND/OR, NULLs, form-style
-- string values), the rows the SQL selects are exactly the rows match selects.
-- The rows and filters come from spec/sql_filter_cases.lua, which the SQL
-- source specs (sql_filter_spec, sql_engines_filter_spec) share.
--
-- luasql has no bound parameters, so this spec alone substitutes each
-- parameter into the SQL text as a quoted SQL literal (strings with '
-- doubled, numbers with all 17 digits); the library itself never does that.
local filter = require "biconnector.filter"
local null = require("biconnector").null
local H = require "sql_helpers"
local cases_mod = require "sql_filter_cases" -- the generator the SQL source specs share

local cases = cases_mod.new(4242)
local FIELDS, COLUMNS, ROWS = cases.fields, cases.columns, cases.rows
local ID = "id"

local function ident(name) return '"' .. name:gsub('"', '""') .. '"' end

local db -- the cases' table in a SQLite database in memory
setup(function()
  local statements = {}
  -- the shared CREATE TABLE + INSERT text, one statement per line
  for statement in cases.sql("sqlite", "t"):gmatch("[^\n]+") do statements[#statements + 1] = statement end
  db = H.memory_db(statements)
end)
teardown(function() if db then db.close() end end)

local function sql_ids(where, params) return db.ids(where, params, ident(COLUMNS[ID])) end
local function match_ids(ast) return H.match_ids(ast, ROWS, ID) end

local gen_group, collect_ops = cases.filter, cases_mod.collect_ops

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
    for _, op in ipairs(cases.ops) do
      assert.is_true(seen[op] == true, "operator never generated: " .. op)
    end
    -- the filters discriminate: most select some rows but not all
    assert.is_true(partial > 200, "only " .. partial .. " filters selected a proper subset")
  end)

  it("agrees on NULLs: != and NOT IN keep NULL rows, comparisons drop them", function()
    local null_cases = {
      { { ["!n"] = 5 }, function(r) return r.n == null or r.n ~= 5 end },
      { { ["!@n"] = { 5, 8 } }, function(r) return r.n == null or (r.n ~= 5 and r.n ~= 8) end },
      { { [">n"] = 0 }, function(r) return r.n ~= null and r.n > 0 end },
      { { ["=n"] = null }, function(r) return r.n == null end },
      { { ['!s"tr'] = null }, function(r) return r['s"tr'] ~= null end },
      { { ['!%s"tr'] = "a" }, function(r) return r['s"tr'] == null or not r['s"tr']:lower():find("a", 1, true) end },
      { { ["x value"] = { operator = "between", from = 0, to = 2 } },
        function(r) return r["x value"] ~= null and r["x value"] >= 0 and r["x value"] <= 2 end },
    }
    for i, case in ipairs(null_cases) do
      local ast = assert(filter.parse(case[1], FIELDS))
      local want = {}
      for _, r in ipairs(ROWS) do
        if case[2](r) then want[#want + 1] = r[ID] end
      end
      assert.is_true(#want > 0 and #want < #ROWS)
      assert.same(want, match_ids(ast), "match, case " .. i)
      assert.same(want, sql_ids(filter.to_sql(ast, { dialect = "sqlite", columns = COLUMNS })), "sql, case " .. i)
    end
  end)
end)
