-- `serve --app` driven as Bitrix24 drives it, by an acceptance test that read
-- protocol.md section 4 and docs/app.md: a real `biconnector serve ... --app`
-- over HTTPS on loopback, the local portal (spec/portal) as Bitrix24, and
-- callbacks made by hand where Bitrix24's own would not show the case. Each
-- case here failed before its fix.
local S = require "serve_helpers"
local A = require "app_helpers"
local helpers = require "helpers"

-- `biconnector login ARGS` with the token file and credentials: -> exit code, output
local function login(dir, args) return A.cli(dir, "login " .. args, true) end

describe("serve --app, accepted as Bitrix24 drives it", function()
  local dir, cert, key, db, portal
  A.world_hooks(function(...) dir, cert, key, db, portal = ... end)

  it("a callback the OAuth server does not vouch for leaves no portal behind for `login` to default to", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    finally(function() S.stop(h) end)
    -- well formed, for a portal nobody verified: made-up tokens, the forger's own domain
    local body = "event=ONAPPINSTALL&auth[access_token]=madeup1&auth[refresh_token]=madeup2&auth[domain]=evil.example.com"
      .. "&auth[client_endpoint]=https%3A%2F%2Fevil.example.com%2Frest%2F&auth[member_id]=m0evil&auth[application_token]=madeup3"
    assert.equals(200, A.post_form(h.install_url, body, cert).status)
    A.wait_log(h, "the installation callback was not genuine", 1)
    A.wait_log(h, "application helper ended", 1)
    local stored = A.read_json(h.tokens_file)
    assert.is_nil(stored.access_token)
    assert.truthy(stored.refused_at)
    -- the refused callback's domain is not "the portal the token store names"
    assert.is_nil(stored.portal)
    local rc, out = login(dir, "--timeout 1")
    assert.equals(2, rc, out)
    assert.matches("name the portal with --portal", out, 1, true)
    assert.is_nil(out:find("evil.example.com", 1, true), out)
    -- the status page names no portal either
    local page = A.request(h.install_url, "GET", nil, nil, cert)
    assert.is_nil(page.body:find("evil.example.com", 1, true), page.body)
  end)

  it("--app-tables: a listed table that cannot be described (only binary columns) is left out, not the whole registration", function()
    local odd = dir .. "/binary.db"
    os.remove(odd)
    assert(A.sh(("sqlite3 %s \"create table orders(id integer primary key, note text); insert into orders values (1, 'a');"
      .. " create table files(data blob);\""):format(odd)))
    local h = A.serve({ dir = dir, db = odd, cert = cert, key = key, portal = portal,
      args = { "--app-tables", "--portal", "127.0.0.1:" .. portal.port } })
    finally(function() S.stop(h) end)
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    -- (before: "registration failed" for files, retried, and nothing at all registered)
    local log = A.wait_log(h, "INFO registered ", 1)
    assert.equals(0, A.count(log, "registration failed"))
    local line = log:match("[^\n]*table files is not registered[^\n]*")
    assert.truthy(line, log)
    assert.matches("has no column that can be served", line, 1, true)
    local objects = A.objects(portal)
    assert.same({ 1, 1, 1 }, { objects.connectors, objects.sources, objects.tables })
    assert.equals("orders", select(2, next(objects.state.tables)).externalCode)
    A.wait_log(h, "ONAPPUNINSTALL handler bound", 1)
  end)

  it("a restart with another --public-url moves the ONAPPUNINSTALL handler: the old address is unbound", function()
    local port = helpers.free_port()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, port = port })
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    A.wait_log(h, "INFO registered ", 1)
    local old_event_url = h.event_url
    assert.equals(0, S.stop(h))
    -- the same server under a new public name (a tunnel's name changes with each start)
    local public = "https://127.0.0.1:" .. port
    h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, port = port, args = { "--public-url", public } })
    finally(function() S.stop(h) end)
    local log = A.wait_log(h, "INFO registered ", 1)
    assert.matches("ONAPPUNINSTALL handler bound", log, 1, true)
    assert.matches("stale ONAPPUNINSTALL handler unbound", log, 1, true)
    assert.equals(public .. "/check", A.objects(portal).state.connectors["1"].urlCheck)
    -- (before: both stayed bound, and the uninstall, application_token included, went to the old address too)
    local un = portal:control({ action = "uninstall" })
    assert.equals(1, #un.calls, require("cjson").encode(un.calls))
    assert.equals(public .. "/app/event", un.calls[1].url)
    assert.are_not.equal(old_event_url, un.calls[1].url)
    assert.equals(200, un.calls[1].status, un.calls[1].body)
  end)

  it("an installation stored while another is being verified is not taken as verified (its settings stay home)", function()
    local core = require "biconnector.core"
    local cjson = require "cjson"
    -- a forger's own "portal", which knows the genuine portal's member_id
    local evil = require("portal.control").start({ rate = 1000, burst = 1000, ca_file = cert })
    finally(function() evil:stop() end)
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    finally(function() S.stop(h) end)
    -- the order, made certain with the two locks the helper takes (the registration
    -- lock, then the store's lock to renew): the helper reads the genuine installation,
    -- and while it waits to renew, a forged callback for the same member_id is stored
    -- (as the server's worker stores one: under the store's lock)
    local reg_lock = assert(core.http.lock(h.tokens_file .. ".register.lock"))
    local r = portal:control({ action = "install", url = h.install_url })
    assert.equals(200, r.status, r.body)
    A.wait_log(h, "application helper started", 1)
    local store_lock = assert(core.http.lock(h.tokens_file .. ".lock"))
    reg_lock:unlock()
    core.process.sleep(1) -- the helper reads the installation and waits for the store's lock
    evil:control({ action = "tokens", access_token = "evilaccess", refresh_token = "evilrefresh" })
    local forged = { access_token = "evilaccess", refresh_token = "evilrefresh", application_token = "evilapp",
      member_id = "localmember", portal = "127.0.0.1:" .. evil.port, client_endpoint = "http://127.0.0.1:" .. evil.port .. "/rest/",
      installed_at = os.time() }
    assert(core.http.write_atomic(h.tokens_file, cjson.encode(forged)))
    store_lock:unlock()
    A.wait_log(h, "application helper ended", 1)
    local stored = A.read_json(h.tokens_file)
    -- (before: the helper took the forged pair for the one it renewed and marked it verified)
    assert.is_nil(stored.verified_at, cjson.encode(stored))
    -- the forged pair was verified in its turn: the OAuth server does not renew it
    assert.matches("the installation callback was not genuine", S.stderr(h), 1, true)
    assert.is_nil(stored.access_token)
    -- and a registration later sends the database's token nowhere
    os.execute("kill -HUP " .. h.pid)
    core.process.sleep(1.5)
    assert.equals(0, A.objects(evil).sources)
    assert.equals(0, A.objects(evil).connectors)
  end)

  it("a stranger's callback for another member_id is refused without learning the installation's member_id", function()
    local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal })
    finally(function() S.stop(h) end)
    assert.equals(200, portal:control({ action = "install", url = h.install_url }).status)
    A.wait_log(h, "INFO registered ", 1)
    -- anyone who reaches /app/install can send this; the member_id it would learn is what a
    -- callback needs to replace the installation's tokens (stored at once, docs/app.md)
    local body = "event=ONAPPINSTALL&auth[access_token]=acc0x&auth[refresh_token]=ref0x&auth[domain]=evil.example.com"
      .. "&auth[client_endpoint]=https%3A%2F%2Fevil.example.com%2Frest%2F&auth[member_id]=m0other&auth[application_token]=app0x"
    local res = A.post_form(h.install_url, body, cert)
    assert.equals(403, res.status, res.body)
    local message = require("cjson").decode(res.body).message
    assert.matches("installed for another portal", message, 1, true)
    assert.is_nil(res.body:find("localmember", 1, true), res.body)
    assert.is_nil(res.body:find("127.0.0.1:" .. portal.port, 1, true), res.body)
    -- the operator's log says which installation holds it
    local line = A.wait_log(h, "installation callback refused", 1):match("[^\n]*installation callback refused[^\n]*")
    assert.matches("installed_member_id=localmember", line, 1, true)
    assert.matches("installed_portal=127.0.0.1:" .. portal.port, line, 1, true)
    assert.equals("localmember", A.read_json(h.tokens_file).member_id)
  end)
end)

describe("app.public_base: plain http only for a loopback host", function()
  local app = require "biconnector.app.server"
  it("takes an IPv6 loopback in brackets as loopback (host_of gives it without them)", function()
    assert.equals("http://[::1]:8080", (app.public_base("http://[::1]:8080/")))
    assert.equals("http://127.0.0.1:8080/bi", (app.public_base("http://127.0.0.1:8080/bi")))
    assert.equals("http://localhost", (app.public_base("http://localhost")))
    local none, err = app.public_base("http://[2001:db8::1]:8080")
    assert.is_nil(none)
    assert.matches("--public-url must be https://", err, 1, true)
    assert.equals("https://[2001:db8::1]:8443", (app.public_base("https://[2001:db8::1]:8443")))
  end)
end)
