#!/usr/bin/env lua
-- The sample database `make demo` serves: a small shop (customers, products,
-- orders and a view) with every field type, NULLs, UTF-8 and awkward text,
-- generated deterministically (the same SQL on every run and runtime).
--
--   lua5.4 examples/sample/gen.lua [--dialect sqlite|postgresql|mysql] [--orders N] | sqlite3 sample.db
--
-- Plain CREATE TABLE and INSERT statements; only the column types and the
-- quoting of text differ between dialects.
local dialect, orders_count = "sqlite", 5000
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--dialect" then dialect = arg[i + 1] i = i + 1
  elseif a == "--orders" then orders_count = tonumber(arg[i + 1]) i = i + 1
  elseif a == "-h" or a == "--help" then
    io.write("usage: gen.lua [--dialect sqlite|postgresql|mysql] [--orders N]\n")
    os.exit(0)
  else
    io.stderr:write("gen.lua: unknown argument ", a, "\n")
    os.exit(2)
  end
  i = i + 1
end

local TYPES = {
  sqlite = { int = "INTEGER", text = "TEXT", real = "REAL", date = "DATE", datetime = "DATETIME", bool = "BOOLEAN",
             name = "VARCHAR(100)" },
  postgresql = { int = "INTEGER", text = "TEXT", real = "DOUBLE PRECISION", date = "DATE", datetime = "TIMESTAMP",
                 bool = "BOOLEAN", name = "VARCHAR(100)" },
  mysql = { int = "INT", text = "TEXT", real = "DOUBLE", date = "DATE", datetime = "DATETIME", bool = "BOOLEAN",
            name = "VARCHAR(100)" },
}
local T = TYPES[dialect]
if not T or not orders_count or orders_count < 0 then
  io.stderr:write("gen.lua: --dialect is sqlite, postgresql or mysql; --orders a count\n")
  os.exit(2)
end

-- A deterministic generator (Park-Miller: products stay below 2^53, so Lua 5.4
-- and LuaJIT draw the same numbers).
local seed = 20240229
local function rand(n)
  seed = seed * 48271 % 2147483647
  return math.floor(seed / 256) % n + 1
end
local function pick(list) return list[rand(#list)] end

local out = {}
local function emit(s) out[#out + 1] = s end

local function lit(v)
  if v == nil then return "NULL" end
  if type(v) == "boolean" then
    if dialect == "postgresql" then return v and "TRUE" or "FALSE" end
    return v and "1" or "0"
  end
  if type(v) == "number" then
    if v == math.floor(v) then return string.format("%d", v) end
    return string.format("%.2f", v)
  end
  local s = v:gsub("'", "''")
  if dialect == "mysql" then s = s:gsub("\\", "\\\\") end
  return "'" .. s .. "'"
end

local function maybe(v, one_in) if rand(one_in) == 1 then return nil end return v end

-- Calendar arithmetic of our own: no dependence on the local time zone.
local function civil(days) -- days since 1970-01-01 -> y, m, d (H. Hinnant's algorithm)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  return yoe + era * 400 + (m <= 2 and 1 or 0), m, d
end
local BASE = 18993 -- 2022-01-01
local function date(days) -- days after 2022-01-01
  return ("%04d-%02d-%02d"):format(civil(BASE + days))
end
local function datetime(days, secs)
  return ("%s %02d:%02d:%02d"):format(date(days), math.floor(secs / 3600), math.floor(secs % 3600 / 60), secs % 60)
end

local function insert(tbl, cols, rows)
  local batch = 200
  for first = 1, #rows, batch do
    local values = {}
    for r = first, math.min(first + batch - 1, #rows) do
      local row, cells = rows[r], {}
      for c = 1, #cols do cells[c] = lit(row[c]) end
      values[#values + 1] = "(" .. table.concat(cells, ", ") .. ")"
    end
    emit(("INSERT INTO %s (%s) VALUES\n  %s;"):format(tbl, table.concat(cols, ", "), table.concat(values, ",\n  ")))
  end
end

emit("BEGIN;")
emit(([[CREATE TABLE customers (
  id %s PRIMARY KEY,
  name %s NOT NULL,
  email %s,
  city %s,
  vip %s,
  birthday %s,
  registered_at %s NOT NULL
);]]):format(T.int, T.name, T.text, T.text, T.bool, T.date, T.datetime))
emit(([[CREATE TABLE products (
  id %s PRIMARY KEY,
  title %s NOT NULL,
  category %s,
  price %s NOT NULL,
  weight_kg %s,
  in_stock %s
);]]):format(T.int, T.name, T.text, T.real, T.real, T.int))
emit(([[CREATE TABLE orders (
  id %s PRIMARY KEY,
  customer_id %s NOT NULL,
  product_id %s NOT NULL,
  quantity %s NOT NULL,
  amount %s NOT NULL,
  status %s NOT NULL,
  ordered_at %s NOT NULL,
  shipped_on %s,
  note %s
);]]):format(T.int, T.int, T.int, T.int, T.real, T.text, T.datetime, T.date, T.text))

local FIRST = { "Anna", "Boris", "Chloé", "Dmitry", "Elena", "François", "Günter", "Hana", "Ivan", "Jürgen",
  "Ксения", "Леонид", "Мария", "Наталья", "O'Brien", "Paul", "Zoë", "李", "Yusuf", "Ümit" }
local LAST = { "Ivanova", "Petrov", "Smith", "Müller", "Dupont", "Сидоров", "Кузнецова", "García", "O'Neil",
  "Novák", "Tanaka", "Łukasz" }
local CITIES = { "Moscow", "Санкт-Петербург", "Kazan", "Berlin", "Paris", "Алматы", "Minsk", "São Paulo", "Kyiv" }
local CATEGORIES = { "Books", "Tools", "Garden", "Toys", "Food", "Электроника", "Office" }
local ADJ = { "Red", "Blue", "Small", "Large", "Eco", "Pro", "Mini", "Классический", "Smart" }
local NOUN = { "Lamp", "Chair", "Pen", "Kettle", "Notebook", "Drill", "Ball", "Чайник", "Backpack", "Tent" }
local STATUS = { "new", "paid", "shipped", "delivered", "cancelled", "returned" }
local NOTES = { "gift wrap", "call before delivery", "50% prepaid", "code A_1", "fragile!", "it's urgent",
  'say "hello"', "back\\slash", "Доставка до двери", "'; DROP TABLE orders; --", "" }

local customers = {}
for id = 1, 500 do
  local name = pick(FIRST) .. " " .. pick(LAST)
  local email = maybe(("user%d@example.com"):format(id), 6)
  customers[id] = { id, name, email, maybe(pick(CITIES), 10), maybe(rand(5) == 1, 8),
    maybe(date(-rand(20000) - 6000), 4), datetime(rand(700) - 1, rand(86400) - 1) }
end
insert("customers", { "id", "name", "email", "city", "vip", "birthday", "registered_at" }, customers)

local products, prices = {}, {}
for id = 1, 120 do
  local price = rand(200000) / 100
  prices[id] = price
  products[id] = { id, pick(ADJ) .. " " .. pick(NOUN) .. " " .. id, maybe(pick(CATEGORIES), 12), price,
    maybe(rand(5000) / 100, 5), rand(60) - 10 }
end
insert("products", { "id", "title", "category", "price", "weight_kg", "in_stock" }, products)

local orders = {}
for id = 1, orders_count do
  local product, qty = rand(120), rand(5)
  local day = rand(730) - 1
  local status = pick(STATUS)
  local shipped = nil
  if status == "shipped" or status == "delivered" or status == "returned" then shipped = date(day + rand(10)) end
  orders[id] = { id, rand(500), product, qty, math.floor(prices[product] * qty * 100 + 0.5) / 100, status,
    datetime(day, rand(86400) - 1), shipped, maybe(pick(NOTES), 3) }
end
insert("orders", { "id", "customer_id", "product_id", "quantity", "amount", "status", "ordered_at", "shipped_on",
  "note" }, orders)

emit([[CREATE VIEW order_lines AS
  SELECT o.id AS order_id, c.name AS customer, p.title AS product, o.quantity AS quantity, o.amount AS amount,
         o.ordered_at AS ordered_at
  FROM orders o JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id;]])
emit("COMMIT;")
io.write(table.concat(out, "\n"), "\n")
