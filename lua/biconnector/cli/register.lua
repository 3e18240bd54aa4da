-- `biconnector register FILE --base-url URL ...`: creates or updates the
-- connector of a connector file in a portal, and optionally a source with its
-- settings and tables for some of its table codes (protocol.md 3.1, 3.2:
-- connector -> source -> table; biconnector.table.*, or the deprecated
-- biconnector.dataset.* on a portal without it).
-- Lua API: require("biconnector.cli.register").run(opts) -> result | nil, err.
local core = require "biconnector.core"
local json = require "biconnector.json"
local names = require "biconnector.connector.names"
local address = require "biconnector.host.address"
local connector = require "biconnector.connector.core"
local rest = require "biconnector.rest.client"
local cli_call = require "biconnector.cli.call"
local progress_lib = require "biconnector.cli.progress"
local cli = require "biconnector.cli.main"
local COLUMN_TYPES = require("biconnector.rest.services").COLUMN_TYPES

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
Tables (need a source):
  --table CODE[=NAME]   a table of the connector's table CODE (repeatable); NAME
                        (a-z 0-9 _, a letter first, at most 230, unique in the
                        portal, never changed afterwards) defaults to one
                        derived from CODE
  --dataset CODE[=NAME] the same (deprecated, as biconnector.dataset.* is)
Other:
  --prune               delete this source's tables of codes the connector no
                        longer serves (columns are never deleted: those no
                        longer described are hidden)
  --dry-run             look up what exists, print what would be done, change nothing
  --json                print the result as JSON
Environment (as for biconnector call): BITRIX24_PORTAL and BITRIX24_ACCESS_TOKEN
(with BITRIX24_REFRESH_TOKEN, BITRIX24_CLIENT_ID, BITRIX24_CLIENT_SECRET to renew,
and BITRIX24_TOKENS_FILE or BITRIX24_TOKENS_REDIS to keep the renewed pair),
or BITRIX24_WEBHOOK (the portal refuses the biconnector methods to webhooks).
Exit code: 0 done, 1 a portal or connector failure, 2 a usage error.
]]

-- A 16x16 PNG (a bar chart on a blue square): the logo when none is given.
_M.DEFAULT_LOGO = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAYAAAAf8/9hAAAALUlEQVR42mNgoBZQTX79nxRMkWYMQ4hRDANDzABkTUPIAFyaRpIBdMsPVMvFAODDFkNLl5spAAAAAElFTkSuQmCC"

_M.ENDPOINTS = { { "urlCheck", "check" }, { "urlTableList", "table_list" },
  { "urlTableDescription", "table_description" }, { "urlData", "data" } }

-- The sourceCode 0.1.0 derived from a title: its ASCII letters and digits alone
-- (every title of Cyrillic letters was "connector"); still recognised (find_connector).
function _M.legacy_source_code(title)
  local s = tostring(title):lower():gsub("[^a-z0-9]+", "_"):gsub("^_+", ""):gsub("_+$", "")
  if s == "" then s = "connector" end
  return s:sub(1, 64)
end

-- A sourceCode (up to 64 characters) from a title: its ASCII letters and digits;
-- a title holding any other character (Cyrillic, ...) also gets 8 hex digits of
-- its SHA-256, so that "Склад" and "Магазин" (or "Склад 2024" and "Продажи
-- 2024") are two connectors, not both "connector" (or "2024").
function _M.source_code(title)
  title = tostring(title)
  local s = _M.legacy_source_code(title)
  if not title:find("[\128-\255]") then return s end
  local hash = core.sha256(title):sub(1, 8)
  return (s:sub(1, 64 - 9):gsub("_+$", "")) .. "_" .. hash
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

local function connection_of(settings)
  local connection = {}
  for k, v in pairs(settings) do connection[k] = tostring(v) end
  return connection
end

-- The tables the connector file serves with these settings: { {code, title}, ... }
-- (also for `serve --app`, whose --app-tables registers every one).
function _M.served_tables(c, settings)
  local tables, err = ask(c, "table_list", { searchString = "", connection = connection_of(settings) })
  if not tables then return nil, err end
  if type(tables) ~= "table" then return nil, "the connector's table_list answered no JSON array" end
  local list = {}
  for _, t in ipairs(tables) do
    if type(t) == "table" and type(t.code) == "string" then list[#list + 1] = { code = t.code, title = t.title } end
  end
  return list
end

-- What one table should be: {code, title, name (given or nil), columns = {{code, type}}}.
local function table_plan(c, settings, served, code, name)
  local title
  for _, t in ipairs(served) do if t.code == code then title = t.title end end
  if not title then return nil, format("table %s is not in the connector's table list", code) end
  local described, err = ask(c, "table_description", { table = code, connection = connection_of(settings) })
  if not described then return nil, err end
  if type(described) ~= "table" or #described == 0 then
    return nil, format("the connector's table_description of %s answered no fields", code)
  end
  local columns, as_string = {}, {}
  for i, fd in ipairs(described) do
    if type(fd) ~= "table" or type(fd.code) ~= "string" or fd.code == "" then
      return nil, format("the connector's table_description of %s: field %d has no code", code, i)
    end
    if type(fd.type) ~= "string" or fd.type == "" then
      -- Bitrix24 refuses a description with a field without type (protocol.md section 2)
      return nil, format("the connector's table_description of %s: field %d (%s) has no type", code, i, fd.code)
    end
    -- column types are lower case; a connector answering "INT" still means int
    local t = fd.type:lower()
    if not COLUMN_TYPES[t] then
      -- Bitrix24 reads a type it does not know as string (protocol.md section 2), while
      -- biconnector.table.add refuses it: the table gets what BI Builder would make of it
      as_string[#as_string + 1] = format("%s (%s)", fd.code, fd.type)
      t = "string"
    end
    columns[i] = { code = fd.code, type = t }
  end
  return { code = code, title = tostring(title), name = name, columns = columns, as_string = as_string }
end

---------------------------------------------------------------- portal look-ups

-- A progress line for a terminal (opts.progress, set by main): what is being done now.
local function step(opts, fmt, ...)
  if opts.progress then opts.progress(format(fmt, ...)) end
end

local function say(opts, fmt, ...)
  if opts.print then opts.print(format(fmt, ...)) end
end


local function lowest_id(list)
  table.sort(list, function(a, b) return (tonumber(a.id) or 0) < (tonumber(b.id) or 0) end)
  return list[1], #list
end

local function no_code(c) return c.sourceCode == nil or c.sourceCode == "" or c.sourceCode == json.null end

-- legacy: the sourceCode 0.1.0 derived from the same title, when it differs
-- from fields.sourceCode: a connector carrying it and fields.title is this one.
local function find_connector(client, fields, known, opts, legacy)
  local list, err = client.connector:list()
  if not list then return nil, err end
  -- the connectors whose `key` equals fields[key] (and that pass `also`): the one with the lowest id, key, how many
  local function by(key, also)
    local hits = {}
    for _, c in ipairs(list) do if c[key] == fields[key] and (not also or also(c)) then hits[#hits + 1] = c end end
    if #hits == 0 then return nil end
    local c, n = lowest_id(hits)
    return c, key, n
  end
  local c, key, n
  if known.sourceCode then
    c, key, n = by("sourceCode")
    if not c and legacy then
      -- registered by 0.1.0, whose code for this title was `legacy` (updated to the new one)
      c, key, n = by("title", function(o) return o.sourceCode == legacy end)
      if c then key = "title and the sourceCode 0.1.0 derived (" .. legacy .. ")" end
    end
    -- by title only a connector without a sourceCode (made before the portal knew
    -- it): one with another sourceCode is another connector of the same title
    if not c then
      c, key, n = by("title", no_code)
      if not c then
        for _, other in ipairs(list) do
          if other.title == fields.title then
            say(opts, "note: connector %s has the title %q but sourceCode %s: not this one (sourceCode %s)",
              tostring(other.id), fields.title, tostring(other.sourceCode), tostring(fields.sourceCode))
          end
        end
      end
    end
  else
    c, key, n = by("title")
  end
  if not c then return false end
  return c, key, n
end

-- This connector's source of that title; with the title defaulted (no
-- --source-title: the connector's title, which --title may have just changed),
-- else the connector's only source.
local function find_source(client, connector_id, title, defaulted, opts)
  local list, err = client.source:list()
  if not list then return nil, err end
  local hits, mine = {}, {}
  for _, s in ipairs(list) do
    if tonumber(s.connectorId) == connector_id then
      mine[#mine + 1] = s
      if s.title == title then hits[#hits + 1] = s end
    end
  end
  if #hits == 0 and defaulted and #mine == 1 then
    say(opts, "note: source %s %q is the only source of connector %d: taken as this one (its title stays; --source-title"
      .. " names a source)", tostring(mine[1].id), tostring(mine[1].title), connector_id)
    return mine[1]
  end
  if #hits == 0 then return false end
  return (lowest_id(hits))
end

-- Whether the portal already holds the value `want`: a list (the connector's
-- settings), as many elements each holding its own (a setting no longer in the
-- file is a change); an object, each of its keys holding its value, and keys the
-- portal adds ignored ("objects may grow keys", protocol.md 3.1: a setting's id),
-- unless `exact` (a source's settings by code: one no longer in the file is a
-- change); numbers and booleans compared as the portal may spell them.
local function truth(v) return v == true or v == 1 or v == "1" or v == "Y" or v == "true" end
local function holds(have, want, exact)
  if type(want) == "table" then
    if type(have) ~= "table" then return false end
    local n = 0
    for _ in pairs(have) do n = n + 1 end
    if want[1] ~= nil or next(want) == nil then
      if n ~= #want then return false end
      for i, v in ipairs(want) do if not holds(have[i], v) then return false end end
      return true
    end
    for k, v in pairs(want) do if not holds(have[k], v) then return false end end
    if exact then
      for k in pairs(have) do if want[k] == nil then return false end end
    end
    return true
  end
  if type(want) == "boolean" then return truth(have) == want end
  if type(want) == "number" then return tonumber(have) == want end
  return have == want
end

-- The table family of this portal and every table of the application: the
-- current biconnector.table.*, or biconnector.dataset.* on a portal that lacks it.
local function table_family(client, opts)
  local list, err = client.table:list()
  if list then return client.table, list end
  if type(err) ~= "table" or err.code ~= "ERROR_METHOD_NOT_FOUND" then return nil, err end
  say(opts, "note: this portal has no biconnector.table.* (%s): using the deprecated biconnector.dataset.*", err.code)
  list, err = client.dataset:list()
  if not list then return nil, err end
  return client.dataset, list
end

local function hidden(column)
  local v = column.visible
  return v == false or v == 0 or v == "0" or v == "N" or v == "false"
end

---------------------------------------------------------------- run

-- The portal's answer when the connector's check failed on its side says only
-- "Cannot create connection.": ask the connector file itself to tell a
-- refused setting from an address the portal cannot reach.
local CONNECTION_ERRORS = { SOURCE_CREATE_CONNECTION_ERROR = "create", SOURCE_UPDATE_CONNECTION_ERROR = "update" }
local function explain_connection_error(c, err, settings, fields, base_url)
  local verb = type(err) == "table" and CONNECTION_ERRORS[err.code]
  if not verb then return err end
  local accepted, why = ask(c, "check", { connection = connection_of(settings) })
  local text = format("the portal could not %s the source: %s (%s). When it does, Bitrix24 calls the connector's"
    .. " check endpoint %s with the source's settings and needs a 200 answer with a body; ", verb, err.code,
    tostring(err.description or err.message or ""), fields.urlCheck)
  if accepted then
    local reason, host = address.local_reason(fields.urlCheck)
    local where = reason and format(" %s is %s, and Bitrix24 does not call addresses on a local network: serve the"
      .. " connector under a public name with HTTPS (or, to try it, through a tunnel).", host, reason)
      or " Is the connector served there, and reachable from the portal (a public address: Bitrix24 does not call"
      .. " addresses on a local network)?"
    return text .. "this connector file accepts these settings, so the portal did not reach that address." .. where
      .. " `biconnector verify " .. base_url .. " --setting CODE=VALUE` checks it from here"
  end
  return text .. "the connector file itself refuses these settings (" .. tostring(why) .. "): check the --setting values"
end

-- The table of a plan on a rerun: compare columns by externalCode; add the new
-- ones, hide the ones no longer described, show hidden ones described again,
-- all in one fields.update. Nothing to do: nothing is sent.
local function update_table(family, entry, plan, found, opts)
  local current, err = family:get(entry.id)
  if not current then return nil, err end
  local columns = type(current.fields) == "table" and current.fields or {}
  local by_code, taken, described = {}, {}, {}
  for _, col in ipairs(columns) do
    by_code[tostring(col.externalCode)] = col
    taken[tostring(col.name)] = true
  end
  local add, update = {}, {}
  local A = json.as_array -- empty lists print as [] with --json
  entry.added, entry.hidden, entry.shown, entry.retyped = A {}, A {}, A {}, A {}
  for _, col in ipairs(plan.columns) do
    described[col.code] = true
    local old = by_code[col.code]
    if not old then
      add[#add + 1] = { name = names.column_name(col.code, taken), externalCode = col.code, type = col.type }
      entry.added[#entry.added + 1] = col.code
    else
      if hidden(old) then
        update[#update + 1] = { id = old.id, visible = true }
        entry.shown[#entry.shown + 1] = col.code
      end
      if tostring(old.type) ~= col.type then entry.retyped[#entry.retyped + 1] = format("%s (%s -> %s)", col.code, tostring(old.type), col.type) end
    end
  end
  for _, old in ipairs(columns) do
    if not described[tostring(old.externalCode)] and not hidden(old) then
      update[#update + 1] = { id = old.id, visible = false }
      entry.hidden[#entry.hidden + 1] = tostring(old.externalCode)
    end
  end
  entry.columns = #columns + #add
  if #entry.retyped > 0 then
    say(opts, "note: table %s: column(s) %s changed type; a column's type cannot change (delete the column in BI Builder"
      .. " and run register again to add it anew)", entry.name, concat(entry.retyped, ", "))
  end
  if found.externalName ~= nil and tostring(found.externalName) ~= plan.title then
    say(opts, "note: table %s: the connector now titles it %q; a table's externalName (%q) cannot change", entry.name,
      plan.title, tostring(found.externalName))
  end
  if #add == 0 and #update == 0 then
    entry.action = "unchanged"
    return true
  end
  if opts.dry_run then
    entry.action = "would update"
    return true
  end
  local ok, uerr = family:fields_update(entry.id, { add = #add > 0 and add or nil, update = #update > 0 and update or nil },
    { current = columns })
  if not ok then return nil, uerr end
  entry.action = "updated"
  return true
end

local function changes_text(entry)
  local parts = {}
  for _, k in ipairs({ "added", "hidden", "shown" }) do
    local list = entry[k]
    if list and #list > 0 then parts[#parts + 1] = format("%d %s: %s", #list, k, concat(list, ", ")) end
  end
  return #parts > 0 and ("; column(s) " .. concat(parts, "; ")) or ""
end

-- A new table for a plan; a derived name the portal says is taken (by a table
-- this application cannot see) gets the next suffix.
local function create_table(family, entry, plan, source_id, taken)
  local codes = {}
  for i, col in ipairs(plan.columns) do codes[i] = col.code end
  local column_names = names.column_names(codes)
  local fields = {}
  for i, col in ipairs(plan.columns) do fields[i] = { name = column_names[i], externalCode = col.code, type = col.type } end
  for _ = 1, 20 do
    local id, err = family:add({ sourceId = source_id, name = entry.name, externalName = plan.title,
      externalCode = plan.code, fields = fields })
    if id then
      entry.id, entry.action, entry.columns = tonumber(id), "created", #fields
      return true
    end
    local taken_code = type(err) == "table" and (err.code == "NAME_EXISTS" or err.code == "DATASET_ALREADY_EXIST")
    if not taken_code or plan.name then
      if taken_code then
        return nil, format("table name %s is taken in this portal (%s: names are unique across the portal); name this one"
          .. " with --table %s=NAME", entry.name, err.code, plan.code)
      end
      return nil, err
    end
    taken[entry.name] = true
    entry.name = names.table_name(plan.code, taken)
  end
  return nil, format("no free table name for %s", plan.code)
end

-- One --table: find this source's table of that code (and name), then create,
-- update or leave it; a new NAME for a code that has a table is a new table.
local function register_table(client, family, all, plan, source_id, opts, result)
  local entry = { table = plan.code, columns = #plan.columns }
  result.tables[#result.tables + 1] = entry
  step(opts, "table %s (%d of %d)", plan.name or plan.code, #result.tables, opts.plan_count)
  local mine, taken, holder = {}, {}, nil
  for _, t in ipairs(all) do
    taken[tostring(t.name)] = true
    if plan.name and t.name == plan.name then holder = t end
    if source_id and tonumber(t.sourceId) == source_id and t.externalCode == plan.code then mine[#mine + 1] = t end
  end
  local found
  if plan.name then
    if holder and tonumber(holder.sourceId) == source_id and holder.externalCode == plan.code then
      found = holder
    elseif holder then
      return nil, format("table name %s is taken by table %s (source %s, code %s); names are unique across the portal:"
        .. " name this one with --table %s=NAME", plan.name, tostring(holder.id), tostring(holder.sourceId),
        tostring(holder.externalCode), plan.code)
    elseif #mine > 0 then
      local old = lowest_id(mine)
      entry.renamed_from = { id = tonumber(old.id), name = old.name }
      say(opts, "note: table %s of code %s exists as %s (id %s); a table's name cannot change, so %s is a new table"
        .. " beside it (the old one stays: delete it in BI Builder, or with `biconnector call biconnector.table.delete`)",
        plan.name, plan.code, tostring(old.name), tostring(old.id), plan.name)
    end
    entry.name = plan.name
  elseif #mine > 0 then
    local base = names.table_name(plan.code)
    for _, t in ipairs(mine) do if t.name == base then found = t end end
    found = found or lowest_id(mine)
  else
    entry.name = names.table_name(plan.code, taken)
  end
  if found then
    entry.id, entry.name = tonumber(found.id), found.name
    if client then
      local ok, err = update_table(family, entry, plan, found, opts)
      if not ok then return nil, err end
    end
    say(opts, "table %d %s: %s (code %s, %d column(s)%s)", entry.id, entry.name, entry.action, plan.code, entry.columns,
      changes_text(entry))
  elseif opts.dry_run then
    entry.action = "would create"
    say(opts, "table - %s: would create (code %s, %d column(s))", entry.name, plan.code, #plan.columns)
  else
    local ok, err = create_table(family, entry, plan, source_id, taken)
    if not ok then return nil, err end
    all[#all + 1] = { id = entry.id, name = entry.name, sourceId = source_id, externalCode = plan.code }
    say(opts, "table %d %s: created (code %s, %d column(s))", entry.id, entry.name, plan.code, entry.columns)
  end
  return true
end

-- This source's tables whose code the connector no longer serves: deleted
-- with --prune (tables only, by code), reported without it.
local function prune_tables(family, all, served, source_id, opts, result)
  local serving = {}
  for _, t in ipairs(served) do serving[t.code] = true end
  local stale = {}
  for _, t in ipairs(all) do
    if tonumber(t.sourceId) == source_id and not serving[t.externalCode] then stale[#stale + 1] = t end
  end
  table.sort(stale, function(a, b) return (tonumber(a.id) or 0) < (tonumber(b.id) or 0) end)
  for _, t in ipairs(stale) do
    local entry = { id = tonumber(t.id), name = t.name, table = t.externalCode }
    if not opts.prune then
      say(opts, "note: table %s %s: the connector no longer serves code %s; kept (--prune deletes it)", tostring(t.id),
        tostring(t.name), tostring(t.externalCode))
      entry.action = "kept"
    elseif opts.dry_run then
      entry.action = "would delete"
    else
      local ok, err = family:delete(entry.id)
      if not ok then return nil, err end
      entry.action = "deleted"
    end
    result.stale_tables[#result.stale_tables + 1] = entry
    if opts.prune then
      say(opts, "table %s %s: %s (code %s is no longer served)", tostring(t.id), tostring(t.name), entry.action,
        tostring(t.externalCode))
    end
  end
  return true
end

-- register.run(opts) -> result | nil, err
-- opts: connector (object) or file; base_url; title, logo, description, source_code;
-- source_title, settings = {code = value}; tables = { {table=, name=} } (datasets:
-- the old name of the same); prune; dry_run; client (a biconnector.rest client;
-- may be nil in a dry run); print = function(line) for progress lines.
function _M.run(opts)
  local c = opts.connector
  if c == nil then
    local ok, loaded = pcall(connector.load, opts.file)
    if not ok then return nil, tostring(loaded) end
    c = loaded
  end
  local fields = _M.connector_fields(c, opts)
  local result = { dry_run = opts.dry_run and true or false, connector = { fields = fields },
    tables = json.as_array {}, stale_tables = json.as_array {}, warnings = json.as_array {} } -- [] with --json
  if opts.on_result then opts.on_result(result) end -- what was done so far, should a step fail
  local warning = address.warning(fields.urlCheck)
  if warning then
    result.warnings[#result.warnings + 1] = warning
    say(opts, "warning: %s", warning)
  end

  -- everything from the file first, so that a mistake there changes nothing in the portal
  local settings, plans, served = nil, {}, nil
  local wanted = opts.tables or opts.datasets or {}
  local want_source = opts.source_title ~= nil or (opts.settings and next(opts.settings) ~= nil)
  if want_source then
    local err
    settings, err = source_settings(c, opts.settings or {})
    if not settings then return nil, err, "usage" end
  end
  if #wanted > 0 or opts.prune then
    if not settings then
      return nil, (#wanted > 0 and "--table" or "--prune") .. " needs a source: give its --setting values (or --source-title)", "usage"
    end
    local err
    -- The file runs here, not at --base-url: a refusal is about the settings
    -- given, or the environment the file reads, in this process.
    local function refused(e)
      if tostring(e):find("answered HTTP 403", 1, true) then
        return tostring(e) .. " (register asks the connector file " .. tostring(opts.file) .. " in its own process, not"
          .. " the served address: check the --setting values, and set the environment variables the file reads"
          .. " for register too)"
      end
      return e
    end
    served, err = _M.served_tables(c, settings)
    if not served then return nil, refused(err) end
    for i, d in ipairs(wanted) do
      step(opts, "asking the connector file for table %s (%d of %d)", tostring(d.table), i, #wanted)
      plans[i], err = table_plan(c, settings, served, d.table, d.name)
      if not plans[i] then return nil, refused(err) end
      if #plans[i].as_string > 0 then
        local note = format("table %s: column type(s) Bitrix24 does not know, registered as string (as BI Builder"
          .. " reads them): %s", d.table, concat(plans[i].as_string, ", "))
        result.warnings[#result.warnings + 1] = note
        say(opts, "warning: %s", note)
      end
    end
  end
  opts.plan_count = #plans

  local client = opts.client
  if not client then
    if not opts.dry_run then return nil, "no REST client (portal credentials) given", "usage" end
    say(opts, "dry run without portal credentials: the plan only, existing objects not looked up")
  end

  -- the connector
  local connector_id, known_source_code
  if client then
    step(opts, "looking up the connector %q in the portal", fields.title)
    local known, err = client.connector:known_keys()
    if not known then return nil, err end
    known_source_code = known.sourceCode and true or false
    if not known.sourceCode then
      say(opts, "this portal does not know sourceCode: connectors are recognised by title")
    end
    local def = c.definition or {}
    local legacy = not (opts.source_code or def.source_code or def.sourceCode) and _M.legacy_source_code(c.title)
    local found, how, n = find_connector(client, fields, known, opts, legacy ~= fields.sourceCode and legacy or nil)
    if found == nil then return nil, how end
    if found then
      connector_id = tonumber(found.id)
      if n > 1 then say(opts, "note: %d connectors match by %s; using the oldest, %d", n, how, connector_id) end
      local same = true
      for k, v in pairs(fields) do if known[k] and not holds(found[k], v) then same = false end end
      if same then
        result.connector.action = "unchanged"
      elseif opts.dry_run then
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
  -- (a portal that does not know sourceCode never received it: the line does not claim it)
  say(opts, "connector %s: %s %q%s (%s)", connector_id and tostring(connector_id) or "-",
    result.connector.action, fields.title,
    result.connector.matched_by and (", found by " .. result.connector.matched_by) or "",
    (known_source_code == false) and "no sourceCode: this portal does not know it" or ("sourceCode " .. tostring(fields.sourceCode)))

  -- the source
  local source_id
  if settings then
    local title = opts.source_title or fields.title
    result.source = { title = title }
    step(opts, "source %q (the portal calls the connector's check)", title)
    local found
    if client and connector_id then
      local err
      found, err = find_source(client, connector_id, title, opts.source_title == nil, opts)
      if found == nil then return nil, err end
    end
    if found then
      source_id = tonumber(found.id)
      if type(found.title) == "string" then title, result.source.title = found.title, found.title end
      local current, gerr = client.source:get(source_id)
      if not current then return nil, gerr end
      if holds(current.settings, settings, true) then
        result.source.action = "unchanged"
      elseif opts.dry_run then
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

  -- the tables
  if #plans > 0 or opts.prune then
    local family, all = nil, {}
    if client and source_id then
      family, all = table_family(client, opts)
      if not family then return nil, all end
      result.family = family.kind
    elseif client and not opts.dry_run then
      return nil, "no source to attach tables to"
    end
    for _, plan in ipairs(plans) do
      local ok, err = register_table(family and client, family, all, plan, source_id, opts, result)
      if not ok then return nil, err end
    end
    if family then
      local ok, err = prune_tables(family, all, served, source_id, opts, result)
      if not ok then return nil, err end
    end
  end
  if opts.dry_run then say(opts, "dry run: nothing was changed") end
  return result
end

---------------------------------------------------------------- the command

-- parse_args(args) -> opts, as_json | nil, message
function _M.parse_args(args)
  local o = { settings = {}, tables = {} }
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
    elseif a == "--table" or a == "--dataset" then
      v, err = value_of(a)
      if not v then return nil, err end
      local tbl, name = v:match("^([^=]+)=(.*)$")
      if not tbl then tbl = v end
      if name and not names.valid_table_name(name) then
        return nil, a .. " NAME must start with a letter and use a-z, 0-9, _ (at most 230), got " .. name
      end
      if tbl == "" then return nil, a .. " needs a table code" end
      if a == "--dataset" then o.dataset_option = true end
      o.tables[#o.tables + 1] = { table = tbl, name = name }
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
  -- a scheme in capitals (HTTPS://) is the same address: the portal gets it in lower case
  o.base_url, o.logo = address.lower_scheme(o.base_url), address.lower_scheme(o.logo)
  if not o.base_url:match("^https?://[^/]") then return nil, "--base-url must start with http:// or https://, got " .. o.base_url end
  if o.base_url:find("[?#]") then
    return nil, "--base-url must have no query or fragment (the endpoints are URL/check, URL/data, ...), got " .. o.base_url
  end
  local bad_byte = address.unencoded(o.base_url, "--base-url")
  if bad_byte then return nil, bad_byte end
  if o.logo and not (o.logo:match("^https?://") or o.logo:match("^data:")) then
    return nil, "--logo must be a URL or a data: URI"
  end
  if o.source_code and names.length(o.source_code) > 64 then return nil, "--source-code must be at most 64 characters" end
  return o, as_json
end

function _M.main(args, out, err, getenv)
  out, err = out or io.stdout, err or io.stderr
  local copy = cli.arguments(args, out, _M.USAGE)
  if not copy then return 0 end
  local o, as_json = _M.parse_args(copy)
  if not o then
    err:write("biconnector register: ", as_json, "\n", _M.USAGE)
    return 2
  end
  if o.dataset_option then
    err:write("biconnector register: note: --dataset is deprecated, as Bitrix24's biconnector.dataset.* is:"
      .. " use --table (the same, through biconnector.table.*)\n")
  end
  local env, eerr = cli_call.options_from_env(getenv, function(text) err:write(text) end)
  if env then
    local client, cerr = rest.new(env)
    if not client then err:write("biconnector register: ", tostring(cerr), "\n") return 2 end
    o.client = client
  elseif not o.dry_run then
    err:write("biconnector register: ", eerr, "\n")
    return 2
  end
  local progress = progress_lib.new("register", { json = as_json })
  o.progress = progress.enabled and progress.update or nil
  if not as_json then o.print = function(line) progress.clear() out:write(line, "\n") end end
  local partial
  o.on_result = function(r) partial = r end
  local result, rerr, kind = _M.run(o)
  progress.clear()
  if o.client then o.client:close() end
  if not result then
    if as_json and partial and kind ~= "usage" then
      -- what was made before the failure (a new connector's id...), and the error
      partial.error = { message = tostring(rerr), code = type(rerr) == "table" and rerr.code or nil }
      local text = json.encode(partial, { indent = 2 })
      if text then out:write(text, "\n") end
    end
    err:write("biconnector register: ", tostring(rerr), "\n")
    local hint = cli_call.hint(rerr)
    if hint then err:write("biconnector register: ", hint, "\n") end
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
