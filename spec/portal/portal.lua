-- A local Bitrix24 portal for the tests: a separate process speaking real
-- HTTP/1.1 on loopback (luasocket, one coroutine per keep-alive connection
-- under a select loop). It implements webhook and OAuth auth, the OAuth
-- renewal endpoint (single-use refresh tokens), the biconnector.* methods with
-- in-memory state and their validation errors, a generic test.items.* list,
-- batch with $result references, the leaky bucket, and faults injected via
-- POST /_control. GET /_control/stats returns what it received.
--
-- Usage: portal.lua PORT_FILE [CERT KEY]   (binds 127.0.0.1:0 and writes the
-- port there; with CERT and KEY it speaks HTTPS through luasec)
package.path = (arg[0]:match("^(.*)/portal/[^/]*$") or ".") .. "/?.lua;" .. package.path
local socket = require "socket"
local J = require "portal.jsonish"

local null = J.null
local array = J.array
local now = socket.gettime

-------------------------------------------------------------------------------
-- state
local DEFAULTS = {
  rate = 2, burst = 50,                 -- leaky bucket (requests/s drained, block above burst)
  webhook_user = "1", webhook_code = "hooksecret",
  client_id = "local.test.app", client_secret = "appsecret",
  biconnector_via_webhook = false,      -- the real portal answers ACCESS_DENIED
  connector_fields_without = {},        -- e.g. {"sourceCode"} to act as an older portal
  url_check = false,                    -- true: source.add/update call the connector's urlCheck, as Bitrix24 does
  operating_limit = 480,
  page_size = 50,
  oauth_hold = nil,                     -- seconds: hold the next renewal unanswered, then drop it unprocessed
}

local config, state, stats, faults, port

local function reset(overrides)
  config = {}
  for k, v in pairs(DEFAULTS) do config[k] = v end
  for k, v in pairs(overrides or {}) do config[k] = v end
  state = {
    connectors = {}, sources = {}, datasets = {}, items = {},
    next_id = { connector = 0, source = 0, dataset = 0, field = 0, item = 0 },
    access = {}, refresh = {}, token_seq = 0,
    expire_after = nil,                 -- calls left before all access tokens expire
    operating = {},                     -- method -> {value, reset_at}
    bucket = 0, bucket_at = now(),
  }
  stats = { received = {}, executed = {}, http_requests = 0, renewals = 0,
    renewal_failures = 0, sent_503 = 0, sent_429 = 0, expired_answers = 0,
    dropped = 0, faults_applied = 0, connections = 0, statuses = {}, batches = 0, renewal_refresh_tokens = {},
    renewals_held = 0 }
  faults = {}
end

local function count(t, k) t[k] = (t[k] or 0) + 1 end

local function issue_tokens(access, refresh)
  state.token_seq = state.token_seq + 1
  access = access or ("acc" .. state.token_seq .. "x" .. math.random(1e6, 9e6))
  refresh = refresh or ("ref" .. state.token_seq .. "x" .. math.random(1e6, 9e6))
  state.access[access] = { expired = false }
  state.refresh[refresh] = { used = false }
  return access, refresh
end

-------------------------------------------------------------------------------
-- helpers for answers
local ApiError = {}
local function api_error(code, description, status)
  return setmetatable({ code = code, description = description, status = status or 200 }, ApiError)
end
local function fail(code, description, status) error(api_error(code, description, status), 0) end

local function time_block(method, started)
  local fin = now()
  local op = state.operating[method]
  local t = { start = started, finish = fin, duration = fin - started, processing = fin - started,
    date_start = os.date("!%Y-%m-%dT%H:%M:%S+00:00", math.floor(started)),
    date_finish = os.date("!%Y-%m-%dT%H:%M:%S+00:00", math.floor(fin)) }
  if op then
    t.operating = op.value
    t.operating_reset_at = op.reset_at
  else
    t.operating = 0
  end
  return t
end

local function tonum(v)
  if type(v) == "number" then return v end
  if type(v) == "string" then return tonumber(v) end
  return nil
end

local function truthy(v)
  return v == true or v == 1 or v == "1" or v == "Y" or v == "true"
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  if J.is_array(v) then array(t) end
  return t
end

local function is_table(v) return type(v) == "table" and v ~= null end

local function list_of(v)
  if not is_table(v) then return nil end
  local out = {}
  if #v > 0 then for i = 1, #v do out[i] = v[i] end return out end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  if #keys == 0 then return out end
  table.sort(keys, function(a, b) return (tonum(a) or 0) < (tonum(b) or 0) end)
  for i, k in ipairs(keys) do out[i] = v[k] end
  return out
end

-------------------------------------------------------------------------------
-- filtering, ordering and paging shared by the list methods
local function match_filter(item, filter)
  if not is_table(filter) then return true end
  local logic = tostring(filter.LOGIC or "AND"):upper()
  local any = false
  local results = {}
  for key, want in pairs(filter) do
    if key ~= "LOGIC" then
      local ok
      if type(key) == "number" or (is_table(want) and not J.is_array(want) and #want == 0 and not tostring(key):match("^[!@=]")) then
        ok = match_filter(item, want)
      else
        local op, field = tostring(key):match("^([!=<>@%%]*)(.-)$")
        local have = item[field]
        if have == nil then for k, v in pairs(item) do if tostring(k):lower() == field:lower() then have = v end end end
        local hn, wn = tonum(have), tonum(want)
        local function cmp(a, b) if hn and wn then return hn, wn end return tostring(a), tostring(b) end
        local a, b = cmp(have, want)
        if op == "" or op == "=" then
          if is_table(want) then ok = false for _, w in ipairs(list_of(want)) do if tostring(w) == tostring(have) then ok = true end end
          else ok = tostring(have) == tostring(want) end
        elseif op == "!" or op == "!=" then ok = tostring(have) ~= tostring(want)
        elseif op == ">" then ok = have ~= nil and a > b
        elseif op == ">=" then ok = have ~= nil and a >= b
        elseif op == "<" then ok = have ~= nil and a < b
        elseif op == "<=" then ok = have ~= nil and a <= b
        elseif op == "@" or op == "!@" then
          local found = false
          for _, w in ipairs(list_of(want) or {}) do if tostring(w) == tostring(have) then found = true end end
          ok = (op == "@") == found
        elseif op == "%" then ok = tostring(have or ""):lower():find(tostring(want):lower(), 1, true) ~= nil
        else fail("VALIDATION_FILTER_TYPE", "unknown filter operator " .. op) end
      end
      results[#results + 1] = ok
      if ok then any = true end
    end
  end
  if logic == "OR" then return #results == 0 or any end
  if logic ~= "AND" then fail("VALIDATION_INVALID_FILTER_LOGIC", "LOGIC must be AND or OR") end
  for _, ok in ipairs(results) do if not ok then return false end end
  return true
end

local function sorted_items(store, filter, order)
  local out = {}
  for _, item in pairs(store) do
    if match_filter(item, filter) then out[#out + 1] = item end
  end
  local field, dir = "id", "ASC"
  if is_table(order) then
    for k, v in pairs(order) do field, dir = k, tostring(v):upper() end
  elseif order ~= nil then
    fail("VALIDATION_ORDER_TYPE", "order must be an object")
  end
  local function key(it) return tonum(it[field] or it[field:lower()] or it[field:upper()]) or 0 end
  table.sort(out, function(a, b)
    if dir == "DESC" then return key(a) > key(b) end
    return key(a) < key(b)
  end)
  return out
end

local function select_fields(item, sel)
  if not is_table(sel) or #list_of(sel) == 0 then return copy(item) end
  local t = {}
  for _, f in ipairs(list_of(sel)) do if f == "*" then return copy(item) end t[f] = copy(item[f]) end
  return t
end

-------------------------------------------------------------------------------
-- biconnector validation, as protocol.md section 3.1 documents it
local CONNECTOR_FIELDS = { "id", "title", "logo", "description", "urlCheck", "urlTableList",
  "urlTableDescription", "urlData", "settings", "sort", "supportMapping", "sourceCode", "dateCreate" }
local CONNECTOR_REQUIRED = { "title", "logo", "urlCheck", "urlTableList", "urlTableDescription", "urlData", "settings" }
local SOURCE_FIELDS = { "id", "title", "description", "active", "connectorId", "settings", "dateCreate" }
local DATASET_FIELDS = { "id", "name", "externalName", "externalCode", "sourceId", "description", "fields", "dateCreate" }
local FIELD_TYPES = { int = true, string = true, double = true, date = true, datetime = true }

local function known_connector_fields()
  local skip = {}
  for _, k in ipairs(list_of(config.connector_fields_without) or {}) do skip[k] = true end
  local t = {}
  for _, k in ipairs(CONNECTOR_FIELDS) do if not skip[k] then t[k] = true end end
  return t
end

local function check_unknown(fields, known)
  for k in pairs(fields) do
    if not known[k] then fail("VALIDATION_UNKNOWN_PARAMETERS", "Unknown parameters: " .. tostring(k)) end
  end
end

local function need_fields(params)
  if not is_table(params.fields) then fail("VALIDATION_FIELDS_NOT_PROVIDED", "Parameter 'fields' is not provided") end
  return params.fields
end

local function check_settings(settings)
  local list = list_of(settings)
  if not list then fail("VALIDATION_SETTINGS_INVALID_TYPE", "settings must be an array") end
  for i, s in ipairs(list) do
    if not is_table(s) then fail("VALIDATION_SETTINGS_INVALID_TYPE", "settings[" .. i .. "] must be an object") end
    for _, k in ipairs({ "code", "name", "type" }) do
      if type(s[k]) ~= "string" or s[k] == "" then fail("VALIDATION_SETTINGS_REQUIRED_FIELD_MISSING", "settings[" .. i .. "]." .. k .. " is required") end
    end
    if s.type ~= "STRING" and s.type ~= "INT" then fail("VALIDATION_SETTINGS_INVALID_TYPE", "settings[" .. i .. "].type must be STRING or INT") end
    if #s.code >= 512 or #s.name >= 512 then fail("VALIDATION_SETTINGS_TOO_LONG", "settings[" .. i .. "] code/name too long") end
  end
  return array(list)
end

local function get_by_id(store, params, code, what)
  local id = tonum(params.id)
  if not id then fail("VALIDATION_REQUIRED_FIELD_MISSING", "Parameter 'id' is required") end
  local obj = store[id]
  if not obj then fail(code, what .. " with id " .. id .. " not found") end
  return obj, id
end

local function check_dataset_fields(list, existing)
  local names, codes = {}, {}
  for _, f in ipairs(existing or {}) do names[f.name] = true codes[f.externalCode] = true end
  for i, f in ipairs(list) do
    if not is_table(f) then fail("VALIDATION_FIELD_INVALID_TYPE", "fields[" .. i .. "] must be an object") end
    if not FIELD_TYPES[tostring(f.type):lower()] then fail("VALIDATION_FIELD_INVALID_TYPE", "fields[" .. i .. "].type is invalid") end
    if type(f.name) ~= "string" or not f.name:match("^[A-Z][A-Z0-9_]*$") or #f.name > 32 then
      fail("VALIDATION_FIELD_NAME_INVALID", "fields[" .. i .. "].name is invalid")
    end
    if type(f.externalCode) ~= "string" or f.externalCode == "" then fail("VALIDATION_FIELD_EXTERNAL_CODE_MISSING", "fields[" .. i .. "].externalCode is required") end
    if names[f.name] then fail("VALIDATION_DUPLICATE_FIELD_NAME", "duplicate field name " .. f.name) end
    if codes[f.externalCode] then fail("VALIDATION_DUPLICATE_FIELD_EXTERNAL_CODE", "duplicate external code " .. f.externalCode) end
    names[f.name], codes[f.externalCode] = true, true
  end
end

local function new_field(f)
  state.next_id.field = state.next_id.field + 1
  return { id = state.next_id.field, type = tostring(f.type):lower(), name = f.name, externalCode = f.externalCode, visible = true }
end

local function list_method(get_store)
  return function(params)
    local store = get_store()
    local page = tonum(params.page) or 1
    if page < 1 then page = 1 end
    if params.select ~= nil and not is_table(params.select) then fail("VALIDATION_SELECT_TYPE", "select must be an array") end
    if params.filter ~= nil and not is_table(params.filter) then fail("VALIDATION_FILTER_TYPE", "filter must be an object") end
    local all = sorted_items(store, params.filter, params.order)
    local out = array({})
    for i = (page - 1) * config.page_size + 1, math.min(#all, page * config.page_size) do
      out[#out + 1] = select_fields(all[i], params.select)
    end
    return out -- the biconnector lists answer without total/next
  end
end

local methods = {}

methods["biconnector.connector.fields"] = function()
  local fields = {}
  local known = known_connector_fields()
  local keys = {}
  for _, k in ipairs(CONNECTOR_FIELDS) do
    if known[k] then
      keys[#keys + 1] = k
      fields[k] = { title = k, type = (k == "settings") and "array" or "string", isRequired = false,
        isReadOnly = (k == "id" or k == "dateCreate"), isImmutable = false, isMultiple = (k == "settings") }
    end
  end
  for _, k in ipairs(CONNECTOR_REQUIRED) do fields[k].isRequired = true end
  return { fields = J.object(fields, keys) }
end

methods["biconnector.connector.add"] = function(params)
  local f = need_fields(params)
  check_unknown(f, known_connector_fields())
  if f.id ~= nil or f.dateCreate ~= nil then fail("VALIDATION_READ_ONLY_FIELD", "id is read-only") end
  for _, k in ipairs(CONNECTOR_REQUIRED) do
    if f[k] == nil or f[k] == "" then fail("VALIDATION_REQUIRED_FIELD_MISSING", "Field '" .. k .. "' is required") end
  end
  local settings = check_settings(f.settings)
  if f.sourceCode ~= nil and #tostring(f.sourceCode) > 64 then fail("VALIDATION_INVALID_FIELD_TYPE", "sourceCode is too long") end
  state.next_id.connector = state.next_id.connector + 1
  local id = state.next_id.connector
  local c = copy(f)
  c.id, c.settings, c.sort = id, settings, tonum(f.sort) or 100
  c.supportMapping = f.supportMapping ~= nil and truthy(f.supportMapping) or false
  c.dateCreate = os.date("!%Y-%m-%dT%H:%M:%S+00:00")
  state.connectors[id] = c
  return { id = id }
end

methods["biconnector.connector.update"] = function(params)
  local c = get_by_id(state.connectors, params, "CONNECTOR_NOT_FOUND", "Connector")
  local f = need_fields(params)
  check_unknown(f, known_connector_fields())
  if f.id ~= nil then fail("VALIDATION_READ_ONLY_FIELD", "id is read-only") end
  if f.settings ~= nil then f.settings = check_settings(f.settings) end
  for k, v in pairs(f) do
    if k == "sort" then v = tonum(v) elseif k == "supportMapping" then v = truthy(v) end
    c[k] = copy(v)
  end
  return true
end

methods["biconnector.connector.get"] = function(params)
  return copy((get_by_id(state.connectors, params, "CONNECTOR_NOT_FOUND", "Connector")))
end
methods["biconnector.connector.list"] = list_method(function() return state.connectors end)

methods["biconnector.connector.delete"] = function(params)
  local _, id = get_by_id(state.connectors, params, "CONNECTOR_NOT_FOUND", "Connector")
  for _, s in pairs(state.sources) do
    if s.connectorId == id then fail("CONNECTOR_DELETE_RESTRICTED", "Connector has sources") end
  end
  state.connectors[id] = nil
  return true
end

methods["biconnector.source.fields"] = function()
  local f = {}
  for _, k in ipairs(SOURCE_FIELDS) do f[k] = { title = k, isRequired = (k == "title" or k == "connectorId" or k == "settings") } end
  return { fields = f }
end

local source_known = {}
for _, k in ipairs(SOURCE_FIELDS) do source_known[k] = true end

local function form_escape(v)
  return (tostring(v):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- Bitrix24 POSTs the source's settings as `connection[CODE]=VALUE` to the
-- connector's urlCheck when a source is created or its settings change, and
-- refuses the source unless the answer is 200 with a non-empty body; its error
-- says no more than the code and "Cannot create connection.".
local function url_check(connector, settings, code, text)
  if not config.url_check then return end
  local http, ltn12 = require "socket.http", require "ltn12"
  local parts = {}
  for k, v in pairs(settings) do parts[#parts + 1] = "connection[" .. form_escape(k) .. "]=" .. form_escape(v) end
  table.sort(parts)
  local body, answer = table.concat(parts, "&"), {}
  http.TIMEOUT = 10
  local ok, status = http.request {
    url = connector.urlCheck, method = "POST", source = ltn12.source.string(body), sink = ltn12.sink.table(answer),
    headers = { ["content-type"] = "application/x-www-form-urlencoded", ["content-length"] = tostring(#body) },
  }
  stats.url_checks = stats.url_checks or array {}
  stats.url_checks[#stats.url_checks + 1] = { url = connector.urlCheck, body = body, status = ok and status or tostring(status) }
  if not ok or status ~= 200 or table.concat(answer) == "" then fail(code, text) end
end

methods["biconnector.source.add"] = function(params)
  local f = need_fields(params)
  check_unknown(f, source_known)
  for _, k in ipairs({ "title", "connectorId", "settings" }) do
    if f[k] == nil or f[k] == "" then fail("VALIDATION_REQUIRED_FIELD_MISSING", "Field '" .. k .. "' is required") end
  end
  local cid = tonum(f.connectorId)
  if not cid or not state.connectors[cid] then fail("CONNECTOR_NOT_FOUND", "Connector not found") end
  if not is_table(f.settings) then fail("VALIDATION_INVALID_FIELD_TYPE", "settings must be an object") end
  url_check(state.connectors[cid], f.settings, "SOURCE_CREATE_CONNECTION_ERROR", "Cannot create connection.")
  state.next_id.source = state.next_id.source + 1
  local id = state.next_id.source
  state.sources[id] = { id = id, title = f.title, description = f.description or "", connectorId = cid,
    active = f.active == nil or truthy(f.active), settings = copy(f.settings), dateCreate = os.date("!%Y-%m-%dT%H:%M:%S+00:00") }
  return { id = id }
end

methods["biconnector.source.update"] = function(params)
  local s = get_by_id(state.sources, params, "SOURCE_NOT_FOUND", "Source")
  local f = need_fields(params)
  check_unknown(f, source_known)
  if f.connectorId ~= nil then fail("VALIDATION_IMMUTABLE_FIELD", "connectorId is immutable") end
  if is_table(f.settings) then
    url_check(state.connectors[s.connectorId], f.settings, "SOURCE_UPDATE_CONNECTION_ERROR", "Cannot update connection.")
  end
  for k, v in pairs(f) do s[k] = (k == "active") and truthy(v) or copy(v) end
  return true
end
methods["biconnector.source.get"] = function(params) return copy((get_by_id(state.sources, params, "SOURCE_NOT_FOUND", "Source"))) end
methods["biconnector.source.list"] = list_method(function() return state.sources end)
methods["biconnector.source.delete"] = function(params)
  local _, id = get_by_id(state.sources, params, "SOURCE_NOT_FOUND", "Source")
  for _, d in pairs(state.datasets) do
    if d.sourceId == id then fail("SOURCE_DELETE_RESTRICTED", "Source has datasets") end
  end
  state.sources[id] = nil
  return true
end

local dataset_known = {}
for _, k in ipairs(DATASET_FIELDS) do dataset_known[k] = true end
methods["biconnector.dataset.fields"] = function()
  local f = {}
  for _, k in ipairs(DATASET_FIELDS) do f[k] = { title = k } end
  return { fields = f }
end

methods["biconnector.dataset.add"] = function(params)
  local f = need_fields(params)
  check_unknown(f, dataset_known)
  for _, k in ipairs({ "name", "externalName", "externalCode", "sourceId", "fields" }) do
    if f[k] == nil or f[k] == "" then fail("VALIDATION_REQUIRED_FIELD_MISSING", "Field '" .. k .. "' is required") end
  end
  if type(f.name) ~= "string" or not f.name:match("^[a-z][a-z0-9_]*$") then fail("VALIDATION_DATASET_NAME_INVALID", "Dataset name is invalid") end
  if #f.name > 230 then fail("VALIDATION_DATASET_NAME_TOO_LONG", "Dataset name is too long") end
  local sid = tonum(f.sourceId)
  if not sid or not state.sources[sid] then fail("SOURCE_NOT_FOUND", "Source not found") end
  for _, d in pairs(state.datasets) do
    if d.name == f.name then fail("DATASET_ALREADY_EXIST", "Dataset " .. f.name .. " already exists") end
  end
  local list = list_of(f.fields)
  if not list then fail("VALIDATION_INVALID_FIELD_TYPE", "fields must be an array") end
  check_dataset_fields(list)
  state.next_id.dataset = state.next_id.dataset + 1
  local id = state.next_id.dataset
  local fields = array({})
  for i, x in ipairs(list) do fields[i] = new_field(x) end
  state.datasets[id] = { id = id, name = f.name, externalName = f.externalName, externalCode = f.externalCode,
    sourceId = sid, description = f.description or "", fields = fields, dateCreate = os.date("!%Y-%m-%dT%H:%M:%S+00:00") }
  return { id = id }
end

methods["biconnector.dataset.update"] = function(params)
  local d = get_by_id(state.datasets, params, "DATASET_NOT_FOUND", "Dataset")
  local f = need_fields(params)
  check_unknown(f, dataset_known)
  for _, k in ipairs({ "name", "sourceId", "externalCode", "fields" }) do
    if f[k] ~= nil then fail("VALIDATION_IMMUTABLE_FIELD", "Field '" .. k .. "' is immutable") end
  end
  for k, v in pairs(f) do d[k] = copy(v) end
  return true
end
methods["biconnector.dataset.get"] = function(params) return copy((get_by_id(state.datasets, params, "DATASET_NOT_FOUND", "Dataset"))) end
methods["biconnector.dataset.list"] = list_method(function() return state.datasets end)
methods["biconnector.dataset.delete"] = function(params)
  local _, id = get_by_id(state.datasets, params, "DATASET_NOT_FOUND", "Dataset")
  state.datasets[id] = nil
  return true
end

methods["biconnector.dataset.fields.update"] = function(params)
  local d = get_by_id(state.datasets, params, "DATASET_NOT_FOUND", "Dataset")
  local add, upd, del = list_of(params.add) or {}, list_of(params.update) or {}, list_of(params.delete) or {}
  local byid = {}
  for _, f in ipairs(d.fields) do byid[f.id] = f end
  for _, u in ipairs(upd) do
    if not is_table(u) or not byid[tonum(u.id)] then fail("VALIDATION_FIELD_NOT_FOUND", "field " .. tostring(is_table(u) and u.id) .. " not found") end
  end
  for _, x in ipairs(del) do
    if not byid[tonum(x)] then fail("VALIDATION_FIELD_NOT_FOUND", "field " .. tostring(x) .. " not found") end
  end
  local kept = {}
  local gone = {}
  for _, x in ipairs(del) do gone[tonum(x)] = true end
  for _, f in ipairs(d.fields) do if not gone[f.id] then kept[#kept + 1] = f end end
  check_dataset_fields(add, kept)
  for _, u in ipairs(upd) do byid[tonum(u.id)].visible = truthy(u.visible) end
  for _, x in ipairs(add) do kept[#kept + 1] = new_field(x) end
  d.fields = array(kept)
  return true
end

-- A plain list with total/next paging, for client:each.
methods["test.items.add"] = function(params)
  state.next_id.item = state.next_id.item + 1
  local id = state.next_id.item
  local f = is_table(params.fields) and params.fields or {}
  state.items[id] = { ID = id, TITLE = f.TITLE or ("item " .. id) }
  return id
end
methods["test.items.get"] = function(params)
  local it = state.items[tonum(params.id) or -1]
  if not it then fail("NOT_FOUND", "item not found") end
  return copy(it)
end
methods["test.items.update"] = function(params)
  local it = state.items[tonum(params.id) or -1]
  if not it then fail("NOT_FOUND", "item not found") end
  if is_table(params.fields) and params.fields.TITLE then it.TITLE = params.fields.TITLE end
  return true
end
methods["test.items.list"] = function(params)
  local start = tonum(params.start) or 0
  local all = sorted_items(state.items, params.filter, params.order or { ID = "ASC" })
  local from = start < 0 and 0 or start
  local out = array({})
  for i = from + 1, math.min(#all, from + config.page_size) do out[#out + 1] = select_fields(all[i], params.select) end
  if start == -1 then return out end -- no count, no next: the fast mode
  local extra = { total = #all }
  if from + config.page_size < #all then extra.next = from + config.page_size end
  return out, extra
end
methods["profile"] = function() return { ID = "1", ADMIN = true, NAME = "Test", LAST_NAME = "User" } end
methods["user.current"] = methods["profile"]
methods["server.time"] = function() return os.date("!%Y-%m-%dT%H:%M:%S+00:00") end
methods["test.echo"] = function(params) return params end
methods["test.chunked"] = function() return { chunked = true, text = ("chunk"):rep(100) } end -- answered chunked

-------------------------------------------------------------------------------
-- batch
local function resolve_refs(v, results)
  if type(v) == "string" then
    local whole = v:match("^%$result(%[.*%])$")
    if whole then
      local cur = results
      for seg in whole:gmatch("%[([^%]]*)%]") do
        if not is_table(cur) then cur = nil break end
        local nxt = cur[seg]
        if nxt == nil and tonum(seg) then nxt = cur[tonum(seg) + 1] end
        cur = nxt
      end
      if cur ~= nil and not is_table(cur) then return tostring(cur) end
      return v
    end
    return v
  elseif is_table(v) then
    local t = {}
    for k, x in pairs(v) do t[k] = resolve_refs(x, results) end
    if J.is_array(v) then array(t) end
    J.object(t, J.keys(v))
    return t
  end
  return v
end

local dispatch -- forward

local function run_batch(params, ctx)
  local cmd = params.cmd
  if not is_table(cmd) then fail("INVALID_ARG_VALUE", "cmd must be an object or array", 400) end
  local keys = J.keys(cmd)
  if not keys or #keys == 0 then keys = {} for i = 1, #cmd do keys[i] = i end end
  if #keys > 50 then fail("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400) end
  local halt = truthy(params.halt)
  local res, errs, totals, nexts, times = {}, {}, {}, {}, {}
  local rk, ek, tk, nk, mk = {}, {}, {}, {}, {}
  for _, key in ipairs(keys) do
    local line = cmd[key]
    local outkey = type(key) == "number" and (key - 1) or key
    local method, query = tostring(line):match("^([^?]*)%??(.*)$")
    method = method:gsub("%.json$", "")
    local sub = resolve_refs(J.form_decode(query), res)
    local started = now()
    count(stats.received, method)
    if method == "batch" then
      errs[outkey] = { error = "ERROR_BATCH_METHOD_NOT_ALLOWED", error_description = "Batch in batch is not allowed" }
      ek[#ek + 1] = outkey
    else
      local ok, result, extra = pcall(dispatch, method, sub, ctx)
      if ok then
        count(stats.executed, method)
        res[outkey] = result
        rk[#rk + 1] = outkey
        if extra and extra.total then totals[outkey] = extra.total tk[#tk + 1] = outkey end
        if extra and extra.next then nexts[outkey] = extra.next nk[#nk + 1] = outkey end
        times[outkey] = time_block(method, started)
        mk[#mk + 1] = outkey
      else
        if getmetatable(result) ~= ApiError then result = api_error("INTERNAL_SERVER_ERROR", tostring(result), 500) end
        errs[outkey] = { error = result.code, error_description = result.description }
        ek[#ek + 1] = outkey
      end
    end
    if halt and errs[outkey] then break end
  end
  local function obj(t, k) if #k == 0 then return array({}) end return J.object(t, k) end
  return { result = obj(res, rk), result_error = obj(errs, ek), result_total = obj(totals, tk),
    result_next = obj(nexts, nk), result_time = obj(times, mk) }
end

function dispatch(method, params, ctx)
  if method:match("^biconnector%.") and ctx.webhook and not config.biconnector_via_webhook
    and method ~= "biconnector.connector.fields" then
    fail("ACCESS_DENIED", "Access denied: the biconnector methods need an application", 403)
  end
  local fn = methods[method]
  if not fn then fail("ERROR_METHOD_NOT_FOUND", "Method not found!", 404) end
  return fn(params, ctx)
end

-------------------------------------------------------------------------------
-- HTTP plumbing
local function parse_query(q) return J.form_decode(q or "") end

local STATUS_TEXT = { [200] = "OK", [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [429] = "Too Many Requests", [500] = "Internal Server Error", [503] = "Service Unavailable" }

local function json_answer(status, body) return { status = status, body = J.encode(body) } end

local function error_answer(code, description, status)
  return json_answer(status or 200, { error = code, error_description = description })
end

local function bucket_admit()
  local t = now()
  state.bucket = math.max(0, state.bucket - (t - state.bucket_at) * config.rate)
  state.bucket_at = t
  if state.bucket + 1 > config.burst then return false end
  state.bucket = state.bucket + 1
  return true
end

local function take_fault(method)
  for i, f in ipairs(faults) do
    if f.method == nil or f.method == "*" or f.method == method then
      f.count = (f.count or 1) - 1
      if f.count <= 0 then table.remove(faults, i) end
      stats.faults_applied = stats.faults_applied + 1
      return f
    end
  end
end

local function handle_oauth(req)
  if config.oauth_hold then
    -- a renewal that never reaches the portal: held, then dropped without using the refresh token
    local hold = config.oauth_hold
    config.oauth_hold = nil
    stats.renewals_held = stats.renewals_held + 1
    coroutine.yield("sleep", now() + hold)
    stats.dropped = stats.dropped + 1
    return { drop = true }
  end
  local q = parse_query(req.query)
  if req.body and #req.body > 0 then for k, v in pairs(parse_query(req.body)) do q[k] = v end end
  if q.grant_type ~= "refresh_token" then return error_answer("invalid_request", "grant_type must be refresh_token", 400) end
  if q.client_id ~= config.client_id or q.client_secret ~= config.client_secret then
    stats.renewal_failures = stats.renewal_failures + 1
    return error_answer("invalid_client", "invalid client", 401)
  end
  local r = state.refresh[q.refresh_token or ""]
  if not r or r.used then
    stats.renewal_failures = stats.renewal_failures + 1
    return error_answer("invalid_grant", "refresh token is invalid or was already used", 400)
  end
  r.used = true
  stats.renewals = stats.renewals + 1
  local access, refresh = issue_tokens()
  local base = "http://127.0.0.1:" .. port .. "/rest/"
  return json_answer(200, { access_token = access, refresh_token = refresh, expires_in = 3600,
    expires = math.floor(os.time() + 3600), client_endpoint = base, server_endpoint = "http://127.0.0.1:" .. port .. "/oauth/rest/",
    member_id = "localmember", scope = "biconnector,user", user_id = 1, domain = "127.0.0.1:" .. port, status = "L" })
end

local function by_string_id(store)
  local t, keys = {}, {}
  for id, obj in pairs(store) do t[tostring(id)] = obj keys[#keys + 1] = tostring(id) end
  table.sort(keys)
  return J.object(t, keys)
end

local function handle_control(req)
  if req.path == "/_control/stats" then
    return json_answer(200, { stats = stats, config = config, faults = array(copy(faults)),
      state = { connectors = by_string_id(state.connectors), sources = by_string_id(state.sources), datasets = by_string_id(state.datasets),
        item_count = (function() local n = 0 for _ in pairs(state.items) do n = n + 1 end return n end)(),
        valid_refresh = (function() local t = array({}) for k, r in pairs(state.refresh) do if not r.used then t[#t + 1] = k end end return t end)() } })
  end
  local cmd, err = J.decode(req.body or "")
  if not cmd then return error_answer("BAD_CONTROL", err, 400) end
  local a = cmd.action
  if a == "reset" then reset(cmd.config)
  elseif a == "config" then for k, v in pairs(cmd.config or {}) do config[k] = v end
  elseif a == "tokens" then issue_tokens(cmd.access_token, cmd.refresh_token)
  elseif a == "expire" then
    if cmd.after then state.expire_after = cmd.after
    else for _, t in pairs(state.access) do t.expired = true end end
  elseif a == "fault" then faults[#faults + 1] = cmd.fault
  elseif a == "operating" then state.operating[cmd.method] = { value = cmd.value, reset_at = cmd.reset_at or (os.time() + (cmd.reset_in or 60)) }
  elseif a == "seed" then
    for _ = 1, cmd.items or 0 do methods["test.items.add"]({}) end
    for i = 1, cmd.connectors or 0 do
      methods["biconnector.connector.add"]({ fields = { title = "seed " .. i, logo = "data:,", urlCheck = "http://x/c",
        urlTableList = "http://x/l", urlTableDescription = "http://x/d", urlData = "http://x/q",
        settings = { { code = "t", name = "T", type = "STRING" } } } })
    end
  elseif a == "stop" then return { status = 200, body = "{}", stop = true }
  else return error_answer("BAD_CONTROL", "unknown action " .. tostring(a), 400) end
  return json_answer(200, { ok = true })
end

-- One REST call: auth, limits, faults, execution. Returns an answer table.
local function handle_rest(req, path_rest)
  local started = now()
  local user, code, method = path_rest:match("^(%d+)/([^/]+)/(.+)$")
  local webhook = user ~= nil
  if not webhook then method = path_rest end
  method = method:gsub("%.json$", ""):gsub("/$", "")
  method = method:lower()
  count(stats.received, method)

  local params, perr
  local ctype = (req.headers["content-type"] or ""):lower()
  local body = req.body or ""
  if ctype:find("json", 1, true) or (ctype == "" and body:match("^%s*{")) then
    params, perr = J.decode(body)
    if not params then return error_answer("INVALID_REQUEST", "bad JSON: " .. perr, 400) end
    if not is_table(params) then params = {} end
  else
    params = parse_query(body)
  end
  for k, v in pairs(parse_query(req.query)) do if params[k] == nil then params[k] = v end end

  if not bucket_admit() then
    stats.sent_503 = stats.sent_503 + 1
    return error_answer("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
  end

  local ctx = { webhook = webhook }
  if webhook then
    if user ~= config.webhook_user or code ~= config.webhook_code then
      return error_answer("NO_AUTH_FOUND", "Wrong authorization data", 401)
    end
  else
    local token = params.auth
    params.auth = nil
    if type(token) ~= "string" or token == "" then return error_answer("NO_AUTH_FOUND", "Wrong authorization data", 401) end
    local t = state.access[token]
    -- protocol.md: 401 NO_AUTH_FOUND for a wrong token or webhook code
    if not t then return error_answer("NO_AUTH_FOUND", "Wrong authorization data", 401) end
    if state.expire_after then
      state.expire_after = state.expire_after - 1
      if state.expire_after < 0 then
        state.expire_after = nil
        for _, x in pairs(state.access) do x.expired = true end
      end
    end
    if t.expired then
      stats.expired_answers = stats.expired_answers + 1
      return error_answer("expired_token", "The access token provided has expired.", 401)
    end
  end

  local op = state.operating[method]
  if op and op.value >= config.operating_limit and op.reset_at > os.time() then
    stats.sent_429 = stats.sent_429 + 1
    return json_answer(429, { error = "OPERATION_TIME_LIMIT", error_description = "Method is blocked due to operation time limit.",
      time = time_block(method, started) })
  end

  local fault = take_fault(method)
  local after
  if fault then
    local kind = fault.kind
    if kind == "status500" then return error_answer("INTERNAL_SERVER_ERROR", "Internal server error", 500)
    elseif kind == "drop" then stats.dropped = stats.dropped + 1 return { drop = true }
    elseif kind == "reset" then stats.dropped = stats.dropped + 1 return { drop = true, reset = true }
    elseif kind == "query_limit" then stats.sent_503 = stats.sent_503 + 1 return error_answer("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
    elseif kind == "expired" then stats.expired_answers = stats.expired_answers + 1 return error_answer("expired_token", "The access token provided has expired.", 401)
    elseif kind == "time_limit" then
      stats.sent_429 = stats.sent_429 + 1
      local t = time_block(method, started)
      t.operating = config.operating_limit
      t.operating_reset_at = os.time() + (fault.reset_in or 1)
      return json_answer(429, { error = "OPERATION_TIME_LIMIT", error_description = "Method is blocked due to operation time limit.", time = t })
    elseif kind == "delay_before" then after = { sleep_before = fault.delay or 1 }
    else after = fault end
  end

  if after and after.sleep_before then coroutine.yield("sleep", now() + after.sleep_before) end

  local ok, result, extra
  if method == "batch" then
    stats.batches = stats.batches + 1
    ok, result = pcall(run_batch, params, ctx)
  else
    ok, result, extra = pcall(dispatch, method, params, ctx)
  end
  local answer
  if ok then
    count(stats.executed, method)
    local body_t = { result = result, time = time_block(method, started) }
    if extra then body_t.total, body_t.next = extra.total, extra.next end
    answer = json_answer(200, body_t)
  else
    if getmetatable(result) ~= ApiError then
      io.stderr:write("portal: ", tostring(result), "\n")
      result = api_error("INTERNAL_SERVER_ERROR", tostring(result), 500)
    end
    answer = error_answer(result.code, result.description, result.status)
  end
  if after and after.kind == "drop_after" then stats.dropped = stats.dropped + 1 return { drop = true } end
  if after and after.kind == "delay" then answer.sleep = after.delay or 1 end
  if method == "test.chunked" then answer.chunked = true end
  return answer
end

local function route(req)
  stats.http_requests = stats.http_requests + 1
  local p = req.path
  if p == "/_gzip" then
    -- a gzip-encoded answer, made with the gzip program (no zlib in plain Lua)
    local tmp = os.tmpname()
    local f = io.open(tmp, "wb")
    f:write(J.encode({ result = "compressed", padding = ("abc"):rep(1000) }))
    f:close()
    local gz = io.popen("gzip -c " .. tmp)
    local body = gz:read("*a")
    gz:close()
    os.remove(tmp)
    return { status = 200, body = body, headers = { ["Content-Encoding"] = "gzip" } }
  end
  if p == "/_echo" then
    return json_answer(200, { method = req.method, headers = req.headers, body = req.body, query = req.query, target = req.target })
  end
  if p:match("^/_control") then return handle_control(req) end
  if p:match("^/oauth/token/?$") then return handle_oauth(req) end
  local rest = p:match("^/rest/(.+)$")
  if rest then return handle_rest(req, rest) end
  return error_answer("NOT_FOUND", "no such path", 404)
end

-------------------------------------------------------------------------------
-- the event loop
local waiting_read, waiting_write, sleepers = {}, {}, {}
local running = true

local tls_params -- set from the command line

local function conn_loop(sock)
  local buf = ""
  if tls_params then
    local ssl = require "ssl"
    sock = assert(ssl.wrap(sock, tls_params))
    sock:settimeout(0)
    while true do
      local ok, err = sock:dohandshake()
      if ok then break end
      if err == "wantread" or err == "timeout" then coroutine.yield("read", sock)
      elseif err == "wantwrite" then coroutine.yield("write", sock)
      else sock:close() return end
    end
  end
  local function more()
    while true do
      local data, err, partial = sock:receive(65536)
      data = data or partial
      if data and #data > 0 then buf = buf .. data return true end
      if err == "closed" or (err ~= "timeout" and err ~= "wantread" and err ~= "wantwrite") then return false end
      coroutine.yield(err == "wantwrite" and "write" or "read", sock)
    end
  end
  local function send(s)
    local i = 1
    while i <= #s do
      local last, err, partial = sock:send(s, i)
      if last then i = last + 1
      else
        if err ~= "timeout" and err ~= "wantread" and err ~= "wantwrite" then return false end
        i = (partial or i - 1) + 1
        coroutine.yield(err == "wantread" and "read" or "write", sock)
      end
    end
    return true
  end
  while true do
    local head_end
    while true do
      head_end = buf:find("\r\n\r\n", 1, true)
      if head_end then break end
      if not more() then sock:close() return end
    end
    local head = buf:sub(1, head_end - 1)
    buf = buf:sub(head_end + 4)
    local method, target = head:match("^(%u+) (%S+) HTTP/1%.%d")
    if not method then sock:close() return end
    local headers = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do headers[name:lower()] = value end
    local len = tonumber(headers["content-length"] or "0") or 0
    while #buf < len do if not more() then sock:close() return end end
    local body = buf:sub(1, len)
    buf = buf:sub(len + 1)
    -- a proxy request carries an absolute URI
    local path, query = target:gsub("^https?://[^/]+", ""):match("^([^?]*)%??(.*)$")
    local ok, answer = pcall(route, { method = method, path = path, query = query, headers = headers, body = body, target = target })
    if not ok then
      io.stderr:write("portal: ", tostring(answer), "\n")
      answer = error_answer("INTERNAL_SERVER_ERROR", "portal bug", 500)
    end
    if answer.drop then
      -- linger 0 makes close send a TCP RST instead of a FIN
      if answer.reset and sock.setoption then pcall(sock.setoption, sock, "linger", { on = true, timeout = 0 }) end
      sock:close()
      return
    end
    if answer.sleep then coroutine.yield("sleep", now() + answer.sleep) end
    stats.statuses[tostring(answer.status)] = (stats.statuses[tostring(answer.status)] or 0) + 1
    local close = (headers["connection"] or ""):lower() == "close"
    local extra = ""
    for k, v in pairs(answer.headers or {}) do extra = extra .. k .. ": " .. v .. "\r\n" end
    local out
    if answer.chunked then
      local parts = {}
      for i = 1, #answer.body, 7 do
        local piece = answer.body:sub(i, i + 6)
        parts[#parts + 1] = ("%x\r\n%s\r\n"):format(#piece, piece)
      end
      out = ("HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n%s%s\r\n%s0\r\n\r\n")
        :format(answer.status, STATUS_TEXT[answer.status] or "Status", close and "Connection: close\r\n" or "", extra, table.concat(parts))
    else
      out = ("HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n%s%s\r\n%s")
        :format(answer.status, STATUS_TEXT[answer.status] or "Status", #answer.body,
          close and "Connection: close\r\n" or "", extra, answer.body)
    end
    if not send(out) then sock:close() return end
    if answer.stop then running = false end
    if close then sock:close() return end
  end
end

local function resume(co, sock)
  local ok, what, arg = coroutine.resume(co, sock)
  if not ok then io.stderr:write("portal: connection error: ", tostring(what), "\n") return end
  if coroutine.status(co) == "dead" then return end
  if what == "read" then waiting_read[arg] = co
  elseif what == "write" then waiting_write[arg] = co
  elseif what == "sleep" then sleepers[co] = arg end
end

local function main()
  reset()
  issue_tokens("initial-access", "initial-refresh")
  local server = assert(socket.bind("127.0.0.1", 0))
  server:settimeout(0)
  local _, p = server:getsockname()
  port = tonumber(p)
  local port_file = arg[1]
  if arg[2] and arg[3] then
    tls_params = { mode = "server", protocol = "any", certificate = arg[2], key = arg[3],
      options = { "all", "no_sslv2", "no_sslv3" } }
  end
  if port_file then
    local f = assert(io.open(port_file .. ".tmp", "w"))
    f:write(port, "\n")
    f:close()
    os.rename(port_file .. ".tmp", port_file)
  else
    print(port)
    io.stdout:flush()
  end
  -- A portal whose spec died without stopping it goes away by itself.
  local idle_limit, last_activity = tonumber(os.getenv("PORTAL_IDLE_EXIT") or "120"), now()
  while running do
    if now() - last_activity > idle_limit and next(sleepers) == nil then break end
    local rset, wset = { server }, {}
    for s in pairs(waiting_read) do rset[#rset + 1] = s end
    for s in pairs(waiting_write) do wset[#wset + 1] = s end
    local timeout = 1
    local t = now()
    for _, wake in pairs(sleepers) do timeout = math.max(0, math.min(timeout, wake - t)) end
    local readable, writable = socket.select(rset, wset, timeout)
    if #readable > 0 or #writable > 0 then last_activity = now() end
    for _, s in ipairs(readable) do
      if s == server then
        local c = server:accept()
        while c do
          c:settimeout(0)
          stats.connections = stats.connections + 1
          c:setoption("tcp-nodelay", true)
          resume(coroutine.create(conn_loop), c)
          c = server:accept()
        end
      elseif waiting_read[s] then
        local co = waiting_read[s]
        waiting_read[s] = nil
        resume(co)
      end
    end
    for _, s in ipairs(writable) do
      local co = waiting_write[s]
      if co then waiting_write[s] = nil resume(co) end
    end
    t = now()
    local due = {}
    for co, wake in pairs(sleepers) do if wake <= t then due[#due + 1] = co end end
    for _, co in ipairs(due) do sleepers[co] = nil resume(co) end
  end
  server:close()
end

main()
