#!/bin/sh
# Build fuzz/bin/TARGET from fuzz/TARGET.c under libFuzzer + ASan + UBSan, with
# every C source of the core except the module entry, the HTTP parts and the
# SQL engines (their client libraries are not linked here; a target calls the
# bic_open_* it needs itself), and the Lua 5.4 library. BIC_TOP lets the
# targets that drive Lua modules (fuzz/lua_harness.h) find lua/.
# Usage: fuzz/build.sh TARGET        e.g. fuzz/build.sh json_decode
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?usage: fuzz/build.sh TARGET}
[ -f "$top/fuzz/$target.c" ] || { echo "fuzz/build.sh: no fuzz/$target.c" >&2; exit 2; }
sources=""
for f in "$top"/src/*.c; do
  case "$(basename "$f")" in
    core.c|http_*.c|sql*.c) ;;
    *) sources="$sources $f" ;;
  esac
done
mkdir -p "$top/fuzz/bin"
# shellcheck disable=SC2086
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -Wall -Wextra -D_GNU_SOURCE -DBIC_TOP="\"$top\"" \
  -I/usr/include/lua5.4 -I"$top/src" \
  "$top/fuzz/$target.c" $sources \
  -llua5.4 -lm -o "$top/fuzz/bin/$target"
echo "built fuzz/bin/$target"
