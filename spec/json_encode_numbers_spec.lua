-- json.encode of doubles: the text reads back to the same double and has the
-- fewest significant digits that do (what Grisu2 and the short-decimal path
-- for values of up to three decimals must both give), on deterministic
-- pseudo-random values of every shape.
local json = require "biconnector.json"

local seed = 20261204
local function rnd() seed = (seed * 1103515245 + 12345) % 2147483648 return seed end

local function significant(text)
  local mantissa = text:gsub("[eE].*$", ""):gsub("[-.]", ""):gsub("^0+", "")
  return #(mantissa:gsub("0+$", "")) -- trailing zeros of an integer part are not digits chosen
end

local function shortest(v)
  for p = 1, 17 do
    local t = ("%." .. p .. "g"):format(v)
    if tonumber(t) == v then return p end
  end
end

describe("json.encode of doubles", function()
  it("reads back and is shortest, for short decimals and long fractions alike", function()
    local checked = 0
    for i = 1, 20000 do
      local k = i % 5
      local v
      if k == 0 then v = (rnd() % 100000000) / 1000
      elseif k == 1 then v = -(rnd() % 1000000) / 100
      elseif k == 2 then v = rnd() / 7
      elseif k == 3 then v = (rnd() % 1000) / 1000 + 0.0
      else v = (rnd() % 1000000000000) + (rnd() % 8) / 8 end
      if math.type == nil or math.type(v) == "float" then
        local text = assert(json.encode(v))
        assert(tonumber(text) == v, text .. " does not read back as " .. ("%.17g"):format(v))
        if not (jit and v == math.floor(v)) then -- LuaJIT writes whole numbers as integers
          assert(significant(text) <= shortest(v), text .. " is longer than " .. ("%." .. shortest(v) .. "g"):format(v))
        end
        checked = checked + 1
      end
    end
    assert.is_true(checked >= 19000)
  end)

  it("keeps the boundaries of the short-decimal path", function()
    local cases = { [0.001] = "0.001", [0.0009999] = "0.0009999", [0.5] = "0.5", [-2.25] = "-2.25",
      [999999999999.999] = "999999999999.999", [123456789012.125] = "123456789012.125", [4.35] = "4.35",
      [1.005] = "1.005", [0.3] = "0.3" }
    for v, text in pairs(cases) do assert.equal(text, json.encode(v)) end
    if not jit then
      assert.equal("100.0", json.encode(100.0))
      assert.equal("1000000000000.0", json.encode(1e12))
    end
  end)
end)

-- json.decode reads 16- to 19-digit numbers without strtod where extended
-- precision decides them (src/json.c, extended_decimal): the double must be
-- strtod's (Lua's tonumber) on every one, midpoints between doubles included.
describe("json.decode of long decimals", function()
  local function check(text)
    local got, want = json.decode(text), tonumber(text)
    if got ~= want then
      error(("%s: %.17g, strtod %.17g"):format(text, got, want))
    end
  end

  it("gives strtod's double for 15 to 19 digits at every exponent the fast path takes", function()
    for _ = 1, 60000 do
      local n = 15 + rnd() % 5
      local digits = tostring(1 + rnd() % 9)
      for _ = 2, n do digits = digits .. tostring(rnd() % 10) end
      local point = rnd() % (n + 1)
      local text = digits:sub(1, point) .. "." .. digits:sub(point + 1)
      if point == 0 then text = "0" .. text elseif point == n then text = text .. "0" end
      check(text)
      check("-" .. text .. "e" .. tostring(rnd() % 61 - 30))
      -- a double written with 16 and 17 digits, and as we write it
      local v = rnd() / (1 + rnd() % 99991) * 10 ^ (rnd() % 40 - 20)
      check(("%.16g"):format(v))
      check(("%.17g"):format(v))
      check(json.encode(v))
    end
  end)

  it("leaves midpoints between two doubles to strtod", function()
    -- 2^k + 2^(k-53): halfway between two doubles, written with 16 to 19 digits
    if math.tointeger then -- Lua 5.4: exact in integers
      for k = 53, 62 do
        for _, odd in ipairs({ 1, 3, 5, 1001 }) do
          local text = tostring(math.tointeger(2 ^ k) + odd * math.tointeger(2 ^ (k - 53)))
          check(text .. ".0")
          check(text .. "e0")
          check(text:sub(1, -2) .. "." .. text:sub(-1) .. "e1")
        end
      end
    end
    for _, text in ipairs({ "9007199254740993.0", "9007199254740993e0", "900719925474099.3e1",
      "18014398509481986.0", "18014398509481985.0", "0.30000000000000004", "0.1000000000000000055511151231257827",
      "1.7976931348623157e27", "2.2250738585072014e-27", "123456789012345678.5", "9223372036854775808.0" }) do
      check(text)
    end
  end)
end)
