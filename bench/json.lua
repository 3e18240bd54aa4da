-- Encode and decode throughput of biconnector.json against lua-cjson, in the
-- same process on the same data:
--   (a) a urlData answer: a header row and ROWS rows of 8 mixed columns
--       (integers, doubles, short strings, strings needing escapes, dates,
--       datetimes, nulls);
--   (b) a nested REST batch answer (Bitrix24 `batch` shape);
--   (c) arbitrary Lua values (nested maps and arrays, floats, escapes);
--   (d) urlData rows whose strings need escaping (quotes, newlines, tabs,
--       backslashes), with nulls among them.
-- The values are built by bench/json_values.lua.
-- Prints the median of ROUNDS runs (ours and lua-cjson in turns), MB/s of the text, and the ratio
-- lua-cjson time / biconnector time (above 1: biconnector is faster).
-- Usage: bench/json [lua5.4|luajit] [BUILD_DIR] [ROWS] [ROUNDS]
--        bench/json count [lua5.4|luajit] [BUILD_DIR] SHAPE OP IMPL [K] [ROWS]
local json = require("biconnector").json
local cjson = require "cjson"

local ROWS = tonumber(arg and arg[1]) or 200000
local ROUNDS = tonumber(arg and arg[2]) or 7
local clock = os.clock

local make_values = require "json_values"
local SHAPES = { a = "a_urldata", b = "b_batch", c = "c_generic", d = "d_escapes" }

-- Instruction counts (bench/json count ...): BENCH_JSON_COUNT="shape op impl k"
-- runs one operation k times after one warm-up call, the collector stopped,
-- and prints nothing; bench/json runs it under callgrind twice (k and 1) and
-- prints the difference per call.
local count = os.getenv("BENCH_JSON_COUNT")
if count then
  local shape, op, impl, k = count:match("^(%a) (%a+) (%a+) (%d+)$")
  local key = assert(SHAPES[shape], count)
  local value = make_values(ROWS, key)[key] -- only this case's values in the heap
  local codec = impl == "cjson" and cjson or json
  local input = op == "decode" and json.encode(value) or value
  local f = assert(codec[op], count)
  f(input)
  collectgarbage()
  collectgarbage("stop")
  for _ = 1, tonumber(k) do f(input) end
  return
end
-- all four cases' values at once: each case runs in a heap that also holds the others'
-- (docs/json.md on what that does to the small case (b))
local V = make_values(ROWS)
local rows, batch, generic, escapes = V.a_urldata, V.b_batch, V.c_generic, V.d_escapes

local function median(f)
  local samples = {}
  for r = 1, ROUNDS do
    collectgarbage()
    collectgarbage()
    local t0 = clock()
    f()
    samples[r] = clock() - t0
  end
  table.sort(samples)
  return samples[math.floor((ROUNDS + 1) / 2)]
end

-- Medians of ROUNDS runs of f and of g, taken in turns (f, g, f, g, ...) so that
-- the load of a shared machine falls on both alike.
local function medians(f, g)
  local fs, gs = {}, {}
  for r = 1, ROUNDS do
    for _, pair in ipairs({ { f, fs }, { g, gs } }) do
      collectgarbage()
      collectgarbage()
      local t0 = clock()
      pair[1]()
      pair[2][r] = clock() - t0
    end
  end
  table.sort(fs)
  table.sort(gs)
  local mid = math.floor((ROUNDS + 1) / 2)
  return fs[mid], gs[mid]
end

local function same_shape(a, b)
  if type(a) ~= "table" then return a == b or (type(a) == "number" and math.abs(a - b) <= 1e-12 * math.abs(a)) end
  for k, v in pairs(a) do if not same_shape(v, b[k]) then return false end end
  return true
end

local out = {}
local function line(...) out[#out + 1] = string.format(...) end

local runtime = jit and jit.version or _VERSION
line("biconnector.json vs lua-cjson %s on %s, median of %d runs (CPU time)", cjson._VERSION, runtime, ROUNDS)
line("%-44s %12s %12s %10s %10s %8s", "case", "ours ms", "cjson ms", "ours MB/s", "cjson MB/s", "ratio")

local emit = require "result"

local function case(name, value, id)
  local text = assert(json.encode(value))
  local ctext = cjson.encode(value)
  assert(same_shape(value, cjson.decode(text)), name .. ": cjson does not read our text back")
  assert(same_shape(value, json.decode(ctext)), name .. ": we do not read cjson's text back")
  local mb, cmb = #text / 1e6, #ctext / 1e6
  local te, tc = medians(function() json.encode(value) end, function() cjson.encode(value) end)
  line("%-44s %12.1f %12.1f %10.1f %10.1f %7.2fx", name .. " encode", te * 1e3, tc * 1e3, mb / te, cmb / tc, tc / te)
  emit { name = "json." .. id .. ".encode", ours = te * 1e3, anchor = tc * 1e3, unit = "ms", better = "lower",
    anchor_name = "lua-cjson " .. cjson._VERSION .. " encode", what = "json.encode, " .. name }
  local td, tcd = medians(function() json.decode(text) end, function() cjson.decode(text) end)
  line("%-44s %12.1f %12.1f %10.1f %10.1f %7.2fx", name .. " decode", td * 1e3, tcd * 1e3, mb / td, mb / tcd, tcd / td)
  emit { name = "json." .. id .. ".decode", ours = td * 1e3, anchor = tcd * 1e3, unit = "ms", better = "lower",
    anchor_name = "lua-cjson " .. cjson._VERSION .. " decode", what = "json.decode, " .. name }
  local tdn = median(function() json.decode(text, { array_mt = false }) end)
  line("%-44s %12.1f %12.1f %10.1f %10.1f %7.2fx", name .. " decode, array_mt=false", tdn * 1e3, tcd * 1e3,
    mb / tdn, mb / tcd, tcd / tdn)
  return #text
end

local size_a = case(("(a) urlData %d rows x 8"):format(ROWS), rows, "a_urldata")
local size_b = case("(b) REST batch 50 x 50", batch, "b_batch")
local size_c = case("(c) generic values, 2000 records", generic, "c_generic")
local size_d = case(("(d) urlData %d rows x 8, escapes and nulls"):format(ROWS), escapes, "d_escapes")
line("text sizes: (a) %.1f MB, (b) %.2f MB, (c) %.2f MB, (d) %.1f MB", size_a / 1e6, size_b / 1e6, size_c / 1e6,
  size_d / 1e6)
print(table.concat(out, "\n"))
