-- biconnector.sql under a real nginx (lua-nginx-module, one worker): the SQL
-- source answers the four endpoints with its database calls in the thread pool;
-- a slow query in one request does not hold up /table_list on the same single
-- worker; a data close function is called once when the client goes away.
-- nginx loads the LuaJIT build of the C core (see ngx_spec.lua).
local helpers = require "helpers"
local H = require "sql_helpers"
local cjson = require "cjson"
local N = require "ngx_helpers"

local format = string.format
local read, write, wait_until = N.read, N.write, N.wait_until
local TOKEN = "ngx-sql-token"

local function q(s) return format("%q", s) end

describe("biconnector.sql under nginx", function()
  local why = N.missing() or H.missing_sqlite3()
  if why then
    local msg = N.skipped("sql_ngx_spec", why)
    it("needs nginx with the Lua module", function() pending(msg) end)
    return
  end
  local prefix, port, nginx, db
  setup(function()
    prefix = N.make_prefix()
    db = H.sample(prefix, "--orders 300")
    port = helpers.free_port()
    -- the SQL connector, with a table defined by a slow query
    write(prefix .. "/sql.lua", format([[
return require("biconnector.sql").connector {
  url = %q, token = %q,
  queries = { slow = { title = "Slow", sql =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT count(*) AS c FROM n" } },
}
]], "sqlite://" .. db, TOKEN))
    -- rows that never end; its close function writes "closed" to marks
    helpers.write_endless_connector(prefix .. "/endless.lua", prefix .. "/marks")
    nginx = N.start(prefix, N.conf(prefix, {
      "  access_log off;",
      "  init_by_lua_block { require('biconnector.ngx').load(" .. q(prefix .. "/sql.lua") .. ") }",
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      "    location /sql/ { content_by_lua_block { require('biconnector.ngx').serve(" .. q(prefix .. "/sql.lua")
        .. ") } }",
      "    location /endless/ { content_by_lua_block { require('biconnector.ngx').serve("
        .. q(prefix .. "/endless.lua") .. ") } }",
      "  }",
    }), port)
  end)

  teardown(function() N.stop_and_remove(nginx, prefix) end)

  local function connect() return N.connect(port, 30) end
  local function post(path, body) return N.post(connect(), path, body, TOKEN) end

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
