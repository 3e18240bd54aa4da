-- A SQLite database served by the SQL source (docs/database.md): its tables
-- and views, their columns, filters bound in SQL. Inside nginx every database
-- call runs in the thread pool `biconnector` (ngx.run_worker_thread), so the
-- nginx worker keeps serving other requests meanwhile; under `biconnector
-- serve` the same file reads directly.
--   BIC_SQLITE_DB=/srv/bi/sales.db   (nginx: `env BIC_SQLITE_DB;`)
--   nginx main context:  thread_pool biconnector threads=8;
-- No authentication here unless BIC_SQLITE_TOKEN is set (nginx: `env
-- BIC_SQLITE_TOKEN;`): then Bitrix24 sends it in the connector setting `token`.
local db = os.getenv("BIC_SQLITE_DB") or "/srv/bi/orders.db"

return require("biconnector.sql").connector {
  url = "sqlite://" .. db,
  title = "Orders (SQLite)",
  token = os.getenv("BIC_SQLITE_TOKEN"),
}
