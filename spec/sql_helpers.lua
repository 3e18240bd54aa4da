-- Helpers for the SQL specs: the sample database (examples/sample/gen.lua piped
-- into the sqlite3 tool) in a temporary directory; shell commands and
-- directories are spec/helpers.lua's.
local helpers = require "helpers"
local assert = require "luassert"

local H = {}

H.sh, H.q, H.rmdir = helpers.sh, helpers.q, helpers.rmdir

-- nil when the sqlite3 tool is here, else why it cannot be used.
function H.missing_sqlite3()
  if not H.sh("command -v sqlite3 >/dev/null 2>&1") then return "the sqlite3 command-line tool is missing" end
end

-- Whether the sqlite3 tool is here; prints a loud skip line when it is not.
function H.have_sqlite3(what)
  if not H.missing_sqlite3() then return true end
  io.stderr:write("\n*** SKIPPED: " .. (what or "SQL spec") .. " needs the sqlite3 command-line tool\n")
  return false
end

-- What a spec's pending() says when the sqlite3 tool is missing.
H.NO_SQLITE3 = "SKIPPED: the sqlite3 command-line tool is missing"

function H.tmpdir() return helpers.tmpdir("sql") end

-- In a describe: when what the engine's specs need is missing (the sqlite3
-- tool for "sqlite", else a server spec/dbservers.lua starts), says so on
-- stderr and registers a visible pending test in place of the describe's
-- tests -> true (the describe then returns); else false. what: the spec file.
--   if H.skip_without(engine, "spec/x_spec.lua") then return end
function H.skip_without(engine, what)
  -- busted's describe-level pending (a pending test named by the message): it
  -- and pending themselves live in the spec files' environment
  local busted = require "busted"
  if engine == "sqlite" then
    if H.have_sqlite3(what) then return false end
    busted.pending(H.NO_SQLITE3)
    return true
  end
  local db = require "dbservers"
  local why = db.missing(engine)
  if not why then return false end
  local msg = db.skip(engine, why)
  busted.pending(msg)
  return true
end

-- The MD5 sum of a file, in hex (to prove a database was never written).
function H.md5(path)
  return (helpers.first_line("md5sum " .. H.q(path)) or ""):match("^(%x+)")
end

-- Runs cmd: -> its exit status, its output (stdout and stderr together).
function H.run(cmd)
  local _, out, rc = helpers.run(cmd)
  return rc, out
end

-- A teardown's work: stops the server a setup started (a serve_helpers
-- handle, if any), then what it served: a temporary directory (removed) or a
-- database server of spec/dbservers.lua (stopped), if any.
function H.stop(h, what)
  if h then require("serve_helpers").stop(h) end
  if type(what) == "table" then what:stop() else H.rmdir(what) end
end

-- Runs SQL text through the sqlite3 tool on db (creating it).
function H.sqlite(db, sql)
  local p = assert(io.popen("sqlite3 -bail " .. H.q(db) .. " >/dev/null", "w"))
  p:write(sql)
  local ok = p:close()
  assert(ok == true or ok == 0, "sqlite3 failed on " .. db)
end

-- A SQLite file dir/name made of the SQL text, served by `biconnector serve
-- sqlite://` (one worker) with the token: -> the serve_helpers handle.
function H.serve_sqlite(dir, name, sql, token)
  local S = require "serve_helpers"
  H.sqlite(dir .. "/" .. name, sql)
  return S.start(S.serve_command({ "sqlite://" .. dir .. "/" .. name, "--listen", "127.0.0.1:0", "--workers", "1" }),
    { BICONNECTOR_TOKEN = token })
end

-- A form body POSTed as Bitrix24 sends it, with connection[token]=token
-- before form: -> the status and the JSON body decoded (or the raw body).
function H.post_form(port, path, form, token)
  local S, cjson = require "serve_helpers", require "cjson"
  local r = assert(S.request(port, "POST", path, "connection%5Btoken%5D=" .. token .. "&" .. form,
    { ["Content-Type"] = "application/x-www-form-urlencoded" }))
  local ok, decoded = pcall(cjson.decode, r.body)
  return r.status, ok and decoded or r.body
end

-- The sample database (as `make demo` builds it) at dir/sample.db; extra args
-- go to gen.lua (--orders N).
function H.sample(dir, args)
  local db = dir .. "/sample.db"
  local runtime = helpers.runtime
  assert(H.sh(("%s %s/examples/sample/gen.lua %s | sqlite3 -bail %s"):format(runtime, helpers.top, args or "",
    H.q(db))), "building the sample database failed")
  return db
end

-- `biconnector serve` of a database server's (spec/dbservers.lua) database
-- with the token, the password in the environment rather than in the URL
-- (which `ps` shows): -> the serve_helpers handle, the URL it serves.
function H.serve_db(srv, token, query)
  local db, S = require "dbservers", require "serve_helpers"
  local url = srv:url(nil, nil, nil, query):gsub(":" .. db.RO_PASSWORD:gsub("%p", "%%%0") .. "@", "@")
  local h = S.start(S.serve_command({ url, "--listen", "127.0.0.1:0" }),
    { BICONNECTOR_TOKEN = token, BICONNECTOR_DB_PASSWORD = db.RO_PASSWORD })
  return h, url
end

-- `biconnector serve` of srv's URL with the password in it (no auth), asked
-- one /check: -> its status and body, and what the server printed (stdout,
-- then stderr) before it was stopped.
function H.serve_with_password(srv)
  local S = require "serve_helpers"
  local h = S.start(S.serve_command({ srv:url(), "--listen", "127.0.0.1:0", "--no-auth" }))
  local out = S.stdout(h) .. S.stderr(h)
  local status, body = S.post_json(h.port, "/check", {})
  S.stop(h)
  return status, body, out
end

-- The check of a schemas=sales source on a database server whose schema (or
-- database) sales holds q1 (id, ü) with the rows (1, 'a') and (2, 'b'): the
-- table list (sorted) is `want`, sales.q1 is described, and a filter on it
-- is pushed down and selects ü of the second row.
function H.check_sales_q1(srv, want)
  local src = require("biconnector.sql").source({ url = srv:url(nil, nil, nil, "schemas=sales"), log = function() end })
  local codes = {}
  for _, t in ipairs(src:table_list()) do codes[#codes + 1] = t.code end
  table.sort(codes)
  assert.same(want, codes)
  local fields = assert(src:describe("sales.q1"))
  assert.same({ "id", "ü" }, { fields[1].code, fields[2].code })
  local rows, applied = src:data({ table = "sales.q1", select = { "ü" }, fields = fields,
    filter = require("biconnector.filter").parse({ [">id"] = 1 }, fields) })
  assert.is_true(applied.filter)
  local enc = require("biconnector.core").rows.new(fields, { 2 })
  repeat local _, done = rows:fill(enc, 65536) until done
  enc:finish()
  rows:close()
  assert.same({ { "ü" }, { "b" } }, require("cjson").decode(enc:take()))
  src:close()
end

-- `biconnector verify` against the server on port with the token, checking
-- the tables listed: -> its exit status, its output.
function H.verify(port, token, tables)
  local cmd = { helpers.runtime, "bin/biconnector verify", "http://127.0.0.1:" .. port, "--setting", H.q("token=" .. token) }
  for _, t in ipairs(tables) do cmd[#cmd + 1] = "--table " .. H.q(t) end
  return H.run(table.concat(cmd, " "))
end

-- `biconnector serve URL` when it should refuse to start: -> its exit status, its output.
function H.serve_refused(url)
  return H.run(("env BICONNECTOR_TOKEN=x %s bin/biconnector serve %s --listen 127.0.0.1:0")
    :format(helpers.runtime, H.q(url)))
end

---------------------------------------------------------------- filter.to_sql on luasql
-- luasql has no bound parameters, so the specs that run filter.to_sql's output
-- on it substitute each parameter into the SQL text as a quoted SQL literal
-- (strings with ' doubled, numbers with all 17 digits); the library itself
-- never does that.

-- v as a SQLite literal (NULL for null or nil).
function H.literal(v)
  local null = require("biconnector").null
  if v == null or v == nil then return "NULL" end
  if type(v) == "number" then
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  assert(type(v) == "string" and not v:find("%z"))
  return "'" .. v:gsub("'", "''") .. "'"
end

-- A SQLite database in memory (luasql) made by the statements (one
-- transaction): -> an object with ids(where, params, id_column), the ids of
-- table t's rows the WHERE clause selects (sorted), and close().
function H.memory_db(statements)
  local env = assert(require("luasql.sqlite3").sqlite3())
  local conn = assert(env:connect(":memory:"))
  assert(conn:execute("BEGIN"))
  for _, statement in ipairs(statements) do assert(conn:execute(statement)) end
  assert(conn:execute("COMMIT"))
  local mem = {}
  function mem.ids(where, params, id_column)
    local i = 0
    local sql = where:gsub("%?", function()
      i = i + 1
      return H.literal(params[i])
    end)
    assert.equal(#params, i)
    local cur = assert(conn:execute("SELECT " .. id_column .. " FROM t WHERE " .. sql .. " ORDER BY 1"))
    local ids, id = {}, cur:fetch()
    while id do
      ids[#ids + 1] = math.floor(tonumber(id))
      id = cur:fetch()
    end
    cur:close()
    return ids
  end
  function mem.close()
    conn:close()
    env:close()
  end
  return mem
end

-- The ids (field id_code) of the rows filter.match keeps, in row order.
function H.match_ids(ast, rows, id_code)
  local match = require("biconnector.filter").match
  local ids = {}
  for _, r in ipairs(rows) do
    if match(ast, r) then ids[#ids + 1] = r[id_code] end
  end
  return ids
end

-- Absolute path of the project (a file URL needs one).
function H.abs(path)
  if path:sub(1, 1) == "/" then return path end
  local pwd = os.getenv("PWD") or "."
  return pwd .. "/" .. path
end

return H
