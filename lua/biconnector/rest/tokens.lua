-- biconnector.rest.tokens (public name biconnector.tokens): OAuth token stores for the REST client.
--
-- A store is any object with three methods:
--   store:get()        -> the token table ({access_token=, refresh_token=, ...}) or nil
--   store:set(tokens [, expect]) -> true, or nil, err (replaces what get returns;
--                         expect {field = value | false}: a store that compares
--                         atomically (tokens.redis) writes only while the stored
--                         fields hold those values, else answers false; the
--                         others ignore it: the client compared under the lock)
--   store:lock()       -> an unlock function, or nil, err
--                         (held while renewing; blocks until granted)
-- The client renews like this: lock, get again (another process may have
-- renewed meanwhile), renew only if the stored access token is still the one
-- that failed (and the store holds a pair at all: an uninstalled application's
-- store is not written back), read again and set only over that same pair,
-- unlock. A refresh token is single-use, so every process sharing the tokens
-- must share the store and its lock.
--
-- Stores: tokens.memory([initial]), tokens.file(path [, opts]) for processes
-- on one machine, tokens.ngx_shared(dict, key [, opts]) for OpenResty workers,
-- tokens.redis(opts) for processes and nginx workers on any number of machines
-- (biconnector.tokens_redis; docs/rest.md, "Token stores").
local core = require "biconnector.core"
local json = require "biconnector.json"
local tokens_redis = require "biconnector.rest.tokens_redis"

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
-- The lock matters when the transport yields (rest.ngx_transport): light
-- threads sharing one client would otherwise all renew with the same
-- single-use refresh token, and all but one get invalid_grant. A second
-- taker waits with ngx.sleep until the first unlocks (at most lock_timeout);
-- where nothing can wait, it is refused rather than let through.
function Memory:lock()
  local ngx_ = rawget(_G, "ngx")
  local deadline
  while self.held do
    if not (type(ngx_) == "table" and ngx_.sleep and ngx_.now) then
      return nil, "the in-memory token store is being renewed by another coroutine (use a transport that yields inside OpenResty)"
    end
    deadline = deadline or ngx_.now() + (self.lock_timeout or 90)
    if ngx_.now() >= deadline then return nil, "timed out waiting for the in-memory token lock" end
    local slept, err = pcall(ngx_.sleep, 0.005)
    if not slept then return nil, "cannot wait for the in-memory token lock here: " .. tostring(err) end
  end
  local mine = {}
  self.held = mine
  return function() if self.held == mine then self.held = nil end end
end

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
  if type(t) ~= "table" then return nil, self.path .. " holds no JSON object of tokens" end
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

-- In OpenResty: an ngx.shared.DICT shared by the workers. The lock is a key
-- taken with dict:add (atomic), expiring by itself after opts.lock_exptime
-- seconds (default 60) should its holder die; waiters poll with ngx.sleep
-- (which yields, so other requests go on) up to opts.lock_timeout (30).
-- Where ngx.sleep cannot run (init_by_lua) the lock fails with a message.
local Shared = {}
Shared.__index = Shared

function _M.ngx_shared(dict, key, opts)
  if type(dict) == "string" then
    local name = dict
    dict = ngx and ngx.shared and ngx.shared[name]
    if not dict then error("tokens.ngx_shared: no lua_shared_dict named " .. name, 2) end
  end
  if type(dict) ~= "table" and type(dict) ~= "userdata" then error("tokens.ngx_shared: dict must be a shared dict or its name", 2) end
  if type(key) ~= "string" or key == "" then error("tokens.ngx_shared: key must be a non-empty string", 2) end
  opts = opts or {}
  return setmetatable({ dict = dict, key = key, lock_key = key .. ":lock",
    lock_exptime = opts.lock_exptime or 60, lock_timeout = opts.lock_timeout or 30 }, Shared)
end

function Shared:get()
  local text = self.dict:get(self.key)
  if type(text) ~= "string" then return nil end
  local t = json.decode(text)
  if type(t) ~= "table" then return nil end
  return t
end

function Shared:set(t)
  local text, err = json.encode(t)
  if not text then return nil, "cannot encode the tokens: " .. tostring(err) end
  local ok, serr = self.dict:set(self.key, text)
  if not ok then return nil, "cannot store the tokens in the shared dict: " .. tostring(serr) end
  return true
end

local lock_serial = 0

function Shared:lock()
  lock_serial = lock_serial + 1
  local mine = ("%d:%d:%s"):format(ngx.worker.pid(), lock_serial, tostring(ngx.now()))
  local deadline = ngx.now() + self.lock_timeout
  local step = 0.002
  while true do
    local ok, err = self.dict:add(self.lock_key, mine, self.lock_exptime)
    if ok then
      return function()
        -- only our own lock: it may have expired and been taken by another
        if self.dict:get(self.lock_key) == mine then self.dict:delete(self.lock_key) end
      end
    end
    if err ~= "exists" then return nil, "cannot take the token lock " .. self.lock_key .. ": " .. tostring(err) end
    if ngx.now() >= deadline then return nil, "timed out waiting for the token lock " .. self.lock_key end
    local slept, serr = pcall(ngx.sleep, step)
    if not slept then return nil, "cannot wait for the token lock here: " .. tostring(serr) end
    step = math.min(step * 2, 0.1)
  end
end

function _M.redis(opts)
  return tokens_redis.new(opts)
end

-- store:beside(suffix [, {lock_ttl = seconds}]): a store of the same kind
-- next to this one, its lock expiring after lock_ttl where locks expire (another
-- file, another key), for a lock of its own: `serve --app` registers under
-- one that is not the renewal lock, which a renewal inside the registration takes.
function Memory:beside() return _M.memory() end
function File:beside(suffix) return _M.file(self.path .. suffix) end
function Shared:beside(suffix, opts)
  return _M.ngx_shared(self.dict, self.key .. suffix, { lock_exptime = opts and opts.lock_ttl or self.lock_exptime,
    lock_timeout = self.lock_timeout })
end

-- redis://[:PASSWORD@]HOST[:PORT][/DB] -> tokens.redis options, or nil, message
-- (the message never holds the password)
function _M.parse_redis_url(url, key)
  local rest = type(url) == "string" and url:match("^redis://(.+)$")
  if not rest then return nil, "expected redis://[:PASSWORD@]HOST[:PORT][/DB]" end
  local password
  local auth, after = rest:match("^(.*)@([^@]*)$")
  if auth then
    password, rest = auth:match("^[^:]*:(.*)$") or auth, after
    password = password:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  end
  local hostport, db = rest:match("^([^/]+)/?(%d*)$")
  if not hostport then return nil, "expected redis://[:PASSWORD@]HOST[:PORT][/DB], the DB a number" end
  local host, port = hostport:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([^:]+):?(%d*)$") end
  if not host then return nil, "no host in the redis URL" end
  return { host = host, port = tonumber(port) or 6379, db = tonumber(db), password = password ~= "" and password or nil,
    key = key or "biconnector:tokens" }
end

-- The token store the environment names (the commands' shared convention):
-- BITRIX24_TOKENS_FILE=PATH, or BITRIX24_TOKENS_REDIS=redis://[:PASSWORD@]HOST[:PORT][/DB]
-- with BITRIX24_TOKENS_KEY (default biconnector:tokens). -> store, what it is
-- (for messages: no password) | nil (none named) | nil, message
function _M.from_env(getenv)
  getenv = getenv or os.getenv
  local file, redis = getenv("BITRIX24_TOKENS_FILE"), getenv("BITRIX24_TOKENS_REDIS")
  if file and file ~= "" and redis and redis ~= "" then
    return nil, "BITRIX24_TOKENS_FILE and BITRIX24_TOKENS_REDIS name two token stores: choose one"
  end
  if file and file ~= "" then return _M.file(file), "file " .. file end
  if redis and redis ~= "" then
    local key = getenv("BITRIX24_TOKENS_KEY")
    if key == "" then key = nil end -- (BITRIX24_TOKENS_KEY= in an environment file: the default)
    local opts, err = _M.parse_redis_url(redis, key)
    if not opts then return nil, "BITRIX24_TOKENS_REDIS: " .. err end
    local store = _M.redis(opts)
    return store, ("redis %s:%d key %s"):format(opts.host, opts.port, opts.key)
  end
  return nil
end

return _M
