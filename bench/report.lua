-- bench/report.lua: runs every benchmark under bench/ and writes one Markdown
-- report (bench/REPORT.md) with, for each figure, our number, the anchor
-- measured in the same run, the ratio, and the machine it ran on.
--
--   lua5.4 bench/report.lua quick|full [OUT.md]      (make bench-quick / make bench)
--
-- The contract a benchmark follows to appear in the report:
--   * it is an executable file directly under bench/ whose name has no dot
--     (bench/json, bench/sql, ...); the driver runs it from the top of the tree
--     with no arguments and BENCH_MODE=quick|full, BUILD and BUILD_LUAJIT (the
--     builds of the core for Lua 5.4 and LuaJIT) in the environment;
--   * quick mode keeps it to a few seconds (all of `make bench-quick` stays under
--     2 minutes), full mode is the real measurement (bounded, minutes at most);
--   * for each figure it prints one line (anywhere in its output; the rest is
--     kept in the log, not in the report):
--       RESULT name=ID ours=N anchor=N unit=UNIT better=higher|lower runtime=RT
--              anchor_name="..." what="..."
--     ID is stable (e.g. json.c_generic.encode), N a plain number (anchor=- when
--     there is no anchor), better tells which way is better (ms: lower,
--     rows/s: higher), runtime is lua5.4, luajit or what the figure ran on.
--     The anchor is measured in the same run on the same machine: lua-cjson,
--     OpenResty with a hand-written handler, the database's own export, ...
--     Lua benches use bench/result.lua to print it;
--   * "SKIP reason" on a line of its own says why it has no figures here;
--   * a non-zero exit status is reported as a failure (and fails make).
-- Each benchmark runs once in quick mode and 3 times in full mode; the report
-- gives the median of those runs (and each benchmark takes medians or bests of
-- its own rounds inside).
local mode = arg[1] or "quick"
assert(mode == "quick" or mode == "full", "usage: lua5.4 bench/report.lua quick|full [OUT.md]")
local out_path = arg[2] or "bench/REPORT.md"
local runs = mode == "full" and 3 or 1

local function capture(cmd)
  local p = assert(io.popen(cmd))
  local text = p:read("a")
  p:close()
  return (text:gsub("%s+$", ""))
end

-- the benchmarks: executables directly under bench/ without a dot in the name
local benches = {}
for name in capture("ls bench"):gmatch("[^\n]+") do
  if not name:find(".", 1, true) and name ~= "README" and os.execute("test -x bench/" .. name .. " -a -f bench/" .. name) then
    benches[#benches + 1] = name
  end
end
table.sort(benches)

local started = os.time()
local machine = {
  cpu = capture("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1"),
  nproc = capture("nproc"),
  kernel = capture("uname -srm"),
  date = os.date("!%Y-%m-%d %H:%M UTC", started),
  load = capture("cut -d' ' -f1-3 /proc/loadavg"),
  commit = capture("git rev-parse --short HEAD 2>/dev/null || echo unknown"),
  dirty = capture("git status --porcelain --untracked-files=no 2>/dev/null | head -1") ~= "",
  lua = capture("lua5.4 -v 2>&1"),
  luajit = capture("luajit -v 2>&1"),
}

local function parse(line)
  local r, pos = {}, 8
  while true do
    local k, v, after = line:match('^%s*([%w_]+)="([^"]*)"()', pos)
    if not k then k, v, after = line:match("^%s*([%w_]+)=(%S*)()", pos) end
    if not k then break end
    r[k], pos = v, after
  end
  r.ours = tonumber(r.ours)
  r.anchor = tonumber(r.anchor)
  return r.name and r.ours and r
end

local figures, order, skipped, failed, logs = {}, {}, {}, {}, {}
local env = ("BENCH_MODE=%s BUILD=%s BUILD_LUAJIT=%s"):format(mode, os.getenv("BUILD") or "build",
  os.getenv("BUILD_LUAJIT") or "build-luajit")
for _, name in ipairs(benches) do
  for run = 1, runs do
    io.stderr:write(("== bench/%s (%s, run %d of %d)\n"):format(name, mode, run, runs))
    local t0 = os.time()
    local log = os.tmpname()
    local ok = os.execute(("%s bench/%s >%s 2>&1"):format(env, name, log))
    local f = io.open(log)
    local text = f and f:read("a") or ""
    if f then f:close() end
    os.remove(log)
    logs[#logs + 1] = ("### bench/%s, run %d (%d s)\n\n```\n%s\n```\n"):format(name, run, os.time() - t0, text)
    for line in text:gmatch("[^\n]+") do
      if line:match("^RESULT ") then
        local r = parse(line)
        if r then
          local key = r.name .. "\0" .. (r.runtime or "")
          if not figures[key] then figures[key] = { first = r, ours = {}, anchor = {} } order[#order + 1] = key end
          table.insert(figures[key].ours, r.ours)
          if r.anchor then table.insert(figures[key].anchor, r.anchor) end
        end
      elseif line:match("^SKIP ") then
        skipped[name] = line:sub(6)
      end
    end
    if not (ok == true or ok == 0) then
      failed[#failed + 1] = name
      io.stderr:write(text:sub(-2000), "\n*** bench/", name, " failed\n")
      break
    end
  end
end

local function median(list)
  if #list == 0 then return nil end
  table.sort(list)
  local n = #list
  if n % 2 == 1 then return list[(n + 1) / 2] end
  return (list[n / 2] + list[n / 2 + 1]) / 2
end

local function fmt(v)
  if not v then return "-" end
  if v >= 100 then return ("%.0f"):format(v) end
  if v >= 10 then return ("%.1f"):format(v) end
  return ("%.2f"):format(v)
end

local rows = {}
for _, key in ipairs(order) do
  local f = figures[key]
  local r = f.first
  local ours, anchor = median(f.ours), median(f.anchor)
  local ratio = "-"
  if ours and anchor and ours > 0 and anchor > 0 then
    ratio = ("%.2fx"):format(r.better == "lower" and anchor / ours or ours / anchor)
  end
  rows[#rows + 1] = ("| `%s` | %s | %s | %s %s | %s %s | **%s** | %s |"):format(r.name, r.what or "", r.runtime or "",
    fmt(ours), r.unit or "", fmt(anchor), anchor and (r.unit or "") or "", ratio, r.anchor_name or "")
end

local lines = {
  "# Benchmark report",
  "",
  ("Written by `%s` (`lua5.4 bench/report.lua %s`); every figure below comes from this one run."):format(
    mode == "full" and "make bench" or "make bench-quick", mode),
  "Ratio: how many times better ours is than the anchor (above 1: ours is better), from the",
  ("medians of %d run%s of each benchmark; `better` lower for times, higher for rates."):format(runs, runs == 1 and "" or "s"),
  "The contract a benchmark follows to appear here is at the top of `bench/report.lua` and in `bench/README.md`.",
  "",
  "## Machine",
  "",
  ("- CPU: %s, %s cores (nproc)"):format(machine.cpu, machine.nproc),
  ("- kernel: %s"):format(machine.kernel),
  ("- date: %s, load average at the start %s (a shared machine: other jobs ran beside it)"):format(machine.date, machine.load),
  ("- code: commit %s%s; %s; %s"):format(machine.commit, machine.dirty and " with local changes" or "", machine.lua, machine.luajit),
  ("- mode: %s; took %d s"):format(mode, os.time() - started),
  "",
  "## Figures",
  "",
  "| figure | what | runtime | ours | anchor | ratio | anchor is |",
  "|---|---|---|---|---|---|---|",
}
for _, r in ipairs(rows) do lines[#lines + 1] = r end
lines[#lines + 1] = ""
local names = {}
for name in pairs(skipped) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do lines[#lines + 1] = ("- `bench/%s`: skipped: %s"):format(name, skipped[name]) end
for _, name in ipairs(failed) do lines[#lines + 1] = ("- `bench/%s`: **FAILED** (its output is in the log below)"):format(name) end
lines[#lines + 1] = ""
lines[#lines + 1] = "## Log"
lines[#lines + 1] = ""
lines[#lines + 1] = "<details><summary>The output of every benchmark run</summary>"
lines[#lines + 1] = ""
for _, l in ipairs(logs) do lines[#lines + 1] = l end
lines[#lines + 1] = "</details>"
local f = assert(io.open(out_path, "w"))
f:write(table.concat(lines, "\n"), "\n")
f:close()
io.stderr:write(("== wrote %s: %d figures from %d benchmarks in %d s%s\n"):format(out_path, #rows, #benches,
  os.time() - started, #failed > 0 and (", FAILED: " .. table.concat(failed, " ")) or ""))
os.exit(#failed == 0 and 0 or 1)
