-- A complete access log (issue 16, point 7). Every answer, the server's own
-- refusals included (413, 503, 400 for framing or target, libmicrohttpd's
-- 400/414/431), writes one line, without the token, with bytes that are not
-- UTF-8 escaped; a client that half-closes gets its answers and then its
-- socket back at once, not after the idle timeout.
local S = require "serve_helpers"
local H = require "serve_attack_helpers"

describe("issue 16: complete access log", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1",
      "--max-body", "1000", "--timeout", "30" }))
  end)
  teardown(function() assert.equals(0, S.stop(h)) end)

  -- Sends raw; returns the status it got and the new access lines with that status.
  local function one_line(raw_request, status, path_pattern)
    local before = #H.log_lines(h, "status=" .. status, 0, 0)
    local reply = H.exchange(h.port, raw_request)
    assert.equals(status, H.status_lines(reply)[1], reply:sub(1, 200))
    local lines = H.log_lines(h, "status=" .. status, before + 1, 5)
    assert.equals(before + 1, #lines, "exactly one new line for the answer " .. status)
    local line = lines[#lines]
    if path_pattern then assert.matches(path_pattern, line) end
    assert.is_nil(line:find("demo-token", 1, true))
    return line
  end

  it("logs 413 (Content-Length over --max-body) once", function()
    local line = one_line("POST /data HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413, "POST /data ")
    assert.matches("end=refused", line)
  end)

  it("logs a 400 for framing and for a control byte in the target, escaped", function()
    one_line("POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400, "POST /check ")
    one_line("POST /check%00\255 HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\n" .. H.TOKEN_BODY, 400,
      'POST "/check%%00\\xff" ')
  end)

  it("logs libmicrohttpd's own refusals: 400 (bad Content-Length), 414, 431", function()
    one_line("POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, " /check ")
    one_line("GET /" .. ("a"):rep(40000) .. " HTTP/1.1\r\nHost: x\r\n\r\n", 414)
    one_line("GET /check HTTP/1.1\r\nHost: x\r\nX-Big: " .. ("a"):rep(40000) .. "\r\n\r\n", 431, " /check ")
  end)

  it("escapes bytes that are not UTF-8 in a logged path, keeps valid UTF-8", function()
    local line = one_line("POST /\208\189\255 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 28\r\n\r\n"
      .. H.TOKEN_BODY, 404)
    assert.matches('"/\208\189\\xff"', line, 1, true)
  end)

  it("releases a half-closed client's socket once its answers are sent", function()
    local req = "POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\n" .. H.TOKEN_BODY
    -- two keep-alive requests then the end of what we send, at once
    local c = assert(H.connect(h.port, nil, 10))
    c:send(req .. req)
    c:shutdown("send")
    local raw, err = H.read_all(c, 10) -- the server's --timeout is 30 s: "timeout" without the release
    c:close()
    assert.same({ 200, 200 }, H.status_lines(raw))
    assert.equals("closed", err)
    -- a request, its answer, then the end of what we send
    c = assert(H.connect(h.port, nil, 10))
    c:send(req)
    assert.equals(200, assert(H.read_answer(c)).status)
    c:shutdown("send")
    raw, err = H.read_all(c, 10)
    c:close()
    assert.equals("", raw)
    assert.equals("closed", err)
  end)
end)

describe("issue 16: graceful stop with idle keep-alive connections", function()
  it("closes a connection idle between requests at once, not after --grace", function()
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1",
      "--grace", "30", "--timeout", "60", "--request-timeout", "60" }))
    local c = assert(H.connect(h.port, nil, 10))
    c:send("POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\n" .. H.TOKEN_BODY)
    assert.equals(200, assert(H.read_answer(c)).status) -- kept alive, now idle
    os.execute("kill -TERM " .. h.pid)
    local raw, err = H.read_all(c, 10) -- "timeout" if the idle connection held the 30 s grace
    c:close()
    assert.equals("", raw)
    assert.equals("closed", err)
    assert.equals(0, S.stop(h))
  end)
end)
