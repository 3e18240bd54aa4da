-- The SQL path reviewed as a user with a real database would use it: edge
-- values and filters whose answers were wrong, each case failing before its fix.
local helpers = require "helpers"
local H = require "sql_helpers"
local json = require "biconnector.json"

local luajit = math.type == nil

-- A connector over the SQLite file (no cache, the token "t", warnings kept).
local function connector(db, logs)
  return require("biconnector.sql").connector { url = "sqlite://" .. db, token = "t", cache = false,
    log = function(_, m) if logs then logs[#logs + 1] = m end end }
end

-- POSTs a form body (the token added): -> status, the body as text.
local function form(c, path, body)
  return helpers.post_form(c, path, "connection[token]=t&" .. body)
end

describe("SQL review: SQLite", function()
  local skip = not H.have_sqlite3("sql_review_spec")
  local dir
  setup(function()
    if skip then return end
    dir = H.tmpdir()
  end)
  teardown(function() H.rmdir(dir) end)
  before_each(function()
    if skip then pending(H.NO_SQLITE3) end
  end)

  describe("integers beyond 2^53", function()
    local db
    setup(function()
      if skip then return end
      db = dir .. "/big.db"
      H.sqlite(db, [[
        CREATE TABLE t (id INTEGER, j JSON);
        INSERT INTO t VALUES (9007199254740993, 'a');
        INSERT INTO t VALUES (9007199254740992, 'b');
        INSERT INTO t VALUES (9223372036854775807, 'c');
        INSERT INTO t VALUES (-9223372036854775807, 'd');
        INSERT INTO t VALUES (1, 'e');
      ]])
    end)

    local ALL = '[["id","j"],[9007199254740993,"a"],[9007199254740992,"b"],[9223372036854775807,"c"],'
      .. '[-9223372036854775807,"d"],[1,"e"]]'

    it("serves them exactly when the filter is matched in memory too", function()
      -- a JSON column is matched in memory: the rows come to Lua, where LuaJIT's
      -- numbers served 9007199254740993 as 9007199254740992 and 2^63-1 as null
      local logs = {}
      local c = connector(db, logs)
      local status, body = form(c, "/data", "table=t")
      assert.equals(200, status)
      assert.equals(ALL, body)
      status, body = form(c, "/data", "table=t&filter[!j]=zzz")
      assert.equals(200, status)
      assert.equals(ALL, body)
      assert.same({}, logs)
      -- and they compare as the integers they are
      status, body = form(c, "/data", "table=t&filter[0][LOGIC]=OR&filter[0][j]=zzz&filter[0][%3Eid]=5&select[]=j")
      assert.equals(200, status)
      assert.equals('[["j"],["a"],["b"],["c"]]', body)
    end)

    it("core.sql's cursor:fetch gives them exactly", function()
      local core = require "biconnector.core"
      local conn = assert(core.sql.open("sqlite", { path = db }))
      local cur = assert(conn:query("SELECT id FROM t WHERE j = ?", { "a" }))
      local row = cur:fetch()
      if luajit then
        assert.equals("9007199254740993", row[1]) -- a double cannot hold it
      else
        assert.equals(9007199254740993, row[1])
        assert.equals("integer", math.type(row[1]))
      end
      cur:close()
      conn:close()
    end)

    it("a filter value selects the integer it spells, or is refused where it cannot be held", function()
      local c = connector(db)
      for _, f in ipairs({ "filter[id]=9007199254740993", "filter[j]=a&filter[id]=9007199254740993",
        "filter[%3Cid]=9007199254740993", "filter[0][LOGIC]=OR&filter[0][j]=zzz&filter[0][id]=9007199254740992" }) do
        local status, body = form(c, "/data", "table=t&select[]=j&" .. f)
        if luajit then
          -- "9007199254740993" reads as 2^53 in a double: it selected the row 2^53
          assert.equals(400, status, f)
          assert.matches("within ±%(2%^53 %- 1%) under LuaJIT", body, 1, false)
        else
          local want = ({ ['[["j"],["a"]]'] = true, ['[["j"],["b"]]'] = true,
            ['[["j"],["b"],["d"],["e"]]'] = true })
          assert.equals(200, status, f)
          assert.is_true(want[body], f .. ": " .. body)
        end
      end
      if not luajit then
        local status, body = form(c, "/data", "table=t&select[]=j&filter[%3Cid]=9007199254740993")
        assert.equals(200, status)
        assert.equals('[["j"],["b"],["d"],["e"]]', body)
      end
      local status, body = form(c, "/data", "table=t&select[]=j&filter[id]=9007199254740991")
      assert.equals(200, status)
      assert.equals('[["j"]]', body)
    end)
  end)
end)
