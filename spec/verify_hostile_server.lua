-- A connector written on a raw LuaSocket server, for spec/verify_accept_spec.lua:
-- every byte of the answer is chosen here, so it can break HTTP itself (a
-- redirect, a connection closed mid-answer, chunks, gzip, a BOM) as well as
-- the connector protocol (protocol.md section 2).
-- URL http://127.0.0.1:PORT/MODE/ serves the four endpoints; MODE "good"
-- conforms, every other mode breaks one thing; modes combine with "+".
-- One connection at a time, each closed after its answer.
local socket = require "socket"
local json = require "biconnector.json"
local form = require "biconnector.form"
local null = require("biconnector.core").null

local TOKEN = "s3cret"
local TABLES = { { code = "items", title = "Items" }, { code = "people", title = "People" },
  { code = "orders", title = "Orders" } }
local FIELDS = { { code = "id", name = "ID", type = "int" }, { code = "name", name = "Name", type = "string" },
  { code = "at", name = "At", type = "datetime" } }
local ROWS = 8

local function row_of(i)
  return { id = i, name = "row " .. i, at = ("2025-01-%02d 10:00:00"):format(i) }
end

-- The answer to one request as a table {status, ctype, body, raw, close_after, sleep, headers}.
local function handle(set, endpoint, p, req_headers)
  local function m(name) return set[name] == true end
  local function ok(value) return { status = 200, body = type(value) == "string" and value or json.encode(value) } end
  local conn = type(p.connection) == "table" and p.connection or {}
  if conn.token ~= TOKEN then return { status = 403, body = '{"error":"wrong token"}' } end
  -- accepts only one body encoding: the other is refused as Bitrix24's would be a wrong request
  local ctype = req_headers["content-type"] or ""
  if m("json_only") and not ctype:find("json", 1, true) then return { status = 400, body = '{"error":"JSON bodies only"}' } end
  if m("form_only") and ctype:find("json", 1, true) then return { status = 400, body = '{"error":"form bodies only"}' } end
  if endpoint == "check" then
    return ok('{"ok":true}')
  elseif endpoint == "table_list" then
    if m("list403") then return { status = 403, body = '{"error":"not allowed"}' } end -- whatever the settings
    local search = tostring(p.searchString or ""):lower()
    local list = {}
    local tables = TABLES
    if m("many_tables") then -- 10,000 more, codes inside one another (table_1 in table_10, table_100...)
      tables = {}
      for i = 1, 10000 do tables[i] = { code = "table_" .. i, title = "Table " .. i } end
      for _, t in ipairs(TABLES) do tables[#tables + 1] = t end
    end
    for _, t in ipairs(tables) do
      if search == "" or t.code:find(search, 1, true) or t.title:lower():find(search, 1, true) then
        list[#list + 1] = { code = t.code, title = t.title }
      end
    end
    if m("one_table") then list = { TABLES[1] } end -- the only table, whatever the search
    if m("list_empty") then list = {} end
    if m("list_dup") then list[#list + 1] = { code = list[1].code, title = "Again" } end
    if m("list_no_title") then list[2] = { code = list[2] and list[2].code or "x" } end
    if m("list_number_code") then list[1].code = 7 end
    if m("list_object") then return ok('{"items":"Items"}') end
    return ok(list)
  elseif endpoint == "table_description" then
    local known
    for _, t in ipairs(TABLES) do if t.code == p.table then known = t end end
    if not known then return { status = 404, body = '{"error":"no such table"}' } end
    local out = {}
    for i, f in ipairs(FIELDS) do out[i] = { code = f.code, name = f.name, type = f.type } end
    if m("desc_dup") then out[3].code = "id" end
    if m("desc_number_type") then out[2].type = 5 end
    if m("desc_upper") then out[2].type = "String" end
    return ok(out)
  elseif endpoint == "data" then
    if m("data403") then return { status = 403, body = '{"error":"not allowed"}' } end -- whatever the settings
    local header = {}
    if type(p.select) == "table" and not m("ignore_select") then
      for i, c in ipairs(p.select) do header[i] = c end
    else
      for i, f in ipairs(FIELDS) do header[i] = f.code end
    end
    local limit = tonumber(p.limit)
    if m("ignore_limit") then limit = nil end
    local want = type(p.filter) == "table" and p.filter["=id"]
    if m("ignore_filter") then want = nil end
    local rows = { header }
    for i = 1, ROWS do
      if limit and #rows > limit then break end
      if not want or tostring(want) == tostring(i) then
        local r, row = row_of(i), {}
        for c, code in ipairs(header) do row[c] = r[code] == nil and null or r[code] end
        rows[#rows + 1] = row
      end
    end
    if m("short_row") and rows[2] then rows[2][#rows[2]] = nil end
    if m("long_row") and rows[2] then rows[2][#rows[2] + 1] = "extra" end
    if m("string_int") and rows[2] then rows[2][1] = "1" end
    if m("iso_offset") then
      for r = 2, #rows do
        for c, code in ipairs(header) do if code == "at" then rows[r][c] = "2024-08-30T12:19:57+02:00" end end
      end
    end
    if m("bad_date") then
      for r = 2, #rows do
        for c, code in ipairs(header) do if code == "at" then rows[r][c] = "30.08.2024 12:19:57" end end
      end
    end
    if m("empty_data") then return ok("") end
    if m("bom") then return ok("\239\187\191" .. json.encode(rows)) end
    if m("data_object") then return ok('{"rows":' .. json.encode(rows) .. "}") end
    if m("data_rows_only") then table.remove(rows, 1) return ok(rows) end
    if (m("big_string_ids") or m("big_ids")) and not limit then -- 300,000 rows, every id a string: one FAIL per row
      local parts = { json.encode(header) }
      for i = 1, 300000 do
        local r = row_of(i % 28 + 1)
        local row = {}
        for c, code in ipairs(header) do row[c] = code == "id" and (m("big_ids") and i or tostring(i)) or r[code] end
        parts[#parts + 1] = json.encode(row)
      end
      return ok("[" .. table.concat(parts, ",") .. "]")
    end
    if m("huge") then
      local big = { header }
      local r = row_of(1)
      for i = 1, 2000 do big[i + 1] = { i, ("x"):rep(100), r.at } end
      return ok(big)
    end
    return ok(rows)
  end
  return { status = 404, body = '{"error":"not found"}' }
end

local function gzip(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  local pipe = assert(io.popen("gzip -c -n " .. path, "r"))
  local out = pipe:read("*a")
  pipe:close()
  os.remove(path)
  return out
end

local REASONS = { [200] = "OK", [302] = "Found", [400] = "Bad Request", [403] = "Forbidden", [404] = "Not Found" }

local function send(c, a, set, path)
  local function m(name) return set[name] == true end
  if m("redirect") then
    c:send("HTTP/1.1 302 Found\r\nLocation: " .. path:gsub("^/[^/]+/", "/good/") .. "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    return
  end
  if m("garbage") then c:send("this is not HTTP at all\r\n\r\n") return end
  local body = a.body or ""
  local head = { ("HTTP/1.1 %d %s"):format(a.status, REASONS[a.status] or "Status"),
    "Content-Type: " .. (a.ctype or "application/json"), "Connection: close" }
  if m("gzip") and a.status == 200 then
    body = gzip(body)
    head[#head + 1] = "Content-Encoding: gzip"
  end
  if m("chunked") then
    head[#head + 1] = "Transfer-Encoding: chunked"
    local chunks = {}
    for i = 1, #body, 7 do
      local piece = body:sub(i, i + 6)
      chunks[#chunks + 1] = ("%x\r\n%s\r\n"):format(#piece, piece)
    end
    c:send(table.concat(head, "\r\n") .. "\r\n\r\n" .. table.concat(chunks) .. "0\r\n\r\n")
    return
  end
  if m("close_mid") and a.status == 200 then
    head[#head + 1] = "Content-Length: " .. (#body + 1000)
    c:send(table.concat(head, "\r\n") .. "\r\n\r\n" .. body:sub(1, math.floor(#body / 2)))
    return
  end
  if m("no_length") then -- HTTP/1.0 style: the body ends when the connection closes
    c:send(table.concat(head, "\r\n") .. "\r\n\r\n" .. body)
    return
  end
  if m("slow") then
    c:send(table.concat(head, "\r\n") .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body:sub(1, 1))
    socket.sleep(tonumber(set.slow_seconds) or 1.5)
    c:send(body:sub(2))
    return
  end
  head[#head + 1] = "Content-Length: " .. #body
  c:send(table.concat(head, "\r\n") .. "\r\n\r\n" .. body)
end

local function serve_one(c)
  c:settimeout(5)
  local line = c:receive("*l")
  if not line then return end
  local method, path = line:match("^(%u+) (%S+) HTTP/1%.%d$")
  local headers = {}
  while true do
    local h = c:receive("*l")
    if not h or h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.-)%s*$")
    if k then headers[k:lower()] = v end
  end
  local body = ""
  local n = tonumber(headers["content-length"] or "0") or 0
  if n > 0 then body = c:receive(n) or "" end
  local mode, endpoint = (path or ""):match("^/([%w_+]+)/([%w_]+)$")
  if method ~= "POST" or not mode then
    c:send("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    return
  end
  local set = {}
  for name in mode:gmatch("[^+]+") do set[name] = true end
  local p
  if (headers["content-type"] or ""):find("json", 1, true) then p = json.decode(body) else p = form.decode(body) end
  local a = type(p) == "table" and handle(set, endpoint, p, headers) or { status = 400, body = '{"error":"bad body"}' }
  send(c, a, set, path)
end

local srv = assert(socket.bind("127.0.0.1", 0))
local _, port = srv:getsockname()
io.stdout:write("listening on http://127.0.0.1:", port, "\n")
io.stdout:flush()
while true do
  local c = srv:accept()
  if c then
    local ok, err = pcall(serve_one, c)
    if not ok then io.stderr:write("verify_hostile_server: ", tostring(err), "\n") end
    c:close()
  end
end
