#!/bin/sh
# Every fuzz target for SECONDS each (`make fuzz`: 300, `make fuzz-ci`: 60);
# fails when any of them found a crash. Usage: fuzz/run-all.sh [SECONDS]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-300}
failed=""
for target in json_decode form_decode filter_parse request_decode; do
  log=$(mktemp "${TMPDIR:-/tmp}/fuzz-$target.XXXXXX")
  if "$top/fuzz/run.sh" "$target" "$seconds" >"$log" 2>&1; then
    echo "fuzz $target: clean, $(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$') inputs in ${seconds}s"
  else
    failed="$failed $target"
    echo "*** fuzz $target FAILED; the end of its log:" >&2
    tail -60 "$log" >&2
  fi
  rm -f "$log"
done
[ -z "$failed" ] || { echo "*** fuzzing found crashes in:$failed (inputs: fuzz/crash-*)" >&2; exit 1; }
