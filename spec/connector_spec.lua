-- The connector framework (lua/biconnector/connector/core.lua): definition checks at
-- load time, and handle() for every endpoint in both request spellings.
local helpers = require "helpers"
local connector = require "biconnector.connector"
local biconnector = require "biconnector"
local cjson = require "cjson"

local TOKEN = "s3cret-token-value"
local JSON_TYPE = "application/json; charset=utf-8"

local DEALS_FIELDS = helpers.deals_fields() -- id, title, amount, closed, updated

local DEALS = {
  { id = 1, title = "First", amount = 10.5, closed = "2024-01-31", updated = "2024-01-31 10:00:00" },
  { id = 2, title = "Second", amount = 20, closed = 0, updated = 86400 },
  { id = 3, title = "Third", amount = "30.25", closed = { year = 2024, month = 3, day = 1 }, updated = biconnector.null },
}

-- DEALS as array rows holding the query's select, in its order.
local function deals_in_select_order(q)
  local out = {}
  for i, r in ipairs(DEALS) do
    out[i] = {}
    for j, code in ipairs(q.select) do out[i][j] = r[code] end
  end
  return out
end

local function sales_def(overrides)
  local def = {
    title = "Sales",
    settings = { { code = "token", name = "API token", type = "STRING" } },
    check = function(conn)
      if conn.token == TOKEN then return true end
      return false, "wrong token"
    end,
    tables = {
      { code = "deals", title = "Deals" },
      { code = "contacts", title = "Contact persons" },
      { code = "a.b", title = "Dotted 100%" },
    },
    describe = {
      deals = DEALS_FIELDS,
      contacts = { { code = "id", name = "ID", type = "int" } },
      ["a.b"] = { { code = "x", name = "X", type = "string" } },
    },
    data = function(_, q)
      if q.table == "deals" then return DEALS end
      return {}
    end,
  }
  for k, v in pairs(overrides or {}) do def[k] = v end
  return def
end

-- Sends params to c as a JSON body or as a form body (PHP bracket notation).
local function post(c, path, params, spelling, opts)
  local body, ctype
  if spelling == "form" then
    body, ctype = biconnector.form.encode(params), "application/x-www-form-urlencoded"
  else
    body, ctype = cjson.encode(params), "application/json"
  end
  local status, headers, out, info = c:handle({
    method = "POST", path = path, headers = { ["content-type"] = ctype }, body = body, remote = "127.0.0.1",
  }, opts)
  return status, headers, helpers.drain(out), info
end

local function capture_log()
  local entries = {}
  return entries, { log = function(level, message, fields)
    entries[#entries + 1] = { level = level, message = message, fields = fields }
  end }
end

local function has_error(f, message)
  local ok, err = pcall(f)
  assert.is_false(ok)
  assert.equals(message, err)
end

describe("connector definition", function()
  local function expect(overrides, message)
    has_error(function() connector.new(sales_def(overrides)) end, "connector definition: " .. message)
  end

  it("builds a connector whose title, settings and definition stay readable", function()
    local def = sales_def()
    local c = connector.new(def)
    assert.is_true(connector.is_connector(c))
    assert.is_false(connector.is_connector(def))
    assert.equals("Sales", c.title)
    assert.equals(def.settings, c.settings)
    assert.equals(def, c.definition)
    assert.is_true(connector.is_connector(biconnector.connector(sales_def())))
  end)

  it("checks the title", function()
    expect({ title = false }, "title must be a non-empty string, got false")
    expect({ title = "" }, 'title must be a non-empty string, got ""')
  end)

  it("checks the settings", function()
    expect({ settings = "token" }, "settings must be a list of {code, name, type}, got string")
    expect({ settings = { "token" } }, "settings[1] must be a table {code, name, type}, got string")
    expect({ settings = { { name = "Token", type = "STRING" } } }, "settings[1].code must be a non-empty string, got nil")
    expect({ settings = { { code = "t", name = "", type = "STRING" } } }, 'settings[1].name must be a non-empty string, got ""')
    expect({ settings = { { code = "t", name = "T", type = "string" } } }, 'settings[1].type must be "STRING" or "INT", got "string"')
    expect({ settings = { { code = "t", name = "T", type = "INT" }, { code = "t", name = "U", type = "STRING" } } },
      'settings[2].code "t" repeats settings[1]')
    expect({ settings = { { code = ("c"):rep(512), name = "T", type = "INT" } } }, "settings[1].code must be shorter than 512 characters")
    expect({ settings = { x = { code = "t", name = "T", type = "INT" } } }, 'settings must be a list (found key "x")')
    assert.is_true(connector.is_connector(connector.new(sales_def({ settings = {} }))))
  end)

  it("requires check and data functions", function()
    expect({ check = false }, "check must be a function, got boolean")
    expect({ data = { {} } }, "data must be a function, got table")
    local def = sales_def()
    def.check = nil
    has_error(function() connector.new(def) end, "connector definition: check must be a function, got nil")
  end)

  it("checks a static table list", function()
    expect({ tables = "deals" }, "tables must be a list of {code, title} or a function, got string")
    expect({ tables = { { code = "deals" } } }, "tables[1].title must be a non-empty string, got nil")
    expect({ tables = { { code = "", title = "Deals" } } }, 'tables[1].code must be a non-empty string, got ""')
    expect({ tables = { "deals" } }, "tables[1] must be a table {code, title}, got string")
    expect({ tables = { { code = "deals", title = "A" }, { code = "deals", title = "B" } } },
      'tables[2].code "deals" repeats tables[1]')
  end)

  it("checks a static description", function()
    expect({ describe = "x" }, "describe must be a map from table code to fields or a function, got string")
    expect({ describe = { deals = { { code = "id", name = "ID", type = "integer" } } } },
      'describe["deals"][1].type must be one of int, string, double, date, datetime, got "integer"')
    expect({ describe = { deals = { { code = "id", name = "ID", type = "INT" } } } },
      'describe["deals"][1].type must be one of int, string, double, date, datetime, got "INT"')
    expect({ describe = { deals = { { code = "id", type = "int" } } } },
      'describe["deals"][1].name must be a non-empty string, got nil')
    expect({ describe = { deals = { { code = "", name = "ID", type = "int" } } } },
      'describe["deals"][1].code must be a non-empty string, got ""')
    expect({ describe = { deals = {} } }, 'describe["deals"] must list at least one field')
    expect({ describe = { deals = { { code = "id", name = "A", type = "int" }, { code = "id", name = "B", type = "int" } } } },
      'describe["deals"][2].code "id" repeats describe["deals"][1]')
    expect({ describe = { deals = DEALS_FIELDS } }, 'describe["contacts"] is missing (tables[2] lists it)')
  end)

  it("checks the optional log and chunk_size", function()
    expect({ log = "stderr" }, "log must be a function, got string")
    expect({ chunk_size = 0 }, "chunk_size must be a positive integer, got 0")
  end)

  it("refuses a definition that is not a table", function()
    has_error(function() connector.new("x") end, "connector definition:  must be a table, got string")
  end)

  describe("load", function()
    local path = os.tmpname()
    after_each(function() os.remove(path) end)
    local function write(text)
      local f = assert(io.open(path, "w"))
      f:write(text)
      f:close()
    end

    it("loads a file returning a connector or a plain definition", function()
      write([[return require("biconnector").connector {
        title = "T", settings = {}, check = function() return true end,
        tables = {}, describe = {}, data = function() return {} end }]])
      assert.equals("T", connector.load(path).title)
      write([[return { title = "P", settings = {}, check = function() return true end,
        tables = {}, describe = {}, data = function() return {} end }]])
      local c = connector.load(path)
      assert.is_true(connector.is_connector(c))
      assert.equals("P", c.title)
    end)

    it("says that a database file is served by URL, not as a connector file", function()
      write("SQLite format 3\0" .. ("\0"):rep(84) .. "\xff\x01 binary")
      has_error(function() connector.load(path) end, path .. ": an SQLite database, not a connector file:"
        .. " serve it by URL: biconnector serve sqlite://" .. path .. " (docs/database.md)")
      local ok, err = pcall(connector.load, "rel/shop.db") -- no such file: the usual message
      assert.is_false(ok)
      assert.matches("cannot open rel/shop.db", err, 1, true)
    end)

    it("names the file in every problem", function()
      write("return {")
      local ok, err = pcall(connector.load, path)
      assert.is_false(ok)
      assert.matches(path, err, 1, true)
      write("error('boom', 0)")
      has_error(function() connector.load(path) end, path .. ": boom")
      write("return 42")
      has_error(function() connector.load(path) end, path .. ": must return a connector or a definition table, got number")
      write("return { title = 'x' }")
      has_error(function() connector.load(path) end,
        path .. ": connector definition: settings must be a list of {code, name, type}, got nil")
      ok, err = pcall(connector.load, path .. ".absent")
      assert.is_false(ok)
      assert.matches(".absent", err, 1, true)
    end)
  end)
end)

describe("connector:handle routing", function()
  local c = connector.new(sales_def())

  it("answers 404 with a JSON error for an unknown path, whatever the method", function()
    for _, method in ipairs({ "POST", "GET" }) do
      local status, headers, body = c:handle({ method = method, path = "/nope", headers = {}, body = "" })
      assert.equals(404, status)
      assert.equals(JSON_TYPE, headers["Content-Type"])
      assert.same({ error = "not_found", message = "no such endpoint: /nope" }, cjson.decode(body))
    end
  end)

  it("answers 404 with valid JSON for a path that is not UTF-8", function()
    local status, _, body = c:handle({ method = "POST", path = "/n\255pe", headers = {}, body = "" })
    assert.equals(404, status)
    assert.equals("not_found", cjson.decode(body).error)
  end)

  it("answers 405 with Allow: POST for other methods on an endpoint", function()
    for _, path in ipairs({ "/check", "/table_list", "/table_description", "/data" }) do
      for _, method in ipairs({ "GET", "PUT", "HEAD", "DELETE" }) do
        local status, headers, body, info = c:handle({ method = method, path = path, headers = {}, body = "" })
        assert.equals(405, status)
        assert.equals("POST", headers["Allow"])
        assert.equals(JSON_TYPE, headers["Content-Type"])
        assert.same({ error = "method_not_allowed", message = "use POST" }, cjson.decode(body))
        assert.equals(405, info.status)
      end
    end
  end)

  it("serves under a prefix, ignores a query string and a trailing slash", function()
    local http = { method = "POST", path = "/bi/sales/check?x=1", headers = { ["content-type"] = "application/json" },
      body = cjson.encode({ connection = { token = TOKEN } }) }
    assert.equals(200, (c:handle(http, { prefix = "/bi/sales" })))
    assert.equals(200, (c:handle(http, { prefix = "/bi/sales/" })))
    http.path = "/bi/sales/check/"
    assert.equals(200, (c:handle(http, { prefix = "/bi/sales" })))
    http.path = "/check"
    assert.equals(404, (c:handle(http, { prefix = "/bi/sales" })))
    http.path = "/bi/salesX/check"
    assert.equals(404, (c:handle(http, { prefix = "/bi/sales" })))
  end)

  -- a host hands over the decoded path without its query string (opts.bare_path):
  -- a ? or # in it came percent-encoded and is part of the path
  it("with opts.bare_path cuts nothing: a ? in the path is no query string", function()
    local http = { method = "POST", path = "/check?x", headers = { ["content-type"] = "application/json" },
      body = cjson.encode({ connection = { token = TOKEN } }) }
    local status, _, body = c:handle(http, { bare_path = true })
    assert.equals(404, status)
    assert.same({ error = "not_found", message = "no such endpoint: /check?x" }, cjson.decode(body))
    http.path = "/bi/check?/"
    _, _, body = c:handle(http, { prefix = "/bi", bare_path = true })
    assert.same({ error = "not_found", message = "no such endpoint: /bi/check?/" }, cjson.decode(body))
    http.path = "/check#x"
    assert.equals(404, (c:handle(http, { bare_path = true })))
    http.path = "/check/"
    assert.equals(200, (c:handle(http, { bare_path = true })))
    -- without it, a path with a query string as documented
    http.path = "/check?x"
    assert.equals(200, (c:handle(http)))
  end)

  it("answers 400 with a JSON error for an undecodable body", function()
    local status, headers, body = c:handle({ method = "POST", path = "/check",
      headers = { ["content-type"] = "application/json" }, body = "{not json" })
    assert.equals(400, status)
    assert.equals(JSON_TYPE, headers["Content-Type"])
    local answer = cjson.decode(body)
    assert.equals("bad_request", answer.error)
    assert.is_string(answer.message)
  end)
end)

for _, spelling in ipairs({ "json", "form" }) do
  describe("connector:handle with a " .. spelling .. " body", function()
    local function call(c, path, params, opts)
      return post(c, path, params, spelling, opts)
    end
    local good = { token = TOKEN }
    local c = connector.new(sales_def())

    describe("authentication", function()
      local params = {
        ["/check"] = {},
        ["/table_list"] = { searchString = "" },
        ["/table_description"] = { table = "deals" },
        ["/data"] = { table = "deals" },
      }
      for path, p in pairs(params) do
        it("guards " .. path .. " with check(connection); the reason keeps the caller's own wrong value", function()
          local calls = 0
          local guarded = connector.new(sales_def({
            check = function(conn)
              calls = calls + 1
              if conn.token == TOKEN then return true end
              return false, "token " .. tostring(conn.token) .. " is wrong"
            end,
            data = function() error("data must not run") end,
            tables = function() error("tables must not run") end,
            describe = function() error("describe must not run") end,
          }))
          local wrong = "WRONG-token-1234"
          local request = { connection = { token = wrong } }
          for k, v in pairs(p) do request[k] = v end
          local status, headers, body = call(guarded, path, request)
          assert.equals(403, status)
          assert.equals(JSON_TYPE, headers["Content-Type"])
          -- the caller's own refused value, not a secret: masking it would hide the mistake
          assert.same({ error = "forbidden", message = "token " .. wrong .. " is wrong" }, cjson.decode(body))
          assert.equals(1, calls)
          -- No connection at all is refused as well.
          request.connection = nil
          status = call(guarded, path, request)
          assert.equals(403, status)
        end)
      end

      it("masks the configured secrets (def.secrets, a list or a function) in a refusal reason", function()
        for _, secrets in ipairs({ { TOKEN }, function() return { TOKEN } end }) do
          local careless = connector.new(sales_def({
            secrets = secrets,
            check = function(conn)
              if conn.token == TOKEN then return true end
              return false, "token " .. tostring(conn.token) .. " is not " .. TOKEN
            end,
          }))
          local status, _, body = call(careless, "/check", { connection = { token = "typo" } })
          assert.equals(403, status)
          assert.same({ error = "forbidden", message = "token typo is not ***" }, cjson.decode(body))
          assert.is_nil(body:find(TOKEN, 1, true))
        end
        -- a secrets function that raises masks nothing more and breaks nothing
        local c2 = connector.new(sales_def({ secrets = function() error("no") end,
          check = function() return false, "typo" end }))
        local status, _, body = call(c2, "/check", { connection = { token = "typo" } })
        assert.equals(403, status)
        assert.same({ error = "forbidden", message = "typo" }, cjson.decode(body))
        assert.has_error(function() connector.new(sales_def({ secrets = "x" })) end,
          "connector definition: secrets must be a list of strings or a function returning one, got string")
      end)

      it("masks the configured secrets in log lines even when the caller sent none", function()
        local logs, opts = capture_log()
        local c2 = connector.new(sales_def({ secrets = { TOKEN },
          check = function() error("cannot compare with " .. TOKEN) end }))
        local status = call(c2, "/check", { connection = { token = "typo" } }, opts)
        assert.equals(500, status)
        assert.matches("cannot compare with ***", logs[1].message, 1, true)
        assert.is_nil(logs[1].fields.traceback:find(TOKEN, 1, true))
      end)

      it("uses a default reason when check gives none", function()
        local c2 = connector.new(sales_def({ check = function() return nil end }))
        local status, _, body = call(c2, "/check", { connection = good })
        assert.equals(403, status)
        assert.same({ error = "forbidden", message = "access denied" }, cjson.decode(body))
      end)

      it("answers 500 with an error id when check raises, logging without connection values", function()
        local logs, opts = capture_log()
        local c2 = connector.new(sales_def({ check = function(conn) error("db down for " .. conn.token) end }))
        local status, headers, body, info = call(c2, "/table_list", { connection = good }, opts)
        assert.equals(500, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        local answer = cjson.decode(body)
        assert.equals("internal_error", answer.error)
        assert.matches("^%x%x%x%x%x%x%x%x$", answer.id)
        assert.equals("check failed (error id " .. answer.id .. ")", answer.message)
        assert.equals(1, #logs)
        assert.equals("error", logs[1].level)
        assert.equals(answer.id, logs[1].fields.id)
        assert.equals(answer.id, info.error)
        assert.matches("db down for ***", logs[1].message, 1, true)
        assert.is_nil(logs[1].message:find(TOKEN, 1, true))
        assert.is_nil(logs[1].fields.traceback:find(TOKEN, 1, true))
      end)
    end)

    describe("/check", function()
      it("answers 200 with a small non-empty JSON body", function()
        local status, headers, body, info = call(c, "/check", { connection = good })
        assert.equals(200, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        assert.same({ ok = true }, cjson.decode(body))
        assert.equals("check", info.endpoint)
        assert.equals(200, info.status)
        assert.equals(#body, info.bytes)
      end)
    end)

    describe("/table_list", function()
      local function codes(body)
        local out = {}
        for i, t in ipairs(cjson.decode(body)) do out[i] = t.code end
        return out
      end

      it("filters a static list by the search string on code and title, case-insensitively", function()
        local status, headers, body = call(c, "/table_list", { connection = good, searchString = "" })
        assert.equals(200, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        assert.same({ { code = "deals", title = "Deals" }, { code = "contacts", title = "Contact persons" },
          { code = "a.b", title = "Dotted 100%" } }, cjson.decode(body))
        assert.same({ "contacts" }, codes(select(3, call(c, "/table_list", { connection = good, searchString = "PERSON" }))))
        assert.same({ "deals" }, codes(select(3, call(c, "/table_list", { connection = good, searchString = "DEAL" }))))
        assert.same({ "a.b" }, codes(select(3, call(c, "/table_list", { connection = good, searchString = "." }))))
        assert.same({ "a.b" }, codes(select(3, call(c, "/table_list", { connection = good, searchString = "0%" }))))
        assert.same({ "deals", "contacts", "a.b" }, codes(select(3, call(c, "/table_list", { connection = good }))))
        local c_ru = connector.new(sales_def({ tables = {
          { code = "sdelki", title = "Сделки ЁЛКИ" }, { code = "cafe", title = "CAFÉ Über" } },
          describe = function() return nil end }))
        assert.same({ "sdelki" }, codes(select(3, call(c_ru, "/table_list", { connection = good, searchString = "сДЕЛ" }))))
        assert.same({ "sdelki" }, codes(select(3, call(c_ru, "/table_list", { connection = good, searchString = "ёлки" }))))
        assert.same({ "cafe" }, codes(select(3, call(c_ru, "/table_list", { connection = good, searchString = "café üb" }))))
        assert.same({ "deals" }, codes(select(3, call(c, "/table_list", { connection = good, searchString = "  deal " }))))
        assert.same({ "deals", "contacts", "a.b" }, codes(select(3, call(c, "/table_list", { connection = good, searchString = "  " }))))
        local _, _, body2 = call(c, "/table_list", { connection = good, searchString = "zzz" })
        assert.equals("[]", body2)
      end)

      it("uses a function's answer as it is", function()
        local seen
        local c2 = connector.new(sales_def({ tables = function(conn, search)
          seen = { conn.token, search }
          return { { code = "x", title = "Not matching the search" } }
        end, describe = function() return nil end }))
        local status, _, body = call(c2, "/table_list", { connection = good, searchString = "deal" })
        assert.equals(200, status)
        assert.same({ TOKEN, "deal" }, seen)
        assert.same({ { code = "x", title = "Not matching the search" } }, cjson.decode(body))
      end)

      it("answers 500 naming the element without code or title", function()
        local logs, opts = capture_log()
        local c2 = connector.new(sales_def({ tables = function()
          return { { code = "x", title = "X" }, { code = "y", title = "" } }
        end, describe = function() return nil end }))
        local status, headers, body = call(c2, "/table_list", { connection = good }, opts)
        assert.equals(500, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        local answer = cjson.decode(body)
        assert.equals('tables()[2].title must be a non-empty string, got ""', answer.message)
        assert.equals(answer.id, logs[1].fields.id)
        c2 = connector.new(sales_def({ tables = function() return "deals" end, describe = function() return nil end }))
        status, _, body = call(c2, "/table_list", { connection = good }, opts)
        assert.equals(500, status)
        assert.equals("tables() must be a list of {code, title}, got string", cjson.decode(body).message)
      end)
    end)

    describe("/table_description", function()
      it("answers the described fields", function()
        local status, headers, body, info = call(c, "/table_description", { connection = good, table = "deals" })
        assert.equals(200, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        assert.same(DEALS_FIELDS, cjson.decode(body))
        assert.equals("deals", info.table)
      end)

      it("answers 404 for an unknown table and 400 without a table", function()
        local status, headers, body = call(c, "/table_description", { connection = good, table = "nope" })
        assert.equals(404, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        assert.same({ error = "not_found", message = 'unknown table "nope"' }, cjson.decode(body))
        status, headers, body = call(c, "/table_description", { connection = good })
        assert.equals(400, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        assert.same({ error = "bad_request", message = "missing table" }, cjson.decode(body))
      end)

      it("checks what a describe function returns", function()
        local answer
        local c2 = connector.new(sales_def({ tables = function() return {} end, describe = function(conn, code)
          assert.equals(TOKEN, conn.token)
          if code == "nil" then return nil end
          return answer
        end }))
        local status = call(c2, "/table_description", { connection = good, table = "nil" })
        assert.equals(404, status)
        local cases = {
          { { { code = "a", name = "A", type = "money" } }, 'describe("t")[1].type must be one of int, string, double, date, datetime, got "money"' },
          { { { code = "a", name = "", type = "int" } }, 'describe("t")[1].name must be a non-empty string, got ""' },
          { { { name = "A", type = "int" } }, 'describe("t")[1].code must be a non-empty string, got nil' },
          { {}, 'describe("t") must list at least one field' },
          { "x", 'describe("t") must be a list of {code, name, type}, got string' },
        }
        for _, case in ipairs(cases) do
          answer = case[1]
          local st, _, body = call(c2, "/table_description", { connection = good, table = "t" }, { log = function() end })
          assert.equals(500, st)
          assert.equals(case[2], cjson.decode(body).message)
        end
        answer = { { code = "a", name = "A", type = "date" } }
        local st, _, body = call(c2, "/table_description", { connection = good, table = "t" })
        assert.equals(200, st)
        assert.same(answer, cjson.decode(body))
      end)

      it("answers 404 when a static table list does not list the table", function()
        local c2 = connector.new(sales_def({ describe = function() error("not reached") end }))
        local status, _, body = call(c2, "/table_description", { connection = good, table = "other" })
        assert.equals(404, status)
        assert.same({ error = "not_found", message = 'unknown table "other"' }, cjson.decode(body))
      end)
    end)

    describe("/data", function()
      it("answers every described field in described order without select", function()
        local status, headers, body, info = call(c, "/data", { connection = good, table = "deals" })
        assert.equals(200, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        assert.same({
          { "id", "title", "amount", "closed", "updated" },
          { 1, "First", 10.5, "2024-01-31", "2024-01-31 10:00:00" },
          { 2, "Second", 20, "1970-01-01", "1970-01-02 00:00:00" },
          { 3, "Third", 30.25, "2024-03-01", cjson.null },
        }, cjson.decode(body))
        assert.equals("data", info.endpoint)
        assert.equals("deals", info.table)
        assert.equals(3, info.rows)
        assert.equals(#body, info.bytes)
      end)

      it("applies select and limit and passes the normalized query", function()
        local q_seen
        local c2 = connector.new(sales_def({ data = function(conn, q)
          assert.equals(TOKEN, conn.token)
          q_seen = q
          return DEALS
        end }))
        local status, _, body = call(c2, "/data", { connection = good, table = "deals",
          select = { "title", "id" }, limit = 2, mapFields = { id = "DEAL_ID" } })
        assert.equals(200, status)
        assert.same({ { "title", "id" }, { "First", 1 }, { "Second", 2 } }, cjson.decode(body))
        assert.equals("deals", q_seen.table)
        assert.same({ "title", "id" }, q_seen.select)
        assert.equals(2, q_seen.limit)
        assert.same({ id = "DEAL_ID" }, q_seen.map_fields)
        assert.equals(TOKEN, q_seen.connection.token)
        assert.same(DEALS_FIELDS, q_seen.fields)
        assert.is_nil(q_seen.filter)
      end)

      it("reads array rows in described order, or in select order when the handler applied select", function()
        local rows = { { 1, "A", 1.5 }, { 2, "B" } }
        local c2 = connector.new(sales_def({ data = function() return rows end }))
        local _, _, body = call(c2, "/data", { connection = good, table = "deals", select = { "amount", "id" } })
        assert.same({ { "amount", "id" }, { 1.5, 1 }, { cjson.null, 2 } }, cjson.decode(body))
        local c3 = connector.new(sales_def({ data = function(_, q)
          return deals_in_select_order(q), { select = true }
        end }))
        _, _, body = call(c3, "/data", { connection = good, table = "deals", select = { "amount", "id" } })
        assert.same({ { "amount", "id" }, { 10.5, 1 }, { 20, 2 }, { 30.25, 3 } }, cjson.decode(body))
      end)

      it("reads array rows in select order when the first is exactly as wide as the select (design.md's sketch)", function()
        local c2 = connector.new(sales_def({ data = function(_, q)
          return deals_in_select_order(q) -- nothing declared: the framework filters and limits
        end }))
        local _, _, body = call(c2, "/data", { connection = good, table = "deals", select = { "amount", "id" } })
        assert.same({ { "amount", "id" }, { 10.5, 1 }, { 20, 2 }, { 30.25, 3 } }, cjson.decode(body))
        _, _, body = call(c2, "/data", { connection = good, table = "deals", select = { "updated", "id" },
          filter = { [">id"] = 1 }, limit = 1 })
        assert.same({ { "updated", "id" }, { "1970-01-02 00:00:00", 2 } }, cjson.decode(body))
        -- a select as wide as the described fields keeps described order
        local all = { "id", "title", "amount", "closed", "updated" }
        _, _, body = call(c2, "/data", { connection = good, table = "deals", select = all })
        assert.same({ all, { 1, "First", 10.5, "2024-01-31", "2024-01-31 10:00:00" } }, { cjson.decode(body)[1], cjson.decode(body)[2] })
      end)

      it("answers 500 rather than no rows when select-order array rows lack a field the filter needs", function()
        local c2 = connector.new(sales_def({ data = function(_, q)
          return deals_in_select_order(q), { select = true }
        end }))
        local entries, log_opts = capture_log()
        local status, _, body = call(c2, "/data", { connection = good, table = "deals", select = { "id" },
          filter = { title = "Second" } }, log_opts)
        assert.equals(500, status)
        assert.equals(1, #entries)
        assert.matches('lack field "title", which the filter uses', cjson.decode(body).message, 1, true)
        -- a filter on selected fields is fine
        status, _, body = call(c2, "/data", { connection = good, table = "deals", select = { "id", "title" },
          filter = { title = "Second" } })
        assert.equals(200, status)
        assert.same({ { "id", "title" }, { 2, "Second" } }, cjson.decode(body))
      end)

      it("takes rows from an iterator", function()
        local c2 = connector.new(sales_def({ data = function()
          local i = 0
          return function()
            i = i + 1
            return DEALS[i]
          end
        end }))
        local status, _, body = call(c2, "/data", { connection = good, table = "deals", select = { "id" }, limit = 2 })
        assert.equals(200, status)
        assert.same({ { "id" }, { 1 }, { 2 } }, cjson.decode(body))
      end)

      it("answers 400 for an unknown field in select, 404 for an unknown table, 400 without a table", function()
        local status, headers, body = call(c, "/data", { connection = good, table = "deals", select = { "id", "nope" } })
        assert.equals(400, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        assert.same({ error = "bad_request", message = 'unknown field in select: "nope"' }, cjson.decode(body))
        status, _, body = call(c, "/data", { connection = good, table = "nope" })
        assert.equals(404, status)
        assert.same({ error = "not_found", message = 'unknown table "nope"' }, cjson.decode(body))
        status, _, body = call(c, "/data", { connection = good })
        assert.equals(400, status)
        assert.same({ error = "bad_request", message = "missing table" }, cjson.decode(body))
      end)

      it("keeps connection values out of the log and the answer when a row value that fails is one", function()
        local logs, opts = capture_log()
        local rows = { { id = 1, amount = TOKEN } } -- the handler put the caller's token in a number field
        local c2 = connector.new(sales_def({ data = function() return rows end }))
        local status, _, body = call(c2, "/data", { connection = good, table = "deals" }, opts)
        assert.equals(500, status)
        assert.is_nil(body:find(TOKEN, 1, true))
        assert.matches('field "amount": expected a number, got string "***"', cjson.decode(body).message, 1, true)
        assert.equals(1, #logs)
        assert.is_nil(logs[1].message:find(TOKEN, 1, true))
      end)

      it("answers 500 naming table, row and field for a value that cannot be converted", function()
        local logs, opts = capture_log()
        local rows = { { id = 1 }, { id = 2 }, { id = 3, amount = "abc" } }
        local c2 = connector.new(sales_def({ data = function() return rows end }))
        local status, headers, body = call(c2, "/data", { connection = good, table = "deals" }, opts)
        assert.equals(500, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        local answer = cjson.decode(body)
        assert.equals('table "deals", row 3, field "amount": expected a number, got string "abc"', answer.message)
        assert.equals(answer.id, logs[1].fields.id)
        rows[3] = "not a row"
        status, _, body = call(c2, "/data", { connection = good, table = "deals" }, opts)
        assert.equals(500, status)
        assert.equals('table "deals", row 3: expected a row table, got string', cjson.decode(body).message)
        -- The same through an iterator.
        rows[3] = { id = "x" }
        local c3 = connector.new(sales_def({ data = function()
          local i = 0
          return function() i = i + 1 return rows[i] end
        end }))
        status, _, body = call(c3, "/data", { connection = good, table = "deals" }, opts)
        assert.equals(500, status)
        assert.equals('table "deals", row 3, field "id": expected an integer, got string "x"', cjson.decode(body).message)
      end)

      it("checks what data returns", function()
        local logs, opts = capture_log()
        local c2 = connector.new(sales_def({ data = function() return "rows" end }))
        local status, _, body = call(c2, "/data", { connection = good, table = "deals" }, opts)
        assert.equals(500, status)
        assert.equals('data("deals") must return a list of rows, an iterator or a cursor, got string', cjson.decode(body).message)
        c2 = connector.new(sales_def({ data = function() return {}, true end }))
        status, _, body = call(c2, "/data", { connection = good, table = "deals" }, opts)
        assert.equals(500, status)
        assert.equals('data("deals"): the second result must be a table like {filter = true}, got boolean',
          cjson.decode(body).message)
        assert.equals(2, #logs)
      end)

      it("answers 400 with the request decoder's message for a bad limit or select", function()
        local status, headers, body = call(c, "/data", { connection = good, table = "deals", limit = "-1" })
        assert.equals(400, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        assert.same({ error = "bad_request", message = 'limit: expected a non-negative integer, got "-1"' },
          cjson.decode(body))
        status, _, body = call(c, "/data", { connection = good, table = "deals", select = { "id", "" } })
        assert.equals(400, status)
        assert.same({ error = "bad_request", message = 'select[2]: expected a field code (a non-empty string), got ""' },
          cjson.decode(body))
      end)

      it("answers 400 naming a filter on an unknown field", function()
        local status, headers, body = call(c, "/data", { connection = good, table = "deals", filter = { [">=nope"] = "1" } })
        assert.equals(400, status)
        assert.equals(JSON_TYPE, headers["Content-Type"])
        local answer = cjson.decode(body)
        assert.equals("bad_request", answer.error)
        assert.matches("nope", answer.message, 1, true)
      end)

      it("accepts mapFields without changing the answer", function()
        local _, _, plain = call(c, "/data", { connection = good, table = "deals", select = { "id" } })
        local _, _, mapped = call(c, "/data", { connection = good, table = "deals", select = { "id" },
          mapFields = { id = "DEAL_ID" } })
        assert.equals(plain, mapped)
      end)
    end)

    describe("handler errors", function()
      for _, endpoint in ipairs({ "tables", "describe", "data" }) do
        it("answers 500 with an id when " .. endpoint .. " raises, and the next request is unaffected", function()
          local logs, opts = capture_log()
          local fail = true
          local function maybe_fail(conn, name)
            if fail and name == endpoint then error("exploded with " .. conn.token) end
          end
          local c2 = connector.new(sales_def({
            tables = function(conn) maybe_fail(conn, "tables") return { { code = "deals", title = "Deals" } } end,
            describe = function(conn) maybe_fail(conn, "describe") return DEALS_FIELDS end,
            data = function(conn) maybe_fail(conn, "data") return DEALS end,
          }))
          local path = ({ tables = "/table_list", describe = "/table_description", data = "/data" })[endpoint]
          local params = { connection = good, table = "deals" }
          local status, headers, body, info = call(c2, path, params, opts)
          assert.equals(500, status)
          assert.equals(JSON_TYPE, headers["Content-Type"])
          local answer = cjson.decode(body)
          assert.equals("internal_error", answer.error)
          assert.equals(endpoint .. " failed (error id " .. answer.id .. ")", answer.message)
          assert.is_nil(body:find("exploded", 1, true))
          assert.equals(500, info.status)
          assert.equals(1, #logs)
          local entry = logs[1]
          assert.equals("error", entry.level)
          assert.equals(answer.id, entry.fields.id)
          assert.matches("exploded with ***", entry.message, 1, true)
          assert.matches("maybe_fail", entry.fields.traceback, 1, true)
          for _, text in ipairs({ entry.message, entry.fields.traceback }) do
            assert.is_nil(text:find(TOKEN, 1, true))
          end
          fail = false
          assert.equals(200, (call(c2, path, params, opts)))
          assert.equals(1, #logs)
        end)
      end

      it("treats an error object raised by a data iterator as a handler error", function()
        local logs, opts = capture_log()
        local c2 = connector.new(sales_def({ data = function()
          return function() error({ message = "internal detail" }) end
        end }))
        local status, _, body = call(c2, "/data", { connection = good, table = "deals" }, opts)
        assert.equals(500, status)
        local answer = cjson.decode(body)
        assert.equals("data failed (error id " .. answer.id .. ")", answer.message)
        assert.equals(answer.id, logs[1].fields.id)
        assert.equals("data failed: internal detail", logs[1].message)
      end)

      it("gives a new id to every error", function()
        local c2 = connector.new(sales_def({ data = function() error("x") end }))
        local ids = {}
        for _ = 1, 20 do
          local _, _, body = call(c2, "/data", { connection = good, table = "deals" }, { log = function() end })
          ids[cjson.decode(body).id] = true
        end
        local n = 0
        for _ in pairs(ids) do n = n + 1 end
        assert.equals(20, n)
      end)

      it("writes one line to stderr by default and survives a failing log hook", function()
        local c2 = connector.new(sales_def({ data = function() error("x") end,
          log = function() error("log hook broken") end }))
        local real = io.stderr
        local written = {}
        io.stderr = { write = function(_, ...) for _, s in ipairs({ ... }) do written[#written + 1] = s end end } -- luacheck: ignore 122
        local ok, status = pcall(call, c2, "/data", { connection = good, table = "deals" })
        io.stderr = real -- luacheck: ignore 122
        assert.is_true(ok)
        assert.equals(500, status)
        local line = table.concat(written)
        assert.matches("^biconnector %[error%] data failed: ", line)
        assert.matches(" id=%x+ ", line)
        assert.matches(" traceback=stack traceback:", line, 1, true)
        assert.equals(1, select(2, line:gsub("\n", "")))
        assert.equals("\n", line:sub(-1))
      end)
    end)
  end)
end

describe("a database connector's token (biconnector.sql)", function()
  local H = require "sql_helpers"
  it("is a configured secret: masked in a refusal reason its own check writes", function()
    if not H.have_sqlite3("the sql token masking spec") then
      pending("SKIPPED: no sqlite3 tool")
      return
    end
    local dir = H.tmpdir()
    finally(function() H.rmdir(dir) end)
    H.sqlite(dir .. "/t.db", "CREATE TABLE t (id INTEGER);")
    local c = require("biconnector.sql").connector { url = "sqlite://" .. dir .. "/t.db", token = TOKEN,
      check = function(conn) return false, "token " .. conn.token .. " may not read this" end }
    local status, _, body = post(c, "/check", { connection = { token = TOKEN } }, "json")
    assert.equals(403, status)
    assert.same({ error = "forbidden", message = "token *** may not read this" }, cjson.decode(body))
  end)
end)
