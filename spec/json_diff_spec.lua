-- Differential spec against lua-cjson over 10,000 generated values (fixed seed):
--   decode(encode(v))        equals v exactly (number subtypes, array markers);
--   cjson.decode(encode(v))  equals v wherever lua-cjson is exact;
--   decode(cjson.encode(v))  equals v for values lua-cjson writes exactly.
-- Debian's lua-cjson 2.1.0 prints numbers with at most 14 significant digits
-- and reads every number as a double: the comparisons follow those limits.
local helpers = require "helpers"
local json = require("biconnector").json
local ok_cjson, cjson = pcall(require, "cjson")

local COUNT = 10000
local has_integers = math.type ~= nil

-- Park-Miller in doubles: the same sequence under Lua 5.4 and LuaJIT.
local state
local function seed(s) state = s + 0.0 end
local function rand()
  state = (state * 16807.0) % 2147483647.0
  return state / 2147483647.0
end
local function int(lo, hi) return lo + math.floor(rand() * (hi - lo + 1)) end
local function pick(list) return list[int(1, #list)] end

local pieces = {
  "a", "b", "Z", "0", "9", " ", "_", "-", ".", ":", ",", "{", "]",
  '"', "\\", "/", "\n", "\r", "\t", "\b", "\f", "\0", "\1", "\31", "\127",
  "\195\169",                 -- é
  "\226\130\172",             -- €
  "\226\128\168",             -- U+2028
  "\239\191\191",             -- U+FFFF
  "\240\159\152\128",         -- 😀
  "\244\143\191\191",         -- U+10FFFF
  "2024-08-30", "2024-08-30 12:19:57", "hello world",
}

local function random_string()
  local n, parts = int(0, 8), {}
  for i = 1, n do parts[i] = pick(pieces) end
  return table.concat(parts)
end

-- A double over the whole range: 53 random bits times a power of two.
local function random_double()
  local m = int(0, 67108863) * 134217728.0 + int(0, 134217727)
  local x = m * 2.0 ^ int(-1074, 971)
  if rand() < 0.5 then x = -x end
  return x
end

local edge_integers
if has_integers then
  edge_integers = { 0, 1, -1, math.maxinteger, math.mininteger, math.maxinteger - 1, math.mininteger + 1,
    9007199254740992, 9007199254740993, 9007199254740991, -9007199254740993, -9007199254740992,
    4611686018427387904, -4611686018427387905 }
else
  edge_integers = { 0, 1, -1, 2 ^ 53, 2 ^ 53 - 1, -(2 ^ 53), 2 ^ 63, -(2 ^ 63), 2 ^ 62, 2 ^ 53 + 2 }
end
local edge_doubles = { 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 2.2250738585072009e-308,
  1.7976931348623157e308, -1.7976931348623157e308, 0.1, 0.2, 0.3, 1 / 3, 2 / 3, 1e21, 1e-7, 1e16, 1e17,
  123456.789, 4.35, 9007199254740993.0, 2 ^ 63, 2 ^ 64 }

-- Numbers: `exact` keeps to what lua-cjson 2.1.0 writes exactly (14 digits).
local function random_number(exact)
  local r = rand()
  if exact then
    if r < 0.4 then return int(-99999999999999, 99999999999999) end
    if r < 0.7 then return int(-1000000, 1000000) / 100 end
    return tonumber(("%.14g"):format(random_double()))
  end
  if r < 0.15 then return pick(edge_integers) end
  if r < 0.3 then return pick(edge_doubles) end
  if r < 0.5 then return int(-1000000, 1000000) end
  if r < 0.6 then
    if has_integers then
      return math.tointeger(int(-2147483648, 2147483647) * 4294967296 + int(0, 4294967295))
    end
    return int(-4194304, 4194303) * 2147483648.0 + int(0, 2147483647)
  end
  if r < 0.75 then return int(-1000000, 1000000) / 100 end
  return random_double()
end

local function random_value(depth, exact)
  local r = rand()
  if depth < 4 and r < 0.25 then
    local t, n = {}, int(0, 6)
    if rand() < 0.5 then
      for i = 1, n do t[i] = random_value(depth + 1, exact) end
      return json.as_array(t)
    end
    for _ = 1, n do t[random_string()] = random_value(depth + 1, exact) end
    return t
  end
  if r < 0.35 then return json.null end
  if r < 0.45 then return rand() < 0.5 end
  if r < 0.7 then return random_string() end
  return random_number(exact)
end

-- Strict equality: number subtypes and array markers must survive.
local function same(a, b) return helpers.deep_equal(a, b, true) end

-- Equality as lua-cjson can hold it: numbers as doubles, no array markers.
local function loose(a, b) return helpers.deep_equal(a, b, false) end

local function show(v) return (json.encode(v, { sort_keys = true })) end

describe("json against lua-cjson (" .. COUNT .. " generated values)", function()
  if not ok_cjson then
    it("is skipped: lua-cjson is not installed", function()
      io.stderr:write("\n*** SKIPPED: the differential spec needs lua-cjson\n")
    end)
    return
  end

  it("decode(encode(v)) == v, also sorted and indented", function()
    seed(20240830)
    for i = 1, COUNT do
      local v = random_value(0, false)
      local text = assert(json.encode(v))
      assert.is_true(same(v, json.decode(text)), ("value %d: %s"):format(i, text))
      local pretty = assert(json.encode(v, { sort_keys = true, indent = 2 }))
      assert.is_true(same(v, json.decode(pretty)), ("value %d: %s"):format(i, pretty))
    end
  end)

  it("cjson.decode(encode(v)) == v", function()
    seed(1234567)
    for i = 1, COUNT do
      local v = random_value(0, false)
      local text = assert(json.encode(v))
      assert.is_true(loose(v, cjson.decode(text)), ("value %d: %s"):format(i, text))
    end
  end)

  it("decode(cjson.encode(v)) == v", function()
    seed(7654321)
    for i = 1, COUNT do
      local v = random_value(0, true)
      local text = cjson.encode(v)
      assert.is_true(loose(v, json.decode(text)), ("value %d: %s from %s"):format(i, text, show(v)))
    end
  end)

  it("writes each double with the fewest digits that read back", function()
    local function digits(text)
      local mantissa = text:gsub("^%-", ""):gsub("[eE].*$", ""):gsub("%.", "")
      return #(mantissa:gsub("^0+", ""):gsub("0+$", ""))
    end
    seed(4242)
    for _ = 1, COUNT * 2 do
      local x = rand() < 0.5 and random_double() or int(-100000000, 100000000) / 10 ^ int(0, 12)
      -- LuaJIT writes whole numbers below 2^63 as integers, every digit exact.
      local whole = not has_integers and x == math.floor(x) and math.abs(x) < 2 ^ 63
      if x ~= 0 and not whole then
        local fewest = 1
        while tonumber(("%." .. fewest .. "g"):format(x)) ~= x do fewest = fewest + 1 end
        local text = json.encode(x)
        assert.is_true(digits(text) <= fewest, ("%s for %.17g (%d digits suffice)"):format(text, x, fewest))
      end
    end
  end)

  it("reads every double lua-cjson reads, to the same double", function()
    seed(99)
    for _ = 1, COUNT do
      local x = random_double()
      local text = ("%.17g"):format(x)
      assert.equals(cjson.decode(text), json.decode(text), text)
      text = json.encode(x)
      assert.equals(x, cjson.decode(text), text)
    end
  end)
end)
