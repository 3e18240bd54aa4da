-- The ClickHouse engine of biconnector.sql: URL, introspection, the type
-- mapping and an exact SQL dialect. The interface every engine module keeps is
-- described at the top of biconnector/sql/init.lua; docs/database.md has the
-- tables. The driver (src/sql_clickhouse.c) talks to ClickHouse's HTTP
-- interface.
--
--   clickhouse://user[:password]@host[:port]/database[?options]   (port 8123)
--   clickhouses://...  (HTTPS, port 8443; also ?secure=1)
--
-- Options: schemas=a,b (tables of these databases besides the URL's, as codes
-- "a.table"), statement_timeout=MS (max_execution_time), connect_timeout=S,
-- pool_size=N, uint64=string (UInt64 columns as strings; default: int, values
-- above 2^63-1 sent as null with a warning), composite=omit (Array, Map,
-- Tuple, Nested columns left out; default: strings of their text form),
-- secure=1, ca_file=PATH, verify=0 (no certificate check: never on a network
-- you do not own). Anything else is refused.
local core = require "biconnector.core"
local url_lib = require "biconnector.sql.server_url"
local sql_lib = require "biconnector.sql"
local all_rows = sql_lib.all_rows

local format, concat = string.format, table.concat
local ch_quote = core.sql.clickhouse_quote

local _M = {
  engine = "clickhouse",
  schemes = { "clickhouse", "clickhouses" },
  placeholder = "$",
}


local function lit(s) return ch_quote(s, "'") end

local CHOICES = { uint64 = { "int", "string" }, composite = { "string", "omit" } }

function _M.parse_url(url)
  local scheme = (url:match("^(%a[%w+.-]*):") or ""):lower()
  local driver = {} -- the options the driver reads (src/sql_clickhouse.c), in order
  local function choice(key)
    return function(opts, v)
      for _, c in ipairs(CHOICES[key]) do if c == v then opts[key] = v return nil end end
      return format("clickhouse URL: %s expects %s, got %q", key, concat(CHOICES[key], " or "), v)
    end
  end
  local function pass(key) return function(_, v) driver[#driver + 1] = { key, v } end end
  if scheme == "clickhouses" then driver[1] = { "secure", "1" } end
  local opts, err = url_lib.server_options(url, { what = "clickhouse", own = {
    uint64 = choice("uint64"), composite = choice("composite"),
    secure = pass("secure"), ca_file = pass("ca_file"), verify = pass("verify") } })
  if not opts then return nil, err end
  if opts.params then
    return nil, format("clickhouse URL: unknown option %q (known: schemas, statement_timeout, connect_timeout, "
      .. "pool_size, uint64, composite, secure, ca_file, verify)", url_lib.unescape(opts.params:match("^([^=&]*)")))
  end
  local secure = false
  for _, kv in ipairs(driver) do
    if kv[1] == "secure" then secure = kv[2] == "1" or kv[2] == "true" or kv[2] == "on" or kv[2] == "yes" end
  end
  if #driver > 0 then opts.params = url_lib.encode_params(driver) end
  opts.scheme = secure and "clickhouses" or "clickhouse"
  return opts
end

function _M.display(opts)
  return url_lib.display(opts.scheme or "clickhouse", opts)
end

-- An identifier quoted for ClickHouse (backquotes, escaped by the driver's
-- own rules); quote_table: a code of another database as `db`.`table`.
function _M.quote(name)
  return ch_quote(name, "`")
end
_M.quote_table = sql_lib.table_quoter(_M.quote)

_M.limit = sql_lib.limit_clause

---------------------------------------------------------------- types

-- The type inside Nullable(...) and LowCardinality(...).
local function unwrap(t)
  while true do
    local inner = t:match("^Nullable%((.*)%)$") or t:match("^LowCardinality%((.*)%)$")
    if not inner then return t end
    t = inner
  end
end
_M.unwrap = unwrap

local INTS = { Int8 = true, Int16 = true, Int32 = true, Int64 = true, UInt8 = true, UInt16 = true, UInt32 = true }
local STRINGS = { String = true, FixedString = true, UUID = true, Enum8 = true, Enum16 = true, Enum = true,
  IPv4 = true, IPv6 = true, Bool = true }
local COMPOSITE = { Array = true, Map = true, Tuple = true, Nested = true, Object = true, JSON = true }

-- Declared type -> field type (nil: left out), and whether a filter on it
-- pushes down exactly (the dialect below makes it so). opts: the URL's.
function _M.field_type(declared, opts)
  opts = opts or {}
  local t = unwrap(declared or "")
  local name = t:match("^(%w+)") or ""
  if INTS[name] then return "int", true end
  if name == "UInt64" then
    if opts.uint64 == "string" then return "string", true end
    return "int", true
  end
  if name == "Float32" or name == "Float64" then return "double", true end
  if name:match("^Decimal") then
    -- exact while the decimal's digits fit a double's 15 (Decimal(P, S), P <= 15)
    local p = tonumber(t:match("^Decimal%((%d+)"))
    return "double", p ~= nil and p <= 15
  end
  if name == "Date" then return "date", true end
  if name == "Date32" then return "date", false end
  if name == "DateTime" then return "datetime", true end
  if name == "DateTime64" then return "datetime", false end
  -- toString of a Nullable(Enum) fails on a NULL's slot ("Unexpected value 0
  -- for type Enum8"): such a column is filtered in match
  if name:match("^Enum") and (declared or ""):find("Nullable(", 1, true) then return "string", false end
  -- a FixedString is served with its trailing zero bytes, which toString drops
  -- and which 18.x's comparisons mishandle ('ab\0\0' <= 'ab'): filtered in match
  if name == "FixedString" then return "string", false end
  if STRINGS[name] then return "string", true end
  if name == "AggregateFunction" then return nil end -- a binary state, not a value
  if COMPOSITE[name] then
    if opts.composite == "omit" then return nil end
    return "string", false
  end
  return "string", false -- Int128/256, Nothing, Interval and the rest: their text, filtered in match
end

---------------------------------------------------------------- the dialect

-- Time zones without daylight saving or other offset changes: a datetime's
-- text and its instant go one to one, so values compare as values.
local function fixed_zone(tz)
  if tz == nil then return false end
  local z = tz:gsub("^Etc/", "")
  if z == "UTC" or z == "UCT" or z == "GMT" or z == "GMT0" or z == "Universal" or z == "Zulu"
      or z == "Greenwich" or z:match("^GMT[+-]%d%d?$") then
    return true
  end
  return false
end

-- The range a Date / DateTime holds (18.x writes what is beyond as 0000-00-00).
local DATE_MIN, DATE_MAX = "1970-01-01", "2105-12-31"

local function values_of(node)
  if node.values then return node.values end
  if node.from then return { node.from, node.to } end
  return { node.value }
end

local function within(node, lo, hi)
  for _, v in ipairs(values_of(node)) do
    if type(v) ~= "string" or v < lo or v > hi then return false end
  end
  return true
end

-- The expression a condition on field node.type over column q (quoted) of
-- declared type tests, equal to what match sees in the served value
-- (server_tz: the server's time zone, when known):
-- - int: a UInt64 above 2^63-1 is served as null, and so compares;
-- - double: nan and the infinities are served as null (Float), a Float32 as
--   its shortest decimal, a Decimal as the nearest double;
-- - string: a column that is not a String (Enum, UUID, FixedString, UInt64
--   served as text...) compares as its text;
-- - date: as values, within 1970-01-01..2105-12-31 (a value beyond compares
--   as text, zero served as 1970-01-01);
-- - datetime: as values where the server's zone has no offset changes (UTC)
--   and is the column's (18.x reads a literal in the server's zone, whatever
--   the column's), else as the served text (an hour of a DST change reads
--   twice), beyond the range too.
local function operand(q, node, declared, server_tz)
  local t = unwrap(declared or "")
  local name = t:match("^(%w+)") or ""
  local ft = node.type
  if ft == "int" then
    if name == "UInt64" then return "if(" .. q .. " > 9223372036854775807, NULL, " .. q .. ")" end
    return q
  elseif ft == "double" then
    -- IN looks values up by their bits: + 0 makes a -0 the 0 that match sees equal
    local z = (node.op == "in" or node.op == "not_in") and " + 0" or ""
    if name == "Float32" then return "if(isFinite(" .. q .. "), toFloat64(toString(" .. q .. "))" .. z .. ", NULL)" end
    if name == "Float64" then return "if(isFinite(" .. q .. "), " .. q .. z .. ", NULL)" end
    if name:match("^Decimal") then return "toFloat64(" .. q .. ")" end
    return q
  elseif ft == "string" then
    if name == "String" then return q end
    return "toString(" .. q .. ")"
  elseif ft == "date" then
    if name == "Date" and within(node, DATE_MIN, DATE_MAX) then return q end
    return "if(" .. q .. " = toDate(0), '1970-01-01', toString(" .. q .. "))"
  elseif ft == "datetime" then
    local tz = t:match("^DateTime%('(.*)'%)$")
    if (t == "DateTime" or tz == server_tz) and fixed_zone(server_tz)
        and within(node, DATE_MIN .. " 00:00:00", DATE_MAX .. " 23:59:59") then
      return q
    end
    local zone = tz and (", " .. lit(tz)) or ""
    -- 18.x writes a time within the epoch's day wrongly in a zone whose offset
    -- is not whole hours (0 in Asia/Kolkata: "1970-01-01 05:86:00"): such a
    -- time is read one day later, the day put back in the text (the driver
    -- serves the zero time so too, src/sql_clickhouse.c)
    local later = "formatDateTime(" .. q .. " + 86400, '%F %T'" .. zone .. ")"
    return "if(toUInt32(" .. q .. ") < 86400, concat(multiIf(substring(" .. later .. ", 1, 10) = '1970-01-03', "
      .. "'1970-01-02', substring(" .. later .. ", 1, 10) = '1970-01-02', '1970-01-01', '1969-12-31'), substring("
      .. later .. ", 11)), formatDateTime(" .. q .. ", '%F %T'" .. zone .. "))"
  end
  return q
end

-- The column name inside filter.to_sql's quoting (`name`, ` doubled).
local function unquote(c)
  return (c:sub(2, -2):gsub("``", "`"))
end

-- LIKE as match has it: ASCII letters folded (ClickHouse's lower() folds
-- ASCII only), `%` and `_` (one UTF-8 character), the escape `!` of the
-- pattern turned into ClickHouse's backslash.
local function like_sql(c, p)
  return "lower(" .. c .. ") LIKE lower(replaceRegexpAll(replaceAll(" .. p .. [[, '\\', '\\\\'), '!(.)', '\\\\\\1'))]]
end

-- The dialect of a data query q: conditions on each field test the
-- expression its declared type needs (q.fields carry `declared`; opts, the
-- source's parse_url options, the server's time zone list_columns saw).
function _M.dialect_for(q, opts)
  local declared = {}
  for _, f in ipairs(q and q.fields or {}) do declared[f.code] = f.declared end
  local server_tz = opts and opts.server_tz
  return {
    quote = "`", like = "LIKE", numbered = true,
    operand = function(c, node) return operand(_M.quote(unquote(c)), node, declared[node.field], server_tz) end,
    like_sql = like_sql,
  }
end

_M.dialect = _M.dialect_for(nil)

---------------------------------------------------------------- introspection

-- Engines whose SELECT consumes what it reads (a queue): never listed.
local CONSUMING = { "Kafka", "RabbitMQ", "NATS", "FileLog", "S3Queue", "AzureQueue" }
local VIEWS = { View = true, MaterializedView = true } -- the engine of views

-- A table of the Set engine (the right side of `x IN set`) cannot be read:
-- "Method read is not supported by storage Set".
local SET_ENGINE = "a table of the Set engine, which ClickHouse cannot SELECT from"

-- -> { {name=, kind=, unreadable=}, ... }: the tables and views of the URL's
-- database (as named) and of the configured ones (as "db.name"), without the
-- inner tables of materialized views and the engines that consume what they
-- read; a Set table is there as unreadable (not listed, unknown saying why).
function _M.list_tables(conn, conn_opts)
  local params, extra = sql_lib.schemas_clause(conn_opts, "database", "$")
  local consuming = {}
  for i, e in ipairs(CONSUMING) do consuming[i] = lit(e) end
  local rows, err = all_rows(conn, "SELECT database, name, engine, "
    .. "database = currentDatabase(), engine = 'Set' FROM system.tables "
    .. "WHERE (database = currentDatabase()" .. extra .. ") AND NOT is_temporary AND NOT startsWith(name, '.inner') "
    .. "AND engine NOT IN (" .. concat(consuming, ", ") .. ") "
    .. "ORDER BY database != currentDatabase(), database, name", params)
  return sql_lib.table_list(conn_opts, VIEWS, rows, err, SET_ENGINE)
end

-- -> { {name=, type=}, ... } | nil (no such table)
function _M.list_columns(conn, name, conn_opts)
  local db, tbl = sql_lib.table_of(name, conn_opts)
  local rows, err = all_rows(conn, "SELECT name, type, timezone() FROM system.columns WHERE database = "
    .. (db and "$2" or "currentDatabase()") .. " AND table = $1", db and { tbl, db } or { tbl })
  if not rows then return nil, err end
  if #rows == 0 then return nil end
  -- the server's time zone, for the dialect (a DateTime without one is in it)
  if conn_opts and rows[1][3] then conn_opts.server_tz = rows[1][3] end
  local list = {}
  for i, r in ipairs(rows) do list[i] = { name = r[1], type = r[2] } end
  return list
end

_M.query_columns = sql_lib.query_columns

return _M
