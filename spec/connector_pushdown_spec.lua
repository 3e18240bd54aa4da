-- Pushdown: what the data handler declares it applied (filter, select, limit)
-- is not applied again; what it left is applied by the framework exactly as
-- filter.match would by hand.
local helpers = require "helpers"
local connector = require "biconnector.connector"
local filter = require "biconnector.filter"
local biconnector = require "biconnector"
local cjson = require "cjson"

local TOKEN = "pushdown-token"

local FIELDS = helpers.deals_fields() -- id int, title string, amount double, closed date, updated datetime

-- 200 rows in normalized form (what filter.match expects), some values missing.
local NORMALIZED = {}
for i = 1, 200 do
  NORMALIZED[i] = {
    id = i,
    title = ({ "alpha", "Beta", "gamma", "ALPHABET", "delta" })[i % 5 + 1] .. " " .. i,
    amount = (i * 37 % 101) / 4,
    closed = os.date("!%Y-%m-%d", 1700000000 + 86400 * (i % 40)),
    updated = os.date("!%Y-%m-%d %H:%M:%S", 1700000000 + 3600 * i),
  }
  if i % 7 == 0 then NORMALIZED[i].amount = nil end
  if i % 11 == 0 then NORMALIZED[i].updated = nil end
end

-- The same rows as a handler would give them: dates as time numbers, amounts as text.
local RAW = {}
for i, r in ipairs(NORMALIZED) do
  RAW[i] = {
    id = r.id, title = r.title,
    amount = r.amount and tostring(r.amount) or biconnector.null,
    closed = 1700000000 + 86400 * (i % 40),
    updated = r.updated and (1700000000 + 3600 * i) or nil,
  }
end

local FILTERS = {
  { [">=amount"] = 12.5 },
  { ["%title"] = "alpha" },
  { ["@id"] = { 3, 5, 150, 999 } },
  { ["!updated"] = "2023-11-15 10:13:20" },
  { LOGIC = "OR", ["<id"] = 10, [">closed"] = "2023-12-10" },
  { ["<=closed"] = "20.11.2023", ["!=amount"] = 0.25 },
  { amount = { operator = "BETWEEN", from = 5, to = 15 }, title = { operator = "LIKE", value = "beta" } },
  { updated = { operator = "IS NULL" } },
}

local function new_connector(data)
  return connector.new({
    title = "Pushdown",
    settings = { { code = "token", name = "Token", type = "STRING" } },
    check = function(conn) return conn.token == TOKEN end,
    tables = { { code = "deals", title = "Deals" } },
    describe = { deals = FIELDS },
    data = data,
  })
end

local function fetch(c, params, spelling)
  params.connection = { token = TOKEN }
  params.table = "deals"
  local status, body
  if spelling == "form" then
    status, body = helpers.post_form(c, "/data", biconnector.form.encode(params))
  else
    status, body = helpers.post_json(c, "/data", params)
  end
  return status, body
end

-- What the answer must be: rows of NORMALIZED kept by filter.match by hand.
local function by_hand(filter_obj, limit, select)
  local ast = filter_obj and assert(filter.parse(filter_obj, FIELDS)) or nil
  local codes = select or { "id", "title", "amount", "closed", "updated" }
  local answer = { codes }
  for _, row in ipairs(NORMALIZED) do
    if limit and #answer - 1 >= limit then break end
    if filter.match(ast, row) then
      local out = {}
      for j, code in ipairs(codes) do
        local v = row[code]
        if v == nil then v = cjson.null end
        out[j] = v
      end
      answer[#answer + 1] = out
    end
  end
  return answer
end

describe("pushdown", function()
  for _, spelling in ipairs({ "json", "form" }) do
    describe("with a " .. spelling .. " body", function()
      for i, f in ipairs(FILTERS) do
        it(("applies filter %d exactly as filter.match does by hand when the handler does not"):format(i), function()
          local seen
          local c = new_connector(function(_, q) seen = q return RAW end)
          local status, body = fetch(c, { filter = f }, spelling)
          assert.equals(200, status)
          local want = by_hand(f)
          assert.is_true(#want > 1 and #want < 201, "filter " .. i .. " selects something but not everything")
          assert.same(want, cjson.decode(body))
          assert.equals("group", seen.filter.kind)
        end)
      end

      it("applies filter, select and limit on an iterator's rows", function()
        local c = new_connector(function()
          local i = 0
          return function() i = i + 1 return RAW[i] end
        end)
        local f = FILTERS[1]
        local status, body = fetch(c, { filter = f, limit = 7, select = { "amount", "id" } }, spelling)
        assert.equals(200, status)
        local want = by_hand(f, 7, { "amount", "id" })
        assert.equals(8, #want)
        assert.same(want, cjson.decode(body))
      end)
    end)
  end

  it("does not filter or limit again what the handler declares it applied", function()
    local seen
    -- The handler "applies" both, deliberately returning rows the filter would drop
    -- and more rows than the limit: the framework must pass them through.
    local c = new_connector(function(_, q)
      seen = q
      return { RAW[1], RAW[2], RAW[3], RAW[4] }, { filter = true, limit = true }
    end)
    local status, body = fetch(c, { filter = { [">id"] = 100 }, limit = 2 })
    assert.equals(200, status)
    local answer = cjson.decode(body)
    assert.equals(5, #answer)
    assert.same({ 1, 2, 3, 4 }, { answer[2][1], answer[3][1], answer[4][1], answer[5][1] })
    assert.equals(2, seen.limit)
    assert.equals("cond", seen.filter.items[1].kind)
    assert.equals("gt", seen.filter.items[1].op)
    assert.equals(100, seen.filter.items[1].value)
  end)

  it("still applies the limit when only the filter was declared", function()
    local c = new_connector(function() return RAW, { filter = true } end)
    local status, body = fetch(c, { filter = { [">id"] = 100 }, limit = 3 })
    assert.equals(200, status)
    assert.same({ { "id", "title", "amount", "closed", "updated" } }, { cjson.decode(body)[1] })
    local answer = cjson.decode(body)
    assert.equals(4, #answer)
    assert.same({ 1, 2, 3 }, { answer[2][1], answer[3][1], answer[4][1] })
  end)

  it("still applies the filter when only the limit was declared", function()
    local c = new_connector(function() return RAW, { limit = true } end)
    local status, body = fetch(c, { filter = { [">id"] = 195 }, limit = 2 })
    assert.equals(200, status)
    assert.same(by_hand({ [">id"] = 195 }), cjson.decode(body))
    assert.equals(6, #cjson.decode(body))
  end)

  it("answers 400 for a filter on an unknown field before calling the handler", function()
    local called = false
    local c = new_connector(function() called = true return RAW end)
    local status, body = fetch(c, { filter = { [">nope"] = 1 } })
    assert.equals(400, status)
    assert.equals("bad_request", cjson.decode(body).error)
    assert.is_false(called)
  end)
end)
