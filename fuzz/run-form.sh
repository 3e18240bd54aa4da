#!/bin/sh
# Fuzz form.decode: fuzz/run.sh form_decode [SECONDS] [libFuzzer options...]
exec "$(dirname "$0")/run.sh" form_decode "$@"
