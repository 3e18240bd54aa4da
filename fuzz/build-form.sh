#!/bin/sh
# Build fuzz/bin/form_decode: the form decoder under libFuzzer + ASan + UBSan.
# Usage: fuzz/build-form.sh [TARGET]   (default form_decode)
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-form_decode}
mkdir -p "$top/fuzz/bin"
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Werror \
  -I/usr/include/lua5.4 -I"$top/src" \
  "$top/fuzz/$target.c" "$top/src/form.c" "$top/src/buffer.c" \
  -llua5.4 -lm -o "$top/fuzz/bin/$target"
echo "built fuzz/bin/$target"
