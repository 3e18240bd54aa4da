-- A connector that runs a command while it serves a request, for
-- spec/cloexec_spec.lua: its one table lists the descriptors of the serving
-- process (the lines before "---") and of the command it spawned (after);
-- with CLOEXEC_DB=path, a SQLite database is open in the serving process meanwhile.
local biconnector = require "biconnector"

local LIST = "ls -l /proc/$PPID/fd; echo ---; ls -l /proc/self/fd"

return biconnector.connector {
  title = "close-on-exec fixture",
  settings = { { code = "token", name = "Token", type = "STRING" } },
  check = function(connection) return connection.token == "t0k3n", "wrong token" end,
  tables = { { code = "fds", title = "Descriptors" } },
  describe = { fds = { { code = "line", name = "Line", type = "string" } } },
  data = function()
    -- with CLOEXEC_DB set, a SQLite connection and a cursor are open meanwhile
    local db = os.getenv("CLOEXEC_DB")
    local conn, cursor
    if db then
      conn = assert(require("biconnector.core").sql.open("sqlite", { path = db }))
      cursor = assert(conn:query("SELECT id FROM t"))
      assert(cursor:fetch())
    end
    local p = assert(io.popen(LIST))
    local rows = {}
    for line in p:lines() do rows[#rows + 1] = { line } end
    p:close()
    if cursor then cursor:close() conn:close() end
    return rows
  end,
}
