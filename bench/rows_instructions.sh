#!/bin/sh
# Instructions per row of the connector's encoder on a Lua-list source (issue 25):
# callgrind's Ir of bench/rows_instructions.lua at 1 and at PASSES (default 6)
# passes of c:handle + drain over the demo's 1000 precomputed rows,
# (Ir at PASSES - Ir at 1) / (PASSES - 1) / rows, the median of RUNS (default 3)
# such pairs (LuaJIT's count moves by up to 15 % from one process to the next:
# its collector and traces), and the part spent inside enc:add_list (exact).
#   bench/rows_instructions.sh [lua5.4|luajit] [BUILD_DIR]
#   MAP=1: the same rows keyed by code (bench/rows_instructions.lua)
# By hand only (valgrind). Deterministic enough to compare a change with the
# one before it, which timings on a shared machine are not.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
rt=${1:-lua5.4}
build=${2:-}
[ -n "$build" ] || { [ "$rt" = luajit ] && build=build-luajit || build=build; }
passes=${PASSES:-6}
runs=${RUNS:-3}
rows=1000
command -v valgrind >/dev/null || { echo "SKIP valgrind is not installed"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# ir PASSES -> "total add_list" (Ir of the process, Ir inside rows_add_list)
ir() {
  (cd "$top" && BUILD="$build" valgrind --tool=callgrind --callgrind-out-file="$tmp/cg" \
    "$rt" bench/rows_instructions.lua "$1" >/dev/null 2>"$tmp/err") ||
    { cat "$tmp/err" >&2; exit 1; }
  total=$(sed -n 's/^summary: *//p' "$tmp/cg")
  inside=$(callgrind_annotate --inclusive=yes "$tmp/cg" 2>/dev/null |
    awk '/rows_add_list \[/ { gsub(",", "", $1); print $1; exit }')
  echo "$total ${inside:-0}"
}
i=0
while [ $i -lt "$runs" ]; do
  set -- $(ir 1) $(ir "$passes")
  echo "$(( ($3 - $1) / (passes - 1) / rows )) $(( ($4 - $2) / (passes - 1) / rows ))" >>"$tmp/per_row"
  i=$((i + 1))
done
sort -n "$tmp/per_row" | awk -v rt="$rt" -v r="$runs" '{ t[NR] = $1; a[NR] = $2 }
  END { m = int((r + 1) / 2); printf "%s: %d instructions per row (runs: %s), %d of them in enc:add_list\n", rt, t[m], t[1] (r > 1 ? ".." t[r] : ""), a[m] }'
