#!/bin/sh
# Instructions per request in the nginx worker (issue 25, small requests):
# nginx runs in one process (master_process off) under callgrind, with the
# glue's locations of bench/ngx; after a warm-up, the counters are zeroed,
# N keep-alive requests are sent (bench/ngx_client.lua) and the process's
# instructions are dumped: (Ir) / N, for the constant content_by_lua answer
# and each path. Unlike the worker-CPU figures of `BENCH_CPU=1 bench/ngx`, the
# same on every run, so a change to the glue can be compared with the one
# before it on a shared machine.
#   bench/ngx_instructions.sh [N]       (default N 2000)
#   JIT=off: LuaJIT's compiler off (the interpreter only: the same count on every
#            run, where traces make it move by a few thousand)
#   KEEP=DIR: the callgrind dumps kept there (NAME.cg), for callgrind_annotate
#   DATA=1: also /data of the 1000 precomputed demo rows (bench/ngx_rows.lua)
#           and the hand-written lua-cjson handler on them (N/10 requests each)
# By hand only (valgrind, nginx with the Lua module, luajit with luasocket).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
N=${1:-2000}
BUILD_LUAJIT=$(cd "${BUILD_LUAJIT:-build-luajit}" && pwd)
MODULES=${BIC_NGINX_MODULES:-/usr/lib/nginx/modules}
command -v valgrind >/dev/null || { echo "SKIP valgrind is not installed"; exit 0; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "SKIP nginx is not installed"; exit 0; }
tmp=$(mktemp -d)
chmod 755 "$tmp"
vpid=
cleanup() { [ -n "$vpid" ] && kill "$vpid" 2>/dev/null; [ -n "$vpid" ] && wait "$vpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
port=$(luajit -e 'local s = require("socket").bind("127.0.0.1", 0); local _, p = s:getsockname(); s:close(); print(p)')
mkdir -p "$tmp/logs"
cp "$top/bench/ngx_rows.lua" "$tmp/bench_rows.lua"
sed -i "s|^local here = .*|local here = \"$top/bench/\"|" "$tmp/bench_rows.lua"
cat >"$tmp/nginx.conf" <<EOF
load_module $MODULES/ndk_http_module.so;
load_module $MODULES/ngx_http_lua_module.so;
master_process off;
daemon off;
worker_processes 1;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
pid $tmp/nginx.pid;
error_log $tmp/logs/error.log warn;
events { worker_connections 64; }
http {
  lua_package_path "$top/lua/?.lua;$top/lua/?/init.lua;$tmp/?.lua;;";
  lua_package_cpath "$BUILD_LUAJIT/?.so;;";
  client_body_temp_path $tmp/body;
  proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/fastcgi;
  uwsgi_temp_path $tmp/uwsgi;
  scgi_temp_path $tmp/scgi;
  access_log off;
  keepalive_requests 1000000;
  init_by_lua_block { $( [ "${JIT:-on}" = off ] && echo 'jit.off()' ) require("biconnector.host.ngx").load("$top/examples/demo/connector.lua") }
  server {
    listen 127.0.0.1:$port;
    location = /baseline {
      content_by_lua_block { ngx.req.read_body() ngx.header["Content-Type"] = "application/json" ngx.print('{"ok":true}') }
    }
    location /rows/ {
      content_by_lua_block { require("biconnector.host.ngx").serve(require("bench_rows").connector, { prefix = "/rows" }) }
    }
    location = /anchor_rows/data {
      content_by_lua_block {
        local cjson = require "cjson"
        ngx.req.read_body()
        local args = ngx.req.get_post_args()
        if args["connection[token]"] ~= "demo-token" then return ngx.exit(403) end
        local out = require("bench_rows").cjson_rows(args.table)
        ngx.header["Content-Type"] = "application/json"
        ngx.print(cjson.encode(out))
      }
    }
    location /cached/ {
      content_by_lua_block { require("biconnector.host.ngx").serve(require("bench_rows").cached, { prefix = "/cached" }) }
    }
  }
}
EOF
valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" "$NGINX" -p "$tmp" -c "$tmp/nginx.conf" \
  -e "$tmp/logs/error.log" >"$tmp/valgrind.log" 2>&1 &
vpid=$!
for _ in $(seq 1 600); do
  luajit -e "assert(require('socket').connect('127.0.0.1', $port))" 2>/dev/null && break
  sleep 0.1
done
client() { luajit "$top/bench/ngx_client.lua" "$port" "$1" "$2" "$3"; }
# measure LABEL PATH BODY NAME [N]: Ir per request
measure() {
  n=${5:-$N}
  client "$2" "$3" 500 # warm-up: JIT traces, caches
  callgrind_control -z "$vpid" >/dev/null
  client "$2" "$3" "$n"
  rm -f "$tmp"/cg.*
  callgrind_control -d "$vpid" >/dev/null
  f=$(ls -t "$tmp"/cg.* | head -1)
  ir=$(sed -n 's/^summary: *//p' "$f" | head -1)
  [ -n "$ir" ] || ir=$(sed -n 's/^totals: *//p' "$f" | head -1)
  [ -n "${KEEP:-}" ] && cp "$f" "$KEEP/$4.cg"
  per=$((ir / n))
  printf '%-44s %8d instructions per request\n' "$1" "$per"
  eval "ir_$4=$per"
}
measure "constant content_by_lua answer" /baseline "x=1" constant
measure "biconnector.ngx /check" /rows/check "connection[token]=demo-token" check
measure "biconnector.ngx /table_list" /rows/table_list "connection[token]=demo-token&searchString=" tlist
measure "biconnector.ngx /table_list, cached" /cached/table_list "connection[token]=demo-token&searchString=" tcached
if [ "${DATA:-0}" = 1 ]; then
  measure "anchor: lua-cjson /data, 1000 rows" /anchor_rows/data "connection[token]=demo-token&table=deals" anchor1000 $((N / 10))
  measure "biconnector.ngx /data, 1000 rows" /rows/data "connection[token]=demo-token&table=deals" data1000 $((N / 10))
  awk -v a="$ir_anchor1000" -v o="$ir_data1000" 'BEGIN { printf "anchor/ours by instructions: /data 1000 rows %.2fx\n", a / o }'
fi
awk -v k="$ir_constant" -v c="$ir_check" -v t="$ir_tlist" -v tc="$ir_tcached" 'BEGIN {
  printf "constant/ours by instructions: /check %.2fx, /table_list %.2fx, cached %.2fx\n", k / c, k / t, k / tc }'
