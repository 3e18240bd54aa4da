-- Workers forked right after the master's database jobs (the schema read at
-- start): a job's thread still ran its thread-exit handlers after it was
-- counted out, OpenSSL's among them when libpq had used it (SCRAM's nonce), and
-- a worker forked then inherited an OpenSSL lock held forever: its first
-- PostgreSQL connection hung in RAND_bytes and the request got no answer
-- (ci32, ci35: acceptance_sql_spec under AddressSanitizer, which slows the
-- exit; by hand about one server start in 20 with the cores busy). The jobs'
-- threads are now joined before a fork (src/sql_job.c, bic_sql_settle). A race:
-- this spec starts the server many times and asks each start's workers for
-- answers that need a new connection; it cannot fail every time the bug is
-- there, but it did here, and every start must answer.
local H = require "sql_helpers"
local S = require "serve_helpers"

local TOKEN = "fork-token-1"
local ROUNDS = tonumber(os.getenv("BIC_FORK_ROUNDS") or "") or 25

describe("serve postgresql:// started again and again", function()
  if H.skip_without("postgresql", "spec/sql_fork_spec.lua") then return end
  local db = require "dbservers"
  local srv
  setup(function()
    srv = db.start("postgresql")
    srv:admin([[
      CREATE TABLE t (id int);
      INSERT INTO t VALUES (1), (2);
      GRANT SELECT ON t TO bic_ro;
    ]])
  end)
  teardown(function()
    if srv then srv:stop() end
  end)

  it("answers the first requests of its freshly forked workers, every time (" .. ROUNDS .. " starts)", function()
    for round = 1, ROUNDS do
      local h = H.serve_db(srv, TOKEN)
      local ok, err = pcall(function()
        -- (each worker opens its own connection for its first job; the requests land on either)
        for _, step in ipairs({ { "/table_list", "searchString=" }, { "/data", "table=t" }, { "/data", "table=t" } }) do
          local r, why = S.request(h.port, "POST", step[1], "connection%5Btoken%5D=" .. TOKEN .. "&" .. step[2],
            { ["Content-Type"] = "application/x-www-form-urlencoded" }, 20)
          assert(r and r.status == 200, ("start %d, %s: %s\nthe server's log:\n%s"):format(round, step[1],
            r and (r.status .. " " .. tostring(r.body)) or tostring(why), S.stderr(h):sub(-2000)))
        end
      end)
      S.stop(h)
      assert(ok, err)
    end
  end)
end)
