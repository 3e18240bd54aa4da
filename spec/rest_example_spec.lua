-- examples/provision.lua against the local portal: provisions once, then
-- updates in place when run again.
local helpers = require "helpers"
local control = require "portal.control"

describe("examples/provision.lua", function()
  it("creates connector, source and table, and is idempotent", function()
    -- the example's connector URL is not served: the portal does not call urlCheck
    local portal = control.start({ rate = 1000, burst = 1000, url_check = false })
    local store = os.tmpname()
    os.remove(store)
    -- busted keeps one finally per test: stop the portal and clean up together
    finally(function()
      portal:stop()
      os.remove(store)
      os.remove(store .. ".lock")
    end)
    local cmd = ("BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access BITRIX24_REFRESH_TOKEN=initial-refresh " ..
      "BITRIX24_CLIENT_ID=local.test.app BITRIX24_CLIENT_SECRET=appsecret BITRIX24_OAUTH_URL=%s BITRIX24_TOKENS_FILE=%s " ..
      "SALES_TOKEN=s3cret %s %s/examples/provision.lua https://bi.example.com/sales 2>&1")
      :format(portal.base, portal.oauth_url, store, helpers.runtime, helpers.top)
    local function run()
      local p = io.popen(cmd)
      local out = p:read("*a")
      p:close()
      return out
    end
    assert.equal("connector=1 source=1 table=1\n", run())
    local s = portal:stats()
    assert.equal("https://bi.example.com/sales/data", s.state.connectors["1"].urlData)
    assert.equal("s3cret", s.state.sources["1"].settings.token)
    assert.equal(3, #s.state.tables["1"].fields)
    -- the token expires between runs: the second run renews through the file store
    portal:control({ action = "expire" })
    assert.equal("connector=1 source=1 table=1\n", run())
    s = portal:stats()
    assert.equal(1, s.stats.executed["biconnector.connector.add"])
    assert.equal(1, s.stats.executed["biconnector.connector.update"])
    assert.equal(1, s.stats.executed["biconnector.source.update"])
    assert.equal(1, s.stats.renewals)
    assert.equal(3, #s.state.tables["1"].fields)
  end)

  it("says why the portal refused the source when its urlCheck is not answered", function()
    local portal = control.start({ rate = 1000, burst = 1000 }) -- calls urlCheck, as Bitrix24 does
    finally(function() portal:stop() end)
    local p = io.popen(("BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access %s %s/examples/provision.lua"
      .. " http://127.0.0.1:9/sales 2>&1; echo \"exit=$?\""):format(portal.base, helpers.runtime, helpers.top))
    local out = p:read("*a")
    p:close()
    assert.matches("SOURCE_CREATE_CONNECTION_ERROR", out, 1, true)
    assert.matches("the portal called http://127.0.0.1:9/sales/check with the token from SALES_TOKEN"
      .. " (unset: \"change-me\" was sent)", out, 1, true)
    assert.matches("exit=1\n$", out)
  end)
end)
