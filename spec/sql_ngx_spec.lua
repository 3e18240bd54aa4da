-- biconnector.sql under a real nginx (lua-nginx-module, one worker): the SQL
-- source answers the four endpoints with its database calls in the thread pool;
-- a slow query in one request does not hold up /table_list on the same single
-- worker; a data close function is called once when the client goes away.
-- nginx loads the LuaJIT build of the C core (see ngx_spec.lua).
local helpers = require "helpers"
local H = require "sql_helpers"
local cjson = require "cjson"
local socket = require "socket"

local format, concat = string.format, table.concat
local TOP = helpers.top == "." and (os.getenv("PWD") or ".") or helpers.top
local MODULES = os.getenv("BIC_NGINX_MODULES") or "/usr/lib/nginx/modules"
local TOKEN = "ngx-sql-token"

local function readable(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function luajit_build()
  if helpers.runtime == "luajit" then return helpers.build end
  local b = os.getenv("BIC_BUILD_LUAJIT") or (TOP .. "/build-luajit")
  if b:sub(1, 1) ~= "/" then b = TOP .. "/" .. b end
  return b
end

local function nginx_binary()
  for _, p in ipairs({ os.getenv("BIC_NGINX") or "", "/usr/sbin/nginx", "/usr/local/sbin/nginx" }) do
    if p ~= "" and readable(p) then return p end
  end
end

local function missing()
  if not nginx_binary() then return "nginx is not installed (Debian: nginx)" end
  for _, m in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
    if not readable(MODULES .. "/" .. m) then return m .. " is not in " .. MODULES end
  end
  if not readable(luajit_build() .. "/biconnector/core.so") then
    return "the LuaJIT build of the C core is missing (make luajit)"
  end
  if not H.sh("command -v sqlite3 >/dev/null 2>&1") then return "the sqlite3 command-line tool is missing" end
end

local function alive(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  return stat ~= "" and stat:match("^%d+ %b() (%a)") ~= "Z"
end

local function wait_until(predicate, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    if predicate() then return true end
    socket.sleep(0.02)
  end
  return predicate()
end

local function q(s) return format("%q", s) end

local function exchange(sock, path, body)
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

describe("biconnector.sql under nginx", function()
  local why = missing()
  local prefix, port, pid, pipe, dir, db
  setup(function()
    if why then
      io.stderr:write("\n*** SKIPPED: sql_ngx_spec: " .. why .. "\n")
      return
    end
    dir = H.tmpdir()
    db = H.sample(dir, "--orders 300")
    prefix = dir .. "/ngx"
    assert(H.sh("mkdir -p " .. prefix .. "/logs && chmod 755 " .. dir .. " " .. prefix))
    port = helpers.free_port()
    -- the SQL connector, with a table defined by a slow query
    write(prefix .. "/sql.lua", format([[
return require("biconnector.sql").connector {
  url = %q, token = %q,
  queries = { slow = { title = "Slow", sql =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT count(*) AS c FROM n" } },
}
]], "sqlite://" .. db, TOKEN))
    write(prefix .. "/endless.lua", format([[
local marks = %q
return {
  title = "T", settings = {}, check = function() return true end,
  tables = { { code = "t", title = "T" } },
  describe = { t = { { code = "id", name = "ID", type = "int" }, { code = "pad", name = "P", type = "string" } } },
  data = function()
    local i, pad = 0, string.rep("x", 1000)
    return function() i = i + 1 return { id = i, pad = pad } end, nil, function()
      local m = assert(io.open(marks, "a")) m:write("closed\n") m:close()
    end
  end,
}
]], prefix .. "/marks"))
    local conf = concat({
      "load_module " .. MODULES .. "/ndk_http_module.so;",
      "load_module " .. MODULES .. "/ngx_http_lua_module.so;",
      "worker_processes 1;",
      helpers.nginx_user_line(),
      "pid " .. prefix .. "/nginx.pid;",
      "error_log " .. prefix .. "/logs/error.log notice;",
      "thread_pool biconnector threads=4;",
      "events { worker_connections 64; }",
      "http {",
      format('  lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;;";', TOP, TOP),
      format('  lua_package_cpath "%s/?.so;;";', luajit_build()),
      "  client_body_temp_path " .. prefix .. "/body;",
      "  proxy_temp_path " .. prefix .. "/proxy;",
      "  fastcgi_temp_path " .. prefix .. "/fastcgi;",
      "  uwsgi_temp_path " .. prefix .. "/uwsgi;",
      "  scgi_temp_path " .. prefix .. "/scgi;",
      "  access_log off;",
      "  init_by_lua_block { require('biconnector.ngx').load(" .. q(prefix .. "/sql.lua") .. ") }",
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      "    location /sql/ { content_by_lua_block { require('biconnector.ngx').serve(" .. q(prefix .. "/sql.lua")
        .. ") } }",
      "    location /endless/ { content_by_lua_block { require('biconnector.ngx').serve("
        .. q(prefix .. "/endless.lua") .. ") } }",
      "  }",
      "}",
    }, "\n")
    write(prefix .. "/nginx.conf", conf)
    pipe = io.popen(format("%s exec sh -c 'echo $$; exec %s -p %s -c %s/nginx.conf -g \"daemon off;\" 2>%s/logs/start.out'",
      H.CLEAN, nginx_binary(), prefix, prefix, prefix), "r")
    pid = pipe:read("*l")
    wait_until(function() return read(prefix .. "/nginx.pid") ~= "" or not alive(pid) end, 10)
    assert(read(prefix .. "/nginx.pid") ~= "", "nginx did not start: " .. read(prefix .. "/logs/start.out")
      .. read(prefix .. "/logs/error.log"))
  end)

  teardown(function()
    if pid then
      H.sh("kill -QUIT " .. pid .. " 2>/dev/null")
      if not wait_until(function() return not alive(pid) end, 10) then H.sh("kill -KILL " .. pid) end
      pipe:close()
    end
    H.rmdir(dir)
  end)

  before_each(function()
    if why then pending("SKIPPED: " .. why) end
  end)

  local function connect()
    local s = socket.tcp()
    s:settimeout(30)
    assert(s:connect("127.0.0.1", port))
    return s
  end

  local function post(path, body)
    body.connection = body.connection or { token = TOKEN }
    local status, text = exchange(connect(), path, cjson.encode(body))
    local ok, decoded = pcall(cjson.decode, text)
    return status, ok and decoded or text
  end

  it("answers the four endpoints from the database, its calls in the thread pool", function()
    assert.equals(200, (post("/sql/check", {})))
    assert.equals(403, (post("/sql/check", { connection = { token = "no" } })))
    local status, body = post("/sql/table_list", {})
    assert.equals(200, status)
    local codes = {}
    for _, t in ipairs(body) do codes[#codes + 1] = t.code end
    assert.same({ "customers", "order_lines", "orders", "products", "slow" }, codes)
    status, body = post("/sql/table_description", { table = "orders" })
    assert.equals(200, status)
    assert.equals("ordered_at", body[7].code)
    assert.equals("datetime", body[7].type)
    status, body = post("/sql/data", { table = "orders" })
    assert.equals(200, status)
    assert.equals(301, #body)
    status, body = post("/sql/data", { table = "orders", select = { "id", "note" },
      filter = { note = "'; DROP TABLE orders; --" } })
    assert.equals(200, status)
    assert.is_true(#body > 1)
    for i = 2, #body do assert.equals("'; DROP TABLE orders; --", body[i][2]) end
    -- a filter on a column without a declared type falls back to match (map rows from the thread)
    status, body = post("/sql/data", { table = "slow", filter = { [">c"] = "1" } })
    assert.equals(200, status)
    assert.same({ { "c" }, { "3000000" } }, body)
  end)

  it("keeps answering /table_list on the single worker while a slow query runs", function()
    local slow = connect()
    local body = cjson.encode({ connection = { token = TOKEN }, table = "slow" })
    slow:send(format("POST /sql/data HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
      .. "Content-Length: %d\r\n\r\n%s", #body, body))
    -- five /table_list answers come back while the slow answer has not: with the
    -- query in the event loop, none could be served before it ended
    for i = 1, 5 do
      local status, list = post("/sql/table_list", {})
      assert.equals(200, status)
      assert.equals(5, #list)
      slow:settimeout(0)
      local data, err, partial = slow:receive(1)
      assert.is_nil(data, "the slow answer came before /table_list #" .. i)
      assert.equals("timeout", err)
      assert.equals("", partial)
    end
    slow:settimeout(60)
    local raw, err, partial = slow:receive("*a")
    raw = raw or partial
    assert.matches("^HTTP/1%.1 200", raw, nil, err)
    assert.matches('%[%["c"%],%["3000000"%]%]', raw)
  end)

  it("calls a data close function once when the client goes away", function()
    local s = connect()
    local body = '{"table":"t"}'
    s:send("POST /endless/data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " .. #body
      .. "\r\n\r\n" .. body)
    assert(s:receive(100000))
    s:close()
    assert.is_true(wait_until(function() return read(prefix .. "/marks") ~= "" end, 20))
    -- nothing more comes: the stream stopped and close ran once
    assert.equals(200, (post("/sql/check", {})))
    assert.equals("closed\n", read(prefix .. "/marks"))
  end)
end)
