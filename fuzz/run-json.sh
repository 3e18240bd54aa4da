#!/bin/sh
# Fuzz json.decode: fuzz/run.sh json_decode [SECONDS] [libFuzzer options...]
exec "$(dirname "$0")/run.sh" json_decode "$@"
