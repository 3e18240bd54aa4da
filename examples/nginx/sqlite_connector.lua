-- A SQLite database served by the SQL source (docs/database.md): its tables
-- and views, their columns, filters bound in SQL. Every query runs on a C
-- thread of its own (core.sql.job): inside nginx the request waits with
-- ngx.sleep, so the nginx worker keeps serving other requests meanwhile (no
-- thread_pool needed, docs/database.md, "Under nginx"); under `biconnector
-- serve` the same file works as it is.
--   BIC_SQLITE_DB=/srv/bi/sales.db   (nginx: `env BIC_SQLITE_DB;`)
-- No authentication here unless BIC_SQLITE_TOKEN is set (nginx: `env
-- BIC_SQLITE_TOKEN;`): then Bitrix24 sends it in the connector setting `token`.
local db = os.getenv("BIC_SQLITE_DB") or "/srv/bi/orders.db"

return require("biconnector.sql").connector {
  url = "sqlite://" .. db,
  title = "Orders (SQLite)",
  token = os.getenv("BIC_SQLITE_TOKEN"),
}
