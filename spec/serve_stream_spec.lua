-- A large urlData answer streams with flat server memory: 500,000 rows checked
-- row by row as valid JSON, the server's peak RSS (VmHWM) under 64 MiB.
-- The 5,000,000-row run is `bench/serve big` (about 30 s; figures in docs/serve.md).
local S = require "serve_helpers"

describe("biconnector serve streaming", function()
  it("streams 500,000 rows as valid JSON with the server under 64 MiB peak RSS", function()
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0" }))
    local rows, first, bytes = S.stream_rows(h.port, "/data",
      "connection[token]=demo-token&table=invoices_500k",
      { ["Content-Type"] = "application/x-www-form-urlencoded" })
    local peak_kib = S.peak_rss_kib(h.pid)
    S.stop(h)
    assert(rows, first)
    assert.equals(500001, rows) -- the header row and 500,000 rows
    assert.same({ "id", "number", "deal_id", "status", "total", "tax_rate", "issued_on", "paid_at" }, first)
    assert.is_true(bytes > 25e6, tostring(bytes))
    if os.getenv("BIC_SANITIZE") == "1" then
      io.stderr:write("\n*** SKIPPED: the peak RSS check means nothing under AddressSanitizer\n")
    else
      assert.is_true(peak_kib < 64 * 1024, ("server peak RSS %.1f MiB"):format(peak_kib / 1024))
    end
    assert.matches("table=invoices_500k status=200 rows=500000 bytes=" .. bytes, h.stderr)
  end)
end)
