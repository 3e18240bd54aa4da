-- Every ```lua block of docs/json.md runs and its asserts hold.
local helpers = require "helpers"

local function examples(path)
  local f = assert(io.open(helpers.top .. "/" .. path, "r"))
  local text = f:read("*a")
  f:close()
  local out = {}
  for code in text:gmatch("```lua\n(.-)```") do out[#out + 1] = code end
  return out
end

describe("docs/json.md", function()
  local blocks = examples("docs/json.md")
  it("has examples", function()
    assert.is_true(#blocks > 0)
  end)
  for i, code in ipairs(blocks) do
    it("example " .. i .. " runs", function()
      assert((loadstring or load)(code, "=docs/json.md example " .. i))()
    end)
  end
end)
