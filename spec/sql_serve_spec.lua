-- `biconnector serve sqlite:///...` over the bundled sample (examples/sample):
-- the four endpoints over loopback HTTP, the token rules, --tables, verify.
local helpers = require "helpers"
local S = require "serve_helpers"
local H = require "sql_helpers"
local cjson = require "cjson"

local JSON = { ["Content-Type"] = "application/json" }
local TOKEN = "t0ken-for-specs"

local function post(h, path, body)
  local r = assert(S.request(h.port, "POST", path, cjson.encode(body), JSON))
  return r.status, r.body, r
end

local run = H.run -- -> exit status, output

describe("biconnector serve DATABASE-URL", function()
  local dir, db, url, h
  local skip = not H.have_sqlite3("sql_serve_spec")
  setup(function()
    if skip then return end
    dir = H.tmpdir()
    db = H.sample(dir)
    url = "sqlite://" .. db
    h = S.start(S.serve_command({ url, "--listen", "127.0.0.1:0" }), { BICONNECTOR_TOKEN = TOKEN })
  end)
  teardown(function() H.stop(h, dir) end)
  before_each(function()
    if skip then pending(H.NO_SQLITE3) end
  end)

  it("says on start which setting carries the token", function()
    assert.matches("serving \"sample\" from sqlite://", S.stdout(h))
    assert.matches("token in the connector setting `token`", S.stdout(h))
  end)

  it("answers /check with the token and refuses without it", function()
    local status, body = post(h, "/check", { connection = { token = TOKEN } })
    assert.equals(200, status)
    assert.equals('{"ok":true}', body)
    status, body = post(h, "/check", { connection = { token = "wrong" } })
    assert.equals(403, status)
    assert.same({ error = "forbidden", message = "invalid token" }, cjson.decode(body))
    status = post(h, "/table_list", { connection = {} })
    assert.equals(403, status)
  end)

  it("lists the tables and the view as the database names them", function()
    local status, body = post(h, "/table_list", { connection = { token = TOKEN } })
    assert.equals(200, status)
    assert.same({
      { code = "customers", title = "customers" }, { code = "order_lines", title = "order_lines" },
      { code = "orders", title = "orders" }, { code = "products", title = "products" },
    }, cjson.decode(body))
    status, body = post(h, "/table_list", { connection = { token = TOKEN }, searchString = "ORDER" })
    assert.equals(200, status)
    assert.same({ { code = "order_lines", title = "order_lines" }, { code = "orders", title = "orders" } },
      cjson.decode(body))
  end)

  it("describes a table with the documented type mapping", function()
    local status, body = post(h, "/table_description", { connection = { token = TOKEN }, table = "customers" })
    assert.equals(200, status)
    assert.same({
      { code = "id", name = "id", type = "int" }, { code = "name", name = "name", type = "string" },
      { code = "email", name = "email", type = "string" }, { code = "city", name = "city", type = "string" },
      { code = "vip", name = "vip", type = "int" }, { code = "birthday", name = "birthday", type = "date" },
      { code = "registered_at", name = "registered_at", type = "datetime" },
    }, cjson.decode(body))
    status, body = post(h, "/table_description", { connection = { token = TOKEN }, table = "products" })
    assert.equals(200, status)
    local types = {}
    for _, f in ipairs(cjson.decode(body)) do types[f.code] = f.type end
    assert.same({ id = "int", title = "string", category = "string", price = "double", weight_kg = "double",
      in_stock = "int" }, types)
    status, body = post(h, "/table_description", { connection = { token = TOKEN }, table = "nope" })
    assert.equals(404, status)
    assert.same({ error = "not_found", message = 'unknown table "nope"' }, cjson.decode(body))
  end)

  it("streams every row of a table", function()
    local status, body = post(h, "/data", { connection = { token = TOKEN }, table = "orders" })
    assert.equals(200, status)
    local rows = cjson.decode(body)
    assert.equals(5001, #rows)
    assert.same({ "id", "customer_id", "product_id", "quantity", "amount", "status", "ordered_at", "shipped_on",
      "note" }, rows[1])
    assert.equals(1, rows[2][1])
    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$", rows[2][7])
  end)

  it("applies select, filter and limit in the database", function()
    local status, body = post(h, "/data", { connection = { token = TOKEN }, table = "orders",
      select = { "status", "id" }, filter = { [">=id"] = 4990, status = { "paid", "new" } }, limit = 3 })
    assert.equals(200, status)
    local rows = cjson.decode(body)
    assert.same({ "status", "id" }, rows[1])
    assert.is_true(#rows >= 2 and #rows <= 4)
    for i = 2, #rows do
      assert.is_true(rows[i][2] >= 4990)
      assert.is_true(rows[i][1] == "paid" or rows[i][1] == "new")
    end
  end)

  it("serves UTF-8 and NULLs as they are stored", function()
    local status, body = post(h, "/data", { connection = { token = TOKEN }, table = "customers",
      select = { "id", "name", "birthday" }, filter = { ["%name"] = "Сидоров" } })
    assert.equals(200, status)
    local rows = cjson.decode(body)
    assert.is_true(#rows > 2)
    local nulls = 0
    for i = 2, #rows do
      assert.matches("Сидоров", rows[i][2])
      if rows[i][3] == cjson.null then nulls = nulls + 1 end
    end
    assert.is_true(nulls > 0)
  end)

  it("answers a filter on an unknown field with a 400 naming it", function()
    local status, body = post(h, "/data", { connection = { token = TOKEN }, table = "orders",
      filter = { nope = 1 } })
    assert.equals(400, status)
    assert.matches("nope", cjson.decode(body).message)
  end)

  it("passes biconnector verify", function()
    local rc, out = H.verify(h.port, TOKEN, {})
    assert.equals(0, rc, out)
    assert.matches("0 FAIL", out)
    assert.matches("conforms", out)
  end)
end)

describe("biconnector serve DATABASE-URL: start-up rules", function()
  local dir, db
  local skip = not H.have_sqlite3("sql_serve_spec")
  setup(function()
    if skip then return end
    dir = H.tmpdir()
    db = H.sample(dir, "--orders 10")
  end)
  teardown(function() H.rmdir(dir) end)
  before_each(function()
    if skip then pending(H.NO_SQLITE3) end
  end)

  local function serve(args, env)
    local parts = { "env -u BICONNECTOR_TOKEN" }
    for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. H.q(v) end
    parts[#parts + 1] = helpers.runtime .. " bin/biconnector serve"
    for _, a in ipairs(args) do parts[#parts + 1] = H.q(a) end
    return run(table.concat(parts, " "))
  end

  it("refuses to start without a token unless --no-auth", function()
    local rc, out = serve({ "sqlite://" .. db, "--listen", "127.0.0.1:0" })
    assert.equals(1, rc)
    assert.matches("no token: set BICONNECTOR_TOKEN or pass %-%-token%-file FILE", out)
  end)

  it("refuses a missing database file at start, saying why", function()
    local rc, out = serve({ "sqlite://" .. dir .. "/missing.db", "--no-auth" })
    assert.equals(1, rc)
    assert.matches("cannot open database " .. dir:gsub("%p", "%%%0") .. "/missing.db: No such file or directory", out)
    rc, out = serve({ "sqlite:relative.db", "--no-auth" })
    assert.equals(1, rc)
    assert.matches("biconnector serve: sqlite URL: the database path must be absolute %(sqlite:///abs/path.db%), got "
      .. "sqlite:relative.db\n", out)
    rc, out = serve({ "sqlite://host/x.db", "--no-auth" })
    assert.equals(1, rc)
    assert.matches("expected sqlite:///absolute/path.db %(three slashes%)", out)
    -- a URL of a scheme serve does not take is not "cannot open" a file of that name
    rc, out = serve({ "oracle://reader@db/shop", "--no-auth" })
    assert.equals(1, rc)
    assert.matches("biconnector serve: not a database URL: oracle://reader@db/shop (known schemes: clickhouse:", out, 1, true)
  end)

  it("refuses a bad --tables glob", function()
    local rc, out = serve({ "sqlite://" .. db, "--no-auth", "--tables", "orders,!" })
    assert.equals(1, rc)
    assert.equals('biconnector serve: --tables / tables: bad glob "!" (expected NAME, a glob with * and ?, '
      .. "or !GLOB to exclude)\n", out)
  end)

  it("refuses --token-file with an empty or missing file, and the options on a connector file", function()
    local rc, out = serve({ "sqlite://" .. db, "--token-file", dir .. "/none" })
    assert.equals(1, rc)
    assert.matches("%-%-token%-file: .*No such file", out)
  end)

  -- docs/serve.md: "Usage errors go to stderr with exit code 2"; these are wrong on
  -- the command line alone, before any file or database is opened.
  it("answers the database options on a connector file, and --no-auth with --token-file, as usage errors", function()
    for _, opt in ipairs({ { "--no-auth" }, { "--tables", "x" }, { "--token-file", "/nonexistent" },
        { "--pool-size", "2" }, { "--pool-wait", "1" }, { "--answer-timeout", "9" } }) do
      local args = { "examples/minimal.lua", "--listen", "127.0.0.1:0" }
      for _, a in ipairs(opt) do args[#args + 1] = a end
      local rc, out = serve(args)
      assert.equals(2, rc, opt[1])
      assert.matches("apply to a database URL, not to a connector file", out, 1, true)
      assert.matches("(see biconnector serve --help)", out, 1, true)
    end
    local token = dir .. "/usage-token"
    local f = assert(io.open(token, "w"))
    f:write("t\n")
    f:close()
    local rc, out = serve({ "sqlite://" .. db, "--listen", "127.0.0.1:0", "--token-file", token, "--no-auth" })
    assert.equals(2, rc)
    assert.matches("--no-auth with a token", out, 1, true)
    assert.matches("(see biconnector serve --help)", out, 1, true)
  end)

  it("takes the token from --token-file, and serves only the --tables globs", function()
    local f = assert(io.open(dir .. "/token", "w"))
    f:write("file-token\n")
    f:close()
    local h = S.start(S.serve_command({ "sqlite://" .. db, "--listen", "127.0.0.1:0", "--token-file", dir .. "/token",
      "--tables", "c*, p*,orders*,!orders" }))
    local ok, err = pcall(function()
      assert.equals(200, (post(h, "/check", { connection = { token = "file-token" } })))
      local status, body = post(h, "/table_list", { connection = { token = "file-token" } })
      assert.equals(200, status)
      assert.same({ { code = "customers", title = "customers" }, { code = "products", title = "products" } },
        cjson.decode(body))
      assert.equals(404, (post(h, "/table_description", { connection = { token = "file-token" }, table = "orders" })))
      assert.equals(404, (post(h, "/data", { connection = { token = "file-token" }, table = "order_lines" })))
    end)
    S.stop(h)
    assert(ok, err)
  end)

  it("serves without authentication with --no-auth", function()
    local h = S.start("env -u BICONNECTOR_TOKEN " .. S.serve_command({ "sqlite://" .. db, "--listen",
      "127.0.0.1:0", "--no-auth" }))
    local ok, err = pcall(function()
      assert.equals(200, (post(h, "/check", { connection = {} })))
      local status, body = post(h, "/data", { connection = {}, table = "orders", select = { "id" } })
      assert.equals(200, status)
      assert.equals(11, #cjson.decode(body))
    end)
    S.stop(h)
    assert(ok, err)
  end)
end)
