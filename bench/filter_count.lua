-- One predicate of bench/filter_shapes.lua over its rows, REPS times: what
-- bench/filter_instructions.sh counts under callgrind (instructions executed do
-- not depend on the load of a shared machine, as CPU times do).
-- Usage: lua bench/filter_count.lua SHAPE hand|source|normalized|closures|match REPS
local filter = require "biconnector.connector.filter"
local shape_id, which, reps = arg[1], arg[2], tonumber(arg[3])
local S = require("filter_shapes")(20000)
local shape
for _, s in ipairs(S.shapes) do if s.id == shape_id or (shape_id == "report" and s.id == "") then shape = s end end
assert(shape, "unknown shape " .. tostring(shape_id))
local ast = assert(filter.parse(shape.filter, S.fields))
local p
if which == "hand" then p = shape.hand
elseif which == "match" then p = function(r) return filter.match(ast, r) end
else p = filter.compile(ast, which) end
local rows, hits = S.rows, 0
for _ = 1, reps do
  for i = 1, #rows do if p(rows[i]) then hits = hits + 1 end end
end
io.stderr:write(hits, "\n")
