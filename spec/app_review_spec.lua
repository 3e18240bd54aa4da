-- The application side reviewed as Bitrix24 drives it (protocol.md section 4,
-- docs/app.md): `serve --app` over HTTPS with the local portal (spec/portal)
-- playing Bitrix24; each case here failed before its fix, or pins a behaviour
-- the review checked.
local S = require "serve_helpers"
local A = require "app_helpers"
local cjson = require "cjson"

describe("serve --app, reviewed as Bitrix24 drives it", function()
  local dir, cert, key, db, portal
  A.world_hooks(function(...) dir, cert, key, db, portal = ... end)

  -- serve --app for the local portal, stopped after the test, installed by
  -- it -> the server handle and the portal's install answer
  local function installed()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      args = { "--portal", "127.0.0.1:" .. portal.port } })
    finally(function() S.stop(h) end)
    local r = portal:control({ action = "install", url = h.install_url })
    assert.equals(200, r.status, r.body)
    return h, r
  end

  it("takes a JSON installation callback whose numbers are JSON numbers (auth.expires_in: 3600)", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      args = { "--portal", "example.bitrix24.com" } })
    finally(function() S.stop(h) end)
    local body = cjson.encode({ event = "ONAPPINSTALL", ts = 1733500000,
      data = { VERSION = 1, ACTIVE = "Y", INSTALLED = "Y", LANGUAGE_ID = "en" },
      auth = { access_token = "acc1json", refresh_token = "ref1json", expires = 1733503600, expires_in = 3600,
        scope = "biconnector", domain = "example.bitrix24.com", server_endpoint = "https://oauth.bitrix.info/rest/",
        client_endpoint = "https://example.bitrix24.com/rest/", member_id = "m1json", status = "L",
        application_token = "app1json", user_id = 1 } })
    local res = A.request(h.install_url, "POST", body, { ["Content-Type"] = "application/json" }, cert)
    assert.equals(200, res.status, res.body)
    local stored = A.read_json(h.tokens_file)
    assert.equals("acc1json", stored.access_token)
    assert.equals("app1json", stored.application_token)
    assert.equals(3600, stored.expires_in)
    -- a number that is no number of seconds is still refused, with nothing else stored
    os.remove(h.tokens_file)
    body = body:gsub('"expires_in":3600', '"expires_in":-5')
    res = A.request(h.install_url, "POST", body, { ["Content-Type"] = "application/json" }, cert)
    assert.equals(400, res.status, res.body)
    assert.matches("auth[expires_in] is not a number of seconds", cjson.decode(res.body).message, 1, true)
    assert.is_nil(A.read_json(h.tokens_file))
  end)

  it("renews the pair when a REST call answers expired_token: both tokens overwritten, the installation kept", function()
    local h, r = installed()
    A.wait_log(h, "INFO registered ", 1)
    local before = A.read_json(h.tokens_file)
    assert.equals(0, portal:stats().stats.renewals)
    -- the access token expires; SIGHUP registers again, the first call answers expired_token
    portal:control({ action = "expire" })
    os.execute("kill -HUP " .. h.pid)
    A.wait_log(h, "INFO registered ", 2)
    assert.equals(1, portal:stats().stats.renewals)
    local after = A.read_json(h.tokens_file)
    assert.are_not.equal(before.access_token, after.access_token)
    assert.are_not.equal(before.refresh_token, after.refresh_token)
    assert.equals(r.sent.auth.application_token, after.application_token)
    assert.equals("localmember", after.member_id)
    assert.equals("127.0.0.1:" .. portal.port, after.portal)
    assert.equals("600", A.mode(h.tokens_file))
  end)

  it("a refresh token the OAuth server refuses (invalid_grant) stops the registration with what to do; the tokens stay", function()
    local h = installed()
    A.wait_log(h, "INFO registered ", 1)
    -- the refresh token was used elsewhere (or is older than 180 days): the OAuth server answers invalid_grant
    local stored = A.read_json(h.tokens_file)
    stored.refresh_token = "ref0unknown"
    local f = assert(io.open(h.tokens_file, "wb"))
    f:write(cjson.encode(stored))
    f:close()
    portal:control({ action = "expire" })
    os.execute("kill -HUP " .. h.pid)
    local log = A.wait_log(h, "registration failed", 1)
    local line = log:match("[^\n]*registration failed[^\n]*")
    assert.matches("invalid_grant", line, 1, true)
    assert.matches("retry=no", line, 1, true)
    assert.matches("biconnector login", line, 1, true) -- what to do about it
    assert.is_nil(log:find("ref0unknown", 1, true))
    -- nothing was renewed, nothing discarded: the installation and its tokens stay
    local after = A.read_json(h.tokens_file)
    assert.equals(stored.access_token, after.access_token)
    assert.equals("ref0unknown", after.refresh_token)
    assert.equals(stored.application_token, after.application_token)
  end)

  it("login --listen: a certificate that does not load, a port taken: said before the link is printed, exit 1", function()
    local helpers = require "helpers"
    local function login(args)
      local cmd = ("BITRIX24_TOKENS_FILE=%s BITRIX24_CLIENT_ID=local.test.app BITRIX24_CLIENT_SECRET=appsecret %s bin/biconnector login %s 2>&1; echo \"rc=$?\"")
        :format(S.shell_quote(dir .. "/tokens.json"), helpers.runtime, args)
      local p = io.popen(cmd)
      local out = p:read("*a")
      p:close()
      return tonumber(out:match("rc=(%d+)%s*$")), out
    end
    local other_cert = A.certificate(dir, "other")
    local port = helpers.free_port()
    local base = "--portal example.bitrix24.com --timeout 3 --listen 127.0.0.1:" .. port
    local cases = {
      { "--tls-cert " .. dir .. "/absent.pem --tls-key " .. key, "--tls-cert: " .. dir .. "/absent.pem: No such file or directory" },
      { "--tls-cert " .. other_cert .. " --tls-key " .. key, "the certificate and key are not a usable pair" },
    }
    for _, c in ipairs(cases) do
      local rc, out = login(base .. " " .. c[1])
      assert.equals(1, rc, out)
      assert.matches(c[2], out, 1, true)
      assert.is_nil(out:find("login.lua", 1, true), "a Lua position in the message: " .. out)
      assert.is_nil(out:find("/oauth/authorize/", 1, true), "the link was printed although nothing can take the code: " .. out)
      assert.is_nil((A.read_json(dir .. "/tokens.json") or {}).login, "a pending login was left in the store")
    end
    -- the port is taken
    local blocker = require("biconnector.core").server.new({ host = "127.0.0.1", port = port,
      handler = function() return 200, {}, "" end })
    finally(function() blocker:close() end)
    local rc, out = login(base)
    assert.equals(1, rc, out)
    assert.matches("--listen:", out, 1, true)
    assert.is_nil(out:find("/oauth/authorize/", 1, true), out)
  end)

  it("a token file in a directory that does not exist is said at start, not by a 500 to the installation", function()
    local helpers = require "helpers"
    -- (bounded: before the fix it served on, waiting for the callback it would refuse)
    local p = io.popen(("BICONNECTOR_TOKEN=db-token-123 BITRIX24_TOKENS_FILE=%s timeout 10 %s 2>&1; echo \"rc=$?\"")
      :format(S.shell_quote(dir .. "/absent/tokens.json"), S.serve_command({ "sqlite://" .. db, "--listen",
        "127.0.0.1:" .. helpers.free_port(), "--app", "--public-url", "https://bi.example.com" })))
    local out = p:read("*a")
    p:close()
    assert.equals("2", out:match("rc=(%d+)%s*$"), out)
    assert.matches("BITRIX24_TOKENS_FILE " .. dir .. "/absent/tokens.json cannot be used", out, 1, true)
    assert.matches("No such file or directory", out, 1, true)
    assert.is_nil(out:find("listening on", 1, true), out)
  end)

  it("refuses an installation callback whose auth[...] value or name is not UTF-8 with a 400, nothing stored", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    finally(function() S.stop(h) end)
    local base = "event=ONAPPINSTALL&auth[access_token]=acc2utf&auth[refresh_token]=ref2utf&auth[domain]=example.bitrix24.com"
      .. "&auth[client_endpoint]=https%3A%2F%2Fexample.bitrix24.com%2Frest%2F&auth[member_id]=m2utf&auth[application_token]=app2utf"
    for _, c in ipairs({
      { "&auth[scope]=bi%FFconnector", "auth[scope] is not UTF-8 text" },
      { "&auth[status]=%C3", "auth[status] is not UTF-8 text" },
      { "&auth[server_endpoint]=https%3A%2F%2Fx%2F%FF", "auth[server_endpoint] is not UTF-8 text" },
      { "&auth[%FF]=" .. ("x"):rep(2000), "auth[?] is longer than 1024 bytes" },
    }) do
      local res = A.post_form(h.install_url, base .. c[1], cert)
      assert.equals(400, res.status, res.body)
      assert.matches(c[2], cjson.decode(res.body).message, 1, true)
      assert.is_nil(A.read_json(h.tokens_file))
    end
  end)

  it("events: another event with the right application_token is 200 and ignored, whatever its name's bytes", function()
    local h, r = installed()
    local auth = "&auth[member_id]=localmember&auth[application_token]=" .. r.sent.auth.application_token
    local res = A.post_form(h.event_url, "event=ONCRMDEALADD&data[FIELDS][ID]=1" .. auth, cert)
    assert.equals(200, res.status, res.body)
    assert.same({ status = "ignored", event = "ONCRMDEALADD" }, cjson.decode(res.body))
    res = A.post_form(h.event_url, "event=ON%FFX" .. auth, cert)
    assert.equals(200, res.status, res.body)
    assert.equals("ignored", cjson.decode(res.body).status)
    assert.equals(r.sent.auth.access_token, A.read_json(h.tokens_file).access_token)
  end)

  -- b24restdocs api-reference/common/events/on-app-uninstall.md binds
  -- onAppUninstall but spells the event the handler receives ONAPPSUNINSTALL
  -- (its example and its parameter table): either name is the uninstall
  for _, name in ipairs({ "ONAPPSUNINSTALL", "onAppsUninstall", "ONAPPUNINSTALL" }) do
    it("events: " .. name .. " with the right application_token uninstalls (tokens removed)", function()
      local h = installed()
      A.wait_log(h, "ONAPPUNINSTALL handler bound", 1)
      local un = portal:control({ action = "uninstall", event = name })
      assert.equals(1, #un.calls)
      assert.equals(200, un.calls[1].status, un.calls[1].body)
      assert.same({ status = "uninstalled" }, cjson.decode(un.calls[1].body))
      local after = A.read_json(h.tokens_file)
      assert.is_nil(after.access_token)
      assert.is_nil(after.application_token)
      assert.truthy(after.uninstalled_at)
      A.wait_log(h, "application uninstalled: tokens removed", 1)
    end)
  end

  it("BITRIX24_OAUTH_URL: empty means the default; a value that is no URL is said at start", function()
    local helpers = require "helpers"
    local function serve(oauth)
      local p = io.popen(("BICONNECTOR_TOKEN=db-token-123 BITRIX24_TOKENS_FILE=%s BITRIX24_OAUTH_URL=%s timeout 10 %s 2>&1; echo \"rc=$?\"")
        :format(S.shell_quote(dir .. "/tokens.json"), S.shell_quote(oauth), S.serve_command({ "sqlite://" .. db, "--listen",
          "127.0.0.1:" .. helpers.free_port(), "--app", "--public-url", "https://bi.example.com" })))
      local out = p:read("*a")
      p:close()
      return out:match("rc=(%d+)%s*$"), out
    end
    local rc, out = serve("oauth.bitrix.info/oauth/token/")
    assert.equals("2", rc, out)
    assert.matches("BITRIX24_OAUTH_URL expects the OAuth server's token address", out, 1, true)
    -- an empty value (BITRIX24_OAUTH_URL= in a unit file) is the default, and the registration renews there
    local rest = require "biconnector.rest.client"
    assert.equals(rest.OAUTH_URL, rest.oauth_url(""))
    assert.equals(rest.OAUTH_URL, assert(require("biconnector.app.server").config({ public_url = "https://bi.example.com" },
      function(k) return ({ BITRIX24_TOKENS_FILE = dir .. "/tokens.json", BITRIX24_OAUTH_URL = "" })[k] end)).oauth_url)
    local client = assert(rest.new({ portal = "example.bitrix24.com", access_token = "a", oauth_url = "" }))
    assert.equals(rest.OAUTH_URL, client.oauth_url)
    -- the eastern region's address is taken as given
    assert.equals(rest.OAUTH_URL_EAST, rest.oauth_url(rest.OAUTH_URL_EAST))
  end)

  it("renews an installation at the OAuth server its callback names, when that is one of Bitrix24's", function()
    local app = require "biconnector.app.server"
    local rest = require "biconnector.rest.client"
    local tdir = A.tmpdir()
    finally(function() os.execute("rm -rf " .. tdir) end)
    local function cfg_with(env)
      env.BITRIX24_TOKENS_FILE = tdir .. "/tokens.json"
      return assert(app.config({ public_url = "https://bi.example.com" }, function(k) return env[k] end))
    end
    local default = cfg_with({})
    -- an eastern portal's callback: auth[server_endpoint] https://oauth.bitrix24.tech/rest/
    assert.equals(rest.OAUTH_URL_EAST, app.oauth_url_for(default, { server_endpoint = "https://oauth.bitrix24.tech/rest/" }))
    assert.equals(rest.OAUTH_URL, app.oauth_url_for(default, { server_endpoint = "https://oauth.bitrix.info/rest/" }))
    assert.equals(rest.OAUTH_URL, app.oauth_url_for(default, {}))
    -- any other server never receives the application's client_secret: the callback is not signed
    for _, other in ipairs({ "https://evil.example/rest/", "http://oauth.bitrix24.tech/rest/",
      "https://oauth.bitrix24.tech.evil.example/rest/", "https://user@oauth.bitrix24.tech/rest/" }) do
      assert.equals(rest.OAUTH_URL, app.oauth_url_for(default, { server_endpoint = other }), other)
    end
    -- BITRIX24_OAUTH_URL, when set, is used for every installation
    local given = cfg_with({ BITRIX24_OAUTH_URL = "http://127.0.0.1:9/oauth/token/" })
    assert.equals("http://127.0.0.1:9/oauth/token/",
      app.oauth_url_for(given, { server_endpoint = "https://oauth.bitrix24.tech/rest/" }))
  end)
  it("a token store that cannot be read: an event, the status page and a callback answer 500 and say so; nothing overwritten", function()
    local h, r = installed()
    A.wait_log(h, "INFO registered ", 1)
    -- the store's file holds no JSON object any more (a disk error, an editor)
    local broken = '{"access_token": "x", trunc'
    local f = assert(io.open(h.tokens_file, "wb"))
    f:write(broken)
    f:close()
    local auth = r.sent.auth
    -- the uninstall event carries the right application_token: the store, not the sender, is at fault
    local res = A.post_form(h.event_url, "event=ONAPPUNINSTALL&auth[application_token]=" .. auth.application_token
      .. "&auth[member_id]=" .. auth.member_id, cert)
    assert.equals(500, res.status, res.body)
    assert.matches("token store cannot be read", cjson.decode(res.body).message, 1, true)
    local log = A.wait_log(h, "the token store cannot be read", 1)
    assert.is_nil(log:find("event refused: wrong or missing application_token", 1, true), log)
    -- the status page does not say "Not installed"
    res = A.request(h.install_url, "GET", nil, nil, cert)
    assert.equals(500, res.status, res.body)
    assert.matches("token store cannot be read", res.body, 1, true)
    assert.is_nil(res.body:find("Not installed", 1, true), res.body)
    -- an installation callback does not overwrite what it cannot read
    local again = portal:control({ action = "install", url = h.install_url })
    assert.equals(500, again.status, again.body)
    assert.matches("token store cannot be read", cjson.decode(again.body).message, 1, true)
    assert.equals(broken, S.read_file(h.tokens_file))
    -- no token in what was logged or answered
    log = S.stderr(h)
    for _, secret in ipairs({ auth.access_token, auth.refresh_token, auth.application_token,
        again.sent.auth.access_token, again.sent.auth.refresh_token, again.sent.auth.application_token }) do
      assert.is_nil(log:find(secret, 1, true), secret)
    end
  end)
  it("an installation callback whose event is no single value is refused without a Lua value in the answer", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    finally(function() S.stop(h) end)
    local base = "auth[access_token]=acc3arr&auth[refresh_token]=ref3arr&auth[domain]=example.bitrix24.com"
      .. "&auth[client_endpoint]=https%3A%2F%2Fexample.bitrix24.com%2Frest%2F&auth[member_id]=m3arr&auth[application_token]=app3arr"
    for _, ev in ipairs({ "event[]=ONAPPINSTALL", "event[x]=ONAPPINSTALL&event[y]=1" }) do
      local res = A.post_form(h.install_url, base .. "&" .. ev, cert)
      assert.equals(400, res.status, res.body)
      local msg = cjson.decode(res.body).message
      assert.matches("event is not a single value", msg, 1, true)
      assert.is_nil(msg:find("table:", 1, true), msg)
    end
    local res = A.request(h.install_url, "POST", '{"event":["ONAPPINSTALL"],"auth":{}}', { ["Content-Type"] = "application/json" }, cert)
    assert.equals(400, res.status, res.body)
    assert.is_nil(res.body:find("table:", 1, true), res.body)
    assert.is_nil(S.stderr(h):find("table: 0x", 1, true))
    assert.is_nil(A.read_json(h.tokens_file))
  end)
  it("call/register with a token store that holds no installation say what it holds instead (uninstalled, unreadable)", function()
    local call = require "biconnector.cli.call"
    local tdir = A.tmpdir()
    finally(function() os.execute("rm -rf " .. tdir) end)
    local path = tdir .. "/tokens.json"
    local function message(text)
      if text then
        local f = assert(io.open(path, "wb"))
        f:write(text)
        f:close()
      end
      local env = { BITRIX24_TOKENS_FILE = path }
      local o, err = call.options_from_env(function(k) return env[k] end)
      assert.is_nil(o)
      return err
    end
    -- after ONAPPUNINSTALL the store keeps the portal and the time only
    local msg = message('{"portal":"example.bitrix24.com","member_id":"m1","uninstalled_at":1796680000}')
    assert.matches("the token store (file " .. path .. ") holds no tokens: the application was uninstalled from"
      .. " example.bitrix24.com at 2026-12-07 ", msg, 1, true)
    assert.matches("reinstall it", msg, 1, true)
    msg = message('{"access_token": "x", trunc')
    assert.matches("the token store (file " .. path .. ") cannot be read: " .. path .. " holds no JSON object", msg, 1, true)
    os.remove(path)
    msg = message()
    assert.matches("the token store (file " .. path .. ") holds no tokens", msg, 1, true)
    assert.matches("set BITRIX24_WEBHOOK", msg, 1, true)
    -- variables set empty (VAR= in an environment file, `export VAR=` to clear one) are unset:
    -- the installed application's store is used, not a webhook "" or a portal named ""
    local f = assert(io.open(path, "wb"))
    f:write('{"access_token":"acc9","refresh_token":"ref9","client_endpoint":"https://example.bitrix24.com/rest/",'
      .. '"member_id":"m9","portal":"example.bitrix24.com"}')
    f:close()
    local env = { BITRIX24_TOKENS_FILE = path, BITRIX24_WEBHOOK = "", BITRIX24_PORTAL = "", BITRIX24_ACCESS_TOKEN = "",
      BITRIX24_REFRESH_TOKEN = "", BITRIX24_CLIENT_ID = "", BITRIX24_CLIENT_SECRET = "" }
    local o = assert(call.options_from_env(function(k) return env[k] end))
    assert.is_nil(o.webhook)
    assert.is_nil(o.portal)
    assert.equals("https://example.bitrix24.com/rest/", o.client_endpoint)
    assert.is_nil(o.access_token)
    assert.is_nil(o.client_id)
  end)
  it("BITRIX24_TOKENS_KEY set empty is the default key, not a Lua error at start", function()
    local tokens = require "biconnector.rest.tokens"
    local env = { BITRIX24_TOKENS_REDIS = "redis://127.0.0.1:6379", BITRIX24_TOKENS_KEY = "" }
    local ok, store, what = pcall(tokens.from_env, function(k) return env[k] end)
    assert.is_true(ok, tostring(store))
    assert.is_not_nil(store, what)
    assert.equals("redis 127.0.0.1:6379 key biconnector:tokens", what)
  end)
  it("call/register: a renewal the OAuth server refuses says what to do (invalid_grant, invalid_client)", function()
    local helpers = require "helpers"
    portal:control({ action = "tokens", access_token = "acc7cli", refresh_token = "ref7cli" })
    portal:control({ action = "expire" })
    local path = dir .. "/tokens.json"
    local function store(refresh)
      local f = assert(io.open(path, "wb"))
      f:write(cjson.encode({ access_token = "acc7cli", refresh_token = refresh, member_id = "localmember",
        client_endpoint = portal.base .. "/rest/", portal = "127.0.0.1:" .. portal.port }))
      f:close()
    end
    local function run(secret, args)
      local p = io.popen(("BITRIX24_TOKENS_FILE=%s BITRIX24_OAUTH_URL=%s BITRIX24_CLIENT_ID=local.test.app"
        .. " BITRIX24_CLIENT_SECRET=%s timeout 20 %s bin/biconnector %s 2>&1; echo \"rc=$?\"")
        :format(S.shell_quote(path), S.shell_quote(portal.oauth_url), secret, helpers.runtime, args))
      local out = p:read("*a")
      p:close()
      return tonumber(out:match("rc=(%d+)%s*$")), out
    end
    -- a refresh token the OAuth server no longer takes (used elsewhere, older than 180 days)
    store("ref0unknown")
    local rc, out = run("appsecret", "call profile")
    assert.equals(1, rc, out)
    assert.matches("invalid_grant", out, 1, true)
    assert.matches("reinstall the application, or run `biconnector login`", out, 1, true)
    rc, out = run("appsecret", "register examples/minimal.lua --base-url https://bi.example.com")
    assert.equals(1, rc, out)
    assert.matches("invalid_grant", out, 1, true)
    assert.matches("reinstall the application, or run `biconnector login`", out, 1, true)
    -- a client_secret the OAuth server refuses
    store("ref7cli")
    rc, out = run("wrongsecret", "call profile")
    assert.equals(1, rc, out)
    assert.matches("invalid_client", out, 1, true)
    assert.matches("copy them again from the application's form", out, 1, true)
    assert.is_nil(out:find("wrongsecret", 1, true), out)
  end)
  it("the uninstall event again (a second handler, a sender's retry) is 200, not refused as a wrong application_token", function()
    local h, r = installed()
    A.wait_log(h, "INFO registered ", 1)
    local un = portal:control({ action = "uninstall" })
    assert.equals(200, un.calls[1].status, un.calls[1].body)
    local auth = r.sent.auth
    local body = "event=ONAPPUNINSTALL&data[CLEAN]=0&auth[domain]=" .. auth.domain .. "&auth[member_id]=" .. auth.member_id
      .. "&auth[application_token]=" .. auth.application_token
    local res = A.post_form(h.event_url, body, cert)
    assert.equals(200, res.status, res.body)
    assert.equals("uninstalled", cjson.decode(res.body).status)
    assert.is_nil(S.stderr(h):find("event refused", 1, true), S.stderr(h))
    -- still uninstalled; a token that was never the installation's is still refused
    local stored = A.read_json(h.tokens_file)
    assert.is_nil(stored.access_token)
    assert.is_not_nil(stored.uninstalled_at)
    assert.is_nil(S.read_file(h.tokens_file):find(auth.application_token, 1, true))
    res = A.post_form(h.event_url, body:gsub("auth%[application_token%]=[^&]*", "auth[application_token]=app0forged"), cert)
    assert.equals(403, res.status, res.body)
  end)
  it("the uninstall event posted to the installation (handler) path is taken as at the event path", function()
    local h, r = installed()
    A.wait_log(h, "INFO registered ", 1)
    local auth = r.sent.auth
    local body = "event=ONAPPUNINSTALL&data[CLEAN]=0&auth[domain]=" .. auth.domain .. "&auth[member_id]=" .. auth.member_id
      .. "&auth[application_token]="
    -- a forged token is refused there too, and changes nothing
    local res = A.post_form(h.install_url, body .. "app0forged", cert)
    assert.equals(403, res.status, res.body)
    assert.equals(auth.access_token, A.read_json(h.tokens_file).access_token)
    res = A.post_form(h.install_url, body .. auth.application_token, cert)
    assert.equals(200, res.status, res.body)
    assert.equals("uninstalled", cjson.decode(res.body).status)
    local stored = A.read_json(h.tokens_file)
    assert.is_nil(stored.access_token)
    assert.is_not_nil(stored.uninstalled_at)
    -- another event at the installation path is still not an installation callback
    res = A.post_form(h.install_url, "event=ONCRMDEALADD&auth[application_token]=" .. auth.application_token, cert)
    assert.equals(400, res.status, res.body)
  end)
  it("an uninstall event without auth[member_id] is judged by its application_token alone", function()
    local h, r = installed()
    A.wait_log(h, "INFO registered ", 1)
    local auth = r.sent.auth
    -- another portal's member_id with the right token is still refused
    local res = A.post_form(h.event_url, "event=ONAPPUNINSTALL&auth[member_id]=other0portal&auth[application_token]="
      .. auth.application_token, cert)
    assert.equals(403, res.status, res.body)
    res = A.post_form(h.event_url, "event=ONAPPUNINSTALL&auth[application_token]=app0forged", cert)
    assert.equals(403, res.status, res.body)
    res = A.post_form(h.event_url, "event=ONAPPUNINSTALL&auth[application_token]=" .. auth.application_token, cert)
    assert.equals(200, res.status, res.body)
    assert.equals("uninstalled", cjson.decode(res.body).status)
    assert.is_nil(A.read_json(h.tokens_file).access_token)
  end)
  it("a JSON callback: null is an absent field, and a body that is no object says so (not \"nil\")", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      args = { "--portal", "example.bitrix24.com" } })
    finally(function() S.stop(h) end)
    local json_type = { ["Content-Type"] = "application/json" }
    for _, b in ipairs({ "null", "5", '"x"', "true" }) do
      local res = A.request(h.install_url, "POST", b, json_type, cert)
      assert.equals(400, res.status, res.body)
      local msg = cjson.decode(res.body).message
      assert.is_nil(msg:find("nil", 1, true), msg)
      assert.matches("neither a form nor a JSON object", msg, 1, true)
    end
    -- optional fields sent as null (a JSON encoder's way of leaving them out)
    local body = '{"event":null,"ts":null,"auth":{"access_token":"acc8null","refresh_token":"ref8null",'
      .. '"domain":"example.bitrix24.com","client_endpoint":"https://example.bitrix24.com/rest/","member_id":"m8null",'
      .. '"application_token":"app8null","scope":null,"status":null,"expires_in":null,"server_endpoint":null}}'
    local res = A.request(h.install_url, "POST", body, json_type, cert)
    assert.equals(200, res.status, res.body)
    local stored = A.read_json(h.tokens_file)
    assert.equals("acc8null", stored.access_token)
    assert.is_nil(stored.scope)
    -- a required one as null is missing
    os.remove(h.tokens_file)
    res = A.request(h.install_url, "POST", body:gsub('"member_id":"m8null"', '"member_id":null'), json_type, cert)
    assert.equals(400, res.status, res.body)
    assert.matches("lacks auth[member_id]", cjson.decode(res.body).message, 1, true)
    assert.is_nil(A.read_json(h.tokens_file))
  end)
end)
