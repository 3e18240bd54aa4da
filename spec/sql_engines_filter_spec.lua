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
local H = require "sql_helpers"
local cases_mod = require "sql_filter_cases"

local TABLE = 'filter "cases" ü'
local COUNT = 400

for _, engine in ipairs({ "postgresql", "mysql" }) do
  describe("SQL filter pushdown on a real " .. engine .. " server", function()
    if H.skip_without(engine, "spec/sql_engines_filter_spec.lua") then return end
    local srv, h, cases

    setup(function()
      srv = db.start(engine)
      cases = cases_mod.new(7, engine)
      local sql = cases.sql(engine, TABLE)
      if engine == "mysql" then
        -- the server's default collation (case- and trailing-space-insensitive)
        sql = sql:gsub(" COLLATE utf8mb4_bin", "")
      end
      srv:admin(sql)
      if engine == "postgresql" then srv:admin("GRANT SELECT ON ALL TABLES IN SCHEMA public TO bic_ro;") end
      h = S.start(S.serve_command({ srv:url(), "--listen", "127.0.0.1:0", "--no-auth" }))
    end)
    teardown(function() H.stop(h, srv) end)

    local function data(body)
      return S.post_json(h.port, "/data", body)
    end

    it("serves, for 400 generated filters, exactly the rows match selects over the whole table", function()
      cases_mod.check_served(cases, data, TABLE, COUNT, { label = engine })
    end)

    it("pushes every filter down, and never writes a filter value into the SQL text", function()
      -- PostgreSQL's placeholders are $1, $2, ...; MariaDB's ?
      cases_mod.check_pushed(cases, srv:url(), TABLE, COUNT, engine == "postgresql" and "%$%d+" or "%?")
    end)
  end)
end
