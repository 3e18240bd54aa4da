-- Acceptance of biconnector.ngx against `biconnector serve`: requests as
-- Bitrix24 and careless clients send them, which spec/ngx_parity_spec.lua
-- does not send; each test here failed before the fix it names.
local helpers = require "helpers"
local cjson = require "cjson"
local S = require "serve_helpers"
local N = require "ngx_helpers"

local format = string.format

local TOP = N.TOP
local DEMO = TOP .. "/examples/demo/connector.lua"
local DEMO_TOKEN = "accept-demo-token"

local send_raw = N.send_raw

local request = N.request

local id_masked = N.id_masked

local function view(r)
  local ok, decoded = pcall(cjson.decode, r.body)
  return {
    status = r.status,
    content_type = r.headers["content-type"],
    allow = r.headers["allow"],
    body = (ok and not r.cut) and id_masked(decoded) or r.body,
    cut = r.cut ~= nil,
  }
end

-- a connector with a cache, for the cache and metrics locations
local CACHED = [[
local biconnector = require "biconnector"
local n = 0
return biconnector.connector {
  title = "cached", settings = { { code = "token", name = "Token", type = "STRING" } },
  cache = { ttl = 300 },
  check = function(c) return c.token == "good", "wrong token" end,
  tables = function(_, search)
    n = n + 1
    local all = { { code = "a", title = "A " .. n }, { code = "b", title = "B " .. n } }
    local out = {}
    for _, t in ipairs(all) do if search == "" or t.code:find(search, 1, true) then out[#out + 1] = t end end
    return out
  end,
  describe = function(_, t)
    if t ~= "a" and t ~= "b" then return nil end
    n = n + 1
    return { { code = "id", name = "ID " .. n, type = "int" } }
  end,
  data = function() return { { id = 1 } } end,
}
]]

-- another connector of the same title, other tables
local SAME_TITLE = [[
local biconnector = require "biconnector"
return biconnector.connector {
  title = "cached", settings = { { code = "token", name = "Token", type = "STRING" } },
  cache = { ttl = 300 },
  check = function(c) return c.token == "good", "wrong token" end,
  tables = { { code = "other", title = "Other" } },
  describe = { other = { { code = "n", name = "N", type = "string" } } },
  data = function() return { { n = "x" } } end,
}
]]

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local why_not = N.missing()

describe("biconnector.ngx as Bitrix24 and careless clients see it #ngx", function()
  if why_not then
    local msg = N.skipped("spec/ngx_accept_spec.lua", why_not)
    it("needs nginx with the Lua module", function() pending(msg) end)
    return
  end

  local prefix, nginx, ngx_port, serve, serve_c, serve_o2, dir, cached_file, other_file

  setup(function()
    serve = S.start(S.serve_command({ DEMO, "--listen", "127.0.0.1:0", "--prefix", "/demo", "--workers", "1" }),
      { BIC_DEMO_TOKEN = DEMO_TOKEN, BIC_DEMO_ROWS = "100" })
    dir = helpers.tmpdir("ngx-accept")
    cached_file = dir .. "/cached.lua"
    helpers.write_file(cached_file, CACHED)
    other_file = dir .. "/other.lua"
    helpers.write_file(other_file, SAME_TITLE)
    serve_o2 = S.start(S.serve_command({ other_file, "--listen", "127.0.0.1:0", "--prefix", "/o2", "--workers", "1" }), {})
    serve_c = S.start(S.serve_command({ cached_file, "--listen", "127.0.0.1:0", "--prefix", "/c", "--workers", "1", "--metrics" }), {})
    prefix = N.make_prefix()
    ngx_port = helpers.free_port()
    local lines = {
      "  lua_shared_dict bic_cache 1m;",
      "  lua_shared_dict bic_metrics 1m;",
      -- connector objects (not paths) given to serve: one loaded by the glue, one made in the master
      "  init_by_lua_block { package.loaded.bic_accept_other = require('biconnector.connector').load("
        .. format("%q", other_file) .. ") }",
      "  server {",
      "    listen 127.0.0.1:" .. ngx_port .. ";",
      "    client_max_body_size 1m;",
      "    client_body_buffer_size 1k;",
      "    error_page 400 /_biconnector/400;",
      "    location ~ ^/_biconnector/(\\d+)$ {",
      "      internal;",
      "      content_by_lua_block { require('biconnector.ngx').error_page(tonumber(ngx.var[1])) }",
      "    }",
      "    location /demo/ {",
      "      error_page 413 @bic_413;",
      "      content_by_lua_block { require('biconnector.ngx').serve(" .. format("%q", DEMO)
        .. ", { prefix = '/demo' }) }",
      "    }",
      "    location /c/ {",
      "      content_by_lua_block { require('biconnector.ngx').serve(" .. format("%q", cached_file)
        .. ", { prefix = '/c', cache = 'bic_cache', metrics = 'bic_metrics' }) }",
      "    }",
      "    location = /c/metrics { content_by_lua_block { require('biconnector.ngx').metrics('bic_metrics') } }",
      "    location /o1/ {",
      "      content_by_lua_block { local g = require('biconnector.ngx'); g.serve(g.load(" .. format("%q", cached_file)
        .. "), { prefix = '/o1', cache = 'bic_cache' }) }",
      "    }",
      "    location /o2/ {",
      "      content_by_lua_block { require('biconnector.ngx').serve(package.loaded.bic_accept_other,"
        .. " { prefix = '/o2', cache = 'bic_cache' }) }",
      "    }",
      -- a prefix written as `serve --prefix` takes it: no leading slash, trailing slashes
      "    location /p/ {",
      "      content_by_lua_block { require('biconnector.ngx').serve(" .. format("%q", DEMO)
        .. ", { prefix = 'p//' }) }",
      "    }",
      "    location @bic_413 {",
      "      content_by_lua_block { require('biconnector.ngx').error_page(413) }",
      "    }",
      "  }",
    }
    nginx = N.start(prefix, N.conf(prefix, lines, { env = { "BIC_DEMO_TOKEN", "BIC_DEMO_ROWS" } }), ngx_port,
      format("BIC_DEMO_TOKEN=%s BIC_DEMO_ROWS=100", DEMO_TOKEN))
  end)

  teardown(function()
    S.stop(serve)
    S.stop(serve_c)
    S.stop(serve_o2)
    if dir then helpers.rmdir(dir) end
    N.stop_and_remove(nginx, prefix)
  end)

  -- docs/serve.md: `--metrics` answers GET (and HEAD) PREFIX/metrics, other methods 405;
  -- docs/openresty.md: glue.metrics gives the counters of `serve --metrics`
  it("answers /metrics to GET and HEAD only, other methods 405 as serve --metrics does", function()
    for _, method in ipairs({ "POST", "PUT", "DELETE" }) do
      local a = request(serve_c.port, method, "/c/metrics", "", FORM)
      local b = request(ngx_port, method, "/c/metrics", "", FORM)
      assert.same(view(a), view(b), method)
      assert.equals(405, b.status, method)
      assert.equals("GET", b.headers["allow"], method)
    end
    local b = request(ngx_port, "GET", "/c/metrics")
    assert.equals(200, b.status)
    assert.matches("^text/plain; version=0.0.4", b.headers["content-type"])
    assert.matches("# TYPE biconnector_requests_total counter", b.body, 1, true)
    b = request(ngx_port, "HEAD", "/c/metrics")
    assert.equals(200, b.status)
    assert.equals("", b.body)
  end)

  -- docs/connector.md, "Cache": answers never cross; under serve each connector
  -- object has its own store. Two connector objects of the same title served
  -- with one lua_shared_dict shared the title as their key's namespace, so
  -- the second answered the first's cached table list.
  it("keeps the cached answers of two connector objects of the same title apart", function()
    local body = "connection[token]=good"
    local first = request(ngx_port, "POST", "/o1/table_list", body, FORM)
    assert.equals(200, first.status)
    assert.equals("a", cjson.decode(first.body)[1].code)
    for _, ep in ipairs({ { "table_list", body }, { "table_description", body .. "&table=other" },
                          { "table_description", body .. "&table=a" } }) do
      local a = request(serve_o2.port, "POST", "/o2/" .. ep[1], ep[2], FORM)
      local b = request(ngx_port, "POST", "/o2/" .. ep[1], ep[2], FORM)
      assert.same(view(a), view(b), ep[1] .. " " .. ep[2])
    end
    local b = request(ngx_port, "POST", "/o2/table_list", body, FORM)
    assert.same({ { code = "other", title = "Other" } }, cjson.decode(b.body))
  end)

  -- `serve --prefix bitrix/` is /bitrix (a leading slash added, trailing ones
  -- dropped); the glue took `prefix = "bitrix/"` as it was written, and no
  -- path started with it: every request was a 404
  it("takes a prefix without its leading slash or with trailing slashes as serve --prefix does", function()
    local glue = require "biconnector.ngx"
    assert.equals("/bitrix", glue.prefix_of("/bitrix/check", "bitrix"))
    assert.equals("/bitrix", glue.prefix_of("/bitrix/check", "/bitrix//"))
    assert.equals("/bitrix", glue.prefix_of("/bitrix/check", "bitrix/"))
    assert.is_nil(glue.prefix_of("/check", "/"))
    assert.is_nil(glue.prefix_of("/check", "//"))
    local body = "connection[token]=" .. DEMO_TOKEN
    local a = request(serve.port, "POST", "/demo/check", body, FORM)
    local b = request(ngx_port, "POST", "/p/check", body, FORM)
    assert.same(view(a), view(b))
    assert.equals(200, b.status)
    b = request(ngx_port, "POST", "/p/table_list", body, FORM)
    assert.equals(200, b.status)
    b = request(ngx_port, "POST", "/p/p/check", body, FORM)
    assert.equals(404, b.status)
  end)

  -- serve joins a repeated Content-Encoding ("identity, gzip": 415, the body is
  -- not read as plain); the glue read $http_content_encoding, the first one
  -- only, and parsed a body its client said was gzip as a plain form
  it("refuses a repeated Content-Encoding naming gzip with 415 as serve does, whatever its order", function()
    local body = "connection[token]=" .. DEMO_TOKEN
    for _, hs in ipairs({ "Content-Encoding: identity\r\nContent-Encoding: gzip\r\n",
                          "Content-Encoding: gzip\r\nContent-Encoding: identity\r\n",
                          "Content-Encoding: identity\r\nContent-Encoding: identity\r\n" }) do
      local raw = "POST /demo/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" .. hs
        .. "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
      local a, b = send_raw(serve.port, raw), send_raw(ngx_port, raw)
      assert.same(view(a), view(b), hs)
      assert.equals(hs:find("gzip", 1, true) and 415 or 200, b.status, hs)
    end
  end)
end)

-- examples/nginx/nginx.conf as shipped (paths substituted): nginx's own
-- errors must be JSON wherever they happen, as docs/openresty.md says.
describe("examples/nginx/nginx.conf answers nginx's own errors in JSON #ngx", function()
  if why_not then
    local msg = N.skipped("spec/ngx_accept_spec.lua", why_not)
    it("needs nginx with the Lua module", function() pending(msg) end)
    return
  end
  local h, prefix, port

  setup(function()
    prefix = N.make_prefix()
    port = helpers.free_port()
    local text = N.read(TOP .. "/examples/nginx/nginx.conf")
    local function sub(from, to)
      local i = assert(text:find(from, 1, true), "the example no longer contains " .. from)
      text = text:sub(1, i - 1) .. to .. text:sub(i + #from)
    end
    sub("pid /run/nginx.pid;", "pid " .. prefix .. "/nginx.pid;")
    sub("/var/log/nginx/error.log", prefix .. "/logs/error.log")
    sub("/var/log/nginx/biconnector.log", prefix .. "/logs/biconnector.log")
    sub("/var/lib/nginx/body", prefix .. "/body")
    sub("include /etc/nginx/modules-enabled/*.conf;", "load_module " .. N.MODULES .. "/ndk_http_module.so;\n"
      .. "load_module " .. N.MODULES .. "/ngx_http_lua_module.so;")
    sub("/usr/local/share/lua/5.1/?.lua;/usr/local/share/lua/5.1/?/init.lua",
      TOP .. "/lua/?.lua;" .. TOP .. "/lua/?/init.lua")
    sub("/usr/local/lib/lua/5.1/?.so", N.luajit_build() .. "/?.so")
    text = text:gsub("/etc/biconnector/connector%.lua", (DEMO:gsub("%%", "%%%%")))
    text = text:gsub("listen 8080;", "listen 127.0.0.1:" .. port .. ";")
    text = text:gsub("worker_processes auto;", "worker_processes 1;")
    text = text:gsub("user www%-data;", helpers.nginx_user_line())
    h = N.start(prefix, text, port, "BIC_DEMO_TOKEN=" .. DEMO_TOKEN)
  end)

  teardown(function() N.stop_and_remove(h, prefix) end)

  local function json_error(r)
    local ok, decoded = pcall(cjson.decode, r.body)
    return { r.status, r.headers["content-type"], ok and decoded.error or r.body }
  end

  -- a location's own error_page (the 413 one) stops nginx inheriting the
  -- server's: a 400 nginx finds while reading the body was its HTML page
  it("answers a malformed chunked body under /bitrix/ with 400 JSON", function()
    local body = "connection[token]=" .. DEMO_TOKEN
    for _, chunk in ipairs({ "zz\r\n" .. body .. "\r\n0\r\n\r\n", "3\r\n" .. body .. "\r\n0\r\n\r\n" }) do
      local r = send_raw(port, "POST /bitrix/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        .. "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n" .. chunk)
      assert.same({ 400, "application/json; charset=utf-8", "bad_request" }, json_error(r))
    end
  end)

  -- `location /` serves the connector too (serve's 404 for other paths), so
  -- a body over the limit there is serve's 413 JSON, not nginx's HTML
  it("answers a body over the limit outside /bitrix/ with 413 JSON", function()
    local r = request(port, "POST", "/other/check", "pad=" .. string.rep("z", 2 * 1048576), FORM)
    assert.same({ 413, "application/json; charset=utf-8", "payload_too_large" }, json_error(r))
  end)

  -- nginx answers a Transfer-Encoding other than chunked 501 itself (serve: 400 JSON)
  it("answers a Transfer-Encoding other than chunked with 501 JSON", function()
    local r = send_raw(port, "POST /bitrix/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
      .. "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
    assert.same({ 501, "application/json; charset=utf-8", "internal_error" }, json_error(r))
    assert.matches("Transfer%-Encoding", cjson.decode(r.body).message)
  end)

  -- nginx answers TRACE 405 itself (its HTML page without error_page 405)
  it("answers TRACE with serve's 405 JSON and Allow: POST", function()
    local r = request(port, "TRACE", "/bitrix/check")
    assert.same({ 405, "application/json; charset=utf-8", "method_not_allowed" }, json_error(r))
    assert.equals("POST", r.headers["allow"])
  end)
end)
