-- A connector whose handlers fail on purpose, for spec/serve_robust_spec.lua.
local biconnector = require "biconnector"

return biconnector.connector {
  title = "failing fixture",
  settings = { { code = "token", name = "Token", type = "STRING" } },
  check = function(connection) return connection.token == "t0k3n", "wrong token" end,
  tables = function(connection, search)
    if search == "boom" then error("tables raised on purpose") end
    return { { code = "numbers", title = "Numbers" }, { code = "broken", title = "Broken" } }
  end,
  describe = function(connection, table_code)
    return { { code = "n", name = "N", type = "int" } }
  end,
  data = function(connection, q)
    if q.table == "broken" then
      local i = 0
      return function() -- raises in the middle of a long answer
        i = i + 1
        if i == 50000 then error("data iterator raised on purpose") end
        return { i }
      end
    end
    local i = 0
    return function()
      i = i + 1
      if i > 100 then return nil end
      return { i }
    end
  end,
}
