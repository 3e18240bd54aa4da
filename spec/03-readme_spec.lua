-- The README's Lua examples run: the connector through handle(), the REST
-- snippet against the local portal (its webhook in place of the placeholder).
local helpers = require "helpers"
local cjson = require "cjson"

-- Loads a chunk whose os.getenv sees the given variables first.
local function load_with_env(code, name, vars)
  local env = setmetatable({}, { __index = _G })
  env.os = setmetatable({ getenv = function(k) return vars[k] or os.getenv(k) end }, { __index = os })
  return helpers.load(code, name, env)
end

describe("README.md", function()
  local blocks = helpers.lua_blocks("README.md")

  it("has the connector and the REST examples", function()
    assert.is_true(#blocks >= 2)
    assert.matches("biconnector.connector", blocks[1], 1, true)
    assert.matches("biconnector.rest.new", blocks[2], 1, true)
  end)

  it("connector example answers all four endpoints and refuses a wrong token", function()
    local c = load_with_env(blocks[1], "=README connector", { SALES_TOKEN = "secret" })()
    local function post(path, body) return helpers.post_form(c, path, body) end
    assert.equals(200, (post("/check", "connection[token]=secret")))
    local status, body = post("/table_list", "connection[token]=secret&searchString=")
    assert.equals(200, status)
    assert.same({ { code = "deals", title = "Deals" } }, cjson.decode(body))
    status, body = post("/table_description", "connection[token]=secret&table=deals")
    assert.equals(200, status)
    assert.equals(3, #cjson.decode(body))
    status, body = post("/data", "connection[token]=secret&table=deals&select[]=id&select[]=amount")
    assert.equals(200, status)
    assert.same({ { "id", "amount" }, { 1, 10.5 } }, cjson.decode(body))
    status, body = post("/data", "connection[token]=nope&table=deals")
    assert.equals(403, status)
    assert.is_nil(body:find("nope", 1, true))
  end)

  it("REST example runs against the local portal", function()
    local control = require "portal.control"
    local portal = control.start({ rate = 1000, burst = 1000 })
    finally(function() portal:stop() end)
    local code = blocks[2]:gsub("https://PORTAL/rest/1/CODE/", portal.webhook)
    local printed = {}
    local env = setmetatable({ print = function(...)
      local t = {}
      for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
      printed[#printed + 1] = table.concat(t, " ")
    end }, { __index = _G })
    local chunk = helpers.load(code, "=README rest", env)
    local before = portal:stats().stats.http_requests
    chunk()
    assert.equals("Test User", printed[1])
    assert.matches("^1 %d%d%d%d%-%d%d%-%d%dT", printed[2])
    local stats = portal:stats().stats
    assert.equals(2, stats.http_requests - before - 1)   -- one call, one batch; the stats request itself counts
    assert.equals(1, stats.batches)
    assert.equals(2, stats.executed["profile"])
  end)
end)
