-- `biconnector verify` as an acceptance tester sees it: a connector on a raw
-- LuaSocket server (spec/verify_hostile_server.lua) that breaks HTTP or the
-- protocol in one way each. A good one passes; every break is a FAIL (or a
-- documented WARN) naming the endpoint, the element and the rule; nothing
-- crashes or hangs. Real loopback HTTP, no mocks.
local helpers = require "helpers"
local S = require "serve_helpers"
local verify = require "biconnector.verify"

local R = require "verify_report"
local assert_line, cli = R.assert_line, R.cli

describe("biconnector verify against hostile connectors", function()
  local F = R.fixture("spec/verify_hostile_server.lua")

  local function run(mode, opts)
    opts = opts or {}
    opts.settings = opts.settings or { token = "s3cret" }
    opts.allow_local = true
    opts.timeout = opts.timeout or 5
    opts.tables = opts.tables or { "items" }
    return verify.run(F.base .. mode, opts)
  end

  local function assert_clean(report)
    assert(report.ok and report.summary.FAIL == 0 and report.summary.WARN == 0, verify.format(report))
  end

  it("passes the good connector clean, every table, from the command line (exit 0)", function()
    local rc, out = cli({ F.base .. "good", "--setting", "token=s3cret", "--allow-local" })
    assert.equal(0, rc, out)
    assert.matches("Summary: %d+ PASS, 0 WARN, 0 FAIL, 0 SKIP %-> conforms\n", out)
  end)

  -- HTTP framings a connector may use and Bitrix24 reads: no finding
  for _, mode in ipairs({ "chunked", "no_length", "iso_offset" }) do
    it("passes a connector that answers " .. mode, function()
      assert_clean(run(mode))
    end)
  end

  it("reads a gzip answer (verify, as libcurl, asks for it with Accept-Encoding)", function()
    assert_clean(run("gzip"))
  end)

  -- mode, level, pattern of a line that must appear
  local breaks = {
    { "redirect", "FAIL", '^check: HTTP status 302, expected 200 %(Bitrix24 reads any other status as "connection unavailable"%)'
      .. ': %(empty body%) %(it redirects to "/good/check"%)' },
    { "garbage", "FAIL", "^check: no answer: .*HTTP/0%.9" },
    { "close_mid", "FAIL", "^check: no answer: .*transfer closed with %d+ bytes remaining" },
    { "empty_data", "FAIL", "^data items %(limit 5%): the answer is not JSON .*: %(empty body%)" },
    { "bom", "FAIL", "^data items %(limit 5%): the answer is not JSON %(byte%-order mark not allowed" },
    { "data_object", "FAIL", '^data items %(limit 5%): the answer must be a JSON array of arrays, got {"rows":' },
    { "data_rows_only", "FAIL", "^data items %(limit 5%): header cell 1 must be a field code, got 1" },
    { "short_row", "FAIL", "^data items %(limit 5%): row 1 has 2 cells, the header has 3" },
    { "long_row", "FAIL", "^data items %(limit 5%): row 1 has 4 cells, the header has 3" },
    { "string_int", "FAIL", '^data items %(limit 5%): row 1, field id: int value must be a JSON integer, got "1"' },
    { "bad_date", "FAIL", '^data items %(limit 5%): row 1, field at: datetime value must be YYYY%-MM%-DD HH:MM:SS or '
      .. 'YYYY%-MM%-DDTHH:MM:SS%+HH:MM, got "30%.08%.2024 12:19:57"' },
    { "ignore_select", "FAIL", '^data items %(select at,id%): header %["id", "name", "at"%] must equal %["at", "id"%]' },
    { "ignore_limit", "FAIL", "^data items %(limit 5%): limit 5 not honoured: 8 rows came back" },
    { "ignore_filter", "FAIL", "^data items %(filter%[=id%]=1%): 4 of 5 row%(s%) do not have id = 1: the filter seems ignored" },
    { "list_object", "FAIL", '^table_list: the answer must be a JSON array of {code, title}, got {"items":"Items"}' },
    { "list_no_title", "FAIL", "^table_list: element 2: title must be a non%-empty string %(Bitrix24 rejects the whole list%), got nil" },
    { "list_number_code", "FAIL", "^table_list: element 1: code must be a non%-empty string %(Bitrix24 rejects the whole list%), got 7" },
    { "desc_number_type", "FAIL", "^table_description items: field 2: type must be a non%-empty string, got 5" },
    { "desc_upper", "FAIL", '^table_description items: field 2 %(name%): type "String" must be lower case' },
    { "json_only", "FAIL", '^check: HTTP status 400, expected 200 .*: {"error":"JSON bodies only"}' },
  }
  for _, b in ipairs(breaks) do
    it(("%s: %s %s"):format(b[1], b[2], b[3]), function()
      local report = run(b[1])
      assert_line(report, b[2], b[3])
      assert.is_false(report.ok, verify.format(report))
    end)
  end

  it("a connector that reads only form bodies passes with form (what Bitrix24 sends) and fails in JSON", function()
    local report = run("form_only", { body = "both" })
    assert.is_false(report.ok)
    for _, c in ipairs(report.checks) do
      if c.body == "form" then assert(c.result == "PASS", c.check .. ": " .. c.message) end
    end
    assert_line(report, "FAIL", '^check: HTTP status 400, expected 200 .*: {"error":"form bodies only"}')
  end)

  it("warns about an empty table list and about a code listed twice, and conforms", function()
    local report = run("list_empty", { tables = {} })
    assert_line(report, "WARN", "^table_list: the list is empty")
    assert.is_true(report.ok)
    report = run("list_dup")
    assert_line(report, "WARN", '^table_list: element 4: code "items" is listed twice')
    assert.is_true(report.ok)
  end)

  it("a huge data answer is a FAIL (or a WARN without limit) with the reason, not a crash", function()
    local report = run("huge", { max_body = 100000 })
    assert_line(report, "FAIL", "^data items %(limit 5%): no answer: .*larger than max_body")
    assert_line(report, "WARN", "^data items %(no limit%): the whole table is over 100000 bytes; verify stopped reading it")
    assert.is_false(report.ok)
  end)
end)

describe("biconnector verify on a description with a code described twice", function()
  local F = R.fixture("spec/verify_hostile_server.lua")

  it("reports the repeated code once and keeps its first description (no select of one code twice)", function()
    -- the description: id int, name string, id datetime; the data header: id, name, at
    local report = verify.run(F.base .. "desc_dup", { settings = { token = "s3cret" }, allow_local = true, tables = { "items" } })
    assert.is_false(report.ok)
    assert_line(report, "FAIL", '^table_description items: field 3: code "id" is described twice')
    local text = verify.format(report)
    -- the first description (id int) holds: no value of id is judged as a datetime
    assert.is_nil(text:find("field id: datetime", 1, true), text)
    assert.is_nil(text:find("select id,id", 1, true), text)
    assert_line(report, "FAIL", '^data items %(limit 5%): header %["id", "name", "at"%] must equal %["id", "name"%]')
  end)
end)

describe("biconnector verify on rows of the wrong width", function()
  local F = R.fixture("spec/verify_hostile_server.lua")

  it("counts the rows an answer holds, not the well-formed ones, when comparing answers", function()
    -- every answer's first row is one cell short: limit 5 gave 5 rows, the whole table 8
    for _, mode in ipairs({ "short_row", "long_row" }) do
      local report = verify.run(F.base .. mode, { settings = { token = "s3cret" }, allow_local = true, tables = { "items" } })
      assert.is_false(report.ok)
      assert_line(report, "FAIL", "^data items %(no limit%): row 1 has %d cells, the header has 3")
      local text = verify.format(report)
      assert.is_nil(text:find("limit 5 gave only 4", 1, true), text)
      assert.is_nil(text:find("row(s) with mapFields", 1, true), text)
    end
  end)
end)

describe("biconnector verify with settings the connector refuses", function()
  local F = R.fixture("spec/verify_hostile_server.lua")

  it("says the given settings are refused, and does not PASS a refusal of mangled ones (exit 1)", function()
    local rc, out = cli({ F.base .. "good", "--setting", "token=nope", "--allow-local" })
    assert.equal(1, rc, out)
    assert.matches('FAIL  check: HTTP status 403, expected 200 %(Bitrix24 reads any other status as "connection '
      .. 'unavailable"%): {"error":"wrong token"} %(the connector refuses the settings given: token; check the '
      .. "%-%-setting values%)", out)
    assert.is_nil(out:find("PASS  wrong credentials", 1, true), out)
    assert.matches("SKIP  wrong credentials: check refused the settings given %(HTTP 403%), so a refusal of "
      .. "mangled ones tells nothing", out)
  end)

  it("does not PASS a refusal of mangled settings when check refuses every request", function()
    local report = verify.run(F.base .. "json_only", { settings = { token = "s3cret" }, allow_local = true })
    assert.is_false(report.ok)
    assert_line(report, "SKIP", "^wrong credentials: check refused the settings given %(HTTP 400%)")
    for _, c in ipairs(report.checks) do
      assert(not (c.result == "PASS" and c.check:find("^wrong credentials")), c.check .. ": " .. c.message)
    end
  end)
end)

describe("biconnector verify URL with a query or fragment", function()
  it("is a usage error (exit 2), as for register --base-url: URL/check would put the endpoint inside it", function()
    for _, url in ipairs({ "http://127.0.0.1:9/c?key=abc", "http://127.0.0.1:9/c#x", "https://h/?" }) do
      local rc, out, err = cli({ url, "--setting", "token=x" })
      assert.equal(2, rc, out .. err)
      assert.matches("URL must have no query or fragment %(the endpoints are URL/check, URL/table_list, ...%), got ", err)
      assert.has_error(function() verify.run(url) end)
    end
  end)
end)

describe("biconnector verify URL holding bytes a URL cannot hold", function()
  it("is a usage error (exit 2) naming the byte and its escape, not libcurl's bad format once per endpoint", function()
    for url, what in pairs({ ["http://127.0.0.1:9/a b"] = "byte 0x20 at 21 .*write %%20",
        ["http://127.0.0.1:9/\208\190"] = "byte 0xD0 at 20 .*write %%D0",
        ["http://127.0.0.1:9/a\"b"] = "byte '\"' at 21 .*write %%22" }) do
      local rc, out, err = cli({ url, "--setting", "token=x" })
      assert.equal(2, rc, out .. err)
      assert.matches("URL must be percent%-encoded: " .. what, err)
      assert.has_error(function() verify.run(url) end)
    end
    -- an encoded one is taken (the run then fails to connect: exit 1, not a usage error)
    local rc, out, err = cli({ "http://127.0.0.1:9/a%20b/%D0%BE", "--setting", "token=x", "--timeout", "2" })
    assert.equal(1, rc, out .. err)
  end)
end)

describe("biconnector verify --limit", function()
  it("refuses a limit past 2^53 as a usage error (it crashed on 1e300: no integer representation)", function()
    for _, v in ipairs({ "1e300", "1e16", "9007199254740992", "9007199254740993" }) do
      local rc, out, err = cli({ "http://127.0.0.1:9/c", "--limit", v })
      assert.equal(2, rc, out .. err)
      assert.matches("%-%-limit must be an integer from 1 to 9007199254740991, got " .. v, err)
    end
  end)

  it("sends a limit written with an exponent as the integer it is", function()
    local _, o = verify.parse_args({ "http://127.0.0.1:9/c", "--limit", "1e15" })
    assert.equal("limit=1000000000000000", require("biconnector.form").encode({ limit = o.limit }))
    local sent
    verify.run("http://127.0.0.1:9/c", { limit = o.limit, transport = function(req)
      if req.url:find("/data$") then sent = sent or req.body end
      local bodies = { table_list = '[{"code":"t","title":"T"}]', table_description = '[{"code":"a","name":"A","type":"int"}]',
        data = '[["a"],[1]]' }
      return { status = 200, headers = { ["content-type"] = "application/json" }, body = bodies[req.url:match("/([%w_]+)$")] or "ok" }
    end })
    assert.matches("limit=1000000000000000&", sent)
  end)
end)

describe("biconnector verify --timeout", function()
  it("refuses a timeout past what the HTTP client takes (1e6 s) as a usage error, not a Lua error", function()
    for _, v in ipairs({ "1e7", "2000000" }) do
      local rc, out, err = cli({ "http://127.0.0.1:9/c", "--timeout", v })
      assert.equal(2, rc, out .. err)
      assert.matches("%-%-timeout must be a number from 0%.001 to 1000000, got " .. v, err)
    end
    assert.equal(1e6, select(2, verify.parse_args({ "http://127.0.0.1:9/c", "--timeout", "1e6" })).timeout)
  end)
end)

describe("biconnector verify table_list search with one table", function()
  local F = R.fixture("spec/verify_hostile_server.lua")

  it("does not claim the search was filtered when no listed table could be left out", function()
    -- a connector listing one table whatever the searchString: filtering cannot be seen
    local report = verify.run(F.base .. "one_table", { settings = { token = "s3cret" }, allow_local = true })
    assert.is_true(report.ok, verify.format(report))
    assert_line(report, "PASS", '^table_list search: searchString "items" %-> 1 table%(s%); every listed table holds it, '
      .. "so whether the endpoint filters is not tested$")
  end)
end)

describe("biconnector verify --body json with text that is not UTF-8", function()
  it("is a usage error naming the option (JSON cannot carry it), not a Lua error", function()
    local cases = {
      { { "--setting", "token=\255" }, "%-%-setting token: a JSON body %(%-%-body json or both%) needs UTF%-8 text" },
      { { "--table", "it\255ems" }, "%-%-table: a JSON body %(%-%-body json or both%) needs UTF%-8 text" },
      { { "--search", "\255" }, "%-%-search: a JSON body %(%-%-body json or both%) needs UTF%-8 text" },
    }
    for _, c in ipairs(cases) do
      for _, body in ipairs({ "json", "both" }) do
        local args = { "http://127.0.0.1:9/c", "--body", body }
        for _, a in ipairs(c[1]) do args[#args + 1] = a end
        local rc, out, err = cli(args)
        assert.equal(2, rc, out .. err)
        assert.matches(c[2], err)
      end
    end
    assert.has_error(function() verify.run("http://127.0.0.1:9/c", { body = "json", settings = { token = "\255" } }) end)
  end)
end)

describe("biconnector verify with an endpoint that refuses the right settings", function()
  local F = R.fixture("spec/verify_hostile_server.lua")

  it("does not PASS that endpoint's refusal of mangled settings", function()
    for _, c in ipairs({ { "list403", "table_list" }, { "data403", "data items" } }) do
      local report = verify.run(F.base .. c[1], { settings = { token = "s3cret" }, allow_local = true, tables = { "items" } })
      assert.is_false(report.ok)
      assert_line(report, "PASS", "^wrong credentials %(token mangled%): refused with HTTP 403")
      assert_line(report, "SKIP", "^wrong credentials " .. c[2] .. " %(token mangled%): it refused the settings given too "
        .. "%(HTTP 403%), so a refusal of mangled ones tells nothing")
      for _, l in ipairs(require("verify_report").lines(report, "PASS")) do
        assert(not l:find("^wrong credentials " .. c[2]), l)
      end
    end
  end)
end)

describe("biconnector verify address check on other spellings of local addresses", function()
  -- the resolver (inet_aton, as curl and PHP use it) reads these as the addresses shown
  local cases = {
    { "http://192.168.1.1./c", "a private address %(RFC 1918%)", "192.168.1.1." },
    { "http://127.1:8080/c", "a loopback address", "127.1" },
    { "http://2130706433/c", "a loopback address", "2130706433" },
    { "http://0x7f000001/c", "a loopback address", "0x7f000001" },
    { "http://0177.0.0.1/c", "a loopback address", "0177.0.0.1" },
    { "http://10.0x1.2/c", "a private address %(RFC 1918%)", "10.0x1.2" },
    { "http://[0:0:0:0:0:0:0:1]:8080/c", "a loopback address", "0:0:0:0:0:0:0:1" },
    { "http://[::ffff:7f00:1]/c", "a loopback address", "::ffff:7f00:1" },
    { "http://[0::]/c", "an address of this host only", "0::" },
    { "http://[::ffff:192.168.0.1]/c", "a private address %(RFC 1918%)", "::ffff:192.168.0.1" },
  }
  for _, c in ipairs(cases) do
    it(c[1] .. " is " .. c[2]:gsub("%%", ""), function()
      local reason, host = require("biconnector.host.address").local_reason(c[1])
      assert.matches("^" .. c[2] .. "$", reason)
      assert.equal(c[3], host)
      local report = verify.run(c[1], { transport = function() return nil, "not sent" end })
      assert_line(report, "WARN", "^address: " .. c[3]:gsub("%.", "%%.") .. " is " .. c[2])
    end)
  end

  it("still passes public addresses and names", function()
    local address = require "biconnector.host.address"
    for _, u in ipairs({ "http://8.8.8.8/", "http://1.2.3/", "https://bi.example.com/c", "http://example.com./",
      "http://256.1.1.1.example/", "http://12345.example.com/", "http://[2001:db8::1]/", "http://[::ffff:8.8.8.8]/",
      "http://[2001:db8:0:0:0:0:0:1]/" }) do
      assert.is_nil(address.local_reason(u), u)
    end
  end)
end)

describe("biconnector verify on a list of 10,000 tables", function()
  local F = R.fixture("spec/verify_hostile_server.lua")

  it("picks its search string without comparing every table with every other (it took ~40 s)", function()
    local started = require("biconnector.core").http.now()
    local report = verify.run(F.base .. "many_tables", { settings = { token = "s3cret" }, allow_local = true, tables = { "items" } })
    local seconds = require("biconnector.core").http.now() - started
    assert.is_true(report.ok, verify.format(report))
    assert_line(report, "PASS", "^table_list: 10003 table%(s%)")
    assert_line(report, "PASS", "^table_list search: searchString \"[%w_]+\" %-> %d+ table%(s%), filtered")
    assert(seconds < 15, ("verify took %.1f s"):format(seconds))
  end)
end)

describe("biconnector verify on a big table whose every row is wrong", function()
  local F = R.fixture("spec/verify_hostile_server.lua")

  it("keeps the lines it prints, not one message per bad cell (300,000 rows took ~240 MB, now ~90)", function()
    -- in a child process, to read its peak memory: verify.run, then VmHWM
    local script = helpers.tmp_path("big.lua")
    helpers.write_file(script, ([[
      local verify = require "biconnector.verify"
      local report = verify.run(%q, { settings = { token = "s3cret" }, allow_local = true, tables = { "items" } })
      local status = io.open("/proc/self/status"):read("*a")
      io.write(verify.format(report), "peak ", status:match("VmHWM:%%s*(%%d+)"), "\n")
    ]]):format(F.base .. "big_string_ids"))
    local rc, out, err = helpers.run3(S.shell_quote(helpers.runtime) .. " " .. script)
    os.remove(script)
    assert.equal(0, rc, err)
    assert.matches('FAIL  data items %(no limit%): row 1, field id: int value must be a JSON integer, got "1"', out)
    assert.matches("FAIL  data items %(no limit%): %.%.%. and 299992 more problem%(s%) of this kind", out)
    if helpers.sanitized then
      return pending("SKIPPED: RSS is not measured under the sanitizers (their shadow memory); the lines were checked")
    end
    local peak_kib = tonumber(out:match("peak (%d+)"))
    -- the answer (~12 MB) is decoded whole: ~70 MB when its ids are right; one message per row
    -- and a map per row took the peak to ~240 MB (Lua 5.4) and ~220 MB (LuaJIT)
    assert(peak_kib < 150 * 1024, ("peak %d KiB"):format(peak_kib))
  end)
end)
