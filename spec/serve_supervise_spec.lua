-- `biconnector serve` lifecycle: a worker that keeps dying is restarted with
-- growing delays (logged with the exit cause); SIGHUP reloads the connector
-- file in every worker without dropping a connection or failing a request; a
-- file that no longer loads keeps the old connector and the log says why.
local helpers = require "helpers"
local S = require "serve_helpers"
local socket = require "socket"

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

-- f's first true value, polled every 20 ms `tries` times at most.
local function wait_for(what, tries, f) return helpers.wait(what, tries * 0.02, f) end

-- A connector whose one table is named after `version`; describing the table
-- "die" ends the worker with exit code 3.
local function connector_source(version)
  return ([[
local biconnector = require "biconnector"
return biconnector.connector {
  title = "Reload %s",
  settings = {},
  check = function() return true end,
  tables = { { code = "v%s", title = "Version %s" }, { code = "die", title = "Ends the worker" } },
  describe = function(connection, table_code)
    if table_code == "die" then os.exit(3) end
    return { { code = "id", name = "ID", type = "int" } }
  end,
  data = function() return {} end,
}
]]):format(version, version, version)
end

local function write(path, text)
  local f = assert(io.open(path .. ".tmp", "w"))
  f:write(text)
  f:close()
  assert(os.rename(path .. ".tmp", path))
end

local function table_code(port)
  local r, err = S.request(port, "POST", "/table_list", "", FORM)
  assert(r, err)
  assert.equal(200, r.status)
  return r.body:match('"code":"([^"]+)"')
end

local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

describe("biconnector serve supervision", function()
  local dir, file
  before_each(function()
    dir = helpers.tmpdir("supervise")
    file = dir .. "/connector.lua"
    write(file, connector_source("1"))
  end)
  after_each(function() helpers.rmdir(dir) end)

  it("restarts a worker that keeps dying with growing delays, logging the exit cause", function()
    local h = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "2" }))
    finally(function() S.stop(h) end)
    wait_for("two workers", 500, function() return #S.children(h.pid) == 2 end)
    -- a worker that exits: the code is logged
    local r = S.request(h.port, "POST", "/table_description", "table=die", FORM)
    assert.is_nil(r) -- the worker died before it answered
    wait_for("the exit to be logged", 500, function() return S.stderr(h):find("ended exit=3", 1, true) end)
    -- then kill workers one after another, as soon as each replacement starts
    local killed = {}
    for i = 1, 4 do
      local victim = wait_for("a replacement worker", 1000, function()
        for _, pid in ipairs(S.children(h.pid)) do
          if not killed[pid] and S.stderr(h):find("worker " .. pid .. " started", 1, true) then return pid end
        end
      end)
      killed[victim] = i
      os.execute("kill -KILL " .. victim)
      wait_for("the death to be logged", 500, function() return S.stderr(h):find("worker " .. victim .. " ended", 1, true) end)
    end
    local log = S.stderr(h)
    local delays = {}
    for cause, delay, streak in log:gmatch("ended (%S+) after [%d.]+s; restarting in ([%d.]+)s %((%d+) in a row%)") do
      delays[#delays + 1] = { cause = cause, delay = tonumber(delay), streak = tonumber(streak) }
    end
    assert.equal(5, #delays, log)
    assert.equal("exit=3", delays[1].cause)
    for i = 2, 5 do assert.equal("signal=KILL", delays[i].cause) end
    for i = 1, 5 do
      assert.equal(i, delays[i].streak)
      assert.equal(0.1 * 2 ^ (i - 1), delays[i].delay)
    end
    -- and it still serves with both workers back
    wait_for("two workers again", 1000, function() return #S.children(h.pid) == 2 end)
    assert.equal("v1", table_code(h.port))
    assert.equal(0, S.stop(h))
  end)

  it("SIGHUP reloads the file in every worker; a kept-alive connection and concurrent requests go on", function()
    local h = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "2" }))
    finally(function() S.stop(h) end)
    wait_for("two workers", 500, function() return #S.children(h.pid) == 2 end)
    assert.equal("v1", table_code(h.port))
    -- a kept-alive connection opened before the reload
    local keep = assert(socket.connect("127.0.0.1", h.port))
    keep:settimeout(10)
    local function keep_ask()
      assert(keep:send("POST /table_list HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n"))
      local status = keep:receive("*l")
      local len
      repeat
        local line = assert(keep:receive("*l"))
        len = len or tonumber(line:lower():match("^content%-length:%s*(%d+)"))
      until line == ""
      local body = keep:receive(len)
      return status, body:match('"code":"([^"]+)"')
    end
    local status, code = keep_ask()
    assert.equal("HTTP/1.1 200 OK", status)
    assert.equal("v1", code)
    -- reloads while requests are in flight: every request answers 200
    local answered = 0
    for round = 2, 11 do
      write(file, connector_source(tostring(round)))
      local pending = {}
      for i = 1, 6 do
        local c = assert(socket.connect("127.0.0.1", h.port))
        c:settimeout(10)
        c:send("POST /table_list HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        pending[i] = c
      end
      os.execute("kill -HUP " .. h.pid)
      for i = 1, 6 do
        local all = pending[i]:receive("*a")
        pending[i]:close()
        assert.matches("^HTTP/1.1 200 ", all)
        answered = answered + 1
      end
      -- the master and both workers say they reloaded
      wait_for("the reload " .. round, 500, function()
        return count(S.stderr(h), "reloaded " .. file:gsub("%p", "%%%0")) == 3 * (round - 1)
      end)
      assert.equal("v" .. round, table_code(h.port))
    end
    assert.equal(60, answered)
    status, code = keep_ask()
    assert.equal("HTTP/1.1 200 OK", status)
    assert.equal("v11", code) -- the same connection, the new connector
    keep:close()
    assert.equal(0, S.stop(h))
  end)

  it("SIGHUP with a file that no longer loads keeps the old connector and logs why", function()
    local h = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "2" }))
    finally(function() S.stop(h) end)
    wait_for("two workers", 500, function() return #S.children(h.pid) == 2 end)
    write(file, "return { this is not Lua")
    os.execute("kill -HUP " .. h.pid)
    local line = wait_for("the failure to be logged", 500, function()
      return S.stderr(h):match("master %d+ reload failed, keeping the connector already loaded: [^\n]+")
    end)
    assert.matches("connector%.lua", line)
    for _ = 1, 10 do assert.equal("v1", table_code(h.port)) end
    -- the workers were not asked to reload a broken file
    assert.equal(0, count(S.stderr(h), "worker %d+ reload"))
    -- fixed again: the next SIGHUP takes it
    write(file, connector_source("2"))
    os.execute("kill -HUP " .. h.pid)
    wait_for("the reload", 500, function() return count(S.stderr(h), "worker %d+ reloaded") == 2 end)
    assert.equal("v2", table_code(h.port))
    assert.equal(0, S.stop(h))
  end)

  it("SIGHUP reloads a database's schema: a table added shows at once, despite the introspection cache", function()
    local db = dir .. "/shop.db"
    assert(os.execute(("sqlite3 %s 'CREATE TABLE a (id INTEGER)'"):format(db)))
    -- one worker: the process that cached the list is the one asked again
    local h = S.start(S.serve_command({ "sqlite://" .. db, "--listen", "127.0.0.1:0", "--workers", "1", "--no-auth" }))
    finally(function() S.stop(h) end)
    local function codes()
      local r = assert(S.request(h.port, "POST", "/table_list", "", FORM))
      assert.equal(200, r.status)
      local list = {}
      for code in r.body:gmatch('"code":"([^"]+)"') do list[#list + 1] = code end
      return table.concat(list, ",")
    end
    assert.equal("a", codes())
    assert(os.execute(("sqlite3 %s 'CREATE TABLE b (id INTEGER)'"):format(db)))
    for _ = 1, 4 do assert.equal("a", codes()) end -- cached (60 s by default)
    os.execute("kill -HUP " .. h.pid)
    wait_for("the reload", 500, function() return count(S.stderr(h), "serve %d+ reloaded") == 1 end)
    assert.equal("a,b", codes())
    assert.equal(0, S.stop(h))
  end)

  it("a single process reloads on SIGHUP too, and keeps the old connector when the file breaks", function()
    -- --workers 1: the default is one worker per CPU
    local h = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "1" }))
    finally(function() S.stop(h) end)
    assert.equal("v1", table_code(h.port))
    write(file, connector_source("2"))
    os.execute("kill -HUP " .. h.pid)
    wait_for("the reload", 500, function() return S.stderr(h):find("serve " .. h.pid .. " reloaded", 1, true) end)
    assert.equal("v2", table_code(h.port))
    write(file, "error('broken on purpose')")
    os.execute("kill -HUP " .. h.pid)
    wait_for("the failure", 500, function() return S.stderr(h):find("reload failed", 1, true) end)
    assert.matches("serve %d+ reload failed, keeping the connector already loaded: \"[^\n]*broken on purpose", S.stderr(h))
    assert.equal("v2", table_code(h.port))
    assert.equal(0, S.stop(h))
  end)
end)
