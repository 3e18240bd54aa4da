-- A minimal connector: one static table, checked by a token.
--   MINIMAL_TOKEN=secret biconnector serve examples/minimal.lua
-- Register it with a setting "token"; Bitrix24 sends what the user typed there
-- in every request, and check() compares it with the server's MINIMAL_TOKEN.
local biconnector = require "biconnector"

local TOKEN = os.getenv("MINIMAL_TOKEN")

local cities = {
  { id = 1, name = "Berlin", population = 3.85, founded = "1237-10-28", updated = 1700000000 },
  { id = 2, name = "Kyiv", population = 2.95, founded = "0482-01-01", updated = "2024-05-01 12:00:00" },
  { id = 3, name = "Lisbon", population = 0.55, founded = nil, updated = os.date("!*t", 1710000000) },
}

return biconnector.connector {
  title = "Minimal example",
  settings = { { code = "token", name = "Access token", type = "STRING" } },
  secrets = { TOKEN },                    -- masked in every error message and log line

  check = function(connection)
    if TOKEN == nil or TOKEN == "" then return false, "MINIMAL_TOKEN is not set on the server" end
    return connection.token == TOKEN, "wrong token"
  end,

  tables = { { code = "cities", title = "Cities" } },

  describe = {
    cities = {
      { code = "id", name = "ID", type = "int" },
      { code = "name", name = "Name", type = "string" },
      { code = "population", name = "Population, millions", type = "double" },
      { code = "founded", name = "Founded", type = "date" },
      { code = "updated", name = "Updated", type = "datetime" },
    },
  },

  -- Rows are maps keyed by field code; the framework applies select, filter
  -- and limit, and formats the dates.
  data = function(connection, q)
    return cities
  end,
}
