-- LuaJIT's fast path for lists of array rows (biconnector.connector.rows_jit,
-- src/rows.c bic_rows_ffi_row) against the C path it stands in for: every
-- answer, cut answer and log line the same, byte for byte, with the fast path
-- on and off, over generated lists mixing every value kind a cell can hold
-- (what the fast path writes and what it must leave to enc:add_list).
local connector = require "biconnector.connector"
local rows_jit = require "biconnector.connector.rows_jit"
local null = require("biconnector").null
local cjson = require "cjson"

local TOKEN = "jit-token"

local FIELDS = {
  { code = "id", name = "ID", type = "int" },
  { code = "title", name = "Title", type = "string" },
  { code = "amount", name = "Amount", type = "double" },
  { code = "day", name = "Day", type = "date" },
  { code = "at", name = "At", type = "datetime" },
  { code = "note", name = "Note", type = "string" },
}

-- (LuaJIT's 64-bit integer cdata, when the runtime has them)
local int64 = load("return 5LL") or function() return nil end
int64 = select(2, pcall(int64))

local VALUES = {
  int = { 0, 1, -5, 123456789, 2 ^ 53, 2 ^ 63, -2 ^ 63, 1.5, -0.0, 0 / 0, math.huge, "42", " 7 ", "x", true, null },
  double = { 1.25, 35115.66, 0.1, 1 / 3, -2.5, 1e-7, 1e12, 1e21, -0.0, 0 / 0, -math.huge, "3.5", "abc", false, null },
  string = { "", "plain", 'q"uote\n\t\\', "é ünï ✓", "\255 bad", "nul\0byte", "\1\31 control", 12, 1.5, true, null,
    ("long "):rep(3000) },
  date = { "2024-01-02", "2024-02-30", "31.05.2025", "2024-01-02 03:04:05", "2024-1-2", "", 1700000000, 1.5, null,
    "2023-12-31" },
  datetime = { "2024-01-02 03:04:05", "2024-01-02T03:04:05+02:00", "2024-01-02", "2024-01-02 25:00:00",
    "31.05.2025 17:01:55", 1700000000, "1999-12-31 23:59:59", null },
}

-- A small deterministic generator (the same lists on every run and runtime).
local function generator(seed)
  local x = seed
  return function(n)
    x = (x * 1103515245 + 12345) % 2147483648
    return x % n + 1
  end
end

-- Mostly values the fast path takes, with everything else now and then.
local function make_rows(rnd, n, odd_rate, shape_rate)
  local rows = {}
  for i = 1, n do
    local shape = rnd(100)
    local row
    if shape <= (shape_rate or odd_rate) then -- a row of another kind
      local kind = rnd(6)
      if kind == 1 then row = { id = i, title = "map row " .. i, at = "2024-05-06 07:08:09" }
      elseif kind == 2 then row = { i, "too wide", 1, "2024-01-01", "2024-01-01 00:00:00", "n", "extra" }
      elseif kind == 3 then row = { i, "short" }
      elseif kind == 4 then row = { i, nil, 2.5, nil, nil, "holes" }
      elseif kind == 5 then row = {}
      else row = "not a row" end
    else
      row = {}
      for f, field in ipairs(FIELDS) do
        local pool = VALUES[field.type]
        if rnd(100) <= odd_rate then
          local v = pool[rnd(#pool)]
          if v == "__int64" then v = int64 end
          row[f] = v
        elseif field.type == "int" then row[f] = i * 37
        elseif field.type == "double" then row[f] = (i * 7919 % 100003) / 100
        elseif field.type == "date" then row[f] = rnd(3) == 1 and null or ("2024-%02d-%02d"):format(rnd(12), rnd(28))
        elseif field.type == "datetime" then row[f] = ("2023-%02d-%02d 1%d:3%d:5%d"):format(rnd(12), rnd(28), rnd(9),
            rnd(9), rnd(9))
        else row[f] = (f == 2 and "Deal " or 'Said "hi"\n') .. i end
      end
      if int64 and odd_rate > 0 and rnd(200) == 1 then row[1] = int64 end
    end
    rows[i] = row
  end
  return rows
end

local function make_connector(rows, applied, chunk_size, offset, fields)
  return connector.new({
    title = "rows_jit",
    settings = { { code = "token", name = "Token", type = "STRING" } },
    check = function(conn) return conn.token == TOKEN end,
    tables = { { code = "t", title = "T" } },
    describe = { t = fields or FIELDS },
    data = function() return rows, applied end,
    chunk_size = chunk_size,
    datetime_offset = offset,
  })
end

-- The whole exchange: status, the body as sent (a cut one included), the log
-- lines (error ids, which differ from run to run, written as <id>).
local function exchange(c, params)
  local logs = {}
  local req = { method = "POST", path = "/data", headers = { ["content-type"] = "application/json" },
    body = cjson.encode(params) }
  local status, _, body, info = c:handle(req, {
    log = function(level, message) logs[#logs + 1] = level .. " " .. tostring(message) end,
  })
  local text = body
  if type(body) == "function" then
    local parts = {}
    for chunk in body do parts[#parts + 1] = chunk end
    text = table.concat(parts)
  end
  local function no_ids(s) return (s:gsub('"id":"%x+"', '"id":"<id>"'):gsub("%f[%x]%x%x%x%x%x%x%x%x%f[^%x]", "<id>")) end
  return { status = status, body = no_ids(text), logs = no_ids(table.concat(logs, "\n")), rows = info and info.rows }
end

local function both(make, params)
  rows_jit.enabled = false
  local slow = exchange(make(), params)
  rows_jit.enabled = true
  local taken = rows_jit.rows_taken
  local fast = exchange(make(), params)
  fast.taken = rows_jit.rows_taken - taken
  return slow, fast
end

describe("rows_jit (LuaJIT's fast path for array rows)", function()
  local was
  before_each(function() was = rows_jit.enabled end)
  after_each(function() rows_jit.enabled = was end)

  if not rows_jit.enabled then
    pending("runs under LuaJIT only (" .. _VERSION .. " has no FFI: the C path alone serves)")
    return
  end

  it("writes the demo-like rows exactly as the C path, and takes them (no fallback)", function()
    local rnd = generator(1)
    local rows = make_rows(rnd, 3000, 0)
    local slow, fast = both(function() return make_connector(rows) end, { connection = { token = TOKEN }, table = "t" })
    assert.equals(200, fast.status)
    assert.equals(slow.body, fast.body)
    assert.equals(3001, #cjson.decode(fast.body))
    assert.equals("", fast.logs)
    -- all but the first row (which tells the order of array rows) through the fast path
    assert.equals(2999, fast.taken)
  end)

  for _, case in ipairs({
    { name = "mixed values, errors cut the answer", seed = 2, odd = 3, few = 20 },
    { name = "mixed values, invalid = null", seed = 3, odd = 5, applied = { invalid = "null" } },
    { name = "many odd values, invalid = null, small chunks", seed = 4, odd = 30, applied = { invalid = "null" },
      chunk = 300 },
    { name = "select in described order", seed = 5, odd = 2, select = { "note", "id", "at" }, applied = { invalid = "null" } },
    { name = "arrays in select order (applied.select)", seed = 6, odd = 2, select = { "at", "id" },
      applied = { select = true, invalid = "null" }, narrow = { 5, 1 } },
    { name = "limit across chunks", seed = 7, odd = 1, limit = 777, chunk = 512, applied = { invalid = "null" } },
    -- (every datetime converted to the offset: the C path's, the fast one gives up)
    { name = "datetimes at an offset", seed = 8, odd = 2, offset = "+03:00", applied = { invalid = "null" }, few = -1 },
  }) do
    it(case.name .. ": the same answer, cut and log lines", function()
      local taken = 0
      for round = 1, 6 do
        local rnd = generator(case.seed * 100 + round)
        local rows = make_rows(rnd, 400 + rnd(1200), case.odd)
        if case.narrow then -- array rows as wide as the select, in its order
          for i, row in ipairs(rows) do
            if type(row) == "table" and row[1] ~= nil then
              local r = {}
              for k, f in ipairs(case.narrow) do r[k] = row[f] end
              rows[i] = r
            end
          end
        end
        local params = { connection = { token = TOKEN }, table = "t", select = case.select, limit = case.limit }
        local slow, fast = both(function() return make_connector(rows, case.applied, case.chunk, case.offset) end, params)
        assert.equals(slow.status, fast.status)
        assert.equals(slow.logs, fast.logs)
        assert.equals(slow.rows, fast.rows)
        assert.equals(slow.body, fast.body, case.name .. " round " .. round)
        taken = taken + fast.taken
      end
      assert.is_true(taken > (case.few or 100), "the fast path wrote " .. taken .. " rows")
    end)
  end

  -- rows keyed by code, array rows among them, over fields whose codes are
  -- hostile text: the readers' code is made of integers, the codes stay data
  local HOSTILE = {
    { code = 'a"]] error("spliced") --[[', name = "A", type = "int" },
    { code = "K[1]", name = "B", type = "string" },
    { code = "') os.exit(3) --", name = "C", type = "double" },
    { code = "\\'\"]]", name = "D", type = "date" }, -- backslash, quote, double quote, brackets
    { code = "é ✓ end end", name = "E", type = "datetime" },
    { code = "%s %d ..", name = "F", type = "string" },
  }
  for _, fields in ipairs({ FIELDS, HOSTILE }) do
    it("map rows among array rows, over " .. (fields == FIELDS and "plain" or "hostile") .. " codes: the same answer",
      function()
        local taken = 0
        for round = 1, 4 do
          local rnd = generator(900 + round)
          local rows = make_rows(rnd, 1500, 3, 0)
          for i, row in ipairs(rows) do
            -- (row 1 an array in rounds 1 and 3: then the fast path takes the maps after it)
            if type(row) == "table" and row[1] ~= nil and rnd(2) == 1 and not (i == 1 and round % 2 == 1) then
              local map = {}
              for f, field in ipairs(fields) do map[field.code] = row[f] end
              rows[i] = map
            end
          end
          local params = { connection = { token = TOKEN }, table = "t", limit = round == 2 and 333 or nil,
            select = round == 3 and { fields[5].code, fields[2].code } or nil }
          local slow, fast = both(function() return make_connector(rows, { invalid = "null" }, 4096, nil, fields) end,
            params)
          assert.equals(200, fast.status, fast.body)
          assert.equals(slow.status, fast.status)
          assert.equals(slow.logs, fast.logs)
          assert.equals(slow.body, fast.body)
          taken = taken + fast.taken
        end
        assert.is_true(taken > 1000, "the fast path wrote " .. taken .. " rows")
      end)
  end

  it("takes every row of a list of maps, and the array rows after the first one in a mixed list", function()
    local maps = {}
    for i = 1, 2000 do maps[i] = { id = i, title = "t" .. i, amount = i / 4, day = "2024-01-02", note = "n" } end
    local slow, fast = both(function() return make_connector(maps) end, { connection = { token = TOKEN }, table = "t" })
    assert.equals(slow.body, fast.body)
    assert.equals(2000, fast.taken)
    local mixed = {}
    for i = 1, 2000 do mixed[i] = i <= 10 and maps[i] or { i, "t" .. i, i / 4, "2024-01-02", nil, "n" } end
    slow, fast = both(function() return make_connector(mixed) end, { connection = { token = TOKEN }, table = "t" })
    assert.equals(slow.body, fast.body)
    assert.equals(1999, fast.taken) -- all but row 11, the first array row (enc:add_list learns their order)
  end)

  it("answers streamed at once by one process, one of them left mid-way, each as it is alone", function()
    local function list(seed)
      local rows = make_rows(generator(seed), 3000, 2, 0)
      return rows
    end
    local a_rows, b_rows, c_rows = list(71), list(72), list(73)
    local params = { connection = { token = TOKEN }, table = "t" }
    local alone = {}
    for k, rows in pairs({ a = a_rows, b = b_rows }) do
      alone[k] = exchange(make_connector(rows, { invalid = "null" }, 1024), params).body
    end
    local function open(rows)
      local req = { method = "POST", path = "/data", headers = { ["content-type"] = "application/json" },
        body = cjson.encode(params) }
      local _, _, body = make_connector(rows, { invalid = "null" }, 1024):handle(req, { log = function() end })
      return body
    end
    local a, b, c = open(a_rows), open(b_rows), open(c_rows)
    local parts = { a = {}, b = {} }
    local taken = rows_jit.rows_taken
    for i = 1, 5 do c() end -- c's reader leaves after five chunks (a client gone), never finished
    c = nil -- luacheck: ignore
    collectgarbage()
    local a_done, b_done = false, false
    while not (a_done and b_done) do -- one chunk of each in turn
      if not a_done then local x = a() if x then parts.a[#parts.a + 1] = x else a_done = true end end
      if not b_done then local x = b() if x then parts.b[#parts.b + 1] = x else b_done = true end end
    end
    assert.equals(alone.a, (table.concat(parts.a):gsub('"id":"%x+"', '"id":"<id>"')))
    assert.equals(alone.b, (table.concat(parts.b):gsub('"id":"%x+"', '"id":"<id>"')))
    assert.is_true(rows_jit.rows_taken - taken > 4000)
  end)

  it("a first row that is a map leaves array rows' order to the C path, the answer the same", function()
    local rows = { { id = 1, title = "map" } }
    for i = 2, 2000 do rows[i] = { i, "t" .. i, i / 4, "2024-01-02", "2024-01-02 03:04:05", "n" } end
    local slow, fast = both(function() return make_connector(rows) end, { connection = { token = TOKEN }, table = "t" })
    assert.equals(slow.body, fast.body)
    assert.equals(2001, #cjson.decode(fast.body))
  end)

  it("a value that reaches the C path after the fast one keeps its row number in the error", function()
    local rows = {}
    for i = 1, 5000 do rows[i] = { i, "t" .. i, i / 4, "2024-01-02", "2024-01-02 03:04:05", "n" } end
    rows[4321][1] = "four thousand"
    local slow, fast = both(function() return make_connector(rows) end, { connection = { token = TOKEN }, table = "t" })
    assert.equals(slow.logs, fast.logs)
    assert.matches('row 4321, field "id"', fast.logs, 1, true)
    assert.equals(slow.body, fast.body)
  end)
end)

describe("a list's refused row (both runtimes)", function()
  it("the warning counts the values nulled in the rows before it, in the same run of enc:add_list", function()
    local rows = {}
    for i = 1, 50 do rows[i] = { i, "t" .. i, i / 4, "2024-01-02", "2024-01-02 03:04:05", "n" } end
    rows[14][3], rows[16][1], rows[18][6] = "not a number", "seven", "\255"
    rows[19] = { 19, "too wide", 1, "2024-01-01", "2024-01-01 00:00:00", "n", "extra" }
    for _, on in ipairs({ false, rows_jit.enabled }) do
      local was = rows_jit.enabled
      rows_jit.enabled = on
      local res = exchange(make_connector(rows, { invalid = "null" }), { connection = { token = TOKEN }, table = "t" })
      rows_jit.enabled = was
      assert.equals(500, res.status) -- (in the first chunk: before the answer started)
      assert.matches('row 19: array row has 7 values, expected at most 6', res.body, 1, true)
      assert.matches('warn table "t": 3 values did not fit the described type and went as null (first: field "amount"',
        res.logs, 1, true)
    end
  end)
end)
