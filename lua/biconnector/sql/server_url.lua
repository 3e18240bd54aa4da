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

-- What logs may show: no password.
function _M.display(scheme, opts)
  local user = opts.user and (opts.user .. "@") or ""
  local host = opts.socket and ("[" .. opts.socket .. "]") or (opts.host or "")
  if host:find(":", 1, true) and not opts.socket then host = "[" .. host .. "]" end
  local port = opts.port and (":" .. opts.port) or ""
  return ("%s://%s%s%s/%s"):format(scheme, user, host, port, opts.database or "")
end

return _M
