-- A large urlData answer streams with flat server memory: the answer checked
-- row by row as valid JSON, the server's peak RSS (VmHWM) under 64 MiB.
-- 500,000 rows always; 5,000,000 rows (15-30 s) when BIC_SLOW_SPECS=1, as CI
-- sets it. `bench/serve big` runs the big one by hand (figures in docs/serve.md).
local S = require "serve_helpers"

local sizes = { { rows = 500000, suffix = "500k", min_bytes = 25e6 } }
local slow = os.getenv("BIC_SLOW_SPECS")
if slow == "1" or slow == "all" then
  sizes[2] = { rows = 5000000, suffix = "5m", min_bytes = 250e6 }
else
  io.stderr:write("\n*** SKIPPED: the 5,000,000-row stream (15-30 s) needs BIC_SLOW_SPECS=1\n")
end

describe("biconnector serve streaming", function()
  for _, size in ipairs(sizes) do
    it(("streams %d rows as valid JSON with the server under 64 MiB peak RSS"):format(size.rows), function()
      -- one process: the RSS measured is the one serving
      local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1" }))
      local table_code = "invoices_" .. size.suffix
      local rows, first, bytes = S.stream_rows(h.port, "/data",
        "connection[token]=demo-token&table=" .. table_code,
        { ["Content-Type"] = "application/x-www-form-urlencoded" })
      local peak_kib = S.peak_rss_kib(h.pid)
      S.stop(h)
      assert(rows, first)
      assert.equals(size.rows + 1, rows) -- the header row and the rows
      assert.same({ "id", "number", "deal_id", "status", "total", "tax_rate", "issued_on", "paid_at" }, first)
      assert.is_true(bytes > size.min_bytes, tostring(bytes))
      if os.getenv("BIC_SANITIZE") == "1" then
        io.stderr:write("\n*** SKIPPED: the peak RSS check means nothing under AddressSanitizer\n")
      else
        io.stderr:write(("\n[serve stream] %d rows, %d bytes, server peak RSS %.1f MiB\n")
          :format(size.rows, bytes, peak_kib / 1024))
        assert.is_true(peak_kib < 64 * 1024, ("server peak RSS %.1f MiB"):format(peak_kib / 1024))
      end
      assert.matches(("table=%s status=200 rows=%d bytes=%d"):format(table_code, size.rows, bytes), h.stderr)
    end)
  end
end)
