-- Filter pushdown on real PostgreSQL and MariaDB servers: the same 400
-- generated filters as the SQLite spec (spec/sql_filter_cases.lua, same seed,
-- same table) served by `biconnector serve postgresql://...` and
-- `mysql://...` give exactly the rows filter.match selects over the whole
-- table, for every filter and engine. The MariaDB table keeps the server's
-- default, case-insensitive collation (utf8mb4_general_ci, trailing spaces
-- ignored by `=`): the engine's dialect must be exact anyway. Every value is a
-- bound parameter: no filter value ever appears in the SQL text.
local db = require "dbservers"
local S = require "serve_helpers"
local cases_mod = require "sql_filter_cases"
local filter = require "biconnector.filter"
local cjson = require "cjson"

local JSON = { ["Content-Type"] = "application/json" }
local TABLE = 'filter "cases" ü'
local COUNT = 400

local function as_maps(rows, codes)
  local out = {}
  for i = 2, #rows do
    local m = {}
    for j, code in ipairs(codes) do m[code] = rows[i][j] end
    out[#out + 1] = m
  end
  return out
end

local function sorted_ids(maps)
  local ids = {}
  for i, m in ipairs(maps) do ids[i] = m.id end
  table.sort(ids)
  return ids
end

for _, engine in ipairs({ "postgresql", "mysql" }) do
  describe("SQL filter pushdown on a real " .. engine .. " server", function()
    local why = db.missing(engine)
    if why then return db.skip(engine, why) end
    local srv, h, cases, codes

    setup(function()
      srv = db.start(engine)
      cases = cases_mod.new(7)
      local sql = cases.sql(engine, TABLE)
      if engine == "mysql" then
        -- the server's default collation (case- and trailing-space-insensitive)
        sql = sql:gsub(" COLLATE utf8mb4_bin", "")
      end
      srv:admin(sql)
      if engine == "postgresql" then srv:admin("GRANT SELECT ON ALL TABLES IN SCHEMA public TO bic_ro;") end
      codes = {}
      for i, f in ipairs(cases.fields) do codes[i] = f.code end
      h = S.start(S.serve_command({ srv:url(), "--listen", "127.0.0.1:0", "--no-auth" }))
    end)
    teardown(function()
      if h then S.stop(h) end
      if srv then srv:stop() end
    end)

    local function data(body)
      local r = assert(S.request(h.port, "POST", "/data", cjson.encode(body), JSON))
      return r.status, r.body
    end

    it("serves, for 400 generated filters, exactly the rows match selects over the whole table", function()
      local status, body = data({ table = TABLE })
      assert.equals(200, status, body)
      local all = as_maps(cjson.decode(body), codes)
      assert.equals(#cases.rows, #all)
      local seen, partial = {}, 0
      for n = 1, COUNT do
        local raw = cases.filter(n % 4)
        local sent = cjson.decode(cjson.encode(raw))
        local ast, err = filter.parse(sent, cases.fields)
        assert.is_nil(err, "filter #" .. n)
        local want = {}
        if ast then
          cases_mod.collect_ops(ast, seen)
          for _, row in ipairs(all) do
            if filter.match(ast, row) then want[#want + 1] = row end
          end
        else
          want = all
        end
        status, body = data({ table = TABLE, filter = sent })
        assert.equals(200, status, body)
        local got = as_maps(cjson.decode(body), codes)
        assert.same(sorted_ids(want), sorted_ids(got), ("%s filter #%d: %s"):format(engine, n, cjson.encode(sent)))
        if #want > 0 and #want < #all then partial = partial + 1 end
      end
      for _, op in ipairs(cases.ops) do
        assert.is_true(seen[op] == true, "operator never generated: " .. op)
      end
      assert.is_true(partial > 200, "only " .. partial .. " filters selected a proper subset")
    end)

    it("pushes every filter down, and never writes a filter value into the SQL text", function()
      local traced = {}
      local src = require("biconnector.sql").source({ url = srv:url(), log = function() end,
        trace = function(sql, params) traced[#traced + 1] = { sql, params } end })
      local fields = assert(src:describe(TABLE))
      local values, pushed = 0, 0
      for n = 1, COUNT do
        local ast = filter.parse(cjson.decode(cjson.encode(cases.filter(n % 4))), fields)
        if ast then
          local rows, applied, close = src:data({ table = TABLE, select = codes, filter = ast, fields = fields })
          if applied.filter then pushed = pushed + 1 end
          if type(rows) == "table" and rows.close then rows:close() elseif close then close() end
          local sql, params = traced[#traced][1], traced[#traced][2]
          local marks
          if engine == "postgresql" then
            marks = select(2, sql:gsub("%$%d+", ""))
          else
            marks = select(2, sql:gsub("%?", ""))
          end
          assert.equals(#params, marks, sql)
          values = values + #params
          local function each(node)
            if node.kind == "group" then for _, i in ipairs(node.items) do each(i) end return end
            for _, v in ipairs(node.values or { node.value, node.from, node.to }) do
              if type(v) == "string" and #v >= 2 and not v:match("^[%a_]+$") then
                assert.is_nil(sql:find(v, 1, true), ("value %q in: %s"):format(v, sql))
              end
            end
          end
          each(ast)
        end
      end
      src:close()
      assert.is_true(values > 400, "only " .. values .. " parameters bound")
      assert.is_true(pushed > 300, "only " .. pushed .. " filters pushed down whole")
    end)
  end)
end
