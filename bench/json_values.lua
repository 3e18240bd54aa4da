-- The values bench/json encodes and decodes (and the profiles of json.c
-- read): require("json_values")(rows) -> { a_urldata =, b_batch =,
-- c_generic =, d_escapes = }; require("json_values")(rows, "b_batch") builds
-- only that one (bench/json measures each in a heap that holds only its own
-- values).
local json = require("biconnector").json
local null = json.null

local STAGES = { "NEW", "PREPARATION", "EXECUTING", "WON", "LOSE" }
local make = {}

function make.a_urldata(ROWS)
  -- (a) urlData rows
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
  return rows
end

function make.b_batch()
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
  return batch
end

function make.c_generic()
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
  return generic
end

function make.d_escapes(ROWS)
  -- (d) urlData rows whose strings need escaping, with NULLs among them: every
  -- text column holds quotes, newlines, tabs or backslashes, and about one
  -- value in three is null
  local escapes = { { "id", "title", "comment", "amount", "address", "closed", "manager", "tags" } }
  for i = 1, ROWS do
    escapes[i + 1] = {
      i * 37,
      i % 4 == 0 and null or ('Deal "' .. STAGES[i % #STAGES + 1] .. '" #' .. i),
      i % 3 == 0 and null or ('Customer said:\n"call me back"\n\tafter ' .. i .. " days"),
      i % 5 == 0 and null or (i * 7919 % 1000003) / 100,
      i % 2 == 0 and null or ("Main St. " .. i .. '\r\nApt "B"'),
      i % 3 == 1 and null or os.date("!%Y-%m-%d", 1600000000 + 86400 * (i % 1500)),
      i % 6 == 0 and null or ("C:\\Users\\manager" .. i % 17),
      i % 2 == 1 and null or ('["vip","q' .. i % 4 .. '"]'),
    }
  end

  return escapes
end

return function(ROWS, only)
  if only then return { [only] = assert(make[only], only)(ROWS) } end
  local all = {}
  for name, f in pairs(make) do all[name] = f(ROWS) end
  return all
end
