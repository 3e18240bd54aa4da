-- `biconnector verify`: clean runs against our own served connectors (the
-- minimal example, the demo), and one FAIL (or WARN) with its reason for each
-- deviation of a hand-written connector on a plain server
-- (spec/verify_fixture_server.lua).
local helpers = require "helpers"
local S = require "serve_helpers"
local verify = require "biconnector.verify"
local json = require "biconnector.json"
local null = require("biconnector").null

local R = require "verify_report"
local has_line, assert_line, cli = R.has_line, R.assert_line, R.cli

local function assert_clean(report)
  assert(report.ok and report.summary.FAIL == 0 and report.summary.WARN == 0, verify.format(report))
  assert.is_true(report.summary.PASS > 0)
end

-- A sink for main()'s output: :write(...) appends to .text.
local sink = helpers.sink

describe("verify.check_value", function()
  local cases = {
    -- value, type, expected level (nil = fine), reason pattern
    { 1, "int", nil }, { -7, "int", nil }, { null, "int", nil }, { null, "datetime", nil },
    { 1.5, "int", "FAIL", "integral" }, { "1", "int", "FAIL", "JSON integer" }, { true, "int", "FAIL", "JSON integer" },
    { 2.5, "double", nil }, { 3, "double", nil }, { math.huge, "double", "FAIL", "finite" }, { -math.huge, "int", "FAIL", "finite" },
    { 0 / 0, "double", "FAIL", "finite" }, { "a\nb", "int", "FAIL", 'got "a\\nb"' }, { "2.5", "double", "FAIL", "JSON number" },
    { "x", "string", nil }, { "", "string", nil }, { 5, "string", "FAIL", "JSON string" },
    { "2025-05-31", "date", nil }, { "31.05.2025", "date", "FAIL", "YYYY%-MM%-DD" },
    { "2025-13-01", "date", "FAIL", "YYYY%-MM%-DD" }, { "2025-05-31 10:00:00", "date", "FAIL", "YYYY%-MM%-DD" },
    { 20250531, "date", "FAIL", "string" },
    -- both documented forms pass: Y-m-d H:i:s and the urlData example's offset form
    { "2025-05-31 17:01:55", "datetime", nil },
    { "2024-08-30T12:19:57+02:00", "datetime", nil }, { "2024-08-30T12:19:57-05:30", "datetime", nil },
    { "2024-08-30T12:19:57Z", "datetime", nil },
    { "2024-08-30T12:19:57+25:00", "datetime", "FAIL", "HH:MM:SS" },
    { "2024-08-30T12:19:57", "datetime", "WARN", "without an offset" },
    { "2024-08-30T12:19:57.123+0200", "datetime", "WARN", "ISO 8601" },
    { "2024-08-30T12:19:57 junk", "datetime", "FAIL", "HH:MM:SS" },
    { 12.5, "money", nil }, { "12.50 EUR", "money", "WARN", "digits" }, { "n/a", "money", "FAIL", "JSON number" },
    { "Europe/Berlin", "timezone", nil }, { 3, "timezone", "FAIL", "identifier" },
    { "2025-05-31", "datetime", "FAIL", "HH:MM:SS" }, { "2025-05-31 25:00:00", "datetime", "FAIL", "HH:MM:SS" },
  }
  for _, c in ipairs(cases) do
    it(("%s as %s -> %s"):format(verify.show(c[1]), c[2], c[3] or "fine"), function()
      local level, why = verify.check_value(c[1], c[2])
      assert.equal(c[3], level)
      if c[4] then assert.matches(c[4], why) end
    end)
  end
end)

describe("biconnector verify against our own server", function()
  local minimal, demo
  setup(function()
    minimal = S.start(S.serve_command({ "examples/minimal.lua", "--listen", "127.0.0.1:0" }), { MINIMAL_TOKEN = "m1n" })
    demo = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0" }), { BIC_DEMO_ROWS = "50" })
  end)
  teardown(function()
    S.stop(minimal)
    S.stop(demo)
  end)

  it("passes the minimal example clean, in form and JSON bodies", function()
    local report = verify.run("http://127.0.0.1:" .. minimal.port, { settings = { token = "m1n" }, body = "both",
      allow_local = true })
    assert_clean(report)
    assert_line(report, "PASS", "^address: 127%.0%.0%.1 is a loopback address; allowed %(%-%-allow%-local")
    assert_line(report, "PASS", "^time: slowest answers check %d+%.%d+ s, table_list %d+%.%d+ s, table_description %d+%.%d+ s, data %d+%.%d+ s, within the 250 s Bitrix24 waits")
    assert_line(report, "PASS", "^table_description cities: 5 field%(s%)")
    assert_line(report, "PASS", "^data cities %(limit 5%): 3 row%(s%)")
    assert_line(report, "PASS", "^wrong credentials %(token mangled%): refused with HTTP 403")
    local modes = {}
    for _, c in ipairs(report.checks) do modes[c.body] = true end
    assert.same({ form = true, json = true }, modes)
  end)

  it("passes the demo connector clean from the command line (exit 0)", function()
    local rc, out = cli({ "http://127.0.0.1:" .. demo.port .. "/", "--setting", "token=demo-token", "--allow-local" })
    assert.equal(0, rc, out)
    for _, t in ipairs({ "deals", "contacts", "invoices" }) do
      assert.matches("PASS  table_description " .. t, out)
      assert.matches("PASS  data " .. t .. " %(limit 5%): 5 row%(s%)", out)
      assert.matches("PASS  data " .. t .. " %(select [%w_]+,id%)", out)
      assert.matches("PASS  data " .. t .. " %(filter%[=id%]=1%)", out)
    end
    assert.matches("PASS  table_list search: searchString \"deals\" %-> 1 table%(s%), filtered", out)
    assert.matches("Summary: %d+ PASS, 0 WARN, 0 FAIL, 0 SKIP %-> conforms\n", out)
  end)

  it("prints a JSON report with --json, and exits 1 on a wrong token", function()
    local rc, out = cli({ "http://127.0.0.1:" .. demo.port, "--setting", "token=nope", "--table", "deals", "--json" })
    assert.equal(1, rc)
    local report = assert(json.decode(out))
    assert.is_false(report.ok)
    assert.is_true(report.summary.FAIL > 0)
    assert.equal("address", report.checks[1].check)
    assert.equal("WARN", report.checks[1].result)
    assert.equal("check", report.checks[2].check)
    assert.equal("FAIL", report.checks[2].result)
    assert.matches("HTTP status 403", report.checks[2].message)
  end)

  it("checks only the --table tables, and says when one is not listed", function()
    local report = verify.run("http://127.0.0.1:" .. demo.port, { settings = { token = "demo-token" },
      tables = { "invoices", "nosuch" } })
    assert.is_false(report.ok)
    assert_line(report, "WARN", '^table_list: %-%-table "nosuch" is not in the table list')
    assert_line(report, "FAIL", "^table_description nosuch: HTTP status 404")
    assert_line(report, "PASS", "^table_description invoices")
    assert.is_false((has_line(report, "PASS", "^table_description deals")))
  end)

  it("runs the Lua example of docs/verify.md", function()
    local code = helpers.lua_block("docs/verify.md", "-- URL: ")
    assert.is_string(code)
    local env = setmetatable({ URL = "http://127.0.0.1:" .. demo.port }, { __index = _G })
    helpers.load(code, "=docs/verify.md verify example", env)()
  end)

  it("warns that a local-network address is one Bitrix24 does not call, naming the ways out", function()
    local report = verify.run("http://127.0.0.1:" .. demo.port, { settings = { token = "demo-token" }, tables = { "deals" } })
    assert.is_true(report.ok)
    assert.equal(1, report.summary.WARN)
    assert_line(report, "WARN", "^address: 127%.0%.0%.1 is a loopback address: Bitrix24 does not call addresses on a local network")
    assert_line(report, "WARN", 'a public name with HTTPS %(biconnector serve behind the nginx front, docs/security%.md, "The nginx front"%); to try it, a tunnel')
    -- a public name: the same connector, reached through a transport that maps the name to it
    local h = require("biconnector.core").http.new()
    finally(function() h:close() end)
    local local_base = "http://127.0.0.1:" .. demo.port
    report = verify.run("https://bi.example.com/demo", { settings = { token = "demo-token" }, tables = { "deals" },
      transport = function(req)
        req.url = req.url:gsub("^https://bi%.example%.com/demo", local_base)
        return h:request(req)
      end })
    assert_clean(report)
    assert_line(report, "PASS", "^address: bi%.example%.com is not a local%-network address")
  end)

  it("mangles a setting that is not checked and warns that wrong credentials pass", function()
    local report = verify.run("http://127.0.0.1:" .. demo.port, { settings = { token = "demo-token", extra = "e" },
      tables = { "deals" } })
    assert.is_true(report.ok)
    assert_line(report, "WARN", "^wrong credentials %(extra mangled%): check answered 200")
    assert_line(report, "PASS", "^wrong credentials %(token mangled%): refused")
  end)
end)

describe("biconnector verify on a table of 64-bit integer extremes", function()
  local dir, server
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    assert(os.execute(("sqlite3 %s/big.db \"CREATE TABLE big(id INTEGER, n TEXT); "
      .. "INSERT INTO big VALUES (9223372036854775807, 'a'), (-9223372036854775808, 'b'), (5, 'c');\""):format(dir)))
    server = S.start(S.serve_command({ "sqlite://" .. dir .. "/big.db", "--no-auth", "--workers", "1",
      "--listen", "127.0.0.1:0" }))
  end)
  teardown(function()
    if server then S.stop(server) end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  it("filters on a value it can send back exactly (no 9.2233720368547758e+18 for 2^63-1)", function()
    local report = verify.run("http://127.0.0.1:" .. server.port, { body = "both" })
    assert.equal(0, report.summary.FAIL, verify.format(report))
    if math.type then -- Lua 5.4 keeps the integer and sends it as written
      assert_line(report, "PASS", "^data big %(filter%[=id%]=9223372036854775807%)")
    else              -- LuaJIT holds it as a double: the check filters on the string field
      assert_line(report, "PASS", "^data big %(filter%[=n%]=a%)")
    end
  end)
end)

describe("biconnector verify against broken connectors", function()
  local F = R.fixture("spec/verify_fixture_server.lua")

  local function run(mode, opts)
    opts = opts or {}
    opts.settings = opts.settings or { token = "s3cret" }
    return verify.run(F.base .. mode, opts)
  end

  it("the fixture's conforming mode passes clean, in both bodies", function()
    assert_clean(run("good", { body = "both", allow_local = true }))
  end)

  -- mode, level, pattern of the line that must appear, true when the mode only warns
  local deviations = {
    { "check500", "FAIL", "^check: HTTP status 500, expected 200" },
    { "list500", "FAIL", "^table_list: HTTP status 500, expected 200 .*: %(empty body%)$" },
    { "check_empty", "FAIL", "^check: the body is empty" },
    { "empty_code", "FAIL", "^table_list: element 3: code must be a non%-empty string" },
    -- Bitrix24 tests these values with PHP's empty(), true for "0" (Rest.php)
    { "check_zero", "FAIL", '^check: the body is "0", which Bitrix24 reads as empty' },
    { "zero", "FAIL", '^table_list: element 3: title must not be "0" %(Bitrix24 reads it as empty and rejects the whole list%), got "0"' },
    { "zero", "FAIL", '^table_description items: field 2: code must not be "0" %(Bitrix24 reads it as empty and rejects the whole description%)' },
    { "unknown_type", "WARN", '^table_description items: field 3 %(price%): type "currency" is not one of int, string, double, date, datetime, money, timezone: Bitrix24 reads it as string' },
    { "unknown_type", "FAIL", '^table_description items: field 1 %(id%): type "INT" must be lower case' },
    { "ragged", "FAIL", "^data items %(limit 5%): row 2 has 4 cells, the header has 5" },
    { "header_mismatch", "FAIL", '^data items %(select at,id%): header %["id", "name", "price", "day", "at"%] must equal %["at", "id"%]' },
    { "ignore_limit", "FAIL", "^data items %(limit 5%): limit 5 not honoured: 20 rows came back" },
    { "bad_values", "FAIL", "^data items %(limit 5%): row 1, field id: int value must be a JSON integer, got \"1\"" },
    { "bad_values", "FAIL", "^data items %(limit 5%): row 1, field day: date value must be YYYY%-MM%-DD, got \"31.05.2025\"" },
    { "bad_values", "WARN", "^data items %(limit 5%): row 1, field at: datetime value in ISO 8601 without an offset" },
    { "map_header", "FAIL", '^data items %(select at,id, mapFields%): the header holds the dataset names of mapFields %(FIELD_1 for at%); it must keep the field codes' },
    { "default_limit", "FAIL", "^data items %(no limit%): 2 row%(s%) without limit, fewer than the 5 that limit 5 gave" },
    { "no_search", "FAIL", '^table_list search: searchString items is ignored' },
    { "not_json", "FAIL", "^data items %(limit 5%): the answer is not JSON" },
    { "text_type", "WARN", "^table_list: Content%-Type is \"text/html\", expected application/json", true },
    -- a connector that checks no setting authenticates nothing (protocol.md section 2: it must check them)
    { "open", "FAIL", "^wrong credentials %(token mangled%): check answered 200" },
  }
  for _, d in ipairs(deviations) do
    it(("%s: %s %s"):format(d[1], d[2], d[3]), function()
      local report = run(d[1], { tables = { "items" }, allow_local = true })
      assert_line(report, d[2], d[3])
      -- a mode that only warns still conforms
      assert.equal(d[4] == true, report.ok, verify.format(report))
    end)
  end

  it("reports several deviations of one connector from the command line (exit 1)", function()
    local rc, out = cli({ F.base .. "empty_code+unknown_type+ragged+ignore_limit+bad_values+open", "--setting", "token=s3cret",
      "--table", "items" })
    assert.equal(1, rc)
    for _, pattern in ipairs({
      'FAIL  table_list: element 3: code must be a non%-empty string',
      'FAIL  table_description items: field 1 %(id%): type "INT" must be lower case',
      'FAIL  data items %(limit 5%): row 2 has 4 cells, the header has 5',
      'FAIL  data items %(select at,id%): limit 5 not honoured: 20 rows came back',
      'FAIL  wrong credentials %(token mangled%)',
      'WARN  address: 127%.0%.0%.1 is a loopback address',
      'PASS  time: slowest answers check ',
      'Summary: 2 PASS, 7 WARN, 19 FAIL, 0 SKIP %-> does NOT conform',
    }) do
      assert.matches(pattern, out)
    end
  end)

  it("warns about a slow answer, and fails one over the timeout", function()
    local report = run("slow", { tables = { "people" }, slow = 0.05 })
    assert_line(report, "WARN", "^table_list: answered in %d+%.%d s, over 0.05 s")
    assert.is_true(report.ok)
    report = run("slow", { tables = { "people" }, timeout = 0.1 })
    assert_line(report, "FAIL", "^table_list: no answer: no answer within 0.1 s")
    assert.is_false(report.ok)
  end)

  it("reports each endpoint's slowest answer against the budget, and fails one past it", function()
    local report = run("slow", { tables = { "people" }, budget = 0.2, allow_local = true })
    -- the fixture sleeps 0.3 s; a loaded machine may add a little (no timed assertion)
    assert_line(report, "FAIL", "^time table_list: the slowest answer took %d%.%d s, over the 0%.2 s Bitrix24 waits: it would report the connection unavailable")
    assert.is_false((has_line(report, "FAIL", "^time check")))
    assert.is_false(report.ok)
    local rc, out = cli({ F.base .. "slow", "--setting", "token=s3cret", "--table", "people", "--budget", "0.2" })
    assert.equal(1, rc)
    assert.matches("FAIL  time table_list: the slowest answer took %d%.%d s", out)
  end)

  it("reports a connector that is not there (exit 1)", function()
    local rc, out = cli({ "http://127.0.0.1:1/", "--timeout", "5" })
    assert.equal(1, rc)
    assert.matches("FAIL  check: no answer: ", out)
    assert.matches("SKIP  table_description, data: no usable table list", out)
    assert.matches("SKIP  wrong credentials: no %-%-setting given", out)
  end)
end)

describe("biconnector verify usage", function()
  local cases = {
    { {}, "URL is required" },
    { { "ftp://x" }, "URL must start with http" },
    { { "http://x", "--setting", "novalue" }, "%-%-setting must be CODE=VALUE" },
    { { "http://x", "--body", "xml" }, "%-%-body must be form, json or both" },
    { { "http://x", "--limit", "0" }, "%-%-limit must be a number >= 1" },
    { { "http://x", "--limit", "2.5" }, "%-%-limit must be an integer" },
    { { "http://x", "--timeout" }, "%-%-timeout needs a value" },
    { { "http://x", "--frobnicate" }, "unknown option %-%-frobnicate" },
    { { "http://x", "http://y" }, "unexpected argument http://y" },
  }
  for _, c in ipairs(cases) do
    it("exits 2: " .. table.concat(c[1], " "), function()
      local out, err = sink(), sink()
      assert.equal(2, verify.main(c[1], out, err))
      assert.matches(c[2], err.text)
      assert.matches("Usage: biconnector verify URL", err.text)
    end)
  end

  it("parses settings, tables and --opt=value spellings", function()
    local url, o, as_json = verify.parse_args({ "http://h/c", "--setting", "token=a=b", "--setting=login=me",
      "--table", "t1", "--table=t2", "--table", "t1", "--body=json", "--limit", "3", "--json" })
    assert.equal("http://h/c", url)
    assert.same({ token = "a=b", login = "me" }, o.settings)
    assert.same({ "t1", "t2" }, o.tables) -- a table named twice is checked once
    assert.equal("json", o.body)
    assert.equal(3, o.limit)
    assert.is_true(as_json)
  end)

  it("a --ca-file that cannot be read is a usage error naming it, not a connector without an answer", function()
    local url, err = verify.parse_args({ "https://h/c", "--ca-file", "/nonexistent/ca.pem" })
    assert.is_nil(url)
    assert.matches("--ca-file: cannot read /nonexistent/ca.pem: No such file or directory", err, 1, true)
  end)

  it("--help prints the usage and exits 0", function()
    local out = sink()
    assert.equal(0, verify.main({ "--help" }, out, sink()))
    assert.matches("%-%-setting CODE=VALUE", out.text)
  end)

  it("run() refuses a bad URL or body mode as misuse", function()
    assert.has_error(function() verify.run("nourl") end)
    assert.has_error(function() verify.run("http://x", { body = "xml" }) end)
  end)
end)

describe("biconnector verify on answers of any shape", function()
  -- A transport answering each endpoint with a fixed body: no server needed.
  local function scripted(bodies)
    local sent = {}
    return function(req)
      local ep = req.url:match("/([%w_]+)$")
      sent[#sent + 1] = { endpoint = ep, body = req.body }
      return { status = 200, headers = { ["content-type"] = "application/json" }, body = bodies[ep] or "ok" }
    end, sent
  end

  it("a non-integral value under an int field is a FAIL, not a crash, and the filter sends it as written", function()
    local transport, sent = scripted({ table_list = '[{"code":"t","title":"T"}]',
      table_description = '[{"code":"a","name":"A","type":"int"}]', data = '[["a"],[1.5]]' })
    local report = verify.run("http://127.0.0.1:9/c", { transport = transport })
    assert_line(report, "FAIL", "int value must be integral")
    local filtered
    for _, s in ipairs(sent) do if s.body:find("filter", 1, true) then filtered = s.body end end
    assert.matches("filter%%5B%%3Da%%5D=1%.5", filtered)
  end)

  it("a transport answer without a body reads as an empty body", function()
    local report = verify.run("http://127.0.0.1:9/c", { transport = function() return { status = 200 } end })
    assert_line(report, "FAIL", "body is empty")
  end)

  it("survives every pairing of malformed list, description and data answers", function()
    local shapes = { "null", "1", '"x"', "{}", "[]", "[null]", "[[]]", "[{}]", '[{"code":1,"title":2}]',
      '[{"code":"a","title":"b"}]', '[{"code":"a","name":"b","type":1}]', '[{"code":"a","name":"b","type":"INT"}]',
      '[["a"],[1]]', '[["a"],null]', '[["a"],[{"x":1}]]', '[["a","a"],[1,2]]', '[[1],[1]]', '[["a"],[1e999]]',
      '[["a"],[1.5]]', '[["a"],[true]]', '[{"code":{"x":1},"title":"t"}]', "<html>", "", ("["):rep(3000) .. ("]"):rep(3000) }
    local descs = { '[{"code":"a","name":"b","type":"int"}]', '[{"code":"a","name":"b","type":"INT"}]' }
    for _, list in ipairs({ '[{"code":"a","title":"b"}]', shapes[5], shapes[9] }) do
      for _, desc in ipairs(descs) do
        for _, data in ipairs(shapes) do
          local transport = scripted({ table_list = list, table_description = desc, data = data })
          local ok, err = pcall(function()
            local report = verify.run("http://127.0.0.1:9/c", { transport = transport, settings = { token = "t" } })
            assert(verify.format(report))
            assert(json.encode(report))
          end)
          assert(ok, ("%s / %s / %s: %s"):format(list, desc, data:sub(1, 40), tostring(err)))
        end
      end
    end
  end)
end)

describe("biconnector verify against a connector that never answers", function()
  it("does not send the check again per mangled setting after check got no answer", function()
    local calls = 0
    local function transport()
      calls = calls + 1
      return nil, setmetatable({ message = "Operation timed out", timeout = true, code = 28 },
        { __tostring = function(e) return e.message end })
    end
    local report = verify.run("http://127.0.0.1:9/c", { transport = transport, timeout = 1,
      settings = { login = "me", token = "t" } })
    assert.is_false(report.ok)
    assert.equal(2, calls) -- check and table_list, then nothing dependent on them
    assert_line(report, "SKIP", "^wrong credentials: check got no answer")
  end)
end)
