#!/bin/sh
# Fuzz form.decode (then encode of the result) for SECONDS (default 300), with
# the bodies of spec/fixtures/form as seeds, copied into a temporary corpus.
# Usage: fuzz/run-form.sh [SECONDS] [libFuzzer options...]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-300}
[ $# -gt 0 ] && shift
"$top/fuzz/build.sh" form_decode
corpus=$(mktemp -d "${TMPDIR:-/tmp}/form-corpus.XXXXXX")
trap 'rm -rf "$corpus"' EXIT
lua5.4 - "$top/spec/fixtures/form" "$corpus" <<'LUA'
package.loaded["biconnector.core"] = {}
local n = 0
for _, name in ipairs({ "parse_str", "parse_str_random" }) do
  for _, case in ipairs(dofile(arg[1] .. "/" .. name .. ".lua")) do
    n = n + 1
    local f = assert(io.open(arg[2] .. "/seed" .. n, "wb"))
    f:write(case.body)
    f:close()
  end
end
print("seeds: " .. n .. " bodies from spec/fixtures/form")
LUA
cd "$top/fuzz"
"$top/fuzz/bin/form_decode" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
  -dict="$top/fuzz/form.dict" -print_final_stats=1 "$@" "$corpus"
