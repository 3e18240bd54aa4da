-- biconnector.connector.errors (public name biconnector.errors): the one error vocabulary of the serving path.
--
-- A failure is a value {status = 400..599, message = text the client may see};
-- request decoding returns one (nil, failure), a handler raises one
-- (error(connector.failure(503, "database is locked"))) to answer with that
-- status instead of a bare 500. An error id ties an answer to its log line.
-- No I/O here.
local core = require "biconnector.core"

local type, tostring, setmetatable, getmetatable = type, tostring, setmetatable, getmetatable
local format, random = string.format, math.random
local select = select

local _M = { _VERSION = core.version }

-- tostring(failure) is its message; "STATUS message" for a request's
-- refusal (errors.refusal: docs/form.md shows it so).
local failure_mt = {
  __tostring = function(f)
    if f.refusal then return tostring(f.status) .. " " .. tostring(f.message) end
    return tostring(f.message)
  end,
}
failure_mt.__index = failure_mt

-- errors.failure(status, message, ...) -> a failure; with more arguments the
-- message is a format string (string.format(message, ...)).
function _M.failure(status, message, ...)
  if select("#", ...) > 0 then message = format(message, ...) end
  return setmetatable({ status = status, message = tostring(message) }, failure_mt)
end

-- errors.refusal(status, message): a failure decoding a request answers
-- (request.error), shown by tostring with its status.
function _M.refusal(status, message)
  local f = _M.failure(status, message)
  f.refusal = true
  return f
end

function _M.is_failure(x)
  return getmetatable(x) == failure_mt
end

-- A failure's status as an answer's: 400..599, else 500.
function _M.status_of(f)
  local status = f.status
  if type(status) == "number" and status >= 400 and status <= 599 then return status end
  return 500
end

-- The "error" code of a JSON error body for a status.
local CODES = {
  [400] = "bad_request", [401] = "unauthorized", [403] = "forbidden", [404] = "not_found",
  [405] = "method_not_allowed", [408] = "request_timeout", [409] = "conflict", [410] = "gone",
  [413] = "payload_too_large", [414] = "uri_too_long", [415] = "unsupported_media_type",
  [422] = "unprocessable_entity", [429] = "too_many_requests", [500] = "internal_error",
  [502] = "bad_gateway", [503] = "service_unavailable", [504] = "gateway_timeout",
}
function _M.code_of(status)
  return CODES[status] or (status >= 500 and "internal_error" or "bad_request")
end

-- Error ids: 8 hex digits, a per-process counter below a random part mixed
-- with the pid, so that forked workers (same random state) differ.
local getpid = core.process and core.process.getpid
local counter = 0
function _M.new_id()
  counter = (counter + 1) % 0x10000
  local pid = getpid and getpid() or 0
  return format("%04x%04x", (random(0, 0xffff) + pid * 40503) % 0x10000, counter)
end

-- How an error message shows a string (quoted, at most 40 bytes, newlines
-- escaped) or null; nil for any other value (the caller says those its way).
local null = core.null
function _M.shown(v)
  if type(v) == "string" then
    if #v > 40 then v = v:sub(1, 40) .. "..." end
    return (format("%q", v):gsub("\\\n", "\\n"))
  end
  if v == null then return "null" end
  return nil
end

-- The body of a 500 for a failure of the host around the connector (the
-- message and its traceback go to the log under the same id).
_M.JSON_TYPE = "application/json; charset=utf-8"
function _M.internal_body(id)
  return format('{"error":"internal_error","message":"the connector failed (error id %s)","id":"%s"}', id, id)
end

return _M
