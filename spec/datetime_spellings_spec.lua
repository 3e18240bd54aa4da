-- One set of date-time spellings for a filter value (biconnector.filter, Lua)
-- and a row value (core.rows, C). They differed: a zone after a space
-- ("2025-05-31 17:01:55+02:00", PostgreSQL's timestamptz text
-- "2025-05-31 17:01:55.25+02"), a zone after HH:MM ("2025-05-31T17:01Z") and
-- a comma fraction were accepted in a filter and refused in a row (a 500);
-- an offset past 23:59, a "T" after DD.MM.YYYY and a fraction without seconds
-- were accepted in a filter and refused in a row. Through a connector file
-- served by `biconnector serve` on loopback: each spelling is one table's row
-- value, and the filter value of a request on it.
local helpers = require "helpers"
local S = require "serve_helpers"
local json = require "biconnector.json"
local filter = require "biconnector.filter"
local core = require "biconnector.core"

-- spelling, the wall-clock datetime both read (nil: both refuse it)
local CASES = {
  { "2025-05-31 17:01:55", "2025-05-31 17:01:55" },
  { "2025-05-31 17:01", "2025-05-31 17:01:00" },
  { "31.05.2025 17:01:55", "2025-05-31 17:01:55" },
  { "2025-05-31T17:01:55+02:00", "2025-05-31 17:01:55" },
  { "2025-05-31T17:01:55Z", "2025-05-31 17:01:55" },
  { "2025-05-31T17:01:55.123-0500", "2025-05-31 17:01:55" },
  { "2025-05-31T17:01:55+02", "2025-05-31 17:01:55" },
  -- accepted by the filter only, before
  { "2025-05-31 17:01:55+02:00", "2025-05-31 17:01:55" },
  { "2025-05-31 17:01:55Z", "2025-05-31 17:01:55" },
  { "2025-05-31 17:01:55.25+02", "2025-05-31 17:01:55" }, -- PostgreSQL timestamptz as text
  { "2025-05-31T17:01Z", "2025-05-31 17:01:00" },
  { "2025-05-31T17:01+02:00", "2025-05-31 17:01:00" },
  { "31.05.2025 17:01:55+03:00", "2025-05-31 17:01:55" },
  { "2025-05-31T17:01:55,5Z", "2025-05-31 17:01:55" }, -- ISO 8601's comma fraction
  -- accepted by the filter only, before, and no spelling of a moment
  { "2025-05-31T17:01:55+24:00", nil },
  { "2025-05-31T17:01:55+02:60", nil },
  { "31.05.2025T17:01:55", nil },
  { "2025-05-31 17:01.5", nil },
  -- refused by both, before too
  { "2025-05-31T17:01:55+2", nil },
  { "2025-05-31T17:01:55 +02:00", nil },
  { "2025-05-31T17:01:55z", nil },
  { "2025-05-31T17:01:55.Z", nil },
}

local function form(s)
  return (s:gsub("[^%w%-%._]", function(c) return ("%%%02X"):format(c:byte()) end))
end

describe("date-time spellings of filters and rows", function()
  local file, server
  setup(function()
    file = helpers.tmp_path("spellings.lua")
    local values = {}
    for i, c in ipairs(CASES) do values[i] = ("%q"):format(c[1]) end
    helpers.write_file(file, ([[
local VALUES = { %s }
local tables, describe = {}, {}
for i in ipairs(VALUES) do
  tables[i] = { code = "s" .. i, title = "Spelling " .. i }
  describe["s" .. i] = { { code = "id", name = "ID", type = "int" }, { code = "at", name = "At", type = "datetime" },
    { code = "day", name = "Day", type = "date" } }
end
return require("biconnector").connector {
  title = "Spellings", settings = {}, check = function() return true end,
  tables = tables, describe = describe,
  data = function(_, q)
    local v = VALUES[tonumber(q.table:sub(2))]
    return { { id = 1, at = v, day = v } }
  end,
}
]]):format(table.concat(values, ", ")))
    server = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "1" }))
  end)
  teardown(function()
    if server then S.stop(server) end
    os.remove(file)
  end)

  local function post(body)
    local r = assert(S.request(server.port, "POST", "/data", body, { ["Content-Type"] = "application/x-www-form-urlencoded" }))
    return r.status, json.decode(r.body)
  end

  for i, c in ipairs(CASES) do
    local spelling, want = c[1], c[2]
    it(("%s: %s"):format(spelling, want and "both read " .. want or "both refuse it"), function()
      -- the filter (Lua)
      local normalized, why = filter.normalize("datetime", spelling)
      assert.equal(want, normalized, why)
      -- the row (C), over HTTP
      local status, answer = post("table=s" .. i)
      if want then
        assert.equal(200, status, json.encode(answer))
        assert.same({ { "id", "at", "day" }, { 1, want, want:sub(1, 10) } }, answer)
        -- the same spelling as a filter value selects its own row
        status, answer = post("table=s" .. i .. "&filter[=at]=" .. form(spelling))
        assert.equal(200, status, json.encode(answer))
        assert.equal(2, #answer)
        status, answer = post("table=s" .. i .. "&filter[=day]=" .. form(spelling))
        assert.equal(200, status, json.encode(answer))
        assert.equal(2, #answer)
      else
        assert.equal(500, status, json.encode(answer))
        assert.matches("expected a datetime", answer.message, 1, true)
        status, answer = post("table=s" .. i .. "&filter[=at]=" .. form(spelling))
        assert.equal(400, status, json.encode(answer))
        assert.matches("bad value", answer.message, 1, true)
      end
    end)
  end

  it("keeps a zone written after a space, with datetime_offset", function()
    local enc = core.rows.new({ { code = "at", type = "datetime" } }, nil, { datetime_offset = "+02:00" })
    for _, v in ipairs({ "2025-05-31 17:01:55+05:00", "2025-05-31 17:01:55.25+05", "31.05.2025 17:01:55+05:00",
      "2025-05-31T17:01+05:00" }) do
      assert(enc:add({ at = v }))
    end
    assert(enc:add({ at = "2025-05-31 17:01:55Z" }))
    enc:finish()
    local out = json.decode(enc:take())
    enc:close()
    assert.same({ { "at" }, { "2025-05-31T17:01:55+05:00" }, { "2025-05-31T17:01:55+05:00" },
      { "2025-05-31T17:01:55+05:00" }, { "2025-05-31T17:01:00+05:00" }, { "2025-05-31T17:01:55+00:00" } }, out)
  end)
end)
