-- biconnector.rest.tokens_redis (public name biconnector.tokens_redis): an OAuth token store in Redis, shared by every
-- process on every machine that reaches the same Redis (tokens.redis(opts)).
--
-- The tokens are one JSON string under opts.key. The renewal lock is the key
-- "<key>:lock", taken with SET lock owner NX PX ttl, where owner is unique
-- to this holder ("host:pid:random:serial"); it is released only by its owner
-- (a compare-and-delete script run with EVAL), so a holder whose lock
-- expired never deletes the lock another holder took since. A holder that
-- dies keeps the lock until it expires (opts.lock_ttl, default 60 seconds:
-- longer than a renewal takes). Waiters poll with a doubling delay (5 ms up to
-- 200 ms) until opts.lock_timeout (30 seconds).
--
-- Clients: inside OpenResty, where cosockets work (rewrite, access, content,
-- timer phases), lua-nginx-redis (require "resty.redis", or "nginx.redis" as
-- Debian names it) on a pooled cosocket; elsewhere lua-redis (require
-- "redis", on LuaSocket), one connection per store, made again after an
-- error or in a forked child.
local core = require "biconnector.core"
local json = require "biconnector.json"

local format, tostring, tonumber, type, pcall = string.format, tostring, tonumber, type, pcall
local unpack = table.unpack or unpack -- luacheck: ignore 143

local _M = {}

-- Releases the lock only when it still holds our owner value.
local UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

local function in_cosocket_phase()
  if type(ngx) ~= "table" or not ngx.get_phase then return false end
  local phase = ngx.get_phase()
  return phase == "rewrite" or phase == "access" or phase == "content" or phase == "timer"
    or phase == "ssl_cert" or phase == "ssl_session_fetch"
end

-- The first of the Redis client modules named that loads (lazy: which one is
-- installed, and which fits the phase, is known only when a store connects).
local function require_first(...)
  local errs = {}
  for i = 1, select("#", ...) do
    local name = select(i, ...)
    local ok, mod = pcall(require, name)
    if ok then return mod end
    errs[#errs + 1] = name
  end
  return nil, errs
end

-- lua-redis outside nginx. Debian installs it for Lua 5.1 to 5.3; the file is
-- plain Lua that runs on 5.4 too, so 5.4 finds it in the 5.3 tree.
local function luasocket_redis()
  local mod = require_first("redis")
  if mod then return mod end
  for _, path in ipairs({ "/usr/share/lua/5.3/redis.lua", "/usr/share/lua/5.1/redis.lua" }) do
    local chunk = loadfile(path)
    if chunk then
      local ok, m = pcall(chunk, "redis")
      if ok and type(m) == "table" then
        package.loaded.redis = m
        return m
      end
    end
  end
  return nil
end

local function read_line(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*l")
  f:close()
  return s
end

local function random_hex()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(8)
  if f then f:close() end
  if not bytes or #bytes < 8 then return format("%08x", math.random(0, 0x7fffffff)) end
  return (bytes:gsub(".", function(c) return format("%02x", c:byte()) end))
end

local function current_pid()
  if type(ngx) == "table" and ngx.worker and ngx.worker.pid then
    return ngx.worker.pid()
  end
  return core.process.getpid()
end

-- lua-redis raises "…/redis.lua:808: could not connect …": keep the message
local function clean(err)
  return (tostring(err):gsub("^[^\n]-redis%.lua:%d+: ", ""))
end

local function sleep(seconds)
  if type(ngx) == "table" and ngx.sleep then
    local ok = pcall(ngx.sleep, seconds)
    if ok then return end
  end
  core.os.sleep(seconds)
end

local Store = {}
Store.__index = Store

-- opts: key (required), host ("127.0.0.1"), port (6379), password, db,
-- timeout (seconds for connect/read, 5), lock_ttl (60), lock_timeout (30),
-- pool_size (nginx keepalive pool, 32).
function _M.new(opts)
  if type(opts) ~= "table" then error("tokens.redis: expects a table of options", 2) end
  if type(opts.key) ~= "string" or opts.key == "" then error("tokens.redis: key must be a non-empty string", 2) end
  local port = tonumber(opts.port or 6379)
  if not port or port < 1 or port > 65535 or port ~= math.floor(port) then
    error("tokens.redis: port must be a TCP port number, got " .. tostring(opts.port), 2)
  end
  for _, name in ipairs({ "timeout", "lock_ttl", "lock_timeout" }) do
    if opts[name] ~= nil and (type(opts[name]) ~= "number" or opts[name] ~= opts[name] or opts[name] <= 0) then
      error(format("tokens.redis: %s must be a positive number of seconds", name), 2)
    end
  end
  return setmetatable({
    key = opts.key, lock_key = opts.key .. ":lock", host = opts.host or "127.0.0.1", port = port,
    password = opts.password, db = opts.db, timeout = opts.timeout or 5,
    lock_ttl = opts.lock_ttl or 60, lock_timeout = opts.lock_timeout or 30, pool_size = opts.pool_size or 32,
    serial = 0,
  }, Store)
end

-- Another key beside this one, on the same Redis (tokens.lua, File:beside);
-- opts.lock_ttl: its lock's own time to live (default this store's).
function Store:beside(suffix, opts)
  return _M.new({ key = self.key .. suffix, host = self.host, port = self.port, password = self.password,
    db = self.db, timeout = self.timeout, lock_ttl = opts and opts.lock_ttl or self.lock_ttl, lock_timeout = self.lock_timeout,
    pool_size = self.pool_size })
end

function Store:where()
  return format("redis %s:%d", self.host, self.port)
end

-- Runs fn(client) on a connected client; fn calls client commands by name.
-- Returns what fn returns, or nil, err. The password never appears in err.
function Store:with(fn)
  if in_cosocket_phase() then
    local mod = require_first("resty.redis", "nginx.redis")
    if mod then return self:with_cosocket(mod, fn) end
  end
  return self:with_luasocket(fn)
end

function Store:pool_name()
  if not self.pool then
    local secret = self.password and core.sha256(self.password):sub(1, 16) or "-"
    self.pool = format("bic-tokens:%s:%d:%s:%s", self.host, self.port, tostring(self.db or 0), secret)
  end
  return self.pool
end

function Store:with_cosocket(mod, fn)
  local red = mod:new()
  red:set_timeout(self.timeout * 1000)
  -- pooled connections are authenticated and have their db selected: one pool per
  -- address, db and password (its digest: the pool name is no place for it)
  local ok, err = red:connect(self.host, self.port, { pool = self:pool_name() })
  if not ok then return nil, format("%s: cannot connect: %s", self:where(), tostring(err)) end
  if (red.get_reused_times and red:get_reused_times() or 0) == 0 then
    if self.password then
      local a, aerr = red:auth(self.password)
      if not a then red:close() return nil, format("%s: AUTH failed: %s", self:where(), clean(aerr)) end
    end
    if self.db then
      local s, serr = red:select(self.db)
      if not s then red:close() return nil, format("%s: SELECT failed: %s", self:where(), clean(serr)) end
    end
  end
  local client = {
    call = function(_, name, ...)
      local res, cerr = red[name](red, ...)
      if res == nil then error({ redis = tostring(cerr) }, 0) end
      if res == ngx.null then return nil end
      return res
    end,
  }
  local pok, a, b = pcall(fn, client)
  if not pok then
    red:close()
    return nil, format("%s: %s", self:where(), type(a) == "table" and a.redis or tostring(a))
  end
  red:set_keepalive(60000, self.pool_size)
  return a, b
end

function Store:with_luasocket(fn)
  local pid = current_pid()
  if self.conn and self.conn_pid ~= pid then self.conn = nil end -- a forked child: never share the parent's socket
  if not self.conn then
    local redis = luasocket_redis()
    if not redis then return nil, "tokens.redis: no Redis client (Debian: lua-redis)" end
    local ok, conn = pcall(redis.connect, { host = self.host, port = self.port, timeout = self.timeout })
    if not ok then return nil, format("%s: cannot connect: %s", self:where(), clean(conn)) end
    if self.password then
      local a, aerr = pcall(conn.auth, conn, self.password)
      if not a then pcall(conn.quit, conn) return nil, format("%s: AUTH failed: %s", self:where(), clean(aerr)) end
    end
    if self.db then
      local s, serr = pcall(conn.select, conn, self.db)
      if not s then pcall(conn.quit, conn) return nil, format("%s: SELECT failed: %s", self:where(), clean(serr)) end
    end
    self.conn, self.conn_pid = conn, pid
  end
  local conn = self.conn
  local client = { call = function(_, name, ...) return conn[name](conn, ...) end }
  local ok, a, b = pcall(fn, client)
  if not ok then
    -- the connection may be out of step with the server now: start afresh next time
    pcall(function() conn.network.socket:close() end)
    self.conn = nil
    return nil, format("%s: %s", self:where(), clean(a))
  end
  return a, b
end

function Store:close()
  if self.conn then
    pcall(function() self.conn.network.socket:close() end)
    self.conn = nil
  end
end

function Store:get()
  local text, err = self:with(function(c) return c:call("get", self.key) end)
  if err then return nil, err end
  if type(text) ~= "string" then return nil end
  local t = json.decode(text)
  if type(t) ~= "table" then return nil, format("%s: key %s holds no JSON object of tokens", self:where(), self.key) end
  return t
end

-- Writes the tokens only while the stored object's fields still hold what
-- expect names (a string; false: the field absent), read and written in one script: the
-- renewal's compare-and-set (rest client), which holds even when the lock it
-- renews under expired meanwhile. ARGV: the new JSON, then field, kind, value
-- triples (kind "s": that string; "-": absent).
local SET_IF = [=[
local cur = redis.call('get', KEYS[1])
if not cur then return 0 end
local ok, t = pcall(cjson.decode, cur)
if not ok or type(t) ~= 'table' then return 0 end
for i = 2, #ARGV, 3 do
  local v = t[ARGV[i]]
  if ARGV[i + 1] == '-' then
    if v ~= nil and v ~= cjson.null then return 0 end
  elseif v ~= ARGV[i + 2] then return 0 end
end
redis.call('set', KEYS[1], ARGV[1])
return 1
]=]

-- store:set(tokens [, expect]) -> true | false (expect: the stored object no
-- longer holds those field values; nothing written) | nil, err
function Store:set(t, expect)
  local text, eerr = json.encode(t)
  if not text then return nil, "cannot encode the tokens: " .. tostring(eerr) end
  if type(expect) == "table" then
    local args = { text }
    for field, value in pairs(expect) do
      if type(value) == "string" or value == false then
        local n = #args
        args[n + 1], args[n + 2], args[n + 3] = field, value and "s" or "-", value or ""
      end
    end
    local done, err = self:with(function(c) return c:call("eval", SET_IF, 1, self.key, unpack(args)) end)
    if err then return nil, err end
    return tonumber(done) == 1
  end
  local ok, err = self:with(function(c) return c:call("set", self.key, text) end)
  if err then return nil, err end
  if not ok then return nil, self:where() .. ": SET did not answer OK" end
  return true
end

-- Takes the lock: SET NX PX with our owner value; polls with backoff while
-- another holds it. Returns the unlock function, or nil, err.
function Store:lock()
  self.serial = self.serial + 1
  local mine = format("%s:%d:%s:%d", read_line("/proc/sys/kernel/hostname") or "host", current_pid(), random_hex(), self.serial)
  local ttl_ms = math.floor(self.lock_ttl * 1000 + 0.5)
  local clock = (type(ngx) == "table" and ngx.now) and function() ngx.update_time() return ngx.now() end
    or core.os.clock
  local deadline = clock() + self.lock_timeout
  local step = 0.005
  while true do
    local got, err = self:with(function(c)
      if c:call("set", self.lock_key, mine, "NX", "PX", ttl_ms) then return true end
      -- a SET whose answer was lost and was sent again: the lock may be ours already
      return c:call("get", self.lock_key) == mine
    end)
    if got then
      return function()
        local _, uerr = self:with(function(c) return c:call("eval", UNLOCK, 1, self.lock_key, mine) end)
        return uerr == nil
      end
    end
    if err then return nil, "cannot take the token lock " .. self.lock_key .. ": " .. err end
    if clock() >= deadline then
      return nil, format("timed out after %gs waiting for the token lock %s on %s", self.lock_timeout, self.lock_key, self:where())
    end
    sleep(step * (0.75 + 0.5 * math.random()))
    step = math.min(step * 2, 0.2)
  end
end

return _M
