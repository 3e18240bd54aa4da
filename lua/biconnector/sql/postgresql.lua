-- The PostgreSQL engine of biconnector.sql: URL, introspection, the type
-- mapping and an exact SQL dialect. The interface every engine module keeps is
-- described at the top of biconnector/sql/init.lua; docs/database.md has the
-- tables.
--
--   postgresql://user[:password]@host[:port]/database[?options]   (also postgres://)
--
-- Options of our own: schemas=a,b (tables of these schemas besides the
-- default one, as codes "a.table"), statement_timeout=MS, connect_timeout=S.
-- Every other option goes to libpq as is (sslmode, sslrootcert, sslcert,
-- sslkey, application_name, target_session_attrs, host=/unix/socket/dir, ...).
local url_lib = require "biconnector.sql.server_url"
local sql_lib = require "biconnector.sql"
local all_rows = sql_lib.all_rows

local _M = {
  engine = "postgresql",
  schemes = { "postgresql", "postgres" },
  placeholder = "$",
}


-- Connection settings libpq would also take as options: the URL itself gives them.
local IN_URL_ONLY = {}
for _, k in ipairs({ "password", "user", "dbname", "port" }) do
  IN_URL_ONLY[k] = function() return ("postgresql URL: give %s in the URL itself, not as an option"):format(k) end
end

function _M.parse_url(url)
  return url_lib.server_options(url, { what = "postgresql", own = IN_URL_ONLY })
end

function _M.display(opts)
  return url_lib.display("postgresql", opts)
end

_M.quote = sql_lib.quoter('"')
_M.quote_table = sql_lib.table_quoter(_M.quote)
_M.limit = sql_lib.limit_clause

-- The dialect of biconnector.filter.to_sql, made exact against `match`:
-- strings compare as text in the "C" collation (bytewise, whatever the
-- database's collation; ILIKE then folds ASCII letters only, as match does);
-- doubles compare with NaN and the infinities as NULL (they are served as
-- null); dates and timestamps compare as the second or day they are served
-- as, those outside the years 1-9999 (BC, infinity) as NULL
-- (filter.to_sql's date_range).
--
-- A numeric column is compared as the double it is served as, without the
-- cast's errors: PostgreSQL's numeric -> float8 raises "out of range" for a
-- value that rounds to an infinity (served as null) or to zero (served as 0),
-- and the error failed every filter on the column. 2^1024 - 2^970 is the
-- least magnitude that rounds to an infinity, 2^-1075 the greatest that
-- rounds to zero (round half to even, as strtod, which reads the served
-- text); numeric's power of an integer is exact and folded once per
-- statement; NaN (and numeric's infinities) sort above every number.
local NUMERIC_CAST = "(CASE WHEN abs(%s) >= 2::numeric ^ 1024 - 2::numeric ^ 970 THEN NULL "
  .. "WHEN abs(%s) < 1e-300 AND abs(%s) * 2::numeric ^ 1075 <= 1 THEN 0 ELSE %s::float8 END)"

local function operand(c, node, declared)
  if node.type == "string" then return "(" .. c .. ')::text COLLATE "C"' end
  if node.type == "double" then
    if declared and declared:lower():match("^numeric") then
      return NUMERIC_CAST:format(c, c, c, c)
    end
    return "(CASE WHEN " .. c .. "::float8 IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE " .. c .. "::float8 END)"
  end
  return c
end

local DATE_RANGE = {
  min = "0001-01-01 00:00:00", -- PostgreSQL has no year 0: a bound below is raised to this
  valid = function(c) return "(" .. c .. " >= '0001-01-01' AND " .. c .. " < '10000-01-01')" end,
}

-- The dialect of a data query q: a numeric column's conditions by its
-- declared type (q.fields carry `declared`).
function _M.dialect_for(q)
  local declared = {}
  for _, f in ipairs(q and q.fields or {}) do declared[f.code] = f.declared end
  return {
    quote = '"', like = "ILIKE", numbered = true, date_range = DATE_RANGE,
    operand = function(c, node) return operand(c, node, declared[node.field]) end,
  }
end

_M.dialect = _M.dialect_for(nil)

-- The schemas configured besides the default one, as a PostgreSQL array literal.
local function schema_array(conn_opts)
  local list = {}
  for i, s in ipairs(conn_opts and conn_opts.schemas or {}) do list[i] = '"' .. s:gsub('[\\"]', "\\%0") .. '"' end
  return "{" .. table.concat(list, ",") .. "}"
end

local VIEWS = { v = true, m = true } -- the relkind of views and materialized views

-- -> { {name=, kind=}, ... }: tables, views, materialized views and foreign
-- tables the account may read (SELECT on the table or on some of its columns,
-- USAGE on its schema), of
-- the default schema (as named) and of the configured ones (as "schema.name").
-- A materialized view never populated (WITH NO DATA, or REFRESH ... WITH NO
-- DATA) cannot be read ("has not been populated"): it is not listed, and a
-- request naming it is told why (unreadable).
local UNPOPULATED = "a materialized view that has not been populated (REFRESH MATERIALIZED VIEW makes it readable)"

function _M.list_tables(conn, conn_opts)
  local rows, err = all_rows(conn, [[
    SELECT n.nspname, c.relname, c.relkind, n.nspname = current_schema(),
      CASE WHEN c.relkind = 'm' AND NOT c.relispopulated THEN 1 ELSE 0 END
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
      AND (n.nspname = current_schema() OR n.nspname = ANY ($1::text[]))
      AND has_any_column_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE')
      AND NOT c.relispartition
    ORDER BY n.nspname <> current_schema(), n.nspname, c.relname]], { schema_array(conn_opts) })
  return sql_lib.table_list(conn_opts, VIEWS, rows, err, UNPOPULATED)
end

-- -> { {name=, type=}, ... } | nil (no such table) | nil, nil, why (a
-- materialized view never populated: unknown, as it is not listed, and why
-- tells the user to REFRESH it): the columns the account may SELECT (all of
-- them with SELECT on the table; GRANT SELECT (a, b) gives a and b). A domain's column has
-- the type of the domain's base type, through any number of domains (a
-- domain over a domain over numeric(5,2) is numeric(5,2)).
function _M.list_columns(conn, name, conn_opts)
  local schema, tbl = sql_lib.table_of(name, conn_opts)
  local schema_cond, params = "n.nspname = current_schema() AND c.relname = $1", { tbl }
  if schema then schema_cond, params = "n.nspname = $1 AND c.relname = $2", { schema, tbl } end
  local cols, err = sql_lib.column_list(all_rows(conn, [[
    SELECT a.attname,
      CASE WHEN t.typtype = 'e' THEN 'enum'
           WHEN t.typcategory = 'A' THEN 'array'
           ELSE format_type(t.oid, base.typmod) END
    FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN LATERAL (
        WITH RECURSIVE b(oid, typmod, depth) AS (
          SELECT a.atttypid, a.atttypmod, 0
          UNION ALL
          SELECT d.typbasetype, CASE WHEN d.typtypmod <> -1 THEN d.typtypmod ELSE b.typmod END, b.depth + 1
          FROM b JOIN pg_type d ON d.oid = b.oid
          WHERE d.typtype = 'd' AND b.depth < 100)
        SELECT b.oid, b.typmod FROM b ORDER BY b.depth DESC LIMIT 1) base
      JOIN pg_type t ON t.oid = base.oid
    WHERE ]] .. schema_cond .. [[ AND a.attnum > 0 AND NOT a.attisdropped
      AND has_column_privilege(c.oid, a.attnum, 'SELECT')
      AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND (c.relkind <> 'm' OR c.relispopulated)
    ORDER BY a.attnum]], params))
  if cols or err then return cols, err end
  -- no columns: a table of none (CREATE TABLE x ()) is {}, no table nil,
  -- a materialized view not populated nil and why
  local found, ferr = all_rows(conn, [[
    SELECT CASE WHEN c.relkind = 'm' AND NOT c.relispopulated THEN 'm' ELSE 't' END
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE ]] .. schema_cond .. [[ AND c.relkind IN ('r', 'v', 'm', 'p', 'f')]], params)
  if not found then return nil, ferr end
  if #found == 0 then return nil end
  if found[1][1] == "m" then
    return nil, nil, UNPOPULATED
  end
  return {}
end

_M.query_columns = sql_lib.query_columns

-- Declared type (format_type's spelling) -> field type, exact.
-- exact: a filter on the field runs in SQL and answers what match answers.
local STRING_EXACT = { text = true, ["character varying"] = true, name = true, uuid = true, json = true,
  jsonb = true, enum = true, array = true, citext = false }
function _M.field_type(declared)
  local t = (declared or ""):lower()
  local base = t:gsub("%b()", ""):gsub("%s+$", "")
  if base == "smallint" or base == "integer" or base == "bigint" or base == "oid" then return "int", true end
  if base == "double precision" then return "double", true end
  -- served as its shortest decimal (0.1), which SQL's float8 of it (0.100000001490116) is not
  if base == "real" then return "double", false end
  if base == "numeric" then return "double", true end
  if base == "boolean" then return "int", false end -- served as 1/0; filters on it run in match
  if base == "date" then return "date", true end
  if base == "timestamp without time zone" or base == "timestamp with time zone" then return "datetime", true end
  if base == "bytea" then return nil end
  if STRING_EXACT[base] then return "string", true end
  -- char(n) (served padded, compared trimmed), citext (case-insensitive), time,
  -- interval, inet, money, xml, geometric and the rest: text, filtered in match
  return "string", false
end

return _M
