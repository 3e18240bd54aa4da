-- biconnector.host.address: is a connector URL on a local network? Bitrix24 by
-- default does not call such addresses (b24restdocs
-- api-reference/biconnector/connector/index.md, "Connector Endpoints"; its
-- module refuses them unless the on-premise option allow_local_connections is
-- on), so `register` and `verify` warn before a portal in the cloud fails to
-- reach the connector.
--   address.local_reason(url) -> nil | reason, host
--   address.warning(url)      -> nil | a message naming the reason and the ways out
--   address.lower_scheme(url) -> the URL with its scheme in lower case
-- Only what the URL itself says is judged (literal addresses and names that are
-- local by definition); a public-looking name is not resolved.
local tonumber, tostring, ipairs, type = tonumber, tostring, ipairs, type

local _M = {}

-- The host of an http(s) URL, lower case, IPv6 without brackets.
function _M.host_of(url)
  local authority = tostring(url):match("^%a[%w+.-]*://([^/?#]*)")
  if not authority then return nil end
  authority = authority:gsub("^.*@", "")
  local v6 = authority:match("^%[([^%]]+)%]")
  if v6 then return v6:lower() end
  return (authority:gsub(":%d*$", ""):lower())
end

local function ipv4_reason(a, b)
  if a == 127 then return "a loopback address" end
  if a == 10 or (a == 172 and b >= 16 and b <= 31) or (a == 192 and b == 168) then
    return "a private address (RFC 1918)"
  end
  if a == 169 and b == 254 then return "a link-local address" end
  if a == 100 and b >= 64 and b <= 127 then return "a shared address of a provider's NAT (RFC 6598)" end
  if a == 0 then return "an address of this network only" end
  return nil
end

-- An IPv4 address in any spelling the resolver reads as one (inet_aton, and
-- curl's URL parser alike): 1 to 4 parts, each decimal, 0x hex or 0-led
-- octal, the last filling the bytes left (127.1, 2130706433, 0x7f000001,
-- 0177.0.0.1). -> its first two bytes, or nil.
local function ipv4_any(host)
  local parts = {}
  for p in (host .. "."):gmatch("([^.]*)%.") do parts[#parts + 1] = p end
  if #parts > 4 then return nil end
  local nums = {}
  for i, p in ipairs(parts) do
    local n
    if p:match("^0[xX]%x*$") then n = tonumber("0" .. p:sub(3), 16)
    elseif p:match("^0[0-7]*$") then n = tonumber(p, 8)
    elseif p:match("^[1-9]%d*$") and #p <= 10 then n = tonumber(p)
    end
    if not n then return nil end
    nums[i] = n
  end
  local k = #nums
  for i = 1, k - 1 do if nums[i] > 255 then return nil end end
  local last = nums[k]
  if last >= 256 ^ (5 - k) then return nil end
  if k >= 3 then return nums[1], nums[2] end
  if k == 2 then return nums[1], math.floor(last / 65536) end
  return math.floor(last / 16777216), math.floor(last / 65536) % 256
end

-- The eight 16-bit groups of an IPv6 address in any spelling (:: anywhere,
-- leading zeros, a dotted IPv4 tail, a %zone), or nil.
local function ipv6_groups(host)
  host = host:gsub("%%.*$", "")
  local head, tail = host:match("^(.-)::(.*)$")
  local function split(text)
    local out = {}
    if text == "" then return out end
    for g in (text .. ":"):gmatch("([^:]*):") do
      local a, b, c, d = g:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
      if a then
        a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
        if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
        out[#out + 1] = a * 256 + b
        out[#out + 1] = c * 256 + d
      elseif g:match("^%x%x?%x?%x?$") then
        out[#out + 1] = tonumber(g, 16)
      else
        return nil
      end
    end
    return out
  end
  local groups
  if head then
    local h, t = split(head), split(tail)
    if not h or not t or #h + #t > 7 then return nil end
    groups = h
    for _ = 1, 8 - #h - #t do groups[#groups + 1] = 0 end
    for _, g in ipairs(t) do groups[#groups + 1] = g end
  else
    groups = split(host)
    if not groups or #groups ~= 8 then return nil end
  end
  return groups
end

local function ipv6_reason(host)
  local g = ipv6_groups(host)
  if not g then return nil end
  local zeros = 0
  for i = 1, 5 do if g[i] == 0 then zeros = zeros + 1 end end
  if zeros == 5 and g[6] == 0xffff then -- ::ffff:a.b.c.d, an IPv4 address
    return ipv4_reason(math.floor(g[7] / 256), g[7] % 256)
  end
  if zeros == 5 and g[6] == 0 and g[7] == 0 then
    if g[8] == 1 then return "a loopback address" end
    if g[8] == 0 then return "an address of this host only" end
  end
  if g[1] >= 0xfe80 and g[1] <= 0xfebf then return "a link-local address" end
  if g[1] >= 0xfc00 and g[1] <= 0xfdff then return "a private address (unique local, fc00::/7)" end
  return nil
end

-- address.local_reason(url) -> nil, or a phrase ("a loopback address", ...) and the host.
function _M.local_reason(url)
  local host = _M.host_of(url)
  if not host or host == "" then return nil end
  local reason
  if host:find(":", 1, true) then
    reason = ipv6_reason(host)
  else
    -- a trailing dot ends a name that is complete (192.168.1.1. is 192.168.1.1)
    local a, b = ipv4_any((host:gsub("%.$", "")))
    if a then
      reason = ipv4_reason(a, b)
    elseif not host:match("^%d+$") then
      local name = host:gsub("%.$", "")
      if name == "localhost" or name:match("%.localhost$") then reason = "a loopback name"
      elseif name:match("%.local$") then reason = "a .local name (multicast DNS, this network only)"
      elseif name:match("%.internal$") or name:match("%.lan$") or name:match("%.home%.arpa$") then
        reason = "a name of a local network"
      elseif not name:find(".", 1, true) then reason = "a name without a domain (resolvable on a local network only)" end
    end
  end
  if reason then return reason, host end
  return nil
end

-- address.warning(url) -> nil, or the whole warning: what, why, and the ways out.
function _M.warning(url)
  local reason, host = _M.local_reason(url)
  if not reason then return nil end
  return ("%s is %s: Bitrix24 does not call addresses on a local network (unless an on-premise portal"
    .. " turns allow_local_connections on), so a cloud portal will not reach the connector there."
    .. " Ways out: serve it under a public name with HTTPS (biconnector serve behind the nginx front,"
    .. ' docs/security.md, "The nginx front"); to try it, a tunnel that gives it a public HTTPS address'):format(host, reason)
end

-- A path as it goes into a URL: the servers match a request's decoded path
-- against a prefix as given, so every byte a URL path cannot hold as itself
-- (space, `%`, UTF-8, ...) is percent-encoded: `/a b` is `/a%20b`, `/%41` is
-- `/%2541` (printed as it was, it reached `/A`, a 404). RFC 3986 pchar:
-- unreserved, sub-delims, `:` and `@` stay, and `/`. (`?` and `#`, which no
-- request path holds, are refused where a prefix is given.)
function _M.url_path(path)
  return (path:gsub("[^%w%-%._~!%$&'%(%)%*%+,;=:@/]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- The first byte a URL cannot hold as itself (RFC 3986: a space, a control
-- byte, UTF-8, `"<>\^`{|}`), named for `what` (the option): such a URL must
-- be percent-encoded, as the ones `biconnector serve` prints are (libcurl
-- refuses it with "URL using bad/illegal format"). -> message | nil
function _M.unencoded(url, what)
  local at = url:find("[^%w%-%._~:/%?#%[%]@!%$&'%(%)%*%+,;=%%]")
  if not at then return nil end
  local b = url:byte(at)
  return ("%s must be percent-encoded: byte %s at %d is not allowed in a URL (write %%%02X), got %q"):format(what,
    (b > 32 and b < 127) and ("'" .. string.char(b) .. "'") or ("0x%02X"):format(b), at, b, url)
end

-- The URL with its scheme in lower case: HTTPS://h is https://h, as curl and
-- browsers read it (RFC 3986 3.1); anything else as it is.
function _M.lower_scheme(url)
  if type(url) ~= "string" then return url end
  return (url:gsub("^(%a[%w+.-]*)://", function(scheme) return scheme:lower() .. "://" end, 1))
end

return _M
