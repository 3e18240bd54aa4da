-- The PostgreSQL and MySQL/MariaDB sources under a real nginx
-- (lua-nginx-module, one worker, database calls in the thread pool), against
-- real servers the spec starts: the four endpoints with a filter pushed down,
-- an injection attempt as a value, and a client that leaves mid-answer over
-- 1M rows cancels the query on the server. nginx loads the LuaJIT build of
-- the C core (see ngx_spec.lua).
local helpers = require "helpers"
local db = require "dbservers"
local cjson = require "cjson"
local socket = require "socket"

local format, concat = string.format, table.concat
local TOP = helpers.top == "." and (os.getenv("PWD") or ".") or helpers.top
local MODULES = os.getenv("BIC_NGINX_MODULES") or "/usr/lib/nginx/modules"
local TOKEN = "ngx-engines-token"

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

local function missing_nginx()
  if not nginx_binary() then return "nginx is not installed (Debian: nginx)" end
  for _, m in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
    if not readable(MODULES .. "/" .. m) then return m .. " is not in " .. MODULES end
  end
  if not readable(luajit_build() .. "/biconnector/core.so") then
    return "the LuaJIT build of the C core is missing (make luajit)"
  end
end

local function alive(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  return stat ~= "" and stat:match("^%d+ %b() (%a)") ~= "Z"
end

local function wait_until(predicate, seconds)
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline do
    if predicate() then return true end
    socket.sleep(0.05)
  end
  return predicate()
end

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

local SETUP = {
  postgresql = [[
    CREATE TABLE items (id bigint, name text, price double precision, made date);
    INSERT INTO items SELECT g, 'item ' || g, g * 1.5, date '2024-01-01' + g FROM generate_series(1, 300) g;
    UPDATE items SET name = 'x''; DROP TABLE items; --' WHERE id = 7;
    CREATE TABLE big AS SELECT g AS id, md5(g::text) AS s FROM generate_series(1, 1000000) g;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO bic_ro;
  ]],
  mysql = [[
    CREATE TABLE items (id bigint, name text, price double, made date);
    INSERT INTO items SELECT seq, CONCAT('item ', seq), seq * 1.5, DATE '2024-01-01' + INTERVAL seq DAY FROM seq_1_to_300;
    UPDATE items SET name = 'x''; DROP TABLE items; --' WHERE id = 7;
    CREATE TABLE big AS SELECT seq AS id, md5(seq) AS s FROM seq_1_to_1000000;
  ]],
}
-- The query in flight on the server: PostgreSQL reads through a cursor (its
-- transaction stays open while rows remain; closing it ends the query), MySQL
-- streams the statement (SHOW PROCESSLIST shows it until it ends or is killed).
local ACTIVE = {
  postgresql = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bic_ro' AND xact_start IS NOT NULL",
  mysql = "SELECT count(*) FROM information_schema.processlist WHERE user = 'bic_ro' AND info LIKE '%FROM `big`%'",
}

describe("PostgreSQL and MySQL sources under nginx", function()
  local why = missing_nginx()
  if why then
    io.stderr:write("\n*** SKIPPED: sql_engines_ngx_spec: " .. why .. "\n")
    it("runs under nginx", function() pending("SKIPPED: " .. why) end)
    return
  end
  local engines = {}
  for _, e in ipairs({ "postgresql", "mysql" }) do
    local m = db.missing(e)
    if m then db.skip(e, m) else engines[#engines + 1] = e end
  end
  if #engines == 0 then return end
  local servers, prefix, port, pid, pipe = {}, nil, nil, nil, nil

  setup(function()
    local made, out = db.run("mktemp -d /tmp/bic-ngx-XXXXXX")
    assert(made, out)
    prefix = out:match("^(%S+)")
    assert(db.run("mkdir -p " .. prefix .. "/logs && chmod 755 " .. prefix))
    local locations = {}
    for _, e in ipairs(engines) do
      local srv = db.start(e)
      servers[e] = srv
      srv:admin(SETUP[e])
      write(prefix .. "/" .. e .. ".lua", format("return require('biconnector.sql').connector { url = %q, token = %q }",
        srv:url(), TOKEN))
      locations[#locations + 1] = format("    location /%s/ { content_by_lua_block { require('biconnector.ngx').serve(%q) } }",
        e, prefix .. "/" .. e .. ".lua")
    end
    port = helpers.free_port()
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
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      concat(locations, "\n"),
      "  }",
      "}",
    }, "\n")
    write(prefix .. "/nginx.conf", conf)
    pipe = io.popen(format("unset LD_PRELOAD; exec sh -c 'echo $$; exec %s -p %s -c %s/nginx.conf -g \"daemon off;\" 2>%s/logs/start.out'",
      nginx_binary(), prefix, prefix, prefix), "r")
    pid = pipe:read("*l")
    wait_until(function() return read(prefix .. "/nginx.pid") ~= "" or not alive(pid) end, 10)
    assert(read(prefix .. "/nginx.pid") ~= "", "nginx did not start: " .. read(prefix .. "/logs/start.out")
      .. read(prefix .. "/logs/error.log"))
  end)

  teardown(function()
    if pid then
      db.run("kill -QUIT " .. pid)
      if not wait_until(function() return not alive(pid) end, 10) then db.run("kill -KILL " .. pid) end
      pipe:close()
    end
    for _, srv in pairs(servers) do srv:stop() end
    if prefix and prefix:match("^/tmp/bic%-ngx%-") then db.run("rm -rf " .. db.sh_quote(prefix)) end
  end)

  local function connect()
    local s = socket.tcp()
    s:settimeout(60)
    assert(s:connect("127.0.0.1", port))
    return s
  end

  local function post(path, body)
    body.connection = body.connection or { token = TOKEN }
    local status, text = exchange(connect(), path, cjson.encode(body))
    local ok, decoded = pcall(cjson.decode, text)
    return status, ok and decoded or text
  end

  for _, engine in ipairs(engines) do
    it(engine .. ": answers the four endpoints, the filter in SQL, an injection attempt as a value", function()
      local base = "/" .. engine .. "/"
      assert.equals(200, (post(base .. "check", {})))
      assert.equals(403, (post(base .. "check", { connection = { token = "no" } })))
      local status, body = post(base .. "table_list", {})
      assert.equals(200, status)
      local codes = {}
      for _, t in ipairs(body) do codes[#codes + 1] = t.code end
      table.sort(codes)
      assert.same({ "big", "items" }, codes)
      status, body = post(base .. "table_description", { table = "items" })
      assert.equals(200, status)
      assert.same({ "id:int", "name:string", "price:double", "made:date" }, {
        body[1].code .. ":" .. body[1].type, body[2].code .. ":" .. body[2].type,
        body[3].code .. ":" .. body[3].type, body[4].code .. ":" .. body[4].type })
      status, body = post(base .. "data", { table = "items", select = { "id", "made" },
        filter = { [">=made"] = "2024-10-26", ["<id"] = 300, ["%name"] = "ITEM 29" } })
      assert.equals(200, status)
      assert.same({ { "id", "made" }, { 299, "2024-10-26" } }, body)
      status, body = post(base .. "data", { table = "items", select = { "id" },
        filter = { name = "x'; DROP TABLE items; --" } })
      assert.equals(200, status)
      assert.same({ { "id" }, { 7 } }, body)
      assert.equals("300", servers[engine]:rows("SELECT count(*) FROM items")[1])
    end)

    it(engine .. ": cancels the server's query when the client goes away mid-answer (1M rows)", function()
      local srv = servers[engine]
      local s = connect()
      local body = cjson.encode({ connection = { token = TOKEN }, table = "big" })
      s:send(format("POST /%s/data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
        engine, #body, body))
      local got, rerr, part = s:receive(200000)
      assert(got, tostring(rerr) .. ": " .. tostring(part and part:sub(1, 600)) .. read(prefix .. "/logs/error.log"):sub(-1500))
      assert.equals("1", srv:rows(ACTIVE[engine])[1])
      s:close()
      assert.is_true(wait_until(function() return srv:rows(ACTIVE[engine])[1] == "0" end, 30),
        "the query still runs on the server after the client left")
      assert.equals(200, (post("/" .. engine .. "/check", {})))
    end)
  end
end)
