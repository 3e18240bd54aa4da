-- The database path under parallel refreshes (docs/database.md, "Connections"):
-- every answer in flight has a connection of its own from the worker's pool;
-- a long statement never holds up the worker's other requests; a client that
-- leaves cancels its statement on the server; the pool, the answer deadline
-- and the answer budget have documented limits. On a SQLite file and on real
-- PostgreSQL, MariaDB and ClickHouse servers the spec starts (spec/dbservers.lua),
-- each behind `biconnector serve URL --workers 1`.
local helpers = require "helpers"
local db = require "dbservers"
local S = require "serve_helpers"
local H = require "sql_helpers"
local socket = require "socket"
local cjson = require "cjson"

local TOKEN = "pool-token"
local ROWS = 30000

local TABLES = {
  sqlite = ([[CREATE TABLE wide (id INTEGER, s TEXT, x REAL);
    WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < %d)
    INSERT INTO wide SELECT i, printf('%%032d-row', i), i * 0.5 FROM g;]]):format(ROWS),
  postgresql = ([[CREATE TABLE wide AS SELECT g AS id, lpad(g::text, 32, '0') || '-row' AS s,
    g * 0.5::float8 AS x FROM generate_series(1, %d) g;
    GRANT SELECT ON wide TO bic_ro;]]):format(ROWS),
  mysql = ([[CREATE TABLE wide AS SELECT seq AS id, CONCAT(LPAD(seq, 32, '0'), '-row') AS s,
    CAST(seq * 0.5 AS DOUBLE) AS x FROM seq_1_to_%d;]]):format(ROWS),
  clickhouse = { ([[CREATE TABLE wide ENGINE = MergeTree ORDER BY id AS SELECT toInt64(number + 1) AS id,
    concat(substring('00000000000000000000000000000000', 1, 32 - length(toString(number + 1))),
      toString(number + 1), '-row') AS s,
    (number + 1) * 0.5 AS x FROM numbers(%d)]]):format(ROWS) },
}

-- A statement that runs for a long time, as a query of a connector file.
local SLOW = {
  sqlite = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) "
    .. "SELECT count(*) AS n FROM c",
  postgresql = "SELECT pg_sleep(60)::text AS n",
  mysql = "SELECT SLEEP(60) AS n",
  clickhouse = "SELECT sleepEachRow(0.5) AS n FROM numbers(120) SETTINGS max_block_size = 1",
}
-- The statement as the server lists it while it runs (nil: SQLite has no server).
local RUNNING = {
  postgresql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
  mysql = "SELECT count(*) FROM information_schema.processlist WHERE info LIKE '%SLEEP(60)%' "
    .. "AND id <> CONNECTION_ID()",
  clickhouse = "SELECT count() FROM system.processes WHERE user = 'bic_ro' AND query LIKE '%sleepEachRow%'",
}

local function form(t)
  return require("biconnector").form.encode(t)
end

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local function post(port, path, body, timeout)
  local r, err = S.request(port, "POST", path, form(body), FORM, timeout)
  assert(r, err)
  return r
end

-- A request on a socket of its own, sent now and read later.
local function send(port, body)
  local c = helpers.connect(port, 10)
  local text = form(body)
  assert(c:send("POST /data HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    .. "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #text .. "\r\n\r\n" .. text))
  return c
end

-- Reads the answers of several sockets at once, round robin, `slow` of them
-- (a set of indexes) 2048 bytes at a time: -> the raw answers.
local function read_all(conns, slow)
  return (S.read_interleaved(conns, { slow = slow, slow_bytes = 2048, timeout = 120 }))
end

local function body_of(raw)
  local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
  assert(head, "no HTTP answer: " .. raw:sub(1, 100))
  assert.matches("^HTTP/1.1 200", head)
  if not head:lower():find("transfer%-encoding: chunked") then return rest end
  local body, err = S.dechunk(rest)
  if not body then error("the chunked body is cut: " .. tostring(err), 2) end
  return body
end

-- A process's resident memory in KiB (VmRSS), or its own part (RssAnon:
-- without the shared libraries' code and data pages mapped from files)
local function rss_kib(pid, which)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match((which or "VmRSS") .. ":%s*(%d+)"))
end

local function worker_of(h)
  return S.children(h.pid)[1] or h.pid
end

for _, engine in ipairs({ "sqlite", "postgresql", "mysql", "clickhouse" }) do
  describe("serve " .. engine .. ":// --workers 1", function()
    if H.skip_without(engine, "spec/sql_pool_spec.lua") then return end
    local srv, dir, url, env
    local servers = {}

    local function start(args, extra_env)
      local all = { url, "--listen", "127.0.0.1:0", "--workers", "1" }
      for _, a in ipairs(args or {}) do all[#all + 1] = a end
      local e = {}
      for k, v in pairs(env) do e[k] = v end
      for k, v in pairs(extra_env or {}) do e[k] = v end
      local h = S.start(S.serve_command(all), e)
      servers[#servers + 1] = h
      return h
    end

    -- a connector file serving SLOW as the table `slow`, with the options given
    local function start_slow(opts)
      local file = dir .. "/slow_" .. #servers .. ".lua"
      local f = assert(io.open(file, "w"))
      f:write(("return require('biconnector.sql').connector({ url = %q, token = %q, queries = { slow = "
        .. "{ sql = %q } }, pool_size = %d, pool_wait = %s, answer_timeout = %s })"):format(
        url, TOKEN, SLOW[engine], opts.pool_size or 8, opts.pool_wait or 5, opts.answer_timeout or 240))
      f:close()
      local h = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "1" }), env)
      servers[#servers + 1] = h
      return h
    end

    setup(function()
      dir = H.tmpdir()
      if engine == "sqlite" then
        H.sqlite(dir .. "/p.db", TABLES.sqlite)
        url = "sqlite://" .. dir .. "/p.db"
        env = { BICONNECTOR_TOKEN = TOKEN }
      else
        srv = db.start(engine)
        srv:admin(TABLES[engine])
        url = srv:url():gsub(":" .. db.RO_PASSWORD:gsub("%p", "%%%0") .. "@", "@")
        env = { BICONNECTOR_TOKEN = TOKEN, BICONNECTOR_DB_PASSWORD = db.RO_PASSWORD }
      end
    end)
    teardown(function()
      for _, h in ipairs(servers) do S.stop(h) end
      if srv then srv:stop() end
      if dir then H.rmdir(dir) end
    end)

    it("answers four simultaneous multi-chunk /data requests, one read slowly, each whole and byte-equal", function()
      local h = start()
      local q = { connection = { token = TOKEN }, table = "wide" }
      local lone = body_of(assert(S.request(h.port, "POST", "/data", form(q), FORM)).raw)
      assert.is_true(#lone > 4 * 65536, "a multi-chunk answer: " .. #lone .. " bytes")
      assert.equals(ROWS + 1, #cjson.decode(lone))
      local conns = {}
      for i = 1, 4 do conns[i] = send(h.port, q) end
      local raws = read_all(conns, { [2] = true })
      for i = 1, 4 do
        local body = body_of(raws[i])
        assert.equals(#lone, #body, "answer " .. i .. " has another length")
        assert.is_true(body == lone, "answer " .. i .. " differs from the lone answer")
      end
      -- and a filtered one with an ORDER of its own beside a full one, same worker
      local a, b = send(h.port, q), send(h.port, { connection = { token = TOKEN }, table = "wide",
        filter = { [">id"] = tostring(ROWS - 10) } })
      raws = read_all({ a, b }, { true })
      assert.is_true(lone == body_of(raws[1]), "the full answer beside a filtered one differs")
      local filtered = body_of(raws[2])
      assert.equals(11, #cjson.decode(filtered))
    end)

    it("serves /check within a second while a long statement runs, and cancels it when the client leaves", function()
      local h = start_slow({ pool_size = 1, pool_wait = 10 })
      local c = send(h.port, { connection = { token = TOKEN }, table = "slow" })
      socket.sleep(0.5)
      if RUNNING[engine] then
        assert.equals("1", srv:rows(RUNNING[engine])[1], "the slow statement runs on the server")
      end
      local t0 = socket.gettime()
      local r = post(h.port, "/check", { connection = { token = TOKEN } }, 5)
      assert.equals(200, r.status)
      assert.is_true(socket.gettime() - t0 < 1, "/check waited for the statement")
      c:close() -- the client leaves
      t0 = socket.gettime()
      if RUNNING[engine] then
        local gone = false
        while socket.gettime() - t0 < 5 do
          if srv:rows(RUNNING[engine])[1] == "0" then gone = true break end
          socket.sleep(0.05)
        end
        assert.is_true(gone, "the statement still runs on the server 5 s after the client left")
      end
      -- the pool's only connection is free again: a /data of another table gets it at once
      local r2 = post(h.port, "/table_list", { connection = { token = TOKEN } }, 10)
      assert.equals(200, r2.status)
      assert.is_true(socket.gettime() - t0 < 2, "the connection came back late: "
        .. (socket.gettime() - t0) .. " s after the client left")
    end)

    it("answers 503 with Retry-After when every connection is busy past the wait, and 504 past the deadline", function()
      local h = start_slow({ pool_size = 1, pool_wait = 0.5, answer_timeout = 3 })
      local c = send(h.port, { connection = { token = TOKEN }, table = "slow" })
      socket.sleep(0.3)
      local r = post(h.port, "/data", { connection = { token = TOKEN }, table = "slow" }, 10)
      assert.equals(503, r.status, r.body)
      assert.equals("1", r.headers["retry-after"])
      assert.matches("connections to the database", cjson.decode(r.body).message)
      -- the first one reaches its deadline: 504, the statement stopped
      c:settimeout(10)
      local raw = c:receive("*a")
      c:close()
      assert.matches("^HTTP/1.1 504", raw)
      assert.matches("deadline %(3 s%)", raw)
      if RUNNING[engine] then assert.equals("0", srv:rows(RUNNING[engine])[1]) end
    end)

    if engine ~= "sqlite" then
      it("survives a restart of the database server while the pool holds idle connections", function()
        local h = start()
        local q = { connection = { token = TOKEN }, table = "wide", limit = "3" }
        for _ = 1, 3 do assert.equals(200, post(h.port, "/data", q).status) end
        srv:restart()
        local r = post(h.port, "/data", q)
        assert.equals(200, r.status, r.body)
        assert.equals(4, #cjson.decode(r.body))
      end)
    else
      it("stops a LIKE over a large value within a second of the client leaving", function()
        -- one 12 MB value; `_` in the pattern makes the match try each place (O(n*m))
        H.sqlite(dir .. "/p.db", "CREATE TABLE IF NOT EXISTS blob_t (id INTEGER, v TEXT); "
          .. "INSERT INTO blob_t SELECT 1, replace(hex(zeroblob(6000000)), '0', 'a');")
        local h = start({ "--pool-size", "1" })
        local needle = ("a_"):rep(400) .. "b%"
        local c = send(h.port, { connection = { token = TOKEN }, table = "blob_t", select = { "id" },
          filter = { ["=%v"] = "%" .. needle } })
        socket.sleep(0.5)
        local t0 = socket.gettime()
        assert.equals(200, post(h.port, "/check", { connection = { token = TOKEN } }, 5).status)
        assert.is_true(socket.gettime() - t0 < 1, "/check waited for the LIKE")
        c:close()
        t0 = socket.gettime()
        local r = post(h.port, "/data", { connection = { token = TOKEN }, table = "wide", limit = "1" }, 10)
        assert.equals(200, r.status, r.body)
        assert.is_true(socket.gettime() - t0 < 1.5, "the LIKE held the only connection "
          .. (socket.gettime() - t0) .. " s after the client left")
      end)
    end

    it("keeps 15 stalled readers of an 8 MB row under 64 MiB, and falls back when they go", function()
      if os.getenv("BIC_SANITIZE") == "1" then
        return pending("SKIPPED: RSS is not measured under the sanitizers (their shadow memory)")
      end
      local big = ("x"):rep(8 * 1024 * 1024)
      if engine == "sqlite" then
        H.sqlite(dir .. "/p.db", "CREATE TABLE IF NOT EXISTS huge (id INTEGER, v TEXT); DELETE FROM huge; "
          .. "INSERT INTO huge VALUES (1, replace(hex(zeroblob(4194304)), '0', 'x'));")
      elseif engine == "postgresql" then
        srv:admin("CREATE TABLE IF NOT EXISTS huge (id int, v text); TRUNCATE huge; "
          .. "INSERT INTO huge VALUES (1, repeat('x', 8388608)); GRANT SELECT ON huge TO bic_ro;")
      elseif engine == "clickhouse" then
        srv:admin({ "DROP TABLE IF EXISTS huge", "CREATE TABLE huge (id Int32, v String) ENGINE = Memory",
          "INSERT INTO huge SELECT 1, arrayStringConcat(arrayMap(i -> 'xxxxxxxx', range(1048576)))" })
      else
        srv:admin("SET GLOBAL max_allowed_packet = 67108864;")
        srv:admin("CREATE TABLE IF NOT EXISTS huge (id int, v longtext); TRUNCATE huge; "
          .. "INSERT INTO huge VALUES (1, REPEAT('x', 8388608));")
      end
      local h = start()
      local worker = worker_of(h)
      -- one reader first: the row as it is served
      local r = post(h.port, "/data", { connection = { token = TOKEN }, table = "huge" }, 60)
      assert.equals(200, r.status)
      assert.equals('[["id","v"],[1,"' .. big .. '"]]', r.body)
      r = nil -- luacheck: ignore 311
      collectgarbage()
      local before = rss_kib(worker)
      local conns = {}
      for i = 1, 15 do
        local c = socket.tcp()
        assert(c:connect("127.0.0.1", h.port))
        c:setoption("keepalive", false)
        local text = form({ connection = { token = TOKEN }, table = "huge" })
        c:send("POST /data HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
          .. "Content-Length: " .. #text .. "\r\n\r\n" .. text)
        conns[i] = c -- never read
      end
      socket.sleep(3)
      -- the worker's own memory: VmRSS also counts about 10 MiB of library pages
      -- (libcrypto, gnutls, krb5 through libpq and libcurl), which every worker
      -- shares and no answer holds; a budget that did not bound the stalled
      -- answers would hold 15 x 8 MiB more than before
      local stalled, stalled_rss = rss_kib(worker, "RssAnon"), rss_kib(worker)
      assert.is_true(stalled < 64 * 1024, ("the worker holds %d KiB of its own (VmRSS %d KiB) with 15 stalled "
        .. "readers (VmRSS %d KiB before)"):format(stalled, stalled_rss, before))
      for _, c in ipairs(conns) do c:close() end
      -- they are gone: the worker falls back and answers again
      local back
      for _ = 1, 100 do
        socket.sleep(0.1)
        back = rss_kib(worker)
        if back < before + 16 * 1024 then break end
      end
      assert.is_true(back < before + 16 * 1024, ("the worker stays at %d KiB after the readers left (%d KiB "
        .. "before)"):format(back, before))
      assert.equals(200, post(h.port, "/data", { connection = { token = TOKEN }, table = "huge" }, 60).status)
    end)
  end)
end

describe("the slow-reader rule", function()
  if not H.have_sqlite3() then return it("needs sqlite3", function() pending("SKIPPED: no sqlite3 command") end) end
  local dir, h
  setup(function()
    dir = H.tmpdir()
    H.sqlite(dir .. "/s.db", TABLES.sqlite:gsub("i < " .. ROWS, "i < " .. 10 * ROWS))
    h = S.start(S.serve_command({ "sqlite://" .. dir .. "/s.db", "--listen", "127.0.0.1:0", "--workers", "1",
      "--timeout", "3", "--answer-timeout", "8" }), { BICONNECTOR_TOKEN = TOKEN })
  end)
  teardown(function() H.stop(h, dir) end)

  -- Reads the answer on c, `size` bytes every `pause` seconds (`fast_after`: then
  -- as fast as it comes); -> the raw answer, the seconds it took.
  local function read_paced(c, size, pause, fast_after)
    local parts, t0 = {}, socket.gettime()
    c:settimeout(1)
    while true do
      local fast = fast_after and socket.gettime() - t0 > fast_after
      local data, err, partial = c:receive(fast and 1048576 or size)
      data = data or partial
      if data and #data > 0 then parts[#parts + 1] = data end
      if err == "closed" then break end
      if not fast then socket.sleep(pause) end
      assert(socket.gettime() - t0 < 90, "no end within 90 s")
    end
    return table.concat(parts), socket.gettime() - t0
  end

  it("never cuts an answer whose client keeps taking bytes, however long it takes past --timeout", function()
    local c = send(h.port, { connection = { token = TOKEN }, table = "wide" })
    local raw, took = read_paced(c, 1048576, 0.4)
    c:close()
    assert.equals(10 * ROWS + 1, #cjson.decode(body_of(raw)))
    assert.is_true(took > 3, "the paced read took " .. took .. " s: it must outlast --timeout (3 s)")
  end)

  it("cuts an answer whose client takes nothing for --timeout, and logs end=timeout", function()
    local c = send(h.port, { connection = { token = TOKEN }, table = "wide" })
    assert(c:receive(100000))
    socket.sleep(6) -- takes nothing
    local raw = read_paced(c, 1048576, 0)
    c:close()
    assert.is_true(#raw < 10 * ROWS * 40, "the stalled answer went on: " .. #raw .. " bytes more")
    local log = S.stderr(h)
    assert.matches("table=wide status=200 rows=%d+ bytes=%d+ ms=[%d.]+ end=timeout", log)
  end)

  it("cuts an answer past --answer-timeout, however it moves, so that it cannot look whole", function()
    local c = send(h.port, { connection = { token = TOKEN }, table = "wide" })
    local raw = read_paced(c, 200000, 0.5, 10)
    c:close()
    local rest = raw:match("\r\n\r\n(.*)$")
    assert.is_true(S.dechunk(rest) == nil, "an answer cut at its deadline must not look whole")
    assert.is_true(#raw < 10 * ROWS * 40, "the cut answer is " .. #raw .. " bytes")
    assert.matches("deadline %(8 s%)", S.stderr(h))
  end)
end)

describe("forking while a database job's thread runs", function()
  -- A worker forked while a job's thread is inside SQLite (finishing a statement,
  -- freeing its memory) inherited SQLite's allocator lock held by a thread it does
  -- not have: its first query hung for good. core.process.fork waits first (at most
  -- 5 s) for those threads to end (core.sql.settle).
  local core = require "biconnector.core"
  local dir, pool
  local skip = not H.have_sqlite3("sql_pool_spec (fork)")
  setup(function()
    if skip then return end
    dir = H.tmpdir()
    assert(H.sh("sqlite3 " .. H.q(dir .. "/f.db") .. " 'CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);'"))
    pool = core.sql.pool("sqlite", { path = dir .. "/f.db" }, { size = 2 })
  end)
  teardown(function()
    if pool then pool:close() end
    if dir then H.rmdir(dir) end
  end)

  it("core.process.fork returns once no job's thread is inside the database library", function()
    if skip then return pending(H.NO_SQLITE3) end
    local job = core.sql.job(pool, SLOW.sqlite:gsub("2000000000", "1000000"), {}, { mode = "fetch" })
    assert.equals(1, core.sql.settle(0), "the job's thread runs its statement")
    local pid = assert(core.process.fork())
    if pid == 0 then core.process.exit(0) end
    assert.equals(0, core.sql.settle(0), "fork waited for the job's thread to end")
    assert.same({ pid, "exit", 0 }, { core.process.wait(pid, true) })
    assert.equals("done", job:state())
    job:close()
  end)
end)
