-- `biconnector verify` reviewed as a user would: deviations it used to let
-- pass (or report as a WARN, exit 0), a --json report it could not print, and
-- a hung data endpoint that cost one timeout per request. Against the
-- hand-written connector of spec/verify_fixture_server.lua (modes in the URL).
local verify = require "biconnector.verify"
local json = require "biconnector.json"

local R = require "verify_report"
local lines, assert_line, cli = R.lines, R.assert_line, R.cli

-- Is s valid UTF-8 (what a JSON reader needs)?
local function utf8_ok(s)
  return json.decode(json.encode(s)) == s
end

describe("biconnector verify review", function()
  local F = R.fixture("spec/verify_fixture_server.lua")

  local function run(mode, opts)
    opts = opts or {}
    opts.settings = opts.settings or { token = "s3cret" }
    opts.allow_local = true
    opts.tables = opts.tables or { "items" }
    return verify.run(F.base .. mode, opts)
  end

  it("prints a --json report for an answer that is not UTF-8 (bytes shown as \\xNN, control characters too)", function()
    local rc, out, err = cli({ F.base .. "bad_utf8", "--setting", "token=s3cret", "--table", "items", "--allow-local", "--json" })
    assert.equal(1, rc, err)
    local report = assert(json.decode(out), "not JSON: " .. out .. err)
    local found
    for _, c in ipairs(report.checks) do
      if c.check == "data items (limit 5)" and c.result == "FAIL" then found = c.message end
    end
    assert.matches("the answer is not JSON", found)
    assert.matches("<html>\\xff\\xfe \\x01\\x1b[31m</html>", found, 1, true)
    rc, out = cli({ F.base .. "bad_utf8", "--setting", "token=s3cret", "--table", "items", "--allow-local" })
    assert.equal(1, rc)
    assert.is_true(utf8_ok(out))
    assert.is_nil(out:find("\27", 1, true)) -- no escape sequence reaches the terminal
  end)

  it("shortens a long UTF-8 value in a message on a character boundary (the --json report encodes)", function()
    local report = run("cyrillic")
    assert_line(report, "FAIL", '^data items %(limit 5%): row 1, field id: int value must be a JSON integer, got "идентификатор')
    for _, c in ipairs(report.checks) do assert(utf8_ok(c.message), c.message) end
    local rc, out = cli({ F.base .. "cyrillic", "--setting", "token=s3cret", "--table", "items", "--allow-local", "--json" })
    assert.equal(1, rc)
    assert.is_table(json.decode(out))
  end)

  it("keeps a --table code that is not UTF-8 printable as JSON", function()
    local rc, out = cli({ F.base .. "good", "--setting", "token=s3cret", "--table", "it\255ms", "--allow-local", "--json" })
    assert.equal(1, rc)
    local report = assert(json.decode(out))
    assert.matches('table_list: --table "it\\xffms" is not in the table list', table.concat(lines(report, "WARN"), "\n"), 1, true)
  end)

  it("does not print the password of a URL's user:password@ (the report shows ***)", function()
    local url = F.base:gsub("^http://", "http://alice:s3cr3t-pw@") .. "good"
    local report = verify.run(url, { settings = { token = "s3cret" }, allow_local = true, tables = { "items" } })
    assert.is_true(report.ok, verify.format(report))
    assert.equal(F.base:gsub("^http://", "http://alice:***@") .. "good", report.url)
    local rc, out, err = cli({ url, "--setting", "token=s3cret", "--table", "items", "--allow-local" })
    assert.equal(0, rc, err)
    assert.is_nil(out:find("s3cr3t-pw", 1, true), out)
    assert.matches("alice:***@", out, 1, true)
    rc, out = cli({ url, "--setting", "token=s3cret", "--table", "items", "--allow-local", "--json" })
    assert.equal(0, rc)
    assert.is_nil(out:find("s3cr3t-pw", 1, true), out)
  end)

  it("takes a URL whose scheme is written in capitals (HTTP://), as curl and browsers do", function()
    local url = F.base:gsub("^http://", "HTTP://") .. "good"
    local report = verify.run(url, { settings = { token = "s3cret" }, allow_local = true, tables = { "items" } })
    assert.is_true(report.ok, verify.format(report))
    assert.equal(F.base .. "good", report.url)
    local rc, out, err = cli({ url, "--setting", "token=s3cret", "--table", "items", "--allow-local" })
    assert.equal(0, rc, tostring(err) .. out)
  end)

  it("says what a 404 on check means: nothing answers at URL/check, so URL is not the endpoints' base", function()
    local report = verify.run(F.base .. "good/check", { settings = { token = "s3cret" }, allow_local = true })
    assert_line(report, "FAIL", "^check: HTTP status 404, expected 200 .*nothing answers at .*/good/check/check: "
      .. "URL must be the base address the four endpoints sit under")
    assert.is_false(R.has_line(report, "FAIL", "^table_list: .*nothing answers"), verify.format(report)) -- said once
  end)

  it("prints no raw control character from a connector's table code in a check's name (the terminal sees \\x1b)", function()
    local rc, out = cli({ F.base .. "esc_code", "--setting", "token=s3cret", "--allow-local" })
    assert.equal(0, rc, out)
    assert.is_nil(out:find("\27", 1, true), out)
    assert.matches("PASS  table_description red\\x1b[31m: 5 field(s)", out, 1, true)
    assert.matches("PASS  data red\\x1b[31m (limit 5):", out, 1, true)
  end)

  it("fails a date that is no day of the calendar", function()
    local report = run("no_such_day")
    assert_line(report, "FAIL", '^data items %(limit 5%): row 1, field day: date value must be YYYY%-MM%-DD, got "2025%-02%-30" %(no such day%)')
    assert_line(report, "FAIL", 'row 1, field at: datetime value must be .*, got "2025%-04%-31 10:00:00" %(no such day%)')
    assert.is_false(report.ok)
    assert.equal(nil, (verify.check_value("2024-02-29", "date")))
    assert.equal("FAIL", (verify.check_value("2025-02-29", "date")))
    assert.equal("FAIL", (verify.check_value("1900-02-29", "date")))
    assert.equal(nil, (verify.check_value("2000-02-29 23:59:59", "datetime")))
    assert.equal("FAIL", (verify.check_value("2025-06-31T10:00:00+02:00", "datetime")))
  end)

  it("fails a connector that accepts any credentials (exit 1)", function()
    local rc, out = cli({ F.base .. "open", "--setting", "token=s3cret", "--table", "items", "--allow-local" })
    assert.equal(1, rc, out)
    assert.matches("FAIL  wrong credentials %(token mangled%): check answered 200 with setting token changed: wrong "
      .. "credentials are accepted %(the connector must check the connection values", out)
  end)

  it("fails a connector that checks the credentials on check only, and passes one that checks them everywhere", function()
    local report = run("open_data")
    assert_line(report, "PASS", "^wrong credentials %(token mangled%): refused with HTTP 403")
    assert_line(report, "FAIL", "^wrong credentials table_list %(token mangled%): table_list answered 200 with 2 table%(s%), "
      .. "though setting%(s%) token were wrong")
    assert_line(report, "FAIL", "^wrong credentials data items %(token mangled%): data answered 200 with 1 row%(s%)")
    assert.is_false(report.ok)
    report = run("good")
    assert_line(report, "PASS", "^wrong credentials table_list %(token mangled%): refused with HTTP 403")
    assert_line(report, "PASS", "^wrong credentials data items %(token mangled%): refused with HTTP 403")
    assert.is_true(report.ok, verify.format(report))
  end)

  it("fails a connector that ignores the filter (exit 1)", function()
    local rc, out = cli({ F.base .. "ignore_filter", "--setting", "token=s3cret", "--table", "items", "--allow-local" })
    assert.equal(1, rc, out)
    assert.matches("FAIL  data items %(filter%[=id%]=1%): 4 of 5 row%(s%) do not have id = 1: the filter seems ignored", out)
  end)

  it("says why the filter request is skipped when the first data answer was unusable", function()
    local report = run("not_json")
    assert_line(report, "FAIL", "^data items %(limit 5%): the answer is not JSON")
    assert_line(report, "SKIP", "^data items %(filter%): the first data request %(limit 5%) gave no usable rows to take a value from")
  end)

  it("does not filter on an int value past 2^53 that it cannot send back exactly (1e+20), but on a string field", function()
    local report = run("bigint")
    -- the filter request goes on name and its rows match; its values fail as every request's do (below)
    assert_line(report, "FAIL", "^data items %(filter%[=name%]=item 1%): row 1, field id: int value 1e%+20")
    assert.is_false(R.has_line(report, "FAIL", "do not have"), verify.format(report))
    assert.is_false(R.has_line(report, "FAIL", "filter%[=id%]"), verify.format(report))
    assert.equal(0, report.summary.WARN, verify.format(report))
  end)

  it("fails an int value past the 64-bit range (1e+20), which PHP's json_decode reads as a float", function()
    local report = run("bigint")
    assert_line(report, "FAIL", "^data items %(limit 5%): row 2, field id: int value 1e%+20 is past the 64%-bit range")
    assert.is_false(report.ok)
    -- the edges of the range are integers
    assert.is_nil((verify.check_value(math.tointeger and math.tointeger(-2^63) or -2^63, "int")))
    if math.type then
      assert.is_nil((verify.check_value(math.maxinteger, "int")))
      assert.equal("FAIL", (verify.check_value(2^63, "int"))) -- 9223372036854775808, a float
      -- one past the lower end: the decoder makes it the float -2^63 (the integer -2^63 is in the range)
      assert.equal("FAIL", (verify.check_value(json.decode("[-9223372036854775809]")[1], "int")))
    end
    assert.equal("FAIL", (verify.check_value(-1e19, "int")))
    assert.is_nil((verify.check_value(1.0, "int"))) -- integral, within the range
  end)

  it("reports a described field without a name once, not again as a wrong header of every data answer", function()
    local report = run("no_name")
    assert_line(report, "FAIL", "^table_description items: field 2: name must be a non%-empty string, got nil")
    assert.equal(1, report.summary.FAIL, verify.format(report))
    assert_line(report, "PASS", "^data items %(limit 5%): 5 row%(s%) of 5 field%(s%)")
  end)

  -- protocol.md section 2, urlTableDescription: "Bitrix24 treats an unknown type
  -- as string"; the description is not rejected, so the connector conforms
  it("warns about a field type Bitrix24 does not know (read as string) instead of failing it (exit 0)", function()
    local report = run("odd_type")
    assert_line(report, "WARN", '^table_description items: field 3 %(price%): type "currency" is not one of int, string, '
      .. 'double, date, datetime, money, timezone: Bitrix24 reads it as string')
    assert.equal(0, report.summary.FAIL, verify.format(report))
    assert.is_true(report.ok, verify.format(report))
    -- the field is still a column of the data answers; its values go unchecked
    assert_line(report, "PASS", "^data items %(limit 5%): 5 row%(s%) of 5 field%(s%)")
    local rc, out = cli({ F.base .. "odd_type", "--setting", "token=s3cret", "--table", "items", "--allow-local" })
    assert.equal(0, rc, out)
    assert.matches('WARN  table_description items: field 3 %(price%): type "currency"', out)
  end)

  -- Bitrix24's docs say searchString searches by externalCode (the code) and,
  -- on the same page, that the search is by title: either is a conforming search
  it("does not fail a connector that searches titles only when the searched code is in no title", function()
    local report = run("title_search")
    assert_line(report, "WARN", '^table_list search: searching "items" did not return the table "items" %(Bitrix24\'s docs')
    assert.is_true(report.ok, verify.format(report))
  end)

  it("still fails a search that does not return a table whose code and title both hold the string", function()
    local report = run("empty_search")
    assert_line(report, "FAIL", '^table_list search: searching "items" did not return the table "items"$')
  end)

  -- last: the fixture is single-threaded and sleeps on each data request
  it("after a data request timed out, skips the table's other data requests instead of waiting again", function()
    local h = require("biconnector.core").http.new()
    finally(function() h:close() end)
    local data_requests = 0
    local report = run("hang_data", { timeout = 0.3, transport = function(req)
      if req.url:find("/data$") then data_requests = data_requests + 1 end
      return h:request(req)
    end })
    assert.equal(1, data_requests, verify.format(report))
    assert_line(report, "FAIL", "^data items %(limit 5%): no answer: no answer within 0%.3 s")
    for _, what in ipairs({ "select at,id", "select at,id, mapFields", "no limit", "filter" }) do
      assert_line(report, "SKIP", "^data items %(" .. what:gsub("%p", "%%%0") .. "%): an earlier data request for this table got no answer")
    end
  end)
end)
