-- biconnector.services: client.connector, client.source, client.dataset.
-- Each checks the documented rules (protocol.md 3.1) before sending and fails
-- with an error naming the field; connectors are first checked against what
-- biconnector.connector.fields says the portal knows.
local _M = {}

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber

local SETTING_TYPES = { STRING = true, INT = true }
local FIELD_TYPES = { int = true, string = true, double = true, date = true, datetime = true }

local CONNECTOR_KEYS = {
  title = "string", logo = "string", description = "string", urlCheck = "string",
  urlTableList = "string", urlTableDescription = "string", urlData = "string",
  settings = "table", sort = "number", supportMapping = "boolean", sourceCode = "string",
}
local CONNECTOR_REQUIRED = { "title", "logo", "urlCheck", "urlTableList", "urlTableDescription", "urlData", "settings" }
local SOURCE_KEYS = { title = "string", description = "string", active = "boolean", connectorId = "number", settings = "table" }
local SOURCE_REQUIRED = { "title", "connectorId", "settings" }
local DATASET_KEYS = { name = "string", externalName = "string", externalCode = "string", sourceId = "number",
  description = "string", fields = "table" }
local DATASET_REQUIRED = { "name", "externalName", "externalCode", "sourceId", "fields" }

local Service = {}
Service.__index = Service

function _M.new(client, kind)
  return setmetatable({ client = client, kind = kind, prefix = "biconnector." .. kind .. "." }, Service)
end

local function invalid(self, method, code, fmt, ...)
  local rest = require "biconnector.rest"
  return nil, rest.new_error { code = code, description = fmt:format(...), method = self.prefix .. method,
    retryable = false, kind = "local" }
end

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do if t[i] == nil then return false end end
  return true
end

local function check_types(self, method, fields, keys, where)
  for k, v in pairs(fields) do
    local want = keys[k]
    if want ~= nil and type(v) ~= want and not (want == "number" and type(v) == "string" and tonumber(v)) then
      return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "%s.%s must be a %s, got %s", where, tostring(k), want, type(v))
    end
  end
  return true
end

local function check_required(self, method, fields, required, where)
  for _, k in ipairs(required) do
    local v = fields[k]
    if v == nil or v == "" then
      return invalid(self, method, "VALIDATION_REQUIRED_FIELD_MISSING", "%s.%s is required", where, k)
    end
  end
  return true
end

local function check_settings(self, method, settings)
  if not is_list(settings) then
    return invalid(self, method, "VALIDATION_SETTINGS_INVALID_TYPE", "fields.settings must be an array of {code, name, type}")
  end
  for i, s in ipairs(settings) do
    local where = ("fields.settings[%d]"):format(i)
    if type(s) ~= "table" then return invalid(self, method, "VALIDATION_SETTINGS_INVALID_TYPE", "%s must be a table", where) end
    for _, k in ipairs({ "code", "name" }) do
      if type(s[k]) ~= "string" or s[k] == "" then
        return invalid(self, method, "VALIDATION_SETTINGS_REQUIRED_FIELD_MISSING", "%s.%s must be a non-empty string", where, k)
      end
      if #s[k] >= 512 then
        return invalid(self, method, "VALIDATION_SETTINGS_TOO_LONG", "%s.%s must be shorter than 512 characters (has %d)", where, k, #s[k])
      end
    end
    if not SETTING_TYPES[s.type] then
      return invalid(self, method, "VALIDATION_SETTINGS_INVALID_TYPE", "%s.type must be STRING or INT, got %s", where, tostring(s.type))
    end
  end
  return true
end

-- Dataset fields {type, name, externalCode}; names and codes unique, also
-- against `existing` (the dataset's fields kept by fields_update).
local function check_dataset_fields(self, method, list, where, existing)
  if not is_list(list) then
    return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "%s must be an array of {type, name, externalCode}", where)
  end
  local names, codes = {}, {}
  for _, f in ipairs(existing or {}) do
    if f.name then names[f.name] = true end
    if f.externalCode then codes[f.externalCode] = true end
  end
  for i, f in ipairs(list) do
    local at = ("%s[%d]"):format(where, i)
    if type(f) ~= "table" then return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "%s must be a table", at) end
    if not FIELD_TYPES[f.type] then
      return invalid(self, method, "VALIDATION_FIELD_INVALID_TYPE", "%s.type must be int, string, double, date or datetime, got %s", at, tostring(f.type))
    end
    if type(f.name) ~= "string" or not f.name:match("^[A-Z][A-Z0-9_]*$") then
      return invalid(self, method, "VALIDATION_FIELD_NAME_INVALID", "%s.name must start with a letter and use A-Z, 0-9, _ (got %s)", at, tostring(f.name))
    end
    if #f.name > 32 then
      return invalid(self, method, "VALIDATION_FIELD_NAME_TOO_LONG", "%s.name must be at most 32 characters (has %d)", at, #f.name)
    end
    if type(f.externalCode) ~= "string" or f.externalCode == "" then
      return invalid(self, method, "VALIDATION_FIELD_EXTERNAL_CODE_MISSING", "%s.externalCode must be a non-empty string", at)
    end
    if names[f.name] then return invalid(self, method, "VALIDATION_DUPLICATE_FIELD_NAME", "%s.name %s is used twice", at, f.name) end
    if codes[f.externalCode] then
      return invalid(self, method, "VALIDATION_DUPLICATE_FIELD_EXTERNAL_CODE", "%s.externalCode %s is used twice", at, f.externalCode)
    end
    names[f.name], codes[f.externalCode] = true, true
  end
  return true
end

local function check_id(self, method, id)
  if tonumber(id) == nil then
    return invalid(self, method, "VALIDATION_REQUIRED_FIELD_MISSING", "id must be a number, got %s", tostring(id))
  end
  return true
end

-- The connector keys this portal knows, from biconnector.connector.fields
-- (asked once per client). Its answer may be keyed by name or a list.
local function known_connector_keys(self)
  local client = self.client
  if client.connector_keys then return client.connector_keys end
  local result, err = client:call("biconnector.connector.fields")
  if result == nil then return nil, err end
  local fields = type(result) == "table" and (result.fields or result) or {}
  local known = {}
  for k, v in pairs(fields) do
    if type(k) == "string" then known[k] = true
    elseif type(v) == "table" then
      local name = v.name or v.code or v.field or v.id
      if type(name) == "string" then known[name] = true end
    end
  end
  -- An answer in a shape we cannot read (no required key recognised) says
  -- nothing about which keys the portal knows: then nothing is dropped.
  local readable = false
  for _, k in ipairs(CONNECTOR_REQUIRED) do if known[k] then readable = true break end end
  if not readable then
    client:logf("warn", "biconnector.connector.fields: cannot tell the known connector fields from its answer; sending every field")
    known = setmetatable({}, { __index = function() return true end })
  end
  client.connector_keys = known
  return known
end

-- Keeps only the keys the portal lists; with opts.strict, complains instead.
local function filter_connector_fields(self, method, fields, opts)
  local known, err = known_connector_keys(self)
  if not known then return nil, err end
  local out, dropped = {}, {}
  for k, v in pairs(fields) do
    if known[k] then out[k] = v else dropped[#dropped + 1] = tostring(k) end
  end
  table.sort(dropped)
  if #dropped > 0 then
    if opts and opts.strict then
      return invalid(self, method, "VALIDATION_UNKNOWN_PARAMETERS", "this portal does not know the connector field(s) %s", table.concat(dropped, ", "))
    end
    self.client:logf("warn", "%s: dropping connector field(s) the portal does not know: %s", method, table.concat(dropped, ", "))
  end
  return out, dropped
end

local VALIDATE = {}

function VALIDATE.connector(self, method, f, adding)
  local ok, err = check_types(self, method, f, CONNECTOR_KEYS, "fields")
  if not ok then return nil, err end
  if adding then
    ok, err = check_required(self, method, f, CONNECTOR_REQUIRED, "fields")
    if not ok then return nil, err end
  end
  if f.settings ~= nil then
    ok, err = check_settings(self, method, f.settings)
    if not ok then return nil, err end
  end
  if type(f.sourceCode) == "string" and #f.sourceCode > 64 then
    return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "fields.sourceCode must be at most 64 characters (has %d)", #f.sourceCode)
  end
  if type(f.logo) == "string" and not (f.logo:match("^https?://") or f.logo:match("^data:")) then
    return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "fields.logo must be a URL or a data: URI")
  end
  return true
end

function VALIDATE.source(self, method, f, adding)
  local ok, err = check_types(self, method, f, SOURCE_KEYS, "fields")
  if not ok then return nil, err end
  if adding then
    ok, err = check_required(self, method, f, SOURCE_REQUIRED, "fields")
    if not ok then return nil, err end
  elseif f.connectorId ~= nil then
    return invalid(self, method, "VALIDATION_IMMUTABLE_FIELD", "fields.connectorId cannot be changed")
  end
  if f.settings ~= nil and (type(f.settings) ~= "table" or (next(f.settings) ~= nil and is_list(f.settings))) then
    return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "fields.settings must be a table keyed by setting code")
  end
  return true
end

function VALIDATE.dataset(self, method, f, adding)
  local ok, err = check_types(self, method, f, DATASET_KEYS, "fields")
  if not ok then return nil, err end
  if adding then
    ok, err = check_required(self, method, f, DATASET_REQUIRED, "fields")
    if not ok then return nil, err end
    if not f.name:match("^[a-z][a-z0-9_]*$") then
      return invalid(self, method, "VALIDATION_DATASET_NAME_INVALID", "fields.name must start with a letter and use a-z, 0-9, _ (got %s)", f.name)
    end
    if #f.name > 230 then
      return invalid(self, method, "VALIDATION_DATASET_NAME_TOO_LONG", "fields.name must be at most 230 characters (has %d)", #f.name)
    end
    ok, err = check_dataset_fields(self, method, f.fields, "fields.fields")
    if not ok then return nil, err end
  else
    for _, k in ipairs({ "name", "sourceId", "externalCode", "fields" }) do
      if f[k] ~= nil then
        return invalid(self, method, "VALIDATION_IMMUTABLE_FIELD", "fields.%s cannot be changed by update%s", k,
          k == "fields" and " (use fields_update)" or "")
      end
    end
  end
  return true
end

-- service:add(fields [, opts]) -> id, or nil, err (connectors: id, dropped keys)
function Service:add(fields, opts)
  if type(fields) ~= "table" then return invalid(self, "add", "VALIDATION_FIELDS_NOT_PROVIDED", "fields must be a table") end
  local ok, err = VALIDATE[self.kind](self, "add", fields, true)
  if not ok then return nil, err end
  local dropped
  if self.kind == "connector" then
    fields, dropped = filter_connector_fields(self, "add", fields, opts)
    if not fields then return nil, dropped end
  end
  local result, cerr = self.client:call(self.prefix .. "add", { fields = fields })
  if result == nil then return nil, cerr end
  local id = type(result) == "table" and (result.id or result.ID) or result
  return tonumber(id) or id, dropped
end

-- service:update(id, fields [, opts]) -> true, or nil, err
function Service:update(id, fields, opts)
  local ok, err = check_id(self, "update", id)
  if not ok then return nil, err end
  if type(fields) ~= "table" then return invalid(self, "update", "VALIDATION_FIELDS_NOT_PROVIDED", "fields must be a table") end
  ok, err = VALIDATE[self.kind](self, "update", fields, false)
  if not ok then return nil, err end
  local dropped
  if self.kind == "connector" then
    fields, dropped = filter_connector_fields(self, "update", fields, opts)
    if not fields then return nil, dropped end
  end
  local result, cerr = self.client:call(self.prefix .. "update", { id = id, fields = fields })
  if result == nil then return nil, cerr end
  return true, dropped
end

function Service:get(id)
  local ok, err = check_id(self, "get", id)
  if not ok then return nil, err end
  return self.client:call(self.prefix .. "get", { id = id })
end

-- service:list([params]) -> every object (all pages), or nil, err
function Service:list(params)
  return self.client:list(self.prefix .. "list", params, { mode = "page" })
end

function Service:delete(id)
  local ok, err = check_id(self, "delete", id)
  if not ok then return nil, err end
  local result, cerr = self.client:call(self.prefix .. "delete", { id = id })
  if result == nil then return nil, cerr end
  return true
end

function Service:fields()
  return self.client:call(self.prefix .. "fields")
end

-- connector:known_keys() -> set of the connector field names this portal
-- knows (from biconnector.connector.fields, asked once per client), or nil, err.
function Service:known_keys()
  if self.kind ~= "connector" then error("known_keys is a connector method", 2) end
  return known_connector_keys(self)
end

-- dataset:fields_update(id, {add = {...}, update = {{id=, visible=}}, delete = {ids}})
function Service:fields_update(id, changes)
  if self.kind ~= "dataset" then error("fields_update is a dataset method", 2) end
  local method = "fields.update"
  local ok, err = check_id(self, method, id)
  if not ok then return nil, err end
  if type(changes) ~= "table" then return invalid(self, method, "VALIDATION_FIELDS_NOT_PROVIDED", "changes must be a table {add=, update=, delete=}") end
  for k in pairs(changes) do
    if k ~= "add" and k ~= "update" and k ~= "delete" then
      return invalid(self, method, "VALIDATION_UNKNOWN_PARAMETERS", "changes.%s is not one of add, update, delete", tostring(k))
    end
  end
  if changes.add ~= nil then
    ok, err = check_dataset_fields(self, method, changes.add, "add")
    if not ok then return nil, err end
  end
  if changes.update ~= nil then
    if not is_list(changes.update) then return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "update must be an array of {id, visible}") end
    for i, u in ipairs(changes.update) do
      if type(u) ~= "table" or tonumber(u.id) == nil then
        return invalid(self, method, "VALIDATION_REQUIRED_FIELD_MISSING", "update[%d].id must be a field id", i)
      end
      if u.visible ~= nil and type(u.visible) ~= "boolean" then
        return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "update[%d].visible must be a boolean", i)
      end
    end
  end
  if changes.delete ~= nil then
    if not is_list(changes.delete) then return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "delete must be an array of field ids") end
    for i, d in ipairs(changes.delete) do
      if tonumber(d) == nil then return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "delete[%d] must be a field id", i) end
    end
  end
  local params = { id = id }
  for k, v in pairs(changes) do params[k] = v end
  local result, cerr = self.client:call(self.prefix .. "fields.update", params)
  if result == nil then return nil, cerr end
  return true
end

return _M
