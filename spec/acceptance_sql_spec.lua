-- Found by an acceptance test of `biconnector serve DATABASE-URL` on real
-- PostgreSQL, MariaDB and ClickHouse servers, played as Bitrix24 plays it
-- (protocol.md, sections 2 and 2.1) over loopback HTTP with form bodies:
-- each `describe` is one bug, checked on the server the spec starts.
local S = require "serve_helpers"
local H = require "sql_helpers"
local cjson = require "cjson"

local TOKEN = "acceptance-sql-token"

local function post(port, path, form)
  local status, body = H.post_form(port, path, form, TOKEN)
  assert.equals(200, status, type(body) == "string" and body or cjson.encode(body))
  return body
end

-- The first column of an urlData answer's rows.
local function ids(body)
  local out = {}
  for i = 2, #body do out[#out + 1] = body[i][1] end
  return out
end

-- A column whose type is a domain over a domain was described by the inner
-- domain's name, an unknown type: a `string` field served as text ("2",
-- "1.50"), its filters matched in memory. One level of domain was resolved,
-- two were not.
describe("PostgreSQL columns of domains over domains", function()
  if H.skip_without("postgresql", "spec/acceptance_sql_spec.lua") then return end
  local db = require "dbservers"
  local srv, h
  setup(function()
    srv = db.start("postgresql")
    srv:admin([[
      CREATE TYPE mood AS ENUM ('sad', 'ok');
      CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
      CREATE DOMAIN posint2 AS posint;
      CREATE DOMAIN money2 AS numeric(5,2);
      CREATE DOMAIN money3 AS money2;
      CREATE DOMAIN stamp AS timestamp(0);
      CREATE DOMAIN stamp2 AS stamp;
      CREATE DOMAIN day2 AS date;
      CREATE DOMAIN day3 AS day2;
      CREATE DOMAIN mood2 AS mood;
      CREATE DOMAIN mood3 AS mood2;
      CREATE DOMAIN ints AS integer[];
      CREATE DOMAIN ints2 AS ints;
      CREATE TABLE dom (id int, p posint2, m money3, s stamp2, d day3, e mood3, a ints2);
      INSERT INTO dom VALUES (1, 2, 1.5, '2024-01-01 10:00:00', '2024-01-01', 'ok', '{1,2}'),
        (2, 7, -3.25, '1969-07-20 20:17:40', '1969-07-20', 'sad', '{}'),
        (3, NULL, NULL, NULL, NULL, NULL, NULL);
      GRANT SELECT ON dom TO bic_ro;
    ]])
    h = H.serve_db(srv, TOKEN)
  end)
  teardown(function()
    if h then S.stop(h) end
    if srv then srv:stop() end
  end)

  it("describes them by the innermost base type and serves their values so", function()
    local types = {}
    for _, f in ipairs(post(h.port, "/table_description", "table=dom")) do types[f.code] = f.type end
    assert.same({ id = "int", p = "int", m = "double", s = "datetime", d = "date", e = "string", a = "string" }, types)
    assert.same({ { "id", "p", "m", "s", "d", "e", "a" },
      { 1, 2, 1.5, "2024-01-01 10:00:00", "2024-01-01", "ok", "{1,2}" },
      { 2, 7, -3.25, "1969-07-20 20:17:40", "1969-07-20", "sad", "{}" },
      { 3, cjson.null, cjson.null, cjson.null, cjson.null, cjson.null, cjson.null } },
      post(h.port, "/data", "table=dom"))
  end)

  it("filters them as their base types, as PostgreSQL selects", function()
    local cases = {
      { "filter[%3Ep]=5", "p > 5" },
      { "filter[p]=2", "p = 2" },
      { "filter[%3Cm]=0", "m < 0" },
      { "filter[m]=1.5", "m = 1.5" },
      { "filter[%3E%3Ds]=01.01.2000", "s >= '2000-01-01'" },
      { "filter[s]=2024-01-01T10:00:00", "s = '2024-01-01 10:00:00'" },
      { "filter[%3Cd]=1970-01-01", "d < '1970-01-01'" },
      { "filter[!e]=ok", "e IS NULL OR e::text <> 'ok'" },
      { "filter[%25e]=S", "e::text ILIKE '%s%'" },
      { "filter[a]={1,2}", "a::text = '{1,2}'" },
      { "filter[p]=", "p IS NULL" },
    }
    for _, c in ipairs(cases) do
      local want = {}
      for _, line in ipairs(srv:rows("SELECT id FROM dom WHERE " .. c[2] .. " ORDER BY id")) do
        want[#want + 1] = tonumber(line)
      end
      local got = ids(post(h.port, "/data", "table=dom&select[]=id&" .. c[1]))
      table.sort(got)
      assert.same(want, got, c[1])
    end
  end)
end)
