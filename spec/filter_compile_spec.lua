-- filter.compile: the predicate generated as Lua source answers as the
-- closures (the reference, what match ran before) on the shared generator's
-- 400 filters (spec/sql_filter_cases.lua: every field type, NULLs, both
-- styles, form text), on rows as they come and on rows the connector
-- normalizes; values and field codes never reach the generated text.
local filter = require "biconnector.filter"
local null = require("biconnector").null
local cjson = require "cjson"
local cases_mod = require "sql_filter_cases"

-- the generated text is made of these words, its own names (k1, f1, l1, m1),
-- integers, punctuation and row.CODE for a field code that is a plain Lua
-- name (codes: the field codes of the filter)
local VOCABULARY = {}
for w in ([[local return function end if then else elseif not and or goto do true false nil
  K row null type number tonumber as_string find lower ascii_lower like_match huge ...]]):gmatch("%S+") do
  VOCABULARY[w] = true
end
local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat return then
  true until while]]):gmatch("%S+") do KEYWORDS[w] = true end
local function assert_closed_text(src, codes)
  assert.is_nil(src:find("[\"'\\]"), "a quote or backslash in the text")
  assert.is_nil(src:find("%[[%[=]"), "a long bracket in the text")
  for word in src:gmatch("[%w_%.]+") do
    local name = word:match("^row%.(.*)$")
    if name then
      assert.is_true(codes[name] and name:find("^[A-Za-z_][A-Za-z0-9_]*$") ~= nil and not KEYWORDS[name],
        "row." .. name .. " is no plain field code")
    else
      assert.is_true(VOCABULARY[word] or word:match("^[kflm]?%d+$") ~= nil, "unexpected word " .. word)
    end
  end
end

local function codes_of(fields)
  local set = {}
  for _, f in ipairs(fields) do set[f.code] = true end
  return set
end

-- rows with NULL as nil: what the connector's enc:normalize gives
local function without_nulls(rows)
  local out = {}
  for i, row in ipairs(rows) do
    local r = {}
    for k, v in pairs(row) do if v ~= null then r[k] = v end end
    out[i] = r
  end
  return out
end

describe("filter.compile", function()
  local cases = cases_mod.new(4242)
  local plain = without_nulls(cases.rows)
  local asts, seen = {}, {}
  for n = 1, 400 do
    local raw = cases.filter(n % 4)
    -- as the server receives it (JSON turns list keys into strings)
    local ast = assert(filter.parse(cjson.decode(cjson.encode(raw)), cases.fields))
    cases_mod.collect_ops(ast, seen)
    asts[n] = ast
  end

  it("answers as the closures on the 400 generated filters, every operator, NULLs as null and as nil", function()
    for _, op in ipairs(cases_mod.ops) do assert.is_true(seen[op], "never generated: " .. op) end
    local selective = 0
    for n, ast in ipairs(asts) do
      local src = assert(filter.source(ast), "filter #" .. n .. " was not generated")
      assert_closed_text(src, codes_of(cases.fields))
      local generated, normalized = filter.compile(ast), filter.compile(ast, "normalized")
      local reference = filter.compile(ast, "closures")
      assert.are_not.equal(reference, generated)
      local kept = 0
      for i, row in ipairs(cases.rows) do
        local want = reference(row)
        if want ~= generated(row) or want ~= normalized(plain[i]) or want ~= reference(plain[i])
          or want ~= filter.match(ast, row) then
          error(("filter #%d, row %d: closures %s, source %s, normalized %s\n%s"):format(n, i, tostring(want),
            tostring(generated(row)), tostring(normalized(plain[i])), src))
        end
        if want then kept = kept + 1 end
      end
      if kept > 0 and kept < #cases.rows then selective = selective + 1 end
    end
    assert.is_true(selective > 200, "only " .. selective .. " filters selected a proper subset")
  end)

  it("types values as the closures do: numbers as text, text as numbers, NaN, infinities, false, tables", function()
    -- values a row may hold without enc:normalize; none that a comparison
    -- refuses (a number in a date field raises, in both)
    local ODD = {
      int = { "5", " 7 ", "0x10", "1e1", "abc", "", false, {}, 0 / 0, 1 / 0, 5.0, -0.0, 2 ^ 53, null },
      double = { "0.5", "-2.5e0", "1.5", "x", true, 0 / 0, -1 / 0, 3, null },
      string = { 12, 12.0, 0.1 + 0.2, 1e300, -1 / 0, 0 / 0, -0.0, 42, 99.99, "apple", null },
    }
    local draw = 12345
    local function pick(list)
      draw = draw * 48271 % 2147483647
      return list[draw % #list + 1]
    end
    local odd = {}
    for i = 1, 600 do
      odd[i] = { id = pick(ODD.int), n = pick(ODD.int), ["x value"] = pick(ODD.double), ['s"tr'] = pick(ODD.string),
        d = cases.rows[i].d, ["dt`x"] = cases.rows[i]["dt`x"] }
    end
    for n, ast in ipairs(asts) do
      local generated, reference = filter.compile(ast), filter.compile(ast, "closures")
      for i, row in ipairs(odd) do
        local want, got = reference(row), generated(row)
        if want ~= got then
          error(("filter #%d, odd row %d: closures %s, source %s\n%s"):format(n, i, tostring(want), tostring(got),
            filter.source(ast)))
        end
      end
    end
    -- the tolerance match documents
    assert.is_true(filter.match(filter.parse({ [">ID"] = 5 }, { { code = "ID", type = "int" } }), { ID = "6" }))
  end)

  it("looks a list on a number field up by the value as the row gives it, past its memo's bound as before it", function()
    local fields = { { code = "ID", type = "int" }, { code = "N", type = "double" } }
    local shapes = {
      { ["@ID"] = { 3, 5, 8 } },
      { ["!@ID"] = { 3, 5, 8 }, [">N"] = 1 },
      -- the list and another condition on the same field, in both orders of a group
      { { LOGIC = "OR", ["@ID"] = { 3, 5 }, [">ID"] = 1500 } },
      { { LOGIC = "OR", ["@ID"] = { 3, 5 }, ["<ID"] = 2, ["=N"] = "" } },
      { ["@ID"] = { 7, 9 }, ["!@ID"] = { 9 }, ["<=ID"] = 9 },
      { ["@N"] = { 0.5, 3 } },
    }
    local values = { "3", " 5 ", "0x8", "3.0", "abc", "", false, true, {}, 0 / 0, 1 / 0, 5.0, -0.0, null, 3.5, "0.5" }
    for _, shape in ipairs(shapes) do
      local ast = assert(filter.parse(shape, fields))
      local src = assert(filter.source(ast))
      assert.truthy(src:find("m1 = ", 1, true), "the list is looked up by the raw value:\n" .. src)
      assert.is_nil(filter.source(ast, "normalized"):find("m1", 1, true))
      local generated, reference = filter.compile(ast), filter.compile(ast, "closures")
      -- 3000 distinct values, numbers and their text, more than the memo keeps; twice over
      for round = 1, 2 do
        for i = 0, 3000 do
          local row = { ID = i % 2 == 0 and i or tostring(i), N = (i % 7 == 0) and tostring(i / 2) or i / 2 }
          if i % 5 == 0 then row.ID = values[i % #values + 1] end
          if i % 11 == 0 then row.N = values[(i + 3) % #values + 1] end
          local want, got = reference(row), generated(row)
          if want ~= got then
            error(("round %d, row %d (ID %s, N %s): closures %s, source %s\n%s"):format(round, i, tostring(row.ID),
              tostring(row.N), tostring(want), tostring(got), src))
          end
        end
      end
    end
  end)

  it("never writes a value or a field code into the text", function()
    local HOSTILE = { "]]", "]=]", "'", '"', "\\", "\n", "\r\n", "end)", "end end return true --",
      "os.exit(1)", '") os.exit(1) --', "]] os.exit(1) --[[", "%s%d", "\0", "--[[", "k1", "row", "goto l1",
      ("x"):rep(5000) }
    local fields = {}
    for i, code in ipairs(HOSTILE) do fields[i] = { code = code, type = "string" } end
    fields[#fields + 1] = { code = "n\n]]end", type = "int" }
    for _, v in ipairs(HOSTILE) do
      local obj = { [HOSTILE[1]] = v, ["!" .. HOSTILE[2]] = v, ["%" .. HOSTILE[3]] = v, ["!%" .. HOSTILE[4]] = v,
        ["=%" .. HOSTILE[5]] = v, ["@" .. HOSTILE[6]] = { v, v .. "2" }, [">=" .. HOSTILE[7]] = v,
        ["<n\n]]end"] = 5, [HOSTILE[8]] = { operator = "between", from = v, to = v .. "z" },
        { LOGIC = "OR", [HOSTILE[9]] = v, ["!@" .. HOSTILE[10]] = { v, "a", "b", "c", "d", "e" } } }
      local ast = assert(filter.parse(obj, fields, filter.MAX_LIMITS))
      local src, consts = filter.source(ast)
      assert_closed_text(src, codes_of(fields))
      for _, part in ipairs({ "os.exit", "]]", "end)", "--" }) do assert.is_nil(src:find(part, 1, true)) end
      local found = false
      for _, c in ipairs(consts) do if c == v then found = true end end
      assert.is_true(found, "the value is no constant")
      -- the value is matched as data
      local row = {}
      for _, f in ipairs(fields) do row[f.code] = v end
      row["n\n]]end"] = 1
      local reference = filter.compile(ast, "closures")
      assert.equal(reference(row), filter.compile(ast)(row))
      row[HOSTILE[1]] = v .. "!"
      assert.equal(reference(row), filter.compile(ast)(row))
    end
  end)

  it("reads a field whose code is a plain Lua name as row.CODE, any other code through a constant", function()
    local codes = { "ID", "_a1", "end", "nil", "x y", "\195\169t\195\169", "1a", ("a"):rep(65), "k1", "row" }
    local fields, obj, row = {}, {}, {}
    for i, code in ipairs(codes) do
      fields[i] = { code = code, type = "string" }
      obj["=" .. code] = "v" .. i
      row[code] = "v" .. i
    end
    local ast = assert(filter.parse(obj, fields))
    local src, consts = filter.source(ast)
    assert_closed_text(src, codes_of(fields))
    for _, code in ipairs({ "ID", "_a1", "k1", "row" }) do
      assert.truthy(src:find("row." .. code .. "\n", 1, true), code .. " is read as row." .. code)
    end
    for _, code in ipairs({ "end", "nil", "x y", "\195\169t\195\169", "1a", ("a"):rep(65) }) do
      local found = false
      for _, c in ipairs(consts) do if c == code then found = true end end
      assert.is_true(found, code .. " is a constant")
    end
    assert.is_true(filter.compile(ast)(row))
    assert.is_true(filter.compile(ast, "normalized")(row))
    row.ID = "other"
    assert.is_false(filter.compile(ast)(row))
  end)

  it("keeps the closures for a filter too large to generate, and loads the largest it generates", function()
    local fields = { { code = "ID", type = "int" }, { code = "S", type = "string" } }
    local function or_group(n)
      local group = { LOGIC = "OR" }
      for i = 1, n do
        if i % 2 == 0 then group[i] = { ["%S"] = "x" .. i } else group[i] = { ID = i } end
      end
      return { group }
    end
    local big = assert(filter.parse(or_group(1001), fields))
    assert.is_nil(filter.source(big))
    assert.is_true(filter.match(big, { ID = 999 }))
    assert.is_true(filter.match(big, { S = "ax1000b" }))
    assert.is_false(filter.match(big, { ID = 2, S = "x" }))
    local largest = assert(filter.parse(or_group(1000), fields))
    local src, consts = assert(filter.source(largest))
    assert.is_true(#consts > 100) -- past the constants bound to locals
    local chunk = assert(load(src, "=filter", "t", {}))
    assert.equal("function", type(chunk(consts)))
    local reference = filter.compile(largest, "closures")
    for _, row in ipairs({ { ID = 999 }, { ID = 1000 }, { S = "x1000" }, { S = "x999" }, {} }) do
      assert.equal(reference(row), filter.compile(largest)(row))
    end
    -- 60 and more values: past what LuaJIT lets a function hold as upvalues
    local many = {}
    for i = 1, 70 do many[i] = { ID = i * 3 } end
    many.LOGIC = "OR"
    local ast = assert(filter.parse({ many }, fields))
    src = assert(filter.source(ast))
    assert.is_truthy(load(src, "=filter", "t", {}))
    assert.is_true(filter.compile(ast)({ ID = 210 }))
    assert.is_false(filter.compile(ast)({ ID = 211 }))
  end)

  it("caches one predicate per AST and kind, and refuses an unknown kind", function()
    local ast = assert(filter.parse({ [">ID"] = 5 }, { { code = "ID", type = "int" } }))
    assert.equal(filter.compile(ast), filter.compile(ast))
    assert.equal(filter.compile(ast, "normalized"), filter.compile(ast, "normalized"))
    assert.are_not.equal(filter.compile(ast), filter.compile(ast, "normalized"))
    assert.has_error(function() filter.compile(ast, "fast") end,
      'filter.compile: how must be "source", "normalized" or "closures", got "fast"')
    assert.has_error(function() filter.compile({ kind = "cond", op = "nope" }) end)
    assert.is_true(filter.compile(nil)({}))
  end)
end)
