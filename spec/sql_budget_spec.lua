-- The answer budget with rows too large to share it (docs/database.md, "Answer
-- memory has a budget"): two answers on one worker whose rows each take more
-- than a quarter of --answer-budget held, between two steps, the last row each
-- had read and waited for room that the other held: neither went on until
-- --answer-timeout cut both. Both must now end, whole, well before it, while
-- their clients read (steadily, or one slowly).
local S = require "serve_helpers"
local H = require "sql_helpers"
local db = require "dbservers"
local socket = require "socket"

local TOKEN = "budget-token"
-- A sanitized build under the whole suite's load streams the 38 MB of a slow
-- reader's answer in more than 20 s (ci26 cut one there), and, with other jobs
-- on the machine, may come near 60 s (ci29 cut one after its last data chunk,
-- as a deadline cuts); the case this spec guards against (both answers wait
-- until --answer-timeout) fails at any value.
local ANSWER_TIMEOUT = require("helpers").sanitized and 120 or 20
local MIB = 1024 * 1024

-- A statement that runs for minutes before its first row, as a query table.
local SLOW = {
  sqlite = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) "
    .. "SELECT count(*) AS n FROM c",
  postgresql = "SELECT pg_sleep(120)::text AS n",
}

-- A table's rows as the SQL that makes them: id, and a value of `bytes` times
-- the letter of that id (a, b, c...), bytes even.
local function rows_sql(engine, name, sizes)
  local out = { ("CREATE TABLE %s (id INTEGER, v TEXT);"):format(name) }
  for id, bytes in ipairs(sizes) do
    local letter = 96 + (id - 1) % 26 + 1
    out[#out + 1] = engine == "sqlite"
      and ("INSERT INTO %s VALUES (%d, replace(hex(zeroblob(%d)), '0', char(%d)));"):format(
        name, id, math.floor(bytes / 2), letter)
      or ("INSERT INTO %s VALUES (%d, repeat(chr(%d), %d));"):format(name, id, letter, bytes)
  end
  if engine == "postgresql" then out[#out + 1] = ("GRANT SELECT ON %s TO bic_ro;"):format(name) end
  return table.concat(out, "\n")
end

-- The /data body those rows make.
local function rows_json(sizes)
  local out = { '[["id","v"]' }
  for id, bytes in ipairs(sizes) do
    out[#out + 1] = (',[%d,"%s"]'):format(id, string.char(96 + (id - 1) % 26 + 1):rep(bytes))
  end
  out[#out + 1] = "]"
  return table.concat(out)
end

-- A /data request for tbl on a socket of its own, sent now and read later.
local function send(port, tbl)
  local c = assert(socket.connect("127.0.0.1", port))
  local text = "connection%5Btoken%5D=" .. TOKEN .. "&table=" .. tbl
  assert(c:send("POST /data HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    .. "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #text .. "\r\n\r\n" .. text))
  return c
end

-- The body of a raw answer; fails on anything but a 200 whose chunks are whole.
local function body_of(raw, who)
  local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
  assert(head, who .. ": no HTTP answer: " .. raw:sub(1, 100))
  assert.matches("^HTTP/1.1 200", head, who)
  assert.matches("transfer%-encoding: chunked", head:lower(), who)
  local body, err = S.dechunk(rest)
  assert(body, who .. ": the answer was cut (" .. tostring(err) .. ") after " .. #raw .. " bytes")
  return body
end

-- Two clients read /data of tbl at once (`slow`: the indexes read slowly);
-- both bodies must be whole and right, before --answer-timeout. -> the seconds
-- the two answers took.
local function two_answers(h, tbl, sizes, slow)
  local t0 = socket.gettime()
  local conns = { send(h.port, tbl), send(h.port, tbl) }
  local raw = S.read_interleaved(conns, { slow = slow, slow_bytes = 512 * 1024, pause = 0.05,
    timeout = ANSWER_TIMEOUT + 10 })
  local took = socket.gettime() - t0
  local want = rows_json(sizes)
  for i = 1, 2 do
    -- the server's log in the message: what ended an answer that came cut
    local body = body_of(raw[i], "answer " .. i .. " (took " .. ("%.1f"):format(socket.gettime() - t0)
      .. " s; server log: " .. S.stderr(h):sub(-2000) .. ")")
    assert.equals(#want, #body, "answer " .. i .. " has the wrong length")
    assert.is_true(body == want, "answer " .. i .. " has the wrong rows")
  end
  assert.is_true(took < ANSWER_TIMEOUT - 2, ("the two answers took %.1f s (--answer-timeout %d s)"):format(
    took, ANSWER_TIMEOUT))
  assert.is_nil(S.stderr(h):find("deadline", 1, true), "an answer met its deadline:\n" .. S.stderr(h))
  return took
end

for _, engine in ipairs({ "sqlite", "postgresql" }) do
  describe(engine .. ": two answers of rows over a quarter of the answer budget on one worker", function()
    local why = engine == "sqlite" and H.missing_sqlite3() or (engine ~= "sqlite" and db.missing(engine))
    if why then
      local msg = engine == "sqlite" and H.NO_SQLITE3 or db.skip(engine, why)
      return it("runs against " .. engine, function() pending(msg) end)
    end
    -- big: four rows of 9.5 MiB (over a quarter of the 32 MiB budget, under a
    -- third); grows: 200 small rows (the first steps of both answers learn rows
    -- of 1 KiB), then three of 12 MiB (over a third), so that both answers are
    -- under way when the large rows come.
    local BIG = { math.floor(9.5 * MIB), math.floor(9.5 * MIB), math.floor(9.5 * MIB), math.floor(9.5 * MIB) }
    local GROWS = {}
    for i = 1, 200 do GROWS[i] = 1024 end
    for i = 201, 203 do GROWS[i] = 12 * MIB end
    local dir, srv, url, env, h
    setup(function()
      dir = H.tmpdir()
      local sql = rows_sql(engine, "big", BIG) .. "\n" .. rows_sql(engine, "grows", GROWS)
      if engine == "sqlite" then
        H.sqlite(dir .. "/b.db", sql)
        url, env = "sqlite://" .. dir .. "/b.db", { BICONNECTOR_TOKEN = TOKEN }
      else
        srv = db.start(engine)
        srv:admin(sql)
        url = srv:url():gsub(":" .. db.RO_PASSWORD:gsub("%p", "%%%0") .. "@", "@")
        env = { BICONNECTOR_TOKEN = TOKEN, BICONNECTOR_DB_PASSWORD = db.RO_PASSWORD }
      end
    end)
    teardown(function() H.stop(nil, srv or dir) if srv then H.rmdir(dir) end end)
    -- a worker of its own for each case: its tables' row sizes are not known yet
    before_each(function()
      h = S.start(S.serve_command({ url, "--listen", "127.0.0.1:0", "--workers", "1",
        "--answer-timeout", tostring(ANSWER_TIMEOUT) }), env)
    end)
    after_each(function() S.stop(h) end)

    it("both end whole, before --answer-timeout, with two steady readers", function()
      two_answers(h, "big", BIG)
    end)

    it("both end whole with rows over a third of the budget that come after small ones", function()
      two_answers(h, "grows", GROWS)
    end)

    it("both end whole with a slow reader beside a steady one", function()
      two_answers(h, "big", BIG, { [1] = true })
    end)

    it("both end whole while a slow statement of a third answer runs beside them", function()
      -- the slow statement's step is under way (reserved) the whole time: the
      -- two answers must not wait for it, it frees none of their room
      local file = dir .. "/slow.lua"
      local f = assert(io.open(file, "w"))
      f:write(("return require('biconnector.sql').connector({ url = %q, token = %q, queries = { slow = "
        .. "{ sql = %q } }, answer_timeout = %d })"):format(url, TOKEN, SLOW[engine], ANSWER_TIMEOUT))
      f:close()
      local hs = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "1" }), env)
      local slow
      finally(function() -- one finally per test: a second one replaces the first
        if slow then slow:close() end
        S.stop(hs)
      end)
      slow = send(hs.port, "slow")
      socket.sleep(0.5)
      two_answers(hs, "grows", GROWS)
    end)

    it("ends them one after the other on the same worker, again and again", function()
      -- the worker's budget is whole again after each pair: the next pair goes too
      for _ = 1, 2 do two_answers(h, "big", BIG) end
      two_answers(h, "grows", GROWS)
    end)
  end)
end
