-- `biconnector serve`: the built-in HTTP server (core.server, libmicrohttpd)
-- around a connector, with an access log and a worker mode (N processes
-- sharing one listening socket, a dead one restarted with backoff, graceful
-- stop on SIGTERM/SIGINT, reload of the connector on SIGHUP).
local core = require "biconnector.core"

local server, process = core.server, core.process
local logline = require "biconnector.host.logline"
local async = require "biconnector.host.async"
local errors = require "biconnector.connector.errors"
local connector_mod = require "biconnector.connector.core"
local sql = require "biconnector.sql"
local metrics_mod = require "biconnector.host.metrics"
local dev_mod = require "biconnector.host.dev"
local app_mod = require "biconnector.app.server"
local address = require "biconnector.host.address"
local format, concat = string.format, table.concat
local tostring, tonumber, type, pcall, ipairs = tostring, tonumber, type, pcall, ipairs
local stderr, stdout = io.stderr, io.stdout

local _M = { _VERSION = core.version }

local USAGE = [[
Usage: biconnector serve FILE [options]
       biconnector serve DATABASE-URL [--tables GLOBS] [--token-file FILE | --no-auth] [options]

Serves a connector file, or a database with no Lua at all (sqlite:///abs/path.db,
postgresql://user@host:port/db, mysql://user@host:port/db or mariadb://...,
clickhouse://user@host:8123/db or clickhouses://... (HTTPS); the password from
the URL, BICONNECTOR_DB_PASSWORD or BICONNECTOR_DB_PASSWORD_FILE; see
docs/database.md), on the built-in HTTP server and prints the four URLs to
register in Bitrix24.

Database options:
  --tables GLOBS       tables and views to serve, comma-separated globs; !GLOB excludes
                       (e.g. 'orders,cust*,!tmp_*'; default: all)
  --token-file FILE    the token Bitrix24 must send (setting `token`) is this file's
                       content; default: the BICONNECTOR_TOKEN environment variable
  --no-auth            serve without a token (only behind your own authentication)
  --pool-size N        database connections per worker, one per answer in flight (default 8)
  --pool-wait SECONDS  how long a request waits for a free connection, then 503 (default 5)
  --answer-timeout SECONDS  the longest a whole answer may take; its query is then
                       cancelled (default 240; Bitrix24 waits 250)
  --answer-budget BYTES  answer bytes a worker holds ready for slow readers; a query
                       waits beyond it (default 33554432)

Options:
  --listen HOST:PORT   address to listen on (default 127.0.0.1:8080; port 0 picks a free port)
  --prefix PATH        path prefix of the endpoints (e.g. /bi)
  --workers N          run N worker processes sharing the port, 1-256 (default: one per CPU, at most 4)
  --max-body BYTES     largest request body accepted (default 1048576)
  --max-bodies BYTES   request bodies held at once per process, 503 beyond (default 33554432)
  --timeout SECONDS    idle connection timeout (default 30)
  --request-timeout SECONDS  a request must be complete within this, however it trickles (default 20)
  --connections N      most connections at once per process (default 512)
  --per-address N      most connections at once from one client address, per process (default 64; 0: no limit)
  --grace SECONDS      on SIGTERM/SIGINT, time for in-flight answers (default 10)
  --dev                also serve the browser page at / (see docs/dev.md) and print its link
  --allow-host NAME    with --no-auth or --dev: a Host name to answer besides IP addresses,
                       localhost and the --listen host (any other is 403: DNS rebinding);
                       repeatable, or comma-separated
  --metrics            also answer GET PREFIX/metrics (Prometheus text format, all workers)
  --tls-cert FILE      serve HTTPS with this PEM certificate chain (TLS 1.2 and 1.3; re-read on SIGHUP)
  --tls-key FILE       its PEM private key
  -h, --help           show this help

The Bitrix24 application (docs/app.md):
  --app                also be the portal's local application: POST PREFIX/app/install takes the
                       installation callback, PREFIX/app/event the uninstall; the connector, its
                       source and tables are registered in the portal (tokens: BITRIX24_TOKENS_FILE
                       or BITRIX24_TOKENS_REDIS; client_id/secret: BITRIX24_CLIENT_ID/_SECRET)
  --public-url URL     the https:// address Bitrix24 reaches this server at (required with --app)
  --portal NAME        accept installations from this portal only (example.bitrix24.com)
  --client-id-file FILE, --client-secret-file FILE  the application's client_id/client_secret
                       (instead of the environment; re-read on SIGHUP)
  --source-settings FILE  a connector file's setting values for the source (a JSON object)
  --app-tables         also register a table for every served table
  --app-rebind         let an installation from another portal replace the current one
  --app-uninstall-delete  on uninstall, also try to delete what was registered
]]

_M.ENDPOINTS = {
  { "urlCheck", "/check" },
  { "urlTableList", "/table_list" },
  { "urlTableDescription", "/table_description" },
  { "urlData", "/data" },
}

-- "HOST:PORT", "[v6]:PORT", ":PORT" or "PORT" -> host, port | nil, err
function _M.parse_listen(text)
  local host, port = text:match("^%[([^%]]+)%]:(%d+)$")
  if not host then host, port = text:match("^([^:]*):(%d+)$") end
  if not host then port = text:match("^(%d+)$"); host = port and "" end
  port = tonumber(port)
  if not port or port > 65535 then
    return nil, format("--listen expects HOST:PORT with a port from 0 to 65535, got '%s'", text)
  end
  if host == "" then host = "127.0.0.1" end
  return host, port
end

-- A database URL as output may show it: its password as ***.
local masked = require("biconnector.sql.server_url").masked

local function positive_number(name, value, integer)
  local n = tonumber(value)
  if not n or n < 0 or (integer and n ~= math.floor(n)) then
    return nil, format("%s expects a %s, got '%s'", name,
      integer and "non-negative integer" or "non-negative number", tostring(value))
  end
  return n
end

-- The limits `serve` puts on strangers (docs/security.md): body per request and
-- bodies held at once, the time a request may take to arrive, connections per address.
_M.LIMITS = { max_body = 1048576, max_bodies = 32 * 1048576, request_timeout = 20, per_address = 64 }

-- Default --workers: one per CPU (a slow database query or a long scan holds
-- one worker, not the server), at most 4.
function _M.default_workers()
  local ok, n = pcall(server.cpus)
  n = ok and tonumber(n) or 1
  if n < 1 then n = 1 elseif n > 4 then n = 4 end
  return n
end

-- --app and HTTPS (docs/app.md): switches and options taking a value.
local APP_FLAGS = { ["--app"] = "app", ["--app-tables"] = "app_tables", ["--app-rebind"] = "app_rebind",
  ["--app-uninstall-delete"] = "app_uninstall_delete" }
local APP_VALUES = { ["--public-url"] = "public_url", ["--portal"] = "portal", ["--client-id-file"] = "client_id_file",
  ["--client-secret-file"] = "client_secret_file", ["--source-settings"] = "source_settings",
  ["--tls-cert"] = "tls_cert_file", ["--tls-key"] = "tls_key_file" }

-- What --app and the TLS options need of each other -> nil | message
local function app_usage(o)
  if (o.tls_cert_file == nil) ~= (o.tls_key_file == nil) then return "--tls-cert and --tls-key go together" end
  if not o.app then
    for flag, key in pairs(APP_FLAGS) do if o[key] then return flag .. " applies with --app" end end
    for flag, key in pairs(APP_VALUES) do
      if o[key] and not key:match("^tls_") then return flag .. " applies with --app" end
    end
    return nil
  end
  if not o.public_url then return "--app needs --public-url https://... (the address Bitrix24 reaches this server at)" end
  if o.no_auth then return "--app serves the connector to the internet: not with --no-auth (give it a token)" end
  if o.dev then return "--app and --dev do not go together (the dev page is for a developer's machine)" end
  return nil
end

local DB_ONLY = "--tables, --token-file, --no-auth, --pool-size, --pool-wait and --answer-timeout apply to a "
  .. "database URL, not to a connector file (a connector file passes them to biconnector.sql itself)"
local NO_AUTH_TOKEN = "--no-auth with a token (BICONNECTOR_TOKEN or --token-file): choose one"

-- args (after "serve") -> options | nil, err
function _M.parse_args(args)
  local o = { host = "127.0.0.1", port = 8080, workers = _M.default_workers(), prefix = "" }
  for k, v in pairs(_M.LIMITS) do o[k] = v end
  -- { key, integer [, least, most] }: the bounds are core.server's (src/http_server.c), so
  -- that a value it would refuse in every worker is a usage error here
  local numeric = {
    ["--workers"] = { "workers", true, 1, 256 }, ["--max-body"] = { "max_body", true, 0, 1e12 },
    ["--timeout"] = { "timeout", false, 0, 86400 }, ["--connections"] = { "connections", true, 1, 1e6 },
    ["--grace"] = { "grace", false, 0, 1e6 },
    -- the limits of docs/security.md, "The built-in server"
    ["--max-bodies"] = { "max_bodies", true, 0, 1e12 }, ["--request-timeout"] = { "request_timeout", false, 0, 86400 },
    ["--per-address"] = { "per_address", true, 0, 1e6 },
    -- the database's connections and answers (docs/database.md, "Connections")
    -- (bounds: core.sql's, src/sql_job.c)
    ["--pool-size"] = { "pool_size", true, 0, 1000 }, ["--pool-wait"] = { "pool_wait", false, 0, 1e7 },
    ["--answer-timeout"] = { "answer_timeout", false, 0, 1e7 },
    ["--answer-budget"] = { "answer_budget", true, 0, 1e13 },
  }
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    local function value()
      if inline then return inline end
      i = i + 1
      if args[i] == nil then return nil end
      return args[i]
    end
    if name == "-h" or name == "--help" then
      o.help = true
    elseif name == "--dev" then
      o.dev = true
    elseif name == "--metrics" then
      o.metrics = true
    elseif APP_FLAGS[name] then
      o[APP_FLAGS[name]] = true
    elseif APP_VALUES[name] then
      local v = value()
      if not v or v == "" then return nil, name .. " needs a value" end
      o[APP_VALUES[name]] = v
    elseif name == "--listen" then
      local v = value()
      if not v then return nil, "--listen needs a value" end
      local host, port = _M.parse_listen(v)
      if not host then return nil, port end
      o.host, o.port = host, port
    elseif name == "--prefix" then
      local v = value()
      if not v then return nil, "--prefix needs a value" end
      -- a request's path holds them only percent-encoded (%3F, %23): the server ends it at a raw `?` and `#`
      if v:find("[?#]") then return nil, "--prefix: a path may not hold ? or # (got " .. format("%q", v) .. ")" end
      if v ~= "" and not v:match("^/") then v = "/" .. v end
      o.prefix = v:gsub("/+$", "")
    elseif name == "--tables" or name == "--token-file" then
      local v = value()
      if not v or v == "" then return nil, name .. " needs a value" end
      o[name == "--tables" and "tables" or "token_file"] = v
    elseif name == "--no-auth" then
      o.no_auth = true
    elseif name == "--allow-host" then
      local v = value()
      if not v or v == "" then return nil, "--allow-host needs a value" end
      o.allow_hosts = o.allow_hosts or {}
      for h in v:gmatch("[^,]+") do
        if not h:match("^[%w_][%w_.-]*$") then
          return nil, format("--allow-host expects a host name (letters, digits, '.', '-', '_'; no port), got '%s'", h)
        end
        o.allow_hosts[#o.allow_hosts + 1] = h
      end
    elseif numeric[name] then
      local v = value()
      if not v then return nil, name .. " needs a value" end
      local spec = numeric[name]
      local n, err = positive_number(name, v, spec[2])
      if not n then return nil, err end
      if spec[3] and n < spec[3] then return nil, format("%s expects a number at least %d, got '%s'", name, spec[3], v) end
      if spec[4] and n > spec[4] then return nil, format("%s expects a number at most %d, got '%s'", name, spec[4], v) end
      o[numeric[name][1]] = n
    elseif a:match("^%-") then
      return nil, format("unknown option '%s'", a)
    elseif o.file then
      return nil, format("one connector file only (got '%s' and '%s')", masked(o.file), masked(a))
    else
      o.file = a
    end
    i = i + 1
  end
  if o.help then return o end
  if not o.file then return nil, "missing the connector FILE or the DATABASE-URL (sqlite:///PATH.db, postgresql://...)" end
  if o.workers < 1 then return nil, "--workers expects at least 1" end
  for _, k in ipairs({ "pool_size", "pool_wait", "answer_timeout" }) do
    if o[k] == 0 then return nil, "--" .. k:gsub("_", "-") .. " expects a number above 0" end
  end
  if o.answer_budget and o.answer_budget < 65536 then
    return nil, "--answer-budget expects at least 65536 bytes"
  end
  -- wrong on the command line alone: usage errors (exit 2), before anything is opened
  local db_only = o.tables or o.token_file or o.no_auth or o.pool_size or o.pool_wait or o.answer_timeout
  if db_only and not sql.is_url(o.file) and not o.file:match("^%a[%w+.-]*://") then
    return nil, DB_ONLY
  end
  if o.no_auth and o.token_file then return nil, NO_AUTH_TOKEN end
  if o.allow_hosts and not (o.no_auth or o.dev) then
    return nil, "--allow-host applies with --no-auth or --dev (the Host rule of docs/security.md)"
  end
  local app_err = app_usage(o)
  if app_err then return nil, app_err end
  return o
end

-- One access-log line; the body (where `connection` travels) is never logged.
-- One write() per line: workers share stderr, and stderr is unbuffered.
local function log_line(fields)
  stderr:write(concat(fields, " ") .. "\n")
end

-- The access line (logline.access, from the connector's finisher) with its time.
local function access_log(line)
  log_line({ os.date("!%Y-%m-%dT%H:%M:%SZ"), line })
end

-- Messages from the connector (opts.log): level, message, then key=value fields.
-- A field called `connection` is dropped: setting values never reach the log.
local function connector_log(level, message, fields)
  log_line({ logline.message(level, message, fields) })
end

local WAIT, MARK = server.WAIT, async.MARK
local create, resume, status_of = coroutine.create, coroutine.resume, coroutine.status
local unpack = table.unpack or unpack -- luacheck: ignore 143

-- Runs f in a coroutine the way core.server waits (docs/serve.md, "No request
-- holds the others"): step() -> true, f's results when f returned; false,
-- fd, seconds, job when it waits (biconnector.async); raises f's error.
local function hosted(f)
  local co = async.host(create(f))
  return function(...)
    local r = { resume(co, ...) }
    if not r[1] then error(r[2], 0) end
    if status_of(co) == "dead" then return true, unpack(r, 2, 6) end
    if r[2] ~= MARK then
      error("the connector yielded outside a coroutine of its own (what it yielded is not biconnector.async's)", 0)
    end
    return false, r[3], r[4], r[5]
  end
end

-- The function core.server calls for each request: runs the connector
-- (c:answer) and wraps a streamed body so that finish is told the bytes
-- really sent; release, metrics and the access line are the connector's
-- finisher's. The connector runs in a coroutine: when it waits for the
-- database it yields, and the handler answers core.server.WAIT; the server
-- serves the other connections and calls back when there is news.
function _M.handler(connector, opts)
  opts = opts or {}
  -- --metrics: GET PREFIX/metrics answers the counters; every other answer adds to them
  local metrics = opts.metrics_registry
  local metrics_path = (opts.prefix or "") .. "/metrics"
  -- bare_path: core.server's path is decoded and without its query string (a ? in it was %3F)
  local answer_opts = { prefix = opts.prefix ~= "" and opts.prefix or nil, log = connector_log, metrics = metrics,
    access_log = not opts.quiet and access_log or nil, bare_path = true }
  local unmetered = { log = connector_log, access_log = answer_opts.access_log } -- the /metrics answers
  local finisher = connector_mod.finisher
  local app = opts.app_instance
  return function(req)
    local started = process.clock()
    if app and app.paths[req.path] then -- the Bitrix24 application (biconnector.app.server)
      local status, headers, body, after = app:handle(req)
      local finish = finisher(req, answer_opts, status, { endpoint = "app" }, started)
      return status, headers, body, function(how)
        finish(how, #body)
        if after then after(how) end
      end
    end
    if metrics and req.path == metrics_path then
      local get = req.method == "GET" or req.method == "HEAD"
      local text = get and metrics:render()
        or '{"error":"method_not_allowed","message":"/metrics answers GET"}'
      local status = get and 200 or 405
      local finish = finisher(req, unmetered, status, { endpoint = "metrics" }, started)
      return status, { ["Content-Type"] = get and metrics_mod.CONTENT_TYPE
        or errors.JSON_TYPE, Allow = not get and "GET" or nil }, text, function(how) finish(how, #text) end
    end
    local step = hosted(function() return connector.answer(connector, req, answer_opts, started) end)
    local waiting -- the job the connector waits for, while it waits
    -- the request ends while the connector waits (the client left, the server stops)
    local function abandoned(how)
      if waiting then waiting:close() end
      finisher(req, answer_opts, 499, {}, started)(how, 0)
    end
    local function answer()
      local ok, done, status, headers, body, finish = pcall(step)
      if ok and not done then -- step waits: status, headers, body are its fd, seconds, job
        waiting = body
        return WAIT, status, headers, abandoned, answer
      end
      waiting = nil
      if not ok then
        local id = errors.new_id()
        connector_log("error", "connector raised an error", { error = tostring(done), path = req.path, id = id })
        status, headers, body = 500, { ["Content-Type"] = errors.JSON_TYPE }, errors.internal_body(id)
        finish = finisher(req, answer_opts, status, { error = id }, started)
      end
      if type(body) == "function" then
        local next_chunk, bytes = hosted(function()
          while true do coroutine.yield(MARK, "chunk", body()) end
        end), 0
        -- one chunk (nil at the end, false when the connector cut the answer: the
        -- server then ends it without the last chunk, so that it cannot look
        -- whole), or WAIT, fd, seconds while the rows are not ready
        local function counted()
          local _, fd, seconds, job = next_chunk()
          if fd ~= "chunk" then
            waiting = job
            return WAIT, fd, seconds
          end
          waiting = nil
          local chunk = seconds
          if chunk then bytes = bytes + #chunk end
          return chunk
        end
        return status, headers, counted, function(how)
          next_chunk = nil
          if waiting then waiting:close() end
          finish(how, bytes)
        end
      end
      local bytes = type(body) == "string" and #body or 0
      return status, headers, body, function(how) finish(how, bytes) end
    end
    return answer()
  end
end

-- The connector of a serve command line: a connector file, or a database URL
-- (biconnector.sql) with its token from BICONNECTOR_TOKEN or --token-file.
function _M.load_connector(o)
  if not sql.is_url(o.file) then
    -- scheme://... that is no file: a database URL of a scheme not served
    local f = o.file:match("^%a[%w+.-]*://") and io.open(o.file, "rb")
    if f then f:close() elseif o.file:match("^%a[%w+.-]*://") then error(select(2, sql.parse_url(o.file)), 0) end
    if o.tables or o.token_file or o.no_auth or o.pool_size or o.pool_wait or o.answer_timeout then
      error(DB_ONLY, 0) -- a file whose name looks like a URL (parse_args lets those by)
    end
    return connector_mod.load(o.file)
  end
  local token
  if o.token_file then
    local f, err = io.open(o.token_file, "rb")
    if not f then error("--token-file: " .. tostring(err), 0) end
    token = f:read("*a") or ""
    f:close()
    token = token:gsub("\r?\n$", "")
    if token == "" then error("--token-file: " .. o.token_file .. " is empty", 0) end
  else
    token = os.getenv("BICONNECTOR_TOKEN")
    if token == "" then token = nil end
  end
  if token and o.no_auth then error(NO_AUTH_TOKEN, 0) end
  o.token = token -- for the --dev link
  return sql.serve_connector(o.file, { tables = o.tables, token = token, no_auth = o.no_auth, log = connector_log,
    pool_size = o.pool_size, pool_wait = o.pool_wait, answer_timeout = o.answer_timeout })
end

-- A --prefix as the path of a URL (address.url_path).
_M.url_path = address.url_path

-- The four URLs to register, for a listening address and a prefix (or a
-- whole base URL: --public-url with the prefix).
function _M.urls(host, port, prefix, scheme, base)
  if not base then
    local h = host:find(":", 1, true) and ("[" .. host .. "]") or host
    if h == "0.0.0.0" or h == "[::]" then h = "127.0.0.1" end
    base = format("%s://%s:%d%s", scheme or "http", h, port, _M.url_path(prefix or ""))
  end
  local list = {}
  for i, e in ipairs(_M.ENDPOINTS) do list[i] = { e[1], base .. e[2] } end
  return list, base
end

-- An answer core.server made without the handler (413, 503, 400 for a bad
-- target or framing, libmicrohttpd's own 400/414/431): its access line.
local function refused_log(r)
  local req = { remote = r.remote, method = r.method, path = r.path }
  log_line({ os.date("!%Y-%m-%dT%H:%M:%SZ"),
    logline.access(req, r.status, {}, 0, r.ms or 0, r.how) })
end

local function server_options(o, handler, fd)
  return {
    handler = handler, fd = fd, max_body = o.max_body, timeout = o.timeout,
    connections = o.connections, grace = o.grace,
    max_bodies = o.max_bodies, request_timeout = o.request_timeout, per_address = o.per_address,
    refused = not o.quiet and refused_log or nil,
    tls_cert = o.tls and o.tls.cert, tls_key = o.tls and o.tls.key,
  }
end

-- --tls-cert and --tls-key: both files read whole -> {cert, key} | nil, message
function _M.read_tls(o)
  local pair = {}
  for _, k in ipairs({ "cert", "key" }) do
    local path = o["tls_" .. k .. "_file"]
    local f, err = io.open(path, "rb")
    if not f then return nil, format("--tls-%s: %s", k, tostring(err)) end
    pair[k] = f:read("*a") or ""
    f:close()
  end
  return pair
end

local function now_utc() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

-- What the --tls-cert chain's dates and completeness mean for Bitrix24, which
-- checks the certificate: -> error (an expired certificate: no client that
-- checks will connect) | nil, {warnings} (not valid yet; the server's
-- certificate alone, without the issuer's that a client needs to verify it).
-- info: core.server.tls_info's list; now: seconds since the epoch.
function _M.tls_problems(file, info, now)
  local function date(t) return os.date("!%Y-%m-%d %H:%M:%S UTC", t) end
  local warnings = {}
  for i, c in ipairs(info) do
    local which = i == 1 and format("the certificate %s", c.subject) or format("the chain's certificate %s", c.subject)
    if c.not_after >= 0 and c.not_after < now then
      return format("--tls-cert %s: %s expired on %s: Bitrix24 (and any client that checks) refuses to connect;"
        .. " renew it (certbot renew) and give the new file", file, which, date(c.not_after))
    end
    if c.not_before >= 0 and c.not_before > now then
      warnings[#warnings + 1] = format("--tls-cert %s: %s is not valid before %s: clients refuse it until then"
        .. " (is this machine's clock right?)", file, which, date(c.not_before))
    end
  end
  if #info == 1 and not info[1].self_signed then
    warnings[#warnings + 1] = format("--tls-cert %s holds the server's certificate without its chain (the certificate"
      .. " of its issuer, %s, is not in the file): a client that does not have it, Bitrix24 among them, cannot verify"
      .. " the server; give the full chain (certbot's fullchain.pem, not cert.pem)", file, info[1].issuer)
  end
  return nil, warnings
end

-- The pair checked as serve would load it -> {warnings} (empty when none) | nil, message
local function check_tls_pair(o, pair)
  local ok, err = server.check_tls(pair.cert, pair.key)
  if not ok then
    if err:find("private key is encrypted", 1, true) then
      return nil, format("--tls-key %s: %s: write it without one, readable by this server's user only, and give"
        .. " that file: openssl pkey -in %s -out PLAIN.key && chmod 600 PLAIN.key", o.tls_key_file, err, o.tls_key_file)
    end
    return nil, format("--tls-cert %s, --tls-key %s: %s", o.tls_cert_file, o.tls_key_file, tostring(err))
  end
  local info = server.tls_info(pair.cert)
  if not info then return {} end -- (check_tls read it: cannot happen)
  local problem, warnings = _M.tls_problems(o.tls_cert_file, info, os.time())
  if problem then return nil, problem end
  return warnings
end

-- The names the Host rule allows besides IP addresses and localhost: the
-- --listen host and the --allow-host names.
local function host_names(o)
  local list = { o.host }
  for _, h in ipairs(o.allow_hosts or {}) do list[#list + 1] = h end
  return dev_mod.host_names(list)
end

-- SIGHUP: loads the connector file (or the database's schema) again and swaps
-- it in for the answers that start from now on; one that fails to load keeps
-- the connector already loaded, and the log says why.
local function reload(o, live, who)
  -- the application registers again from the master (or the single process), not from every worker
  if o.app_instance then o.app_instance:reload(who ~= "worker") end
  local ok, connector = pcall(_M.load_connector, o)
  if not ok then
    log_line({ now_utc(), who, tostring(process.getpid()),
      "reload failed, keeping the connector already loaded:", logline.quote(tostring(connector)) })
    return false
  end
  live.connector = connector
  -- a database URL may carry a password (user:password@): never into the log
  log_line({ now_utc(), who, tostring(process.getpid()), "reloaded", masked(o.file) })
  return true
end

-- SIGHUP with --tls-cert: the files again (a renewed certificate), for the
-- handshakes from now on; a pair that does not load keeps the current one.
local function reload_tls(o, srv, who)
  local pair, err = _M.read_tls(o)
  local ok, warnings = false, nil
  if pair then
    -- (an expired certificate is no renewal: the one loaded stays)
    warnings, err = check_tls_pair(o, pair)
    if warnings then ok, err = srv:tls(pair.cert, pair.key) end
  end
  if ok then
    o.tls = pair
    log_line({ now_utc(), who, tostring(process.getpid()), "certificate reloaded from", o.tls_cert_file })
    for _, w in ipairs(warnings) do
      log_line({ now_utc(), who, tostring(process.getpid()), "certificate warning:", logline.quote(w) })
    end
  else
    log_line({ now_utc(), who, tostring(process.getpid()), "certificate reload failed, keeping the one loaded:",
      logline.quote(tostring(err)) })
  end
end

-- Serves on the inherited listening socket until SIGTERM/SIGINT (reloading on
-- SIGHUP, connections kept); returns an exit code.
local function serve_process(o, handler, fd, live)
  if o.answer_budget then core.sql.budget(o.answer_budget) end
  -- a large row's buffers go back to the system when the answer ends (docs/serve.md, "Memory");
  -- glibc's trim threshold stays (keeping free memory per heap would add up over the job
  -- threads' arenas: 15 stalled readers of an 8 MB row went past 64 MiB in a CI run)
  process.mmap_threshold(1024 * 1024)
  local srv, err = server.new(server_options(o, handler, fd))
  if not srv then
    stderr:write("biconnector serve: ", err, "\n")
    return 1
  end
  local reason
  local app = o.app_instance
  repeat
    -- with --app, a tick every second reaps the application's helper processes
    reason = srv:run(app and 1 or nil)
    if reason == "HUP" then
      local who = o.workers > 1 and "worker" or "serve"
      reload(o, live, who)
      if o.tls then reload_tls(o, srv, who) end
    end
    if app then app:tick() end
  until reason ~= "HUP" and reason ~= "timeout"
  srv:close()
  if o.workers > 1 then
    log_line({ os.date("!%Y-%m-%dT%H:%M:%SZ"), "worker", tostring(process.getpid()),
      "stopped (" .. tostring(reason) .. ")" })
  end
  return 0
end

local function start_worker(o, handler, fd, live)
  local master = process.getpid()
  local pid, err = process.fork()
  if pid == 0 then
    -- out of the terminal's process group (Ctrl-C goes to the master, which stops
    -- us gracefully), and a graceful stop of our own should the master die
    local ok, code = pcall(process.worker_setup, "TERM", master)
    if ok and code == false then process.exit(0) end
    ok, code = pcall(serve_process, o, handler, fd, live)
    if not ok then stderr:write("biconnector serve: worker failed: " .. tostring(code) .. "\n") end
    process.exit(ok and code or 1)
  end
  return pid, err
end

-- Restarting a worker that died: after 0.1 s, then each time twice as late
-- (0.2 s, 0.4 s, ... up to 30 s) while workers keep dying young; a worker that
-- lived `stable` seconds resets the count.
_M.BACKOFF = { first = 0.1, max = 30, stable = 10 }

-- The master of --workers N: starts the workers, restarts one that dies (with
-- backoff, the exit cause logged), reloads on SIGHUP, forwards SIGTERM/SIGINT
-- and waits for the workers to finish.
local function supervise(o, handler, fd, live)
  local workers, count, stopping = {}, 0, false
  local due, streak = {}, 0 -- restart times; workers that died young in a row
  local function spawn()
    local pid, err = start_worker(o, handler, fd, live)
    if not pid then
      stderr:write("biconnector serve: ", err, "\n")
      return false
    end
    workers[pid] = process.clock()
    count = count + 1
    log_line({ now_utc(), "worker", tostring(pid), "started" })
    return true
  end
  for _ = 1, o.workers do spawn() end
  local deadline
  while count > 0 or (#due > 0 and not stopping) do
    for _, sig in ipairs(process.signals()) do
      if (sig == "TERM" or sig == "INT") then
        if not stopping then
          stopping = true
          due = {}
          deadline = process.clock() + (o.grace or 10) + 5
          for pid in pairs(workers) do process.kill(pid, "TERM") end
        else -- a second signal: stop the workers now
          for pid in pairs(workers) do process.kill(pid, "KILL") end
        end
      elseif sig == "HUP" and not stopping then
        -- the master checks the file first: a broken one is logged once and the
        -- workers keep theirs; a good one is what restarted workers get, and each
        -- running worker loads it too, between two answers
        -- (with --tls-cert the workers re-read the certificate whatever the connector did)
        if reload(o, live, "master") or o.tls then
          for pid in pairs(workers) do process.kill(pid, "HUP") end
        end
      end
    end
    while true do
      local pid, how, code = process.wait()
      if not pid then break end
      if workers[pid] then
        local lived = process.clock() - workers[pid]
        workers[pid] = nil
        count = count - 1
        if not stopping then
          if lived >= _M.BACKOFF.stable then streak = 0 end
          streak = streak + 1
          local delay = math.min(_M.BACKOFF.first * 2 ^ (streak - 1), _M.BACKOFF.max)
          if o.metrics_registry then o.metrics_registry:restart() end
          log_line({ now_utc(), "worker", tostring(pid), "ended", how .. "=" .. tostring(code),
            format("after %.1fs; restarting in %gs (%d in a row)", lived, delay, streak) })
          due[#due + 1] = process.clock() + delay
        end
      end
    end
    local t, wait = process.clock(), 0.5
    for i = #due, 1, -1 do
      if due[i] <= t then
        table.remove(due, i)
        if not spawn() then due[#due + 1] = t + _M.BACKOFF.max end -- fork failed: try again later
      else
        wait = math.min(wait, due[i] - t)
      end
    end
    if stopping and deadline and process.clock() > deadline then
      for pid in pairs(workers) do process.kill(pid, "KILL") end
      deadline = nil
    end
    if count > 0 or #due > 0 then process.sleep(wait) end
  end
  return stopping and 0 or 1 -- not stopping: no worker could be started
end

function _M.main(args)
  -- -h or --help anywhere asks for the usage, as for the other commands (cli.arguments)
  for _, a in ipairs(args or {}) do
    if a == "-h" or a == "--help" then
      stdout:write(USAGE)
      return 0
    end
  end
  local o, err = _M.parse_args(args or {})
  if not o then
    stderr:write("biconnector serve: ", err, "\n", "(see biconnector serve --help)\n")
    return 2
  end
  if o.help then
    stdout:write(USAGE)
    return 0
  end
  local ok, connector = pcall(_M.load_connector, o)
  if not ok then
    stderr:write("biconnector serve: ", tostring(connector), "\n")
    return 1
  end
  if o.tls_cert_file then -- checked here, once, rather than by every worker
    local pair, terr = _M.read_tls(o)
    if not pair then -- the message names the option and the file already
      stderr:write("biconnector serve: ", tostring(terr), "\n")
      return 1
    end
    local warnings, problem = check_tls_pair(o, pair)
    if not warnings then
      stderr:write("biconnector serve: ", tostring(problem), "\n")
      return 1
    end
    for _, w in ipairs(warnings) do stderr:write("biconnector serve: warning: ", w, "\n") end
    o.tls = pair
  end
  if o.app then
    local app, aerr = app_mod.new(o, connector_log)
    if not app then
      stderr:write("biconnector serve: ", aerr, "\n")
      return 2
    end
    o.app_instance = app
  end
  local fd, port = server.listen(o.host, o.port)
  if not fd then
    stderr:write("biconnector serve: ", port, "\n")
    return 1
  end
  -- signals are trapped before the "listening on" line: whoever reads it may stop us at once
  process.trap("TERM", "INT", "PIPE", "HUP")
  if o.workers > 1 then process.trap("CHLD") end
  local scheme = o.tls and "https" or "http"
  local urls, base = _M.urls(o.host, port, o.prefix, scheme)
  local dev_link, dev_wrap
  if o.dev then -- the page and its helper endpoints (biconnector.dev): nothing of it without --dev
    local dev = dev_mod
    local found, problem = pcall(dev.load_static)
    if not found then
      stderr:write("biconnector serve: ", tostring(problem), "\n")
      process.close(fd)
      return 1
    end
    dev_link = dev.link(base:sub(1, #base - #_M.url_path(o.prefix)), dev.initial_settings(connector.settings, { token = o.token }))
    dev_wrap = function(h, live) -- live.connector: the current one (SIGHUP reloads it)
      return dev.wrap(h, { connector = function() return live.connector end, base = base, prefix = o.prefix,
        source = masked(o.file), host_names = host_names(o) })
    end
  end
  stdout:write(format("biconnector %s: serving %q from %s (%d worker%s)\n", core.version,
    tostring(connector.title or "connector"), masked(o.file), o.workers, o.workers == 1 and "" or "s"))
  if connector.source then
    stdout:write(o.no_auth and "no authentication (--no-auth)\n"
      or "Bitrix24 must send the token in the connector setting `token`\n")
  end
  stdout:write(format("listening on %s://%s:%d\n", scheme, o.host:find(":", 1, true) and ("[" .. o.host .. "]") or o.host, port))
  if o.app_instance then
    urls, base = _M.urls(nil, nil, nil, nil, o.app_instance.cfg.base_url)
    stdout:write("The connector's URLs (the application registers them; --public-url):\n")
  else
    stdout:write("Register these URLs in Bitrix24 (", base, "):\n")
  end
  for _, u in ipairs(urls) do stdout:write(format("  %-20s %s\n", u[1], u[2])) end
  if o.app_instance then
    for _, line in ipairs(o.app_instance:banner()) do stdout:write(line, "\n") end
  end

  if (o.host == "0.0.0.0" or o.host == "::") and not o.app_instance then
    stdout:write("  (listening on every interface: put the address Bitrix24 reaches in place of 127.0.0.1)\n")
  end
  if o.no_auth or o.dev then
    stdout:write("Host rule (--no-auth, --dev): answers only a Host that is an IP address, localhost",
      -- the --listen host when the rule does not take it anyway (an IP address, localhost)
      (o.host:find(":", 1, true) or dev_mod.host_allowed(o.host)) and "" or (", " .. o.host),
      o.allow_hosts and (", " .. concat(o.allow_hosts, ", ")) or "",
      "; others get 403 (--allow-host NAME adds one)\n")
  end
  if dev_link then
    stdout:write("Dev page (the settings travel in the #fragment, which no server receives):\n  ", dev_link, "\n")
  end
  stdout:flush()

  -- the counters live in a shared mapping made before the workers are forked
  if o.metrics then o.metrics_registry = metrics_mod.shared() end
  -- SIGHUP swaps live.connector; the handler always calls the current one
  local live = { connector = connector }
  local current = { answer = function(_, ...) return live.connector:answer(...) end }
  local handler = _M.handler(current, o)
  if dev_wrap then handler = dev_wrap(handler, live) end
  if o.no_auth or o.dev then -- every endpoint behind the Host rule (DNS rebinding)
    handler = dev_mod.host_guard(handler, { names = host_names(o), quiet = o.quiet })
  end
  -- an installation the store already holds is registered again (changing nothing already right)
  if o.app_instance then o.app_instance:start() end
  local code
  if o.workers > 1 then
    code = supervise(o, handler, fd, live)
    process.close(fd)
  else
    code = serve_process(o, handler, fd, live)
  end
  stdout:flush()
  return code
end

return _M
