-- Blocking SQLite reads (LuaSQL) for examples/nginx/sqlite_connector.lua.
-- Inside nginx this module runs in a worker thread (ngx.run_worker_thread),
-- in a Lua VM of its own: arguments and results are plain values only.
local _M = {}

-- query(db_path, sql) -> list of rows (arrays) | nil, message
function _M.query(db_path, sql)
  local luasql = require "luasql.sqlite3"
  local env = luasql.sqlite3()
  local con, err = env:connect(db_path)
  if not con then env:close() return nil, "cannot open " .. db_path .. ": " .. tostring(err) end
  local cur, qerr = con:execute(sql)
  if not cur then con:close() env:close() return nil, tostring(qerr) end
  local rows = {}
  local row = cur:fetch({}, "n")
  while row do
    rows[#rows + 1] = { row[1], row[2], row[3] }
    row = cur:fetch({}, "n")
  end
  cur:close()
  con:close()
  env:close()
  return rows
end

return _M
