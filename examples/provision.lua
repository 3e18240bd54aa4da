-- Provision a BI Builder connector, one source and one table in a Bitrix24
-- portal (connector -> source -> table, biconnector.table.*); running it again
-- updates what exists instead of adding duplicates.
--
-- Usage: lua examples/provision.lua BASE_URL
--   BASE_URL is where the connector is served (it gets /check, /table_list, ...).
-- Auth (an application: the biconnector methods refuse webhooks), from env, read
-- as `biconnector call` reads it (docs/rest.md):
--   BITRIX24_PORTAL, BITRIX24_ACCESS_TOKEN, BITRIX24_REFRESH_TOKEN,
--   BITRIX24_CLIENT_ID, BITRIX24_CLIENT_SECRET
--   a token store that keeps renewed tokens, shared with other scripts and the CLI:
--   BITRIX24_TOKENS_FILE=PATH or BITRIX24_TOKENS_REDIS=redis://... (BITRIX24_TOKENS_KEY);
--   one holding an installed application's tokens (serve --app) names the portal.
--   Without a store a renewal spends BITRIX24_REFRESH_TOKEN (single-use) and
--   stderr says so: the next run with the same environment would fail.
--   optional: BITRIX24_OAUTH_URL, BITRIX24_CA_FILE
-- The source's setting `token` comes from SALES_TOKEN (README's sales.lua, served
-- at BASE_URL, checks the same variable); the portal calls BASE_URL/check with it
-- when it creates or updates the source, and refuses the source unless that answers.
local biconnector = require "biconnector"
local cli_call = require "biconnector.cli.call"

local base_url = arg[1] or error("usage: provision.lua BASE_URL")
local env = os.getenv

-- The client options and the token store, as the CLI takes them from the environment
-- (tokens.from_env; without a store, a renewal is told on stderr).
local options, oerr = cli_call.options_from_env()
if options and options.webhook then
  options, oerr = nil, "the biconnector methods refuse incoming webhooks: give an application's tokens"
    .. " (BITRIX24_PORTAL and BITRIX24_ACCESS_TOKEN, or BITRIX24_TOKENS_FILE: docs/app.md)"
end
if not options then io.stderr:write("provision.lua: ", oerr, "\n") os.exit(2) end
local client = assert(biconnector.rest.new(options))

local function check(ok, err)
  if ok == nil then io.stderr:write(tostring(err), "\n") os.exit(1) end
  return ok
end

local connector_fields = {
  title = "Sales (biconnector-lua)", sourceCode = "biconnector_lua_sales",
  logo = "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciLz4=",
  description = "Sales tables served by biconnector-lua",
  urlCheck = base_url .. "/check", urlTableList = base_url .. "/table_list",
  urlTableDescription = base_url .. "/table_description", urlData = base_url .. "/data",
  settings = { { code = "token", name = "API token", type = "STRING" } },
}

-- Bitrix24's own application recognises its connectors by sourceCode, then title.
local connector_id
for _, c in ipairs(check(client.connector:list())) do
  if (c.sourceCode and c.sourceCode == connector_fields.sourceCode) or c.title == connector_fields.title then
    connector_id = c.id
  end
end
if connector_id then
  check(client.connector:update(connector_id, connector_fields))
else
  connector_id = check(client.connector:add(connector_fields))
end

local source_title = "Main sales database"
local source_id
for _, s in ipairs(check(client.source:list({ filter = { connectorId = connector_id } }))) do
  if s.title == source_title then source_id = s.id end
end
local source_fields = { title = source_title, settings = { token = env("SALES_TOKEN") or "change-me" } }
-- source.add/update: the portal calls urlCheck with the settings first
local function check_source(ok, err)
  if ok == nil and type(err) == "table" and tostring(err.code):find("^SOURCE_.*CONNECTION_ERROR$") then
    err = tostring(err) .. "\nthe portal called " .. base_url .. "/check with the token from SALES_TOKEN"
      .. (env("SALES_TOKEN") and "" or " (unset: \"change-me\" was sent)")
      .. " and got no 200 answer: serve the connector there, at an address the portal reaches,"
      .. " and set SALES_TOKEN to the token it checks"
  end
  return check(ok, err)
end
if source_id then
  check_source(client.source:update(source_id, source_fields))
else
  source_fields.connectorId = connector_id
  source_id = check_source(client.source:add(source_fields))
end

-- the columns README's sales.lua describes for its table deals: Bitrix24 asks the
-- connector's /data for them by externalCode, so they must be the connector's field codes
local wanted = {
  { type = "int", name = "ID", externalCode = "id" },
  { type = "double", name = "AMOUNT", externalCode = "amount" },
  { type = "datetime", name = "CLOSED", externalCode = "closed" },
}
-- table.list answers each table's sourceId but not its columns; table.get the columns
local table_id
for _, t in ipairs(check(client.table:list({ filter = { sourceId = source_id } }))) do
  if t.externalCode == "deals" then table_id = t.id end
end
if table_id then
  -- add the columns the table lacks; never touch the ones BI reports use
  local current = check(client.table:get(table_id)).fields
  local have, add = {}, {}
  for _, f in ipairs(current) do have[f.externalCode] = true end
  for _, f in ipairs(wanted) do if not have[f.externalCode] then add[#add + 1] = f end end
  if #add > 0 then check(client.table:fields_update(table_id, { add = add }, { current = current })) end
else
  -- the name is unique across the portal and can never change
  table_id = check(client.table:add({ name = "sales_deals", externalName = "Deals", externalCode = "deals",
    sourceId = source_id, description = "Closed deals", fields = wanted }))
end

print(("connector=%s source=%s table=%s"):format(connector_id, source_id, table_id))
