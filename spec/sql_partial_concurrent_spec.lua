-- Partly pushed-down /data answers side by side on one worker (docs/database.md,
-- "Pushdown", "Falling back, per node"): a `fields` override retypes the
-- integer column `code` as a string, so a condition on it is matched in
-- memory (as strings: "10" < "5") while the exact items of a top-level AND
-- still go to SQL, and an OR naming it is matched in memory entirely. Eight
-- clients POST /data at once to `biconnector serve CONNECTOR --workers 1`, and
-- then to the same connector under nginx (one worker, lua_check_client_abort
-- on: spec/ngx_helpers.lua; nginx loads the LuaJIT build of the core), each
-- with another filter (fully pushed, partly pushed, in memory; with and
-- without `limit` and `select`), half of them reading a little at a time
-- through a small receive buffer, so that the worker's answers interleave;
-- each answer is whole and holds exactly the rows filter.match selects over
-- the served values of the whole table (as multisets: no order is
-- documented; under a limit, `limit` rows of those). On SQLite and on the PostgreSQL and MariaDB servers the spec starts
-- (spec/dbservers.lua); each request's SQL (the source's `trace`) shows which
-- part of its filter went to SQL.
local helpers = require "helpers"
local db = require "dbservers"
local S = require "serve_helpers"
local H = require "sql_helpers"
local cases = require "sql_filter_cases"
local filter = require "biconnector.filter"
local cjson = require "cjson"
local N = require "ngx_helpers"

local TOKEN = "partial-token"
local ROWS = 4000
local ALPHA = ("abcdefghijklmnopqrstuvwxyz"):rep(2)

-- t(id, k, code, s, x): k is NULL every 13th row; s is 30 to 60 bytes
local TABLES = {
  sqlite = ([[CREATE TABLE t (id INTEGER, k INTEGER, code INTEGER, s TEXT, x REAL);
    WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < %d)
    INSERT INTO t SELECT i, CASE WHEN i %% 13 = 0 THEN NULL ELSE i %% 10 END, i %% 97,
      printf('row-%%06d-%%s', i, substr('%s', 1 + i %% 26)), i * 0.25 FROM g;]]):format(ROWS, ALPHA),
  postgresql = ([[CREATE TABLE t AS SELECT g AS id, (CASE WHEN g %% 13 = 0 THEN NULL ELSE g %% 10 END) AS k,
      g %% 97 AS code, 'row-' || lpad(g::text, 6, '0') || '-' || substr('%s', 1 + g %% 26) AS s,
      g * 0.25::float8 AS x FROM generate_series(1, %d) g;
    GRANT SELECT ON t TO bic_ro;]]):format(ALPHA, ROWS),
  mysql = ([[CREATE TABLE t AS SELECT CAST(seq AS SIGNED) AS id,
      CAST(CASE WHEN seq %% 13 = 0 THEN NULL ELSE seq %% 10 END AS SIGNED) AS k,
      CAST(seq %% 97 AS SIGNED) AS code, CONCAT('row-', LPAD(seq, 6, '0'), '-', SUBSTR('%s', 1 + seq %% 26)) AS s,
      CAST(seq * 0.25 AS DOUBLE) AS x FROM seq_1_to_%d;]]):format(ALPHA, ROWS),
}

-- The requests, and what their SQL must be: "all" (the whole filter in the
-- WHERE, the limit a LIMIT), "part" (a WHERE without `code`, no LIMIT),
-- "memory" (no WHERE, no LIMIT). `slow`: read 1024 bytes at a time with pauses.
local REQUESTS = {
  { plan = "all", slow = true, select = { "id", "s", "x" },
    filter = { [">=id"] = "200", ["<id"] = "3200", ["k"] = { "1", "4", "7" } } },
  { plan = "all", limit = 25, select = { "s", "id" }, filter = { ["%s"] = "-abc" } },
  { plan = "part", slow = true, filter = { [">id"] = "500", [">code"] = "5" } },
  { plan = "part", limit = 120, select = { "code", "k", "id" },
    filter = { ["<=id"] = "3500", ["%code"] = "1", ["!k"] = "3" } },
  { plan = "memory", slow = true, filter = { LOGIC = "OR", ["=code"] = "7", ["<x"] = "30" } },
  { plan = "part", filter = { [">=id"] = "1000",
    ["0"] = { LOGIC = "OR", ["@code"] = { "3", "30", "33" }, ["=k"] = cjson.null } } },
  { plan = "memory", limit = 60, select = { "id", "code" },
    filter = { LOGIC = "OR", ["<code"] = "2", [">=id"] = "3990" } },
  { plan = "none", slow = true, select = { "code", "x" } },
}

local function body_for(req)
  return { connection = { token = TOKEN }, table = "t", filter = req.filter, select = req.select,
    limit = req.limit and tostring(req.limit) }
end

-- A POST /data of req on a socket of its own, sent now and read later; a slow
-- reader's socket (unless `fast`) takes a small receive buffer, so that the
-- server's writes to it block soon.
local function send(port, base, req, fast)
  local c = helpers.connect(port, 10)
  if req.slow and not fast then c:setoption("recv-buffer-size", 16384) end
  local text = cjson.encode(body_for(req))
  assert(c:send("POST " .. base .. "data HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    .. "Content-Type: application/json\r\nContent-Length: " .. #text .. "\r\n\r\n" .. text))
  return c
end

-- Reads the answers of all sockets, round robin: a slow one (unless `fast`)
-- 1024 bytes at a time, at most every 5 ms; -> the raw answers, and for each
-- the step at which its first bytes came and the step at which it ended.
local function read_all(conns, reqs, fast)
  local slow = {}
  for i, req in ipairs(reqs) do slow[i] = req.slow and not fast end
  return S.read_interleaved(conns, { slow = slow, slow_bytes = 1024, pause = 0.005, timeout = 60 })
end

-- The body of a raw 200 answer, whole (its chunks joined): -> body, number of chunks.
local function body_of(raw, label)
  local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
  assert(head, label .. ": no HTTP answer: " .. raw:sub(1, 100))
  assert.matches("^HTTP/1.1 200", head, nil, label .. ": " .. raw:sub(1, 300))
  if not head:lower():find("\r\ntransfer%-encoding: chunked") then
    -- a small answer goes whole, with its length
    local length = tonumber(head:lower():match("\r\ncontent%-length: (%d+)"))
    assert.equals(length, #rest, label .. ": the body's length")
    return rest, 1
  end
  local body, err = S.dechunk(rest)
  assert(body, label .. ": the chunked body is cut: " .. tostring(err))
  local chunks = 0
  for _ in rest:gmatch("\r\n%x+\r\n") do chunks = chunks + 1 end
  return body, chunks + 1
end

local function label_of(i, req)
  return ("request %d (%s%s%s): %s"):format(i, req.plan, req.limit and ", limit " .. req.limit or "",
    req.slow and ", slow" or "", cjson.encode(req.filter or {}))
end

-- Each row as JSON text (the selected fields, in order), sorted.
local function sorted_texts(rows, codes)
  local out = {}
  for i, r in ipairs(rows) do
    local a = {}
    for j, c in ipairs(codes) do a[j] = r[c] end
    out[i] = cjson.encode(a)
  end
  table.sort(out)
  return out
end

-- Checks one answer's body against the oracle: the rows filter.match keeps of
-- `all` (the whole table as served, maps by code), projected on the select.
local function check_answer(req, body, all, fields, codes, label)
  local ok, rows = pcall(cjson.decode, body)
  assert(ok, label .. ": not JSON (" .. tostring(rows) .. "): ..." .. body:sub(-80))
  local select = req.select or codes
  assert.same(select, rows[1], label .. ": the header row")
  local want = all
  if req.filter then
    local ast, err = filter.parse(cjson.decode(cjson.encode(req.filter)), fields)
    assert(ast, label .. ": " .. tostring(err))
    want = {}
    for _, m in ipairs(all) do if filter.match(ast, m) then want[#want + 1] = m end end
    -- the filter selects a proper part of the table, larger than its limit
    assert.is_true(#want > 0 and #want < #all, label .. ": selects " .. #want .. " rows")
    if req.limit then assert.is_true(#want > req.limit, label .. ": selects " .. #want .. " rows") end
  end
  want = sorted_texts(want, select)
  local got = sorted_texts(cases.as_maps(rows, select), select)
  if not req.limit then
    assert.equals(#want, #got, label .. ": the number of rows")
    for i = 1, #want do
      if want[i] ~= got[i] then error(label .. ": row " .. i .. " of the sorted answer is " .. got[i]
        .. ", the oracle's " .. want[i]) end
    end
    return
  end
  -- under a limit: `limit` rows, each one of the oracle's (as a multiset)
  assert.equals(req.limit, #got, label .. ": the number of rows")
  local left = {}
  for _, w in ipairs(want) do left[w] = (left[w] or 0) + 1 end
  for _, g in ipairs(got) do
    assert.is_true((left[g] or 0) > 0, label .. ": a row the filter does not select: " .. g)
    left[g] = left[g] - 1
  end
end

-- The SQL line the source traced for one request must fit req.plan.
local function check_plan(req, sql, quoted_code, label)
  assert(sql, label .. ": no SQL traced")
  local where = sql:match(" WHERE (.*)$")
  local limited = sql:find(" LIMIT ", 1, true) ~= nil
  if req.plan == "all" then
    assert(where, label .. ": no WHERE in " .. sql)
    assert.equals(req.limit ~= nil, limited, label .. ": " .. sql)
  elseif req.plan == "part" then
    assert(where, label .. ": no WHERE in " .. sql)
    assert.is_nil(where:find(quoted_code, 1, true), label .. ": code in the WHERE of " .. sql)
    assert.is_false(limited, label .. ": " .. sql)
  else
    assert.is_nil(where, label .. ": a WHERE in " .. sql)
    assert.is_false(limited, label .. ": " .. sql)
  end
end

-- The scenario against a server on port whose endpoints are at base ("/" or
-- "/loc/"); log() -> what the server wrote so far (where the traced SQL goes).
local function scenario(engine, port, base, log)
  local function post(path, body)
    body.connection = { token = TOKEN }
    return S.post_json(port, base .. path, body)
  end
  local status, text = post("table_description", { table = "t" })
  assert.equals(200, status, text)
  local fields, codes = cjson.decode(text), {}
  for i, fd in ipairs(fields) do codes[i] = fd.code end
  assert.same({ "id", "k", "code", "s", "x" }, codes)
  assert.equals("string", fields[3].type, "the fields override retypes code")
  assert.equals("int", fields[1].type)
  -- the whole table as served: the oracle's input
  status, text = post("data", { table = "t" })
  assert.equals(200, status, text)
  local all = cases.as_maps(cjson.decode(text), codes)
  assert.equals(ROWS, #all)
  assert.equals("7", all[7].code, "code is served as a string")
  local quoted_code = engine == "mysql" and "`code`" or '"code"'

  -- each request alone first: its SQL shows where its filter runs; its answer is the oracle's
  for i, req in ipairs(REQUESTS) do
    local label = engine .. " " .. label_of(i, req)
    local before = #log()
    local raw = read_all({ send(port, base, req, true) }, { req }, true)[1]
    local body = body_of(raw, label)
    check_answer(req, body, all, fields, codes, label)
    local traced = log():sub(before + 1)
    local sqls = {}
    for line in traced:gmatch("BIC%-SQL: ([^\n]*)\n") do sqls[#sqls + 1] = line end
    assert.equals(1, #sqls, label .. ": one SQL statement, traced: " .. traced)
    check_plan(req, sqls[1], quoted_code, label)
  end

  -- then all at once, twice: the answers interleave on the one worker
  for round = 1, 2 do
    local conns = {}
    for i, req in ipairs(REQUESTS) do conns[i] = send(port, base, req) end
    local raws, first, ended = read_all(conns, REQUESTS)
    -- every answer had begun before the last slow one ended
    local last_slow_end, last_start = 0, 0
    for i, req in ipairs(REQUESTS) do
      if req.slow then last_slow_end = math.max(last_slow_end, ended[i]) end
      last_start = math.max(last_start, first[i])
    end
    assert.is_true(last_start < last_slow_end, "the answers did not run side by side")
    local many = 0
    for i, req in ipairs(REQUESTS) do
      local label = ("%s round %d %s"):format(engine, round, label_of(i, req))
      local body, chunks = body_of(raws[i], label)
      if chunks >= 10 then many = many + 1 end
      check_answer(req, body, all, fields, codes, label)
    end
    assert.is_true(many >= 3, "at least three answers span ten chunks or more: " .. many)
  end
  -- the worker still answers
  assert.equals(200, (post("check", {})))
end

for _, engine in ipairs({ "sqlite", "postgresql", "mysql" }) do
  describe("partly pushed-down answers side by side, " .. engine .. ", one worker", function()
    if H.skip_without(engine, "spec/sql_partial_concurrent_spec.lua") then return end
    local srv, dir, file, h, prefix, nginx

    setup(function()
      dir = H.tmpdir()
      local url
      if engine == "sqlite" then
        H.sqlite(dir .. "/p.db", TABLES.sqlite)
        url = "sqlite://" .. dir .. "/p.db"
      else
        srv = db.start(engine)
        srv:admin(TABLES[engine])
        url = srv:url()
      end
      file = dir .. "/partial.lua"
      local f = assert(io.open(file, "w"))
      f:write(([[
return require("biconnector.sql").connector({ url = %q, token = %q,
  fields = { t = { code = { type = "string" } } }, chunk_size = 4096,
  trace = function(sql) io.stderr:write("BIC-SQL: ", (sql:gsub("%%s+", " ")), "\n") end })
]]):format(url, TOKEN))
      f:close()
    end)
    teardown(function()
      if h then S.stop(h) end
      if nginx then N.stop(nginx) end
      if prefix then N.remove_prefix(prefix) end
      if srv then srv:stop() end
      if dir then H.rmdir(dir) end
    end)

    it("biconnector serve --workers 1: eight interleaved answers, fully, partly and not pushed down, "
      .. "each exactly the oracle's rows", function()
      h = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0", "--workers", "1" }))
      scenario(engine, h.port, "/", function() return S.stderr(h) end)
    end)

    it("nginx, one worker: the same", function()
      local missing = N.missing()
      if missing then return pending(N.skipped("sql_partial_concurrent_spec", missing)) end
      prefix = N.make_prefix()
      local port = helpers.free_port()
      nginx = N.start(prefix, N.conf(prefix, {
        "  access_log off;",
        "  server {",
        "    listen 127.0.0.1:" .. port .. ";",
        ("    location /partial/ { content_by_lua_block { require('biconnector.ngx').serve(%q) } }"):format(file),
        "  }",
      }), port)
      scenario(engine, port, "/partial/", function() return N.read(nginx.error_log) end)
    end)
  end)
end
