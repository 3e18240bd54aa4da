-- biconnector.connector.filter (public name biconnector.filter): the urlData filter object -> a typed AST; match a row
-- against it; compile it to SQL with bound parameters. See docs/filter.md.
--
-- AST nodes:
--   { kind = "group", logic = "and"|"or", items = { node, ... } }
--   { kind = "cond", field = code, type = field type, op = OP, value = v,
--     values = { v, ... } (in, not_in), from = v, to = v (between) }
-- OP: eq ne gt ge lt le in not_in like not_like pattern not_pattern
--     between is_null not_null
local core = require "biconnector.core"
local list = require "biconnector.connector.list"
local shown = require("biconnector.connector.errors").shown

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local floor, huge = math.floor, math.huge
local format, byte, char = string.format, string.byte, string.char
local concat, sort = table.concat, table.sort
local tointeger = math.tointeger
local math_type = math.type -- nil under LuaJIT

local null = core.null
local is_list, as_list = list.is_list, list.by_key

local _M = { _VERSION = core.version }

local FIELD_TYPES = { int = true, double = true, string = true, date = true, datetime = true }

---------------------------------------------------------------- values

local function is_null(v)
  return v == nil or v == null
end

local MAX_EXACT = 9007199254740992 -- 2^53: beyond it LuaJIT numbers are not integers

-- Values come from the request: every scan here is linear (a pattern such as
-- "%s+$" or "%d*%.?%d*" backtracks in quadratic or cubic time on long input).
local SPACE = { [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true }

local function trim(s)
  local i = s:find("%S")
  if not i then return "" end
  local j = #s
  while SPACE[byte(s, j)] do j = j - 1 end
  return s:sub(i, j)
end
-- Also what the table list searches for (the search without white space around it).
_M.trim = trim

-- [+-] digits [. digits] [e [+-] digits], with a digit before or after the dot.
local function is_decimal(s)
  local i = 1
  if s:find("^[+-]") then i = 2 end
  local _, e = s:find("^%d*", i)
  local digits = e - i + 1
  i = e + 1
  if s:sub(i, i) == "." then
    _, e = s:find("^%d*", i + 1)
    digits = digits + (e - i)
    i = e + 1
  end
  if digits == 0 then return false end
  if s:find("^[eE]", i) then
    i = i + 1
    if s:find("^[+-]", i) then i = i + 1 end
    _, e = s:find("^%d+", i)
    if not e then return false end
    i = e + 1
  end
  return i == #s + 1
end

-- A value as an error message shows it: a list or an object by what it is
-- (tostring would show the answer a Lua address, "table: 0x5583984f0da0").
local function show(v)
  local s = shown(v)
  if s then return s end
  if type(v) == "table" then return is_list(v) and "a list" or "an object" end
  return tostring(v)
end

local function as_integer(v)
  if type(v) == "string" then
    local s = trim(v)
    if not s:match("^[+-]?%d+$") then return nil end
    v = tonumber(s)
    if math_type and math_type(v) == "float" then return nil end -- beyond 64 bits (Lua 5.4)
  end
  if type(v) ~= "number" or v ~= v or v == huge or v == -huge or v ~= floor(v) then return nil end
  -- a float -2^63 is how json.decode reads an integer below the 64-bit range
  -- (-9223372036854775809): refused, as 2^63 is
  if math_type and math_type(v) == "float" and v <= -2 ^ 63 then return nil end
  if tointeger then return tointeger(v) end
  if v > MAX_EXACT or v < -MAX_EXACT then return nil end
  return v
end

local function as_double(v)
  if type(v) == "string" then
    local s = trim(v)
    -- decimal notation only: no hex, inf or nan spellings
    if not is_decimal(s) then return nil end
    v = tonumber(s)
  end
  if type(v) ~= "number" or v ~= v or v == huge or v == -huge then return nil end
  if v == 0 then return 0.0 end -- -0 is 0 (ClickHouse's IN told them apart by their bits)
  return v + 0.0
end

local function number_string(v)
  if v == floor(v) and v >= -MAX_EXACT and v <= MAX_EXACT then return format("%d", v) end
  for prec = 15, 17 do
    local s = format("%." .. prec .. "g", v)
    if tonumber(s) == v then return s end
  end
end

local function as_string(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then
    if tointeger and tointeger(v) and math.type(v) == "integer" then return tostring(v) end
    return number_string(v)
  end
  return nil
end

local DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

local function valid_date(y, m, d)
  if m < 1 or m > 12 or d < 1 then return false end
  local max = DAYS[m]
  if m == 2 and (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) then max = 29 end
  return d <= max
end

-- The spellings of protocol.md: 31.05.2025 17:01:55, 31.05.2025, 2025-05-31,
-- 2025-05-31 17:01:55, ISO 8601 with T (after YYYY-MM-DD only); seconds
-- optional, a fraction (. or ,) after them, a zone (Z, +HH:MM, +HHMM, +HH, up
-- to 23:59) after any time of day. The same spellings as a row value
-- (parse_datetime in src/rows.c; spec/datetime_spellings_spec.lua).
-- Returns y, m, d, time ("HH:MM:SS" or nil), or nil, why.
local function parse_moment(s)
  s = trim(s)
  local y, m, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  local dotted = false
  if not y then
    d, m, y, rest = s:match("^(%d%d)%.(%d%d)%.(%d%d%d%d)(.*)$")
    dotted = true
  end
  if not y then return nil, "not a date (expected YYYY-MM-DD, DD.MM.YYYY or ISO 8601)" end
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if not valid_date(y, m, d) then return nil, "no such day" end
  if rest == "" then return y, m, d, nil end
  local sep, hh, mi, tail = rest:match("^([T ])(%d%d):(%d%d)(.*)$")
  if not hh or (sep == "T" and dotted) then return nil, "bad time of day" end
  local ss = tail:match("^:(%d%d)")
  if ss then
    tail = tail:sub(4):gsub("^[.,]%d+", "") -- fractions of a second are dropped
  else
    ss = "00"
  end
  if tail ~= "" and tail ~= "Z" then
    local zh, zm = tail:match("^[+-](%d%d):?(%d%d)$")
    if not zh then zh, zm = tail:match("^[+-](%d%d)$"), "00" end
    if not zh then return nil, "bad time of day" end
    if tonumber(zh) > 23 or tonumber(zm) > 59 then return nil, "no such time zone offset" end
  end
  if tonumber(hh) > 23 or tonumber(mi) > 59 or tonumber(ss) > 59 then return nil, "no such time of day" end
  return y, m, d, hh .. ":" .. mi .. ":" .. ss
end

local function as_date(v)
  if type(v) ~= "string" then return nil, "expected a date string" end
  local y, m, d = parse_moment(v)
  if not y then return nil, m end
  -- a time of day is dropped: the date part counts, as the row encoder reads a
  -- datetime for a date field and as Bitrix's Type\Date reads "31.05.2025 17:01:55"
  return format("%04d-%02d-%02d", y, m, d)
end

local function as_datetime(v)
  if type(v) ~= "string" then return nil, "expected a date-time string" end
  local y, m, d, time = parse_moment(v)
  if not y then return nil, m end
  return format("%04d-%02d-%02d %s", y, m, d, time or "00:00:00")
end

-- An integer past the range as_integer takes is said to be one (a 20-digit id
-- is not "not an integer").
local INT_RANGE = tointeger and "an integer outside -2^63 to 2^63-1"
  or "an integer outside -2^53 to 2^53, the integers LuaJIT holds exactly"
local function int_value(v)
  local x = as_integer(v)
  if x ~= nil then return x end
  local s = type(v) == "string" and trim(v) or nil
  if (s and s:match("^[+-]?%d+$")) or (type(v) == "number" and v == floor(v) and v ~= huge and v ~= -huge) then
    return nil, INT_RANGE
  end
  return nil, "expected an integer"
end

local NORMALIZERS = {
  int = int_value,
  double = function(v) return as_double(v), "expected a number" end,
  string = function(v) return as_string(v), "expected a string" end,
  date = as_date,
  datetime = as_datetime,
}

-- filter.normalize(field_type, value) -> the normalized value, or nil, why.
-- Also what a connector uses to normalize row values before match.
function _M.normalize(field_type, v)
  local f = NORMALIZERS[field_type]
  if not f then return nil, "unknown field type " .. show(field_type) end
  if type(v) == "boolean" or type(v) == "table" or type(v) == "userdata" then
    return nil, "expected a scalar"
  end
  local r, why = f(v)
  if r == nil then return nil, why end
  return r
end

---------------------------------------------------------------- parsing

-- Keys in the order of their text, so that a JSON "0" and a form's 0 sort alike
-- and the AST does not depend on how a body spelled its keys.
local function key_text(k)
  if type(k) == "number" and k == floor(k) then return format("%d", k) end
  return tostring(k)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys, function(a, b)
    local ta, tb = key_text(a), key_text(b)
    if ta ~= tb then return ta < tb end
    return type(a) == "number" and type(b) ~= "number"
  end)
  return keys
end

-- Style A key prefixes, longest first so that `>=` wins over `>`.
local PREFIXES = {
  { "!=%", "not_pattern" }, { "!%", "not_like" }, { "!@", "not_in" }, { "!=", "ne" }, { "<>", "ne" },
  { ">=", "ge" }, { "<=", "le" }, { "=%", "pattern" }, { "%=", "pattern" },
  { "!", "ne" }, { "=", "eq" }, { ">", "gt" }, { "<", "lt" }, { "@", "in" }, { "%", "like" }, { "~", "pattern" },
}

-- Style B operator names (case-insensitive).
local OPERATORS = {
  ["="] = "eq", EQ = "eq", ["!="] = "ne", ["<>"] = "ne", NEQ = "ne", NE = "ne",
  [">"] = "gt", GT = "gt", [">="] = "ge", GTE = "ge", ["<"] = "lt", LT = "lt", ["<="] = "le", LTE = "le",
  LIKE = "like", ["NOT LIKE"] = "not_like", IN = "in", ["NOT IN"] = "not_in",
  ["IS NULL"] = "is_null", ["IS NOT NULL"] = "not_null", BETWEEN = "between",
}

local LIKE_OPS = { like = true, not_like = true, pattern = true, not_pattern = true }

-- Build a condition from an operator, a field and a raw value; where names the
-- key; ctx.limits holds the caps (parse's limits), ctx.count the conditions so far.
local function condition(ctx, field, op, raw, where)
  local ftype = field.type
  local limits = ctx.limits
  local node = { kind = "cond", field = field.code, type = ftype, op = op }
  local function typed(v, at)
    -- a form body cannot say null: an empty string in a non-string field means null
    if v == "" and ftype ~= "string" then v = null end
    if is_null(v) then return null end
    local r, why = _M.normalize(ftype, v)
    -- LuaJIT: a double holds integers exactly only below 2^53; "9007199254740993"
    -- reads as 2^53, and a row value beyond (rounded the same way) could equal
    -- it: a value that might not be the one sent is refused
    if r ~= nil and ftype == "int" and not tointeger and (r >= MAX_EXACT or r <= -MAX_EXACT) then
      r, why = nil, "an integer within ±(2^53 - 1) under LuaJIT"
    end
    if r == nil then
      return nil, format("%s: bad value %s for %s field %s (%s)", at or where, show(v), ftype, field.code, why)
    end
    return r
  end
  if LIKE_OPS[op] and ftype ~= "string" then
    return nil, format("%s: %s needs a string field, %s is %s", where, op, field.code, ftype)
  end
  ctx.count = ctx.count + 1
  if op == "is_null" or op == "not_null" then return node end
  if op == "between" then
    if type(raw) ~= "table" or raw.from == nil or raw.to == nil then
      return nil, format("%s: between needs both from and to", where)
    end
    local from, err = typed(raw.from, where .. ".from")
    if from == nil then return nil, err end
    local to, err2 = typed(raw.to, where .. ".to")
    if to == nil then return nil, err2 end
    if from == null or to == null then return nil, format("%s: between bounds may not be null", where) end
    node.from, node.to = from, to
    return node
  end
  if type(raw) == "table" and raw ~= null then
    if not is_list(raw) then raw = as_list(raw) or raw end
    if not is_list(raw) then
      return nil, format("%s: expected a value, a list of values or {operator=, value=}", where)
    end
    if op == "eq" then op = "in" elseif op == "ne" then op = "not_in" end
    if op ~= "in" and op ~= "not_in" then
      return nil, format("%s: operator %s takes one value, not a list", where, op)
    end
    if #raw > limits.list then
      return nil, format("%s: a list of %d values is over the limit of %d values (filter_limits.list)",
        where, #raw, limits.list)
    end
    -- a list of n values is n comparisons (the condition itself counted one)
    if #raw > 1 then ctx.count = ctx.count + #raw - 1 end
    node.op = op
    local values = {}
    for i, v in ipairs(raw) do
      local tv, err = typed(v, format("%s[%d]", where, i))
      if tv == nil then return nil, err end
      if tv == null then return nil, format("%s[%d]: a list may not hold null", where, i) end
      values[i] = tv
    end
    node.values = values
    return node
  end
  if op == "in" or op == "not_in" then -- a single value is a list of one
    ctx.count = ctx.count - 1
    return condition(ctx, field, op, { raw }, where)
  end
  local v, err = typed(raw, where)
  if v == nil then return nil, err end
  if LIKE_OPS[op] and v ~= null and #v > limits.like then
    return nil, format("%s: a LIKE value of %d bytes is over the limit of %d bytes (filter_limits.like)",
      where, #v, limits.like)
  end
  if v == null then
    if op == "eq" then node.op = "is_null" return node end
    if op == "ne" then node.op = "not_null" return node end
    return nil, format("%s: operator %s cannot compare with null", where, op)
  end
  node.value = v
  return node
end

-- Split a style A key into operator and field; nil, why when it names no field.
local function split_key(key, fields)
  if fields[key] then return "eq", fields[key] end
  for _, p in ipairs(PREFIXES) do
    local prefix = p[1]
    if key:sub(1, #prefix) == prefix and fields[key:sub(#prefix + 1)] then
      return p[2], fields[key:sub(#prefix + 1)]
    end
  end
  local bare = key:match("^[^%w_]+(.*)$")
  if bare and fields[bare] then
    return nil, format("unknown operator %s in %s", show(key:sub(1, #key - #bare)), show(key))
  end
  -- an operator prefix before a code that names no field: the field is what is unknown
  for _, p in ipairs(PREFIXES) do
    local prefix = p[1]
    if #key > #prefix and key:sub(1, #prefix) == prefix and not key:sub(#prefix + 1, #prefix + 1):find("[^%w_]") then
      return nil, format("unknown field %s (after the operator %s)", show(key:sub(#prefix + 1)), show(prefix))
    end
  end
  return nil, "unknown field " .. show(key)
end

local parse_group

-- A form's filter[2024]=5 arrives keyed by the integer 2024 (PHP's reading of
-- a numeric key), JSON's {"2024": 5} by the text "2024": a field whose code is
-- an integer's text is the same field under either key. The integer key is
-- that field's when its value is one (null included), a list of values, or an
-- operator object; any other object under it stays a nested group (also one
-- keyed only by such fields, filter[0][2025]=1, which a PHP keyed array resembles).
local function field_key(key, value, fields)
  if type(key) ~= "number" then return key end
  local text = key_text(key)
  if not fields[text] then return key end
  if type(value) ~= "table" or value == null then return text end
  local values = is_list(value) and value
  if not values then
    values = as_list(value)
    if values then
      local group = true
      for k in pairs(value) do
        if not fields[key_text(k)] then group = false break end
      end
      if group then return key end
    end
  end
  if values then
    for _, v in ipairs(values) do
      if type(v) == "table" and v ~= null then return key end -- a list of groups
    end
    return text
  end
  for k in pairs(value) do
    if type(k) == "string" and k:lower() == "operator" then return text end
  end
  return key
end

-- The style recognizers, tried in order for every key/value of a group. Each
-- returns a node, or false when the pair is not its style, or nil, err.
-- A third style is one more entry here.
_M.styles = {
  { -- style B: {"FIELD": {"operator": OP, "value": V}}
    name = "operator object",
    recognize = function(key, value, ctx, where)
      if type(key) ~= "string" or type(value) ~= "table" then return false end
      local op_key = "operator"
      if value.operator == nil then -- "OPERATOR", "Value", ...: the keys in any case
        local lowered, found = {}, false
        for k, v in pairs(value) do
          local l = type(k) == "string" and k:lower() or k
          if l == "operator" then found, op_key = true, k end
          if lowered[l] == nil or l == k then lowered[l] = v end
        end
        if not found then return false end
        value = lowered
      end
      local op_name = value.operator
      local op, field = split_key(key, ctx.fields)
      if op == nil then
        -- not a field: a nested group (style A) in which a field is named
        -- operator, in any case (filter[sub][OPERATOR]=Anna), is the group's
        if split_key(op_key, ctx.fields) then return false end
        return nil, where .. ": " .. field
      end
      if op ~= "eq" or not ctx.fields[key] then
        return nil, format("%s: an operator prefix and an operator object at once", where)
      end
      op = type(op_name) == "string" and OPERATORS[trim(op_name):upper():gsub("%s+", " ")]
      if not op then return nil, format("%s: unknown operator %s", where, show(op_name)) end
      local raw = value.value
      if op == "between" then
        raw = value
        local pair = type(value.value) == "table" and (is_list(value.value) and value.value or as_list(value.value))
        if value.from == nil and pair and #pair == 2 then
          raw = { from = pair[1], to = pair[2] }
        elseif value.from == nil and type(value.value) == "table" and value.value.from ~= nil then
          raw = value.value -- value = {from =, to =}
        end
      elseif raw == nil and op ~= "is_null" and op ~= "not_null" then
        return nil, format("%s: operator %s needs a value", where, op_name)
      end
      return condition(ctx, field, op, raw, where)
    end,
  },
  { -- style A: {"[OP]FIELD": value or list}
    name = "key prefix",
    recognize = function(key, value, ctx, where)
      if type(key) ~= "string" then return false end
      local op, field = split_key(key, ctx.fields)
      if op == nil then
        if type(value) == "table" and (next(value) == nil or not is_list(value)) then return false end -- a group
        return nil, where .. ": " .. field
      end
      return condition(ctx, field, op, value, where)
    end,
  },
  { -- nested group (style A): a key whose value is an object; LOGIC inside
    name = "group",
    recognize = function(_, value, ctx, where)
      if type(value) ~= "table" then return false end
      -- a list is a group too: filter[0][0][ID]=1&filter[0][1][ID]=2 decodes to one
      return parse_group(value, ctx, where, ctx.depth + 1)
    end,
  },
}

local MAX_DEPTH = 32

function parse_group(obj, ctx, where, depth)
  if depth > MAX_DEPTH then return nil, format("%s: groups nest deeper than %d levels", where, MAX_DEPTH) end
  local saved = ctx.depth
  ctx.depth = depth
  local logic = "and"
  local items = {}
  for _, key in ipairs(sorted_keys(obj)) do
    local value = obj[key]
    local at = where .. "[" .. key_text(key) .. "]"
    if type(key) == "string" and key:upper() == "LOGIC" then
      local l = type(value) == "string" and value:upper()
      if l ~= "AND" and l ~= "OR" then
        return nil, format("%s: LOGIC must be AND or OR, got %s", at, show(value))
      end
      logic = l:lower()
    else
      local node, err
      key = field_key(key, value, ctx.fields)
      for _, style in ipairs(_M.styles) do
        node, err = style.recognize(key, value, ctx, at)
        if node ~= false then break end
      end
      if node == false then
        return nil, format("%s: neither a field condition nor a group", at)
      end
      if node == nil then return nil, err end
      if node ~= true then items[#items + 1] = node end
    end
  end
  ctx.depth = saved
  if #items == 0 then return true end -- an empty group is no condition
  if #items == 1 then return items[1] end -- a group of one is that one
  return { kind = "group", logic = logic, items = items }
end

-- The caps on one filter (docs/filter.md, "Limits"): bytes in a LIKE value,
-- values in one list, conditions in the whole filter (a list of n values
-- counting n). A connector may lower or raise them up to MAX_LIMITS, which keep
-- every SQL engine's own limits out of reach: at most two bound parameters per
-- condition stay under SQLite's 32766 (PostgreSQL and MySQL allow 65535), and a
-- LIKE value escaped for SQL (at most 2n + 2 bytes) under SQLite's 50000-byte
-- pattern length. Group nesting is capped at MAX_DEPTH whatever the limits say.
_M.LIMITS = { like = 1024, list = 5000, conditions = 5000 }
_M.MAX_LIMITS = { like = 16384, list = 10000, conditions = 10000 }

-- filter.limits(t) -> the caps t asks for, the defaults filled in; raises on a
-- bad table (configuration, not a request). t: nil or {like =, list =, conditions =}.
function _M.limits(t)
  if t == nil then return _M.LIMITS end
  if type(t) ~= "table" then error("filter_limits: expected a table {like =, list =, conditions =}, got " .. type(t), 2) end
  local out = {}
  for k in pairs(t) do
    if _M.LIMITS[k] == nil then error("filter_limits: unknown limit " .. show(k) .. " (known: like, list, conditions)", 2) end
  end
  for k, default in pairs(_M.LIMITS) do
    local v = t[k]
    if v == nil then v = default end
    if type(v) ~= "number" or v ~= floor(v) or v < 1 or v > _M.MAX_LIMITS[k] then
      error(format("filter_limits.%s: expected a whole number from 1 to %d, got %s", k, _M.MAX_LIMITS[k], show(v)), 2)
    end
    out[k] = v
  end
  return out
end

-- filter.parse(obj, fields [, limits]) -> ast (nil when obj is absent or
-- empty), or nil, err. limits: what filter.limits returns (default LIMITS).
function _M.parse(obj, fields, limits)
  if is_null(obj) then return nil end
  if type(obj) ~= "table" then return nil, "filter: expected an object, got " .. type(obj) end
  if type(fields) ~= "table" then error("filter.parse: fields must be a list of {code=, name=, type=}", 2) end
  if fields[1] == nil and next(fields) ~= nil then -- a map such as {ID = "int"}, not an empty list
    error(format("filter.parse: fields must be a list of {code=, name=, type=} (found key %q)",
      tostring((next(fields)))), 2)
  end
  local by_code = {}
  for i, f in ipairs(fields) do
    if type(f) ~= "table" or type(f.code) ~= "string" or f.code == "" then
      error(format("filter.parse: fields[%d] has no code", i), 2)
    end
    local t = type(f.type) == "string" and f.type:lower() or "string"
    if not FIELD_TYPES[t] then t = "string" end -- as Bitrix24 treats an unknown type
    by_code[f.code] = { code = f.code, type = t }
  end
  if limits ~= _M.LIMITS then limits = _M.limits(limits) end
  local ctx = { fields = by_code, depth = 0, count = 0, limits = limits }
  local ast, err = parse_group(obj, ctx, "filter", 1)
  if ast == nil then return nil, err end
  if ctx.count > limits.conditions then
    return nil, format("filter: %d conditions (a list of n values counting n) are over the limit of %d "
      .. "(filter_limits.conditions)", ctx.count, limits.conditions)
  end
  if ast == true then return nil end
  if ast.kind ~= "group" then ast = { kind = "group", logic = "and", items = { ast } } end
  return ast
end

---------------------------------------------------------------- matching

local LOWER = {}
for c = byte("A"), byte("Z") do LOWER[char(c)] = char(c + 32) end

-- Every byte, and the same with A-Z lowered: string.lower (C, one pass) is
-- used on long strings while it lowers ASCII letters only, as it does in the C
-- locale (Lua 5.4's follows the process's locale; LuaJIT's never does).
local ALL_BYTES = {}
for b = 0, 255 do ALL_BYTES[b + 1] = char(b) end
ALL_BYTES = concat(ALL_BYTES)
local ALL_LOWERED = ALL_BYTES:gsub("[A-Z]", LOWER)

-- Lower case in ASCII only, whatever the C locale says (as SQLite's LIKE folds).
local function ascii_lower(s)
  if #s > 256 and ALL_BYTES:lower() == ALL_LOWERED then return s:lower() end
  if not s:find("[A-Z]") then return s end
  return (s:gsub("[A-Z]", LOWER))
end

-- LIKE works on characters as SQLite's does: a character is a byte that is no
-- UTF-8 continuation byte (0x80-0xBF) with the continuation bytes after it;
-- continuation bytes at the very start of a string belong to no character and
-- are ignored. Pattern and subject are lower-cased in ASCII. The matcher works
-- on the subject's bytes (no table per character) and never backtracks across
-- `%`: the segments between `%` are matched in turn, the first at the start,
-- the last at the end, each other one at its leftmost place after the one
-- before (docs/filter.md, "Matching in memory").

-- The position after the continuation bytes from i on (i itself when none).
local function char_end(s, i)
  local _, e = s:find("^[\128-\191]*", i)
  return e + 1
end

local function is_cont(b)
  return b ~= nil and b >= 128 and b <= 191
end

-- A LIKE pattern -> its segments (the parts between `%`), each a list of
-- tokens: a string (literal characters, lower-cased) or a number (that many
-- `_`, one character each). `!` makes the character after it literal.
-- segments.fixed: whether a segment between two `%` holds a `_` (see like_match).
local function like_compile(pattern)
  pattern = ascii_lower(pattern)
  local segments, seg, piece = {}, {}, {}
  local function flush()
    if #piece > 0 then
      seg[#seg + 1] = concat(piece)
      piece = {}
    end
  end
  local n = #pattern
  local i = char_end(pattern, 1)
  while i <= n do
    local nxt = char_end(pattern, i + 1)
    local c = pattern:sub(i, nxt - 1)
    if c == "!" and nxt <= n then
      local after = char_end(pattern, nxt + 1)
      piece[#piece + 1] = pattern:sub(nxt, after - 1)
      nxt = after
    elseif c == "%" then
      flush()
      segments[#segments + 1] = seg
      seg = {}
    elseif c == "_" then
      flush()
      if type(seg[#seg]) == "number" then seg[#seg] = seg[#seg] + 1 else seg[#seg + 1] = 1 end
    else
      piece[#piece + 1] = c
    end
    i = nxt
  end
  flush()
  segments[#segments + 1] = seg
  for k = 2, #segments - 1 do
    for _, t in ipairs(segments[k]) do
      if type(t) == "number" then segments.fixed = true end
    end
  end
  return segments
end

---- characters of any width, on the subject as it is

-- Tokens first..last of a segment matched forward from position p (a
-- character start): -> the position after them, or nil.
local function match_forward(s, seg, first, last, p, n)
  for k = first, last do
    local t = seg[k]
    if type(t) == "number" then
      for _ = 1, t do
        if p > n then return nil end
        p = char_end(s, p + 1)
      end
    else
      local e = p + #t
      if e - 1 > n or s:sub(p, e - 1) ~= t or is_cont(byte(s, e)) then return nil end
      p = e
    end
  end
  return p
end

-- A segment matched backward so that it ends just before position e (a
-- character start), starting at or after floor_pos: -> the start, or nil.
local function match_backward(s, seg, e, floor_pos)
  for k = #seg, 1, -1 do
    local t = seg[k]
    if type(t) == "number" then
      for _ = 1, t do
        local q = e - 1
        while q >= floor_pos and is_cont(byte(s, q)) do q = q - 1 end
        if q < floor_pos then return nil end
        e = q
      end
    else
      local b = e - #t
      if b < floor_pos or s:sub(b, e - 1) ~= t then return nil end
      e = b
    end
  end
  return e
end

-- Lua patterns that together match a segment from its first literal piece
-- on, anchored: `_` as one character (a byte that is no continuation byte and
-- the continuation bytes after it), at most 32 of them in one pattern, as
-- Lua's matcher recurses once for each.
local MAGIC = { ["^"] = "%^", ["$"] = "%$", ["("] = "%(", [")"] = "%)", ["%"] = "%%", ["."] = "%.",
  ["["] = "%[", ["]"] = "%]", ["*"] = "%*", ["+"] = "%+", ["-"] = "%-", ["?"] = "%?", ["\0"] = "%z" }
local ONE_CHAR = "[^\128-\191][\128-\191]*"

local function segment_patterns(seg)
  local patterns, parts, chars, first = {}, {}, 0, nil
  for k, t in ipairs(seg) do
    if type(t) == "string" then
      first = first or k
      parts[#parts + 1] = (t:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?%z]", MAGIC))
    elseif first then
      for _ = 1, t do
        parts[#parts + 1] = ONE_CHAR
        chars = chars + 1
        if chars == 32 then
          patterns[#patterns + 1] = "^" .. concat(parts)
          parts, chars = {}, 0
        end
      end
    end
  end
  if #parts > 0 then patterns[#patterns + 1] = "^" .. concat(parts) end
  seg.patterns, seg.first = patterns, first
  return patterns
end

-- The leftmost place at or after position from where a segment matches, in
-- any subject: -> the position after it, or nil. The first literal piece is
-- looked for with a plain find (after room for the `_` before it), the rest
-- checked in place by the anchored patterns, in C. Used where the subject
-- cannot be widened (search_fixed): value x segment steps at worst.
local function search_chars(s, seg, from, n)
  local patterns = seg.patterns or segment_patterns(seg)
  local first = seg.first
  if not first then return match_forward(s, seg, 1, #seg, from, n) end
  local x = match_forward(s, seg, 1, first - 1, from, n)
  if not x then return nil end
  local piece, tail_piece = seg[first], type(seg[#seg]) == "string"
  while true do
    x = s:find(piece, x, true)
    if not x then return nil end
    local p = x
    for _, pattern in ipairs(patterns) do
      local _, e = s:find(pattern, p)
      if not e then p = nil break end
      p = e + 1
    end
    if p and not (tail_piece and is_cont(byte(s, p))) then return p end
    x = x + 1
  end
end

local function like_chars(s, segments)
  local n = #s
  local count = #segments
  local pos = match_forward(s, segments[1], 1, #segments[1], char_end(s, 1), n)
  if not pos then return false end
  if count == 1 then return pos == n + 1 end
  for k = 2, count - 1 do
    pos = search_chars(s, segments[k], pos, n)
    if not pos then return false end
  end
  return match_backward(s, segments[count], n + 1, pos) ~= nil
end

---- characters of one width: bytes (ASCII) or 4-byte units (widened UTF-8)

-- Pieces, their byte offsets from the segment's start and the segment's
-- width in bytes, for characters of `unit` bytes; kept in the segment.
local function fixed_layout(seg, unit)
  local pieces, offsets, width = {}, {}, 0
  for _, t in ipairs(seg) do
    if type(t) == "number" then
      width = width + t * unit
    else
      pieces[#pieces + 1], offsets[#pieces + 1] = t, width
      width = width + #t
    end
  end
  seg.pieces, seg.offsets, seg.width = pieces, offsets, width
  return seg
end

-- The first place at or after init where piece starts a unit.
local function find_unit(s, piece, init, unit)
  local x = s:find(piece, init, true)
  while x and (x - 1) % unit ~= 0 do x = s:find(piece, x + 1, true) end
  return x
end

-- The leftmost place at or after from (a unit start) where a segment
-- matches: -> the position after it, or nil. The pieces sit at fixed offsets
-- from the segment's start q. Each piece is looked for with a plain find from
-- where q needs it: found in place, it is confirmed; found further on, it
-- moves q there and goes to the front of the order, so that the pieces that
-- moved q are tried first at the next q (a leapfrog over the pieces). q is
-- the answer once every piece is confirmed. Each find confirms a piece or
-- moves q forward.
local function search_fixed(s, seg, from, n, unit)
  if not seg.pieces then fixed_layout(seg, unit) end
  local pieces, offsets, width = seg.pieces, seg.offsets, seg.width
  local count = #pieces
  if count == 0 then
    if from + width - 1 > n then return nil end
    return from + width
  end
  local nxt, prv = {}, {} -- the order, as a doubly linked list
  for i = 1, count do nxt[i], prv[i] = i + 1, i - 1 end
  local head, q, cur, confirmed = 1, from, 1, 0
  while true do
    local off = offsets[cur]
    local x = find_unit(s, pieces[cur], q + off, unit)
    if not x or x - off + width - 1 > n then return nil end
    if x == q + off then
      confirmed = confirmed + 1
    else
      q, confirmed = x - off, 1
      if cur ~= head then -- to the front
        local a, b = prv[cur], nxt[cur]
        nxt[a] = b
        if b <= count then prv[b] = a end
        nxt[cur], prv[cur], prv[head] = head, 0, cur
        head = cur
      end
    end
    if confirmed == count then return q + width end
    cur = nxt[cur]
    if cur > count then cur = head end
  end
end

-- A segment's tokens from position p, for characters of unit bytes: -> the
-- position after them, or nil.
local function fixed_forward(s, seg, p, n, unit)
  for _, t in ipairs(seg) do
    if type(t) == "number" then
      p = p + t * unit
      if p - 1 > n then return nil end
    else
      local e = p + #t
      if e - 1 > n or s:sub(p, e - 1) ~= t then return nil end
      p = e
    end
  end
  return p
end

local function like_fixed(s, segments, unit)
  local n = #s
  local count = #segments
  local pos = fixed_forward(s, segments[1], 1, n, unit)
  if not pos then return false end
  if count == 1 then return pos == n + 1 end
  for k = 2, count - 1 do
    pos = search_fixed(s, segments[k], pos, n, unit)
    if not pos then return false end
  end
  local last = segments[count]
  if not last.pieces then fixed_layout(last, unit) end
  local start = n + 1 - last.width
  return start >= pos and fixed_forward(s, last, start, n, unit) == n + 1
end

-- Valid UTF-8 widened to 4 bytes per character (the character, then zero
-- bytes): every character the same width, so that a segment's pieces sit at
-- fixed offsets. One table of the distinct characters per call.
local function widen(s)
  local units = setmetatable({}, { __index = function(t, ch)
    local u = ch .. ("\0"):rep(4 - #ch)
    t[ch] = u
    return u
  end })
  return (s:gsub("[^\128-\191][\128-\191]*", units))
end

-- The segments with every piece widened (nil when a piece holds a character
-- longer than 4 bytes: it cannot match a subject that can be widened).
local function widened(segments)
  if segments.wide == nil then
    local wide = {}
    for k, seg in ipairs(segments) do
      local w = {}
      for i, t in ipairs(seg) do
        if type(t) == "string" then
          if t:find("[^\128-\191][\128-\191][\128-\191][\128-\191][\128-\191]") then wide = false break end
          t = widen(t)
        end
        w[i] = t
      end
      if not wide then break end
      wide[k] = w
    end
    segments.wide = wide
  end
  return segments.wide
end

-- Matches a subject against compiled segments. A segment between two `%`
-- that holds `_` is searched by search_fixed where characters have one
-- width: an ASCII subject as it is, valid UTF-8 widened (4 bytes a
-- character); the rest character by character.
local function like_match(subject, segments)
  local s = ascii_lower(subject)
  if segments.fixed then
    if not s:find("[\128-\255]") then return like_fixed(s, segments, 1) end
    local start = char_end(s, 1)
    if not s:find("[^\128-\191][\128-\191][\128-\191][\128-\191][\128-\191]", start) then
      local wide = widened(segments)
      if not wide then return false end
      return like_fixed(widen(s:sub(start)), wide, 4)
    end
  end
  return like_chars(s, segments)
end

-- SQL LIKE with `%` and `_`, escape character `!`, ASCII case-insensitive.
local function like(subject, pattern)
  return like_match(subject, like_compile(pattern))
end
_M.like = like

local function like_escape(s)
  return (s:gsub("[!%%_]", "!%0"))
end

local function pattern_escape(s)
  return (s:gsub("!", "!!"))
end

-- Each operator compiles to a test of a non-NULL, normalized row value.
local TESTS = {
  eq = function(n) local x = n.value return function(v) return v == x end end,
  ne = function(n) local x = n.value return function(v) return v ~= x end end,
  gt = function(n) local x = n.value return function(v) return v > x end end,
  ge = function(n) local x = n.value return function(v) return v >= x end end,
  lt = function(n) local x = n.value return function(v) return v < x end end,
  le = function(n) local x = n.value return function(v) return v <= x end end,
  ["in"] = function(n)
    local set = {}
    for _, x in ipairs(n.values) do set[x] = true end
    return function(v) return set[v] == true end
  end,
  not_in = function(n)
    local set = {}
    for _, x in ipairs(n.values) do set[x] = true end
    return function(v) return set[v] == nil end
  end,
  -- a plain substring: on valid UTF-8 a byte search finds what LIKE '%x%' finds
  like = function(n)
    local x = ascii_lower(n.value)
    return function(v) return ascii_lower(v):find(x, 1, true) ~= nil end
  end,
  not_like = function(n)
    local x = ascii_lower(n.value)
    return function(v) return ascii_lower(v):find(x, 1, true) == nil end
  end,
  pattern = function(n) -- the pattern is read once, not for every row
    local segments = like_compile(pattern_escape(n.value))
    return function(v) return like_match(v, segments) end
  end,
  not_pattern = function(n)
    local segments = like_compile(pattern_escape(n.value))
    return function(v) return not like_match(v, segments) end
  end,
  between = function(n)
    local from, to = n.from, n.to
    return function(v) return v >= from and v <= to end
  end,
  not_null = function() return function() return true end end,
  is_null = function() return function() return false end end,
}

-- What a condition says about a row whose value is NULL (see docs/filter.md):
-- negative operators hold, as in Bitrix's ORM; comparisons do not.
local NULL_HOLDS = { ne = true, not_in = true, not_like = true, not_pattern = true, is_null = true }

local compile_node

local function compile_group(node)
  local preds = {}
  for i, item in ipairs(node.items) do preds[i] = compile_node(item) end
  local n = #preds
  if node.logic == "or" then
    return function(row)
      for i = 1, n do
        if preds[i](row) then return true end
      end
      return false
    end
  end
  return function(row)
    for i = 1, n do
      if not preds[i](row) then return false end
    end
    return true
  end
end

function compile_node(node)
  if node.kind == "group" then return compile_group(node) end
  local make = TESTS[node.op]
  if node.kind ~= "cond" or not make then error("filter.match: not a filter AST", 4) end
  local test, code, ftype = make(node), node.field, node.type
  local on_null = NULL_HOLDS[node.op] == true
  local numeric = ftype == "int" or ftype == "double"
  return function(row)
    local v = row[code]
    if v == nil or v == null then return on_null end
    if numeric then
      if type(v) ~= "number" then v = tonumber(v) end
    elseif ftype == "string" and type(v) == "number" then
      v = as_string(v)
    end
    if v == nil then return on_null end
    return test(v)
  end
end

---------------------------------------------------------------- compiled to Lua source

-- The predicate as Lua source, loaded once per AST, in a hand-written
-- predicate's shape: each field read into a local where first needed and typed
-- once, every condition an inline comparison, the items of AND and OR tested
-- cheapest first and joined by jumps; the closures above are the reference
-- it answers as (spec/filter_compile_spec.lua).
--
-- Values never stand in the text. Every value, set, pattern and field code is
-- an entry of a constants table passed to the chunk (the first ones bound to
-- locals, which the predicate holds as upvalues); the text holds only names
-- and numbers this generator makes, so no value can change the code. The
-- chunk runs with an empty environment.
-- constants bound to locals: a LuaJIT function holds at most 60 upvalues (11
-- go to the helpers), a Lua 5.4 one 255
local MAX_NAMED = jit and 48 or 150
local MAX_FIELDS = 150     -- fields one predicate reads (a function holds at most 200 locals)
local MAX_GENERATED = 1000 -- conditions: a larger filter keeps the closures (LuaJIT's jumps
                           -- reach 32767 instructions; a list counts one, its set is a constant)
local INLINE_IN = 1        -- a list of one compares in line, longer ones look a set up

-- Whether a string could be the text of a number (as_string's, or more).
local function numeric_text(s)
  return type(s) ~= "string" or tonumber(s) ~= nil
end

-- Whether a condition on a string field needs a number in the row turned into
-- its text first, as the closures turn it: not for = and != (and lists) with
-- values that are no number's text (a number equals none of them, its text
-- neither), nor for the NULL tests (tested apart).
local function string_needs_text(node)
  local op = node.op
  if op == "eq" or op == "ne" then return numeric_text(node.value) end
  if op == "in" or op == "not_in" then
    for _, x in ipairs(node.values) do
      if numeric_text(x) then return true end
    end
    return false
  end
  return not (op == "is_null" or op == "not_null")
end

local CMP = { gt = " > ", ge = " >= ", lt = " < ", le = " <= " }
-- the tests that answer alike for a row's null and nil (generate: the field's
-- local then keeps what the row holds, one test fewer per row)
local NULL_AGNOSTIC = { eq = true, ne = true, ["in"] = true, not_in = true, is_null = true, not_null = true }

-- The items of a group cheapest first, as a hand-written predicate tests them
-- (AND and OR answer the same in any order): NULL tests, comparisons, short
-- lists, sets, LIKE, patterns; a group costs what its items cost. Ties keep
-- their order.
-- costs.typing: the rows are not normalized, and a number field's value is
-- typed by a call (tonumber) where first read, which costs as much as the
-- test; a list on one is looked up by the value as it comes (memo_in).
local function cost(node, costs)
  local c = costs[node]
  if c then return c end
  local op = node.op
  local typed_by_call = costs.typing and (node.type == "int" or node.type == "double")
  if node.kind == "group" then
    c = 0
    for _, item in ipairs(node.items) do c = c + cost(item, costs) end
  elseif (op == "in" or op == "not_in") and typed_by_call and #node.values > 0 then
    c = 1
  elseif op == "in" or op == "not_in" then
    c = #node.values <= INLINE_IN and #node.values or 2
  elseif op == "like" or op == "not_like" then
    c = 10
  elseif op == "pattern" or op == "not_pattern" then
    c = 30
  elseif op == "is_null" or op == "not_null" then
    c = 0.5 -- a truth test
  else
    c = op == "between" and 2 or 1
    if typed_by_call then c = c + 1 end
  end
  costs[node] = c
  return c
end

local function cheapest_first(items, costs)
  local order = {}
  for i = 1, #items do order[i] = i end
  sort(order, function(a, b)
    local ca, cb = cost(items[a], costs), cost(items[b], costs)
    if ca ~= cb then return ca < cb end
    return a < b
  end)
  local out = {}
  for i, k in ipairs(order) do out[i] = items[k] end
  return out
end

-- generate(ast, normalized) -> source, constants; or nil when the filter is
-- too large. normalized: the rows hold every value as its field's type
-- (numbers for int and double, strings for the others) and NULL as nil, as
-- the connector's enc:normalize gives them: no value is typed again.
local LUA_KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or repeat return then
  true until while]]):gmatch("%S+") do LUA_KEYWORDS[w] = true end

-- Whether a field code may stand in the text as row.CODE: a plain Lua name
-- (ASCII letters, digits and underscores, no keyword), which can only name a
-- field. A field read so is a constant-key access (Lua's GETFIELD, LuaJIT's
-- TGETS), measured 10-25% faster per row on Lua 5.4 than row[k1].
local function plain_name(code)
  return type(code) == "string" and #code <= 64 and code:find("^[A-Za-z_][A-Za-z0-9_]*$") ~= nil
    and not LUA_KEYWORDS[code]
end

-- A list (@, !@) on a number field of rows that are not normalized: the
-- verdict for each value as the row gives it (a number, or text that
-- tonumber reads), kept in a table looked up by that value, so that a row's
-- value is typed by a call only the first time it is seen (a table lookup is
-- what a hand-written predicate does; Lua 5.4 has no call-free type test).
-- At most MEMO_MAX values are kept per list; past them a value not kept is
-- typed by the call each time. -> the table, the function(value) -> verdict
-- that fills it; the verdict is the closures' `in` (nil, NULL, text that is
-- no number: false).
local MEMO_MAX = 1024
local MAX_MEMOS = 40 -- lists so looked up in one predicate (their verdicts are locals)
local function memo_in(values)
  local set, memo, n = {}, {}, 0
  for _, x in ipairs(values) do set[x] = true end
  for x in pairs(set) do
    memo[x] = true
    n = n + 1
  end
  return memo, function(v)
    local x = v
    if type(x) ~= "number" then x = tonumber(x) end
    local verdict = x ~= nil and set[x] == true
    if n < MEMO_MAX then
      local t = type(v)
      if t == "string" or (t == "number" and v == v) then
        memo[v] = verdict
        n = n + 1
      end
    end
    return verdict
  end
end

local function generate(ast, normalized)
  local consts, lines, costs = {}, {}, { typing = not normalized }
  local nconds, nfields, labels, nmemos = 0, 0, 0, 0
  local function const(v)
    local i = #consts + 1
    consts[i] = v
    if i <= MAX_NAMED then return "k" .. i end
    return "K[" .. i .. "]"
  end
  local function emit(s) lines[#lines + 1] = s end
  local lower_ok = ALL_BYTES:lower() == ALL_LOWERED

  -- the fields, by code and type: { var = local name, read = how the row gives it,
  -- kind = "number" | "string" | "other", text = numbers must become text }
  local fields = {}
  local function field_of(node)
    local by_code = fields[node.field]
    if not by_code then
      by_code = {}
      fields[node.field] = by_code
    end
    local f = by_code[node.type]
    if not f then
      nfields = nfields + 1
      local t = node.type
      f = { var = "f" .. nfields, text = false, takes_null = true,
            read = plain_name(node.field) and ("row." .. node.field) or ("row[" .. const(node.field) .. "]"),
            kind = (t == "int" or t == "double") and "number" or t == "string" and "string" or "other" }
      by_code[t] = f
    end
    return f
  end
  local function scan(node)
    if type(node) == "table" and node.kind == "group" and type(node.items) == "table" then
      for _, item in ipairs(node.items) do scan(item) end
      return
    end
    if type(node) ~= "table" or node.kind ~= "cond" or not TESTS[node.op] then
      error("filter.match: not a filter AST", 5)
    end
    nconds = nconds + 1
    local f = field_of(node)
    if f.kind == "string" and string_needs_text(node) then f.text = true end
    -- null and nil answer alike in these tests: the local may keep null
    if not NULL_AGNOSTIC[node.op] or node.value == null then f.takes_null = false end
  end
  scan(ast)
  if nconds > MAX_GENERATED or nfields > MAX_FIELDS then return nil end

  -- the statements that read a field into its local, typed as the closures type it
  local function load(f)
    local v = f.var
    emit(("%s = %s"):format(v, f.read))
    if normalized then return end
    if f.kind == "number" then
      -- a number stays itself; text becomes its number or nil; null, false,
      -- tables nil: NULL, as the closures take them
      emit(("if %s then %s = tonumber(%s) end"):format(v, v, v))
    elseif f.kind == "string" and f.text then
      emit(("if %s == null then %s = nil elseif type(%s) == number then %s = as_string(%s) end"):format(v, v, v, v, v))
    elseif not f.takes_null then
      emit(("if %s == null then %s = nil end"):format(v, v))
    end
  end

  -- A condition on its field's local (nil: NULL) as an expression. A local
  -- that holds only numbers or nil, or strings or nil, is tested by its truth.
  local function test(node, f)
    local v, op = f.var, node.op
    local truthy = normalized or f.kind == "number"
    -- a local read without the null test (takes_null) may hold null
    local keeps_null = not truthy and not (f.kind == "string" and f.text) and f.takes_null
    local present = truthy and v or keeps_null and ("(" .. v .. " ~= nil and " .. v .. " ~= null)") or (v .. " ~= nil")
    local absent = truthy and ("not " .. v) or keeps_null and ("(" .. v .. " == nil or " .. v .. " == null)")
      or (v .. " == nil")
    if not normalized and f.kind == "string" and not f.text then
      -- a number left in a string field's local: one without text (NaN; the
      -- infinities where tonumber does not read "inf") counts as NULL, as the
      -- closures count it
      local parts = { v .. " == nil" }
      if keeps_null then parts[2] = v .. " == null" end
      if as_string(0 / 0) == nil then parts[#parts + 1] = v .. " ~= " .. v end
      if as_string(huge) == nil then parts[#parts + 1] = v .. " == huge" end
      if as_string(-huge) == nil then parts[#parts + 1] = v .. " == -huge" end
      absent = "(" .. concat(parts, " or ") .. ")"
      present = "not " .. absent
    end
    if op == "is_null" then return absent end
    if op == "not_null" then return present end
    if op == "eq" then return v .. " == " .. const(node.value) end
    if op == "ne" then return v .. " ~= " .. const(node.value) end
    if CMP[op] then return present .. " and " .. v .. CMP[op] .. const(node.value) end
    if op == "between" then
      return ("%s and %s >= %s and %s <= %s"):format(present, v, const(node.from), v, const(node.to))
    end
    if op == "in" or op == "not_in" then
      local values, any = node.values, "false" -- an empty list holds for no value
      if #values > 0 and #values <= INLINE_IN then
        local parts = {}
        for i, x in ipairs(values) do parts[i] = v .. " == " .. const(x) end
        any = "(" .. concat(parts, " or ") .. ")"
      elseif #values > INLINE_IN then
        local set = {}
        for _, x in ipairs(values) do set[x] = true end
        any = const(set) .. "[" .. v .. "]"
      end
      if op == "in" then return any end
      return "not " .. any
    end
    local check
    if op == "like" or op == "not_like" then
      local x = ascii_lower(node.value)
      -- a needle without letters is found in the lowered value where it is in the value
      if x:find("[a-z]") then
        check = ("find(%s(%s), %s, 1, true)"):format(lower_ok and "lower" or "ascii_lower", v, const(x))
      else
        check = ("find(%s, %s, 1, true)"):format(v, const(x))
      end
    else
      check = ("like_match(%s, %s)"):format(v, const(like_compile(pattern_escape(node.value))))
    end
    if op == "like" or op == "pattern" then return present .. " and " .. check end
    return absent .. " or not " .. check
  end

  local function go(target)
    if target == true then return "return true" end
    if target == false then return "return false" end
    return "goto " .. target
  end

  -- the field a node always reads into its local first (nil for an empty
  -- group, and for a list that may be looked up by the raw value instead)
  local function first_field(node)
    while node and node.kind == "group" do node = cheapest_first(node.items, costs)[1] end
    if not node then return nil end
    local f = field_of(node)
    if not normalized and f.kind == "number" and (node.op == "in" or node.op == "not_in") and #node.values > 0 then
      return nil
    end
    return f.var
  end

  -- Code that goes to t when node holds, to f when not (a label, or true or
  -- false: a return); nxt: what follows the code, reached by falling through.
  -- loaded: the fields read on every path to here.
  local function node_code(node, t, f, nxt, loaded)
    if node.kind == "group" then
      local items, n = cheapest_first(node.items, costs), #node.items
      if n == 0 then
        local to = node.logic == "or" and f or t
        if to ~= nxt then emit("do " .. go(to) .. " end") end
        return
      end
      local seen = setmetatable({}, { __index = loaded })
      for i = 1, n do
        local label
        local it, if_, inxt = t, f, nxt
        if i < n then
          labels = labels + 1
          label = "l" .. labels
          if node.logic == "or" then if_ = label else it = label end
          inxt = label
        end
        node_code(items[i], it, if_, inxt, seen)
        -- the next item runs after this one, which read its first field
        seen[first_field(items[i]) or 0] = true
        if label then emit("::" .. label .. "::") end
      end
      return
    end
    local fld = field_of(node)
    local e
    if not normalized and fld.kind == "number" and (node.op == "in" or node.op == "not_in") and #node.values > 0
        and not loaded[fld.var] and nmemos < MAX_MEMOS then
      -- the value as the row gives it looked up (memo_in); the field's local stays unread
      nmemos = nmemos + 1
      local m, memo, fill = "m" .. nmemos, memo_in(node.values)
      emit(("%s = %s[%s] if %s == nil then %s = %s(%s) end"):format(m, const(memo), fld.read, m, m, const(fill),
        fld.read))
      e = node.op == "in" and m or ("not " .. m)
    else
      if not loaded[fld.var] then
        load(fld)
        loaded[fld.var] = true
      end
      e = test(node, fld)
    end
    if nxt == t then
      emit("if not (" .. e .. ") then " .. go(f) .. " end")
    elseif nxt == f then
      emit("if " .. e .. " then " .. go(t) .. " end")
    else
      emit("if " .. e .. " then " .. go(t) .. " else " .. go(f) .. " end")
    end
  end
  node_code(ast, true, false, nil, {})

  local out = { "local K, null, type, number, tonumber, as_string, find, lower, ascii_lower, like_match, huge = ..." }
  local n = math.min(#consts, MAX_NAMED)
  if n > 0 then
    local names, reads = {}, {}
    for i = 1, n do names[i], reads[i] = "k" .. i, "K[" .. i .. "]" end
    out[#out + 1] = "local " .. concat(names, ", ") .. " = " .. concat(reads, ", ")
  end
  out[#out + 1] = "return function(row)"
  if nfields + nmemos > 0 then
    local vars = {}
    for i = 1, nfields do vars[i] = "f" .. i end
    for i = 1, nmemos do vars[#vars + 1] = "m" .. i end
    out[#out + 1] = "local " .. concat(vars, ", ")
  end
  out[#out + 1] = concat(lines, "\n")
  out[#out + 1] = "end\n"
  return concat(out, "\n"), consts
end

local function compile_source(ast, normalized)
  local src, consts = generate(ast, normalized)
  if not src then return nil end
  local chunk = load(src, "=filter", "t", {})
  if not chunk then return nil end
  return chunk(consts, null, type, "number", tonumber, as_string, string.find, string.lower, ascii_lower, like_match, huge)
end

local compiled = {}
for _, how in ipairs({ "source", "normalized", "closures" }) do compiled[how] = setmetatable({}, { __mode = "k" }) end
local by_source = compiled.source
local function accept() return true end

-- filter.compile(ast [, how]) -> predicate(row); a nil ast gives one that
-- accepts every row. how: "source" (the default: Lua source generated for the
-- filter and loaded), "normalized" (the same for rows whose values all have
-- their field's type and whose NULLs are nil: no value is typed again) or
-- "closures" (a tree of closures: the reference the others answer as, and
-- what a filter too large to generate keeps). Cached per AST and how.
function _M.compile(ast, how)
  if ast == nil then return accept end
  how = how or "source"
  local cache = compiled[how]
  if not cache then
    error("filter.compile: how must be \"source\", \"normalized\" or \"closures\", got " .. show(how), 2)
  end
  local f = cache[ast]
  if not f then
    if how ~= "closures" then f = compile_source(ast, how == "normalized") end
    f = f or compile_node(ast)
    cache[ast] = f
  end
  return f
end

-- filter.source(ast [, how]) -> the Lua text compile loads for the AST and its
-- constants, or nil when the filter is too large and keeps closures.
function _M.source(ast, how)
  return generate(ast, how == "normalized")
end

-- filter.match(ast, row) -> boolean; a nil ast matches every row.
function _M.match(ast, row)
  if ast == nil then return true end
  return (by_source[ast] or _M.compile(ast))(row)
end

---------------------------------------------------------------- SQL

-- The named dialects are the engines' own (each engine module's `dialect`):
-- one home for each SQL dialect.
local DIALECT_MODULES = {
  sqlite = "biconnector.sql.sqlite",
  postgres = "biconnector.sql.postgresql",
  mysql = "biconnector.sql.mysql",
}

local SQL_OPS = { eq = "=", ne = "<>", gt = ">", ge = ">=", lt = "<", le = "<=" }

local function quote_ident(name, d)
  if type(name) ~= "string" or name == "" or name:find("%z") then
    error("filter.to_sql: bad column name " .. show(name), 3)
  end
  local q = d.quote
  return q .. name:gsub(q, q .. q) .. q
end

-- Seconds since 1970-01-01 00:00:00 UTC of a normalized "YYYY-MM-DD[ HH:MM:SS]"
-- (days from the civil date: Howard Hinnant's algorithm, integers only).
local function epoch_seconds(v)
  local y, m, d = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)")
  local hh, mi, ss = v:match(" (%d%d):(%d%d):(%d%d)$")
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * (m > 2 and m - 3 or m + 9) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + (tonumber(hh) or 0) * 3600 + (tonumber(mi) or 0) * 60 + (tonumber(ss) or 0)
end

local STORAGE = { text = true, epoch = true }

-- The moment one day (a date) or one second (a datetime) after a normalized
-- value, or nil past 9999-12-31 [23:59:59].
local function next_moment(v, is_date)
  local y, m, d = tonumber(v:sub(1, 4)), tonumber(v:sub(6, 7)), tonumber(v:sub(9, 10)) + 1
  local hh, mi, ss = 0, 0, 0
  if not is_date then
    d = d - 1
    hh, mi, ss = tonumber(v:sub(12, 13)), tonumber(v:sub(15, 16)), tonumber(v:sub(18, 19)) + 1
    if ss == 60 then ss, mi = 0, mi + 1 end
    if mi == 60 then mi, hh = 0, hh + 1 end
    if hh == 24 then hh, d = 0, d + 1 end
  end
  if not valid_date(y, m, d) then
    d, m = 1, m + 1
    if m == 13 then m, y = 1, y + 1 end
  end
  if y > 9999 then return nil end
  if is_date then return format("%04d-%02d-%02d", y, m, d) end
  return format("%04d-%02d-%02d %02d:%02d:%02d", y, m, d, hh, mi, ss)
end

-- Parts joined by " AND " or " OR " in parentheses; past 8 parts as a
-- balanced tree, so that an engine's parser nests a long group log2(n) deep,
-- not n deep (SQLite refuses expressions deeper than 1000).
local function join(parts, op, i, j)
  i, j = i or 1, j or #parts
  if j - i < 8 then return "(" .. concat(parts, op, i, j) .. ")" end
  local mid = floor((i + j) / 2)
  return "(" .. join(parts, op, i, mid) .. op .. join(parts, op, mid + 1, j) .. ")"
end

-- A date or datetime condition written as ranges: each value V is the range
-- [lower(V), upper(V)), upper nil when nothing lies above. valid (SQL, or nil)
-- holds for exactly the non-NULL column values the row encoder serves as a
-- value: positive conditions require it, negative ones hold without it.
-- Placeholders are made in the order they stand in the SQL text. column says
-- what the column holds, for the error on an operator ranges cannot write.
local function range_condition(node, c, lower, upper, valid, column)
  local function within(v)
    local lo = c .. " >= " .. lower(v)
    local hi = upper(v)
    if not hi then return lo end
    return "(" .. lo .. " AND " .. c .. " < " .. hi .. ")"
  end
  local function sure(sql)
    if valid then return "(" .. sql .. " AND " .. valid .. ")" end
    return sql
  end
  local function unless(sql)
    if valid then return "(" .. c .. " IS NULL OR NOT " .. valid .. " OR NOT " .. sql .. ")" end
    return "(" .. c .. " IS NULL OR NOT " .. sql .. ")"
  end
  local op = node.op
  if op == "not_null" then return valid or (c .. " IS NOT NULL") end
  if op == "is_null" then return valid and "(" .. c .. " IS NULL OR NOT " .. valid .. ")" or (c .. " IS NULL") end
  if op == "eq" then return sure(within(node.value)) end
  if op == "ne" then return unless(within(node.value)) end
  if op == "ge" then return sure(c .. " >= " .. lower(node.value)) end
  if op == "lt" then return sure(c .. " < " .. lower(node.value)) end
  if op == "gt" or op == "le" then
    local hi = upper(node.value)
    if op == "gt" then return hi and sure(c .. " >= " .. hi) or "1=0" end
    return hi and sure(c .. " < " .. hi) or (valid or c .. " IS NOT NULL")
  end
  if op == "between" then
    local lo = c .. " >= " .. lower(node.from)
    local hi = upper(node.to)
    return sure(hi and "(" .. lo .. " AND " .. c .. " < " .. hi .. ")" or lo)
  end
  if op == "in" or op == "not_in" then
    if #node.values == 0 then return op == "in" and "1=0" or "1=1" end
    local parts = {}
    for i, v in ipairs(node.values) do parts[i] = within(v) end
    local any = #parts == 1 and parts[1] or join(parts, " OR ")
    if op == "in" then return sure(any) end
    return unless(any)
  end
  error(("filter.to_sql: %s on field %s, whose column %s, cannot be written in SQL")
    :format(show(op), show(node.field), column), 4)
end

-- A date or datetime condition on a column holding seconds since the epoch
-- (UTC): each value V is the range [V, V + one day (date) or one second
-- (datetime)), so that 1717200000.5 is on its day and in its second, as the
-- row encoder floors it.
local function epoch_condition(node, c, param)
  local width = node.type == "date" and 86400 or 1
  return range_condition(node, c,
    function(v) return param(epoch_seconds(v)) end,
    function(v) return param(epoch_seconds(v) + width) end, nil, "stores epoch seconds (opts.dates)")
end

-- A date or datetime condition on an SQL DATE or TIMESTAMP column, for a
-- dialect whose date_range = {valid = function(column_sql, node) -> SQL,
-- min = "YYYY-MM-DD HH:MM:SS" or nil}: the row encoder serves such a value
-- with the fraction of a second dropped, or as null where valid fails, so
-- each filter value V is the range [V, V + one day or second); bounds below
-- min are raised to it (the engine may not read them).
local function typed_condition(node, c, param, range)
  local is_date = node.type == "date"
  local min = range.min and (is_date and range.min:sub(1, 10) or range.min)
  local function bound(v)
    if min and v < min then v = min end
    return param(v)
  end
  return range_condition(node, c, bound,
    function(v)
      local after = next_moment(v, is_date)
      return after and bound(after)
    end,
    range.valid(c, node), "holds dates")
end

-- filter.to_sql(ast, {dialect=, columns=, dates=, first_param=}) -> where_sql, params
-- dates: how date/datetime columns store their values, "text" (the default:
-- "YYYY-MM-DD[ HH:MM:SS]") or "epoch" (seconds since 1970, UTC); one word for
-- every such column or a map field code -> word.
-- Values only ever travel as parameters; identifiers come only from the AST's
-- field codes (mapped through columns) and are quoted for the dialect.
function _M.to_sql(ast, opts)
  opts = opts or {}
  -- a dialect is a name above or an engine's own table: {quote =, like =,
  -- numbered =, operand = function(column_sql, node) -> the expression every
  -- condition on the node's field tests, like_sql = function(operand_sql,
  -- param_sql) -> the LIKE condition, date_range = {valid =, min =}: how
  -- date/datetime columns of SQL date types compare (typed_condition)}
  local d = opts.dialect or "sqlite"
  if type(d) ~= "table" then
    local name = DIALECT_MODULES[d]
    if not name then error("filter.to_sql: unknown dialect " .. show(opts.dialect), 2) end
    -- lazy: the engine modules require biconnector.sql, which requires this module
    d = require(name).dialect
  end
  local columns = opts.columns or {}
  local dates = opts.dates or "text"
  if type(dates) == "table" then
    for code, how in pairs(dates) do
      if not STORAGE[how] then
        error(("filter.to_sql: dates[%s] must be \"text\" or \"epoch\", got %s"):format(show(code), show(how)), 2)
      end
    end
  elseif not STORAGE[dates] then
    error("filter.to_sql: dates must be \"text\", \"epoch\" or a map field code -> one of them, got " .. show(dates), 2)
  end
  local params, np = {}, 0
  local base = (opts.first_param or 1) - 1
  local function param(v)
    np = np + 1
    params[np] = v
    if d.numbered then return "$" .. (base + np) end
    return "?"
  end
  local function column(code)
    return quote_ident(columns[code] or code, d)
  end
  local function compile(node)
    if node.kind == "group" then
      local parts = {}
      for i, item in ipairs(node.items) do parts[i] = compile(item) end
      if #parts == 0 then return node.logic == "or" and "1=0" or "1=1" end
      if #parts == 1 then return parts[1] end
      return join(parts, node.logic == "or" and " OR " or " AND ")
    end
    if node.kind ~= "cond" or type(node.field) ~= "string" then error("filter.to_sql: not a filter AST", 3) end
    local c = column(node.field)
    local op = node.op
    if d.operand then c = d.operand(c, node) end
    if node.type == "date" or node.type == "datetime" then
      local how = dates
      if type(dates) == "table" then how = dates[node.field] or "text" end
      if how == "epoch" and op ~= "is_null" and op ~= "not_null" then return epoch_condition(node, c, param) end
      if how ~= "epoch" and d.date_range then return typed_condition(node, c, param, d.date_range) end
    end
    if op == "is_null" then return c .. " IS NULL" end
    if op == "not_null" then return c .. " IS NOT NULL" end
    if SQL_OPS[op] then
      local sql = c .. " " .. SQL_OPS[op] .. " " .. param(node.value)
      if op == "ne" then return "(" .. c .. " IS NULL OR " .. sql .. ")" end
      return sql
    end
    if op == "in" or op == "not_in" then
      if #node.values == 0 then return op == "in" and "1=0" or "1=1" end
      local ps = {}
      for i, v in ipairs(node.values) do ps[i] = param(v) end
      if op == "in" then return c .. " IN (" .. concat(ps, ", ") .. ")" end
      return "(" .. c .. " IS NULL OR " .. c .. " NOT IN (" .. concat(ps, ", ") .. "))"
    end
    if op == "between" then
      return c .. " BETWEEN " .. param(node.from) .. " AND " .. param(node.to)
    end
    if LIKE_OPS[op] then
      local pattern
      if op == "like" or op == "not_like" then
        pattern = "%" .. like_escape(node.value) .. "%"
      else
        pattern = pattern_escape(node.value)
      end
      local sql = d.like_sql and d.like_sql(c, param(pattern)) or (c .. " " .. d.like .. " " .. param(pattern) .. " ESCAPE '!'")
      if op == "not_like" or op == "not_pattern" then
        return "(" .. c .. " IS NULL OR NOT (" .. sql .. "))"
      end
      return sql
    end
    error("filter.to_sql: unknown operator " .. show(op), 3)
  end
  if ast == nil then return "1=1", params end
  return compile(ast), params
end

return _M
