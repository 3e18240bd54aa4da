-- A connector for spec/ngx_spec.lua: failing handlers, a stream cut in the
-- middle, and a counter of how often this file was loaded in one Lua VM
-- (the per-worker cache of biconnector.ngx must load it once).
local biconnector = require "biconnector"

package.loaded.bic_ngx_fixture_loads = (package.loaded.bic_ngx_fixture_loads or 0) + 1

local SECRET = "fixture-secret-token"

return biconnector.connector {
  title = "ngx fixture",
  settings = { { code = "token", name = "Token", type = "STRING" } },
  check = function(connection)
    return connection.token == SECRET, "wrong token"
  end,
  tables = function()
    return {
      { code = "numbers", title = "Numbers" },
      { code = "boom", title = "Raises" },
      { code = "cut", title = "Cut mid-stream" },
      { code = "yield", title = "Rows after ngx.sleep (a yield)" },
      -- the title tells the spec how often this VM loaded the file
      { code = "loads", title = "loads=" .. tostring(package.loaded.bic_ngx_fixture_loads) },
    }
  end,
  describe = function(_, table_code)
    if table_code == "numbers" or table_code == "boom" or table_code == "cut" or table_code == "yield" then
      return { { code = "n", name = "N", type = "int" } }
    end
  end,
  data = function(connection, q)
    if q.table == "boom" then
      error("boom on purpose (token " .. tostring(connection.token) .. ")")
    end
    local count = q.table == "cut" and 100000 or 10
    local i = 0
    if q.table == "yield" then ngx.sleep(0.001) end -- the handler yields, as a cosocket driver would
    return function()
      if q.table == "yield" then ngx.sleep(0) end -- and so does the row iterator
      i = i + 1
      if i > count then return nil end
      if q.table == "cut" and i == 60000 then return { n = "sixty thousand" } end
      return { n = i }
    end
  end,
}
