-- No request holds the others (issue 16, point 1). One worker, a urlData answer
-- whose filter drops every row of a 300,000-row scan: the producer hands the
-- server back between batches of rows (connector SCAN_BUDGET, an empty chunk
-- meaning "nothing yet"), so a /check from another client is answered while
-- that scan is still running; and while another client leaves its answer unread.
local S = require "serve_helpers"
local H = require "serve_attack_helpers"

describe("issue 16: no request holds the others", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1" }))
  end)
  teardown(function() assert.equals(0, S.stop(h)) end)

  it("answers /check from another client while a filtered-empty /data scan runs", function()
    local scan = assert(H.connect(h.port, nil, 120))
    local body = H.TOKEN_BODY .. "&table=deals_300k&select[]=id&filter[%3Cid]=0" -- id < 0: no row passes
    scan:send("POST /data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
      "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
    -- the answer has started (status line): the scan is under way
    assert.matches("^HTTP/1.1 200", assert(scan:receive("*l")))
    local check = assert(H.post(h.port, "/check", H.TOKEN_BODY, { timeout = 30 }))
    assert.equals(200, check.status)
    assert.equals('{"ok":true}', check.body)
    -- and the scan had not finished when /check was answered: its access line is not written yet
    assert.same({}, H.log_lines(h, "table=deals_300k", 1, 0))
    local rest = H.read_all(scan, 120)
    scan:close()
    local rows = assert(S.dechunk(rest:match("\r\n\r\n(.*)$")))
    assert.equals('[["id"]]', rows) -- the header row only
    local line = H.log_lines(h, "table=deals_300k", 1, 10)[1]
    assert.is_not_nil(line)
    assert.matches("status=200 rows=0", line)
  end)

  it("answers /check while another client does not read its large /data answer", function()
    local slow = assert(H.connect(h.port, nil, 30))
    local body = H.TOKEN_BODY .. "&table=deals_200k"
    slow:send("POST /data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
      "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
    assert.matches("^HTTP/1.1 200", assert(slow:receive("*l"))) -- then it reads nothing more
    local check = assert(H.post(h.port, "/check", H.TOKEN_BODY, { timeout = 30 }))
    assert.equals(200, check.status)
    assert.same({}, H.log_lines(h, "table=deals_200k", 1, 0)) -- still unsent: no access line yet
    slow:close()
    local line = H.log_lines(h, "table=deals_200k", 1, 40)[1] -- the cut answer is logged
    assert.is_not_nil(line)
    assert.matches("end=aborted", line)
  end)

  it("picks one worker per CPU (at most 4) when --workers is not given", function()
    local serve = require "biconnector.serve"
    local cpus = require("biconnector.core").server.cpus()
    assert.is_true(cpus >= 1)
    assert.equals(math.min(cpus, 4), assert(serve.parse_args({ "x.lua" })).workers)
  end)
end)
