-- biconnector.app.server: `biconnector serve TARGET --app` makes the server the
-- Bitrix24 local application that owns the connector (docs/app.md).
--
-- Paths (under --prefix): POST /app/install takes the installation callback
-- (form-encoded, PHP brackets: auth[access_token], auth[member_id], ...),
-- stores its tokens in the token store (BITRIX24_TOKENS_FILE or
-- BITRIX24_TOKENS_REDIS) and answers 200 at once; GET /app/install tells
-- whether the application is installed (and takes the `code` of
-- `biconnector login`, the handler path being the OAuth redirect); POST
-- /app/event takes ONAPPUNINSTALL (or ONAPPSUNINSTALL, as b24restdocs spells it
-- once), guarded by the stored application_token; so does /app/install.
-- The REST work (connector, source, tables, event.bind) runs in a helper
-- process (biconnector.app.job) spawned after the answer, so the worker that
-- serves Bitrix24's /check during source.add is never the one waiting for it.
local core = require "biconnector.core"
local json = require "biconnector.json"
local form = require "biconnector.form"
local tokens = require "biconnector.rest.tokens"
local rest = require "biconnector.rest.client"
local logline = require "biconnector.host.logline"
local address = require "biconnector.host.address"

local process, http = core.process, core.http
local type, pairs, ipairs, tostring, tonumber, pcall = type, pairs, ipairs, tostring, tonumber, pcall
local format, concat = string.format, table.concat

local _M = {}

_M.INSTALL, _M.EVENT = "/app/install", "/app/event"
-- What an installation callback or event may hold: its body, one auth value
-- (auth[scope] lists scopes and may be longer), form variables.
_M.LIMITS = { body = 65536, value = 1024, scope = 4096, vars = 200 }
-- The helper's retry schedule: first delay, longest delay (seconds), attempts.
-- BICONNECTOR_APP_RETRY="FIRST,MAX,ATTEMPTS" changes it (the specs shorten it).
_M.RETRY = { first = 5, max = 300, attempts = 10 }
-- How long `biconnector login` waits for the portal's redirect by default.
_M.LOGIN_SECONDS = 300

local REQUIRED = { "access_token", "refresh_token", "domain", "client_endpoint", "member_id", "application_token" }
-- Values that go into URLs, logs and comparisons: tokens and ids are plain words.
local WORDS = { access_token = true, refresh_token = true, member_id = true, application_token = true }

---------------------------------------------------------------- small pieces

local function trim(s) return (tostring(s):gsub("^%s+", ""):gsub("%s+$", "")) end

local function is_loopback(host)
  host = tostring(host)
  -- host_of gives an IPv6 address without its brackets: back in a URL it needs them
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  local reason = address.local_reason("http://" .. host .. "/")
  return reason == "a loopback address" or reason == "a loopback name"
end

-- A portal as --portal or `login --portal` gives it: "example.bitrix24.com",
-- also with https:// or a trailing slash -> "example.bitrix24.com" | nil
function _M.portal_name(text)
  if type(text) ~= "string" then return nil end
  local name = trim(text):gsub("^%a[%w+.-]*://", ""):gsub("/.*$", ""):gsub("%.$", ""):lower()
  if not name:match("^[%w%-]+[%w.%-]*$") and not name:match("^[%w%-]+[%w.%-]*:%d+$") then return nil end
  return name
end

-- A portal's name without the port its scheme implies: "portal:443" (https) is "portal".
local function without_default_port(name, scheme)
  return (name:gsub(scheme == "http" and ":80$" or ":443$", ""))
end

-- --public-url: https://HOST[:PORT][/PATH] (plain http only for a loopback host,
-- to try it on one machine: Bitrix24 itself calls https). -> base without
-- a trailing slash | nil, message
function _M.public_base(url)
  if type(url) ~= "string" or url == "" then return nil, "--public-url needs a value" end
  local scheme, host = url:match("^(https?)://([^/?#]+)")
  if not scheme or url:find("[?#%s]") then
    return nil, format("--public-url expects https://HOST[:PORT][/PATH] (no query), got '%s'", url)
  end
  if scheme == "http" and not is_loopback(address.host_of(url)) then
    return nil, format("--public-url must be https:// (Bitrix24 calls the application and the connector over HTTPS), got '%s'", url)
  end
  return (url:gsub("/+$", "")), host
end

-- Constant-time enough: digests of both are compared, not the strings.
local function same_secret(a, b)
  return type(a) == "string" and type(b) == "string" and core.sha256(a) == core.sha256(b)
end
_M.same_secret = same_secret

local function installed(state)
  return type(state) == "table" and type(state.access_token) == "string" and type(state.member_id) == "string"
end
_M.installed = installed

local function html(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(n)
  if f then f:close() end
  if not bytes or #bytes < n then error("cannot read /dev/urandom", 0) end
  return (bytes:gsub(".", function(c) return format("%02x", c:byte()) end))
end
_M.random_hex = random_hex

-- A credential file: its text; nil when it is absent or empty (not given yet:
-- the form shows the credentials only after the installation); nil, message
-- when it cannot be read.
local function read_secret_file(path, what)
  local f, err, errno = io.open(path, "rb")
  if not f then
    if errno == 2 then return nil end
    return nil, format("%s: %s", what, tostring(err))
  end
  local text, rerr = f:read("*a")
  f:close()
  if not text then return nil, format("%s: %s: %s", what, path, tostring(rerr)) end
  text = trim(text)
  if text == "" then return nil end
  return text
end

---------------------------------------------------------------- configuration

-- BITRIX24_CA_FILE: a CA for the portal and the OAuth server. Empty is none (a
-- unit's environment file may say BITRIX24_CA_FILE=); a file that cannot be read
-- is said at start, not by every registration attempt. -> path | nil | nil, message
function _M.ca_file(getenv)
  local path = (getenv or os.getenv)("BITRIX24_CA_FILE")
  if path == nil or path == "" then return nil end
  local f, err = io.open(path, "rb")
  if not f then
    local why = tostring(err)
    if why:sub(1, #path + 2) == path .. ": " then why = why:sub(#path + 3) end -- (io.open names the path too)
    return nil, format("BITRIX24_CA_FILE %s cannot be read: %s", path, why)
  end
  f:close()
  return path
end

-- The application's settings from serve's options and the environment:
-- -> cfg | nil, message. The client secret is not read here (credentials()).
function _M.config(o, getenv)
  getenv = getenv or os.getenv
  local base, err = _M.public_base(o.public_url)
  if not base then return nil, err end
  local store, what = tokens.from_env(getenv)
  if not store then
    return nil, what or ("--app keeps the application's tokens in a token store shared with its helper processes:"
      .. " set BITRIX24_TOKENS_FILE=/var/lib/biconnector/tokens.json (mode 0600), or BITRIX24_TOKENS_REDIS=redis://HOST:6379")
  end
  local portal
  if o.portal then
    portal = _M.portal_name(o.portal)
    if not portal then return nil, format("--portal expects a portal's name (example.bitrix24.com), got '%s'", tostring(o.portal)) end
  end
  local retry = { first = _M.RETRY.first, max = _M.RETRY.max, attempts = _M.RETRY.attempts }
  local r = getenv("BICONNECTOR_APP_RETRY")
  if r and r ~= "" then
    local a, b, c = r:match("^%s*([%d.]+)%s*,%s*([%d.]+)%s*,%s*(%d+)%s*$")
    if not a then return nil, "BICONNECTOR_APP_RETRY expects FIRST,MAX,ATTEMPTS (seconds, seconds, a count), got " .. r end
    retry = { first = tonumber(a), max = tonumber(b), attempts = tonumber(c) }
  end
  local oauth_url, oerr = rest.oauth_url(getenv("BITRIX24_OAUTH_URL"), "BITRIX24_OAUTH_URL")
  if not oauth_url then return nil, oerr end
  local oauth_url_given = (getenv("BITRIX24_OAUTH_URL") or "") ~= ""
  local ca_file, cerr = _M.ca_file(getenv)
  if cerr then return nil, cerr end
  local prefix = o.prefix or ""
  local at = base .. address.url_path(prefix) -- the requests' paths come decoded and match prefix as given
  return {
    public_url = base, prefix = prefix, base_url = at,
    install_url = at .. _M.INSTALL, event_url = at .. _M.EVENT,
    portal = portal, rebind = o.app_rebind and true or false, tables = o.app_tables and true or false,
    uninstall_delete = o.app_uninstall_delete and true or false,
    client_id_file = o.client_id_file, client_secret_file = o.client_secret_file,
    store = store, store_what = what, retry = retry,
    oauth_url = oauth_url, oauth_url_given = oauth_url_given,
    ca_file = ca_file, getenv = getenv,
  }
end

-- Bitrix24's OAuth servers, by the host an installation callback's
-- auth[server_endpoint] names (https://HOST/rest/): the western one and the
-- eastern region's (protocol.md, "OAuth renewal").
local OAUTH_SERVERS = {
  ["oauth.bitrix.info"] = rest.OAUTH_URL,
  ["oauth.bitrix24.tech"] = rest.OAUTH_URL_EAST,
}

-- app.oauth_url_for(cfg, installation) -> the token address an installation's
-- pair renews at: BITRIX24_OAUTH_URL when set; else the OAuth server its
-- callback named (auth[server_endpoint]) when that is one of Bitrix24's, so
-- that an eastern portal's application needs no setting; else the default.
-- The callback is not signed: no other server ever gets the client_secret.
function _M.oauth_url_for(cfg, installation)
  if cfg.oauth_url_given then return cfg.oauth_url end
  local endpoint = type(installation) == "table" and installation.server_endpoint
  local host = type(endpoint) == "string" and endpoint:match("^https://([%w.-]+)/")
  return host and OAUTH_SERVERS[host:lower()] or cfg.oauth_url
end

-- The application's client_id and client_secret: the files named by
-- --client-id-file / --client-secret-file (absent or empty: not given yet),
-- else BITRIX24_CLIENT_ID / BITRIX24_CLIENT_SECRET (never the command line).
-- -> id, secret (either may be nil) | nil, nil, message (a file that cannot be read)
function _M.credentials(cfg)
  local getenv = cfg.getenv or os.getenv
  local id, secret, err
  if cfg.client_id_file then
    id, err = read_secret_file(cfg.client_id_file, "--client-id-file")
    if err then return nil, nil, err end
  else
    id = getenv("BITRIX24_CLIENT_ID")
  end
  if cfg.client_secret_file then
    secret, err = read_secret_file(cfg.client_secret_file, "--client-secret-file")
    if err then return nil, nil, err end
  else
    secret = getenv("BITRIX24_CLIENT_SECRET")
  end
  if id == "" then id = nil end
  if secret == "" then secret = nil end
  return id, secret
end

-- Changes the stored state under the store's lock: fn(state) returns the new
-- state (or nil to leave it). -> what fn returned second, or nil, message.
function _M.update(store, fn)
  local unlock, lerr = store:lock()
  if not unlock then return nil, "cannot lock the token store: " .. tostring(lerr) end
  local read_err
  local ok, new, extra = pcall(function()
    local state, gerr = store:get()
    -- a store that holds something unreadable (or does not answer) is not an
    -- empty one: what fn would write over it would hide the installation
    if state == nil and gerr then read_err = gerr return nil end
    return fn(type(state) == "table" and state or {})
  end)
  local saved, serr = true, nil
  if ok and new ~= nil then saved, serr = store:set(new) end
  unlock()
  if read_err then return nil, "the token store cannot be read: " .. tostring(read_err) end
  if not ok then return nil, tostring(new) end
  if not saved then return nil, "cannot write the token store: " .. tostring(serr) end
  return extra == nil and true or extra
end

---------------------------------------------------------------- checks

-- A JSON body's number as the text a form would carry (3600 -> "3600"); anything else as it is.
local function number_as_text(v)
  if type(v) == "number" and v == v and v > -2^53 and v < 2^53 then
    return v == math.floor(v) and format("%d", v) or format("%.17g", v)
  end
  return v
end

-- The installation callback's fields -> the state to store, or nil, status, reason.
-- Reasons name fields, never their values (tokens travel in them).
function _M.check_install(params, cfg, now)
  if type(params) ~= "table" then return nil, 400, "not an installation callback: no form fields" end
  -- (JSON's null is an absent field: an encoder's way of leaving it out)
  if params.event == json.null then params.event = nil end
  local event = params.event
  if type(event) == "table" or type(event) == "boolean" or event == json.null then
    -- (its text would be a Lua value, "table: 0x...", in the answer)
    return nil, 400, "the installation path takes the ONAPPINSTALL callback: its event is not a single value"
  end
  if event ~= nil and (type(event) ~= "string" or event:upper() ~= "ONAPPINSTALL") then
    return nil, 400, "the installation path takes the ONAPPINSTALL callback, not " .. logline.quote(tostring(event)):sub(1, 64)
  end
  local auth = params.auth
  if type(auth) ~= "table" and (params.AUTH_ID ~= nil or params.REFRESH_ID ~= nil or params.PLACEMENT ~= nil) then
    -- the portal opening the application's page in its frame: an application
    -- with an interface, which waits for BX24.installFinish() and sends no callback
    return nil, 400, "not the installation callback but the portal opening the application's page (AUTH_ID,"
      .. " REFRESH_ID, PLACEMENT): the application was added without \"Application uses API only\"; edit it in"
      .. " the portal (Applications > Developer resources > Integrations), tick that option and save (docs/app.md)"
  end
  if type(auth) ~= "table" then return nil, 400, "not an installation callback: no auth[...] fields" end
  for k, v in pairs(auth) do if v == json.null then auth[k] = nil end end
  for k, v in pairs(auth) do
    -- a JSON body carries numbers as numbers (auth.expires_in: 3600); a form, as text
    v = number_as_text(v)
    auth[k] = v
    -- the field's name as a message may show it (the answer is JSON: no stray bytes)
    local name = tostring(k):sub(1, 40)
    if not name:match("^[%w_%-]*$") then name = "?" end
    if type(v) ~= "string" then return nil, 400, format("auth[%s] is not a single value", name) end
    local limit = k == "scope" and _M.LIMITS.scope or _M.LIMITS.value
    if #v > limit then return nil, 400, format("auth[%s] is longer than %d bytes", name, limit) end
    if v:find("[%c]") then return nil, 400, format("auth[%s] holds a control character", name) end
    -- what is stored must encode as JSON (it failed later, as a 500)
    if not json.encode(v) then return nil, 400, format("auth[%s] is not UTF-8 text", name) end
  end
  local missing = {}
  for _, k in ipairs(REQUIRED) do
    if auth[k] == nil or auth[k] == "" then missing[#missing + 1] = "auth[" .. k .. "]" end
  end
  if #missing > 0 then return nil, 400, "the installation callback lacks " .. concat(missing, ", ") end
  for k in pairs(WORDS) do
    if not auth[k]:match("^[%w%-_.]+$") then return nil, 400, format("auth[%s] is not a token (letters, digits, -_.)", k) end
  end
  local domain = _M.portal_name(auth.domain)
  if not domain or domain ~= trim(auth.domain):lower():gsub("%.$", "") then
    return nil, 400, "auth[domain] is not a portal's name"
  end
  local scheme, host, path = auth.client_endpoint:match("^(https?)://([^/?#]+)(/[^?#]*)$")
  -- the scheme's own port said or not (https://portal:443/rest/ is portal's REST address,
  -- auth[domain] portal:443 is portal)
  if scheme then host = without_default_port(host:lower(), scheme) end
  domain = without_default_port(domain, scheme or "https")
  if not scheme or host ~= domain or not (path == "/rest/" or path == "/rest") then
    return nil, 400, format("auth[client_endpoint] is not https://%s/rest/ (the REST address of auth[domain])", domain)
  end
  if scheme == "http" and not is_loopback(address.host_of(auth.client_endpoint)) then
    return nil, 400, "auth[client_endpoint] is not https: the tokens would travel in clear"
  end
  if auth.server_endpoint ~= nil and not auth.server_endpoint:match("^https?://[^/?#]+/") then
    return nil, 400, "auth[server_endpoint] is not a URL"
  end
  local expires_in = tonumber(auth.expires_in)
  if auth.expires_in ~= nil and (not expires_in or expires_in < 0 or expires_in > 86400 * 366) then
    return nil, 400, "auth[expires_in] is not a number of seconds"
  end
  if cfg.portal and domain ~= without_default_port(cfg.portal, scheme) then
    return nil, 403, format("auth[domain] %s is not the portal this server serves (--portal %s)", domain, cfg.portal)
  end
  now = now or os.time()
  return {
    access_token = auth.access_token, refresh_token = auth.refresh_token, application_token = auth.application_token,
    member_id = auth.member_id, portal = domain, client_endpoint = scheme .. "://" .. host .. "/rest/",
    server_endpoint = auth.server_endpoint, scope = auth.scope, status = auth.status,
    expires_in = expires_in, expires = expires_in and (now + expires_in) or nil, installed_at = now,
  }
end

-- The key of the token store that holds an installation callback for a
-- verified installation until the helper proves its tokens genuine.
_M.PENDING = "pending_install"
-- How long an event carrying a pending callback's application_token waits
-- (seconds) for the helper to prove that callback.
local PENDING_WAIT = 2

-- Stores an installation checked by check_install, atomically under the
-- store's lock: refused (403) when the application is bound to another
-- portal's member_id (unless cfg.rebind). A callback for the member_id of an
-- installation already verified does not replace it: it is kept beside it as
-- state[PENDING] (a second one replaces the first), and the helper verifies
-- it (biconnector.app.job) before its tokens replace the installation's.
-- -> true, "installed" | "pending" | "unchanged" (the installation's own pair
-- again) | nil, status, reason [, fields for the
-- log]. The reason goes to whoever sent the callback: it names neither the
-- installed portal nor its member_id (a callback carrying that member_id
-- replaces an installation not verified yet); the log fields do.
function _M.store_install(cfg, state)
  local refused, how = nil, "installed"
  local ok, err = _M.update(cfg.store, function(current)
    if installed(current) and current.member_id ~= state.member_id and not cfg.rebind then
      refused = { installed_portal = tostring(current.portal), installed_member_id = tostring(current.member_id) }
      return nil
    end
    if installed(current) and current.member_id == state.member_id and current.verified_at then
      if state.refresh_token == current.refresh_token then
        -- the same callback again (a sender's retry): proving it would spend the
        -- installation's own refresh token, and it has nothing new to give
        how = "unchanged"
        return nil
      end
      -- nothing in a callback is signed: a forged one would cost the genuine pair
      current[_M.PENDING] = state
      how = "pending"
      return current
    end
    return state
  end)
  if refused then
    return nil, 403, "this application is installed for another portal; uninstall it there first"
      .. " (or start serve with --app-rebind)", refused
  end
  if not ok then
    -- the store's trouble goes to the log, not to whoever sent the callback
    return nil, 500, tostring(err):match("^[^:]*") .. "; see the server log", { error = err }
  end
  return true, how
end

---------------------------------------------------------------- the OAuth code

-- Exchanges an authorization code at the OAuth server (30 seconds to live:
-- one attempt, repeated only when it surely never left). -> the answer (a
-- table with access_token, refresh_token, member_id, client_endpoint, ...) |
-- nil, message (secrets masked)
function _M.exchange_code(cfg, client_id, client_secret, code)
  local q = form.encode({ grant_type = "authorization_code", client_id = client_id,
    client_secret = client_secret, code = code })
  local url = cfg.oauth_url .. (cfg.oauth_url:find("?", 1, true) and "&" or "?") .. q
  local function mask(s)
    s = tostring(s)
    for _, secret in ipairs({ client_secret, code, form.encode({ x = client_secret }):sub(3), form.encode({ x = code }):sub(3) }) do
      if #secret >= 4 then s = s:gsub(secret:gsub("[%p]", "%%%0"), "***") end
    end
    return s
  end
  local handle = assert(http.new())
  local res, terr
  for _ = 1, 3 do
    res, terr = handle:request({ url = url, headers = { Accept = "application/json" }, timeout = 30,
      ca_file = cfg.ca_file, user_agent = rest.USER_AGENT })
    if res or not (type(terr) == "table" and terr.not_sent) then break end
    http.sleep(0.5)
  end
  handle:close()
  if not res then return nil, mask("the OAuth server did not answer: " .. tostring(type(terr) == "table" and terr.message or terr)) end
  local data = json.decode(res.body)
  if type(data) ~= "table" or data.error or type(data.access_token) ~= "string" or type(data.refresh_token) ~= "string" then
    local why = type(data) == "table" and (data.error_description or data.error) or res.body:sub(1, 120)
    return nil, mask(format("the OAuth server refused the code (HTTP %d): %s", res.status, tostring(why)))
  end
  return data
end

-- Stores what the OAuth server answered for a code (it is authoritative:
-- verified). The installation's application_token stays when the portal is
-- the same. -> the stored state | nil, message
function _M.store_exchange(cfg, data, state_value)
  local endpoint = type(data.client_endpoint) == "string" and data.client_endpoint or ""
  local host = address.host_of(endpoint)
  local hostport = endpoint:match("^https?://([^/?#]+)")
  if not host or type(data.member_id) ~= "string" then
    return nil, "the OAuth server's answer lacks client_endpoint or member_id"
  end
  local portal = without_default_port(hostport:lower(), endpoint:match("^(https?)://"))
  if cfg.portal and portal ~= without_default_port(cfg.portal, endpoint:match("^(https?)://")) then
    return nil, format("the authorization is for %s, not the portal this server serves (--portal %s)", portal, cfg.portal)
  end
  local now = os.time()
  local new
  local ok, err = _M.update(cfg.store, function(current)
    if state_value and not (type(current.login) == "table" and current.login.state == state_value) then
      error("no login is pending for this state (it was used, or `biconnector login` started another)", 0)
    end
    if installed(current) and current.member_id ~= data.member_id and not cfg.rebind then
      error(format("this application is installed for another portal (%s); uninstall it there first (or --app-rebind)",
        tostring(current.portal)), 0)
    end
    new = {}
    for k, v in pairs(data) do new[k] = v end
    new.domain = nil -- the OAuth server's own name, not the portal's
    new.portal, new.obtained_at, new.verified_at = portal, now, now
    new.expires = tonumber(data.expires_in) and (now + tonumber(data.expires_in)) or data.expires
    if current.member_id == data.member_id then
      new.application_token, new.installed_at = current.application_token, current.installed_at
    end
    return new
  end)
  if not ok then return nil, err end
  return new
end

---------------------------------------------------------------- the application in `serve`

local App = {}
App.__index = App

-- app.new(o, log) -> app | nil, message. o: serve's options (after the
-- connector loaded: o.token is the database's); log(level, message, fields).
function _M.new(o, log)
  local cfg, err = _M.config(o)
  if not cfg then return nil, err end
  local id, _, cerr = _M.credentials(cfg)
  if cerr then return nil, cerr end
  if type(cfg.store.path) == "string" then
    -- a token file whose directory is missing would refuse the installation
    -- callback (500) after the form is saved: said at start instead
    local unlock, lerr = cfg.store:lock()
    if not unlock then
      return nil, format("BITRIX24_TOKENS_FILE %s cannot be used: %s (its directory must exist and be writable by this user)",
        cfg.store.path, tostring(lerr))
    end
    unlock()
  end
  local self = setmetatable({ o = o, cfg = cfg, log = log, helpers = {}, paths = {}, client_id = id }, App)
  -- with one trailing slash too: a handler path pasted into the portal's form may carry it
  -- (no other path changes)
  for path, which in pairs({ [_M.INSTALL] = "install", [_M.EVENT] = "event" }) do
    self.paths[cfg.prefix .. path] = which
    self.paths[cfg.prefix .. path .. "/"] = which
  end
  return self
end

-- What the banner prints: the form's fields and where each URL goes.
function App:banner()
  local cfg = self.cfg
  local id, secret = _M.credentials(cfg)
  local lines = {
    "Bitrix24 application (--app): in the portal open Applications > Developer resources > Other >",
    "Local application, tick \"Application uses API only\" and the permission BI Builder (biconnector), and fill in:",
    format("  %-28s %s", "Your handler path", cfg.install_url),
    format("  %-28s %s", "Initial installation path", cfg.install_url),
    "Save: the portal installs the application at once; this server then registers the connector,",
    "its source" .. (cfg.tables and " and a table for every served table" or "") .. " (events: " .. cfg.event_url .. ").",
    format("Tokens: %s%s", cfg.store_what, cfg.portal and (" (portal " .. cfg.portal .. " only)") or
      " (any portal: --portal NAME binds it to yours)"),
  }
  if not (id and secret) then
    lines[#lines + 1] = "client_id/client_secret: not set yet. The form shows them after saving: write them into the"
    lines[#lines + 1] = "  --client-id-file/--client-secret-file files and send SIGHUP (or set BITRIX24_CLIENT_ID and"
    lines[#lines + 1] = "  BITRIX24_CLIENT_SECRET and restart); the tokens are renewed with them after the first hour."
  end
  local state = cfg.store:get()
  if installed(state) then
    lines[#lines + 1] = format("Installed for %s since %s: registering again (it changes nothing already right).",
      tostring(state.portal), os.date("!%Y-%m-%d %H:%M UTC", tonumber(state.installed_at or state.obtained_at) or 0))
  end
  return lines
end

-- The job a helper process runs: what it needs to load the connector and the
-- application's settings again (secrets stay in the environment and files).
function App:job(kind, extra)
  local o = self.o
  local job = { kind = kind, o = {
    file = o.file, tables = o.tables, token_file = o.token_file, pool_size = o.pool_size, pool_wait = o.pool_wait,
    answer_timeout = o.answer_timeout, public_url = o.public_url, prefix = o.prefix, portal = o.portal,
    app_tables = o.app_tables, app_rebind = o.app_rebind, client_id_file = o.client_id_file,
    client_secret_file = o.client_secret_file, source_settings = o.source_settings,
  } }
  for k, v in pairs(extra or {}) do job[k] = v end
  return job
end

-- The Lua interpreter running us (the first word of the command line that ran
-- this script), to run a helper with the same runtime.
local function interpreter()
  local a = rawget(_G, "arg")
  if type(a) == "table" then
    local i = 0
    while a[i - 1] ~= nil do i = i - 1 end
    if i < 0 and type(a[i]) == "string" then return a[i] end
  end
  return rawget(_G, "jit") and "luajit" or "lua5.4"
end

-- Starts a helper process for a job (biconnector.app.job), after the answer
-- that asked for it went out. It dies with this process (PR_SET_PDEATHSIG):
-- what it did not finish is done again at the next start or SIGHUP.
function App:spawn(kind, extra)
  local boot = format("package.path=%q package.cpath=%q os.exit(require('biconnector.app.job').main())",
    package.path, package.cpath)
  local text = assert(json.encode(self:job(kind, extra)))
  local pid, err = process.spawn({ interpreter(), "-e", boot }, { stdin = text, death_signal = "TERM" })
  if not pid then
    self.log("error", "cannot start the application's helper", { job = kind, error = err })
    return nil
  end
  self.helpers[pid] = kind
  self.log("info", "application helper started", { job = kind, pid = pid })
  return pid
end

-- Reaps helpers that ended (serve calls it between requests).
function App:tick()
  for pid, kind in pairs(self.helpers) do
    local done, how, code = process.wait(pid, false)
    if done or how then -- ended, or not our child (inherited over a fork): forget it
      self.helpers[pid] = nil
      if done and not (how == "exit" and code == 0) then
        self.log("warn", "application helper ended", { job = kind, pid = pid, [how] = code })
      end
    end
  end
end

-- SIGHUP: the credential files again, and the registration again (a renewed
-- client secret, a changed --public-url after a restart, tables added).
function App:reload(spawn)
  local id, _, err = _M.credentials(self.cfg)
  if err then self.log("error", "reload: " .. err) else self.client_id = id end
  if spawn and installed(self.cfg.store:get()) then self:spawn("register") end
end

-- Registration at start, when the store already holds an installation.
function App:start()
  local state, err = self.cfg.store:get()
  if state == nil and err then self.log("error", "the token store cannot be read", { error = err }) end
  if installed(state) then return self:spawn("register") end
end

local JSON_TYPE = { ["Content-Type"] = "application/json; charset=utf-8", ["Cache-Control"] = "no-store" }
local HTML_TYPE = { ["Content-Type"] = "text/html; charset=utf-8", ["Cache-Control"] = "no-store",
  ["Content-Security-Policy"] = "default-src 'none'", ["X-Frame-Options"] = "DENY" }

local function answer(status, value)
  return status, JSON_TYPE, assert(json.encode(value))
end

local function refusal(status, message)
  local code = status == 403 and "forbidden" or status == 413 and "payload_too_large"
    or status == 405 and "method_not_allowed" or status >= 500 and "internal_error" or "bad_request"
  return answer(status, { error = code, message = message })
end

-- The fields of an /app body: form-encoded (as Bitrix24 sends) or JSON.
local function body_fields(req)
  local body = req.body or ""
  if #body > _M.LIMITS.body then return nil, 413, format("the body is longer than %d bytes", _M.LIMITS.body) end
  local ctype = (req.headers and req.headers["content-type"] or ""):lower()
  local value, err
  if ctype:find("json", 1, true) then
    value, err = json.decode(body)
  else
    value, err = form.decode(body, { max_vars = _M.LIMITS.vars, max_depth = 4 })
  end
  if type(value) ~= "table" then
    return nil, 400, "the body is neither a form nor a JSON object" .. (err and (": " .. tostring(err)) or "")
  end
  return value
end

function App:page(state)
  local rows = {}
  if installed(state) then
    rows[#rows + 1] = format("<p>Installed for the portal <b>%s</b> (since %s).</p>", html(state.portal or "?"),
      html(os.date("!%Y-%m-%d %H:%M UTC", tonumber(state.installed_at or state.obtained_at) or 0)))
    local r = state.registration
    if type(r) == "table" then
      rows[#rows + 1] = r.ok and format("<p>Registered at %s: connector %s, source %s, %s table(s).</p>",
        html(os.date("!%Y-%m-%d %H:%M UTC", tonumber(r.at) or 0)), html(r.connector or "-"), html(r.source or "-"),
        html(r.tables or 0))
        or format("<p>The last registration failed at %s (the server log says why).</p>",
          html(os.date("!%Y-%m-%d %H:%M UTC", tonumber(r.at) or 0)))
    else
      rows[#rows + 1] = "<p>Registration in progress.</p>"
    end
    if type(state[_M.PENDING]) == "table" then
      rows[#rows + 1] = "<p>A new installation callback is being verified.</p>"
    end
  elseif state.uninstalled_at then
    rows[#rows + 1] = format("<p>Not installed: uninstalled from <b>%s</b> at %s.</p>", html(state.portal or "?"),
      html(os.date("!%Y-%m-%d %H:%M UTC", tonumber(state.uninstalled_at) or 0)))
  else
    rows[#rows + 1] = "<p>Not installed. Add it in the portal as a local application with this page's"
      .. " address as its handler path and initial installation path.</p>"
  end
  return "<!doctype html><meta charset=\"utf-8\"><title>biconnector application</title>"
    .. "<h1>biconnector application</h1>" .. concat(rows)
end

-- GET /app/install?code=...&state=...: the portal's OAuth redirect after
-- `biconnector login`. The code is exchanged by a helper at once.
function App:login_redirect(req, state)
  local q = req.query or {}
  local pending = state.login
  if not (type(pending) == "table" and type(q.state) == "string" and same_secret(q.state, pending.state)
      and (tonumber(pending.expires_at) or 0) >= os.time()) then
    self.log("warn", "authorization code refused: no login is pending for its state", { remote = req.remote })
    return 403, HTML_TYPE, "<!doctype html><meta charset=\"utf-8\"><title>biconnector</title>"
      .. "<p>No <code>biconnector login</code> is waiting for this authorization (or it expired): run it again.</p>"
  end
  if type(q.code) ~= "string" or #q.code > _M.LIMITS.value or not q.code:match("^[%w%-_.]+$") then
    return 400, HTML_TYPE, "<!doctype html><p>The authorization code is malformed.</p>"
  end
  local code, login_state = q.code, q.state
  return 200, HTML_TYPE, "<!doctype html><meta charset=\"utf-8\"><title>biconnector</title>"
    .. "<p>Authorization received. The server is exchanging it for tokens; <code>biconnector login</code> reports"
    .. " the outcome.</p>", function() self:spawn("exchange", { code = code, state = login_state }) end
end

-- b24restdocs on-app-uninstall.md binds onAppUninstall but spells the event a
-- handler receives ONAPPSUNINSTALL: either name is the uninstall
local function is_uninstall(event)
  if type(event) ~= "string" then return false end
  event = event:upper()
  return event == "ONAPPUNINSTALL" or event == "ONAPPSUNINSTALL"
end

function App:install(req)
  local params, status, reason = body_fields(req)
  local state, detail
  -- the uninstall event sent to the handler path (the one address the portal
  -- was given) is taken as at the event path: guarded by application_token
  if params and is_uninstall(params.event) then return self:event(req, params) end
  if params then state, status, reason = _M.check_install(params, self.cfg) end
  if state then
    local ok
    ok, status, reason, detail = _M.store_install(self.cfg, state)
    if ok then
      -- (a pending callback is answered as any other: Bitrix24 expects 200 at once, and
      -- the sender learns nothing of the installation)
      local s, h, b = answer(200, { status = "installed", portal = state.portal })
      if status == "unchanged" then
        self.log("info", "installation callback repeats the installation's tokens: nothing changed",
          { portal = state.portal, member_id = state.member_id, remote = req.remote })
        return s, h, b
      end
      if status == "pending" then
        self.log("info", "installation callback kept pending: the verified installation stays until its tokens prove genuine",
          { portal = state.portal, member_id = state.member_id, remote = req.remote })
        return s, h, b, function() self:spawn("register", { pending = true }) end
      end
      self.log("info", "application installed", { portal = state.portal, member_id = state.member_id, remote = req.remote })
      return s, h, b, function() self:spawn("register") end
    end
  end
  local fields = { status = status, reason = reason, remote = req.remote }
  for k, v in pairs(detail or {}) do fields[k] = v end
  self.log("warn", "installation callback refused", fields)
  return refusal(status, reason)
end

function App:event(req, params)
  local status, reason
  if not params then params, status, reason = body_fields(req) end
  if not params then return refusal(status, reason) end
  local auth = type(params.auth) == "table" and params.auth or {}
  -- a JSON event may carry member_id (or a token) as a number; a form, as text
  -- (and a null as a field left out)
  for _, k in ipairs({ "member_id", "application_token" }) do
    if auth[k] == json.null then auth[k] = nil end
    auth[k] = number_as_text(auth[k])
  end
  local event = type(params.event) == "string" and params.event:upper() or "-"
  local store = self.cfg.store
  local state, serr = store:get()
  if state == nil and serr then
    -- not the sender's fault: a 403 would lose the uninstall and blame the portal
    self.log("error", "event not handled: the token store cannot be read", { event = event:sub(1, 64), error = serr,
      remote = req.remote })
    return refusal(500, "the token store cannot be read; see the server log")
  end
  -- the portal's member_id, when the event names one, must be the installation's
  -- (protocol.md 4 promises only application_token: an event without member_id
  -- is judged by the token alone)
  local function same_portal(st) return auth.member_id == nil or auth.member_id == st.member_id end
  local genuine = installed(state) and same_secret(auth.application_token, state.application_token)
    and same_portal(state)
  local waited = 0
  -- a reinstall's events carry its new application_token while the helper still
  -- proves its callback (kept pending): wait for that (a second or so), then judge
  while not genuine and waited < PENDING_WAIT and installed(state) and same_portal(state)
      and type(state[_M.PENDING]) == "table" and same_secret(auth.application_token, state[_M.PENDING].application_token) do
    http.sleep(0.05)
    waited = waited + 0.05
    state = store:get()
    genuine = installed(state) and same_secret(auth.application_token, state.application_token)
      and same_portal(state)
  end
  if not genuine and not installed(state) and type(state) == "table" and state.uninstalled_token ~= nil
      and type(auth.application_token) == "string" and core.sha256(auth.application_token) == state.uninstalled_token
      and same_portal(state) and is_uninstall(event) then
    -- the uninstall again (a stale handler bound beside the current one, a sender's retry):
    -- done already, and no stranger's
    self.log("info", "uninstall event again: already uninstalled", { remote = req.remote })
    return answer(200, { status = "uninstalled" })
  end
  if not genuine then
    self.log("warn", "event refused: wrong or missing application_token", { event = event:sub(1, 64), remote = req.remote })
    return refusal(403, "the event does not carry this installation's application_token")
  end
  if not is_uninstall(event) then
    -- the name echoed only when it is one (the answer is JSON: no stray bytes)
    return answer(200, { status = "ignored", event = event:match("^[%w_]+$") and event:sub(1, 64) or "?" })
  end
  local old
  local ok, err = _M.update(store, function(current)
    if not (installed(current) and same_secret(auth.application_token, current.application_token)) then return nil end
    old = current
    -- the token's digest, not the token: an uninstall event repeated is told from a stranger's
    return { portal = current.portal, member_id = current.member_id, uninstalled_at = os.time(),
      uninstalled_token = core.sha256(current.application_token) }
  end)
  if not ok then
    self.log("error", "uninstall: cannot clear the token store", { error = err })
    return refusal(500, "the token store cannot be written")
  end
  if not old then return answer(200, { status = "uninstalled" }) end -- a second event for the same uninstall
  self.log("info", "application uninstalled: tokens removed", { portal = old.portal, remote = req.remote })
  local s, h, b = answer(200, { status = "uninstalled" })
  if self.cfg.uninstall_delete and type(old.registration) == "table" then
    return s, h, b, function() self:spawn("cleanup", { installation = old }) end
  end
  return s, h, b
end

-- The /app paths: -> status, headers, body, after (called once the answer is
-- done, whatever its end), or nil when the path is not the application's.
function App:handle(req)
  local which = self.paths[req.path]
  if not which then return nil end
  local ok, s, h, b, after = pcall(function()
    if which == "install" and (req.method == "GET" or req.method == "HEAD") then
      local state, serr = self.cfg.store:get()
      if state == nil and serr then
        -- "Not installed" would be a wrong answer: the store cannot tell
        self.log("error", "the token store cannot be read", { error = serr, path = req.path })
        return 500, HTML_TYPE, "<!doctype html><meta charset=\"utf-8\"><title>biconnector application</title>"
          .. "<h1>biconnector application</h1><p>The token store cannot be read: the server log says why.</p>"
      end
      state = type(state) == "table" and state or {}
      if req.query and req.query.code then return self:login_redirect(req, state) end
      return 200, HTML_TYPE, self:page(state)
    end
    if req.method ~= "POST" then
      local st, hd, bd = refusal(405, which == "install" and "the installation path answers GET and POST" or "the event path answers POST")
      hd = { ["Content-Type"] = hd["Content-Type"], Allow = which == "install" and "GET, POST" or "POST" }
      return st, hd, bd
    end
    if which == "install" then return self:install(req) end
    return self:event(req)
  end)
  if not ok then
    self.log("error", "the application failed", { error = tostring(s), path = req.path })
    return refusal(500, "the application failed; see the server log")
  end
  return s, h, b, after
end

return _M
