-- biconnector.connector.cache (public name biconnector.cache): the answers of /table_list and /table_description kept
-- for a while (a connector's `cache = { ttl = SECONDS }`, docs/connector.md).
--
-- The key is the SHA-256 of the connector's namespace, the endpoint, the
-- connection values and the search or table code: the values themselves
-- (tokens, passwords) are never stored, and a connection never gets another
-- connection's answer. Only 200 answers are kept: an error is computed again
-- on the next request.
--
-- Stores: cache.memory([max_entries]) in the process (the default; one per
-- connector object, so a reload starts empty), cache.ngx_shared(dict) for the
-- workers of one nginx. A store is any object with get(key) -> string | nil
-- and set(key, value, ttl_seconds).
local core = require "biconnector.core"

local sha256 = core.sha256
local concat, sort = table.concat, table.sort
local type, tostring, pairs = type, tostring, pairs

local _M = {}

-- The memory store's clock: the core's monotonic one, under nginx too. There
-- ngx.now() (lua-resty-core's FFI call, whose trace aborts at its tonumber)
-- took about 1.7k instructions of a cached /table_list under LuaJIT
-- (issue 25, callgrind); a TTL is a duration, which a monotonic clock
-- measures whatever the wall clock does.
local clock = core.os.clock

-- The order of keys in the canonical text: strings and numbers by value,
-- false before true, any other pair by type name (one function: no closure
-- made per table).
local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "string" or ta == "number" then return a < b end
  return ta == "boolean" and b and not a
end

local TAG = { string = "s", number = "n", boolean = "b" }

-- A canonical text of a value into out[n+1...]: sorted keys, lengths before
-- strings, so that different connections never give the same text. -> n
local function canonical(v, out, n)
  local t = type(v)
  if t == "table" then
    local keys, nk = {}, 0
    for k in pairs(v) do
      nk = nk + 1
      keys[nk] = k
    end
    sort(keys, key_order)
    n = n + 1
    out[n] = "{" .. nk .. ":"
    for i = 1, nk do
      local k = keys[i]
      n = canonical(v[k], out, canonical(k, out, n))
    end
    n = n + 1
    out[n] = "}"
  else
    local s = tostring(v)
    n = n + 1
    out[n] = (TAG[t] or t:sub(1, 1)) .. #s .. ":" .. s
  end
  return n
end

local c_key = core.cache_key

-- cache.key(namespace, endpoint, connection, arg) -> "bic:cache:<64 hex digits>":
-- the SHA-256 of the canonical text of the list {namespace, endpoint,
-- connection, arg}. The C core writes it (core.cache_key, straight into the
-- hash) for strings, numbers, booleans and tables of them; anything else is
-- written here (rarely: the C writer's speed is not needed), the same text.
function _M.key(namespace, endpoint, connection, arg)
  namespace, connection, arg = namespace or "", connection or {}, arg or ""
  local key = c_key(namespace, endpoint, connection, arg)
  if key then return key end
  local out = {}
  canonical({ namespace, endpoint, connection, arg }, out, 0)
  return "bic:cache:" .. sha256(concat(out))
end

-- In process memory: at most max_entries (default 1000) answers; when full,
-- the expired ones go first, then everything (a cache, not a store).
local Memory = {}
Memory.__index = Memory

function _M.memory(max_entries)
  return setmetatable({ entries = {}, count = 0, max = max_entries or 1000 }, Memory)
end

function Memory:get(key)
  local e = self.entries[key]
  if not e then return nil end
  if e.expires <= clock() then
    self.entries[key] = nil
    self.count = self.count - 1
    return nil
  end
  return e.value
end

function Memory:set(key, value, ttl)
  if not self.entries[key] then
    if self.count >= self.max then
      local now = clock()
      for k, e in pairs(self.entries) do
        if e.expires <= now then self.entries[k] = nil self.count = self.count - 1 end
      end
      if self.count >= self.max then self.entries, self.count = {}, 0 end
    end
    self.count = self.count + 1
  end
  self.entries[key] = { value = value, expires = clock() + ttl }
  return true
end

-- A lua_shared_dict (or its name): shared by the workers of one nginx; the
-- dict drops the least recently used entries when it is full.
local Shared = {}
Shared.__index = Shared

-- cache.shared_dict(dict or name, who): the lua_shared_dict itself; a name
-- that nginx does not declare is an error of the caller of `who`.
function _M.shared_dict(dict, who)
  if type(dict) == "string" then
    local name = dict
    dict = ngx and ngx.shared and ngx.shared[name]
    if not dict then error(who .. ": no lua_shared_dict named " .. name, 3) end
  end
  return dict
end

function _M.ngx_shared(dict)
  return setmetatable({ dict = _M.shared_dict(dict, "biconnector.cache") }, Shared)
end

function Shared:get(key)
  local v = self.dict:get(key)
  if type(v) == "string" then return v end
  return nil
end

function Shared:set(key, value, ttl)
  return self.dict:set(key, value, ttl)
end

return _M
