local core = require "biconnector.core"
local biconnector = require "biconnector"

describe("biconnector.core", function()
  it("exports a version string of the form X.Y.Z", function()
    assert.is_string(core.version)
    assert.matches("^%d+%.%d+%.%d+$", core.version)
  end)

  it("is the version the facade reports", function()
    assert.equals(core.version, biconnector.version)
  end)

  it("has null as a light userdata equal to cjson.null", function()
    assert.equals("userdata", type(biconnector.null))
    local ok, cjson = pcall(require, "cjson")
    if ok then assert.equals(cjson.null, biconnector.null) end
  end)

  it("was built for the runtime that loads it", function()
    if jit then
      assert.equals("luajit", core.runtime)
    else
      assert.equals(_VERSION, core.runtime)
    end
  end)
end)
