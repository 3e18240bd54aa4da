-- biconnector.rest.transport_ngx: an OpenResty transport for biconnector.rest,
-- the same contract as core.http's handle:request,
-- on cosockets, so a request yields instead of blocking the nginx worker.
-- Connections go back to nginx's keep-alive pool. Certificates are checked
-- against lua_ssl_trusted_certificate (per-request ca_file is not possible
-- there); verify = false disables the check. Answers are asked for without
-- compression. Use it through biconnector.rest, with sleep = ngx.sleep:
--   rest.new { ..., transport = rest.ngx_transport(), sleep = ngx.sleep }
-- It loads anywhere (biconnector.rest requires it); only a request needs nginx.
local type, pairs, tostring, tonumber, setmetatable, pcall, error =
  type, pairs, tostring, tonumber, setmetatable, pcall, error
local concat = table.concat

local _M = {}

local fresh_serial = 0

-- transport_ngx.new(opts, user_agent) -> function(req) -> answer | nil, err
-- opts: pool_name ("biconnector"), pool_size (16), keepalive_timeout (60 s);
-- user_agent: the User-Agent of a request that names none.
function _M.new(opts, user_agent)
  opts = opts or {}
  local pool_size = opts.pool_size or 16
  -- Pooled TLS connections skip the handshake: locations that trust different
  -- CAs (lua_ssl_trusted_certificate) must use different pool names.
  local pool_name = opts.pool_name or "biconnector"
  local idle_ms = (opts.keepalive_timeout or 60) * 1000

  local function fail(message, not_sent, extra)
    local e = { message = message, not_sent = not_sent, timeout = message:find("timeout", 1, true) ~= nil }
    for k, v in pairs(extra or {}) do e[k] = v end
    return nil, setmetatable(e, { __tostring = function(x) return "http error: " .. x.message end })
  end

  -- lua-nginx-module before 0.10.32 (Debian 12 ships 0.10.23) loses the verify
  -- error of a handshake that completes at once (upstream #2506; likely on a busy
  -- machine): resty.core then fails an assert instead of returning nil, err, and
  -- the request would end in a bare 500. Read the error the module recorded.
  local function recorded_handshake_error(sock)
    local ok, message = pcall(function()
      -- lazy: only OpenResty has resty.core, and only LuaJIT ffi
      local ffi, base = require "ffi", require "resty.core.base"
      local errmsg, code = base.get_errmsg_ptr(), ffi.new("int[1]")
      local rc = ffi.C.ngx_http_lua_ffi_socket_tcp_get_sslhandshake_result(base.get_request(), sock[1],
        ffi.new("void *[1]"), errmsg, code)
      if rc ~= base.FFI_ERROR or errmsg[0] == nil then return nil end
      return (code[0] ~= 0 and (code[0] .. ": ") or "") .. ffi.string(errmsg[0])
    end)
    return ok and message or nil
  end

  local function handshake(sock, host, verify)
    local ok, session, herr = pcall(sock.sslhandshake, sock, nil, host, verify)
    if ok then return session, herr end
    local recorded = recorded_handshake_error(sock)
    if recorded then return nil, recorded end
    -- the assert fires only when verification failed after a complete handshake
    local verify_failed = tostring(session):find("assertion failed", 1, true) ~= nil
    return nil, (verify_failed and "certificate verification failed" or "sslhandshake raised") .. " (" .. tostring(session) .. ")"
  end

  local function read_body(sock, headers, max_body)
    local te = headers["transfer-encoding"]
    if te and te:lower():find("chunked", 1, true) then
      local parts, total = {}, 0
      while true do
        local line, err = sock:receive("*l")
        if not line then return nil, err end
        local size = tonumber(line:match("^%s*(%x+)"), 16)
        if not size then return nil, "bad chunk size line" end
        if size == 0 then
          repeat line = sock:receive("*l") until not line or line == ""
          break
        end
        total = total + size
        if total > max_body then return nil, "the answer is larger than max_body" end
        local chunk, cerr = sock:receive(size)
        if not chunk then return nil, cerr end
        parts[#parts + 1] = chunk
        sock:receive("*l")
      end
      return concat(parts), nil, true
    end
    local len = tonumber(headers["content-length"])
    if len then
      if len > max_body then return nil, "the answer is larger than max_body" end
      if len == 0 then return "", nil, true end
      local body, err = sock:receive(len)
      if not body then return nil, err end
      return body, nil, true
    end
    local body, err = sock:receive("*a") -- until the server closes
    if not body then return nil, err end
    if #body > max_body then return nil, "the answer is larger than max_body" end
    return body, nil, false
  end

  local function once(req, scheme, host, port, path)
    local sock = ngx.socket.tcp()
    local connect_ms = (req.connect_timeout or 10) * 1000
    local total_ms = (req.timeout or 60) * 1000
    sock:settimeouts(connect_ms, total_ms, total_ms)
    -- A request that must not run twice gets a connection of its own (a pool
    -- name nobody else uses) and is never resent.
    local pool = pool_name .. ":" .. scheme .. "://" .. host .. ":" .. port .. (req.verify == false and "#noverify" or "")
    if req.fresh_connect then
      fresh_serial = fresh_serial + 1
      pool = pool .. "#fresh" .. fresh_serial
    end
    -- (no pool_size for a one-off pool name: nginx then creates no pool for it)
    local ok, err = sock:connect(host, port, req.fresh_connect and { pool = pool } or { pool = pool, pool_size = pool_size })
    if not ok then return fail("connect to " .. host .. ":" .. port .. ": " .. tostring(err), true, { code = 7 }) end
    local reused = (sock:getreusedtimes() or 0) > 0
    if scheme == "https" and not reused then
      -- (an IPv6 literal without its brackets: the name the certificate's IP address is checked against)
      local session, herr = handshake(sock, host:match("^%[(.*)%]$") or host, req.verify ~= false)
      if not session then
        sock:close()
        local cert = tostring(herr):find("certificate", 1, true) ~= nil
        return fail("TLS handshake with " .. host .. ": " .. tostring(herr), true, { code = cert and 60 or 35 })
      end
    end
    local method = req.method or (req.body and "POST" or "GET")
    local default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    local lines = { method .. " " .. path .. " HTTP/1.1",
      "Host: " .. host .. (default_port and "" or (":" .. port)),
      "User-Agent: " .. (req.user_agent or user_agent), "Connection: keep-alive" }
    for k, v in pairs(req.headers or {}) do
      local line = type(k) == "number" and tostring(v) or (tostring(k) .. ": " .. tostring(v))
      if line:find("[\r\n]") then error("header holds a line break: " .. line, 3) end
      lines[#lines + 1] = line
    end
    if req.body then lines[#lines + 1] = "Content-Length: " .. #req.body end
    local bytes, serr = sock:send(concat(lines, "\r\n") .. "\r\n\r\n" .. (req.body or ""))
    if not bytes then
      sock:close()
      return fail("send: " .. tostring(serr), false, { code = 55, reused_and_unanswered = reused })
    end
    local status_line, rerr = sock:receive("*l")
    if not status_line then
      sock:close()
      return fail("no answer: " .. tostring(rerr), false, { code = rerr == "timeout" and 28 or 52, reused_and_unanswered = reused and rerr == "closed" })
    end
    local status = tonumber(status_line:match("^HTTP/%d%.?%d* (%d%d%d)"))
    if not status then sock:close() return fail("not an HTTP answer: " .. status_line:sub(1, 80), false, { code = 8 }) end
    local headers = {}
    while true do
      local line, herr = sock:receive("*l")
      if not line then sock:close() return fail("reading headers: " .. tostring(herr), false, { code = 56 }) end
      if line == "" then break end
      local name, value = line:match("^([^:]+):%s*(.-)%s*$")
      if name then
        name = name:lower()
        headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
      end
    end
    local body, reusable = "", true
    if method ~= "HEAD" and status ~= 204 and status ~= 304 then
      local berr
      body, berr, reusable = read_body(sock, headers, req.max_body or 256 * 1024 * 1024)
      if not body then sock:close() return fail("reading the answer: " .. tostring(berr), false, { code = 56 }) end
    end
    if reusable and not req.fresh_connect and (headers["connection"] or ""):lower() ~= "close" then
      sock:setkeepalive(idle_ms, pool_size)
    else
      sock:close()
    end
    return { status = status, headers = headers, body = body }
  end

  return function(req)
    local scheme, host, port, path = req.url:match("^(https?)://([^/:%[]+):?(%d*)(.*)$")
    if not scheme then
      -- an IPv6 literal, in brackets (http://[::1]:8080/rest/): nginx connects to it, and the
      -- Host header carries it, in its brackets too
      scheme, host, port, path = req.url:match("^(https?)://(%[[%x:.]+%]):?(%d*)(.*)$")
    end
    if not scheme or not path:match("^[/?]") and path ~= "" then
      return fail("unsupported URL " .. tostring(req.url), true, { code = 3 })
    end
    port = tonumber(port) or (scheme == "https" and 443 or 80)
    if path == "" then path = "/" end
    local res, err = once(req, scheme, host, port, path)
    -- A pooled connection the server had closed meanwhile: the request never
    -- reached it, so one new connection is tried (libcurl does the same).
    if not res and err.reused_and_unanswered and not req.fresh_connect then res, err = once(req, scheme, host, port, path) end
    return res, err
  end
end

return _M
