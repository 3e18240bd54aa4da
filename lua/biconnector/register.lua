-- `biconnector register FILE --base-url URL ...`: creates or updates the
-- connector of a connector file in a portal, and optionally a source with
-- its settings and datasets for some of its tables (protocol.md 3.1).
-- Lua API: require("biconnector.register").run(opts) -> result | nil, err.
local core = require "biconnector.core"
local json = require "biconnector.json"

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local format, concat = string.format, table.concat

local _M = { _VERSION = core.version }

_M.USAGE = [[
Usage: biconnector register FILE --base-url URL [options]
  FILE                  a connector file (as for biconnector serve)
  --base-url URL        where Bitrix24 reaches the served connector; the four
                        endpoint URLs are URL/check, URL/table_list, ...
Connector:
  --title T             the connector's title (default: the file's title)
  --logo URL|data:...   its logo (default: the file's logo, else a small built-in icon)
  --description T       its description (default: the file's description)
  --source-code CODE    how it is recognised again (default: the file's
                        source_code, else derived from the file's title)
Source (one connection with concrete settings):
  --source-title T      the source's title (default: the connector's title)
  --setting CODE=VALUE  a setting value (repeatable; every setting of the file is needed)
Datasets (need a source):
  --dataset TABLE[=NAME]  a dataset for the connector's table TABLE (repeatable);
                        NAME defaults to one derived from TABLE
Other:
  --prune               delete the fields of existing datasets that the connector
                        no longer describes (without it they are only reported)
  --dry-run             look up what exists, print what would be done, change nothing
  --json                print the result as JSON
Environment (as for biconnector call): BITRIX24_PORTAL and BITRIX24_ACCESS_TOKEN
(with BITRIX24_REFRESH_TOKEN, BITRIX24_CLIENT_ID, BITRIX24_CLIENT_SECRET to renew),
or BITRIX24_WEBHOOK (the portal refuses the biconnector methods to webhooks).
Exit code: 0 done, 1 a portal or connector failure, 2 a usage error.
]]

-- A 16x16 PNG (a bar chart on a blue square): the logo when none is given.
_M.DEFAULT_LOGO = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAYAAAAf8/9hAAAALUlEQVR42mNgoBZQTX79nxRMkWYMQ4hRDANDzABkTUPIAFyaRpIBdMsPVMvFAODDFkNLl5spAAAAAElFTkSuQmCC"

_M.ENDPOINTS = { { "urlCheck", "check" }, { "urlTableList", "table_list" },
  { "urlTableDescription", "table_description" }, { "urlData", "data" } }

---------------------------------------------------------------- names (protocol.md 3.1)

-- A dataset name: starts with a letter, a-z 0-9 _, at most 230 characters.
function _M.dataset_name(table_code)
  local s = tostring(table_code):lower():gsub("[^a-z0-9_]+", "_"):gsub("_+", "_"):gsub("^_+", ""):gsub("_+$", "")
  if not s:match("^[a-z]") then s = "t_" .. s end
  s = s:gsub("_+$", "")
  return s:sub(1, 230)
end

-- Dataset field names for a list of field codes: each starts with a letter,
-- uses A-Z 0-9 _, at most 32 characters, unique within the dataset.
function _M.field_names(codes)
  local names, used = {}, {}
  for i, code in ipairs(codes) do
    local s = tostring(code):upper():gsub("[^A-Z0-9_]+", "_"):gsub("_+", "_"):gsub("^_+", ""):gsub("_+$", "")
    if not s:match("^[A-Z]") then s = "F_" .. s end
    s = s:gsub("_+$", ""):sub(1, 32)
    local name, n = s, 1
    while used[name] do
      n = n + 1
      local suffix = "_" .. n
      name = s:sub(1, 32 - #suffix) .. suffix
    end
    used[name] = true
    names[i] = name
  end
  return names
end

-- A sourceCode (up to 64 characters) from a title.
function _M.source_code(title)
  local s = tostring(title):lower():gsub("[^a-z0-9]+", "_"):gsub("^_+", ""):gsub("_+$", "")
  if s == "" then s = "connector" end
  return s:sub(1, 64)
end

---------------------------------------------------------------- the connector file

-- Asks the connector object itself (no network): POST /ENDPOINT with a JSON body.
local function ask(c, endpoint, params)
  local status, _, body = c:handle({ method = "POST", path = "/" .. endpoint,
    headers = { ["content-type"] = "application/json" }, body = assert(json.encode(params)) })
  if type(body) == "function" then -- a streamed answer: gather it
    local parts = {}
    for piece in body do parts[#parts + 1] = piece end
    body = concat(parts)
  end
  local value = json.decode(body or "")
  if status ~= 200 then
    local why = type(value) == "table" and (value.message or value.error) or body
    return nil, format("the connector's %s answered HTTP %s: %s", endpoint, tostring(status), tostring(why))
  end
  return value
end

-- The connector fields for the portal, from the file and the options.
function _M.connector_fields(c, opts)
  local def = c.definition or {}
  local base = opts.base_url:gsub("/+$", "")
  local settings = {}
  for i, s in ipairs(c.settings or {}) do settings[i] = { code = s.code, name = s.name, type = s.type } end
  local f = {
    title = opts.title or c.title,
    logo = opts.logo or (type(def.logo) == "string" and def.logo) or _M.DEFAULT_LOGO,
    settings = settings,
    sourceCode = opts.source_code or def.source_code or def.sourceCode or _M.source_code(c.title),
  }
  local description = opts.description or def.description
  if type(description) == "string" then f.description = description end
  if type(def.sort) == "number" then f.sort = def.sort end
  local mapping = def.support_mapping
  if mapping == nil then mapping = def.supportMapping end
  if type(mapping) == "boolean" then f.supportMapping = mapping end
  for _, e in ipairs(_M.ENDPOINTS) do f[e[1]] = base .. "/" .. e[2] end
  return f
end

-- The source settings: every setting of the file, INT ones as numbers.
local function source_settings(c, given)
  local out, known, missing = {}, {}, {}
  for _, s in ipairs(c.settings or {}) do
    known[s.code] = s
    local v = given[s.code]
    if v == nil then
      missing[#missing + 1] = s.code
    elseif s.type == "INT" then
      local n = tonumber(v)
      if not n or n ~= math.floor(n) then
        return nil, format("--setting %s must be an integer (the setting's type is INT), got %s", s.code, v)
      end
      out[s.code] = n
    else
      out[s.code] = v
    end
  end
  for code in pairs(given) do
    if not known[code] then
      local list = {}
      for _, s in ipairs(c.settings or {}) do list[#list + 1] = s.code end
      return nil, format("--setting %s: the connector has no such setting (it has: %s)", code,
        #list > 0 and concat(list, ", ") or "none")
    end
  end
  if #missing > 0 then
    return nil, "missing --setting for: " .. concat(missing, ", ")
  end
  return out
end

-- The dataset for one table: {name, externalName, externalCode, fields, described}.
local function dataset_plan(c, settings, table_code, name)
  local connection = {}
  for k, v in pairs(settings) do connection[k] = tostring(v) end
  local tables, err = ask(c, "table_list", { searchString = "", connection = connection })
  if not tables then return nil, err end
  if type(tables) ~= "table" then return nil, "the connector's table_list answered no JSON array" end
  local title
  for _, t in ipairs(tables) do if type(t) == "table" and t.code == table_code then title = t.title end end
  if not title then return nil, format("table %s is not in the connector's table list", table_code) end
  local described
  described, err = ask(c, "table_description", { table = table_code, connection = connection })
  if not described then return nil, err end
  if type(described) ~= "table" or #described == 0 then
    return nil, format("the connector's table_description of %s answered no fields", table_code)
  end
  local codes = {}
  for i, fd in ipairs(described) do
    if type(fd) ~= "table" or type(fd.code) ~= "string" or fd.code == "" then
      return nil, format("the connector's table_description of %s: field %d has no code", table_code, i)
    end
    codes[i] = fd.code
  end
  local names = _M.field_names(codes)
  local fields = {}
  for i, fd in ipairs(described) do
    -- the portal's field types are lower case; a connector answering "INT" still means int
    fields[i] = { type = type(fd.type) == "string" and fd.type:lower() or fd.type, name = names[i], externalCode = fd.code }
  end
  return { name = name or _M.dataset_name(table_code), externalName = title, externalCode = table_code,
    fields = fields }
end

---------------------------------------------------------------- portal look-ups

local function lowest_id(list)
  table.sort(list, function(a, b) return (tonumber(a.id) or 0) < (tonumber(b.id) or 0) end)
  return list[1], #list
end

local function find_connector(client, fields, known)
  local list, err = client.connector:list()
  if not list then return nil, err end
  if known.sourceCode then
    local hits = {}
    for _, c in ipairs(list) do if c.sourceCode == fields.sourceCode then hits[#hits + 1] = c end end
    if #hits > 0 then
      local c, n = lowest_id(hits)
      return c, "sourceCode", n
    end
  end
  local hits = {}
  for _, c in ipairs(list) do if c.title == fields.title then hits[#hits + 1] = c end end
  if #hits > 0 then
    local c, n = lowest_id(hits)
    return c, "title", n
  end
  return false
end

local function find_source(client, connector_id, title)
  local list, err = client.source:list()
  if not list then return nil, err end
  local hits = {}
  for _, s in ipairs(list) do
    if tonumber(s.connectorId) == connector_id and s.title == title then hits[#hits + 1] = s end
  end
  if #hits == 0 then return false end
  return (lowest_id(hits))
end

local function find_dataset(client, name)
  local list, err = client.dataset:list()
  if not list then return nil, err end
  for _, d in ipairs(list) do if d.name == name then return d end end
  return false
end

---------------------------------------------------------------- run

-- The portal's answer when the connector's check failed on its side says only
-- "Cannot create connection.": ask the connector file itself to tell a
-- refused setting from an address the portal cannot reach.
local CONNECTION_ERRORS = { SOURCE_CREATE_CONNECTION_ERROR = "create", SOURCE_UPDATE_CONNECTION_ERROR = "update" }
local function explain_connection_error(c, err, settings, fields, base_url)
  local verb = type(err) == "table" and CONNECTION_ERRORS[err.code]
  if not verb then return err end
  local connection = {}
  for k, v in pairs(settings) do connection[k] = tostring(v) end
  local accepted, why = ask(c, "check", { connection = connection })
  local text = format("the portal could not %s the source: %s (%s). When it does, Bitrix24 calls the connector's"
    .. " check endpoint %s with the source's settings and needs a 200 answer; ", verb, err.code,
    tostring(err.description or err.message or ""), fields.urlCheck)
  if accepted then
    return text .. "this connector file accepts these settings, so the portal did not reach that address. Is the"
      .. " connector served there, and reachable from the portal (a public address: Bitrix24 does not call local"
      .. " networks)? `biconnector verify " .. base_url .. " --setting CODE=VALUE` checks it from here"
  end
  return text .. "the connector file itself refuses these settings (" .. tostring(why) .. "): check the --setting values"
end

-- A progress line for a terminal (opts.progress, set by main): what is being done now.
local function step(opts, fmt, ...)
  if opts.progress then opts.progress(format(fmt, ...)) end
end

local function say(opts, fmt, ...)
  if opts.print then opts.print(format(fmt, ...)) end
end

-- register.run(opts) -> result | nil, err
-- opts: connector (object) or file; base_url; title, logo, description, source_code;
-- source_title, settings = {code = value}; datasets = { {table=, name=} };
-- dry_run; client (a biconnector.rest client; may be nil in a dry run);
-- print = function(line) for progress lines.
function _M.run(opts)
  local connector = require "biconnector.connector"
  local c = opts.connector
  if c == nil then
    local ok, loaded = pcall(connector.load, opts.file)
    if not ok then return nil, tostring(loaded) end
    c = loaded
  end
  local fields = _M.connector_fields(c, opts)
  local result = { dry_run = opts.dry_run and true or false, connector = { fields = fields }, datasets = {} }

  -- everything from the file first, so that a mistake there changes nothing in the portal
  local settings, plans = nil, {}
  local want_source = opts.source_title ~= nil or (opts.settings and next(opts.settings) ~= nil)
  if want_source then
    local err
    settings, err = source_settings(c, opts.settings or {})
    if not settings then return nil, err, "usage" end
  end
  if opts.datasets and #opts.datasets > 0 then
    if not settings then return nil, "--dataset needs a source: give its --setting values (or --source-title)", "usage" end
    for i, d in ipairs(opts.datasets) do
      step(opts, "asking the connector file for table %s (%d of %d)", tostring(d.table), i, #opts.datasets)
      local plan, err = dataset_plan(c, settings, d.table, d.name)
      if not plan then return nil, err end
      plans[i] = plan
    end
  end

  local client = opts.client
  if not client then
    if not opts.dry_run then return nil, "no REST client (portal credentials) given", "usage" end
    say(opts, "dry run without portal credentials: the plan only, existing objects not looked up")
  end

  -- the connector
  local connector_id
  if client then
    step(opts, "looking up the connector %q in the portal", fields.title)
    local known, err = client.connector:known_keys()
    if not known then return nil, err end
    if not known.sourceCode then
      say(opts, "this portal does not know sourceCode: connectors are recognised by title")
    end
    local found, how, n = find_connector(client, fields, known)
    if found == nil then return nil, how end
    if found then
      connector_id = tonumber(found.id)
      if n > 1 then say(opts, "note: %d connectors match by %s; using the oldest, %d", n, how, connector_id) end
      if opts.dry_run then
        result.connector.action = "would update"
      else
        step(opts, "updating connector %d", connector_id)
        local ok, uerr = client.connector:update(connector_id, fields)
        if not ok then return nil, uerr end
        result.connector.action = "updated"
      end
      result.connector.matched_by = how
    elseif opts.dry_run then
      result.connector.action = "would create"
    else
      step(opts, "creating the connector %q", fields.title)
      local id, aerr = client.connector:add(fields)
      if not id then return nil, aerr end
      connector_id = tonumber(id)
      result.connector.action = "created"
    end
  else
    result.connector.action = "would create or update"
  end
  result.connector.id = connector_id
  say(opts, "connector %s: %s %q%s (sourceCode %s)", connector_id and tostring(connector_id) or "-",
    result.connector.action, fields.title,
    result.connector.matched_by and (", found by " .. result.connector.matched_by) or "", fields.sourceCode)

  -- the source
  local source_id
  if settings then
    local title = opts.source_title or fields.title
    result.source = { title = title }
    step(opts, "source %q (the portal calls the connector's check)", title)
    local found
    if client and connector_id then
      local err
      found, err = find_source(client, connector_id, title)
      if found == nil then return nil, err end
    end
    if found then
      source_id = tonumber(found.id)
      if opts.dry_run then
        result.source.action = "would update"
      else
        local ok, err = client.source:update(source_id, { settings = settings })
        if not ok then return nil, explain_connection_error(c, err, settings, fields, opts.base_url) end
        result.source.action = "updated"
      end
    elseif opts.dry_run then
      result.source.action = "would create"
    else
      local id, err = client.source:add({ title = title, connectorId = connector_id, settings = settings })
      if not id then return nil, explain_connection_error(c, err, settings, fields, opts.base_url) end
      source_id = tonumber(id)
      result.source.action = "created"
    end
    result.source.id = source_id
    say(opts, "source %s: %s %q (connector %s)", source_id and tostring(source_id) or "-", result.source.action, title,
      connector_id and tostring(connector_id) or "-")
  end

  -- the datasets
  for _, plan in ipairs(plans) do
    local entry = { name = plan.name, table = plan.externalCode, fields = #plan.fields }
    step(opts, "dataset %s (%d of %d)", plan.name, #result.datasets + 1, #plans)
    result.datasets[#result.datasets + 1] = entry
    local found
    if client and source_id then
      local err
      found, err = find_dataset(client, plan.name)
      if found == nil then return nil, err end
      if found and tonumber(found.sourceId) ~= source_id then
        return nil, format("dataset %s already exists for another source (id %s); name this one with --dataset %s=NAME",
          plan.name, tostring(found.sourceId), plan.externalCode)
      end
    elseif client and not source_id and not opts.dry_run then
      return nil, "no source to attach datasets to"
    end
    if found then
      entry.id = tonumber(found.id)
      local current, err = client.dataset:get(entry.id)
      if not current then return nil, err end
      local have = {}
      for _, fd in ipairs(type(current.fields) == "table" and current.fields or {}) do
        have[fd.externalCode] = fd
      end
      local used = {}
      for _, fd in pairs(have) do used[fd.name] = true end
      local add, retyped = {}, {}
      for _, fd in ipairs(plan.fields) do
        local old = have[fd.externalCode]
        if not old then
          local name, n = fd.name, 1
          while used[name] do -- a new field whose derived name an old one holds
            n = n + 1
            name = fd.name:sub(1, 32 - #tostring(n) - 1) .. "_" .. n
          end
          used[name] = true
          add[#add + 1] = { type = fd.type, name = name, externalCode = fd.externalCode }
        elseif tostring(old.type):lower() ~= fd.type then
          retyped[#retyped + 1] = fd.externalCode
        end
      end
      entry.added = #add
      -- fields the connector no longer describes: deleted only with --prune
      local described, stale, stale_ids = {}, {}, {}
      for _, fd in ipairs(plan.fields) do described[fd.externalCode] = true end
      for _, fd in ipairs(type(current.fields) == "table" and current.fields or {}) do
        if not described[fd.externalCode] then
          stale[#stale + 1] = tostring(fd.externalCode)
          stale_ids[#stale_ids + 1] = fd.id
        end
      end
      if #stale > 0 then
        entry.stale = stale
        if not opts.prune then
          say(opts, "note: dataset %s: field(s) %s are no longer described by the connector; kept (--prune deletes them)",
            plan.name, concat(stale, ", "))
        end
      end
      if #retyped > 0 then
        entry.retyped = retyped
        say(opts, "note: dataset %s: field(s) %s changed type; the portal cannot change a field's type (delete and re-add it)",
          plan.name, concat(retyped, ", "))
      end
      local prune = opts.prune and #stale > 0
      if opts.dry_run then
        entry.action = #add > 0 and "would add fields to" or "would update"
        if prune then entry.would_delete = stale end
      else
        local ok, uerr = client.dataset:update(entry.id, { externalName = plan.externalName })
        if not ok then return nil, uerr end
        if #add > 0 or prune then
          ok, uerr = client.dataset:fields_update(entry.id, { add = #add > 0 and add or nil,
            delete = prune and stale_ids or nil })
          if not ok then return nil, uerr end
        end
        entry.action = "updated"
        if prune then entry.deleted = stale end
      end
      say(opts, "dataset %d %s: %s (table %s, %d new field(s)%s)", entry.id, plan.name, entry.action, plan.externalCode, #add,
        prune and format(", %s %s", opts.dry_run and "would delete" or "deleted", concat(stale, ", ")) or "")
    elseif opts.dry_run then
      entry.action = "would create"
      say(opts, "dataset - %s: would create (table %s, %d field(s))", plan.name, plan.externalCode, #plan.fields)
    else
      local id, err = client.dataset:add({ name = plan.name, externalName = plan.externalName,
        externalCode = plan.externalCode, sourceId = source_id, fields = plan.fields })
      if not id then return nil, err end
      entry.id, entry.action = tonumber(id), "created"
      say(opts, "dataset %d %s: created (table %s, %d field(s))", entry.id, plan.name, plan.externalCode, #plan.fields)
    end
  end
  if opts.dry_run then say(opts, "dry run: nothing was changed") end
  return result
end

---------------------------------------------------------------- the command

-- parse_args(args) -> opts, as_json | nil, message
function _M.parse_args(args)
  local o = { settings = {}, datasets = {} }
  local as_json
  local i = 1
  local function value_of(flag)
    i = i + 1
    if args[i] == nil then return nil, flag .. " needs a value" end
    return args[i]
  end
  local simple = { ["--base-url"] = "base_url", ["--title"] = "title", ["--logo"] = "logo",
    ["--description"] = "description", ["--source-code"] = "source_code", ["--source-title"] = "source_title" }
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if flag then
      table.insert(args, i + 1, inline)
      a = flag
    end
    local v, err
    if a == "--dry-run" then o.dry_run = true
    elseif a == "--prune" then o.prune = true
    elseif a == "--json" then as_json = true
    elseif simple[a] then
      v, err = value_of(a)
      if not v then return nil, err end
      o[simple[a]] = v
    elseif a == "--setting" then
      v, err = value_of(a)
      if not v then return nil, err end
      local code, value = v:match("^([^=]+)=(.*)$")
      if not code then return nil, "--setting must be CODE=VALUE, got " .. v end
      o.settings[code] = value
    elseif a == "--dataset" then
      v, err = value_of(a)
      if not v then return nil, err end
      local tbl, name = v:match("^([^=]+)=(.*)$")
      if not tbl then tbl = v end
      if name and not name:match("^[a-z][a-z0-9_]*$") or name and #name > 230 then
        return nil, "--dataset NAME must start with a letter and use a-z, 0-9, _ (at most 230), got " .. name
      end
      if tbl == "" then return nil, "--dataset needs a table code" end
      o.datasets[#o.datasets + 1] = { table = tbl, name = name }
    elseif a:sub(1, 1) == "-" then
      return nil, "unknown option " .. a
    elseif o.file == nil then
      o.file = a
    else
      return nil, "unexpected argument " .. a
    end
    i = i + 1
  end
  if not o.file then return nil, "FILE is required" end
  if not o.base_url then return nil, "--base-url is required" end
  if not o.base_url:match("^https?://[^/]") then return nil, "--base-url must start with http:// or https://, got " .. o.base_url end
  if o.logo and not (o.logo:match("^https?://") or o.logo:match("^data:")) then
    return nil, "--logo must be a URL or a data: URI"
  end
  if o.source_code and #o.source_code > 64 then return nil, "--source-code must be at most 64 characters" end
  return o, as_json
end

function _M.main(args, out, err, getenv)
  out, err = out or io.stdout, err or io.stderr
  args = args or {}
  for _, a in ipairs(args) do
    if a == "-h" or a == "--help" then out:write(_M.USAGE) return 0 end
  end
  local copy = {}
  for i, a in ipairs(args) do copy[i] = a end
  local o, as_json = _M.parse_args(copy)
  if not o then
    err:write("biconnector register: ", as_json, "\n", _M.USAGE)
    return 2
  end
  local env, eerr = require("biconnector.cli_call").options_from_env(getenv)
  if env then
    local client, cerr = require("biconnector.rest").new(env)
    if not client then err:write("biconnector register: ", tostring(cerr), "\n") return 2 end
    o.client = client
  elseif not o.dry_run then
    err:write("biconnector register: ", eerr, "\n")
    return 2
  end
  local progress = require("biconnector.progress").new("register", { json = as_json })
  o.progress = progress.enabled and progress.update or nil
  if not as_json then o.print = function(line) progress.clear() out:write(line, "\n") end end
  local result, rerr, kind = _M.run(o)
  progress.clear()
  if o.client then o.client:close() end
  if not result then
    err:write("biconnector register: ", tostring(rerr), "\n")
    if type(rerr) == "table" and rerr.code == "ACCESS_DENIED" and env and env.webhook then
      err:write("biconnector register: the biconnector methods refuse incoming webhooks;",
        " use an application's token (BITRIX24_PORTAL and BITRIX24_ACCESS_TOKEN)\n")
    end
    return kind == "usage" and 2 or 1
  end
  if as_json then out:write(assert(json.encode(result, { indent = 2 })), "\n") end
  return 0
end

return _M
