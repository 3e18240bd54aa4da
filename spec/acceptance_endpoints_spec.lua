-- Found by an acceptance pass that played Bitrix24 against the four endpoints
-- (protocol.md sections 2 and 2.1; the seeds), on `biconnector serve` of a
-- connector file and of a SQLite database:
-- - mapFields whose external codes are integers' text ("1", "2": a pivot's
--   columns) arrive in a form as `mapFields[1]=A&mapFields[2]=B`, which PHP
--   keys by the integers and the form decoder reads as a sequence: urlData
--   answered 400 "mapFields: expected an object, got a list" to a request
--   Bitrix24 may send, for a field that changes nothing in the answer;
-- - a setting whose code is an integer's text ("2024") arrives in a form as
--   `connection[2024]=x`, keyed by the integer: the connector's
--   connection["2024"] was nil, so a form body (what Bitrix24 sends) never
--   authenticated, while the JSON spelling {"2024": "x"} did;
-- - `serve --prefix` printed the URLs to register with the prefix as given:
--   `/a b` made a URL with a space in it, `/%41` one that reached `/A` (404);
--   and a prefix holding `?` or `#` was taken though no request can reach it.
local S = require "serve_helpers"
local H = require "sql_helpers"
local cjson = require "cjson"
local connector = require "biconnector.connector"
local request = require "biconnector.request"
local serve = require "biconnector.serve"

local TOKEN = "acc-token"

local PIVOT_FIELDS = { { code = "1", name = "One", type = "int" }, { code = "2", name = "Two", type = "int" },
  { code = "2024", name = "Y2024", type = "int" } }

local function pivot_connector()
  return connector.new({
    title = "pivot", settings = {}, check = function() return true end,
    tables = { { code = "pivot", title = "Pivot" } }, describe = { pivot = PIVOT_FIELDS },
    data = function() return { { 1, 2, 3 }, { 4, 5, 6 } } end,
  })
end

-- form bodies (after connection[token]=...) and the answer each must get
local MAP_CASES = {
  { "select%5B%5D=1&mapFields%5B1%5D=ONE", { { "1" }, { 1 }, { 4 } } },
  { "select%5B%5D=1&select%5B%5D=2&mapFields%5B1%5D=ONE&mapFields%5B2%5D=TWO", { { "1", "2" }, { 1, 2 }, { 4, 5 } } },
  { "mapFields%5B1%5D=ONE&mapFields%5B2%5D=TWO&mapFields%5B2024%5D=Y", { { "1", "2", "2024" }, { 1, 2, 3 }, { 4, 5, 6 } } },
  { "select%5B%5D=2024&mapFields%5B2024%5D=Y&filter%5B1%5D=4", { { "2024" }, { 6 } } },
}

local function check_map_cases(answer)
  for _, case in ipairs(MAP_CASES) do
    local status, body = answer("table=pivot&" .. case[1])
    assert.equals(200, status, case[1] .. " -> " .. cjson.encode(body))
    assert.same(case[2], body, case[1])
  end
end

describe("mapFields keyed by integer field codes in a form body, as PHP sends them", function()
  it("is read as the codes' text by request.decode", function()
    local req = assert(request.decode({ method = "POST", path = "/data",
      headers = { ["content-type"] = "application/x-www-form-urlencoded" },
      body = "table=pivot&mapFields%5B1%5D=ONE&mapFields%5B2%5D=TWO&mapFields%5B2024%5D=Y" }))
    assert.same({ ["1"] = "ONE", ["2"] = "TWO", ["2024"] = "Y" }, req.map_fields)
    -- JSON spells such codes as keys; a JSON list is still no mapFields
    req = assert(request.decode({ method = "POST", path = "/data", headers = { ["content-type"] = "application/json" },
      body = '{"table":"pivot","mapFields":{"1":"ONE","2":"TWO"}}' }))
    assert.same({ ["1"] = "ONE", ["2"] = "TWO" }, req.map_fields)
    local bad, err = request.decode({ method = "POST", path = "/data", headers = { ["content-type"] = "application/json" },
      body = '{"table":"pivot","mapFields":["ONE"]}' })
    assert.is_nil(bad)
    assert.equals("mapFields: expected an object, got a list", err.message)
    -- an empty name is still refused, under its integer key
    bad, err = request.decode({ method = "POST", path = "/data",
      headers = { ["content-type"] = "application/x-www-form-urlencoded" }, body = "table=pivot&mapFields%5B1%5D=" })
    assert.is_nil(bad)
    assert.equals('mapFields[1]: expected a field name (a non-empty string), got ""', err.message)
  end)

  it("leaves the answer of a Lua connector unchanged", function()
    local c = pivot_connector()
    check_map_cases(function(form)
      local status, _, body = c:handle({ method = "POST", path = "/data",
        headers = { ["content-type"] = "application/x-www-form-urlencoded" }, body = form })
      return status, cjson.decode(body)
    end)
  end)

  if not H.have_sqlite3("spec/acceptance_endpoints_spec.lua") then return end
  it("leaves the answer of serve sqlite:// unchanged", function()
    local dir = H.tmpdir()
    local h = H.serve_sqlite(dir, "pivot.db", [[
      CREATE TABLE pivot ("1" INTEGER, "2" INTEGER, "2024" INTEGER);
      INSERT INTO pivot VALUES (1, 2, 3), (4, 5, 6);
    ]], TOKEN)
    local ok, err = pcall(check_map_cases, function(form) return H.post_form(h.port, "/data", form, TOKEN) end)
    S.stop(h)
    H.rmdir(dir)
    assert(ok, err)
  end)
end)

describe("a setting whose code is an integer's text, in a form body as PHP sends it", function()
  local function numeric_settings()
    return connector.new({
      title = "numeric settings",
      settings = { { code = "2024", name = "Key", type = "STRING" }, { code = "1", name = "One", type = "STRING" } },
      check = function(c) return c["2024"] == "k" and c["1"] == "o", "wrong settings" end,
      tables = { { code = "t", title = "T" } }, describe = { t = { { code = "a", name = "a", type = "string" } } },
      data = function(c) return { { a = c["2024"] .. "/" .. c["1"] } } end,
    })
  end

  it("reaches the connector keyed by the code's text, as the JSON spelling does", function()
    local c = numeric_settings()
    local function post(ctype, body)
      local status, _, answer = c:handle({ method = "POST", path = "/data", headers = { ["content-type"] = ctype },
        body = body })
      return status, cjson.decode(answer)
    end
    local status, body = post("application/x-www-form-urlencoded", "connection%5B2024%5D=k&connection%5B1%5D=o&table=t")
    assert.equals(200, status, cjson.encode(body))
    assert.same({ { "a" }, { "k/o" } }, body)
    status, body = post("application/json", '{"connection":{"2024":"k","1":"o"},"table":"t"}')
    assert.equals(200, status, cjson.encode(body))
    assert.same({ { "a" }, { "k/o" } }, body)
    -- the setting alone, keyed 1 (a sequence to the form decoder), and a wrong value
    local req = assert(request.decode({ method = "POST", path = "/check",
      headers = { ["content-type"] = "application/x-www-form-urlencoded" }, body = "connection%5B1%5D=o" }))
    assert.same({ ["1"] = "o" }, req.connection)
    status, body = post("application/x-www-form-urlencoded", "connection%5B2024%5D=x&connection%5B1%5D=o&table=t")
    assert.equals(403, status)
    assert.equals("wrong settings", body.message)
    -- a JSON list is still no connection
    status, body = post("application/json", '{"connection":["k"],"table":"t"}')
    assert.equals(400, status)
    assert.equals("connection: expected an object, got a list", body.message)
  end)
end)

describe("serve --prefix with characters a URL path escapes", function()
  it("prints URLs that reach the endpoints", function()
    local prefix = "/a b%41/\208\190\209\130\209\135\209\145\209\130" -- "/a b%41/отчёт"
    local urls = serve.urls("127.0.0.1", 81, prefix)
    assert.equals("http://127.0.0.1:81/a%20b%2541/%D0%BE%D1%82%D1%87%D1%91%D1%82/check", urls[1][2])
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1",
      "--prefix", prefix }))
    local out = S.stdout(h)
    local answers = {}
    for name, path in out:gmatch("\n  (url%w+) +http://127%.0%.0%.1:%d+(%S+)") do
      local r = S.request(h.port, "POST", path, "connection%5Btoken%5D=demo-token&table=deals&limit=1",
        { ["Content-Type"] = "application/x-www-form-urlencoded" })
      answers[#answers + 1] = name .. " " .. path .. " " .. tostring(r and r.status)
    end
    S.stop(h)
    local base = "/a%20b%2541/%D0%BE%D1%82%D1%87%D1%91%D1%82"
    assert.same({ "urlCheck " .. base .. "/check 200", "urlTableList " .. base .. "/table_list 200",
      "urlTableDescription " .. base .. "/table_description 200", "urlData " .. base .. "/data 200" }, answers, out)
  end)

  it("refuses a prefix holding ? or #, which no request path holds", function()
    for _, prefix in ipairs({ "/bi?x", "/bi#x" }) do
      -- (timeout: a serve that took the prefix would run on, not exit 2)
      local ok, _, rc = os.execute("timeout 10 " .. S.serve_command({ "examples/demo/connector.lua", "--listen",
        "127.0.0.1:0", "--workers", "1", "--prefix", prefix }) .. " >/dev/null 2>&1")
      if type(ok) == "number" then rc = ok / 256 end -- LuaJIT: the raw wait status
      assert.equals(2, rc, prefix)
    end
  end)
end)

describe("serve --app with a --prefix a URL path escapes", function()
  it("registers the URLs and the installation address percent-encoded, and routes their decoded paths", function()
    local app = require "biconnector.app.server"
    local dir = os.tmpname()
    os.remove(dir)
    local cfg = assert(app.config({ public_url = "https://bi.example.com", prefix = "/a b/отчёт" },
      function(k) return ({ BITRIX24_TOKENS_FILE = dir .. "-tokens.json" })[k] end))
    local base = "https://bi.example.com/a%20b/%D0%BE%D1%82%D1%87%D1%91%D1%82"
    assert.equals(base, cfg.base_url)
    assert.equals(base .. app.INSTALL, cfg.install_url)
    assert.equals(base .. app.EVENT, cfg.event_url)
    -- the registered data URLs are made from base_url, as serve prints them
    assert.equals(base .. "/data", serve.urls(nil, nil, nil, nil, cfg.base_url)[4][2])
    -- the prefix the paths are matched against stays as given (the servers decode a path)
    assert.equals("/a b/отчёт", cfg.prefix)
  end)
end)
