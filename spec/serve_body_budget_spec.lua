-- Bounded memory for unauthenticated work (issue 16, point 2). Many clients each
-- announce a large body and send all of it but the last byte; the server
-- reserves each Content-Length against --max-bodies when the headers arrive and
-- answers 503 (connection closed) once the budget is spent, so its RSS stays
-- far below what the bodies would take (40 x 4 MiB = 160 MiB held otherwise).
local S = require "serve_helpers"
local H = require "serve_attack_helpers"
local socket = require "socket"

local MIB = 1024 * 1024
local CLIENTS, BODY = 40, 4 * MIB

describe("issue 16: bounded memory for request bodies", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1",
      "--max-body", tostring(BODY), "--max-bodies", tostring(8 * BODY), "--per-address", "0" }))
  end)
  teardown(function() assert.equals(0, S.stop(h)) end)

  it("holds many almost-complete bodies under 128 MiB RSS, refusing past the budget with 503", function()
    local chunk = ("x"):rep(64 * 1024)
    local held, refused = {}, 0
    for i = 1, CLIENTS do
      local c = assert(H.connect(h.port))
      c:send("POST /data HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n" ..
        "Content-Length: " .. BODY .. "\r\n\r\n")
      -- the server answers at the headers when the budget is spent: look before sending
      c:settimeout(0.2)
      local line = c:receive("*l")
      if not line then
        c:settimeout(10)
        local sent = 0
        while sent < BODY - 1 do
          local piece = chunk:sub(1, math.min(#chunk, BODY - 1 - sent))
          if not c:send(piece) then break end -- refused after all (a slow 503): read it below
          sent = sent + #piece
        end
        -- a 503 that came late (a busy machine) is there now; a held body gets no answer
        c:settimeout(sent == BODY - 1 and 0.2 or 10)
        line = c:receive("*l")
        if not line then held[#held + 1] = c end
      end
      if line then
        assert.matches("^HTTP/1.1 503", line, 1, false, i)
        refused = refused + 1
        local rest = H.read_all(c, 5) -- the rest of the answer, then the server closes
        assert.matches("server_busy", rest)
        c:close()
      end
    end
    socket.sleep(0.3) -- let the server read what is in flight (the measure is a bound, not a time)
    local rss, hwm = H.rss_kib(h.pid)
    io.stderr:write(("\n[serve_body_budget] %d bodies of %d MiB held, %d refused: server VmRSS %.1f MiB, VmHWM %.1f MiB\n")
      :format(#held, math.floor(BODY / MIB), refused, rss / 1024, hwm / 1024))
    assert.equals(8, #held)                 -- the budget: 8 x 4 MiB
    assert.equals(CLIENTS - 8, refused)
    assert.is_true(hwm < 128 * 1024, ("VmHWM %.1f MiB"):format(hwm / 1024))
    for _, c in ipairs(held) do c:close() end
    -- the budget comes back once they are gone: a normal request succeeds
    local r
    for _ = 1, 50 do
      r = assert(H.post(h.port, "/check", H.TOKEN_BODY))
      if r.status == 200 then break end
      socket.sleep(0.1)
    end
    assert.equals(200, r.status)
    local lines = H.log_lines(h, "status=503", CLIENTS - 8, 5)
    assert.equals(CLIENTS - 8, #lines)      -- every 503 is in the access log
  end)
end)
