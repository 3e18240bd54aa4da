#!/bin/sh
# Fuzz one target for SECONDS (default 300) under ASan + UBSan (libFuzzer).
# Seeds: the project's corpus fuzz/corpus/TARGET (read only), plus for
# json_decode the JSONTestSuite files of ../shared when present; what the run
# finds goes to a temporary directory (nothing in the tree changes). A crash,
# a sanitizer report or a Lua error escaping a module's documented (nil, err)
# answer stops the run with a non-zero status and leaves fuzz/crash-* behind.
# Leak checks per input are off: Lua's collector frees across inputs (the
# ASan specs check the C core for leaks).
# Usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer options...]
#        e.g. fuzz/run.sh filter_parse 60;  add a new input to the corpus:
#        cp crash-... fuzz/corpus/TARGET/ once fixed
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer options...]}
shift
seconds=${1:-300}
[ $# -gt 0 ] && shift
"$top/fuzz/build.sh" "$target"
seeds="$top/fuzz/corpus/$target"
[ -d "$seeds" ] || { echo "fuzz/run.sh: no corpus $seeds" >&2; exit 2; }
found=$(mktemp -d "${TMPDIR:-/tmp}/$target-found.XXXXXX")
trap 'rm -rf "$found"' EXIT
extra=""
max_len=4096
case "$target" in
  json_decode)
    max_len=65536
    suite="${BIC_SHARED:-$top/../shared}/testdata/JSONTestSuite/test_parsing"
    if [ -d "$suite" ]; then extra=$suite; else echo "(no JSONTestSuite seeds: $suite is absent)"; fi ;;
esac
dict="$top/fuzz/${target%%_*}.dict"
echo "== fuzz $target for ${seconds}s (seeds: $(ls "$seeds" | wc -l) in fuzz/corpus/$target${extra:+ + $extra})"
cd "$top/fuzz"
# shellcheck disable=SC2086
"$top/fuzz/bin/$target" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
  -detect_leaks=0 -dict="$dict" -artifact_prefix="$top/fuzz/" -print_final_stats=1 "$@" "$found" "$seeds" $extra
