-- Deterministic sample data for the demo connector: deals, contacts and
-- invoices of a small CRM. Every value is a pure function of (table, row
-- number, column), so any row can be made on its own and rows come out of an
-- iterator one at a time: memory stays flat for millions of rows.
local floor, format, tonumber = math.floor, string.format, tonumber
local os_date = os.date

local _M = {}

-- A multiplicative hash on integers below 2^31; exact in doubles (LuaJIT) too.
local MOD = 2147483647
local function rnd(row, column)
  local x = (row * 16807 + column * 2796203 + 12345) % MOD
  x = (x * 48271) % MOD
  return (x * 48271) % MOD
end
_M.rnd = rnd

local FIRST = { "Anna", "Boris", "Chen", "Dmitri", "Elena", "Fatima", "Georg", "Hana",
  "Ivan", "Julia", "Kenji", "Lena", "Marco", "Nina", "Olga", "Pavel", "Rosa", "Sergei",
  "Tomas", "Ulla", "Vera", "Wen", "Yuri", "Zoe" }
local LAST = { "Ivanova", "Smith", "Müller", "Rossi", "Kowalski", "Novak", "Petrov",
  "García", "Dubois", "Jensen", "Tanaka", "Silva", "O'Brien", "Nagy", "Larsen", "Kim" }
local CITIES = { "Berlin", "Kaliningrad", "Warsaw", "Lisbon", "Almaty", "Riga", "Prague",
  "Vienna", "Tbilisi", "Minsk", "Yerevan", "Dubai" }
local STAGES = { "NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE", "WON", "LOSE" }
local PRODUCTS = { "CRM licence", "Support plan", "Onboarding", "Data migration",
  "Training day", "Integration", "Hardware kit", "Annual audit" }
local CURRENCIES = { "EUR", "USD", "KZT", "RUB" }
local INVOICE_STATUS = { "draft", "sent", "paid", "overdue", "cancelled" }

local function pick(list, r) return list[r % #list + 1] end

-- Dates from 2020-01-01 (UTC) on; day strings are cached (a few thousand at most).
local EPOCH = 1577836800
local day_cache = {}
local function day(d)
  local s = day_cache[d]
  if not s then
    s = os_date("!%Y-%m-%d", EPOCH + d * 86400)
    day_cache[d] = s
  end
  return s
end
local function datetime(d, seconds)
  local h = floor(seconds / 3600)
  local m = floor(seconds / 60) % 60
  return format("%s %02d:%02d:%02d", day(d), h, m, seconds % 60)
end

local null = require("biconnector").null

-- column code -> function(row number) -> value; one table per dataset.
local columns = {
  deals = {
    { code = "id", name = "ID", type = "int", make = function(i) return i end },
    { code = "title", name = "Title", type = "string",
      make = function(i) return format("%s for %s", pick(PRODUCTS, rnd(i, 1)), pick(LAST, rnd(i, 2))) end },
    { code = "stage", name = "Stage", type = "string", make = function(i) return pick(STAGES, rnd(i, 3)) end },
    { code = "amount", name = "Amount", type = "double",
      make = function(i) return (rnd(i, 4) % 5000000 + 1000) / 100 end },
    { code = "currency", name = "Currency", type = "string", make = function(i) return pick(CURRENCIES, rnd(i, 5)) end },
    { code = "contact_id", name = "Contact ID", type = "int", make = function(i) return rnd(i, 6) % 100000 + 1 end },
    { code = "created_at", name = "Created", type = "datetime",
      make = function(i) return datetime(rnd(i, 7) % 1800, rnd(i, 8) % 86400) end },
    { code = "closed_on", name = "Closed on", type = "date",
      make = function(i)
        local stage = pick(STAGES, rnd(i, 3))
        if stage ~= "WON" and stage ~= "LOSE" then return null end -- an open deal has no close date
        return day(rnd(i, 7) % 1800 + rnd(i, 9) % 90)
      end },
    { code = "probability", name = "Probability", type = "double",
      make = function(i) return (rnd(i, 10) % 101) / 100 end },
  },
  contacts = {
    { code = "id", name = "ID", type = "int", make = function(i) return i end },
    { code = "name", name = "Name", type = "string",
      make = function(i) return pick(FIRST, rnd(i, 1)) .. " " .. pick(LAST, rnd(i, 2)) end },
    { code = "email", name = "E-mail", type = "string",
      make = function(i) return format("%s.%d@example.com", pick(FIRST, rnd(i, 1)):lower(), i) end },
    { code = "city", name = "City", type = "string", make = function(i) return pick(CITIES, rnd(i, 3)) end },
    { code = "birthday", name = "Birthday", type = "date",
      make = function(i)
        if rnd(i, 4) % 5 == 0 then return null end -- not everyone tells
        return os_date("!%Y-%m-%d", -631152000 + (rnd(i, 5) % 14600) * 86400)
      end },
    { code = "created_at", name = "Created", type = "datetime",
      make = function(i) return datetime(rnd(i, 6) % 1800, rnd(i, 7) % 86400) end },
    { code = "deals_won", name = "Deals won", type = "int", make = function(i) return rnd(i, 8) % 12 end },
    { code = "rating", name = "Rating", type = "double", make = function(i) return (rnd(i, 9) % 50 + 1) / 10 end },
  },
  invoices = {
    { code = "id", name = "ID", type = "int", make = function(i) return i end },
    { code = "number", name = "Number", type = "string", make = function(i) return format("INV-%07d", i) end },
    { code = "deal_id", name = "Deal ID", type = "int", make = function(i) return rnd(i, 1) % 100000 + 1 end },
    { code = "status", name = "Status", type = "string", make = function(i) return pick(INVOICE_STATUS, rnd(i, 2)) end },
    { code = "total", name = "Total", type = "double", make = function(i) return (rnd(i, 3) % 2000000 + 500) / 100 end },
    { code = "tax_rate", name = "Tax rate", type = "double", make = function(i) return pick({ 0, 0.07, 0.1, 0.2 }, rnd(i, 4)) end },
    { code = "issued_on", name = "Issued on", type = "date", make = function(i) return day(rnd(i, 5) % 1800) end },
    { code = "paid_at", name = "Paid at", type = "datetime",
      make = function(i)
        if pick(INVOICE_STATUS, rnd(i, 2)) ~= "paid" then return null end
        return datetime(rnd(i, 5) % 1800 + rnd(i, 6) % 30, rnd(i, 7) % 86400)
      end },
  },
}

_M.TABLES = {
  { code = "deals", title = "Deals" },
  { code = "contacts", title = "Contacts" },
  { code = "invoices", title = "Invoices" },
}

_M.DEFAULT_ROWS = 1000
_M.MAX_ROWS = 100000000

-- "12", "5k", "5m" -> number | nil
local function parse_count(text)
  local digits, unit = text:match("^(%d+)([km]?)$")
  if not digits then return nil end
  local n = tonumber(digits) * (unit == "k" and 1000 or unit == "m" and 1000000 or 1)
  if n > _M.MAX_ROWS then return nil end
  return n
end
_M.parse_count = parse_count

-- The default size of every table: env BIC_DEMO_ROWS, else 1000.
function _M.default_rows()
  local env = os.getenv("BIC_DEMO_ROWS")
  return env and parse_count(env) or _M.DEFAULT_ROWS
end

-- "deals" or "deals_5m" -> base table, row count | nil (an unknown code).
function _M.resolve(code)
  if type(code) ~= "string" then return nil end
  if columns[code] then return code, _M.default_rows() end
  local base, count = code:match("^(%a+)_(%d+[km]?)$")
  if base and columns[base] then
    local n = parse_count(count)
    if n then return base, n end
  end
  return nil
end

-- The urlData field description of a table: list of {code, name, type}.
function _M.fields(code)
  local base = _M.resolve(code)
  if not base then return nil end
  local out = {}
  for i, c in ipairs(columns[base]) do out[i] = { code = c.code, name = c.name, type = c.type } end
  return out
end

-- An iterator over rows 1..count (or limit) of a table, each row an array of
-- the values of `select` (codes) in that order, or of every column.
function _M.rows(code, select, limit)
  local base, count = _M.resolve(code)
  if not base then return nil end
  local cols = columns[base]
  local makers = {}
  if select and select[1] ~= nil then
    local by_code = {}
    for _, c in ipairs(cols) do by_code[c.code] = c.make end
    for k, s in ipairs(select) do
      makers[k] = by_code[s] or error("unknown column " .. tostring(s), 2)
    end
  else
    for k, c in ipairs(cols) do makers[k] = c.make end
  end
  if limit and limit < count then count = limit end
  local width, i = #makers, 0
  return function()
    i = i + 1
    if i > count then return nil end
    local row = {}
    for k = 1, width do row[k] = makers[k](i) end
    return row
  end
end

return _M
