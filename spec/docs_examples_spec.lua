-- Every ```lua block of the self-contained reference docs runs and its asserts hold.
-- (README.md's examples run in 03-readme_spec; docs/verify.md's in verify_spec.)
local helpers = require "helpers"

for _, doc in ipairs({ "docs/json.md", "docs/form.md", "docs/filter.md" }) do
  describe(doc, function()
    local blocks = helpers.lua_blocks(doc)
    it("has examples", function()
      assert.is_true(#blocks > 0)
    end)
    for i, code in ipairs(blocks) do
      it("example " .. i .. " runs", function()
        assert((loadstring or load)(code, "=" .. doc .. " example " .. i))()
      end)
    end
  end)
end
