-- `biconnector login`: obtains a first token pair through OAuth's
-- authorization code (b24restdocs settings/oauth/index.md) for the
-- application `serve --app` is, when the installation's tokens are lost or
-- never arrived. It prints the portal's /oauth/authorize/ link; the portal
-- sends the browser to the application's handler path with a code (valid 30
-- seconds), which is exchanged at once and the tokens stored. The code is
-- received by the running server's /app/install (the default: login waits
-- until the server stored the tokens) or by a one-shot listener (--listen).
local core = require "biconnector.core"
local app = require "biconnector.app.server"
local tokens = require "biconnector.rest.tokens"
local form = require "biconnector.form"
local rest = require "biconnector.rest.client"
local serve = require "biconnector.host.serve"

local server, process = core.server, core.process
local format = string.format

local _M = {}

_M.USAGE = [[
Usage: biconnector login [--portal NAME] [--listen HOST:PORT] [--timeout SECONDS]
                         [--client-id-file FILE] [--client-secret-file FILE]
                         [--tls-cert FILE --tls-key FILE]

Obtains a first token pair for the application `biconnector serve ... --app` is
(docs/app.md): prints the portal's /oauth/authorize/ link to open as the user the
application acts for; the portal sends the browser to the application's handler
path with a code, which is exchanged at once and the tokens stored.

  (default)            the running `serve --app` receives the code at PREFIX/app/install
                       (the handler path of the application's form); login waits until the
                       server stored the tokens
  --listen HOST:PORT   receive the code here instead, once (the application's handler path
                       must then be this address, e.g. http://localhost:8099/); the tokens
                       are stored, and `serve --app` registers at its next start or SIGHUP
  --tls-cert FILE, --tls-key FILE  serve that one-shot listener over HTTPS
  --portal NAME        the portal (default: the one the token store names)
  --timeout SECONDS    how long to wait for the portal (default 300)
  --client-id-file FILE, --client-secret-file FILE  instead of BITRIX24_CLIENT_ID/_SECRET

Environment: BITRIX24_TOKENS_FILE or BITRIX24_TOKENS_REDIS with BITRIX24_TOKENS_KEY
(the token store the server uses), BITRIX24_CLIENT_ID, BITRIX24_CLIENT_SECRET, BITRIX24_OAUTH_URL,
BITRIX24_CA_FILE. Exit code: 0 logged in, 1 failed or timed out, 2 usage.
]]

local VALUES = { ["--portal"] = "portal", ["--listen"] = "listen", ["--timeout"] = "timeout",
  ["--client-id-file"] = "client_id_file", ["--client-secret-file"] = "client_secret_file",
  ["--tls-cert"] = "tls_cert_file", ["--tls-key"] = "tls_key_file" }

function _M.parse_args(args)
  local o = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if name == "-h" or name == "--help" then
      o.help = true
    elseif VALUES[name] then
      local v = inline
      if v == nil then i = i + 1; v = args[i] end
      if v == nil or v == "" then return nil, name .. " needs a value" end
      o[VALUES[name]] = v
    else
      return nil, format("unknown argument '%s'", a)
    end
    i = i + 1
  end
  if o.timeout then
    local t = tonumber(o.timeout)
    if not t or t <= 0 then return nil, "--timeout expects a number of seconds above 0" end
    o.timeout = t
  end
  if o.listen then
    local host, port = serve.parse_listen(o.listen)
    if not host then return nil, port end
    o.host, o.port = host, port
  end
  if (o.tls_cert_file == nil) ~= (o.tls_key_file == nil) then return nil, "--tls-cert and --tls-key go together" end
  if o.tls_cert_file and not o.listen then return nil, "--tls-cert applies with --listen" end
  return o
end

local PAGE = "<!doctype html><meta charset=\"utf-8\"><title>biconnector login</title><p>%s</p>"

-- The one-shot listener: answers the redirect that carries the code, exchanges
-- it, and stops. -> stored state | nil, message
-- Opens the --listen server before the link is printed (a certificate that
-- does not load, a port taken: said at once, not after the user has clicked).
-- -> wait(deadline) -> the stored tokens | nil, message; or nil, message
local function listen_once(o, cfg, id, secret, state_value)
  local result, failure
  local tls, terr
  if o.tls_cert_file then
    tls, terr = serve.read_tls(o)
    if not tls then return nil, terr end
  end
  local srv, err
  srv, err = server.new({ host = o.host, port = o.port, tls_cert = tls and tls.cert, tls_key = tls and tls.key,
    handler = function(req)
      local q = req.query or {}
      if not q.code then return 404, { ["Content-Type"] = "text/html; charset=utf-8" }, format(PAGE, "Waiting for the portal's redirect.") end
      local page
      if type(q.state) ~= "string" or q.state ~= state_value then
        page = "This is not the authorization biconnector login asked for (its state differs)."
      else
        local data, xerr = app.exchange_code(cfg, id, secret, q.code)
        if data then data, xerr = app.store_exchange(cfg, data, state_value) end
        if data then result = data else failure = xerr end
        page = data and "Logged in: the tokens are stored. You can close this page."
          or "The login failed; biconnector login says why."
        srv:stop()
      end
      return 200, { ["Content-Type"] = "text/html; charset=utf-8", ["Cache-Control"] = "no-store" }, format(PAGE, page)
    end })
  if not srv then return nil, "--listen: " .. tostring(err) end
  return function(deadline)
    io.stdout:write(format("Waiting for the redirect on %s://%s:%d/ ...\n", tls and "https" or "http", o.host, srv:port()))
    io.stdout:flush()
    repeat
      local reason = srv:run(1)
    until result or failure or reason == "stopped" or reason == "TERM" or reason == "INT" or process.clock() > deadline
    srv:close()
    if result then return result end
    return nil, failure or "no authorization arrived in time"
  end
end

-- The default: the server's helper stores the tokens (or the error) in the store.
local function wait_for_server(cfg, state_value, started, deadline)
  while process.clock() <= deadline do
    local cur = cfg.store:get()
    if type(cur) == "table" then
      if type(cur.login) == "table" and cur.login.state == state_value and cur.login.error then
        return nil, cur.login.error
      end
      if cur.login == nil and (tonumber(cur.obtained_at) or 0) >= started and app.installed(cur) then return cur end
    end
    process.sleep(0.5)
  end
  return nil, "no authorization reached the server in time (is `biconnector serve ... --app` running, and is its"
    .. " /app/install the application's handler path?)"
end

function _M.main(args, out, err, getenv)
  out, err = out or io.stdout, err or io.stderr
  getenv = getenv or os.getenv
  local o, perr = _M.parse_args(args or {})
  if not o then
    err:write("biconnector login: ", perr, "\n(see biconnector login --help)\n")
    return 2
  end
  if o.help then out:write(_M.USAGE) return 0 end
  local store, what = tokens.from_env(getenv)
  if not store then
    err:write("biconnector login: ", what or "set BITRIX24_TOKENS_FILE (or BITRIX24_TOKENS_REDIS): the token store the server uses", "\n")
    return 2
  end
  local oauth_url, oerr = rest.oauth_url(getenv("BITRIX24_OAUTH_URL"), "BITRIX24_OAUTH_URL")
  if not oauth_url then err:write("biconnector login: ", oerr, "\n") return 2 end
  local ca_file, caerr = app.ca_file(getenv)
  if caerr then err:write("biconnector login: ", caerr, "\n") return 2 end
  local cfg = { store = store, getenv = getenv, client_id_file = o.client_id_file, client_secret_file = o.client_secret_file,
    oauth_url = oauth_url, ca_file = ca_file }
  local id, secret, cerr = app.credentials(cfg)
  if cerr then err:write("biconnector login: ", cerr, "\n") return 2 end
  if not id or (o.listen and not secret) then
    err:write("biconnector login: give the application's client_id", o.listen and " and client_secret" or "",
      " (BITRIX24_CLIENT_ID", o.listen and ", BITRIX24_CLIENT_SECRET" or "", ", or the --client-*-file options)\n")
    return 2
  end
  local held = store:get()
  held = type(held) == "table" and held or {}
  local given = o.portal or held.portal
  local portal = app.portal_name(given)
  if not portal then
    err:write("biconnector login: name the portal with --portal example.bitrix24.com", given and (" (got " .. tostring(given) .. ")") or "", "\n")
    return 2
  end
  cfg.portal = portal
  local scheme = tostring(o.portal or ""):match("^(https?)://") or "https"
  local timeout = o.timeout or app.LOGIN_SECONDS
  local state_value = app.random_hex(16)
  local wait_listen
  if o.listen then
    local lerr
    wait_listen, lerr = listen_once(o, cfg, id, secret, state_value)
    if not wait_listen then err:write("biconnector login: ", tostring(lerr), "\n") return 1 end
  end
  local started = os.time()
  local ok, uerr = app.update(store, function(current)
    current.login = { state = state_value, expires_at = started + timeout }
    return current
  end)
  if not ok then err:write("biconnector login: ", uerr, "\n") return 1 end
  local link = format("%s://%s/oauth/authorize/?%s", scheme, portal, form.encode({ client_id = id, state = state_value }))
  out:write("Open this link in a browser, logged in to ", portal, " as the user the application acts for:\n  ", link, "\n")
  out:flush()
  local deadline = process.clock() + timeout
  local result, ferr
  if o.listen then
    result, ferr = wait_listen(deadline)
  else
    result, ferr = wait_for_server(cfg, state_value, started, deadline)
  end
  if not result then
    app.update(store, function(current) -- the pending login goes, if it is still ours
      if not (type(current.login) == "table" and current.login.state == state_value) then return nil end
      current.login = nil
      return current
    end)
    err:write("biconnector login: ", tostring(ferr), "\n")
    return 1
  end
  out:write(format("Logged in to %s (member_id %s); the tokens are in the token store (%s).\n",
    tostring(result.portal), tostring(result.member_id), what))
  if o.listen then out:write("A running `biconnector serve ... --app` registers with them after SIGHUP (or its next start).\n") end
  return 0
end

return _M
