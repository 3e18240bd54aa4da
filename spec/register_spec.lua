-- `biconnector register` against the local portal (spec/portal/, which follows
-- the current contract: errors inside result, biconnector.table.*): the first
-- run creates the connector, source and tables, a second run changes nothing,
-- a connector that changed leads to one fields.update, --prune deletes the
-- tables of codes no longer served, and a portal without table.* gets the
-- deprecated dataset.*; a dry run sends nothing that changes state.
local helpers = require "helpers"
local control = require "portal.control"
local register = require "biconnector.register"
local rest = require "biconnector.rest"
local json = require "biconnector.json"

-- the endpoint URLs of these specs are not served: the portal does not call urlCheck
local FAST = { rate = 1000, burst = 1000, url_check = false }
local MINIMAL = "examples/minimal.lua"
local DEMO = "examples/demo/connector.lua"

local shell_quote = helpers.q
local function count(t) local n = 0 for _ in pairs(t or {}) do n = n + 1 end return n end
local function only(t) local _, v = next(t or {}) return v end

-- Methods the portal received that change state.
local function changing_calls(stats)
  local out = {}
  for method in pairs(stats.received or {}) do
    if method:match("%.add$") or method:match("%.update$") or method:match("%.delete$") then out[#out + 1] = method end
  end
  table.sort(out)
  return out
end

-- How many state-changing calls the portal received in all.
local function changes(stats)
  local n = 0
  for _, m in ipairs(changing_calls(stats)) do n = n + stats.received[m] end
  return n
end

local sink = helpers.sink -- :write(...) appends to .text

-- A connector object whose tables and columns a test changes between runs.
local function changing_connector(tables)
  local def = { title = "Changing", settings = { { code = "token", name = "Token", type = "STRING" } },
    source_code = "changing", check = function() return true end,
    tables = function() local l = {} for code in pairs(tables) do l[#l + 1] = { code = code, title = code:upper() } end
      table.sort(l, function(x, y) return x.code < y.code end) return l end,
    describe = function(_, code) return tables[code] end,
    data = function() return {} end }
  return require("biconnector.connector").new(def)
end

local function column_list(st, id)
  local out = {}
  for i, f in ipairs(st.tables[tostring(id)].fields) do
    out[i] = f.name .. ":" .. f.type .. ":" .. f.externalCode .. (f.visible == false and ":hidden" or "")
  end
  return out
end

describe("register names", function()
  it("builds the connector fields from the file and the base URL", function()
    local c = require("biconnector.connector").load(MINIMAL)
    local f = register.connector_fields(c, { base_url = "https://bi.example.com/minimal/" })
    assert.equal("Minimal example", f.title)
    assert.equal("minimal_example", f.sourceCode)
    assert.equal("https://bi.example.com/minimal/check", f.urlCheck)
    assert.equal("https://bi.example.com/minimal/table_list", f.urlTableList)
    assert.equal("https://bi.example.com/minimal/table_description", f.urlTableDescription)
    assert.equal("https://bi.example.com/minimal/data", f.urlData)
    assert.same({ { code = "token", name = "Access token", type = "STRING" } }, f.settings)
    assert.matches("^data:image/png;base64,", f.logo)
    assert.is_nil(f.supportMapping)
    f = register.connector_fields(c, { base_url = "http://h", title = "T", logo = "https://l/x.png", source_code = "sc" })
    assert.equal("T", f.title)
    assert.equal("https://l/x.png", f.logo)
    assert.equal("sc", f.sourceCode)
    c = require("biconnector.connector").new({ title = "Mapped", settings = {}, check = function() return true end,
      tables = { { code = "t", title = "T" } }, describe = { t = { { code = "a", name = "A", type = "int" } } },
      data = function() return {} end, support_mapping = true, sort = 50, description = "D", source_code = "mapped_v1",
      logo = "https://example.com/logo.png" })
    f = register.connector_fields(c, { base_url = "http://h" })
    assert.is_true(f.supportMapping)
    assert.equal(50, f.sort)
    assert.equal("D", f.description)
    assert.equal("mapped_v1", f.sourceCode)
    assert.equal("https://example.com/logo.png", f.logo)
    assert.same({}, f.settings)
  end)
end)

describe("biconnector register against the local portal", function()
  local portal
  setup(function() portal = control.start(FAST) end)
  teardown(function() portal:stop() end)
  before_each(function() portal:reset(FAST) end)

  local function env(extra)
    return ("BIC_BUILD=%s BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access MINIMAL_TOKEN=m1n %s")
      :format(shell_quote(helpers.build), shell_quote(portal.base), extra or "")
  end

  local function cli(args, environment)
    local parts = { environment or env(), helpers.runtime, "bin/biconnector", "register" }
    for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
    return helpers.run3(table.concat(parts, " ")) -- -> exit status, stdout, stderr
  end

  local function client_for()
    local client = assert(rest.new(portal:oauth_options(FAST)))
    finally(function() client:close() end)
    return client
  end

  local FULL = { MINIMAL, "--base-url", "https://bi.example.com/min", "--setting", "token=m1n",
    "--source-title", "Cities (production)", "--table", "cities" }

  it("a connector describing a type in upper case (INT) still gets its table (types sent lower case)", function()
    local connector = {
      title = "Upper", definition = {}, settings = { { code = "token", name = "Token", type = "STRING" } },
      handle = function(_, req)
        if req.path == "/table_list" then return 200, {}, '[{"code":"t1","title":"T1"}]' end
        return 200, {}, '[{"code":"a","name":"A","type":"INT"},{"code":"b","name":"B","type":"String"}]'
      end,
    }
    local result, err = register.run { connector = connector, base_url = "https://h.example.com", client = client_for(),
      settings = { token = "t" }, tables = { { table = "t1" } } }
    assert(result, tostring(err))
    local d = only(portal:stats().state.tables)
    assert.equal("int", d.fields[1].type)
    assert.equal("string", d.fields[2].type)
  end)

  it("creates connector, source and table on a fresh portal; a second run changes nothing", function()
    local rc, out, err = cli(FULL)
    assert.equal(0, rc, err)
    assert.matches('connector 1: created "Minimal example" %(sourceCode minimal_example%)', out)
    assert.matches('source 1: created "Cities %(production%)" %(connector 1%)', out)
    assert.matches("table 1 cities: created %(code cities, 5 column%(s%)%)", out)
    local st = portal:stats().state
    assert.equal(1, count(st.connectors))
    local c = only(st.connectors)
    assert.equal("https://bi.example.com/min/data", c.urlData)
    assert.equal("minimal_example", c.sourceCode)
    local s = only(st.sources)
    assert.same({ token = "m1n" }, s.settings)
    assert.equal(1, s.connectorId)
    local t = only(st.tables)
    assert.equal("cities", t.name)
    assert.equal("cities", t.externalCode)
    assert.equal("Cities", t.externalName)
    assert.equal(0, t.externalId) -- made by table.add, not by the deprecated dataset.add
    assert.same({ "ID:int:id", "NAME:string:name", "POPULATION:double:population", "FOUNDED:date:founded",
      "UPDATED:datetime:updated" }, column_list(st, t.id))
    local received = portal:stats().stats.received
    assert.is_nil(received["biconnector.dataset.add"])
    assert.equal(1, received["biconnector.table.add"])

    -- the same again: found, compared, nothing sent that changes anything
    local before = portal:stats()
    rc, out, err = cli(FULL)
    assert.equal(0, rc, err)
    assert.matches('connector 1: unchanged "Minimal example", found by sourceCode', out)
    assert.matches('source 1: unchanged "Cities %(production%)"', out)
    assert.matches("table 1 cities: unchanged %(code cities, 5 column%(s%)%)", out)
    local after = portal:stats()
    assert.equal(changes(before.stats), changes(after.stats), "a second run sent a change")
    assert.same(before.state, after.state)

    -- with a new title and base URL: the connector is found by sourceCode and updated in place
    rc, out, err = cli({ MINIMAL, "--base-url", "https://bi2.example.com", "--title", "Minimal (renamed)",
      "--setting", "token=m1n", "--source-title", "Cities (production)", "--table", "cities" })
    assert.equal(0, rc, err)
    assert.matches('connector 1: updated "Minimal %(renamed%)", found by sourceCode', out)
    assert.matches("table 1 cities: unchanged", out)
    st = portal:stats().state
    assert.equal(1, count(st.connectors))
    assert.equal(1, count(st.sources))
    assert.equal(1, count(st.tables))
    assert.equal("Minimal (renamed)", only(st.connectors).title)
    assert.equal("https://bi2.example.com/check", only(st.connectors).urlCheck)
    local stats = portal:stats().stats
    assert.equal(1, stats.executed["biconnector.connector.add"])
    assert.equal(1, stats.executed["biconnector.connector.update"])
    assert.equal(1, stats.executed["biconnector.source.add"])
    assert.is_nil(stats.received["biconnector.source.update"])
    assert.equal(1, stats.executed["biconnector.table.add"])
  end)

  it("two connectors whose titles have no Latin letter are two connectors; one registered by 0.1.0 is still found", function()
    -- 0.1.0 derived sourceCode "connector" from every Cyrillic title: registering
    -- "Склад" found "Магазин" by that sourceCode and overwrote its title and URLs
    local client = client_for()
    local function titled(title)
      return require("biconnector.connector").new({ title = title, settings = { { code = "token", name = "Токен", type = "STRING" } },
        check = function() return true end, tables = {}, describe = {}, data = function() return {} end })
    end
    local shop = assert(register.run({ connector = titled("Магазин"), base_url = "https://shop.example.com", client = client }))
    local stock = assert(register.run({ connector = titled("Склад"), base_url = "https://stock.example.com", client = client }))
    assert.equal("created", shop.connector.action)
    assert.equal("created", stock.connector.action)
    assert.are_not.equal(shop.connector.id, stock.connector.id)
    local st = portal:stats().state
    assert.equal(2, count(st.connectors))
    assert.equal("Магазин", st.connectors[tostring(shop.connector.id)].title)
    assert.equal("https://shop.example.com/check", st.connectors[tostring(shop.connector.id)].urlCheck)
    assert.matches("^connector_%x%x%x%x%x%x%x%x$", st.connectors[tostring(shop.connector.id)].sourceCode)
    -- titles that share only their Latin part ("2024") are two connectors too
    assert.are_not.equal(register.source_code("Продажи 2024"), register.source_code("Склад 2024"))
    assert.equal("minimal_example", register.source_code("Minimal example")) -- ASCII titles: as before
    -- --source-code: at most 64 characters, not bytes (as biconnector.connector.add counts)
    assert.equal(("ж"):rep(64), assert(register.parse_args({ "f.lua", "--base-url", "https://h", "--source-code", ("ж"):rep(64) })).source_code)
    assert.is_nil((register.parse_args({ "f.lua", "--base-url", "https://h", "--source-code", ("ж"):rep(65) })))
    -- a scheme in capitals is the same address; the portal gets it in lower case
    assert.equal("https://h.example.com/bi", assert(register.parse_args({ "f.lua", "--base-url", "HTTPS://h.example.com/bi" })).base_url)
    assert.equal("https://h.example.com/logo.png",
      assert(register.parse_args({ "f.lua", "--base-url", "https://h", "--logo", "Https://h.example.com/logo.png" })).logo)
    -- each found again by its own sourceCode
    assert.equal("unchanged", assert(register.run({ connector = titled("Склад"), base_url = "https://stock.example.com", client = client })).connector.action)
    assert.equal("unchanged", assert(register.run({ connector = titled("Магазин"), base_url = "https://shop.example.com", client = client })).connector.action)

    -- a connector 0.1.0 registered (sourceCode "connector") is this title's: found, its sourceCode updated
    portal:reset(FAST)
    client = client_for()
    local old = assert(register.run({ connector = titled("Магазин"), base_url = "https://shop.example.com", client = client,
      source_code = "connector" }))
    local other = assert(register.run({ connector = titled("Склад"), base_url = "https://stock.example.com", client = client }))
    assert.equal("created", other.connector.action) -- not the old "connector" of another title
    local again = assert(register.run({ connector = titled("Магазин"), base_url = "https://shop.example.com", client = client }))
    assert.equal(old.connector.id, again.connector.id)
    assert.equal("updated", again.connector.action)
    st = portal:stats().state
    assert.equal(2, count(st.connectors))
    assert.equal(register.source_code("Магазин"), st.connectors[tostring(old.connector.id)].sourceCode)
  end)

  it("a connector file that lost a setting updates the connector (a portal with more settings is not the same)", function()
    local client = client_for()
    local function with_settings(settings)
      return require("biconnector.connector").new({ title = "Settings", source_code = "settings_spec", settings = settings,
        check = function() return true end, tables = {}, describe = {}, data = function() return {} end })
    end
    local two = { { code = "token", name = "Token", type = "STRING" }, { code = "shop", name = "Shop", type = "INT" } }
    assert.equal("created", assert(register.run({ connector = with_settings(two), base_url = "https://s.example.com", client = client })).connector.action)
    assert.equal("unchanged", assert(register.run({ connector = with_settings(two), base_url = "https://s.example.com", client = client })).connector.action)
    local r = assert(register.run({ connector = with_settings({ two[1] }), base_url = "https://s.example.com", client = client }))
    assert.equal("updated", r.connector.action)
    assert.equal(1, #only(portal:stats().state.connectors).settings)
  end)

  it("a connector that gained a column and lost one: one fields.update, one added, one hidden, nothing deleted", function()
    local client = client_for()
    local tables = { orders = { { code = "id", name = "ID", type = "int" }, { code = "note", name = "Note", type = "string" } } }
    local c = changing_connector(tables)
    local printed = {}
    local opts = { connector = c, base_url = "https://bi.example.com/o", client = client, settings = { token = "t" },
      tables = { { table = "orders" } }, print = function(line) printed[#printed + 1] = line end }
    local r = assert(register.run(opts))
    local id = r.tables[1].id
    assert.equal("created", r.tables[1].action)
    assert.same({ "ID:int:id", "NOTE:string:note" }, column_list(portal:stats().state, id))

    tables.orders = { { code = "id", name = "ID", type = "int" }, { code = "closed at", name = "Closed", type = "datetime" } }
    local before = portal:stats().stats.received
    printed = {}
    r = assert(register.run(opts))
    assert.equal("updated", r.tables[1].action)
    assert.same({ "closed at" }, r.tables[1].added)
    assert.same({ "note" }, r.tables[1].hidden)
    assert.matches("table %d+ orders: updated %(code orders, 3 column%(s%); column%(s%) 1 added: closed at; 1 hidden: note%)",
      table.concat(printed, "\n"))
    local received = portal:stats().stats.received
    assert.equal((before["biconnector.table.fields.update"] or 0) + 1, received["biconnector.table.fields.update"])
    for _, m in ipairs({ "biconnector.table.add", "biconnector.table.delete", "biconnector.table.update" }) do
      assert.equal(before[m], received[m], m)
    end
    assert.same({ "ID:int:id", "NOTE:string:note:hidden", "CLOSED_AT:datetime:closed at" }, column_list(portal:stats().state, id))

    -- the lost column comes back: shown again, still one call
    tables.orders[3] = { code = "note", name = "Note", type = "string" }
    r = assert(register.run(opts))
    assert.same({ "note" }, r.tables[1].shown)
    assert.same({ "ID:int:id", "NOTE:string:note", "CLOSED_AT:datetime:closed at" }, column_list(portal:stats().state, id))
    assert.equal((before["biconnector.table.fields.update"] or 0) + 2, portal:stats().stats.received["biconnector.table.fields.update"])
    -- and then nothing to do
    assert.equal("unchanged", assert(register.run(opts)).tables[1].action)
    assert.equal((before["biconnector.table.fields.update"] or 0) + 2, portal:stats().stats.received["biconnector.table.fields.update"])
  end)

  it("--prune deletes this source's tables of codes no longer served (a dry run shows it, without it they are kept)", function()
    local client = client_for()
    local tables = { a = { { code = "x", name = "X", type = "int" } }, b = { { code = "y", name = "Y", type = "int" } } }
    local c = changing_connector(tables)
    local printed = {}
    local function opts(extra)
      local o = { connector = c, base_url = "https://bi.example.com/p", client = client, settings = { token = "t" },
        tables = { { table = "a" } }, print = function(line) printed[#printed + 1] = line end }
      for k, v in pairs(extra or {}) do o[k] = v end
      return o
    end
    local r = assert(register.run(opts({ tables = { { table = "a" }, { table = "b" } } })))
    local b_id = r.tables[2].id
    assert.equal(2, count(portal:stats().state.tables))
    tables.b = nil

    -- without the flag: reported, kept
    printed = {}
    r = assert(register.run(opts()))
    assert.matches("note: table " .. b_id .. " b: the connector no longer serves code b; kept %(%-%-prune deletes it%)",
      table.concat(printed, "\n"))
    assert.equal("kept", r.stale_tables[1].action)
    assert.equal(2, count(portal:stats().state.tables))

    -- a dry run with the flag: shown, nothing sent
    local before = portal:stats().stats
    printed = {}
    r = assert(register.run(opts({ prune = true, dry_run = true })))
    assert.equal("would delete", r.stale_tables[1].action)
    assert.matches("table " .. b_id .. " b: would delete %(code b is no longer served%)", table.concat(printed, "\n"))
    assert.equal(changes(before), changes(portal:stats().stats))

    -- with the flag: deleted; the served one untouched
    printed = {}
    r = assert(register.run(opts({ prune = true })))
    assert.equal("deleted", r.stale_tables[1].action)
    assert.matches("table " .. b_id .. " b: deleted %(code b is no longer served%)", table.concat(printed, "\n"))
    local st = portal:stats().state
    assert.equal(1, count(st.tables))
    assert.equal("a", only(st.tables).externalCode)
    assert.equal(1, portal:stats().stats.executed["biconnector.table.delete"])
    -- the command line knows the flag (a source is needed to know what is served)
    local rc, out, err = cli({ DEMO, "--base-url", "https://h.example.com", "--setting", "token=demo-token", "--prune", "--dry-run" })
    assert.equal(0, rc, err)
    assert.matches("dry run: nothing was changed", out)
    assert.matches("%-%-prune needs a source", select(3, cli({ DEMO, "--base-url", "https://h.example.com", "--prune" })))
  end)

  it("falls back to the deprecated dataset.* on a portal without table.* (ERROR_METHOD_NOT_FOUND)", function()
    portal:reset({ rate = 1000, burst = 1000, url_check = false, without_tables = true })
    local client = client_for()
    local tables = { a = { { code = "x", name = "X", type = "int" } }, b = { { code = "y", name = "Y", type = "int" } } }
    local c = changing_connector(tables)
    local printed = {}
    local opts = { connector = c, base_url = "https://bi.example.com/f", client = client, settings = { token = "t" },
      tables = { { table = "a" }, { table = "b" } }, print = function(line) printed[#printed + 1] = line end }
    local r = assert(register.run(opts))
    assert.equal("dataset", r.family)
    assert.matches("note: this portal has no biconnector%.table%.%* %(ERROR_METHOD_NOT_FOUND%): using the deprecated biconnector%.dataset%.%*",
      table.concat(printed, "\n"))
    local stats = portal:stats().stats
    assert.equal(2, stats.executed["biconnector.dataset.add"])
    assert.is_nil(stats.executed["biconnector.table.add"])
    -- a column gained, a table no longer served, --prune: the same, through dataset.*
    tables.a[2] = { code = "z", name = "Z", type = "string" }
    tables.b = nil
    opts.tables, opts.prune = { { table = "a" } }, true
    r = assert(register.run(opts))
    assert.same({ "z" }, r.tables[1].added)
    assert.equal("deleted", r.stale_tables[1].action)
    stats = portal:stats().stats
    assert.equal(1, stats.executed["biconnector.dataset.fields.update"])
    assert.equal(1, stats.executed["biconnector.dataset.delete"])
    local st = portal:stats().state
    assert.equal(1, count(st.tables))
    assert.same({ "X:int:x", "Z:string:z" }, column_list(st, r.tables[1].id))
    -- a real error of table.* is not a reason to fall back
    portal:reset(FAST)
    portal:fault({ method = "biconnector.table.list", kind = "status500", count = 10 })
    local quick = assert(rest.new(portal:oauth_options({ rate = 1000, burst = 1000, max_retries = 1, backoff_base = 0.001 })))
    local res, err = register.run({ connector = c, base_url = "https://bi.example.com/f", client = quick, settings = { token = "t" },
      tables = { { table = "a" } } })
    quick:close()
    assert.is_nil(res)
    assert.equal("INTERNAL_SERVER_ERROR", err.code)
  end)

  it("a new NAME for a code that has a table is a new table, and says so; names are unique across the portal", function()
    local client = client_for()
    local c = require("biconnector.connector").load(DEMO)
    local printed = {}
    local function run(extra)
      local o = { connector = c, base_url = "https://h.example.com", client = client, settings = { token = "demo-token" },
        source_title = "one", tables = { { table = "deals" } }, print = function(line) printed[#printed + 1] = line end }
      for k, v in pairs(extra or {}) do o[k] = v end
      return register.run(o)
    end
    local first = assert(run()).tables[1]
    assert.equal("deals", first.name)
    printed = {}
    local renamed = assert(run({ tables = { { table = "deals", name = "deals_v2" } } })).tables[1]
    assert.equal("created", renamed.action)
    assert.equal(first.id, renamed.renamed_from.id)
    assert.matches("a table's name cannot change, so deals_v2 is a new table beside it %(the old one stays",
      table.concat(printed, "\n"))
    assert.equal(2, count(portal:stats().state.tables))
    -- another source: the derived name is taken in the portal, so the next one is used
    local other = assert(run({ source_title = "two" })).tables[1]
    assert.equal("deals_2", other.name)
    assert.equal(3, count(portal:stats().state.tables))
    -- an explicit name another source holds is an error that says what to do
    local r, err = run({ source_title = "two", tables = { { table = "deals", name = "deals_v2" } } })
    assert.is_nil(r)
    assert.matches("table name deals_v2 is taken by table %d+ %(source 1, code deals%); names are unique across the portal: name this one with %-%-table deals=NAME", err)
  end)

  it("a dry run changes nothing, before and after the objects exist", function()
    local args = {}
    for i, a in ipairs(FULL) do args[i] = a end
    args[#args + 1] = "--dry-run"
    local rc, out, err = cli(args)
    assert.equal(0, rc, err)
    assert.matches('connector %-: would create "Minimal example"', out)
    assert.matches('source %-: would create "Cities %(production%)"', out)
    assert.matches("table %- cities: would create %(code cities, 5 column%(s%)%)", out)
    assert.matches("dry run: nothing was changed", out)
    assert.same({}, changing_calls(portal:stats().stats))
    assert.equal(0, count(portal:stats().state.connectors))

    assert.equal(0, (cli(FULL)))
    local before = portal:stats()
    rc, out, err = cli({ MINIMAL, "--base-url", "https://bi3.example.com", "--setting", "token=m1n",
      "--source-title", "Cities (production)", "--table", "cities", "--dry-run" })
    assert.equal(0, rc, err)
    assert.matches('connector 1: would update "Minimal example", found by sourceCode', out)
    assert.matches('source 1: unchanged', out)
    assert.matches("table 1 cities: unchanged %(code cities, 5 column%(s%)%)", out)
    local after = portal:stats()
    for _, m in ipairs(changing_calls(after.stats)) do
      assert.equal(before.stats.received[m], after.stats.received[m], m .. " was called by the dry run")
    end
    assert.same(before.state, after.state)
  end)

  it("a dry run without credentials prints the plan only", function()
    local args = { MINIMAL, "--base-url", "https://h.example.com", "--dry-run" }
    local rc, out, err = cli(args, ("env -u BITRIX24_WEBHOOK -u BITRIX24_PORTAL BIC_BUILD=%s"):format(shell_quote(helpers.build)))
    assert.equal(0, rc, err)
    assert.matches("the plan only", out)
    assert.matches('connector %-: would create or update "Minimal example"', out)
  end)

  it("warns when the base URL is on a local network, naming the reason and the ways out", function()
    local rc, out, err = cli({ MINIMAL, "--base-url", "http://127.0.0.1:8080", "--dry-run" })
    assert.equal(0, rc, err)
    assert.matches("warning: 127%.0%.0%.1 is a loopback address: Bitrix24 does not call addresses on a local network", out)
    assert.matches("a public name with HTTPS", out)
    assert.matches("the nginx front", out)
    assert.matches("a tunnel", out)
    rc, out = cli({ MINIMAL, "--base-url", "http://192.168.1.20/bi", "--dry-run", "--json" })
    assert.equal(0, rc)
    assert.matches("192%.168%.1%.20 is a private address", json.decode(out).warnings[1])
    rc, out = cli({ MINIMAL, "--base-url", "https://bi.example.com", "--dry-run" })
    assert.equal(0, rc)
    assert.is_nil(out:find("warning:", 1, true))
  end)

  it("recognises the connector by title on a portal without sourceCode", function()
    portal:reset({ rate = 1000, burst = 1000, url_check = false, connector_fields_without = { "sourceCode" } })
    local client = client_for()
    local lines = {}
    local function run()
      lines = {}
      return register.run({ file = MINIMAL, base_url = "https://h.example.com", client = client,
        print = function(l) lines[#lines + 1] = l end })
    end
    local r = assert(run())
    assert.equal("created", r.connector.action)
    assert.matches("does not know sourceCode", lines[1])
    -- the connector line does not claim a sourceCode the portal never received
    local said = table.concat(lines, "\n")
    assert.matches("connector 1: created \"Minimal example\" (no sourceCode: this portal does not know it)", said, 1, true)
    assert.is_nil(said:find("(sourceCode ", 1, true), said)
    r = assert(run())
    assert.equal("unchanged", r.connector.action)
    assert.equal("title", r.connector.matched_by)
    local st = portal:stats().state
    assert.equal(1, count(st.connectors))
    assert.is_nil(only(st.connectors).sourceCode)
  end)

  it("fails on what the connector file refuses, before changing anything", function()
    local rc, _, err = cli({ MINIMAL, "--base-url", "https://h.example.com", "--setting", "token=bad", "--table", "cities" })
    assert.equal(1, rc)
    assert.matches("the connector's table_list answered HTTP 403: wrong token", err)
    -- the file runs in register's own process: say so (a token from the environment must be set here too)
    assert.matches("register asks the connector file " .. MINIMAL .. " in its own process", err, 1, true)
    assert.matches("set the environment variables the file reads", err, 1, true)
    rc, _, err = cli({ MINIMAL, "--base-url", "https://h.example.com", "--setting", "token=m1n", "--table", "towns" })
    assert.equal(1, rc)
    assert.matches("table towns is not in the connector's table list", err)
    rc, _, err = cli({ "spec/no_such_connector.lua", "--base-url", "https://h.example.com" })
    assert.equal(1, rc)
    assert.matches("no_such_connector.lua", err)
    assert.same({}, changing_calls(portal:stats().stats))
  end)

  it("reports a portal error with exit 1", function()
    local rc, _, err = cli({ MINIMAL, "--base-url", "https://h.example.com" },
      ("BIC_BUILD=%s BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=bad-token"):format(shell_quote(helpers.build), shell_quote(portal.base)))
    assert.equal(1, rc)
    assert.matches("biconnector register: .*biconnector%.connector%.fields", err)
  end)

  it("explains ACCESS_DENIED through a webhook (the portal says it inside result)", function()
    local rc, _, err = cli({ MINIMAL, "--base-url", "https://h.example.com" },
      ("env -u BITRIX24_PORTAL BIC_BUILD=%s BITRIX24_WEBHOOK=%s"):format(shell_quote(helpers.build), shell_quote(portal.webhook)))
    assert.equal(1, rc)
    assert.matches("ACCESS_DENIED %(HTTP 200%)", err)
    assert.matches("refuse incoming webhooks", err)
    assert.same({}, changing_calls(portal:stats().stats))
  end)

  it("takes --dataset as a deprecated --table, and says so", function()
    local rc, out, err = cli({ MINIMAL, "--base-url", "https://bi.example.com/min", "--setting", "token=m1n", "--dataset", "cities" })
    assert.equal(0, rc, err)
    assert.matches("note: %-%-dataset is deprecated, as Bitrix24's biconnector%.dataset%.%* is: use %-%-table", err)
    assert.matches("table 1 cities: created", out)
    assert.equal(1, portal:stats().stats.executed["biconnector.table.add"])
  end)

  local usage = {
    { {}, "FILE is required" },
    { { MINIMAL }, "%-%-base%-url is required" },
    { { MINIMAL, "--base-url", "ftp://h" }, "%-%-base%-url must start with http" },
    { { MINIMAL, "--base-url", "http://h", "--logo", "logo.png" }, "%-%-logo must be a URL or a data: URI" },
    { { MINIMAL, "--base-url", "http://h", "--setting", "x" }, "%-%-setting must be CODE=VALUE" },
    { { MINIMAL, "--base-url", "http://h", "--table", "cities=Bad-Name" }, "%-%-table NAME must start with a letter" },
    { { MINIMAL, "--base-url", "http://h", "--dataset", "cities=Bad-Name" }, "%-%-dataset NAME must start with a letter" },
    { { MINIMAL, "--base-url", "http://h", "--table", "cities=" .. ("a"):rep(231) }, "at most 230" },
    { { MINIMAL, "--base-url", "http://h", "--bogus" }, "unknown option %-%-bogus" },
    { { MINIMAL, "--base-url", "http://h", "--setting", "login=me" }, "%-%-setting login: the connector has no such setting %(it has: token%)" },
    { { MINIMAL, "--base-url", "http://h", "--source-title", "S" }, "missing %-%-setting for: token" },
    { { MINIMAL, "--base-url", "http://h", "--table", "cities" }, "%-%-table needs a source" },
    { { MINIMAL, "--base-url", "http://h", "--prune" }, "%-%-prune needs a source" },
  }
  for _, u in ipairs(usage) do
    it("exits 2: " .. table.concat(u[1], " "):sub(1, 120), function()
      local out, err = sink(), sink()
      local getenv = function(name)
        return ({ BITRIX24_PORTAL = portal.base, BITRIX24_ACCESS_TOKEN = "initial-access" })[name]
      end
      assert.equal(2, register.main(u[1], out, err, getenv))
      assert.matches(u[2], err.text)
    end)
  end

  it("exits 2 without credentials (not a dry run), and prints --help", function()
    local out, err = sink(), sink()
    assert.equal(2, register.main({ MINIMAL, "--base-url", "http://h" }, out, err, function() return nil end))
    assert.matches("set BITRIX24_WEBHOOK", err.text)
    out = sink()
    assert.equal(0, register.main({ "--help" }, out, sink()))
    assert.matches("%-%-base%-url URL", out.text)
    assert.matches("%-%-table CODE%[=NAME%]", out.text)
  end)

  describe("when the portal calls the connector's urlCheck (as Bitrix24 does on source.add/update)", function()
    local S = require "serve_helpers"
    local CHECKING = { rate = 1000, burst = 1000, url_check = true }
    local served, base
    setup(function()
      served = S.start(S.serve_command({ MINIMAL, "--listen", "127.0.0.1:0" }), { MINIMAL_TOKEN = "m1n" })
      base = "http://127.0.0.1:" .. served.port
    end)
    teardown(function() S.stop(served) end)
    before_each(function() portal:reset(CHECKING) end)

    it("creates the source once the served connector accepts its settings", function()
      local rc, out, err = cli({ MINIMAL, "--base-url", base, "--setting", "token=m1n" })
      assert.equal(0, rc, err)
      assert.matches('source 1: created', out)
      local stats = portal:stats()
      assert.same({ { url = base .. "/check", body = "connection[token]=m1n", status = 200 } }, stats.stats.url_checks)
      assert.equal(1, count(stats.state.sources))
    end)

    it("says the connector refuses the settings when it does, and creates no source", function()
      local rc, _, err = cli({ MINIMAL, "--base-url", base, "--setting", "token=bad" })
      assert.equal(1, rc)
      assert.matches("the portal could not create the source: SOURCE_CREATE_CONNECTION_ERROR %(Cannot create connection%.%)", err)
      assert.matches("Bitrix24 calls the connector's check endpoint " .. base:gsub("%p", "%%%0") .. "/check", err)
      assert.matches("the connector file itself refuses these settings %(the connector's check answered HTTP 403: wrong token%): check the %-%-setting values", err)
      local stats = portal:stats()
      assert.equal(403, stats.stats.url_checks[1].status)
      assert.equal(0, count(stats.state.sources))
    end)

    it("says the portal did not reach the connector when the settings are right (a local address: why), on create and on update", function()
      local dead = "http://127.0.0.1:" .. helpers.free_port() -- nothing listens there
      local rc, _, err = cli({ MINIMAL, "--base-url", dead, "--setting", "token=m1n" })
      assert.equal(1, rc)
      assert.matches("SOURCE_CREATE_CONNECTION_ERROR", err)
      assert.matches("this connector file accepts these settings, so the portal did not reach that address%. 127%.0%.0%.1 is a loopback address, and Bitrix24 does not call addresses on a local network", err)
      assert.matches("`biconnector verify " .. dead:gsub("%p", "%%%0") .. " %-%-setting CODE=VALUE` checks it from here", err)
      -- a source made while the connector was reachable, then the connector moves away
      rc, _, err = cli({ MINIMAL, "--base-url", base, "--setting", "token=m1n" })
      assert.equal(0, rc, err)
      rc, _, err = cli({ MINIMAL, "--base-url", dead, "--setting", "token=bad" })
      assert.equal(1, rc)
      assert.matches("the portal could not update the source: SOURCE_UPDATE_CONNECTION_ERROR %(Cannot update connection%.%)", err)
    end)
  end)

  it("runs the Lua example of docs/verify.md", function()
    local code = helpers.lua_block("docs/verify.md", "-- CLIENT: ")
    assert.is_string(code)
    local client = client_for()
    local sandbox = setmetatable({ CLIENT = client }, { __index = _G })
    local chunk = helpers.load(code, "=docs/verify.md register example", sandbox)
    chunk()
    chunk() -- a second run finds everything in place
    local st = portal:stats().state
    assert.equal(1, count(st.connectors))
    assert.equal(1, count(st.sources))
    assert.equal(2, count(st.tables))
  end)

  it("prints what it did before a failure as JSON with --json, with the error", function()
    local args = {}
    for i, a in ipairs(FULL) do args[i] = a end
    args[#args + 1] = "--json"
    -- the connector and the source are made, then every table call fails
    portal:fault({ method = "biconnector.table.list", kind = "error_in_result", status = 400, code = "ACCESS_DENIED",
      count = 100 })
    local rc, out, err = cli(args)
    assert.equal(1, rc, err)
    local r = assert(json.decode(out), "stdout is JSON: " .. out)
    assert.equal(1, r.connector.id)
    assert.equal("created", r.connector.action)
    assert.equal("created", r.source.action)
    assert.equal("ACCESS_DENIED", r.error.code)
    assert.is_string(r.error.message)
    assert.matches("ACCESS_DENIED", err, 1, true) -- and on stderr as without --json
  end)

  it("prints the result as JSON with --json", function()
    local args = {}
    for i, a in ipairs(FULL) do args[i] = a end
    args[#args + 1] = "--json"
    local rc, out, err = cli(args)
    assert.equal(0, rc, err)
    local r = assert(json.decode(out))
    assert.equal(1, r.connector.id)
    assert.equal("created", r.connector.action)
    assert.equal("created", r.source.action)
    assert.equal("table", r.family)
    assert.equal("cities", r.tables[1].name)
    assert.equal(5, r.tables[1].columns)
    -- the lists stay JSON arrays when empty
    local raw = out:gsub("%s", "")
    assert.matches('"stale_tables":[]', raw, 1, true)
    assert.matches('"warnings":[]', raw, 1, true)
    rc, out = cli({ MINIMAL, "--base-url", "https://h.example.com", "--dry-run", "--json" })
    assert.equal(0, rc)
    assert.matches('"tables":[]', out:gsub("%s", ""), 1, true)
    -- a second run: the table's column lists are empty
    rc, out = cli(args)
    assert.equal(0, rc)
    raw = out:gsub("%s", "")
    for _, k in ipairs({ "added", "hidden", "shown", "retyped" }) do
      assert.matches('"' .. k .. '":[]', raw, 1, true)
    end
  end)
end)

describe("register with a connector answering oddly", function()
  -- A stand-in connector object: its table_list and table_description answers are given.
  local function fake(list_body, description_body)
    return {
      title = "Odd", definition = {}, settings = { { code = "token", name = "Token", type = "STRING" } },
      handle = function(_, req)
        local body = req.path == "/table_list" and list_body or description_body
        return 200, { ["Content-Type"] = "application/json" }, body
      end,
    }
  end
  local function plan(list_body, description_body)
    return register.run { connector = fake(list_body, description_body), base_url = "http://h", dry_run = true,
      settings = { token = "t" }, tables = { { table = "t1" } } }
  end

  it("a list or description that is no array of objects is an error, not a crash", function()
    local good_list = '[{"code":"t1","title":"T1"}]'
    for _, case in ipairs({ { '"text"', "[]", "table_list answered no JSON array" },
      { "[1, 2]", "[]", "table t1 is not in the connector's table list" },
      { good_list, '"x"', "table_description of t1 answered no fields" },
      { good_list, "[]", "table_description of t1 answered no fields" },
      { good_list, '[{"name":"A","type":"int"}]', "field 1 has no code" },
      { good_list, "[7]", "field 1 has no code" } }) do
      local ok, result, err = pcall(plan, case[1], case[2])
      assert.is_true(ok, tostring(result))
      assert.is_nil(result)
      assert.matches(case[3], err, 1, true)
    end
    local result = assert(plan(good_list, '[{"code":"a","name":"A","type":"int"}]'))
    assert.equal("would create", result.tables[1].action)
  end)
end)
