-- serve --app: the review's leftovers (docs/app.md). Each case failed before
-- its fix: a portal whose TLS certificate is not trusted stops the
-- registration at once; auth[domain] with the default port; a JSON event's
-- numeric member_id; the application's paths with a trailing slash;
-- --source-settings named when the connector refuses them; the serve TLS
-- pair's dates, chain and an encrypted key said at start.
local S = require "serve_helpers"
local A = require "app_helpers"
local helpers = require "helpers"
local cjson = require "cjson"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function lines_with(text, pattern)
  local list = {}
  for line in text:gmatch("[^\n]+") do if line:find(pattern, 1, true) then list[#list + 1] = line end end
  return list
end

describe("serve --app, the review's leftovers", function()
  local dir, cert, key, db, portal
  A.world_hooks(function(...) dir, cert, key, db, portal = ... end)

  it("a portal or OAuth server whose TLS certificate is not trusted stops the registration at once, saying what to do", function()
    -- the portal serves HTTPS with a certificate of its own, which serve does not trust (no BITRIX24_CA_FILE)
    local pcert, pkey = A.certificate(dir, "portal", "127.0.0.1")
    local tls_portal = require("portal.control").start({ rate = 1000, burst = 1000, ca_file = cert },
      { cert = pcert, key = pkey })
    local started = {}
    finally(function()
      for _, h in ipairs(started) do S.stop(h) end
      tls_portal:stop()
    end)
    local endpoint = "https://127.0.0.1:" .. tls_portal.port .. "/rest/"
    for _, case in ipairs({ { "--portal", "CERTIFICATE_ERROR" }, { nil, "RENEWAL_FAILED" } }) do
      os.remove(dir .. "/tokens.json")
      -- with --portal the first call goes to the portal; without, the renewal to the OAuth server
      local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = tls_portal,
        args = case[1] and { "--portal", "127.0.0.1:" .. tls_portal.port } or {},
        env = { BICONNECTOR_APP_RETRY = "0.2,0.2,4" } })
      started[#started + 1] = h
      local r = tls_portal:control({ action = "install", url = h.install_url, auth = { client_endpoint = endpoint } })
      assert.equals(200, r.status, r.body)
      A.wait_log(h, "registration failed", 1)
      -- (a retry would come 0.2 s later: the helper's end is waited for)
      A.wait_log(h, "application helper ended", 1)
      S.stop(h)
      local log = S.stderr(h)
      local failed = lines_with(log, "registration failed")
      assert.equals(1, #failed, log)
      assert.matches(case[2], failed[1], 1, true)
      assert.matches("attempt=1/4", failed[1], 1, true)
      assert.matches("retry=no", failed[1], 1, true)
      assert.matches("BITRIX24_CA_FILE", failed[1], 1, true)
    end
  end)

  it("takes auth[domain] with the default port (portal:443) as the portal --portal names", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      args = { "--portal", "example.bitrix24.com" }, env = { BICONNECTOR_APP_RETRY = "60,60,1" } })
    finally(function() S.stop(h) end)
    local function callback(domain, endpoint)
      return ("auth[access_token]=acc1&auth[refresh_token]=ref1&auth[domain]=%s&auth[client_endpoint]=%s"
        .. "&auth[member_id]=m1&auth[application_token]=app1&event=ONAPPINSTALL"):format(domain, endpoint)
    end
    local res = A.post_form(h.install_url, callback("example.bitrix24.com:443", "https://example.bitrix24.com/rest/"), cert)
    assert.equals(200, res.status, res.body)
    local stored = A.read_json(h.tokens_file)
    assert.equals("example.bitrix24.com", stored.portal)
    assert.equals("https://example.bitrix24.com/rest/", stored.client_endpoint)
    -- another port is another server: still refused
    os.remove(h.tokens_file)
    res = A.post_form(h.install_url, callback("example.bitrix24.com:8443", "https://example.bitrix24.com:8443/rest/"), cert)
    assert.equals(403, res.status, res.body)
    assert.is_nil(A.read_json(h.tokens_file))
  end)

  it("takes a JSON event whose auth.member_id is a number as its text", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      args = { "--portal", "example.bitrix24.com" }, env = { BICONNECTOR_APP_RETRY = "60,60,1" } })
    finally(function() S.stop(h) end)
    local auth = { access_token = "acc1json", refresh_token = "ref1json", domain = "example.bitrix24.com",
      client_endpoint = "https://example.bitrix24.com/rest/", member_id = 4242, application_token = "app1json" }
    local res = A.request(h.install_url, "POST", cjson.encode({ event = "ONAPPINSTALL", auth = auth }),
      { ["Content-Type"] = "application/json" }, cert)
    assert.equals(200, res.status, res.body)
    assert.equals("4242", A.read_json(h.tokens_file).member_id)
    -- another number is another portal
    local event = { event = "ONAPPUNINSTALL", auth = { application_token = "app1json", member_id = 4243 } }
    res = A.request(h.event_url, "POST", cjson.encode(event), { ["Content-Type"] = "application/json" }, cert)
    assert.equals(403, res.status, res.body)
    event.auth.member_id = 4242
    res = A.request(h.event_url, "POST", cjson.encode(event), { ["Content-Type"] = "application/json" }, cert)
    assert.equals(200, res.status, res.body)
    local after = A.read_json(h.tokens_file)
    assert.is_nil(after.access_token)
    assert.is_truthy(after.uninstalled_at)
  end)

  it("the application's paths take a trailing slash (a handler path pasted with one); other paths stay exact", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal,
      args = { "--portal", "127.0.0.1:" .. portal.port } })
    finally(function() S.stop(h) end)
    local r = portal:control({ action = "install", url = h.install_url .. "/" })
    assert.equals(200, r.status, r.body)
    A.wait_log(h, "INFO registered ", 1)
    assert.equals(200, A.request(h.install_url .. "/", "GET", nil, nil, cert).status)
    assert.equals(405, A.request(h.event_url .. "/", "GET", nil, nil, cert).status)
    assert.equals(404, A.request(h.install_url .. "//", "GET", nil, nil, cert).status)
    assert.equals(404, A.request(h.public .. "/app/", "GET", nil, nil, cert).status)
    assert.equals(404, A.request(h.public .. "/app/installx", "GET", nil, nil, cert).status)
    -- the uninstall event at the handler path with its slash
    local un = portal:control({ action = "uninstall" })
    assert.equals(200, un.calls[1].status, cjson.encode(un))
    assert.is_nil(A.read_json(h.tokens_file).access_token)
  end)

  it("--source-settings the connector refuses: the failure names the option and the file, and stops", function()
    local settings = dir .. "/settings.json"
    write(settings, '{"token": "not-the-demo-token"}')
    local started = {}
    finally(function() for _, h in ipairs(started) do S.stop(h) end end)
    for _, tables in ipairs({ false, true }) do
      os.remove(dir .. "/tokens.json")
      portal:reset({ rate = 1000, burst = 1000, ca_file = cert })
      local args = { "--source-settings", settings, "--portal", "127.0.0.1:" .. portal.port }
      if tables then args[#args + 1] = "--app-tables" end
      local h = A.serve({ dir = dir, target = "examples/demo/connector.lua", cert = cert, key = key, portal = portal,
        args = args, env = { BIC_DEMO_ROWS = "5" } })
      started[#started + 1] = h
      assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
      A.wait_log(h, "registration failed", 1)
      S.stop(h)
      local log = S.stderr(h)
      local failed = lines_with(log, "registration failed")
      assert.equals(1, #failed, log)
      assert.matches("--source-settings " .. settings, failed[1], 1, true)
      assert.matches("wrong token", failed[1], 1, true)
      assert.matches("retry=no", failed[1], 1, true)
      assert.equals(0, A.objects(portal).sources)
    end
  end)
end)

describe("serve --tls-cert: the pair's dates, chain and key said at start", function()
  local dir
  setup(function() dir = A.tmpdir() end)
  teardown(function() A.rm(dir) end)

  local function sh(cmd) assert(A.sh(cmd .. " >/dev/null 2>&1"), cmd) end

  -- serve the demo connector with this pair for a moment -> exit code, stdout, stderr
  local function serve(c, k)
    local parts = { "BIC_BUILD=" .. helpers.q(helpers.build), "timeout -s INT 3", helpers.runtime, "bin/biconnector", "serve",
      "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1", "--tls-cert", helpers.q(c),
      "--tls-key", helpers.q(k) }
    return helpers.run3(table.concat(parts, " "))
  end

  -- a certificate with the given dates (openssl ca: openssl 3.0's x509 and req cannot set them)
  local function dated(name, issuer_cert, issuer_key, from, to)
    local cnf = dir .. "/" .. name .. ".cnf"
    write(cnf, ("[ca]\ndefault_ca = d\n[d]\ndatabase = %s/%s.index\nnew_certs_dir = %s\nserial = %s/%s.serial\n"
      .. "default_md = sha256\npolicy = p\ncopy_extensions = copy\nunique_subject = no\n[p]\ncommonName = supplied\n")
      :format(dir, name, dir, dir, name))
    write(dir .. "/" .. name .. ".index", "")
    write(dir .. "/" .. name .. ".serial", "01\n")
    local p = dir .. "/" .. name
    sh(("openssl req -new -newkey rsa:2048 -nodes -keyout %s.key -out %s.csr -subj /CN=localhost"
      .. " -addext subjectAltName=DNS:localhost,IP:127.0.0.1"):format(p, p))
    sh(("openssl ca -batch -config %s %s -in %s.csr -out %s.pem -startdate %s -enddate %s -notext"):format(cnf,
      issuer_cert and ("-cert " .. issuer_cert .. " -keyfile " .. issuer_key) or ("-selfsign -keyfile " .. p .. ".key"),
      p, p, from, to))
    return p .. ".pem", p .. ".key"
  end

  it("an expired certificate stops serve, naming the file and the date", function()
    local c, k = dated("expired", nil, nil, "20200101000000Z", "20210101000000Z")
    local rc, out, err = serve(c, k)
    assert.equals(1, rc, err)
    assert.matches("--tls-cert " .. c, err, 1, true)
    assert.matches("expired on 2021-01-01 00:00:00 UTC", err, 1, true)
    assert.is_nil(out:find("listening on", 1, true))
  end)

  it("a certificate not valid yet, or a leaf without its chain: served, with a warning naming the file", function()
    local c, k = dated("future", nil, nil, "20400101000000Z", "20410101000000Z")
    local _, out, err = serve(c, k)
    assert.matches("listening on https://", out, 1, true)
    assert.matches("warning: --tls-cert " .. c, err, 1, true)
    assert.matches("not valid before 2040-01-01 00:00:00 UTC", err, 1, true)
    -- a CA, a leaf it signed: the leaf alone lacks the chain; the leaf and the CA are fine
    local ca, ca_key = A.certificate(dir, "ca", "TestCA")
    local leaf, leaf_key = dated("leaf", ca, ca_key, "20200101000000Z", "20991231000000Z")
    _, out, err = serve(leaf, leaf_key)
    assert.matches("listening on https://", out, 1, true)
    assert.matches("warning: --tls-cert " .. leaf, err, 1, true)
    assert.matches("without its chain", err, 1, true)
    assert.matches("CN=TestCA", err, 1, true)
    local full = dir .. "/full.pem"
    write(full, S.read_file(leaf) .. S.read_file(ca))
    _, out, err = serve(full, leaf_key)
    assert.matches("listening on https://", out, 1, true, err)
    assert.is_nil(err:find("warning", 1, true), err)
    -- a self-signed certificate is its own chain: no warning
    local own, own_key = A.certificate(dir, "own")
    _, out, err = serve(own, own_key)
    assert.matches("listening on https://", out, 1, true)
    assert.is_nil(err:find("warning", 1, true), err)
  end)

  it("SIGHUP: an expired certificate in place of the file is not taken; the one loaded stays", function()
    local c, k = A.certificate(dir, "live0")
    local live_cert, live_key = dir .. "/live.pem", dir .. "/live.key"
    write(live_cert, S.read_file(c))
    write(live_key, S.read_file(k))
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1",
      "--tls-cert", live_cert, "--tls-key", live_key }), {})
    finally(function() S.stop(h) end)
    assert.equals(A.fingerprint_of_file(c), A.fingerprint_served(h.port))
    local old_cert, old_key = dated("old", nil, nil, "20200101000000Z", "20210101000000Z")
    write(live_cert, S.read_file(old_cert))
    write(live_key, S.read_file(old_key))
    os.execute("kill -HUP " .. h.pid)
    local log = A.wait_log(h, "certificate reload failed, keeping the one loaded", 1)
    assert.matches("expired on 2021-01-01 00:00:00 UTC", log, 1, true)
    assert.equals(A.fingerprint_of_file(c), A.fingerprint_served(h.port))
  end)

  it("a passphrase-protected key: said to be encrypted, with what to do", function()
    local c, k = A.certificate(dir, "enc")
    for _, conv in ipairs({ "openssl pkey -in %s -aes256 -passout pass:secret -out %s",
        "openssl rsa -in %s -aes256 -passout pass:secret -traditional -out %s" }) do
      local enc = dir .. "/enc-protected.key"
      sh(conv:format(k, enc))
      local rc, _, err = serve(c, enc)
      assert.equals(1, rc, err)
      assert.matches("encrypted", err, 1, true)
      assert.matches("openssl pkey -in " .. enc, err, 1, true)
      assert.is_nil(err:find("Decryption has failed", 1, true), err)
    end
  end)
end)
