-- Instructions a /data answer of a database costs the server (callgrind's Ir),
-- per row, for one or more source trees: a measure the load of a shared or
-- virtual machine does not move (its timings vary by 15% and more from one run
-- to the next), for comparing a change with what came before it.
--
--   lua5.4 bench/sql_instructions.lua [TREE ...]    (default: this tree)
--   ENGINES="sqlite postgresql mysql" (default), ROWS=200000 (default)
-- SQLite also gets "sqlite-partial": the same table with a filter only partly
-- pushed down (customer_id in the SQL, `tag`, a column without a declared type,
-- matched by the connector; every row passes both), as bench/sql's figure.
--
-- Each TREE is a checkout with its builds (`make all`), e.g. the commit before
-- a change: `git worktree add /tmp/before REV && make -C /tmp/before all`.
-- For each engine the rows (six columns, as bench/sql_engines) are made once;
-- each tree's `biconnector serve URL --workers 1` runs under
-- `valgrind --tool=callgrind --trace-children=yes` twice, with and without one
-- /data of the whole table, and the difference is the answer's cost (the
-- start, the introspection and /check cancel out). By hand only: minutes per
-- engine, and it needs valgrind. PostgreSQL and MariaDB start as in the specs
-- (spec/dbservers.lua: temporary directories, loopback).
local top = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = top .. "/spec/?.lua;" .. top .. "/bench/?.lua;" .. top .. "/lua/?.lua;" .. package.path
package.cpath = (os.getenv("BUILD") or top .. "/build") .. "/?.so;" .. package.cpath

local db = require "dbservers"
local S = require "serve_helpers"
local socket = require "socket"

local ROWS = tonumber(os.getenv("ROWS") or "200000")
local trees = {}
for _, t in ipairs(arg) do trees[#trees + 1] = t end
if #trees == 0 then trees[1] = top end
local engines = {}
for e in (os.getenv("ENGINES") or "sqlite postgresql mysql"):gmatch("%S+") do engines[#engines + 1] = e end

if not os.execute("command -v valgrind > /dev/null") then
  print("SKIP valgrind is not installed (apt-get install -y valgrind)")
  os.exit(0)
end

local CREATE = {
  postgresql = [[CREATE TABLE bench_rows AS SELECT g AS id, g %% 1000 AS customer_id,
    (g %% 100000) / 100.0::float8 AS amount, (ARRAY['new', 'paid', 'shipped', 'cancelled'])[g %% 4 + 1] AS status,
    timestamp '2024-01-01' + g * interval '1 second' AS ordered_at, md5(g::text) AS note
    FROM generate_series(1, %d) g; GRANT SELECT ON bench_rows TO bic_ro;]],
  mysql = [[CREATE TABLE bench_rows AS SELECT seq AS id, seq %% 1000 AS customer_id,
    CAST((seq %% 100000) / 100.0 AS DOUBLE) AS amount, ELT(seq %% 4 + 1, 'new', 'paid', 'shipped', 'cancelled') AS status,
    TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND AS ordered_at, md5(seq) AS note FROM seq_1_to_%d;]],
  sqlite = [[CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, customer_id INTEGER, amount REAL, status TEXT,
    ordered_at DATETIME, note TEXT, tag);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)
    INSERT INTO bench_rows SELECT i, i %% 1000, (i %% 100000) / 100.0,
      CASE i %% 4 WHEN 0 THEN 'new' WHEN 1 THEN 'paid' WHEN 2 THEN 'shipped' ELSE 'cancelled' END,
      datetime('2024-01-01', '+' || i || ' seconds'), hex(randomblob(16)), 'tag ' || (i %% 10) FROM n;]],
}

local function run(cmd)
  local ok, out = db.run(cmd)
  if not ok then error(cmd .. ": " .. tostring(out), 0) end
  return out
end

-- Instructions of every process a callgrind directory holds (master and worker).
local function total_ir(dir)
  local sum = 0
  for name in io.popen("ls " .. db.sh_quote(dir)):lines() do
    local f = assert(io.open(dir .. "/" .. name))
    local text = f:read("a")
    f:close()
    sum = sum + (tonumber(text:match("\nsummary: (%d+)")) or tonumber(text:match("\ntotals: (%d+)")) or 0)
  end
  return sum
end

-- Starts a server under callgrind (slow: up to two minutes to listen).
local function start(tree, url, dir)
  local h = S.background(("cd %s && env BIC_BUILD=%s valgrind -q --tool=callgrind --trace-children=yes "
    .. "--callgrind-out-file=%s lua5.4 bin/biconnector serve %s --listen 127.0.0.1:0 --workers 1 --no-auth")
    :format(db.sh_quote(tree), db.sh_quote(tree .. "/build"), db.sh_quote(dir .. "/cg.%p"), db.sh_quote(url)))
  for _ = 1, 1200 do
    local f = io.open(h.out)
    local out = f and f:read("a") or ""
    if f then f:close() end
    local pf = io.open(h.pidfile)
    h.pid = h.pid or (pf and tonumber(pf:read("a")))
    if pf then pf:close() end
    local port = out:match("listening on https?://[^\n]-:(%d+)\n")
    if h.pid and port then
      h.port = tonumber(port)
      return h
    end
    socket.sleep(0.1)
  end
  error("the server did not start under valgrind: " .. S.stderr(h), 0)
end

local PARTIAL = '{"table":"bench_rows","filter":{">=customer_id":0,"!tag":"zzz"}}'

local function data(port, json_body)
  local code = run(("curl -sS -o /dev/null -w '%%{http_code}' -X POST %s http://127.0.0.1:%d/data"):format(
    json_body and ("-H 'Content-Type: application/json' --data " .. db.sh_quote(json_body)) or "--data table=bench_rows",
    port))
  if code ~= "200" then error("/data answered " .. code, 0) end
end

-- -> instructions of one /data answer of the whole table on tree's server
-- (json_body: the request, JSON; else the whole table, no filter)
local function answer_cost(tree, url, json_body)
  local cost = {}
  for _, ask in ipairs({ false, true }) do
    local dir = run("mktemp -d"):match("%S+")
    local h = start(tree, url, dir)
    run(("curl -sS -o /dev/null -X POST --data key= http://127.0.0.1:%d/check"):format(h.port))
    -- a filter's first use checks the columns once: in both runs, it cancels out
    if json_body then data(h.port, json_body:gsub("^{", '{"limit":1,')) end
    if ask then data(h.port, json_body) end
    S.stop(h)
    socket.sleep(2) -- callgrind writes its files as the processes end
    cost[ask] = total_ir(dir)
    run("rm -rf " .. db.sh_quote(dir))
  end
  return cost[true] - cost[false]
end

print(("rows: %d (6 columns; SQLite 7, with tag); instructions of the server per row of a /data answer (callgrind)"):format(ROWS))
for _, engine in ipairs(engines) do
  local why = engine ~= "sqlite" and db.missing(engine)
  if why then
    print("SKIP " .. engine .. ": " .. why)
  else
    local srv, url, file
    if engine == "sqlite" then
      file = os.tmpname()
      run(("sqlite3 %s %s"):format(db.sh_quote(file), db.sh_quote(CREATE.sqlite:format(ROWS))))
      url = "sqlite://" .. file
    else
      srv = db.start(engine)
    end
    local ok, err = pcall(function()
      if srv then
        srv:admin(CREATE[engine]:format(ROWS))
        url = srv:url()
      end
      for _, case in ipairs(engine == "sqlite" and { { engine }, { "sqlite-partial", PARTIAL } } or { { engine } }) do
        for _, tree in ipairs(trees) do
          local ir = answer_cost(tree, url, case[2])
          print(("%-15s %-35s %8.1f M instructions  %6.0f a row"):format(case[1], tree, ir / 1e6, ir / ROWS))
          io.stdout:flush()
        end
      end
    end)
    if srv then srv:stop() end
    if file then os.remove(file) end
    if not ok then error(err, 0) end
  end
end
