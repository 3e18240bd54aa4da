-- biconnector.connector.list: what every module takes for a list. A list is a sequence,
-- keys 1..n and nothing else (the empty table included), which is what a
-- JSON array decodes to (null items decode as the core's null, never as a
-- hole), so one rule serves decoded bodies and tables given by Lua callers.
local type, pairs, ipairs, tonumber = type, pairs, ipairs, tonumber
local floor = math.floor
local sort = table.sort

local _M = {}

-- A sequence 1..n (also empty).
function _M.is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= floor(k) then return false end
    n = n + 1
  end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return true
end

-- A table keyed only by integers (or their decimal text) that is not a
-- sequence, as a form's `x[1]=b&x[0]=a` or `x[0]=a&x[2]=c` decodes, or JSON
-- {"0":"a","1":"b"} as PHP's json_encode writes such an array: its values in
-- the order of their keys. nil for anything else (another key, the same
-- number twice as 1 and "1", an empty table).
function _M.by_key(t)
  local keys = {}
  for k in pairs(t) do
    local n = k
    if type(k) == "string" and #k < 16 and k:match("^%-?%d+$") then n = tonumber(k) end
    if type(n) ~= "number" or n ~= floor(n) then return nil end
    keys[#keys + 1] = { n, k }
  end
  if #keys == 0 then return nil end
  sort(keys, function(a, b) return a[1] < b[1] end)
  local out = {}
  for i, nk in ipairs(keys) do
    if i > 1 and nk[1] == keys[i - 1][1] then return nil end
    out[i] = t[nk[2]]
  end
  return out
end

return _M
