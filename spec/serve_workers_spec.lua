-- `biconnector serve --workers N`: N processes share the listening socket; a
-- worker killed with SIGKILL is replaced; SIGTERM stops them all, exit 0.
local helpers = require "helpers"
local S = require "serve_helpers"
local socket = require "socket"

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local function wait_for(what, seconds, f) return helpers.wait(what, seconds, f, nil, 0.05) end

describe("biconnector serve --workers 2", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0",
      "--workers", "2" }))
  end)
  teardown(function() S.stop(h) end)

  local function ok_request()
    local r, err = S.request(h.port, "POST", "/data", "connection[token]=demo-token&table=contacts&limit=3", FORM)
    assert(r, err)
    assert.equals(200, r.status)
    return r
  end

  it("runs two workers and serves through them", function()
    local workers = wait_for("two workers", 10, function()
      local c = S.children(h.pid)
      return #c == 2 and c
    end)
    assert.equals(2, #workers)
    for _ = 1, 20 do ok_request() end
    assert.matches("2 workers", S.stdout(h))
  end)

  it("replaces a worker killed with SIGKILL, and requests keep succeeding", function()
    local before = wait_for("two workers", 10, function()
      local c = S.children(h.pid)
      return #c == 2 and c
    end)
    local victim = before[1]
    os.execute("kill -KILL " .. victim)
    for _ = 1, 30 do ok_request() end -- the other worker answers meanwhile
    local after = wait_for("a replacement", 10, function()
      local c = S.children(h.pid)
      if #c ~= 2 then return nil end
      for _, pid in ipairs(c) do if pid == victim then return nil end end
      return c
    end)
    assert.equals(2, #after)
    assert.is_true(S.alive(h.pid))
    for _ = 1, 30 do ok_request() end
    assert.matches("worker " .. victim .. " ended signal=KILL after [%d.]+s; restarting in [%d.]+s", S.stderr(h))
  end)

  it("stops every worker on SIGTERM and exits 0", function()
    local workers = S.children(h.pid)
    assert.equals(0, S.stop(h))
    for _, pid in ipairs(workers) do
      wait_for("worker " .. pid .. " to end", 10, function() return not S.alive(pid) end)
    end
    local refused = not S.request(h.port, "POST", "/check", "connection[token]=demo-token", FORM)
    assert.is_true(refused)
  end)
end)

describe("biconnector serve --workers when the master dies", function()
  it("the workers stop by themselves", function()
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0",
      "--workers", "2" }))
    local workers = wait_for("two workers", 10, function()
      local c = S.children(h.pid)
      return #c == 2 and c
    end)
    os.execute("kill -KILL " .. h.pid)
    for _, pid in ipairs(workers) do
      wait_for("orphaned worker " .. pid .. " to end", 15, function() return not S.alive(pid) end)
    end
    S.stop(h)
    assert.is_nil((S.request(h.port, "POST", "/check", "connection[token]=demo-token", FORM)))
  end)
end)

describe("biconnector serve --workers graceful stop", function()
  it("lets an answer in flight finish after SIGTERM to the master, then exits 0", function()
    -- --grace 60: the answer must outlive the wait for the idle worker below, however slow
    -- the machine (at the default 10 s a loaded sanitizer run saw it cut)
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0",
      "--workers", "2", "--grace", "60" }))
    wait_for("two workers", 10, function() return #S.children(h.pid) == 2 end)
    local c = helpers.connect(h.port, 30)
    -- 30 MB: far more than loopback socket buffers hold, so while the client reads
    -- nothing the worker is necessarily in the middle of the answer
    local body = "connection[token]=demo-token&table=deals_300k"
    c:send("POST /data HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n" ..
      "Content-Length: " .. #body .. "\r\n\r\n" .. body)
    assert.matches("^HTTP/1.1 200", c:receive("*l"))
    socket.sleep(0.2)
    os.execute("kill -TERM " .. h.pid)
    -- the idle worker stops at once: TERM has been handled while this answer is unread
    wait_for("the idle worker to stop", 20, function() return #S.children(h.pid) <= 1 end)
    local rest = assert(c:receive("*a"))
    c:close()
    local decoded = assert(S.dechunk(rest:match("\r\n\r\n(.*)$")))
    local counter = S.row_counter()
    counter.feed(decoded)
    assert.equals(300001, counter.finish())
    assert.equals(0, S.wait_exit(h, 20))
    S.stop(h)
  end)
end)
