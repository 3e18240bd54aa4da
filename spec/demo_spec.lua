-- The demo connector (examples/demo): its deterministic data generator, and
-- the connector itself through c:handle (no HTTP) and through `serve`.
local helpers = require "helpers"
local S = require "serve_helpers"
local cjson = require "cjson"

local data = dofile("examples/demo/data.lua")
local null = require("biconnector").null

local function is_int(v) return type(v) == "number" and v == math.floor(v) end
local CHECKS = {
  int = is_int,
  double = function(v) return type(v) == "number" end,
  string = function(v) return type(v) == "string" and #v > 0 end,
  date = function(v) return type(v) == "string" and v:match("^%d%d%d%d%-%d%d%-%d%d$") ~= nil end,
  datetime = function(v)
    return type(v) == "string" and v:match("^%d%d%d%d%-%d%d%-%d%d [012]%d:[0-5]%d:[0-5]%d$") ~= nil
  end,
}

describe("demo data generator", function()
  it("lists deals, contacts and invoices", function()
    local codes = {}
    for i, t in ipairs(data.TABLES) do codes[i] = t.code end
    assert.same({ "deals", "contacts", "invoices" }, codes)
  end)

  it("uses all five field types in every table, and values fit their types", function()
    for _, t in ipairs(data.TABLES) do
      local fields = data.fields(t.code)
      local types, nulls = {}, {}
      for _, f in ipairs(fields) do types[f.type] = true end
      assert.same({ int = true, double = true, string = true, date = true, datetime = true }, types, t.code)
      for row in data.rows(t.code, nil, 500) do
        assert.equals(#fields, #row)
        for k, f in ipairs(fields) do
          local v = row[k]
          if v == null then nulls[f.code] = true
          else assert.is_true(CHECKS[f.type](v), ("%s.%s = %s"):format(t.code, f.code, tostring(v))) end
        end
      end
      -- missing values exist where the data makes sense of them
      if t.code == "deals" then assert.is_true(nulls.closed_on) end
      if t.code == "invoices" then assert.is_true(nulls.paid_at) end
    end
  end)

  it("is deterministic: the same row twice, in any selection", function()
    local a = data.rows("deals_10", nil)
    local b = data.rows("deals_10", { "probability", "id", "title" })
    for _ = 1, 10 do
      local ra, rb = a(), b()
      assert.same({ ra[9], ra[1], ra[2] }, rb)
    end
    assert.is_nil(a())
    assert.is_nil(b())
    assert.same(data.rows("invoices", nil, 3)(), data.rows("invoices", nil, 3)())
  end)

  it("sizes tables through a code suffix", function()
    assert.same({ "deals", 5000000 }, { data.resolve("deals_5m") })
    assert.same({ "contacts", 250000 }, { data.resolve("contacts_250k") })
    assert.same({ "invoices", 42 }, { data.resolve("invoices_42") })
    assert.is_nil(data.resolve("deals_5g"))
    assert.is_nil(data.resolve("orders_10"))
    assert.is_nil(data.resolve("deals_999m")) -- over the 100,000,000 cap
    local n = 0
    for _ in data.rows("contacts_1234") do n = n + 1 end
    assert.equals(1234, n)
  end)

  it("rejects an unknown column in select", function()
    assert.has_error(function() data.rows("deals", { "id", "nope" }) end, "unknown column nope")
  end)

  it("makes rows lazily: memory stays flat over 200,000 rows", function()
    -- measured in a fresh interpreter, where the heap is small and the collector's pace known
    local script = [[
      local data = dofile("examples/demo/data.lua")
      collectgarbage()
      local before, peak, n = collectgarbage("count"), 0, 0
      for _ in data.rows("deals_200k") do
        n = n + 1
        if n % 5000 == 0 then peak = math.max(peak, collectgarbage("count")) end
      end
      io.write(n, " ", math.floor(peak - before))
    ]]
    local p = io.popen(helpers.runtime .. " -e " .. S.shell_quote(script))
    local out = p:read("*a")
    p:close()
    local n, grew = out:match("^(%d+) (%-?%d+)$")
    assert.equals("200000", n, out)
    -- 200,000 rows held at once would take well over 50 MB
    assert.is_true(tonumber(grew) < 4096, ("heap grew by %s KiB"):format(grew))
  end)
end)

describe("demo connector", function()
  local c = require("biconnector.connector").load("examples/demo/connector.lua")
  local FORM = { ["content-type"] = "application/x-www-form-urlencoded" }

  local function handle(path, body)
    local status, headers, answer = c:handle({ method = "POST", path = path, headers = FORM,
      body = body, remote = "127.0.0.1" }, { log = function() end })
    return status, helpers.drain(answer), headers
  end

  it("has a title and the token setting", function()
    assert.is_string(c.title)
    assert.same({ { code = "token", name = "Access token", type = "STRING" } }, c.settings)
  end)

  it("checks the token (default demo-token)", function()
    assert.equals(200, (handle("/check", "connection[token]=demo-token")))
    assert.equals(403, (handle("/check", "connection[token]=nope")))
    assert.equals(403, (handle("/check", "")))
  end)

  it("searches the table list as a static list is searched: case-insensitive, white space around ignored", function()
    local function codes(search)
      local status, body = handle("/table_list", "connection[token]=demo-token&searchString=" .. search)
      assert.equals(200, status)
      local out = {}
      for i, t in ipairs(cjson.decode(body)) do out[i] = t.code end
      return out
    end
    assert.same({ "deals", "contacts", "invoices" }, codes(""))
    assert.same({ "deals", "contacts", "invoices" }, codes("+%20%09"))
    assert.same({ "deals" }, codes("DEAL"))
    assert.same({ "deals" }, codes("+deals+"))         -- PHP's http_build_query writes spaces as +
    assert.same({ "invoices" }, codes("%09Invoices%0A"))
    assert.same({}, codes("deals+x"))
    -- long runs of spaces, inside or alone, are read in linear time (the
    -- pattern "^%s*(.*%S)" spends some 200 s on the second one)
    assert.same({}, codes("a" .. ("+"):rep(200000) .. "b"))
    assert.same({ "deals", "contacts", "invoices" }, codes(("+"):rep(200000)))
  end)

  it("answers urlData from the generator, limit applied by the connector", function()
    local status, body = handle("/data", "connection[token]=demo-token&table=contacts_50&select[]=id&select[]=birthday&limit=4")
    assert.equals(200, status)
    local rows = cjson.decode(body)
    assert.equals(5, #rows)
    assert.same({ "id", "birthday" }, rows[1])
    assert.same({ 1, 2, 3, 4 }, { rows[2][1], rows[3][1], rows[4][1], rows[5][1] })
  end)

  it("leaves the limit to the framework when a filter must see the rows first", function()
    local status, body = handle("/data",
      "connection[token]=demo-token&table=deals_100&select[]=id&filter%5B%3E%3Did%5D=50&limit=3")
    assert.equals(200, status)
    assert.same({ { "id" }, { 50 }, { 51 }, { 52 } }, cjson.decode(body))
  end)

  it("filters on a field the select leaves out", function()
    local status, body = handle("/data",
      "connection[token]=demo-token&table=deals_100&select[]=id&filter[stage]=WON&limit=3")
    assert.equals(200, status)
    local rows = cjson.decode(body)
    assert.equals(4, #rows)
    assert.same({ "id" }, rows[1])
    -- the same ids as when stage is selected too
    local _, both = handle("/data",
      "connection[token]=demo-token&table=deals_100&select[]=id&select[]=stage&filter[stage]=WON&limit=3")
    for i, row in ipairs(cjson.decode(both)) do
      if i > 1 then
        assert.equals("WON", row[2])
        assert.equals(row[1], rows[i][1])
      end
    end
  end)

  it("takes its token from BIC_DEMO_TOKEN when set", function()
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0" }),
      { BIC_DEMO_TOKEN = "s3cret-token" })
    local ok, err = pcall(function()
      local FORMH = { ["Content-Type"] = "application/x-www-form-urlencoded" }
      assert.equals(200, assert(S.request(h.port, "POST", "/check", "connection[token]=s3cret-token", FORMH)).status)
      assert.equals(403, assert(S.request(h.port, "POST", "/check", "connection[token]=demo-token", FORMH)).status)
    end)
    S.stop(h)
    assert(ok, err)
  end)

  it("answers the curl commands docs/serve.md shows", function()
    local doc = S.read_file("docs/serve.md")
    local block = doc:match("Try it:\n\n```\n(.-)```")
    assert.is_string(block)
    block = block:gsub("\\\n%s*", " ") -- join continued lines
    local commands = {}
    for line in block:gmatch("[^\n]+") do
      if line:match("^curl ") then commands[#commands + 1] = line end
    end
    assert.equals(2, #commands)
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0" }))
    local ok, err = pcall(function()
      for _, command in ipairs(commands) do
        -- curl runs with a deadline
        command = command:gsub("127%.0%.0%.1:8080", "127.0.0.1:" .. h.port)
        local p = io.popen(command .. " -s -f --max-time 60")
        local out = p:read("*a")
        p:close()
        local rows = cjson.decode(out)
        assert.is_true(#rows >= 3, out)
      end
    end)
    S.stop(h)
    assert(ok, err)
  end)
end)
