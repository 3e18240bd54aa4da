#!/bin/sh
# Instructions per row of the connector's encoder on a Lua-list source (issue 25):
# callgrind's Ir of bench/rows_instructions.lua at 1 and at 3 passes of
# c:handle + drain over the demo's 1000 precomputed rows; (Ir3 - Ir1) / 2 / rows.
#   bench/rows_instructions.sh [lua5.4|luajit] [BUILD_DIR]
# By hand only (valgrind). Deterministic: the load of a shared machine does not move it.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
rt=${1:-lua5.4}
build=${2:-}
[ -n "$build" ] || { [ "$rt" = luajit ] && build=build-luajit || build=build; }
command -v valgrind >/dev/null || { echo "SKIP valgrind is not installed"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ir() {
  (cd "$top" && BUILD="$build" valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$1" \
    "$rt" bench/rows_instructions.lua "$1" >/dev/null 2>"$tmp/err.$1") ||
    { cat "$tmp/err.$1" >&2; exit 1; }
  sed -n 's/^summary: *//p' "$tmp/cg.$1"
}
one=$(ir 1)
three=$(ir 3)
rows=${ROWS:-1000}
awk -v a="$one" -v b="$three" -v n="$rows" -v rt="$rt" \
  'BEGIN { printf "%s: %.0f instructions per row (Ir %d at 1 pass, %d at 3)\n", rt, (b - a) / 2 / n, a, b }'
if [ -n "${KEEP:-}" ]; then cp "$tmp/cg.3" "$KEEP"; fi
