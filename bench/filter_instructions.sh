#!/bin/sh
# Instructions per row of each filter predicate of bench/filter_shapes.lua,
# counted by callgrind (not timed: the count does not depend on the load):
# for each process, (the count at 3 passes over 20,000 rows - at 1 pass) / 2 / 20,000;
# the median of 3 processes (string hashes, and so table layouts, differ by process).
# Usage: bench/filter_instructions.sh [lua5.4|luajit] [BUILD_DIR] [SHAPES...]
set -eu
runtime=${1:-lua5.4}
top=$(cd "$(dirname "$0")/.." && pwd)
case "$runtime" in luajit) dflt=build-luajit;; *) dflt=build;; esac
build=$(cd "${2:-$top/$dflt}" && pwd)
shift 2 2>/dev/null || shift $#
shapes=${*:-report in_list null_ne_le range_or}
export LUA_PATH="$top/bench/?.lua;$top/lua/?.lua;$top/lua/?/init.lua;;"
export LUA_CPATH="$build/?.so;;"
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$runtime" "$top/bench/filter_count.lua" "$@" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for shape in $shapes; do
  line="$shape"
  for which in hand source normalized closures; do
    r=""
    for _ in 1 2 3; do
      a=$(count "$shape" "$which" 1); c=$(count "$shape" "$which" 3)
      r="$r $(( (c - a) / 2 / 20000 ))"
    done
    line="$line $which=$(echo $r | tr ' ' '\n' | sort -n | sed -n 2p)"
  done
  echo "$line"
done
