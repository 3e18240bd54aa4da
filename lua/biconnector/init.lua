-- The facade: require "biconnector" gives json, form, null, connector, rest,
-- filter, names and version. Parts load on first use, so a script that only needs
-- the JSON codec never loads the REST client.
local core = require "biconnector.core"

local _M = {
  _VERSION = core.version,
  version = core.version,
  null = core.null,
}

local parts = {
  json = "biconnector.json",
  form = "biconnector.form",
  filter = "biconnector.connector.filter",
  rest = "biconnector.rest.client",
  names = "biconnector.connector.names",
}

-- biconnector.connector(def) builds a connector object (see connector/core.lua).
function _M.connector(def)
  -- lazy, as the parts below are
  return require("biconnector.connector.core").new(def)
end

return setmetatable(_M, {
  __index = function(t, key)
    local name = parts[key]
    if name == nil then return nil end
    local mod = require(name) -- lazy: parts load on first use (above)
    rawset(t, key, mod)
    return mod
  end,
})
