-- The connector framework: a checked definition and a pure request -> response
-- function (`handle`) serving the four endpoints Bitrix24 calls. No I/O here:
-- logging goes through opts.log, def.log, or one line on stderr.
local core = require "biconnector.core"
local errors = require "biconnector.connector.errors"
local json = require "biconnector.json"
local filter = require "biconnector.connector.filter"
local caches = require "biconnector.connector.cache"
local request = require "biconnector.connector.request"
local logline = require "biconnector.host.logline"
local names = require "biconnector.connector.names"
local rows_jit = require "biconnector.connector.rows_jit"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local pcall, xpcall, setmetatable, getmetatable = pcall, xpcall, setmetatable, getmetatable
local concat, sort = table.concat, table.sort
local find, sub, lower, format, gsub, byte = string.find, string.sub, string.lower, string.format, string.gsub, string.byte
local traceback = debug.traceback
-- table.new(narr, nhash) under LuaJIT (a table made with room for its keys:
-- no rehash as they come), a plain table elsewhere
local new_tab do
  local ok, f = pcall(require, "table.new")
  new_tab = ok and f or function() return {} end
end

local _M = { _VERSION = core.version }

local methods = {}
local mt = { __index = methods }

local JSON_TYPE = "application/json; charset=utf-8"
local DEFAULT_CHUNK = 65536

local ENDPOINTS = {
  ["/check"] = "check",
  ["/table_list"] = "table_list",
  ["/table_description"] = "table_description",
  ["/data"] = "data",
}

local FIELD_TYPES = { int = true, string = true, double = true, date = true, datetime = true }
local SETTING_TYPES = { STRING = true, INT = true }

local function jstr(s)
  local text = json.encode(s)
  if text then return text end
  -- Not valid UTF-8 (a path or a message echoing raw bytes): show those bytes as "?".
  return assert(json.encode((gsub(tostring(s), "[\128-\255]", "?"))))
end

-- ---- definition checking ---------------------------------------------------

local function fail(what, msg)
  error("connector definition: " .. what .. " " .. msg, 0)
end

local function describe_value(v)
  if type(v) == "string" then return format("%q", v) end
  return type(v) == "table" and "a table" or tostring(v)
end

local function quote(v)
  return '"' .. tostring(v) .. '"'
end

local function nonempty_string(v)
  return type(v) == "string" and v ~= ""
end

-- What Bitrix24 takes for a value in a table list or a description: a
-- string PHP's empty() is false for, so neither "" nor "0" (Rest.php,
-- checkTableList and checkTableDescription: one such element and the whole
-- answer is refused).
local PHP_EMPTY = '(Bitrix24 reads "0" as empty)'
local function php_value(v)
  return type(v) == "string" and v ~= "" and v ~= "0"
end
_M.php_value = php_value

-- "<where> must be a non-empty string[ other than "0" ...], got <v>"
local function not_value(where, v)
  if v == "0" then return format('%s must be a non-empty string other than "0" %s, got "0"', where, PHP_EMPTY) end
  return format("%s must be a non-empty string, got %s", where, describe_value(v))
end

-- The first key of t that a list (keys 1..#t) does not hold, or nil: a map
-- ({deals = {...}}) or a stray key would otherwise be read as an empty or
-- shorter list, what it holds left out in silence.
local function stray_key(t)
  local n = #t
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return k end
  end
  return nil
end

-- A code with a control byte: every request naming it is refused (400, the
-- request decoding's rule), so a list or description offering one is too.
local function control_problem(where, code)
  local at = request.control_byte(code)
  if not at then return nil end
  return format("%s %s holds a control byte (0x%02X at byte %d): requests naming it are refused (400); "
    .. "table and field codes never hold one", where, errors.shown(code), byte(code, at), at)
end

local function not_list(where, what, key)
  return format("%s must be a list of %s (found key %s)", where, what, describe_value(key))
end

-- Checks a list of table entries {code, title}; returns nil or "what: why".
-- A code listed twice is refused: Bitrix24 takes the code as the table's
-- externalCode, so two entries would name one table under two titles.
local function table_list_problem(list, where)
  if type(list) ~= "table" then
    return format("%s must be a list of {code, title}, got %s", where, type(list))
  end
  local key = stray_key(list)
  if key ~= nil then return not_list(where, "{code, title}", key) end
  local seen = {}
  for i = 1, #list do
    local t = list[i]
    -- (the place is written only for a problem: a table list is checked per request)
    if type(t) ~= "table" then return format("%s[%d] must be a table {code, title}, got %s", where, i, type(t)) end
    if not php_value(t.code) then return not_value(format("%s[%d].code", where, i), t.code) end
    if not php_value(t.title) then return not_value(format("%s[%d].title", where, i), t.title) end
    local bad = control_problem(format("%s[%d].code", where, i), t.code)
    if bad then return bad end
    if seen[t.code] then return format("%s[%d].code %q repeats %s[%d]", where, i, t.code, where, seen[t.code]) end
    seen[t.code] = i
  end
  return nil
end

-- Checks a list of described fields {code, name, type}; returns nil or "what: why".
local function fields_problem(fields, where)
  if type(fields) ~= "table" then
    return format("%s must be a list of {code, name, type}, got %s", where, type(fields))
  end
  local key = stray_key(fields)
  if key ~= nil then return not_list(where, "{code, name, type}", key) end
  if fields[1] == nil then return where .. " must list at least one field" end
  local seen = {}
  for i = 1, #fields do
    local f = fields[i]
    local w = format("%s[%d]", where, i)
    if type(f) ~= "table" then return w .. " must be a table {code, name, type}, got " .. type(f) end
    if not php_value(f.code) then return not_value(w .. ".code", f.code) end
    if not php_value(f.name) then return not_value(w .. ".name", f.name) end
    local bad = control_problem(w .. ".code", f.code)
    if bad then return bad end
    if not FIELD_TYPES[f.type] then
      return w .. ".type must be one of int, string, double, date, datetime, got " .. describe_value(f.type)
    end
    if seen[f.code] then return format("%s.code %q repeats %s[%d]", w, f.code, where, seen[f.code]) end
    seen[f.code] = i
  end
  return nil
end

local function check_definition(def)
  if type(def) ~= "table" then fail("", "must be a table, got " .. type(def)) end
  if not nonempty_string(def.title) then fail("title", "must be a non-empty string, got " .. describe_value(def.title)) end
  local settings = def.settings
  if type(settings) ~= "table" then fail("settings", "must be a list of {code, name, type}, got " .. type(settings)) end
  local seen = {}
  for i = 1, #settings do
    local s = settings[i]
    local w = format("settings[%d]", i)
    if type(s) ~= "table" then fail(w, "must be a table {code, name, type}, got " .. type(s)) end
    if not nonempty_string(s.code) then fail(w .. ".code", "must be a non-empty string, got " .. describe_value(s.code)) end
    if not nonempty_string(s.name) then fail(w .. ".name", "must be a non-empty string, got " .. describe_value(s.name)) end
    if names.length(s.code) >= 512 then fail(w .. ".code", "must be shorter than 512 characters") end
    if names.length(s.name) >= 512 then fail(w .. ".name", "must be shorter than 512 characters") end
    if not SETTING_TYPES[s.type] then fail(w .. ".type", "must be \"STRING\" or \"INT\", got " .. describe_value(s.type)) end
    if seen[s.code] then fail(w .. ".code", format("%q repeats settings[%d]", s.code, seen[s.code])) end
    seen[s.code] = i
  end
  for k in pairs(settings) do
    if type(k) ~= "number" or k < 1 or k > #settings or k % 1 ~= 0 then
      fail("settings", "must be a list (found key " .. describe_value(k) .. ")")
    end
  end
  for _, name in ipairs({ "check", "data" }) do
    if type(def[name]) ~= "function" then
      fail(name, "must be a function, got " .. type(def[name]))
    end
  end
  local tables = def.tables
  if type(tables) == "table" then
    local problem = table_list_problem(tables, "tables") -- codes unique too
    if problem then error("connector definition: " .. problem, 0) end
  elseif type(tables) ~= "function" then
    fail("tables", "must be a list of {code, title} or a function, got " .. type(tables))
  end
  local describe = def.describe
  if type(describe) == "table" then
    for code, fields in pairs(describe) do
      if type(code) ~= "string" then fail("describe", "keys must be table codes, found " .. describe_value(code)) end
      local problem = fields_problem(fields, format("describe[%q]", code))
      if problem then error("connector definition: " .. problem, 0) end
    end
    if type(tables) == "table" then
      for i, t in ipairs(tables) do
        if describe[t.code] == nil then fail(format("describe[%q]", t.code), format("is missing (tables[%d] lists it)", i)) end
      end
    end
  elseif type(describe) ~= "function" then
    fail("describe", "must be a map from table code to fields or a function, got " .. type(describe))
  end
  if def.log ~= nil and type(def.log) ~= "function" then fail("log", "must be a function, got " .. type(def.log)) end
  local secrets = def.secrets
  if secrets ~= nil and type(secrets) ~= "function" and type(secrets) ~= "table" then
    fail("secrets", "must be a list of strings or a function returning one, got " .. type(secrets))
  end
  local chunk = def.chunk_size
  if chunk ~= nil and (type(chunk) ~= "number" or chunk < 1 or chunk % 1 ~= 0) then
    fail("chunk_size", "must be a positive integer, got " .. describe_value(chunk))
  end
  -- datetimes answered with an offset, 2024-08-30T12:19:57+02:00 (core.rows, docs/connector.md)
  local offset = def.datetime_offset
  if offset ~= nil and offset ~= true and not (type(offset) == "string" and (offset == "Z" or offset:match("^[+-][01]%d:[0-5]%d$")
    or offset:match("^[+-]2[0-3]:[0-5]%d$"))) then
    fail("datetime_offset", "must be true (UTC) or \"+HH:MM\", \"-HH:MM\", \"Z\", got " .. describe_value(offset))
  end
  if def.filter_limits ~= nil then -- caps on one request's filter (docs/filter.md, "Limits")
    local ok, err = pcall(filter.limits, def.filter_limits)
    if not ok then error("connector definition: " .. tostring(err):gsub("^[^:]*:%d+: ", ""), 0) end
  end
  local cache = def.cache -- table_list/table_description answers kept (biconnector.cache)
  if cache ~= nil and cache ~= false then
    if type(cache) ~= "table" then fail("cache", "must be a table {ttl = seconds} or false, got " .. type(cache)) end
    if type(cache.ttl) ~= "number" or cache.ttl ~= cache.ttl or cache.ttl <= 0 or cache.ttl == math.huge then
      fail("cache.ttl", "must be a positive number of seconds, got " .. describe_value(cache.ttl))
    end
    if cache.store ~= nil and (type(cache.store) ~= "table" or type(cache.store.get) ~= "function" or type(cache.store.set) ~= "function") then
      fail("cache.store", "must be an object with get and set methods, got " .. type(cache.store))
    end
  end
end

-- connector.new(def): checks def (raising a message naming what is wrong).
function _M.new(def)
  check_definition(def)
  return setmetatable({
    title = def.title,
    settings = def.settings,
    definition = def,
    filter_limits = filter.limits(def.filter_limits),
    cache = def.cache and { ttl = def.cache.ttl, store = def.cache.store or caches.memory() } or nil,
  }, mt)
end

function _M.is_connector(x)
  return getmetatable(x) == mt
end

local function get(x, k) return x[k] end

-- The method m of x (a table or a userdata with an __index), or nil; never raises.
-- (pcall of one function made once: LuaJIT compiles no closure's making)
local function method_of(x, m)
  local tx = type(x)
  if tx ~= "table" and tx ~= "userdata" then return nil end
  local ok, f = pcall(get, x, m)
  if ok and type(f) == "function" then return f end
  return nil
end

-- A cursor-like data result: a value with a fill(enc, max_bytes, max_rows) method.
function _M.is_cursor(x)
  return type(x) ~= "function" and method_of(x, "fill") ~= nil
end

-- What data may hand back to be released: a function, or a value with a close
-- method or a __close metamethod.
function _M.closable(x)
  if type(x) == "function" then return true end
  if method_of(x, "close") then return true end
  local m = getmetatable(x)
  return type(m) == "table" and type(rawget(m, "__close")) == "function"
end

function _M.close_value(x)
  if type(x) == "function" then return x() end
  local close = method_of(x, "close")
  if close then return close(x) end
  local m = getmetatable(x)
  if type(m) == "table" and type(rawget(m, "__close")) == "function" then return m.__close(x, nil) end
end

-- connector.load(path): a connector file returns a connector or a plain definition.
-- A database file given where a connector file goes (`serve shop.db`): say how
-- it is served, rather than Lua's "syntax error near 'format'".
local function database_file_hint(path)
  local f = io.open(path, "rb")
  local head = f and f:read(16)
  if f then f:close() end
  if head ~= "SQLite format 3\0" then return nil end
  local abs = path
  if sub(path, 1, 1) ~= "/" then
    local pwd = os.getenv("PWD")
    abs = (pwd and sub(pwd, 1, 1) == "/") and (pwd:gsub("/+$", "") .. "/" .. path:gsub("^%./", "")) or "/ABSOLUTE/PATH/" .. path
  end
  return format("%s: an SQLite database, not a connector file: serve it by URL: biconnector serve sqlite://%s"
    .. " (docs/database.md)", path, abs)
end

function _M.load(path)
  local chunk, err = loadfile(path)
  if not chunk then error(database_file_hint(path) or tostring(err), 0) end
  local ok, result = pcall(chunk)
  if not ok then error(format("%s: %s", path, tostring(result)), 0) end
  if _M.is_connector(result) then return result end
  if type(result) ~= "table" then
    error(format("%s: must return a connector or a definition table, got %s", path, type(result)), 0)
  end
  local made
  ok, made = pcall(_M.new, result)
  if not ok then error(format("%s: %s", path, tostring(made)), 0) end
  return made
end

-- ---- answers ----------------------------------------------------------------

-- Remove every connection value from a text (a log line or a refusal reason).
local function scrub(text, connection)
  if type(text) ~= "string" or type(connection) ~= "table" then return text end
  local secrets = {}
  local function collect(t, depth)
    for _, v in pairs(t) do
      if type(v) == "string" and #v >= 3 then secrets[#secrets + 1] = v
      elseif type(v) == "number" and #tostring(v) >= 3 then secrets[#secrets + 1] = tostring(v)
      elseif type(v) == "table" and depth < 4 then collect(v, depth + 1) end
    end
  end
  collect(connection, 0)
  sort(secrets, function(a, b) return #a > #b end)
  for _, s in ipairs(secrets) do
    local out, pos = {}, 1
    while true do
      local i, j = find(text, s, pos, true)
      if not i then break end
      out[#out + 1] = sub(text, pos, i - 1)
      out[#out + 1] = "***"
      pos = j + 1
    end
    if pos > 1 then
      out[#out + 1] = sub(text, pos)
      text = concat(out)
    end
  end
  return text
end

-- The configured secrets (def.secrets: a list, or a function returning one, so
-- that a reloaded token counts): masked in every answer and log line.
local function secrets_of(self)
  local secrets = self.definition.secrets
  if type(secrets) == "function" then
    local ok, list = pcall(secrets)
    secrets = ok and list or nil
  end
  return type(secrets) == "table" and secrets or {}
end

-- A log line or an error message: neither the caller's connection values nor
-- the configured secrets.
local function scrub_all(self, text, connection)
  return scrub(scrub(text, connection), secrets_of(self))
end

-- One line per event: newlines (a traceback's) become " | ".
local function one_line(text)
  return (gsub(tostring(text), "\r?\n%s*", " | "))
end

local function default_log(level, message, fields)
  local parts = { "biconnector [", tostring(level), "] ", one_line(message) }
  if fields then
    local keys = {}
    for k in pairs(fields) do
      if k ~= "traceback" then keys[#keys + 1] = tostring(k) end
    end
    sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = format(" %s=%s", k, one_line(fields[k])) end
    if fields.traceback then parts[#parts + 1] = " traceback=" .. one_line(fields.traceback) end
  end
  parts[#parts + 1] = "\n"
  io.stderr:write(concat(parts))
end

-- One request being answered: the logger, the info table, the connection.
local function json_error(status, code, message, id)
  local body = '{"error":' .. jstr(code) .. ',"message":' .. jstr(message)
  if id then body = body .. ',"id":' .. jstr(id) end
  -- 503: busy (a full connection pool, a locked database): try again shortly
  return status, { ["Content-Type"] = JSON_TYPE, ["Retry-After"] = status == 503 and "1" or nil }, body .. "}"
end

local function log_to(self, opts, level, message, fields)
  local log = (opts and opts.log) or self.definition.log or default_log
  local ok = pcall(log, level, message, fields)
  if not ok and log ~= default_log then pcall(default_log, level, message, fields) end
end

-- connector.failure(status, message): an error value a handler raises
-- (error(connector.failure(503, "database is locked"))) to answer with that
-- status and a message the client may see, instead of a bare 500
-- (biconnector.errors; the name stays because docs/connector.md gives it).
_M.failure = errors.failure
_M.is_failure = errors.is_failure
local new_error_id = errors.new_id

-- What catch (below) made of an error: {message = the value raised, traceback}.
local caught = setmetatable({}, { __mode = "k" })

-- The value a handler raised, as the log tells it: a string as it is; a
-- table's message field or __tostring; else the table itself in JSON (never
-- its address); nil (error() with no message) said so.
local function raised_text(v)
  if v == nil then return "nil (error raised with no message)" end
  if type(v) ~= "table" then return tostring(v) end
  if v.message ~= nil then return tostring(v.message) end
  local m = getmetatable(v)
  if m ~= nil and m.__tostring then return tostring(v) end
  local ok, text = pcall(json.encode, v)
  if ok and type(text) == "string" then
    if #text > 200 then text = sub(text, 1, 200) .. "..." end
    return "a table error value " .. text
  end
  return "a table error value (not JSON)"
end

-- A Lua error in a handler: 500 with an id; message and traceback go to the log.
local function handler_error(self, opts, info, connection, what, err)
  local id = new_error_id()
  local message, trace = err, nil
  if caught[err] then message, trace = err.message, err.traceback end
  if errors.is_failure(message) and type(message.status) == "number" then
    local status = errors.status_of(message)
    local text = scrub(what .. ": " .. message.message, connection)
    log_to(self, opts, "error", text, { id = id, endpoint = info.endpoint, table = info.table })
    info.status = status
    info.error = id
    return json_error(status, errors.code_of(status), text, id)
  end
  log_to(self, opts, "error", scrub_all(self, format("%s failed: %s", what, raised_text(message)), connection), {
    id = id, endpoint = info.endpoint, table = info.table,
    traceback = trace and scrub_all(self, trace, connection) or nil,
  })
  info.status = 500
  info.error = id
  return json_error(500, "internal_error", what .. " failed (error id " .. id .. ")", id)
end

-- An answer the handler returned that breaks the protocol: 500 naming it.
local function invalid_answer(self, opts, info, message, connection)
  local id = new_error_id()
  message = scrub_all(self, message, connection) -- a row value may be a connection value
  log_to(self, opts, "error", message, { id = id, endpoint = info.endpoint, table = info.table })
  info.status = 500
  info.error = id
  return json_error(500, "internal_error", message, id)
end

-- A row the framework cannot encode (Source:cut: raised inside produce, told
-- apart from errors the handler's own code raises) -> its message | nil.
local function value_error(err)
  local e = err and err.message
  if errors.is_failure(e) and e.invalid_row then return e.message end
  return nil
end

local function catch(err)
  local c = { message = err, traceback = (gsub(traceback("", 2), "^\n", "")) }
  caught[c] = true
  return c
end

-- Calls a handler under xpcall: true, results... | false, {message, traceback}.
local function call(f, ...)
  return xpcall(f, catch, ...)
end

-- ---- endpoints --------------------------------------------------------------

-- Case folding for the table search: ASCII, Latin-1 letters and Cyrillic
-- (Bitrix24's own languages), one UTF-8 capital -> its small letter.
local FOLD = {}
do
  local char = string.char
  for c = 0x80, 0x9E do -- U+00C0..U+00DE except U+00D7 (multiplication sign)
    if c ~= 0x97 then FOLD[char(0xC3, c)] = char(0xC3, c + 0x20) end
  end
  for c = 0x80, 0x8F do FOLD[char(0xD0, c)] = char(0xD1, c + 0x10) end -- U+0400..U+040F
  for c = 0x90, 0x9F do FOLD[char(0xD0, c)] = char(0xD0, c + 0x20) end -- U+0410..U+041F
  for c = 0xA0, 0xAF do FOLD[char(0xD0, c)] = char(0xD1, c - 0x20) end -- U+0420..U+042F
end

local function fold(text)
  return (gsub(lower(text), "[\195\208][\128-\191]", FOLD))
end

-- Without surrounding white space, in linear time ("%s+$" backtracks quadratically).
local trim = filter.trim

local function contains(haystack, needle)
  return find(fold(haystack), needle, 1, true) ~= nil
end

-- The elements of list ({code =, title =}) whose code or title holds search,
-- white space around it ignored and case folded as above: what a static list
-- answers, and the database sources' lists too (biconnector.sql).
function _M.search_tables(list, search)
  -- spaces around what the user typed are not part of the search
  search = fold(trim(search or ""))
  if search == "" then return list end
  local found = {}
  for _, t in ipairs(list) do
    if contains(t.code, search) or contains(t.title, search) then found[#found + 1] = t end
  end
  return found
end

local function answer_table_list(self, opts, info, req)
  local def = self.definition
  local list
  if type(def.tables) == "function" then
    local ok, result = call(def.tables, req.connection, req.search or "")
    if not ok then return handler_error(self, opts, info, req.connection, "tables", result) end
    local problem = table_list_problem(result, "tables()")
    if problem then return invalid_answer(self, opts, info, problem, req.connection) end
    list = result
  else
    list = _M.search_tables(def.tables, req.search)
  end
  local out = {}
  for i, t in ipairs(list) do
    out[i] = '{"code":' .. jstr(t.code) .. ',"title":' .. jstr(t.title) .. "}"
  end
  info.status = 200
  return 200, { ["Content-Type"] = JSON_TYPE }, "[" .. concat(out, ",") .. "]"
end

-- The described fields of a table: fields | nil, status, headers, body.
local function described_fields(self, opts, info, req)
  local def = self.definition
  local code = req.table
  if code == nil or code == "" then
    info.status = 400
    return nil, json_error(400, "bad_request", "missing table")
  end
  local fields
  -- a static list bounds what is served, whatever describe knows: a code it
  -- does not give is unknown (as /table_list never offered it)
  if type(def.tables) == "table" then
    local known = false
    for _, t in ipairs(def.tables) do
      if t.code == code then known = true break end
    end
    if not known then
      info.status = 404
      return nil, json_error(404, "not_found", "unknown table " .. quote(code))
    end
  end
  if type(def.describe) == "function" then
    local ok, result = call(def.describe, req.connection, code)
    if not ok then return nil, handler_error(self, opts, info, req.connection, "describe", result) end
    if result == nil then
      info.status = 404
      return nil, json_error(404, "not_found", "unknown table " .. quote(code))
    end
    local problem = fields_problem(result, format("describe(%q)", code))
    if problem then return nil, invalid_answer(self, opts, info, problem, req.connection) end
    fields = result
  else
    fields = def.describe[code]
    if fields == nil then
      info.status = 404
      return nil, json_error(404, "not_found", "unknown table " .. quote(code))
    end
  end
  return fields
end

local function answer_table_description(self, opts, info, req)
  local fields, status, headers, body = described_fields(self, opts, info, req)
  if not fields then return status, headers, body end
  local out = {}
  for i, f in ipairs(fields) do
    out[i] = '{"code":' .. jstr(f.code) .. ',"name":' .. jstr(f.name) .. ',"type":' .. jstr(f.type) .. "}"
  end
  info.status = 200
  return 200, { ["Content-Type"] = JSON_TYPE }, "[" .. concat(out, ",") .. "]"
end

-- table_list / table_description through the connector's cache, when it has
-- one (docs/connector.md, "Cache"): opts.cache (a store the server gives)
-- or the connector's own; info.cache tells "hit" or "miss". Only a 200 is kept.
local function cached(self, opts, info, req, endpoint)
  local answer = endpoint == "table_list" and answer_table_list or answer_table_description
  local c = self.cache
  if not c then return answer(self, opts, info, req) end
  local store = opts and opts.cache or c.store
  local key = caches.key(opts and opts.cache_namespace or self.title, endpoint, req.connection,
    endpoint == "table_list" and (req.search or "") or req.table)
  local ok, body = pcall(store.get, store, key)
  if ok and type(body) == "string" then
    info.status, info.cache = 200, "hit"
    return 200, { ["Content-Type"] = JSON_TYPE }, body
  end
  local status, headers, answered = answer(self, opts, info, req)
  info.cache = "miss"
  if status == 200 and type(answered) == "string" then pcall(store.set, store, key, answered, c.ttl) end
  return status, headers, answered
end

-- ---- urlData rows -------------------------------------------------------------

-- The first field a filter AST names that is not in the list codes, or nil.
local function field_outside(node, codes)
  if node.kind == "cond" then
    for _, c in ipairs(codes) do if c == node.field then return nil end end
    return node.field
  end
  for _, item in ipairs(node.items) do
    local f = field_outside(item, codes)
    if f then return f end
  end
  return nil
end

-- Scan budget: once the filter has tested this many conditions on rows it
-- dropped in one produce() call (4096 rows of a small filter), it returns what it has -- "" when the filter kept nothing -- so that a server on
-- one thread serves its other connections before asking again (kept rows are
-- bounded by the chunk size already). docs/serve.md, "No request holds the others".
local SCAN_BUDGET = 4096 * 4

-- How many conditions a filter tests per row (at least 4: a small filter's
-- budget is 4096 rows), so that a filter of 5000 conditions hands back after
-- a handful of rows rather than 4096 of them.
local function conditions_of(node)
  if node.kind == "cond" then return 1 end
  local n = 0
  for _, item in ipairs(node.items) do n = n + conditions_of(item) end
  return n
end

-- A row source feeds the C encoder the rows of one answer, one mode each:
-- a cursor (fills the encoder itself), a list encoded in runs, and a scan
-- (an iterator, or a list the framework filters) row by row. Each has
-- fill(self): adds rows until a chunk is pending, the scan budget is spent or
-- the rows end (self.finished). They share produce (one chunk) and cut.
local Source = {}
Source.__index = Source

-- A row the framework cannot encode: a failure marked as the answer's, told
-- apart (value_error) from the errors the handler's own code raises.
function Source:cut(row_number, field_index, message)
  local where
  if field_index and field_index > 0 then
    where = format("table %q, row %d, field %q: %s", self.tbl, row_number, self.fields[field_index].code, message)
  else
    where = format("table %q, row %d: %s", self.tbl, row_number, message)
  end
  local f = errors.failure(500, where)
  f.invalid_row = true
  error(f, 0)
end

-- Whether the limit the handler left to the framework is reached (then finished).
-- What the encoder wrote as null (applied.invalid = "null"), told after its result.
function Source:told_nulled(nulled, field_index, why)
  if nulled then self.on_nulled(nulled, self.fields[field_index].code, why) end
end

function Source:at_limit()
  if self.limit and self.emitted >= self.limit then self.finished = true end
  return self.finished
end

-- One step: rows until a chunk is pending or the rows end -> the chunk (nil once finished).
function Source:produce()
  if self.finished then return nil end
  local enc, info = self.enc, self.info
  self:fill()
  if self.finished then enc:finish() end
  info.rows = self.emitted
  local chunk = enc:take()
  info.bytes = info.bytes + #chunk
  return chunk
end

local Cursor = setmetatable({}, Source)
Cursor.__index = Cursor

-- A cursor-like source fills the encoder itself (select and filter applied).
function Cursor:fill()
  local enc = self.enc
  if enc:pending() >= self.chunk_size or self:at_limit() then return end
  local limit = self.limit
  local added, done, nulled, column, why = self.rows:fill(enc, self.chunk_size, limit and (limit - self.emitted) or nil)
  if added == nil then error(format("table %q: reading rows failed: %s", self.tbl, tostring(done)), 0) end
  self.emitted = self.emitted + added
  if nulled and nulled > 0 then self.on_nulled(nulled, self.select[column] or tostring(column), why) end
  if done then self.finished = true end
end

local List = setmetatable({}, Source)
List.__index = List

-- A list nobody filters: encoded in runs (enc:add_list stops at a full chunk).
-- Under LuaJIT the array rows go through rows_jit first, as far as it takes
-- them; enc:add_list goes on from the row it stopped at.
function List:fill()
  local enc, rows, limit = self.enc, self.rows, self.limit
  while enc:pending() < self.chunk_size and not self:at_limit() do
    local n, last = self.n, #rows
    if limit and last - n > limit - self.emitted then last = n + (limit - self.emitted) end
    if n >= last then self.finished = true return end
    local first, upto = n + 1, last
    if rows_jit.enabled then
      self.fast = self.fast or rows_jit.list_reader(enc)
      first, upto = self.fast:take(rows, first, last)
    end
    local nxt, bad_row, field_index, message, nulled, nulled_field, nulled_why = enc:add_list(rows, first, upto)
    if not nxt then
      self:told_nulled(nulled, nulled_field, nulled_why) -- (the rows before the one refused)
      self:cut(bad_row, field_index, message)
    end
    self:told_nulled(bad_row, field_index, message)
    self.emitted = self.emitted + (nxt - 1 - n)
    self.n = nxt - 1
  end
end

local Scan = setmetatable({}, Source)
Scan.__index = Scan

-- Row by row: the next row of an iterator or a list, the filter the handler
-- left to the framework matched on its normalized values.
function Scan:fill()
  local enc, chunk_size, filter_ast, keep_row = self.enc, self.chunk_size, self.filter, self.keep_row
  local scanned = 0 -- conditions tested on rows the filter dropped in this call (see SCAN_BUDGET)
  while enc:pending() < chunk_size do
    if scanned >= SCAN_BUDGET or self:at_limit() then return end
    local n = self.n
    local row = self.next_row(n)
    if row == nil then
      self.finished = true
      return
    end
    n = n + 1
    self.n = n
    if self.unseen and n == 1 and type(row) == "table" and (row[1] ~= nil or #row > 0) then
      self:cut(1, 0, format("array rows in select order (applied.select) lack field %q, which the filter uses "
        .. "and the handler did not apply (applied.filter): return map rows, or apply the filter", self.unseen))
    end
    -- a failure: nil, field_index, message; values nulled (applied.invalid):
    -- a result, then nulled, field_index, message
    if filter_ast then
      -- each value converted once: typed for the filter, and its JSON text
      -- staged for the answer (enc:keep appends it)
      local normalized, a, b, c = enc:stage(row)
      if not normalized then self:cut(n, a, b) end
      self:told_nulled(a, b, c)
      if keep_row(normalized) then
        local kept, field_index, message = enc:keep()
        if not kept then self:cut(n, field_index, message) end
        self.emitted = self.emitted + 1
      else
        scanned = scanned + self.filter_cost
      end
    else
      local ok, a, b, c = enc:add(row)
      if not ok then self:cut(n, a, b) end
      self:told_nulled(a, b, c)
      self.emitted = self.emitted + 1
    end
  end
end

-- The row source for what data returned (rows, applied already checked).
local function row_source(info, q, fields, rows, applied, enc, chunk_size, on_nulled)
  local filter_ast = (not applied.filter) and q.filter or nil
  local src = {
    info = info, tbl = q.table, fields = fields, select = q.select, enc = enc, chunk_size = chunk_size,
    limit = (not applied.limit) and q.limit or nil, emitted = 0, n = 0, finished = false, on_nulled = on_nulled,
  }
  if _M.is_cursor(rows) then
    src.rows = rows
    return setmetatable(src, Cursor)
  end
  if type(rows) == "table" and not filter_ast then
    src.rows = rows
    return setmetatable(src, List)
  end
  src.filter, src.filter_cost = filter_ast, filter_ast and math.max(4, conditions_of(filter_ast)) or 4
  -- compiled once for the request; enc:stage gives every value its field's type and NULL as nil
  src.keep_row = filter_ast and filter.compile(filter_ast, "normalized")
  -- array rows in select order cannot carry a filtered field the select leaves out:
  -- the filter would see null and drop every row in silence
  src.unseen = filter_ast and applied.select and field_outside(filter_ast, q.select)
  if type(rows) == "table" then
    src.next_row = function(n)
      local row = rows[n + 1]
      if row == nil and n < #rows then src:cut(n + 1, 0, "expected a row table, got nil") end
      return row
    end
  else
    src.next_row = function() return rows() end
  end
  return setmetatable(src, Scan)
end

-- ---- urlData answers ----------------------------------------------------------

-- The select of a request as codes and described-field indexes -> codes, indexes | nil, unknown code.
local function select_of(req, fields)
  local index = {}
  for i, f in ipairs(fields) do index[f.code] = i end
  local codes, indexes = {}, {}
  if req.select ~= nil and req.select[1] ~= nil then
    for i, code in ipairs(req.select) do
      if index[code] == nil then return nil, code end
      codes[i], indexes[i] = code, index[code]
    end
  else
    for i, f in ipairs(fields) do codes[i], indexes[i] = f.code, i end
  end
  return codes, indexes
end

-- What data handed back to release (a close function, a to-be-closed value,
-- the cursor's own close), called exactly once whenever reading stops, with
-- the warning for values that went as null. -> release, on_nulled
local function releaser(self, opts, q, rows, closer)
  local closers = {}
  if closer ~= nil then closers[1] = closer end
  if _M.is_cursor(rows) then closers[#closers + 1] = rows end
  -- (not closed at the start even with nothing to close: the warning for
  -- values sent as null is told here)
  local closed = false
  local nulled_total, nulled_field, nulled_why = 0, nil, nil
  local connection = q.connection
  local function release()
    if closed then return end
    closed = true
    if nulled_total > 0 then
      log_to(self, opts, "warn", scrub(format("table %q: %d value%s did not fit the described type and went as null "
        .. "(first: field %q, %s)", q.table, nulled_total, nulled_total == 1 and "" or "s", tostring(nulled_field),
        tostring(nulled_why)), connection), { endpoint = "data", table = q.table })
    end
    for _, c in ipairs(closers) do
      local done, failure = xpcall(_M.close_value, catch, c)
      if not done then
        log_to(self, opts, "error", scrub("data close failed: " .. raised_text(failure.message), connection), {
          endpoint = "data", table = q.table, traceback = scrub(failure.traceback, connection) })
      end
    end
  end
  local function on_nulled(n, field, why)
    if nulled_total == 0 then nulled_field, nulled_why = field, why end
    nulled_total = nulled_total + n
  end
  return release, on_nulled
end

-- What is wrong with data's results (the protocol of docs/connector.md) -> nil | message
local function data_result_problem(q, rows, applied, closer)
  if closer ~= nil and not _M.closable(closer) then
    return format("data(%q): the third result must be a close function or a value "
      .. "with a close method or __close, got %s", q.table, type(closer))
  end
  if type(rows) ~= "table" and type(rows) ~= "function" and not _M.is_cursor(rows) then
    return format("data(%q) must return a list of rows, an iterator or a cursor, got %s", q.table, type(rows))
  end
  -- one row returned bare ({id = 1}), or rows keyed by id: read as a list, no row
  -- (one test, not a walk of the list: a list of rows has a row 1 or no key)
  if type(rows) == "table" and rawget(rows, 1) == nil and getmetatable(rows) == nil and next(rows) ~= nil
    and not _M.is_cursor(rows) then
    return format("data(%q) must return a list of rows, an iterator or a cursor, got a table with key %s "
      .. "and no row 1 (one row goes in a list: {row})", q.table, describe_value((next(rows))))
  end
  if applied ~= nil and type(applied) ~= "table" then
    return format("data(%q): the second result must be a table like {filter = true}, got %s", q.table, type(applied))
  end
  local invalid = applied and applied.invalid
  if invalid ~= nil and invalid ~= "error" and invalid ~= "null" then
    return format('data(%q): applied.invalid must be "error" or "null", got %s', q.table, describe_value(invalid))
  end
  if _M.is_cursor(rows) and q.filter and not (applied and applied.filter) then
    return format("data(%q): a cursor must apply the filter (return applied.filter = true)", q.table)
  end
  return nil
end

-- The body after the first chunk: the chunks one by one; an error cuts the
-- answer (logged with an id, info.error) and ends it with nil.
local function stream_body(self, opts, info, q, src, first, stop)
  local done = false
  return function()
    if done then return nil end
    if first then
      local c = first
      first = nil
      return c
    end
    local step_ok, chunk = call(src.produce, src)
    if not step_ok then
      done = true
      stop()
      local id = new_error_id()
      info.error = id
      local message = value_error(chunk)
      local trace = nil
      if not message then message, trace = chunk.message, chunk.traceback end
      log_to(self, opts, "error", scrub_all(self, "data stream cut: " .. raised_text(message), q.connection), {
        id = id, endpoint = "data", table = q.table, rows = info.rows, traceback = trace and scrub_all(self, trace, q.connection),
      })
      return nil
    end
    if src.finished then
      done = true
      stop()
      if chunk == "" then return nil end
    end
    return chunk
  end
end

local function answer_data(self, opts, info, req)
  local fields, status, headers, body = described_fields(self, opts, info, req)
  if not fields then return status, headers, body end
  local select_codes, select_index = select_of(req, fields)
  if not select_codes then
    info.status = 400
    return json_error(400, "bad_request", "unknown field in select: " .. quote(select_index))
  end
  -- the filter typed by the fields, within the connector's caps (filter_limits)
  local ast, err = filter.parse(req.filter_raw, fields, self.filter_limits)
  if err then
    info.status = 400
    return json_error(400, "bad_request", err)
  end
  req.filter = ast

  local q = {
    table = req.table, select = select_codes, filter = req.filter, filter_raw = req.filter_raw,
    limit = req.limit, map_fields = req.map_fields, connection = req.connection, fields = fields,
  }
  local def = self.definition
  local called, rows, applied, closer = call(def.data, req.connection, q)
  if not called then return handler_error(self, opts, info, req.connection, "data", rows) end
  local release, on_nulled = releaser(self, opts, q, rows, closer)
  info.close = release
  local problem = data_result_problem(q, rows, applied, closer)
  if problem then
    release()
    return invalid_answer(self, opts, info, problem, q.connection)
  end
  applied = applied or {}
  if _M.is_cursor(rows) then applied = { select = true, filter = applied.filter, limit = applied.limit } end

  local chunk_size = (opts and opts.chunk_size) or def.chunk_size or DEFAULT_CHUNK
  local enc = core.rows.new(fields, select_index, {
    -- without applied.select an array row as wide as a narrower select is in
    -- select order (design.md's sketch), any other in described order
    arrays = applied.select and "select" or "auto", chunk_size = chunk_size,
    datetime_offset = def.datetime_offset == true and "Z" or def.datetime_offset,
    invalid = applied.invalid, -- "null": values that do not fit go as null, with a warning (sql/init.lua)
  })
  local src = row_source(info, q, fields, rows, applied, enc, chunk_size, on_nulled)
  local function stop()
    enc:close()
    release()
  end

  -- The first chunk is produced now: an error before streaming starts is a 500.
  local first_ok, first = call(src.produce, src)
  if not first_ok then
    stop()
    local message = value_error(first)
    if message then return invalid_answer(self, opts, info, message, q.connection) end
    return handler_error(self, opts, info, q.connection, "data", first)
  end
  info.status = 200
  local hdrs = { ["Content-Type"] = JSON_TYPE }
  if src.finished then
    stop()
    return 200, hdrs, first
  end
  return 200, hdrs, stream_body(self, opts, info, q, src, first, stop)
end

-- ---- routing ----------------------------------------------------------------

local SLASH = 47 -- "/"

-- (byte tests and plain finds: no string is made for a request that needs none)
-- bare: the path is a server's decoded path without its query string (opts.bare_path):
-- a ? in it came percent-encoded, a byte of the path; else a ? starts the query string.
local function route(path, prefix, bare)
  path = path or "/"
  if not bare then
    local q = find(path, "?", 1, true)
    if q then path = sub(path, 1, q - 1) end
  end
  if prefix and prefix ~= "" and prefix ~= "/" then
    if byte(prefix, -1) == SLASH then prefix = sub(prefix, 1, -2) end
    if find(path, prefix, 1, true) ~= 1 then return nil end
    path = sub(path, #prefix + 1)
  end
  if #path > 1 and byte(path, -1) == SLASH then path = sub(path, 1, -2) end
  return ENDPOINTS[path]
end

-- c:handle(http, opts) -> status, headers, body (string or chunk iterator), info
function methods.handle(self, http, opts)
  -- room for what an answer sets (endpoint, table, status, rows, bytes, then
  -- cache or error, the finisher's sent and end): a constructor sizes it for
  -- its two non-nil keys, and it was rehashed twice per answer (issue 25)
  local info = new_tab(0, 8)
  info.rows, info.bytes = 0, 0
  if type(http) ~= "table" then error("handle: expected a request table, got " .. type(http), 2) end
  local endpoint = route(http.path, opts and opts.prefix, opts and opts.bare_path)
  info.endpoint = endpoint
  local status, headers, body
  if not endpoint then
    status, headers, body = json_error(404, "not_found", "no such endpoint: " .. tostring(http.path))
  elseif http.method ~= "POST" then
    status, headers, body = json_error(405, "method_not_allowed", "use POST")
    headers["Allow"] = "POST"
  else
    local decoded, req, err = call(request.decode, http)
    if not decoded then
      status, headers, body = handler_error(self, opts, info, nil, "request decoding", req)
    elseif not req then
      local st = type(err) == "table" and err.status or 400
      status, headers, body = json_error(st, errors.code_of(st),
        type(err) == "table" and tostring(err.message) or tostring(err))
    else
      info.table = req.table
      local connection = req.connection or {}
      req.connection = connection
      -- the endpoint too: a source may test its upstream only for /check
      -- ("checks the availability of the connection to the external source")
      local ok, allowed, reason = call(self.definition.check, connection, endpoint)
      if not ok then
        status, headers, body = handler_error(self, opts, info, connection, "check", allowed)
      elseif not allowed then
        -- the caller's own (refused) values go back to the caller as the check wrote
        -- them; only the configured secrets are masked
        reason = scrub(type(reason) == "string" and reason ~= "" and reason or "access denied", secrets_of(self))
        status, headers, body = json_error(403, "forbidden", reason)
      elseif endpoint == "check" then
        status, headers, body = 200, { ["Content-Type"] = JSON_TYPE }, '{"ok":true}'
      elseif endpoint == "table_list" or endpoint == "table_description" then
        status, headers, body = cached(self, opts, info, req, endpoint)
      else
        status, headers, body = answer_data(self, opts, info, req)
      end
    end
  end
  info.status = status
  if type(body) == "string" then
    info.bytes = #body
  end
  return status, headers, body, info
end

-- ---- the end of an answer (both hosts) ------------------------------------------

local clock = core.process.clock
_M.clock = clock -- seconds, monotonic: a host's `started`

local NO_OPTS = {}

-- The finish of one answer: a callable object rather than a closure (LuaJIT
-- compiles neither the making of a closure nor the code around it; small
-- requests pay for that, issue 25).
-- Its state is kept in the object's array part (indices below): a table of
-- six named fields took 256 bytes, the array 120 (a small request's garbage
-- costs, issue 25).
local F_HTTP, F_OPTS, F_STATUS, F_INFO, F_STARTED, F_FINISHED = 1, 2, 3, 4, 5, 6
local Finish = {}
Finish.__index = Finish

function Finish.__call(self, how, bytes)
  local info = self[F_INFO]
  if self[F_FINISHED] then return info end
  self[F_FINISHED] = true
  bytes = bytes or 0
  local opts, status = self[F_OPTS], self[F_STATUS]
  local release = info.close
  if type(release) == "function" then
    info.close = nil
    local ok, err = pcall(release)
    if not ok then
      pcall(opts.log or default_log, "error", "releasing the data source failed", { error = tostring(err) })
    end
  end
  info.sent, info["end"] = bytes, how
  local metrics, access_log = opts.metrics, opts.access_log
  if metrics or access_log then
    local now = clock()
    local seconds = now - (self[F_STARTED] or now)
    if metrics then
      metrics:observe(info.endpoint, status, bytes, info.rows, seconds,
        info.error ~= nil or (type(status) == "number" and status >= 500))
      if info.cache then metrics:cache(info.endpoint, info.cache == "hit") end
    end
    if access_log then access_log(logline.access(self[F_HTTP], status, info, bytes, seconds * 1000, how)) end
  end
  return info
end

-- connector.finisher(http, opts, status, info, started) -> finish(how, bytes) -> info:
-- what every host does once an answer ended, however it ended ("ok",
-- "aborted", "error", ...; bytes really sent), and only once: releases what
-- the data handler handed back (info.close), counts the answer in
-- opts.metrics (a biconnector.metrics registry; failed: an error id was
-- given or the status is 5xx), and hands the access line (logline.access,
-- without its time) to opts.access_log; opts.log: where a failed release is
-- told. started: the clock (connector.clock) when the request arrived.
-- finish is a callable object (call it as a function; pcall takes it too).
function _M.finisher(http, opts, status, info, started)
  opts = opts or NO_OPTS
  -- the clock only for what measures the answer's time
  if started == nil and (opts.metrics or opts.access_log) then started = clock() end
  return setmetatable({ http, opts, status, type(info) == "table" and info or {}, started, false }, Finish)
end

-- c:answer(http, opts) -> status, headers, body (string or chunk iterator),
-- finish(how, bytes): the call a host makes. opts: handle's (prefix, log,
-- chunk_size, cache, cache_namespace) and the finisher's (metrics,
-- access_log); started: when the request arrived (default: now). A
-- streamed body gives its chunks, then nil at the end, or false when the
-- connector cut the answer (an error after the first chunk: the host must
-- end it so that it cannot look whole). A host sends the answer and calls
-- finish once.
function methods.answer(self, http, opts, started)
  if started == nil and opts and (opts.metrics or opts.access_log) then started = clock() end
  local status, headers, body, info = self:handle(http, opts)
  if type(body) == "function" then
    local chunks = body
    body = function()
      local chunk = chunks()
      if chunk == nil and info.error ~= nil then return false end
      return chunk
    end
  end
  return status, headers, body, _M.finisher(http, opts, status, info, started)
end

return _M
