-- Helpers for the specs that run biconnector.ngx inside a real nginx with the
-- Lua module (ngx_spec, sql_ngx_spec, sql_engines_ngx_spec, rest_ngx_spec): what is missing
-- (a reason for a loud skip), a prefix directory, the head of a test
-- nginx.conf, and starting nginx as our child / stopping it. nginx loads the
-- LuaJIT build of the C core (BIC_BUILD under luajit, else BIC_BUILD_LUAJIT or
-- BIC_TOP/build-luajit), so these specs run under either busted runtime.
local helpers = require "helpers"
local cjson = require "cjson"

local concat, format = table.concat, string.format

local M = {}

M.TOP = helpers.top == "." and (os.getenv("PWD") or ".") or helpers.top
M.MODULES = os.getenv("BIC_NGINX_MODULES") or "/usr/lib/nginx/modules"

M.sh, M.popen = helpers.sh, io.popen

M.readable, M.write = helpers.exists, helpers.write_file

-- The file's text, "" when it is not there.
function M.read(path) return helpers.read_file(path) or "" end

function M.find_nginx()
  for _, p in ipairs({ os.getenv("BIC_NGINX") or "", "/usr/sbin/nginx", "/usr/local/sbin/nginx" }) do
    if p ~= "" and M.readable(p) then return p end
  end
end

function M.luajit_build()
  if helpers.runtime == "luajit" then return helpers.build end
  local b = os.getenv("BIC_BUILD_LUAJIT") or (M.TOP .. "/build-luajit")
  if b:sub(1, 1) ~= "/" then b = M.TOP .. "/" .. b end
  return b
end

-- nil when everything is there, else what is missing
function M.missing()
  if not M.find_nginx() then return "nginx is not installed (Debian: nginx)" end
  for _, m in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
    if not M.readable(M.MODULES .. "/" .. m) then
      return m .. " is not in " .. M.MODULES .. " (Debian: libnginx-mod-http-ndk, libnginx-mod-http-lua)"
    end
  end
  if not M.readable("/usr/share/lua/5.1/resty/core.lua") and not os.getenv("BIC_NGINX_MODULES") then
    return "resty.core is missing (Debian: lua-resty-core, lua-resty-lrucache)"
  end
  if not M.readable(M.luajit_build() .. "/biconnector/core.so") then
    return "the LuaJIT build of the C core is missing: " .. M.luajit_build() .. " (make luajit)"
  end
end

-- The loud skip's line on stderr; -> the message for the spec's pending()
-- (busted's `it` and `pending` are seen by spec files, not by this module).
function M.skipped(spec, why)
  io.stderr:write("\n*** SKIPPED: " .. spec .. ": " .. why .. "\n")
  return "SKIPPED: " .. why
end

-- A fresh /tmp/bic-ngx-XXXXXX directory with logs/ in it.
function M.make_prefix()
  local dir = helpers.tmpdir("ngx")
  assert(M.sh("mkdir -p " .. dir .. "/logs && chmod 755 " .. dir))
  return dir
end

function M.remove_prefix(prefix)
  if prefix and prefix:match("^/tmp/bic%-ngx%-") and not os.getenv("BIC_KEEP_NGINX") then
    M.sh("rm -rf " .. prefix)
  end
end

M.alive = helpers.alive

-- Polls predicate every 50 ms for `seconds`: -> whether it held.
function M.wait_until(predicate, seconds)
  return helpers.poll(predicate, seconds, 0.05) ~= nil
end

-- A whole nginx.conf for a test: one worker, the Lua module, the thread pool
-- `biconnector`, everything under prefix, a server on 127.0.0.1:port, and
-- `lines` (the spec's own) inside the http block.
-- opts.env: names of environment variables the workers may read;
-- opts.package_path: more entries for lua_package_path (";"-separated);
-- opts.workers: worker processes (1); opts.thread_pool = false: no pool;
-- opts.worker_connections (64); opts.check_client_abort = false: nginx's default.
function M.conf(prefix, lines, opts)
  opts = opts or {}
  local out = {
    "load_module " .. M.MODULES .. "/ndk_http_module.so;",
    "load_module " .. M.MODULES .. "/ngx_http_lua_module.so;",
    "worker_processes " .. (opts.workers or 1) .. ";",
    helpers.nginx_user_line(),
    "pid " .. prefix .. "/nginx.pid;",
    "error_log " .. prefix .. "/logs/error.log notice;",
  }
  for _, name in ipairs(opts.env or {}) do out[#out + 1] = "env " .. name .. ";" end
  local path = format("%s/lua/?.lua;%s/lua/?/init.lua;", M.TOP, M.TOP)
  if opts.package_path then path = path .. opts.package_path .. ";" end
  if opts.thread_pool ~= false then out[#out + 1] = "thread_pool biconnector threads=4;" end
  for _, line in ipairs({
    "events { worker_connections " .. (opts.worker_connections or 64) .. "; }",
    "http {",
    format('  lua_package_path "%s;";', path),
    format('  lua_package_cpath "%s/?.so;;";', M.luajit_build()),
    opts.check_client_abort ~= false and "  lua_check_client_abort on;" or "",
    "  client_body_temp_path " .. prefix .. "/body;",
    "  proxy_temp_path " .. prefix .. "/proxy;",
    "  fastcgi_temp_path " .. prefix .. "/fastcgi;",
    "  uwsgi_temp_path " .. prefix .. "/uwsgi;",
    "  scgi_temp_path " .. prefix .. "/scgi;",
  }) do out[#out + 1] = line end
  for _, line in ipairs(lines) do out[#out + 1] = line end
  out[#out + 1] = "}"
  return concat(out, "\n")
end

-- Writes conf_text to prefix/nginx.conf and starts nginx in the foreground
-- (daemon off) as our child, so that stopping it reaps it; env: "NAME=value
-- ..." for its environment. -> handle { prefix, pid, port, error_log }; an
-- error with what nginx said when it did not start.
function M.start(prefix, conf_text, port, env)
  local conf = prefix .. "/nginx.conf"
  M.write(conf, conf_text)
  local out = prefix .. "/logs/start.out"
  local pipe = M.popen(format("%s exec sh -c 'echo $$; exec %s -p %s -c %s -e %s/logs/error.log -g \"daemon off;\" 2>%s'",
    env or "", M.find_nginx(), prefix, conf, prefix, out), "r")
  local h = { prefix = prefix, port = port, error_log = prefix .. "/logs/error.log", pipe = pipe }
  h.pid = pipe:read("*l")
  -- the pid file appears once the configuration is loaded and the port is bound
  M.wait_until(function() return M.read(prefix .. "/nginx.pid") ~= "" or not M.alive(h.pid) end, 10)
  if M.read(prefix .. "/nginx.pid") == "" then
    local _ = M.alive(h.pid) and M.sh("kill -KILL " .. h.pid)
    pipe:close()
    error("nginx did not start: " .. M.read(out) .. M.read(h.error_log), 2)
  end
  return h
end

-- Graceful stop, then SIGKILL for the master and its workers if still there.
function M.stop(h)
  if not h or not h.pid then return end
  local children = {}
  local p = M.popen("pgrep -P " .. h.pid .. " 2>/dev/null")
  for line in p:lines() do children[#children + 1] = line end
  p:close()
  M.sh("kill -QUIT " .. h.pid .. " 2>/dev/null")
  if not M.wait_until(function() return not M.alive(h.pid) end, 10) then
    M.sh("kill -KILL " .. h.pid .. " 2>/dev/null")
  end
  for _, c in ipairs(children) do
    if M.alive(c) then M.sh("kill -KILL " .. c .. " 2>/dev/null") end
  end
  h.pipe:close() -- reaps the master
  h.pid = nil
end

-- A teardown's work: stops nginx (if it started) and removes its prefix.
function M.stop_and_remove(h, prefix)
  M.stop(h)
  M.remove_prefix(prefix)
end

---------------------------------------------------------------- HTTP client

M.connect = helpers.connect

-- POSTs a JSON body on sock (Connection: close) and reads the whole answer,
-- a chunked body joined. -> status, body text
function M.exchange(sock, path, body)
  sock:send(format("POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
    .. "Content-Length: %d\r\n\r\n%s", path, #body, body))
  local raw, err, partial = sock:receive("*a")
  raw = raw or partial
  assert(raw and raw ~= "", "no answer: " .. tostring(err))
  local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
  local status = tonumber(head:match("^HTTP/1%.%d (%d+)"))
  if head:lower():find("transfer%-encoding: chunked") then
    local out, pos = {}, 1
    while true do
      local size, after = rest:match("^(%x+)[^\r\n]*\r\n()", pos)
      size = tonumber(size, 16)
      if not size or size == 0 then break end
      out[#out + 1] = rest:sub(after, after + size - 1)
      pos = after + size + 2
    end
    rest = concat(out)
  end
  return status, rest
end

-- The request table `body` with connection.token set (unless it has a
-- connection), as JSON. -> status, the decoded answer (the text when not JSON)
function M.post(sock, path, body, token)
  body.connection = body.connection or { token = token }
  local status, text = M.exchange(sock, path, cjson.encode(body))
  local ok, decoded = pcall(cjson.decode, text)
  return status, ok and decoded or text
end

-- Sends `raw` (a whole request) on a new connection and reads until the
-- server closes. -> { status, headers (lower-case), body, chunked, cut, raw }:
-- cut is a message when a chunked body ended without its last chunk; a
-- 100 Continue before the answer is skipped.
function M.send_raw(port, raw)
  local sock = helpers.connect(port, 20)
  sock:send(raw)
  local text, _, partial = sock:receive("*a")
  sock:close()
  text = text or partial or ""
  local head, rest = text:match("^(.-)\r\n\r\n(.*)$")
  if not head then return { status = nil, headers = {}, body = "", raw = text } end
  -- a 100 Continue before the answer
  while head:match("^HTTP/1%.%d 100") do head, rest = rest:match("^(.-)\r\n\r\n(.*)$") end
  local r = { status = tonumber(head:match("^HTTP/1%.%d (%d+)")), headers = {}, raw = text }
  for k, v in head:gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do r.headers[k:lower()] = v end
  if (r.headers["transfer-encoding"] or ""):lower():find("chunked") then
    r.chunked = true
    local out, pos = {}, 1
    while true do
      local size, after = rest:match("^(%x+)[^\r\n]*\r\n()", pos)
      size = tonumber(size or "", 16)
      if not size then r.cut = "no chunk header at byte " .. pos break end
      if size == 0 then break end
      local data = rest:sub(after, after + size - 1)
      out[#out + 1] = data
      if #data < size then r.cut = "cut inside a chunk" break end
      pos = after + size + 2
    end
    r.body = concat(out)
  else
    r.body = rest
  end
  return r
end

-- A request on a new connection (N.send_raw): method, path, body (nil: none),
-- headers ({name = value}; false leaves a header out), version (default
-- "1.1"); a Content-Length is added for a body unless the headers give one
-- or a Transfer-Encoding.
function M.request(port, method, path, body, headers, version)
  local lines = { format("%s %s HTTP/%s", method, path, version or "1.1"), "Host: 127.0.0.1", "Connection: close" }
  local has_length = false
  for k, v in pairs(headers or {}) do
    if v then lines[#lines + 1] = k .. ": " .. v end
    if k:lower() == "content-length" or k:lower() == "transfer-encoding" then has_length = true end
  end
  if body and not has_length then lines[#lines + 1] = "Content-Length: " .. #body end
  return M.send_raw(port, concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
end

-- An answer's decoded JSON (or text) with its error ids masked, so that two
-- hosts' answers compare equal.
function M.id_masked(v)
  if type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do out[k] = (k == "id" and type(x) == "string") and "<id>" or M.id_masked(x) end
    return out
  elseif type(v) == "string" then
    return (v:gsub("error id %x+", "error id <id>"))
  end
  return v
end

return M
