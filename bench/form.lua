-- Speed of the form codec and the filter against named baselines:
--   form.decode  vs PHP 8 parse_str        (php-cli, when installed)
--   form.encode  vs PHP 8 http_build_query (php-cli, when installed)
--   filter.match vs a hand-written Lua predicate for the same filter
--   filter.match's LIKE on a 10 MiB value vs a plain string.find
-- Usage: bench/form [lua5.4|luajit] [BUILD_DIR] [ROUNDS]
local form = require "biconnector.form"
local filter = require "biconnector.connector.filter"

local ROUNDS = tonumber(arg and arg[1]) or 3
local clock = os.clock

local function best(f, n)
  local t = math.huge
  for _ = 1, ROUNDS do
    local t0 = clock()
    f(n)
    t = math.min(t, clock() - t0)
  end
  return t
end

-- A urlData request as Bitrix24 form-encodes it (about 600 bytes).
local DATA_BODY = "table=deals&select%5B0%5D=ID&select%5B1%5D=TITLE&select%5B2%5D=DATE_CREATE&select%5B3%5D=AMOUNT"
  .. "&filter%5B%3E%3DDATE_CREATE%5D=31.05.2025+17%3A01%3A55&filter%5B0%5D%5BLOGIC%5D=OR"
  .. "&filter%5B0%5D%5B%40ID%5D%5B0%5D=1&filter%5B0%5D%5B%40ID%5D%5B1%5D=2&filter%5B0%5D%5B%40ID%5D%5B2%5D=3"
  .. "&filter%5B0%5D%5B%25TITLE%5D=%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B0&limit=1000"
  .. "&mapFields%5BID%5D=DEAL_ID&mapFields%5BTITLE%5D=DEAL_TITLE&connection%5Blogin%5D=user"
  .. "&connection%5Btoken%5D=0123456789abcdef0123456789abcdef"
-- The largest body the default limit admits: 1000 variables in 10 nested lists.
local parts = {}
for i = 1, 1000 do parts[i] = ("g%d[k%d][]=value+%d%%21"):format(i % 10, i % 7, i) end
local BIG_BODY = table.concat(parts, "&")
-- A batch of 50 commands, as the REST client encodes it.
local BATCH = { halt = 0, cmd = {} }
for i = 1, 50 do
  BATCH.cmd["c" .. i] = "crm.deal.list?" .. form.encode({ filter = { [">ID"] = i * 50 }, select = { "ID", "TITLE" }, start = -1 })
end

local results = {}
local function report(name, n, seconds, unit)
  local rate = n / seconds
  results[#results + 1] = { name, rate, unit }
  print(("%-44s %12.0f %s/s"):format(name, rate, unit))
end

print(("runtime: %s, best of %d rounds"):format(jit and jit.version or _VERSION, ROUNDS))
report("form.decode urlData body (" .. #DATA_BODY .. " B)", 100000, best(function(n)
  for _ = 1, n do form.decode(DATA_BODY) end
end, 100000), "bodies")
report("form.decode 1000 variables (" .. #BIG_BODY .. " B)", 500, best(function(n)
  for _ = 1, n do form.decode(BIG_BODY) end
end, 500), "bodies")
report("form.encode batch of 50 commands", 20000, best(function(n)
  for _ = 1, n do form.encode(BATCH) end
end, 20000), "batches")

-- filters over 100,000 rows (bench/filter_shapes.lua): the predicate
-- filter.compile(ast) gives (what filter.match runs per row), the one for
-- normalized rows (what the connector runs: rows typed by enc:normalize), the
-- closures (the reference), and filter.match itself, against a hand-written
-- predicate function, each in a loop of its own (LuaJIT traces one callee per
-- loop), in turns, medians of ROUNDS; every one must keep the same rows.
local S = require("filter_shapes")(100000)
local rows, FIELDS = S.rows, S.fields
local function loop_over(p)
  local loop = assert(load("local rows, p = ... return function() local hits = 0 "
    .. "for i = 1, #rows do if p(rows[i]) then hits = hits + 1 end end return hits end"))
  return loop(rows, p)
end
local function compare(variants)
  local samples, hits = {}, {}
  for _, v in ipairs(variants) do samples[v.name] = {} v.run = loop_over(v.p) end
  for r = 1, math.max(ROUNDS, 5) do
    for _, v in ipairs(variants) do
      collectgarbage()
      local t0 = clock()
      local h = v.run()
      samples[v.name][r] = clock() - t0
      if hits[1] == nil then hits[1] = h end
      assert(h == hits[1], v.name .. ": the predicates disagree (" .. h .. " rows, not " .. hits[1] .. ")")
    end
  end
  local rate = {}
  for _, v in ipairs(variants) do
    local s = samples[v.name]
    table.sort(s)
    rate[v.name] = #rows / s[math.floor((#s + 1) / 2)]
  end
  return rate, hits[1]
end
local function shape_line(label, rate, anchor)
  print(("%-44s %12.0f rows/s %6.2fx"):format(label, rate, rate / anchor))
end
for _, shape in ipairs(S.shapes) do
  local ast = assert(filter.parse(shape.filter, FIELDS))
  local variants = {
    { name = "hand", p = shape.hand },
    { name = "source", p = filter.compile(ast) },
    { name = "normalized", p = filter.compile(ast, "normalized") },
    { name = "closures", p = filter.compile(ast, "closures") },
    { name = "match", p = function(r) return filter.match(ast, r) end },
  }
  local rate, hits = compare(variants)
  local suffix = shape.id ~= "" and ("." .. shape.id) or ""
  print(("filter %s: %d of %d rows"):format(shape.what, hits, #rows))
  shape_line("  baseline: hand-written predicate", rate.hand, rate.hand)
  shape_line("  filter.compile(ast)", rate.source, rate.hand)
  shape_line("  filter.compile(ast, \"normalized\")", rate.normalized, rate.hand)
  shape_line("  filter.compile(ast, \"closures\")", rate.closures, rate.hand)
  shape_line("  filter.match(ast, row)", rate.match, rate.hand)
  require("result") { name = "filter.match" .. suffix, ours = rate.source, anchor = rate.hand, unit = "rows/s",
    anchor_name = "hand-written Lua predicate",
    what = "filter.compile(ast), the predicate filter.match runs, " .. shape.what .. ", 100,000 rows" }
  require("result") { name = "filter.normalized" .. suffix, ours = rate.normalized, anchor = rate.hand,
    unit = "rows/s", anchor_name = "hand-written Lua predicate",
    what = "filter.compile(ast, \"normalized\"), the connector's per-row predicate, " .. shape.what .. ", 100,000 rows" }
end
report("filter.parse + to_sql of >=DATE AND (%TITLE OR <ID)", 20000, best(function(n)
  for _ = 1, n do
    filter.to_sql(filter.parse({ [">=DATE_CREATE"] = "31.12.2023", { LOGIC = "OR", ["%TITLE"] = "99", ["<ID"] = 5000 } },
      FIELDS), { dialect = "postgres" })
  end
end, 20000), "filters")

-- LIKE in memory on one 10 MiB value (docs/filter.md, "Matching in memory"):
-- seconds per match and the bytes allocated meanwhile (the collector stopped:
-- a bound on the peak), against a plain string.find of the same needle (C).
local MB10 = 10 * 1024 * 1024
local TEXT = ("Lorem ipsum dolor sit amet, "):rep(math.floor(MB10 / 28))
local NEEDLE = ("consectetur adipiscing elit "):rep(35) .. "!" -- 981 bytes, absent
local LIKE_FIELDS = { { code = "S", type = "string" } }
local function measure(name, f)
  collectgarbage()
  collectgarbage("stop")
  local before = collectgarbage("count")
  local t = best(f)
  local grew = (collectgarbage("count") - before) / 1024 / ROUNDS
  collectgarbage("restart")
  collectgarbage()
  print(("%-44s %9.3f s %8.1f MiB allocated"):format(name, t, grew))
  return t
end
local function like_case(name, value, raw)
  local like_ast = assert(filter.parse(raw, LIKE_FIELDS, filter.MAX_LIMITS))
  local row = { S = value }
  return measure(name, function() filter.match(like_ast, row) end)
end
local find_t = measure("baseline: lower + plain find, 10 MiB", function() TEXT:lower():find(NEEDLE, 1, true) end)
local like_t = like_case("%S, 981-byte needle, 10 MiB", TEXT, { ["%S"] = NEEDLE })
like_case("=%S %needle%", TEXT, { ["=%S"] = "%" .. NEEDLE .. "%" })
like_case("=%S %ipsum_dolor%needle_%", TEXT, { ["=%S"] = "%ipsum_dolor%" .. NEEDLE .. "_%" })
like_case("=%S %a_a_..._b% on abab..., 10 MiB", ("ab"):rep(MB10 / 2), { ["=%S"] = "%" .. ("a_"):rep(499) .. "b%" })
like_case("=%S %а_а_..._б% on абаб..., 10 MiB", ("аб"):rep(MB10 / 4), { ["=%S"] = "%" .. ("а_"):rep(300) .. "б%" })
like_case("%S 1000 x a...ab on aaa..., 10 MiB", ("a"):rep(MB10), { ["%S"] = ("a"):rep(999) .. "b" })
require("result") { name = "filter.like", ours = 10 / like_t, anchor = 10 / find_t, unit = "MiB/s",
  anchor_name = "string.lower + plain string.find", what = "%FIELD with a 981-byte needle over a 10 MiB value" }

-- PHP baselines, when php-cli is installed (never needed by the tests)
if os.execute("command -v php >/dev/null 2>&1") then
  local function php(code)
    local f = assert(io.popen("php -r " .. ("%q"):format(code):gsub("%$", "\\$")))
    local out = f:read("*a")
    f:close()
    return tonumber(out)
  end
  local quote = function(s) return "'" .. s:gsub("\\", "\\\\"):gsub("'", "\\'") .. "'" end
  local rate = php(("$b=%s; $t=microtime(true); for($i=0;$i<100000;$i++){parse_str($b,$r);} echo 100000/(microtime(true)-$t);")
    :format(quote(DATA_BODY)))
  if rate then print(("%-44s %12.0f bodies/s"):format("baseline: PHP parse_str urlData body", rate)) end
  rate = php(("$b=%s; $t=microtime(true); for($i=0;$i<500;$i++){parse_str($b,$r);} echo 500/(microtime(true)-$t);")
    :format(quote(BIG_BODY)))
  if rate then print(("%-44s %12.0f bodies/s"):format("baseline: PHP parse_str 1000 variables", rate)) end
  rate = php(("parse_str(%s,$d); $t=microtime(true); for($i=0;$i<20000;$i++){http_build_query($d);} echo 20000/(microtime(true)-$t);")
    :format(quote(form.encode(BATCH))))
  if rate then print(("%-44s %12.0f batches/s"):format("baseline: PHP http_build_query batch", rate)) end
end
