-- `biconnector serve sqlite://... --app` (docs/app.md): the whole journey
-- over loopback, HTTPS with a test certificate made here: the local portal
-- (spec/portal) installs the application as Bitrix24 does (the ONAPPINSTALL
-- callback, form-encoded with PHP brackets), the server stores the tokens and
-- registers the connector, source and tables through a helper process; the
-- portal then calls the registered URLs with the source's settings. Reinstall
-- and restart change nothing; uninstall is guarded by the application_token;
-- forged callbacks are refused with nothing stored; tokens never reach a log.
local S = require "serve_helpers"
local A = require "app_helpers"
local helpers = require "helpers"
local control = require "portal.control"
local cjson = require "cjson"

local function run(args, env)
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. k .. "=" .. S.shell_quote(v) .. " " end
  local p = io.popen(prefix .. S.serve_command(args) .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("rc=(%d+)%s*$")), out
end

-- Every token value the portal gave or the store held: none may appear in output.
local function secrets_of(list, t)
  for _, k in ipairs({ "access_token", "refresh_token", "application_token" }) do
    if type(t) == "table" and type(t[k]) == "string" then list[#list + 1] = t[k] end
  end
  return list
end

local function assert_no_secret(text, secrets)
  for _, s in ipairs(secrets) do
    assert.is_nil(text:find(s, 1, true), "a token reached the output: " .. s)
  end
end

describe("serve --app", function()
  local dir, cert, key, db, portal
  -- a directory, a certificate, the shop and the local portal trusting it
  A.world_hooks(function(...) dir, cert, key, db, portal = ... end)

  it("is installed over HTTPS, registers connector, source and tables, and BI Builder reads the rows;"
    .. " a reinstall and a restart change nothing; uninstall needs the application_token", function()
    local port = helpers.free_port()
    local secrets = {}
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, port = port, args = { "--app-tables" } })
    local outputs = {}
    finally(function() S.stop(h) end)
    local banner = S.stdout(h)
    assert.matches("listening on https://127.0.0.1:" .. port, banner, 1, true)
    assert.matches("Your handler path            " .. h.install_url, banner, 1, true)
    assert.matches("Initial installation path    " .. h.install_url, banner, 1, true)
    assert.matches("urlData              " .. h.public .. "/data", banner, 1, true)

    -- not installed yet: the page says so
    local page = A.request(h.install_url, "GET", nil, nil, cert)
    assert.equals(200, page.status)
    assert.matches("Not installed", page.body, 1, true)

    local r = portal:control({ action = "install", url = h.install_url })
    assert.equals(200, r.status)
    assert.same({ status = "installed", portal = "127.0.0.1:" .. portal.port }, cjson.decode(r.body))
    secrets_of(secrets, r.sent.auth)
    A.wait_log(h, "INFO registered ", 1)

    local objects = A.objects(portal)
    assert.same({ 1, 1, 2 }, { objects.connectors, objects.sources, objects.tables })
    local connector = objects.state.connectors["1"]
    assert.equals(h.public .. "/check", connector.urlCheck)
    assert.equals(h.public .. "/table_list", connector.urlTableList)
    assert.equals(h.public .. "/table_description", connector.urlTableDescription)
    assert.equals(h.public .. "/data", connector.urlData)
    local source = objects.state.sources["1"]
    assert.same({ token = "db-token-123" }, source.settings)
    local codes = {}
    for _, t in pairs(objects.state.tables) do
      assert.equals(1, t.sourceId)
      codes[#codes + 1] = t.externalCode
    end
    table.sort(codes)
    assert.same({ "customers", "orders" }, codes)
    -- the portal's urlCheck during source.add went to the public HTTPS URL
    assert.equals(h.public .. "/check", portal:stats().stats.url_checks[1].url)
    assert.equals(200, portal:stats().stats.url_checks[1].status)

    -- BI Builder through the registered URLs with the source's settings
    local check = portal:control({ action = "fetch", source_id = 1, endpoint = "check" })
    assert.equals(200, check.status)
    local list = portal:control({ action = "fetch", source_id = 1, endpoint = "table_list", params = { searchString = "" } })
    assert.equals(200, list.status)
    assert.same({ { code = "customers", title = "customers" }, { code = "orders", title = "orders" } }, cjson.decode(list.body))
    local data = portal:control({ action = "fetch", source_id = 1, endpoint = "data",
      params = { table = "orders", select = { "id", "amount", "note" } } })
    assert.equals(200, data.status)
    assert.same({ { "id", "amount", "note" }, { 1, 10.5, "first" }, { 2, 20, "second" }, { 3, 7.25, cjson.null } },
      cjson.decode(data.body))

    -- the token store: mode 0600, the installation beside the tokens
    assert.equals("600", A.mode(h.tokens_file))
    local stored = A.read_json(h.tokens_file)
    secrets_of(secrets, stored)
    assert.equals("localmember", stored.member_id)
    assert.equals("127.0.0.1:" .. portal.port, stored.portal)
    assert.equals(r.sent.auth.application_token, stored.application_token)
    assert.truthy(stored.verified_at) -- the OAuth server renewed the pair: genuine
    assert.is_true(stored.registration.ok)
    -- the ONAPPUNINSTALL handler is bound to /app/event
    page = A.request(h.install_url, "GET", nil, nil, cert)
    assert.matches("Installed for the portal <b>127.0.0.1:" .. portal.port .. "</b>", page.body, 1, true)
    assert.matches("connector 1, source 1, 2 table(s)", page.body, 1, true)

    -- a reinstall (new tokens, new application_token): the same objects
    r = portal:control({ action = "install", url = h.install_url })
    assert.equals(200, r.status)
    secrets_of(secrets, r.sent.auth)
    local log = A.wait_log(h, "INFO registered ", 2)
    assert.matches('"connector 1: unchanged', log, 1, true)
    objects = A.objects(portal)
    assert.same({ 1, 1, 2 }, { objects.connectors, objects.sources, objects.tables })
    secrets_of(secrets, A.read_json(h.tokens_file))

    -- a restart: registered again from the store, the same objects
    assert.equals(0, S.stop(h))
    outputs[#outputs + 1] = h.stdout .. h.stderr
    h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, port = port, args = { "--app-tables" } })
    assert.matches("Installed for 127.0.0.1:" .. portal.port, S.stdout(h), 1, true)
    A.wait_log(h, "INFO registered ", 1)
    objects = A.objects(portal)
    assert.same({ 1, 1, 2 }, { objects.connectors, objects.sources, objects.tables })
    stored = A.read_json(h.tokens_file)
    secrets_of(secrets, stored)

    -- uninstall: a wrong application_token is refused and changes nothing
    local un = portal:control({ action = "uninstall", application_token = "forged0token", keep = true })
    assert.equals(1, #un.calls)
    assert.equals(h.event_url, un.calls[1].url)
    assert.equals(403, un.calls[1].status)
    assert.equals(stored.access_token, A.read_json(h.tokens_file).access_token)
    A.wait_log(h, "event refused: wrong or missing application_token", 1)
    -- the right one clears the tokens
    un = portal:control({ action = "uninstall" })
    assert.equals(200, un.calls[1].status)
    local after = A.read_json(h.tokens_file)
    assert.is_nil(after.access_token)
    assert.is_nil(after.refresh_token)
    assert.is_nil(after.application_token)
    assert.truthy(after.uninstalled_at)
    assert.equals("600", A.mode(h.tokens_file))
    page = A.request(h.install_url, "GET", nil, nil, cert)
    assert.matches("Not installed: uninstalled from <b>127.0.0.1:" .. portal.port, page.body, 1, true)

    assert.equals(0, S.stop(h))
    outputs[#outputs + 1] = h.stdout .. h.stderr
    -- no token in any banner or log line of either run
    assert.is_true(#secrets >= 8)
    for _, text in ipairs(outputs) do assert_no_secret(text, secrets) end
  end)

  it("refuses forged installation callbacks (missing keys, another domain's endpoint, oversized values) and stores nothing", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    finally(function() S.stop(h) end)
    local base = { access_token = "acc0forged", refresh_token = "ref0forged", domain = "example.bitrix24.com",
      client_endpoint = "https://example.bitrix24.com/rest/", member_id = "m0forged", application_token = "app0forged",
      expires_in = "3600", scope = "biconnector" }
    local function form(auth, extra)
      local parts = { extra or "event=ONAPPINSTALL" }
      for k, v in pairs(auth) do parts[#parts + 1] = "auth[" .. k .. "]=" .. require("biconnector.form").encode({ x = v }):sub(3) end
      return table.concat(parts, "&")
    end
    local function with(changes)
      local t = {}
      for k, v in pairs(base) do t[k] = v end
      for k, v in pairs(changes) do if v == false then t[k] = nil else t[k] = v end end
      return t
    end
    local cases = {
      { with({ access_token = false }), 400, "lacks auth%[access_token%]" },
      { with({ refresh_token = false }), 400, "lacks auth%[refresh_token%]" },
      { with({ member_id = false }), 400, "lacks auth%[member_id%]" },
      { with({ application_token = false }), 400, "lacks auth%[application_token%]" },
      { with({ domain = false }), 400, "lacks auth%[domain%]" },
      { with({ client_endpoint = false }), 400, "lacks auth%[client_endpoint%]" },
      { with({ client_endpoint = "https://evil.example.com/rest/" }), 400, "auth%[client_endpoint%] is not https://example%.bitrix24%.com/rest/" },
      { with({ client_endpoint = "https://example.bitrix24.com.evil.example/rest/" }), 400, "auth%[client_endpoint%] is not" },
      { with({ client_endpoint = "http://example.bitrix24.com/rest/" }), 400, "not https" },
      { with({ access_token = ("a"):rep(2000) }), 400, "auth%[access_token%] is longer than 1024 bytes" },
      { with({ scope = ("s"):rep(5000) }), 400, "auth%[scope%] is longer than 4096 bytes" },
      { with({ application_token = "x y" }), 400, "auth%[application_token%] is not a token" },
      { with({ domain = "example.bitrix24.com\n" }), 400, "control character" },
      { with({}), 400, "not ONAPPUNINSTALL", "event=ONCRMDEALADD" },
    }
    cases[#cases].expect_event = true
    for i, c in ipairs(cases) do
      local body = form(c[1], c[4])
      local res = A.post_form(h.install_url, body, cert)
      assert.equals(c[2], res.status, "case " .. i .. ": " .. res.body)
      local msg = cjson.decode(res.body).message
      if c.expect_event then
        assert.matches("takes the ONAPPINSTALL callback", msg, 1, true)
      else
        assert.matches(c[3], msg)
      end
      assert.is_nil(res.body:find("forged", 1, true), "an answer echoes a value: " .. res.body)
    end
    -- a body over 64 KiB, and one that is no form
    local big = A.post_form(h.install_url, form(base) .. "&pad=" .. ("p"):rep(70000), cert)
    assert.equals(413, big.status)
    local junk = A.request(h.install_url, "POST", "{not json", { ["Content-Type"] = "application/json" }, cert)
    assert.equals(400, junk.status)
    -- GET and POST only
    assert.equals(405, A.request(h.install_url, "PUT", "x", nil, cert).status)
    assert.equals(405, A.request(h.event_url, "GET", nil, nil, cert).status)
    -- nothing was stored, nothing was started
    assert.is_nil(A.read_json(h.tokens_file))
    local log = S.stderr(h)
    assert.equals(#cases + 2, A.count(log, "installation callback refused"))
    assert.equals(0, A.count(log, "application helper started"))
    assert.is_nil(log:find("forged", 1, true))
    assert.equals(0, A.objects(portal).connectors)
    -- an event before any installation is refused too
    local ev = A.post_form(h.event_url, "event=ONAPPUNINSTALL&auth[application_token]=app0forged&auth[member_id]=m0forged", cert)
    assert.equals(403, ev.status)
  end)

  it("refuses a second portal's installation (its member_id), and another portal than --portal", function()
    local second = control.start({ rate = 1000, burst = 1000, ca_file = cert, member_id = "othermember" })
    finally(function() second:stop() end)
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    local h2
    finally(function() S.stop(h) if h2 then S.stop(h2) end end)
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    A.wait_log(h, "INFO registered ", 1)
    local r = second:control({ action = "install", url = h.install_url })
    assert.equals(403, r.status)
    assert.matches("installed for another portal; uninstall it there first", cjson.decode(r.body).message, 1, true)
    assert.matches("installed_member_id=localmember installed_portal=127.0.0.1:" .. portal.port,
      A.wait_log(h, "installation callback refused", 1), 1, true)
    local stored = A.read_json(h.tokens_file)
    assert.equals("localmember", stored.member_id)
    assert.equals(0, A.objects(second).connectors)
    assert.equals(1, A.count(S.stderr(h), "application helper started"))
    S.stop(h)

    -- --app-rebind lets the second portal's installation replace the first
    h2 = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = second, args = { "--app-rebind" } })
    assert.equals(200, second:control({ action = "install", url = h2.install_url }).status)
    -- (the registration of the stored installation at start may come first: wait for the second portal's)
    A.wait_log(h2, "INFO registered connector=%d+ job=register pid=%d+ portal=127%.0%.0%.1:" .. second.port, 1)
    assert.equals("othermember", A.read_json(h2.tokens_file).member_id)
    assert.equals(1, A.objects(second).connectors)
    S.stop(h2)

    -- --portal names the one portal whose installation is taken
    os.remove(dir .. "/tokens.json")
    h2 = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      args = { "--portal", "127.0.0.1:" .. portal.port } })
    assert.matches("(portal 127.0.0.1:" .. portal.port .. " only)", S.stdout(h2), 1, true)
    r = second:control({ action = "install", url = h2.install_url })
    assert.equals(403, r.status)
    assert.matches("is not the portal this server serves %(%-%-portal 127%.0%.0%.1:" .. portal.port .. "%)",
      cjson.decode(r.body).message)
    assert.is_nil(A.read_json(h2.tokens_file))
    local renewals = portal:stats().stats.renewals
    assert.equals(200, portal:control({ action = "install", url = h2.install_url }).status)
    local log2 = A.wait_log(h2, "INFO registered ", 1)
    -- the portal is pinned: its tokens are not renewed at installation (protocol.md: renew
    -- only when a call answers expired_token), and the source and tables are registered
    assert.equals(renewals, portal:stats().stats.renewals)
    assert.matches("installation taken for the portal --portal names", log2, 1, true)
    assert.is_nil(log2:find("verified by the OAuth server", 1, true))
    assert.equals(1, A.objects(portal).sources)
  end)

  it("serves a connector file as the application, its source settings from --source-settings", function()
    local settings = dir .. "/settings.json"
    local f = assert(io.open(settings, "w"))
    f:write('{"token": "demo-token"}')
    f:close()
    local h = A.serve({ dir = dir, target = "examples/demo/connector.lua", cert = cert, key = key, portal = portal,
      args = { "--source-settings", settings }, env = { BIC_DEMO_ROWS = "5" } })
    finally(function() S.stop(h) end)
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    A.wait_log(h, "INFO registered ", 1)
    local objects = A.objects(portal)
    assert.same({ 1, 1 }, { objects.connectors, objects.sources })
    assert.same({ token = "demo-token" }, objects.state.sources["1"].settings)
    local data = portal:control({ action = "fetch", source_id = 1, endpoint = "data", params = { table = "deals", limit = "2" } })
    assert.equals(200, data.status)
    assert.equals(3, #cjson.decode(data.body))
  end)

  it("reads the client credentials from files, again on SIGHUP, and says when the OAuth server refuses them", function()
    local id_file, secret_file = dir .. "/client_id", dir .. "/client_secret"
    local function write(path, text)
      local f = assert(io.open(path, "w"))
      f:write(text)
      f:close()
    end
    write(id_file, "local.test.app\n")
    os.remove(secret_file)
    -- not there yet at start (the form shows it after the installation): the banner says how to give it
    local pending_h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      env = { BITRIX24_CLIENT_ID = false, BITRIX24_CLIENT_SECRET = false },
      args = { "--client-id-file", id_file, "--client-secret-file", secret_file } })
    assert.matches("write them into the\n  --client-id-file/--client-secret-file files and send SIGHUP", S.stdout(pending_h), 1, true)
    S.stop(pending_h)
    write(secret_file, "not-the-secret\n")
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      env = { BITRIX24_CLIENT_ID = false, BITRIX24_CLIENT_SECRET = false },
      args = { "--client-id-file", id_file, "--client-secret-file", secret_file } })
    finally(function() S.stop(h) end)
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    local log = A.wait_log(h, "registration failed", 1)
    assert.matches("invalid_client", log, 1, true)
    assert.matches("copy them again from the application's form", log, 1, true)
    assert.matches('retry=no', log, 1, true) -- final: trying again cannot help
    assert.is_nil(log:find("not-the-secret", 1, true))
    assert.equals(0, A.objects(portal).connectors)
    write(secret_file, "appsecret\n")
    os.execute("kill -HUP " .. h.pid)
    A.wait_log(h, "INFO registered ", 1)
    assert.truthy(A.read_json(h.tokens_file).verified_at)
    assert.equals(1, A.objects(portal).sources)
  end)

  it("discards an installation whose tokens the OAuth server does not renew for this application", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    finally(function() S.stop(h) end)
    -- well formed, pointing at the real portal, but with tokens nobody issued
    local body = ("event=ONAPPINSTALL&auth[access_token]=madeup1&auth[refresh_token]=madeup2&auth[domain]=127.0.0.1:%d"
      .. "&auth[client_endpoint]=http://127.0.0.1:%d/rest/&auth[member_id]=localmember&auth[application_token]=madeup3")
      :format(portal.port, portal.port)
    assert.equals(200, A.post_form(h.install_url, body, cert).status)
    local log = A.wait_log(h, "the installation callback was not genuine", 1)
    assert.matches("invalid_grant", log, 1, true)
    A.wait_log(h, "application helper ended", 1)
    local stored = A.read_json(h.tokens_file)
    assert.is_nil(stored.access_token)
    assert.truthy(stored.refused_at)
    assert.equals(0, A.objects(portal).connectors)
    assert.is_nil(log:find("madeup", 1, true))
  end)

  it("retries a registration that failed, with backoff, and logs why", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    finally(function() S.stop(h) end)
    -- the first connector.add fails with a 500 (not executed): a create is not repeated by the
    -- REST client, the helper tries the whole registration again
    portal:fault({ method = "biconnector.connector.add", kind = "status500", count = 1 })
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    local log = A.wait_log(h, "INFO registered ", 1)
    local failed = log:match('WARN "registration failed"[^\n]*')
    assert.matches('attempt=1/4', failed, 1, true)
    assert.matches('reason="Bitrix24 REST biconnector.connector.add: INTERNAL_SERVER_ERROR (HTTP 500)', failed, 1, true)
    assert.matches('retry="in 0.2s"', failed, 1, true)
    local objects = A.objects(portal)
    assert.same({ 1, 1 }, { objects.connectors, objects.sources })
  end)

  it("without client_id/client_secret: the connector at once, its source only for --portal", function()
    local env = { BITRIX24_CLIENT_ID = false, BITRIX24_CLIENT_SECRET = false }
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, env = env })
    finally(function() S.stop(h) end)
    assert.matches("client_id/client_secret: not set yet", S.stdout(h), 1, true)
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    local log = A.wait_log(h, "INFO registered ", 1)
    assert.matches("the source (it carries the token) waits until the installation is verified", log, 1, true)
    local objects = A.objects(portal)
    assert.same({ 1, 0 }, { objects.connectors, objects.sources })
    assert.is_nil(A.read_json(h.tokens_file).verified_at)
    S.stop(h)

    -- the same installation with --portal naming it: the source is registered
    h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, env = env,
      args = { "--portal", "127.0.0.1:" .. portal.port } })
    A.wait_log(h, "INFO registered ", 1)
    objects = A.objects(portal)
    assert.same({ 1, 1 }, { objects.connectors, objects.sources })
  end)

  it("--app-uninstall-delete deletes what was registered while the portal still answers", function()
    portal:control({ action = "config", config = { uninstall_revokes = false } })
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      args = { "--app-tables", "--app-uninstall-delete" } })
    finally(function() S.stop(h) end)
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    A.wait_log(h, "INFO registered ", 1)
    assert.same({ 1, 1, 2 }, (function(o) return { o.connectors, o.sources, o.tables } end)(A.objects(portal)))
    portal:control({ action = "uninstall", keep = true })
    A.wait_log(h, "uninstall: connector 1 deleted", 1)
    local objects = A.objects(portal)
    assert.same({ 0, 0, 0 }, { objects.connectors, objects.sources, objects.tables })
  end)

  it("--workers 2: a worker takes the callback, the master registers again on SIGHUP, once", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, workers = 2, args = { "--app-tables" } })
    finally(function() S.stop(h) end)
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    A.wait_log(h, "INFO registered ", 1)
    os.execute("kill -HUP " .. h.pid)
    local log = A.wait_log(h, "INFO registered ", 2)
    A.wait_log(h, "worker %d+ reloaded", 2)
    -- one helper per installation and one per SIGHUP (from the master), none per worker
    assert.equals(2, A.count(log, "application helper started"))
    local objects = A.objects(portal)
    assert.same({ 1, 1, 2 }, { objects.connectors, objects.sources, objects.tables })
    assert.equals(0, S.stop(h))
  end)

  it("keeps the tokens in Redis (BITRIX24_TOKENS_REDIS)", function()
    local X = require "scale_helpers"
    local why = X.redis_missing()
    if why then
      io.stderr:write("\n*** SKIPPED: serve --app with Redis: " .. why .. "\n")
      return pending("SKIPPED: " .. why)
    end
    local redis = X.start_redis()
    finally(function() redis.stop() end)
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, env = { BITRIX24_TOKENS_FILE = false,
      BITRIX24_TOKENS_REDIS = "redis://127.0.0.1:" .. redis.port, BITRIX24_TOKENS_KEY = "bic:app" } })
    finally(function() S.stop(h) end)
    assert.matches("Tokens: redis 127.0.0.1:" .. redis.port .. " key bic:app", S.stdout(h), 1, true)
    local r = portal:control({ action = "install", url = h.install_url })
    assert.equals(200, r.status)
    A.wait_log(h, "INFO registered ", 1)
    local stored = cjson.decode(redis.command("GET bic:app"))
    assert.equals(r.sent.auth.application_token, stored.application_token)
    assert.is_true(stored.registration.ok)
    assert.is_nil(S.read_file(dir .. "/tokens.json"))
    local un = portal:control({ action = "uninstall" })
    assert.equals(200, un.calls[1].status)
    assert.is_nil(cjson.decode(redis.command("GET bic:app")).access_token)
  end)

  it("says what is wrong on the command line", function()
    local env = { BITRIX24_TOKENS_FILE = dir .. "/tokens.json", BICONNECTOR_TOKEN = "t" }
    local url = "sqlite://" .. db
    local cases = {
      { { url, "--app" }, 2, "--app needs --public-url https://" },
      { { url, "--app", "--public-url", "http://bi.example.com" }, 2, "--public-url must be https://" },
      { { url, "--app", "--public-url", "https://bi.example.com/?x=1" }, 2, "--public-url expects https://HOST" },
      { { url, "--public-url", "https://bi.example.com" }, 2, "--public-url applies with --app" },
      { { url, "--app-tables" }, 2, "--app-tables applies with --app" },
      { { url, "--app", "--public-url", "https://bi.example.com", "--no-auth" }, 2, "not with --no-auth" },
      { { url, "--app", "--public-url", "https://bi.example.com", "--dev" }, 2, "--app and --dev do not go together" },
      { { url, "--tls-cert", cert }, 2, "--tls-cert and --tls-key go together" },
      { { url, "--app", "--public-url", "https://bi.example.com", "--portal", "bad name!" }, 2, "--portal expects a portal's name" },
      { { url, "--tls-cert", dir .. "/none.pem", "--tls-key", key }, 1, "none.pem: No such file" },
      { { url, "--tls-cert", key, "--tls-key", cert }, 1, "not a usable pair" },
    }
    for _, c in ipairs(cases) do
      local code, out = run(c[1], env)
      assert.equals(c[2], code, out)
      assert.matches(c[3], out, 1, true)
    end
    -- no token store: --app says how to name one
    local code, out = run({ url, "--app", "--public-url", "https://bi.example.com" }, { BICONNECTOR_TOKEN = "t" })
    assert.equals(2, code)
    assert.matches("BITRIX24_TOKENS_FILE", out, 1, true)
    -- a client secret file that cannot be read (an absent one is "not given yet")
    code, out = run({ url, "--app", "--public-url", "https://bi.example.com", "--client-secret-file", dir }, env)
    assert.equals(2, code)
    assert.matches("--client-secret-file: " .. dir .. ": Is a directory", out, 1, true)
  end)
end)
