#!/bin/sh
# Every fuzz target for SECONDS each (`make fuzz`: 300, `make fuzz-ci`: 60);
# fails when any of them found a crash. Targets run FUZZ_JOBS at a time (default:
# one per core, as each libFuzzer run uses one), so CI's 4 x 60 s take 2 minutes
# on 2 cores; each target still gets its SECONDS of a whole core.
# Usage: fuzz/run-all.sh [SECONDS]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-300}
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs" -ge 1 ] 2>/dev/null || { echo "fuzz/run-all.sh: FUZZ_JOBS must be a number >= 1, got '$jobs'" >&2; exit 2; }
logs=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-logs.XXXXXX")
trap 'rm -rf "$logs"' EXIT
targets="json_decode form_decode filter_parse request_decode like clickhouse_quote"
running=0
for target in $targets; do
  ( "$top/fuzz/run.sh" "$target" "$seconds" >"$logs/$target" 2>&1; echo $? >"$logs/$target.rc" ) &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait; running=0; fi
done
wait
failed=""
for target in $targets; do
  log="$logs/$target"
  if [ "$(cat "$log.rc" 2>/dev/null)" = 0 ]; then
    echo "fuzz $target: clean, $(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$') inputs in ${seconds}s"
  else
    failed="$failed $target"
    echo "*** fuzz $target FAILED; the end of its log:" >&2
    tail -60 "$log" >&2
  fi
done
[ -z "$failed" ] || { echo "*** fuzzing found crashes in:$failed (inputs: fuzz/crash-*)" >&2; exit 1; }
