#!/bin/sh
# Fuzz json.decode for SECONDS (default 300) with the JSONTestSuite files of
# ../shared as seeds, copied into a temporary corpus (nothing is committed).
# Usage: fuzz/run-json.sh [SECONDS] [libFuzzer options...]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-300}
[ $# -gt 0 ] && shift
"$top/fuzz/build.sh" json_decode
corpus=$(mktemp -d "${TMPDIR:-/tmp}/json-corpus.XXXXXX")
trap 'rm -rf "$corpus"' EXIT
suite="${BIC_SHARED:-$top/../shared}/testdata/JSONTestSuite/test_parsing"
if [ -d "$suite" ]; then
  cp "$suite"/*.json "$corpus"/
  echo "seeds: $(ls "$corpus" | wc -l) files from $suite"
else
  echo "*** no seeds: $suite is absent; starting from an empty corpus"
fi
cd "$top/fuzz"
"$top/fuzz/bin/json_decode" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
  -dict="$top/fuzz/json.dict" -print_final_stats=1 "$@" "$corpus"
