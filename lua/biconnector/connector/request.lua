-- biconnector.connector.request (public name biconnector.request): an HTTP request from Bitrix24 (JSON or form body) ->
-- the normalized request the connector works with. See docs/form.md.
local core = require "biconnector.core"
local errors = require "biconnector.connector.errors"
local form = require "biconnector.form"
local json = require "biconnector.json"
local filter = require "biconnector.connector.filter"
local list = require "biconnector.connector.list"

local type, pairs, tostring, tonumber = type, pairs, tostring, tonumber
local format, floor = string.format, math.floor
local find, sub, byte = string.find, string.sub, string.byte
local tointeger = math.tointeger
local null = core.null

local _M = { _VERSION = core.version }

---------------------------------------------------------------- errors

-- request.error(status, message) -> an error object {status=, message=}
-- (a biconnector.errors failure; tostring gives "STATUS message")
_M.error = errors.refusal
_M.is_error = errors.is_failure

local function bad(message, ...)
  return nil, _M.error(400, format(message, ...))
end

---------------------------------------------------------------- helpers

local function is_absent(v)
  return v == nil or v == null or v == ""
end

local is_list, ordered_by_key = list.is_list, list.by_key

-- A scalar that stands for text: strings as they are, numbers as the form
-- would have spelled them, so that JSON and form bodies agree.
local function text(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then
    if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
    for precision = 14, 17 do -- the shortest spelling that reads back
      local s = format("%." .. precision .. "g", v)
      if tonumber(s) == v or precision == 17 then return s end
    end
  end
  return nil
end

local function show(v)
  local s = errors.shown(v)
  if s then return s end
  if type(v) == "table" then return next(v) ~= nil and is_list(v) and "a list" or "an object" end
  if type(v) == "number" then return text(v) end
  return type(v)
end

-- The position of the first control byte (0x00-0x1F, 0x7F) in a code, or nil.
-- A table or field code never holds one: `secret\0` must not pass as
-- `secret` to anything that stops at a NUL (C strings, SQL text), and no
-- protocol code needs one.
local function control_byte(code)
  return find(code, "[%z\1-\31\127]")
end
_M.control_byte = control_byte

local function no_control(what, code)
  local at = control_byte(code)
  if at then
    return bad("%s: the code %s holds a control byte (0x%02X at byte %d); table and field codes never do",
      what, show(code), code:byte(at), at)
  end
  return code
end

-- The first key of a filter object, at any depth, that holds a control byte
-- (a field code, with or without its operator prefix), or nil.
local function unclean_filter_key(obj, depth)
  if depth > 64 then return nil end -- deeper than filter.parse accepts anyway
  for k, v in pairs(obj) do
    if type(k) == "string" and control_byte(k) then return k end
    if type(v) == "table" and v ~= null then
      local bad_key = unclean_filter_key(v, depth + 1)
      if bad_key then return bad_key end
    end
  end
  return nil
end

-- The largest limit a request keeps: 2^53 - 1, the last integer both runtimes
-- hold exactly. A larger whole number (PHP_INT_MAX, which a PHP caller may
-- send for "all rows") asks for more rows than any table has: it becomes this
-- one, the same answer, rather than a 400.
local MAX_LIMIT = 2 ^ 53 - 1

local function decode_limit(v)
  local n
  if type(v) == "number" then
    n = v
  elseif type(v) == "string" and v:match("^%s*%d+%s*$") then
    n = tonumber(v)
  end
  if n == nil or n ~= n or n < 0 or n ~= floor(n) then
    return bad("limit: expected a non-negative integer, got %s", show(v))
  end
  if n > MAX_LIMIT then n = MAX_LIMIT end -- infinity too: a whole number past any count
  if tointeger then n = tointeger(n) end
  return n
end

local function decode_select(v)
  if type(v) == "table" and not is_list(v) then v = ordered_by_key(v) or v end
  if type(v) ~= "table" or not is_list(v) then
    return bad("select: expected a list of field codes, got %s", show(v))
  end
  if v[1] == nil then return nil end -- [] is as absent as a form body can make it
  -- a code repeated (`select[]=id&select[]=id`) is answered once, at its first place
  local out, seen = {}, {}
  for i = 1, #v do
    local s = text(v[i])
    if s == nil or s == "" then
      return bad("select[%d]: expected a field code (a non-empty string), got %s", i, show(v[i]))
    end
    local _, err = no_control(format("select[%d]", i), s)
    if err then return nil, err end
    if not seen[s] then
      seen[s] = true
      out[#out + 1] = s
    end
  end
  return out
end

local function decode_object(name, v)
  -- (a list that is not empty has an item 1: the cheap test first)
  if type(v) ~= "table" or (v[1] ~= nil and is_list(v)) then
    return bad("%s: expected an object, got %s", name, show(v))
  end
  if next(v) == nil then return {} end -- JSON's [] (what PHP writes for an empty object) too
  return v
end

-- A form's object keyed by codes (connection, mapFields), as the codes' text.
-- PHP keys a code that is an integer's text by the integer
-- (`connection[2024]=x`, `mapFields[1]=A&mapFields[2]=B`), and the form decoder
-- reads keys 1..n as a sequence: each integer key is its code's text, as in a
-- filter (docs/filter.md), so that the form and JSON's {"2024": "x"} give the
-- same request. A sequence is read as keys 1..n, not PHP's 0..n-1: no field
-- code is "0" (nor, in practice, a setting code). A JSON body spells such codes as object keys: a JSON list
-- stays refused. A key text(k) makes never equals a form's string key (a
-- canonical integer is always an integer key there).
local function form_object(name, v)
  if type(v) ~= "table" then return decode_object(name, v) end
  local numbered = false
  for k in pairs(v) do
    if type(k) == "number" then numbered = true break end
  end
  if not numbered then return v end -- what every request sends: no table made
  local out = {}
  for k, x in pairs(v) do
    if type(k) == "number" then k = text(k) end
    out[k] = x
  end
  return out
end

local function decode_map_fields(v, from_form)
  local obj, err = (from_form and form_object or decode_object)("mapFields", v)
  if not obj then return nil, err end
  if next(obj) == nil then return nil end
  local out = {}
  for code, name in pairs(obj) do
    local c, n = text(code), text(name)
    if n == nil or n == "" then
      return bad("mapFields[%s]: expected a field name (a non-empty string), got %s", tostring(code), show(name))
    end
    out[c] = n
  end
  return out
end

-- Connection values as a form body carries them: numbers as text (an INT
-- setting sent in JSON as 5432 reads as "5432", as from the form), booleans as
-- PHP writes them ("1"/"0"), null left out; nested objects alike.
local function connection_text(t, depth)
  local out = {}
  for k, v in pairs(t) do
    local tv = type(v)
    if tv == "number" then v = text(v)
    elseif tv == "boolean" then v = v and "1" or "0"
    elseif v == null then v = nil
    elseif tv == "table" and depth < 32 then v = connection_text(v, depth + 1) end
    out[k] = v
  end
  return out
end

---------------------------------------------------------------- bodies

-- The two types Bitrix24 sends, as they come: no pattern to run (small requests, issue 25).
local PLAIN_TYPES = { ["application/x-www-form-urlencoded"] = true, ["application/json"] = true }

local function media_type(headers)
  local ct = headers and (headers["content-type"] or headers["Content-Type"])
  if PLAIN_TYPES[ct] then return ct end
  if type(ct) ~= "string" then return nil end
  local mt = ct:match("^%s*([^;%s]+)")
  return mt and mt:lower() -- an empty Content-Type is as absent as a missing one
end

local function decode_json(body)
  -- a key given twice ({"connection":{...},"connection":{...}}) is refused, not "last wins":
  -- a proxy or a log reading the first one must not see another request than ours
  local obj, err = json.decode(body, { duplicate_keys = "error" })
  if obj == nil then return bad("body: not valid JSON (%s)", tostring(err)) end
  if type(obj) ~= "table" or (next(obj) ~= nil and is_list(obj)) then
    return bad("body: expected a JSON object, got %s", show(obj))
  end
  return obj
end

-- The most variables a form body may hold. PHP's max_input_vars (1000) is
-- too few for a filter with a long IN list; the server's body limit bounds it.
_M.FORM_MAX_VARS = 100000
local FORM_OPTIONS = { max_vars = _M.FORM_MAX_VARS, bracket_equals = true }

-- PHP (and form.decode) end a name at a decoded NUL byte: `connection[tok%00en]`
-- would silently become `connection[tok]`. A value keeps its NUL bytes.
-- Linear: the next `=` is searched for again only once the scan has passed it
-- (searched for at every `&`, a body of 8 MiB of `&` took minutes).
local function nul_in_name(body)
  local at, eq = 1, nil -- eq: the next `=` at or after at; false: none left
  while at <= #body do
    local amp = find(body, "&", at, true) or #body + 1
    if eq ~= false and (eq == nil or eq < at) then eq = find(body, "=", at, true) or false end
    local name = sub(body, at, (eq and eq < amp) and eq - 1 or amp - 1)
    local nul = find(name, "%00", 1, true)
    if nul then return format("body: the name '%s' at byte %d holds an encoded NUL byte (%%00)", name, at + nul - 1) end
    at = amp + 1
  end
end

local function decode_form(body)
  if find(body, "%00", 1, true) then
    local err = nul_in_name(body)
    if err then return bad("%s", err) end
  end
  -- bracket_equals: a raw `=` inside brackets (`filter[>=ID]=5`, written by hand)
  -- belongs to the name, where PHP would end the name there and the condition
  -- would silently vanish (docs/form.md)
  FORM_OPTIONS.max_vars = _M.FORM_MAX_VARS
  local obj, err = form.decode(body, FORM_OPTIONS)
  if obj == nil then return bad("body: %s", tostring(err)) end
  return obj, nil, true
end

-- The first content coding of a Content-Encoding header other than identity,
-- or nil: such a body (gzip, deflate, ...) is not what its Content-Type says,
-- and it is never decoded here.
local function content_coding(headers)
  local ce = headers and (headers["content-encoding"] or headers["Content-Encoding"])
  if type(ce) ~= "string" then return nil end
  for item in ce:gmatch("[^,]+") do
    local coding = (item:match("^%s*(%S+)%s*$") or item):lower() -- linear: no backtracking over spaces
    if coding ~= "identity" and find(coding, "%S") then return coding end
  end
  return nil
end

-- Whether a body is a JSON object: its first byte other than white space is
-- `{` (the byte test first: small requests run no pattern, issue 25).
local function json_object_text(body)
  local c = byte(body, 1)
  if c == 123 then return true end
  return c ~= nil and c <= 32 and find(body, "^%s*{") ~= nil
end

-- decode_body(http) -> the body's table, or nil, error; and true when it was
-- a form (whose values are all text already).
local function decode_body(http)
  local coding = content_coding(http.headers)
  if coding then
    return nil, _M.error(415, format("body: Content-Encoding %s is not supported; send the body unencoded "
      .. "(no Content-Encoding, or identity)", show(coding)))
  end
  local body = http.body
  if body == nil or body == "" then return {} end
  if type(body) ~= "string" then return bad("body: expected a string, got %s", type(body)) end
  if byte(body, 1) == 239 and sub(body, 1, 3) == "\239\187\191" then body = sub(body, 4) end -- a UTF-8 byte-order mark
  local mt = media_type(http.headers)
  local form_type = mt == "application/x-www-form-urlencoded"
  if not form_type and (mt == "application/json" or (mt and mt:match("^application/[%w.-]+%+json$"))) then
    return decode_json(body)
  elseif form_type then
    -- a JSON object sent with the form type (`curl -d '{...}'` does that): as JSON,
    -- when it is one; a form name never starts with `{` in what Bitrix24 sends
    if json_object_text(body) then
      local obj = decode_json(body)
      if obj then return obj end
    end
    return decode_form(body)
  elseif mt then
    -- text/plain, multipart/..., anything else: 415, never parsed as something it does not say
    return nil, _M.error(415, format("body: Content-Type %s is not supported; send application/json "
      .. "or application/x-www-form-urlencoded", show(mt)))
  end
  -- no type: a body that starts with `{` is JSON, anything else a form
  if json_object_text(body) then return decode_json(body) end
  return decode_form(body)
end

---------------------------------------------------------------- decode

-- request.decode(http) -> req, or nil, error object (status 400; 415 for a Content-Type
-- that is neither JSON nor a form, or a Content-Encoding other than identity)
function _M.decode(http)
  if type(http) ~= "table" then error("request.decode: expected {method=, path=, headers=, body=}", 2) end
  local raw, err, from_form = decode_body(http)
  if raw == nil then return nil, err end
  local req = { search = "" }

  if is_absent(raw.connection) then
    req.connection = {}
  else
    req.connection, err = (from_form and form_object or decode_object)("connection", raw.connection)
    if not req.connection then return nil, err end
    -- a form's values are text already (and its tables hold only text)
    if not from_form then req.connection = connection_text(req.connection, 0) end
  end

  if not is_absent(raw.searchString) then
    req.search = text(raw.searchString)
    if req.search == nil then return bad("searchString: expected a string, got %s", show(raw.searchString)) end
  end

  local table_name = raw.table
  local table_key = "table"
  if is_absent(table_name) then table_name, table_key = raw.name, "name" end
  if not is_absent(table_name) then
    req.table = text(table_name)
    if req.table == nil then return bad("%s: expected a table code, got %s", table_key, show(table_name)) end
    req.table, err = no_control(table_key, req.table)
    if err then return nil, err end
  end

  if not is_absent(raw.select) then
    req.select, err = decode_select(raw.select)
    if err then return nil, err end
  end

  if not is_absent(raw.filter) then
    if type(raw.filter) ~= "table" then return bad("filter: expected an object, got %s", show(raw.filter)) end
    local key = unclean_filter_key(raw.filter, 0)
    if key then
      local _, kerr = no_control("filter", key)
      return nil, kerr
    end
    if next(raw.filter) ~= nil then req.filter_raw = raw.filter end
  end

  if not is_absent(raw.limit) then
    req.limit, err = decode_limit(raw.limit)
    if err then return nil, err end
  end

  if not is_absent(raw.mapFields) then
    req.map_fields, err = decode_map_fields(raw.mapFields, from_form)
    if err then return nil, err end
  end
  return req
end

-- request.bind_filter(req, fields) -> true, or nil, error object (status 400)
-- Sets req.filter to the parsed filter (nil when absent or empty).
function _M.bind_filter(req, fields)
  local ast, err = filter.parse(req.filter_raw, fields)
  if err then return nil, _M.error(400, err) end
  req.filter = ast
  return true
end

return _M
