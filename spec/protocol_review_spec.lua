-- Found by a review of `biconnector serve` against the protocol (protocol.md,
-- section 2), played as Bitrix24 plays it over loopback: on a SQLite file,
-- /table_list must answer every element with a non-empty `code` and `title`
-- (Bitrix24 rejects the whole list otherwise) and reads `searchString` as the
-- user typed it, spaces around it and all; a form body (Bitrix24's encoding)
-- is read in linear time whatever it holds.
local S = require "serve_helpers"
local H = require "sql_helpers"
local cjson = require "cjson"

local TOKEN = "review-token"

local function post(port, path, form) return H.post_form(port, path, form, TOKEN) end

local function codes_of(list)
  local codes = {}
  for i, t in ipairs(list) do codes[i] = t.code end
  table.sort(codes)
  return codes
end

-- The sorted codes /table_list answers for searchString=text (form-encoded already).
local function search(port, text)
  local status, list = post(port, "/table_list", "searchString=" .. text)
  assert.equals(200, status, cjson.encode(list))
  return codes_of(list)
end

describe("serve sqlite://, as Bitrix24 calls it", function()
  if H.skip_without("sqlite", "spec/protocol_review_spec.lua") then return end
  local dir, h
  setup(function()
    dir = H.tmpdir()
    h = H.serve_sqlite(dir, "shop.db", [[
      CREATE TABLE orders (id INTEGER PRIMARY KEY, "" TEXT, "0" TEXT, note TEXT);
      INSERT INTO orders VALUES (1, 'blank', 'zero', 'a'), (2, 'blank', 'zero', 'b');
      CREATE TABLE "" (id INTEGER);
      CREATE TABLE "0" (id INTEGER);
      CREATE TABLE "00" (id INTEGER);
      CREATE TABLE "order lines" (id INTEGER);
      CREATE TABLE "Сделки" (id INTEGER);
      CREATE TABLE "Émis" (id INTEGER);
    ]], TOKEN)
  end)
  teardown(function()
    if h then S.stop(h) end
    H.rmdir(dir)
  end)

  -- "0" is empty as well: Bitrix24 tests the values with PHP's empty()
  -- (Rest.php, checkTableList, checkTableDescription; spec/endpoint_review_spec.lua)
  it("leaves out a table or column whose name is empty or \"0\", with a warning, and serves the rest", function()
    local status, list = post(h.port, "/table_list", "searchString=")
    assert.equals(200, status, cjson.encode(list))
    assert.same({ "00", "order lines", "orders", "Émis", "Сделки" }, codes_of(list))
    for _, t in ipairs(list) do
      assert.is_true(#t.code > 0 and #t.title > 0 and t.code ~= "0" and t.title ~= "0")
    end
    local st, fields = post(h.port, "/table_description", "table=orders")
    assert.equals(200, st, cjson.encode(fields))
    assert.same({ { code = "id", name = "id", type = "int" }, { code = "note", name = "note", type = "string" } }, fields)
    local sd, rows = post(h.port, "/data", "table=orders")
    assert.equals(200, sd, cjson.encode(rows))
    assert.same({ { "id", "note" }, { 1, "a" }, { 2, "b" } }, rows)
    -- no request names them: an empty table is "missing table", an empty field unknown
    assert.equals(400, (post(h.port, "/data", "table=")))
    assert.equals(400, (post(h.port, "/data", "table=orders&filter%5B%5D=blank")))
    assert.equals(404, (post(h.port, "/table_description", "table=0")))
    assert.equals(400, (post(h.port, "/data", "table=orders&select%5B%5D=0")))
    local log = S.wait_stderr(h, 'column \\"0\\" is not served', true):gsub('\\"', '"')
    assert.matches('table "" is not served: its name is empty', log, 1, true)
    assert.matches('table "orders": column "" is not served: its code is empty', log, 1, true)
    assert.matches('table "0" is not served: its name is "0", which Bitrix24 reads as empty', log, 1, true)
    assert.matches('table "orders": column "0" is not served: its code is "0", which Bitrix24 reads as empty', log, 1, true)
  end)

  it("ignores spaces around searchString (PHP writes them as +), and reads a long run of them at once", function()
    assert.same({ "order lines" }, search(h.port, "+LINES%09"))
    assert.same({ "order lines" }, search(h.port, "order+lines"))
    assert.same({}, search(h.port, "order+++lines"))
    -- the pattern "^%s*(.-)%s*$" backtracked quadratically here: some 6 minutes
    -- of the worker for this search, past the request's 30 s bound
    assert.same({}, search(h.port, "a" .. ("+"):rep(300000) .. "b"))
    assert.same({ "00", "order lines", "orders", "Émis", "Сделки" }, search(h.port, ("+"):rep(300000)))
  end)

  it("folds case as a static table list does: ASCII, Latin-1 letters and Cyrillic", function()
    for _, text in ipairs({ "%D1%81%D0%B4%D0%B5%D0%BB", "%D0%A1%D0%94%D0%95%D0%9B", "+%D1%81%D0%94%D0%B5%D0%BB%D0%9A%D0%B8+" }) do
      assert.same({ "Сделки" }, search(h.port, text), text) -- сдел, СДЕЛ, " сДелКи "
    end
    assert.same({ "Émis" }, search(h.port, "%C3%A9MIS")) -- éMIS
    assert.same({ "order lines", "orders" }, search(h.port, "ORDER"))
    assert.equals(200, (post(h.port, "/check", "")))
  end)
end)

describe("a form body holding %00 in a value, as the demo is served", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1",
      "--max-body", "8388608" }))
  end)
  teardown(function() if h then S.stop(h) end end)

  it("is read in linear time, however many empty variables follow (the names were scanned again for every &)", function()
    -- 8 MiB of `&` after a value holding %00: the search for the next `=` ran
    -- to the end of the body once per `&`, some 5 minutes of the worker, past
    -- the request's 30 s bound
    local body = "connection%5Btoken%5D=demo-token%00" .. ("&"):rep(8 * 1024 * 1024 - 64) .. "table=deals"
    local r = assert(S.request(h.port, "POST", "/data", body, { ["Content-Type"] = "application/x-www-form-urlencoded" }))
    assert.equals(403, r.status) -- the token with a NUL byte after it is a wrong token
    assert.matches("wrong token", r.body, 1, true)
    r = assert(S.request(h.port, "POST", "/check", "connection%5Btoken%5D=demo-token"))
    assert.equals(200, r.status)
  end)
end)

describe("biconnector.sql options that would put an empty code or title in /table_list", function()
  local sql = require "biconnector.sql"
  it("are refused when the source is made, naming the key, not at every request with a 500", function()
    local url = "sqlite:///nonexistent/never-opened.db"
    local cases = {
      { { titles = { orders = "" } }, 'titles["orders"] must be a non-empty string (the title /table_list answers), got ""' },
      { { titles = { orders = 5 } }, 'titles["orders"] must be a non-empty string (the title /table_list answers), got 5' },
      { { queries = { [""] = { sql = "SELECT 1" } } }, 'queries: a table code must be a non-empty string, got ""' },
      { { queries = { q = { sql = "SELECT 1", title = "" } } },
        'queries["q"].title must be a non-empty string (the title /table_list answers), got ""' },
      -- "0" is empty to Bitrix24 (PHP's empty(); spec/endpoint_review_spec.lua)
      { { titles = { orders = "0" } },
        'titles["orders"] must be a non-empty string other than "0" (the title /table_list answers; Bitrix24 reads "0" as empty), got "0"' },
      { { queries = { ["0"] = { sql = "SELECT 1" } } },
        'queries: a table code must be a non-empty string other than "0" (Bitrix24 reads "0" as empty), got "0"' },
    }
    for _, case in ipairs(cases) do
      local opts = case[1]
      opts.url = url
      local ok, err = pcall(sql.source, opts)
      assert.is_false(ok)
      assert.equals("biconnector.sql.source: " .. case[2], (tostring(err):gsub("^[^:]*:%d+: ", "")))
    end
    -- what stays allowed
    assert.is_table(sql.source({ url = url, titles = { orders = "Orders" }, queries = { q = { sql = "SELECT 1" } } }))
  end)
end)
