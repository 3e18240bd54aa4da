-- bench/ngx: the demo's rows made once per worker (precomputed), for the
-- comparison with a hand-written OpenResty handler on the same rows (issue 25):
--   rows(code) -> the list of array rows (described order), null as
--                 biconnector.null; nil for an unknown table
--   cjson_rows(code) -> the anchor's answer table: the header row of codes
--                 then the same rows, null as cjson.null
--   connector -> the demo connector whose data returns rows(code) as it is
--   cached -> the same with cache = {ttl} (its /table_list from memory)
local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
local data = dofile(here .. "../examples/demo/data.lua")
local biconnector = require "biconnector"

local _M = {}

local made, made_cjson = {}, {}

function _M.rows(code)
  local list = made[code]
  if list then return list end
  local iter = data.rows(code)
  if not iter then return nil end
  list = {}
  for row in iter do list[#list + 1] = row end
  made[code] = list
  return list
end

function _M.cjson_rows(code)
  local out = made_cjson[code]
  if out then return out end
  local cjson = require "cjson"
  local null = biconnector.null
  out = { {} }
  for i, f in ipairs(data.fields(code)) do out[1][i] = f.code end
  for _, row in ipairs(_M.rows(code)) do
    local copy = {}
    for i = 1, #data.fields(code) do
      local v = row[i]
      if v == null then v = cjson.null end
      copy[i] = v
    end
    out[#out + 1] = copy
  end
  made_cjson[code] = out
  return out
end

local TOKEN = "demo-token"

local function definition(cache)
  return {
    title = "biconnector bench (precomputed demo rows)",
    settings = { { code = "token", name = "Access token", type = "STRING" } },
    secrets = { TOKEN },
    check = function(connection) return connection.token == TOKEN, "wrong token" end,
    tables = function() return data.TABLES end,
    describe = function(_, code) return data.fields(code) end,
    data = function(_, q) return _M.rows(q.table) end,
    cache = cache,
  }
end

_M.connector = biconnector.connector(definition())
-- the same with the introspection cache (per worker): /table_list and
-- /table_description answered from memory after the first time
_M.cached = biconnector.connector(definition({ ttl = 3600 }))

return _M
