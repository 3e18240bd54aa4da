-- A local Bitrix24 portal for the tests: a separate process speaking real
-- HTTP/1.1 on loopback (luasocket, one coroutine per keep-alive connection
-- under a select loop). It implements webhook and OAuth auth, the OAuth
-- renewal endpoint (single-use refresh tokens), the biconnector.* methods with
-- in-memory state and their validation errors, a generic test.items.* list,
-- batch with $result references, the leaky bucket, and faults injected via
-- POST /_control. GET /_control/stats returns what it received.
--
-- The biconnector.* methods follow the current contract (b24restdocs
-- api-reference/biconnector/, 2026): errors inside `result` with HTTP 200,
-- except an `order` direction other than ASC/DESC (HTTP 400 ERROR_ARGUMENT at
-- the top); connector -> source -> table (biconnector.table.*; the deprecated
-- biconnector.dataset.* works on the same tables, but dataset.delete answers
-- HTTP 500 as on a portal with BI Builder); `*.get` -> result.item,
-- `*.list` -> a bare array of 50 a page by `page`; source.add/update call the
-- connector's urlCheck; webhooks are refused except by the `*.fields` methods.
-- Older portals stay reachable by config: errors_at_top = true (errors at the
-- top level, ACCESS_DENIED with 403), without_tables = true (no table.*:
-- ERROR_METHOD_NOT_FOUND, and a dataset.delete that works), url_check = false.
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
  url_check = true,                     -- source.add/update call the connector's urlCheck, as Bitrix24 does
  errors_at_top = false,                -- true: biconnector.* errors at the top level (portals before 2026)
  without_tables = false,               -- true: a portal without biconnector.table.* (only dataset.*)
  operating_limit = 480,
  page_size = 50,
  oauth_hold = nil,                     -- seconds: hold the next renewal unanswered, then drop it unprocessed
  member_id = "localmember",            -- this portal's id (installation, renewal and code answers)
  redirect_uri = nil,                   -- the application's handler path: /oauth/authorize/ sends the browser there
  ca_file = nil,                        -- a CA the portal trusts when it calls an https:// application or connector
  uninstall_revokes = true,             -- uninstalling revokes the application's tokens, as Bitrix24 does
  grown_keys = false,                   -- true: answers' objects carry keys the contract does not name (connector
                                        -- settings an id, as source.get's do): "objects may grow keys" (protocol.md 3.1)
}

local config, state, stats, faults, port
local install_app, uninstall_app, fetch_endpoint -- the application's side (below)

local function reset(overrides)
  config = {}
  for k, v in pairs(DEFAULTS) do config[k] = v end
  for k, v in pairs(overrides or {}) do config[k] = v end
  state = {
    connectors = {}, sources = {}, datasets = {}, items = {},
    next_id = { connector = 0, source = 0, dataset = 0, field = 0, item = 0 },
    access = {}, refresh = {}, token_seq = 0,
    app = { handlers = {} },            -- the installed application: application_token, event handlers
    codes = {},                         -- OAuth authorization codes: code -> expiry time
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
local function api_error(code, description, status, top)
  return setmetatable({ code = code, description = description, status = status or 200, top = top }, ApiError)
end
-- A biconnector module error: inside `result` (unless errors_at_top).
local function fail(code, description, status) error(api_error(code, description, status), 0) end
-- An error of the REST layer below the module: always at the top level.
local function fail_top(code, description, status) error(api_error(code, description, status, true), 0) end

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
  if type(v) ~= "table" or v == null then return v end
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
  local logic = tostring(filter.LOGIC or filter.logic or "AND"):upper()
  local any = false
  local results = {}
  for key, want in pairs(filter) do
    if key ~= "LOGIC" and key ~= "logic" then
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
    for k, v in pairs(order) do
      field, dir = k, type(v) == "string" and v:upper() or ""
      -- the ORM refuses it below the module: HTTP 400 at the top (biconnector/index.md, "Errors")
      if dir ~= "ASC" and dir ~= "DESC" then
        fail_top("ERROR_ARGUMENT", "Invalid sort direction for field " .. tostring(k) .. ": " .. tostring(v), 400)
      end
    end
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
-- biconnector validation, as protocol.md sections 3.1 and 3.2 document it
local CONNECTOR_FIELDS = { "id", "title", "logo", "description", "urlCheck", "urlTableList",
  "urlTableDescription", "urlData", "settings", "sort", "supportMapping", "sourceCode", "dateCreate" }
local CONNECTOR_REQUIRED = { "title", "logo", "urlCheck", "urlTableList", "urlTableDescription", "urlData", "settings" }
local SOURCE_FIELDS = { "id", "title", "description", "active", "connectorId", "settings", "dateCreate" }
-- A table's fields as table.fields lists them: name, type (as that method spells
-- it), required, read-only, immutable, multiple (table/biconnector-table-fields.md).
local TABLE_SCHEMA = {
  { "id", "integer", true, true, false, false }, { "sourceId", "integer", true, false, true, false },
  { "name", "string", true, false, true, false }, { "type", "string", true, true, false, false },
  { "description", "string", false, false, false, false }, { "externalName", "string", true, false, true, false },
  { "externalCode", "string", true, false, true, false }, { "externalId", "integer", true, true, false, false },
  { "dateCreate", "datetime", true, true, false, false }, { "dateUpdate", "datetime", true, true, false, false },
  { "createdById", "integer", true, true, false, false }, { "updatedById", "integer", true, true, false, false },
  { "fields", "array", true, false, false, true },
}
local TABLE_WRITABLE = { sourceId = true, name = true, description = true, externalName = true, externalCode = true, fields = true }
local TABLE_READ_ONLY = { id = true, type = true, externalId = true, dateCreate = true, dateUpdate = true,
  createdById = true, updatedById = true, csvDelimiter = true, csvEncoding = true, csvHasHeaders = true }
local TABLE_IMMUTABLE = { "sourceId", "name", "externalName", "externalCode" }
local CSV_FIELDS = { csvDelimiter = true, csvEncoding = true, csvHasHeaders = true }
-- case-sensitive: "INT" is VALIDATION_FIELD_INVALID_TYPE (table/biconnector-table-add.md)
local FIELD_TYPES = { int = true, string = true, double = true, date = true, datetime = true, money = true, timezone = true }

local function now_ymd() return os.date("!%Y-%m-%d %H:%M:%S") end

local function schema_answer(list)
  local fields = array({})
  for i, f in ipairs(list) do
    fields[i] = J.object({ title = f[1], type = f[2], isRequired = f[3], isReadOnly = f[4], isImmutable = f[5],
      isMultiple = f[6] }, { "title", "type", "isRequired", "isReadOnly", "isImmutable", "isMultiple" })
  end
  return { fields = fields }
end

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
  if not is_table(params.fields) then fail("VALIDATION_FIELDS_NOT_PROVIDED", "Fields not provided.") end
  return params.fields
end

-- The length of UTF-8 text in characters, as Bitrix24 counts its limits.
local function chars(v) local _, n = tostring(v):gsub("[^\128-\191]", "") return n end

local function check_settings(settings)
  local list = list_of(settings)
  if not list then fail("VALIDATION_SETTINGS_INVALID_TYPE", "settings must be an array") end
  for i, s in ipairs(list) do
    if not is_table(s) then fail("VALIDATION_SETTINGS_INVALID_TYPE", "settings[" .. i .. "] must be an object") end
    for _, k in ipairs({ "code", "name", "type" }) do
      if type(s[k]) ~= "string" or s[k] == "" then fail("VALIDATION_SETTINGS_MISSING_REQUIRED_FIELDS", "settings[" .. i .. "]." .. k .. " is required") end
    end
    if s.type ~= "STRING" and s.type ~= "INT" then fail("VALIDATION_SETTINGS_INVALID_TYPE", "settings[" .. i .. "].type must be STRING or INT") end
    -- characters, not bytes (a Cyrillic name of 300 characters is 600 bytes)
    if chars(s.code) >= 512 then fail("VALIDATION_SETTINGS_CODE_TOO_LONG", 'Parameter "code" must be less than 512 characters.') end
    if chars(s.name) >= 512 then fail("VALIDATION_SETTINGS_NAME_TOO_LONG", 'Parameter "name" must be less than 512 characters.') end
  end
  return array(list)
end

local function get_by_id(store, params, code, what)
  if params.id == nil then fail("VALIDATION_ID_NOT_PROVIDED", "ID is missing.") end
  local id = tonum(params.id)
  if not id or id < 1 or id ~= math.floor(id) then fail("VALIDATION_INVALID_ID_FORMAT", "ID has to be a positive integer.") end
  local obj = store[id]
  if not obj then fail(code, what .. " was not found.") end
  return obj, id
end

-- The columns of an add (RestDatasetManager::checkFields in Bitrix24's module):
-- repeated codes and names first, then each column's keys, name and type.
local function check_columns(list, dup_name_code)
  local codes, names, dup_codes, dup_names = {}, {}, {}, {}
  for _, f in ipairs(list) do
    if is_table(f) then
      local c, n = tostring(f.externalCode), tostring(f.name)
      if codes[c] and not dup_codes[c] then dup_codes[#dup_codes + 1] = c dup_codes[c] = true end
      if names[n] and not dup_names[n] then dup_names[#dup_names + 1] = n dup_names[n] = true end
      codes[c], names[n] = true, true
    end
  end
  if dup_name_code == "DUPLICATE_FIELDS" and #dup_names > 0 then
    fail("DUPLICATE_FIELDS", "Duplicate column names: " .. table.concat(dup_names, ", ") .. ".")
  end
  if #dup_codes > 0 then
    fail("VALIDATION_DUPLICATE_FIELD_CODE", 'Duplicate values found in the "code" parameter: ' .. table.concat(dup_codes, ", "))
  end
  if #dup_names > 0 then
    fail("VALIDATION_DUPLICATE_FIELD_NAME", 'Duplicate values found in the "name" parameter: ' .. table.concat(dup_names, ", "))
  end
  for _, f in ipairs(list) do
    if not is_table(f) or f.name == nil or f.type == nil or f.externalCode == nil then
      fail("VALIDATION_FIELD_MISSING_REQUIRED_PARAMETERS", 'Field must include the required parameters: "name", "externalCode" and "type".')
    end
    if type(f.name) ~= "string" or not f.name:match("^[A-Z][A-Z0-9_]*$") then
      fail("VALIDATION_FIELD_NAME_INVALID_FORMAT", 'Field "name" has to start with an uppercase Latin character. Possible entry includes uppercase Latin characters (A-Z), numbers (0-9) and underscores.')
    end
    if #f.name > 32 then fail("VALIDATION_FIELD_NAME_TOO_LONG", 'Field "name" must not exceed 32 characters.') end
    if not FIELD_TYPES[f.type] then fail("VALIDATION_FIELD_INVALID_TYPE", "Invalid field type.") end
  end
end

local function new_field(f, table_id)
  state.next_id.field = state.next_id.field + 1
  return J.object({ id = state.next_id.field, datasetId = table_id, type = f.type, name = f.name,
    externalCode = tostring(f.externalCode), visible = true, description = "" },
    { "id", "datasetId", "type", "name", "externalCode", "visible", "description" })
end

-- A *.delete method: removes the object params.id of state[o.store] (unknown:
-- o.not_found, o.name) unless an object of state[o.children] names it in its
-- field o.parent_key (then the error o.restricted, o.message).
local function delete_method(o)
  return function(params)
    local _, id = get_by_id(state[o.store], params, o.not_found, o.name)
    for _, child in pairs(state[o.children]) do
      if child[o.parent_key] == id then fail(o.restricted, o.message) end
    end
    state[o.store][id] = nil
    return true
  end
end

local function list_method(get_store, view)
  return function(params)
    local store = get_store()
    local page = tonum(params.page) or 1 -- start is ignored; a bad page is the first one
    if page < 1 or page ~= math.floor(page) then page = 1 end
    if params.select ~= nil and not is_table(params.select) then fail("VALIDATION_SELECT_TYPE", "select must be an array") end
    if params.filter ~= nil and not is_table(params.filter) then fail("VALIDATION_FILTER_TYPE", "filter must be an object") end
    local all = sorted_items(store, params.filter, params.order)
    local out = array({})
    for i = (page - 1) * config.page_size + 1, math.min(#all, page * config.page_size) do
      local item = view and view(all[i]) or all[i]
      out[#out + 1] = select_fields(item, params.select)
    end
    return out -- the biconnector lists answer without total/next
  end
end

local methods = {}

methods["biconnector.connector.fields"] = function()
  local known, list = known_connector_fields(), {}
  local required = {}
  for _, k in ipairs(CONNECTOR_REQUIRED) do required[k] = true end
  for _, k in ipairs(CONNECTOR_FIELDS) do
    if known[k] then
      list[#list + 1] = { k, k == "settings" and "array" or (k == "id" or k == "sort") and "integer" or "string",
        required[k] or k == "id", k == "id" or k == "dateCreate", false, k == "settings" }
    end
  end
  return schema_answer(list)
end

methods["biconnector.connector.add"] = function(params)
  local f = need_fields(params)
  check_unknown(f, known_connector_fields())
  if f.id ~= nil or f.dateCreate ~= nil then fail("VALIDATION_READ_ONLY_FIELD", "id is read-only") end
  for _, k in ipairs(CONNECTOR_REQUIRED) do
    if f[k] == nil or f[k] == "" then fail("VALIDATION_REQUIRED_FIELD_MISSING", 'Field "' .. k .. '" is required.') end
  end
  local settings = check_settings(f.settings)
  if f.sourceCode ~= nil and chars(f.sourceCode) > 64 then fail("VALIDATION_INVALID_FIELD_TYPE", "sourceCode is too long") end
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

-- A connector as get and list answer it (with grown_keys, each setting carries an id too).
local function connector_view(c)
  local out = copy(c)
  if config.grown_keys and is_table(out.settings) then
    for i, st in ipairs(out.settings) do if is_table(st) then st.id = c.id * 100 + i end end
  end
  return out
end
methods["biconnector.connector.get"] = function(params)
  return { item = connector_view((get_by_id(state.connectors, params, "CONNECTOR_NOT_FOUND", "Connector"))) }
end
methods["biconnector.connector.list"] = list_method(function() return state.connectors end, connector_view)

methods["biconnector.connector.delete"] = delete_method { store = "connectors", not_found = "CONNECTOR_NOT_FOUND",
  name = "Connector", children = "sources", parent_key = "connectorId",
  restricted = "CONNECTOR_DELETE_RESTRICTED", message = "Connector has sources" }

methods["biconnector.source.fields"] = function()
  local list = {}
  for _, k in ipairs(SOURCE_FIELDS) do
    list[#list + 1] = { k, (k == "id" or k == "connectorId") and "integer" or k == "active" and "boolean" or "string",
      k == "title" or k == "connectorId" or k == "settings" or k == "id", k == "id" or k == "dateCreate", k == "connectorId", false }
  end
  return schema_answer(list)
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
-- A form POST from the portal to an application or a connector, as Bitrix24's
-- backend sends it (https:// trusting config.ca_file). -> status (or nil, err), body
local function post_form(url, body)
  local ltn12 = require "ltn12"
  local answer = {}
  local reqt = {
    url = url, method = "POST", source = ltn12.source.string(body), sink = ltn12.sink.table(answer),
    headers = { ["content-type"] = "application/x-www-form-urlencoded", ["content-length"] = tostring(#body) },
  }
  local ok, status
  if url:match("^https:") then
    local https = require "ssl.https"
    https.TIMEOUT = 10
    reqt.verify, reqt.cafile, reqt.protocol = config.ca_file and "peer" or "none", config.ca_file, "any"
    reqt.options = { "all", "no_sslv2", "no_sslv3" }
    ok, status = https.request(reqt)
  else
    local http = require "socket.http"
    http.TIMEOUT = 10
    ok, status = http.request(reqt)
  end
  if not ok then return nil, tostring(status) end
  return status, table.concat(answer)
end

-- connection[CODE]=VALUE for a source's settings (sorted, as a form).
local function connection_form(settings)
  local parts = {}
  for k, v in pairs(settings) do parts[#parts + 1] = "connection[" .. form_escape(k) .. "]=" .. form_escape(v) end
  table.sort(parts)
  return table.concat(parts, "&")
end

local function url_check(connector, settings, code, text)
  if not config.url_check then return end
  local body = connection_form(settings)
  local status, answer = post_form(connector.urlCheck, body)
  stats.url_checks = stats.url_checks or array {}
  stats.url_checks[#stats.url_checks + 1] = { url = connector.urlCheck, body = body, status = status or tostring(answer) }
  if status ~= 200 or answer == "" then fail(code, text) end
end

methods["biconnector.source.add"] = function(params)
  local f = need_fields(params)
  check_unknown(f, source_known)
  for _, k in ipairs({ "title", "connectorId", "settings" }) do
    if f[k] == nil or f[k] == "" then fail("VALIDATION_REQUIRED_FIELD_MISSING", 'Field "' .. k .. '" is required.') end
  end
  local cid = tonum(f.connectorId)
  if not cid or not state.connectors[cid] then fail("CONNECTOR_NOT_FOUND", "Connector was not found.") end
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
  if f.connectorId ~= nil then fail("VALIDATION_IMMUTABLE_FIELD", 'Field "connectorId" is immutable.') end
  if is_table(f.settings) then
    url_check(state.connectors[s.connectorId], f.settings, "SOURCE_UPDATE_CONNECTION_ERROR", "Cannot update connection.")
  end
  for k, v in pairs(f) do s[k] = (k == "active") and truthy(v) or copy(v) end
  return true
end
-- result.item.connection holds the source's own fields, and settings is a list
-- of {code, name, type, value, id}: the connector's settings with this
-- source's values (source/biconnector-source-get.md), not the object keyed by
-- code that source.add takes
methods["biconnector.source.get"] = function(params)
  local s = get_by_id(state.sources, params, "SOURCE_NOT_FOUND", "Source")
  local settings, defined = array({}), state.connectors[s.connectorId] and state.connectors[s.connectorId].settings or {}
  local seen = {}
  for i, d in ipairs(defined) do
    if s.settings[d.code] ~= nil then
      seen[d.code] = true
      settings[#settings + 1] = { code = d.code, name = d.name, type = d.type, value = s.settings[d.code], id = s.id * 100 + i }
    end
  end
  for k, v in pairs(s.settings) do
    if not seen[k] then settings[#settings + 1] = { code = k, name = k, type = "STRING", value = v, id = s.id * 100 + 99 } end
  end
  return { item = { connection = { id = s.id, type = "rest", code = "rest", title = s.title, description = s.description,
    active = s.active, dateCreate = s.dateCreate }, connectorId = s.connectorId, settings = settings } }
end
methods["biconnector.source.list"] = list_method(function() return state.sources end)
methods["biconnector.source.delete"] = delete_method { store = "sources", not_found = "SOURCE_NOT_FOUND",
  name = "Source", children = "datasets", parent_key = "sourceId",
  restricted = "BX_ERROR", message = "The source has tables: delete them first." }

---- tables: biconnector.table.* and the deprecated biconnector.dataset.* on one store

-- table.get answers the columns but no sourceId; table.list the sourceId but no columns.
local function table_for_get(t)
  local out = copy(t)
  out.sourceId = nil
  return out
end
local function table_for_list(t)
  local out = copy(t)
  out.fields = nil
  return out
end

-- family: "table" or "dataset" (dataset.add also makes a BI Builder dataset: externalId).
local function table_add(family)
  return function(params)
    local f = need_fields(params)
    for k in pairs(f) do
      if TABLE_READ_ONLY[k] then fail("VALIDATION_READ_ONLY_FIELD", 'Field "' .. k .. '" is read only.') end
      if not TABLE_WRITABLE[k] then fail("VALIDATION_UNKNOWN_PARAMETERS", "Unknown parameters: " .. tostring(k)) end
    end
    for _, k in ipairs({ "sourceId", "name", "externalName", "externalCode", "fields" }) do
      if f[k] == nil or f[k] == "" then fail("VALIDATION_REQUIRED_FIELD_MISSING", 'Field "' .. k .. '" is required.') end
    end
    if not tonum(f.sourceId) then fail("VALIDATION_INVALID_FIELD_TYPE", 'Field "sourceId" must be of type integer.') end
    for _, k in ipairs({ "name", "externalName", "externalCode", "description" }) do
      if f[k] ~= nil and type(f[k]) ~= "string" and type(f[k]) ~= "number" then
        fail("VALIDATION_INVALID_FIELD_TYPE", 'Field "' .. k .. '" must be of type string.')
      end
    end
    local name = tostring(f.name)
    if not name:match("^[a-z][a-z0-9_]*$") then
      fail("VALIDATION_DATASET_NAME_INVALID", "Dataset name has to start with a lowercase Latin character. Possible entry includes lowercase Latin characters (a-z), numbers (0-9) and underscores.")
    end
    local sid = tonum(f.sourceId)
    if not state.sources[sid] then fail("SOURCE_NOT_FOUND", "Source was not found.") end
    local list = list_of(f.fields)
    if not list then fail("VALIDATION_INVALID_FIELD_TYPE", 'Field "fields" must be of type array.') end
    if #list == 0 then fail("FIELDS_EMPTY", "$fields is empty") end
    check_columns(list, family == "table" and "DUPLICATE_FIELDS" or "VALIDATION_DUPLICATE_FIELD_NAME")
    if #name > 230 then fail("VALIDATION_DATASET_NAME_TOO_LONG", "Dataset name must not exceed 230 characters.") end
    for _, d in pairs(state.datasets) do
      if d.name == name then
        -- names are unique across the whole portal, not per source
        if family == "table" then fail("NAME_EXISTS", 'A table named "' .. name .. '" already exists.') end
        fail("DATASET_ALREADY_EXIST", "Table with this name already exists.")
      end
    end
    state.next_id.dataset = state.next_id.dataset + 1
    local id = state.next_id.dataset
    local fields = array({})
    for i, x in ipairs(list) do fields[i] = new_field(x, id) end
    state.datasets[id] = { id = id, type = "rest", name = name, description = f.description and tostring(f.description) or "",
      externalCode = tostring(f.externalCode), externalName = tostring(f.externalName), dateCreate = now_ymd(),
      dateUpdate = null, createdById = 1, updatedById = 0, externalId = family == "dataset" and 1000 + id or 0,
      csvDelimiter = "", csvEncoding = "", csvHasHeaders = false, sourceId = sid, fields = fields }
    return { id = id }
  end
end

-- update changes the description only (table/biconnector-table-update.md)
local function table_update(params)
  local d = get_by_id(state.datasets, params, "DATASET_NOT_FOUND", "Dataset")
  local f = need_fields(params)
  if f.fields ~= nil then
    fail("INVALID_METHOD", 'Use the method "biconnector.dataset.fields.update" to update the dataset fields."')
  end
  for k in pairs(f) do
    if TABLE_READ_ONLY[k] then fail("VALIDATION_READ_ONLY_FIELD", 'Field "' .. k .. '" is read only.') end
    if not TABLE_WRITABLE[k] then fail("VALIDATION_UNKNOWN_PARAMETERS", "Unknown parameters: " .. tostring(k)) end
  end
  for _, k in ipairs(TABLE_IMMUTABLE) do
    if f[k] ~= nil then fail("VALIDATION_IMMUTABLE_FIELD", 'Field "' .. k .. '" is immutable.') end
  end
  if f.description ~= nil then d.description = tostring(f.description) end
  d.dateUpdate, d.updatedById = now_ymd(), 1
  return true
end

-- update, add, delete in one call (table/biconnector-table-fields-update.md):
-- ids in update that are not this table's are skipped; delete goes by id alone.
local function table_fields_update(params)
  local d, id = get_by_id(state.datasets, params, "DATASET_NOT_FOUND", "Dataset")
  local add, upd, del = list_of(params.add) or {}, list_of(params.update) or {}, list_of(params.delete) or {}
  for _, u in ipairs(upd) do
    if not is_table(u) or u.id == nil or u.visible == nil then
      fail("VALIDATION_FIELD_UPDATE_MISSING_REQUIRED_FIELDS", 'Field to be updated must include the required parameters: "id" and "visible".')
    end
  end
  for _, x in ipairs(add) do
    if not is_table(x) or x.name == nil or x.type == nil or x.externalCode == nil then
      fail("VALIDATION_FIELD_ADD_MISSING_REQUIRED_FIELDS", 'Field to be added must include the required parameters: "name", "externalCode" and "type".')
    end
  end
  for _, x in ipairs(del) do
    local n = tonum(x)
    if not n or n < 1 or n ~= math.floor(n) then fail("VALIDATION_FIELD_DELETE_INVALID_ID", "ID to be deleted must be a positive integer.") end
  end
  if #add > 0 then
    check_columns(add, "VALIDATION_DUPLICATE_FIELD_NAME")
    local have_code, have_name = {}, {}
    for _, f in ipairs(d.fields) do have_code[f.externalCode] = true have_name[f.name] = true end
    for _, x in ipairs(add) do
      if have_code[tostring(x.externalCode)] then
        fail("VALIDATION_DUPLICATE_EXIST_CODE", 'The following "externalCode" values already exist in the current fields: ' .. tostring(x.externalCode))
      end
    end
    for _, x in ipairs(add) do
      if have_name[x.name] then
        fail("VALIDATION_DUPLICATE_EXIST_NAME", 'The following "name" values already exist in the current fields: ' .. x.name)
      end
    end
  end
  local byid = {}
  for _, f in ipairs(d.fields) do byid[f.id] = f end
  for _, u in ipairs(upd) do
    local f = byid[tonum(u.id)]
    if f then f.visible = truthy(u.visible) end
  end
  for _, x in ipairs(add) do d.fields[#d.fields + 1] = new_field(x, id) end
  local gone = {}
  for _, x in ipairs(del) do gone[tonum(x)] = true end
  for _, t in pairs(state.datasets) do
    local kept = array({})
    for _, f in ipairs(t.fields) do if not gone[f.id] then kept[#kept + 1] = f end end
    t.fields = kept
  end
  d.dateUpdate, d.updatedById = now_ymd(), 1
  return true
end

local function table_get(params)
  return { item = table_for_get((get_by_id(state.datasets, params, "DATASET_NOT_FOUND", "Dataset"))) }
end

local function table_list_method()
  local list = list_method(function() return state.datasets end, table_for_list)
  return function(params)
    for _, k in ipairs(list_of(params.select) or {}) do
      if CSV_FIELDS[k] then fail("VALIDATION_FIELD_NOT_ALLOWED_IN_SELECT", 'Field "' .. tostring(k) .. '" is not allowed in select.') end
    end
    return list(params)
  end
end

local function table_delete(params)
  local _, id = get_by_id(state.datasets, params, "DATASET_NOT_FOUND", "Dataset")
  state.datasets[id] = nil
  return true
end

local function table_fields() return schema_answer(TABLE_SCHEMA) end

for _, family in ipairs({ "table", "dataset" }) do
  local prefix = "biconnector." .. family .. "."
  methods[prefix .. "fields"] = table_fields
  methods[prefix .. "add"] = table_add(family)
  methods[prefix .. "update"] = table_update
  methods[prefix .. "get"] = table_get
  methods[prefix .. "list"] = table_list_method()
  methods[prefix .. "delete"] = table_delete
  methods[prefix .. "fields.update"] = table_fields_update
end
-- dataset.delete does not work on a portal with BI Builder: HTTP 500 (dataset/index.md)
methods["biconnector.dataset.delete"] = function(params)
  if not config.without_tables then fail_top("INTERNAL_SERVER_ERROR", "Internal server error", 500) end
  return table_delete(params)
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

-- event.bind / event.get / event.unbind (api-reference/events/): an application's only
local function app_only(ctx)
  if ctx.webhook then fail_top("WRONG_AUTH_TYPE", "Current authorization type is denied for this method", 401) end
end
methods["event.bind"] = function(params, ctx)
  app_only(ctx)
  local event, handler = tostring(params.event or ""):upper(), params.handler
  if event == "" or type(handler) ~= "string" or handler == "" then fail_top("ERROR_EVENT_NOT_FOUND", "Event not found", 400) end
  for _, h in ipairs(state.app.handlers) do
    if h.event == event and h.handler == handler then fail_top("", "Handler already binded", 400) end
  end
  state.app.handlers[#state.app.handlers + 1] = { event = event, handler = handler, auth_type = 0, offline = 0 }
  return true
end
methods["event.get"] = function(_, ctx)
  app_only(ctx)
  return array(copy(state.app.handlers))
end
methods["event.unbind"] = function(params, ctx)
  app_only(ctx)
  local kept, removed = {}, 0
  for _, h in ipairs(state.app.handlers) do
    if h.event == tostring(params.event or ""):upper() and (params.handler == nil or params.handler == h.handler) then
      removed = removed + 1
    else kept[#kept + 1] = h end
  end
  state.app.handlers = kept
  return { count = removed }
end

-------------------------------------------------------------------------------
-- batch
-- As CRestUtil::processBatchElement: every `$result[...]` up to the next white
-- space, the whole value or inside a longer one, is replaced by the scalar it
-- names (an object, or a missing command, leaves it as written here).
local function resolve_refs(v, results)
  if type(v) == "string" then
    if not v:find("$result[", 1, true) then return v end
    return (v:gsub("%$result(%[[^%s]*)", function(path)
      local cur = results
      for seg in path:gmatch("%[([^%]]*)%]") do
        if not is_table(cur) then cur = nil break end
        local nxt = cur[seg]
        if nxt == nil and tonum(seg) then nxt = cur[tonum(seg) + 1] end
        cur = nxt
      end
      if cur ~= nil and not is_table(cur) then return tostring(cur) end
      return nil
    end))
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

-- The biconnector module's own errors go inside `result`: -> {error = {error,
-- error_description}} for err, or nil when it belongs at the top level.
local function in_result(method, err)
  if config.errors_at_top or not method:match("^biconnector%.") then return nil end
  if getmetatable(err) ~= ApiError or err.top then return nil end
  return { error = J.object({ error = err.code, error_description = err.description }, { "error", "error_description" }) }
end

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
      local inside = not ok and in_result(method, result)
      if ok or inside then
        -- an error of the module is a successful command whose result holds it
        if inside then result = inside else count(stats.executed, method) end
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
  -- as PHP's json_encode: an empty part, or one keyed 0..n-1 in order (a cmd sent
  -- as a list, nothing left out), is a JSON array; any other is an object
  local function obj(t, k)
    local list = array({})
    for i, key in ipairs(k) do
      if key ~= i - 1 then
        -- keyed by strings: {[1] = x} alone would go out as the list [x], not {"1": x}
        local o, names = {}, {}
        for j, name in ipairs(k) do names[j] = tostring(name) o[names[j]] = t[name] end
        return J.object(o, names)
      end
      list[i] = t[key]
    end
    return list
  end
  return { result = obj(res, rk), result_error = obj(errs, ek), result_total = obj(totals, tk),
    result_next = obj(nexts, nk), result_time = obj(times, mk) }
end

function dispatch(method, params, ctx)
  local fn = methods[method]
  if config.without_tables and method:match("^biconnector%.table%.") then fn = nil end
  if not fn then fail_top("ERROR_METHOD_NOT_FOUND", "Method not found!", 404) end
  -- webhooks get only the *.fields methods (biconnector/index.md)
  if method:match("^biconnector%.") and ctx.webhook and not config.biconnector_via_webhook
    and not method:match("%.fields$") then
    fail("ACCESS_DENIED", "Access denied.", config.errors_at_top and 403 or 200)
  end
  return fn(params, ctx)
end

-------------------------------------------------------------------------------
-- HTTP plumbing
local function parse_query(q) return J.form_decode(q or "") end

local STATUS_TEXT = { [200] = "OK", [302] = "Found", [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
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
  if q.grant_type ~= "refresh_token" and q.grant_type ~= "authorization_code" then
    return error_answer("invalid_request", "grant_type must be refresh_token or authorization_code", 400)
  end
  if q.client_id ~= config.client_id or q.client_secret ~= config.client_secret then
    stats.renewal_failures = stats.renewal_failures + 1
    return error_answer("invalid_client", "invalid client", 401)
  end
  if q.grant_type == "authorization_code" then
    local expiry = state.codes[q.code or ""]
    state.codes[q.code or ""] = nil -- single use
    if not expiry or expiry < now() then
      stats.code_failures = (stats.code_failures or 0) + 1
      return error_answer("invalid_grant", "the authorization code is invalid or expired", 400)
    end
    stats.codes_exchanged = (stats.codes_exchanged or 0) + 1
  else
    local r = state.refresh[q.refresh_token or ""]
    if not r or r.used then
      stats.renewal_failures = stats.renewal_failures + 1
      return error_answer("invalid_grant", "refresh token is invalid or was already used", 400)
    end
    r.used = true
    stats.renewals = stats.renewals + 1
  end
  local access, refresh = issue_tokens()
  local base = "http://127.0.0.1:" .. port .. "/rest/"
  -- as oauth.bitrix.info answers: `domain` is the OAuth server's own name
  return json_answer(200, { access_token = access, refresh_token = refresh, expires_in = 3600,
    expires = math.floor(os.time() + 3600), client_endpoint = base, server_endpoint = "http://127.0.0.1:" .. port .. "/oauth/rest/",
    member_id = config.member_id, scope = "biconnector,user", user_id = 1, domain = "oauth.bitrix.info", status = "L" })
end

-- GET /oauth/authorize/?client_id=...&state=...: the user is logged in; the
-- browser goes to the application's handler path with a code (30 seconds).
local function handle_authorize(req)
  local q = parse_query(req.query)
  if q.client_id ~= config.client_id then return error_answer("invalid_client", "no such application here", 400) end
  if not config.redirect_uri then return error_answer("invalid_request", "the application has no handler path", 400) end
  local code = ("code%dx%d"):format(state.token_seq + 1, math.random(1e6, 9e6))
  state.token_seq = state.token_seq + 1
  state.codes[code] = now() + 30
  local target = config.redirect_uri .. (config.redirect_uri:find("?", 1, true) and "&" or "?") ..
    ("code=%s&state=%s&domain=%s&member_id=%s&scope=%s&server_domain=%s"):format(form_escape(code), form_escape(q.state or ""),
      form_escape("127.0.0.1:" .. port), form_escape(config.member_id), form_escape("biconnector,user"), "oauth.bitrix.info")
  return { status = 302, body = "", headers = { Location = target } }
end

local function by_string_id(store)
  local t, keys = {}, {}
  for id, obj in pairs(store) do t[tostring(id)] = obj keys[#keys + 1] = tostring(id) end
  table.sort(keys)
  return J.object(t, keys)
end

-- PHP bracket form of a nested table (Bitrix24's own encoding of the callback).
local function php_form(t, prefix, out)
  out = out or {}
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
  for _, k in ipairs(keys) do
    local name = prefix and (prefix .. "[" .. form_escape(k) .. "]") or form_escape(k)
    if type(t[k]) == "table" then php_form(t[k], name, out) else out[#out + 1] = name .. "=" .. form_escape(t[k]) end
  end
  return out
end

-- control "install": the administrator saved the local application's form.
-- The portal issues the application's tokens and POSTs the installation
-- callback (the ONAPPINSTALL event form) to cmd.url. cmd.auth overrides or,
-- with the value false, removes auth[...] fields; cmd.event = false leaves
-- out event, data and ts. -> {status, body, sent (the fields, for the spec)}
install_app = function(cmd)
  local access, refresh = issue_tokens()
  local app_token = cmd.application_token or ("apptok" .. math.random(1e8, 9e8))
  state.app.application_token = app_token
  state.app.installed = true
  state.app.handlers = {} -- a new installation binds its handlers anew
  local domain = "127.0.0.1:" .. port
  local auth = { access_token = access, refresh_token = refresh, expires = tostring(math.floor(os.time() + 3600)),
    expires_in = "3600", scope = "biconnector,user", domain = domain, server_endpoint = "https://oauth.bitrix.info/rest/",
    status = "L", client_endpoint = "http://" .. domain .. "/rest/", member_id = config.member_id,
    application_token = app_token, user_id = "1" }
  for k, v in pairs(cmd.auth or {}) do if v == false then auth[k] = nil else auth[k] = v end end
  local fields = { auth = auth }
  if cmd.event ~= false then
    fields.event = "ONAPPINSTALL"
    fields.data = { VERSION = "1", ACTIVE = "Y", INSTALLED = "Y", LANGUAGE_ID = "en" }
    fields.ts = tostring(os.time())
  end
  local status, body = post_form(cmd.url, table.concat(php_form(fields), "&"))
  stats.installs = (stats.installs or 0) + 1
  return { status = status or 0, body = body, sent = fields }
end

-- control "uninstall": ONAPPUNINSTALL to every handler bound for it, carrying
-- the application_token (cmd.application_token forges another; cmd.event names
-- the event otherwise, as ONAPPSUNINSTALL, the spelling of b24restdocs
-- on-app-uninstall.md); then the application's access ends
-- (config.uninstall_revokes). -> {calls = [{url, status, body}]}
uninstall_app = function(cmd)
  local calls = array({})
  for _, h in ipairs(state.app.handlers) do
    if h.event == "ONAPPUNINSTALL" then
      local fields = { event = cmd.event or "ONAPPUNINSTALL", data = { LANGUAGE_ID = "en", CLEAN = cmd.clean and "1" or "0" },
        ts = tostring(os.time()), auth = { domain = "127.0.0.1:" .. port, server_endpoint = "https://oauth.bitrix.info/rest/",
          client_endpoint = "http://127.0.0.1:" .. port .. "/rest/", member_id = config.member_id,
          application_token = cmd.application_token or state.app.application_token } }
      local status, body = post_form(h.handler, table.concat(php_form(fields), "&"))
      calls[#calls + 1] = { url = h.handler, status = status or 0, body = body }
    end
  end
  if not cmd.keep then
    state.app = { handlers = {} }
    if config.uninstall_revokes then
      for _, t in pairs(state.access) do t.expired = true end
      for _, r in pairs(state.refresh) do r.used = true end
    end
  end
  return { calls = calls }
end

-- control "fetch": what BI Builder does with a source: POST to its connector's
-- registered URL (cmd.endpoint: check, table_list, table_description, data)
-- with connection[...] from the source's settings and cmd.params. -> {status, body}
fetch_endpoint = function(cmd)
  local source = state.sources[tonum(cmd.source_id) or -1]
  if not source then return { status = 0, body = "no source " .. tostring(cmd.source_id) } end
  local connector = state.connectors[source.connectorId]
  local url = connector["url" .. ({ check = "Check", table_list = "TableList", table_description = "TableDescription",
    data = "Data" })[cmd.endpoint]]
  local parts = { connection_form(source.settings) }
  if cmd.params then parts[#parts + 1] = table.concat(php_form(cmd.params), "&") end
  local status, body = post_form(url, table.concat(parts, "&"))
  return { status = status or 0, body = body, url = url }
end

local function handle_control(req)
  if req.path == "/_control/stats" then
    return json_answer(200, { stats = stats, config = config, faults = array(copy(faults)),
      state = { connectors = by_string_id(state.connectors), sources = by_string_id(state.sources), datasets = by_string_id(state.datasets), tables = by_string_id(state.datasets),
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
  elseif a == "install" then return json_answer(200, install_app(cmd))
  elseif a == "uninstall" then return json_answer(200, uninstall_app(cmd))
  elseif a == "fetch" then return json_answer(200, fetch_endpoint(cmd))
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
      -- no_time: the refusal without its time block (b24restdocs limits.md: "For the
      -- first retry, refer to operating_reset_at from the last successful response")
      return json_answer(429, { error = "OPERATION_TIME_LIMIT", error_description = "Method is blocked due to operation time limit.",
        time = not fault.no_time and t or nil })
    elseif kind == "error_in_result" then
      -- an error inside `result` (protocol.md 3.1) with another status than 200:
      -- {status=, code=, description=, reset_in= (time.operating_reset_at)}
      local t = time_block(method, started)
      if fault.reset_in then
        t.operating = config.operating_limit
        t.operating_reset_at = os.time() + fault.reset_in
      end
      if fault.code == "QUERY_LIMIT_EXCEEDED" then stats.sent_503 = stats.sent_503 + 1 end
      if fault.code == "expired_token" then stats.expired_answers = stats.expired_answers + 1 end
      return json_answer(fault.status or 400, { result = { error = J.object({ error = fault.code,
        error_description = fault.description or fault.code }, { "error", "error_description" }) }, time = t })
    elseif kind == "result_false" then
      -- `result: false` with HTTP 200 and no error: the method did nothing
      return json_answer(200, { result = false, time = time_block(method, started) })
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
  elseif in_result(method, result) then
    -- HTTP 200 and the time block as on success: only result.error tells
    answer = json_answer(200, { result = in_result(method, result), time = time_block(method, started) })
  else
    if getmetatable(result) ~= ApiError then
      io.stderr:write("portal: ", tostring(result), "\n")
      result = api_error("INTERNAL_SERVER_ERROR", tostring(result), 500, true)
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
  if p:match("^/oauth/authorize/?$") then return handle_authorize(req) end
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
