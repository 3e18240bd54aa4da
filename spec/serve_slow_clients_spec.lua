-- Connection abuse and slow clients (issue 16, point 3). Connections from one address beyond
-- --per-address are refused at once; a request trickled a byte at a time (which
-- resets the idle timeout of 30 s forever) is cut at --request-timeout (5 s); meanwhile a
-- normal request from another loopback address (127.0.0.2) is answered.
local S = require "serve_helpers"
local H = require "serve_attack_helpers"
local socket = require "socket"

-- Opens n connections from `from` and starts a request on each, to trickle on.
local function open_attack(port, n, from)
  local socks = {}
  for _ = 1, n do
    local c = H.connect(port, from, 2)
    if c then
      c:send("POST /check HTTP/1.1\r\nHost: x\r\n")
      socks[#socks + 1] = c
    end
  end
  return socks
end

describe("issue 16: connection abuse (slowloris)", function()
  if not H.second_loopback() then
    it("needs a second loopback address", function() pending("SKIPPED: cannot bind 127.0.0.2") end)
    io.stderr:write("\n*** SKIPPED: serve_slow_clients_spec needs 127.0.0.2 (cannot bind it)\n")
    return
  end
  local h
  setup(function()
    h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1",
      "--per-address", "8", "--request-timeout", "5", "--timeout", "30" }))
  end)
  teardown(function() assert.equals(0, S.stop(h)) end)

  it("serves another address while one trickles, and cuts the trickled requests at their deadline", function()
    local raw = open_attack(h.port, 24, "127.0.0.1")
    local socks = {}
    for i, c in ipairs(raw) do socks[i] = { c = c } end
    local function sockets() local l = {} for i, s in ipairs(socks) do l[i] = s.c end return l end
    -- one round: a byte on every socket still open; returns how many are open
    local function round()
      local readable = socket.select(sockets(), nil, 0)
      local open = 0
      for _, s in ipairs(socks) do
        if not s.gone then
          if readable[s.c] then
            s.c:settimeout(0)
            local _, err = s.c:receive(1)
            if err == "closed" then s.gone = true end
          end
          if not s.gone and not s.c:send("X") then s.gone = true end
          if not s.gone then open = open + 1 end
        end
      end
      return open
    end
    -- the per-address limit: the server closes all but 8 of the 24 as it accepts them
    -- (well before the 5 s deadline: the attack is still running after this)
    local first = round()
    for _ = 1, 40 do
      if first <= 8 then break end
      socket.sleep(0.1)
      first = round()
    end
    assert.is_true(first <= 8, first .. " attacking connections open")
    assert.is_true(first > 0, "the attack ended before the request below")
    -- a normal request from another address is answered while the attack runs
    local r = assert(H.post(h.port, "/check", H.TOKEN_BODY, { from = "127.0.0.2", timeout = 5 }))
    assert.equals(200, r.status)
    -- the attack goes on, a byte every 0.3 s (each resets the idle timeout of 30 s);
    -- the request deadline (5 s) cuts every one of them
    local open = first
    for _ = 1, 60 do
      socket.sleep(0.3)
      open = round()
      if open == 0 then break end
    end
    assert.equals(0, open)
    for _, s in ipairs(socks) do s.c:close() end
    -- and the attacking address is served again
    r = assert(H.post(h.port, "/check", H.TOKEN_BODY, { timeout = 5 }))
    assert.equals(200, r.status)
  end)
end)
