-- biconnector.connector.names (public name biconnector.names): valid, unique BI Builder names from any code.
--   names.table_name(code [, taken])      -> "order_lines"  (a-z 0-9 _, a letter first, <= 230)
--   names.column_names(codes [, taken])   -> { "ID", "CREE_LE", ... } (A-Z 0-9 _, a letter first, <= 32)
-- The rules: b24restdocs api-reference/biconnector/table/biconnector-table-add.md
-- (name, and the name of each element of fields). The code itself stays the
-- table's or column's externalCode, exactly as the connector spells it; only the
-- name is derived. Latin letters with diacritics lose them (`créé` -> `cree`),
-- other scripts drop out; a name that would be empty becomes a short hash of
-- the code. `taken` (a set of names already used, e.g. every table name of the
-- portal: table names are unique across the whole portal) is extended with the
-- names handed out; a name in use gets `_2`, `_3`, ... within the length limit.
local core = require "biconnector.core"

local type, tostring, pairs = type, tostring, pairs
local byte, char, concat = string.byte, string.char, table.concat

local _M = { _VERSION = core.version }

_M.TABLE_NAME_MAX = 230
_M.COLUMN_NAME_MAX = 32

-- U+00C0..U+00FF and U+0100..U+017F (Latin-1 Supplement, Latin Extended-A) as
-- ASCII, one entry per code point; "-" is no letter (the signs x and /).
local LATIN1 = "A A A A A A AE C E E E E I I I I D N O O O O O - O U U U U Y TH ss "
  .. "a a a a a a ae c e e e e i i i i d n o o o o o - o u u u u y th y"
local EXTENDED_A = "A a A a A a C c C c C c C c D d D d E e E e E e E e E e G g G g G g G g H h H h "
  .. "I i I i I i I i I i IJ ij J j K k k L l L l L l L l L l N n N n N n n N n O o O o O o OE oe "
  .. "R r R r R r S s S s S s S s T t T t T t U u U u U u U u U u U u W w Y y Y Z z Z z Z z s"

local ASCII_OF = {}
local function fill(list, first)
  local cp = first
  for token in list:gmatch("%S+") do
    if token ~= "-" then ASCII_OF[cp] = token end
    cp = cp + 1
  end
end
fill(LATIN1, 0xC0)
fill(EXTENDED_A, 0x100)

-- The code as ASCII: Latin letters without their diacritics, combining marks
-- (U+0300..U+036F) dropped, every other character or invalid byte a space.
local function ascii(code)
  local s = tostring(code)
  local out, i, n = {}, 1, #s
  while i <= n do
    local b = byte(s, i)
    local cp, len
    if b < 0x80 then cp, len = b, 1
    elseif b >= 0xC2 and b <= 0xDF then cp, len = b - 0xC0, 2
    elseif b >= 0xE0 and b <= 0xEF then cp, len = b - 0xE0, 3
    elseif b >= 0xF0 and b <= 0xF4 then cp, len = b - 0xF0, 4
    else cp, len = nil, 1 end
    if cp and len > 1 then
      for k = 1, len - 1 do
        local c = byte(s, i + k)
        if not c or c < 0x80 or c > 0xBF then cp, len = nil, k break end
        cp = cp * 64 + (c - 0x80)
      end
    end
    if cp == nil then out[#out + 1] = " "
    elseif cp < 0x80 then out[#out + 1] = char(cp)
    elseif ASCII_OF[cp] then out[#out + 1] = ASCII_OF[cp]
    elseif not (cp >= 0x300 and cp <= 0x36F) then out[#out + 1] = " " end
    i = i + len
  end
  return concat(out)
end
_M.ascii = ascii

-- One name from one code, before uniqueness: upper case letters (columns) or lower (tables).
local function base_name(code, upper, prefix, max)
  local s = ascii(code)
  s = upper and s:upper() or s:lower()
  local class = upper and "[^A-Z0-9]+" or "[^a-z0-9]+"
  s = s:gsub(class, "_"):gsub("^_+", ""):gsub("_+$", "")
  if s == "" then
    -- nothing Latin in it: a stable name from the code itself
    s = prefix .. core.sha256(tostring(code)):sub(1, 8)
    if upper then s = s:upper() end
  elseif not s:match(upper and "^[A-Z]" or "^[a-z]") then
    s = prefix .. s
  end
  return (s:sub(1, max):gsub("_+$", ""))
end

-- The first of name, name_2, name_3, ... not in taken (cut to fit max).
local function unique(name, taken, max)
  if not taken[name] then return name end
  local n = 2
  while true do
    local suffix = "_" .. n
    local candidate = name:sub(1, max - #suffix):gsub("_+$", "") .. suffix
    if not taken[candidate] then return candidate end
    n = n + 1
  end
end

-- One name for code: base_name made unique against taken, then marked taken.
local function derive(code, taken, upper, prefix, max)
  taken = taken or {}
  local name = unique(base_name(code, upper, prefix, max), taken, max)
  taken[name] = true
  return name
end

-- names.table_name(code [, taken]) -> a table name; taken[name] is set.
function _M.table_name(code, taken) return derive(code, taken, false, "t_", _M.TABLE_NAME_MAX) end

-- names.column_name(code [, taken]) -> a column name; taken[name] is set.
function _M.column_name(code, taken) return derive(code, taken, true, "F_", _M.COLUMN_NAME_MAX) end

-- names.column_names(codes [, taken]) -> one column name per code, all distinct
-- and none in taken (a set, e.g. the names a table already has).
function _M.column_names(codes, taken)
  local used = {}
  for k, v in pairs(taken or {}) do used[k] = v end
  local out = {}
  for i, code in ipairs(codes) do out[i] = _M.column_name(code, used) end
  return out
end

-- The length of UTF-8 text in characters, as Bitrix24 counts its limits ("at most
-- 512 characters"): every byte but a continuation byte (0x80-0xBF) starts one.
function _M.length(s)
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

-- Whether name is a valid table name / column name (the documented rules).
function _M.valid_table_name(name)
  return type(name) == "string" and #name <= _M.TABLE_NAME_MAX and name:match("^[a-z][a-z0-9_]*$") ~= nil
end

function _M.valid_column_name(name)
  return type(name) == "string" and #name <= _M.COLUMN_NAME_MAX and name:match("^[A-Z][A-Z0-9_]*$") ~= nil
end

return _M
