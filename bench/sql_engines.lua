-- rows/s of `biconnector serve postgresql://...`, `mysql://...` and
-- `clickhouse://...` over HTTP beside the engine's own fastest export of the
-- same rows in the same run (psql COPY ... TO STDOUT, mariadb --quick --batch,
-- ClickHouse's HTTP interface: curl ... FORMAT TSV), all to /dev/null, and the
-- server's peak RSS at two sizes (flat between them is the goal).
-- Run through bench/sql_engines (it sets LUA_PATH/LUA_CPATH).
--   ROWS (default 5000000) and SMALL (default 500000); QUICK=1: 500000 and 50000.
--   ENGINES="postgresql mysql clickhouse" (default all three); ROUNDS (default 2);
--   ANSWER_BUDGET=BYTES: the servers' --answer-budget (default theirs, 32 MiB).
local db = require "dbservers"
local S = require "serve_helpers"
local socket = require "socket"

local quick = os.getenv("QUICK") == "1"
-- the report's quick mode (bench/report.lua): small tables, a few seconds per engine
local report_quick = os.getenv("BENCH_MODE") == "quick"
local BIG = tonumber(os.getenv("ROWS") or (report_quick and "100000" or quick and "500000" or "5000000"))
local SMALL = tonumber(os.getenv("SMALL") or (report_quick and "10000" or quick and "50000" or "500000"))
local engines = {}
for e in (os.getenv("ENGINES") or "postgresql mysql clickhouse"):gmatch("%S+") do engines[#engines + 1] = e end

-- six columns, as the SQLite benchmark of issue 11: int, int, double, text, datetime, text
local CREATE = {
  postgresql = function(name, n)
    return ("CREATE TABLE %s AS SELECT g AS id, g %% 1000 AS customer_id, (g %% 100000) / 100.0::float8 AS amount, "
      .. "(ARRAY['new', 'paid', 'shipped', 'cancelled'])[g %% 4 + 1] AS status, "
      .. "timestamp '2024-01-01' + g * interval '1 second' AS ordered_at, md5(g::text) AS note "
      .. "FROM generate_series(1, %d) g; GRANT SELECT ON %s TO bic_ro;"):format(name, n, name)
  end,
  mysql = function(name, n)
    return ("CREATE TABLE %s AS SELECT seq AS id, seq %% 1000 AS customer_id, CAST((seq %% 100000) / 100.0 AS DOUBLE) AS amount, "
      .. "ELT(seq %% 4 + 1, 'new', 'paid', 'shipped', 'cancelled') AS status, "
      .. "TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND AS ordered_at, md5(seq) AS note "
      .. "FROM seq_1_to_%d;"):format(name, n)
  end,
  clickhouse = function(name, n)
    return ("CREATE TABLE %s ENGINE = MergeTree ORDER BY id AS SELECT toInt64(number + 1) AS id, "
      .. "toInt64((number + 1) %% 1000) AS customer_id, ((number + 1) %% 100000) / 100.0 AS amount, "
      .. "['new', 'paid', 'shipped', 'cancelled'][(number + 1) %% 4 + 1] AS status, "
      .. "toDateTime('2024-01-01 00:00:00') + (number + 1) AS ordered_at, lower(hex(MD5(toString(number + 1)))) AS note "
      .. "FROM numbers(%d)"):format(name, n)
  end,
}
local SELECT = "SELECT id, customer_id, amount, status, ordered_at, note FROM %s"

local function timed(cmd)
  local t = socket.gettime()
  local ok, out = db.run(cmd)
  if not ok then error(cmd .. ": " .. out) end
  return socket.gettime() - t
end

local function export_cmd(srv, name)
  if srv.engine == "postgresql" then
    return srv:psql(("-d bic -c %s > /dev/null"):format(db.sh_quote(("COPY (" .. SELECT .. ") TO STDOUT"):format(name))))
  elseif srv.engine == "clickhouse" then
    -- ClickHouse's own HTTP export, as the same read-only account
    return ("curl -sS --fail -H %s -H %s %s --data-binary %s > /dev/null"):format(
      db.sh_quote("X-ClickHouse-User: " .. db.RO_USER), db.sh_quote("X-ClickHouse-Key: " .. db.RO_PASSWORD),
      db.sh_quote(("http://127.0.0.1:%d/?database=bic"):format(srv.port)), db.sh_quote(SELECT:format(name) .. " FORMAT TSV"))
  end
  return srv:client(("--quick --batch -D bic -e %s > /dev/null"):format(db.sh_quote(SELECT:format(name))))
end

-- One serve process per size (VmHWM is a high-water mark): -> seconds, peak KiB, bytes
local function serve_once(srv, name)
  local args = { srv:url(), "--listen", "127.0.0.1:0", "--workers", "1", "--no-auth" }
  if os.getenv("ANSWER_BUDGET") then
    args[#args + 1] = "--answer-budget"
    args[#args + 1] = os.getenv("ANSWER_BUDGET")
  end
  local h = S.start(S.serve_command(args))
  local body = "table=" .. name
  local cmd = ("curl -sS -o /dev/null -w '%%{http_code} %%{size_download}' -X POST "
    .. "-H 'Content-Type: application/x-www-form-urlencoded' --data %s http://127.0.0.1:%d/data"):format(
    db.sh_quote(body), h.port)
  local t = socket.gettime()
  local ok, out = db.run(cmd)
  local secs = socket.gettime() - t
  local peak = S.peak_rss_kib(h.pid)
  S.stop(h)
  local code, size = out:match("(%d+) (%d+)")
  if not ok or code ~= "200" then error("serve " .. name .. ": " .. out .. "\n" .. S.stderr(h)) end
  return secs, peak, tonumber(size)
end

local failed = false
print(("rows: %d (and %d for the memory check), 6 columns"):format(BIG, SMALL))
for _, engine in ipairs(engines) do
  local why = db.missing(engine)
  if why then
    print("SKIP " .. engine .. ": " .. why)
  else
    local srv = db.start(engine)
    local ok, err = pcall(function()
      local t = socket.gettime()
      srv:admin(CREATE[engine]("bench_big", BIG))
      srv:admin(CREATE[engine]("bench_small", SMALL))
      print(("%s: tables made in %.1f s"):format(engine, socket.gettime() - t))
      -- the best of ROUNDS (default 2) for each, alternated: the machine may be shared
      timed(export_cmd(srv, "bench_big")) -- warm the cache
      -- the peaks: the highest of the rounds at each size (one sample against the
      -- highest of several would read the allocator's spread as growth)
      local native, secs, peak_big, peak_small, bytes = math.huge, math.huge, 0, 0, 0
      for _ = 1, tonumber(os.getenv("ROUNDS") or (report_quick and "1" or "2")) do
        native = math.min(native, timed(export_cmd(srv, "bench_big")))
        local s, p, b = serve_once(srv, "bench_big")
        secs, peak_big, bytes = math.min(secs, s), math.max(peak_big, p), b
        local _, ps = serve_once(srv, "bench_small")
        peak_small = math.max(peak_small, ps)
      end
      local ratio = native / secs
      local flat = peak_big <= peak_small * 1.25 + 2048
      print(("%s: engine export %.2f s = %.0f rows/s; biconnector serve over HTTP %.2f s = %.0f rows/s (%.1f MB) = %.2fx; "
        .. "peak RSS %.1f MiB at %d rows, %.1f MiB at %d rows%s"):format(engine, native, BIG / native, secs, BIG / secs,
        bytes / 1e6, ratio, peak_big / 1024, BIG, peak_small / 1024, SMALL,
        (peak_big / 1024 < 64 and flat) and "" or "  (RSS goal missed)"))
      require("result") { name = "sql." .. engine .. ".data", ours = BIG / secs, anchor = BIG / native, unit = "rows/s",
        runtime = os.getenv("BIC_RUNTIME"), anchor_name = ({ postgresql = "psql COPY ... TO STDOUT, same rows",
          mysql = "mariadb --quick --batch, same rows",
          clickhouse = "curl ... FORMAT TSV (ClickHouse's HTTP export), same rows" })[engine],
        what = ("biconnector serve %s:// /data, %d rows x 6 columns over HTTP to curl"):format(engine, BIG) }
      require("result") { name = "sql." .. engine .. ".peak_rss", ours = peak_big / 1024, anchor = peak_small / 1024,
        unit = "MiB", better = "lower", runtime = os.getenv("BIC_RUNTIME"),
        anchor_name = ("the same server at %d rows"):format(SMALL),
        what = ("peak RSS of the serve worker at %d rows (goal: < 64 MiB, flat)"):format(BIG) }
      if peak_big / 1024 >= 64 or not flat then failed = true end
    end)
    srv:stop()
    if not ok then error(err, 0) end
  end
end
os.exit(failed and 1 or 0)
