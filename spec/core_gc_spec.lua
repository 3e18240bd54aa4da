-- The C core's userdata and the values C keeps: every kind is collected, closes
-- are idempotent, registry references are released, and strings handed to C by
-- an option table's __index stay alive while C reads them. Meant for the
-- sanitizer run too (make test-asan), where a use after free aborts.
local helpers = require "helpers"
local core = require "biconnector.core"
local socket = require "socket"

local function full_gc()
  collectgarbage()
  collectgarbage()
end

-- Values held through luaL_ref (registry entries that are not free-list links).
local registry_refs = helpers.registry_refs

-- Runs f while counting the collections of userdata of metatable `name`.
local function count_collected(name, f)
  assert.equals("[]", core.json.encode(core.json.decode("[]"))) -- the buffer metatable exists
  local mt = debug.getregistry()[name]
  assert.is_table(mt, name)
  local gc, n = mt.__gc, 0
  mt.__gc = function(u) n = n + 1; return gc(u) end
  local ok, err = pcall(function()
    f()
    full_gc()
  end)
  mt.__gc = gc
  assert(ok, err)
  return n
end

describe("core userdata are collected", function()
  it("the decoder's scratch buffers (escaped strings, long numbers, deep nesting)", function()
    local deep = ("["):rep(100) .. ("]"):rep(100)
    local n = count_collected("biconnector.buffer", function()
      for _ = 1, 50 do
        assert.equals("a\nb", core.json.decode('"a\\nb"'))
        assert.is_table(core.json.decode(deep))
        assert.is_nil((core.json.decode('["a\\n", tru]')))
      end
    end)
    assert.is_true(n >= 150, "collected " .. n)
  end)

  it("the encoder's output buffers, on success and on failure", function()
    local n = count_collected("biconnector.buffer", function()
      for _ = 1, 50 do
        assert.equals('["x"]', core.json.encode({ "x" }))
        assert.is_nil((core.json.encode({ print })))
      end
    end)
    assert.is_true(n >= 100, "collected " .. n)
  end)

  it("http error objects, and they print", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local h = core.http.new()
      local ok, err = h:request { url = "http://127.0.0.1:1/", connect_timeout = 5 }
      assert.is_nil(ok)
      assert.matches("^http error %d+: ", tostring(err))
      weak[1], weak[2] = err, h
      h:close()
    end
    full_gc()
    assert.is_nil(weak[1])
    assert.is_nil(weak[2])
  end)

  it("locks, released by the collector, unlock safe twice and after collection of others", function()
    local path = os.tmpname()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local lk = assert(core.http.lock(path))
      lk:unlock()
      lk:unlock()
      weak[1] = assert(core.http.lock(path))
    end
    full_gc()
    assert.is_nil(weak[1])
    local again = assert(core.http.lock(path)) -- not blocked: the collected one let go
    again:unlock()
    os.remove(path)
  end)

  it("rows encoders, closed or not", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local fields = { { code = "id", type = "int" } }
      local a = core.rows.new(fields)
      a:close()
      a:close()
      weak[1], weak[2] = a, core.rows.new(fields)
    end
    full_gc()
    assert.is_nil(weak[1])
    assert.is_nil(weak[2])
  end)
end)

describe("core userdata close once", function()
  it("whatever the order of close, __close and __gc, then refuse use or report closed", function()
    local path = os.tmpname()
    local objects = {
      server = assert(core.server.new { port = 0, handler = function() end }),
      http = core.http.new(),
      lock = assert(core.http.lock(path)),
      rows = core.rows.new({ { code = "id", type = "int" } }),
    }
    for name, object in pairs(objects) do
      local mt = getmetatable(object)
      for _, method in ipairs({ "__gc", "__close", "__gc" }) do
        assert.is_function(mt[method], name .. " " .. method)
        mt[method](object)
      end
      assert.matches("closed", tostring(object) .. (name == "lock" and " closed" or ""))
    end
    objects.server:close()
    assert.has_error(function() objects.server:port() end, "the server is closed")
    objects.http:close()
    assert.is_true(objects.http:closed())
    assert.has_error(function() objects.http:request { url = "http://127.0.0.1:1/" } end)
    objects.lock:unlock()
    assert.is_false(objects.lock:held())
    objects.rows:close()
    assert.has_error(function() objects.rows:add({ 1 }) end)
    os.remove(path)
  end)
end)

describe("core descriptors", function()
  -- The descriptors of this process: count and "fd -> target" lines.
  local function open_fds()
    local p = io.popen("cd /proc/" .. core.process.getpid() .. "/fd && for f in *; do "
      .. "echo \"$f -> $(readlink $f)\"; done")
    local n, lines = 0, {}
    for line in p:lines() do n, lines[#lines + 1] = n + 1, line end
    p:close()
    return n, table.concat(lines, "\n")
  end

  it("are all given back: servers, http handles, locks, atomic writes, closed or collected", function()
    if not io.open("/proc/self/fd") then
      io.stderr:write("\n*** SKIPPED: no /proc/self/fd to count descriptors\n")
      return
    end
    local path = os.tmpname()
    full_gc()
    local before, before_list = open_fds()
    for i = 1, 20 do
      local srv = assert(core.server.new { port = 0, handler = function() end })
      if i % 2 == 0 then srv:close() end
      local h = core.http.new()
      h:request { url = "http://127.0.0.1:1/", connect_timeout = 5 }
      if i % 2 == 0 then h:close() end
      local lk = assert(core.http.lock(path))
      if i % 2 == 0 then lk:unlock() end
      lk = nil -- luacheck: ignore
      full_gc() -- the odd rounds' server, handle and lock are collected
      assert(core.http.write_atomic(path .. ".data", "x"))
    end
    full_gc()
    -- Another part of this process may hold a descriptor for a moment (a libcurl
    -- resolver thread a former spec left behind ends on its own): the count must
    -- come back to where it was, and a leak of ours never does.
    local now, now_list = open_fds()
    for _ = 1, 100 do
      if now == before then break end
      core.process.sleep(0.1)
      full_gc()
      now, now_list = open_fds()
    end
    assert.equals(before, now, "descriptors before:\n" .. before_list .. "\nafter:\n" .. now_list)
    os.remove(path)
    os.remove(path .. ".data")
  end)
end)

describe("core.server and the values it keeps", function()
  it("closes twice through close and __close, and a closed server is collected", function()
    local srv = assert(core.server.new { port = 0, handler = function() end })
    local close = getmetatable(srv).__close
    assert.is_function(close)
    close(srv)
    close(srv)
    srv:close()
    local weak = setmetatable({ srv }, { __mode = "v" })
    srv = nil -- luacheck: ignore
    full_gc()
    assert.is_nil(weak[1])
  end)

  it("releases the handler, the body iterator, the chunk and the finish callback", function()
    full_gc()
    local before = registry_refs()
    local srv, finished
    do
      local calls = 0
      srv = assert(core.server.new { port = 0, handler = function()
        return 200, { ["Content-Type"] = "text/plain" }, function()
          calls = calls + 1
          if calls == 3 then srv:stop() end
          return ("x"):rep(65536) .. calls -- a fresh string each time
        end, function(how) finished = how end
      end })
      local client = assert(socket.tcp())
      assert(client:connect("127.0.0.1", srv:port()))
      assert(client:send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"))
      -- the client reads nothing: the answer is in flight when run() returns
      assert.equals("stopped", srv:run(60))
      assert.is_nil(finished)
      assert.is_true(registry_refs() > before)
      srv:close() -- cuts the connection: finish callback, stream freed
      client:close()
    end
    assert.equals("shutdown", finished)
    srv = nil -- luacheck: ignore
    full_gc()
    assert.equals(before, registry_refs())
  end)

  it("lets os.exit(code, true) from a body iterator end the process (lua_close inside run)", function()
    -- lua_close collects the running server from inside MHD's callback: stopping
    -- the daemon there deadlocked on MHD's response lock
    local out = helpers.run_lua([[
      local core = require "biconnector.core"
      local socket = require "socket"
      local srv = assert(core.server.new { port = 0, handler = function()
        return 200, {}, function() os.exit(3, true) end
      end })
      local client = assert(socket.tcp())
      assert(client:connect("127.0.0.1", srv:port()))
      assert(client:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
      local idle = assert(socket.tcp()) -- a second connection, idle
      assert(idle:connect("127.0.0.1", srv:port()))
      srv:run(60)
      print("run returned")
    ]], { stderr = false, status = true })
    assert.equals("exit 3\n", out)
  end)

  it("survives a finish callback that closes or runs the server while close() stops it", function()
    -- in a child process: MHD aborts the process on a second MHD_stop_daemon
    local out = helpers.run_lua([[
      local core = require "biconnector.core"
      local socket = require "socket"
      local srv, calls, seen = nil, 0, {}
      srv = assert(core.server.new { port = 0, handler = function()
        return 200, {}, function()
          calls = calls + 1
          if calls == 2 then srv:stop() end
          return ("x"):rep(65536)
        end, function(how)
          seen[#seen + 1] = how
          seen[#seen + 1] = tostring(pcall(srv.close, srv))
          seen[#seen + 1] = tostring(pcall(srv.run, srv, 1))
        end
      end })
      local client = assert(socket.tcp())
      assert(client:connect("127.0.0.1", srv:port()))
      assert(client:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert(srv:run(60) == "stopped")
      srv:close()
      print(table.concat(seen, " "))
    ]], { status = true })
    -- close() in the callback finds the server closed (a no-op), run() raises
    assert.equals("shutdown true false\nexit 0\n", out)
  end)

  it("keeps a host string made up by the options' __index alive while it listens", function()
    local opts = setmetatable({ port = 0, handler = function() end }, { __index = function(_, key)
      -- "127.1" (inet_aton's short form) is a string no constant of this file holds
      if key == "host" then return table.concat({ "127", "1" }, ".") end
      collectgarbage() -- between reading host and using it
    end })
    local srv = assert(core.server.new(opts))
    assert.is_true(srv:port() > 0)
    srv:close()
  end)
end)

describe("json.encode and a made-up indent", function()
  it("keeps an indent string made up by the options' __index alive while it writes", function()
    -- sort_keys makes tables, so the collector runs while the encoder writes
    local long = (" "):rep(48)
    local opts = setmetatable({}, { __index = function(_, key)
      if key == "indent" then return long:sub(1, 44) .. "    " end
      if key == "sort_keys" then return true end
    end })
    local value = {}
    for i = 1, 100 do value[i] = { b = i, a = { tostring(i) } } end
    local expected = core.json.encode(value, { sort_keys = true, indent = long })
    local pause = collectgarbage("setpause", 0)
    local stepmul = collectgarbage("setstepmul", 1000)
    local ok, err = pcall(function()
      for _ = 1, 5 do assert.equals(expected, core.json.encode(value, opts)) end
      -- an extra argument shifted the stack slots the encoder keeps
      for _ = 1, 5 do assert.equals(expected, core.json.encode(value, opts, "extra")) end
    end)
    collectgarbage("setpause", pause)
    collectgarbage("setstepmul", stepmul)
    assert(ok, err)
  end)
end)

describe("json.encode on a sparse array with a huge index", function()
  it("names the index (LuaJIT counts array indexes in an int)", function()
    local ok, err = core.json.encode({ [1] = 1, [2 ^ 40] = 2 })
    assert.is_nil(ok)
    assert.matches("largest index 1099511627776", err, 1, true)
  end)
end)

describe("core.http request headers", function()
  it("refuses a line break in a header given as a list entry, as in the map form", function()
    local h = core.http.new()
    assert.has_error(function()
      h:request { url = "http://127.0.0.1:1/", headers = { "X-A: 1\r\nX-Injected: 2" } }
    end)
    assert.has_error(function()
      h:request { url = "http://127.0.0.1:1/", headers = { "X-A: 1\0\r\nX-Injected: 2" } }
    end)
    assert.has_error(function()
      h:request { url = "http://127.0.0.1:1/", headers = { ["X-A"] = "1\r\nX-Injected: 2" } }
    end)
    -- the handle is still usable
    local ok, err = h:request { url = "http://127.0.0.1:1/", headers = { "X-A: 1" }, connect_timeout = 5 }
    assert.is_nil(ok)
    assert.is_true(err.not_sent)
    h:close()
  end)
end)

describe("integer arguments the C types cannot hold", function()
  local process = core.process

  it("core.server.listen refuses a port beyond 65535 instead of cutting it", function()
    -- 2^32 was cut to port 0: a random port, and a listening socket nobody asked for
    assert.has_error(function() core.server.listen("127.0.0.1", 2 ^ 32) end)
    assert.has_error(function() core.server.listen("127.0.0.1", 2 ^ 32 + 80) end)
  end)

  it("refuses signal numbers and process ids that the C types cannot hold", function()
    local me = process.getpid()
    assert.is_true(process.kill(me, 0))
    -- 2^32 + 0 was cut to signal 0 (and 2^32 + 15 to SIGTERM)
    assert.has_error(function() process.kill(me, 2 ^ 32) end)
    assert.has_error(function() process.kill(me, 1.5) end)
    -- 2^32 + pid was cut to pid; 2^32 alone to 0, the caller's process group
    assert.has_error(function() process.kill(2 ^ 32 + me, 0) end)
    assert.has_error(function() process.wait(2 ^ 32) end)
    -- 2^32 was cut to descriptor 0: our standard input
    assert.has_error(function() process.close(2 ^ 32) end)
    assert.has_error(function() process.close(-1) end)
  end)

  it("a trapped signal does not fail a blocking read in progress (EINTR)", function()
    local out = helpers.run_lua([[
      local process = require("biconnector.core").process
      assert(process.trap("USR1"))
      -- the shell signals its parent (us) once we wait in read() (state S in
      -- /proc: the only place we sleep), then answers
      local p = io.popen("for i in $(seq 400); do [ \"$(cut -d' ' -f3 /proc/$PPID/stat)\" = S ] && break; sleep 0.05; done; " ..
        "kill -USR1 $PPID; sleep 0.2; echo done")
      local text, err = p:read("a")
      p:close()
      assert(process.signals()[1] == "USR1", "the signal was not seen")
      print(text == "done\n" and "ok" or ("read failed: " .. tostring(err)))
    ]], { seconds = 20 })
    assert.equals("ok\n", out)
  end)

  it("does not sleep forever on NaN", function()
    local out = helpers.run_lua([[
      local process = require("biconnector.core").process
      process.sleep(0 / 0)
      process.sleep(-1)
      process.sleep(-math.huge)
      print("ok")
    ]], { seconds = 20 })
    assert.equals("ok\n", out)
  end)
end)
