-- The connector framework: a checked definition and a pure request -> response
-- function (`handle`) serving the four endpoints Bitrix24 calls. No I/O here:
-- logging goes through opts.log, def.log, or one line on stderr.
local core = require "biconnector.core"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local pcall, xpcall, setmetatable, getmetatable = pcall, xpcall, setmetatable, getmetatable
local concat, sort = table.concat, table.sort
local find, sub, lower, format, gsub = string.find, string.sub, string.lower, string.format, string.gsub
local traceback = debug.traceback

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

-- Loaded on first use: the JSON codec and the request/filter parts.
local json_encode
local function jstr(s)
  if not json_encode then json_encode = require("biconnector.json").encode end
  local text = json_encode(s)
  if text then return text end
  -- Not valid UTF-8 (a path or a message echoing raw bytes): show those bytes as "?".
  return assert(json_encode((gsub(tostring(s), "[\128-\255]", "?"))))
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

-- Checks a list of table entries {code, title}; returns nil or "what: why".
local function table_list_problem(list, where)
  if type(list) ~= "table" then
    return format("%s must be a list of {code, title}, got %s", where, type(list))
  end
  for i = 1, #list do
    local t = list[i]
    local w = format("%s[%d]", where, i)
    if type(t) ~= "table" then return w .. " must be a table {code, title}, got " .. type(t) end
    if not nonempty_string(t.code) then return w .. ".code must be a non-empty string, got " .. describe_value(t.code) end
    if not nonempty_string(t.title) then return w .. ".title must be a non-empty string, got " .. describe_value(t.title) end
  end
  return nil
end

-- Checks a list of described fields {code, name, type}; returns nil or "what: why".
local function fields_problem(fields, where)
  if type(fields) ~= "table" then
    return format("%s must be a list of {code, name, type}, got %s", where, type(fields))
  end
  if fields[1] == nil then return where .. " must list at least one field" end
  local seen = {}
  for i = 1, #fields do
    local f = fields[i]
    local w = format("%s[%d]", where, i)
    if type(f) ~= "table" then return w .. " must be a table {code, name, type}, got " .. type(f) end
    if not nonempty_string(f.code) then return w .. ".code must be a non-empty string, got " .. describe_value(f.code) end
    if not nonempty_string(f.name) then return w .. ".name must be a non-empty string, got " .. describe_value(f.name) end
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
    if #s.code >= 512 then fail(w .. ".code", "must be shorter than 512 characters") end
    if #s.name >= 512 then fail(w .. ".name", "must be shorter than 512 characters") end
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
    local problem = table_list_problem(tables, "tables")
    if problem then error("connector definition: " .. problem, 0) end
    local codes = {}
    for i, t in ipairs(tables) do
      if codes[t.code] then fail(format("tables[%d].code", i), format("%q repeats tables[%d]", t.code, codes[t.code])) end
      codes[t.code] = i
    end
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
    local ok, err = pcall(require("biconnector.filter").limits, def.filter_limits)
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
    filter_limits = require("biconnector.filter").limits(def.filter_limits),
    cache = def.cache and { ttl = def.cache.ttl, store = def.cache.store or require("biconnector.cache").memory() } or nil,
  }, mt)
end

function _M.is_connector(x)
  return getmetatable(x) == mt
end

-- The method m of x (a table or a userdata with an __index), or nil; never raises.
local function method_of(x, m)
  local tx = type(x)
  if tx ~= "table" and tx ~= "userdata" then return nil end
  local ok, f = pcall(function() return x[m] end)
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
function _M.load(path)
  local chunk, err = loadfile(path)
  if not chunk then error(tostring(err), 0) end
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

-- Error ids: 8 hex digits, a per-process counter below a random part mixed
-- with the pid, so that forked workers (same random state) differ.
local getpid = core.process and core.process.getpid
local id_counter = 0
local function new_error_id()
  id_counter = (id_counter + 1) % 0x10000
  local pid = getpid and getpid() or 0
  return format("%04x%04x", (math.random(0, 0xffff) + pid * 40503) % 0x10000, id_counter)
end

-- One request being answered: the logger, the info table, the connection.
local function json_error(status, code, message, id)
  local body = '{"error":' .. jstr(code) .. ',"message":' .. jstr(message)
  if id then body = body .. ',"id":' .. jstr(id) end
  -- 503: busy (a full connection pool, a locked database): try again shortly
  return status, { ["Content-Type"] = JSON_TYPE, ["Retry-After"] = status == 503 and "1" or nil }, body .. "}"
end

local ERROR_CODES = {
  [400] = "bad_request", [403] = "forbidden", [404] = "not_found",
  [405] = "method_not_allowed", [415] = "unsupported_media_type", [500] = "internal_error",
  [503] = "service_unavailable", [504] = "gateway_timeout",
}

local function log_to(self, opts, level, message, fields)
  local log = (opts and opts.log) or self.definition.log or default_log
  local ok = pcall(log, level, message, fields)
  if not ok and log ~= default_log then pcall(default_log, level, message, fields) end
end

-- connector.failure(status, message): an error value a handler raises
-- (error(connector.failure(503, "database is locked"))) to answer with that
-- status and a message the client may see, instead of a bare 500.
local failure_mt = { __tostring = function(f) return f.message end }
function _M.failure(status, message)
  return setmetatable({ status = status, message = tostring(message) }, failure_mt)
end

-- A Lua error in a handler: 500 with an id; message and traceback go to the log.
local function handler_error(self, opts, info, connection, what, err)
  local id = new_error_id()
  local message, trace = err, nil
  if type(err) == "table" and err.message then message, trace = err.message, err.traceback end
  if getmetatable(message) == failure_mt and type(message.status) == "number" then
    local status = message.status >= 400 and message.status <= 599 and message.status or 500
    local text = scrub(what .. ": " .. message.message, connection)
    log_to(self, opts, "error", text, { id = id, endpoint = info.endpoint, table = info.table })
    info.status = status
    info.error = id
    return json_error(status, ERROR_CODES[status] or (status >= 500 and "internal_error" or "bad_request"), text, id)
  end
  if type(message) == "table" and message.message ~= nil then message = message.message end
  log_to(self, opts, "error", scrub_all(self, format("%s failed: %s", what, tostring(message)), connection), {
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

-- A row the framework cannot encode (raised inside produce, told apart from
-- errors the handler's own code raises).
local value_error_mt = {}
local function value_error(caught)
  local e = caught and caught.message
  if getmetatable(e) == value_error_mt then return e.message end
  return nil
end

local function catch(err)
  return { message = err, traceback = (gsub(traceback("", 2), "^\n", "")) }
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
local function trim(text)
  local i = find(text, "%S")
  if not i then return "" end
  local j = #text
  while find(sub(text, j, j), "^%s") do j = j - 1 end
  return sub(text, i, j)
end

local function contains(haystack, needle)
  return find(fold(haystack), needle, 1, true) ~= nil
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
    -- spaces around what the user typed are not part of the search
    local search = fold(trim(req.search or ""))
    list = {}
    for _, t in ipairs(def.tables) do
      if search == "" or contains(t.code, search) or contains(t.title, search) then list[#list + 1] = t end
    end
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
  if type(def.describe) == "function" then
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
  local key = require("biconnector.cache").key(opts and opts.cache_namespace or self.title, endpoint, req.connection,
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

-- The rows of a urlData answer, pulled from a list or an iterator, filtered and
-- limited where the handler left that to the framework, fed to the C encoder.
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

local function row_source(info, q, fields, rows, applied, enc, chunk_size, on_nulled)
  local filter_ast = (not applied.filter) and q.filter or nil
  local filter_cost = filter_ast and math.max(4, conditions_of(filter_ast)) or 4
  -- array rows in select order cannot carry a filtered field the select leaves out:
  -- the filter would see null and drop every row in silence
  local unseen = filter_ast and applied.select and field_outside(filter_ast, q.select)
  local limit = (not applied.limit) and q.limit or nil
  -- compiled once for the request; enc:normalize gives every value its field's type and NULL as nil
  local keep_row = filter_ast and require("biconnector.filter").compile(filter_ast, "normalized")
  local cursor = _M.is_cursor(rows)
  local is_list = not cursor and type(rows) == "table"
  local n, emitted, finished = 0, 0, false
  local tbl = q.table

  local function cut(row_number, field_index, message)
    local where
    if field_index and field_index > 0 then
      where = format("table %q, row %d, field %q: %s", tbl, row_number, fields[field_index].code, message)
    else
      where = format("table %q, row %d: %s", tbl, row_number, message)
    end
    error(setmetatable({ message = where }, value_error_mt), 0)
  end

  -- One step: encodes rows until a chunk is pending or the rows end; returns the chunk.
  local function produce()
    if finished then return nil end
    local scanned = 0 -- conditions tested on rows the filter dropped in this call (see SCAN_BUDGET)
    while enc:pending() < chunk_size do
      if scanned >= SCAN_BUDGET then break end
      if limit and emitted >= limit then finished = true break end
      if cursor then
        -- a cursor-like source fills the encoder itself (select and filter applied)
        local added, done, nulled, column, why = rows:fill(enc, chunk_size, limit and (limit - emitted) or nil)
        if added == nil then error(format("table %q: reading rows failed: %s", tbl, tostring(done)), 0) end
        emitted = emitted + added
        if nulled and nulled > 0 and on_nulled then
          on_nulled(nulled, q.select[column] or tostring(column), why)
        end
        if done then finished = true end
        break
      elseif is_list and not filter_ast then
        local last = #rows
        if limit and last - n > limit - emitted then last = n + (limit - emitted) end
        if n >= last then finished = true break end
        local nxt, bad_row, field_index, message = enc:add_list(rows, n + 1, last)
        if not nxt then cut(bad_row, field_index, message) end
        emitted = emitted + (nxt - 1 - n)
        n = nxt - 1
      else
        local row
        if is_list then row = rows[n + 1] else row = rows() end
        if row == nil then
          if is_list and n < #rows then cut(n + 1, 0, "expected a row table, got nil") end
          finished = true
          break
        end
        n = n + 1
        local keep = true
        if unseen and n == 1 and type(row) == "table" and (row[1] ~= nil or #row > 0) then
          cut(1, 0, format("array rows in select order (applied.select) lack field %q, which the filter uses "
            .. "and the handler did not apply (applied.filter): return map rows, or apply the filter", unseen))
        end
        if filter_ast then
          local normalized, field_index, message = enc:normalize(row)
          if not normalized then cut(n, field_index, message) end
          keep = keep_row(normalized)
        end
        if keep then
          local ok, field_index, message = enc:add(row)
          if not ok then cut(n, field_index, message) end
          emitted = emitted + 1
        else
          scanned = scanned + filter_cost
        end
      end
    end
    if finished then enc:finish() end
    info.rows = emitted
    local chunk = enc:take()
    info.bytes = info.bytes + #chunk
    return chunk
  end
  return produce, function() return finished end
end

local function answer_data(self, opts, info, req)
  local fields, status, headers, body = described_fields(self, opts, info, req)
  if not fields then return status, headers, body end
  local index = {}
  for i, f in ipairs(fields) do index[f.code] = i end

  local select_codes, select_index = {}, {}
  if req.select ~= nil and req.select[1] ~= nil then
    for i, code in ipairs(req.select) do
      if index[code] == nil then
        info.status = 400
        return json_error(400, "bad_request", "unknown field in select: " .. quote(code))
      end
      select_codes[i], select_index[i] = code, index[code]
    end
  else
    for i, f in ipairs(fields) do select_codes[i], select_index[i] = f.code, i end
  end

  -- the filter typed by the fields, within the connector's caps (filter_limits)
  local ast, err = require("biconnector.filter").parse(req.filter_raw, fields, self.filter_limits)
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
  local connection = req.connection

  -- What data handed back to release (a close function, a to-be-closed value,
  -- the cursor's own close): called exactly once, whenever reading stops.
  local closers = {}
  if closer ~= nil then closers[1] = closer end
  if _M.is_cursor(rows) then closers[#closers + 1] = rows end
  local closed = #closers == 0
  local nulled_total, nulled_field, nulled_why = 0, nil, nil
  local function close_all()
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
        log_to(self, opts, "error", scrub("data close failed: " .. tostring(failure.message), connection), {
          endpoint = "data", table = q.table, traceback = scrub(failure.traceback, connection) })
      end
    end
  end
  info.close = close_all
  local function on_nulled(n, field, why)
    if nulled_total == 0 then nulled_field, nulled_why = field, why end
    nulled_total = nulled_total + n
  end

  if closer ~= nil and not _M.closable(closer) then
    close_all()
    return invalid_answer(self, opts, info, format("data(%q): the third result must be a close function or a value "
      .. "with a close method or __close, got %s", req.table, type(closer)), connection)
  end
  if type(rows) ~= "table" and type(rows) ~= "function" and not _M.is_cursor(rows) then
    close_all()
    return invalid_answer(self, opts, info, format("data(%q) must return a list of rows, an iterator or a cursor, got %s",
      req.table, type(rows)), connection)
  end
  if applied ~= nil and type(applied) ~= "table" then
    close_all()
    return invalid_answer(self, opts, info, format("data(%q): the second result must be a table like {filter = true}, got %s",
      req.table, type(applied)), connection)
  end
  applied = applied or {}
  if _M.is_cursor(rows) then
    if q.filter and not applied.filter then
      close_all()
      return invalid_answer(self, opts, info, format("data(%q): a cursor must apply the filter (return applied.filter = true)",
        req.table), connection)
    end
    applied = { select = true, filter = applied.filter, limit = applied.limit }
  end

  local chunk_size = (opts and opts.chunk_size) or def.chunk_size or DEFAULT_CHUNK
  local enc = core.rows.new(fields, select_index, {
    -- without applied.select an array row as wide as a narrower select is in
    -- select order (design.md's sketch), any other in described order
    arrays = applied.select and "select" or "auto", chunk_size = chunk_size,
    datetime_offset = def.datetime_offset == true and "Z" or def.datetime_offset,
  })
  local produce, is_finished = row_source(info, q, fields, rows, applied, enc, chunk_size, on_nulled)

  -- The first chunk is produced now: an error before streaming starts is a 500.
  local first_ok, first = call(produce)
  if not first_ok then
    enc:close()
    close_all()
    local message = value_error(first)
    if message then return invalid_answer(self, opts, info, message, connection) end
    return handler_error(self, opts, info, connection, "data", first)
  end
  info.status = 200
  local hdrs = { ["Content-Type"] = JSON_TYPE }
  if is_finished() then
    enc:close()
    close_all()
    return 200, hdrs, first
  end

  local done = false
  local function iterator()
    if done then return nil end
    if first then
      local c = first
      first = nil
      return c
    end
    local step_ok, chunk = call(produce)
    if not step_ok then
      done = true
      enc:close()
      close_all()
      local id = new_error_id()
      info.error = id
      local message = value_error(chunk)
      local trace = nil
      if not message then message, trace = chunk.message, chunk.traceback end
      log_to(self, opts, "error", scrub_all(self, "data stream cut: " .. tostring(message), connection), {
        id = id, endpoint = "data", table = q.table, rows = info.rows, traceback = trace and scrub_all(self, trace, connection),
      })
      return nil
    end
    if is_finished() then
      done = true
      enc:close()
      close_all()
      if chunk == "" then return nil end
    end
    return chunk
  end
  return 200, hdrs, iterator
end

-- ---- routing ----------------------------------------------------------------

local function route(path, prefix)
  path = path or "/"
  local q = find(path, "?", 1, true)
  if q then path = sub(path, 1, q - 1) end
  if prefix and prefix ~= "" and prefix ~= "/" then
    if sub(prefix, -1) == "/" then prefix = sub(prefix, 1, -2) end
    if sub(path, 1, #prefix) ~= prefix then return nil end
    path = sub(path, #prefix + 1)
  end
  if #path > 1 and sub(path, -1) == "/" then path = sub(path, 1, -2) end
  return ENDPOINTS[path]
end

-- c:handle(http, opts) -> status, headers, body (string or chunk iterator), info
function methods.handle(self, http, opts)
  local info = { endpoint = nil, table = nil, status = nil, rows = 0, bytes = 0 }
  if type(http) ~= "table" then error("handle: expected a request table, got " .. type(http), 2) end
  local endpoint = route(http.path, opts and opts.prefix)
  info.endpoint = endpoint
  local status, headers, body
  if not endpoint then
    status, headers, body = json_error(404, "not_found", "no such endpoint: " .. tostring(http.path))
  elseif http.method ~= "POST" then
    status, headers, body = json_error(405, "method_not_allowed", "use POST")
    headers["Allow"] = "POST"
  else
    local request = require "biconnector.request"
    local decoded, req, err = call(request.decode, http)
    if not decoded then
      status, headers, body = handler_error(self, opts, info, nil, "request decoding", req)
    elseif not req then
      local st = type(err) == "table" and err.status or 400
      status, headers, body = json_error(st, ERROR_CODES[st] or "bad_request",
        type(err) == "table" and tostring(err.message) or tostring(err))
    else
      info.table = req.table
      local connection = req.connection or {}
      req.connection = connection
      local ok, allowed, reason = call(self.definition.check, connection)
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

return _M
