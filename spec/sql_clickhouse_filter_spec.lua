-- Filter pushdown on ClickHouse: the same 400 generated filters as the other
-- engines (spec/sql_filter_cases.lua, same seed, same rows) served by
-- `biconnector serve clickhouse://...` give exactly the rows filter.match
-- selects over the whole table, on one server in a zone with daylight saving
-- (Europe/Berlin: datetimes compare as text) and on a Distributed table over
-- a two-shard cluster of two local servers in UTC (datetimes compare as
-- values), the rows split between the shards. Every column is Nullable. Every
-- value travels as a parameter: none ever stands in the statement's text.
local db = require "dbservers"
local S = require "serve_helpers"
local cases_mod = require "sql_filter_cases"
local null = require("biconnector").null
local cjson = require "cjson"

local TABLE = 'filter "cases" ü'
local COUNT = 400

local CH_TYPES = { int = "Nullable(Int32)", double = "Nullable(Float64)", string = "Nullable(String)",
  date = "Nullable(Date)", datetime = "Nullable(DateTime)" }

local function ident(name) return "`" .. name:gsub("\\", "\\\\"):gsub("`", "\\`") .. "`" end

-- The table's statement (engine: what follows ENGINE =).
local function create(cases, name, engine)
  local cols = {}
  for i, f in ipairs(cases.fields) do
    cols[i] = ident(f.code) .. " " .. (f.code == "id" and "Int64" or CH_TYPES[f.type])
  end
  return "CREATE TABLE " .. ident(name) .. " (" .. table.concat(cols, ", ") .. ") ENGINE = " .. engine
end

-- The rows (those `keep(i)` says) as one INSERT in TabSeparated, written here
-- by its own rules: nothing of biconnector's quoting is used to make the data.
local function insert(cases, name, keep)
  local lines = {}
  for i, row in ipairs(cases.rows) do
    if not keep or keep(i) then
      local cells = {}
      for j, f in ipairs(cases.fields) do
        local v = row[f.code]
        if v == null or v == nil then cells[j] = "\\N"
        elseif type(v) == "number" then
          cells[j] = (v == math.floor(v) and math.abs(v) < 2 ^ 53) and ("%d"):format(v) or ("%.17g"):format(v)
        else cells[j] = v:gsub("\\", "\\\\"):gsub("\t", "\\t"):gsub("\n", "\\n") end
      end
      lines[#lines + 1] = table.concat(cells, "\t")
    end
  end
  return "INSERT INTO " .. ident(name) .. " FORMAT TabSeparated\n" .. table.concat(lines, "\n") .. "\n"
end

local SETUPS = {
  {
    label = "one ClickHouse server (Europe/Berlin)",
    start = function(cases)
      local srv = db.start("clickhouse", { timezone = "Europe/Berlin" })
      srv:admin({ create(cases, TABLE, "MergeTree ORDER BY id"), insert(cases, TABLE) })
      return srv, function() srv:stop() end
    end,
  },
  {
    label = "a Distributed table over two ClickHouse shards (UTC)",
    start = function(cases)
      local cl = db.start_cluster("clickhouse", { timezone = "UTC" })
      local ok, err = pcall(function()
        for k, srv in ipairs({ cl.a, cl.b }) do
          srv:admin({ create(cases, "local", "MergeTree ORDER BY id"),
            insert(cases, "local", function(i) return i % 2 == k - 1 end) })
        end
        cl.a:admin(create(cases, TABLE, "Distributed(bic_two, 'bic', 'local', rand())"))
        -- each shard holds a part, the Distributed table all of it
        for _, srv in ipairs({ cl.a, cl.b }) do assert.same({ "600" }, srv:rows("SELECT count() FROM `local`")) end
        assert.same({ "1200" }, cl.a:rows("SELECT count() FROM " .. ident(TABLE)))
      end)
      if not ok then cl.stop() error(err, 0) end
      return cl.a, cl.stop
    end,
  },
}

for _, setup_of in ipairs(SETUPS) do
  describe("SQL filter pushdown on " .. setup_of.label, function()
    local why = db.missing("clickhouse")
    if why then
      local msg = db.skip("clickhouse", why)
      return it("runs against a real ClickHouse server", function() pending(msg) end)
    end
    local srv, stop, h, cases, codes

    setup(function()
      cases = cases_mod.new(7)
      srv, stop = setup_of.start(cases)
      codes = cases_mod.codes(cases)
      h = S.start(S.serve_command({ srv:url(), "--listen", "127.0.0.1:0", "--no-auth" }))
    end)
    teardown(function()
      S.stop(h)
      if stop then stop() end
    end)

    local function data(body)
      return S.post_json(h.port, "/data", body)
    end

    it("serves the generated rows as they were written: awkward strings, NULLs, dates", function()
      local status, body = data({ table = TABLE })
      assert.equals(200, status, body)
      local got = {}
      for _, m in ipairs(cases_mod.as_maps(cjson.decode(body), codes)) do got[m.id] = m end
      for _, row in ipairs(cases.rows) do
        local want = {}
        for _, c in ipairs(codes) do want[c] = row[c] == null and cjson.null or row[c] end
        assert.same(want, got[row.id])
      end
    end)

    it("serves, for 400 generated filters, exactly the rows match selects over the whole table", function()
      cases_mod.check_served(cases, data, TABLE, COUNT, { label = "clickhouse", values = true })
    end)

    it("pushes every filter down, and never writes a filter value into the SQL text", function()
      cases_mod.check_pushed(cases, srv:url(), TABLE, COUNT, "%$%d+") -- placeholders $1, $2, ...
    end)
  end)
end
