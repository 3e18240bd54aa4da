-- biconnector.host.dev (public name biconnector.dev): the browser page of `biconnector serve --dev` (docs/dev.md).
-- dev.wrap(handler, opts) returns a core.server handler that answers the page
-- (`/`), its static files (`/_dev/dev.css`, `/_dev/dev.js`) and two helper
-- endpoints (`GET /_dev/info`, `POST /_dev/verify`), and hands every other
-- request to `handler` (the connector, whose check guards every data request).
-- Nothing here is reachable without --dev: serve.lua only calls wrap then.
local core = require "biconnector.core"
local json = require "biconnector.json"
local logline = require "biconnector.host.logline"
local finisher = require("biconnector.connector.core").finisher
local masked_url = require("biconnector.sql.server_url").masked
local verify = require "biconnector.cli.verify"

local process = core.process
local format, concat = string.format, table.concat
local type, pairs, ipairs, tostring, pcall = type, pairs, ipairs, tostring, pcall

local _M = { _VERSION = core.version }

-- The page's files sit in dev/ beside this module, in a checkout and once
-- installed (CMake installs lua/biconnector/host/dev/*.html, *.css, *.js with the modules).
local HERE = (debug.getinfo(1, "S").source:match("^@(.*)[/\\][^/\\]*$") or ".") .. "/dev/"
_M.STATIC_DIR = HERE

local STATIC = {
  ["/"] = { "index.html", "text/html; charset=utf-8" },
  ["/_dev/dev.css"] = { "dev.css", "text/css; charset=utf-8" },
  ["/_dev/dev.js"] = { "dev.js", "text/javascript; charset=utf-8" },
}

-- Sent with everything the page serves (and, under --dev, with the connector's
-- answers too): nothing is cached, no inline script runs, no framing.
_M.CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
  .. "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

local function security_headers(content_type)
  return {
    ["Content-Type"] = content_type,
    ["Cache-Control"] = "no-store",
    ["Content-Security-Policy"] = _M.CSP,
    ["X-Content-Type-Options"] = "nosniff",
    ["X-Frame-Options"] = "DENY",
    ["Referrer-Policy"] = "no-referrer",
  }
end

local JSON_TYPE = "application/json; charset=utf-8"

local function json_answer(status, value)
  return status, security_headers(JSON_TYPE), assert(json.encode(value))
end

local function json_error(status, code, message)
  return json_answer(status, { error = code, message = message })
end

-- 405 for a dev page path asked with another method: `use METHOD`, Allow: ALLOW.
local function not_allowed(method, allow)
  local s, h, b = json_error(405, "method_not_allowed", "use " .. method)
  h["Allow"] = allow
  return s, h, b
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return text
end

-- The page's files, read once at start: a missing file stops `serve --dev` with its path.
function _M.load_static(dir)
  dir = dir or HERE
  local files = {}
  for path, spec in pairs(STATIC) do
    local text, err = read_file(dir .. spec[1])
    if not text then
      error(format("the dev page file %s is missing (%s); it is installed with the Lua modules", dir .. spec[1],
        tostring(err)), 0)
    end
    files[path] = { body = text, type = spec[2] }
  end
  return files
end

-- The Host rule (docs/security.md, "The Host rule"): the name in the Host
-- header is an IP literal, localhost, or one of names (a set made by
-- dev.host_names: the --listen host and the --allow-host names), in any case,
-- with any port. A page of another site that rebinds its own name to
-- 127.0.0.1 sends its own name, which is none of them.
function _M.host_allowed(host, names)
  if type(host) ~= "string" or host == "" then return false end
  if host:match("^%[[%x:.]+%]:?%d*$") then return true end
  local name = host:match("^([^:]+):?%d*$")
  if not name then return false end
  name = name:lower():gsub("%.$", "") -- a fully qualified "localhost." is localhost
  return name == "localhost" or name:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or (names ~= nil and names[name] == true)
end

-- A list of host names -> the set host_allowed takes (lower case, no trailing dot).
function _M.host_names(list)
  local set = {}
  for _, name in ipairs(list or {}) do set[(name:lower():gsub("%.$", ""))] = true end
  return set
end

-- The message of a 403 for a refused Host.
local function host_refused(host, what)
  local got = "no Host header"
  if host ~= nil then
    got = logline.quote(host) -- control bytes and what is not UTF-8 escaped
    if got:sub(1, 1) ~= '"' then got = '"' .. got .. '"' end
  end
  return format("%s answers only a Host that is an IP address, localhost, the --listen host or a name "
    .. "given with --allow-host (a guard against DNS rebinding), got %s", what, got)
end

-- The settings the printed link carries: for each setting of the connector,
-- BICONNECTOR_SETTING_<CODE> (upper case, other characters as _) from the
-- environment, else `known[code]` (e.g. a SQL source's token), else empty.
function _M.initial_settings(settings, known, getenv)
  getenv = getenv or os.getenv
  local values = {}
  for i, s in ipairs(settings or {}) do
    local name = "BICONNECTOR_SETTING_" .. s.code:upper():gsub("[^%w]", "_")
    local v = getenv(name)
    if v == nil and known then v = known[s.code] end
    values[i] = { s.code, v ~= nil and tostring(v) or "" }
  end
  return values
end

-- encodeURIComponent: what the page's URLSearchParams reads back exactly.
local function uri_component(s)
  return (tostring(s):gsub("[^%w%-_%.!~%*'%(%)]", function(c) return format("%%%02X", c:byte()) end))
end

-- The link printed on start: the settings travel in the fragment, which the
-- browser never sends to any server (so no access log holds them). With no
-- settings (a --no-auth database) it is the page's address: no empty `#`.
function _M.link(base, values)
  if #values == 0 then return base .. "/" end
  local parts = {}
  for i, kv in ipairs(values) do parts[i] = uri_component(kv[1]) .. "=" .. uri_component(kv[2]) end
  return base .. "/#" .. concat(parts, "&")
end

-- The descriptors a forked child holds that belong to the server (its
-- listening socket and the connections open at fork time): closed in the
-- verify child so that a closed connection or a stopped server is not held
-- open by it. Pipes (the signal pipe) and the rest are left alone.
local function close_inherited_sockets()
  local pid = process.getpid()
  local p = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null")
  if not p then return end
  local listing = p:read("a")
  p:close()
  for fd in listing:gmatch(" (%d+) %-> socket:") do
    local n = tonumber(fd)
    if n and n > 2 then pcall(process.close, n) end
  end
end

local function settings_from(value)
  local settings = {}
  if value == nil or value == json.null then return settings end
  if type(value) ~= "table" then return nil, "settings must be an object of setting code -> value" end
  for k, v in pairs(value) do
    if type(k) ~= "string" then return nil, "settings must be an object of setting code -> value" end
    if type(v) ~= "string" and type(v) ~= "number" then
      return nil, format("settings.%s must be a string, got %s", k, v == json.null and "null" or type(v))
    end
    settings[k] = tostring(v)
  end
  return settings
end

-- A handler's answer with Cache-Control: no-store; an answer that waits
-- (core.server.WAIT, fd, seconds, finish, continue) gets it when it comes.
local WAIT = core.server.WAIT
local function no_store(status, headers, body, finish, continue)
  if status == WAIT then
    return status, headers, body, finish, function() return no_store(continue()) end
  end
  if type(headers) == "table" then headers["Cache-Control"] = "no-store" end
  return status, headers, body, finish
end

-- The access line with its time, as `serve` writes it.
local function access_log(line)
  io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ") .. " " .. line .. "\n")
end
local LOGGED, QUIET = { access_log = access_log }, {}

-- The finish function of an answer made here (the connector's finisher: its
-- access line unless quiet); `how` overrides the way the server says it ended.
local function access_logger(req, status, started, bytes_of, quiet, endpoint, how_override)
  local finish = finisher(req, quiet and QUIET or LOGGED, status,
    { endpoint = endpoint }, started)
  return function(how) finish(how_override or how, bytes_of()) end
end

-- dev.host_guard(handler, opts) -> handler: a request whose Host the rule
-- refuses (see host_allowed; opts.names from dev.host_names) is answered 403
-- and logged with end=refused; the others go to handler. `serve` puts every
-- endpoint behind it under --no-auth and --dev.
function _M.host_guard(handler, opts)
  local names, quiet = opts.names, opts.quiet
  return function(req)
    local host = req.headers and req.headers.host
    if _M.host_allowed(host, names) then return handler(req) end
    local started = process.clock()
    local status, headers, body = json_error(403, "forbidden", host_refused(host, "this server (--no-auth, --dev)"))
    return status, headers, body, access_logger(req, status, started, function() return #body end, quiet, nil,
      "refused")
  end
end

-- The Origin rule (docs/dev.md, "Security"): a request that carries an
-- Origin (a browser's page) is answered only when it is the page's own:
-- scheme://Host, the scheme that of this server (base) unless a proxy in
-- front says otherwise with X-Forwarded-Proto (a cross-site page cannot set
-- that header without a CORS preflight, which is never granted). A request
-- without Origin (Bitrix24, biconnector verify, curl) passes.
-- -> nil | the reason for a 403
function _M.origin_refused(req, base, what)
  local headers = req.headers or {}
  local origin = headers.origin
  if origin == nil then return nil end
  local own_scheme = (base or "http:"):match("^(%a+):") or "http"
  local forwarded = (headers["x-forwarded-proto"] or ""):match("^%s*(%a+)")
  forwarded = forwarded and forwarded:lower()
  local scheme = (forwarded == "http" or forwarded == "https") and forwarded or own_scheme:lower()
  local host = tostring(headers.host):lower()
  local page = scheme .. "://" .. host
  if origin:lower() == page then return nil end
  local why = format("%s answer only their own page (%s), got Origin %s", what, page, logline.quote(origin))
  if scheme == "http" and forwarded == nil and origin:lower() == "https://" .. host then
    -- the page was loaded over https from a proxy in front that does not say so
    why = why .. ": behind an HTTPS proxy, have it send X-Forwarded-Proto: https (docs/dev.md)"
  end
  return why
end

-- dev.wrap(handler, opts) -> handler
-- opts: connector (title, settings; or a function returning the current
-- one), base (the server's own base URL, prefix
-- included: what Verify checks), prefix, source (what serve was given),
-- quiet (no access lines), verify_options (extra verify.run options),
-- host_names (dev.host_names: more names the Host rule allows).
function _M.wrap(handler, opts)
  local files = _M.load_static(opts.static_dir)
  -- opts.connector: a connector, or a function giving the current one (serve reloads it on SIGHUP)
  local current = type(opts.connector) == "function" and opts.connector or function() return opts.connector end
  local base = opts.base
  local prefix = opts.prefix or ""
  local quiet = opts.quiet
  local running -- the verify child of this process, at most one at a time

  local function info_body()
    local connector = current()
    local settings = {}
    for i, s in ipairs(connector.settings or {}) do
      settings[i] = { code = s.code, name = s.name, type = s.type }
    end
    return assert(json.encode({
      title = connector.title or "connector",
      version = core.version,
      source = masked_url(opts.source or ""),
      settings = json.as_array(settings),
      prefix = prefix,
      endpoints = { check = prefix .. "/check", table_list = prefix .. "/table_list",
        table_description = prefix .. "/table_description", data = prefix .. "/data" },
      verify = "/_dev/verify",
    }))
  end

  local function finish_logger(req, status, started, bytes_of)
    return access_logger(req, status, started, bytes_of, quiet, "dev")
  end

  local function start_verify(req)
    if (req.headers["content-type"] or ""):lower():match("^application/json") == nil then
      -- a cross-site form cannot send this type without a CORS preflight, which is never answered
      return json_error(415, "unsupported_media_type",
        "POST /_dev/verify takes a JSON body (Content-Type: application/json)")
    end
    local body, err = json.decode(req.body or "")
    if type(body) ~= "table" then
      return json_error(400, "bad_request", "the body must be a JSON object: " .. tostring(err or type(body)))
    end
    local settings_values, serr = settings_from(body.settings)
    if not settings_values then return json_error(400, "bad_request", serr) end
    local mode = body.body
    if mode == nil or mode == json.null then mode = "form" end
    if mode ~= "form" and mode ~= "json" and mode ~= "both" then
      return json_error(400, "bad_request", "body must be form, json or both, got " .. tostring(mode))
    end
    local tables = {}
    if body.tables ~= nil and body.tables ~= json.null then
      if type(body.tables) ~= "table" then
        return json_error(400, "bad_request", "tables must be a list of table codes")
      end
      for i, t in ipairs(body.tables) do
        if type(t) ~= "string" then return json_error(400, "bad_request", "tables must be a list of table codes") end
        tables[i] = t
      end
    end
    if running then
      return json_error(409, "conflict", "a Verify run is already going on; wait for its report")
    end

    local result = os.tmpname() -- made by mkstemp: ours alone
    local pid, ferr = process.fork()
    if not pid then
      os.remove(result)
      return json_error(500, "internal_error", "cannot start Verify: " .. tostring(ferr))
    end
    if pid == 0 then
      -- the child: verify.run against this very server, over HTTP, then the report to the file
      local ok, text = pcall(function()
        close_inherited_sockets()
        -- this server is the local copy under development, not the address Bitrix24 is given
        local vopts = { settings = settings_values, body = mode, tables = tables, allow_local = true }
        for k, v in pairs(opts.verify_options or {}) do vopts[k] = v end
        local report = verify.run(base, vopts)
        json.as_array(report.checks)
        return assert(json.encode(report))
      end)
      if not ok then
        text = json.encode({ error = "internal_error", message = "Verify failed: " .. tostring(text) })
          or '{"error":"internal_error","message":"Verify failed"}'
      end
      local f = io.open(result, "wb")
      if f then
        f:write(text)
        f:close()
      end
      process.exit(ok and 0 or 1)
    end

    -- the parent: answers at once with a stream that ends when the child does
    running = pid
    local reaped, done, sent = false, false, 0
    local keepalive = process.clock() + 1
    local function reap(block)
      if reaped then return true end
      local got = process.wait(pid, block)
      if got then reaped = true end
      return reaped
    end
    local function cleanup()
      if not reaped then
        pcall(process.kill, pid, "KILL")
        reap(true)
      end
      os.remove(result)
      if running == pid then running = nil end
    end
    local function body_iterator()
      if done then return nil end
      local ended = reap(false)
      if not ended then
        -- a short pause: the loop serves the child's own requests between rounds
        process.sleep(0.002)
        if process.clock() >= keepalive then
          -- JSON allows leading white space: keeps the connection from idling out
          keepalive = process.clock() + 1
          sent = sent + 1
          return " "
        end
        return ""
      end
      done = true
      local text = read_file(result)
      cleanup()
      if text == nil or text == "" then
        text = '{"error":"internal_error","message":"Verify ended without a report (see the server log)"}'
      end
      sent = sent + #text
      return text
    end
    local started = process.clock()
    local log = finish_logger(req, 200, started, function() return sent end)
    return 200, security_headers(JSON_TYPE), body_iterator, function(how)
      cleanup()
      log(how)
    end
  end

  local function answer_dev(req)
    if not _M.host_allowed(req.headers.host, opts.host_names) then
      return json_error(403, "forbidden", host_refused(req.headers.host, "the dev page"))
    end
    local refused = _M.origin_refused(req, base, "the dev endpoints")
    if refused then return json_error(403, "forbidden", refused) end
    local file = files[req.path]
    if file then
      if req.method ~= "GET" and req.method ~= "HEAD" then return not_allowed("GET", "GET, HEAD") end
      return 200, security_headers(file.type), req.method == "HEAD" and "" or file.body
    elseif req.path == "/_dev/info" then
      if req.method ~= "GET" then return not_allowed("GET", "GET") end
      return 200, security_headers(JSON_TYPE), info_body()
    elseif req.path == "/_dev/verify" then
      if req.method ~= "POST" then return not_allowed("POST", "POST") end
      return start_verify(req)
    end
    return json_error(404, "not_found", "no such dev page file: " .. tostring(req.path))
  end

  return function(req)
    local path = req.path or ""
    if path == "/" or path:sub(1, 6) == "/_dev/" then
      local started = process.clock()
      local ok, status, headers, body, finish = pcall(answer_dev, req)
      if not ok then
        io.stderr:write(os.date("!%Y-%m-%dT%H:%M:%SZ"), " ERROR ",
          logline.quote("dev page failed: " .. tostring(status)), "\n")
        status, headers, body = json_error(500, "internal_error", "the dev page failed; see the server log")
      end
      if finish then return status, headers, body, finish end
      local bytes = type(body) == "string" and #body or 0
      return status, headers, body, finish_logger(req, status, started, function() return bytes end)
    end
    -- the Origin rule on the connector's endpoints too: a page of another site
    -- in the developer's browser could post to them (with the token the dev
    -- page shows, or none under --no-auth); Bitrix24 sends no Origin
    local refused = _M.origin_refused(req, base, "under --dev the connector's endpoints")
    if refused then
      local started = process.clock()
      local status, headers, body = json_error(403, "forbidden", refused)
      headers["Cache-Control"] = "no-store"
      return status, headers, body, access_logger(req, status, started, function() return #body end, quiet, nil,
        "refused")
    end
    return no_store(handler(req))
  end
end

return _M
