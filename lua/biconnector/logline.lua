-- biconnector.logline: the log lines shared by `biconnector serve` and the
-- nginx glue, so that both write the same access line. Connection values
-- never reach a line: a field called `connection` is dropped.
local format, concat, sort, tostring = string.format, table.concat, table.sort, tostring

local _M = {}

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- A log value: bare when it is a plain word, else quoted on one line.
function _M.quote(v)
  v = tostring(v)
  if v:match("^[%w%._/:%-]+$") then return v end
  return '"' .. v:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or format("\\x%02x", c:byte())
  end) .. '"'
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
