-- The SQLite engine of biconnector.sql: URL parsing, introspection, the type
-- mapping and the SQL dialect. The interface every engine module keeps is
-- described at the top of biconnector/sql/init.lua.
local sql_lib = require "biconnector.sql"
local all_rows = sql_lib.all_rows

local _M = {
  engine = "sqlite",          -- the core.sql driver
  schemes = { "sqlite" },
  -- the biconnector.filter.to_sql dialect (docs/filter.md, "SQL")
  dialect = { quote = '"', like = "LIKE" },
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
-- Tables (virtual ones too) and views of the main schema; not the shadow
-- tables SQLite keeps for a virtual table (FTS5's docs_data, docs_idx, ...;
-- R*Tree's rt_node, ...), which pragma_table_list (SQLite 3.37) tells apart;
-- before 3.37, sqlite_master, which does not.
function _M.list_tables(conn)
  local rows, err = all_rows(conn, "SELECT name, CASE type WHEN 'view' THEN 'view' ELSE 'table' END "
    .. "FROM pragma_table_list WHERE schema = 'main' AND type IN ('table', 'view', 'virtual') "
    .. "AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name")
  if not rows and tostring(err):find("pragma_table_list", 1, true) then
    rows, err = all_rows(conn, "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
      .. "AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name")
  end
  if not rows then return nil, err end
  local list = {}
  for i, r in ipairs(rows) do list[i] = { name = r[1], kind = r[2] } end
  return list
end

-- -> { {name=, type=declared}, ... } | nil when there is no such table or view
-- Generated columns too (table_xinfo's hidden 2 and 3; table_info leaves them
-- out, though SELECT * reads them), not a virtual table's hidden columns (1).
function _M.list_columns(conn, name)
  local rows, err = all_rows(conn, "SELECT name, type FROM pragma_table_xinfo(?) WHERE hidden <> 1 ORDER BY cid",
    { name })
  if not rows and tostring(err):find("table_xinfo", 1, true) then -- SQLite before 3.26
    rows, err = all_rows(conn, "SELECT name, type FROM pragma_table_info(?) ORDER BY cid", { name })
  end
  return sql_lib.column_list(rows, err)
end

-- The result columns of a query, without reading its rows.
function _M.query_columns(conn, sql)
  return sql_lib.result_columns(conn, "SELECT * FROM (" .. sql .. ") LIMIT 0")
end

-- Declared type -> field type (nil: the column is left out) and whether a
-- filter on the column pushes down: "check" where the declared type gives the
-- field a type (check_column looks at the values stored: SQLite keeps any
-- value in any column), false where it does not. SQLite's affinity rules, in
-- order: INT -> INTEGER; CHAR, CLOB, TEXT -> TEXT; BLOB or none -> BLOB; REAL,
-- FLOA, DOUB -> REAL; else NUMERIC.
function _M.field_type(declared)
  local t = (declared or ""):upper()
  if t:find("DATETIME", 1, true) or t:find("TIMESTAMP", 1, true) then return "datetime", "check" end
  if t:find("DATE", 1, true) then return "date", "check" end
  if t:find("INT", 1, true) then return "int", "check" end
  if t:find("BOOL", 1, true) then return "int", "check" end
  if t:find("CHAR", 1, true) or t:find("CLOB", 1, true) or t:find("TEXT", 1, true) then return "string", "check" end
  if t:find("BLOB", 1, true) then return nil end
  if t == "" then return "string", false end -- no declared type: any value, compared as stored
  if t:find("REAL", 1, true) or t:find("FLOA", 1, true) or t:find("DOUB", 1, true) then return "double", "check" end
  if t:find("NUM", 1, true) or t:find("DEC", 1, true) then return "double", "check" end
  return "string", false -- NUMERIC affinity under another name (JSON, UUID, ...): text or numbers
end

-- What every stored value of a column must be for SQLite to compare it as
-- filter.match compares the value the row encoder serves (SQL over the
-- column, never NULL for a non-NULL value). Dates: canonical text that is a
-- real day and time (the "+0" modifier makes SQLite normalize 2024-02-30 to
-- 2024-03-01 and 24:00:00 to the next day, so a value that changes is none),
-- or seconds since the epoch within the years 0000-9999 the encoder serves.
local DIGITS4, DIGITS2 = "[0-9][0-9][0-9][0-9]", "[0-9][0-9]"
local DAY = DIGITS4 .. "-" .. DIGITS2 .. "-" .. DIGITS2
local FORMS = {
  int = { [true] = "typeof(%s) = 'integer'" },
  double = { [true] = "typeof(%s) IN ('integer', 'real') AND %s BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308" },
  string = { [true] = "typeof(%s) = 'text'" },
  date = {
    text = "typeof(%s) = 'text' AND %s GLOB '" .. DAY .. "' AND date(%s, '+0 days') = %s",
    epoch = "typeof(%s) IN ('integer', 'real') AND %s >= -62167219200 AND %s < 253402300800",
  },
  datetime = {
    text = "typeof(%s) = 'text' AND %s GLOB '" .. DAY .. " " .. DIGITS2 .. ":" .. DIGITS2 .. ":" .. DIGITS2
      .. "' AND strftime('%Y-%m-%d %H:%M:%S', %s, '+0 seconds') = %s",
    epoch = "typeof(%s) IN ('integer', 'real') AND %s >= -62167219200 AND %s < 253402300800",
  },
}
local FORM_ORDER = { true, "text", "epoch" }

-- Answers kept per connection until another connection commits a change
-- (PRAGMA data_version): the check reads the whole column once.
local checked = setmetatable({}, { __mode = "k" })

-- -> true | false (int, double, string), "text" | "epoch" | false (date,
-- datetime): the form every stored value of the column has; nil, message
function _M.check_column(conn, from, column, ftype)
  local version, err = all_rows(conn, "PRAGMA data_version")
  if not version then return nil, err end
  version = version[1] and version[1][1]
  local cache = checked[conn]
  if not cache or cache.version ~= version then
    cache = { version = version, answers = {} }
    checked[conn] = cache
  end
  local key = from .. "\0" .. column .. "\0" .. ftype
  local answer = cache.answers[key]
  if answer ~= nil then return answer end
  answer = false
  local forms = FORMS[ftype] or {}
  for _, name in ipairs(FORM_ORDER) do
    local form = forms[name]
    if form then
      local cond = form:gsub("%%s", function() return column end)
      local rows, qerr = all_rows(conn, "SELECT 1 FROM " .. from .. " WHERE " .. column .. " IS NOT NULL AND NOT "
        .. "COALESCE(" .. cond .. ", 0) LIMIT 1")
      if not rows then return nil, qerr end
      if #rows == 0 then
        answer = name
        break
      end
    end
  end
  cache.answers[key] = answer
  return answer
end

return _M
