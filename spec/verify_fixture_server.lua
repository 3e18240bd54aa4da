-- A hand-written connector on a plain core.server, for spec/verify_spec.lua.
-- URL http://127.0.0.1:PORT/MODE/ serves the four endpoints; MODE "good"
-- conforms, every other mode breaks one rule of protocol.md section 2;
-- modes combine with "+" (e.g. /ragged+ignore_limit/).
local core = require "biconnector.core"
local json = require "biconnector.json"
local form = require "biconnector.form"

core.process.trap("TERM", "INT", "PIPE")
local null = core.null
local TOKEN = "s3cret"

local TABLES = { { code = "items", title = "Items" }, { code = "people", title = "People" } }
local FIELDS = {
  items = { { code = "id", name = "ID", type = "int" }, { code = "name", name = "Name", type = "string" },
    { code = "price", name = "Price", type = "double" }, { code = "day", name = "Day", type = "date" },
    { code = "at", name = "At", type = "datetime" } },
  people = { { code = "id", name = "ID", type = "int" }, { code = "email", name = "E-mail", type = "string" } },
}

local function row_of(tbl, i)
  if tbl == "items" then
    return { id = i, name = "item " .. i, price = i * 1.5, day = ("2025-01-%02d"):format(i),
      at = ("2025-01-%02d 10:00:%02d"):format(i, i), }
  end
  return { id = i, email = i % 3 == 0 and null or ("p" .. i .. "@example.com") }
end

local function answer(status, body, ctype)
  return status, { ["Content-Type"] = ctype or "application/json" }, body
end

local function handle(modes, endpoint, p)
  local set = {}
  for m in modes:gmatch("[^+]+") do set[m] = true end
  local function mode_is(m) return set[m] == true end
  local conn = type(p.connection) == "table" and p.connection or {}
  -- open_data: checks the token on check only, serves the rest to anyone
  local open = mode_is("open") or (mode_is("open_data") and endpoint ~= "check")
  if not open and conn.token ~= TOKEN then return answer(403, '{"error":"forbidden"}') end
  if endpoint == "check" then
    if mode_is("check500") then return answer(500, '{"error":"internal"}') end
    if mode_is("check_empty") then return answer(200, "") end
    if mode_is("check_zero") then return answer(200, "0") end
    return answer(200, '{"ok":true}')
  elseif endpoint == "table_list" then
    if mode_is("slow") then core.http.sleep(0.3) end
    if mode_is("list500") then return answer(500, "") end
    local search = tostring(p.searchString or ""):lower()
    local list = {}
    -- title_search: titles that do not hold the codes, searched by title only
    local titles = mode_is("title_search") and { items = "Goods", people = "Persons" } or {}
    for _, t in ipairs(TABLES) do
      local title = titles[t.code] or t.title
      local by_code = not mode_is("title_search") and t.code:find(search, 1, true)
      if mode_is("no_search") or search == "" or by_code or title:lower():find(search, 1, true) then
        list[#list + 1] = { code = t.code, title = title }
      end
    end
    if mode_is("empty_search") and search ~= "" then list = {} end -- finds nothing
    if mode_is("empty_code") then list[#list + 1] = { code = "", title = "Nameless" } end
    if mode_is("zero") then list[#list + 1] = { code = "zero", title = "0" } end
    -- esc_code: a table whose code holds a terminal escape sequence (described as items)
    if mode_is("esc_code") and search == "" then list[#list + 1] = { code = "red\27[31m", title = "Red" } end
    if mode_is("text_type") then return answer(200, json.encode(list), "text/html") end
    return answer(200, json.encode(list))
  elseif endpoint == "table_description" then
    local fields = FIELDS[p.table or p.name] or (mode_is("esc_code") and p.table == "red\27[31m" and FIELDS.items)
    if not fields then return answer(404, '{"error":"no such table"}') end
    local out = {}
    for i, f in ipairs(fields) do out[i] = { code = f.code, name = f.name, type = f.type } end
    if mode_is("unknown_type") and p.table == "items" then out[3].type = "currency" out[1].type = "INT" end
    if mode_is("odd_type") and p.table == "items" then out[3].type = "currency" end -- unknown, lower case
    if mode_is("zero") and p.table == "items" then out[2].code = "0" end
    if mode_is("no_name") and p.table == "items" then out[2].name = nil end
    return answer(200, json.encode(out))
  elseif endpoint == "data" then
    local fields = FIELDS[p.table] or (mode_is("esc_code") and p.table == "red\27[31m" and FIELDS.items)
    if not fields then return answer(404, '{"error":"no such table"}') end
    if mode_is("not_json") then return answer(200, "<html>oops</html>", "text/html") end
    if mode_is("bad_utf8") then return answer(200, "<html>\255\254 \1\27[31m</html>", "text/html") end
    if mode_is("hang_data") then core.http.sleep(1) end
    local select = {}
    if type(p.select) == "table" and not mode_is("header_mismatch") then
      for _, c in ipairs(p.select) do select[#select + 1] = c end
    else
      for i, f in ipairs(fields) do select[i] = f.code end
    end
    local filter_id = type(p.filter) == "table" and tonumber(p.filter["=id"] or p.filter.id)
    local filter_name = type(p.filter) == "table" and p.filter["=name"]
    if mode_is("ignore_filter") then filter_id, filter_name = nil, nil end
    local limit = tonumber(p.limit)
    if mode_is("ignore_limit") then limit = nil end
    if mode_is("default_limit") and limit == nil then limit = 2 end -- a cap of its own when none is asked
    local rows = { select }
    if mode_is("map_header") and type(p.mapFields) == "table" then -- renames the header by mapFields
      rows[1] = {}
      for c, code in ipairs(select) do rows[1][c] = p.mapFields[code] or code end
    end
    for i = 1, 20 do
      if limit and #rows > limit then break end
      local r = row_of(p.table, i)
      if (not filter_id or filter_id == i) and (not filter_name or filter_name == r.name) then
        local row = {}
        for c, code in ipairs(select) do row[c] = r[code] == nil and null or r[code] end
        rows[#rows + 1] = row
      end
    end
    if mode_is("ragged") and rows[3] then rows[3][#rows[3]] = nil end
    if mode_is("bad_values") and p.table == "items" and rows[2] then
      for c, code in ipairs(select) do
        if code == "id" then rows[2][c] = "1" end
        if code == "day" then rows[2][c] = "31.05.2025" end
        if code == "at" then rows[2][c] = "2024-08-30T12:19:57" end
      end
    end
    if mode_is("cyrillic") and p.table == "items" and rows[2] then -- a long UTF-8 string where an int belongs
      for c, code in ipairs(select) do
        if code == "id" then rows[2][c] = ("идентификатор "):rep(5) end
      end
    end
    if mode_is("bigint") and p.table == "items" then -- an int past the 64-bit range: a float to the reader
      for r = 2, #rows do
        for c, code in ipairs(select) do
          if code == "id" then rows[r][c] = 1e20 end
        end
      end
    end
    if mode_is("no_such_day") and p.table == "items" and rows[2] then
      for c, code in ipairs(select) do
        if code == "day" then rows[2][c] = "2025-02-30" end
        if code == "at" then rows[2][c] = "2025-04-31 10:00:00" end
      end
    end
    return answer(200, json.encode(rows))
  end
  return answer(404, '{"error":"not found"}')
end

local srv = assert(core.server.new {
  port = 0,
  handler = function(req)
    local mode, endpoint = req.path:match("^/([%w_+]+)/([%w_]+)$")
    if not mode or req.method ~= "POST" then return answer(404, '{"error":"not found"}') end
    local ctype = req.headers["content-type"] or ""
    local p
    if ctype:find("json", 1, true) then p = json.decode(req.body) else p = form.decode(req.body) end
    if type(p) ~= "table" then return answer(400, '{"error":"bad body"}') end
    return handle(mode, endpoint, p)
  end,
})
io.stdout:write("listening on http://127.0.0.1:", srv:port(), "\n")
io.stdout:flush()
srv:run()
srv:close()
os.exit(0)
