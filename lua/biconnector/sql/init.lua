-- biconnector.sql: a database as a connector source, with no Lua to write.
--
--   local sql = require "biconnector.sql"
--   local src = sql.source("sqlite:///srv/sales.db")      -- or a table of options
--   src:table_list(search) -> { {code, title}, ... }
--   src:describe(code)     -> fields ({code, name, type, column, exact}) | nil (no such table);
--                            raises a 404 failure for a table with no column to serve
--   src:data(q)            -> rows, applied, close  (what a connector's data returns)
--   sql.connector(opts)    -> a connector over a source (settings, check, token)
--   sql.serve_connector(url, cli) -> the connector `biconnector serve URL` serves
-- See docs/database.md.
--
-- ENGINE MODULES. An engine is one file, biconnector/sql/<name>.lua, listed in
-- SCHEMES below, returning a table with:
--   engine        the core.sql driver name ("sqlite", "postgresql", "mysql")
--   schemes       the URL schemes it answers
--   dialect       the biconnector.filter.to_sql dialect (a name or the engine's own table)
--   placeholder   "?" or "$" (numbered $1, $2, ...): how extra parameters are written
--   parse_url(url)        -> options for core.sql.open (path, host, port, user,
--                            password, database, socket, params, ...) | nil, message
--   display(opts)         -> the source as text for logs and the banner, no password
--   quote(name)           -> the identifier quoted for the engine (a column's, a
--                            schema's: one identifier, whatever it holds)
--   quote_table(code, opts) -> (optional; default quote) a table code quoted,
--                            schema.table for a code of another schema (the
--                            source's map, _M.qualified(opts))
--   limit(n)              -> the SQL text that follows a SELECT to return at most n rows
--   list_tables(conn, opts) -> { {name=, kind="table"|"view", unreadable=}, ... } | nil, message
--                            (opts: what parse_url returned; unreadable: why a
--                            table that exists cannot be read, and is not served)
--                            (name is the table code: as the database spells it)
--   list_columns(conn, name, opts) -> { {name=, type=declared type}, ... } | nil (no such
--                            table) | nil, message | nil, nil, why (a table that
--                            exists but cannot be read: unknown, saying why)
--   query_columns(conn, sql) -> the result columns {name=, type=} of a query
--   field_type(declared, opts) -> field type ("int", "double", "string", "date",
--                            "datetime") or nil to leave the column out, and true
--                            when a filter on such a column pushes down exactly,
--                            "check" when that depends on the values stored
--                            (opts: what parse_url returned)
--   check_column(conn, from, column, ftype) -> (for "check") whether every
--                            stored value of column (quoted) in from (a quoted
--                            table or "(query) AS bic_query") is one the
--                            database compares as filter.match compares the value
--                            served: true | false, for dates "text" | "epoch" |
--                            false; or nil, message
--   explain(message)      -> optional: what a database error message of a data
--                            query means, when it misleads, or nil
--   dialect_for(q, opts)  -> optional: the dialect of data query q, whose fields
--                            carry `declared` (the column's declared type; opts:
--                            what parse_url returned); when absent, dialect
--                            serves every query
-- conn is a connection of the source's pool (conn:query(sql, params) -> cursor;
-- cursor:fetch, cursor:columns, cursor:close): each query runs as a core.sql
-- job on a thread of its own, and waiting for it never holds up the host (see
-- biconnector.async). Nothing else in biconnector knows the engines.
--
-- THE DATA PATH. A /data answer is one core.sql job with a connection of its own,
-- leased from the source's pool for the whole answer: rows are stepped and
-- encoded on the job's thread, and the connector takes the encoded text as the
-- client reads. The job has a deadline for the whole answer (answer_timeout), a
-- bounded wait for a connection (pool_wait), and stops (the statement cancelled
-- on the server) when the client leaves. docs/database.md, "Connections".
-- What engines share is here (all_rows, column_list, table_list, table_of,
-- schemas_clause, query_columns, result_columns, quoter,
-- limit_clause) and, for server URLs, in biconnector.sql.server_url.
local core = require "biconnector.core"
local filter = require "biconnector.connector.filter"
local async = require "biconnector.host.async"
local errors = require "biconnector.connector.errors"
local control_byte = require("biconnector.connector.request").control_byte

local type, pairs, ipairs, tostring, error, setmetatable = type, pairs, ipairs, tostring, error, setmetatable
local format, concat, sort = string.format, table.concat, table.sort

local _M = { _VERSION = core.version }

local SCHEMES = {
  sqlite = "biconnector.sql.sqlite",
  postgresql = "biconnector.sql.postgresql", postgres = "biconnector.sql.postgresql",
  mysql = "biconnector.sql.mysql", mariadb = "biconnector.sql.mysql",
  clickhouse = "biconnector.sql.clickhouse", clickhouses = "biconnector.sql.clickhouse",
}

-- Whether text looks like a database URL (scheme:...) rather than a file name.
function _M.is_url(text)
  local scheme = type(text) == "string" and text:match("^(%a[%w+.-]*):")
  return scheme ~= nil and SCHEMES[scheme:lower()] ~= nil
end

-- url -> engine module, options for core.sql.open | nil, message
function _M.parse_url(url)
  if type(url) ~= "string" then return nil, "expected a database URL, got " .. type(url) end
  local scheme = url:match("^(%a[%w+.-]*):")
  local name = scheme and SCHEMES[scheme:lower()]
  if not name then
    local known = {}
    for s in pairs(SCHEMES) do known[#known + 1] = s .. ":" end
    sort(known)
    return nil, format("not a database URL: %s (known schemes: %s)", url, concat(known, " "))
  end
  -- a scheme is case-insensitive (RFC 3986): SQLITE:///x.db is sqlite:///x.db
  url = scheme:lower() .. url:sub(#scheme + 1)
  local ok, engine = pcall(require, name) -- lazy: only the engine of the URL loads; a missing one is told
  if not ok then return nil, format("the %s engine is not available in this version (%s)", scheme, name) end
  local have = false
  for _, e in ipairs(core.sql.engines) do if e == engine.engine then have = true end end
  if not have then
    return nil, format("this build of biconnector has no %s driver (built without its client library)", engine.engine)
  end
  local opts, err = engine.parse_url(url)
  if not opts then return nil, err end
  return engine, opts
end

-- ---- shared by the engine modules -----------------------------------------------

-- Every row of a query: -> { row, ... } | nil, message
function _M.all_rows(conn, sql, params)
  local cur, err = conn:query(sql, params)
  if not cur then return nil, err end
  local rows = {}
  while true do
    local row, ferr = cur:fetch()
    if not row then
      cur:close()
      if ferr then return nil, ferr end
      return rows
    end
    rows[#rows + 1] = row
  end
end

-- What list_columns returns, from all_rows' answer to a query whose rows are
-- (column name, declared type): no rows is no such table.
function _M.column_list(rows, err)
  if not rows then return nil, err end
  if #rows == 0 then return nil end
  local list = {}
  for i, r in ipairs(rows) do list[i] = { name = r[1], type = r[2] or "" } end
  return list
end

-- The limit(n) of the engines: " LIMIT n".
function _M.limit_clause(n)
  return " LIMIT " .. format("%d", n)
end

-- Where the table codes of other schemas point, one map per source (its
-- connection options, conn_opts): code -> {schema, table}, filled by the
-- engine's list_tables and list_columns; false for a table of the source's
-- own schema whose name holds a dot. Per source, not per engine: two
-- sources in one process (two locations of one nginx worker) each have
-- their own schemas and tables.
local qualified_maps = setmetatable({}, { __mode = "k" })
function _M.qualified(conn_opts)
  local key = conn_opts or qualified_maps
  local map = qualified_maps[key]
  if not map then
    map = {}
    qualified_maps[key] = map
  end
  return map
end

-- An engine's quote(name): the identifier between two marks, a mark inside it
-- doubled (mark: one character that is no pattern item). A column's name is
-- always one identifier, whatever it holds.
function _M.quoter(mark)
  return function(name)
    return mark .. name:gsub(mark, mark .. mark) .. mark
  end
end

-- An engine's quote_table(code, conn_opts): a table code the source's map
-- (see qualified) points to {schema, table} as schema.table, each part
-- quoted by quote; any other code as one identifier.
function _M.table_quoter(quote)
  return function(code, conn_opts)
    local q = _M.qualified(conn_opts)[code]
    if q then return quote(q[1]) .. "." .. quote(q[2]) end
    return quote(code)
  end
end

-- The result columns of a statement that reads no row (a query wrapped in
-- "... LIMIT 0"): -> { {name=, type=}, ... } | nil, message
function _M.result_columns(conn, sql)
  local cur, err = conn:query(sql)
  if not cur then return nil, err end
  local cols = cur:columns()
  cur:close()
  return cols
end

-- The query_columns(conn, sql) of the server engines: the query as a derived
-- table (named, as PostgreSQL and MySQL want it) that reads no row.
function _M.query_columns(conn, sql)
  return _M.result_columns(conn, "SELECT * FROM (" .. sql .. ") AS bic_query LIMIT 0")
end

-- The schemas (databases) a server URL configures besides its own
-- (conn_opts.schemas, from schemas=a,b): -> their names as query parameters,
-- and the text that admits them in list_tables' condition, " OR column IN
-- (?, ?)" ("" when there are none; placeholder "?", or "$" for $1, $2, ...).
function _M.schemas_clause(conn_opts, column, placeholder)
  local params, marks = {}, {}
  for i, s in ipairs(conn_opts and conn_opts.schemas or {}) do
    params[i] = s
    marks[i] = placeholder == "$" and "$" .. i or placeholder
  end
  if #marks == 0 then return params, "" end
  return params, " OR " .. column .. " IN (" .. concat(marks, ", ") .. ")"
end

-- What list_tables returns, from all_rows' answer (rows, err) to a query
-- whose rows are (schema, table, the engine's kind of table, whether the
-- schema is the connection's own: true or 1): a table of another schema is
-- named "schema.table", and qualified (the engine's, see quoter) maps that
-- code to {schema, table}; the kinds in the set views are "view", the rest
-- "table". When the engine gives why_unreadable, a row whose fifth value is
-- true or 1 is a table that cannot be read: listed with unreadable = that
-- text (not served: describe answers 404 unknown table saying why).
function _M.table_list(conn_opts, views, rows, err, why_unreadable)
  if not rows then return nil, err end
  local qualified = _M.qualified(conn_opts)
  -- a table of the connection's own schema keeps its name, even one such as
  -- "a.b": qualified marks it (false) so that it is never read as schema a's
  -- table b, and schema a's table b, whose code would be the same, is left
  -- out (two tables under one code: Bitrix24 could reach only one)
  local function mine(r) return r[4] == true or tonumber(r[4]) == 1 end
  local own = {}
  for _, r in ipairs(rows) do
    if mine(r) then own[r[2]] = true end
  end
  local list = {}
  for _, r in ipairs(rows) do
    local name = r[2]
    if mine(r) then
      if name:find(".", 1, true) then qualified[name] = false end
    else
      name = r[1] .. "." .. r[2]
      if own[name] then name = nil else qualified[name] = { r[1], r[2] } end
    end
    if name then
      local unreadable = why_unreadable and (r[5] == true or tonumber(r[5]) == 1) and why_unreadable or nil
      list[#list + 1] = { name = name, kind = views[r[3]] and "view" or "table", unreadable = unreadable }
    end
  end
  return list
end

-- The schema and table a table code names, for list_columns: those qualified
-- holds for it, or for "schema.table" of a configured schema (conn_opts.schemas)
-- those two (then kept in qualified); else nil and the code (a table of the
-- connection's own schema).
function _M.table_of(name, conn_opts)
  local qualified = _M.qualified(conn_opts)
  local q = qualified[name]
  if q then return q[1], q[2] end
  if q == false then return nil, name end -- the own schema's table named "a.b"
  local s, t = name:match("^([^.]+)%.(.+)$")
  for _, x in ipairs(conn_opts and conn_opts.schemas or {}) do
    if x == s then
      qualified[name] = { s, t }
      return s, t
    end
  end
  return nil, name
end

-- ---- table selection: globs ---------------------------------------------------

-- ASCII letters in lower case, every other byte as it is (string.lower
-- follows the C library's locale).
local function ascii_lower(s)
  return (s:gsub("[A-Z]", function(c) return string.char(c:byte() + 32) end))
end

-- `?` is one character: a UTF-8 one with its continuation bytes (С of
-- Сделки is two bytes), as `*` is any run of them.
local ONE_CHARACTER = "[\1-\127\192-\255][\128-\191]*"

local function glob_pattern(glob)
  local p = ascii_lower(glob):gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ONE_CHARACTER)
  return "^" .. p .. "$"
end

-- "a*,b,!tmp_*" or { "a*", "b", "!tmp_*" } -> function(name) -> boolean.
-- A name is served when it matches an include glob (or there is none) and no
-- exclude glob (one starting with "!"). ASCII letters match in either case
-- (`!secret` also excludes `SECRET`, which PostgreSQL or MySQL may hold beside
-- it); every other byte matches itself.
function _M.table_selector(spec)
  if spec == nil then return function() return true end end
  local list = spec
  if type(spec) == "string" then
    list = {}
    for g in spec:gmatch("[^,]+") do list[#list + 1] = g:match("^%s*(.-)%s*$") end
  end
  if type(list) ~= "table" then error("tables: expected a list of globs or a comma-separated string", 0) end
  local include, exclude = {}, {}
  for _, g in ipairs(list) do
    if type(g) ~= "string" or g == "" or g == "!" then
      error(format("--tables / tables: bad glob \"%s\" (expected NAME, a glob with * and ?, or !GLOB to exclude)",
        tostring(g)), 0)
    end
    if g:sub(1, 1) == "!" then exclude[#exclude + 1] = glob_pattern(g:sub(2))
    else include[#include + 1] = glob_pattern(g) end
  end
  return function(name)
    name = ascii_lower(name)
    for _, p in ipairs(exclude) do if name:find(p) then return false end end
    if #include == 0 then return true end
    for _, p in ipairs(include) do if name:find(p) then return true end end
    return false
  end
end

-- ---- the source --------------------------------------------------------------

local Source = {}
Source.__index = Source

-- Defaults of the connection pool and the answers (docs/database.md, "Connections").
_M.DEFAULTS = {
  pool_size = 8,         -- connections per process (serve: per worker)
  pool_wait = 5,         -- seconds a request waits for a free connection, then 503
  answer_timeout = 240,  -- seconds a whole answer may take (Bitrix24 gives up at 250)
}

local function stderr_log(level, message)
  io.stderr:write("biconnector [", tostring(level), "] ", tostring(message), "\n")
end

-- sql.source(url | opts) -> source; raises on bad options (not on an unreachable
-- database: that is found on first use, and each request says so).
-- opts: url, tables (globs), titles {code = title}, fields {table = {column =
--   false | {code =, name =, type =}}}, queries {code = {sql =, title =}},
--   busy_timeout_ms, log (function(level, message)), trace (function(sql, params):
--   sees every data query before it runs), pool_size (connections of this
--   process, default 8; also the URL option pool_size=N), pool_wait (seconds a
--   request waits for one, default 5), answer_timeout (seconds for a whole
--   answer, default 240). thread_pool, an option of earlier versions, is
--   accepted and has no effect: every query runs on a thread of its own.
--   datetime_offset (true or "+HH:MM": datetimes answered with an offset, as the
--   connector definition's option; PostgreSQL's timestamptz and MySQL's TIMESTAMP
--   are read at that offset (UTC for true), so they are exact instants,
--   2024-08-30T12:19:57+02:00).
-- A query's text as the inside of a derived table "(...) AS bic_query": as a
-- console takes it, a trailing ";" (and white space) ends the statement, not
-- part of it, and a trailing "-- comment" ends at the line's end, not at the
-- ")" after it (both were a syntax error at every request).
local function as_subquery(sql)
  local n = #sql
  while n > 0 do
    local b = sql:byte(n)
    if b ~= 59 and b ~= 32 and (b < 9 or b > 13) then break end -- ";", space, \t\n\v\f\r
    n = n - 1
  end
  return sql:sub(1, n) .. "\n"
end

local function positive(opts, k, integer)
  local v = opts[k]
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v or v <= 0 or v == math.huge or (integer and v % 1 ~= 0) then
    error(format("biconnector.sql.source: %s must be a positive %s, got %s", k, integer and "integer" or "number",
      tostring(v)), 3)
  end
  return v
end

function _M.source(opts)
  if type(opts) == "string" then opts = { url = opts } end
  if type(opts) ~= "table" then error("biconnector.sql.source: expected a URL or a table of options", 2) end
  local engine, open_opts = _M.parse_url(opts.url)
  if not engine then error(open_opts, 0) end
  for _, k in ipairs({ "busy_timeout_ms", "statement_timeout_ms", "connect_timeout_s" }) do
    if opts[k] ~= nil then open_opts[k] = opts[k] end
  end
  -- datetime_offset "+HH:MM": PostgreSQL's and MySQL's sessions run at that
  -- offset, so that a timestamptz / TIMESTAMP (an instant) is written at it, as
  -- the answer labels it, and a filter compares it there; true and "Z" keep UTC
  local sign, hh, mm
  if type(opts.datetime_offset) == "string" then sign, hh, mm = opts.datetime_offset:match("^([+-])(%d%d):(%d%d)$") end
  if sign then open_opts.utc_offset_min = (sign == "-" and -1 or 1) * (tonumber(hh) * 60 + tonumber(mm)) end
  -- a title /table_list answers must not be empty: Bitrix24 refuses the whole list
  -- nor "0": Bitrix24 reads it as empty (PHP's empty(), docs/database.md)
  local function title_error(where, title)
    if title == "0" then
      error(format('biconnector.sql.source: %s must be a non-empty string other than "0" (the title /table_list '
        .. 'answers; Bitrix24 reads "0" as empty), got "0"', where), 3)
    end
    if title ~= nil and (type(title) ~= "string" or title == "") then
      error(format("biconnector.sql.source: %s must be a non-empty string (the title /table_list answers), got %s",
        where, type(title) == "string" and format("%q", title) or tostring(title)), 3)
    end
  end
  local queries = {}
  for code, q in pairs(opts.queries or {}) do
    if type(code) ~= "string" or type(q) ~= "table" or type(q.sql) ~= "string" then
      error("biconnector.sql.source: queries must map a table code to {sql = \"SELECT ...\", title = ...}", 2)
    end
    queries[code] = { sql = as_subquery(q.sql), title = q.title }
    if code == "" then error('biconnector.sql.source: queries: a table code must be a non-empty string, got ""', 2) end
    if code == "0" then
      error('biconnector.sql.source: queries: a table code must be a non-empty string other than "0" '
        .. '(Bitrix24 reads "0" as empty), got "0"', 2)
    end
    title_error(format("queries[%q].title", code), q.title)
  end
  for _, k in ipairs({ "titles", "fields" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "table" then
      error("biconnector.sql.source: " .. k .. " must be a table", 2)
    end
  end
  for code, title in pairs(opts.titles or {}) do
    title_error(format("titles[%q]", tostring(code)), title)
  end
  local pool_size = positive(opts, "pool_size", true) or open_opts.pool_size or _M.DEFAULTS.pool_size
  open_opts.pool_size = nil
  return setmetatable({
    engine = engine, open_opts = open_opts, selected = _M.table_selector(opts.tables),
    titles = opts.titles or {}, overrides = opts.fields or {}, queries = queries,
    log = opts.log or stderr_log, trace = opts.trace,
    datetime_offset = opts.datetime_offset, -- the job's encoder writes as the connector's does
    pool_size = pool_size, pool_wait = positive(opts, "pool_wait") or _M.DEFAULTS.pool_wait,
    answer_timeout = positive(opts, "answer_timeout") or _M.DEFAULTS.answer_timeout,
  }, Source)
end

-- Whether the database answers: true | false, message (a connection and one
-- statement, on a job).
function Source:check()
  local cur, err = self:conn():query("SELECT 1")
  if not cur then return false, tostring(err) end
  cur:close()
  return true
end

-- Source:check() for /check, which must not wait for a busy pool (a long
-- answer holding every connection): a pool whose every connection is open
-- and leased has reached the database already. -> true | false, why (or
-- raises a failure of 503 or more: no connection, as the pool says).
function Source:reachable()
  local st = self:pool():stats()
  if st.size > 0 and st.open >= st.size and st.idle == 0 then return true end
  return self:check()
end

-- The connection pool of this process (a new one after a fork: SQLite and the
-- client libraries must not share a connection between processes).
function Source:pool()
  local pid = core.process.getpid()
  if self._pool and self._pid == pid then return self._pool end
  self._pool = core.sql.pool(self.engine.engine, self.open_opts, { size = self.pool_size })
  self._pid = pid
  return self._pool
end

-- A failure for a job that failed: its message (with what) and status (503 a
-- busy pool or database, 504 past the deadline, 500 the rest).
local function job_failure(job, what)
  local message, status = job:error()
  message = tostring(message or "the query failed")
  if status == nil or status == 0 then status = _M.status_for(message) end
  return _M.failure(status, what and (what .. ": " .. message) or message)
end

-- Starts sql as a job of kind mode and waits until it runs (the statement was
-- accepted, the columns are known): -> job | nil, failure.
function Source:start(sql, params, mode, extra)
  local opts = { mode = mode, deadline = self.answer_timeout, wait = self.pool_wait }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local job = core.sql.job(self:pool(), sql, params or {}, opts)
  while true do
    local st = job:state()
    if st == "running" or st == "done" then return job end
    if st ~= "queued" then
      local f = job_failure(job)
      job:close()
      return nil, f
    end
    async.wait(job)
  end
end

-- A cursor over a fetch job: fetch (one row, a list, NULL as nil), columns, close.
local JobCursor = {}
JobCursor.__index = JobCursor

-- -> the next row (a list of values; a map when the cursor has keys: one per
-- column) | nil at the end | nil, message, status
function JobCursor:fetch()
  while self.pos > #self.rows do
    if self.finished then return nil end
    local rows, done, status = self.job:fetch(1000, self.keys, self.types)
    if not rows then
      self.finished = true
      return nil, done, status
    end
    self.rows, self.pos, self.finished = rows, 1, done
    if #rows == 0 and not done then async.wait(self.job) end
  end
  local r = self.rows[self.pos]
  self.rows[self.pos] = nil
  self.pos = self.pos + 1
  return r
end

function JobCursor:columns() return self.job:columns() end
function JobCursor:close() self.job:close() end

-- The source as a connection for the engine modules: conn:query(sql, params)
-- -> cursor | nil, message (introspection: a job per query).
local PoolConn = {}
PoolConn.__index = PoolConn

function PoolConn:query(sql, params)
  local job, f = self.source:start(sql, params, "fetch")
  -- no connection, or past the deadline: the answer is that status, whatever
  -- the engine module would make of a failed query
  if not job and f.status >= 503 then error(f, 0) end
  if not job then return nil, f.message, f.status end
  return setmetatable({ job = job, rows = {}, pos = 1, finished = false }, JobCursor)
end

function Source:conn()
  return setmetatable({ source = self }, PoolConn)
end

-- Lets go of the pool (its idle connections close; leased ones when their job ends).
function Source:close()
  if self._pool then self._pool:close() end
  self._pool = nil
end

function Source:display()
  return self.engine.display(self.open_opts)
end

-- A failure the connector answers with a status and a message the client sees.
_M.failure = errors.failure

-- A database error -> the status to answer: 503 for a lock held too long
-- (try again later), 404 for PostgreSQL's materialized view that has not
-- been populated (read through a view, or emptied since it was described:
-- nothing to read until REFRESH), 500 for the rest.
local function status_for(err)
  local e = tostring(err):lower()
  if e:find("has not been populated", 1, true) then return 404 end
  if e:find("locked", 1, true) or e:find("busy", 1, true) then return 503 end
  return 500
end
_M.status_for = status_for

local function must(result, err, what)
  if result == nil and err ~= nil then error(_M.failure(status_for(err), what .. ": " .. tostring(err)), 0) end
  return result
end

-- How a stream job hands its rows over: it encodes STREAM_CHUNK bytes between
-- two hand-overs and holds at most STREAM_CAP ready; a request that finds
-- nothing ready is suspended until the next hand-over. STREAM_CHUNK is the
-- answer's chunk (connector.lua's default): a hand-over is then taken whole,
-- the job's buffer and the answer's traded rather than copied (job:take).
local STREAM_CHUNK, STREAM_CAP = 64 * 1024, 1024 * 1024

-- A stream job as the connector's cursor: fill takes the rows the job has
-- encoded (waiting when it has none yet); errors become failures with a status.
local function as_cursor(job, tbl)
  return {
    -- fills enc up to max_bytes (the connector's chunk: LuaJIT maps each string
    -- of 128 KiB and more from the system afresh) or the end of the rows, as
    -- a cursor's fill does: a small answer comes whole, in one chunk
    fill = function(_, enc, max_bytes)
      local added_all, nulled_all, column_all, why_all = 0, 0, nil, nil
      while true do
        local room = max_bytes - enc:pending()
        local added, done, nulled, column, why = job:take(enc, room > 0 and room or 1)
        if added == nil then
          error(job_failure(job, format("table %q: reading rows failed", tbl)), 0)
        end
        added_all = added_all + added
        if nulled and nulled > 0 then
          if nulled_all == 0 then column_all, why_all = column, why end
          nulled_all = nulled_all + nulled
        end
        if done or enc:pending() >= max_bytes then
          async.reset(job)
          if nulled_all > 0 then return added_all, done, nulled_all, column_all, why_all end
          return added_all, done
        end
        if added == 0 then async.wait(job) end
      end
    end,
    close = function() job:close() end,
  }
end
_M.as_cursor = as_cursor

-- How long describe trusts the table codes it last listed, in seconds. A code
-- in that list is not listed again before then (a table dropped since is still
-- found missing: list_columns answers nil); a code not in it is always listed
-- afresh (a table created since), so a request reaches the database only with
-- a code the database lists, byte for byte (docs/database.md, "Names").
_M.NAMES_TTL = 10


-- Whether the warning key was given already (by this source, in this
-- process); marks it given.
function Source:warned(key)
  local warned = self._warned or {}
  self._warned = warned
  if warned[key] then return true end
  warned[key] = true
  return false
end

-- A name as a log shows it: quoted, with \" \\ \n and other control bytes as
-- \DDD (as Lua 5.4's %q; LuaJIT's leaves a tab raw).
local SHOW_ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n" }
local function show_name(name)
  return '"' .. name:gsub('[%z\1-\31\127"\\]', function(c) return SHOW_ESCAPES[c] or format("\\%d", c:byte()) end)
    .. '"'
end

-- " (NAME differs only in case)" when a name of names (a list) equals key but
-- for the case of ASCII letters, else "".
local function case_hint(key, names)
  local k = ascii_lower(key)
  for _, name in ipairs(names) do
    if ascii_lower(name) == k then return format(" (%s differs only in case)", show_name(name)) end
  end
  return ""
end

-- Per-table options apply to exact codes: a key of fields or titles that names
-- no table (names: all the database lists; exists: the same as a set) and no
-- query, e.g. `Secret` for `secret`, is warned about, as what it was to hide
-- or rename is served as it is.
function Source:check_table_keys(names, exists)
  for _, opt in ipairs({ "fields", "titles" }) do
    for key in pairs(opt == "fields" and self.overrides or self.titles) do
      key = tostring(key)
      if not exists[key] and not self.queries[key] and not self:warned(opt .. "\0" .. key) then
        self.log("warn", format("%s[%s] names no table or query of the database (codes are exact, case included)"
          .. "%s: it does nothing", opt, show_name(key), case_hint(key, names)))
      end
    end
  end
end

-- The same for the column keys of fields[code] against the columns cols.
function Source:check_column_keys(code, cols, overrides)
  local names, exists
  for key in pairs(overrides) do
    key = tostring(key)
    if not names then
      names, exists = {}, {}
      for i, col in ipairs(cols) do names[i], exists[col.name] = col.name, true end
    end
    if not exists[key] and not self:warned("fields\0" .. code .. "\0" .. key) then
      self.log("warn", format("fields[%s][%s]: table %s has no column of this exact name%s: it does nothing",
        show_name(code), show_name(key), show_name(code), case_hint(key, names)))
    end
  end
end

-- Why a table or column name cannot be a code /table_list or
-- /table_description answers (as "name ..."), or nil: empty or "0" (Bitrix24
-- refuses the whole list or description holding one: PHP's empty() is true
-- for both), or holding a control byte (no request can name it).
local function unservable(name)
  if name == "" then return "name is empty" end
  if name == "0" then return 'name is "0", which Bitrix24 reads as empty' end
  if control_byte(name) then return "name holds a control byte" end
  return nil
end

-- The database's tables and views this source serves, in the engine's order:
-- those the globs select, not shadowed by a query, with a name that is not
-- empty (Bitrix24 refuses a list holding an empty code) and holds no control
-- byte (no request can name it: request.decode refuses such a code). Their
-- codes are remembered for describe.
function Source:served_tables(conn)
  local tables, err = self.engine.list_tables(conn, self.open_opts)
  must(tables, err or "no answer", "listing tables")
  local list, set, names, exists, unreadable = {}, {}, {}, {}, {}
  for i, t in ipairs(tables) do
    names[i], exists[t.name] = t.name, true
    if t.unreadable then
      unreadable[t.name] = t.unreadable
    elseif self.queries[t.name] then
      if self.selected(t.name) and not self:warned("query\0" .. t.name) then
        self.log("warn", format("table %s is not served as it is: queries[%s] has its code, and the query's rows"
          .. " are served under it", show_name(t.name), show_name(t.name)))
      end
    elseif self.selected(t.name) then
      local why = unservable(t.name)
      if not why then
        list[#list + 1] = t
        set[t.name] = true
      elseif not self:warned("table\0" .. t.name) then
        self.log("warn", format("table %s is not served: its %s", show_name(t.name), why))
      end
    end
  end
  self._names, self._names_at, self._unreadable = set, core.os.clock(), unreadable
  self:check_table_keys(names, exists)
  return list
end

-- Whether the database lists code (byte for byte) among the tables this source
-- serves: SQLite would resolve `SECRET` to `secret`, `sqlite_master` or a
-- table-valued function such as `pragma_database_list`, none of them listed.
function Source:serves(conn, code)
  local set = self._names
  if set and set[code] and core.os.clock() - self._names_at < _M.NAMES_TTL then return true end
  self:served_tables(conn)
  return self._names[code] == true
end

-- -> { {code =, title =}, ... }
-- The search as a static list's: white space around it ignored (in linear
-- time: "^%s*(.-)%s*$" backtracked quadratically on a long run of spaces,
-- minutes of the worker), case folded for ASCII, Latin-1 and Cyrillic.
function Source:table_list(search)
  local tables = self:served_tables(self:conn())
  local list = {}
  for _, t in ipairs(tables) do list[#list + 1] = { code = t.name, title = self.titles[t.name] or t.name } end
  local extra = {}
  for code in pairs(self.queries) do extra[#extra + 1] = code end
  sort(extra)
  for _, code in ipairs(extra) do
    list[#list + 1] = { code = code, title = self.queries[code].title or self.titles[code] or code }
  end
  return require("biconnector.connector.core").search_tables(list, search)
end

-- -> fields | nil (no such table). code must be a code table_list gives, byte
-- for byte (a query's, or a table's the database lists); every other spelling
-- is nil, whatever the engine would resolve it to.
function Source:describe(code)
  if type(code) ~= "string" then return nil end
  local conn = self:conn()
  local cols, err
  local q = self.queries[code]
  if q then
    cols, err = self.engine.query_columns(conn, q.sql)
    must(cols, err or "no columns", format("table %q (query)", code))
  else
    if not self:serves(conn, code) then
      -- a table the database has but cannot read now (not listed): why
      local why = self.selected(code) and self._unreadable[code]
      if why then error(_M.failure(404, format("unknown table %q: %s", code, why)), 0) end
      return nil
    end
    local why
    cols, err, why = self.engine.list_columns(conn, code, self.open_opts)
    must(cols, err, format("table %q", code))
    if not cols and why then error(_M.failure(404, format("unknown table %q: %s", code, why)), 0) end
    -- nil: no such table (dropped since it was listed); an engine gives {}
    -- for a table without columns (PostgreSQL's CREATE TABLE x ()), which
    -- has no column that can be served, below
    if not cols then return nil end
  end
  local overrides = self.overrides[code] or {}
  self:check_column_keys(code, cols, overrides)
  local fields, seen = {}, {}
  for _, col in ipairs(cols) do
    local ov = overrides[col.name]
    local ftype, exact = self.engine.field_type(col.type, self.open_opts)
    if ov ~= false and (ftype or (type(ov) == "table" and ov.type)) then
      local f = { code = col.name, name = col.name, type = ftype, column = col.name, exact = exact or false,
        declared = col.type }
      if type(ov) == "table" then
        if ov.type and ov.type ~= ftype then f.type, f.exact = ov.type, false end
        f.code = ov.code or f.code
        f.name = ov.name or ov.code or f.name
        if ov.dates ~= nil then
          if ov.dates ~= "epoch" and ov.dates ~= "text" then
            error(_M.failure(500, format("fields[%q][%q].dates must be \"epoch\" or \"text\"", code, col.name)), 0)
          end
          f.dates = ov.dates
        end
      end
      local why = unservable(f.code)
      if why then why = (why:gsub("^name", "code", 1))
      elseif f.name == "" or f.name == "0" then
        why = f.name == "" and "name is empty" or 'name is "0", which Bitrix24 reads as empty'
      end
      if why then
        -- no request could name it (request.decode refuses such a code), or
        -- Bitrix24 refuses a description holding it (an empty or "0" code or name);
        -- the column named as the database names it (a rename in fields may be the cause)
        if not self:warned("column\0" .. code .. "\0" .. col.name) then
          self.log("warn", format("table %s: column %s is not served: its %s (fields can rename it)",
            show_name(code), show_name(col.name), why))
        end
      elseif seen[f.code] then
        -- one code, two columns (a rename onto another column's code, a query
        -- naming two columns alike): the first is served, never silently
        if not self:warned("column\0" .. code .. "\0" .. col.name) then
          self.log("warn", format("table %s: column %s is not served: its code %s is already column %s's "
            .. "(fields can rename or leave out either)", show_name(code), show_name(col.name), show_name(f.code),
            show_name(seen[f.code])))
        end
      else
        seen[f.code] = col.name
        fields[#fields + 1] = f
      end
    end
  end
  if #fields == 0 then
    -- listed, so not "unknown": say why it cannot be described
    error(_M.failure(404, format("table %q has no column that can be served (binary columns, and those "
      .. "fields leaves out or whose names cannot be codes, are left out)", code)), 0)
  end
  return fields
end

-- Whether a filter on field f runs in SQL, where the engine must look at the
-- stored values first (f.exact == "check", SQLite: any column may hold any
-- value): -> exact, and how dates are stored ("text" | "epoch" | nil).
function Source:column_check(from, f)
  local e = self.engine
  local r, err = e.check_column(self:conn(), from, e.quote(f.column or f.code), f.type)
  must(r, err, format("checking column %q", f.column or f.code))
  if r == "text" or r == "epoch" then return true, r end
  return r == true, nil
end

-- The field codes a filter AST names: -> { code = true }
local function named_fields(node, out)
  out = out or {}
  if node.kind == "cond" then out[node.field] = true
  else for _, item in ipairs(node.items) do named_fields(item, out) end end
  return out
end

-- What SQL can take of one statement: bound parameters (SQLite's limit is
-- 32766, PostgreSQL's and MySQL's 65535) and bytes of SQL text and parameters
-- together (MySQL's max_allowed_packet: 4 MiB in MySQL 5.7, 16 MiB in
-- MariaDB, 64 MiB in MySQL 8). filter's limits keep the parameters below, and
-- a filter whose SQL would pass either (thousands of long LIKE values, which
-- a request body of 1 MiB cannot carry) is matched in memory instead.
local MAX_PARAMS, MAX_STATEMENT_BYTES = 32766, 2 * 1024 * 1024

local function too_big(where, params)
  if #params > MAX_PARAMS then return true end
  local size = #where
  for _, p in ipairs(params) do size = size + #tostring(p) end
  return size > MAX_STATEMENT_BYTES
end

-- The part of a filter SQL can answer exactly: the whole AST, or the exact
-- items of a top-level AND. -> pushed AST (or nil), whether all was pushed.
local function split_filter(ast, exact_of)
  local function exact(node)
    if node.kind == "cond" then return exact_of[node.field] == true end
    for _, item in ipairs(node.items) do if not exact(item) then return false end end
    return true
  end
  if exact(ast) then return ast, true end
  if ast.kind == "group" and ast.logic == "and" then
    local items = {}
    for _, item in ipairs(ast.items) do if exact(item) then items[#items + 1] = item end end
    if #items > 0 then return { kind = "group", logic = "and", items = items }, false end
  end
  return nil, false
end

-- The SELECT for q: -> sql, params, complete (the whole filter is in the SQL).
function Source:select_sql(q, codes)
  local e = self.engine
  local from
  if self.queries[q.table] then from = "(" .. self.queries[q.table].sql .. ") AS bic_query"
  else from = e.quote_table and e.quote_table(q.table, self.open_opts) or e.quote(q.table) end
  local named = q.filter and named_fields(q.filter) or {}
  local columns, exact_of, dates = {}, {}, nil
  for _, f in ipairs(q.fields) do
    columns[f.code] = f.column or f.code
    local exact, storage = f.exact == true, f.dates
    if f.exact == "check" then
      exact, storage = false, nil
      if named[f.code] then exact, storage = self:column_check(from, f) end
    end
    exact_of[f.code] = exact
    if storage == "epoch" then
      dates = dates or {}
      dates[f.code] = "epoch"
    end
  end
  local cols = {}
  for i, code in ipairs(codes) do cols[i] = e.quote(columns[code]) end
  local sql = "SELECT " .. concat(cols, ", ") .. " FROM " .. from
  local params, complete = {}, true
  if q.filter then
    local pushed
    pushed, complete = split_filter(q.filter, exact_of)
    if pushed then
      local where, pparams = filter.to_sql(pushed, { dialect = e.dialect_for and e.dialect_for(q, self.open_opts) or e.dialect,
        columns = columns, first_param = 1,
        dates = dates })
      if too_big(where, pparams) then
        complete = false
      else
        sql, params = sql .. " WHERE " .. where, pparams
      end
    end
  end
  if complete and q.limit then sql = sql .. e.limit(q.limit) end
  return sql, params, complete
end

-- The plan of a data query: -> sql, params, complete (the whole filter is in
-- the SQL: the rows are q.select exactly), codes (the columns read).
function Source:plan(q)
  local sql, params, complete = self:select_sql(q, q.select)
  if complete then return sql, params, true, q.select end
  -- the selected fields and those the filter names, as map rows
  local codes, have = {}, {}
  for _, c in ipairs(q.select) do if not have[c] then have[c] = true codes[#codes + 1] = c end end
  local function collect(node)
    if node.kind == "cond" then
      if not have[node.field] then have[node.field] = true codes[#codes + 1] = node.field end
    else for _, item in ipairs(node.items) do collect(item) end end
  end
  collect(q.filter)
  sql, params = self:select_sql(q, codes)
  return sql, params, false, codes
end

-- Raises the failure f of data query q's statement, with what the engine
-- can tell of the database's message when the statement failed (500; not a
-- connection that could not be opened, 503: explain, a message that misleads).
function Source:query_failed(q, f)
  local message = f.message
  local more = f.status == 500 and self.engine.explain and self.engine.explain(tostring(message))
  if more then message = message .. " (" .. more .. ")" end
  error(_M.failure(f.status, format("table %q: %s", q.table, message)), 0)
end

-- What a connector's data returns for q: a cursor over a stream job (rows
-- encoded in C on the job's thread) when SQL answers the whole filter; else an
-- iterator of map rows the framework matches, with the exact part of the
-- filter in the SQL, and values that do not fit their type sent as null, as
-- on the C path (applied.invalid: the answer's encoder checks each value once).
function Source:data(q)
  local sql, params, complete, codes = self:plan(q)
  if self.trace then self.trace(sql, params) end
  local fields_of = {}
  for _, f in ipairs(q.fields) do fields_of[f.code] = f end
  if complete then
    local sub = {}
    for i, c in ipairs(codes) do sub[i] = { code = c, type = fields_of[c].type } end
    local offset = self.datetime_offset
    local enc = core.rows.new(sub, nil, { datetime_offset = offset == true and "Z" or offset })
    local job, f = self:start(sql, params, "stream", { encoder = enc, key = q.table, chunk = STREAM_CHUNK,
      cap = STREAM_CAP })
    enc:close()
    if not job then self:query_failed(q, f) end
    return as_cursor(job, q.table), { select = true, filter = true, limit = true }
  end
  local job, f = self:start(sql, params, "fetch", { key = q.table })
  if not job then self:query_failed(q, f) end
  -- a database boolean as its field serves it (1/0, "true"/"false"): a Lua
  -- boolean fits no field type and went as null, and filters missed it
  local types = {}
  for i, c in ipairs(codes) do types[i] = fields_of[c].type end
  local cur = setmetatable({ job = job, rows = {}, pos = 1, finished = false, keys = codes, types = types }, JobCursor)
  local function iterator()
    local r, err = cur:fetch()
    if not r and err then
      error(job_failure(job, format("table %q: reading rows failed", q.table)), 0)
    end
    return r
  end
  return iterator, { select = false, filter = false, limit = false, invalid = "null" }, function() cur:close() end
end

-- ---- a connector over a source -------------------------------------------------

-- Compares two strings in time independent of where they differ.
local function same_secret(a, b)
  if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do
    if a:byte(i) ~= b:byte(i) then diff = diff + 1 end
  end
  return diff == 0
end

-- sql.connector(opts) -> connector. opts: everything sql.source takes, and
--   title, token (the value the `token` setting must carry; nil: no setting and
--   no authentication unless check is given), settings, check(connection) ->
--   true | false, reason, chunk_size, filter_limits, log.
function _M.connector(opts)
  if type(opts) == "string" then opts = { url = opts } end
  local src = _M.source(opts)
  local settings = opts.settings
  local check = opts.check
  if opts.token ~= nil then
    if type(opts.token) ~= "string" or opts.token == "" then
      error("biconnector.sql.connector: token must be a non-empty string", 2)
    end
    local token = opts.token
    settings = settings or { { code = "token", name = "Token", type = "STRING" } }
    local user_check = check
    check = function(connection, endpoint)
      if not same_secret(connection.token, token) then return false, "invalid token" end
      if user_check then return user_check(connection, endpoint) end
      return true
    end
  end
  -- /check also reaches the database (the seed: urlCheck "checks the
  -- availability of the connection to the external source"), once the caller
  -- is let in: 503 naming why when it cannot; the other endpoints find out
  -- by their own queries
  local let_in = check or function() return true end
  check = function(connection, endpoint)
    local ok, reason = let_in(connection, endpoint)
    if not ok or endpoint ~= "check" then return ok, reason end
    local done, reached, err = pcall(src.reachable, src)
    if not done then
      -- no connection (the pool says why: cannot open, cannot connect, busy)
      if errors.is_failure(reached) and reached.status >= 503 then error(reached, 0) end
      err = errors.is_failure(reached) and reached.message or reached
    end
    if not done or not reached then
      error(_M.failure(503, "the database cannot be reached: " .. tostring(err)), 0)
    end
    return true
  end
  local title = opts.title
  if title == nil then
    title = (opts.url or ""):gsub("^(%a[%w+.-]*://)[^/]*@", "%1"):match("([^/]+)$") or src:display()
    title = title:gsub("%?.*$", ""):gsub("%.[%w]+$", "")
    -- the name, not its URL spelling: sqlite:///srv/my%20shop.db is "my shop"
    -- (kept escaped when the bytes it spells are no UTF-8 text)
    local name = title:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    if not name:find("[%z\1-\31\127]") and core.json.encode(name) then title = name end
    if title == "" then title = "Database" end
  end
  local def = {
    title = title,
    settings = settings or {},
    check = check,
    tables = function(_, search) return src:table_list(search) end,
    describe = function(_, code) return src:describe(code) end,
    data = function(_, q) return src:data(q) end,
    chunk_size = opts.chunk_size,
    datetime_offset = opts.datetime_offset,
    filter_limits = opts.filter_limits,
    log = opts.log,
    secrets = opts.token and { opts.token } or nil, -- masked in every message and log line
    -- the introspection answers are kept 60 s unless opts.cache says otherwise
    -- ({ttl = s} or false; biconnector.cache); a reload (SIGHUP) starts afresh
    cache = opts.cache == nil and { ttl = 60 } or opts.cache,
  }
  -- lazy: the engines' dialects (filter.to_sql) load this module without the
  -- connector and its host parts (the fuzz targets' core has no core.process)
  local c = require("biconnector.connector.core").new(def)
  c.source = src
  return c
end

-- The connector `biconnector serve URL` serves. cli: tables, token (already read
-- from BICONNECTOR_TOKEN or --token-file), no_auth, log.
function _M.serve_connector(url, cli)
  cli = cli or {}
  if not cli.token and not cli.no_auth then
    error("no token: set BICONNECTOR_TOKEN or pass --token-file FILE (or --no-auth to serve without one)", 0)
  end
  local c = _M.connector({ url = url, tables = cli.tables, token = cli.token, log = cli.log,
    pool_size = cli.pool_size, pool_wait = cli.pool_wait, answer_timeout = cli.answer_timeout })
  -- open now: a missing or unreadable database stops serve at start; then
  -- close, so that no connection crosses the fork into the workers (each
  -- opens its own on first use)
  local ok, err = c.source:check()
  c.source:close()
  if not ok then error(err, 0) end
  return c
end

return _M
