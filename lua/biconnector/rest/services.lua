-- biconnector.rest.services: client.connector, client.source, client.table and the
-- deprecated client.dataset. Each checks the documented rules (protocol.md 3.1,
-- 3.2; b24restdocs api-reference/biconnector/) before sending and fails with an
-- error naming the field; connectors are first checked against what
-- biconnector.connector.fields says the portal knows.
local names = require "biconnector.connector.names"
local rest = require "biconnector.rest.client"

local _M = {}

local type, pairs, ipairs, tostring, tonumber, next = type, pairs, ipairs, tostring, tonumber, next

local SETTING_TYPES = { STRING = true, INT = true }
-- Column types, case-sensitive (table/index.md, "Description of the Fields Field").
local COLUMN_TYPES = { int = true, string = true, double = true, date = true, datetime = true, money = true, timezone = true }
_M.COLUMN_TYPES = COLUMN_TYPES
local COLUMN_TYPE_LIST = "int, string, double, date, datetime, money or timezone"
local COLUMN_KEYS = { name = true, externalCode = true, type = true }

local CONNECTOR_KEYS = {
  title = "string", logo = "string", description = "string", urlCheck = "string",
  urlTableList = "string", urlTableDescription = "string", urlData = "string",
  settings = "table", sort = "number", supportMapping = "boolean", sourceCode = "string",
}
local CONNECTOR_REQUIRED = { "title", "logo", "urlCheck", "urlTableList", "urlTableDescription", "urlData", "settings" }
local SOURCE_KEYS = { title = "string", description = "string", active = "boolean", connectorId = "number", settings = "table" }
local SOURCE_REQUIRED = { "title", "connectorId", "settings" }
-- A table (and a dataset of the deprecated family: the same object, the same rules).
local TABLE_KEYS = { name = "string", externalName = "string", externalCode = "string", sourceId = "number",
  description = "string", fields = "table" }
local TABLE_REQUIRED = { "sourceId", "name", "externalName", "externalCode", "fields" }
local TABLE_READ_ONLY = { id = true, type = true, dateCreate = true, dateUpdate = true, createdById = true,
  updatedById = true, externalId = true, csvDelimiter = true, csvEncoding = true, csvHasHeaders = true }
local TABLE_IMMUTABLE = { "sourceId", "name", "externalName", "externalCode" }

local Service = {}
Service.__index = Service

function _M.new(client, kind)
  return setmetatable({ client = client, kind = kind, prefix = "biconnector." .. kind .. "." }, Service)
end

local function invalid(self, method, code, fmt, ...)
  return nil, rest.new_error { code = code, description = fmt:format(...), method = self.prefix .. method,
    retryable = false, kind = "local" }
end

local is_list = require("biconnector.connector.list").is_list

-- The answer of an update, delete or fields.update: `result: true` (protocol.md
-- 3.1). `result: false` with no error is a method that did nothing: an error,
-- not a success the caller would build on.
local function done(self, method, result, cerr)
  if result == nil then return nil, cerr end
  if result == false then
    return nil, rest.new_error { code = "RESULT_FALSE", method = self.prefix .. method, retryable = false,
      kind = "answer", status = 200, description = "the portal answered result false: nothing was changed" }
  end
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
        -- the portal's own codes (b24restdocs connector-add.md, "Possible Error Codes")
        return invalid(self, method, "VALIDATION_SETTINGS_MISSING_REQUIRED_FIELDS", "%s.%s must be a non-empty string", where, k)
      end
      if names.length(s[k]) >= 512 then
        return invalid(self, method, "VALIDATION_SETTINGS_" .. k:upper() .. "_TOO_LONG",
          "%s.%s must be shorter than 512 characters (has %d)", where, k, names.length(s[k]))
      end
    end
    if not SETTING_TYPES[s.type] then
      return invalid(self, method, "VALIDATION_SETTINGS_INVALID_TYPE", "%s.type must be STRING or INT, got %s", where, tostring(s.type))
    end
  end
  return true
end

-- Columns {name, externalCode, type} (table/biconnector-table-add.md, "Element of
-- the fields array"): names and codes unique within the list, and against
-- `current` (the table's columns, for fields_update). dup_name: the code a repeated
-- name gets (DUPLICATE_FIELDS from table.add, VALIDATION_DUPLICATE_FIELD_NAME elsewhere).
local function check_columns(self, method, list, where, dup_name, current)
  if not is_list(list) then
    return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "%s must be an array of {name, externalCode, type}", where)
  end
  local names_seen, codes = {}, {}
  for i, f in ipairs(list) do
    local at = ("%s[%d]"):format(where, i)
    if type(f) ~= "table" then return invalid(self, method, "VALIDATION_FIELD_MISSING_REQUIRED_PARAMETERS", "%s must be a table {name, externalCode, type}", at) end
    for k in pairs(f) do
      if not COLUMN_KEYS[k] then
        return invalid(self, method, "VALIDATION_UNKNOWN_PARAMETERS", "%s.%s is not a column key (name, externalCode, type%s)", at,
          tostring(k), k == "visible" and "; columns are created visible, fields_update hides them" or "")
      end
    end
    if f.name == nil or f.externalCode == nil or f.type == nil then
      return invalid(self, method, "VALIDATION_FIELD_MISSING_REQUIRED_PARAMETERS", "%s must have name, externalCode and type", at)
    end
    if type(f.name) ~= "string" or not f.name:match("^[A-Z][A-Z0-9_]*$") then
      return invalid(self, method, "VALIDATION_FIELD_NAME_INVALID_FORMAT", "%s.name must start with a letter and use A-Z, 0-9, _ (got %s)", at, tostring(f.name))
    end
    if #f.name > names.COLUMN_NAME_MAX then
      return invalid(self, method, "VALIDATION_FIELD_NAME_TOO_LONG", "%s.name must be at most 32 characters (has %d)", at, #f.name)
    end
    if not COLUMN_TYPES[f.type] then
      local hint = type(f.type) == "string" and COLUMN_TYPES[f.type:lower()] and " (types are case-sensitive: " .. f.type:lower() .. ")" or ""
      return invalid(self, method, "VALIDATION_FIELD_INVALID_TYPE", "%s.type must be %s, got %s%s", at, COLUMN_TYPE_LIST, tostring(f.type), hint)
    end
    if type(f.externalCode) ~= "string" or f.externalCode == "" then
      return invalid(self, method, "VALIDATION_FIELD_MISSING_REQUIRED_PARAMETERS", "%s.externalCode must be a non-empty string", at)
    end
    if names_seen[f.name] then return invalid(self, method, dup_name, "%s.name %s is used twice", at, f.name) end
    if codes[f.externalCode] then
      return invalid(self, method, "VALIDATION_DUPLICATE_FIELD_CODE", "%s.externalCode %s is used twice", at, f.externalCode)
    end
    names_seen[f.name], codes[f.externalCode] = true, true
  end
  for _, c in ipairs(current or {}) do
    if codes[c.externalCode] then
      return invalid(self, method, "VALIDATION_DUPLICATE_EXIST_CODE", "%s: the table already has a column with externalCode %s (id %s)",
        where, tostring(c.externalCode), tostring(c.id))
    end
    if names_seen[c.name] then
      return invalid(self, method, "VALIDATION_DUPLICATE_EXIST_NAME", "%s: the table already has a column named %s (id %s)",
        where, tostring(c.name), tostring(c.id))
    end
  end
  return true
end

-- An object id: a positive integer (VALIDATION_ID_NOT_PROVIDED, VALIDATION_INVALID_ID_FORMAT).
local function check_id(self, method, id)
  if id == nil then return invalid(self, method, "VALIDATION_ID_NOT_PROVIDED", "id is missing") end
  local n = tonumber(id)
  if n == nil or n < 1 or n ~= math.floor(n) then
    return invalid(self, method, "VALIDATION_INVALID_ID_FORMAT", "id must be a positive integer, got %s", tostring(id))
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
      -- the current answer is a list of {title, type, isRequired, ...} (connector-fields.md)
      local name = v.title or v.name or v.code or v.field or v.id
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
  if type(f.sourceCode) == "string" and names.length(f.sourceCode) > 64 then
    return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "fields.sourceCode must be at most 64 characters (has %d)", names.length(f.sourceCode))
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

-- A table (or a dataset: the deprecated family has the same rules, dataset/index.md).
function VALIDATE.table(self, method, f, adding)
  for k in pairs(f) do
    if TABLE_READ_ONLY[k] then
      return invalid(self, method, "VALIDATION_READ_ONLY_FIELD", "fields.%s is read-only", tostring(k))
    elseif not TABLE_KEYS[k] then
      return invalid(self, method, "VALIDATION_UNKNOWN_PARAMETERS", "fields.%s is not a %s field", tostring(k), self.kind)
    end
  end
  local ok, err = check_types(self, method, f, TABLE_KEYS, "fields")
  if not ok then return nil, err end
  if not adding then
    -- update changes the description only (table/biconnector-table-update.md)
    if f.fields ~= nil then
      return invalid(self, method, "INVALID_METHOD", "fields.fields cannot be changed by update: use fields_update (%sfields.update)", self.prefix)
    end
    for _, k in ipairs(TABLE_IMMUTABLE) do
      if f[k] ~= nil then
        return invalid(self, method, "VALIDATION_IMMUTABLE_FIELD", "fields.%s cannot be changed (set once by add; only description changes)%s", k,
          k == "name" and ": a new name is a new " .. self.kind or "")
      end
    end
    if next(f) == nil then return invalid(self, method, "VALIDATION_FIELDS_NOT_PROVIDED", "fields is empty: nothing to update") end
    return true
  end
  ok, err = check_required(self, method, f, TABLE_REQUIRED, "fields")
  if not ok then return nil, err end
  if not f.name:match("^[a-z][a-z0-9_]*$") then
    return invalid(self, method, "VALIDATION_DATASET_NAME_INVALID", "fields.name must start with a letter and use a-z, 0-9, _ (got %s; names.table_name derives one)", f.name)
  end
  if #f.name > names.TABLE_NAME_MAX then
    return invalid(self, method, "VALIDATION_DATASET_NAME_TOO_LONG", "fields.name must be at most 230 characters (has %d)", #f.name)
  end
  for _, k in ipairs({ "externalName", "externalCode" }) do
    if names.length(f[k]) > 512 then
      return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "fields.%s must be at most 512 characters (has %d)", k, names.length(f[k]))
    end
  end
  if is_list(f.fields) and f.fields[1] == nil then
    return invalid(self, method, "FIELDS_EMPTY", "fields.fields is empty: a %s needs at least one column", self.kind)
  end
  return check_columns(self, method, f.fields, "fields.fields", self.kind == "table" and "DUPLICATE_FIELDS" or "VALIDATION_DUPLICATE_FIELD_NAME")
end
VALIDATE.dataset = VALIDATE.table

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
  local ok2, cerr = done(self, "update", self.client:call(self.prefix .. "update", { id = id, fields = fields }))
  if not ok2 then return nil, cerr end
  return true, dropped
end

-- The object of a *.get answer: result.item (the current contract,
-- api-reference/biconnector/index.md "Response Format"), or result itself (older
-- portals). A source's own fields sit in item.connection: they come out beside
-- connectorId and settings, one flat object as source.list gives.
-- source.get answers its settings as a list of {code, name, type, value, id}
-- (source/biconnector-source-get.md), source.add and update take an object
-- keyed by code: -> that object (the list as it came in settingsList), or the
-- settings unchanged when they are not such a list (older portals).
local function settings_by_code(source)
  local list = source.settings
  if type(list) ~= "table" or not is_list(list) or list[1] == nil then return source end
  local map = {}
  for _, s in ipairs(list) do
    if type(s) ~= "table" or type(s.code) ~= "string" then return source end
    map[s.code] = s.value
  end
  source.settings, source.settingsList = map, list
  return source
end

local function item_of(kind, result)
  if type(result) ~= "table" or type(result.item) ~= "table" then return result end
  local item = result.item
  if kind == "source" and type(item.connection) == "table" then
    local flat = {}
    for k, v in pairs(item.connection) do flat[k] = v end
    for k, v in pairs(item) do if k ~= "connection" and flat[k] == nil then flat[k] = v end end
    return settings_by_code(flat)
  end
  if kind == "source" then return settings_by_code(item) end
  return item
end

-- service:get(id) -> the object (a table's with its columns in `fields`), or nil, err
function Service:get(id)
  local ok, err = check_id(self, "get", id)
  if not ok then return nil, err end
  local result, cerr = self.client:call(self.prefix .. "get", { id = id })
  if result == nil then return nil, cerr end
  return item_of(self.kind, result)
end

-- service:list([params]) -> every object (all pages), or nil, err
function Service:list(params)
  return self.client:list(self.prefix .. "list", params, { mode = "page" })
end

function Service:delete(id)
  local ok, err = check_id(self, "delete", id)
  if not ok then return nil, err end
  return done(self, "delete", self.client:call(self.prefix .. "delete", { id = id }))
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

-- table:fields_update(id, {add = {columns}, update = {{id=, visible=}}, delete = {ids}} [, opts])
-- (also dataset:fields_update). opts.current: the table's columns (from get):
-- new ones are then checked against them, and ids to update or delete must be
-- among them (the portal deletes a column id of any table, fields-update.md).
function Service:fields_update(id, changes, opts)
  if self.kind ~= "table" and self.kind ~= "dataset" then error("fields_update is a table method", 2) end
  local method = "fields.update"
  local ok, err = check_id(self, method, id)
  if not ok then return nil, err end
  if type(changes) ~= "table" then return invalid(self, method, "VALIDATION_FIELDS_NOT_PROVIDED", "changes must be a table {add=, update=, delete=}") end
  for k in pairs(changes) do
    if k ~= "add" and k ~= "update" and k ~= "delete" then
      return invalid(self, method, "VALIDATION_UNKNOWN_PARAMETERS", "changes.%s is not one of add, update, delete", tostring(k))
    end
  end
  local current = opts and opts.current
  local ids
  if current then
    ids = {}
    for _, c in ipairs(current) do if c.id ~= nil then ids[tostring(c.id)] = true end end
  end
  local function own(i, what, column_id)
    if ids and not ids[tostring(column_id)] then
      return invalid(self, method, "VALIDATION_FIELD_NOT_FOUND", "%s[%d]: column %s is not a column of %s %s", what, i,
        tostring(column_id), self.kind, tostring(id))
    end
    return true
  end
  if changes.add ~= nil then
    ok, err = check_columns(self, method, changes.add, "add", "VALIDATION_DUPLICATE_FIELD_NAME", current)
    if not ok then return nil, err end
  end
  if changes.update ~= nil then
    if not is_list(changes.update) then return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "update must be an array of {id, visible}") end
    for i, u in ipairs(changes.update) do
      if type(u) ~= "table" or tonumber(u.id) == nil or u.visible == nil then
        return invalid(self, method, "VALIDATION_FIELD_UPDATE_MISSING_REQUIRED_FIELDS", "update[%d] must have id (a column id) and visible", i)
      end
      if type(u.visible) ~= "boolean" then
        return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "update[%d].visible must be a boolean", i)
      end
      ok, err = own(i, "update", u.id)
      if not ok then return nil, err end
    end
  end
  if changes.delete ~= nil then
    if not is_list(changes.delete) then return invalid(self, method, "VALIDATION_INVALID_FIELD_TYPE", "delete must be an array of column ids") end
    for i, d in ipairs(changes.delete) do
      local n = tonumber(d)
      if n == nil or n < 1 or n ~= math.floor(n) then
        return invalid(self, method, "VALIDATION_FIELD_DELETE_INVALID_ID", "delete[%d] must be a column id (a positive integer), got %s", i, tostring(d))
      end
      ok, err = own(i, "delete", d)
      if not ok then return nil, err end
    end
  end
  local params = { id = id }
  for k, v in pairs(changes) do params[k] = v end
  return done(self, "fields.update", self.client:call(self.prefix .. "fields.update", params))
end

return _M
