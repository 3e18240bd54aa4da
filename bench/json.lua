-- Encode and decode throughput of biconnector.json against lua-cjson, in the
-- same process on the same data:
--   (a) a urlData answer: a header row and ROWS rows of 8 mixed columns
--       (integers, doubles, short strings, strings needing escapes, dates,
--       datetimes, nulls);
--   (b) a nested REST batch answer (Bitrix24 `batch` shape);
--   (c) arbitrary Lua values (nested maps and arrays, floats, escapes).
-- Prints the median of ROUNDS runs (ours and lua-cjson in turns), MB/s of the text, and the ratio
-- lua-cjson time / biconnector time (above 1: biconnector is faster).
-- Usage: bench/json [lua5.4|luajit] [BUILD_DIR] [ROWS] [ROUNDS]
local json = require("biconnector").json
local cjson = require "cjson"

local ROWS = tonumber(arg and arg[1]) or 200000
local ROUNDS = tonumber(arg and arg[2]) or 7
local clock = os.clock
local null = json.null

-- (a) urlData rows
local STAGES = { "NEW", "PREPARATION", "EXECUTING", "WON", "LOSE" }
local rows = { { "id", "amount", "rate", "title", "comment", "closed", "updated", "manager" } }
for i = 1, ROWS do
  rows[i + 1] = {
    i * 37,                                                       -- int
    (i * 7919 % 1000003) / 100,                                   -- double, 2 decimals
    i / 7,                                                        -- double, 16-17 digits
    STAGES[i % #STAGES + 1] .. " deal " .. i,                     -- short string
    i % 3 == 0 and ('Said "ok"\nC:\\path\\' .. i) or ("Note é " .. i), -- escapes, UTF-8
    os.date("!%Y-%m-%d", 1600000000 + 86400 * (i % 1500)),       -- date
    os.date("!%Y-%m-%d %H:%M:%S", 1600000000 + 37 * i),          -- datetime
    i % 4 == 0 and null or (i % 97),                              -- nullable int
  }
end

-- (b) a REST batch answer: 50 commands of 50 items, time blocks, nested objects
local function item(c, k)
  return {
    ID = tostring(c * 1000 + k),
    TITLE = "Deal " .. k .. " of batch " .. c,
    STAGE_ID = STAGES[k % #STAGES + 1],
    OPPORTUNITY = ("%.2f"):format(k * 13.7),
    CURRENCY_ID = "EUR",
    ASSIGNED_BY_ID = tostring(k % 17),
    DATE_CREATE = "2024-08-30T12:19:57+02:00",
    CLOSED = k % 2 == 0 and "Y" or "N",
    COMMENTS = k % 5 == 0 and null or "<p>Line one</p>\n<p>\"Line\" two</p>",
    UF_CRM_TAGS = json.as_array({ "a", "b", tostring(k) }),
    CONTACT = { ID = k, NAME = "Name " .. k, EMAIL = json.as_array({ { VALUE = "x" .. k .. "@example.com", TYPE = "WORK" } }) },
    PROBABILITY = k % 3 == 0 and null or k,
  }
end
local result, totals, nexts, times = {}, {}, {}, {}
for c = 1, 50 do
  local list = {}
  for k = 1, 50 do list[k] = item(c, k) end
  result["cmd" .. c] = json.as_array(list)
  totals["cmd" .. c] = 5000
  nexts["cmd" .. c] = 50 * c
  times["cmd" .. c] = { start = 1724998797.123456, finish = 1724998797.234567, duration = 0.111111,
    processing = 0.1, date_start = "2024-08-30T12:19:57+02:00", date_finish = "2024-08-30T12:19:57+02:00" }
end
local batch = {
  result = { result = result, result_error = json.as_array({}), result_total = totals, result_next = nexts,
    result_time = times },
  time = { start = 1724998797.0, finish = 1724998798.5, duration = 1.5, processing = 1.4,
    date_start = "2024-08-30T12:19:57+02:00", date_finish = "2024-08-30T12:19:58+02:00", operating = 0 },
}

-- (c) arbitrary Lua values: 2,000 records mixing nested maps and arrays,
-- integers, floats (short and 17-digit), booleans, nulls, strings with
-- quotes, control characters and UTF-8, empty arrays and objects
local function record(i)
  return {
    id = i,
    name = "Item " .. i,
    note = i % 3 == 0 and ('Line "one"\n\tC:\\tmp\\' .. i .. " é") or ("plain text " .. i),
    price = i * 1.37,
    ratio = i / 7,
    active = i % 2 == 0,
    tags = { "red", "green", tostring(i) },
    size = { w = i * 0.5, h = 2.25, d = i / 3 },
    history = { { t = 1700000000 + i, v = i * 0.01 }, { t = 1700003600 + i, v = i * 0.02, ok = true } },
    owner = { id = i % 17, name = "User " .. (i % 17), mail = "user" .. (i % 17) .. "@example.com" },
    matrix = { { 1.5, 2.5 }, { 3, 4 } },
    empty = json.as_array({}),
    meta = {},
    opt = i % 5 == 0 and null or i,
  }
end
local records = {}
for i = 1, 2000 do records[i] = record(i) end
local generic = { items = records, total = 2000, page = { size = 2000, next = null },
  generated = "2025-05-31T17:01:55+03:00" }

local function median(f)
  local samples = {}
  for r = 1, ROUNDS do
    collectgarbage()
    collectgarbage()
    local t0 = clock()
    f()
    samples[r] = clock() - t0
  end
  table.sort(samples)
  return samples[math.floor((ROUNDS + 1) / 2)]
end

-- Medians of ROUNDS runs of f and of g, taken in turns (f, g, f, g, ...) so that
-- the load of a shared machine falls on both alike.
local function medians(f, g)
  local fs, gs = {}, {}
  for r = 1, ROUNDS do
    for _, pair in ipairs({ { f, fs }, { g, gs } }) do
      collectgarbage()
      collectgarbage()
      local t0 = clock()
      pair[1]()
      pair[2][r] = clock() - t0
    end
  end
  table.sort(fs)
  table.sort(gs)
  local mid = math.floor((ROUNDS + 1) / 2)
  return fs[mid], gs[mid]
end

local function same_shape(a, b)
  if type(a) ~= "table" then return a == b or (type(a) == "number" and math.abs(a - b) <= 1e-12 * math.abs(a)) end
  for k, v in pairs(a) do if not same_shape(v, b[k]) then return false end end
  return true
end

local out = {}
local function line(...) out[#out + 1] = string.format(...) end

local runtime = jit and jit.version or _VERSION
line("biconnector.json vs lua-cjson %s on %s, median of %d runs (CPU time)", cjson._VERSION, runtime, ROUNDS)
line("%-44s %12s %12s %10s %10s %8s", "case", "ours ms", "cjson ms", "ours MB/s", "cjson MB/s", "ratio")

local emit = require "result"

local function case(name, value, id)
  local text = assert(json.encode(value))
  local ctext = cjson.encode(value)
  assert(same_shape(value, cjson.decode(text)), name .. ": cjson does not read our text back")
  assert(same_shape(value, json.decode(ctext)), name .. ": we do not read cjson's text back")
  local mb, cmb = #text / 1e6, #ctext / 1e6
  local te, tc = medians(function() json.encode(value) end, function() cjson.encode(value) end)
  line("%-44s %12.1f %12.1f %10.1f %10.1f %7.2fx", name .. " encode", te * 1e3, tc * 1e3, mb / te, cmb / tc, tc / te)
  emit { name = "json." .. id .. ".encode", ours = te * 1e3, anchor = tc * 1e3, unit = "ms", better = "lower",
    anchor_name = "lua-cjson " .. cjson._VERSION .. " encode", what = "json.encode, " .. name }
  local td, tcd = medians(function() json.decode(text) end, function() cjson.decode(text) end)
  line("%-44s %12.1f %12.1f %10.1f %10.1f %7.2fx", name .. " decode", td * 1e3, tcd * 1e3, mb / td, mb / tcd, tcd / td)
  emit { name = "json." .. id .. ".decode", ours = td * 1e3, anchor = tcd * 1e3, unit = "ms", better = "lower",
    anchor_name = "lua-cjson " .. cjson._VERSION .. " decode", what = "json.decode, " .. name }
  local tdn = median(function() json.decode(text, { array_mt = false }) end)
  line("%-44s %12.1f %12.1f %10.1f %10.1f %7.2fx", name .. " decode, array_mt=false", tdn * 1e3, tcd * 1e3,
    mb / tdn, mb / tcd, tcd / tdn)
  return #text
end

local size_a = case(("(a) urlData %d rows x 8"):format(ROWS), rows, "a_urldata")
local size_b = case("(b) REST batch 50 x 50", batch, "b_batch")
local size_c = case("(c) generic values, 2000 records", generic, "c_generic")
line("text sizes: (a) %.1f MB, (b) %.2f MB, (c) %.2f MB", size_a / 1e6, size_b / 1e6, size_c / 1e6)
print(table.concat(out, "\n"))
