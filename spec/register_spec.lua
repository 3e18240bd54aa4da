-- `biconnector register` against the local portal (spec/portal/): the first
-- run creates the connector, source and datasets, the second updates them
-- (no duplicates), a dry run sends nothing that changes state.
local helpers = require "helpers"
local control = require "portal.control"
local register = require "biconnector.register"
local rest = require "biconnector.rest"
local json = require "biconnector.json"

local FAST = { rate = 1000, burst = 1000 }
local MINIMAL = "examples/minimal.lua"
local DEMO = "examples/demo/connector.lua"

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
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

local function sink()
  local s = { text = "" }
  function s:write(...) for _, v in ipairs({ ... }) do self.text = self.text .. tostring(v) end return self end
  return s
end

describe("register names", function()
  it("derives dataset names that satisfy ^[a-z][a-z0-9_]*$ (at most 230)", function()
    local cases = { deals = "deals", ["Deals 2024"] = "deals_2024", ["2024-deals"] = "t_2024_deals",
      ["Сделки"] = "t", ["crm.deal"] = "crm_deal", ["__x__"] = "x", [("a"):rep(300)] = ("a"):rep(230) }
    for code, want in pairs(cases) do
      local name = register.dataset_name(code)
      assert.equal(want, name)
      assert.matches("^[a-z][a-z0-9_]*$", name)
    end
  end)

  it("derives field names: ^[A-Z][A-Z0-9_]*$, at most 32, unique", function()
    local long = ("x"):rep(40)
    local names = register.field_names({ "id", "created-at", "1st", "a b", "a_b", "A.B", long, long .. "y", "Имя" })
    assert.same({ "ID", "CREATED_AT", "F_1ST", "A_B", "A_B_2", "A_B_3", ("X"):rep(32), ("X"):rep(30) .. "_2", "F" }, names)
    for _, n in ipairs(names) do
      assert.matches("^[A-Z][A-Z0-9_]*$", n)
      assert.is_true(#n <= 32)
    end
  end)

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
    local errfile = os.tmpname()
    local p = io.popen(table.concat(parts, " ") .. " 2>" .. errfile .. "; echo \"rc=$?\"")
    local out = p:read("*a")
    p:close()
    local f = io.open(errfile)
    local err = f and f:read("*a") or ""
    if f then f:close() end
    os.remove(errfile)
    return tonumber(out:match("rc=(%d+)%s*$")), (out:gsub("rc=%d+%s*$", "")), err
  end

  local FULL = { MINIMAL, "--base-url", "https://bi.example.com/min", "--setting", "token=m1n",
    "--source-title", "Cities (production)", "--dataset", "cities" }

  it("a connector describing a type in upper case (INT) still gets its dataset (types sent lower case)", function()
    local connector = {
      title = "Upper", definition = {}, settings = { { code = "token", name = "Token", type = "STRING" } },
      handle = function(_, req)
        if req.path == "/table_list" then return 200, {}, '[{"code":"t1","title":"T1"}]' end
        return 200, {}, '[{"code":"a","name":"A","type":"INT"},{"code":"b","name":"B","type":"String"}]'
      end,
    }
    local client = assert(rest.new(portal:oauth_options({ rate = 1000, burst = 1000 })))
    local result, err = register.run { connector = connector, base_url = "http://h", client = client,
      settings = { token = "t" }, datasets = { { table = "t1" } } }
    assert(result, tostring(err))
    local d = only(portal:stats().state.datasets)
    assert.equal("int", d.fields[1].type)
    assert.equal("string", d.fields[2].type)
  end)

  it("creates connector, source and dataset, then updates them without duplicates", function()
    local rc, out, err = cli(FULL)
    assert.equal(0, rc, err)
    assert.matches('connector 1: created "Minimal example" %(sourceCode minimal_example%)', out)
    assert.matches('source 1: created "Cities %(production%)" %(connector 1%)', out)
    assert.matches("dataset 1 cities: created %(table cities, 5 field%(s%)%)", out)
    local st = portal:stats().state
    assert.equal(1, count(st.connectors))
    local c = only(st.connectors)
    assert.equal("https://bi.example.com/min/data", c.urlData)
    assert.equal("minimal_example", c.sourceCode)
    local s = only(st.sources)
    assert.same({ token = "m1n" }, s.settings)
    assert.equal(1, s.connectorId)
    local d = only(st.datasets)
    assert.equal("cities", d.name)
    assert.equal("cities", d.externalCode)
    assert.equal("Cities", d.externalName)
    local names = {}
    for i, f in ipairs(d.fields) do names[i] = f.name .. ":" .. f.type .. ":" .. f.externalCode end
    assert.same({ "ID:int:id", "NAME:string:name", "POPULATION:double:population", "FOUNDED:date:founded",
      "UPDATED:datetime:updated" }, names)

    -- second run, with a new title and base URL: found by sourceCode, updated in place
    local again = { MINIMAL, "--base-url", "https://bi2.example.com", "--title", "Minimal (renamed)",
      "--setting", "token=m1n", "--source-title", "Cities (production)", "--dataset", "cities" }
    rc, out, err = cli(again)
    assert.equal(0, rc, err)
    assert.matches('connector 1: updated "Minimal %(renamed%)", found by sourceCode', out)
    assert.matches('source 1: updated', out)
    assert.matches("dataset 1 cities: updated %(table cities, 0 new field%(s%)%)", out)
    st = portal:stats().state
    assert.equal(1, count(st.connectors))
    assert.equal(1, count(st.sources))
    assert.equal(1, count(st.datasets))
    c = only(st.connectors)
    assert.equal("Minimal (renamed)", c.title)
    assert.equal("https://bi2.example.com/check", c.urlCheck)
    assert.equal(5, #only(st.datasets).fields)
    local stats = portal:stats().stats
    assert.equal(1, stats.executed["biconnector.connector.add"])
    assert.equal(1, stats.executed["biconnector.source.add"])
    assert.equal(1, stats.executed["biconnector.dataset.add"])
  end)

  it("a dry run changes nothing, before and after the objects exist", function()
    local args = {}
    for i, a in ipairs(FULL) do args[i] = a end
    args[#args + 1] = "--dry-run"
    local rc, out, err = cli(args)
    assert.equal(0, rc, err)
    assert.matches('connector %-: would create "Minimal example"', out)
    assert.matches('source %-: would create "Cities %(production%)"', out)
    assert.matches("dataset %- cities: would create %(table cities, 5 field%(s%)%)", out)
    assert.matches("dry run: nothing was changed", out)
    assert.same({}, changing_calls(portal:stats().stats))
    assert.equal(0, count(portal:stats().state.connectors))

    assert.equal(0, (cli(FULL)))
    local before = portal:stats()
    rc, out, err = cli(args)
    assert.equal(0, rc, err)
    assert.matches('connector 1: would update "Minimal example", found by sourceCode', out)
    assert.matches('source 1: would update', out)
    assert.matches("dataset 1 cities: would update %(table cities, 0 new field%(s%)%)", out)
    local after = portal:stats()
    for _, m in ipairs(changing_calls(after.stats)) do
      assert.equal(before.stats.received[m], after.stats.received[m], m .. " was called by the dry run")
    end
    assert.same(before.state, after.state)
  end)

  it("a dry run without credentials prints the plan only", function()
    local args = { MINIMAL, "--base-url", "http://h", "--dry-run" }
    local rc, out, err = cli(args, ("env -u BITRIX24_WEBHOOK -u BITRIX24_PORTAL BIC_BUILD=%s"):format(shell_quote(helpers.build)))
    assert.equal(0, rc, err)
    assert.matches("the plan only", out)
    assert.matches('connector %-: would create or update "Minimal example"', out)
  end)

  it("recognises the connector by title on a portal without sourceCode", function()
    portal:reset({ rate = 1000, burst = 1000, connector_fields_without = { "sourceCode" } })
    local client = assert(rest.new(portal:oauth_options(FAST)))
    local lines = {}
    local function run()
      lines = {}
      return register.run({ file = MINIMAL, base_url = "http://h", client = client,
        print = function(l) lines[#lines + 1] = l end })
    end
    local r = assert(run())
    assert.equal("created", r.connector.action)
    assert.matches("does not know sourceCode", lines[1])
    r = assert(run())
    assert.equal("updated", r.connector.action)
    assert.equal("title", r.connector.matched_by)
    local st = portal:stats().state
    assert.equal(1, count(st.connectors))
    assert.is_nil(only(st.connectors).sourceCode)
    client:close()
  end)

  it("adds fields that appeared in the description to an existing dataset", function()
    local client = assert(rest.new(portal:oauth_options(FAST)))
    local c = require("biconnector.connector").load(DEMO)
    local opts = { connector = c, base_url = "http://h", client = client, settings = { token = "demo-token" },
      datasets = { { table = "deals", name = "demo_deals" } } }
    local r = assert(register.run(opts))
    local id = r.datasets[1].id
    assert.equal("created", r.datasets[1].action)
    -- drop two fields in the portal, as if the connector had grown since
    local d = portal:stats().state.datasets[tostring(id)]
    assert.is_true(client.dataset:fields_update(id, { delete = { d.fields[2].id, d.fields[9].id } }))
    r = assert(register.run(opts))
    assert.equal("updated", r.datasets[1].action)
    assert.equal(2, r.datasets[1].added)
    d = portal:stats().state.datasets[tostring(id)]
    assert.equal(9, #d.fields)
    local st = portal:stats().state
    assert.equal(1, count(st.datasets))
    client:close()
  end)

  it("deletes fields the connector no longer describes only with --prune (a dry run shows it)", function()
    local client = assert(rest.new(portal:oauth_options(FAST)))
    local c = require("biconnector.connector").load(DEMO)
    local printed = {}
    local function opts(extra)
      local o = { connector = c, base_url = "http://h", client = client, settings = { token = "demo-token" },
        datasets = { { table = "deals", name = "demo_deals" } }, print = function(line) printed[#printed + 1] = line end }
      for k, v in pairs(extra or {}) do o[k] = v end
      return o
    end
    local id = assert(register.run(opts())).datasets[1].id
    -- the connector once described two more fields
    assert.is_true(client.dataset:fields_update(id, { add = {
      { type = "string", name = "OLD_NOTE", externalCode = "old_note" },
      { type = "int", name = "OLD_RANK", externalCode = "old_rank" } } }))
    local function field_codes()
      local codes = {}
      for _, f in ipairs(portal:stats().state.datasets[tostring(id)].fields) do codes[#codes + 1] = f.externalCode end
      table.sort(codes)
      return codes
    end
    assert.equal(11, #field_codes())

    -- without the flag: reported, kept
    printed = {}
    local r = assert(register.run(opts()))
    assert.same({ "old_note", "old_rank" }, r.datasets[1].stale)
    assert.is_nil(r.datasets[1].deleted)
    assert.matches("note: dataset demo_deals: field%(s%) old_note, old_rank are no longer described by the connector; kept %(%-%-prune deletes them%)",
      table.concat(printed, "\n"))
    assert.equal(11, #field_codes())

    -- a dry run with the flag: shown, nothing sent
    local before = portal:stats().stats.received
    printed = {}
    r = assert(register.run(opts({ prune = true, dry_run = true })))
    assert.same({ "old_note", "old_rank" }, r.datasets[1].would_delete)
    assert.matches("dataset %d+ demo_deals: would update %(table deals, 0 new field%(s%), would delete old_note, old_rank%)",
      table.concat(printed, "\n"))
    local after = portal:stats().stats.received
    for _, method in ipairs(changing_calls(portal:stats().stats)) do
      assert.equal(before[method], after[method], method .. " was sent by a dry run")
    end
    assert.equal(11, #field_codes())

    -- with the flag: deleted, the described ones untouched
    printed = {}
    r = assert(register.run(opts({ prune = true })))
    assert.same({ "old_note", "old_rank" }, r.datasets[1].deleted)
    assert.matches("dataset %d+ demo_deals: updated %(table deals, 0 new field%(s%), deleted old_note, old_rank%)",
      table.concat(printed, "\n"))
    local codes = field_codes()
    assert.equal(9, #codes)
    for _, code in ipairs(codes) do assert.is_nil(code:match("^old_")) end
    -- and the command line knows the flag
    local rc, out, err = cli({ DEMO, "--base-url", "http://h", "--setting", "token=demo-token",
      "--dataset", "deals=demo_deals", "--prune", "--dry-run" })
    assert.equal(0, rc, err)
    assert.matches("demo_deals: would update", out)
    client:close()
  end)

  it("refuses a dataset name that another source holds", function()
    local client = assert(rest.new(portal:oauth_options(FAST)))
    local c = require("biconnector.connector").load(DEMO)
    assert(register.run({ connector = c, base_url = "http://h", client = client, settings = { token = "demo-token" },
      source_title = "one", datasets = { { table = "deals" } } }))
    local r, err = register.run({ connector = c, base_url = "http://h", client = client,
      settings = { token = "demo-token" }, source_title = "two", datasets = { { table = "deals" } } })
    assert.is_nil(r)
    assert.matches("dataset deals already exists for another source %(id 1%); name this one with %-%-dataset deals=NAME", err)
    client:close()
  end)

  it("fails on what the connector file refuses, before changing anything", function()
    local rc, _, err = cli({ MINIMAL, "--base-url", "http://h", "--setting", "token=bad", "--dataset", "cities" })
    assert.equal(1, rc)
    assert.matches("the connector's table_list answered HTTP 403: wrong token", err)
    rc, _, err = cli({ MINIMAL, "--base-url", "http://h", "--setting", "token=m1n", "--dataset", "towns" })
    assert.equal(1, rc)
    assert.matches("table towns is not in the connector's table list", err)
    rc, _, err = cli({ "spec/no_such_connector.lua", "--base-url", "http://h" })
    assert.equal(1, rc)
    assert.matches("no_such_connector.lua", err)
    assert.same({}, changing_calls(portal:stats().stats))
  end)

  it("reports a portal error with exit 1", function()
    local rc, _, err = cli({ MINIMAL, "--base-url", "http://h" },
      ("BIC_BUILD=%s BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=bad-token"):format(shell_quote(helpers.build), shell_quote(portal.base)))
    assert.equal(1, rc)
    assert.matches("biconnector register: .*biconnector%.connector%.fields", err)
  end)

  it("explains ACCESS_DENIED through a webhook", function()
    local rc, _, err = cli({ MINIMAL, "--base-url", "http://h" },
      ("env -u BITRIX24_PORTAL BIC_BUILD=%s BITRIX24_WEBHOOK=%s"):format(shell_quote(helpers.build), shell_quote(portal.webhook)))
    assert.equal(1, rc)
    assert.matches("ACCESS_DENIED", err)
    assert.matches("refuse incoming webhooks", err)
    assert.same({}, changing_calls(portal:stats().stats))
  end)

  local usage = {
    { {}, "FILE is required" },
    { { MINIMAL }, "%-%-base%-url is required" },
    { { MINIMAL, "--base-url", "ftp://h" }, "%-%-base%-url must start with http" },
    { { MINIMAL, "--base-url", "http://h", "--logo", "logo.png" }, "%-%-logo must be a URL or a data: URI" },
    { { MINIMAL, "--base-url", "http://h", "--setting", "x" }, "%-%-setting must be CODE=VALUE" },
    { { MINIMAL, "--base-url", "http://h", "--dataset", "cities=Bad-Name" }, "%-%-dataset NAME must start with a letter" },
    { { MINIMAL, "--base-url", "http://h", "--bogus" }, "unknown option %-%-bogus" },
    { { MINIMAL, "--base-url", "http://h", "--setting", "login=me" }, "%-%-setting login: the connector has no such setting %(it has: token%)" },
    { { MINIMAL, "--base-url", "http://h", "--source-title", "S" }, "missing %-%-setting for: token" },
    { { MINIMAL, "--base-url", "http://h", "--dataset", "cities" }, "%-%-dataset needs a source" },
  }
  for _, u in ipairs(usage) do
    it("exits 2: " .. table.concat(u[1], " "), function()
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

    it("says the portal did not reach the connector when the settings are right, on create and on update", function()
      local socket = require "socket"
      local probe = assert(socket.bind("127.0.0.1", 0))
      local _, dead_port = probe:getsockname()
      probe:close() -- nothing listens there now
      local dead = "http://127.0.0.1:" .. dead_port
      local rc, _, err = cli({ MINIMAL, "--base-url", dead, "--setting", "token=m1n" })
      assert.equal(1, rc)
      assert.matches("SOURCE_CREATE_CONNECTION_ERROR", err)
      assert.matches("this connector file accepts these settings, so the portal did not reach that address", err)
      assert.matches("`biconnector verify " .. dead:gsub("%p", "%%%0") .. " %-%-setting CODE=VALUE` checks it from here", err)
      -- a source made while the connector was reachable, then the connector moves away
      rc, _, err = cli({ MINIMAL, "--base-url", base, "--setting", "token=m1n" })
      assert.equal(0, rc, err)
      rc, _, err = cli({ MINIMAL, "--base-url", dead, "--setting", "token=m1n" })
      assert.equal(1, rc)
      assert.matches("the portal could not update the source: SOURCE_UPDATE_CONNECTION_ERROR %(Cannot update connection%.%)", err)
    end)
  end)

  it("runs the Lua example of docs/verify.md", function()
    local f = assert(io.open(helpers.top .. "/docs/verify.md"))
    local text = f:read("*a")
    f:close()
    local code = text:match("```lua\n(%-%- CLIENT: .-)```")
    assert.is_string(code)
    local client = assert(rest.new(portal:oauth_options(FAST)))
    local sandbox = setmetatable({ CLIENT = client }, { __index = _G })
    local chunk
    if setfenv then
      chunk = assert(loadstring(code, "=docs/verify.md register example"))
      setfenv(chunk, sandbox)
    else
      chunk = assert(load(code, "=docs/verify.md register example", "t", sandbox))
    end
    chunk()
    chunk() -- a second run updates
    local st = portal:stats().state
    assert.equal(1, count(st.connectors))
    assert.equal(1, count(st.sources))
    assert.equal(2, count(st.datasets))
    client:close()
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
    assert.equal("cities", r.datasets[1].name)
    assert.equal(5, r.datasets[1].fields)
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
      settings = { token = "t" }, datasets = { { table = "t1" } } }
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
    assert.equal("would create", result.datasets[1].action)
  end)
end)
