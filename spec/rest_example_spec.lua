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

  it("reads its token store as the CLI does: warns when no store keeps a renewal, refuses two stores, takes the portal from the store", function()
    local portal = control.start({ rate = 1000, burst = 1000, url_check = false })
    local store = helpers.tmp_path("provision-tokens")
    finally(function()
      portal:stop()
      os.remove(store)
      os.remove(store .. ".lock")
    end)
    local function run(env)
      return helpers.run3(("BITRIX24_CLIENT_ID=local.test.app BITRIX24_CLIENT_SECRET=appsecret BITRIX24_OAUTH_URL=%s %s %s %s/examples/provision.lua https://bi.example.com/sales")
        :format(portal.oauth_url, env, helpers.runtime, helpers.top))
    end
    local oauth = ("BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access BITRIX24_REFRESH_TOKEN=initial-refresh "):format(portal.base)
    -- no store: the renewal goes through, and stderr says the refresh token is spent
    portal:control({ action = "expire" })
    local rc, out, err = run(oauth)
    assert.equal(0, rc, err)
    assert.equal("connector=1 source=1 table=1\n", out)
    assert.equal(1, portal:stats().stats.renewals)
    assert.matches("biconnector: warning: the access token was renewed, and no token store keeps the new pair", err, 1, true)
    -- two stores named: refused before anything is sent
    local before = portal:stats().stats.http_requests
    rc, out, err = run(oauth .. "BITRIX24_TOKENS_FILE=" .. helpers.q(store) .. " BITRIX24_TOKENS_REDIS=redis://127.0.0.1:9/")
    assert.equal(2, rc, err)
    assert.equal("", out)
    assert.matches("BITRIX24_TOKENS_FILE and BITRIX24_TOKENS_REDIS name two token stores", err, 1, true)
    assert.equal(before + 1, portal:stats().stats.http_requests) -- the stats request itself
    -- a store: no warning; once it holds a renewed pair (with client_endpoint) it names the portal
    portal:control({ action = "tokens", access_token = "initial-access", refresh_token = "initial-refresh" })
    portal:control({ action = "expire" })
    rc, out, err = run(oauth .. "BITRIX24_TOKENS_FILE=" .. helpers.q(store))
    assert.equal(0, rc, err)
    assert.equal("connector=1 source=1 table=1\n", out)
    assert.equal("", err)
    rc, out, err = run("BITRIX24_TOKENS_FILE=" .. helpers.q(store))
    assert.equal(0, rc, err)
    assert.equal("connector=1 source=1 table=1\n", out)
    assert.equal(2, portal:stats().stats.renewals)
  end)

  -- The example's header: the source's token is the one README's sales.lua checks, that
  -- connector served at BASE_URL. The table it provisions must then name the columns
  -- sales.lua describes for "deals": Bitrix24 selects a dataset's columns by externalCode.
  it("provisions the columns README's sales.lua describes for its table deals", function()
    local portal = control.start({ rate = 1000, burst = 1000, url_check = false })
    finally(function() portal:stop() end)
    local p = io.popen(("BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access SALES_TOKEN=s3cret %s %s/examples/provision.lua"
      .. " https://bi.example.com/sales 2>&1"):format(portal.base, helpers.runtime, helpers.top))
    local out = p:read("*a")
    p:close()
    assert.equal("connector=1 source=1 table=1\n", out)
    local tbl = portal:stats().state.tables["1"]
    assert.equal("deals", tbl.externalCode)
    local provisioned = {}
    for _, f in ipairs(tbl.fields) do provisioned[#provisioned + 1] = f.externalCode .. ":" .. f.type end

    local sales = helpers.tmp_path("sales") .. ".lua"
    finally(function() os.remove(sales) end)
    helpers.write_file(sales, helpers.lua_blocks("README.md")[1])
    local getenv = os.getenv
    finally(function() os.getenv = getenv end) -- luacheck: ignore 122
    os.getenv = function(name) if name == "SALES_TOKEN" then return "s3cret" end return getenv(name) end -- luacheck: ignore 122
    local c = require("biconnector.connector").load(sales)
    local status, body = helpers.post_form(c, "/table_description", "connection[token]=s3cret&table=deals")
    assert.equal(200, status, body)
    local described = {}
    for _, f in ipairs(require("cjson").decode(body)) do described[#described + 1] = f.code .. ":" .. f.type end
    assert.same(described, provisioned)
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
