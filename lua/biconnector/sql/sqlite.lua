-- The SQLite engine of biconnector.sql: URL parsing, introspection, the type
-- mapping and the SQL dialect. The interface every engine module keeps is
-- described at the top of biconnector/sql/init.lua.
local sql_lib = require "biconnector.sql"
local all_rows = sql_lib.all_rows

local _M = {
  engine = "sqlite",          -- the core.sql driver
  schemes = { "sqlite" },
  dialect = "sqlite",         -- biconnector.filter.to_sql dialect
  placeholder = "?",
}

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- Query-string options a URL may carry, and the open option each sets.
local URL_OPTIONS = {
  busy_timeout = "busy_timeout_ms", -- milliseconds to wait for a lock (default 5000)
  pool_size = "pool_size",          -- connections per process (biconnector.sql's pool)
}

-- sqlite:///absolute/path.db[?busy_timeout=MS] -> options for core.sql.open
function _M.parse_url(url)
  local rest = url:match("^sqlite:(.*)$")
  if not rest then return nil, "not a sqlite: URL" end
  local query
  rest, query = rest:match("^([^?]*)%??(.*)$")
  local path
  if rest:sub(1, 3) == "///" then
    path = rest:sub(3)
  elseif rest:sub(1, 2) == "//" then
    return nil, "sqlite URL: expected sqlite:///absolute/path.db (three slashes), got " .. url
  else
    path = rest
  end
  path = unescape(path)
  if path == "" then return nil, "sqlite URL: no database file in " .. url end
  if path:sub(1, 1) ~= "/" then
    return nil, "sqlite URL: the database path must be absolute (sqlite:///abs/path.db), got " .. url
  end
  local opts = { path = path }
  for pair in query:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    k = k and unescape(k)
    if not k or not URL_OPTIONS[k] then
      return nil, "sqlite URL: unknown option '" .. tostring(k or pair) .. "' (known: busy_timeout, pool_size)"
    end
    local n = tonumber(unescape(v))
    if not n or n < 0 or n % 1 ~= 0 or (k == "pool_size" and n < 1) then
      return nil, "sqlite URL: " .. k .. (k == "pool_size" and " expects a whole number from 1, got '"
        or " expects a whole number of milliseconds, got '") .. v .. "'"
    end
    opts[URL_OPTIONS[k]] = n
  end
  return opts
end

-- What logs may show of the options (SQLite has no password).
function _M.display(opts)
  return "sqlite:" .. tostring(opts.path)
end

_M.quote = sql_lib.quoter('"')
_M.limit = sql_lib.limit_clause

-- -> { {name=, kind="table"|"view"}, ... } in name order
function _M.list_tables(conn)
  local rows, err = all_rows(conn, "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
    .. "AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name")
  if not rows then return nil, err end
  local list = {}
  for i, r in ipairs(rows) do list[i] = { name = r[1], kind = r[2] } end
  return list
end

-- -> { {name=, type=declared}, ... } | nil when there is no such table or view
function _M.list_columns(conn, name)
  return sql_lib.column_list(all_rows(conn, "SELECT name, type FROM pragma_table_info(?) ORDER BY cid", { name }))
end

-- The result columns of a query, without reading its rows.
function _M.query_columns(conn, sql)
  return sql_lib.result_columns(conn, "SELECT * FROM (" .. sql .. ") LIMIT 0")
end

-- Declared type -> field type (nil: the column is left out) and whether a
-- filter on the column pushes down exactly (the column's affinity stores the
-- values as the field type compares them). SQLite's affinity rules, in order:
-- INT -> INTEGER; CHAR, CLOB, TEXT -> TEXT; BLOB or none -> BLOB; REAL, FLOA,
-- DOUB -> REAL; else NUMERIC.
function _M.field_type(declared)
  local t = (declared or ""):upper()
  if t:find("DATETIME", 1, true) or t:find("TIMESTAMP", 1, true) then return "datetime", true end
  if t:find("DATE", 1, true) then return "date", true end
  if t:find("INT", 1, true) then return "int", true end
  if t:find("BOOL", 1, true) then return "int", true end
  if t:find("CHAR", 1, true) or t:find("CLOB", 1, true) or t:find("TEXT", 1, true) then return "string", true end
  if t:find("BLOB", 1, true) then return nil end
  if t == "" then return "string", false end -- no declared type: any value, compared as stored
  if t:find("REAL", 1, true) or t:find("FLOA", 1, true) or t:find("DOUB", 1, true) then return "double", true end
  if t:find("NUM", 1, true) or t:find("DEC", 1, true) then return "double", true end
  return "string", false -- NUMERIC affinity under another name (JSON, UUID, ...): text or numbers
end

return _M
