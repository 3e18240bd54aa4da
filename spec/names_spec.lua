-- biconnector.names: valid, unique table and column names from any code
-- (b24restdocs table/biconnector-table-add.md: a table name starts with a
-- letter, a-z 0-9 _, at most 230, unique in the portal; a column name starts
-- with a letter, A-Z 0-9 _, at most 32, unique in its table). Over 300
-- generated codes, and through `register` on the local portal with the codes
-- kept exactly as externalCode.
local names = require "biconnector.names"

-- 300 distinct codes: spaces, UTF-8 (Latin with diacritics, decomposed, other
-- scripts, emoji, invalid bytes), leading digits, reserved words, near-duplicates
-- that differ only in case or punctuation, and lengths past both limits.
local function generated_codes()
  local bases = { "order lines", "Order Lines", "order-lines", "order_lines", "ORDER  LINES", " order lines ",
    "créé le", "CRÉÉ LE", "cree le", "Straße", "Ærø", "Łódź", "São Paulo", "naïve café", "e\204\129te\204\129",
    "Сделки", "Контакты 2024", "注文", "📦 parcels", "\255\254 bad bytes", "\192\128", "___", "-", "%$#", "",
    "1st", "2024 sales", "007", "9", "3.14", "select", "from", "order", "table", "group", "where", "id", "ID", "Id",
    "null", "true", "index", "key", "t_", "F_", "a", "A", ("x"):rep(300), ("x"):rep(299) .. "y", ("long column "):rep(5),
    ("long column "):rep(5) .. "2" }
  local decorations = { "", " ", "_x", "-1", ".2", " (old)", "#", "Ü" }
  local codes, seen = {}, {}
  for _, d in ipairs(decorations) do
    for _, b in ipairs(bases) do
      local code = b .. d
      if not seen[code] and #codes < 300 then
        seen[code] = true
        codes[#codes + 1] = code
      end
    end
  end
  return codes
end

describe("biconnector.names", function()
  it("derives the documented examples", function()
    assert.equal("order_lines", names.table_name("order lines"))
    assert.equal("CREE_LE", names.column_name("créé le"))
    assert.equal("STRASSE", names.column_name("Straße"))
    assert.equal("AERO", names.column_name("Ærø"))
    assert.equal("lodz", names.table_name("Łódź"))
    assert.equal("ETE", names.column_name("e\204\129te\204\129")) -- combining accents dropped
    assert.equal("t_2024_deals", names.table_name("2024-deals"))
    assert.equal("F_1ST", names.column_name("1st"))
    assert.equal("crm_deal", names.table_name("crm.deal"))
    assert.equal("SELECT", names.column_name("select")) -- no reserved words are documented: kept
    local t = {}
    assert.same({ "a_b", "a_b_2", "a_b_3" }, { names.table_name("a b", t), names.table_name("a-b", t), names.table_name("A B", t) })
    assert.same({ ("X"):rep(32), ("X"):rep(30) .. "_2" }, names.column_names({ ("x"):rep(40), ("x"):rep(40) .. "y" }))
    assert.equal(("a"):rep(230), names.table_name(("a"):rep(300)))
    -- nothing Latin in the code: a stable name from its hash
    assert.matches("^t_%x%x%x%x%x%x%x%x$", names.table_name("Сделки"))
    assert.equal(names.table_name("Сделки"), names.table_name("Сделки"))
    assert.not_equal(names.table_name("Сделки"), names.table_name("Контакты"))
    assert.matches("^F_%u?[%dA-F]+$", names.column_name("注文"))
    -- names already taken (the table's columns) are avoided
    assert.same({ "ID_2", "NAME" }, names.column_names({ "id", "name" }, { ID = true }))
  end)

  it("runs the names example of docs/rest.md", function()
    local block
    for _, code in ipairs(require("helpers").lua_blocks("docs/rest.md")) do
      if code:find('require "biconnector.names"', 1, true) then block = code end
    end
    assert.is_string(block)
    assert((loadstring or load)(block, "=docs/rest.md names example"))()
  end)

  it("maps 300 generated codes to valid, unique table and column names", function()
    local codes = generated_codes()
    assert.equal(300, #codes)
    local taken, table_names = {}, {}
    for i, code in ipairs(codes) do
      local name = names.table_name(code, taken)
      assert(names.valid_table_name(name), ("table name %q of code %q"):format(name, code))
      assert.is_nil(table_names[name], name)
      table_names[name] = i
    end
    local columns = names.column_names(codes)
    local seen = {}
    for i, name in ipairs(columns) do
      assert(names.valid_column_name(name), ("column name %q of code %q"):format(name, codes[i]))
      assert.is_nil(seen[name], name)
      seen[name] = true
    end
    -- deterministic: the same codes give the same names
    assert.same(columns, names.column_names(codes))
  end)
end)

describe("register keeps the codes exact and the names valid (local portal)", function()
  local control = require "portal.control"
  local rest = require "biconnector.rest"
  local register = require "biconnector.register"

  it("a table of the 300 codes as columns, and tables of near-duplicate codes", function()
    local portal = control.start({ rate = 1000, burst = 1000, url_check = false })
    local client = assert(rest.new(portal:oauth_options({ rate = 1000, burst = 1000 })))
    finally(function() client:close() portal:stop() end)
    -- the codes a connector can describe: non-empty, valid UTF-8 (JSON carries them)
    local codes = {}
    for _, code in ipairs(generated_codes()) do
      if code ~= "" and (not utf8 or utf8.len(code)) and not code:find("[\192\193\245-\255]") then codes[#codes + 1] = code end
    end
    assert.equal(287, #codes)
    local wide = {}
    for i, code in ipairs(codes) do wide[i] = { code = code, name = "c" .. i, type = "string" } end
    local table_codes = { "many columns", "order lines", "Order Lines", "order-lines", "créé le", "2024 sales", "select" }
    local described = {}
    for _, code in ipairs(table_codes) do described[code] = { { code = "id", name = "ID", type = "int" } } end
    described["many columns"] = wide
    local list = {}
    for i, code in ipairs(table_codes) do list[i] = { code = code, title = "T" .. i } end
    local c = require("biconnector.connector").new({ title = "Names", settings = {}, check = function() return true end,
      tables = list, describe = described, data = function() return {} end })
    local wanted = {}
    for i, code in ipairs(table_codes) do wanted[i] = { table = code } end
    local r = assert(register.run({ connector = c, base_url = "https://bi.example.com", client = client,
      source_title = "names", settings = {}, tables = wanted }))
    local st = portal:stats().state
    local by_code, seen = {}, {}
    for _, t in pairs(st.tables) do
      by_code[t.externalCode] = t
      assert(names.valid_table_name(t.name), t.name)
      assert.is_nil(seen[t.name], t.name)
      seen[t.name] = true
    end
    for i, code in ipairs(table_codes) do
      assert.is_table(by_code[code], code) -- the code itself, exactly
      assert.equal(r.tables[i].name, by_code[code].name)
    end
    assert.equal("order_lines", by_code["order lines"].name)
    assert.equal("order_lines_2", by_code["Order Lines"].name)
    local columns = by_code["many columns"].fields
    assert.equal(#codes, #columns)
    local column_names = {}
    for i, f in ipairs(columns) do
      assert.equal(codes[i], f.externalCode)
      assert(names.valid_column_name(f.name), f.name)
      assert.is_nil(column_names[f.name], f.name)
      column_names[f.name] = true
    end
    -- a second run finds every table by its code and changes nothing
    local again = assert(register.run({ connector = c, base_url = "https://bi.example.com", client = client,
      source_title = "names", settings = {}, tables = wanted }))
    for i = 1, #table_codes do assert.equal("unchanged", again.tables[i].action) end
  end)
end)
