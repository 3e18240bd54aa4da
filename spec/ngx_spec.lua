-- biconnector.ngx inside a real nginx with the Lua module: the minimal and
-- demo connectors over HTTP in both request spellings, errors, a streamed
-- 200,000-row answer, a body spooled to disk, a client that goes away, and
-- the example configuration. nginx loads the LuaJIT build of the C core
-- (BIC_BUILD under luajit, else BIC_BUILD_LUAJIT or BIC_TOP/build-luajit),
-- so this spec runs under either busted runtime.
local helpers = require "helpers"
local cjson = require "cjson"

local concat, format = table.concat, string.format

local TOP = helpers.top == "." and (os.getenv("PWD") or ".") or helpers.top
local MINIMAL_TOKEN, DEMO_TOKEN = "min-secret-123", "demo-secret-456"
local FIXTURE_TOKEN = "fixture-secret-token"
local JSON = { ["Content-Type"] = "application/json" }
local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

---------------------------------------------------------------- environment

local N = require "ngx_helpers"
local sh, popen, read, write = N.sh, N.popen, N.read, N.write
local MODULES, luajit_build, find_nginx = N.MODULES, N.luajit_build, N.find_nginx
local make_prefix, wait_until, free_port = N.make_prefix, N.wait_until, helpers.free_port

-- nginx with the tokens and the SQLite file the example connectors read
local function start_nginx(prefix, conf_text, port)
  return N.start(prefix, conf_text, port,
    format("MINIMAL_TOKEN=%s BIC_DEMO_TOKEN=%s BIC_SQLITE_DB=%s/orders.db", MINIMAL_TOKEN, DEMO_TOKEN, prefix))
end
local stop_nginx = N.stop

---------------------------------------------------------------- HTTP client

-- Sends one request on an open socket and reads the answer. -> { status,
-- headers, body, cut } where cut is a message when a chunked body ended
-- without its final chunk. keep_alive leaves the connection open.
local function exchange(sock, method, path, body, headers, keep_alive)
  local lines = { format("%s %s HTTP/1.1", method, path), "Host: 127.0.0.1",
    keep_alive and "Connection: keep-alive" or "Connection: close" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  sock:send(concat(lines, "\r\n") .. "\r\n\r\n")
  if body then sock:send(body) end -- nginx may refuse it (413) before the end: read the answer anyway
  local status_line = assert(sock:receive("*l"))
  local r = { status = tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)")), headers = {} }
  while true do
    local line = assert(sock:receive("*l"))
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    r.headers[k:lower()] = v
  end
  local parts = {}
  if (r.headers["transfer-encoding"] or ""):lower() == "chunked" then
    while true do
      local size_line, err = sock:receive("*l")
      if not size_line then r.cut = "no chunk header: " .. tostring(err) break end
      local size = tonumber(size_line:match("^%x+"), 16)
      if not size then r.cut = "bad chunk header " .. size_line break end
      if size == 0 then sock:receive("*l") break end
      local data, derr = sock:receive(size)
      if not data then r.cut = "cut inside a chunk: " .. tostring(derr) break end
      parts[#parts + 1] = data
      sock:receive("*l")
    end
  elseif r.headers["content-length"] then
    parts[1] = assert(sock:receive(tonumber(r.headers["content-length"])))
  else
    parts[1] = sock:receive("*a")
  end
  r.body = concat(parts)
  return r
end

local function connect(port) return helpers.connect(port, 20) end

-- One request on a new connection.
local function request(port, method, path, body, headers)
  local sock = connect(port)
  local r = exchange(sock, method, path, body, headers)
  sock:close()
  return r
end

local function json_of(r)
  assert.matches("^application/json", r.headers["content-type"] or "")
  return cjson.decode(r.body)
end

local function q(s) return format("%q", s) end

---------------------------------------------------------------- the spec

local why_not = N.missing()

describe("biconnector.ngx outside nginx", function()
  local glue = require "biconnector.ngx"

  it("loads without nginx and names the $bic_* variables", function()
    assert.same({ "bic_endpoint", "bic_table", "bic_rows", "bic_bytes", "bic_error", "bic_end" }, glue.VARIABLES)
  end)

  it("derives the prefix from the URI, or takes the given one", function()
    local cases = {
      { "/bitrix/data", nil, "/bitrix" },
      { "/bitrix/data/", nil, "/bitrix" },
      { "/a/b/table_list", nil, "/a/b" },
      { "/check", nil, nil },
      { "/", nil, nil },
      { "/bitrix/data", "/bi", "/bi" },
      { "/bitrix/data", "", nil },
    }
    for _, c in ipairs(cases) do
      assert.equals(c[3], glue.prefix_of(c[1], c[2]), c[1] .. " " .. tostring(c[2]))
    end
  end)

  it("caches a connector file per path, and forgets it", function()
    local path = TOP .. "/examples/minimal.lua"
    glue.forget(path)
    assert.is_nil(glue.cached(path))
    local c = glue.load(path)
    assert.equals(c, glue.load(path))
    assert.equals(c, glue.cached(path))
    glue.forget(path)
    assert.is_nil(glue.cached(path))
    assert.has_error(function() glue.load(TOP .. "/no/such/connector.lua") end)
    assert.is_nil(glue.cached(TOP .. "/no/such/connector.lua"))
    assert.has_error(function() glue.load(42) end, "biconnector.ngx.load: expected a connector file path, got number")
  end)
end)

describe("biconnector.ngx #ngx", function()
  if why_not then
    local msg = N.skipped("spec/ngx_spec.lua", why_not)
    it("needs nginx with the Lua module", function() pending(msg) end)
    return
  end

  local MINIMAL = TOP .. "/examples/minimal.lua"
  local DEMO = TOP .. "/examples/demo/connector.lua"
  local FIXTURE = TOP .. "/spec/ngx_fixture_connector.lua"
  local h, prefix, port

  local function error_log() return read(h.error_log) end
  local function wait_log(pattern)
    wait_until(function() return error_log():find(pattern) ~= nil end, 10)
    return error_log()
  end

  setup(function()
    prefix = make_prefix()
    port = free_port()
    local conf = N.conf(prefix, {
      "  log_format bic '$request_uri $status endpoint=$bic_endpoint table=$bic_table rows=$bic_rows "
        .. "bytes=$bic_bytes error=$bic_error end=$bic_end';",
      "  access_log " .. prefix .. "/logs/access.log bic;",
      "  init_by_lua_block {",
      "    local glue = require 'biconnector.ngx'",
      "    glue.load(" .. q(DEMO) .. ")",
      "    glue.load(" .. q(MINIMAL) .. ")",
      "  }",
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      '    set $bic_endpoint "-"; set $bic_table "-"; set $bic_rows "-";',
      '    set $bic_bytes "-"; set $bic_error "-"; set $bic_end "-";',
      "    location /minimal/ {",
      "      content_by_lua_block { require('biconnector.ngx').serve(" .. q(MINIMAL) .. ") }",
      "    }",
      "    location /demo/ {",
      "      client_body_buffer_size 16k;",
      "      client_max_body_size 2m;",
      "      error_page 413 @bic_413;",
      "      content_by_lua_block {",
      "        require('biconnector.ngx').serve(" .. q(DEMO) .. ", { prefix = '/demo', access_log = true })",
      "      }",
      "    }",
      "    location /fixture/ {",
      "      content_by_lua_block {",
      "        require('biconnector.ngx').serve(" .. q(FIXTURE) .. ", { prefix = '/fixture', access_log = true })",
      "      }",
      "      log_by_lua_block {",
      "        local info = ngx.ctx.biconnector",
      "        if info then ngx.log(ngx.NOTICE, 'ctx: table=', info.table, ' rows=', info.rows, ' end=', info['end']) end",
      "      }",
      "    }",
      "    location = /forget-fixture {",
      "      content_by_lua_block { require('biconnector.ngx').forget(" .. q(FIXTURE) .. ") ngx.say('forgotten') }",
      "    }",
      "    location /sqlite/ {",
      "      content_by_lua_block { require('biconnector.ngx').serve(" .. q(TOP .. "/examples/nginx/sqlite_connector.lua") .. ") }",
      "    }",
      "    location /broken/ {",
      "      content_by_lua_block { require('biconnector.ngx').serve(" .. q(prefix .. "/missing.lua") .. ") }",
      "    }",
      "    location @bic_413 {",
      "      content_by_lua_block { require('biconnector.ngx').error_page(413) }",
      "    }",
      "  }",
    }, { env = { "MINIMAL_TOKEN", "BIC_DEMO_TOKEN", "BIC_SQLITE_DB" }, package_path = TOP .. "/examples/nginx/?.lua" })
    h = start_nginx(prefix, conf, port)
  end)

  teardown(function() N.stop_and_remove(h, prefix) end)

  describe("the minimal example (prefix derived from the URI)", function()
    local function post(path, body, headers) return request(port, "POST", "/minimal" .. path, body, headers) end

    it("answers the four endpoints to a form body with PHP brackets", function()
      local conn = "connection%5Btoken%5D=" .. MINIMAL_TOKEN
      local r = post("/check", conn, FORM)
      assert.equals(200, r.status)
      assert.same({ ok = true }, json_of(r))
      r = post("/table_list", conn .. "&searchString=CIT", FORM)
      assert.equals(200, r.status)
      assert.same({ { code = "cities", title = "Cities" } }, json_of(r))
      r = post("/table_description", conn .. "&table=cities", FORM)
      assert.equals(200, r.status)
      local fields = json_of(r)
      assert.equals(5, #fields)
      assert.same({ code = "updated", name = "Updated", type = "datetime" }, fields[5])
      r = post("/data", conn .. "&table=cities&select%5B%5D=name&select%5B%5D=id&limit=2", FORM)
      assert.equals(200, r.status)
      assert.equals(tostring(#r.body), r.headers["content-length"])
      assert.same({ { "name", "id" }, { "Berlin", 1 }, { "Kyiv", 2 } }, json_of(r))
    end)

    it("answers the four endpoints to a JSON body", function()
      local conn = '"connection":{"token":"' .. MINIMAL_TOKEN .. '"}'
      local r = post("/check", "{" .. conn .. "}", JSON)
      assert.same({ ok = true }, json_of(r))
      r = post("/table_list", "{" .. conn .. ',"searchString":""}', JSON)
      assert.same({ { code = "cities", title = "Cities" } }, json_of(r))
      r = post("/table_description", "{" .. conn .. ',"table":"cities"}', JSON)
      assert.equals("id", json_of(r)[1].code)
      r = post("/data/", "{" .. conn .. ',"table":"cities","select":["id","founded","updated"],'
        .. '"filter":{"=id":3}}', JSON)
      assert.equals(200, r.status)
      assert.same({ { "id", "founded", "updated" }, { 3, cjson.null, "2024-03-09 16:00:00" } }, json_of(r))
    end)

    it("refuses a wrong token with 403 and never echoes it", function()
      local r = post("/data", '{"connection":{"token":"not-the-token"},"table":"cities"}', JSON)
      assert.equals(403, r.status)
      assert.same({ error = "forbidden", message = "wrong token" }, json_of(r))
    end)
  end)

  describe("the demo connector", function()
    local function post(path, body, headers) return request(port, "POST", "/demo" .. path, body, headers) end
    local conn_form = "connection%5Btoken%5D=" .. DEMO_TOKEN
    local conn_json = '"connection":{"token":"' .. DEMO_TOKEN .. '"}'

    it("answers the four endpoints in both spellings", function()
      for _, spelling in ipairs({ "form", "json" }) do
        local function body(extra)
          if spelling == "form" then return conn_form .. (extra.form and ("&" .. extra.form) or ""), FORM end
          return "{" .. conn_json .. (extra.json and ("," .. extra.json) or "") .. "}", JSON
        end
        local r = post("/check", body({}))
        assert.same({ ok = true }, json_of(r), spelling)
        r = post("/table_list", body({ form = "searchString=inv", json = '"searchString":"inv"' }))
        assert.same({ { code = "invoices", title = "Invoices" } }, json_of(r), spelling)
        r = post("/table_description", body({ form = "table=deals", json = '"table":"deals"' }))
        local fields = json_of(r)
        assert.equals("id", fields[1].code, spelling)
        r = post("/data", body({
          form = "table=deals&select%5B%5D=id&select%5B%5D=stage&filter%5B%3E%3Did%5D=998",
          json = '"table":"deals","select":["id","stage"],"filter":{">=id":998}',
        }))
        assert.equals(200, r.status, spelling)
        local rows = json_of(r)
        assert.same({ "id", "stage" }, rows[1], spelling)
        assert.same({ 998, 999, 1000 }, { rows[2][1], rows[3][1], rows[4][1] }, spelling)
        assert.equals(4, #rows, spelling)
      end
    end)

    it("keeps the connection alive across a streamed answer and the next request", function()
      local sock = connect(port)
      local r = exchange(sock, "POST", "/demo/data", conn_form .. "&table=deals_3000", FORM, true)
      assert.equals("chunked", r.headers["transfer-encoding"])
      assert.is_nil(r.cut)
      assert.equals(3001, #json_of(r))
      r = exchange(sock, "POST", "/demo/check", conn_form, FORM, true)
      assert.same({ ok = true }, json_of(r))
      r = exchange(sock, "POST", "/demo/table_list", conn_form, FORM)
      assert.equals(3, #json_of(r))
      sock:close()
    end)

    it("answers 404 for an unknown endpoint and 405 for a GET", function()
      local r = post("/nope", "{" .. conn_json .. "}", JSON)
      assert.equals(404, r.status)
      assert.same({ error = "not_found", message = "no such endpoint: /demo/nope" }, json_of(r))
      r = request(port, "GET", "/demo/check")
      assert.equals(405, r.status)
      assert.equals("POST", r.headers["allow"])
      assert.equals("method_not_allowed", json_of(r).error)
    end)

    it("streams a 200,000-row /data answer chunk by chunk", function()
      local r = post("/data", "{" .. conn_json .. ',"table":"deals_200k"}', JSON)
      assert.equals(200, r.status)
      assert.equals("chunked", r.headers["transfer-encoding"])
      assert.is_nil(r.headers["content-length"])
      assert.is_nil(r.cut)
      local rows = cjson.decode(r.body)
      assert.equals(200001, #rows)
      assert.equals("id", rows[1][1])
      assert.equals(200000, rows[200001][1])
      -- the access line (error_log, access_log = true) and the $bic_* variables (access_log)
      local log = wait_log("table=deals_200k status=200")
      assert.matches("biconnector: 127%.0%.0%.1 POST /demo/data endpoint=data table=deals_200k status=200 rows=200000 bytes="
        .. #r.body .. " ms=", log)
      wait_until(function() return read(prefix .. "/logs/access.log"):find("deals_200k", 1, true) ~= nil end, 5)
      assert.matches("/demo/data 200 endpoint=data table=deals_200k rows=200000 bytes=" .. #r.body .. " error=%- end=ok",
        read(prefix .. "/logs/access.log"))
    end)

    it("streams 1,000,000 rows with the worker's peak RSS under 32 MiB", function()
      local p = popen("pgrep -P " .. h.pid)
      local worker = p:read("*l")
      p:close()
      local sock = helpers.connect(port, 20)
      local body = "{" .. conn_json .. ',"table":"deals_1m"}'
      sock:send("POST /demo/data HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        .. "Content-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
      local total = 0
      while true do
        local data, err, partial = sock:receive(1048576)
        data = data or partial
        total = total + #data
        if err == "closed" then break end
        assert(not err, err)
      end
      sock:close()
      assert.is_true(total > 90 * 1048576, "only " .. total .. " bytes")
      local log = wait_log("table=deals_1m status=200")
      assert.matches("table=deals_1m status=200 rows=1000000 bytes=%d+ ms=[%d.]+, ", log)
      local peak_kib = tonumber(read("/proc/" .. worker .. "/status"):match("VmHWM:%s*(%d+)"))
      io.stderr:write(format("\n[ngx_spec] nginx worker peak RSS after 1,000,000 streamed rows (%d bytes): %.1f MiB\n",
        total, peak_kib / 1024))
      assert.is_true(peak_kib < 32 * 1024, "peak RSS " .. peak_kib .. " KiB")
    end)

    it("reads a large form body nginx spooled to a temporary file", function()
      local pad = string.rep("x", 1024 * 1024)
      local r = post("/data", conn_form .. "&table=contacts&select%5B%5D=id&limit=3&pad=" .. pad, FORM)
      assert.equals(200, r.status)
      assert.same({ { "id" }, { 1 }, { 2 }, { 3 } }, json_of(r))
      assert.matches("a client request body is buffered to a temporary file", error_log())
    end)

    it("answers a body over client_max_body_size with a JSON 413", function()
      local r = post("/data", conn_form .. "&pad=" .. string.rep("y", 3 * 1024 * 1024), FORM)
      assert.equals(413, r.status)
      assert.equals("payload_too_large", json_of(r).error)
    end)

    it("stops streaming when the client goes away", function()
      local sock = helpers.connect(port, 10)
      local body = "{" .. conn_json .. ',"table":"deals_5m"}'
      sock:send("POST /demo/data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
      assert(sock:receive(200000))
      sock:close()
      local log = wait_log("table=deals_5m status=200 rows=%d+ bytes=%d+ ms=[%d.]+ end=aborted")
      local rows = tonumber(log:match("table=deals_5m status=200 rows=(%d+) bytes=%d+ ms=[%d.]+ end=aborted"))
      assert.is_true(rows ~= nil and rows < 5000000, "the stream went on after the client left")
    end)
  end)

  describe("examples/nginx/sqlite_connector.lua (biconnector.sql: queries on threads of their own)", function()
    it("answers /data from SQLite with the filter and limit in the SQL", function()
      local has_luasql, luasql = pcall(require, "luasql.sqlite3")
      if not has_luasql then
        io.stderr:write("\n*** SKIPPED: the SQLite example needs lua-sql-sqlite3\n")
        return pending("lua-sql-sqlite3 is not installed")
      end
      local env = luasql.sqlite3()
      local con = assert(env:connect(prefix .. "/orders.db"))
      assert(con:execute("CREATE TABLE orders (id INTEGER, customer TEXT, placed TEXT)"))
      assert(con:execute("INSERT INTO orders VALUES (1, 'Anna', '2025-01-02 10:00:00'), "
        .. "(2, 'O''Brien', '2025-01-03 11:30:00'), (3, 'Chen', '2025-02-01 09:15:00'), "
        .. "(4, 'Dmitri', '2025-03-01 08:00:00')"))
      con:close()
      env:close()
      local r = request(port, "POST", "/sqlite/data", '{"table":"orders","filter":{">id":1},"limit":2}', JSON)
      assert.equals(200, r.status)
      assert.same({ { "id", "customer", "placed" }, { 2, "O'Brien", "2025-01-03 11:30:00" },
        { 3, "Chen", "2025-02-01 09:15:00" } }, json_of(r))
      r = request(port, "POST", "/sqlite/data", [[{"table":"orders","select":["customer"],"filter":{"=customer":"O'Brien"}}]], JSON)
      assert.same({ { "customer" }, { "O'Brien" } }, json_of(r))

      -- outside nginx the same file reads directly (as under `biconnector serve`)
      local script = prefix .. "/direct.lua"
      write(script, "local c = require('biconnector.connector').load(" .. q(TOP .. "/examples/nginx/sqlite_connector.lua") .. ")\n"
        .. "local status, _, body = c:handle({ method = 'POST', path = '/data', headers = {}, "
        .. "body = '{\"table\":\"orders\",\"filter\":{\"<placed\":\"2025-01-03\"}}' })\n"
        .. "io.write(status, ' ', body)\n")
      -- with the same environment as busted (LUA_PATH and LUA_CPATH come from
      -- scripts/run-specs; a sanitizer run's runtime on the PATH preloads ASan)
      local lua_command = helpers.lua_command and helpers.lua_command() or os.getenv("BIC_RUNTIME") or "lua5.4"
      local p = io.popen(format("BIC_SQLITE_DB=%s/orders.db %s %s 2>&1", prefix, lua_command, script))
      local out = p:read("*a")
      p:close()
      local status, body = out:match("^(%d+) (.*)$")
      assert.equals("200", status, out)
      assert.same({ { "id", "customer", "placed" }, { 1, "Anna", "2025-01-02 10:00:00" } }, cjson.decode(body))
    end)
  end)

  describe("errors", function()
    local function post(path, body) return request(port, "POST", "/fixture" .. path, body, JSON) end
    local conn = '"connection":{"token":"' .. FIXTURE_TOKEN .. '"}'

    it("a handler error is a JSON 500 with an id; the log has the message, not the token", function()
      local r = post("/data", "{" .. conn .. ',"table":"boom"}')
      assert.equals(500, r.status)
      local answer = json_of(r)
      assert.equals("internal_error", answer.error)
      assert.matches("^%x+$", answer.id)
      local log = wait_log("id=" .. answer.id)
      assert.matches("data failed: [^\n]*boom on purpose %(token %*%*%*%)[^\n]*id=" .. answer.id, log)
      -- the next request is unaffected
      r = post("/data", "{" .. conn .. ',"table":"numbers"}')
      assert.equals(200, r.status)
      assert.equals(11, #json_of(r))
    end)

    it("a value error mid-stream cuts the answer (no final chunk) and logs it", function()
      local r = post("/data", "{" .. conn .. ',"table":"cut"}')
      assert.equals(200, r.status)
      assert.is_string(r.cut)
      assert.is_true(#r.body > 65536)
      local log = wait_log("data stream cut")
      assert.matches('data stream cut: table \\"cut\\", row 60000', log, 1, true)
      assert.matches("table=cut status=200 rows=%d+ bytes=%d+ ms=[%d.]+ end=error", wait_log("end=error"))
    end)

    it("loads a connector file once per worker, again after forget", function()
      local function loads()
        local titles = {}
        for _, t in ipairs(json_of(post("/table_list", "{" .. conn .. "}"))) do titles[t.code] = t.title end
        return titles.loads
      end
      for _ = 1, 3 do assert.equals("loads=1", loads()) end
      assert.equals("forgotten\n", request(port, "GET", "/forget-fixture").body)
      assert.equals("loads=2", loads())
      assert.equals("loads=2", loads())
    end)

    it("lets a handler and its row iterator yield (ngx.sleep, as cosockets do)", function()
      local r = post("/data", "{" .. conn .. ',"table":"yield","limit":5}')
      assert.equals(200, r.status)
      assert.same({ { "n" }, { 1 }, { 2 }, { 3 }, { 4 }, { 5 } }, json_of(r))
    end)

    it("leaves what it did in ngx.ctx.biconnector for log_by_lua", function()
      assert.equals(200, post("/data", "{" .. conn .. ',"table":"numbers","limit":4}').status)
      assert.matches("ctx: table=numbers rows=4 end=ok", wait_log("ctx: table=numbers rows=4"))
    end)

    it("a connector file that does not load is a JSON 500; the log names the file", function()
      local r = request(port, "POST", "/broken/check", "{}", JSON)
      assert.equals(500, r.status)
      local answer = json_of(r)
      assert.equals("internal_error", answer.error)
      local log = wait_log("id=" .. answer.id)
      assert.matches("glue failed: [^\n]*missing%.lua", log)
    end)

    it("no connection value reaches the logs", function()
      local logs = error_log() .. read(prefix .. "/logs/access.log")
      for _, secret in ipairs({ MINIMAL_TOKEN, DEMO_TOKEN, FIXTURE_TOKEN, "not-the-token" }) do
        assert.is_nil(logs:find(secret, 1, true), secret)
      end
    end)
  end)
end)

describe("examples/nginx/nginx.conf #ngx", function()
  if why_not then
    local msg = N.skipped("spec/ngx_spec.lua", why_not)
    it("needs nginx with the Lua module", function() pending(msg) end)
    return
  end
  local h, prefix

  teardown(function() N.stop_and_remove(h, prefix) end)

  it("docs/openresty.md: the configuration shown passes nginx -t", function()
    local doc = read(TOP .. "/docs/openresty.md")
    local text = assert(doc:match("```nginx\n(.-)```"), "no nginx block in docs/openresty.md")
    local dir = make_prefix()
    local function sub(from, to)
      local i = assert(text:find(from, 1, true), "the block no longer contains " .. from)
      text = text:sub(1, i - 1) .. to .. text:sub(i + #from)
    end
    sub("include /etc/nginx/modules-enabled/*.conf;", "load_module " .. MODULES .. "/ndk_http_module.so;\n"
      .. "load_module " .. MODULES .. "/ngx_http_lua_module.so;\npid " .. dir .. "/nginx.pid;")
    sub("/usr/local/share/lua/5.1/?.lua;/usr/local/share/lua/5.1/?/init.lua",
      TOP .. "/lua/?.lua;" .. TOP .. "/lua/?/init.lua")
    sub("/usr/local/lib/lua/5.1/?.so", luajit_build() .. "/?.so")
    local demo = (TOP .. "/examples/demo/connector.lua"):gsub("%%", "%%%%")
    text = text:gsub("/etc/biconnector/connector%.lua", demo)
    text = text:gsub("http {", "http {\n    client_body_temp_path " .. dir .. "/body;", 1)
    write(dir .. "/nginx.conf", text)
    local ok = sh(format("%s -t -q -p %s -c %s/nginx.conf -e %s/logs/error.log >%s/t.out 2>&1",
      find_nginx(), dir, dir, dir, dir))
    local out = read(dir .. "/t.out") .. read(dir .. "/logs/error.log")
    sh("rm -rf " .. dir)
    assert.is_true(ok, out)
  end)

  it("passes nginx -t and serves the demo under /bitrix/ once its paths are substituted", function()
    prefix = make_prefix()
    local port = free_port()
    local text = read(TOP .. "/examples/nginx/nginx.conf")
    local function sub(from, to)
      local i = assert(text:find(from, 1, true), "the example no longer contains " .. from)
      text = text:sub(1, i - 1) .. to .. text:sub(i + #from)
      return sub
    end
    sub("pid /run/nginx.pid;", "pid " .. prefix .. "/nginx.pid;")
    sub("/var/log/nginx/error.log", prefix .. "/logs/error.log")
    sub("/var/log/nginx/biconnector.log", prefix .. "/logs/biconnector.log")
    sub("/var/lib/nginx/body", prefix .. "/body")
    sub("include /etc/nginx/modules-enabled/*.conf;", "load_module " .. MODULES .. "/ndk_http_module.so;\n"
      .. "load_module " .. MODULES .. "/ngx_http_lua_module.so;")
    sub("/usr/local/share/lua/5.1/?.lua;/usr/local/share/lua/5.1/?/init.lua",
      TOP .. "/lua/?.lua;" .. TOP .. "/lua/?/init.lua")
    sub("/usr/local/lib/lua/5.1/?.so", luajit_build() .. "/?.so")
    local demo = (TOP .. "/examples/demo/connector.lua"):gsub("%%", "%%%%")
    text = text:gsub("/etc/biconnector/connector%.lua", demo)
    text = text:gsub("listen 8080;", "listen 127.0.0.1:" .. port .. ";")
    text = text:gsub("worker_processes auto;", "worker_processes 1;")
    text = text:gsub("user www%-data;", helpers.nginx_user_line())
    write(prefix .. "/nginx.conf", text)

    local out = prefix .. "/logs/t.out"
    local ok = sh(format("%s -t -q -p %s -c %s/nginx.conf -e %s/logs/error.log >%s 2>&1",
      find_nginx(), prefix, prefix, prefix, out))
    assert.is_true(ok, read(out))

    h = start_nginx(prefix, text, port)
    local conn = '"connection":{"token":"' .. DEMO_TOKEN .. '"}'
    local r = request(port, "POST", "/bitrix/check", "{" .. conn .. "}", JSON)
    assert.equals(200, r.status)
    assert.same({ ok = true }, json_of(r))
    r = request(port, "POST", "/bitrix/data", "{" .. conn .. ',"table":"contacts","limit":2,"select":["id"]}', JSON)
    assert.same({ { "id" }, { 1 }, { 2 } }, json_of(r))
    r = request(port, "POST", "/bitrix/data", "pad=" .. string.rep("z", 9 * 1024 * 1024), FORM)
    assert.equals(413, r.status)
    assert.equals("payload_too_large", json_of(r).error)
    -- nginx's own refusals and other paths: JSON, as biconnector serve answers (spec/ngx_parity_spec.lua)
    r = request(port, "POST", "/other/check", "{" .. conn .. "}", JSON)
    assert.same({ 404, "not_found" }, { r.status, json_of(r).error })
    local sock = connect(port)
    sock:send("POST /bitrix/check HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}")
    local raw = sock:receive("*a")
    sock:close()
    assert.matches("^HTTP/1%.1 400 .*\r\nContent%-Type: application/json; charset=utf%-8\r\n.*\"bad_request\"", raw)
    r = request(port, "POST", "/bitrix/check", "{" .. conn .. "}", { ["X-Big"] = string.rep("b", 9000) })
    assert.same({ 400, "bad_request" }, { r.status, json_of(r).error })
    stop_nginx(h)
    local access = read(prefix .. "/logs/biconnector.log")
    assert.matches('"POST /bitrix/data HTTP/1.1" 200 %d+ endpoint=data table=contacts rows=2 error=%- end=ok', access)
  end)
end)
