-- Provision a BI Builder connector, one source and one table in a Bitrix24
-- portal (connector -> source -> table, biconnector.table.*); running it again
-- updates what exists instead of adding duplicates.
--
-- Usage: lua examples/provision.lua BASE_URL
--   BASE_URL is where the connector is served (it gets /check, /table_list, ...).
-- Auth (an application: the biconnector methods refuse webhooks), from env:
--   BITRIX24_PORTAL, BITRIX24_ACCESS_TOKEN, BITRIX24_REFRESH_TOKEN,
--   BITRIX24_CLIENT_ID, BITRIX24_CLIENT_SECRET
--   optional: BITRIX24_OAUTH_URL, BITRIX24_TOKENS_FILE (a token file shared with
--   other scripts; renewed tokens are kept there), BITRIX24_CA_FILE
-- The source's setting `token` comes from SALES_TOKEN (README's sales.lua, served
-- at BASE_URL, checks the same variable); the portal calls BASE_URL/check with it
-- when it creates or updates the source, and refuses the source unless that answers.
local biconnector = require "biconnector"
local tokens = require "biconnector.tokens"

local base_url = arg[1] or error("usage: provision.lua BASE_URL")
local env = os.getenv

local client = assert(biconnector.rest.new {
  portal = env("BITRIX24_PORTAL"),
  access_token = env("BITRIX24_ACCESS_TOKEN"), refresh_token = env("BITRIX24_REFRESH_TOKEN"),
  client_id = env("BITRIX24_CLIENT_ID"), client_secret = env("BITRIX24_CLIENT_SECRET"),
  oauth_url = env("BITRIX24_OAUTH_URL"), ca_file = env("BITRIX24_CA_FILE"),
  store = env("BITRIX24_TOKENS_FILE") and tokens.file(env("BITRIX24_TOKENS_FILE")) or nil,
})

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

local wanted = {
  { type = "int", name = "ID", externalCode = "id" },
  { type = "string", name = "TITLE", externalCode = "title" },
  { type = "datetime", name = "CLOSED_AT", externalCode = "closed_at" },
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
