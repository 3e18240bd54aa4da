-- URLs of database servers, shared by the PostgreSQL and MySQL engine modules:
--
--   scheme://[user[:password]@]host[:port][/database][?key=value&...]
--
-- The password is taken, first found: from the URL, from the environment
-- variable BICONNECTOR_DB_PASSWORD, from the file named by
-- BICONNECTOR_DB_PASSWORD_FILE (one trailing newline dropped). It is never
-- printed: display() leaves it out and the drivers mask it in their errors.
-- %XX escapes are decoded in user, password, host, database and option values.
local _M = {}

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
_M.unescape = unescape

local function read_password_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, "BICONNECTOR_DB_PASSWORD_FILE: cannot read " .. tostring(err) end
  local s = f:read("*a") or ""
  f:close()
  return (s:gsub("\r?\n$", ""))
end

-- The password when the URL has none: nil (let the client library look, e.g.
-- libpq's PGPASSWORD and ~/.pgpass), or nil, message.
function _M.password_from_env(getenv)
  getenv = getenv or os.getenv
  local p = getenv("BICONNECTOR_DB_PASSWORD")
  if p and p ~= "" then return p end
  local file = getenv("BICONNECTOR_DB_PASSWORD_FILE")
  if file and file ~= "" then return read_password_file(file) end
  return nil
end

-- url -> {scheme, user, password, host, port, database, query = {{key, value}...}}
-- | nil, message (the message never holds the password).
function _M.parse(url, what)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, what .. " URL: expected " .. what .. "://user@host:port/database" end
  local query = ""
  local q = rest:find("?", 1, true)
  if q then rest, query = rest:sub(1, q - 1), rest:sub(q + 1) end
  local authority, path = rest:match("^([^/]*)(.*)$")
  local userinfo, hostport = authority:match("^(.*)@([^@]*)$")
  if not userinfo then hostport = authority end
  local r = { scheme = scheme:lower(), query = {} }
  if userinfo then
    local user, pw = userinfo:match("^([^:]*):(.*)$")
    if user then r.user, r.password = unescape(user), unescape(pw)
    else r.user = unescape(userinfo) end
    if r.user == "" then r.user = nil end
  end
  local host, port
  if hostport:sub(1, 1) == "[" then
    host, port = hostport:match("^%[([^%]]*)%]:?(%d*)$")
    if not host then return nil, what .. " URL: bad host " .. hostport end
  else
    host, port = hostport:match("^([^:]*):?(.*)$")
  end
  if port ~= "" then
    local n = tonumber(port)
    if not port:match("^%d+$") or not n or n < 1 or n > 65535 then
      return nil, ("%s URL: bad port %q"):format(what, port)
    end
    r.port = n
  end
  if host ~= "" then r.host = unescape(host) end
  local db = path:match("^/(.*)$")
  if db and db ~= "" then
    if db:find("/", 1, true) then return nil, ("%s URL: bad database name %q"):format(what, db) end
    r.database = unescape(db)
  end
  for pair in query:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k then k, v = pair, "" end
    r.query[#r.query + 1] = { unescape(k), unescape(v) }
  end
  return r
end

-- key/value list -> "k=v&k=v" with the values %-escaped again (the drivers
-- decode them).
function _M.encode_params(list)
  local parts = {}
  for i, kv in ipairs(list) do
    local function esc(s) return (s:gsub("[^%w%-%._~/]", function(c) return ("%%%02X"):format(c:byte()) end)) end
    parts[i] = esc(kv[1]) .. "=" .. esc(kv[2])
  end
  return table.concat(parts, "&")
end

-- A whole number option ("statement_timeout=5000") -> number | nil, message.
function _M.whole(what, key, v)
  local n = tonumber(v)
  if not v:match("^%d+$") or not n then
    return nil, ("%s URL: %s expects a whole number, got %q"):format(what, key, v)
  end
  return n
end

-- A server URL -> the options for core.sql.open of the PostgreSQL and MySQL
-- engines | nil, message: host (default 127.0.0.1), port, user, password (from
-- the URL, else password_from_env), database, schemas (list), from the options
-- statement_timeout_ms, connect_timeout_s and pool_size, and params ("k=v&k=v") for every
-- other option, which the driver reads. spec: what (the engine's name in
-- messages), database_required (a URL without one is refused), own ({key =
-- function(opts, value) -> nil | message}: the engine's options of its own,
-- and those it refuses), driver (a list: the only options passed on; any other
-- is refused naming every option taken; nil: all are passed on).
function _M.server_options(url, spec)
  local what = spec.what
  local u, err = _M.parse(url, what)
  if not u then return nil, err end
  if spec.database_required and not u.database then
    return nil, ("%s URL: no database (%s://user@host:port/database)"):format(what, what)
  end
  local opts = { host = u.host or "127.0.0.1", port = u.port, user = u.user, password = u.password,
    database = u.database }
  if not opts.password then
    local p, perr = _M.password_from_env()
    if perr then return nil, perr end
    opts.password = p
  end
  local own = spec.own or {}
  local pass, schemas = {}, {}
  for _, kv in ipairs(u.query) do
    local k, v = kv[1], kv[2]
    if k == "schemas" then
      for s in v:gmatch("[^,]+") do schemas[#schemas + 1] = s:match("^%s*(.-)%s*$") end
    elseif k == "statement_timeout" or k == "connect_timeout" or k == "pool_size" then
      local n, nerr = _M.whole(what, k, v)
      if not n then return nil, nerr end
      if k == "pool_size" and n < 1 then return nil, ("%s URL: pool_size expects a whole number from 1"):format(what) end
      opts[k == "statement_timeout" and "statement_timeout_ms" or k == "pool_size" and "pool_size"
        or "connect_timeout_s"] = n
    elseif own[k] then
      local oerr = own[k](opts, v)
      if oerr then return nil, oerr end
    else
      if spec.driver and not spec.driver[k] then
        local known = { "schemas", "statement_timeout", "connect_timeout", "pool_size" }
        local own_keys = {}
        for key in pairs(own) do own_keys[#own_keys + 1] = key end
        table.sort(own_keys)
        for _, key in ipairs(own_keys) do known[#known + 1] = key end
        for _, key in ipairs(spec.driver) do known[#known + 1] = key end
        return nil, ("%s URL: unknown option %q (known: %s)"):format(what, k, table.concat(known, ", "))
      end
      pass[#pass + 1] = kv
    end
  end
  if #pass > 0 then opts.params = _M.encode_params(pass) end
  opts.schemas = schemas
  return opts
end

-- A URL as output may show it (banner, log, dev page): the password, between
-- "user:" and the last "@" of the authority, as ***; any other text unchanged.
-- "postgresql://user:secret@host/db" -> "postgresql://user:***@host/db"
function _M.masked(text)
  return (tostring(text):gsub("^(%a[%w+.-]*://)([^/]*)@", function(scheme, userinfo)
    local user = userinfo:match("^([^:]*):")
    return scheme .. (user and (user .. ":***") or userinfo) .. "@"
  end))
end

-- What logs may show: no password.
function _M.display(scheme, opts)
  local user = opts.user and (opts.user .. "@") or ""
  local host = opts.socket and ("[" .. opts.socket .. "]") or (opts.host or "")
  if host:find(":", 1, true) and not opts.socket then host = "[" .. host .. "]" end
  local port = opts.port and (":" .. opts.port) or ""
  return ("%s://%s%s%s/%s"):format(scheme, user, host, port, opts.database or "")
end

return _M
