-- Every ```lua block of the self-contained reference docs runs and its asserts hold.
-- (README.md's examples run in 03-readme_spec; docs/verify.md's in verify_spec;
-- docs/connector.md's connector file below.)
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

-- docs/connector.md's connector file (its first block): it loads, refuses every
-- request while MINIMAL_TOKEN is unset on the server, and serves its row with it.
describe("docs/connector.md", function()
  local connector = require "biconnector.connector"
  local json = require "biconnector.json"
  local function ask(c, endpoint, token)
    local status, _, body = c:handle({ method = "POST", path = "/" .. endpoint,
      headers = { ["content-type"] = "application/json" },
      body = json.encode({ connection = { token = token }, table = "cities" }) })
    if type(body) == "function" then
      local parts = {}
      for piece in body do parts[#parts + 1] = piece end
      body = table.concat(parts)
    end
    return status, json.decode(body)
  end

  it("the connector file example loads and guards the unset token", function()
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local f = assert(io.open(path, "w"))
    local block = helpers.lua_blocks("docs/connector.md")[1]
    assert.is_string(block)
    f:write(block)
    f:close()
    local c = connector.load(path)
    assert.equal("Minimal example", c.title)
    local getenv = os.getenv
    finally(function() os.getenv = getenv end) -- luacheck: ignore 122
    os.getenv = function(name) if name ~= "MINIMAL_TOKEN" then return getenv(name) end end -- luacheck: ignore 122
    local status, answer = ask(c, "check", "")
    assert.equal(403, status)
    assert.matches("MINIMAL_TOKEN is not set on the server", answer.message, 1, true)
    os.getenv = function(name) if name == "MINIMAL_TOKEN" then return "t0k" end return getenv(name) end -- luacheck: ignore 122
    assert.equal(403, (ask(c, "check", "wrong")))
    assert.equal(200, (ask(c, "check", "t0k")))
    local rows
    status, rows = ask(c, "data", "t0k")
    assert.equal(200, status)
    assert.same({ "id", "name", "updated" }, { rows[1][1], rows[1][2], rows[1][3] })
    assert.equal("Berlin", rows[2][2])
  end)
end)
