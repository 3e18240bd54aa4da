-- biconnector.rest.client (public name biconnector.rest): a Bitrix24 REST client. Webhook or OAuth auth (renewal
-- through a shared token store), a leaky-bucket limiter, per-method operating
-- time pacing, retries that never repeat a create after an ambiguous failure,
-- paging (`each`) and batches of any size. See docs/rest.md.
local core = require "biconnector.core"
local json = require "biconnector.json"
local form = require "biconnector.form"
local tokens = require "biconnector.rest.tokens"
local transport_ngx = require "biconnector.rest.transport_ngx"
local address = require "biconnector.host.address"

local type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable, pcall, error, next =
  type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable, pcall, error, next
local concat, sort, floor, min, max = table.concat, table.sort, math.floor, math.min, math.max
local http = core.http

local _M = { _VERSION = core.version }

_M.USER_AGENT = "biconnector-lua/" .. core.version
_M.OAUTH_URL = "https://oauth.bitrix.info/oauth/token/"
_M.OAUTH_URL_EAST = "https://oauth.bitrix24.tech/oauth/token/"

-- The OAuth server's token address as given (opts.oauth_url, BITRIX24_OAUTH_URL):
-- nil or empty means the default; else it must be an http(s) URL. The server's
-- address alone ("https://oauth.bitrix24.tech", as the official SDKs configure
-- it, with or without a trailing "/") means its token address, /oauth/token/.
-- -> url | nil, message
function _M.oauth_url(value, what)
  if value == nil or value == "" then return _M.OAUTH_URL end
  value = address.lower_scheme(value) -- HTTPS://... is the same address
  if type(value) ~= "string" or not value:match("^https?://[^/?#%s]+") or value:find("%s") then
    return nil, ("%s expects the OAuth server's token address (%s, or %s for the eastern region), got '%s'")
      :format(what or "oauth_url", _M.OAUTH_URL, _M.OAUTH_URL_EAST, tostring(value))
  end
  local server = value:match("^(https?://[^/?#]+)/?$")
  if server then return server .. "/oauth/token/" end
  return value
end

local DEFAULTS = {
  rate = 2,                 -- leaky bucket: requests drained per second
  burst = 50,               -- leaky bucket: requests allowed at once
  bucket_margin = 1,        -- slots kept free to absorb network jitter between us and the portal
  timeout = 60,             -- seconds for one HTTP exchange (the portal's own limit)
  connect_timeout = 10,
  max_retries = 6,          -- retries of one call after a retryable failure
  backoff_base = 0.5,       -- first backoff delay, doubled on each retry
  backoff_max = 30,
  operating_limit = 480,    -- seconds of execution a method may use per 10 minutes
  operating_threshold = 0.5,-- start pacing a method above this share of its limit
  operating_pause_max = 10, -- longest single pacing pause
  operating_wait_max = 120, -- wait for operating_reset_at (429 or near the limit) at most this long
  page_size = 50,
}

-------------------------------------------------------------------------------
-- errors

local RestError = {}
RestError.__index = RestError
RestError.__tostring = function(e)
  local parts = { "Bitrix24 REST" }
  if e.method then parts[#parts + 1] = " " .. e.method end
  parts[#parts + 1] = ": " .. tostring(e.code)
  if e.status then parts[#parts + 1] = " (HTTP " .. tostring(e.status) .. ")" end
  if e.description and e.description ~= "" then parts[#parts + 1] = ": " .. e.description end
  return concat(parts)
end

local function new_error(t) return setmetatable(t, RestError) end

-- The codes the retry and renewal policy reads, by their upper-case spelling:
-- the portal's case varies (b24restdocs, the Go SDK's error page), and the
-- caller sees the documented one (err.code == "expired_token").
local POLICY_CODES = {}
for _, code in ipairs({ "expired_token", "QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT",
  "PORTAL_DELETED" }) do
  POLICY_CODES[code:upper()] = code
end
local upper = string.upper
_M.new_error = new_error
function _M.is_error(v) return getmetatable(v) == RestError end

-------------------------------------------------------------------------------
-- small helpers

local function escape_pattern(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

local is_array = require("biconnector.connector.list").is_list

local function shallow_copy(t)
  local c = {}
  if t then for k, v in pairs(t) do c[k] = v end end
  return c
end

-- The items of one list page: an array, or the one array inside an object
-- (crm.item.list answers {items = [...]}, tasks.task.list {tasks = [...]}).
local function items_of(result)
  if type(result) ~= "table" then return {} end
  if is_array(result) then return result end
  local found
  for _, v in pairs(result) do
    if type(v) == "table" and is_array(v) then
      if found then return {} end
      found = v
    end
  end
  return found or {}
end
_M.items_of = items_of

-- The method's name as the portal reads it: case-insensitive, an optional
-- ".json" suffix ("crm.deal.add.json" is crm.deal.add).
local function method_name(method)
  return (tostring(method):lower():gsub("%.json$", ""))
end
_M.method_name = method_name

-- A batch command line "method?urlencoded-params" -> its method (as written),
-- and its query (nil without "?").
local function command_parts(line)
  local method, query = line:match("^([^?]*)%?(.*)$")
  if method then return method, query end
  return line, nil
end
local function command_method(line) return (command_parts(line)) end
_M.command_method = command_method

local function create_method(method) return method_name(method):match("%.add$") ~= nil end

-- The error a `result` holds: {"result": {"error": {"error": CODE,
-- "error_description": TEXT}}}, or the flat {"result": {"error": CODE,
-- "error_description": TEXT}}. -> it as the top level would carry it
-- ({error=, error_description=}), or nil.
local function inner_error(result)
  -- ("error": null is no error)
  if type(result) ~= "table" or result.error == nil or result.error == json.null then return nil end
  local e = result.error
  if type(e) == "table" then
    if e.error == nil or e.error == json.null then return nil end
    return { error = e.error, error_description = e.error_description }
  end
  return { error = e, error_description = result.error_description }
end

-- The biconnector.* methods answer an error inside `result` with HTTP 200
-- (b24restdocs api-reference/biconnector/index.md, "Errors Are Returned Inside
-- result"). Returns that error (inner_error), or nil. Other methods may return
-- an `error` key as data in a success: only biconnector.* is read so.
local function error_in_result(method, result)
  if not method_name(method):match("^biconnector%.") then return nil end
  return inner_error(result)
end
_M.error_in_result = error_in_result

-------------------------------------------------------------------------------
-- the client

-- Shared leaky buckets, by "scheme://host|rate|burst" (weak: unused ones go away).
_M.buckets = setmetatable({}, { __mode = "v" })

local Client = {}
local services -- lazy (services requires this module): on first use of client.connector/.source/.table/.dataset
local SERVICES = { connector = true, source = true, table = true, dataset = true }

local function client_index(self, key)
  local m = Client[key]
  if m ~= nil then return m end
  if SERVICES[key] then
    services = services or require "biconnector.rest.services"
    local s = services.new(self, key)
    rawset(self, key, s)
    return s
  end
end

local ClientMT = { __index = client_index }

local function trim_slash(s) return (s:gsub("/+$", "")) end

-- biconnector.rest.new(opts) -> client, or nil, err
function _M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, ClientMT)
  for k, v in pairs(DEFAULTS) do
    local given = opts[k]
    if given ~= nil then
      -- a zero rate or a negative timeout would make the client sleep forever or never wait
      local n = tonumber(given)
      local positive = k == "rate" or k == "burst" or k == "timeout" or k == "connect_timeout" or k == "page_size"
        or k == "operating_limit"
      local ok = n ~= nil and n == n
      if ok then
        if positive then ok = n > 0 else ok = n >= 0 end
        if k == "burst" and n < 1 then ok = false end
      end
      if not ok then
        return nil, ("option %s must be a %s number, got %s"):format(k, positive and "positive" or "non-negative", tostring(given))
      end
      self[k] = n
    else
      self[k] = v
    end
  end
  self.secrets = {}
  self.log = opts.log
  self.sleep = opts.sleep or http.sleep
  self.now = opts.now or http.now
  self.wall = opts.time or http.time
  -- an empty ca_file (BITRIX24_CA_FILE= in a unit's environment file) is none: libcurl would
  -- take "" as a file to load and refuse every HTTPS call (CURLE_SSL_CACERT_BADFILE)
  self.ca_file, self.verify = opts.ca_file ~= "" and opts.ca_file or nil, opts.verify
  if opts.transport then
    self.transport = opts.transport
  else
    local handle, err = http.new()
    if not handle then return nil, err end
    self.handle = handle
    self.transport = function(req) return handle:request(req) end
  end
  self.creates = {}
  for _, m in ipairs(opts.create_methods or {}) do self.creates[method_name(m)] = true end
  self.operating = {}
  self.counters = { requests = 0, retries = 0, renewals = 0, sent_503 = 0, paused = 0 }

  -- a scheme in capitals (HTTPS://PORTAL) is the same address, as curl reads it
  local lower_scheme = address.lower_scheme
  if opts.webhook then
    local base = lower_scheme(opts.webhook)
    if not base:match("^https?://") then return nil, "webhook must be an http(s) URL" end
    base = base:gsub("[?#].*$", "")
    -- The address Bitrix24 shows with a sample method ("/rest/1/CODE/profile.json") works too.
    base = base:match("^(https?://.-/rest/[^/]+/[^/]+/)[^/]+$") or base
    if base:sub(-1) ~= "/" then base = base .. "/" end
    local code = base:match("/rest/[^/]+/([^/]+)/$")
    if not code then return nil, "webhook must look like https://PORTAL/rest/USER_ID/CODE/" end
    self.endpoint = base
    self:add_secret(code)
  else
    local endpoint = lower_scheme(opts.client_endpoint)
    if not endpoint and opts.portal then
      local portal = lower_scheme(opts.portal)
      if not portal:match("^https?://") then portal = "https://" .. portal end
      -- "https://PORTAL/rest/" (the client_endpoint spelling) names the same portal
      endpoint = trim_slash(portal):gsub("/rest$", "") .. "/rest/"
    end
    if not endpoint then return nil, "give either webhook or portal (or client_endpoint) with OAuth tokens" end
    if endpoint:sub(-1) ~= "/" then endpoint = endpoint .. "/" end
    self.endpoint = endpoint
    self.oauth = true
    self.client_id, self.client_secret = opts.client_id, opts.client_secret
    local oauth_url, oerr = _M.oauth_url(opts.oauth_url)
    if not oauth_url then return nil, oerr end
    self.oauth_url = oauth_url
    self.on_tokens = opts.on_tokens
    self.follow_client_endpoint = opts.follow_client_endpoint -- nil: only on the same host
    self:add_secret(opts.client_secret)
    self.store = opts.store or tokens.memory()
    -- installation_key: the store's field naming whose pair it holds (`serve --app`:
    -- application_token); a renewal replaces only that installation's pair (renew)
    self.installation_key = opts.installation_key
    local stored, store_err = self.store:get()
    if type(stored) == "table" and stored.access_token then
      self:use_tokens(stored)
      if self.installation_key then self.installation = stored[self.installation_key] end
    else
      if not opts.access_token then
        return nil, "OAuth needs access_token (or a store holding one)" .. (store_err and ("; the store: " .. tostring(store_err)) or "")
      end
      local t = { access_token = opts.access_token, refresh_token = opts.refresh_token }
      local ok, err = self.store:set(t)
      if not ok then return nil, err end
      self:use_tokens(t)
    end
  end
  -- Bitrix24 counts per portal and address: clients of one process that talk
  -- to one portal with the same limits share one bucket.
  if opts.shared_bucket == false then
    self.bucket = { level = 0 }
  else
    local key = ("%s|%s|%s"):format(self.endpoint:match("^(https?://[^/]+)") or self.endpoint, self.rate, self.burst)
    local b = _M.buckets[key]
    if not b then b = { level = 0 } _M.buckets[key] = b end
    self.bucket = b
  end
  return self
end

-- Values that must never appear in logs or error messages.
function Client:add_secret(s)
  if type(s) == "string" and #s >= 4 then
    self.secrets[#self.secrets + 1] = s
    -- as it appears in a URL (the renewal's query string) when it holds + / = and such
    local encoded = form.encode({ x = s }):sub(3)
    if encoded ~= s then self.secrets[#self.secrets + 1] = encoded end
  end
end

function Client:mask(s)
  s = tostring(s)
  for _, secret in ipairs(self.secrets) do
    s = s:gsub(escape_pattern(secret), "***")
  end
  return s
end

function Client:logf(level, fmt, ...)
  if self.log then pcall(self.log, level, self:mask(fmt:format(...))) end
end

function Client:use_tokens(t)
  self.tokens = { access_token = t.access_token, refresh_token = t.refresh_token }
  self:add_secret(t.access_token)
  self:add_secret(t.refresh_token)
  local e = t.client_endpoint
  if self.follow_client_endpoint ~= false and type(e) == "string" and e:match("^https?://") then
    if e:sub(-1) ~= "/" then e = e .. "/" end
    -- By default the token goes only where the client was pointed: a
    -- client_endpoint on another host (or plain http after https) is not taken.
    local function host(u) return (u:match("^https?://([^/?#]+)") or ""):lower() end
    local downgrade = self.endpoint:match("^https:") and e:match("^http:")
    if self.follow_client_endpoint == true or (host(e) == host(self.endpoint) and not downgrade) then
      self.endpoint = e
    elseif e ~= self.endpoint then
      self:logf("info", "not following client_endpoint %s (another host than %s; follow_client_endpoint = true to follow)", e, self.endpoint)
    end
  end
end

-- Marks a method as creating objects: never sent twice after an ambiguous failure.
function Client:mark_create(method) self.creates[method_name(method)] = true end

function Client:is_create(method)
  return self.creates[method_name(method)] or create_method(method)
end

function Client:close()
  if self.handle then self.handle:close() end
end

-------------------------------------------------------------------------------
-- pacing: the leaky bucket and the per-method operating time

function Client:take_bucket()
  local b = self.bucket
  local t = self.now()
  if b.at then b.level = max(0, b.level - (t - b.at) * self.rate) end
  b.at = t
  local limit = max(1, self.burst - self.bucket_margin)
  if b.level + 1 > limit then
    local wait = (b.level + 1 - limit) / self.rate
    self.sleep(wait)
    t = self.now()
    b.level = max(0, b.level - (t - b.at) * self.rate)
    b.at = t
  end
  b.level = b.level + 1
end

-- How long to pause before calling `method`, given what its last answers said
-- about time.operating. Returns seconds (0 = go ahead).
function Client:operating_pause(method)
  local op = self.operating[method]
  if not op or not op.operating then return 0 end
  local now = self.wall()
  if op.reset_at and op.reset_at <= now then
    -- the oldest basket has dropped since; the next answer tells the new figure
    self.operating[method] = nil
    return 0
  end
  local share = op.operating / self.operating_limit
  if share < self.operating_threshold then return 0 end
  if share >= 0.95 then
    local wait = op.reset_at and (op.reset_at - now) or self.operating_pause_max
    return min(wait, self.operating_wait_max)
  end
  -- Above the threshold the duty cycle shrinks: pause = cost * share / (1 - share),
  -- so at 50% the method runs half the time, at 90% a tenth of the time.
  local cost = max(op.processing or 0, 0.05)
  return min(cost * share / (1 - share), self.operating_pause_max)
end

function Client:note_time(method, t)
  if type(t) ~= "table" then return end
  local operating = tonumber(t.operating)
  if operating then
    self.operating[method] = { operating = operating, reset_at = tonumber(t.operating_reset_at),
      processing = tonumber(t.processing) or tonumber(t.duration) }
  end
end

function Client:pace(method)
  local pause = self:operating_pause(method)
  if pause > 0 then
    self.counters.paused = self.counters.paused + 1
    self:logf("info", "pausing %.2fs before %s: its operating time is near the limit", pause, method)
    self.sleep(pause)
  end
  self:take_bucket()
end

-- A small generator of our own for the jitter: LuaJIT's math.random starts from
-- the same seed in every process, which would make processes retry in step.
local jitter_state = (floor((http.time() * 1e6) % 2147483647) + floor(tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 65521)) % 2147483646 + 1
local function jitter()
  jitter_state = (jitter_state * 48271) % 2147483647
  return jitter_state / 2147483647
end

function Client:backoff(attempt)
  local d = min(self.backoff_max, self.backoff_base * 2 ^ (attempt - 1))
  return d * (0.5 + jitter() * 0.5) -- "equal jitter": never less than half the step
end

-------------------------------------------------------------------------------
-- one HTTP exchange with the portal

function Client:url(method) return self.endpoint .. method end

-- params as the JSON body; `raw_body` (already JSON, without auth) for batch.
-- `creates`: the request must not run twice, so it gets a connection of its own
-- (libcurl repeats a request silently when a reused connection dies unanswered).
function Client:build_request(method, params, raw_body, creates)
  local body
  if raw_body then
    body = raw_body
    if self.oauth then
      body = raw_body:gsub("}%s*$", "") .. ((raw_body:match("^%s*{%s*}%s*$")) and "" or ",")
        .. '"auth":' .. json.encode(self.tokens.access_token) .. "}"
    end
  else
    local p = params
    if self.oauth then
      p = shallow_copy(params)
      p.auth = self.tokens.access_token
    end
    if p == nil or next(p) == nil then body = "{}" else
      local err
      body, err = json.encode(p)
      if not body then return nil, err end
    end
  end
  return {
    method = "POST", url = self:url(method), body = body,
    headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" },
    user_agent = _M.USER_AGENT, timeout = self.timeout, connect_timeout = self.connect_timeout,
    ca_file = self.ca_file, verify = self.verify, fresh_connect = creates or nil,
  }
end

-- curl codes: 60 peer certificate not verified, 58 client certificate, 77 CA file unreadable, 83 issuer check
local CERTIFICATE_ERRORS = { [60] = true, [58] = true, [77] = true, [83] = true }
-- libcurl's "could not resolve host" and "... proxy"
local RESOLVE_ERRORS = { [6] = true, [5] = true }

-- Sends once. Returns the decoded answer, or nil and an error whose `kind` is
-- "not_sent", "ambiguous" or "answer".
function Client:exchange(method, params, raw_body, creates)
  local req, eerr = self:build_request(method, params, raw_body, creates)
  if not req then
    return nil, new_error { code = "INVALID_PARAMS", description = "cannot encode the parameters: " .. tostring(eerr),
      method = method, retryable = false, kind = "local" }
  end
  self.counters.requests = self.counters.requests + 1
  local res, terr = self.transport(req)
  if not res and type(terr) == "table" and CERTIFICATE_ERRORS[terr.code] then
    -- Repeating cannot help: the portal's certificate is not trusted.
    local what
    if terr.code == 77 and self.ca_file then
      -- CURLE_SSL_CACERT_BADFILE: the CA given is the trouble, not a missing one
      what = ("the CA file %s (ca_file, BITRIX24_CA_FILE) cannot be loaded: %s"):format(tostring(self.ca_file),
        tostring(terr.message))
    else
      what = "the portal's TLS certificate was not accepted: " .. tostring(terr.message) ..
        " (give ca_file (BITRIX24_CA_FILE for the biconnector command) to trust a private CA, or verify = false to disable checking)"
    end
    return nil, new_error { code = "CERTIFICATE_ERROR", method = method, retryable = false, kind = "not_sent", sent = false,
      curl_code = terr.code, description = self:mask(what) }
  end
  if not res and type(terr) == "table" and tostring(terr.message or ""):find("larger than max_body", 1, true) then
    -- the portal answered (and ran the call), but too much to read: repeating gives the same
    return nil, new_error { code = "ANSWER_TOO_LARGE", method = method, retryable = false, kind = "answer", sent = true,
      maybe_executed = creates or nil, curl_code = terr.code, description = self:mask(tostring(terr.message)) }
  end
  if not res then
    local not_sent = type(terr) == "table" and terr.not_sent
    local timeout = type(terr) == "table" and terr.timeout
    local curl_code = type(terr) == "table" and terr.code or nil
    local description = self:mask(type(terr) == "table" and (terr.message or tostring(terr)) or tostring(terr))
    -- a name that does not resolve is nearly always a mistyped portal: one
    -- retry (a resolver's passing failure), not the whole schedule (24 s)
    local unresolved = RESOLVE_ERRORS[curl_code]
    if unresolved then description = description .. " (the portal's name does not resolve: check its spelling)" end
    return nil, new_error {
      code = not_sent and "CONNECT_FAILED" or (timeout and "TIMEOUT" or "TRANSPORT_ERROR"),
      description = description,
      method = method, retryable = true, kind = not_sent and "not_sent" or "ambiguous",
      curl_code = curl_code, sent = not not_sent,
    }
  end
  local data = json.decode(res.body)
  if type(data) ~= "table" then
    local snippet = res.body:sub(1, 120):gsub("%s+", " ")
    local code = res.status >= 500 and "INTERNAL_SERVER_ERROR" or "INVALID_RESPONSE"
    local location = res.status >= 300 and res.status < 400 and type(res.headers) == "table" and res.headers.location
    local what = location and ("the portal redirects to " .. tostring(location) .. " (redirects are not followed: give that address)")
      or ("the answer is not JSON: " .. snippet)
    return nil, new_error { code = code, status = res.status, method = method,
      description = self:mask(what), retryable = res.status >= 500,
      kind = res.status >= 500 and "ambiguous" or "answer" }
  end
  -- an error inside result is the same error as at the top level: one object, one policy
  -- (its code decides retries and renewal). At 200 only a biconnector.* result
  -- is read so (another method's result may hold `error` as data); an answer of
  -- any other status is an error, and its code is the one inside result when
  -- the top level has none, whatever the method.
  local failure = (data.error ~= nil and data.error ~= json.null) and data
    or (res.status == 200 and error_in_result(method, data.result))
    or (res.status ~= 200 and inner_error(data.result))
  if failure or res.status ~= 200 then
    failure = failure or data
    local code = (failure.error ~= nil and failure.error ~= json.null) and tostring(failure.error) or ("HTTP_" .. res.status)
    code = POLICY_CODES[upper(code)] or code
    local e = new_error { code = code, status = res.status, method = method,
      description = self:mask(tostring(failure.error_description or failure.error or "")), kind = "answer",
      retryable = false, time = data.time }
    if code == "QUERY_LIMIT_EXCEEDED" then e.retryable, e.kind = true, "refused"
    elseif code == "OPERATION_TIME_LIMIT" then e.retryable, e.kind = true, "refused"
    elseif res.status >= 500 and code ~= "OVERLOAD_LIMIT" and code ~= "PORTAL_DELETED" then
      e.retryable, e.kind = true, "ambiguous"
    end
    self:note_time(method, data.time)
    return nil, e
  end
  self:note_time(method, data.time)
  if data.result == nil then
    -- {} or [] from something that is not the REST API (a proxy, a wrong path)
    return nil, new_error { code = "INVALID_RESPONSE", status = res.status, method = method, retryable = false,
      kind = "answer", description = self:mask("the answer has neither result nor error: " .. res.body:sub(1, 120):gsub("%s+", " ")) }
  end
  return data
end

-- Whether the store's state `current` still holds this client's pair: a pair
-- at all (removed: the application was uninstalled, the store cleared) and,
-- with installation_key, the same installation's. -> true | nil, why, replaced
-- (true: another installation's pair is there)
function Client:same_pair(current)
  if type(current) ~= "table" or type(current.access_token) ~= "string" then
    return nil, "the token store holds no tokens any more (removed: the application was uninstalled, or the store cleared)"
  end
  local key = self.installation_key
  if key and current[key] ~= self.installation then
    return nil, "the token store holds another installation's tokens (its " .. key .. " changed)", true
  end
  return true
end

-- OAuth renewal through the store's lock: whoever takes the lock first renews;
-- the others find a different access token in the store and use it. A store
-- whose pair was removed or (installation_key) replaced by another
-- installation's is left as it is: nothing is renewed, nothing written back,
-- the answer is TOKENS_GONE and client.tokens_gone says why. The write itself
-- is a compare-and-set under the lock: the store read again must still hold
-- the pair renewed from (a Redis store checks that atomically as it writes).
function Client:renew(failed_token)
  local store = self.store
  local unlock, lerr = store:lock()
  if not unlock then
    return nil, new_error { code = "TOKEN_STORE_ERROR", description = self:mask(tostring(lerr)), retryable = false }
  end
  local function gone(why, renewed, replaced)
    self.tokens_gone, self.tokens_replaced = why, replaced or nil
    return nil, new_error { code = "TOKENS_GONE", retryable = false, replaced = replaced or nil,
      description = why .. (renewed and ": the renewed pair was not saved" or ": not renewed") }
  end
  local ok, res, err, how = pcall(function()
    local current, gerr = store:get()
    if current == nil and gerr then
      -- a store that cannot be read cannot be compared: a refresh token spent now may never be saved
      return nil, new_error { code = "TOKEN_STORE_ERROR", retryable = false,
        description = self:mask("the token store cannot be read, so the tokens were not renewed: " .. tostring(gerr)) }
    end
    local same, why, replaced = self:same_pair(current)
    if not same then return gone(why, false, replaced) end
    if current.access_token ~= failed_token then
      self:use_tokens(current)
      return true, nil, "adopted"
    end
    -- (without credentials, a pair another process renewed in the store is still taken, above)
    if not self.client_id or not self.client_secret then
      return nil, new_error { code = "expired_token", retryable = false,
        description = "the access token expired and no client_id/client_secret were given to renew it" }
    end
    local refresh = current.refresh_token or self.tokens.refresh_token
    if not refresh then return nil, new_error { code = "expired_token", description = "no refresh token to renew with", retryable = false } end
    local q = form.encode { grant_type = "refresh_token", client_id = self.client_id,
      client_secret = self.client_secret, refresh_token = refresh }
    local url = self.oauth_url .. (self.oauth_url:find("?", 1, true) and "&" or "?") .. q
    local answer, terr
    for attempt = 1, 3 do
      answer, terr = self.transport { method = "GET", url = url, user_agent = _M.USER_AGENT,
        headers = { Accept = "application/json" }, timeout = self.timeout, connect_timeout = self.connect_timeout,
        ca_file = self.ca_file, verify = self.verify }
      -- A refresh token is single-use: only a request that surely never left is repeated.
      -- (nor one the OAuth server's certificate refused: that gives the same again)
      if answer or not (type(terr) == "table" and terr.not_sent) or CERTIFICATE_ERRORS[terr.code] then break end
      self.sleep(self:backoff(attempt))
    end
    if not answer then
      local curl_code = type(terr) == "table" and terr.code or nil
      local what = type(terr) == "table" and (terr.message or "") or tostring(terr)
      local certificate = CERTIFICATE_ERRORS[curl_code] or nil
      if certificate then
        -- repeating cannot help: the OAuth server's certificate is not trusted (or the CA file does not load)
        what = (curl_code == 77 and self.ca_file)
          and ("the CA file %s (ca_file, BITRIX24_CA_FILE) cannot be loaded: %s"):format(tostring(self.ca_file), what)
          or ("the OAuth server's TLS certificate was not accepted: " .. what .. " (give ca_file (BITRIX24_CA_FILE for"
            .. " the biconnector command) to trust a private CA, or verify = false to disable checking)")
      end
      return nil, new_error { code = "RENEWAL_FAILED", retryable = false, curl_code = curl_code, certificate = certificate,
        description = self:mask("token renewal failed: " .. what) }
    end
    local data = json.decode(answer.body)
    if type(data) == "table" and data.error == json.null then data.error = nil end
    if type(data) ~= "table" or data.error or not data.access_token then
      return nil, new_error { code = type(data) == "table" and data.error and tostring(data.error) or "RENEWAL_FAILED",
        status = answer.status, retryable = false,
        description = self:mask("token renewal refused: " .. tostring(type(data) == "table" and (data.error_description or data.error) or answer.body:sub(1, 120))) }
    end
    local fresh = {}
    for k, v in pairs(data) do fresh[k] = v end
    -- a server that does not rotate refresh tokens leaves it out: keep ours
    if type(fresh.refresh_token) ~= "string" or fresh.refresh_token == "" then fresh.refresh_token = refresh end
    -- what the store held beside the tokens and the answer does not name stays
    -- (an installation's application_token, its portal: biconnector.app.server)
    for k, v in pairs(current) do if fresh[k] == nil then fresh[k] = v end end
    -- compare-and-set: only over the pair renewed from (a holder that ignored the
    -- lock, or took it after ours expired, may have removed or replaced it meanwhile)
    local now_held, nerr = store:get()
    if now_held == nil and nerr then
      return nil, new_error { code = "TOKEN_STORE_ERROR", retryable = false,
        description = self:mask("renewed, but the token store cannot be read to save the new tokens: " .. tostring(nerr)) }
    end
    same, why, replaced = self:same_pair(now_held)
    if not same then return gone(why, true, replaced) end
    if now_held.access_token ~= current.access_token or now_held.refresh_token ~= current.refresh_token then
      return gone("the token store's pair changed during the renewal", true)
    end
    local expect = { access_token = current.access_token, refresh_token = current.refresh_token or false }
    if self.installation_key then expect[self.installation_key] = self.installation or false end
    local saved, serr = store:set(fresh, expect)
    if saved == false then return gone("the token store's pair changed during the renewal", true) end
    self:use_tokens(fresh)
    self.counters.renewals = self.counters.renewals + 1
    if not saved then
      return nil, new_error { code = "TOKEN_STORE_ERROR", retryable = false,
        description = self:mask("renewed, but could not save the new tokens: " .. tostring(serr)) }
    end
    if self.on_tokens then pcall(self.on_tokens, shallow_copy(fresh)) end
    return true
  end)
  unlock()
  if not ok then error(res, 0) end
  return res, err, how
end

-- The policy loop around exchange: limiter, retries, renewal, 429 waits.
function Client:request(method, params, raw_body, creates)
  local attempt, renewed, ambiguous_before = 0, false, false
  local adopted = 0 -- pairs taken from the store (renewed elsewhere), which may have expired since
  if creates == nil then
    creates = self:is_create(method)
    -- "batch" called as a method (client:call, biconnector call batch): it creates
    -- when one of its commands does, as client:batch judges its chunks
    if not creates and method_name(method) == "batch" and type(params) == "table" and type(params.cmd) == "table" then
      for _, line in pairs(params.cmd) do
        if type(line) == "string" and self:is_create(command_method(line)) then creates = true break end
      end
    end
  end
  while true do
    self:pace(method)
    local used_token = self.oauth and self.tokens.access_token
    local data, err = self:exchange(method, params, raw_body, creates)
    if data then return data end
    err.attempts = attempt + 1
    if ambiguous_before and err.kind == "answer" then
      -- e.g. a delete that did run the first time now answers *_NOT_FOUND
      err.after_ambiguous = true
      err.description = err.description .. "; an earlier attempt got no clear answer and may have been executed"
    end
    if err.kind == "ambiguous" then ambiguous_before = true end
    if err.code == "expired_token" and self.oauth and not renewed then
      local ok, rerr, how = self:renew(used_token)
      if not ok then
        rerr.method = method
        return nil, rerr
      end
      -- Taking the pair another process stored is not this call's one renewal:
      -- stored over an hour ago, it has expired too, and is then renewed from.
      if how == "adopted" and adopted < 2 then adopted = adopted + 1 else renewed = true end
    else
      if err.code == "QUERY_LIMIT_EXCEEDED" then
        self.counters.sent_503 = self.counters.sent_503 + 1
        self.bucket.level = self.burst -- the portal's bucket is full: pace from here
        self.bucket.at = self.now()
      end
      if not err.retryable then return nil, err end
      if err.kind == "ambiguous" and creates then
        err.retryable = false
        err.maybe_executed = true
        err.description = err.description .. "; not repeated: " .. method ..
          " creates objects and the portal may have executed it (check before calling again)"
        return nil, err
      end
      attempt = attempt + 1
      if attempt > (RESOLVE_ERRORS[err.curl_code] and min(self.max_retries, 1) or self.max_retries) then
        err.description = err.description .. (" (gave up after %d attempts)"):format(attempt)
        return nil, err
      end
      local delay
      if err.code == "OPERATION_TIME_LIMIT" then
        local reset_at = type(err.time) == "table" and tonumber(err.time.operating_reset_at)
        if not reset_at then
          -- a refusal without its time block: the last successful answer's
          -- operating_reset_at, when still ahead (b24restdocs settings/performance/limits.md,
          -- "For the first retry, refer to operating_reset_at from the last successful response")
          local op = self.operating[method]
          reset_at = op and op.reset_at and op.reset_at > self.wall() and op.reset_at
        end
        delay = reset_at and (reset_at - self.wall()) or self:backoff(attempt)
        if delay > self.operating_wait_max then
          err.retryable = true
          err.description = err.description .. (" (resets in %.0f s, more than operating_wait_max)"):format(delay)
          return nil, err
        end
        delay = max(delay, 0.05)
      else
        delay = self:backoff(attempt)
      end
      self.counters.retries = self.counters.retries + 1
      self:logf("info", "%s failed (%s), retry %d in %.2fs", method, err.code, attempt, delay)
      self.sleep(delay)
    end
  end
end

-- client:call_raw(method, params) -> the whole answer (result, total, next, time)
function Client:call_raw(method, params)
  if type(method) ~= "string" or method == "" then error("call: method must be a non-empty string", 2) end
  if params ~= nil and type(params) ~= "table" then error("call: params must be a table", 2) end
  return self:request(method, params)
end

-- client:call(method, params) -> result, or nil, err
function Client:call(method, params)
  if type(method) ~= "string" or method == "" then error("call: method must be a non-empty string", 2) end
  if params ~= nil and type(params) ~= "table" then error("call: params must be a table", 2) end
  local data, err = self:request(method, params)
  if not data then return nil, err end
  return data.result
end

-------------------------------------------------------------------------------
-- paging

-- client:each(method, params [, opts]) -> iterator over every item of every page.
-- opts.mode: "start" (total/next), "page" (biconnector lists; default for
-- biconnector.*.list) or "fast" (order by ID, filter >ID, start=-1);
-- opts.id_key (default "ID") for the fast mode. The iterator raises the error
-- object when a page cannot be fetched; client:list() returns nil, err instead.
function Client:each(method, params, opts)
  opts = opts or {}
  -- the method's name as the portal reads it (any case, ".json" or not): a
  -- biconnector list paged by `start` would end after its first 50
  local mode = opts.mode or (opts.fast and "fast") or (method_name(method):match("^biconnector%..*%.list$") and "page") or "start"
  local page_size = opts.page_size or self.page_size
  local id_key = opts.id_key or "ID"
  local base = shallow_copy(params)
  local items, index, done = {}, 0, false
  local start, page, last_id = nil, 1, nil
  -- a caller's own `start` (start mode) or `page` (page mode) is the first
  -- page asked for: "from here on", not silently from the first page
  local function whole(v, least)
    v = tonumber(v)
    if v ~= nil and v == floor(v) and v >= least then return v end
  end
  if mode == "start" then start = whole(base.start, 0)
  elseif mode == "page" then page = whole(base.page, 1) or 1 end
  local seen, last_page, fetched = 0, nil, 0

  local function fetch()
    local p = shallow_copy(base)
    if mode == "start" then
      p.start = start
    elseif mode == "page" then
      p.page = page
      -- a portal whose answers carry next speaks start/next: give it both
      p.start = start
    elseif mode == "fast" then
      p.order = { [id_key] = "ASC" }
      local filter = shallow_copy(base.filter)
      if last_id ~= nil then filter[">" .. id_key] = last_id end
      p.filter = filter
      p.start = -1
    else
      error("each: unknown mode " .. tostring(mode), 3)
    end
    local data, err = self:request(method, p)
    if not data then error(err, 0) end
    local r = data.result
    items, index = items_of(r), 0
    if #items == 0 and r ~= nil and r ~= json.null and r ~= false then
      -- a scalar or an object holding no list at all: not a list method
      local listish = type(r) == "table" and is_array(r)
      if type(r) == "table" and not listish then
        for _, v in pairs(r) do if type(v) == "table" and is_array(v) then listish = true break end end
      end
      if not listish then
        error(new_error { code = "NOT_A_LIST", method = method, retryable = false, kind = "answer",
          description = "the result is not a list (nor an object holding one): use call, not each/list" }, 0)
      end
    end
    seen = seen + #items
    fetched = fetched + 1
    if opts.on_page then opts.on_page(fetched, seen, tonumber(data.total)) end
    -- A portal that does not advance (ignores start/page/filter) would make
    -- the loop endless: stop with an error instead.
    local function stuck(what)
      error(new_error { code = "PAGING_STUCK", method = method, retryable = false, kind = "answer",
        description = ("the list does not advance: %s (after %d items)"):format(what, seen) }, 0)
    end
    if mode == "start" then
      local nxt = tonumber(data.next)
      if nxt ~= nil and nxt <= (start or 0) then stuck(("next = %s again after start = %s"):format(tostring(data.next), tostring(start or 0))) end
      start = nxt
      done = start == nil
    elseif mode == "page" then
      local total = tonumber(data.total)
      start = tonumber(data.next)
      done = #items < page_size or (total ~= nil and seen >= total)
      if not done then
        local ok, text = pcall(json.encode, items)
        local sig = ok and text or nil
        if sig ~= nil and sig == last_page then stuck(("page %d repeats page %d"):format(page, page - 1)) end
        last_page = sig
      end
      page = page + 1
    else
      done = #items < page_size
      local last = items[#items]
      if last ~= nil then
        local id = last[id_key] or last[id_key:lower()] or last[id_key:upper()]
        if id == nil then error(new_error { code = "FAST_MODE_NO_ID", method = method,
          description = "fast paging needs the field " .. id_key .. " in every item (add it to select)" }, 0) end
        if not done and last_id ~= nil and tostring(id) == tostring(last_id) then
          stuck(("the last %s is %s again: the filter >%s was ignored"):format(id_key, tostring(id), id_key))
        end
        last_id = id
      end
    end
  end

  return function()
    while true do
      index = index + 1
      local item = items[index]
      if item ~= nil then return item end
      if done then return nil end
      fetch()
    end
  end
end

-- client:list(method, params [, opts]) -> array of every item, or nil, err
function Client:list(method, params, opts)
  local out = {}
  local ok, err = pcall(function()
    for item in self:each(method, params, opts) do out[#out + 1] = item end
  end)
  if not ok then
    if _M.is_error(err) then return nil, err end
    error(err, 0)
  end
  return json.as_array(out) -- an empty list encodes as [], as the portal sent it
end

-------------------------------------------------------------------------------
-- batch

local function command_line(c, key)
  if type(c) == "string" then return c end
  if type(c) ~= "table" then error(("batch: command %s must be a string or a table"):format(tostring(key)), 3) end
  local method = c.method or c[1]
  local params = c.params or c[2]
  if type(method) ~= "string" or method == "" then error(("batch: command %s has no method"):format(tostring(key)), 3) end
  if params == nil or next(params) == nil then return method end
  return method .. "?" .. form.encode(params)
end

-- A `$result[key][field]...` reference to a command of an earlier chunk: the
-- portal never saw that command in this request, so the value is put in here,
-- as the portal reads references (CRestUtil::processBatchElement): the whole
-- value, or inside a longer one, each running to the next white space. Only
-- scalars are put in (a reference to an object, or to a failed command, stays).
-- Only the values that hold a reference are rewritten: the rest of the line
-- stays as written, its names, their order (`order[DATE]=DESC&order[ID]=ASC`
-- is a sort priority) and their spelling.
-- -> the line, rewritten when something was resolved
local function resolve_earlier(line, earlier, results)
  local method, query = command_parts(line)
  if not query or not (query:find("$result[", 1, true) or query:find("%24result", 1, true)) then return line end
  local function put_in(path)
    local cur, first = nil, true
    for seg in path:gmatch("%[([^%]]*)%]") do
      if first then
        first = false
        local key = earlier[seg]
        if key == nil then return nil end
        cur = results[key]
      elseif type(cur) == "table" then
        local nxt = cur[seg]
        -- a PHP list is 0-based
        if nxt == nil and tonumber(seg) and is_array(cur) then nxt = cur[tonumber(seg) + 1] end
        cur = nxt
      else
        cur = nil
      end
      if cur == nil then return nil end
    end
    if type(cur) == "table" or cur == nil or cur == json.null then return nil end
    if type(cur) == "boolean" then return cur and "1" or "" end
    return tostring(cur)
  end
  local out, changed = {}, false
  for pair in (query .. "&"):gmatch("([^&]*)&") do
    local name, raw = pair:match("^([^=]*)=(.*)$")
    local decoded = name and raw:find("result", 1, true) and form.decode("v=" .. raw)
    local v = type(decoded) == "table" and decoded.v
    if type(v) == "string" and v:find("$result[", 1, true) then
      local nv = v:gsub("%$result(%[[^%s]*)", put_in)
      if nv ~= v then
        pair = name .. "=" .. form.encode({ v = nv }):sub(3)
        changed = true
      end
    end
    out[#out + 1] = pair
  end
  if not changed then return line end
  return method .. "?" .. concat(out, "&")
end

local function command_creates(self, line)
  return self:is_create(command_method(line))
end

-- Keyed answer parts ({} or [] when empty) mapped back to the caller's keys.
local function unkey(part, wire_to_key, into)
  if type(part) ~= "table" then return end
  if is_array(part) then
    for i, v in ipairs(part) do
      local k = wire_to_key[tostring(i - 1)]
      if k ~= nil then into[k] = v end
    end
  else
    for wk, v in pairs(part) do
      local k = wire_to_key[tostring(wk)]
      if k ~= nil then into[k] = v end
    end
  end
end

-- The last command of the chunk that starts at `first` (at most `last`). With
-- halt, a biconnector.* command may fail inside `result`, which the portal takes
-- for a success and does not halt on: after one, only biconnector reads (*.get,
-- *.list, *.fields) share its request; anything else waits for the next, sent
-- only when nothing before it failed.
local function chunk_end(entries, first, last, halt)
  if not halt then return last end
  local biconnector = false
  for i = first, last do
    local m = method_name(command_method(entries[i].line))
    if i > first and biconnector and not (m:match("^biconnector%.") and (m:match("%.get$") or m:match("%.list$")
      or m:match("%.fields$"))) then
      return i - 1
    end
    if m:match("^biconnector%.") then biconnector = true end
  end
  return last
end

-- client:batch(cmds [, opts]) -> results, errors, extra; or nil, err
-- cmds: an array (keys are positions) or a map (keys are names, sent in sorted
-- order); an array entry may carry its own name as `key`. A command is
-- "method?query", {method, params} or {method=, params=}. Sent in chunks of
-- 50; with opts.halt the first failing command stops the rest.
function Client:batch(cmds, opts)
  if type(cmds) ~= "table" then error("batch: commands must be a table", 2) end
  opts = opts or {}
  local chunk_size = min(opts.chunk_size or 50, 50)
  if type(chunk_size) ~= "number" or chunk_size < 1 or chunk_size ~= floor(chunk_size) then
    error("batch: chunk_size must be an integer from 1 to 50, got " .. tostring(opts.chunk_size), 2)
  end
  local entries = {}
  local count, sequence = 0, true
  for k in pairs(cmds) do
    count = count + 1
    if type(k) ~= "number" or k < 1 or k ~= floor(k) then sequence = false end
  end
  for i = 1, count do if cmds[i] == nil then sequence = false break end end
  if count > 0 and sequence then
    for i, c in ipairs(cmds) do
      local key = type(c) == "table" and c.key or i
      entries[#entries + 1] = { key = key, wire = tostring(key), line = command_line(c, key) }
    end
  else
    -- a map (or an array with holes): numeric keys first, in order, then names
    local keys = {}
    for k in pairs(cmds) do keys[#keys + 1] = k end
    sort(keys, function(a, b)
      local na, nb = type(a) == "number", type(b) == "number"
      if na ~= nb then return na end
      if na then return a < b end
      return tostring(a) < tostring(b)
    end)
    for _, k in ipairs(keys) do
      entries[#entries + 1] = { key = k, wire = tostring(k), line = command_line(cmds[k], k) }
    end
  end
  local wires = {}
  for _, e in ipairs(entries) do
    if wires[e.wire] then error(("batch: the key %s names two commands"):format(e.wire), 2) end
    wires[e.wire] = true
  end
  local results, errors = {}, {}
  local extra = { total = {}, next = {}, time = {}, requests = 0 }
  local earlier = {} -- wire key -> caller key, of the commands of the chunks sent
  local first = 1
  while first <= #entries do
    local last = chunk_end(entries, first, min(first + chunk_size - 1, #entries), opts.halt)
    local parts, wire_to_key, creates = {}, {}, false
    for i = first, last do
      local e = entries[i]
      if first > 1 then e.line = resolve_earlier(e.line, earlier, results) end
      parts[#parts + 1] = json.encode(e.wire) .. ":" .. json.encode(e.line)
      wire_to_key[e.wire] = e.key
      if command_creates(self, e.line) then creates = true end
    end
    -- Built by hand so that the commands keep their order with any encoder.
    local body = '{"halt":' .. (opts.halt and "1" or "0") .. ',"cmd":{' .. concat(parts, ",") .. "}}"
    local data, err = self:request("batch", nil, body, creates)
    extra.requests = extra.requests + 1
    if not data then
      -- what earlier chunks did stays known (their creates did happen)
      err.results, err.errors, err.extra = results, errors, extra
      return nil, err
    end
    local r = type(data.result) == "table" and data.result or {}
    unkey(r.result, wire_to_key, results)
    local raw_errors = {}
    unkey(r.result_error, wire_to_key, raw_errors)
    for i = first, last do
      local e = entries[i]
      local inner = error_in_result(command_method(e.line), results[e.key])
      if inner then
        results[e.key] = nil
        raw_errors[e.key] = inner
      end
    end
    for wire, key in pairs(wire_to_key) do earlier[wire] = key end
    unkey(r.result_total, wire_to_key, extra.total)
    unkey(r.result_next, wire_to_key, extra.next)
    unkey(r.result_time, wire_to_key, extra.time)
    if opts.halt then
      -- halt: nothing after the first failing command. The portal halts on its
      -- own errors, not on a biconnector.* error inside `result` (a success to it):
      -- the reads it still ran after one (chunk_end let only reads follow) are dropped.
      local halted = false
      for i = first, last do
        local k = entries[i].key
        if halted then
          results[k], raw_errors[k], extra.total[k], extra.next[k], extra.time[k] = nil, nil, nil, nil, nil
        elseif raw_errors[k] ~= nil then
          halted = true
        end
      end
    end
    local failed = false
    for k, v in pairs(raw_errors) do
      failed = true
      local line
      for _, e in ipairs(entries) do if e.key == k then line = e.line end end
      errors[k] = new_error { code = type(v) == "table" and tostring(v.error) or tostring(v),
        description = self:mask(type(v) == "table" and tostring(v.error_description or "") or ""),
        method = line and command_method(line), retryable = false, key = k }
    end
    for i = first, last do
      local e = entries[i]
      if extra.time[e.key] ~= nil then self:note_time(command_method(e.line), extra.time[e.key]) end
    end
    if failed and opts.halt then break end
    first = last + 1
  end
  return results, errors, extra
end

-------------------------------------------------------------------------------
-- rest.ngx_transport([opts]): the OpenResty transport, on cosockets
-- (biconnector.rest.transport_ngx; docs/rest.md, "OpenResty transport").
function _M.ngx_transport(opts)
  return transport_ngx.new(opts, _M.USER_AGENT)
end

return _M
