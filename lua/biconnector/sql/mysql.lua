-- The MySQL / MariaDB engine of biconnector.sql: URL, introspection, the type
-- mapping and an exact SQL dialect. The interface every engine module keeps is
-- described at the top of biconnector/sql/init.lua; docs/database.md has the
-- tables.
--
--   mysql://user[:password]@host[:port]/database[?options]   (also mariadb://)
--
-- Options of our own: schemas=a,b (tables of these databases besides the
-- URL's, as codes "a.table"), socket=/path (a unix socket instead of TCP),
-- statement_timeout=MS, connect_timeout=S. TLS options go to the driver:
-- ssl=true, ssl-mode=REQUIRED|VERIFY_CA|VERIFY_IDENTITY, ssl-ca, ssl-capath,
-- ssl-cert, ssl-key, ssl-cipher, ssl-crl, ssl-crlpath,
-- ssl-verify-server-cert, tls-version; anything else is refused.
local url_lib = require "biconnector.sql.server_url"
local sql_lib = require "biconnector.sql"
local all_rows = sql_lib.all_rows

local _M = {
  engine = "mysql",
  schemes = { "mysql", "mariadb" },
  placeholder = "?",
}


-- What src/sql_mysql.c takes (refused here, naming every option, before the driver's own refusal)
local DRIVER = { "ssl", "ssl-mode", "ssl-ca", "ssl-capath", "ssl-cert", "ssl-key", "ssl-cipher", "ssl-crl",
  "ssl-crlpath", "ssl-verify-server-cert", "tls-version" }
for _, k in ipairs(DRIVER) do DRIVER[k] = true end

function _M.parse_url(url)
  return url_lib.server_options(url, { what = "mysql", database_required = true,
    own = { socket = function(opts, v) opts.socket = v end }, driver = DRIVER })
end

function _M.display(opts)
  return url_lib.display("mysql", opts)
end

_M.quote = sql_lib.quoter("`")
_M.quote_table = sql_lib.table_quoter(_M.quote)
_M.limit = sql_lib.limit_clause

-- Lower case in ASCII only, in SQL: match folds ASCII letters only, where
-- LOWER() and the _ci collations fold every letter.
local function ascii_lower(expr)
  for b = 65, 90 do
    expr = ("REPLACE(%s, X'%02X', X'%02X')"):format(expr, b, b + 32)
  end
  return expr
end

-- The dialect of biconnector.filter.to_sql, made exact against `match`:
-- strings compare as their UTF-8 bytes (no case or accent folding, no
-- trailing-space padding, whatever the column's collation); LIKE folds ASCII
-- letters only and matches characters in utf8mb4_bin; dates compare as the
-- second or day they are served as, the zero date and dates with a zero or
-- impossible month or day (which MySQL may keep) as NULL (filter.to_sql's
-- date_range).
_M.dialect = {
  quote = "`", like = "LIKE",
  date_range = {
    valid = function(c)
      return "COALESCE(DAYOFMONTH(" .. c .. ") BETWEEN 1 AND DAYOFMONTH(LAST_DAY(" .. c .. ")), 0)"
    end,
  },
  operand = function(c, node)
    if node.type == "string" then return "CAST(CONVERT(" .. c .. " USING utf8mb4) AS BINARY)" end
    return c
  end,
  like_sql = function(c, p)
    return "CONVERT(" .. ascii_lower(c) .. " USING utf8mb4) COLLATE utf8mb4_bin LIKE CONVERT("
      .. ascii_lower("CAST(" .. p .. " AS BINARY)") .. " USING utf8mb4) COLLATE utf8mb4_bin ESCAPE '!'"
  end,
}

-- A BIGINT UNSIGNED above 2^63-1 is served as null, and so compares: a filter
-- value is a signed 64-bit integer, so =, <, <=, IN, BETWEEN never hold for
-- such a value and <> and NOT IN hold (as for NULL) without help; >, >=,
-- IS NULL and IS NOT NULL see the column as NULL there (those conditions then
-- use no index on it).
local UNSIGNED_AS_NULL = { gt = true, ge = true, is_null = true, not_null = true }

-- The dialect of a data query q (q.fields carry `declared`, the column type).
function _M.dialect_for(q)
  local unsigned = {}
  for _, f in ipairs(q and q.fields or {}) do
    if f.type == "int" and (f.declared or ""):lower():match("^bigint.*unsigned") then unsigned[f.code] = true end
  end
  if not next(unsigned) then return _M.dialect end
  local d = {}
  for k, v in pairs(_M.dialect) do d[k] = v end
  d.operand = function(c, node)
    if unsigned[node.field] and UNSIGNED_AS_NULL[node.op] then
      return "(CASE WHEN " .. c .. " > 9223372036854775807 THEN NULL ELSE " .. c .. " END)"
    end
    return _M.dialect.operand(c, node)
  end
  return d
end

local VIEWS = { VIEW = true } -- the table_type of views

-- -> { {name=, kind=}, ... }: the tables and views of the URL's database (as
-- named) and of the configured ones (as "db.name"); not MariaDB's sequences
-- (table_type SEQUENCE), which are no data. A view information_schema has no
-- columns for cannot be resolved (a table, column or function it reads is
-- gone, or its definer may not use it): not listed, and unreadable says why.
local UNRESOLVED = "a view whose columns the server cannot resolve (a table, column or function it reads is gone, "
  .. "or its definer may not use it)"

function _M.list_tables(conn, conn_opts)
  local params, extra = sql_lib.schemas_clause(conn_opts, "t.table_schema", "?")
  local rows, err = all_rows(conn, "SELECT t.table_schema, t.table_name, t.table_type, "
    .. "t.table_schema = DATABASE(), t.table_type = 'VIEW' AND NOT EXISTS (SELECT 1 FROM information_schema.columns c "
    .. "WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name) "
    .. "FROM information_schema.tables t WHERE (t.table_schema = DATABASE()" .. extra
    .. ") AND t.table_type <> 'SEQUENCE' ORDER BY t.table_schema <> DATABASE(), t.table_schema, "
    .. "CAST(t.table_name AS BINARY)", params)
  return sql_lib.table_list(conn_opts, VIEWS, rows, err, UNRESOLVED)
end

function _M.list_columns(conn, name, conn_opts)
  local schema, tbl = sql_lib.table_of(name, conn_opts)
  return sql_lib.column_list(all_rows(conn, "SELECT column_name, column_type FROM information_schema.columns "
    .. "WHERE table_schema = " .. (schema and "?" or "DATABASE()")
    .. " AND CAST(table_name AS BINARY) = CAST(? AS BINARY) ORDER BY ordinal_position",
    schema and { schema, tbl } or { tbl }))
end

_M.query_columns = sql_lib.query_columns

-- MariaDB answers a SELECT of a view whose DEFINER account does not exist
-- with "Access denied for user 'reader'@'%' (using password: YES)" (error
-- 1045) unless the account has SUPER, as if the account's password were
-- wrong: a query of a connection that is open has no other cause for it.
function _M.explain(message)
  if message:find("Access denied for user", 1, true) then
    return "the connection is open: this is how the server answers a view whose DEFINER account does not exist;"
      .. " SHOW CREATE VIEW names it"
  end
end

-- Declared type (information_schema's column_type, or the driver's name for
-- a query's columns) -> field type, exact.
function _M.field_type(declared)
  local t = (declared or ""):lower()
  local base = t:match("^(%a+)") or ""
  if t:match("^tinyint%(1%)") then return "int", true end -- BOOLEAN
  if base == "tinyint" or base == "smallint" or base == "mediumint" or base == "int" or base == "integer"
      or base == "bigint" or base == "year" then
    return "int", true
  end
  if base == "double" or base == "real" then return "double", true end
  if base == "float" then return "double", false end -- served as its shortest decimal; SQL compares the float
  if base == "decimal" or base == "numeric" or base == "dec" or base == "fixed" then return "double", true end
  if base == "date" then return "date", true end
  if base == "datetime" or base == "timestamp" then return "datetime", true end
  if base == "binary" or base == "varbinary" or base == "blob" or base == "tinyblob" or base == "mediumblob"
      or base == "longblob" or base == "bit" or base == "geometry" or base == "point" or base == "linestring"
      or base == "polygon" or base == "multipoint" or base == "multilinestring" or base == "multipolygon"
      or base == "geometrycollection" or base == "geomcollection" then
    return nil
  end
  if base == "char" or base == "varchar" or base == "text" or base == "tinytext" or base == "mediumtext"
      or base == "longtext" or base == "enum" or base == "set" or base == "json" then
    return "string", true
  end
  return "string", false -- time and the rest: text, filtered in match
end

return _M
