-- core.process: the fork/wait/kill/signal primitives behind `serve --workers`.
local process = require("biconnector.core").process

describe("core.process", function()
  it("forks a child and reports its exit code", function()
    local pid = assert(process.fork())
    if pid == 0 then process.exit(7) end
    local got, how, code = process.wait(pid, true)
    assert.same({ pid, "exit", 7 }, { got, how, code })
  end)

  it("kills a child and names the signal that ended it", function()
    local pid = assert(process.fork())
    if pid == 0 then
      while true do process.sleep(10) end
    end
    assert.is_nil(process.wait(pid)) -- still running: the non-blocking wait gives nil
    assert.is_true(process.kill(pid, "KILL"))
    local got, how, name = process.wait(pid, true)
    assert.same({ pid, "signal", "KILL" }, { got, how, name })
  end)

  it("records trapped signals, and sleep wakes up for them", function()
    assert.is_true(process.trap("USR1"))
    assert.same({}, process.signals())
    assert.is_true(process.kill(process.getpid(), "USR1"))
    process.sleep(5) -- returns at once: the signal is already pending
    assert.same({ "USR1" }, process.signals())
    assert.same({}, process.signals()) -- taken once
  end)

  it("keeps a trapped signal sent to a child right after fork", function()
    -- a master stopping a worker it has just started: the signal used to land
    -- before the child reset the flags it inherited, and was wiped out with them
    assert.is_true(process.trap("USR1"))
    process.signals()
    local lost = {}
    for i = 1, 20 do
      local pid = assert(process.fork())
      if pid == 0 then
        local t0 = process.clock()
        repeat
          for _, s in ipairs(process.signals()) do
            if s == "USR1" then process.exit(0) end
          end
          process.sleep(0.5) -- wakes up for a trapped signal
        until process.clock() - t0 > 2
        process.exit(3)
      end
      assert.is_true(process.kill(pid, "USR1"))
      local _, how, code = process.wait(pid, true)
      if not (how == "exit" and code == 0) then lost[#lost + 1] = ("#%d: %s %s"):format(i, how, code) end
    end
    assert.same({}, lost)
  end)

  it("rejects unknown signals and reports failures as nil, message", function()
    assert.has_error(function() process.kill(1, "NOPE") end, "bad argument #2 to 'kill' (unknown signal 'NOPE')")
    local ok, err = process.kill(2 ^ 22 + 12345, "TERM")
    assert.is_nil(ok)
    assert.matches("kill failed: No such process", err)
    local none, werr = process.wait(2 ^ 22 + 12345)
    assert.is_nil(none)
    assert.matches("waitpid failed", werr)
  end)

  it("checks that a process exists with signal 0", function()
    assert.is_true(process.kill(process.getpid(), 0))
  end)

  it("has a monotonic clock", function()
    local a = process.clock()
    local b = process.clock()
    assert.is_number(a)
    assert.is_true(b >= a)
  end)
end)
