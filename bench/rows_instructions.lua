-- Instructions the connector's encoder spends per row of a Lua-list source
-- (issue 25): c:handle + drain of a /data request for the demo's "deals"
-- (1000 rows x 9 fields, bench/ngx_rows.lua's precomputed rows), the work
-- `/rows_drain/` of bench/ngx does inside nginx, without nginx.
--
--   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \
--     lua5.4 bench/rows_instructions.lua [PASSES]     (BUILD=build)
--   (or luajit with BUILD=build-luajit)
-- Run it with PASSES 1 and N: (Ir at N - Ir at 1) / (N - 1) / rows is the cost
-- of a row (the start and the rows' making cancel out);
-- bench/rows_instructions.sh does that. By hand only; it needs valgrind.
-- MAP=1: the rows keyed by code instead of arrays.
local top = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = top .. "/lua/?.lua;" .. top .. "/lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("BUILD") or top .. "/build") .. "/?.so;" .. package.cpath

local bench_rows = dofile(top .. "/bench/ngx_rows.lua")
local passes = tonumber(arg[1] or "1")
local code = os.getenv("TABLE") or "deals"
local rows = bench_rows.rows(code)
if os.getenv("MAP") == "1" then -- the same rows keyed by code (a decoded JSON API's shape)
  local fields = dofile(top .. "/examples/demo/data.lua").fields(code)
  for i, row in ipairs(rows) do
    local map = {}
    for f, field in ipairs(fields) do map[field.code] = row[f] end
    rows[i] = map
  end
end
local c = bench_rows.connector
local total = 0
for _ = 1, passes do
  local status, _, body = c:handle({ method = "POST", path = "/data", headers = {
    ["content-type"] = "application/x-www-form-urlencoded" },
    body = "connection[token]=demo-token&table=" .. code })
  assert(status == 200, "status " .. tostring(status))
  if type(body) == "string" then total = total + #body
  else for chunk in body do total = total + #chunk end end
end
io.write(#rows, " rows, ", total, " bytes\n")
