-- biconnector.app.job (public name biconnector.app_job): the helper process of `serve --app` (biconnector.app.server
-- spawns it with the job as JSON on its standard input). It does the REST work
-- the server must not wait for: registering the connector, its source and
-- tables (biconnector.register) and the ONAPPUNINSTALL handler; exchanging a
-- `biconnector login` code; deleting what was registered after an uninstall
-- (--app-uninstall-delete). Failures are logged with the reason and retried
-- with backoff (app.RETRY); one job at a time holds the registration lock.
local core = require "biconnector.core"
local json = require "biconnector.json"
local app = require "biconnector.app.server"
local logline = require "biconnector.host.logline"
local rest = require "biconnector.rest.client"
local tokens = require "biconnector.rest.tokens"
local serve = require "biconnector.host.serve"
local register = require "biconnector.cli.register"
local cli_call = require "biconnector.cli.call"

local process = core.process
local type, ipairs, tostring, tonumber, pcall = type, ipairs, tostring, tonumber, pcall
local format = string.format

local _M = {}

local job_name = "-"
local function log(level, message, fields)
  fields = fields or {}
  fields.job, fields.pid = job_name, process.getpid()
  io.stderr:write(logline.message(level, message, fields), "\n")
end

-- A failure: `final` when trying again cannot help (a configuration to fix).
local function failure(message, final) return { message = tostring(message), final = final and true or false } end

-- The installation this helper works for is gone (uninstalled): the helper stops.
local function gone(why) return { message = tostring(why), final = true, gone = true } end

-- Another installation's pair replaced it in the store (a callback stored
-- meanwhile): tried again, with that one.
local REPLACED = "the token store changed while the installation was registered (another installation callback):"
  .. " registering the new one"

local FINAL_CODES = { invalid_client = true, invalid_grant = true, ACCESS_DENIED = true, insufficient_scope = true,
  NO_AUTH_FOUND = true, expired_token = true, PAYMENT_REQUIRED = true, INVALID_CREDENTIALS = true,
  -- the portal's certificate not trusted (or BITRIX24_CA_FILE not loading): the same again on every attempt
  CERTIFICATE_ERROR = true }
local HINTS = {
  insufficient_scope = "tick the permission BI Builder (biconnector) in the application's form, save, and reinstall",
  ACCESS_DENIED = "the portal refused the application the biconnector methods (its permissions, or a webhook's token)",
  expired_token = "the access token expired and cannot be renewed: give the client_id/client_secret the application's form shows",
  invalid_client = cli_call.RENEWAL_HINTS.invalid_client,
  invalid_grant = cli_call.RENEWAL_HINTS.invalid_grant,
}

local function from_rest(err)
  local code = type(err) == "table" and err.code
  if code == "TOKENS_GONE" then
    if err.replaced then return failure(REPLACED) end
    return gone(err.description or err)
  end
  local text = tostring(err)
  if code and HINTS[code] then text = text .. " (" .. HINTS[code] .. ")" end
  local final = code and (FINAL_CODES[code] or tostring(code):match("^VALIDATION_")) or false
  -- a renewal the OAuth server's certificate stopped (the client says so) fails the same way again
  if code == "RENEWAL_FAILED" and err.certificate then final = true end
  return failure(text, final)
end

-- The registration's client: the installation's tokens from the store (renewed
-- there, under its lock, when they expire). A renewal writes only over this
-- installation's pair (its application_token): after an uninstall, or another
-- installation stored meanwhile, it renews nothing and says TOKENS_GONE.
local function client_for(cfg, state, id, secret)
  local client, err = rest.new({ client_endpoint = state.client_endpoint, client_id = id, client_secret = secret,
    store = cfg.store, oauth_url = app.oauth_url_for(cfg, state), ca_file = cfg.ca_file,
    installation_key = "application_token",
    log = function(level, message) log(level, message) end })
  if not client then return nil, failure(err, true) end
  return client
end

-- The refresh token renews with this application's client_id and secret only
-- at the OAuth server, which also tells the portal's member_id: the proof that
-- an installation callback was genuine (nothing else in it is signed).
local function verify(cfg, client, state)
  local ok, err, how = client:renew(client.tokens.access_token)
  if ok and how == "adopted" then
    -- the store held another pair by the time the lock was ours (an installation
    -- callback stored meanwhile): nothing was renewed, so nothing is proven
    return nil, failure("the token store changed while the installation was verified (another installation"
      .. " callback): verifying the new one")
  end
  if not ok then
    if type(err) == "table" and err.code == "invalid_grant" then
      app.update(cfg.store, function(current)
        if current.application_token ~= state.application_token then return nil end
        -- nothing of it stays: its domain is the forger's (`biconnector login` defaults to the stored portal)
        return { refused_at = os.time() }
      end)
      return nil, failure("the OAuth server does not renew this installation's tokens for this application (" ..
        tostring(err) .. "): the installation callback was not genuine, and its tokens are discarded", true)
    end
    return nil, from_rest(err)
  end
  local renewed = cfg.store:get() or {}
  if renewed.access_token ~= client.tokens.access_token then
    return nil, failure("the token store changed while the installation was verified (another installation"
      .. " callback): verifying the new one")
  end
  if renewed.member_id ~= state.member_id then
    app.update(cfg.store, function(current)
      if current.application_token ~= state.application_token then return nil end
      return { refused_at = os.time() }
    end)
    return nil, failure(format("the OAuth server says these tokens belong to member_id %s, not to the installing portal's %s:"
      .. " the installation callback was not genuine; its tokens are discarded", tostring(renewed.member_id),
      tostring(state.member_id)), true)
  end
  local marked
  app.update(cfg.store, function(current)
    -- only the pair the OAuth server just renewed is marked, not one stored since
    if current.member_id ~= state.member_id or current.access_token ~= client.tokens.access_token then return nil end
    current.verified_at = os.time()
    marked = true
    return current
  end)
  if not marked then
    return nil, failure("the token store changed while the installation was verified (another installation"
      .. " callback): verifying the new one")
  end
  log("info", "installation verified by the OAuth server", { portal = state.portal })
  return true
end

---------------------------------------------------------------- a pending callback

-- What a reinstall changes in the installation: the callback's fields (the
-- tokens come from the proof below).
local CALLBACK_KEYS = { "application_token", "portal", "client_endpoint", "server_endpoint", "scope", "status",
  "expires_in", "expires", "installed_at" }
-- What a portal or the OAuth server answers for tokens nobody issued (or that
-- cannot be renewed): the callback was not genuine.
local NOT_GENUINE = { invalid_grant = true, NO_AUTH_FOUND = true, invalid_token = true, expired_token = true,
  WRONG_AUTH_TYPE = true, INVALID_CREDENTIALS = true, ACCESS_DENIED = true }

local function same_pending(current, pending)
  local p = current[app.PENDING]
  return type(p) == "table" and p.access_token == pending.access_token and p.refresh_token == pending.refresh_token
    and p.application_token == pending.application_token
end

-- Drops the pending callback (only that one: a newer one stays for its own helper).
local function drop_pending(cfg, pending, why)
  local again = false
  app.update(cfg.store, function(current)
    if not same_pending(current, pending) then return nil end
    -- the installation's own first callback again (a sender's retry) after its
    -- pair was renewed: its tokens are spent, and it is no stranger's
    again = app.same_secret(pending.application_token, current.application_token)
    current[app.PENDING] = nil
    return current
  end)
  if again then
    log("info", "the installation callback repeats the verified installation's callback (its application_token);"
      .. " its tokens were renewed since: nothing changed", { portal = pending.portal })
    return "dropped"
  end
  log("warn", "the pending installation callback is not genuine: its tokens are discarded; the verified installation"
    .. " stays as it was", { portal = pending.portal, reason = why })
  return "dropped"
end

-- Its proof: the pair it carries renews at the OAuth server for this application
-- and names its member_id (as verify() does for a first installation), or, with
-- --portal, the portal answers a call made with it (renewed once on
-- expired_token). Nothing of the installation's own pair is used or renewed.
-- -> the proven pair (a table with access_token, refresh_token, ...) | false, why | nil, failure
local function prove_pending(cfg, pending, id, secret)
  local store = tokens.memory({ access_token = pending.access_token, refresh_token = pending.refresh_token })
  local client, err = rest.new({ client_endpoint = pending.client_endpoint, client_id = id, client_secret = secret,
    store = store, oauth_url = app.oauth_url_for(cfg, pending), ca_file = cfg.ca_file, follow_client_endpoint = false,
    log = function(level, message) log(level, message) end })
  if not client then return nil, failure(err, true) end
  local ok, a, b = pcall(function()
    if cfg.portal then
      local answer, cerr = client:call("biconnector.connector.fields")
      if answer == nil then
        if type(cerr) == "table" and NOT_GENUINE[cerr.code] then return false, tostring(cerr) end
        return nil, from_rest(cerr)
      end
      return store:get()
    end
    local renewed, rerr = client:renew(pending.access_token)
    if not renewed then
      if type(rerr) == "table" and rerr.code == "invalid_grant" then return false, tostring(rerr) end
      return nil, from_rest(rerr)
    end
    local pair = store:get() or {}
    if pair.member_id ~= pending.member_id then
      return false, format("the OAuth server says these tokens belong to member_id %s, not %s", tostring(pair.member_id),
        tostring(pending.member_id))
    end
    return pair
  end)
  client:close()
  if not ok then return nil, failure(a) end
  return a, b
end

-- Settles an installation callback kept pending beside the verified
-- installation (biconnector.app.server store_install): proven, its tokens and
-- application_token replace the installation's, atomically; not, it is dropped
-- and the installation stays. -> "promoted" | "dropped" | "waits" | nil, failure
local function settle_pending(cfg, state, id, secret)
  local pending = state[app.PENDING]
  if type(pending.access_token) ~= "string" or type(pending.refresh_token) ~= "string"
      or pending.member_id ~= state.member_id then
    return drop_pending(cfg, pending, "not an installation of this member_id")
  end
  if not cfg.portal and not (id and secret) then
    log("warn", "an installation callback waits beside the verified installation: its tokens cannot be verified"
      .. " without the client_id/client_secret; give them and send SIGHUP", { portal = pending.portal })
    return "waits"
  end
  local pair, why = prove_pending(cfg, pending, id, secret)
  if pair == nil then
    why.pending = true
    return nil, why
  end
  if pair == false then return drop_pending(cfg, pending, why) end
  local now, promoted = os.time(), false
  app.update(cfg.store, function(current)
    if not (app.installed(current) and current.member_id == pending.member_id and same_pending(current, pending)) then
      return nil
    end
    for _, k in ipairs(CALLBACK_KEYS) do current[k] = pending[k] end
    current.access_token, current.refresh_token = pair.access_token, pair.refresh_token
    if pair.access_token ~= pending.access_token then -- renewed: the answer's lifetime and scope
      current.expires_in = tonumber(pair.expires_in) or current.expires_in
      current.expires = tonumber(pair.expires) or (tonumber(pair.expires_in) and now + tonumber(pair.expires_in))
        or current.expires
      if type(pair.scope) == "string" then current.scope = pair.scope end
    end
    current[app.PENDING] = nil
    current.verified_at = now
    promoted = true
    return current
  end)
  if not promoted then
    log("info", "the pending installation callback changed while it was verified: the newer one is verified in its turn",
      { portal = pending.portal })
    return "dropped"
  end
  log("info", "the pending installation callback is genuine: its tokens replace the installation's", {
    portal = pending.portal, by = cfg.portal and "the portal" or "the OAuth server" })
  return "promoted"
end

-- The ONAPPUNINSTALL handler (event.bind), once: what event.get lists stays.
-- A handler of this application's at another .../app/event address (an
-- earlier --public-url or --prefix) is unbound once this one is bound: the
-- uninstall event, application_token included, goes to this address only.
local function bind_uninstall(client, url)
  local bound, err = client:call("event.get")
  if bound == nil then return nil, err end
  local how, stale = nil, {}
  for _, h in ipairs(type(bound) == "table" and bound or {}) do
    if type(h) == "table" and tostring(h.event):upper() == "ONAPPUNINSTALL" and type(h.handler) == "string" then
      if h.handler == url then how = "kept"
      elseif h.handler:match("/app/event$") then stale[#stale + 1] = h.handler end
    end
  end
  if not how then
    local ok, berr = client:call("event.bind", { event = "ONAPPUNINSTALL", handler = url })
    if ok == nil then return nil, berr end
    how = "bound"
  end
  for _, old in ipairs(stale) do
    local ok, uerr = client:call("event.unbind", { event = "ONAPPUNINSTALL", handler = old })
    if ok == nil then
      log("warn", "cannot unbind a stale ONAPPUNINSTALL handler", { handler = old, error = tostring(uerr) })
    else
      log("info", "stale ONAPPUNINSTALL handler unbound", { handler = old })
    end
  end
  return how
end

-- Asks the connector object itself (no network): POST /ENDPOINT with a JSON body
-- carrying the settings as the connection. -> status, the answer's body (text)
local function ask(c, endpoint, settings, params)
  local connection = {}
  for k, v in pairs(settings) do connection[k] = tostring(v) end
  params = params or {}
  params.connection = connection
  local status, _, body = c:handle({ method = "POST", path = "/" .. endpoint,
    headers = { ["content-type"] = "application/json" }, body = assert(json.encode(params)) })
  if type(body) == "function" then -- a streamed answer: gather it
    local parts = {}
    for piece in body do parts[#parts + 1] = piece end
    body = table.concat(parts)
  end
  return status, body
end

-- The source's settings: a database's token; a connector file's from
-- --source-settings FILE (a JSON object); none: the connector only.
-- A connector that refuses them (its check answers 403, as Bitrix24 would
-- hear when the source is made) is a final failure naming where they came from.
local function source_settings(o, c)
  if o.token and c.source then return { token = o.token } end
  if o.source_settings then
    local f, err = io.open(o.source_settings, "rb")
    if not f then return nil, failure("--source-settings: " .. tostring(err), true) end
    local value = json.decode(f:read("*a") or "")
    f:close()
    if type(value) ~= "table" then return nil, failure("--source-settings: " .. o.source_settings .. " holds no JSON object", true) end
    local status, body = ask(c, "check", value)
    if status == 403 then
      local answer = json.decode(body or "")
      local why = type(answer) == "table" and (answer.message or answer.error) or body
      return nil, failure(format("the connector refuses the source's settings from --source-settings %s (its check"
        .. " answered HTTP 403: %s): correct the file and send SIGHUP (the file is read again then)", o.source_settings,
        tostring(why)), true)
    end
    return value
  end
  if #(c.settings or {}) == 0 then return {} end
  return false
end

-- Whether the connector can describe a served table, as Bitrix24 asks before
-- a table is made: -> true | false, why (HTTP 404: it never can, e.g. a table
-- of binary columns only, which /table_list still lists) | nil (anything else:
-- register.run meets it and the registration is tried again).
local function describable(c, settings, code)
  local status, body = ask(c, "table_description", settings, { table = code })
  if status == 200 then return true end
  if status ~= 404 then return nil end
  local value = json.decode(body or "")
  return false, type(value) == "table" and tostring(value.message or value.error) or "HTTP 404"
end

local function register_once(job, cfg)
  local state = cfg.store:get()
  if not app.installed(state) then
    log("info", "not installed: nothing to register")
    return true
  end
  local id, secret, cerr = app.credentials(cfg)
  if cerr then return nil, failure(cerr, true) end
  if type(state[app.PENDING]) == "table" then
    local settled, perr = settle_pending(cfg, state, id, secret)
    if not settled then return nil, perr end
    -- a callback's helper has nothing more to do unless its tokens replaced the installation's;
    -- a registration on SIGHUP or at start goes on with the verified installation
    local only_pending = job.pending
    job.pending = nil
    if settled ~= "promoted" and only_pending then return true end
    state = cfg.store:get()
    if not app.installed(state) then
      log("info", "not installed: nothing to register")
      return true
    end
  elseif job.pending then
    -- (another helper settled it first, and registered when it proved genuine)
    log("info", "no installation callback is pending any more: nothing to do")
    return true
  end
  local client, err = client_for(cfg, state, id, secret)
  if not client then return nil, err end
  local ok, done, ferr = pcall(function()
    local verified = state.verified_at ~= nil
    if not verified and id and secret and not cfg.portal then
      local v, verr = verify(cfg, client, state)
      if not v then return nil, verr end
      verified = true
    elseif not verified and cfg.portal then
      -- --portal pins client_endpoint to that portal: the tokens go nowhere else and
      -- the portal itself judges them; no renewal before one answers expired_token
      log("info", "installation taken for the portal --portal names; tokens renewed when it answers expired_token",
        { portal = state.portal })
    elseif not verified then
      log("warn", "client_id/client_secret not set: the installation is not verified and its tokens cannot be renewed"
        .. " after they expire; give them (the application's form shows them) and send SIGHUP", { portal = state.portal })
    end
    local o = job.o
    local loaded, c = pcall(serve.load_connector, o)
    if not loaded then return nil, failure(c, true) end
    local settings, serr = source_settings(o, c)
    if settings == nil then return nil, serr end
    if settings and not verified and not cfg.portal then
      -- a forged first callback could name any portal: its settings (a token) go
      -- only to a portal the OAuth server vouched for, or the one --portal names
      log("warn", "the source (it carries the token) waits until the installation is verified: give the"
        .. " client_id/client_secret and send SIGHUP, or name the portal with --portal", { portal = state.portal })
      settings = false
    elseif settings == false then
      log("info", "no source: give the connector file's setting values with --source-settings FILE")
    end
    local tables
    if cfg.tables and settings then
      local served, terr = register.served_tables(c, settings)
      if not served then return nil, failure(terr, true) end
      tables = {}
      for _, t in ipairs(served) do
        -- one table that cannot be described would stop the whole registration (and be
        -- tried again in vain): it is left out, said in the log
        local fine, why = describable(c, settings, t.code)
        if fine == false then
          log("warn", format("table %s is not registered: the connector cannot describe it (%s)", t.code, why))
        else
          tables[#tables + 1] = { table = t.code }
        end
      end
    end
    local result, rerr, kind = register.run({
      connector = c, base_url = cfg.base_url, client = client, settings = settings or nil, tables = tables,
      source_title = settings and c.title or nil, print = function(line)
        local warning = line:match("^warning: (.*)$")
        log(warning and "warn" or "info", warning or line)
      end })
    if not result then
      if kind == "usage" then return nil, failure(rerr, true) end
      return nil, type(rerr) == "table" and from_rest(rerr) or failure(rerr)
    end
    local how, berr = bind_uninstall(client, cfg.event_url)
    if how then
      log("info", "ONAPPUNINSTALL handler " .. how, { handler = cfg.event_url })
    else
      log("warn", "cannot bind the ONAPPUNINSTALL handler: the server will not hear of an uninstall", { error = tostring(berr) })
    end
    local record = { at = os.time(), ok = true, connector = result.connector.id,
      source = result.source and result.source.id or nil, tables = #result.tables }
    local ids = {}
    for _, t in ipairs(result.tables) do if t.id then ids[#ids + 1] = t.id end end
    record.table_ids = ids
    local portal_verified, kept
    app.update(cfg.store, function(current)
      -- (not into a store uninstalled meanwhile, nor over another installation stored since)
      if not app.installed(current) or current.member_id ~= state.member_id
          or current.application_token ~= state.application_token then
        return nil
      end
      kept = true
      current.registration = record
      -- with --portal the portal judges the tokens: it answered the registration's calls made
      -- with this pair (renewed or not), so the installation counts as verified (a callback
      -- for it is then kept pending until proven); not one stored since
      if cfg.portal and not current.verified_at and current.access_token == client.tokens.access_token then
        current.verified_at = os.time()
        portal_verified = true
      end
      return current
    end)
    if not kept then
      local now = cfg.store:get()
      if app.installed(now) then return nil, failure(REPLACED) end
      return nil, gone("the token store no longer holds the installation registered (uninstalled)")
    end
    if portal_verified then
      log("info", "installation verified: the portal --portal names answered its tokens", { portal = state.portal })
    end
    log("info", "registered", { portal = state.portal, connector = record.connector, source = record.source or "-",
      tables = record.tables })
    return true
  end)
  client:close()
  if not ok then return nil, failure(done) end
  -- whatever the step that met it (a renewal inside register.run, event.bind), a
  -- renewal that found the installation gone ends the helper
  if not done and client.tokens_gone then
    return nil, client.tokens_replaced and failure(REPLACED) or gone(client.tokens_gone)
  end
  return done, ferr
end

-- The registration lock's time to live where a lock expires (Redis, a
-- lua_shared_dict), in seconds: longer than a registration can take (many
-- tables at the portal's 2 requests a second, its retries), so that no second
-- helper registers beside one still at work; a holder that died keeps it
-- that long (a file lock goes with its process).
local REGISTRATION_LOCK_TTL = 900

-- Runs once(job, cfg) under the registration lock, again with backoff after a
-- failure that may pass; the last failure is kept in the store for the page.
local function with_retries(job, cfg, once, what)
  local lock_store = cfg.store:beside(".register", { lock_ttl = REGISTRATION_LOCK_TTL })
  local delay = cfg.retry.first
  for attempt = 1, cfg.retry.attempts do
    local unlock, lerr = lock_store:lock()
    local ok, err
    if not unlock then
      err = failure("cannot take the registration lock: " .. tostring(lerr))
    else
      local fine, a, b = pcall(once, job, cfg)
      unlock()
      if fine then ok, err = a, b else err = failure(a) end
    end
    if ok then return 0 end
    err = err or failure("unknown failure")
    if err.gone then
      log("info", "the installation is gone: " .. what .. " stopped; nothing renewed or written back", { reason = err.message })
      return 0
    end
    local last = err.final or attempt == cfg.retry.attempts
    log(last and "error" or "warn", what .. " failed", { attempt = attempt .. "/" .. cfg.retry.attempts,
      reason = err.message, retry = not last and format("in %gs", delay) or "no" })
    if last then
      app.update(cfg.store, function(current)
        -- a pending callback that could not be verified says nothing of the registration
        if not app.installed(current) or err.pending then return nil end
        current.registration = { at = os.time(), ok = false, error = err.message }
        return current
      end)
      return 1
    end
    process.sleep(delay)
    delay = math.min(delay * 2, cfg.retry.max)
  end
  return 1
end

-- A `biconnector login` code that reached the server's /app/install: exchanged
-- at once (it lives 30 seconds), then the registration.
local function exchange(job, cfg)
  local id, secret, cerr = app.credentials(cfg)
  local err = cerr
  if not err and not (id and secret) then
    err = "the client_id/client_secret are not set: the server cannot exchange the code"
  end
  local data
  if not err then data, err = app.exchange_code(cfg, id, secret, job.code) end
  if data then
    local stored
    stored, err = app.store_exchange(cfg, data, job.state)
    if stored then
      log("info", "logged in: tokens stored", { portal = stored.portal, member_id = stored.member_id })
      return with_retries(job, cfg, register_once, "registration")
    end
  end
  log("error", "login failed", { reason = err })
  app.update(cfg.store, function(current)
    if not (type(current.login) == "table" and current.login.state == job.state) then return nil end
    current.login.error = tostring(err)
    return current
  end)
  return 1
end

-- --app-uninstall-delete: the tables, source and connector registered, with
-- the tokens the installation held (Bitrix24 itself removes an application's
-- access at uninstall; a portal that still answers gets them deleted).
local function cleanup(job, cfg)
  local old = job.installation or {}
  local r = type(old.registration) == "table" and old.registration or {}
  local id, secret = app.credentials(cfg)
  local client, err = rest.new({ client_endpoint = old.client_endpoint, client_id = id,
    client_secret = secret, oauth_url = app.oauth_url_for(cfg, old), ca_file = cfg.ca_file,
    store = tokens.memory({ access_token = old.access_token, refresh_token = old.refresh_token }) })
  if not client then log("error", "uninstall cleanup failed", { reason = tostring(err) }) return 1 end
  local failed = 0
  local function delete(service, id_)
    if not id_ then return end
    local ok, derr = client[service]:delete(id_)
    if ok then log("info", format("uninstall: %s %s deleted", service, tostring(id_)))
    else
      failed = failed + 1
      log("warn", format("uninstall: %s %s not deleted", service, tostring(id_)), { reason = tostring(derr) })
    end
  end
  for _, t in ipairs(type(r.table_ids) == "table" and r.table_ids or {}) do delete("table", t) end
  delete("source", r.source)
  delete("connector", r.connector)
  client:close()
  return failed == 0 and 0 or 1
end

function _M.run(job)
  job_name = tostring(job.kind)
  local cfg, err = app.config(job.o or {})
  if not cfg then log("error", "application helper: " .. tostring(err)) return 1 end
  if job.kind == "register" then return with_retries(job, cfg, register_once, "registration") end
  if job.kind == "exchange" then return exchange(job, cfg) end
  if job.kind == "cleanup" then return cleanup(job, cfg) end
  log("error", "unknown job " .. job_name)
  return 2
end

-- The helper's entry: the job on standard input. -> exit code
function _M.main()
  local text = io.stdin:read("*a")
  io.stdin:close()
  local job = json.decode(text or "")
  if type(job) ~= "table" then
    log("error", "application helper: no job on standard input")
    return 2
  end
  local ok, code = xpcall(_M.run, debug.traceback, job)
  if not ok then
    log("error", "application helper failed", { error = code })
    return 1
  end
  return tonumber(code) or 0
end

return _M
