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

  it("spawns a command with stdin from a string, default signals, and reports an exec that fails", function()
    local out = os.tmpname()
    -- the child sees the text, then end of file; SIGPIPE and TERM are at their defaults though we trap them here
    assert.is_true(process.trap("PIPE", "TERM"))
    local pid = assert(process.spawn({ "sh", "-c", "cat > " .. out .. "; grep -E '^(SigIgn|SigBlk)' /proc/self/status >> " .. out },
      { stdin = "line one\nline two" }))
    local got, how, code = process.wait(pid, true)
    assert.same({ pid, "exit", 0 }, { got, how, code })
    local f = assert(io.open(out))
    local text = f:read("*a")
    f:close()
    os.remove(out)
    assert.matches("^line one\nline two", text)
    -- the low 32 signals (glibc keeps 32 and 33 for itself): none ignored (PIPE is 13), none blocked
    local ignored = tonumber(text:match("SigIgn:%s*%x*(%x%x%x%x%x%x%x%x)\n"), 16)
    assert.equals(0, ignored % 2 ^ 31)
    assert.matches("SigBlk:%s*0+\n", text)
    local none, err, errno = process.spawn({ "/nonexistent/command" })
    assert.is_nil(none)
    assert.equals("cannot run /nonexistent/command: No such file or directory", err)
    assert.equals(2, errno)
    -- a child that leaves before reading its stdin is no SIGPIPE here
    pid = assert(process.spawn({ "true" }, { stdin = ("x"):rep(60000) }))
    assert.same({ pid, "exit", 0 }, { process.wait(pid, true) })
    assert.has_error(function() process.spawn({ "true" }, { stdin = ("x"):rep(60001) }) end)
    assert.has_error(function() process.spawn({}) end)
    assert.has_error(function() process.spawn({ "true", 5 }) end)
  end)

  it("spawns a child that gets its death signal when the spawner dies", function()
    local marker = os.tmpname()
    os.remove(marker)
    -- a middle process spawns a sleeper with death_signal TERM and exits: the sleeper is ended
    local middle = assert(process.fork())
    if middle == 0 then
      local pid = process.spawn({ "sh", "-c", "echo $$ > " .. marker .. "; exec sleep 30" }, { death_signal = "TERM" })
      process.sleep(0.3)
      process.exit(pid and 0 or 1)
    end
    assert.same({ middle, "exit", 0 }, { process.wait(middle, true) })
    local f = assert(io.open(marker))
    local sleeper = tonumber(f:read("*l"))
    f:close()
    os.remove(marker)
    local gone = false
    for _ = 1, 100 do
      local stat = io.open("/proc/" .. sleeper .. "/stat")
      local state = stat and stat:read("*l"):match("^%d+ %b() (%a)")
      if stat then stat:close() end
      if not state or state == "Z" then gone = true break end
      process.sleep(0.05)
    end
    assert.is_true(gone, "the spawned child outlived its spawner")
  end)

  it("has a monotonic clock", function()
    local a = process.clock()
    local b = process.clock()
    assert.is_number(a)
    assert.is_true(b >= a)
  end)

  it("sets malloc's thresholds: a freed block under the trim threshold stays in the process", function()
    assert.has_error(function() process.trim_threshold(-1) end)
    assert.has_error(function() process.trim_threshold(2 ^ 31) end)
    assert.has_error(function() process.mmap_threshold(100) end)
    if jit or require("helpers").sanitized then
      -- LuaJIT's strings do not come from malloc; a sanitizer replaces malloc
      print("\n[serve_process_spec] SKIP the RSS part: " .. (jit and "LuaJIT allocates strings itself" or "sanitizer run"))
      return
    end
    -- in a fresh lua5.4 each (a small heap, whose top a freed block is): 24 MiB
    -- allocated and freed, then the RSS in MiB
    local script = [[
      local process = require("biconnector.core").process
      process.mmap_threshold(32 * 1048576) -- the block comes from the heap
      process.trim_threshold(tonumber(arg[1]))
      local held = { ("x"):rep(24 * 1048576) }
      assert(#held[1] == 24 * 1048576)
      held[1] = nil
      collectgarbage()
      collectgarbage()
      local f = io.open("/proc/self/statm")
      local pages = tonumber(f:read("*a"):match("^%d+ (%d+)"))
      f:close()
      print(math.floor(pages * 4096 / 1048576))
    ]]
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local function rss_after_free(trim)
      local p = assert(io.popen(("LUA_CPATH=%q lua5.4 %s %d"):format(package.cpath, path, trim)))
      local out = p:read("*a")
      p:close()
      return assert(tonumber(out:match("%d+")), out)
    end
    local kept, given_back = rss_after_free(64 * 1048576), rss_after_free(0)
    os.remove(path)
    assert.is_true(kept >= given_back + 16, ("RSS %d MiB kept, %d MiB given back"):format(kept, given_back))
  end)
end)
