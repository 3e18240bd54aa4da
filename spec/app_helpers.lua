-- Helpers for the `serve --app` specs: a test certificate (openssl), a SQLite
-- shop, `biconnector serve ... --app` over HTTPS with its token store, HTTPS
-- requests through core.http, and waiting for what the server logs.
local S = require "serve_helpers"
local helpers = require "helpers"
local http = require("biconnector.core").http

local A = {}

local sh, popen = helpers.sh, io.popen
A.sh = sh

function A.tmpdir() return helpers.tmpdir("app") end

-- A self-signed certificate for localhost and 127.0.0.1 -> cert, key paths
function A.certificate(dir, name, cn)
  name = name or "server"
  local cert, key = dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
  assert(sh(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 2 -subj /CN=%s"
    .. " -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null"):format(key, cert, cn or "localhost")),
    "openssl could not make a test certificate")
  return cert, key
end

-- The certificate a TLS server presents, as openssl prints its SHA-256 fingerprint.
function A.fingerprint_of_file(cert)
  local p = popen("openssl x509 -noout -fingerprint -sha256 -in " .. cert .. " 2>/dev/null")
  local line = p:read("*l") or ""
  p:close()
  return line:match("=(.*)$")
end

function A.fingerprint_served(port, extra)
  local p = popen(("echo | openssl s_client -connect 127.0.0.1:%d %s 2>/dev/null | openssl x509 -noout -fingerprint -sha256 2>/dev/null")
    :format(port, extra or ""))
  local line = p:read("*l") or ""
  p:close()
  return line:match("=(.*)$")
end

-- A SQLite shop with two tables.
function A.shop(dir)
  local db = dir .. "/shop.db"
  assert(sh(("sqlite3 %s \"create table orders(id integer primary key, amount real, note text);"
    .. " insert into orders values (1, 10.5, 'first'), (2, 20, 'second'), (3, 7.25, null);"
    .. " create table customers(id integer primary key, name text); insert into customers values (1, 'Ann');\""):format(db)))
  return db
end

-- Starts `serve sqlite://DB --app ...` on 127.0.0.1:PORT over HTTPS.
-- opts: dir, db, portal (portal.control), port, cert, key, extra args, env overrides.
function A.serve(opts)
  local port = opts.port or helpers.free_port()
  local public = "https://localhost:" .. port
  local args = { opts.target or ("sqlite://" .. opts.db), "--listen", "127.0.0.1:" .. port, "--workers", tostring(opts.workers or 1),
    "--tls-cert", opts.cert, "--tls-key", opts.key, "--app", "--public-url", public }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local env = { BICONNECTOR_TOKEN = "db-token-123", BITRIX24_TOKENS_FILE = opts.dir .. "/tokens.json",
    BITRIX24_CLIENT_ID = "local.test.app", BITRIX24_CLIENT_SECRET = "appsecret",
    BITRIX24_OAUTH_URL = opts.portal and opts.portal.oauth_url or nil, BICONNECTOR_APP_RETRY = "0.2,1,4" }
  for k, v in pairs(opts.env or {}) do if v == false then env[k] = nil else env[k] = v end end
  local h = S.start(S.serve_command(args), env)
  h.public, h.tokens_file = public, env.BITRIX24_TOKENS_FILE
  h.install_url, h.event_url = public .. (opts.prefix or "") .. "/app/install", public .. (opts.prefix or "") .. "/app/event"
  return h
end

-- An HTTPS (or HTTP) request through libcurl, trusting the test certificate.
function A.request(url, method, body, headers, ca_file)
  local c = http.new()
  local res, err = c:request({ url = url, method = method or "GET", body = body, headers = headers, ca_file = ca_file,
    timeout = 15 })
  c:close()
  assert(res, err and tostring(err))
  return res
end

function A.post_form(url, body, ca_file)
  return A.request(url, "POST", body, { ["Content-Type"] = "application/x-www-form-urlencoded" }, ca_file)
end

-- Waits until the server's stderr holds `count` lines matching `pattern`
-- (plain text); returns the stderr. Fails after `seconds`.
function A.wait_log(h, pattern, count, seconds)
  local text
  if helpers.poll(function()
    text = S.stderr(h)
    return A.count(text, pattern) >= (count or 1)
  end, seconds or 20, 0.05) then return text end
  error(("timed out waiting for %d line(s) matching %q in the server's log:\n%s"):format(count or 1, pattern, text))
end

function A.count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

function A.read_json(path)
  local text = S.read_file(path)
  if not text or text == "" then return nil end
  return require("cjson").decode(text)
end

function A.mode(path)
  local p = popen("stat -c %a " .. path .. " 2>/dev/null")
  local m = p:read("*l")
  p:close()
  return m
end

-- The objects of the local portal, counted.
function A.objects(portal)
  local st = portal:stats().state
  local function n(t) local k = 0 for _ in pairs(t or {}) do k = k + 1 end return k end
  return { connectors = n(st.connectors), sources = n(st.sources), tables = n(st.tables), state = st }
end

function A.rm(dir) if dir and dir:match("^/tmp/bic%-app%-") then os.execute("rm -rf " .. dir) end end

-- What the `serve --app` specs start with: a directory, a test certificate,
-- the shop, and the local portal trusting the certificate with its rate
-- limits out of the way: -> {dir, cert, key, db, portal, stop = function},
-- then the same dir, cert, key, db and portal.
function A.world()
  local w = { dir = A.tmpdir() }
  function w.stop()
    if w.portal then w.portal:stop() end
    A.rm(w.dir)
  end
  local ok, err = pcall(function()
    w.cert, w.key = A.certificate(w.dir)
    w.db = A.shop(w.dir)
    w.portal = require("portal.control").start({ rate = 1000, burst = 1000, ca_file = w.cert })
  end)
  if not ok then w.stop() error(err, 0) end
  return w, w.dir, w.cert, w.key, w.db, w.portal
end

-- A.world for the enclosing describe: made in its setup (handed to
-- take(dir, cert, key, db, portal), which keeps them in the spec's
-- locals), stopped in its teardown; before each test (unless fresh == false)
-- the portal reset and the token file removed, so that every test starts
-- from an empty portal and no installation.
function A.world_hooks(take, fresh)
  local busted = require "busted" -- (setup and the others live in the spec files' environment)
  local w
  busted.setup(function()
    w = A.world()
    take(w.dir, w.cert, w.key, w.db, w.portal)
  end)
  busted.teardown(function() if w then w.stop() end end)
  if fresh == false then return end
  busted.before_each(function()
    w.portal:reset({ rate = 1000, burst = 1000, ca_file = w.cert })
    os.remove(w.dir .. "/tokens.json")
  end)
end

-- `biconnector ARGS` (a command line's text) on the token file in dir, as an
-- operator runs it, bounded to 20 s; with_credentials: the application's
-- client_id/client_secret in the environment too. -> exit code, output
function A.cli(dir, args, with_credentials)
  local cmd = ("BITRIX24_TOKENS_FILE=%s %stimeout 20 %s bin/biconnector %s 2>&1; echo \"rc=$?\"")
    :format(S.shell_quote(dir .. "/tokens.json"),
      with_credentials and "BITRIX24_CLIENT_ID=local.test.app BITRIX24_CLIENT_SECRET=appsecret " or "",
      helpers.runtime, args)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("rc=(%d+)%s*$")), out
end

return A
