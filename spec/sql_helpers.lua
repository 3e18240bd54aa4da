-- Helpers for the SQL specs: the sample database (examples/sample/gen.lua piped
-- into the sqlite3 tool) in a temporary directory; shell commands and
-- directories are spec/helpers.lua's.
local helpers = require "helpers"

local H = {}

H.sh, H.q, H.rmdir = helpers.sh, helpers.q, helpers.rmdir

-- Whether the sqlite3 tool is here; prints a loud skip line when it is not.
function H.have_sqlite3(what)
  if H.sh("command -v sqlite3 >/dev/null 2>&1") then return true end
  io.stderr:write("\n*** SKIPPED: " .. (what or "SQL spec") .. " needs the sqlite3 command-line tool\n")
  return false
end

-- What a spec's pending() says when the sqlite3 tool is missing.
H.NO_SQLITE3 = "SKIPPED: the sqlite3 command-line tool is missing"

function H.tmpdir() return helpers.tmpdir("sql") end

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
-- handle, if any) and removes its temporary directory.
function H.stop(h, dir)
  if h then require("serve_helpers").stop(h) end
  H.rmdir(dir)
end

-- Runs SQL text through the sqlite3 tool on db (creating it).
function H.sqlite(db, sql)
  local p = assert(io.popen("sqlite3 -bail " .. H.q(db) .. " >/dev/null", "w"))
  p:write(sql)
  local ok = p:close()
  assert(ok == true or ok == 0, "sqlite3 failed on " .. db)
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
function H.serve_db(srv, token)
  local db, S = require "dbservers", require "serve_helpers"
  local url = srv:url():gsub(":" .. db.RO_PASSWORD:gsub("%p", "%%%0") .. "@", "@")
  local h = S.start(S.serve_command({ url, "--listen", "127.0.0.1:0" }),
    { BICONNECTOR_TOKEN = token, BICONNECTOR_DB_PASSWORD = db.RO_PASSWORD })
  return h, url
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

-- Absolute path of the project (a file URL needs one).
function H.abs(path)
  if path:sub(1, 1) == "/" then return path end
  local pwd = os.getenv("PWD") or "."
  return pwd .. "/" .. path
end

return H
