-- A connector over a SQLite file whose reads block (LuaSQL): inside nginx it
-- hands them to a worker thread with ngx.run_worker_thread, so the nginx
-- worker keeps serving other requests meanwhile; under `biconnector serve`
-- it calls the same function directly.
--   BIC_SQLITE_DB=/srv/bi/sales.db  (nginx: `env BIC_SQLITE_DB;`)
-- The database has a table  orders(id INTEGER, customer TEXT, placed TEXT).
-- nginx: lua_package_path must reach sqlite_rows.lua (this directory) so that
-- the thread's own Lua VM can require it, and the main context must declare
-- the pool:  thread_pool biconnector threads=8;
local biconnector = require "biconnector"
local filter = require "biconnector.filter"

local DB = os.getenv("BIC_SQLITE_DB") or "orders.db"
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"

local function query(sql)
  if ngx and ngx.get_phase and ngx.get_phase() == "content" then
    -- ok, then what query returned (rows | nil, message), come back from the thread
    local ok, rows, err = ngx.run_worker_thread("biconnector", "sqlite_rows", "query", DB, sql)
    if not ok then error("worker thread: " .. tostring(rows)) end
    return rows, err
  end
  return dofile(here .. "sqlite_rows.lua").query(DB, sql)
end

local function literal(v)
  if type(v) == "number" then return string.format("%.17g", v) end
  return "'" .. tostring(v):gsub("'", "''") .. "'"
end

return biconnector.connector {
  title = "Orders (SQLite)",
  settings = {},
  check = function() return true end, -- no authentication in this example: put it behind your own
  tables = { { code = "orders", title = "Orders" } },
  describe = {
    orders = {
      { code = "id", name = "ID", type = "int" },
      { code = "customer", name = "Customer", type = "string" },
      { code = "placed", name = "Placed", type = "datetime" },
    },
  },
  -- Filter and limit go into the SQL; rows come back in described order.
  data = function(_, q)
    local sql = "SELECT id, customer, placed FROM orders"
    local applied = { limit = true }
    if q.filter then
      local where, params = filter.to_sql(q.filter, { dialect = "sqlite" })
      if where then
        -- LuaSQL has no bound parameters: inline them as SQL literals
        local i = 0
        where = where:gsub("%?", function() i = i + 1 return literal(params[i]) end)
        sql = sql .. " WHERE " .. where
        applied.filter = true
      end
    end
    sql = sql .. " ORDER BY id"
    if q.limit then sql = sql .. " LIMIT " .. math.floor(q.limit) end
    local rows, err = query(sql)
    if not rows then error(err) end
    return rows, applied
  end,
}
