-- End to end: `biconnector serve examples/demo/connector.lua` on a free loopback
-- port, the four endpoints in both request spellings (form-encoded as Bitrix24
-- sends, JSON as in the seed), the access log, the command line.
local S = require "serve_helpers"
local cjson = require "cjson"

local DEMO = "examples/demo/connector.lua"
local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local JSON = { ["Content-Type"] = "application/json" }

local function run(args)
  local p = io.popen(S.serve_command(args) .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  return tonumber(out:match("rc=(%d+)%s*$")), out
end

describe("biconnector serve (demo connector)", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ DEMO, "--listen", "127.0.0.1:0" }), { BIC_DEMO_ROWS = "100" })
  end)
  teardown(function() S.stop(h) end)

  local function post(path, body, headers)
    local r = assert(S.request(h.port, "POST", path, body, headers))
    return r, r.headers["content-type"] and r.headers["content-type"]:find("json") and cjson.decode(r.body)
  end

  it("prints where it listens and the four URLs to register", function()
    local out = S.stdout(h)
    local base = "http://127.0.0.1:" .. h.port
    assert.matches("listening on " .. base:gsub("%p", "%%%0") .. "\n", out)
    for _, e in ipairs({ { "urlCheck", "/check" }, { "urlTableList", "/table_list" },
      { "urlTableDescription", "/table_description" }, { "urlData", "/data" } }) do
      assert.matches(e[1] .. "%s+" .. (base .. e[2]):gsub("%p", "%%%0") .. "\n", out)
    end
  end)

  for _, spelling in ipairs({ "form", "json" }) do
    local function body(form, json)
      if spelling == "form" then return form, FORM end
      return json, JSON
    end

    describe("with " .. spelling .. " bodies", function()
      it("urlCheck accepts the demo token and refuses another", function()
        local r = post("/check", body("connection%5Btoken%5D=demo-token", '{"connection":{"token":"demo-token"}}'))
        assert.equals(200, r.status)
        assert.is_true(#r.body > 0)
        local bad = post("/check", body("connection[token]=wrong", '{"connection":{"token":"wrong"}}'))
        assert.equals(403, bad.status)
      end)

      it("urlTableList lists the tables and filters by searchString", function()
        local r, list = post("/table_list", body("connection[token]=demo-token&searchString=",
          '{"connection":{"token":"demo-token"},"searchString":""}'))
        assert.equals(200, r.status)
        assert.same({ { code = "deals", title = "Deals" }, { code = "contacts", title = "Contacts" },
          { code = "invoices", title = "Invoices" } }, list)
        local _, found = post("/table_list", body("connection[token]=demo-token&searchString=INVO",
          '{"connection":{"token":"demo-token"},"searchString":"INVO"}'))
        assert.same({ { code = "invoices", title = "Invoices" } }, found)
      end)

      it("urlTableDescription describes a table with all five types", function()
        local r, fields = post("/table_description", body("connection[token]=demo-token&table=deals",
          '{"connection":{"token":"demo-token"},"table":"deals"}'))
        assert.equals(200, r.status)
        local types = {}
        for _, f in ipairs(fields) do
          assert.is_true(#f.code > 0 and #f.name > 0)
          types[f.type] = true
        end
        assert.same({ int = true, string = true, double = true, date = true, datetime = true }, types)
        local missing = post("/table_description", body("connection[token]=demo-token&table=nope",
          '{"connection":{"token":"demo-token"},"table":"nope"}'))
        assert.equals(404, missing.status)
      end)

      it("urlData answers the header row and the rows, honouring select and limit", function()
        local r, rows = post("/data", body(
          "connection[token]=demo-token&table=invoices&select[]=id&select[]=total&select[]=paid_at&limit=5",
          '{"connection":{"token":"demo-token"},"table":"invoices","select":["id","total","paid_at"],"limit":5}'))
        assert.equals(200, r.status)
        assert.equals(6, #rows)
        assert.same({ "id", "total", "paid_at" }, rows[1])
        for i = 2, 6 do
          assert.equals(i - 1, rows[i][1])
          assert.is_number(rows[i][2])
          local paid = rows[i][3]
          assert.is_true(paid == cjson.null or paid:match("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$") ~= nil)
        end
        local _, all = post("/data", body("connection[token]=demo-token&table=contacts",
          '{"connection":{"token":"demo-token"},"table":"contacts"}'))
        assert.equals(101, #all) -- BIC_DEMO_ROWS=100 plus the header
      end)

      it("urlData applies a filter", function()
        local r, rows = post("/data", body(
          "connection[token]=demo-token&table=deals&select[]=id&filter[>id]=97",
          '{"connection":{"token":"demo-token"},"table":"deals","select":["id"],"filter":{">id":97}}'))
        assert.equals(200, r.status, r.body)
        assert.same({ { "id" }, { 98 }, { 99 }, { 100 } }, rows)
      end)
    end)
  end

  it("answers 405 to a GET and 404 to an unknown path, and serves on", function()
    local get = assert(S.request(h.port, "GET", "/check"))
    assert.equals(405, get.status)
    local unknown = post("/nope", "connection[token]=demo-token", FORM)
    assert.equals(404, unknown.status)
    assert.equals(200, post("/check", "connection[token]=demo-token", FORM).status)
  end)

  it("writes one access line per request, without connection values", function()
    post("/data", "connection[token]=demo-token&table=deals&limit=7", FORM)
    local log = S.stderr(h)
    assert.matches("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ 127%.0%.0%.1 POST /data endpoint=data table=deals status=200 rows=7 bytes=%d+ ms=%d+%.%d",
      log)
    assert.matches("POST /table_list endpoint=table_list table=%- status=200", log)
    assert.matches("GET /check endpoint=check table=%- status=405", log)
    assert.is_nil(log:find("demo-token", 1, true))
    assert.is_nil(log:find("wrong", 1, true))
  end)
end)

describe("biconnector serve --prefix", function()
  it("serves the endpoints under the prefix only", function()
    local h = S.start(S.serve_command({ DEMO, "--listen", "127.0.0.1:0", "--prefix", "/bi/" }))
    local ok, err = pcall(function()
      assert.matches("urlData%s+http://127%.0%.0%.1:%d+/bi/data\n", S.stdout(h))
      local r = assert(S.request(h.port, "POST", "/bi/check", "connection[token]=demo-token", FORM))
      assert.equals(200, r.status)
      local outside = assert(S.request(h.port, "POST", "/check", "connection[token]=demo-token", FORM))
      assert.equals(404, outside.status)
    end)
    assert.equals(0, S.stop(h))
    assert(ok, err)
  end)
end)

describe("biconnector serve command line", function()
  it("prints usage errors to stderr and exits 2", function()
    local code, out = run({})
    assert.equals(2, code)
    assert.matches("missing the connector FILE or the DATABASE-URL (sqlite:///PATH.db, postgresql://...)", out, 1, true)
    code, out = run({ DEMO, "--workers", "two" })
    assert.equals(2, code)
    assert.matches("%-%-workers expects a non%-negative integer, got 'two'", out)
    code, out = run({ DEMO, "--listen", "localhost" })
    assert.equals(2, code)
    assert.matches("%-%-listen expects HOST:PORT", out)
    code, out = run({ DEMO, "--frobnicate" })
    assert.equals(2, code)
    assert.matches("unknown option '%-%-frobnicate'", out)
  end)

  -- A value core.server would refuse is a usage error here, before the banner: it was
  -- refused by each worker after "listening on", and with --workers 2 the master
  -- restarted the failing workers for ever.
  it("refuses out-of-range numbers as usage errors before it listens", function()
    for _, case in ipairs({ { "--connections", "0", "at least 1" }, { "--timeout", "100000", "at most 86400" },
        { "--request-timeout", "86401", "at most 86400" }, { "--per-address", "2000000", "at most 1000000" },
        { "--grace", "1e7", "at most 1000000" }, { "--max-body", "1e13", "at most 1000000000000" },
        { "--max-bodies", "1e13", "at most 1000000000000" }, { "--workers", "100000", "at most 256" },
        { "--workers", "0", "at least 1" } }) do
      local p = io.popen("timeout 20 " .. S.serve_command({ DEMO, "--listen", "127.0.0.1:0", "--workers", "2",
        case[1], case[2] }) .. " 2>&1; echo \"rc=$?\"")
      local out = p:read("*a")
      p:close()
      assert.equals(2, tonumber(out:match("rc=(%d+)%s*$")), out)
      assert.matches(case[1] .. " expects a number " .. case[3], out, 1, true)
      assert.is_nil(out:find("listening on", 1, true))
    end
    -- the database's (core.sql's bounds), checked before the database is opened
    for _, case in ipairs({ { "--pool-size", "1001", "at most 1000" }, { "--pool-wait", "1e8", "at most 10000000" },
        { "--answer-timeout", "1e8", "at most 10000000" }, { "--answer-budget", "1e14", "at most 10000000000000" } }) do
      local code, out = run({ "sqlite:///nonexistent/x.db", "--no-auth", "--listen", "127.0.0.1:0", case[1], case[2] })
      assert.equals(2, code, out)
      assert.matches(case[1] .. " expects a number " .. case[3], out, 1, true)
    end
  end)

  it("prints its help and exits 0", function()
    local code, out = run({ "--help" })
    assert.equals(0, code)
    assert.matches("Usage: biconnector serve FILE", out)
    -- anywhere on the line, as for the other commands: after a bad option, or where a value goes
    for _, args in ipairs({ { "--bogus", "--help" }, { "--listen", "-h" }, { "x.lua", "--workers", "0", "--help" } }) do
      code, out = run(args)
      assert.equals(0, code, out)
      assert.matches("Usage: biconnector serve FILE", out)
    end
  end)

  it("names the file when the connector cannot be loaded, and exits 1", function()
    local code, out = run({ "spec/no-such-connector.lua" })
    assert.equals(1, code)
    assert.matches("no%-such%-connector%.lua", out)
  end)

  it("says so when the port is taken, and exits 1", function()
    local h = S.start(S.serve_command({ DEMO, "--listen", "127.0.0.1:0" }))
    local code, out = run({ DEMO, "--listen", "127.0.0.1:" .. h.port })
    S.stop(h)
    assert.equals(1, code)
    assert.matches("cannot listen on 127%.0%.0%.1:%d+: Address already in use", out)
  end)

  it("exits 0 on SIGINT as on SIGTERM", function()
    local h = S.start(S.serve_command({ DEMO, "--listen", "127.0.0.1:0" }))
    assert.equals(0, S.stop(h, "INT"))
  end)
end)

describe("serve helpers", function()
  local serve = require "biconnector.serve"
  it("parses --listen spellings", function()
    assert.same({ "127.0.0.1", 8080 }, { serve.parse_listen("127.0.0.1:8080") })
    assert.same({ "::1", 80 }, { serve.parse_listen("[::1]:80") })
    assert.same({ "127.0.0.1", 9 }, { serve.parse_listen(":9") })
    assert.same({ "127.0.0.1", 9 }, { serve.parse_listen("9") })
    assert.is_nil((serve.parse_listen("host:99999")))
  end)
  it("builds the URLs", function()
    local urls = serve.urls("0.0.0.0", 81, "/p")
    assert.same({ "urlData", "http://127.0.0.1:81/p/data" }, urls[4])
  end)
end)
