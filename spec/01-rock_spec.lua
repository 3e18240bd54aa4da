-- The rock installs with luarocks, offline, into a private tree, and its
-- command runs from there (issue: foundation, acceptance 2).
local helpers = require "helpers"

describe("the rock #lua54", function()
  it("installs with luarocks make --deps-mode=none into a tree and runs --version", function()
    if os.getenv("BIC_SANITIZE") == "1" then
      pending("skipped under the sanitizer build (luarocks builds its own core)")
      return
    end
    local tree = os.tmpname()
    os.remove(tree)
    local log = tree .. ".log"
    local cmd = ("cd %q && luarocks --lua-version 5.4 --tree %q make --deps-mode=none "
      .. "rockspec/biconnector-scm-1.rockspec >%q 2>&1"):format(helpers.top, tree, log)
    local ok = os.execute(cmd)
    local f = io.open(log) local out = f and f:read("a") or "" if f then f:close() end
    assert.is_truthy(ok == true or ok == 0, "luarocks make failed:\n" .. out)
    local run = io.popen(("eval \"$(luarocks --lua-version 5.4 --tree %q path)\" && cd / && %q/bin/biconnector --version 2>&1")
      :format(tree, tree))
    local version_line = run:read("a")
    run:close()
    os.execute(("rm -rf %q %q"):format(tree, log))
    assert.equals("biconnector " .. require("biconnector.core").version .. "\n", version_line)
  end)
end)
