-- biconnector.host.logline: the log lines shared by `biconnector serve` and the
-- nginx glue, so that both write the same access line. Connection values
-- never reach a line: a field called `connection` is dropped.
local format, concat, sort, tostring = string.format, table.concat, table.sort, tostring

local _M = {}

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- Bytes >= 0x80 that are not part of a valid UTF-8 sequence, as \xNN.
local byte = string.byte
local function escape_invalid_utf8(s)
  if not s:find("[\128-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = byte(s, i)
    local len = 0
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then len = 3
    elseif c >= 0xF0 and c <= 0xF4 then len = 4 end
    local ok = len > 0 and i + len - 1 <= n
    if ok and len > 1 then
      for k = 1, len - 1 do
        local b = byte(s, i + k)
        if b < 0x80 or b > 0xBF then ok = false break end
      end
      local b1 = byte(s, i + 1)
      if ok and ((c == 0xE0 and b1 < 0xA0) or (c == 0xED and b1 > 0x9F) -- overlong, surrogates
          or (c == 0xF0 and b1 < 0x90) or (c == 0xF4 and b1 > 0x8F)) then ok = false end
    end
    if ok then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = format("\\x%02x", c)
      i = i + 1
    end
  end
  return concat(out)
end
_M.escape_invalid_utf8 = escape_invalid_utf8

-- A log value: bare when it is a plain word, else quoted on one line, with
-- control characters and bytes that are not UTF-8 escaped (\xNN).
function _M.quote(v)
  v = tostring(v)
  if v:match("^[%w%._/:%-]+$") then return v end
  return '"' .. escape_invalid_utf8((v:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or format("\\x%02x", c:byte())
  end))) .. '"'
end
local quote = _M.quote

-- " k=v" for every field but `connection`, keys sorted.
function _M.fields(fields)
  if type(fields) ~= "table" then return "" end
  local keys = {}
  for k in pairs(fields) do
    if k ~= "connection" then keys[#keys + 1] = tostring(k) end
  end
  sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = " " .. k .. "=" .. quote(fields[k]) end
  return concat(parts)
end

-- A message line: UTC time, LEVEL, the quoted message, then the fields
-- (`serve`'s connector messages, the application's, its helper processes').
function _M.message(level, message, fields)
  return os.date("!%Y-%m-%dT%H:%M:%SZ") .. " " .. tostring(level):upper() .. " " .. quote(message) .. _M.fields(fields)
end

-- The access line without its time: remote, method, path, endpoint, table,
-- status, rows, bytes, duration, and `end=` when the answer did not end well.
function _M.access(req, status, info, bytes, ms, how)
  local parts = {
    req.remote ~= nil and req.remote ~= "" and req.remote or "-", " ", req.method, " ", quote(req.path),
    " endpoint=", quote(info.endpoint or "-"), " table=", quote(info.table or "-"),
    " status=", tostring(status), " rows=", tostring(info.rows or "-"),
    " bytes=", tostring(bytes), format(" ms=%.1f", ms),
  }
  if how ~= "ok" then parts[#parts + 1] = " end=" .. how end
  return concat(parts)
end

return _M
