-- biconnector.filter: parsing both styles (and mixed), value typing, errors,
-- match, and SQL generation for the three dialects, including hostile names
-- and values that must never reach the SQL text.
local filter = require "biconnector.filter"
local form = require "biconnector.form"
local null = require("biconnector").null

local FIELDS = {
  { code = "ID", name = "ID", type = "int" },
  { code = "TITLE", name = "TITLE", type = "string" },
  { code = "AMOUNT", name = "AMOUNT", type = "double" },
  { code = "DAY", name = "DAY", type = "date" },
  { code = "CREATED", name = "CREATED", type = "datetime" },
}

local function cond(field, type_, op, extra)
  local n = { kind = "cond", field = field, type = type_, op = op }
  for k, v in pairs(extra or {}) do n[k] = v end
  return n
end
local function all(...) return { kind = "group", logic = "and", items = { ... } } end
local function any(...) return { kind = "group", logic = "or", items = { ... } } end

local function parse(obj)
  local ast, err = filter.parse(obj, FIELDS)
  assert.is_nil(err)
  return ast
end

describe("filter.parse, style A (key prefixes)", function()
  local CASES = {
    { { ID = 5 }, cond("ID", "int", "eq", { value = 5 }) },
    { { ["=ID"] = "5" }, cond("ID", "int", "eq", { value = 5 }) },
    { { ["!=ID"] = 5 }, cond("ID", "int", "ne", { value = 5 }) },
    { { ["!ID"] = 5 }, cond("ID", "int", "ne", { value = 5 }) },
    { { ["<>ID"] = 5 }, cond("ID", "int", "ne", { value = 5 }) },
    { { [">ID"] = 5 }, cond("ID", "int", "gt", { value = 5 }) },
    { { [">=ID"] = 5 }, cond("ID", "int", "ge", { value = 5 }) },
    { { ["<ID"] = 5 }, cond("ID", "int", "lt", { value = 5 }) },
    { { ["<=ID"] = 5 }, cond("ID", "int", "le", { value = 5 }) },
    { { ["@ID"] = { 1, "2" } }, cond("ID", "int", "in", { values = { 1, 2 } }) },
    { { ["@ID"] = 7 }, cond("ID", "int", "in", { values = { 7 } }) },
    { { ["!@ID"] = { 1, 2 } }, cond("ID", "int", "not_in", { values = { 1, 2 } }) },
    { { ID = { 1, 2 } }, cond("ID", "int", "in", { values = { 1, 2 } }) },
    { { ["!ID"] = { 1, 2 } }, cond("ID", "int", "not_in", { values = { 1, 2 } }) },
    { { ["%TITLE"] = "de_al" }, cond("TITLE", "string", "like", { value = "de_al" }) },
    { { ["!%TITLE"] = "x" }, cond("TITLE", "string", "not_like", { value = "x" }) },
    { { ["=%TITLE"] = "de%" }, cond("TITLE", "string", "pattern", { value = "de%" }) },
    { { ["%=TITLE"] = "de%" }, cond("TITLE", "string", "pattern", { value = "de%" }) },
    { { ["~TITLE"] = "de%" }, cond("TITLE", "string", "pattern", { value = "de%" }) },
    { { ["=DAY"] = null }, cond("DAY", "date", "is_null") },
    { { ["!DAY"] = null }, cond("DAY", "date", "not_null") },
    { { DAY = "" }, cond("DAY", "date", "is_null") },
    { { TITLE = "" }, cond("TITLE", "string", "eq", { value = "" }) },
    { { AMOUNT = "1.5" }, cond("AMOUNT", "double", "eq", { value = 1.5 }) },
    { { AMOUNT = "-2e3" }, cond("AMOUNT", "double", "eq", { value = -2000 }) },
    { { TITLE = 12 }, cond("TITLE", "string", "eq", { value = "12" }) },
  }
  for i, case in ipairs(CASES) do
    it("parses case " .. i .. " (" .. next(case[1]) .. ")", function()
      assert.same(all(case[2]), parse(case[1]))
    end)
  end

  it("reads groups with LOGIC, nested, as JSON or as a form sends them", function()
    -- items come in the order of their keys' text, whatever order a body used
    local want = all(any(cond("ID", "int", "lt", { value = 2 }), cond("ID", "int", "ge", { value = 5 }),
        all(cond("AMOUNT", "double", "gt", { value = 1 }), cond("TITLE", "string", "eq", { value = "a" }))),
      cond("DAY", "date", "ge", { value = "2025-05-31" }))
    assert.same(want, parse({ [">=DAY"] = "31.05.2025", { LOGIC = "OR", [">=ID"] = 5, ["<ID"] = 2,
      sub = { TITLE = "a", [">AMOUNT"] = 1 } } }))
    local body = "filter[%3E%3DDAY]=31.05.2025&filter[0][LOGIC]=OR&filter[0][%3E%3DID]=5&filter[0][%3CID]=2"
      .. "&filter[0][sub][TITLE]=a&filter[0][sub][%3EAMOUNT]=1"
    assert.same(want, parse(assert(form.decode(body)).filter))
  end)

  it("takes LOGIC case-insensitively and drops empty groups", function()
    assert.same(any(cond("ID", "int", "eq", { value = 1 }), cond("ID", "int", "eq", { value = 2 })),
      parse({ { logic = "or", { ID = 1 }, { ID = 2 } } }))
    assert.is_nil(parse({ { LOGIC = "OR" } }))
    assert.is_nil(parse({ g = {}, { {} } }))
    -- groups in a list, as filter[0][0][ID]=1&filter[0][1][ID]=2 decodes
    assert.same(all(cond("ID", "int", "eq", { value = 1 }), cond("ID", "int", "eq", { value = 2 })),
      parse(assert(form.decode("filter[0][0][ID]=1&filter[0][1][ID]=2")).filter))
    assert.same(any(cond("ID", "int", "eq", { value = 1 }), cond("ID", "int", "eq", { value = 2 })),
      parse(assert(form.decode("filter[0][LOGIC]=OR&filter[0][0][ID]=1&filter[0][1][ID]=2")).filter))
    local ast, err = filter.parse({ { 1, 2 } }, FIELDS)
    assert.is_nil(ast)
    assert.equal("filter[1][1]: neither a field condition nor a group", err)
    assert.is_nil(parse({}))
    assert.is_nil(parse(nil))
    assert.is_nil(parse(null))
  end)
end)

describe("filter.parse, style B (operator objects)", function()
  local CASES = {
    { { operator = "=", value = 1 }, "eq", { value = 1 } },
    { { operator = "eq", value = 1 }, "eq", { value = 1 } },
    { { operator = "!=", value = 1 }, "ne", { value = 1 } },
    { { operator = "<>", value = 1 }, "ne", { value = 1 } },
    { { operator = "NEQ", value = 1 }, "ne", { value = 1 } },
    { { operator = "GT", value = 1 }, "gt", { value = 1 } },
    { { operator = ">", value = 1 }, "gt", { value = 1 } },
    { { operator = "gte", value = 1 }, "ge", { value = 1 } },
    { { operator = ">=", value = 1 }, "ge", { value = 1 } },
    { { operator = "Lt", value = 1 }, "lt", { value = 1 } },
    { { operator = "<", value = 1 }, "lt", { value = 1 } },
    { { operator = "LTE", value = 1 }, "le", { value = 1 } },
    { { operator = "<=", value = 1 }, "le", { value = 1 } },
    { { operator = "IN", value = { 1, 2 } }, "in", { values = { 1, 2 } } },
    { { operator = "not  in", value = { 1 } }, "not_in", { values = { 1 } } },
    { { operator = "is null" }, "is_null", {} },
    { { operator = "IS NOT NULL" }, "not_null", {} },
    { { operator = "between", from = "1", to = 9 }, "between", { from = 1, to = 9 } },
    { { operator = "BETWEEN", value = { 1, 9 } }, "between", { from = 1, to = 9 } },
    { { operator = "=", value = null }, "is_null", {} },
  }
  for i, case in ipairs(CASES) do
    it("parses " .. case[1].operator .. " (case " .. i .. ")", function()
      assert.same(all(cond("ID", "int", case[2], case[3])), parse({ ID = case[1] }))
    end)
  end

  it("parses LIKE and NOT LIKE on strings", function()
    assert.same(all(cond("TITLE", "string", "like", { value = "x" })),
      parse({ TITLE = { operator = "like", value = "x" } }))
    assert.same(all(cond("TITLE", "string", "not_like", { value = "x" })),
      parse({ TITLE = { operator = "NOT LIKE", value = "x" } }))
  end)

  it("reads operator and value keys in any case, and BETWEEN's value as {from, to}", function()
    assert.same(all(cond("ID", "int", "gt", { value = 1 })), parse({ ID = { OPERATOR = ">", VALUE = "1" } }))
    assert.same(all(cond("ID", "int", "between", { from = 1, to = 5 })),
      parse({ ID = { operator = "between", value = { from = 1, to = "5" } } }))
    assert.same(all(cond("ID", "int", "between", { from = 1, to = 5 })),
      parse({ ID = { Operator = "BETWEEN", Value = { ["0"] = 1, ["1"] = 5 } } }))
  end)

  it("reads a list keyed by integers out of order or with holes (PHP arrays) as the values in key order", function()
    local want = all(cond("ID", "int", "in", { values = { 1, 3 } }))
    assert.same(want, parse({ ["@ID"] = { [2] = 3, [0] = 1 } }))
    assert.same(want, parse({ ID = { ["1"] = 3, ["0"] = 1 } }))
    assert.same(want, parse({ ID = { operator = "in", value = { ["0"] = 1, ["2"] = 3 } } }))
    assert.same(want, parse(form.decode("filter[ID][0]=1&filter[ID][2]=3").filter))
    assert.same(want, parse(form.decode("filter[%40ID][1]=3&filter[%40ID][0]=1").filter))
  end)

  it("mixes with style A in one filter and in groups", function()
    assert.same(all(cond("ID", "int", "ge", { value = 3 }), any(cond("CREATED", "datetime", "lt",
      { value = "2025-05-31 17:01:55" }), cond("TITLE", "string", "not_null"))),
      parse({ ID = { operator = ">=", value = "3" },
        g = { LOGIC = "OR", ["<CREATED"] = "2025-05-31T17:01:55+02:00", TITLE = { operator = "is not null" } } }))
  end)
end)

describe("filter.parse misuse", function()
  -- docs/filter.md, "API": fields not a list of codes raises. A map of code -> type,
  -- the natural guess, read as an empty list made every field "unknown" instead.
  it("raises for fields given as a map, naming a key", function()
    local ok, err = pcall(filter.parse, { ["=ID"] = 1 }, { ID = "int" })
    assert.is_false(ok)
    assert.matches("filter.parse: fields must be a list of {code=, name=, type=} (found key \"ID\")", err, 1, true)
    assert.has_error(function() filter.parse({ ["=ID"] = 1 }, "ID") end)
    assert.has_error(function() filter.parse({ ["=ID"] = 1 }, { { name = "ID" } }) end)
    -- an empty list is a description without fields: every field is unknown
    local ast, perr = filter.parse({ ["=ID"] = 1 }, {})
    assert.is_nil(ast)
    assert.matches('unknown field "ID"', perr, 1, true)
  end)
end)

describe("filter.parse typing", function()
  it("reads every date spelling of protocol.md", function()
    for _, s in ipairs({ "31.05.2025", "2025-05-31", "2025-05-31 00:00:00", "31.05.2025 00:00:00",
      "2025-05-31T00:00:00Z", "2025-05-31T00:00:00+03:00" }) do
      assert.same(all(cond("DAY", "date", "eq", { value = "2025-05-31" })), parse({ DAY = s }))
    end
  end)

  it("reads a date field given a time of day as its date part (as the row encoder does)", function()
    for _, v in ipairs({ "2025-05-31 12:00:00", "31.05.2025 17:01:55", "2025-05-31T23:59:59+02:00" }) do
      assert.same(all(cond("DAY", "date", "ge", { value = "2025-05-31" })), parse({ [">=DAY"] = v }))
    end
  end)

  it("reads every datetime spelling of protocol.md", function()
    for _, s in ipairs({ "31.05.2025 17:01:55", "2025-05-31 17:01:55", "2025-05-31T17:01:55",
      "2025-05-31T17:01:55+02:00", "2025-05-31T17:01:55Z", "2025-05-31T17:01:55.123Z", "2025-05-31T17:01:55-0500" }) do
      assert.same(all(cond("CREATED", "datetime", "eq", { value = "2025-05-31 17:01:55" })), parse({ CREATED = s }))
    end
    assert.same(all(cond("CREATED", "datetime", "eq", { value = "2025-05-31 00:00:00" })),
      parse({ CREATED = "31.05.2025" }))
    assert.same(all(cond("CREATED", "datetime", "eq", { value = "2025-05-31 17:01:00" })),
      parse({ CREATED = "2025-05-31 17:01" }))
  end)

  local BAD = {
    { { ID = "abc" }, 'filter[ID]: bad value "abc" for int field ID (expected an integer)' },
    { { ID = "1.5" }, 'filter[ID]: bad value "1.5" for int field ID' },
    { { ID = 1.5 }, "filter[ID]: bad value 1.5 for int field ID" },
    { { ID = "99999999999999999999" }, "filter[ID]: bad value" },
    -- an integer, but past what an int field holds: said so, not "expected an integer"
    { { ID = "18446744073709551615" }, 'filter[ID]: bad value "18446744073709551615" for int field ID (an integer '
      .. (math.type and "outside -2^63 to 2^63-1" or "outside -2^53 to 2^53, the integers LuaJIT holds exactly") .. ")" },
    { { ID = -1e300 }, "(an integer outside" },
    { { ID = true }, "filter[ID]: bad value true for int field ID (expected a scalar)" },
    { { AMOUNT = "0x10" }, 'filter[AMOUNT]: bad value "0x10" for double field AMOUNT' },
    { { AMOUNT = "nan" }, 'filter[AMOUNT]: bad value "nan"' },
    { { AMOUNT = "1,5" }, 'filter[AMOUNT]: bad value "1,5"' },
    { { DAY = "2025-13-01" }, 'filter[DAY]: bad value "2025-13-01" for date field DAY (no such day)' },
    { { DAY = "29.02.2025" }, "(no such day)" },
    { { DAY = "2025-05-31 25:00:00" }, 'filter[DAY]: bad value "2025-05-31 25:00:00" for date field DAY (no such time of day)' },
    { { DAY = "May 31" }, "(not a date" },
    { { DAY = 20250531 }, "filter[DAY]: bad value 20250531 for date field DAY (expected a date string)" },
    { { CREATED = "2025-05-31 24:00:00" }, "(no such time of day)" },
    { { CREATED = "2025-05-31T17:01:55+2" }, "(bad time of day)" },
    { { TITLE = true }, "filter[TITLE]: bad value true for string field TITLE" },
    { { ["@ID"] = { 1, "x" } }, 'filter[@ID][2]: bad value "x" for int field ID' },
    { { ["@ID"] = { 1, null } }, "filter[@ID][2]: a list may not hold null" },
    { { [">ID"] = { 1, 2 } }, "filter[>ID]: operator gt takes one value, not a list" },
    { { [">ID"] = null }, "filter[>ID]: operator gt cannot compare with null" },
    { { ["%TITLE"] = null }, "filter[%TITLE]: operator like cannot compare with null" },
    { { ["!%TITLE"] = null }, "filter[!%TITLE]: operator not_like cannot compare with null" },
    { { TITLE = { operator = "like", value = null } }, "filter[TITLE]: operator like cannot compare with null" },
    { { ["%ID"] = "1" }, "filter[%ID]: like needs a string field, ID is int" },
    { { NOPE = 1 }, 'filter[NOPE]: unknown field "NOPE"' },
    { { ["=NOPE"] = 1 }, 'filter[=NOPE]: unknown field "NOPE" (after the operator "=")' },
    { { [">=nope"] = 1 }, 'filter[>=nope]: unknown field "nope" (after the operator ">=")' },
    { { ["!@id"] = { 1 } }, 'filter[!@id]: unknown field "id" (after the operator "!@")' },
    { { [">>ID"] = 1 }, 'filter[>>ID]: unknown operator ">>" in ">>ID"' },
    { { id = 1 }, 'filter[id]: unknown field "id"' },
    { { ID = { operator = "ALMOST", value = 1 } }, 'filter[ID]: unknown operator "ALMOST"' },
    { { ID = { operator = ">", value = nil } }, "filter[ID]: operator > needs a value" },
    { { ID = { operator = "between", from = 1 } }, "filter[ID]: between needs both from and to" },
    { { [">ID"] = { operator = "=", value = 1 } }, "filter[>ID]: an operator prefix and an operator object at once" },
    { { ID = { from = 1 } }, "filter[ID]: expected a value, a list of values or {operator=, value=}" },
    { { { LOGIC = "XOR", ID = 1 } }, "filter[1][LOGIC]: LOGIC must be AND or OR" },
    { { g = { NOPE = 1 } }, 'filter[g][NOPE]: unknown field "NOPE"' },
    { { [1] = 5 }, "filter[1]: neither a field condition nor a group" },
    { "ID=1", "filter: expected an object, got string" },
  }
  for i, case in ipairs(BAD) do
    it("refuses bad case " .. i .. ": " .. case[2], function()
      local ast, err = filter.parse(case[1], FIELDS)
      assert.is_nil(ast)
      assert.matches(case[2], err, 1, true)
    end)
  end

  it("refuses integers beyond 64 bits at both ends, as JSON numbers and as text", function()
    local json = require "biconnector.json"
    for _, text in ipairs({ '{"ID":-9223372036854775809}', '{"ID":"-9223372036854775809"}',
      '{"ID":9223372036854775808}', '{"ID":"9223372036854775808"}' }) do
      local ast, err = filter.parse(json.decode(text), FIELDS)
      assert.is_nil(ast, text)
      assert.matches("filter%[ID%]: bad value .* for int field ID", err)
    end
    -- the extremes themselves are integers under Lua 5.4 (LuaJIT's numbers are exact below 2^53 only:
    -- "9007199254740993" reads as 2^53, so 2^53 itself is refused, spec/sql_review_spec.lua)
    local fine = math.type and { '{"ID":-9223372036854775808}', '{"ID":"-9223372036854775808"}',
      '{"ID":"9223372036854775807"}' } or { '{"ID":-9007199254740991}', '{"ID":"9007199254740991"}' }
    for _, text in ipairs(fine) do
      assert.truthy(filter.parse(json.decode(text), FIELDS), text)
    end
    if not math.type then
      for _, text in ipairs({ '{"ID":9007199254740992}', '{"ID":"-9007199254740992"}', '{"ID":"9007199254740993"}' }) do
        assert.is_nil(filter.parse(json.decode(text), FIELDS), text)
      end
    end
  end)

  it("refuses groups nested too deeply", function()
    local obj = { ID = 1 }
    for _ = 1, 40 do obj = { g = obj } end
    local ast, err = filter.parse(obj, FIELDS)
    assert.is_nil(ast)
    assert.matches("groups nest deeper than 32 levels", err, 1, true)
  end)

  it("types long values in linear time (backtracking patterns would hang here)", function()
    local n = 200000
    for _, case in ipairs({ { ID = (" "):rep(n) .. "x" }, { AMOUNT = ("1"):rep(n) .. "x" },
      { AMOUNT = ("1"):rep(n) .. "." .. ("1"):rep(n) .. "e" }, { DAY = (" "):rep(n) .. "x" } }) do
      local ast, err = filter.parse(case, FIELDS)
      assert.is_nil(ast)
      assert.matches("bad value", err, 1, true)
    end
    assert.same(all(cond("AMOUNT", "double", "eq", { value = 7.0 })), parse({ AMOUNT = (" "):rep(n) .. "7" .. (" "):rep(n) }))
  end)

  it("treats an unknown field type as string, as Bitrix24 does", function()
    assert.same(all(cond("X", "string", "eq", { value = "1" })), filter.parse({ X = 1 }, { { code = "X", type = "money" } }))
  end)

  it("exports normalize for row values", function()
    assert.equal("2025-05-31", filter.normalize("date", "31.05.2025"))
    assert.equal("2025-05-31 17:01:55", filter.normalize("datetime", "2025-05-31T17:01:55Z"))
    assert.equal(5, filter.normalize("int", "5"))
    assert.is_nil(filter.normalize("int", "five"))
    assert.is_nil(filter.normalize("nope", "1"))
  end)
end)

describe("filter.match", function()
  local row = { ID = 7, TITLE = "Big Deal_1", AMOUNT = 2.5, DAY = "2025-05-31", CREATED = null }
  local function m(obj) return filter.match(parse(obj), row) end

  it("compares typed values", function()
    assert.is_true(m({ ID = "7" }))
    assert.is_false(m({ ID = 8 }))
    assert.is_true(m({ [">=DAY"] = "31.05.2025", ["<DAY"] = "2025-06-01" }))
    assert.is_true(m({ AMOUNT = { operator = "between", from = 2, to = 3 } }))
    assert.is_true(m({ ["@ID"] = { 1, 7 } }))
    assert.is_false(m({ ["!@ID"] = { 1, 7 } }))
  end)

  it("matches LIKE as SQLite does: substring with % and _ literal, ASCII case-insensitive", function()
    assert.is_true(m({ ["%TITLE"] = "deal_" }))
    assert.is_false(m({ ["%TITLE"] = "deal%" }))
    assert.is_false(m({ ["%TITLE"] = "dealx" }))
    assert.is_true(m({ ["=%TITLE"] = "big%" }))
    assert.is_true(m({ ["=%TITLE"] = "Big Deal__" }))
    assert.is_false(m({ ["=%TITLE"] = "Big" }))
    assert.is_true(m({ ["!%TITLE"] = "small" }))
    assert.is_true(filter.like("Привет", "П_ивет"))
    assert.is_false(filter.like("Привет", "п%"))
  end)

  it("gives NULL the documented meaning", function()
    assert.is_true(m({ CREATED = null }))
    assert.is_true(m({ ["!CREATED"] = "2025-01-01" }))
    assert.is_false(m({ [">CREATED"] = "2025-01-01" }))
    assert.is_false(m({ ["<=CREATED"] = "2025-01-01" }))
    assert.is_false(m({ ["!CREATED"] = null }))
    assert.is_true(filter.match(parse({ ["!%TITLE"] = "x" }), { TITLE = nil }))
  end)

  it("compiles an AST to a predicate once and reuses it", function()
    local ast = parse({ [">ID"] = 5 })
    local f = filter.compile(ast)
    assert.equal(f, filter.compile(ast))
    assert.is_true(f({ ID = 6 }))
    assert.is_false(f({ ID = 5 }))
    assert.is_false(f({}))
    assert.is_true(filter.compile(nil)({}))
    assert.has_error(function() filter.match({ kind = "cond", op = "nope" }, {}) end)
  end)

  it("compares numbers that arrive as text and strings that arrive as numbers", function()
    assert.is_true(filter.match(parse({ [">ID"] = 5 }), { ID = "6" }))
    assert.is_true(filter.match(parse({ TITLE = "12" }), { TITLE = 12 }))
    assert.is_true(filter.match(parse({ ["!ID"] = 5 }), { ID = "not a number" }))
  end)

  it("applies OR and AND", function()
    assert.is_true(m({ { LOGIC = "OR", ID = 1, TITLE = "Big Deal_1" } }))
    assert.is_false(m({ { LOGIC = "AND", ID = 1, TITLE = "Big Deal_1" } }))
    assert.is_true(filter.match(nil, row))
  end)
end)

describe("filter.to_sql", function()
  -- items in the order of their keys' text: "%TITLE" < "1" < ">=ID"
  local ast = parse({ [">=ID"] = 5, ["%TITLE"] = "50%_!", { LOGIC = "OR", ["!DAY"] = "2025-05-31", ["@AMOUNT"] = { 1, 2 } } })

  it("writes sqlite with ? placeholders and quoted identifiers", function()
    local sql, params = filter.to_sql(ast, { dialect = "sqlite" })
    assert.equal([[("TITLE" LIKE ? ESCAPE '!' AND (("DAY" IS NULL OR "DAY" <> ?) OR "AMOUNT" IN (?, ?)) AND "ID" >= ?)]], sql)
    assert.same({ "%50!%!_!!%", "2025-05-31", 1, 2, 5 }, params)
  end)

  it("writes postgres with $n placeholders and ILIKE, in the PostgreSQL engine's dialect", function()
    local sql, params = filter.to_sql(ast, { dialect = "postgres", first_param = 3 })
    assert.equal([[(("TITLE")::text COLLATE "C" ILIKE $3 ESCAPE '!' AND (("DAY" IS NULL OR NOT ("DAY" >= '0001-01-01' AND "DAY" < '10000-01-01') OR NOT ("DAY" >= $4 AND "DAY" < $5)) OR (CASE WHEN "AMOUNT"::float8 IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE "AMOUNT"::float8 END) IN ($6, $7)) AND "ID" >= $8)]], sql)
    assert.same({ "%50!%!_!!%", "2025-05-31", "2025-06-01", 1, 2, 5 }, params)
    assert.equal(sql, (filter.to_sql(ast, { dialect = require("biconnector.sql.postgresql").dialect, first_param = 3 })))
  end)

  it("writes mysql with backquotes and maps columns, in the MySQL engine's dialect", function()
    local columns = { ID = "deal id", TITLE = "ti`tle" }
    local sql = filter.to_sql(ast, { dialect = "mysql", columns = columns })
    assert.equal(sql, (filter.to_sql(ast, { dialect = require("biconnector.sql.mysql").dialect, columns = columns })))
    assert.truthy(sql:find("CAST(CONVERT(`ti``tle` USING utf8mb4) AS BINARY)", 1, true))
    assert.truthy(sql:find("OR `AMOUNT` IN (?, ?)) AND `deal id` >= ?)", 1, true))
    assert.falsy(sql:find("$", 1, true))
  end)

  it("writes sqlite in the SQLite engine's dialect", function()
    assert.equal(filter.to_sql(ast, { dialect = "sqlite" }),
      (filter.to_sql(ast, { dialect = require("biconnector.sql.sqlite").dialect })))
    assert.equal(filter.to_sql(ast, { dialect = "sqlite" }), (filter.to_sql(ast)))
  end)

  it("writes the other operators", function()
    local function sql(obj) return (filter.to_sql(parse(obj), { dialect = "sqlite" })) end
    assert.equal([[("ID" IS NULL OR "ID" NOT IN (?, ?))]], sql({ ["!@ID"] = { 1, 2 } }))
    assert.equal([["ID" BETWEEN ? AND ?]], sql({ ID = { operator = "between", from = 1, to = 2 } }))
    assert.equal([["DAY" IS NULL]], sql({ DAY = null }))
    assert.equal([["DAY" IS NOT NULL]], sql({ DAY = { operator = "is not null" } }))
    assert.equal([[("TITLE" IS NULL OR NOT ("TITLE" LIKE ? ESCAPE '!'))]], sql({ ["!%TITLE"] = "x" }))
    assert.equal([["TITLE" LIKE ? ESCAPE '!']], sql({ ["=%TITLE"] = "x%" }))
    assert.equal("1=0", sql({ ["@ID"] = {} }))
    assert.equal("1=1", (filter.to_sql(nil, { dialect = "postgres" })))
  end)

  it("refuses an unknown dialect and bad column names", function()
    assert.has_error(function() filter.to_sql(ast, { dialect = "oracle" }) end)
    assert.has_error(function() filter.to_sql(ast, { columns = { ID = "a\0b" } }) end)
    assert.has_error(function() filter.to_sql(ast, { columns = { ID = "" } }) end)
  end)

  describe("keeps hostile input out of the SQL text", function()
    local HOSTILE = { "x' OR '1'='1", "1; DROP TABLE t; --", "--", "a\0b", '"; DELETE FROM t; --', "`x`",
      "$1", "?", "/* c */", "\\'", "'" }

    it("values travel only as parameters", function()
      for _, v in ipairs(HOSTILE) do
        for _, obj in ipairs({ { TITLE = v }, { ["!TITLE"] = v }, { ["%TITLE"] = v }, { ["=%TITLE"] = v },
          { ["@TITLE"] = { v, "ok" } }, { TITLE = { operator = "NOT LIKE", value = v } },
          { TITLE = { operator = "between", from = v, to = v } } }) do
          for _, dialect in ipairs({ "sqlite", "postgres", "mysql" }) do
            local sql, params = filter.to_sql(parse(obj), { dialect = dialect })
            -- the text does not depend on the value at all
            local benign = {}
            for k, x in pairs(obj) do
              if type(x) ~= "table" then benign[k] = "benign"
              elseif x.operator then benign[k] = { operator = x.operator, value = "b", from = "b", to = "b" }
              else benign[k] = { "b", "ok" } end
            end
            assert.equal(filter.to_sql(parse(benign), { dialect = dialect }), sql)
            assert.is_nil(sql:find("\0", 1, true))
            assert.is_nil(sql:find(";", 1, true))
            assert.is_nil(sql:find("--", 1, true))
            local found = false
            for _, p in ipairs(params) do
              if type(p) == "string" and p:find((v:gsub("[!%%_]", "!%0")), 1, true) then found = true end
              if p == v then found = true end
            end
            assert.is_true(found, "value not among the parameters: " .. v)
          end
        end
      end
    end)

    it("unknown or hostile field names are parse errors, never SQL", function()
      for _, v in ipairs(HOSTILE) do
        for _, key in ipairs({ v, ">=" .. v, "!" .. v }) do
          local parsed, err = filter.parse({ [key] = 1 }, FIELDS)
          assert.is_nil(parsed)
          assert.matches("unknown", err, 1, true)
        end
        local parsed, err = filter.parse({ [v] = { operator = "=", value = 1 } }, FIELDS)
        assert.is_nil(parsed)
        assert.matches("unknown", err, 1, true)
      end
    end)

    it("described fields with hostile codes are quoted, and NUL is refused", function()
      local fields = { { code = 'a"b; DROP TABLE t; --', type = "int" }, { code = "c`d", type = "int" },
        { code = "e\0f", type = "int" } }
      local hostile = assert(filter.parse({ ['a"b; DROP TABLE t; --'] = 1, ["c`d"] = 2 }, fields))
      assert.equal([[("a""b; DROP TABLE t; --" = ? AND "c`d" = ?)]], (filter.to_sql(hostile, { dialect = "sqlite" })))
      assert.equal([[(`a"b; DROP TABLE t; --` = ? AND `c``d` = ?)]], (filter.to_sql(hostile, { dialect = "mysql" })))
      local nul = assert(filter.parse({ ["e\0f"] = 1 }, fields))
      assert.has_error(function() filter.to_sql(nul, { dialect = "sqlite" }) end)
    end)
  end)
end)

describe("filter.styles", function()
  it("is the one table of recognizers, open to a third style", function()
    assert.equal(3, #filter.styles)
    table.insert(filter.styles, 1, {
      name = "test style",
      recognize = function(key, value, ctx, where)
        if key ~= "$eqID" then return false end
        return { kind = "cond", field = "ID", type = "int", op = "eq", value = tonumber(value) }
      end,
    })
    local ok, ast = pcall(filter.parse, { ["$eqID"] = "4" }, FIELDS)
    table.remove(filter.styles, 1)
    assert.is_true(ok)
    assert.same(all(cond("ID", "int", "eq", { value = 4 })), ast)
  end)
end)
