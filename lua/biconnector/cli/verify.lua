-- `biconnector verify URL`: plays Bitrix24's side of the connector protocol
-- (protocol.md section 2) against any connector and reports every deviation.
-- Lua API: require("biconnector.cli.verify").run(url, opts) -> report.
local core = require "biconnector.core"
local json = require "biconnector.json"
local form = require "biconnector.form"
local address = require "biconnector.host.address"
local progress_lib = require "biconnector.cli.progress"
local cli = require "biconnector.cli.main"
local escape_invalid_utf8 = require("biconnector.host.logline").escape_invalid_utf8

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local format, floor, concat = string.format, math.floor, table.concat
local null = core.null

local _M = { _VERSION = core.version }

_M.USAGE = [[
Usage: biconnector verify URL [options]
  URL                    the connector's base address; the four endpoints are
                         URL/check, URL/table_list, URL/table_description, URL/data
Options:
  --setting CODE=VALUE   a connection setting, as a source would send it (repeatable)
  --table CODE           check only this table (repeatable; default: every listed table)
  --body form|json|both  request body encoding (default form, as Bitrix24 sends)
  --limit N              the small limit asked of urlData (default 5)
  --search TEXT          the table_list search string (default: taken from a listed table)
  --timeout SECONDS      per request (default 250, Bitrix24's bound)
  --slow SECONDS         warn when an answer takes longer (default 60)
  --budget SECONDS       fail an endpoint whose slowest answer takes longer
                         (default 250: Bitrix24 gives up then)
  --allow-local          the portal calls local-network addresses (an on-premise
                         Bitrix24 with allow_local_connections): no warning for them
  --ca-file FILE         CA certificates for an https URL
  --json                 print a JSON report instead of text
Exit code: 0 when nothing FAILed, 1 when something did, 2 on usage errors.
]]

local DEFAULTS = { body = "form", limit = 5, timeout = 250, slow = 60, budget = 250, connect_timeout = 10,
  max_body = 64 * 1024 * 1024 }
-- urlTableDescription types (connector/index.md, "urlTableDescription")
local FIELD_TYPES = { int = true, string = true, double = true, date = true, datetime = true, money = true, timezone = true }
local FIELD_TYPE_LIST = "int, string, double, date, datetime, money, timezone"
local ENDPOINTS = { "check", "table_list", "table_description", "data" }
-- URL/check with URL = http://h/c?key=1 would ask http://h/c?key=1/check
-- (register --base-url refuses it alike)
local QUERY_MESSAGE = "URL must have no query or fragment (the endpoints are URL/check, URL/table_list, ...), got "
local MAX_LINES_PER_REQUEST = 8

---------------------------------------------------------------- value helpers

local is_array = require("biconnector.connector.list").is_list

local function nonempty_string(v) return type(v) == "string" and v ~= "" end

-- Bitrix24 tests the table list's and the description's values with PHP's
-- empty() (Rest.php, checkTableList, checkTableDescription), true for "0" too.
local php_value = require("biconnector.connector.core").php_value

-- The first n bytes of s, cut back to the start of a UTF-8 character, so that
-- a shortened message stays UTF-8 (the --json report must encode).
local function cut(s, n)
  if #s <= n then return s end
  while n > 0 and s:byte(n + 1) and s:byte(n + 1) >= 0x80 and s:byte(n + 1) <= 0xBF do n = n - 1 end
  return s:sub(1, n)
end

-- Text from the connector (or the command line) made fit for a message: bytes
-- that are not UTF-8 as \xNN, so the text report and the --json one hold it.
local function clean(s)
  return escape_invalid_utf8(tostring(s))
end

-- A short, one-line spelling of a value for messages.
local function show(v)
  if v == null then return "null" end
  if type(v) == "string" then
    local s = v
    if #s > 60 then s = cut(s, 57) .. "..." end
    return clean((format("%q", s):gsub("\\\n", "\\n")))
  end
  if type(v) == "table" then
    local ok, text = pcall(json.encode, v)
    if ok and text then
      if #text > 60 then text = cut(text, 57) .. "..." end
      return text
    end
    return "a table"
  end
  return tostring(v)
end
_M.show = show

local function snippet(body)
  if body == nil or body == "" then return "(empty body)" end
  body = tostring(body):gsub("%s+", " ")
  if #body > 120 then body = cut(body, 117) .. "..." end
  -- control characters (a binary answer) as \xNN, as the bytes that are not UTF-8
  return clean((body:gsub("%c", function(c) return format("\\x%02x", c:byte()) end)))
end

local function in_range(n, lo, hi) n = tonumber(n) return n ~= nil and n >= lo and n <= hi end

-- A day of the calendar: 2025-02-30 or 2025-04-31 is not one (PHP's date
-- parsing would roll it over into the next month).
local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
local function valid_date(y, m, d)
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if not (y and in_range(m, 1, 12) and in_range(d, 1, 31)) then return false end
  local last = MONTH_DAYS[m]
  if m == 2 and y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0) then last = 29 end
  return d <= last
end

local function valid_time(h, mi, s)
  return in_range(h, 0, 23) and in_range(mi, 0, 59) and in_range(s, 0, 60)
end

-- Checks one urlData value against its described type.
-- Returns nil when fine, or "FAIL"|"WARN", reason (made only when reason is
-- true: a big answer checks millions of values, and keeps a few messages).
local function value_check(v, ftype, reason)
  if v == null then return nil end
  if type(v) == "number" and (v ~= v or v == math.huge or v == -math.huge) then
    return "FAIL", reason and ("value must be a finite number, got " .. tostring(v))
  end
  if ftype == "int" then
    if type(v) ~= "number" then return "FAIL", reason and ("int value must be a JSON integer, got " .. show(v)) end
    if v ~= floor(v) then return "FAIL", reason and ("int value must be integral, got " .. show(v)) end
    -- past the 64-bit range PHP's json_decode reads a float (1e+20 is 1.0E+20):
    -- Lua 5.4 holds such a value as a float; LuaJIT (doubles only) cannot tell
    -- 2^63 from 2^63-1, so only what lies beyond counts there
    if (math.type and math.type(v) == "float" and (v >= 2^63 or v <= -2^63)) or v > 2^63 or v < -2^63 then
      return "FAIL", reason and ("int value " .. show(v) .. " is past the 64-bit range (-2^63 to 2^63-1): Bitrix24 (PHP's json_decode) reads it as a float, not an integer")
    end
    return nil
  elseif ftype == "double" then
    if type(v) ~= "number" then return "FAIL", reason and ("double value must be a JSON number, got " .. show(v)) end
    return nil
  elseif ftype == "string" then
    if type(v) ~= "string" then return "FAIL", reason and ("string value must be a JSON string, got " .. show(v)) end
    return nil
  elseif ftype == "date" then
    if type(v) ~= "string" then return "FAIL", reason and ("date value must be a string YYYY-MM-DD, got " .. show(v)) end
    local y, m, d = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
    if y and valid_date(y, m, d) then return nil end
    return "FAIL", reason and ("date value must be YYYY-MM-DD, got " .. show(v) .. (y and " (no such day)" or ""))
  elseif ftype == "datetime" then
    -- Y-m-d H:i:s (the table column format), or with an offset as the urlData
    -- example shows it, 2024-08-30T12:19:57+02:00 (connector/index.md): both pass
    if type(v) ~= "string" then return "FAIL", reason and ("datetime value must be a string YYYY-MM-DD HH:MM:SS, got " .. show(v)) end
    local y, m, d, h, mi, s = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d) (%d%d):(%d%d):(%d%d)$")
    if y and valid_date(y, m, d) and valid_time(h, mi, s) then return nil end
    y, m, d, h, mi, s = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)")
    if y and valid_date(y, m, d) and valid_time(h, mi, s) then
      local rest = v:sub(20)
      local zh, zm = rest:match("^[+-](%d%d):(%d%d)$")
      if rest == "Z" or (zh and in_range(zh, 0, 23) and in_range(zm, 0, 59)) then return nil end
      local frac = rest:match("^%.%d+(.*)$")
      if frac then rest = frac end
      if rest == "" then
        return "WARN", reason and ("datetime value in ISO 8601 without an offset " .. show(v) .. " (accepted; give YYYY-MM-DD HH:MM:SS, or the offset)")
      end
      zh, zm = rest:match("^[+-](%d%d):?(%d%d)$")
      if rest == "Z" or (zh and in_range(zh, 0, 23) and in_range(zm, 0, 59)) then
        return "WARN", reason and ("datetime value in ISO 8601 " .. show(v) .. " (accepted; the documented forms are YYYY-MM-DD HH:MM:SS and 2024-08-30T12:19:57+02:00)")
      end
    end
    y, m, d = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[ T]%d%d:%d%d:%d%d")
    return "FAIL", reason and ("datetime value must be YYYY-MM-DD HH:MM:SS or YYYY-MM-DDTHH:MM:SS+HH:MM, got " .. show(v)
      .. ((y and not valid_date(y, m, d)) and " (no such day)" or ""))
  elseif ftype == "money" then
    -- kept as a number: Bitrix24 drops all but digits, "-" and the separator
    if type(v) == "number" then return nil end
    if type(v) == "string" and v:match("%d") then
      return "WARN", reason and ("money value as a string " .. show(v) .. " (Bitrix24 keeps only its digits, minus sign and decimal separator; answer a number)")
    end
    return "FAIL", reason and ("money value must be a JSON number, got " .. show(v))
  elseif ftype == "timezone" then
    if type(v) ~= "string" or v == "" then return "FAIL", reason and ("timezone value must be a time zone identifier string, got " .. show(v)) end
    return nil
  end
  return nil -- an unknown type was reported with the description
end

function _M.check_value(v, ftype)
  return value_check(v, ftype, true)
end

---------------------------------------------------------------- the report

-- The URL as the report shows it: the password of a user:password@ (sent as
-- basic authentication) is ***, as serve shows a database URL's.
local function shown_url(url)
  local scheme, authority, rest = url:match("^(%a[%w+.-]*://)([^/]*)(.*)$")
  if not authority then return url end
  local userinfo, host = authority:match("^(.*)@([^@]*)$")
  if not userinfo or not userinfo:find(":", 1, true) then return url end
  return scheme .. userinfo:match("^[^:]*") .. ":***@" .. host .. rest
end
_M.shown_url = shown_url

local function new_report(url, opts)
  return { url = clean(shown_url(url)), body = opts.body, checks = {},
    summary = { PASS = 0, WARN = 0, FAIL = 0, SKIP = 0 }, ok = true }
end

-- A check's name and message as printed: a control character the connector
-- sent (a table or field code holding ESC [31m, a tab) is shown as \xNN, so
-- nothing from the connector drives the terminal and a check stays one line.
local function printable(s)
  return (clean(s):gsub("[%z\1-\31\127]", function(c) return format("\\x%02x", c:byte()) end))
end

local function add(report, result, name, message, extra)
  local entry = { result = result, check = printable(name), message = printable(message) }
  for k, v in pairs(extra or {}) do entry[k] = type(v) == "string" and clean(v) or v end
  report.checks[#report.checks + 1] = entry
  report.summary[result] = report.summary[result] + 1
  if result == "FAIL" then report.ok = false end
  return entry
end

-- One request's findings: problems collected, then written as lines. At most
-- MAX_LINES_PER_REQUEST of a level can be printed, so only that many messages
-- of each are kept; the others are counted (a big table with one wrong column
-- is a problem per row).
local function findings()
  return { list = {}, fails = 0, warns = 0, kept = { FAIL = 0, WARN = 0 }, dropped = { FAIL = 0, WARN = 0 } }
end

-- Would a new message of this level be kept? (A caller may skip making it.)
local function keeps(f, level)
  return f.kept[level] < MAX_LINES_PER_REQUEST
end

local function note(f, level, message)
  if level == "FAIL" then f.fails = f.fails + 1 else f.warns = f.warns + 1 end
  if keeps(f, level) then
    f.kept[level] = f.kept[level] + 1
    f.list[#f.list + 1] = { level = level, message = message }
  else
    f.dropped[level] = f.dropped[level] + 1
  end
end

local function flush(report, f, name, pass_message, extra)
  if #f.list == 0 then
    add(report, "PASS", name, pass_message, extra)
    return true
  end
  -- FAILs first, then WARNs, each kind capped
  local shown = 0
  for _, level in ipairs({ "FAIL", "WARN" }) do
    local hidden = f.dropped[level]
    for _, p in ipairs(f.list) do
      if p.level == level then
        if shown < MAX_LINES_PER_REQUEST then
          add(report, level, name, p.message, extra)
          shown = shown + 1
        else
          hidden = hidden + 1
        end
      end
    end
    if hidden > 0 then
      add(report, level, name, format("... and %d more problem(s) of this kind", hidden), extra)
    end
  end
  return f.fails == 0
end

---------------------------------------------------------------- transport

local function base_url(url)
  return (url:gsub("/+$", ""))
end

local function encode_body(mode, params)
  if mode == "json" then
    local text = assert(json.encode(params))
    return text, "application/json"
  end
  return form.encode(params), "application/x-www-form-urlencoded"
end

-- POSTs params to URL/endpoint. Returns {status, headers, body, seconds} or nil, message.
local function post(ctx, endpoint, params)
  local body, content_type = encode_body(ctx.mode, params)
  local req = { method = "POST", url = ctx.base .. "/" .. endpoint, body = body,
    headers = { ["Content-Type"] = content_type, ["Accept"] = "application/json" },
    timeout = ctx.opts.timeout, connect_timeout = ctx.opts.connect_timeout,
    max_body = ctx.opts.max_body, ca_file = ctx.opts.ca_file,
    user_agent = "biconnector-verify/" .. core.version }
  if ctx.opts.progress then ctx.opts.progress(endpoint, params.table, ctx.mode) end
  local now = core.http.now
  local started = now()
  local res, err = ctx.transport(req)
  local seconds = now() - started
  local slowest = ctx.slowest[endpoint]
  if not slowest or seconds > slowest.seconds then ctx.slowest[endpoint] = { seconds = seconds, answered = res ~= nil } end
  if not res then
    local message = tostring(err)
    local timed_out = type(err) == "table" and err.timeout
    if timed_out then
      message = format("no answer within %g s (%s)", ctx.opts.timeout, tostring(err.message or err))
    end
    return nil, message, seconds, timed_out
  end
  res.seconds = seconds
  res.headers = res.headers or {}
  res.body = res.body or ""
  return res
end

-- Status, timing and Content-Type checks common to every answer. Returns the
-- decoded JSON (when want_json) or nil after noting why. status_hint: a
-- function(status) -> text added to the line of a status other than 200.
local function common(ctx, f, res, want_json, status_hint)
  if res.seconds > ctx.opts.slow then
    note(f, "WARN", format("answered in %.1f s, over %g s (Bitrix24 waits 250 s for an answer, and 60 s for its body)",
      res.seconds, ctx.opts.slow))
  end
  if res.status ~= 200 then
    local hint = status_hint and status_hint(res.status)
    local location = res.status >= 300 and res.status < 400 and res.headers.location
    if location then
      -- where it points: Bitrix24 does not follow it (the URL registered must answer itself)
      hint = "it redirects to " .. show(tostring(location):sub(1, 200)) .. (hint and ("; " .. hint) or "")
    end
    note(f, "FAIL", format("HTTP status %s, expected 200 (Bitrix24 reads any other status as \"connection unavailable\"): %s%s",
      tostring(res.status), snippet(res.body), hint and (" (" .. hint .. ")") or ""))
    return nil
  end
  if not want_json then return nil end
  local ctype = res.headers["content-type"] or ""
  if not ctype:lower():find("application/json", 1, true) then
    note(f, "WARN", format("Content-Type is %s, expected application/json", ctype == "" and "missing" or show(ctype)))
  end
  local value, err = json.decode(res.body)
  if value == nil then
    note(f, "FAIL", format("the answer is not JSON (%s): %s", tostring(err), snippet(res.body)))
    return nil
  end
  return value
end

local function request(ctx, endpoint, params)
  local params_with = { connection = ctx.connection }
  for k, v in pairs(params or {}) do params_with[k] = v end
  return post(ctx, endpoint, params_with)
end

---------------------------------------------------------------- endpoint checks

local function check_table_list(f, value)
  if not is_array(value) then
    note(f, "FAIL", "the answer must be a JSON array of {code, title}, got " .. show(value))
    return nil
  end
  local seen, tables = {}, {}
  for i, t in ipairs(value) do
    if type(t) ~= "table" or is_array(t) and #t > 0 then
      note(f, "FAIL", format("element %d must be an object {code, title}, got %s", i, show(t)))
    else
      local ok = true
      for _, k in ipairs({ "code", "title" }) do
        if not php_value(t[k]) then
          ok = false
          local why = t[k] == "0" and 'must not be "0" (Bitrix24 reads it as empty and rejects the whole list)'
            or "must be a non-empty string (Bitrix24 rejects the whole list)"
          note(f, "FAIL", format("element %d: %s %s, got %s", i, k, why, show(t[k])))
        end
      end
      if ok then
        if seen[t.code] then
          note(f, "WARN", format("element %d: code %s is listed twice", i, show(t.code)))
        else
          seen[t.code] = true
          tables[#tables + 1] = { code = t.code, title = t.title }
        end
      end
    end
  end
  return tables
end

local function check_description(f, value)
  if not is_array(value) then
    note(f, "FAIL", "the answer must be a JSON array of {code, name, type}, got " .. show(value))
    return nil
  end
  if #value == 0 then
    note(f, "FAIL", "the table has no fields")
    return nil
  end
  local fields, seen = {}, {}
  for i, fd in ipairs(value) do
    if type(fd) ~= "table" or is_array(fd) and #fd > 0 then
      note(f, "FAIL", format("field %d must be an object {code, name, type}, got %s", i, show(fd)))
    else
      local ok = true
      for _, k in ipairs({ "code", "name", "type" }) do
        if not php_value(fd[k]) then
          ok = false
          local why = fd[k] == "0" and 'must not be "0" (Bitrix24 reads it as empty and rejects the whole description)'
            or "must be a non-empty string"
          note(f, "FAIL", format("field %d: %s %s, got %s", i, k, why, show(fd[k])))
        end
      end
      if ok then
        if not FIELD_TYPES[fd.type] then
          if FIELD_TYPES[fd.type:lower()] then
            note(f, "FAIL", format("field %d (%s): type %s must be lower case (older portals compare exactly)",
              i, fd.code, show(fd.type)))
          else
            -- not a FAIL: Bitrix24 reads an unknown type as string (protocol.md
            -- section 2, urlTableDescription) and keeps the description
            note(f, "WARN", format("field %d (%s): type %s is not one of %s: Bitrix24 reads it as string"
              .. " (its values go unchecked here; biconnector.table.add refuses the type, so biconnector register makes"
              .. " the column string, as BI Builder reads it)", i, fd.code, show(fd.type), FIELD_TYPE_LIST))
          end
        end
        if seen[fd.code] then
          -- the first description of the code stands: the data answers are
          -- checked against it, and the code is not expected (or selected) twice
          note(f, "FAIL", format("field %d: code %s is described twice", i, show(fd.code)))
        else
          seen[fd.code] = true
          fields[#fields + 1] = { code = fd.code, name = fd.name, type = fd.type:lower() }
        end
      elseif php_value(fd.code) and not seen[fd.code] then
        -- a field with a good code but no name or type is still a column of the
        -- data answers (their header is checked against it); its values are not
        seen[fd.code] = true
        fields[#fields + 1] = { code = fd.code, name = fd.name, type = type(fd.type) == "string" and fd.type:lower() or nil }
      end
    end
  end
  return fields
end

local function same_list(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function same_set(a, b)
  if #a ~= #b then return false end
  local set = {}
  for _, v in ipairs(a) do set[v] = true end
  for _, v in ipairs(b) do if not set[v] then return false end end
  return true
end

local function list_text(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = show(v) end
  return "[" .. concat(out, ", ") .. "]"
end

-- Checks a urlData answer: expected = the header it must have, types = code -> type.
-- Returns the well-formed rows as maps keyed by header code, with .answered =
-- how many rows the answer held, ragged ones included (nil on a shape failure);
-- count_only: no maps (the whole table, of which only the count is used).
local function check_data(f, value, expected, types, limit, count_only)
  if not is_array(value) then
    note(f, "FAIL", "the answer must be a JSON array of arrays, got " .. show(value))
    return nil
  end
  if #value == 0 then
    note(f, "FAIL", "the answer is an empty array: the first row must hold the field codes")
    return nil
  end
  local header = value[1]
  if not is_array(header) then
    note(f, "FAIL", "the first row must be an array of field codes, got " .. show(header))
    return nil
  end
  for i, code in ipairs(header) do
    if not nonempty_string(code) then
      note(f, "FAIL", format("header cell %d must be a field code, got %s", i, show(code)))
      return nil
    end
  end
  if not same_list(header, expected) then
    if same_set(header, expected) then
      note(f, "WARN", format("header %s holds the expected fields in another order than %s", list_text(header), list_text(expected)))
    else
      note(f, "FAIL", format("header %s must equal %s", list_text(header), list_text(expected)))
    end
  end
  local rows = { answered = #value - 1 }
  local width = #header
  for r = 2, #value do
    local row = value[r]
    -- a message is made only when it would be kept (findings)
    if not is_array(row) then
      note(f, "FAIL", keeps(f, "FAIL") and format("row %d must be an array, got %s", r - 1, show(row)) or nil)
    elseif #row ~= width then
      note(f, "FAIL", keeps(f, "FAIL") and format("row %d has %d cells, the header has %d (Bitrix24 pairs every row"
        .. " with the header)", r - 1, #row, width) or nil)
    else
      local map = not count_only and {} or nil
      for c = 1, width do
        local code = header[c]
        if map then map[code] = row[c] end
        local level = value_check(row[c], types[code], false)
        if level and keeps(f, level) then
          note(f, level, format("row %d, field %s: %s", r - 1, code, select(2, value_check(row[c], types[code], true))))
        elseif level then
          note(f, level, nil)
        end
      end
      rows[#rows + 1] = map
    end
  end
  if limit and #value - 1 > limit then
    note(f, "FAIL", format("limit %d not honoured: %d rows came back", limit, #value - 1))
  end
  return rows
end

---------------------------------------------------------------- the sequence

local function step_check(ctx)
  local name = "check"
  local f = findings()
  local res, err, seconds = request(ctx, "check")
  if not res then
    ctx.check_unanswered = true
    add(ctx.report, "FAIL", name, "no answer: " .. err, { seconds = seconds })
    return false
  end
  ctx.check_status = res.status
  -- 401 and 403 are how a connector refuses the connection values: say which
  common(ctx, f, res, false, function(status)
    if status == 404 then
      -- the usual mistake: the URL of one endpoint (.../check) given for the base
      return format("nothing answers at %s/check: URL must be the base address the four endpoints sit under "
        .. "(URL/check, URL/table_list, ...), as biconnector serve prints it", shown_url(ctx.base))
    end
    if status ~= 401 and status ~= 403 then return nil end
    local codes = {}
    for code in pairs(ctx.connection) do codes[#codes + 1] = code end
    table.sort(codes)
    if #codes == 0 then return "the connector asks for settings: give them with --setting CODE=VALUE" end
    return "the connector refuses the settings given: " .. concat(codes, ", ") .. "; check the --setting values"
  end)
  if res.status == 200 and (res.body or "") == "" then
    note(f, "FAIL", "the body is empty; Bitrix24 needs a non-empty body")
  elseif res.status == 200 and res.body == "0" then
    note(f, "FAIL", 'the body is "0", which Bitrix24 reads as empty (cannot connect); it needs a non-empty body')
  end
  return flush(ctx.report, f, name, format("200 with a %d-byte body in %.3f s", #res.body, res.seconds), { seconds = res.seconds })
end

local function step_table_list(ctx)
  local name = "table_list"
  local f = findings()
  local res, err, seconds = request(ctx, "table_list", { searchString = "" })
  if not res then
    add(ctx.report, "FAIL", name, "no answer: " .. err, { seconds = seconds })
    return nil
  end
  ctx.list_status = res.status
  local value = common(ctx, f, res, true)
  local tables = value ~= nil and check_table_list(f, value) or nil
  if tables and #tables == 0 and f.fails == 0 then
    note(f, "WARN", "the list is empty (with an empty searchString): nothing to make a dataset of")
  end
  flush(ctx.report, f, name, format("%d table(s) in %.3f s", tables and #tables or 0, res.seconds), { seconds = res.seconds })
  return tables
end

local function contains(haystack, needle)
  return tostring(haystack):lower():find(needle:lower(), 1, true) ~= nil
end

-- A search string that tells one listed table from the others: a code that
-- is not a part of any other table's code or title; one that its own title
-- holds too first. -> the string, and the table when the string is in its title.
-- (Bitrix24's docs say searchString "searches tables by externalCode", and of
-- title "the search is performed based on this field": either search conforms.)
local PICK_WINDOW = 200

local function pick_search(tables)
  -- Every code and title, lower case, in one string between NUL bytes: a code
  -- is in no other table's code or title when it occurs there no more often
  -- than in its own. One scan of that string per candidate, and at most
  -- PICK_WINDOW candidates in list order, then as many of the longest codes
  -- (the least likely to sit inside others): a list of 10,000 tables took
  -- ~40 s comparing each with each.
  local lower, parts = {}, {}
  for i, t in ipairs(tables) do
    lower[i] = { tostring(t.code):lower(), tostring(t.title):lower() }
    parts[#parts + 1] = lower[i][1]
    parts[#parts + 1] = lower[i][2]
  end
  local hay = "\0" .. concat(parts, "\0") .. "\0"
  local function count(text, needle)
    local n, at = 0, 1
    while true do
      local s = text:find(needle, at, true)
      if not s then return n end
      n, at = n + 1, s + 1
    end
  end
  local candidates = {}
  for i = 1, math.min(#tables, PICK_WINDOW) do candidates[#candidates + 1] = i end
  if #tables > PICK_WINDOW then
    local rest = {}
    for i = PICK_WINDOW + 1, #tables do rest[#rest + 1] = i end
    table.sort(rest, function(a, b)
      local la, lb = #lower[a][1], #lower[b][1]
      if la ~= lb then return la > lb end
      return a < b
    end)
    for k = 1, math.min(#rest, PICK_WINDOW) do candidates[#candidates + 1] = rest[k] end
  end
  local first
  for _, i in ipairs(candidates) do
    local code, title = lower[i][1], lower[i][2]
    local unique = code ~= "" and count(hay, code) == count(code, code) + count(title, code)
    if unique and title:find(code, 1, true) then return tables[i].code, tables[i] end
    if unique and not first then first = tables[i] end
  end
  first = first or tables[1]
  return first and first.code, nil
end

local function step_search(ctx, tables)
  local name = "table_list search"
  local search, in_title
  if ctx.opts.search then search = ctx.opts.search else search, in_title = pick_search(tables) end
  if not search then
    add(ctx.report, "SKIP", name, "no table listed to take a search string from")
    return
  end
  local f = findings()
  local res, err, seconds = request(ctx, "table_list", { searchString = search })
  if not res then
    add(ctx.report, "FAIL", name, "no answer: " .. err, { seconds = seconds })
    return
  end
  local value = common(ctx, f, res, true)
  local found = value ~= nil and check_table_list(f, value) or nil
  if found then
    local listed, unmatched = false, 0
    for _, t in ipairs(found) do
      if t.code == search then listed = true end
      if not contains(t.code, search) and not contains(t.title, search) then unmatched = unmatched + 1 end
    end
    local should_list = ctx.opts.search == nil
    if should_list and not listed then
      if in_title then
        note(f, "FAIL", format("searching %s did not return the table %s", show(search), show(search)))
      else
        local title
        for _, t in ipairs(tables) do if t.code == search then title = t.title end end
        note(f, "WARN", format("searching %s did not return the table %s (Bitrix24's docs say the search is by code, and"
          .. " also by title: a search of titles only misses it, its title %s not holding it)", show(search), show(search),
          show(title)))
      end
    end
    if unmatched > 0 then
      local others = 0
      for _, t in ipairs(tables) do
        if not contains(t.code, search) and not contains(t.title, search) then others = others + 1 end
      end
      if unmatched >= others and others > 0 then
        note(f, "FAIL", format("searchString %s is ignored: all %d table(s) that do not contain it came back (the endpoint must filter)",
          search, others))
      else
        note(f, "WARN", format("searchString %s: %d returned table(s) contain it in neither code nor title", search, unmatched))
      end
    end
  end
  -- with every listed table holding the string, no answer could show the
  -- search ignored: do not call it filtered
  local testable = false
  for _, t in ipairs(tables) do
    if not contains(t.code, search) and not contains(t.title, search) then testable = true break end
  end
  flush(ctx.report, f, name, format("searchString %s -> %d table(s)%s", show(search), found and #found or 0,
    testable and ", filtered" or "; every listed table holds it, so whether the endpoint filters is not tested"),
    { seconds = res.seconds })
end

local function step_description(ctx, code)
  local name = "table_description " .. code
  local f = findings()
  local res, err, seconds = request(ctx, "table_description", { table = code })
  if not res then
    add(ctx.report, "FAIL", name, "no answer: " .. err, { seconds = seconds, table = code })
    return nil
  end
  local value = common(ctx, f, res, true)
  local fields = value ~= nil and check_description(f, value) or nil
  if f.fails > 0 then fields = fields and #fields > 0 and fields or nil end
  local types = {}
  for _, fd in ipairs(fields or {}) do types[#types + 1] = fd.code .. ":" .. tostring(fd.type) end
  flush(ctx.report, f, name, format("%d field(s) %s", fields and #fields or 0, concat(types, ", ")),
    { seconds = res.seconds, table = code })
  return fields
end

local function field_types(fields)
  local types, codes = {}, {}
  for i, fd in ipairs(fields) do types[fd.code] = fd.type codes[i] = fd.code end
  return types, codes
end

-- After a data request for a table timed out, the others for it are SKIPped:
-- against a hung connector each would only cost another timeout.
local function data_hung(ctx, name, code)
  if not ctx.data_hung[code] then return false end
  add(ctx.report, "SKIP", name, "an earlier data request for this table got no answer within the timeout", { table = code })
  return true
end

local function data_request(ctx, name, code, params, expected, types, limit)
  local f = findings()
  params.table = code
  if data_hung(ctx, name, code) then return nil, f end
  local res, err, seconds, timed_out = request(ctx, "data", params)
  if not res then
    if timed_out then ctx.data_hung[code] = true end
    add(ctx.report, "FAIL", name, "no answer: " .. err, { seconds = seconds, table = code })
    return nil, f
  end
  local value = common(ctx, f, res, true)
  local rows = value ~= nil and check_data(f, value, expected, types, limit) or nil
  return rows, f, res
end

-- Without limit, as Bitrix24 asks when it loads a dataset: the whole table.
local function step_data_unlimited(ctx, code, codes, types, limited_rows)
  local name = format("data %s (no limit)", code)
  local f = findings()
  if data_hung(ctx, name, code) then return end
  local res, err, seconds, timed_out = request(ctx, "data", { table = code })
  if not res then
    if timed_out then ctx.data_hung[code] = true end
    if err:find("larger than max_body", 1, true) then
      -- in MB when a whole number of them (the 64 MiB default), else in bytes (max_body of run())
      local mb = ctx.opts.max_body / 1048576
      add(ctx.report, "WARN", name, format("the whole table is over %s; verify stopped reading it (Bitrix24 reads it all)",
        mb == floor(mb) and format("%.0f MB", mb) or format("%.0f bytes", ctx.opts.max_body)), { seconds = seconds, table = code })
    else
      add(ctx.report, "FAIL", name, "no answer: " .. err, { seconds = seconds, table = code })
    end
    return
  end
  local value = common(ctx, f, res, true)
  local rows = value ~= nil and check_data(f, value, codes, types, nil, true) or nil
  local limit = ctx.opts.limit
  if rows and limited_rows then
    -- the rows each answer held: a ragged row (reported) still counts
    local all, limited = rows.answered, limited_rows.answered
    if all < limited then
      note(f, "FAIL", format("%d row(s) without limit, fewer than the %d that limit %d gave", all, limited, limit))
    elseif limited < limit and all ~= limited then
      note(f, "WARN", format("%d row(s) without limit, but limit %d gave only %d: the table changed or the limit cut it wrongly",
        all, limit, limited))
    end
  end
  flush(ctx.report, f, name, format("%d row(s), the whole table", rows and rows.answered or 0),
    { seconds = res.seconds, table = code })
end

-- mapFields (external code -> dataset field name) as Bitrix24 sends it with a
-- select: the header keeps the external codes, which Bitrix24 pairs with the
-- dataset fields' externalCode; the rows are those of the same select without it.
local function step_data_map_fields(ctx, code, select, types, select_rows)
  local limit = ctx.opts.limit
  local map = {}
  for i, c in ipairs(select) do map[c] = "FIELD_" .. i end
  local name = format("data %s (select %s, mapFields)", code, concat(select, ","))
  local rows, f, res = data_request(ctx, name, code, { select = select, limit = limit, mapFields = map }, select, types, limit)
  if not res then return end
  local value = f.fails > 0 and json.decode(res.body) or nil
  local header = type(value) == "table" and value[1]
  if type(header) == "table" then
    local renamed = {}
    for _, cell in ipairs(header) do renamed[cell] = true end
    for _, c in ipairs(select) do
      if renamed[map[c]] then
        note(f, "FAIL", format("the header holds the dataset names of mapFields (%s for %s); it must keep the field codes",
          map[c], c))
        break
      end
    end
  end
  if rows and select_rows and rows.answered ~= select_rows.answered then
    note(f, "WARN", format("%d row(s) with mapFields, %d without: mapFields must not change which rows come back",
      rows.answered, select_rows.answered))
  end
  flush(ctx.report, f, name, format("%d row(s), header keeps the field codes", rows and #rows or 0),
    { seconds = res.seconds, table = code })
end

local function step_data(ctx, code, fields)
  local types, codes = field_types(fields)
  local limit = ctx.opts.limit

  -- 1. all fields, a small limit
  local name = format("data %s (limit %d)", code, limit)
  local rows, f, res = data_request(ctx, name, code, { limit = limit }, codes, types, limit)
  if res then
    ctx.data_status[code] = res.status
    flush(ctx.report, f, name, format("%d row(s) of %d field(s), typed as described", rows and #rows or 0, #codes),
      { seconds = res.seconds, table = code })
  end

  -- 2. a subset in another order than described
  local select
  if #codes >= 3 then select = { codes[#codes], codes[1] }
  elseif #codes == 2 then select = { codes[2] }
  else select = { codes[1] } end
  name = format("data %s (select %s)", code, concat(select, ","))
  local srows
  srows, f, res = data_request(ctx, name, code, { select = select, limit = limit }, select, types, limit)
  if res then
    flush(ctx.report, f, name, format("%d row(s), header equals select", srows and #srows or 0),
      { seconds = res.seconds, table = code })
  end
  step_data_map_fields(ctx, code, select, types, srows)
  step_data_unlimited(ctx, code, codes, types, rows)

  -- 3. a style A filter (key prefix "=") on a value seen in the first answer
  name = format("data %s (filter)", code)
  local field, value
  for _, wanted in ipairs({ "int", "string" }) do
    for _, fd in ipairs(fields) do
      local v = rows and rows[1] and rows[1][fd.code]
      -- an integer beyond 2^53 that this runtime holds only as a double (LuaJIT)
      -- cannot be sent back exactly: filtering on it would test the rounding
      -- (or that arrived as a float, past the 64-bit range under Lua 5.4: 1e+20)
      local inexact = type(v) == "number" and (math.type == nil or math.type(v) == "float") and (v >= 2^53 or v <= -2^53)
      if fd.type == wanted and v ~= nil and v ~= null and (type(v) == "string" or type(v) == "number")
        and not inexact then
        field, value = fd.code, v
        break
      end
    end
    if field then break end
  end
  if not field then
    if data_hung(ctx, name, code) then return end
    add(ctx.report, "SKIP", name, rows and "no int or string value in the first rows to filter on"
      or format("the first data request (limit %d) gave no usable rows to take a value from", limit), { table = code })
    return
  end
  local sent = value
  if ctx.mode == "form" and type(value) == "number" then
    -- integral values without an exponent; anything else (1.5 under an int
    -- field, 1e300) as Lua writes it, which format("%d") would refuse
    if math.type and math.type(value) == "integer" then
      sent = format("%d", value) -- 64-bit integers as they are (Lua 5.4)
    else
      sent = (value == floor(value) and value > -2^53 and value < 2^53) and format("%d", value) or format("%.17g", value)
    end
  end
  name = format("data %s (filter[=%s]=%s)", code, field, tostring(sent))
  local frows
  frows, f, res = data_request(ctx, name, code, { filter = { ["=" .. field] = sent }, limit = limit }, codes, types, limit)
  if not res then return end
  if frows then
    if #frows == 0 and f.fails == 0 then
      note(f, "WARN", format("no rows came back, though a row has %s = %s", field, show(value)))
    end
    local wrong = 0
    for _, row in ipairs(frows) do
      local v = row[field]
      -- a database may compare strings without case (MySQL's default collations)
      local equal = v == value or (type(v) == "string" and type(value) == "string" and v:lower() == value:lower())
      if not equal then wrong = wrong + 1 end
    end
    if wrong > 0 then
      note(f, "FAIL", format("%d of %d row(s) do not have %s = %s: the filter seems ignored (urlData must answer only"
        .. " the rows that match its filter)", wrong, #frows, field, show(value)))
    end
  end
  flush(ctx.report, f, name, format("%d row(s), all with %s = %s", frows and #frows or 0, field, show(value)),
    { seconds = res.seconds, table = code })
end

local function mangle(value)
  value = tostring(value)
  if value == "" then return "x" end
  return "wrong-" .. value
end

-- Rows or tables in a 200 answer given with wrong credentials: what leaked.
local function leaked(endpoint, res)
  local value = json.decode(res.body)
  if type(value) ~= "table" then return nil end
  if endpoint == "table_list" then return #value > 0 and format("%d table(s)", #value) or nil end
  return #value > 1 and format("%d row(s)", #value - 1) or nil
end

-- The other endpoints with the settings that check refused mangled: each
-- must check them too (protocol.md section 2: the connection values are how
-- every endpoint authenticates Bitrix24), not only check.
local function step_wrong_credentials_endpoints(ctx, refused)
  local name = "wrong credentials"
  local mangled = {}
  for k, v in pairs(ctx.connection) do mangled[k] = v end
  for _, code in ipairs(refused) do mangled[code] = mangle(mangled[code]) end
  local what = concat(refused, ", ")
  local requests = { { "table_list", { searchString = "" } } }
  if ctx.first_table and not ctx.data_hung[ctx.first_table] then requests[2] = { "data", { table = ctx.first_table, limit = 1 } } end
  for _, r in ipairs(requests) do
    local endpoint, params = r[1], r[2]
    params.connection = mangled
    local check_name = format("%s %s%s (%s mangled)", name, endpoint, params.table and (" " .. params.table) or "", what)
    -- an endpoint that refused the settings given refuses mangled ones too:
    -- that proves no check of them (as for check, step_wrong_credentials)
    local right = endpoint == "table_list" and ctx.list_status or ctx.data_status[params.table]
    local res, err, seconds
    if not (right and right ~= 200) then res, err, seconds = post(ctx, endpoint, params) end
    if right and right ~= 200 then
      add(ctx.report, "SKIP", check_name, format("it refused the settings given too (HTTP %s), so a refusal of mangled"
        .. " ones tells nothing", tostring(right)), { table = params.table })
    elseif not res then
      add(ctx.report, "FAIL", check_name, "no answer: " .. err, { seconds = seconds, table = params.table })
    elseif res.status ~= 200 then
      add(ctx.report, "PASS", check_name, format("refused with HTTP %d", res.status),
        { seconds = res.seconds, table = params.table })
    else
      local got = leaked(endpoint, res)
      if got then
        add(ctx.report, "FAIL", check_name, format("%s answered 200 with %s, though setting(s) %s were wrong: it must check "
          .. "the connection values itself, as check does (anyone who knows the URL gets the data)", endpoint, got, what),
          { seconds = res.seconds, table = params.table })
      else
        add(ctx.report, "WARN", check_name, format("%s answered 200 (without data) though setting(s) %s were wrong: answer a "
          .. "non-200 status, which Bitrix24 reads as \"connection unavailable\"", endpoint, what),
          { seconds = res.seconds, table = params.table })
      end
    end
  end
end

local function step_wrong_credentials(ctx)
  local name = "wrong credentials"
  local codes = {}
  for code in pairs(ctx.connection) do codes[#codes + 1] = code end
  table.sort(codes)
  if #codes == 0 then
    add(ctx.report, "SKIP", name, "no --setting given: nothing to mangle")
    return
  end
  if ctx.check_unanswered then
    -- the same request again, once per setting: against a hung connector that
    -- would only add a timeout each
    add(ctx.report, "SKIP", name, "check got no answer with the right settings")
    return
  end
  if ctx.check_status ~= 200 then
    -- a connector that refuses the settings given (or every request) refuses
    -- mangled ones too: that proves no check of them
    add(ctx.report, "SKIP", name, format("check refused the settings given (HTTP %s), so a refusal of mangled ones tells nothing",
      tostring(ctx.check_status)))
    return
  end
  local answers, refused = {}, {}
  for i, code in ipairs(codes) do
    local mangled = {}
    for k, v in pairs(ctx.connection) do mangled[k] = v end
    mangled[code] = mangle(mangled[code])
    local res, err, seconds = post(ctx, "check", { connection = mangled })
    answers[i] = { res = res, err = err, seconds = seconds }
    if res and res.status ~= 200 then refused[#refused + 1] = code end
  end
  for i, code in ipairs(codes) do
    local check_name = format("%s (%s mangled)", name, code)
    local res, a = answers[i].res, answers[i]
    if not res then
      add(ctx.report, "FAIL", check_name, "no answer: " .. a.err, { seconds = a.seconds })
    elseif res.status ~= 200 then
      add(ctx.report, "PASS", check_name, format("refused with HTTP %d", res.status), { seconds = res.seconds })
    elseif #refused == 0 then
      -- no setting checked: the connector authenticates nothing
      add(ctx.report, "FAIL", check_name, format("check answered 200 with setting %s changed: wrong credentials are accepted "
        .. "(the connector must check the connection values: they are how it authenticates Bitrix24)", code),
        { seconds = res.seconds })
    else
      -- another setting is checked: this one may be no credential
      add(ctx.report, "WARN", check_name, format("check answered 200 with setting %s changed: wrong credentials are accepted", code),
        { seconds = res.seconds })
    end
  end
  if #refused > 0 then step_wrong_credentials_endpoints(ctx, refused) end
end

-- Each endpoint's slowest answer against Bitrix24's budget (250 s, connector/index.md).
local function step_time(ctx)
  local budget = ctx.opts.budget
  local parts, over = {}, {}
  for _, endpoint in ipairs(ENDPOINTS) do
    local t = ctx.slowest[endpoint]
    if t then
      parts[#parts + 1] = format("%s %.3f s", endpoint, t.seconds)
      if t.seconds > budget then over[#over + 1] = { endpoint, t } end
    end
  end
  if #parts == 0 then return end
  for _, o in ipairs(over) do
    add(ctx.report, "FAIL", "time " .. o[1], format("the slowest %s took %.1f s, over the %g s Bitrix24 waits: it would report"
      .. " the connection unavailable", o[2].answered and "answer" or "request (no answer)", o[2].seconds, budget),
      { seconds = o[2].seconds })
  end
  if #over == 0 then
    add(ctx.report, "PASS", "time", format("slowest answers %s, within the %g s Bitrix24 waits", concat(parts, ", "), budget))
  end
end

-- A local-network address is one Bitrix24 does not call (biconnector.host.address).
local function step_address(ctx)
  local url = ctx.base
  local reason, host = address.local_reason(url)
  if not reason then
    add(ctx.report, "PASS", "address", format("%s is not a local-network address", tostring(address.host_of(url))))
  elseif ctx.opts.allow_local then
    add(ctx.report, "PASS", "address", format("%s is %s; allowed (--allow-local: a portal with allow_local_connections)", host, reason))
  else
    add(ctx.report, "WARN", "address", address.warning(url) .. " (--allow-local when the portal is on this network)")
  end
end

local function run_mode(ctx)
  step_address(ctx)
  local ok = step_check(ctx)
  local tables = step_table_list(ctx)
  if not tables then
    add(ctx.report, "SKIP", "table_description, data", "no usable table list")
  else
    step_search(ctx, tables)
    local wanted = ctx.opts.tables
    if wanted == nil or #wanted == 0 then
      wanted = {}
      for i, t in ipairs(tables) do wanted[i] = t.code end
    else
      local listed = {}
      for _, t in ipairs(tables) do listed[t.code] = true end
      for _, code in ipairs(wanted) do
        if not listed[code] then
          add(ctx.report, "WARN", "table_list", format("--table %s is not in the table list", show(code)))
        end
      end
    end
    for _, code in ipairs(wanted) do
      local fields = step_description(ctx, code)
      if fields and #fields > 0 then
        ctx.first_table = ctx.first_table or code
        step_data(ctx, code, fields)
      else
        add(ctx.report, "SKIP", "data " .. code, "no usable description", { table = code })
      end
    end
  end
  step_wrong_credentials(ctx)
  step_time(ctx)
  return ok
end

---------------------------------------------------------------- public API

-- A JSON body carries UTF-8 text only: the option whose text is not UTF-8
-- (when the body mode sends JSON), or nil.
local function json_text_problem(o)
  if o.body ~= "json" and o.body ~= "both" then return nil end
  local function bad(s) return s ~= nil and json.encode(tostring(s)) == nil end
  local codes = {}
  for code in pairs(o.settings or {}) do codes[#codes + 1] = tostring(code) end
  table.sort(codes)
  for _, code in ipairs(codes) do
    if bad(code) or bad(o.settings[code]) then return "--setting " .. clean(code) end
  end
  for _, t in ipairs(o.tables or {}) do
    if bad(t) then return "--table" end
  end
  if bad(o.search) then return "--search" end
  return nil
end

local function json_text_message(option)
  return option .. ": a JSON body (--body json or both) needs UTF-8 text"
end

-- verify.run(url, opts) -> report
-- opts: settings = {code = value}, body = "form"|"json"|"both", tables = {codes},
-- limit, search, timeout, slow, budget, allow_local, connect_timeout, max_body, ca_file,
-- progress = function(endpoint, table_code, body_mode) called before each request,
-- transport = function(req) -> {status, headers, body} | nil, err (default core.http).
function _M.run(url, opts)
  url = address.lower_scheme(url) -- HTTP://h is http://h
  if type(url) ~= "string" or not url:match("^https?://[^/]") then
    error("verify.run: url must be an http(s) URL, got " .. show(url), 2)
  end
  if url:find("[?#]") then error("verify.run: " .. QUERY_MESSAGE .. show(url), 2) end
  local bad_byte = address.unencoded(url, "URL")
  if bad_byte then error("verify.run: " .. bad_byte, 2) end
  opts = opts or {}
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  if o.body ~= "form" and o.body ~= "json" and o.body ~= "both" then
    error("verify.run: body must be form, json or both, got " .. show(o.body), 2)
  end
  local bad_text = json_text_problem(o)
  if bad_text then error("verify.run: " .. json_text_message(bad_text), 2) end
  local report = new_report(url, o)
  local transport = o.transport
  local handle
  if not transport then
    handle = assert(core.http.new())
    transport = function(req) return handle:request(req) end
  end
  local connection = {}
  for k, v in pairs(o.settings or {}) do connection[k] = tostring(v) end
  local modes = o.body == "both" and { "form", "json" } or { o.body }
  for _, mode in ipairs(modes) do
    local ctx = { base = base_url(url), mode = mode, opts = o, report = report, transport = transport,
      connection = connection, slowest = {}, data_hung = {}, data_status = {} }
    local first = #report.checks + 1
    run_mode(ctx)
    for i = first, #report.checks do report.checks[i].body = mode end
  end
  if handle then handle:close() end
  return report
end

-- The report as text: one line per check and a summary.
function _M.format(report)
  local lines = { format("biconnector verify %s (body: %s)", report.url, report.body) }
  local both = report.body == "both"
  for _, c in ipairs(report.checks) do
    local name = both and ("[" .. c.body .. "] " .. c.check) or c.check
    lines[#lines + 1] = format("%-4s  %s: %s", c.result, name, c.message)
  end
  local s = report.summary
  lines[#lines + 1] = format("Summary: %d PASS, %d WARN, %d FAIL, %d SKIP -> %s", s.PASS, s.WARN, s.FAIL, s.SKIP,
    report.ok and (s.WARN > 0 and "conforms, with warnings" or "conforms") or "does NOT conform")
  return concat(lines, "\n") .. "\n"
end

---------------------------------------------------------------- the command

local function parse_setting(text)
  local code, value = tostring(text):match("^([^=]+)=(.*)$")
  return code, value
end
_M.parse_setting = parse_setting

-- parse_args(args) -> url, opts, as_json | nil, message
function _M.parse_args(args)
  local o = { settings = {}, tables = {} }
  local url, as_json
  local i = 1
  local function value_of(flag)
    i = i + 1
    local v = args[i]
    if v == nil then return nil, flag .. " needs a value" end
    return v
  end
  local function number_of(flag, min)
    local v, err = value_of(flag)
    if not v then return nil, err end
    local n = tonumber(v)
    if not n or n ~= n or n < min then return nil, format("%s must be a number >= %g, got %s", flag, min, v) end
    return n
  end
  while i <= #args do
    local a = args[i]
    local v, err
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if flag and flag ~= "--setting" then
      table.insert(args, i + 1, inline)
      a = flag
    end
    if a == "--json" then as_json = true
    elseif a == "--setting" then
      v, err = value_of(a)
      if not v then return nil, err end
      local code, value = parse_setting(v)
      if not code then return nil, "--setting must be CODE=VALUE, got " .. v end
      o.settings[code] = value
    elseif a:match("^%-%-setting=") then
      local code, value = parse_setting(a:sub(11))
      if not code then return nil, "--setting must be CODE=VALUE, got " .. a:sub(11) end
      o.settings[code] = value
    elseif a == "--table" then
      v, err = value_of(a)
      if not v then return nil, err end
      -- a table named twice is checked once
      local seen = false
      for _, t in ipairs(o.tables) do if t == v then seen = true break end end
      if not seen then o.tables[#o.tables + 1] = v end
    elseif a == "--body" then
      v, err = value_of(a)
      if not v then return nil, err end
      if v ~= "form" and v ~= "json" and v ~= "both" then return nil, "--body must be form, json or both, got " .. v end
      o.body = v
    elseif a == "--limit" then
      v, err = number_of(a, 1)
      if not v then return nil, err end
      if v ~= floor(v) then return nil, "--limit must be an integer" end
      -- past 2^53 a double is no exact integer (1e300 has no integer form at
      -- all: the request names crashed on it)
      if v >= 2^53 then return nil, format("--limit must be an integer from 1 to %d, got %s", 2^53 - 1, args[i]) end
      -- an integer, so that 1e15 is sent as limit=1000000000000000 (Lua 5.4)
      o.limit = math.tointeger and math.tointeger(v) or v
    elseif a == "--timeout" then
      v, err = number_of(a, 0.001)
      if not v then return nil, err end
      -- the HTTP client's bound (core.http refuses more with a Lua error)
      if v > 1e6 then return nil, "--timeout must be a number from 0.001 to 1000000, got " .. args[i] end
      o.timeout = v
    elseif a == "--slow" then
      v, err = number_of(a, 0)
      if not v then return nil, err end
      o.slow = v
    elseif a == "--budget" then
      v, err = number_of(a, 0.001)
      if not v then return nil, err end
      o.budget = v
    elseif a == "--allow-local" then o.allow_local = true
    elseif a == "--search" then
      v, err = value_of(a)
      if not v then return nil, err end
      o.search = v
    elseif a == "--ca-file" then
      v, err = value_of(a)
      if not v then return nil, err end
      -- a file that cannot be read is the command line's fault, not the connector's
      local f, ferr = io.open(v, "rb")
      if not f then return nil, "--ca-file: cannot read " .. tostring(ferr) end
      f:close()
      o.ca_file = v
    elseif a:sub(1, 1) == "-" then
      return nil, "unknown option " .. a
    elseif url == nil then
      url = a
    else
      return nil, "unexpected argument " .. a
    end
    i = i + 1
  end
  if not url then return nil, "URL is required" end
  url = address.lower_scheme(url)
  if not url:match("^https?://[^/]") then return nil, "URL must start with http:// or https://, got " .. shown_url(url) end
  if url:find("[?#]") then return nil, QUERY_MESSAGE .. shown_url(url) end
  local bad_byte = address.unencoded(url, "URL")
  if bad_byte then return nil, bad_byte end
  local bad_text = json_text_problem(o)
  if bad_text then return nil, json_text_message(bad_text) end
  return url, o, as_json
end

function _M.main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local copy = cli.arguments(args, out, _M.USAGE)
  if not copy then return 0 end
  local url, o, as_json = _M.parse_args(copy)
  if not url then
    err:write("biconnector verify: ", o, "\n", _M.USAGE)
    return 2
  end
  local progress = progress_lib.new("verify " .. shown_url(url), { json = as_json })
  local sent = 0
  o.progress = progress.enabled and function(endpoint, table_code, mode)
    sent = sent + 1
    progress.update(format("request %d: %s%s%s", sent, endpoint, table_code and (" " .. printable(table_code)) or "",
      o.body == "both" and (" [" .. mode .. "]") or ""))
  end or nil
  local report = _M.run(url, o)
  progress.clear()
  if as_json then
    out:write(assert(json.encode(report, { indent = 2 })), "\n")
  else
    out:write(_M.format(report))
  end
  return report.ok and 0 or 1
end

return _M
