-- Real database servers for the specs: PostgreSQL, MariaDB and ClickHouse
-- started from the Debian packages' binaries, each in a temporary data
-- directory, listening on a free 127.0.0.1 port (and, but for ClickHouse, a
-- unix socket inside the directory), stopped and removed by the spec's teardown.
--
--   local db = require "dbservers"
--   local why = db.missing("postgresql")       -- nil, or why it cannot run here
--   local pg = db.start("postgresql")           -- raises (with the server's log) on failure
--   pg:admin("CREATE TABLE ...")                -- SQL as the superuser, database "bic"
--   pg:rows("SELECT ...")                       -- -> list of lines (columns tab-separated)
--   pg:url()                                    -- postgresql://bic_ro:...@127.0.0.1:PORT/bic
--   pg:restart()                                -- same port, same data
--   pg:stop()                                   -- and the directory is removed
--
-- Each server gets a database `bic` and three accounts: `bic_ro` (password
-- db.RO_PASSWORD), which may only read what `bic` holds (tables created later
-- included), `bic_rw` (db.RW_PASSWORD), which may write there, and the engine's
-- superuser (over the unix socket) for the spec's own setup.
-- PostgreSQL refuses to run as root: when the specs run as root, the server
-- runs as the `postgres` account of the Debian package (or `nobody`).
-- ClickHouse (clickhouse-server, HTTP interface): `default` is its superuser
-- (no password, loopback only); `bic_ro`'s profile has readonly=2 (it may read
-- and change settings), `bic_ro1`'s readonly=1 (it may change none);
-- srv:admin(sql) runs ONE statement (or each of a list); db.start_cluster("clickhouse") starts two
-- servers that know each other as the shards of the cluster `bic_two`.
local helpers = require "helpers"

local D = {}
D.RO_USER = "bic_ro"
D.RO_PASSWORD = "ro-Secret-9"
D.DATABASE = "bic"
D.RW_USER = "bic_rw" -- may write into bic: for the specs that prove read-only sessions
D.RW_PASSWORD = "rw-Secret-9"

local sh_quote = helpers.q
D.sh_quote = sh_quote

local read_file, write_file = helpers.read_file, helpers.write_file

-- Runs a shell command; returns ok, output (stdout and stderr together).
local run, first_line = helpers.run, helpers.first_line
D.run = run

local function is_root() return first_line("id -u") == "0" end

local function executable(path)
  return run("test -x " .. sh_quote(path))
end

-- The PostgreSQL binaries: BIC_PG_BIN, or the newest /usr/lib/postgresql/N/bin (15 first).
local function pg_bin()
  local env = os.getenv("BIC_PG_BIN")
  if env then return env end
  if executable("/usr/lib/postgresql/15/bin/postgres") then return "/usr/lib/postgresql/15/bin" end
  local newest = first_line("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1")
  return newest or "/usr/lib/postgresql/15/bin"
end

local function which(name)
  local p = first_line("command -v " .. sh_quote(name))
  return p and p ~= "" and p or nil
end

-- nil when the engine's server can run here, else the reason.
function D.missing(engine)
  local core = require "biconnector.core"
  local has = {}
  for _, e in ipairs(core.sql and core.sql.engines or {}) do has[e] = true end
  if engine == "postgresql" then
    if not has.postgresql then return "this build of the core has no PostgreSQL driver (libpq-dev missing at build time)" end
    local bin = pg_bin()
    for _, b in ipairs({ "initdb", "pg_ctl", "postgres", "psql" }) do
      if not executable(bin .. "/" .. b) then
        return ("%s/%s is missing (Debian package postgresql)"):format(bin, b)
      end
    end
    if is_root() and not which("runuser") then return "running as root and runuser is missing" end
    return nil
  elseif engine == "clickhouse" then
    if not has.clickhouse then return "this build of the core has no ClickHouse driver" end
    if not (which("clickhouse-server") or executable("/usr/sbin/clickhouse-server")) then
      return "clickhouse-server is missing (Debian package clickhouse-server)"
    end
    if not which("curl") then return "curl is missing (Debian package curl)" end
    return nil
  elseif engine == "mysql" then
    if not has.mysql then return "this build of the core has no MySQL/MariaDB driver (libmariadb-dev missing at build time)" end
    for _, b in ipairs({ "mariadbd", "mariadb-install-db", "mariadb-admin", "mariadb" }) do
      if not (which(b) or executable("/usr/sbin/" .. b)) then
        return b .. " is missing (Debian package mariadb-server)"
      end
    end
    return nil
  end
  return "unknown engine " .. tostring(engine)
end

-- Says loudly on stderr why the engine's specs do not run and returns the
-- message; the spec registers the pending test itself (busted's `it` and
-- `pending` live in the spec file's environment, not in the modules it requires):
--   if why then local msg = db.skip(engine, why)
--     return it("runs against a real server", function() pending(msg) end) end
function D.skip(engine, why)
  local msg = ("SKIPPED: the %s specs need a real server: %s"):format(engine, why)
  io.stderr:write("\n*** " .. msg .. "\n")
  return msg
end

local mktemp = helpers.tmpdir

-- Polls fn every 0.1 s until it holds; raises after `seconds`.
local function wait_until(what, seconds, fn)
  if not helpers.poll(fn, seconds, 0.1) then error(("%s: not ready after %d s"):format(what, seconds), 0) end
  return true
end

------------------------------------------------------------------ PostgreSQL

local PG = {}
PG.__index = PG

function PG:as_user(cmd)
  if self.user then return "runuser -u " .. self.user .. " -- " .. cmd end
  return cmd
end

function PG:start_server()
  local opts = table.concat({
    "-p " .. self.port, "-k " .. self.dir, "-c listen_addresses=127.0.0.1",
    "-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off",
    "-c max_connections=40", "-c shared_buffers=32MB", "-c log_min_messages=warning",
  }, " ")
  return run(self:as_user(("%s/pg_ctl -D %s -l %s -w -t 60 -o %s start"):format(
    self.bin, sh_quote(self.data), sh_quote(self.dir .. "/server.log"), sh_quote(opts))))
end

function PG:log() return read_file(self.dir .. "/server.log") or "" end

function PG:psql(args)
  return ("%s/psql -X -q -v ON_ERROR_STOP=1 -h %s -p %d -U postgres %s"):format(
    self.bin, sh_quote(self.dir), self.port, args)
end

-- Runs SQL as the superuser (in database db, default bic); raises on an error.
function PG:admin(sql, db)
  local file = self.dir .. "/admin.sql"
  write_file(file, sql)
  local ok, out = run(self:psql(("-d %s -f %s"):format(sh_quote(db or D.DATABASE), sh_quote(file))))
  if not ok then error("postgresql admin SQL failed: " .. out, 2) end
  return out
end

-- The rows of a query run as the superuser: a list of lines, columns tab-separated.
function PG:rows(sql, db)
  local ok, out = run(self:psql(("-A -t -F '\t' -d %s -c %s"):format(sh_quote(db or D.DATABASE), sh_quote(sql))))
  if not ok then error("postgresql query failed: " .. out, 2) end
  local rows = {}
  for line in out:gmatch("[^\n]+") do rows[#rows + 1] = line end
  return rows
end

function PG:url(user, password, db, query)
  return ("postgresql://%s:%s@127.0.0.1:%d/%s%s"):format(user or D.RO_USER, password or D.RO_PASSWORD,
    self.port, db or D.DATABASE, query and ("?" .. query) or "")
end

function PG:restart()
  local ok, out = run(self:as_user(("%s/pg_ctl -D %s -l %s -m fast -w -t 60 restart"):format(
    self.bin, sh_quote(self.data), sh_quote(self.dir .. "/server.log"))))
  if not ok then error("postgresql restart failed: " .. out .. "\n" .. self:log(), 2) end
end

function PG:stop()
  if self.stopped then return end
  self.stopped = true
  run(self:as_user(("%s/pg_ctl -D %s -m immediate -w -t 30 stop"):format(self.bin, sh_quote(self.data))))
  run("rm -rf " .. sh_quote(self.dir))
end

local function start_postgresql()
  local self = setmetatable({ engine = "postgresql", bin = pg_bin() }, PG)
  if is_root() then
    self.user = first_line("id -u postgres") and "postgres" or "nobody"
  end
  self.dir = mktemp("pg")
  self.data = self.dir .. "/data"
  if self.user then assert(run(("chown %s %s"):format(self.user, sh_quote(self.dir)))) end
  local ok, out = run(self:as_user(("%s/initdb -D %s -U postgres -A trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 -N"):format(
    self.bin, sh_quote(self.data))))
  if not ok then
    run("rm -rf " .. sh_quote(self.dir))
    error("initdb failed: " .. out, 0)
  end
  -- the port was free a moment ago; another process may take it first: try again
  for attempt = 1, 3 do
    self.port = helpers.free_port()
    ok, out = self:start_server()
    if ok then break end
    if attempt == 3 then
      local log = self:log()
      run("rm -rf " .. sh_quote(self.dir))
      error("postgresql did not start: " .. out .. "\n" .. log, 0)
    end
  end
  self:admin(([[
    CREATE ROLE %s LOGIN PASSWORD '%s';
    CREATE ROLE %s LOGIN PASSWORD '%s';
    CREATE DATABASE %s OWNER %s;
  ]]):format(D.RO_USER, D.RO_PASSWORD, D.RW_USER, D.RW_PASSWORD, D.DATABASE, D.RW_USER), "postgres")
  self:admin(([[
    GRANT CONNECT ON DATABASE %s TO %s;
    GRANT USAGE ON SCHEMA public TO %s;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO %s;
  ]]):format(D.DATABASE, D.RO_USER, D.RO_USER, D.RO_USER))
  return self
end

------------------------------------------------------------------ MariaDB

local MY = {}
MY.__index = MY

local function mariadb_bin(name)
  return which(name) or ("/usr/sbin/" .. name)
end

function MY:client(args)
  return ("%s --no-defaults -S %s -uroot %s"):format(mariadb_bin("mariadb"), sh_quote(self.sock), args)
end

function MY:log() return read_file(self.dir .. "/server.log") or "" end

function MY:start_server()
  os.remove(self.dir .. "/mysqld.pid")
  local args = table.concat({
    mariadb_bin("mariadbd"), "--no-defaults", "--datadir=" .. sh_quote(self.data), "--tmpdir=" .. sh_quote(self.tmp),
    "--port=" .. self.port, "--bind-address=127.0.0.1", "--socket=" .. sh_quote(self.sock),
    "--pid-file=" .. sh_quote(self.dir .. "/mysqld.pid"), "--log-error=" .. sh_quote(self.dir .. "/server.log"),
    self.user_arg, "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=64M",
    "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--performance-schema=OFF",
    "--max-connections=40", "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
  }, " ")
  os.execute("sh -c " .. sh_quote(args .. " >/dev/null 2>&1 &"))
  local ping = ("%s --no-defaults -S %s -uroot --connect-timeout=2 ping"):format(
    mariadb_bin("mariadb-admin"), sh_quote(self.sock))
  local ok = pcall(wait_until, "mariadb", 60, function()
    if run(ping) then return true end
    -- gave up already (port taken, bad data directory)?
    if (self:log()):match("%[ERROR%] Aborting") then error("mariadbd aborted", 0) end
    return false
  end)
  if not ok then return false end
  self.pid = tonumber(read_file(self.dir .. "/mysqld.pid") or "")
  return true
end

-- Runs SQL as root (in database db, default bic); raises on an error.
function MY:admin(sql, db)
  local file = self.dir .. "/admin.sql"
  write_file(file, sql)
  local ok, out = run(self:client(("--batch -D %s < %s"):format(sh_quote(db or D.DATABASE), sh_quote(file))))
  if not ok then error("mariadb admin SQL failed: " .. out, 2) end
  return out
end

function MY:rows(sql, db)
  local ok, out = run(self:client(("--batch -N -D %s -e %s"):format(sh_quote(db or D.DATABASE), sh_quote(sql))))
  if not ok then error("mariadb query failed: " .. out, 2) end
  local rows = {}
  for line in out:gmatch("[^\n]+") do rows[#rows + 1] = line end
  return rows
end

function MY:url(user, password, db, query, scheme)
  return ("%s://%s:%s@127.0.0.1:%d/%s%s"):format(scheme or "mysql", user or D.RO_USER, password or D.RO_PASSWORD,
    self.port, db or D.DATABASE, query and ("?" .. query) or "")
end

function MY:shutdown()
  run(("%s --no-defaults -S %s -uroot shutdown"):format(mariadb_bin("mariadb-admin"), sh_quote(self.sock)))
  if self.pid then
    local pid = self.pid
    pcall(wait_until, "mariadb shutdown", 30, function()
      return not read_file("/proc/" .. pid .. "/stat")
    end)
    if read_file("/proc/" .. pid .. "/stat") then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end
end

function MY:restart()
  self:shutdown()
  if not self:start_server() then error("mariadb did not restart:\n" .. self:log(), 2) end
end

function MY:stop()
  if self.stopped then return end
  self.stopped = true
  -- the data is thrown away: no clean shutdown needed
  if self.pid and read_file("/proc/" .. self.pid .. "/stat") then
    local pid = self.pid
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    pcall(wait_until, "mariadb stop", 30, function() return not read_file("/proc/" .. pid .. "/stat") end)
  else
    self:shutdown()
  end
  run("rm -rf " .. sh_quote(self.dir))
end

local function start_mariadb()
  local self = setmetatable({ engine = "mysql" }, MY)
  self.dir = mktemp("my")
  self.data = self.dir .. "/data"
  self.sock = self.dir .. "/mysqld.sock"
  self.user_arg = is_root() and "--user=root" or ""
  -- its own temporary directory: a mariadbd that starts removes every #sql* file
  -- in its tmpdir, so with /tmp shared, one starting elsewhere (another suite
  -- on the machine) deleted the files of a bootstrap running here
  self.tmp = self.dir .. "/tmp"
  assert(run("mkdir " .. sh_quote(self.tmp)), "mkdir " .. self.tmp .. " failed")
  local ok, out = run(("%s --no-defaults --datadir=%s --tmpdir=%s --auth-root-authentication-method=normal %s --skip-test-db --skip-name-resolve"):format(
    mariadb_bin("mariadb-install-db"), sh_quote(self.data), sh_quote(self.tmp), self.user_arg))
  if not ok then
    run("rm -rf " .. sh_quote(self.dir))
    error("mariadb-install-db failed: " .. out, 0)
  end
  for attempt = 1, 3 do
    self.port = helpers.free_port()
    if self:start_server() then break end
    if attempt == 3 then
      local log = self:log()
      self:shutdown()
      run("rm -rf " .. sh_quote(self.dir))
      error("mariadb did not start:\n" .. log, 0)
    end
    self:shutdown()
  end
  self:admin(([[
    CREATE DATABASE %s CHARACTER SET utf8mb4;
    CREATE USER '%s'@'%%' IDENTIFIED BY '%s';
    GRANT SELECT, SHOW VIEW ON %s.* TO '%s'@'%%';
    CREATE USER '%s'@'%%' IDENTIFIED BY '%s';
    GRANT ALL ON %s.* TO '%s'@'%%';
  ]]):format(D.DATABASE, D.RO_USER, D.RO_PASSWORD, D.DATABASE, D.RO_USER,
    D.RW_USER, D.RW_PASSWORD, D.DATABASE, D.RW_USER), "mysql")
  return self
end


------------------------------------------------------------------ ClickHouse

local CH = {}
CH.__index = CH

local function ch_bin()
  return which("clickhouse-server") or "/usr/sbin/clickhouse-server"
end

-- The server's config: its own directory, loopback ports, small caches; the
-- cluster `bic_two` when shards (a list of native ports) are given.
function CH:write_config()
  local shards = ""
  if self.shards then
    local parts = {}
    for i, port in ipairs(self.shards) do
      parts[i] = ("<shard><replica><host>127.0.0.1</host><port>%d</port></replica></shard>"):format(port)
    end
    shards = "<remote_servers><bic_two>" .. table.concat(parts) .. "</bic_two></remote_servers>"
  end
  write_file(self.dir .. "/config.xml", ([[<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>%s/server.log</log><errorlog>%s/server.err.log</errorlog><size>10M</size><count>1</count></logger>
  <http_port>%d</http_port>
  <tcp_port>%d</tcp_port>
  <interserver_http_port>%d</interserver_http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>%s/data/</path>
  <tmp_path>%s/tmp/</tmp_path>
  <user_files_path>%s/user_files/</user_files_path>
  <format_schema_path>%s/format_schemas/</format_schema_path>
  <users_config>%s/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>%s</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mlock_executable>false</mlock_executable>
  %s
</yandex>
]]):format(self.dir, self.dir, self.port, self.tcp_port, self.inter_port, self.dir, self.dir, self.dir, self.dir,
    self.dir, self.timezone, shards))
  local function user(name, password, profile)
    return ("<%s><password>%s</password><networks><ip>127.0.0.1</ip></networks><profile>%s</profile>"
      .. "<quota>default</quota></%s>"):format(name, password, profile, name)
  end
  write_file(self.dir .. "/users.xml", ([[<?xml version="1.0"?>
<yandex>
  <profiles>
    <default><max_memory_usage>2000000000</max_memory_usage><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default>
    <ro2><readonly>2</readonly></ro2>
    <ro1><readonly>1</readonly></ro1>
  </profiles>
  <users>%s%s%s%s</users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
]]):format(user("default", "", "default"), user(D.RO_USER, D.RO_PASSWORD, "ro2"),
    user(D.RO_USER .. "1", D.RO_PASSWORD, "ro1"), user(D.RW_USER, D.RW_PASSWORD, "default")))
end

function CH:log() return (read_file(self.dir .. "/server.err.log") or "") .. (read_file(self.dir .. "/stdout") or "") end

-- The curl command for one statement (sql in a file) as user (default: the superuser).
function CH:curl(file, db, user, password)
  return ("curl -sS --fail-with-body -H %s %s %s --data-binary @%s"):format(
    sh_quote("X-ClickHouse-User: " .. (user or "default")),
    password and ("-H " .. sh_quote("X-ClickHouse-Key: " .. password)) or "",
    sh_quote(("http://127.0.0.1:%d/?database=%s"):format(self.port, db or D.DATABASE)), sh_quote(file))
end

function CH:start_server()
  os.remove(self.dir .. "/server.pid")
  os.execute(("sh -c %s"):format(sh_quote(("cd %s && exec %s --config-file=%s/config.xml >%s/stdout 2>&1 & echo $! >%s/server.pid")
    :format(sh_quote(self.dir), ch_bin(), self.dir, self.dir, self.dir))))
  local ok = pcall(wait_until, "clickhouse", 60, function()
    self.pid = self.pid or tonumber(read_file(self.dir .. "/server.pid") or "")
    if self.pid and not read_file("/proc/" .. self.pid .. "/stat") then error("clickhouse-server exited", 0) end
    return run(("curl -sf http://127.0.0.1:%d/ping"):format(self.port))
  end)
  return ok
end

-- Runs ONE statement (or each of a list) as the superuser (in database db,
-- default bic); raises on an error.
function CH:admin(sql, db)
  if type(sql) == "table" then
    local out = {}
    for i, one in ipairs(sql) do out[i] = self:admin(one, db) end
    return table.concat(out)
  end
  local file = self.dir .. "/admin.sql"
  write_file(file, sql)
  local ok, out = run(self:curl(file, db or D.DATABASE))
  if not ok then error("clickhouse admin SQL failed: " .. out .. "\nSQL: " .. sql:sub(1, 500), 2) end
  return out
end

-- The rows of a query run as the superuser: a list of lines (TabSeparated).
function CH:rows(sql, db)
  local out = self:admin(sql .. " FORMAT TSV", db)
  local rows = {}
  for line in out:gmatch("[^\n]+") do rows[#rows + 1] = line end
  return rows
end

function CH:url(user, password, db, query, scheme)
  return ("%s://%s:%s@127.0.0.1:%d/%s%s"):format(scheme or "clickhouse", user or D.RO_USER,
    password or D.RO_PASSWORD, self.port, db or D.DATABASE, query and ("?" .. query) or "")
end

function CH:kill(signal)
  if not self.pid then return end
  local pid = self.pid
  os.execute(("kill -%s %d 2>/dev/null"):format(signal, pid))
  pcall(wait_until, "clickhouse stop", 30, function() return not read_file("/proc/" .. pid .. "/stat") end)
  if read_file("/proc/" .. pid .. "/stat") then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  self.pid = nil
end

function CH:restart()
  self:kill("TERM")
  if not self:start_server() then error("clickhouse did not restart:\n" .. self:log(), 2) end
end

function CH:stop()
  if self.stopped then return end
  self.stopped = true
  self:kill("KILL")
  run("rm -rf " .. sh_quote(self.dir))
end

-- A ClickHouse server (not started): directory, ports, config.
local function new_clickhouse(opts)
  local self = setmetatable({ engine = "clickhouse", timezone = opts.timezone or "Europe/Berlin" }, CH)
  self.dir = mktemp("ch")
  self.port, self.tcp_port, self.inter_port = helpers.free_port(), helpers.free_port(), helpers.free_port()
  return self
end

local function start_clickhouse(srv)
  for attempt = 1, 3 do
    srv:write_config()
    if srv:start_server() then break end
    if attempt == 3 then
      local log = srv:log()
      srv:kill("KILL")
      run("rm -rf " .. sh_quote(srv.dir))
      error("clickhouse did not start:\n" .. log, 0)
    end
    srv:kill("KILL")
    srv.port, srv.tcp_port, srv.inter_port = helpers.free_port(), helpers.free_port(), helpers.free_port()
  end
  srv:admin("CREATE DATABASE " .. D.DATABASE, "default")
  return srv
end

-- A watchdog: when the spec process dies without its teardown (killed by a
-- timeout), the server is killed and its directory removed.
local function watchdog(srv)
  local kill
  if srv.engine == "postgresql" then
    kill = srv:as_user(("%s/pg_ctl -D %s -m immediate stop"):format(srv.bin, sh_quote(srv.data)))
  elseif srv.engine == "clickhouse" then
    kill = ("kill -KILL $(cat %s)"):format(sh_quote(srv.dir .. "/server.pid"))
  else
    kill = ("kill -KILL $(cat %s)"):format(sh_quote(srv.dir .. "/mysqld.pid"))
  end
  helpers.watchdog("[ -d " .. sh_quote(srv.dir) .. " ]", kill .. "; rm -rf " .. sh_quote(srv.dir))
end

-- Starts a server of the engine ("postgresql", "mysql" or "clickhouse"; opts:
-- timezone for ClickHouse, default Europe/Berlin); raises with the server's
-- own messages when it cannot.
function D.start(engine, opts)
  local srv
  if engine == "postgresql" then srv = start_postgresql()
  elseif engine == "mysql" then srv = start_mariadb()
  elseif engine == "clickhouse" then srv = start_clickhouse(new_clickhouse(opts or {}))
  else error("unknown engine " .. tostring(engine)) end
  watchdog(srv)
  return srv
end

-- Two ClickHouse servers, each the shard of the cluster `bic_two` (remote_servers
-- in both configs): -> {a, b, stop = function}; opts as for start.
function D.start_cluster(engine, opts)
  assert(engine == "clickhouse", "only ClickHouse has a cluster helper")
  local a, b = new_clickhouse(opts or {}), new_clickhouse(opts or {})
  a.shards = { a.tcp_port, b.tcp_port }
  b.shards = a.shards
  local ok, err = pcall(start_clickhouse, a)
  if ok then watchdog(a) ok, err = pcall(start_clickhouse, b) end
  if not ok then
    a:stop()
    run("rm -rf " .. sh_quote(b.dir))
    error(err, 0)
  end
  watchdog(b)
  return { a = a, b = b, stop = function() a:stop() b:stop() end }
end

return D
