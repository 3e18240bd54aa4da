-- Helpers for the SQL specs: the sample database (examples/sample/gen.lua piped
-- into the sqlite3 tool) in a temporary directory, and shell commands run
-- without a sanitizer's LD_PRELOAD.
local helpers = require "helpers"

local H = {}

H.CLEAN = "unset LD_PRELOAD; "

function H.sh(cmd)
  local ok = os.execute(H.CLEAN .. cmd)
  return ok == true or ok == 0
end

function H.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Whether the sqlite3 tool is here; prints a loud skip line when it is not.
function H.have_sqlite3(what)
  if H.sh("command -v sqlite3 >/dev/null 2>&1") then return true end
  io.stderr:write("\n*** SKIPPED: " .. (what or "SQL spec") .. " needs the sqlite3 command-line tool\n")
  return false
end

function H.tmpdir()
  local p = io.popen(H.CLEAN .. "mktemp -d")
  local d = p:read("*l")
  p:close()
  return d
end

function H.rmdir(dir)
  if dir and dir:match("^/tmp/") then H.sh("rm -rf " .. H.q(dir)) end
end

-- Runs SQL text through the sqlite3 tool on db (creating it).
function H.sqlite(db, sql)
  local p = assert(io.popen(H.CLEAN .. "sqlite3 -bail " .. H.q(db) .. " >/dev/null", "w"))
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
