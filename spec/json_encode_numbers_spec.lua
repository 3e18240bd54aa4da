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
