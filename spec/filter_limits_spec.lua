-- The caps on one filter (docs/filter.md, "Limits"): a LIKE value, the values
-- of one list and the conditions of the whole filter have limits; the largest
-- filter within them parses, one more byte, value or condition is refused with
-- a message naming the cap, the limit and the size received; a connector
-- sets its own (filter_limits), within the maxima that keep the SQL engines'
-- own limits out of reach, and its /data answers 400 over them.
local helpers = require "helpers"
local filter = require "biconnector.filter"
local connector = require "biconnector.connector"
local cjson = require "cjson"

local FIELDS = {
  { code = "ID", name = "ID", type = "int" },
  { code = "TITLE", name = "Title", type = "string" },
  { code = "DAY", name = "Day", type = "date" },
}

local function range(n, f)
  local t = {}
  for i = 1, n do t[i] = f and f(i) or i end
  return t
end

-- An OR group of n conditions (style A nesting, as a form body decodes it).
local function or_group(n)
  local g = { LOGIC = "OR" }
  for i = 1, n do g[tostring(i)] = { [">ID"] = i } end
  return { g }
end

local function count_conditions(node)
  if node.kind == "cond" then return node.values and math.max(1, #node.values) or 1 end
  local n = 0
  for _, item in ipairs(node.items) do n = n + count_conditions(item) end
  return n
end

describe("filter limits", function()
  local L = filter.LIMITS

  it("has the documented defaults and maxima", function()
    assert.same({ like = 1024, list = 5000, conditions = 5000 }, filter.LIMITS)
    assert.same({ like = 16384, list = 10000, conditions = 10000 }, filter.MAX_LIMITS)
  end)

  it("takes a LIKE value of the limit and refuses one byte more, in every LIKE operator", function()
    local at, over = ("x"):rep(L.like), ("x"):rep(L.like + 1)
    for _, key in ipairs({ "%TITLE", "!%TITLE", "=%TITLE", "%=TITLE", "~TITLE", "!=%TITLE" }) do
      assert.truthy(filter.parse({ [key] = at }, FIELDS))
      local ast, err = filter.parse({ [key] = over }, FIELDS)
      assert.is_nil(ast)
      assert.equals(("filter[%s]: a LIKE value of 1025 bytes is over the limit of 1024 bytes (filter_limits.like)")
        :format(key), err)
    end
    for _, op in ipairs({ "LIKE", "not like" }) do
      local _, err = filter.parse({ TITLE = { operator = op, value = over } }, FIELDS)
      assert.equals("filter[TITLE]: a LIKE value of 1025 bytes is over the limit of 1024 bytes (filter_limits.like)", err)
    end
    -- bytes, not characters: 513 two-byte characters are 1026 bytes
    local _, err = filter.parse({ ["%TITLE"] = ("é"):rep(513) }, FIELDS)
    assert.matches("a LIKE value of 1026 bytes", err, 1, true)
  end)

  it("takes a list of the limit and refuses one value more, however the list is spelled", function()
    local at, over = range(L.list), range(L.list + 1)
    local spellings = {
      function(l) return { ["@ID"] = l } end,
      function(l) return { ["!@ID"] = l } end,
      function(l) return { ID = l } end,                                   -- an array is IN
      function(l) return { ["!ID"] = l } end,
      function(l) return { ID = { operator = "IN", value = l } } end,
      function(l) return { ID = { operator = "NOT IN", value = l } } end,
      function(l) -- PHP's keyed array, as a form body decodes it
        local t = {}
        for i, v in ipairs(l) do t[tostring(i - 1)] = tostring(v) end
        return { ["@ID"] = t }
      end,
    }
    for i, spell in ipairs(spellings) do
      local ast = filter.parse(spell(at), FIELDS)
      assert.equals(L.list, #ast.items[1].values, "spelling " .. i)
      local none, err = filter.parse(spell(over), FIELDS)
      assert.is_nil(none)
      assert.matches("^filter%[[!@]*ID%]: a list of 5001 values is over the limit of 5000 values %(filter_limits.list%)$", err)
    end
  end)

  it("takes a filter of the limit's conditions and refuses one more; a list of n values counts n", function()
    local ast = assert(filter.parse(or_group(L.conditions), FIELDS))
    assert.equals(L.conditions, count_conditions(ast))
    local none, err = filter.parse(or_group(L.conditions + 1), FIELDS)
    assert.is_nil(none)
    assert.equals("filter: 5001 conditions (a list of n values counting n) are over the limit of 5000 "
      .. "(filter_limits.conditions)", err)
    -- a list of the limit plus one more condition
    none, err = filter.parse({ ["@ID"] = range(L.list), [">ID"] = 0 }, FIELDS)
    assert.is_nil(none)
    assert.matches("5001 conditions", err, 1, true)
    -- conditions nested in groups count too
    local nested = { LOGIC = "OR", { ["@ID"] = range(2500) }, { { ["!@ID"] = range(2500) } } }
    assert.truthy(filter.parse(nested, FIELDS))
    nested[1]["<ID"] = 5
    none, err = filter.parse(nested, FIELDS)
    assert.is_nil(none)
    assert.matches("5001 conditions", err, 1, true)
  end)

  it("takes limits of its own, within the maxima, and says what is wrong with bad ones", function()
    local lim = filter.limits({ like = 3, list = 2 })
    assert.same({ like = 3, list = 2, conditions = 5000 }, lim)
    assert.truthy(filter.parse({ ["%TITLE"] = "abc", ["@ID"] = { 1, 2 } }, FIELDS, lim))
    local _, err = filter.parse({ ["%TITLE"] = "abcd" }, FIELDS, lim)
    assert.equals("filter[%TITLE]: a LIKE value of 4 bytes is over the limit of 3 bytes (filter_limits.like)", err)
    _, err = filter.parse({ ["@ID"] = { 1, 2, 3 } }, FIELDS, { list = 2 }) -- a plain table works too
    assert.equals("filter[@ID]: a list of 3 values is over the limit of 2 values (filter_limits.list)", err)
    _, err = filter.parse({ ID = 1, TITLE = "a" }, FIELDS, { conditions = 1 })
    assert.equals("filter: 2 conditions (a list of n values counting n) are over the limit of 1 "
      .. "(filter_limits.conditions)", err)
    assert.same(filter.MAX_LIMITS, filter.limits(filter.MAX_LIMITS))
    local bad = {
      { { like = 16385 }, "filter_limits.like: expected a whole number from 1 to 16384, got 16385" },
      { { list = 0 }, "filter_limits.list: expected a whole number from 1 to 10000, got 0" },
      { { conditions = 1.5 }, "filter_limits.conditions: expected a whole number from 1 to 10000, got 1.5" },
      { { list = "10" }, 'filter_limits.list: expected a whole number from 1 to 10000, got "10"' },
      { { depth = 3 }, 'filter_limits: unknown limit "depth" (known: like, list, conditions)' },
      { 5, "filter_limits: expected a table {like =, list =, conditions =}, got number" },
    }
    for _, case in ipairs(bad) do
      local ok, msg = pcall(filter.limits, case[1])
      assert.is_false(ok)
      assert.matches(case[2], msg, 1, true)
    end
  end)

  describe("in a connector", function()
    local function def(limits)
      return {
        title = "Capped", settings = {}, check = function() return true end,
        tables = { { code = "t", title = "T" } }, describe = { t = FIELDS },
        data = function() return { { ID = 1, TITLE = "abc", DAY = "2024-01-01" } } end,
        filter_limits = limits,
      }
    end
    local function data(c, body)
      local status, text = helpers.post_json(c, "/data", body)
      return status, text
    end

    it("answers 400 naming the cap, with the defaults and with its own filter_limits", function()
      local c = connector.new(def())
      local status, body = data(c, { table = "t", filter = { ["%TITLE"] = ("a"):rep(1025) } })
      assert.equals(400, status)
      assert.same({ error = "bad_request",
        message = "filter[%TITLE]: a LIKE value of 1025 bytes is over the limit of 1024 bytes (filter_limits.like)" },
        cjson.decode(body))
      status = data(c, { table = "t", filter = { ["%TITLE"] = ("a"):rep(1024) } })
      assert.equals(200, status)

      c = connector.new(def({ list = 3 }))
      status, body = data(c, { table = "t", filter = { ["@ID"] = { 1, 2, 3, 4 } } })
      assert.equals(400, status)
      assert.equals("filter[@ID]: a list of 4 values is over the limit of 3 values (filter_limits.list)",
        cjson.decode(body).message)
      status, body = data(c, { table = "t", filter = { ["@ID"] = { 1, 2, 3 } } })
      assert.equals(200, status)
      assert.same({ { "ID", "TITLE", "DAY" }, { 1, "abc", "2024-01-01" } }, cjson.decode(body))
    end)

    it("refuses bad filter_limits when the connector is defined", function()
      local ok, err = pcall(connector.new, def({ like = 100000 }))
      assert.is_false(ok)
      assert.equals("connector definition: filter_limits.like: expected a whole number from 1 to 16384, got 100000", err)
      ok, err = pcall(connector.new, def({ rows = 1 }))
      assert.is_false(ok)
      assert.equals('connector definition: filter_limits: unknown limit "rows" (known: like, list, conditions)', err)
    end)
  end)
end)
