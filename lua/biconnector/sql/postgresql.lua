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

local _M = {
  engine = "postgresql",
  schemes = { "postgresql", "postgres" },
  placeholder = "$",
}

-- Where a table code of another schema points: code -> {schema, table}.
-- Filled by list_tables/list_columns (codes "schema.table").
local qualified = {}

function _M.parse_url(url)
  local u, err = url_lib.parse(url, "postgresql")
  if not u then return nil, err end
  local opts = { host = u.host or "127.0.0.1", port = u.port, user = u.user, password = u.password,
    database = u.database }
  if not opts.password then
    local p, perr = url_lib.password_from_env()
    if perr then return nil, perr end
    opts.password = p
  end
  local pass, schemas = {}, {}
  for _, kv in ipairs(u.query) do
    local k, v = kv[1], kv[2]
    if k == "schemas" then
      for s in v:gmatch("[^,]+") do schemas[#schemas + 1] = s:match("^%s*(.-)%s*$") end
    elseif k == "statement_timeout" or k == "connect_timeout" then
      local n, nerr = url_lib.whole("postgresql", k, v)
      if not n then return nil, nerr end
      opts[k == "statement_timeout" and "statement_timeout_ms" or "connect_timeout_s"] = n
    elseif k == "password" or k == "user" or k == "dbname" or k == "port" then
      return nil, ("postgresql URL: give %s in the URL itself, not as an option"):format(k)
    else
      pass[#pass + 1] = kv
    end
  end
  if #pass > 0 then opts.params = url_lib.encode_params(pass) end
  opts.schemas = schemas
  return opts
end

function _M.display(opts)
  return url_lib.display("postgresql", opts)
end

local function quote_one(name)
  return '"' .. name:gsub('"', '""') .. '"'
end

function _M.quote(name)
  local q = qualified[name]
  if q then return quote_one(q[1]) .. "." .. quote_one(q[2]) end
  return quote_one(name)
end

function _M.limit(n)
  return " LIMIT " .. string.format("%d", n)
end

-- The dialect of biconnector.filter.to_sql, made exact against `match`:
-- strings compare as text in the "C" collation (bytewise, whatever the
-- database's collation; ILIKE then folds ASCII letters only, as match does);
-- doubles compare with NaN and the infinities as NULL (they are served as
-- null).
_M.dialect = {
  quote = '"', like = "ILIKE", numbered = true,
  operand = function(c, node)
    if node.type == "string" then return "(" .. c .. ')::text COLLATE "C"' end
    if node.type == "double" then
      return "(CASE WHEN " .. c .. "::float8 IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE " .. c .. "::float8 END)"
    end
    return c
  end,
}

local function all_rows(conn, sql, params)
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

-- The schemas configured besides the default one, as a PostgreSQL array literal.
local function schema_array(conn_opts)
  local list = {}
  for i, s in ipairs(conn_opts and conn_opts.schemas or {}) do list[i] = '"' .. s:gsub('[\\"]', "\\%0") .. '"' end
  return "{" .. table.concat(list, ",") .. "}"
end

-- -> { {name=, kind=}, ... }: tables, views, materialized views and foreign
-- tables the account may read, of the default schema (as named) and of the
-- configured ones (as "schema.name").
function _M.list_tables(conn, conn_opts)
  local rows, err = all_rows(conn, [[
    SELECT n.nspname, c.relname, c.relkind, n.nspname = current_schema()
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
      AND (n.nspname = current_schema() OR n.nspname = ANY ($1::text[]))
      AND has_table_privilege(c.oid, 'SELECT')
      AND NOT c.relispartition
    ORDER BY n.nspname <> current_schema(), n.nspname, c.relname]], { schema_array(conn_opts) })
  if not rows then return nil, err end
  local list = {}
  for _, r in ipairs(rows) do
    local name = r[2]
    if not r[4] then
      name = r[1] .. "." .. r[2]
      qualified[name] = { r[1], r[2] }
    end
    list[#list + 1] = { name = name, kind = (r[3] == "v" or r[3] == "m") and "view" or "table" }
  end
  return list
end

-- -> { {name=, type=}, ... } | nil (no such table)
function _M.list_columns(conn, name, conn_opts)
  local q = qualified[name]
  local schema_cond, params
  if q then
    schema_cond, params = "n.nspname = $1 AND c.relname = $2", { q[1], q[2] }
  else
    local s, t = name:match("^([^.]+)%.(.+)$")
    local configured = false
    for _, x in ipairs(conn_opts and conn_opts.schemas or {}) do if x == s then configured = true end end
    if configured then
      qualified[name] = { s, t }
      schema_cond, params = "n.nspname = $1 AND c.relname = $2", { s, t }
    else
      schema_cond, params = "n.nspname = current_schema() AND c.relname = $1", { name }
    end
  end
  local rows, err = all_rows(conn, [[
    SELECT a.attname,
      CASE WHEN t.typtype = 'e' THEN 'enum'
           WHEN t.typcategory = 'A' THEN 'array'
           WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
           ELSE format_type(a.atttypid, a.atttypmod) END
    FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_type t ON t.oid = a.atttypid
    WHERE ]] .. schema_cond .. [[ AND a.attnum > 0 AND NOT a.attisdropped
      AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
    ORDER BY a.attnum]], params)
  if not rows then return nil, err end
  if #rows == 0 then return nil end
  local list = {}
  for i, r in ipairs(rows) do list[i] = { name = r[1], type = r[2] } end
  return list
end

function _M.query_columns(conn, sql)
  local cur, err = conn:query("SELECT * FROM (" .. sql .. ") AS bic_query LIMIT 0")
  if not cur then return nil, err end
  local cols = cur:columns()
  cur:close()
  return cols
end

-- Declared type (format_type's spelling) -> field type, exact.
-- exact: a filter on the field runs in SQL and answers what match answers.
local STRING_EXACT = { text = true, ["character varying"] = true, name = true, uuid = true, json = true,
  jsonb = true, enum = true, array = true, citext = false }
function _M.field_type(declared)
  local t = (declared or ""):lower()
  local base = t:gsub("%b()", ""):gsub("%s+$", "")
  if base == "smallint" or base == "integer" or base == "bigint" or base == "oid" then return "int", true end
  if base == "real" or base == "double precision" then return "double", true end
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
