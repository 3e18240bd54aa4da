-- Rows per second of connector:handle streaming a urlData answer, against
-- lua-cjson encoding the same rows table. 200,000 rows of 8 mixed columns.
-- Usage: bench/urldata [lua5.4|luajit] [BUILD_DIR]   (or run this file directly
-- with LUA_PATH/LUA_CPATH pointing at lua/ and the build).
local connector = require "biconnector.connector.core"
local cjson = require "cjson"

-- glibc's malloc as both hosts set it before they answer (host/serve.lua,
-- host/ngx.lua): blocks under 1 MiB from the heap. Left at glibc's default
-- the handle figure under LuaJIT moved between 6.6M and 2.2M rows/s with
-- nothing but the layout of the modules loaded (the same instructions, by
-- callgrind; GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576 alone gave
-- the fast one back), which measured the allocator's luck, not the code.
require("biconnector.core").process.mmap_threshold(1048576)

local N = tonumber(arg and arg[1]) or 200000
local ROUNDS = tonumber(arg and arg[2]) or 3
local clock = os.clock

local FIELDS = {
  { code = "id", name = "ID", type = "int" },
  { code = "title", name = "Title", type = "string" },
  { code = "amount", name = "Amount", type = "double" },
  { code = "closed", name = "Closed", type = "date" },
  { code = "updated", name = "Updated", type = "datetime" },
  { code = "quantity", name = "Quantity", type = "int" },
  { code = "stage", name = "Stage", type = "string" },
  { code = "rate", name = "Rate", type = "double" },
}
local STAGES = { "NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE", "WON", "LOSE" }

local rows = {}
for i = 1, N do
  rows[i] = {
    i,
    "Deal #" .. i .. " for customer " .. (i % 977),
    (i * 7919 % 1000003) / 100,
    os.date("!%Y-%m-%d", 1600000000 + 86400 * (i % 1500)),
    os.date("!%Y-%m-%d %H:%M:%S", 1600000000 + 37 * i),
    i % 250,
    STAGES[i % #STAGES + 1],
    (i % 1000) / 8 + 0.001,
  }
end

local c = connector.new({
  title = "Bench",
  settings = {},
  check = function() return true end,
  tables = { { code = "deals", title = "Deals" } },
  describe = { deals = FIELDS },
  data = function() return rows end,
})
local http = { method = "POST", path = "/data",
  headers = { ["content-type"] = "application/x-www-form-urlencoded" }, body = "table=deals" }

local function run_handle()
  local status, _, body, info = c:handle(http)
  assert(status == 200, "status " .. tostring(status))
  local bytes = 0
  if type(body) == "function" then
    for chunk in body do bytes = bytes + #chunk end
  else
    bytes = #body
  end
  assert(info.rows == N)
  return bytes
end

local function run_cjson()
  return #cjson.encode(rows)
end

local function best(f)
  local t_best, bytes = math.huge, 0
  for _ = 1, ROUNDS do
    collectgarbage()
    local t0 = clock()
    bytes = f()
    local t = clock() - t0
    if t < t_best then t_best = t end
  end
  return t_best, bytes
end

-- Two more paths for the record (not part of the comparison): map rows from an
-- iterator, and the same with a filter the framework applies (keeps ~half).
local maps = {}
for i = 1, N do
  local r = rows[i]
  maps[i] = { id = r[1], title = r[2], amount = r[3], closed = r[4], updated = r[5], quantity = r[6], stage = r[7], rate = r[8] }
end
local c_iter = connector.new({
  title = "Bench", settings = {}, check = function() return true end,
  tables = { { code = "deals", title = "Deals" } }, describe = { deals = FIELDS },
  data = function()
    local i = 0
    return function() i = i + 1 return maps[i] end
  end,
})
local function drain(http_req, want_rows)
  local status, _, body, info = c_iter:handle(http_req)
  assert(status == 200, "status " .. tostring(status))
  local bytes = 0
  if type(body) == "function" then
    for chunk in body do bytes = bytes + #chunk end
  else
    bytes = #body
  end
  assert(want_rows == nil or info.rows == want_rows, "rows " .. tostring(info.rows))
  return bytes
end
local http_filtered = { method = "POST", path = "/data",
  headers = { ["content-type"] = "application/x-www-form-urlencoded" },
  body = "table=deals&filter[%3Cquantity]=125" }
local kept = 0
for i = 1, N do if rows[i][6] < 125 then kept = kept + 1 end end

local runtime = jit and jit.version or _VERSION
local t_handle, b_handle = best(run_handle)
local t_cjson, b_cjson = best(run_cjson)
print(("urldata bench: %s, %d rows x 8 columns, best of %d"):format(runtime, N, ROUNDS))
print(("  connector:handle streaming  %8.3f s  %10.0f rows/s  %9d bytes"):format(t_handle, N / t_handle, b_handle))
print(("  cjson.encode(rows)          %8.3f s  %10.0f rows/s  %9d bytes"):format(t_cjson, N / t_cjson, b_cjson))
print(("  ratio handle/cjson: %.2fx"):format(t_cjson / t_handle))
require("result") { name = "urldata.handle", ours = N / t_handle, anchor = N / t_cjson, unit = "rows/s",
  anchor_name = "cjson.encode of the same rows table",
  what = ("connector:handle streaming a %d-row urlData answer"):format(N) }
local t_iter = best(function() return drain(http, N) end)
local t_filter = best(function() return drain(http_filtered, kept) end)
print(("  handle, map rows from an iterator   %8.3f s  %10.0f rows/s"):format(t_iter, N / t_iter))
print(("  same, framework applies a filter    %8.3f s  %10.0f rows/s in (%d kept)"):format(t_filter, N / t_filter, kept))
