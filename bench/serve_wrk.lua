-- wrk script for bench/serve: POSTs BENCH_BODY (form-encoded) to BENCH_PATH.
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/table_list"
wrk.body = os.getenv("BENCH_BODY") or "connection[token]=demo-token"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status ", status, "\n")
  end
end
