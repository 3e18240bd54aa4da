-- `biconnector login` (docs/app.md, "The tokens again"): the full OAuth flow
-- against the local portal. The spec plays the browser: it opens the printed
-- /oauth/authorize/ link, takes the portal's redirect and follows it to the
-- application's handler path: the running `serve --app` (its /app/install),
-- or login's own one-shot listener (--listen). The code is exchanged at once
-- and the tokens stored; nothing secret is printed.
local S = require "serve_helpers"
local A = require "app_helpers"
local helpers = require "helpers"

-- Runs `biconnector login ARGS` in the background -> handle {out, err, rcfile}
local function start_login(args, env)
  local parts = { helpers.runtime, "bin/biconnector", "login" }
  for _, a in ipairs(args) do parts[#parts + 1] = S.shell_quote(a) end
  return S.background(table.concat(parts, " "), env)
end

local function wait_for(h, pattern, seconds)
  local found
  helpers.poll(function()
    found = (S.read_file(h.out) or ""):match(pattern)
    return found or S.read_file(h.rcfile) -- printed, or ended
  end, seconds or 20, 0.05)
  if found then return found end
  error("login printed no " .. pattern .. ":\n" .. (S.read_file(h.out) or "") .. (S.read_file(h.err) or ""))
end

local function finish(h, seconds)
  local rc = S.wait_exit(h, seconds or 30)
  local out, err = S.read_file(h.out) or "", S.read_file(h.err) or ""
  for _, f in ipairs({ h.out, h.err, h.rcfile, h.pidfile }) do os.remove(f) end
  return rc, out, err
end

-- The browser: the authorize link, then wherever the portal redirects.
local function browse(link, ca_file)
  local res = A.request(link)
  assert.equals(302, res.status, res.body)
  local target = res.headers.location
  assert.truthy(target)
  return A.request(target, "GET", nil, nil, ca_file), target
end

describe("biconnector login", function()
  local dir, cert, key, db, portal
  -- a directory, a certificate, the shop and the local portal trusting it
  A.world_hooks(function(...) dir, cert, key, db, portal = ... end, false)

  local function env_for(extra)
    local env = { BITRIX24_TOKENS_FILE = dir .. "/tokens.json", BITRIX24_CLIENT_ID = "local.test.app",
      BITRIX24_CLIENT_SECRET = "appsecret", BITRIX24_OAUTH_URL = portal.oauth_url, BITRIX24_CA_FILE = cert }
    for k, v in pairs(extra or {}) do env[k] = v end
    return env
  end

  it("the running serve --app takes the code at its handler path, stores the tokens and registers", function()
    os.remove(dir .. "/tokens.json")
    local port = helpers.free_port()
    portal:reset({ rate = 1000, burst = 1000, ca_file = cert, redirect_uri = "https://localhost:" .. port .. "/app/install" })
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, port = port })
    finally(function() S.stop(h) end)
    local login = start_login({ "--portal", "http://127.0.0.1:" .. portal.port, "--timeout", "30" }, env_for())
    local link = wait_for(login, "(http://127%.0%.0%.1:%d+/oauth/authorize/%?%S+)")
    assert.matches("client_id=local.test.app", link, 1, true)
    local state = link:match("state=(%x+)")
    assert.equals(32, #state)
    -- a code with another state is refused, and spends nothing
    local forged = A.request(h.install_url .. "?code=abc&state=" .. ("0"):rep(32), "GET", nil, nil, cert)
    assert.equals(403, forged.status)
    local page = browse(link, cert)
    assert.equals(200, page.status)
    assert.matches("Authorization received", page.body, 1, true)
    local rc, out = finish(login)
    assert.equals(0, rc, out)
    assert.matches("Logged in to 127.0.0.1:" .. portal.port .. " (member_id localmember)", out, 1, true)
    A.wait_log(h, "INFO registered ", 1)
    local stored = A.read_json(h.tokens_file)
    assert.equals("127.0.0.1:" .. portal.port, stored.portal)
    assert.truthy(stored.verified_at)
    assert.is_nil(stored.login)
    assert.is_nil(stored.domain) -- the OAuth server's name is not the portal's
    assert.equals("600", A.mode(h.tokens_file))
    assert.equals(1, portal:stats().stats.codes_exchanged)
    assert.same({ 1, 1 }, (function(o) return { o.connectors, o.sources } end)(A.objects(portal)))
    -- no token and no code in what login or the server printed
    for _, s in ipairs({ stored.access_token, stored.refresh_token, "appsecret" }) do
      assert.is_nil(out:find(s, 1, true))
      assert.is_nil((S.stdout(h) .. S.stderr(h)):find(s, 1, true))
    end
  end)

  it("--listen takes the code itself, once, and exchanges it at once", function()
    os.remove(dir .. "/tokens.json")
    local lport = helpers.free_port()
    portal:reset({ rate = 1000, burst = 1000, redirect_uri = "http://127.0.0.1:" .. lport .. "/" })
    local login = start_login({ "--portal", "http://127.0.0.1:" .. portal.port, "--listen", "127.0.0.1:" .. lport,
      "--timeout", "30" }, env_for())
    local link = wait_for(login, "(http://127%.0%.0%.1:%d+/oauth/authorize/%?%S+)")
    wait_for(login, "Waiting for the redirect on http://127.0.0.1:" .. lport)
    local page, target = browse(link)
    assert.equals(200, page.status)
    assert.matches("Logged in", page.body, 1, true)
    local rc, out, err = finish(login)
    assert.equals(0, rc, out .. err)
    assert.matches("Logged in to 127.0.0.1:" .. portal.port, out, 1, true)
    assert.matches("after SIGHUP", out, 1, true)
    local stored = A.read_json(dir .. "/tokens.json")
    assert.truthy(stored.access_token)
    assert.equals("localmember", stored.member_id)
    local code = target:match("code=([^&]+)")
    for _, s in ipairs({ stored.access_token, stored.refresh_token, code, "appsecret" }) do
      assert.is_nil((out .. err):find(s, 1, true))
    end
  end)

  it("says why a login fails: the OAuth server refuses, nothing arrives in time, a usage error", function()
    os.remove(dir .. "/tokens.json")
    local lport = helpers.free_port()
    portal:reset({ rate = 1000, burst = 1000, redirect_uri = "http://127.0.0.1:" .. lport .. "/" })
    local login = start_login({ "--portal", "http://127.0.0.1:" .. portal.port, "--listen", "127.0.0.1:" .. lport },
      env_for({ BITRIX24_CLIENT_SECRET = "wrong-secret" }))
    local link = wait_for(login, "(http://127%.0%.0%.1:%d+/oauth/authorize/%?%S+)")
    wait_for(login, "Waiting for the redirect")
    browse(link)
    local rc, out, err = finish(login)
    assert.equals(1, rc)
    assert.matches("the OAuth server refused the code (HTTP 401): invalid client", err, 1, true)
    assert.is_nil((out .. err):find("wrong-secret", 1, true))
    assert.is_nil(A.read_json(dir .. "/tokens.json").access_token)

    -- nobody follows the link: a timeout, and the pending login is withdrawn
    login = start_login({ "--portal", "example.bitrix24.com", "--timeout", "1" }, env_for())
    rc, out, err = finish(login)
    assert.equals(1, rc)
    assert.matches("https://example.bitrix24.com/oauth/authorize/?client_id=local.test.app&state=", out, 1, true)
    assert.matches("no authorization reached the server in time", err, 1, true)
    assert.is_nil(A.read_json(dir .. "/tokens.json").login)

    local cases = {
      { {}, { BITRIX24_TOKENS_FILE = false }, "set BITRIX24_TOKENS_FILE" },
      { { "--portal", "example.bitrix24.com" }, { BITRIX24_CLIENT_ID = false }, "give the application's client_id" },
      { { "--listen", "127.0.0.1:1" }, { BITRIX24_CLIENT_SECRET = false }, "client_id and client_secret" },
      { {}, {}, "name the portal with --portal" },
      { { "--timeout", "soon" }, {}, "--timeout expects a number" },
      { { "--bogus" }, {}, "unknown argument '--bogus'" },
      { { "--tls-cert", cert }, {}, "--tls-cert and --tls-key go together" },
    }
    os.remove(dir .. "/tokens.json")
    for _, c in ipairs(cases) do
      local env = env_for()
      for k, v in pairs(c[2]) do env[k] = v or nil end
      rc, out, err = finish(start_login(c[1], env))
      assert.equals(2, rc, out .. err)
      assert.matches(c[3], err, 1, true)
    end
  end)
end)
