-- JSONTestSuite (test_parsing): every y_ file accepted (and round-tripped),
-- every n_ file rejected with a positioned error, no i_ file raises.
local helpers = require "helpers"
local json = require("biconnector").json

local shared = helpers.shared_dir("the JSONTestSuite spec")

local function read(path) return assert(helpers.read_file(path), "cannot read " .. path) end

local function list(dir)
  local names = {}
  local p = assert(io.popen(('ls -1 "%s"'):format(dir)))
  for name in p:lines() do
    if name:match("^[yni]_.*%.json$") then names[#names + 1] = name end
  end
  p:close()
  table.sort(names)
  return names
end

-- Deep equality that also compares number subtypes and array markers.
local function same(a, b) return helpers.deep_equal(a, b, true) end

describe("JSONTestSuite test_parsing", function()
  if not shared then
    it("is skipped: ../shared is absent", function() end)
    return
  end
  local dir = shared .. "/testdata/JSONTestSuite/test_parsing"
  local names = list(dir)

  it("has its files", function()
    assert.truthy(#names >= 300, "found " .. #names .. " files in " .. dir)
  end)

  for _, name in ipairs(names) do
    local kind = name:sub(1, 1)
    it(name, function()
      local text = read(dir .. "/" .. name)
      if kind == "y" then
        local value, err = json.decode(text)
        assert.is_nil(err)
        local out, eerr = json.encode(value)
        assert.is_string(out, eerr)
        assert.is_true(same(value, (json.decode(out))), out)
      elseif kind == "n" then
        local value, err = json.decode(text)
        assert.is_nil(value)
        assert.matches("at line %d+, column %d+ %(byte offset %d+%)$", err)
      else
        local ok, value, err = pcall(json.decode, text)
        assert.is_true(ok, value)
        assert.truthy(value ~= nil or type(err) == "string")
      end
    end)
  end
end)
