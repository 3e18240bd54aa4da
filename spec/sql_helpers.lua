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

function H.tmpdir() return helpers.tmpdir("sql") end

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

-- Absolute path of the project (a file URL needs one).
function H.abs(path)
  if path:sub(1, 1) == "/" then return path end
  local pwd = os.getenv("PWD") or "."
  return pwd .. "/" .. path
end

return H
