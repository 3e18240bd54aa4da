-- The cache of /table_list and /table_description (biconnector.cache): keyed
-- by a hash of the connection values, opt-in for Lua connectors, on by default
-- for SQL sources, bypassed on errors; in process for serve (counted in
-- /metrics) and in a lua_shared_dict shared by nginx workers.
local cache = require "biconnector.cache"
local connector = require "biconnector.connector"
local helpers = require "helpers"
local S = require "serve_helpers"
local X = require "scale_helpers"
local core = require "biconnector.core"

local FORM = { ["content-type"] = "application/x-www-form-urlencoded" }

local function ask(c, path, body)
  local status, _, answer, info = c:handle({ method = "POST", path = path, headers = FORM, body = body or "" })
  return status, answer, info
end

-- A connector counting the calls of each handler; titles carry the count.
local function counting(cache_def)
  local calls = { check = 0, tables = 0, describe = 0 }
  local c = connector.new {
    title = "counting", settings = { { code = "token", name = "Token", type = "STRING" } }, log = function() end,
    cache = cache_def,
    check = function(conn)
      calls.check = calls.check + 1
      return conn.token ~= "refused", "refused"
    end,
    tables = function(_, search)
      calls.tables = calls.tables + 1
      if search == "boom" then error("tables failed on purpose") end
      return { { code = "t", title = "call " .. calls.tables } }
    end,
    describe = function(_, code)
      calls.describe = calls.describe + 1
      if code ~= "t" then return nil end
      return { { code = "id", name = "call " .. calls.describe, type = "int" } }
    end,
    data = function() return {} end,
  }
  return c, calls
end

describe("biconnector.cache", function()
  it("keys: a SHA-256 of namespace, endpoint, connection and argument; never the values", function()
    local k = cache.key("ns", "table_list", { token = "s3cret-value", url = "x" }, "")
    assert.matches("^bic:cache:%x+$", k)
    assert.equal(10 + 64, #k)
    assert.is_nil(k:find("s3cret", 1, true))
    assert.equal(k, cache.key("ns", "table_list", { url = "x", token = "s3cret-value" }, ""))
    assert.are_not.equal(k, cache.key("ns", "table_list", { token = "s3cret-valuE", url = "x" }, ""))
    assert.are_not.equal(k, cache.key("ns", "table_description", { token = "s3cret-value", url = "x" }, ""))
    assert.are_not.equal(k, cache.key("other", "table_list", { token = "s3cret-value", url = "x" }, ""))
    assert.are_not.equal(k, cache.key("ns", "table_list", { token = "s3cret-value", url = "x" }, "a"))
    -- no ambiguity between where one value ends and the next begins
    assert.are_not.equal(cache.key("n", "e", { a = "b:c" }, ""), cache.key("n", "e", { a = "b", c = "" }, ""))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256("abc"))
    -- FIPS 180-2's other examples: empty, two blocks, 896 bits, a million bytes
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256(""))
    assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      core.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.equal("cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
      core.sha256("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
        .. "mnopqrstnopqrstu"))
    assert.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", core.sha256(("a"):rep(1000000)))
    -- the key of a given request stays what it was (entries in a shared dict
    -- outlive a reload): the text it hashes is fixed
    assert.equal("bic:cache:9c436fa1e4e8500431db291831cdd7fa8188050fd331b94f890dc00a41a7abeb",
      cache.key("deals", "table_list", { token = "t", nested = { 1, "a", b = true } }, "sea"))
  end)

  it("core.sha256 answers as coreutils' sha256sum on every length around the block boundaries", function()
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    for _, n in ipairs({ 1, 54, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 4097 }) do
      local data = ("\0\255x"):rep(n):sub(1, n)
      local f = assert(io.open(path, "wb"))
      f:write(data)
      f:close()
      local p = assert(io.popen("sha256sum " .. path))
      local want = p:read("*a"):match("^(%x+)")
      p:close()
      assert.equal(want, core.sha256(data), n .. " bytes")
    end
  end)

  it("keys: the C writer gives the keys the Lua writer gives (3000 generated connections)", function()
    -- a copy of the module whose C writer is absent: every key written in Lua
    local real = core.cache_key
    core.cache_key = function() return nil end
    local path = package.searchpath("biconnector.connector.cache", package.path)
    local ok, lua_only = pcall(dofile, path)
    core.cache_key = real
    assert(ok, lua_only)
    local seed = 4242
    local function rand(n)
      seed = seed * 16807 % 2147483647
      return seed % n + 1
    end
    local function text()
      local t = {}
      for i = 1, rand(12) - 1 do t[i] = string.char(rand(256) - 1) end
      return table.concat(t)
    end
    local function value(depth)
      local r = rand(8)
      if r == 1 then return rand(100) end
      if r == 2 then return rand(2) == 1 end
      if r == 3 then return rand(9) - 5 + 0.5 end
      if r <= 5 and depth < 4 then
        local t = {}
        for i = 1, rand(20) - 1 do
          local kr = rand(5)
          local k = kr == 1 and i or kr == 2 and text() or kr == 3 and rand(9) - 5 + 0.5
            or kr == 4 and "k" .. rand(30) or rand(2) == 1
          t[k] = value(depth + 1)
        end
        return t
      end
      return text()
    end
    local through_c = 0
    for i = 1, 3000 do
      local conn = value(0)
      if type(conn) ~= "table" then conn = { token = conn } end
      local ns = rand(2) == 1 and "ns" or text()
      local want = lua_only.key(ns, "table_list", conn, "x")
      assert.equal(want, cache.key(ns, "table_list", conn, "x"), "connection #" .. i)
      if core.cache_key(ns, "table_list", conn, "x") then through_c = through_c + 1 end
    end
    assert.equal(3000, through_c)
    -- what the C writer leaves to Lua: a value tostring writes by address, a
    -- deep table; the key is still made, the same each time
    local deep = {}
    for _ = 1, 40 do deep = { deep } end
    local odd = { token = "t", f = print, deep = deep }
    assert.is_nil(core.cache_key("ns", "table_list", odd, ""))
    assert.equal(lua_only.key("ns", "table_list", odd, ""), cache.key("ns", "table_list", odd, ""))
  end)

  it("memory store: answers until the TTL passes; bounded", function()
    local m = cache.memory(3)
    m:set("a", "1", 0.05)
    assert.equal("1", m:get("a"))
    core.http.sleep(0.06)
    assert.is_nil(m:get("a"))
    for i = 1, 5 do m:set("k" .. i, tostring(i), 60) end
    assert.is_true(m.count <= 3)
    assert.equal("5", m:get("k5"))
  end)

  it("a connector without cache computes every answer", function()
    local c, calls = counting(nil)
    for _ = 1, 3 do assert.equal(200, (ask(c, "/table_list", "connection[token]=a"))) end
    assert.equal(3, calls.tables)
  end)

  it("cache = {ttl}: one computation per connection and argument; check still runs every time", function()
    local c, calls = counting({ ttl = 60 })
    local s1, body1, info1 = ask(c, "/table_list", "connection[token]=a")
    local s2, body2, info2 = ask(c, "/table_list", "connection[token]=a")
    assert.equal(200, s1)
    assert.equal(200, s2)
    assert.equal(body1, body2)
    assert.equal("miss", info1.cache)
    assert.equal("hit", info2.cache)
    assert.equal(1, calls.tables)
    assert.equal(2, calls.check)
    -- another connection, another search: computed again
    assert.matches("call 2", select(2, ask(c, "/table_list", "connection[token]=b")))
    assert.matches("call 3", select(2, ask(c, "/table_list", "connection[token]=a&searchString=t")))
    -- refused by check even though the same request was cached for another token
    assert.equal(403, (ask(c, "/table_list", "connection[token]=refused")))
    -- descriptions: per table
    assert.matches("call 1", select(2, ask(c, "/table_description", "connection[token]=a&table=t")))
    assert.matches("call 1", select(2, ask(c, "/table_description", "connection[token]=a&table=t")))
    assert.equal(1, calls.describe)
  end)

  it("errors are never cached", function()
    local c, calls = counting({ ttl = 60 })
    for i = 1, 3 do
      assert.equal(404, (ask(c, "/table_description", "connection[token]=a&table=nope")))
      assert.equal(i, calls.describe)
    end
    for i = 1, 2 do
      local status, _, info = ask(c, "/table_list", "connection[token]=a&searchString=boom")
      assert.equal(500, status)
      assert.equal("miss", info.cache)
      assert.equal(i, calls.tables)
    end
  end)

  it("rejects a bad cache definition with a precise message", function()
    local function def(cache_def)
      return { title = "x", settings = {}, check = function() return true end, tables = {}, describe = {},
        data = function() return {} end, cache = cache_def }
    end
    assert.has_error(function() connector.new(def({ ttl = 0 })) end,
      "connector definition: cache.ttl must be a positive number of seconds, got 0")
    assert.has_error(function() connector.new(def({})) end,
      "connector definition: cache.ttl must be a positive number of seconds, got nil")
    assert.has_error(function() connector.new(def(60)) end,
      "connector definition: cache must be a table {ttl = seconds} or false, got number")
    assert.has_error(function() connector.new(def({ ttl = 1, store = {} })) end,
      "connector definition: cache.store must be an object with get and set methods, got table")
    assert.is_table(connector.new(def(false)))
  end)

  it("SQL sources cache their introspection by default (cache = false turns it off)", function()
    local ok_sql, sql = pcall(require, "biconnector.sql")
    if not ok_sql then
      pending("SKIPPED: biconnector.sql is not there")
      return
    end
    local path = os.tmpname()
    os.remove(path)
    finally(function() os.remove(path) end)
    assert(os.execute(("sqlite3 %s 'CREATE TABLE a (id INTEGER)'"):format(path)))
    local cached_c = sql.connector({ url = "sqlite://" .. path })
    local plain_c = sql.connector({ url = "sqlite://" .. path, cache = false })
    local _, before = ask(cached_c, "/table_list")
    ask(plain_c, "/table_list")
    assert.matches('"code":"a"', before)
    assert(os.execute(("sqlite3 %s 'CREATE TABLE b (id INTEGER)'"):format(path)))
    local _, cached_after, info = ask(cached_c, "/table_list")
    local _, plain_after = ask(plain_c, "/table_list")
    assert.equal("hit", info.cache)
    assert.equal(before, cached_after)
    assert.matches('"code":"b"', plain_after)
  end)
end)

describe("cache in serve --metrics", function()
  it("answers from the cache and counts hits and misses", function()
    local dir = X.tmpdir("cache-serve")
    finally(function() os.execute("rm -rf " .. dir) end)
    local f = assert(io.open(dir .. "/c.lua", "w"))
    f:write([[
local n = 0
return require("biconnector").connector {
  title = "cached", settings = {}, cache = { ttl = 300 },
  check = function() return true end,
  tables = function() n = n + 1 return { { code = "t", title = "call " .. n } } end,
  describe = function() return { { code = "id", name = "ID", type = "int" } } end,
  data = function() return {} end,
}
]])
    f:close()
    local h = S.start(S.serve_command({ dir .. "/c.lua", "--listen", "127.0.0.1:0", "--metrics", "--workers", "1" }))
    finally(function() S.stop(h) end)
    for _ = 1, 5 do
      local r = assert(S.request(h.port, "POST", "/table_list", "", { ["Content-Type"] = "application/x-www-form-urlencoded" }))
      assert.equal(200, r.status)
      assert.matches('"title":"call 1"', r.body)
    end
    local m = assert(S.request(h.port, "GET", "/metrics")).body
    assert.matches('\nbiconnector_cache_hits_total{endpoint="table_list"} 4\n', m)
    assert.matches('\nbiconnector_cache_misses_total{endpoint="table_list"} 1\n', m)
  end)
end)

local nwhy = X.nginx_missing()
describe("cache in nginx", function()
  if nwhy then
    it("needs nginx", function() pending("SKIPPED: " .. nwhy) end)
    io.stderr:write("\n*** SKIPPED: spec/cache_spec.lua (nginx part): " .. nwhy .. "\n")
    return
  end
  it("a lua_shared_dict serves one cached answer to both workers", function()
    local prefix = X.tmpdir("nginx-cache")
    local port = helpers.free_port()
    local file = prefix .. "/c.lua"
    local f = assert(io.open(file, "w"))
    f:write([[
return require("biconnector").connector {
  title = "cached", settings = {}, cache = { ttl = 300 },
  check = function() return true end,
  tables = function()
    local n = ngx.shared.calls:incr("tables", 1, 0)
    return { { code = "t", title = "call " .. n } }
  end,
  describe = function() return { { code = "id", name = "ID", type = "int" } } end,
  data = function() return {} end,
}
]])
    f:close()
    local nginx = X.start_nginx(prefix, X.nginx_conf(prefix, 2, {
      "  access_log off;",
      "  lua_shared_dict biconnector_cache 1m;",
      "  lua_shared_dict biconnector_metrics 1m;",
      "  lua_shared_dict calls 64k;",
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      ("    location / { content_by_lua_block { require('biconnector.ngx').serve(%q, { cache = 'biconnector_cache', metrics = 'biconnector_metrics' }) } }"):format(file),
      "    location = /metrics { content_by_lua_block { require('biconnector.ngx').metrics('biconnector_metrics') } }",
      "  }",
    }), port)
    finally(nginx.remove) -- stops it, removes prefix
    -- one request fills the cache; then concurrent connections, so that both workers take some
    local first = assert(S.request(port, "POST", "/table_list", "", { ["Content-Type"] = "application/x-www-form-urlencoded" }))
    assert.matches('"title":"call 1"', first.body)
    for _ = 1, 5 do
      local pending = {}
      for i = 1, 4 do
        local c = assert(require("socket").connect("127.0.0.1", port))
        c:settimeout(10)
        c:send("POST /table_list HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        pending[i] = c
      end
      for i = 1, 4 do
        local all = pending[i]:receive("*a")
        pending[i]:close()
        assert.matches('^HTTP/1.1 200 .*"title":"call 1"', all)
      end
    end
    local m = assert(S.request(port, "GET", "/metrics")).body
    assert.matches('\nbiconnector_cache_hits_total{endpoint="table_list"} 20\n', m)
    assert.matches('\nbiconnector_cache_misses_total{endpoint="table_list"} 1\n', m)
  end)
end)
