-- The REST client, `call`, `register` and the application's side as an
-- acceptance test drives them: the local portal (spec/portal) played as
-- protocol.md sections 3, 3.1, 3.2 and 4 describe Bitrix24, over real loopback
-- HTTP. Each case here failed before its fix.
local helpers = require "helpers"
local control = require "portal.control"
local rest = require "biconnector.rest"

describe("acceptance: the REST client against a portal played from protocol.md", function()
  local portal
  setup(function() portal = control.start({ rate = 1000, burst = 1000 }) end)
  teardown(function() if portal then portal:stop() end end)
  before_each(function() portal:reset({ rate = 1000, burst = 1000 }) end)

  describe("the OAuth server given by its address alone (as the official SDKs configure it)", function()
    it("rest.oauth_url takes https://oauth.bitrix24.tech as its token address, /oauth/token/", function()
      assert.equal(rest.OAUTH_URL_EAST, rest.oauth_url("https://oauth.bitrix24.tech"))
      assert.equal(rest.OAUTH_URL_EAST, rest.oauth_url("https://oauth.bitrix24.tech/"))
      assert.equal(rest.OAUTH_URL, rest.oauth_url("https://oauth.bitrix.info"))
      -- a token address as given stays as given
      assert.equal("https://oauth.example.com/oauth/token", rest.oauth_url("https://oauth.example.com/oauth/token"))
      assert.equal(rest.OAUTH_URL, rest.oauth_url(rest.OAUTH_URL))
      assert.equal("https://o.example.com/custom/?x=1", rest.oauth_url("https://o.example.com/custom/?x=1"))
    end)

    it("expired_token renews at SERVER/oauth/token/ and the call goes through", function()
      -- (before: the renewal went to SERVER/?grant_type=..., 404 NOT_FOUND: "token renewal refused")
      for _, oauth in ipairs({ portal.base, portal.base .. "/" }) do
        portal:reset({ rate = 1000, burst = 1000 })
        portal:control({ action = "expire" })
        local client = assert(rest.new(portal:oauth_options({ oauth_url = oauth, shared_bucket = false })))
        local r, err = client:call("profile")
        assert.is_nil(err, oauth)
        assert.equal("1", r.ID)
        assert.equal(1, portal:stats().stats.renewals)
        client:close()
      end
    end)

    it("biconnector call with BITRIX24_OAUTH_URL naming the server renews too", function()
      portal:control({ action = "expire" })
      local rc, out, err = helpers.run3(("BIC_BUILD=%s BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access"
        .. " BITRIX24_REFRESH_TOKEN=initial-refresh BITRIX24_CLIENT_ID=local.test.app BITRIX24_CLIENT_SECRET=appsecret"
        .. " BITRIX24_OAUTH_URL=%s %s bin/biconnector call profile"):format(helpers.q(helpers.build), helpers.q(portal.base),
        helpers.q(portal.base), helpers.runtime))
      assert.equal(0, rc, err)
      assert.matches('"ID": "1"', out, 1, true)
      assert.equal(1, portal:stats().stats.renewals)
    end)
  end)
end)

describe("acceptance: serve --app taking what Bitrix24 posts to the installation path", function()
  local S = require "serve_helpers"
  local A = require "app_helpers"
  local dir, cert, key, db, portal
  A.world_hooks(function(...) dir, cert, key, db, portal = ... end)

  it("an application added without \"uses API only\" (Bitrix24 opens the page: AUTH_ID, REFRESH_ID) is told so", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    finally(function() S.stop(h) end)
    -- what the portal's frame posts to the initial installation path of an application with
    -- an interface (DOMAIN, APP_SID travel in the query), as CRest's installApp reads it
    local res = A.post_form(h.install_url .. "?DOMAIN=example.bitrix24.com&PROTOCOL=1&LANG=en&APP_SID=s1d",
      "AUTH_ID=acc1&AUTH_EXPIRES=3600&REFRESH_ID=ref1&SERVER_ENDPOINT=https%3A%2F%2Foauth.bitrix.info%2Frest%2F"
      .. "&member_id=m1&status=L&PLACEMENT=DEFAULT&PLACEMENT_OPTIONS=%7B%7D", cert)
    assert.equals(400, res.status)
    -- (before: "not an installation callback: no auth[...] fields", which says nothing of what to do)
    assert.matches("Application uses API only", res.body, 1, true)
    local log = A.wait_log(h, "installation callback refused", 1)
    assert.matches("Application uses API only", log, 1, true)
    -- nothing stored, no token in the answer or the log
    assert.is_nil((A.read_json(h.tokens_file) or {}).access_token)
    for _, secret in ipairs({ "acc1", "ref1" }) do
      assert.is_nil(res.body:find(secret, 1, true))
      assert.is_nil(log:find(secret, 1, true))
    end
  end)
end)

describe("acceptance: the installation callback's client_endpoint with its scheme's port", function()
  local app = require "biconnector.app.server"
  local function auth(domain, endpoint)
    return { event = "ONAPPINSTALL", auth = { access_token = "a1", refresh_token = "r1", domain = domain,
      client_endpoint = endpoint, member_id = "m1", application_token = "t1" } }
  end

  it("takes https://PORTAL:443/rest/ as PORTAL's REST address (and the reverse), as it takes the port left out", function()
    for _, case in ipairs({ { "p.bitrix24.com", "https://p.bitrix24.com:443/rest/" },
        { "p.bitrix24.com:443", "https://p.bitrix24.com/rest/" }, { "p.bitrix24.com", "https://P.Bitrix24.com/rest/" },
        { "p.example.com:8443", "https://p.example.com:8443/rest/" } }) do
      local state, status, why = app.check_install(auth(case[1], case[2]), {})
      assert.is_table(state, tostring(status) .. " " .. tostring(why) .. " for " .. case[1] .. " " .. case[2])
      assert.equals("https://" .. case[1]:gsub(":443$", "") .. "/rest/", state.client_endpoint)
    end
  end)

  it("still refuses another host or another port", function()
    for _, case in ipairs({ { "p.bitrix24.com", "https://p.bitrix24.com:8443/rest/" },
        { "p.example.com:8443", "https://p.example.com/rest/" }, { "p.bitrix24.com", "https://q.bitrix24.com/rest/" },
        { "p.bitrix24.com", "https://p.bitrix24.com:80/rest/" } }) do
      local state, status, why = app.check_install(auth(case[1], case[2]), {})
      assert.is_nil(state, case[1] .. " " .. case[2])
      assert.equals(400, status)
      assert.matches("auth[client_endpoint] is not https://", why, 1, true)
    end
  end)
end)
