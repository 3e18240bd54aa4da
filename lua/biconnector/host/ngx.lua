-- OpenResty / nginx (lua-nginx-module) glue: serves a connector from
-- content_by_lua*. The connector core does no I/O; this file reads the
-- request through the nginx API, calls c:handle and sends the answer,
-- streaming a urlData iterator chunk by chunk with ngx.flush(true).
--
--   init_by_lua_block    { require("biconnector.host.ngx").load("/srv/bi/connector.lua") }
--   location /bitrix/ {
--     content_by_lua_block { require("biconnector.host.ngx").serve("/srv/bi/connector.lua", { prefix = "/bitrix" }) }
--   }
local core = require "biconnector.core"
local connector_mod = require "biconnector.connector.core"
local errors = require "biconnector.connector.errors"
local logline = require "biconnector.host.logline"
local caches = require "biconnector.connector.cache"
local metrics = require "biconnector.host.metrics"

local ngx = ngx
local format, concat = string.format, table.concat
local type, tostring, pairs, ipairs, pcall, xpcall = type, tostring, pairs, ipairs, pcall, xpcall
local setmetatable = setmetatable
local open = io.open

local _M = { _VERSION = core.version }

-- Variables set for log_format when the configuration declares them
-- (`set $bic_endpoint "";` ...); see docs/openresty.md.
_M.VARIABLES = { "bic_endpoint", "bic_table", "bic_rows", "bic_bytes", "bic_error", "bic_end" }

local JSON_TYPE = errors.JSON_TYPE

-- ---- the per-worker cache of connector files ---------------------------------

local cache = {} -- path -> connector; one per Lua VM, i.e. per worker (or inherited from the master)

-- ngx.load(path) -> connector, loaded once per path; raises "<path>: <problem>".
function _M.load(path)
  if type(path) ~= "string" or path == "" then
    error("biconnector.ngx.load: expected a connector file path, got " .. type(path), 2)
  end
  local c = cache[path]
  if c then return c end
  c = connector_mod.load(path)
  cache[path] = c
  return c
end

-- ngx.forget([path]) drops one cached connector (or all): the next request loads the file again.
function _M.forget(path)
  if path == nil then cache = {} else cache[path] = nil end
end

-- ngx.cached(path) -> the cached connector or nil (no loading).
function _M.cached(path)
  return cache[path]
end

-- ---- log lines ---------------------------------------------------------------

local quote = logline.quote

local function log_levels()
  return { error = ngx.ERR, err = ngx.ERR, warn = ngx.WARN, warning = ngx.WARN,
           notice = ngx.NOTICE, info = ngx.INFO, debug = ngx.DEBUG }
end

-- The connector's log hook (handle's opts.log): one ngx.log line, the message
-- then key=value fields; a field called `connection` is dropped.
function _M.log(level, message, fields)
  ngx.log(log_levels()[level] or ngx.NOTICE, "biconnector: ", quote(message), logline.fields(fields))
end

-- ---- the request -------------------------------------------------------------

local function read_file(path)
  local f, err = open(path, "rb")
  if not f then return nil, err end
  local data = f:read("*a")
  f:close()
  if data == nil then return nil, "cannot read " .. path end
  return data
end

-- The request body: the buffered data, or the file nginx spooled it to (past
-- client_body_buffer_size). -> body, from_file | nil, err
local function read_body()
  ngx.req.read_body() -- over client_max_body_size nginx answers 413 itself and we never come back
  local body = ngx.req.get_body_data()
  if body ~= nil then return body, false end
  local file = ngx.req.get_body_file()
  if not file then return "", false end
  local data, err = read_file(file)
  if not data then return nil, "cannot read the spooled request body: " .. tostring(err) end
  return data, true
end

-- ngx.request([max_headers [, uri]]) -> { method, path, headers (lower-case names,
-- repeated ones joined with ", "), body, remote } for c:handle; nil, err when
-- the body cannot be read. uri: $uri when the caller has read it already.
function _M.request(max_headers, uri)
  -- names come lower-cased; a repeated header comes as a list, joined here.
  -- The table's metatable (any spelling looked up through a function) goes:
  -- each header the connector looks for and the request lacks would run it.
  -- All of them by default (0), as `biconnector serve` reads them: past
  -- lua-nginx-module's 100 a Content-Type or Content-Encoding went unseen
  -- (the body then sniffed). nginx bounds them: large_client_header_buffers.
  local headers = setmetatable(ngx.req.get_headers(max_headers or 0), nil)
  for name, value in pairs(headers) do
    if type(value) == "table" then headers[name] = concat(value, ", ") end
  end
  local body, from_file = read_body()
  if not body then return nil, from_file end
  return {
    method = ngx.req.get_method(),
    path = uri or ngx.var.uri,
    headers = headers,
    body = body,
    remote = ngx.var.remote_addr or "",
    body_in_file = from_file,
  }
end

-- The request serve() hands the connector, which reads two headers only
-- (the body's type and coding) and the remote address only for an access
-- line: each ngx.var lookup and ngx.req.get_headers go through the FFI,
-- which the interpreter runs slowly, and a small request (/check) is mostly
-- interpreted (issue 25: get_headers alone was about a tenth of a /check's
-- worker CPU). $http_content_type is the first Content-Type of a repeated
-- one, where ngx.request joins them (docs/openresty.md); a Content-Encoding
-- is joined (content_encoding above).
-- A Content-Encoding (rare: Bitrix24 sends none) is read from all the
-- headers, a repeated one joined as `biconnector serve` joins it: the first
-- alone ("identity" before "gzip") would have a compressed body read as plain.
local function content_encoding(ce)
  if ce == nil then return nil end
  local all = ngx.req.get_headers(0)["content-encoding"]
  if type(all) == "table" then return concat(all, ", ") end
  return ce
end

-- The nginx variables every answer reads, read in one loop: a loop is what
-- LuaJIT compiles, FFI calls and all (resty.core's ngx.var), where the same
-- four reads spelled one after the other run in the interpreter, which
-- makes each FFI call slowly (issue 25: 8.9k instructions a request against
-- 3.3k in the loop, callgrind). The values table is the worker's, refilled
-- by each request before it can yield.
local REQUEST_VARS = { "uri", "request_uri", "http_content_type", "http_content_encoding" }
local N_REQUEST_VARS = #REQUEST_VARS
local request_vars = {}
local function read_request_vars()
  local var, values = ngx.var, request_vars
  for i = 1, N_REQUEST_VARS do values[i] = var[REQUEST_VARS[i]] end
  return values[1], values[2], values[3], values[4]
end

local function serve_request(uri, content_type, encoding, with_remote)
  local body, from_file = read_body()
  if not body then return nil, from_file end
  return {
    method = ngx.req.get_method(),
    path = uri,
    headers = { ["content-type"] = content_type, ["content-encoding"] = content_encoding(encoding) },
    body = body,
    remote = with_remote and ngx.var.remote_addr or "",
    body_in_file = from_file,
  }
end

-- A given prefix is taken as `biconnector serve --prefix` takes it: a
-- leading slash added, trailing ones dropped ("bitrix/" is "/bitrix"; "/"
-- none). Normalised once per string (the first 64 strings a worker sees:
-- a prefix made per request is not kept).
local given_prefixes, n_given = {}, 0
local function given_prefix(given)
  local p = given_prefixes[given]
  if p == nil then
    p = tostring(given)
    if p ~= "" and p:sub(1, 1) ~= "/" then p = "/" .. p end
    p = p:gsub("/+$", "")
    if n_given < 64 then
      n_given = n_given + 1
      given_prefixes[given] = p
    end
  end
  return p ~= "" and p or nil
end

-- The prefix to strip: opts.prefix as given, else everything before the
-- last path segment (the endpoints are single segments), so that one
-- `location /any/prefix/` works without repeating the prefix.
local function prefix_of(path, given)
  if given ~= nil then return given_prefix(given) end
  local trimmed = path:gsub("/+$", "")
  local dir = trimmed:match("^(.*)/[^/]*$")
  if dir == nil or dir == "" then return nil end
  return dir
end
_M.prefix_of = prefix_of

-- ---- sending -----------------------------------------------------------------

local function set_var(name, value) ngx.var[name] = value end

-- Whether `set $name` declares each variable: nginx variables are declared
-- for the whole configuration, and a configuration (reload) gets a new Lua
-- VM, so the first failed write holds for good. Errors are costly in LuaJIT.
local undeclared, n_undeclared = {}, 0

local function publish(info, bytes, how)
  info.sent = bytes
  info["end"] = how
  ngx.ctx.biconnector = info
  if n_undeclared == #_M.VARIABLES then return end -- none declared: no table to make
  local values = {
    bic_endpoint = info.endpoint or "-", bic_table = info.table or "-",
    bic_rows = tostring(info.rows or 0), bic_bytes = tostring(bytes),
    bic_error = info.error or "-", bic_end = how,
  }
  for _, name in ipairs(_M.VARIABLES) do
    if not undeclared[name] and not pcall(set_var, name, values[name]) then
      undeclared[name] = true
      n_undeclared = n_undeclared + 1
    end
  end
end

-- An error in the glue itself: an id, the message in the error log, a JSON 500.
local function glue_error(err, trace)
  local id = errors.new_id()
  ngx.log(ngx.ERR, "biconnector: ", quote("glue failed: " .. tostring(err)), " id=", id,
    trace and (" traceback=" .. quote(trace)) or "")
  return id
end

local function send_headers(status, headers)
  if status ~= 200 then ngx.status = status end -- 200 is nginx's own default (one FFI call fewer)
  if type(headers) == "table" then
    for name, value in pairs(headers) do ngx.header[name] = value end
  end
end

-- The work of one request up to the first byte sent; runs under xpcall.
-- make(name), made once per name for the worker's life.
local function once_per_name(make)
  local made = {}
  return function(name)
    local v = made[name]
    if v == nil then
      v = make(name)
      made[name] = v
    end
    return v
  end
end

-- The biconnector.cache store over a lua_shared_dict (by name).
_M.cache_store = once_per_name(caches.ngx_shared)

-- The access line of `biconnector serve` (from the connector's finisher),
-- without the time (nginx adds it).
local function access_log(line)
  ngx.log(ngx.NOTICE, "biconnector: ", line)
end

-- The namespace of a connector object's answers in a shared cache: the path
-- glue.load loaded it from (as serve(path) has it), else its title and its
-- identity, so that two objects of the same title never answer each other's
-- cached lists (under `biconnector serve` each object has a store of its
-- own). An object made in init_by_lua lives at the same address in every
-- forked worker, so the workers still share its answers. Made once per object.
local namespaces = setmetatable({}, { __mode = "k" })
local function namespace_of(c)
  local ns = namespaces[c]
  if ns then return ns end
  for path, loaded in pairs(cache) do
    if loaded == c then ns = path break end
  end
  ns = ns or (tostring(c.title) .. "\0" .. tostring(c))
  namespaces[c] = ns
  return ns
end

-- The options c:answer gets, which the connector only reads: made once per
-- prefix given as a string (the first 64) and the other options of serve
-- (compared each time), where a table of six to eight fields made per
-- request was about a seventh of what a small request allocated (issue 25).
-- Without a prefix, the path decides the prefix: made per request.
local kept_answer_opts, n_kept_answer_opts = {}, 0
local function answer_options(target, c, opts, path)
  local given = opts.prefix
  local log, chunk_size, metrics_name, cache_name = opts.log or _M.log, opts.chunk_size, opts.metrics, opts.cache
  local with_access = opts.access_log and true or false
  local namespace = nil
  if cache_name then namespace = type(target) == "string" and target or namespace_of(c) end
  local kept = type(given) == "string" and kept_answer_opts[given] or nil
  if kept and kept.log == log and kept.chunk_size == chunk_size and kept.metrics_name == metrics_name
    and kept.with_access == with_access and kept.cache_name == cache_name and kept.namespace == namespace then
    return kept.opts
  end
  local answer_opts = {
    prefix = prefix_of(path, given),
    bare_path = true, -- $uri: decoded, without the query string (a ? in it was %3F)
    log = log,
    chunk_size = chunk_size,
    -- a lua_shared_dict name: the counters /metrics shows (ngx.metrics)
    metrics = metrics_name and _M.metrics_registry(metrics_name) or nil,
    access_log = with_access and access_log or nil,
  }
  if cache_name then -- a lua_shared_dict name: the connector's cache (cache = {ttl}) kept there
    answer_opts.cache = _M.cache_store(cache_name)
    answer_opts.cache_namespace = namespace
  end
  if type(given) == "string" and (kept or n_kept_answer_opts < 64) then
    if not kept then n_kept_answer_opts = n_kept_answer_opts + 1 end
    kept_answer_opts[given] = { opts = answer_opts, log = log, chunk_size = chunk_size, metrics_name = metrics_name,
      with_access = with_access, cache_name = cache_name, namespace = namespace }
  end
  return answer_opts
end

local function prepare(target, opts, started, uri, content_type, encoding)
  local c = target
  if type(target) == "string" then c = _M.load(target) end
  if not connector_mod.is_connector(c) then
    error("biconnector.ngx.serve: expected a connector or a connector file path, got " .. type(target), 0)
  end
  local req, err
  if opts.max_headers == nil then
    req, err = serve_request(uri, content_type, encoding, opts.access_log)
  else
    req, err = _M.request(opts.max_headers, uri)
  end
  if not req then error(err, 0) end
  local status, headers, body, finish = c:answer(req, answer_options(target, c, opts, req.path), started)
  return req, status, headers, body, finish
end

local function with_trace(err)
  return { message = err, traceback = debug.traceback("", 2) }
end

-- Streams an iterator: each chunk printed and flushed before the next is made
-- (bounded memory); stops when the client is gone. sent.bytes counts what
-- went out (on_abort reads it). -> how
local function stream(body, sent)
  while true do
    local ok, chunk = xpcall(body, with_trace)
    if not ok then
      glue_error(chunk.message, chunk.traceback)
      return "error"
    end
    if chunk == nil then break end
    -- false: the connector cut the answer; the client must see a cut answer,
    -- not a well-formed shorter one
    if chunk == false then return "error" end
    if type(chunk) ~= "string" then
      glue_error("the body iterator returned a " .. type(chunk) .. " instead of a string")
      return "error"
    end
    if #chunk > 0 then
      local printed = ngx.print(chunk)
      if printed then printed = ngx.flush(true) end
      if not printed then return "aborted" end
      sent.bytes = sent.bytes + #chunk
    end
  end
  return "ok"
end

-- ngx.serve(connector_or_path, opts): answers the current request (content phase).
-- opts: prefix (string; default: the URI without its last segment),
--       chunk_size, log (function(level, message, fields)), access_log (true:
--       an access line in the error log at `notice`), max_headers (default 0: all).
-- With `lua_check_client_abort on;` a client that leaves stops the answer at
-- once: the database job waited for is cancelled, the answer finished (the
-- data source released).
local function on_abort()
  local ctx = ngx.ctx
  local job = ctx.biconnector_waits_for
  if job then pcall(job.cancel, job) end
  local sent = ctx.biconnector_answer
  if type(sent) == "table" and sent.finish then
    local ok, info = pcall(sent.finish, "aborted", sent.bytes)
    if ok then publish(info, sent.bytes, "aborted") end
  end
  return ngx.exit(499)
end

-- The worker's malloc keeps up to HEAP_KEPT free bytes at the top of its
-- heap rather than giving them back with brk after every answer: streamed
-- answers of several requests interleave (one chunk each between flushes),
-- their buffers freed together crossed glibc's 128 KiB trim threshold, and
-- each brk that shrank the heap cost a TLB flush on every core, more worker
-- CPU than encoding a 1000-row answer (bench/README.md, "OpenResty"). Blocks
-- of 1 MiB and more are mapped and given back when freed, as `serve` has them
-- (setting a threshold stops glibc moving its mmap threshold, and at its
-- 128 KiB a 1000-row answer's buffer was mapped and unmapped per answer).
-- Set once per worker, on its first answer; nil: malloc left alone.
_M.HEAP_KEPT = 8 * 1048576
local heap_set = false
local function keep_heap()
  heap_set = true
  if not _M.HEAP_KEPT then return end
  core.process.trim_threshold(_M.HEAP_KEPT)
  core.process.mmap_threshold(1048576)
end

-- The refusals of `biconnector serve` (src/http_server.c) for a request
-- target nginx lets through: a control byte in the path (nginx decodes
-- %0A and the like into $uri; %00 it refuses itself) would otherwise reach
-- the routing (a 404 naming it), and a query string holding %00 is 400
-- there before the handler runs. -> the body, or nil
local BAD_TARGET = '{"error":"bad_request","message":"the request target holds a control byte"}'
local BAD_QUERY = '{"error":"bad_request","message":"query string: a name or value holds an encoded NUL byte (%00)"}'
local find = string.find
local function refused_target(uri, raw)
  -- nginx refuses a raw control byte in the request line: one in $uri or
  -- $args came percent-encoded, so a target without '%' (what Bitrix24
  -- sends) needs no pattern (which LuaJIT does not compile)
  if raw and not find(raw, "%", 1, true) then return nil end
  if find(uri, "[%z\1-\31\127]") then return BAD_TARGET end
  local args = ngx.var.args
  if args and find(args, "%00", 1, true) then return BAD_QUERY end
end

function _M.serve(target, opts)
  opts = opts or {}
  -- the clock only for what measures the answer's time
  local started = (opts.metrics or opts.access_log) and connector_mod.clock() or nil
  if not heap_set then keep_heap() end
  -- nil, "lua_check_client_abort is off" (a per-location setting): found when the answer is sent
  local abort_ok, abort_on = pcall(ngx.on_abort, on_abort)
  local uri, raw, content_type, encoding = read_request_vars()
  local refusal = refused_target(uri, raw)
  local ok, req, status, headers, body, finish
  if refusal then
    ok, status, headers, body = true, 400, { ["Content-Type"] = JSON_TYPE }, refusal
    req = { method = ngx.req.get_method(), path = uri, remote = ngx.var.remote_addr or "" }
  else
    ok, req, status, headers, body, finish = xpcall(prepare, with_trace, target, opts, started, uri,
      content_type, encoding)
  end
  local id
  if not ok then
    id = glue_error(req.message, req.traceback)
    status, headers, body = 500, { ["Content-Type"] = JSON_TYPE }, errors.internal_body(id)
    req = { method = ngx.req.get_method(), path = uri, remote = ngx.var.remote_addr or "" }
  end
  if not finish then -- a refusal or a glue failure: the connector did not answer
    finish = connector_mod.finisher(req, { log = opts.log or _M.log, access_log = opts.access_log and access_log or nil,
      metrics = opts.metrics and _M.metrics_registry(opts.metrics) or nil }, status, { status = status, error = id },
      started)
  end
  -- what went out, in a table on_abort and stream read; none made for a
  -- string body without on_abort (a small request allocates less, issue 25)
  local streamed, sent = type(body) == "function", nil
  local bytes = 0
  if streamed or (abort_ok and abort_on) then
    sent = { finish = finish, bytes = 0 }
    if abort_ok and abort_on then ngx.ctx.biconnector_answer = sent end -- for on_abort
  end

  local how = "ok"
  send_headers(status, headers)
  if streamed then
    how = stream(body, sent)
    bytes = sent.bytes
  else
    body = type(body) == "string" and body or ""
    ngx.header["Content-Length"] = #body
    if not ngx.print(body) then
      how = "aborted"
    else
      bytes = #body
      if sent then sent.bytes = bytes end
    end
  end
  local info = finish(how, bytes)
  info.body_in_file = req.body_in_file
  publish(info, bytes, how)
  if how == "error" then return ngx.exit(ngx.ERROR) end -- close without the final chunk
  return ngx.eof()
end

-- ---- metrics -----------------------------------------------------------------

-- The biconnector.metrics registry over a lua_shared_dict (by name).
_M.metrics_registry = once_per_name(metrics.ngx_dict)

-- The answer of `biconnector serve --metrics` to a method other than GET/HEAD.
local METRICS_405 = '{"error":"method_not_allowed","message":"/metrics answers GET"}'

-- ngx.metrics(dict_name): the content of a `location = /metrics`; the
-- counters that serve(target, {metrics = dict_name}) adds to, Prometheus text.
-- GET and HEAD only; other methods 405 with `Allow: GET`, as `serve --metrics`.
function _M.metrics(dict_name)
  local method = ngx.req.get_method()
  if method ~= "GET" and method ~= "HEAD" then
    ngx.status = 405
    ngx.header["Content-Type"] = JSON_TYPE
    ngx.header["Allow"] = "GET"
    ngx.header["Content-Length"] = #METRICS_405
    ngx.print(METRICS_405)
    return ngx.eof()
  end
  local text = _M.metrics_registry(dict_name):render()
  ngx.status = 200
  ngx.header["Content-Type"] = metrics.CONTENT_TYPE
  ngx.header["Content-Length"] = #text
  ngx.print(text)
  return ngx.eof()
end

local ERROR_PAGES = {
  [400] = { "bad_request", "nginx refused the request" },
  -- nginx answers TRACE itself: the connector's answer to a method other than POST
  [405] = { "method_not_allowed", "use POST" },
  [408] = { "request_timeout", "the request body did not arrive in time" },
  [411] = { "length_required", "the request needs a Content-Length" },
  -- the message of `biconnector serve`'s 413 (src/http_server.c), so that both hosts answer alike
  [413] = { "payload_too_large", "the request body is over the server's limit" },
  [414] = { "uri_too_long", "the request URI is too long" },
  [494] = { "bad_request", "the request headers are too large" },
  -- nginx's answer to a Transfer-Encoding other than chunked (serve: 400)
  [501] = { "internal_error", "a Transfer-Encoding other than chunked is not supported" },
}

-- ngx.error_page(status): for an `error_page 413 @name;` location, so that
-- the errors nginx answers itself (too large a body, ...) are JSON like the
-- connector's own. nginx does not tell the redirected location which status
-- it had: pass it (one location per status).
function _M.error_page(status)
  status = status or ngx.status
  if type(status) ~= "number" or status < 400 or status > 599 then status = 500 end
  local page = ERROR_PAGES[status] or { errors.code_of(status), "nginx answered " .. status }
  local body = format('{"error":"%s","message":"%s"}', page[1], page[2])
  -- 494-497 are nginx's own codes for requests it answers 400 (headers too
  -- large, TLS client certificate errors, HTTP to an HTTPS port): the client sees 400
  ngx.status = (status >= 494 and status <= 497) and 400 or status
  ngx.header["Content-Type"] = JSON_TYPE
  if status == 405 then ngx.header["Allow"] = "POST" end
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.eof()
end

return _M
