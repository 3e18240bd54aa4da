-- Parity of the two hosts: the same connector files served by
-- `biconnector serve` and by biconnector.ngx inside a real nginx, the same
-- requests sent to both, and status, Content-Type, Allow and body (decoded
-- when JSON, error ids masked) compared. Bitrix24 (and the acceptance tests
-- that play it) must not tell the two apart. The differences that cannot be
-- closed are listed in docs/openresty.md ("Differences from `biconnector
-- serve`") and asserted here as such. nginx loads the LuaJIT build of the C
-- core, so this spec runs under either busted runtime.
local helpers = require "helpers"
local cjson = require "cjson"
local S = require "serve_helpers"
local N = require "ngx_helpers"

local concat, format = table.concat, string.format

local TOP = N.TOP
local DEMO = TOP .. "/examples/demo/connector.lua"
local DEMO_TOKEN = "parity-demo-token"
local SECRET = "parity-secret-4711"

-- the spec's own connectors, written to its temp dir
local CONNECTORS = {
  -- every handler raises, its message holding the secret
  errors = [[
local biconnector = require "biconnector"
local SECRET = "]] .. SECRET .. [["
return biconnector.connector {
  title = "raises", settings = { { code = "token", name = "Token", type = "STRING" } }, secrets = { SECRET },
  check = function(c)
    if c.token == "raise" then error("check exploded near " .. SECRET) end
    if c.token == "busy" then error(require("biconnector.connector").failure(503, "upstream is down")) end
    return c.token == SECRET, "wrong token"
  end,
  tables = function() error("tables exploded near " .. SECRET) end,
  describe = function() error({ "not a string" }) end,
  data = function() error("data exploded near " .. SECRET) end,
}
]],
  -- an iterator that fails: "late" after the first chunk (3000 rows of 100
  -- bytes, chunks of 64 KiB), "early" before it; "bad" a value that does
  -- not convert after the first chunk; "fine" whole
  stream = [[
local biconnector = require "biconnector"
local SECRET = "]] .. SECRET .. [["
local PAD = string.rep("x", 100)
return biconnector.connector {
  title = "streams", settings = { { code = "token", name = "Token", type = "STRING" } }, secrets = { SECRET },
  check = function(c) return c.token == SECRET, "wrong token" end,
  tables = { { code = "late", title = "late" }, { code = "early", title = "early" },
             { code = "bad", title = "bad" }, { code = "fine", title = "fine" } },
  describe = function(_, t)
    return { { code = "id", name = "ID", type = "int" }, { code = "pad", name = "Pad", type = "string" } }
  end,
  data = function(_, q)
    local i, fail_at = 0, ({ late = 3000, early = 5, bad = -1, fine = -1 })[q.table]
    return function()
      i = i + 1
      if i == fail_at then error("stream broke near " .. SECRET) end
      if q.table == "bad" and i == 3000 then return { id = "not a number", pad = PAD } end
      if i > 4000 then return nil end
      return { id = i, pad = PAD }
    end
  end,
}
]],
  -- a data handler that takes its time (yielding under nginx, blocking under serve)
  slow = [[
local biconnector = require "biconnector"
local SECRET = "]] .. SECRET .. [["
local function pause(s)
  if ngx then ngx.sleep(s) else require("socket").sleep(s) end
end
return biconnector.connector {
  title = "slow", settings = { { code = "token", name = "Token", type = "STRING" } }, secrets = { SECRET },
  check = function(c) return c.token == SECRET, "wrong token" end,
  tables = { { code = "t", title = "T" } },
  describe = { t = { { code = "id", name = "ID", type = "int" } } },
  data = function()
    pause(0.6)
    return { { id = 1 }, { id = 2 } }
  end,
}
]],
}

---------------------------------------------------------------- HTTP client

local send_raw = N.send_raw

local request = N.request

local function urlencode(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return format("%%%02X", c:byte()) end))
end

-- A form body from a list of {name, value} pairs.
local function form(pairs_list)
  local out = {}
  for i, p in ipairs(pairs_list) do out[i] = urlencode(p[1]) .. "=" .. urlencode(p[2]) end
  return concat(out, "&")
end

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local JSON = { ["Content-Type"] = "application/json" }

-- What is compared: status, the media type, Allow, and the body decoded
-- when it is JSON, with error ids masked; a cut stream marked as such.
local id_masked = N.id_masked

local function view(r)
  local ok, decoded = pcall(cjson.decode, r.body)
  return {
    status = r.status,
    content_type = r.headers["content-type"],
    allow = r.headers["allow"],
    body = (ok and not r.cut) and id_masked(decoded) or r.body,
    cut = r.cut ~= nil,
    chunked = r.chunked or false, -- an answer over one chunk is streamed by both
  }
end

---------------------------------------------------------------- the spec

local why_not = N.missing()

describe("biconnector serve and biconnector.ngx answer alike #ngx", function()
  if why_not then
    local msg = N.skipped("spec/ngx_parity_spec.lua", why_not)
    it("needs nginx with the Lua module", function() pending(msg) end)
    return
  end

  local dir, prefix, nginx, ngx_port
  local serves = {} -- name -> serve handle
  local files = { demo = DEMO }

  setup(function()
    dir = helpers.tmpdir("parity")
    for name, text in pairs(CONNECTORS) do
      files[name] = dir .. "/" .. name .. ".lua"
      helpers.write_file(files[name], text)
    end
    -- the built-in server: one process per connector, the prefix /NAME
    for name, file in pairs(files) do
      serves[name] = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--prefix", "/" .. name,
        "--workers", "1" }), { BIC_DEMO_TOKEN = DEMO_TOKEN, BIC_DEMO_ROWS = "100" })
    end
    -- nginx: one location per connector, the same prefix, the same body limit
    prefix = N.make_prefix()
    ngx_port = helpers.free_port()
    local lines = {
      "  server {",
      "    listen 127.0.0.1:" .. ngx_port .. ";",
      "    client_max_body_size 1m;",
      -- nginx's own refusals as JSON: URI locations (a named one fails for an
      -- error in the request line: "empty URI in redirect to named location", a 500)
      "    error_page 400 /_biconnector/400;",
      "    error_page 414 /_biconnector/414;",
      "    error_page 494 /_biconnector/494;",
      "    error_page 501 /_biconnector/501;",
      "    error_page 405 /_biconnector/405;",
    }
    for name, file in pairs(files) do
      for _, line in ipairs({
        "    location /" .. name .. "/ {",
        "      error_page 413 @bic_413;",
        "      content_by_lua_block { require('biconnector.ngx').serve(" .. format("%q", file)
          .. ", { prefix = '/" .. name .. "' }) }",
        "    }",
      }) do lines[#lines + 1] = line end
    end
    for _, line in ipairs({
      "    location ~ ^/_biconnector/(\\d+)$ {",
      "      internal;",
      "      content_by_lua_block { require('biconnector.ngx').error_page(tonumber(ngx.var[1])) }",
      "    }",
      "    location = /_404 { content_by_lua_block { require('biconnector.ngx').error_page(404) } }",
      -- any other path: answered by serve (404 naming it), as `biconnector serve` does
      "    location / {",
      "      content_by_lua_block { require('biconnector.ngx').serve(" .. format("%q", DEMO) .. ", { prefix = '/demo' }) }",
      "    }",
      "    location @bic_413 {",
      "      content_by_lua_block { require('biconnector.ngx').error_page(413) }",
      "    }",
      "  }",
    }) do lines[#lines + 1] = line end
    nginx = N.start(prefix, N.conf(prefix, lines, { env = { "BIC_DEMO_TOKEN", "BIC_DEMO_ROWS" } }), ngx_port,
      format("BIC_DEMO_TOKEN=%s BIC_DEMO_ROWS=100", DEMO_TOKEN))
  end)

  teardown(function()
    for _, h in pairs(serves) do S.stop(h) end
    N.stop_and_remove(nginx, prefix)
    if dir then helpers.rmdir(dir) end
  end)

  local function ngx_log() return N.read(nginx.error_log) end

  -- Sends the same request to both hosts: -> serve's answer, nginx's answer
  local function both(name, method, path, body, headers, version)
    local a = request(serves[name].port, method, path, body, headers, version)
    local b = request(ngx_port, method, path, body, headers, version)
    return a, b
  end

  -- The same request to both; asserts they answer alike; -> serve's view, nginx's view
  local function same(name, method, path, body, headers, version)
    local a, b = both(name, method, path, body, headers, version)
    local va, vb = view(a), view(b)
    if os.getenv("BIC_PARITY_SHOW") then
      io.stderr:write(format("\n== %s %s %s\n  serve %s\n  nginx %s\n", name, method, path,
        cjson.encode(va), cjson.encode(vb)))
    end
    assert.same(va, vb, format("%s %s %s: serve answered %s, nginx %s", name, method, path,
      tostring(a.raw):sub(1, 400), tostring(b.raw):sub(1, 400)))
    return va, vb
  end

  local function demo_conn(extra)
    local list = { { "connection[token]", DEMO_TOKEN } }
    for _, p in ipairs(extra or {}) do list[#list + 1] = p end
    return form(list)
  end

  it("answers each endpoint alike with good input, form and JSON bodies", function()
    local v = same("demo", "POST", "/demo/check", demo_conn(), FORM)
    assert.equals(200, v.status)
    assert.matches("^application/json", v.content_type)
    v = same("demo", "POST", "/demo/table_list", demo_conn(), FORM)
    assert.equals(200, v.status)
    v = same("demo", "POST", "/demo/table_list", demo_conn({ { "searchString", "deal" } }), FORM)
    assert.equals(200, v.status)
    v = same("demo", "POST", "/demo/table_description", demo_conn({ { "table", "deals" } }), FORM)
    assert.equals(200, v.status)
    v = same("demo", "POST", "/demo/data", demo_conn({ { "table", "deals" }, { "select[]", "id" },
      { "select[]", "title" }, { "filter[>id]", "10" }, { "limit", "5" } }), FORM)
    assert.equals(200, v.status)
    assert.equals(6, #v.body)
    local json = cjson.encode({ connection = { token = DEMO_TOKEN }, table = "deals", limit = 3 })
    v = same("demo", "POST", "/demo/data", json, JSON)
    assert.equals(4, #v.body)
    v = same("demo", "POST", "/demo/table_description", cjson.encode({ connection = { token = DEMO_TOKEN },
      table = "contacts" }), JSON)
    assert.equals(200, v.status)
    -- a whole 100-row answer
    v = same("demo", "POST", "/demo/data", demo_conn({ { "table", "deals" } }), FORM)
    assert.equals(101, #v.body)
  end)

  it("sniffs a body without Content-Type alike", function()
    local v = same("demo", "POST", "/demo/check", demo_conn(), {})
    assert.equals(200, v.status)
    v = same("demo", "POST", "/demo/check", cjson.encode({ connection = { token = DEMO_TOKEN } }), {})
    assert.equals(200, v.status)
    same("demo", "POST", "/demo/check", demo_conn(), { ["Content-Type"] = "text/plain" })
    same("demo", "POST", "/demo/check", "", FORM)
    same("demo", "POST", "/demo/check", nil, FORM)
    same("demo", "POST", "/demo/check", demo_conn(), { ["Content-Type"] = "application/x-www-form-urlencoded; charset=UTF-8" })
  end)

  it("refuses bad input alike", function()
    local v = same("demo", "POST", "/demo/check", form({ { "connection[token]", "wrong" } }), FORM)
    assert.equals(403, v.status)
    v = same("demo", "POST", "/demo/table_description", demo_conn({ { "table", "no_such" } }), FORM)
    assert.equals(404, v.status)
    v = same("demo", "POST", "/demo/data", demo_conn({ { "table", "no_such" } }), FORM)
    assert.equals(404, v.status)
    v = same("demo", "POST", "/demo/data", demo_conn({ { "table", "deals" }, { "filter[>nosuchfield]", "1" } }), FORM)
    assert.equals(400, v.status)
    v = same("demo", "POST", "/demo/data", demo_conn({ { "table", "deals" }, { "filter[~~id]", "1" } }), FORM)
    assert.equals(400, v.status)
    for _, limit in ipairs({ "-1", "abc", "1.5", "99999999999999999999999" }) do
      same("demo", "POST", "/demo/data", demo_conn({ { "table", "deals" }, { "limit", limit } }), FORM)
    end
    same("demo", "POST", "/demo/data", cjson.encode({ connection = { token = DEMO_TOKEN }, table = "deals",
      limit = "x" }), JSON)
    same("demo", "POST", "/demo/check", "", JSON)
    same("demo", "POST", "/demo/check", "null", JSON)
    same("demo", "POST", "/demo/check", string.rep("[", 5000), JSON)
    same("demo", "POST", "/demo/check", '{"connection":{"token":"a"},"connection":{"token":"b"}}', JSON)
    same("demo", "POST", "/demo/data", demo_conn({ { "table", "deals" }, { "table", "contacts" } }), FORM)
    same("demo", "POST", "/demo/data", demo_conn({ { "table", "deals" }, { "select[]", "id" }, { "select[0]", "title" } }), FORM)
    same("demo", "POST", "/demo/data", '{"connection":', JSON)
    same("demo", "POST", "/demo/data", "[1,2]", JSON)
  end)

  it("answers unknown endpoints, other methods and paths alike", function()
    local v = same("demo", "POST", "/demo/nothing", demo_conn(), FORM)
    assert.equals(404, v.status)
    v = same("demo", "GET", "/demo/check")
    assert.equals(405, v.status)
    assert.equals("POST", v.allow)
    same("demo", "PUT", "/demo/check", demo_conn(), FORM)
    same("demo", "DELETE", "/demo/data")
    same("demo", "OPTIONS", "/demo/check")
    same("demo", "POST", "/demo/check/", demo_conn(), FORM)
    same("demo", "POST", "/demo/x/check", demo_conn(), FORM)
    same("demo", "POST", "/demo/", demo_conn(), FORM)
    same("demo", "POST", "/demo/check?x=1&y", demo_conn(), FORM)
    same("demo", "POST", "/demo/check?connection[token]=wrong", demo_conn(), FORM)
    same("demo", "POST", "/demo/%63heck", demo_conn(), FORM)
    -- outside the prefix (nginx: a `location /` that serves too)
    same("demo", "POST", "/check", demo_conn(), FORM)
    same("demo", "POST", "/demo", demo_conn(), FORM)
    same("demo", "POST", "/", demo_conn(), FORM)
    same("demo", "GET", "/favicon.ico")
    -- error_page(404) for a configuration that routes other paths there: the code of serve's 404
    local r = request(ngx_port, "GET", "/_404")
    assert.same({ 404, "not_found" }, { r.status, cjson.decode(r.body).error })
    same("demo", "POST", "/demo/check%20", demo_conn(), FORM)
  end)

  -- nginx answers TRACE 405 itself, before any location (an HTML page
  -- without error_page 405); serve answers it as any method but POST
  it("answers TRACE to an endpoint alike: 405 JSON with Allow: POST", function()
    local v = same("demo", "TRACE", "/demo/check")
    assert.same({ 405, "POST", { error = "method_not_allowed", message = "use POST" } }, { v.status, v.allow, v.body })
    same("demo", "TRACE", "/demo/data", demo_conn(), FORM)
    -- the documented difference: nginx does not look at the path (serve: 404)
    local a, b = both("demo", "TRACE", "/demo/nothing")
    assert.same({ 404, "not_found" }, { a.status, cjson.decode(a.body).error })
    assert.same({ 405, "method_not_allowed" }, { b.status, cjson.decode(b.body).error })
  end)

  -- the query string starts at a raw ? and a fragment at a raw # (which
  -- nginx drops); encoded, they are bytes of the path, which names no endpoint
  it("answers an encoded ? or # in the path alike: a 404 naming the path", function()
    for _, case in ipairs({ { "/demo/check%3Fx", "/demo/check?x" }, { "/demo/check%23x", "/demo/check#x" },
                            { "/demo/check%3F", "/demo/check?" }, { "/demo/check%23", "/demo/check#" },
                            { "/demo/check/%3F", "/demo/check/?" }, { "/demo/check%3F/", "/demo/check?/" },
                            { "/demo/check%3fx=1", "/demo/check?x=1" }, { "/demo/check%23x#frag", "/demo/check#x" },
                            { "http://127.0.0.1/demo/check%3Fx", "/demo/check?x" } }) do
      local v = same("demo", "POST", case[1], demo_conn(), FORM)
      assert.same({ 404, { error = "not_found", message = "no such endpoint: " .. case[2] } }, { v.status, v.body },
        case[1])
    end
    for _, path in ipairs({ "/demo/check?x=1", "/demo/check?x=%3F", "/demo/check#a%23b" }) do
      local v = same("demo", "POST", path, demo_conn(), FORM)
      assert.equals(200, v.status, path)
    end
  end)

  -- A /demo/check with the demo's connection: `before` headers, 120 filler
  -- headers, then `after` ones, sent raw to both hosts -> both answers.
  local function past_fillers(before, after)
    local lines = { "POST /demo/check HTTP/1.1", "Host: x", "Connection: close" }
    for _, h in ipairs(before) do lines[#lines + 1] = h end
    for i = 1, 120 do lines[#lines + 1] = "X-Filler-" .. i .. ": v" end
    local body = demo_conn()
    for _, h in ipairs(after) do lines[#lines + 1] = h end
    lines[#lines + 1] = "Content-Length: " .. #body
    local text = table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
    return send_raw(serves.demo.port, text), send_raw(ngx_port, text)
  end

  it("reads every header alike: a Content-Type after 120 others still counts", function()
    local a, b = past_fillers({}, { "Content-Type: text/plain" })
    assert.same(view(a), view(b))
    assert.equals(415, a.status)
  end)

  it("reads Content-Encoding past 120 other headers alike (415)", function()
    local a, b = past_fillers({ "Content-Type: application/x-www-form-urlencoded" }, { "Content-Encoding: gzip" })
    assert.same(view(a), view(b))
    assert.equals(415, a.status)
  end)

  -- the difference docs/openresty.md's table gives: serve() reads
  -- $http_content_type, the first of a repeated Content-Type
  it("differs on a repeated Content-Type: serve joins them (415), nginx takes the first", function()
    local body = demo_conn()
    local text = table.concat({ "POST /demo/check HTTP/1.1", "Host: x", "Connection: close",
      "Content-Type: application/x-www-form-urlencoded", "Content-Type: text/plain",
      "Content-Length: " .. #body }, "\r\n") .. "\r\n\r\n" .. body
    local a, b = send_raw(serves.demo.port, text), send_raw(ngx_port, text)
    assert.equals(415, a.status)
    assert.matches("Content%-Type \\\"application/x%-www%-form%-urlencoded,\\\" is not supported", a.body)
    assert.equals(200, b.status)
    assert.same({ ok = true }, cjson.decode(b.body))
  end)

  it("answers HEAD alike (no body)", function()
    local a, b = both("demo", "HEAD", "/demo/check")
    assert.equals(a.status, b.status)
    assert.equals(a.headers["content-type"], b.headers["content-type"])
    assert.equals(a.headers["allow"], b.headers["allow"])
    assert.equals("", a.body)
    assert.equals("", b.body)
  end)

  it("refuses bodies that do not decode alike", function()
    same("demo", "POST", "/demo/check", "connection[token]=%zz", FORM)
    same("demo", "POST", "/demo/check", "connection[token]=%4", FORM)
    same("demo", "POST", "/demo/check", "connection[token]=%FF%FE", FORM)
    same("demo", "POST", "/demo/check", "connection[token]=\255\254", FORM)
    same("demo", "POST", "/demo/check", '{"connection":{"token":"\255\254"}}', JSON)
    same("demo", "POST", "/demo/check", "\255\254", {})
    same("demo", "POST", "/demo/check", "connection[token]=a%00b", FORM)
  end)

  -- serve --max-body and nginx client_max_body_size both 1 MiB (the
  -- defaults); nginx's 413 through `error_page 413` and error_page(413)
  it("takes a body of exactly the limit, and refuses a longer one with the same 413 JSON", function()
    local exact = demo_conn({ { "x", "" } })
    exact = exact .. string.rep("a", 1048576 - #exact)
    local v = same("demo", "POST", "/demo/check", exact, FORM)
    assert.equals(200, v.status)
    v = same("demo", "POST", "/demo/check", exact .. "a", FORM)
    assert.equals(413, v.status)
    assert.equals("payload_too_large", v.body.error)
    -- with Expect: 100-continue: refused at the headers, no 100 Continue first
    local a, b = both("demo", "POST", "/demo/check", exact .. "a", { ["Content-Type"] = FORM["Content-Type"],
      Expect = "100-continue" })
    assert.same(view(a), view(b))
    assert.equals(413, a.status)
    assert.is_nil(a.raw:find("100 Continue", 1, true))
    assert.is_nil(b.raw:find("100 Continue", 1, true))
    -- chunked, no Content-Length: refused as it arrives
    v = same("demo", "POST", "/demo/check", format("%x\r\n%s\r\n0\r\n\r\n", #exact + 1, exact .. "a"),
      { ["Content-Type"] = FORM["Content-Type"], ["Transfer-Encoding"] = "chunked", ["Content-Length"] = false })
    assert.equals(413, v.status)
  end)

  it("refuses a control byte in the path and %00 in the query alike (400, never another endpoint)", function()
    for _, path in ipairs({ "/demo/check%0A", "/demo/ch%0aeck", "/demo/check%1F", "/demo/check%7f",
                            "/demo/check?x=%00", "/demo/check?%00=1" }) do
      local v = same("demo", "POST", path, demo_conn(), FORM)
      assert.equals(400, v.status, path)
      assert.equals("bad_request", v.body.error, path)
    end
  end)

  it("takes a request target in absolute form (RFC 9112, 3.2.2) alike", function()
    local v = same("demo", "POST", "http://127.0.0.1/demo/check", demo_conn(), FORM)
    assert.equals(200, v.status)
    v = same("demo", "POST", "http://127.0.0.1/demo/nothing?x=1", demo_conn(), FORM)
    assert.equals(404, v.status)
    -- a fragment, which clients should not send: no part of the path
    v = same("demo", "POST", "/demo/check#frag", demo_conn(), FORM)
    assert.equals(200, v.status)
    same("demo", "POST", "/demo/check?a=1#frag", demo_conn(), FORM)
  end)

  -- Documented differences (docs/openresty.md, "Differences from `biconnector
  -- serve`"): requests nginx answers or rewrites before the Lua runs.
  it("differs only as documented: nginx's own refusals and its path normalisation", function()
    -- %00 in the path: both 400 JSON, nginx's through error_page 400 with its own message
    local a, b = both("demo", "POST", "/demo/check%00", demo_conn(), FORM)
    assert.equals(400, a.status)
    assert.equals(400, b.status)
    assert.equals("bad_request", cjson.decode(a.body).error)
    assert.equals("bad_request", cjson.decode(b.body).error)
    -- requests nginx refuses itself, before any Lua: both 400 JSON (nginx's
    -- through error_page 400), the messages differ
    local body = demo_conn()
    for _, head in ipairs({
      "Content-Length: " .. #body .. "\r\nContent-Length: " .. #body,
      "Content-Length: " .. #body .. "\r\nTransfer-Encoding: chunked",
    }) do
      local text = "POST /demo/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" .. head .. "\r\n\r\n" .. body
      a, b = send_raw(serves.demo.port, text), send_raw(ngx_port, text)
      assert.same({ 400, "bad_request" }, { a.status, cjson.decode(a.body).error }, head)
      assert.same({ 400, "bad_request" }, { b.status, cjson.decode(b.body).error }, head)
    end
    local text = "POST /demo/check HTTP/1.1\r\nConnection: close\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
    a, b = send_raw(serves.demo.port, text), send_raw(ngx_port, text)
    assert.same({ 400, "bad_request" }, { a.status, cjson.decode(a.body).error }, "no Host")
    assert.same({ 400, "bad_request" }, { b.status, cjson.decode(b.body).error }, "no Host")
    -- nginx's limits on the request line and headers (large_client_header_buffers,
    -- 8k): 414 and 494 (a 400 "Request Header Or Cookie Too Large" without
    -- error_page 494); serve reads up to libmicrohttpd's buffer
    a, b = both("demo", "POST", "/demo/" .. string.rep("a", 9000), demo_conn(), FORM)
    assert.equals(404, a.status)
    assert.same({ 414, "uri_too_long" }, { b.status, cjson.decode(b.body).error })
    a, b = both("demo", "POST", "/demo/check", demo_conn(), { ["Content-Type"] = FORM["Content-Type"],
      ["X-Big"] = string.rep("a", 9000) })
    assert.equals(200, a.status)
    -- (494 is nginx's own code for it; the client is told 400, as without error_page)
    assert.same({ 400, "bad_request" }, { b.status, cjson.decode(b.body).error })
    -- a Transfer-Encoding other than chunked: serve 400, nginx 501
    text = "POST /demo/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    a, b = send_raw(serves.demo.port, text), send_raw(ngx_port, text)
    assert.same({ 400, "bad_request" }, { a.status, cjson.decode(a.body).error })
    assert.same({ 501, "internal_error" }, { b.status, cjson.decode(b.body).error })
    -- request lines and headers nginx refuses (400 JSON through error_page 400), serve takes
    local CT = "Content-Type: application/x-www-form-urlencoded\r\n"
    for _, case in ipairs({
      { "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404 },
      { "POST demo/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" .. CT .. "Content-Length: " .. #body
        .. "\r\n\r\n" .. body, 404 },
      { "POST /demo/check HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: close\r\n" .. CT .. "Content-Length: "
        .. #body .. "\r\n\r\n" .. body, 200 },
      { "POST /demo/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type : application/x-www-form-urlencoded"
        .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body, 200 },
      { "POST /demo/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" .. CT .. " folded\r\nContent-Length: "
        .. #body .. "\r\n\r\n" .. body, 200 },
      { "POST /demo/check HTTP/1.0\r\nHost: x\r\n" .. CT .. "Transfer-Encoding: chunked\r\n\r\n"
        .. format("%x\r\n%s\r\n0\r\n\r\n", #body, body), 200 },
    }) do
      a, b = send_raw(serves.demo.port, case[1]), send_raw(ngx_port, case[1])
      assert.equals(case[2], a.status, case[1])
      assert.same({ 400, "bad_request" }, { b.status, cjson.decode(b.body).error }, case[1])
    end
    -- dot segments and repeated slashes: nginx resolves them, serve takes the path as sent
    for _, path in ipairs({ "/demo//check", "/demo/./check", "/demo/x/../check" }) do
      a, b = both("demo", "POST", path, demo_conn(), FORM)
      assert.equals(404, a.status, path)
      assert.equals(200, b.status, path)
    end
  end)

  it("answers handler errors alike: 500, an error id, nothing of the message", function()
    for _, case in ipairs({
      { "/errors/check", form({ { "connection[token]", "raise" } }) },
      { "/errors/table_list", form({ { "connection[token]", SECRET } }) },
      { "/errors/table_description", form({ { "connection[token]", SECRET }, { "table", "t" } }) },
      { "/errors/data", form({ { "connection[token]", SECRET }, { "table", "t" } }) },
    }) do
      local a, b = both("errors", "POST", case[1], case[2], FORM)
      local va = same("errors", "POST", case[1], case[2], FORM)
      assert.equals(500, va.status, case[1])
      assert.equals("<id>", va.body.id, case[1])
      for _, r in ipairs({ a, b }) do
        assert.is_nil(r.raw:find(SECRET, 1, true), case[1])
        assert.is_nil(r.raw:find("exploded", 1, true), case[1])
      end
    end
    assert.is_nil(ngx_log():find(SECRET, 1, true))
    assert.is_nil(S.stderr(serves.errors):find(SECRET, 1, true))
    -- each host logs the id it answered
    local a, b = both("errors", "POST", "/errors/check", form({ { "connection[token]", "raise" } }), FORM)
    local id_a, id_b = cjson.decode(a.body).id, cjson.decode(b.body).id
    assert.matches("id=" .. id_a, S.wait_stderr(serves.errors, "id=" .. id_a), 1, true)
    assert.is_true(N.wait_until(function() return ngx_log():find("id=" .. id_b, 1, true) ~= nil end, 5))
    -- a handler's own failure: its status and message
    local v = same("errors", "POST", "/errors/check", form({ { "connection[token]", "busy" } }), FORM)
    assert.equals(503, v.status)
  end)

  it("cuts a stream that fails after its first chunk alike, and answers one that fails before it alike", function()
    local conn = function(t) return form({ { "connection[token]", SECRET }, { "table", t } }) end
    for _, t in ipairs({ "late", "bad" }) do
      local a, b = both("stream", "POST", "/stream/data", conn(t), FORM)
      for host, r in pairs({ serve = a, nginx = b }) do
        assert.equals(200, r.status, host .. " " .. t)
        assert.is_true(r.chunked, host .. " " .. t)
        assert.is_truthy(r.cut, host .. " " .. t .. ": the answer must be cut")
        assert.is_nil(r.raw:find(SECRET, 1, true), host)
        assert.is_false(pcall(cjson.decode, r.body), host .. " " .. t)
      end
    end
    local v = same("stream", "POST", "/stream/data", conn("early"), FORM)
    assert.equals(500, v.status)
    v = same("stream", "POST", "/stream/data", conn("fine"), FORM)
    assert.equals(200, v.status)
    assert.equals(4001, #v.body)
    -- HTTP/1.0: no chunked encoding; the cut answer is not valid JSON
    local a, b = both("stream", "POST", "/stream/data", conn("late"), FORM, "1.0")
    for host, r in pairs({ serve = a, nginx = b }) do
      assert.equals(200, r.status, host)
      assert.is_false(pcall(cjson.decode, r.body), host)
    end
    assert.is_nil(ngx_log():find(SECRET, 1, true))
  end)

  it("answers a slow data handler alike, and keeps serving after a client that left", function()
    local body = form({ { "connection[token]", SECRET }, { "table", "t" } })
    local v = same("slow", "POST", "/slow/data", body, FORM)
    assert.equals(200, v.status)
    assert.same({ { "id" }, { 1 }, { 2 } }, v.body)
    for _, port in ipairs({ serves.slow.port, ngx_port }) do
      local sock = helpers.connect(port, 5)
      sock:send("POST /slow/data HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
      sock:close()
    end
    same("slow", "POST", "/slow/check", form({ { "connection[token]", SECRET } }), FORM)
  end)
end)
