-- The filters bench/form measures, each with the hand-written Lua predicate a
-- connector's author would write for it (the anchor), over the same rows.
--
--   local S = require("filter_shapes")(rows_count)
--   S.fields, S.rows, S.shapes = { {id =, filter =, what =, hand = function(row)}, ... }
--
-- The rows are as a Lua-table source gives them: numbers for int and double
-- fields, text for the others, NULL as nil (so they are also what
-- filter.compile(ast, "normalized") takes). The hand-written predicates test
-- the conditions in the order the filter names them, nil checks where a field
-- can be NULL; no type checks (their author knows the data).
local STAGES = { "NEW", "PREPARATION", "EXECUTING", "WON", "LOSE" }

return function(n)
  local rows = {}
  for i = 1, n do
    rows[i] = {
      -- the report's first shape (these three as bench/form always had them)
      ID = i, TITLE = "Deal " .. i, DATE_CREATE = os.date("!%Y-%m-%d %H:%M:%S", 1700000000 + i * 600),
      STAGE_ID = STAGES[i % #STAGES + 1],
      ASSIGNED_BY_ID = i % 17,
      OPPORTUNITY = i % 9 ~= 0 and (i * 7919 % 20000) / 2 or nil,          -- double, NULL in one row of 9
      CLOSEDATE = i % 3 == 0 and os.date("!%Y-%m-%d", 1700000000 + i * 600) or nil, -- date, NULL in 2 of 3
    }
  end
  local fields = {
    { code = "ID", type = "int" }, { code = "TITLE", type = "string" }, { code = "DATE_CREATE", type = "datetime" },
    { code = "STAGE_ID", type = "string" }, { code = "ASSIGNED_BY_ID", type = "int" },
    { code = "OPPORTUNITY", type = "double" }, { code = "CLOSEDATE", type = "date" },
  }
  local ASSIGNED = { [3] = true, [5] = true, [8] = true, [13] = true }
  local shapes = {
    { id = "", what = ">=DATE AND (%TITLE OR <ID)",
      -- as a form body: filter[>=DATE_CREATE]=31.12.2023&filter[0][LOGIC]=OR&filter[0][%TITLE]=99&filter[0][<ID]=5000
      filter = { [">=DATE_CREATE"] = "31.12.2023", { LOGIC = "OR", ["%TITLE"] = "99", ["<ID"] = 5000 } },
      hand = function(r)
        return r.DATE_CREATE >= "2023-12-31 00:00:00" and (r.TITLE:lower():find("99", 1, true) or r.ID < 5000)
      end },
    { id = "in_list", what = "@ID-list (4 ints) AND >DOUBLE",
      filter = { ["@ASSIGNED_BY_ID"] = { 3, 5, 8, 13 }, [">OPPORTUNITY"] = 5000 },
      hand = function(r)
        if not ASSIGNED[r.ASSIGNED_BY_ID] then return false end
        local o = r.OPPORTUNITY
        return o ~= nil and o > 5000
      end },
    { id = "null_ne_le", what = "=DATE null AND !STRING AND <=DOUBLE",
      filter = { ["=CLOSEDATE"] = "", ["!STAGE_ID"] = "LOSE", ["<=OPPORTUNITY"] = 7000 },
      hand = function(r)
        if r.CLOSEDATE ~= nil or r.STAGE_ID == "LOSE" then return false end
        local o = r.OPPORTUNITY
        return o ~= nil and o <= 7000
      end },
    { id = "range_or", what = "DATETIME BETWEEN (style B) AND (LIKE 'deal 1' OR <DOUBLE)",
      filter = { DATE_CREATE = { operator = "BETWEEN", from = "2023-12-01", to = "2024-03-31" },
                 { LOGIC = "OR", TITLE = { operator = "LIKE", value = "deal 1" }, ["<OPPORTUNITY"] = 1000 } },
      hand = function(r)
        local d = r.DATE_CREATE
        if not (d >= "2023-12-01 00:00:00" and d <= "2024-03-31 00:00:00") then return false end
        if r.TITLE:lower():find("deal 1", 1, true) then return true end
        local o = r.OPPORTUNITY
        return o ~= nil and o < 1000
      end },
  }
  return { rows = rows, fields = fields, shapes = shapes }
end
