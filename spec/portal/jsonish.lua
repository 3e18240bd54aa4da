-- A small JSON codec for the test portal, independent of the project's own
-- codec (the portal is the reference peer it is tested against). Decoding
-- records the key order of every object, because Bitrix24 runs batch commands
-- in the order they were sent.
local M = {}

M.null = setmetatable({}, { __tostring = function() return "null" end })
local order = setmetatable({}, { __mode = "k" }) -- object -> list of keys in order
local arrays = setmetatable({}, { __mode = "k" }) -- tables that were JSON arrays

function M.keys(t) return order[t] end
function M.is_array(t) return arrays[t] == true end
function M.array(t) arrays[t] = true return t end
function M.object(t, keys) order[t] = keys return t end

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function is_list(t)
  if arrays[t] then return true end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  if n == 0 then return false end
  for i = 1, n do if t[i] == nil then return false end end
  return true
end

local encode
local function encode_value(v, out)
  local tv = type(v)
  if v == nil or v == M.null then out[#out + 1] = "null"
  elseif tv == "boolean" then out[#out + 1] = tostring(v)
  elseif tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then out[#out + 1] = "null"
    elseif v == math.floor(v) and math.abs(v) < 2^53 then out[#out + 1] = ("%d"):format(v)
    else out[#out + 1] = ("%.17g"):format(v) end
  elseif tv == "string" then out[#out + 1] = encode_string(v)
  elseif tv == "table" then
    if is_list(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        encode_value(v[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = order[v]
      if not keys then
        keys = {}
        for k in pairs(v) do keys[#keys + 1] = k end
        table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
      end
      out[#out + 1] = "{"
      local first = true
      for _, k in ipairs(keys) do
        if v[k] ~= nil then
          if not first then out[#out + 1] = "," end
          first = false
          out[#out + 1] = encode_string(tostring(k))
          out[#out + 1] = ":"
          encode_value(v[k], out)
        end
      end
      out[#out + 1] = "}"
    end
  else
    error("cannot encode a " .. tv)
  end
end
function encode(v)
  local out = {}
  encode_value(v, out)
  return table.concat(out)
end
M.encode = encode

local function utf8char(cp)
  if cp < 0x80 then return string.char(cp)
  elseif cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
  elseif cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end
  return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
    0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

function M.decode(s)
  local pos = 1
  local function fail(why) error(("JSON: %s at byte %d"):format(why, pos), 0) end
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    pos = pos + 1
    local parts = {}
    while true do
      local a = s:find('["\\]', pos)
      if not a then fail("unterminated string") end
      parts[#parts + 1] = s:sub(pos, a - 1)
      if s:sub(a, a) == '"' then pos = a + 1 break end
      local e = s:sub(a + 1, a + 1)
      if e == "u" then
        local cp = tonumber(s:sub(a + 2, a + 5), 16) or fail("bad \\u escape")
        pos = a + 6
        if cp >= 0xD800 and cp < 0xDC00 and s:sub(pos, pos + 1) == "\\u" then
          local lo = tonumber(s:sub(pos + 2, pos + 5), 16)
          if lo and lo >= 0xDC00 and lo < 0xE000 then
            cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
            pos = pos + 6
          end
        end
        parts[#parts + 1] = utf8char(cp)
      else
        local map = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["/"] = "/" }
        parts[#parts + 1] = map[e] or fail("bad escape")
        pos = a + 2
      end
    end
    return table.concat(parts)
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      pos = pos + 1
      local t, keys = {}, {}
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1 order[t] = keys return t end
      while true do
        ws()
        if s:sub(pos, pos) ~= '"' then fail("expected a key") end
        local k = str()
        ws()
        if s:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        local v = value()
        if t[k] == nil then keys[#keys + 1] = k end
        t[k] = v
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "}" then break elseif d ~= "," then fail("expected ',' or '}'") end
      end
      order[t] = keys
      return t
    elseif c == "[" then
      pos = pos + 1
      local t = {}
      arrays[t] = true
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1 return t end
      while true do
        t[#t + 1] = value()
        ws()
        local d = s:sub(pos, pos)
        pos = pos + 1
        if d == "]" then break elseif d ~= "," then fail("expected ',' or ']'") end
      end
      return t
    elseif c == '"' then return str()
    elseif s:sub(pos, pos + 3) == "true" then pos = pos + 4 return true
    elseif s:sub(pos, pos + 4) == "false" then pos = pos + 5 return false
    elseif s:sub(pos, pos + 3) == "null" then pos = pos + 4 return M.null
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not num or num == "" then fail("unexpected character") end
      pos = pos + #num
      return tonumber(num) or fail("bad number")
    end
  end
  local ok, v = pcall(function()
    local v = value()
    ws()
    if pos <= #s then fail("trailing characters") end
    return v
  end)
  if not ok then return nil, v end
  return v
end

-- PHP-style form decoding (bracket notation), keeping key order.
local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.unescape = unescape

function M.form_decode(body)
  local root = {}
  order[root] = {}
  for pair in body:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = unescape(k), unescape(v)
    local base, rest = k:match("^([^%[]+)(.*)$")
    if base then
      local path = { base }
      for seg in rest:gmatch("%[([^%]]*)%]") do path[#path + 1] = seg end
      local t = root
      for i = 1, #path do
        local seg = path[i]
        if seg == "" then
          local n = 0
          for key in pairs(t) do if type(key) == "number" and key > n then n = key end end
          seg = n + 1
          arrays[t] = arrays[t] ~= false and true or false
        elseif seg:match("^%d+$") and (t == root and false or true) then
          seg = tonumber(seg) + 1 -- PHP lists start at 0
        end
        local keys = order[t] or {}
        order[t] = keys
        if i == #path then
          if t[seg] == nil then keys[#keys + 1] = seg end
          t[seg] = v
        else
          if type(t[seg]) ~= "table" then
            t[seg] = {}
            keys[#keys + 1] = seg
            order[t[seg]] = {}
          end
          t = t[seg]
        end
      end
    end
  end
  return root
end

return M
