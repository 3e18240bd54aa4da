-- Issue 20, point 3: names are resolved exactly. /table_description and /data
-- take only a table code that /table_list gives, byte for byte, on every
-- engine (a SQLite file, PostgreSQL, MariaDB and ClickHouse servers the spec
-- starts):
-- another case of a hidden or served table, an internal table, a table-valued
-- function, a qualified spelling of a served table is 404, whatever the engine
-- would resolve it to; a control byte in a table or field code is 400; a field
-- a connector file hides is unknown (400); --tables globs ignore ASCII case;
-- a key of `fields`/`titles` that names nothing is warned about. The same under
-- nginx (the source's calls in the thread pool). Also: a Content-Encoding other
-- than identity is 415 on both hosts.
local db = require "dbservers"
local S = require "serve_helpers"
local H = require "sql_helpers"
local N = require "ngx_helpers"
local helpers = require "helpers"
local cjson = require "cjson"
local sql = require "biconnector.sql"

local format = string.format
local TOKEN = "names-token"

-- POSTs body (a table: JSON; a string: a form) with the token; -> status, the
-- decoded answer (the text when not JSON), the raw answer
local function post(port, path, body, headers)
  local text, hdrs
  if type(body) == "table" then
    body.connection = body.connection or { token = TOKEN }
    text, hdrs = cjson.encode(body), { ["Content-Type"] = "application/json" }
  else
    text, hdrs = "connection[token]=" .. TOKEN .. "&" .. body, { ["Content-Type"] = "application/x-www-form-urlencoded" }
  end
  for k, v in pairs(headers or {}) do hdrs[k] = v end
  local r = assert(S.request(port, "POST", path, text, hdrs))
  local ok, decoded = pcall(cjson.decode, r.body)
  return r.status, ok and decoded or r.body, r
end

local function codes_of(list)
  local codes = {}
  for _, t in ipairs(list) do codes[#codes + 1] = t.code end
  table.sort(codes)
  return codes
end

-- The connector file every engine is served through: `secret` hidden by a
-- glob, `orders.password` hidden by fields; `Orders` (a key in the wrong case)
-- and orders.Note name nothing and are warned about.
local function connector_file(dir, url)
  local file = dir .. "/names_connector.lua"
  local f = assert(io.open(file, "w"))
  f:write(format([[
return require("biconnector.sql").connector {
  url = %q, token = %q, tables = "!secret",
  fields = { orders = { password = false, Note = { name = "N" } }, Orders = { note = false } },
}
]], url, TOKEN))
  f:close()
  return file
end

-- The server's log, its quoted messages unescaped.
local function serve_log(h)
  return (S.stderr(h):gsub('\\"', '"'))
end

-- What every engine must answer: internal is the list of names the engine
-- would resolve (its catalog, table-valued functions, other spellings);
-- stderr_of() gives the server's log.
local function shared_checks(get_port, internal, stderr_of)
  local function port() return get_port() end

  it("lists the served tables only: the glob !secret hides every case of secret", function()
    local status, list = post(port(), "/table_list", {})
    assert.equals(200, status)
    assert.same({ "orders" }, codes_of(list))
  end)

  it("answers 404 to another case or spelling of a hidden or served table", function()
    for _, code in ipairs({ "secret", "SECRET", "Secret", "ORDERS", "Orders", "orders ", " orders" }) do
      for _, path in ipairs({ "/table_description", "/data" }) do
        local status, answer = post(port(), path, { table = code })
        assert.equals(404, status, path .. " " .. code)
        assert.equals("not_found", answer.error, code)
        assert.equals("unknown table " .. '"' .. code .. '"', answer.message)
      end
    end
    assert.equals(200, (post(port(), "/data", { table = "orders" })))
  end)

  it("answers 404 to internal tables and table-valued functions", function()
    for _, code in ipairs(internal) do
      for _, path in ipairs({ "/table_description", "/data" }) do
        local status, answer = post(port(), path, { table = code })
        assert.equals(404, status, path .. " " .. code .. ": " .. cjson.encode(answer))
      end
    end
  end)

  it("answers 400 to a control byte in a table code (JSON \\u0000, form %00), naming it", function()
    for _, code in ipairs({ "secret\0", "orders\0", "orders\0x", "orders\n", "orders\127", "\1orders" }) do
      local status, answer = post(port(), "/data", { table = code })
      assert.equals(400, status, code)
      assert.matches("^table: the code .* holds a control byte %(0x%x%x at byte %d+%)", answer.message)
    end
    for _, body in ipairs({ "table=secret%00", "table=orders%00", "table=orders%0D%0A", "name=orders%1F" }) do
      local status, answer = post(port(), "/table_description", body)
      assert.equals(400, status, body)
      assert.matches("holds a control byte", answer.message, 1, true)
    end
    assert.equals(200, (post(port(), "/table_description", "table=orders")))
  end)

  it("answers 400 to a control byte in a field code, in select or in a filter key", function()
    local status, answer = post(port(), "/data", { table = "orders", select = { "id", "id\0" } })
    assert.equals(400, status)
    assert.matches("select[2]: the code", answer.message, 1, true)
    status, answer = post(port(), "/data", { table = "orders", filter = { ["id\0"] = 1 } })
    assert.equals(400, status)
    assert.matches("^filter: the code", answer.message)
    status, answer = post(port(), "/data", { table = "orders", filter = { LOGIC = "OR", { [">id\0"] = 1 } } })
    assert.equals(400, status)
    assert.matches("holds a control byte", answer.message, 1, true)
  end)

  it("does not know a field the connector file hides: 400 in select and filter", function()
    local status, fields = post(port(), "/table_description", { table = "orders" })
    assert.equals(200, status)
    local described = {}
    for _, f in ipairs(fields) do described[#described + 1] = f.code .. "=" .. f.name end
    assert.same({ "id=id", "note=note" }, described) -- Note (wrong case) renamed nothing
    local answer
    status, answer = post(port(), "/data", { table = "orders", select = { "id", "password" } })
    assert.equals(400, status)
    assert.equals('unknown field in select: "password"', answer.message)
    status = post(port(), "/data", { table = "orders", select = { "PASSWORD" } })
    assert.equals(400, status)
    for _, f in ipairs({ { password = "pw1" }, { ["%password"] = "pw" }, { ["!password"] = "x" },
        { password = { operator = "like", value = "%" } } }) do
      status, answer = post(port(), "/data", { table = "orders", filter = f })
      assert.equals(400, status, cjson.encode(f))
      assert.matches("unknown field", answer.message, 1, true)
    end
    local rows
    status, rows = post(port(), "/data", { table = "orders" })
    assert.equals(200, status)
    assert.same({ "id", "note" }, rows[1])
    assert.is_nil(cjson.encode(rows):find("pw1", 1, true))
  end)

  it("warns about per-table options whose key names no table or column exactly", function()
    local log = stderr_of()
    assert.matches('fields["Orders"] names no table or query of the database (codes are exact, case included) '
      .. '("orders" differs only in case): it does nothing', log, 1, true)
    assert.matches('fields["orders"]["Note"]: table "orders" has no column of this exact name '
      .. '("note" differs only in case)', log, 1, true)
  end)

  it("answers 415 to a Content-Encoding other than identity, 200 to identity", function()
    local status, answer = post(port(), "/data", { table = "orders" }, { ["Content-Encoding"] = "gzip" })
    assert.equals(415, status)
    assert.equals("unsupported_media_type", answer.error)
    assert.equals('body: Content-Encoding "gzip" is not supported; send the body unencoded (no Content-Encoding, '
      .. "or identity)", answer.message)
    assert.equals(415, (post(port(), "/check", "", { ["Content-Encoding"] = "identity, deflate" })))
    assert.equals(200, (post(port(), "/check", "", { ["Content-Encoding"] = "Identity" })))
  end)
end

describe("--tables globs", function()
  it("match ASCII letters in either case, every other byte exactly", function()
    local sel = sql.table_selector("Ord*,!TMP_*,!secret")
    assert.is_true(sel("orders"))
    assert.is_true(sel("ORDERS"))
    assert.is_false(sel("tmp_orders"))
    assert.is_false(sel("SECRET"))
    assert.is_false(sel("sEcReT"))
    assert.is_false(sel("customers"))
    sel = sql.table_selector("été")
    assert.is_true(sel("été"))
    assert.is_false(sel("ÉTÉ")) -- not ASCII: exact
    assert.is_false(sel("ete"))
  end)
end)

describe("exact names on a SQLite file", function()
  if H.skip_without("sqlite", "spec/sql_names_spec.lua") then return end
  local dir, h, h2
  setup(function()
    dir = H.tmpdir()
    local file = dir .. "/names.db"
    H.sqlite(file, [[
      CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, password TEXT, note TEXT, "tab	col" TEXT);
      INSERT INTO orders (password, note) VALUES ('pw1', 'a'), ('pw2', 'b');
      CREATE TABLE "line
break" (id INTEGER);
      CREATE TABLE secret (id INTEGER, token TEXT);
      INSERT INTO secret VALUES (1, 'top-secret');
      CREATE INDEX orders_note ON orders (note);
      ANALYZE;
    ]])
    h = S.start(S.serve_command({ connector_file(dir, "sqlite://" .. file), "--listen", "127.0.0.1:0",
      "--workers", "1" }))
    -- the command line's globs ignore case too
    h2 = S.start(S.serve_command({ "sqlite://" .. file, "--tables", "!SECRET", "--listen", "127.0.0.1:0",
      "--workers", "1" }), { BICONNECTOR_TOKEN = TOKEN })
  end)
  teardown(function()
    if h then S.stop(h) end
    if h2 then S.stop(h2) end
    H.rmdir(dir)
  end)

  shared_checks(function() return h.port end, {
    "sqlite_master", "sqlite_schema", "SQLITE_MASTER", "sqlite_temp_master", "sqlite_stat1", "sqlite_sequence",
    "pragma_database_list", "pragma_compile_options", "pragma_table_info", "PRAGMA_DATABASE_LIST", "dbstat",
    "json_each", "json_tree", "generate_series", "main.orders", "temp.sqlite_master", "orders_note",
  }, function() return serve_log(h) end)

  it("leaves out a table or column whose name holds a control byte, with a warning", function()
    -- (the shared checks show the list and the description without them)
    local log = serve_log(h)
    assert.matches('table "line\\nbreak" is not served: its name holds a control byte', log, 1, true)
    assert.matches('table "orders": column "tab\\9col" is not served: its code holds a control byte', log, 1, true)
  end)

  it("the case bypass of `table=SECRET` is closed on the command line's --tables '!SECRET' too", function()
    local status, list = post(h2.port, "/table_list", {})
    assert.equals(200, status)
    assert.same({ "orders" }, codes_of(list))
    for _, code in ipairs({ "secret", "SECRET", "Secret" }) do
      local st, answer = post(h2.port, "/data", { table = code })
      assert.equals(404, st, code)
      assert.is_nil(cjson.encode(answer):find("top-secret", 1, true))
    end
  end)

  it("a table created while serving is found at once, without a /table_list first", function()
    H.sqlite(dir .. "/names.db", "CREATE TABLE fresh (id INTEGER); INSERT INTO fresh VALUES (7);")
    local status, rows = post(h2.port, "/data", { table = "fresh" })
    assert.equals(200, status, cjson.encode(rows))
    assert.same({ { "id" }, { 7 } }, rows)
    H.sqlite(dir .. "/names.db", "DROP TABLE fresh;")
    assert.equals(404, (post(h2.port, "/data", { table = "fresh" })))
  end)
end)

-- Internal names of the server engines: the catalogs, a qualified spelling of
-- the served table, a table the account may not read.
local INTERNAL = {
  postgresql = { "pg_class", "pg_catalog.pg_class", "pg_catalog.pg_authid", "pg_stat_activity",
    "information_schema.tables", "public.orders", "generate_series", "pg_settings", "noaccess" },
  mysql = { "information_schema.tables", "INFORMATION_SCHEMA.TABLES", "mysql.user", "bic.orders",
    "performance_schema.threads", "sys.version", "noaccess.t", "`orders`" },
  clickhouse = { "system.one", "system.tables", "system.processes", "system.settings", "bic.orders", "`orders`",
    "noaccess.t", "numbers", "one", "default.orders" },
}

-- Both cases of secret (distinct tables on these engines), orders with a
-- password column, and a table the account may not read.
local SETUP = {
  postgresql = [[
    CREATE TABLE orders (id int, password text, note text);
    INSERT INTO orders VALUES (1, 'pw1', 'a'), (2, 'pw2', 'b');
    CREATE TABLE secret (id int, token text);
    CREATE TABLE "SECRET" (id int, token text);
    INSERT INTO secret VALUES (1, 'top-secret');
    INSERT INTO "SECRET" VALUES (1, 'top-secret');
    CREATE TABLE noaccess (id int);
    REVOKE ALL ON noaccess FROM bic_ro;
  ]],
  mysql = [[
    CREATE TABLE orders (id int, password text, note text);
    INSERT INTO orders VALUES (1, 'pw1', 'a'), (2, 'pw2', 'b');
    CREATE TABLE secret (id int, token text);
    CREATE TABLE SECRET (id int, token text);
    INSERT INTO secret VALUES (1, 'top-secret');
    INSERT INTO SECRET VALUES (1, 'top-secret');
    CREATE DATABASE noaccess;
    CREATE TABLE noaccess.t (id int);
  ]],
  clickhouse = {
    "CREATE TABLE orders (id Int32, password String, note String) ENGINE = MergeTree ORDER BY id",
    "INSERT INTO orders VALUES (1, 'pw1', 'a'), (2, 'pw2', 'b')",
    "CREATE TABLE secret (id Int32, token String) ENGINE = Memory",
    "CREATE TABLE SECRET (id Int32, token String) ENGINE = Memory",
    "INSERT INTO secret VALUES (1, 'top-secret')",
    "INSERT INTO SECRET VALUES (1, 'top-secret')",
    "CREATE DATABASE noaccess",
    "CREATE TABLE noaccess.t (id Int32) ENGINE = Memory",
  },
}

-- Two tables that differ only in case, as the engine counts them.
local CASES = {
  postgresql = "SELECT count(*) FROM pg_class WHERE lower(relname) = 'secret' AND relkind = 'r'",
  mysql = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'bic' AND lower(table_name) = 'secret'",
  clickhouse = "SELECT count() FROM system.tables WHERE database = 'bic' AND lower(name) = 'secret'",
}

for _, engine in ipairs({ "postgresql", "mysql", "clickhouse" }) do
  describe("exact names on a real " .. engine .. " server", function()
    if H.skip_without(engine, "spec/sql_names_spec.lua") then return end
    local srv, h, dir
    setup(function()
      srv = db.start(engine)
      srv:admin(SETUP[engine])
      -- two tables that differ only in case really are two tables here
      assert.equals("2", srv:rows(CASES[engine])[1])
      dir = H.tmpdir()
      h = S.start(S.serve_command({ connector_file(dir, srv:url()), "--listen", "127.0.0.1:0", "--workers", "1" }))
    end)
    teardown(function()
      H.stop(h, srv)
      H.rmdir(dir)
    end)

    shared_checks(function() return h.port end, INTERNAL[engine], function() return serve_log(h) end)
  end)
end

describe("exact names under nginx #ngx", function()
  local why = N.missing() or H.missing_sqlite3()
  if why then
    local msg = N.skipped("sql_names_spec", why)
    return it("needs nginx with the Lua module", function() pending(msg) end)
  end
  local prefix, port, nginx
  setup(function()
    prefix = N.make_prefix()
    local file = prefix .. "/names.db"
    H.sqlite(file, [[
      CREATE TABLE orders (id INTEGER, password TEXT, note TEXT);
      INSERT INTO orders VALUES (1, 'pw1', 'a');
      CREATE TABLE secret (id INTEGER);
      ANALYZE;
    ]])
    local connector = connector_file(prefix, "sqlite://" .. file)
    port = helpers.free_port()
    nginx = N.start(prefix, N.conf(prefix, {
      "  access_log off;",
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      "    location / { content_by_lua_block { require('biconnector.ngx').serve(" .. format("%q", connector)
        .. ") } }",
      "  }",
    }), port)
  end)
  teardown(function() N.stop_and_remove(nginx, prefix) end)

  shared_checks(function() return port end, {
    "sqlite_master", "sqlite_schema", "sqlite_stat1", "pragma_database_list", "pragma_compile_options", "dbstat",
  }, function()
    -- the warnings of the thread pool's Lua VMs go to nginx's error log
    N.wait_until(function() return N.read(prefix .. "/logs/error.log"):find("differs only in case", 1, true) end, 5)
    return N.read(prefix .. "/logs/error.log")
  end)
end)
