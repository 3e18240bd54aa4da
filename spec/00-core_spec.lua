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

describe("biconnector.core as a shared object", function()
  -- The pool's service thread and the jobs' threads (src/sql_job.c) live until
  -- the process ends; lua_close() dlcloses C modules, so the core must be marked
  -- never to be unloaded, or a thread waking after the state is closed runs
  -- unmapped code (seen as "The futex facility returned an unexpected error code"
  -- at the end of a long run under AddressSanitizer).
  it("is marked NODELETE, so lua_close() leaves its threads' code mapped", function()
    local build = os.getenv("BIC_BUILD")
    local readelf = io.popen("command -v readelf"):read("*l")
    if not build or not readelf then
      print("\n*** SKIPPED: the NODELETE check needs BIC_BUILD (scripts/run-specs) and readelf")
      return
    end
    local p = io.popen("readelf -d '" .. build .. "/biconnector/core.so' 2>&1")
    local out = p:read("*a")
    p:close()
    assert.matches("FLAGS_1[^\n]*NODELETE", out)
  end)
end)
