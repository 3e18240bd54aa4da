-- Certificates: the client verifies them by default; a private CA can be
-- given, or checking disabled explicitly. The portal serves HTTPS with a
-- self-signed certificate made here with openssl.
local helpers = require "helpers"
local rest = require "biconnector.rest"
local http = require("biconnector.core").http
local control = require "portal.control"

-- The HTTPS portal needs luasec (Debian lua-sec) in the spec's runtime.
if not pcall(require, "ssl") then
  io.stderr:write("\n*** SKIPPED: spec/rest_tls_spec.lua needs luasec (Debian package lua-sec)\n")
  return
end

describe("TLS", function()
  local portal, dir, cert
  setup(function()
    dir = helpers.tmpdir("tls")
    cert = dir .. "/cert.pem"
    local made = os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s -days 2 " ..
      "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1"):format(dir, cert))
    assert(made == true or made == 0, "openssl could not make a certificate")
    portal = control.start({ rate = 1000, burst = 1000 }, { cert = cert, key = dir .. "/key.pem" })
  end)
  teardown(function()
    if portal then portal:stop() end
    helpers.rmdir(dir)
  end)

  it("core.http refuses an unknown certificate, accepts it with ca_file or verify=false", function()
    local h = http.new()
    local res, err = h:request { url = portal.base .. "/_echo" }
    assert.is_nil(res)
    assert.equal(60, err.code) -- CURLE_PEER_FAILED_VERIFICATION
    assert.is_true(err.not_sent)
    assert.matches("certificate", err.message)
    assert.equal(200, assert(h:request { url = portal.base .. "/_echo", ca_file = cert }).status)
    assert.equal(200, assert(h:request { url = portal.base .. "/_echo", verify = false }).status)
    local _, bad = h:request { url = portal.base .. "/_echo", ca_file = dir .. "/missing.pem" }
    assert.equal(77, bad.code) -- CURLE_SSL_CACERT_BADFILE
    h:close()
  end)

  it("a REST call fails with a clear, unretried error unless the client trusts that CA", function()
    local c = assert(rest.new { webhook = portal.base .. "/rest/1/hooksecret/", backoff_base = 0.001 })
    local res, err = c:call("profile")
    assert.is_nil(res)
    assert.equal("CERTIFICATE_ERROR", err.code)
    assert.is_false(err.retryable)
    assert.matches("TLS certificate was not accepted: .*give ca_file", tostring(err))
    assert.is_nil(tostring(err):find("hooksecret", 1, true))
    assert.equal(1, c.counters.requests)
    assert.is_nil(portal:stats().stats.received.profile)
    local trusted = assert(rest.new { webhook = portal.base .. "/rest/1/hooksecret/", ca_file = cert })
    assert.equal("1", assert(trusted:call("profile")).ID)
    local unchecked = assert(rest.new { webhook = portal.base .. "/rest/1/hooksecret/", verify = false })
    assert.equal("1", assert(unchecked:call("profile")).ID)
    assert.equal(2, portal:stats().stats.received.profile)
  end)
  it("a CA file that does not load is named as the cause, and the command line's hint names BITRIX24_CA_FILE", function()
    local c = assert(rest.new { webhook = portal.base .. "/rest/1/hooksecret/", ca_file = dir .. "/missing.pem",
      backoff_base = 0.001 })
    local res, err = c:call("profile")
    assert.is_nil(res)
    assert.equal("CERTIFICATE_ERROR", err.code)
    assert.is_false(err.retryable)
    -- the CA given is the trouble, not a missing one: no advice to give ca_file
    assert.matches("the CA file " .. dir .. "/missing.pem (ca_file, BITRIX24_CA_FILE) cannot be loaded", tostring(err), 1, true)
    assert.is_nil(tostring(err):find("give ca_file", 1, true), tostring(err))
    -- an untrusted certificate: the hint says what the command line takes
    local plain = assert(rest.new { webhook = portal.base .. "/rest/1/hooksecret/", backoff_base = 0.001 })
    local _, perr = plain:call("profile")
    assert.matches("give ca_file (BITRIX24_CA_FILE for the biconnector command) to trust a private CA", tostring(perr), 1, true)
    assert.is_nil(tostring(perr):find("hooksecret", 1, true))
  end)
  it("an empty ca_file (BITRIX24_CA_FILE= in a unit's environment file) is none, not a file named \"\"", function()
    local c = assert(rest.new { webhook = portal.base .. "/rest/1/hooksecret/", ca_file = "", backoff_base = 0.001 })
    assert.is_nil(c.ca_file)
    local _, err = c:call("profile")
    -- the self-signed certificate is judged against the system's CAs (curl 60), not refused for a CA file (77)
    assert.equal("CERTIFICATE_ERROR", err.code)
    assert.equal(60, err.curl_code)
    local call = require "biconnector.cli.call"
    local o = assert(call.options_from_env(function(k)
      return ({ BITRIX24_WEBHOOK = portal.base .. "/rest/1/hooksecret/", BITRIX24_CA_FILE = "" })[k] end))
    assert.is_nil(o.ca_file)
    local app = require "biconnector.app.server"
    local cfg = assert(app.config({ public_url = "https://bi.example.com" }, function(k)
      return ({ BITRIX24_TOKENS_FILE = dir .. "/tokens.json", BITRIX24_CA_FILE = "" })[k] end))
    assert.is_nil(cfg.ca_file)
    -- a CA file that cannot be read stops serve --app at start, rather than every registration attempt later
    local cfg2, why = app.config({ public_url = "https://bi.example.com" }, function(k)
      return ({ BITRIX24_TOKENS_FILE = dir .. "/tokens.json", BITRIX24_CA_FILE = dir .. "/missing.pem" })[k] end)
    assert.is_nil(cfg2)
    assert.matches("BITRIX24_CA_FILE " .. dir .. "/missing.pem cannot be read", why, 1, true)
  end)
end)
