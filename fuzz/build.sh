#!/bin/sh
# Build fuzz/bin/TARGET from fuzz/TARGET.c under libFuzzer + ASan + UBSan, with
# every C source of the core except the module entry and the HTTP parts (a
# target calls the bic_open_* it needs itself), and the Lua 5.4 library.
# Usage: fuzz/build.sh TARGET        e.g. fuzz/build.sh json_decode
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?usage: fuzz/build.sh TARGET}
[ -f "$top/fuzz/$target.c" ] || { echo "fuzz/build.sh: no fuzz/$target.c" >&2; exit 2; }
sources=""
for f in "$top"/src/*.c; do
  case "$(basename "$f")" in
    core.c|http_*.c) ;;
    *) sources="$sources $f" ;;
  esac
done
mkdir -p "$top/fuzz/bin"
# shellcheck disable=SC2086
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -Wall -Wextra -D_GNU_SOURCE \
  -I/usr/include/lua5.4 -I"$top/src" \
  "$top/fuzz/$target.c" $sources \
  -llua5.4 -lm -o "$top/fuzz/bin/$target"
echo "built fuzz/bin/$target"
