-- Every descriptor the library opens is close-on-exec: a command spawned while
-- connections are open (a connector running `ls`, a script calling os.execute)
-- holds none of the server's or libcurl's sockets.
local S = require "serve_helpers"
local cjson = require "cjson"
local http = require("biconnector.core").http

-- `ls -l /proc/PID/fd` lines -> { [fd] = target }
local function parse(lines)
  local fds = {}
  for _, line in ipairs(lines) do
    local fd, target = line:match("%s(%d+) %-> (.+)$")
    if fd then fds[tonumber(fd)] = target end
  end
  return fds
end

-- The descriptors of this process and of a command it spawns now.
local LIST = "ls -l /proc/$PPID/fd; echo ---; ls -l /proc/self/fd"
local function parent_and_child(lines)
  local parent, child = {}, {}
  local into = parent
  for _, line in ipairs(lines) do
    if line == "---" then into = child else into[#into + 1] = line end
  end
  return parse(parent), parse(child)
end

local function spawn_listing()
  local p = assert(io.popen(LIST))
  local lines = {}
  for line in p:lines() do lines[#lines + 1] = line end
  p:close()
  return parent_and_child(lines)
end

-- The descriptors of the server process h and of a command it spawned while
-- serving: the table "fds" of spec/cloexec_fixture_connector.lua lists them.
local function served_listing(h)
  local status, body = S.post_json(h.port, "/data", { connection = { token = "t0k3n" }, table = "fds" })
  assert.equals(200, status)
  local lines = {}
  for i, row in ipairs(cjson.decode(body)) do
    if i > 1 then lines[#lines + 1] = row[1] end
  end
  return parent_and_child(lines)
end

local function kernel_objects(fds) -- sockets, epoll and eventfd handles
  local set = {}
  for fd, target in pairs(fds) do
    if target:match("^socket:") or target:match("^anon_inode:") then set[target] = fd end
  end
  return set
end

-- Lists the descriptors of this process and of a command spawned now: this
-- process holds kernel objects it did not hold `before` (what: the name of
-- what opened them), and the command holds none of them.
local function assert_opened_not_inherited(before, what)
  local parent, child = spawn_listing()
  local opened = {}
  for target, fd in pairs(kernel_objects(parent)) do
    if not before[target] then opened[target] = fd end
  end
  assert.is_truthy(next(opened), "this process should hold " .. what .. " open: " .. cjson.encode(parent))
  for fd, target in pairs(child) do
    assert.is_nil(opened[target], ("the child holds %s's fd %d (%s)"):format(what, fd, target))
  end
end

describe("close-on-exec", function()
  it("a command spawned by a connector while it serves a request holds none of the server's descriptors", function()
    for _, workers in ipairs({ "0", "2" }) do
      local args = { "spec/cloexec_fixture_connector.lua", "--listen", "127.0.0.1:0" }
      if workers ~= "0" then args[#args + 1] = "--workers"; args[#args + 1] = workers end
      local h = S.start(S.serve_command(args))
      local ok, err = pcall(function()
        local server, child = served_listing(h)
        local held = kernel_objects(server)
        -- the serving process holds the listening socket and this request's
        -- connection (so the check below can fail) ...
        local sockets = 0
        for target in pairs(held) do if target:match("^socket:") then sockets = sockets + 1 end end
        assert.is_true(sockets >= 2, "the server should hold its sockets: " .. cjson.encode(server))
        -- ... and the command it spawned holds none of them, nor any other
        for fd, target in pairs(child) do
          assert.is_nil(held[target], ("the child holds the server's fd %d (%s)"):format(fd, target))
          assert.is_falsy(target:match("^socket:") or target:match("^anon_inode:"),
            ("the child holds fd %d -> %s"):format(fd, target))
        end
      end)
      S.stop(h)
      assert(ok, err)
    end
  end)

  it("a command spawned while a SQLite database is open does not hold its file", function()
    local H = require "sql_helpers"
    if not H.have_sqlite3("the SQLite close-on-exec spec") then
      pending("SKIPPED: no sqlite3 tool")
      return
    end
    local dir = H.tmpdir()
    local db = dir .. "/fds.db"
    H.sqlite(db, "CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1), (2);")
    local h = S.start(S.serve_command({ "spec/cloexec_fixture_connector.lua", "--listen", "127.0.0.1:0" }),
      { CLOEXEC_DB = db })
    local ok, err = pcall(function()
      local server, child = served_listing(h)
      local open_in_server = false
      for _, target in pairs(server) do
        if target == db then open_in_server = true end
      end
      assert.is_true(open_in_server, "the server should hold the database open: " .. cjson.encode(server))
      for fd, target in pairs(child) do
        assert.is_falsy(target:find(db, 1, true), ("the child holds fd %d -> %s"):format(fd, target))
      end
    end)
    S.stop(h)
    H.rmdir(dir)
    assert(ok, err)
  end)

  for _, engine in ipairs({ "postgresql", "mysql", "clickhouse" }) do
    it("a command spawned while a " .. engine .. " connection is open does not hold its socket", function()
      local dbservers = require "dbservers"
      local why = dbservers.missing(engine)
      if why then
        io.stderr:write(("\n*** SKIPPED: close-on-exec of the %s driver needs a real server: %s\n"):format(engine, why))
        pending("SKIPPED: " .. engine .. ": " .. why)
        return
      end
      local srv = dbservers.start(engine)
      local ok, err = pcall(function()
        local before = kernel_objects((spawn_listing()))
        local conn = assert(require("biconnector.core").sql.open(engine, { host = "127.0.0.1", port = srv.port,
          user = dbservers.RO_USER, password = dbservers.RO_PASSWORD, database = dbservers.DATABASE }))
        -- the driver holds its connection open; the command spawned beside it does not
        assert_opened_not_inherited(before, "the " .. engine .. " connection")
        conn:close()
      end)
      srv:stop()
      assert(ok, err)
    end)
  end

  it("a command spawned while libcurl keeps a connection alive does not hold it", function()
    local h = S.start(S.serve_command({ "spec/cloexec_fixture_connector.lua", "--listen", "127.0.0.1:0" }))
    local ok, err = pcall(function()
      local before = kernel_objects((spawn_listing()))
      local client = http.new()
      local res = assert(client:request { method = "POST", url = ("http://127.0.0.1:%d/check"):format(h.port),
        headers = { "Content-Type: application/json" }, body = '{"connection":{"token":"t0k3n"}}' })
      assert.equals(200, res.status)
      -- libcurl's kept-alive connection is open in this process, and not in the command spawned beside it
      assert_opened_not_inherited(before, "libcurl's connection")
      client:close()
    end)
    S.stop(h)
    assert(ok, err)
  end)
end)
