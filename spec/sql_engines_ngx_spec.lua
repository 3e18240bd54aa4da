-- The PostgreSQL, MySQL/MariaDB and ClickHouse sources under a real nginx
-- (lua-nginx-module, one worker, database calls in the thread pool), against
-- real servers the spec starts: the four endpoints with a filter pushed down,
-- an injection attempt as a value, and a client that leaves mid-answer over
-- 1M rows cancels the query on the server. nginx loads the LuaJIT build of
-- the C core (see ngx_spec.lua).
local helpers = require "helpers"
local db = require "dbservers"
local cjson = require "cjson"
local N = require "ngx_helpers"

local format, concat = string.format, table.concat
local read, write, wait_until = N.read, N.write, N.wait_until
local TOKEN = "ngx-engines-token"

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
  clickhouse = {
    "CREATE TABLE items ENGINE = MergeTree ORDER BY id AS SELECT toInt64(number + 1) AS id, "
      .. "if(number + 1 = 7, 'x\\'; DROP TABLE items; --', concat('item ', toString(number + 1))) AS name, "
      .. "(number + 1) * 1.5 AS price, toDate('2024-01-01') + (number + 1) AS made FROM numbers(300)",
    "CREATE TABLE big ENGINE = MergeTree ORDER BY id AS SELECT number + 1 AS id, hex(MD5(toString(number))) AS s "
      .. "FROM numbers(1000000)",
  },
}
-- The query in flight on the server: PostgreSQL reads through a cursor (its
-- transaction stays open while rows remain; closing it ends the query), MySQL
-- streams the statement (SHOW PROCESSLIST shows it until it ends or is killed).
local ACTIVE = {
  postgresql = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bic_ro' AND xact_start IS NOT NULL",
  mysql = "SELECT count(*) FROM information_schema.processlist WHERE user = 'bic_ro' AND info LIKE '%FROM `big`%'",
  clickhouse = "SELECT count() FROM system.processes WHERE user = 'bic_ro' AND query LIKE '%FROM `big`%'",
}

describe("PostgreSQL, MySQL and ClickHouse sources under nginx", function()
  local why = N.missing()
  if why then
    local msg = N.skipped("sql_engines_ngx_spec", why)
    it("needs nginx with the Lua module", function() pending(msg) end)
    return
  end
  local engines = {}
  for _, e in ipairs({ "postgresql", "mysql", "clickhouse" }) do
    local m = db.missing(e)
    if m then
      local msg = db.skip(e, m)
      it("runs against a real " .. e .. " server", function() pending(msg) end)
    else
      engines[#engines + 1] = e
    end
  end
  if #engines == 0 then return end
  local servers, prefix, port, nginx = {}, nil, nil, nil

  setup(function()
    prefix = N.make_prefix()
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
    nginx = N.start(prefix, N.conf(prefix, {
      "  access_log off;",
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      concat(locations, "\n"),
      "  }",
    }), port)
  end)

  teardown(function()
    N.stop(nginx)
    for _, srv in pairs(servers) do srv:stop() end
    N.remove_prefix(prefix)
  end)

  local function connect() return N.connect(port, 60) end
  local function post(path, body) return N.post(connect(), path, body, TOKEN) end

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
