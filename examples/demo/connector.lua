-- The demo connector: three tables of generated CRM data (deals, contacts,
-- invoices) with every field type. Run it with
--   bin/biconnector serve examples/demo/connector.lua
-- Every request must carry the token setting: "demo-token", or the value of
-- the environment variable BIC_DEMO_TOKEN when it is set.
-- Table sizes: BIC_DEMO_ROWS (default 1000) for the listed tables; any size
-- through a code suffix, e.g. table "deals_5m" (5,000,000 rows) or "invoices_250k".
local biconnector = require "biconnector"

-- data.lua sits next to this file, wherever the server was started from.
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local data = dofile(here .. "data.lua")

local TOKEN = os.getenv("BIC_DEMO_TOKEN") or "demo-token"

return biconnector.connector {
  title = "biconnector demo (generated CRM data)",
  settings = { { code = "token", name = "Access token", type = "STRING" } },
  secrets = { TOKEN },                    -- masked in every error message and log line

  check = function(connection)
    return connection.token == TOKEN, "wrong token"
  end,

  -- The search as the framework reads it for a static list: white space
  -- around it ignored (found in linear time: "^%s*(.-)%s*$" backtracks
  -- quadratically on a long run of spaces), case-insensitive.
  tables = function(connection, search)
    search = search or ""
    local first, from_end = search:find("%S"), search:reverse():find("%S")
    search = first and search:sub(first, #search - from_end + 1):lower() or ""
    local list = {}
    for _, t in ipairs(data.TABLES) do
      if search == "" or t.code:find(search, 1, true) or t.title:lower():find(search, 1, true) then
        list[#list + 1] = t
      end
    end
    return list
  end,

  describe = function(connection, table_code)
    return data.fields(table_code) -- nil: unknown table (404)
  end,

  -- Rows come lazily from an iterator. Without a filter they are made in
  -- select order and cut at the limit here. With one, the filter may name
  -- fields the select leaves out: every column is made (described order) and
  -- the framework filters, then selects, then limits.
  data = function(connection, q)
    if q.filter == nil then
      return data.rows(q.table, q.select, q.limit), { select = true, limit = true }
    end
    return data.rows(q.table, nil, nil)
  end,
}
