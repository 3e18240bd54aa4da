local helpers = require "helpers"

local function run(args)
  local p = io.popen(("cd %q && %s bin/biconnector %s 2>&1; echo \"rc=$?\"")
    :format(helpers.top, helpers.runtime, args))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.*)rc=(%d+)\n$")
  return body, tonumber(rc)
end

describe("bin/biconnector", function()
  it("prints the version with --version and -v", function()
    local out, rc = run("--version")
    assert.equals(0, rc)
    assert.equals("biconnector " .. require("biconnector.core").version .. "\n", out)
    assert.equals(out, (run("-v")))
  end)

  -- A fresh clone before `make`: README.md says bin/biconnector finds the build
  -- directory; without a core there it said so with a require traceback.
  it("says the C core is not built, and how to build it, when the build directory has none", function()
    local p = io.popen(("cd %q && BIC_BUILD=/nonexistent-build LUA_CPATH=/nonexistent-cpath/?.so %s bin/biconnector --version 2>&1; echo \"rc=$?\"")
      :format(helpers.top, helpers.runtime))
    local out = p:read("*a")
    p:close()
    assert.matches("rc=1\n$", out)
    assert.matches("biconnector: the C core (biconnector/core.so) is not built in /nonexistent-build: run "
      .. (jit and "`make luajit`" or "`make`"), out, 1, true)
    assert.is_nil(out:find("stack traceback", 1, true))
  end)

  it("prints usage with --help and exits 0", function()
    local out, rc = run("--help")
    assert.equals(0, rc)
    assert.matches("Usage: biconnector COMMAND", out, 1, true)
    assert.matches("serve FILE", out, 1, true)
  end)

  it("serve --help names every database URL scheme serve takes (docs/database.md)", function()
    local out, rc = run("serve --help")
    assert.equals(0, rc)
    for _, scheme in ipairs({ "sqlite://", "postgresql://", "mysql://", "mariadb://", "clickhouse://" }) do
      assert.matches(scheme, out, 1, true)
    end
  end)

  it("call --help and login --help name BITRIX24_TOKENS_KEY beside BITRIX24_TOKENS_REDIS", function()
    for _, command in ipairs({ "call", "login" }) do
      local out, rc = run(command .. " --help")
      assert.equals(0, rc)
      assert.matches("BITRIX24_TOKENS_REDIS", out, 1, true)
      assert.matches("BITRIX24_TOKENS_KEY", out, 1, true)
    end
  end)

  it("exits 2 with a message for an unknown command", function()
    local out, rc = run("frobnicate")
    assert.equals(2, rc)
    assert.matches("unknown command 'frobnicate'", out, 1, true)
  end)

  it("exits 2 with usage when no command is given", function()
    local out, rc = run("")
    assert.equals(2, rc)
    assert.matches("Usage:", out, 1, true)
  end)
end)
