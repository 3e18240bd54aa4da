-- biconnector.tokens: OAuth token stores for the REST client.
--
-- A store is any object with three methods:
--   store:get()        -> the token table ({access_token=, refresh_token=, ...}) or nil
--   store:set(tokens)  -> true, or nil, err       (replaces what get returns)
--   store:lock()       -> an unlock function, or nil, err
--                         (held while renewing; blocks until granted)
-- The client renews like this: lock, get again (another process may have
-- renewed meanwhile), renew only if the stored access token is still the one
-- that failed, set, unlock. A refresh token is single-use, so every process
-- sharing the tokens must share the store and its lock.
local core = require "biconnector.core"
local json = require "biconnector.json"

local http = core.http
local _M = {}

local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- In memory: one process. The lock is a no-op (Lua code runs one at a time).
local Memory = {}
Memory.__index = Memory

function _M.memory(initial)
  return setmetatable({ tokens = copy(initial) }, Memory)
end

function Memory:get() return copy(self.tokens) end
function Memory:set(t) self.tokens = copy(t) return true end
function Memory:lock() return function() end end

-- A JSON file shared by processes: written atomically (temporary file, fsync,
-- rename) and guarded by flock on "<path>.lock".
local File = {}
File.__index = File

function _M.file(path, opts)
  if type(path) ~= "string" or path == "" then error("tokens.file: path must be a non-empty string", 2) end
  opts = opts or {}
  return setmetatable({ path = path, lock_path = opts.lock_path or (path .. ".lock") }, File)
end

function File:get()
  local f = io.open(self.path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  if text == nil or text == "" then return nil end
  local t = json.decode(text)
  if type(t) ~= "table" then return nil end
  return t
end

function File:set(t)
  local text, err = json.encode(t)
  if not text then return nil, "cannot encode the tokens: " .. tostring(err) end
  local ok, werr = http.write_atomic(self.path, text)
  if not ok then return nil, werr end
  return true
end

function File:lock()
  local lk, err = http.lock(self.lock_path)
  if not lk then return nil, err end
  return function() lk:unlock() end
end

return _M
