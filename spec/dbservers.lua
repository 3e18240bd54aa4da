-- Real database servers for the specs: PostgreSQL and MariaDB started from the
-- Debian packages' binaries, each in a temporary data directory, listening on a
-- free 127.0.0.1 port (and a unix socket inside the directory), stopped and
-- removed by the spec's teardown.
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
local socket = require "socket"
local helpers = require "helpers"

local D = {}
D.RO_USER = "bic_ro"
D.RO_PASSWORD = "ro-Secret-9"
D.DATABASE = "bic"
D.RW_USER = "bic_rw" -- may write into bic: for the specs that prove read-only sessions
D.RW_PASSWORD = "rw-Secret-9"

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
D.sh_quote = sh_quote

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Commands run without a sanitizer build's LD_PRELOAD (the servers and tools
-- are not ours to check, and LeakSanitizer would fail them).
local CLEAN = "unset LD_PRELOAD; "

-- Runs a shell command; returns ok, output (stdout and stderr together).
local function run(cmd)
  local p = assert(io.popen(CLEAN .. "{ " .. cmd .. "; } 2>&1; echo \"~rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("~rc=(%d+)%s*$"))
  out = out:gsub("~rc=%d+%s*$", "")
  return rc == 0, out
end
D.run = run

local function first_line(cmd)
  local p = io.popen(CLEAN .. cmd .. " 2>/dev/null")
  local s = p and p:read("*l")
  if p then p:close() end
  return s
end

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

local function mktemp(tag)
  local dir = first_line("mktemp -d /tmp/bic-" .. tag .. "-XXXXXX")
  assert(dir and dir ~= "", "mktemp -d failed")
  return dir
end

local function wait_until(what, seconds, fn)
  local deadline = socket.gettime() + seconds
  local delay = 0.02
  while true do
    local ok, detail = fn()
    if ok then return true end
    if socket.gettime() > deadline then
      error(("%s: not ready after %d s%s"):format(what, seconds, detail and (": " .. detail) or ""), 0)
    end
    socket.sleep(delay)
    delay = math.min(delay * 1.5, 0.25)
  end
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
  os.execute(CLEAN .. "sh -c " .. sh_quote(args .. " >/dev/null 2>&1 &"))
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

-- A watchdog: when the spec process dies without its teardown (killed by a
-- timeout), the server is killed and its directory removed.
local function watchdog(srv)
  local me = require("biconnector.core").process.getpid()
  local kill
  if srv.engine == "postgresql" then
    kill = srv:as_user(("%s/pg_ctl -D %s -m immediate stop"):format(srv.bin, sh_quote(srv.data)))
  else
    kill = ("kill -KILL $(cat %s)"):format(sh_quote(srv.dir .. "/mysqld.pid"))
  end
  local script = ("while kill -0 %d 2>/dev/null && [ -d %s ]; do sleep 2; done; [ -d %s ] && { %s; rm -rf %s; }")
    :format(me, sh_quote(srv.dir), sh_quote(srv.dir), kill, sh_quote(srv.dir))
  os.execute(CLEAN .. "sh -c " .. sh_quote(script) .. " >/dev/null 2>&1 &")
end

-- Starts a server of the engine ("postgresql" or "mysql"); raises with the
-- server's own messages when it cannot.
function D.start(engine)
  local srv
  if engine == "postgresql" then srv = start_postgresql()
  elseif engine == "mysql" then srv = start_mariadb()
  else error("unknown engine " .. tostring(engine)) end
  watchdog(srv)
  return srv
end

return D
