-- One figure for the benchmark report (bench/report.lua; contract in bench/README.md):
--   RESULT name=ID ours=N anchor=N|- unit=U better=higher|lower runtime=R anchor_name="..." what="..."
-- Usage: require("result") { name = "json.c.encode", ours = 9.5, anchor = 21.2, unit = "ms",
--          better = "lower", anchor_name = "lua-cjson 2.1.0", what = "encode (c) generic values" }
local runtime = jit and "luajit" or "lua5.4"
return function(r)
  local function num(v) return v and ("%.6g"):format(v) or "-" end
  local function text(v) return '"' .. tostring(v or ""):gsub('"', "'") .. '"' end
  io.write(("RESULT name=%s ours=%s anchor=%s unit=%s better=%s runtime=%s anchor_name=%s what=%s\n"):format(
    r.name, num(r.ours), num(r.anchor), r.unit, r.better or "higher", r.runtime or runtime,
    text(r.anchor_name), text(r.what)))
  io.stdout:flush()
end
