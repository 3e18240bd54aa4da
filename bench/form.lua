-- Speed of the form codec and the filter against named baselines:
--   form.decode  vs PHP 8 parse_str        (php-cli, when installed)
--   form.encode  vs PHP 8 http_build_query (php-cli, when installed)
--   filter.match vs a hand-written Lua predicate for the same filter
--   filter.match's LIKE on a 10 MiB value vs a plain string.find
-- Usage: bench/form [lua5.4|luajit] [BUILD_DIR] [ROUNDS]
local form = require "biconnector.form"
local filter = require "biconnector.filter"

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

-- filter over 100,000 rows
local FIELDS = { { code = "ID", type = "int" }, { code = "TITLE", type = "string" },
  { code = "DATE_CREATE", type = "datetime" } }
local rows = {}
for i = 1, 100000 do
  rows[i] = { ID = i, TITLE = "Deal " .. i, DATE_CREATE = os.date("!%Y-%m-%d %H:%M:%S", 1700000000 + i * 600) }
end
local ast = assert(filter.parse(assert(form.decode(
  "filter[%3E%3DDATE_CREATE]=31.12.2023&filter[0][LOGIC]=OR&filter[0][%25TITLE]=99&filter[0][%3CID]=5000")).filter, FIELDS))
local hits
report("filter.match (" .. 100000 .. " rows)", 100000, best(function()
  hits = 0
  for _, r in ipairs(rows) do if filter.match(ast, r) then hits = hits + 1 end end
end), "rows")
local hand_hits
report("baseline: hand-written predicate", 100000, best(function()
  hand_hits = 0
  for _, r in ipairs(rows) do
    if r.DATE_CREATE >= "2023-12-31 00:00:00" and (r.TITLE:lower():find("99", 1, true) or r.ID < 5000) then
      hand_hits = hand_hits + 1
    end
  end
end), "rows")
assert(hits == hand_hits, "the predicates disagree")
require("result") { name = "filter.match", ours = results[#results - 1][2], anchor = results[#results][2], unit = "rows/s",
  anchor_name = "hand-written Lua predicate", what = "filter.match, >=DATE AND (%TITLE OR <ID), 100,000 rows" }
report("filter.parse + to_sql of that filter", 20000, best(function(n)
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
