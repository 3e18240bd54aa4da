-- examples/minimal.lua works as documented in docs/connector.md.
local connector = require "biconnector.connector"
local helpers = require "helpers"
local cjson = require "cjson"

local function load_with_token(token)
  local real = os.getenv
  os.getenv = function(name) if name == "MINIMAL_TOKEN" then return token end return real(name) end -- luacheck: ignore 122
  local ok, c = pcall(connector.load, helpers.top .. "/examples/minimal.lua")
  os.getenv = real -- luacheck: ignore 122
  assert(ok, c)
  return c
end

local post = helpers.post_form

describe("examples/minimal.lua", function()
  it("loads as a connector", function()
    local c = load_with_token("secret")
    assert.is_true(connector.is_connector(c))
    assert.equals("Minimal example", c.title)
    assert.same({ { code = "token", name = "Access token", type = "STRING" } }, c.settings)
  end)

  it("answers the four endpoints for the right token", function()
    local c = load_with_token("secret")
    assert.equals(200, (post(c, "/check", "connection[token]=secret")))
    local status, body = post(c, "/table_list", "connection[token]=secret&searchString=CIT")
    assert.equals(200, status)
    assert.same({ { code = "cities", title = "Cities" } }, cjson.decode(body))
    status, body = post(c, "/table_description", "connection[token]=secret&table=cities")
    assert.equals(200, status)
    assert.equals(5, #cjson.decode(body))
    status, body = post(c, "/data", "connection[token]=secret&table=cities")
    assert.equals(200, status)
    assert.same({
      { "id", "name", "population", "founded", "updated" },
      { 1, "Berlin", 3.85, "1237-10-28", "2023-11-14 22:13:20" },
      { 2, "Kyiv", 2.95, "0482-01-01", "2024-05-01 12:00:00" },
      { 3, "Lisbon", 0.55, cjson.null, "2024-03-09 16:00:00" },
    }, cjson.decode(body))
    status, body = post(c, "/data",
      "connection[token]=secret&table=cities&select[]=name&filter[>population]=1&limit=1")
    assert.equals(200, status)
    assert.same({ { "name" }, { "Berlin" } }, cjson.decode(body))
  end)

  it("refuses a wrong token, and every token when MINIMAL_TOKEN is unset", function()
    local c = load_with_token("secret")
    local status, body = post(c, "/data", "connection[token]=guess&table=cities")
    assert.equals(403, status)
    assert.same({ error = "forbidden", message = "wrong token" }, cjson.decode(body))
    c = load_with_token(nil)
    status, body = post(c, "/check", "connection[token]=")
    assert.equals(403, status)
    assert.same({ error = "forbidden", message = "MINIMAL_TOKEN is not set on the server" }, cjson.decode(body))
  end)
end)
