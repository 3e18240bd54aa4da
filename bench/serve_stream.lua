-- Streams a large urlData answer from `biconnector serve` (demo connector) to a
-- client that checks it is valid JSON with the right row count, and reports the
-- server's peak RSS (VmHWM). Run through bench/serve or scripts/run-specs' env:
--   bench/serve stream 5000000
-- Usage (with LUA_PATH/LUA_CPATH/BIC_RUNTIME set): RUNTIME bench/serve_stream.lua ROWS [LIMIT_MIB]
-- The server runs under SERVER_RUNTIME with SERVER_BUILD (default: the client's own).
local S = require "serve_helpers"
local socket = require "socket"

local rows = tonumber(arg[1] or "500000")
local limit_mib = tonumber(arg[2] or "64")
local server_runtime = os.getenv("SERVER_RUNTIME") or os.getenv("BIC_RUNTIME")
local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1" },
  server_runtime, os.getenv("SERVER_BUILD")))
local started = socket.gettime()
local count, first, bytes = S.stream_rows(h.port, "/data",
  "connection[token]=demo-token&table=deals_" .. rows,
  { ["Content-Type"] = "application/x-www-form-urlencoded" })
local seconds = socket.gettime() - started
local peak = S.peak_rss_kib(h.pid)
S.stop(h)
if not count then
  io.stderr:write("stream failed: ", tostring(first), "\n")
  os.exit(1)
end
local ok = count == rows + 1 and peak / 1024 < limit_mib
print(("stream (server %s): %d rows (+ header) %.1f MB in %.1f s = %.0f rows/s, %.1f MB/s; server peak RSS %.1f MiB (limit %d MiB) %s"):format(
  server_runtime, count - 1, bytes / 1e6, seconds, (count - 1) / seconds,
  bytes / 1e6 / seconds, peak / 1024, limit_mib, ok and "OK" or "FAIL"))
os.exit(ok and 0 or 1)
