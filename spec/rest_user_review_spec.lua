-- Review of the REST side as a demanding user and as Bitrix24 judges it
-- (protocol.md 3, 3.1, 3.2), against the local portal.
local rest = require "biconnector.rest"
local control = require "portal.control"

local FAST = { rate = 1000, burst = 1000, url_check = false }

describe("REST user review", function()
  local portal
  setup(function() portal = control.start(FAST) end)
  teardown(function() portal:stop() end)
  before_each(function() portal:reset(FAST) end)

  local function client_for(extra)
    local o = { rate = 1000, burst = 1000, backoff_base = 0.001 }
    for k, v in pairs(extra or {}) do o[k] = v end
    local c = assert(rest.new(portal:oauth_options(o)))
    finally(function() c:close() end)
    return c
  end

  it("each/list page a biconnector list named with .json or in upper case by page, not only its first 50", function()
    portal:control({ action = "seed", connectors = 120 })
    local c = client_for()
    local list = assert(c:list("biconnector.connector.list.json"))
    assert.equal(120, #list)
    list = assert(c:list("BICONNECTOR.CONNECTOR.LIST"))
    assert.equal(120, #list)
  end)
end)
