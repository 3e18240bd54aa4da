-- The rows encoders' spare buffers (src/rows.c): an encoder takes the memory a
-- closed one left, so that a worker answering /data does not give the top of
-- its heap back and take it again at every answer (docs/serve.md, "Memory").
local core = require "biconnector.core"
local json = require "biconnector.json"
local helpers = require "helpers"
local S = require "serve_helpers"

local FIELDS = { { code = "ID", type = "int" }, { code = "NAME", type = "string" }, { code = "AMOUNT", type = "double" } }

local function rows_of(enc)
  enc:finish()
  local text = enc:take()
  enc:close()
  return json.decode(text, { array_mt = false })
end

describe("rows encoders reusing a closed encoder's buffer", function()
  it("start clean after an encoder closed with bytes still pending", function()
    local a = core.rows.new(FIELDS)
    for i = 1, 5000 do a:add({ i, ("name %d"):format(i), i / 4 }) end
    a:take() -- the buffer has grown; what follows stays pending
    for i = 1, 700 do a:add({ -i, "left behind", 0.5 }) end
    assert.is_true(a:pending() > 10000)
    a:close()
    local b = core.rows.new({ { code = "X", type = "string" } })
    b:add({ "only" })
    assert.same({ { "X" }, { "only" } }, rows_of(b))
  end)

  it("give each of many encoders open at once its own rows", function()
    for _ = 1, 3 do -- the second and third rounds run on the first round's buffers
      local open = {}
      for k = 1, 20 do
        local e = core.rows.new(FIELDS)
        for i = 1, 300 * k do e:add({ k * 100000 + i, "n" .. k, k }) end
        open[k] = e
      end
      -- closed in an order other than the one they were made in
      for k = 20, 1, -1 do
        local got = rows_of(open[k])
        assert.equals(300 * k + 1, #got)
        assert.same({ "ID", "NAME", "AMOUNT" }, got[1])
        assert.same({ k * 100000 + 1, "n" .. k, k }, got[2])
        assert.same({ k * 100000 + 300 * k, "n" .. k, k }, got[#got])
      end
    end
  end)

  it("keep working when encoders are left to the collector and when the state closes", function()
    for _ = 1, 50 do
      local e = core.rows.new(FIELDS)
      for i = 1, 2000 do e:add({ i, "x", 1.5 }) end
    end
    collectgarbage()
    collectgarbage()
    local e = core.rows.new(FIELDS)
    e:add({ 1, "after", 2 })
    assert.same({ { "ID", "NAME", "AMOUNT" }, { 1, "after", 2 } }, rows_of(e))
    -- a state closed with encoders open (finalized after the spares' holder, or before)
    local script = [[
      local core = require("biconnector.core")
      local keep = {}
      for k = 1, 12 do
        local e = core.rows.new({ { code = "A", type = "string" } })
        for i = 1, 3000 do e:add({ "v" .. i }) end
        if k % 2 == 0 then e:close() else keep[k] = e end
      end
      _G.keep = keep
      io.write("ok")
      os.exit(0, true)
    ]]
    local p = assert(io.popen(("LUA_CPATH=%s %s -e %s 2>&1; echo \" rc=$?\""):format(helpers.q(package.cpath),
      helpers.runtime, helpers.q(script))))
    local out = p:read("*a")
    p:close()
    assert.equals("ok rc=0\n", out)
  end)
end)

describe("biconnector serve answering /data", function()
  it("does not grow and shrink its heap with every answer (brk calls counted by strace)", function()
    if helpers.sanitized then
      print("\n[serve_heap_spec] SKIP the brk count: a sanitizer run's malloc is the sanitizer's")
      return
    end
    -- Under Lua 5.4 the count is the collector's as much as ours: its cycles
    -- free Lua strings at the heap's top as well, and where a cycle ends
    -- depends on the machine: 14 to 34 per 200 answers here, 27 and once 199
    -- in CI runs of the same code (without the spare buffers: 103 to 391). So
    -- the bound is checked under LuaJIT, whose allocator is its own for Lua
    -- values and whose count is exact (800 without the spares, 0 with them),
    -- and under Lua 5.4 the count is printed.
    local strict = math.type == nil
    if not os.execute("command -v strace >/dev/null 2>&1") then
      print("\n[serve_heap_spec] SKIP the brk count: strace is not installed (apt-get install strace)")
      pending("strace is not installed")
      return
    end
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--workers", "1" }))
    local ok, err = pcall(function()
      local worker = S.children(h.pid)[1] or h.pid
      local body = "connection[token]=demo-token&table=deals"
      local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
      for _ = 1, 20 do assert.equals(200, S.request(h.port, "POST", "/data", body, headers).status) end
      local log = helpers.tmp_path("strace")
      -- sendto too: the answers' bytes, the proof that the worker was traced
      local tracer = S.background(("strace -f -e trace=brk,sendto -o %s -p %d"):format(log, worker))
      -- strace writes its attach notice to stderr once the threads are traced
      local attached = helpers.poll(function() return S.stderr(tracer):find("attached") end, 10)
      tracer.pid = tonumber(helpers.read_file(tracer.pidfile))
      if not attached then
        local why = S.stderr(tracer)
        S.stop(tracer, "INT")
        os.remove(log)
        return "strace could not attach: " .. why
      end
      local answers = 200
      for _ = 1, answers do
        local r = assert(S.request(h.port, "POST", "/data", body, headers))
        assert.equals(200, r.status)
        assert.equals(1001, #json.decode(r.body))
      end
      S.stop(tracer, "INT")
      local trace = helpers.read_file(log) or ""
      os.remove(log)
      local calls = select(2, trace:gsub("brk%(", ""))
      local sends = select(2, trace:gsub("sendto%(", ""))
      print(("\n[serve_heap_spec] %d brk calls for %d answers"):format(calls, answers))
      assert.is_true(sends >= answers, ("strace saw %d sendto calls for %d answers"):format(sends, answers))
      -- without the spare buffers (SPARE_MAX set to 0 in src/rows.c): 800 under
      -- LuaJIT (the heap's top given back at the end of one answer, taken again
      -- by the next); with them 0
      if strict then
        assert.is_true(calls < answers / 8, ("%d brk calls for %d answers"):format(calls, answers))
      else
        print("[serve_heap_spec] (Lua 5.4: printed, not bounded; the bound is checked under LuaJIT)")
      end
    end)
    S.stop(h)
    assert(ok, err)
    if err then -- the brk count could not be taken (pending outside the pcall, which would catch it)
      print("\n[serve_heap_spec] SKIP the brk count: " .. err)
      pending(err)
    end
  end)
end)
