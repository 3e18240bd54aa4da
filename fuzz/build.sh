#!/bin/sh
# Build fuzz/bin/TARGET from fuzz/TARGET.c under libFuzzer + ASan + UBSan, with
# the C sources the targets use (the codecs: buffer, json, form, and
# ClickHouse's text rules; a target calls the bic_open_* it needs itself) and
# the Lua 5.4 library. Naming them keeps
# the fuzz build free of what other parts link (libcurl, libmicrohttpd, the
# database clients). BIC_TOP lets the targets that drive Lua modules
# (fuzz/lua_harness.h) find lua/.
# Usage: fuzz/build.sh TARGET        e.g. fuzz/build.sh json_decode
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?usage: fuzz/build.sh TARGET}
[ -f "$top/fuzz/$target.c" ] || { echo "fuzz/build.sh: no fuzz/$target.c" >&2; exit 2; }
sources="$top/src/buffer.c $top/src/json.c $top/src/form.c $top/src/sql_ch_text.c"
libs=""
case "$target" in
  like) sources="$top/src/like.c"; libs="-lsqlite3" ;; # differential: SQLite's own like()
esac
mkdir -p "$top/fuzz/bin"
# shellcheck disable=SC2086
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -Wall -Wextra -D_GNU_SOURCE -DBIC_TOP="\"$top\"" \
  -I/usr/include/lua5.4 -I"$top/src" \
  "$top/fuzz/$target.c" $sources \
  -llua5.4 $libs -lm -o "$top/fuzz/bin/$target"
echo "built fuzz/bin/$target"
