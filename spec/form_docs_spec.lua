-- Every ```lua block of docs/form.md and docs/filter.md runs and its asserts hold.
local helpers = require "helpers"

local function blocks(path)
  local f = assert(io.open(helpers.top .. "/" .. path, "r"))
  local text = f:read("*a")
  f:close()
  local out = {}
  for code in text:gmatch("```lua\n(.-)```") do out[#out + 1] = code end
  return out
end

for _, doc in ipairs({ "docs/form.md", "docs/filter.md" }) do
  describe(doc, function()
    local examples = blocks(doc)
    it("has examples", function()
      assert.is_true(#examples > 0)
    end)
    for i, code in ipairs(examples) do
      it("example " .. i .. " runs", function()
        local chunk = assert((loadstring or load)(code, "=" .. doc .. " example " .. i))
        chunk()
      end)
    end
  end)
end
