-- tokens.redis against a real redis-server (no persistence, temp dir, free
-- port): the store and its owner-only lock; two independent "machines" (four
-- plain Lua processes, and an nginx with two workers) meeting an expired
-- token at once renew it exactly once; a holder killed mid-renewal leaves a
-- lock that expires, and one other process renews.
local helpers = require "helpers"
local X = require "scale_helpers"
local tokens = require "biconnector.tokens"
local control = require "portal.control"

local why = X.redis_missing()
if why then
  describe("tokens.redis", function()
    it("needs redis-server", function() pending("SKIPPED: " .. why) end)
  end)
  io.stderr:write("\n*** SKIPPED: spec/tokens_redis_spec.lua: " .. why .. "\n")
  return
end

-- token workers (spec/portal/token_worker.lua), as rest_tokens_spec runs them
local worker_command, count_ready = control.worker_command, control.workers_ready

describe("tokens.redis", function()
  local redis
  setup(function() redis = X.start_redis() end)
  teardown(function() if redis then redis.stop() end end)

  it("stores the tokens as JSON under the key; get is nil before the first set", function()
    local s = tokens.redis { port = redis.port, key = "t:basic" }
    assert.is_nil(s:get())
    assert.is_true(s:set({ access_token = "a", refresh_token = "r", expires = 5 }))
    local t = tokens.redis({ port = redis.port, key = "t:basic" }):get()
    assert.same({ access_token = "a", refresh_token = "r", expires = 5 }, t)
    assert.matches('"access_token":"a"', redis.command("GET t:basic"))
    redis.command("SET t:basic {broken")
    local none, err = s:get()
    assert.is_nil(none)
    assert.matches("key t:basic holds no JSON object of tokens", err)
    s:close()
  end)

  it("set(tokens, expect): writes only while the stored fields hold what expect names (false: absent), atomically", function()
    local s = tokens.redis { port = redis.port, key = "t:cas" }
    -- nothing stored: nothing to compare with
    assert.is_false(s:set({ access_token = "b" }, { access_token = "a" }))
    assert.is_nil(s:get())
    assert.is_true(s:set({ access_token = "a", refresh_token = "r", application_token = "app" }))
    assert.is_false(s:set({ access_token = "b" }, { access_token = "a", application_token = "other" }))
    assert.is_false(s:set({ access_token = "b" }, { access_token = "a", refresh_token = false }))
    assert.equals("a", s:get().access_token)
    assert.is_true(s:set({ access_token = "b", refresh_token = "r2", application_token = "app" },
      { access_token = "a", refresh_token = "r", application_token = "app", member_id = false }))
    assert.same({ access_token = "b", refresh_token = "r2", application_token = "app" }, s:get())
    -- an uninstalled store (no tokens) is not written over
    assert.is_true(s:set({ member_id = "m", uninstalled_at = 1 }))
    assert.is_false(s:set({ access_token = "c" }, { access_token = "b" }))
    assert.same({ member_id = "m", uninstalled_at = 1 }, s:get())
    s:close()
  end)

  it("says what failed when Redis is not there, and rejects bad options", function()
    local dead = tokens.redis { port = helpers.free_port(), key = "k", lock_timeout = 0.2 }
    local v, err = dead:get()
    assert.is_nil(v)
    assert.matches("^redis 127%.0%.0%.1:%d+: cannot connect: could not connect to 127%.0%.0%.1:%d+ %[connection refused%]", err)
    local ok, serr = dead:set({ access_token = "x" })
    assert.is_nil(ok)
    assert.matches("cannot connect", serr)
    local unlock, lerr = dead:lock()
    assert.is_nil(unlock)
    assert.matches("^cannot take the token lock k:lock: redis 127%.0%.0%.1:%d+: cannot connect", lerr)
    assert.has_error(function() tokens.redis {} end, "tokens.redis: key must be a non-empty string")
    assert.has_error(function() tokens.redis { key = "k", port = 70000 } end, "tokens.redis: port must be a TCP port number, got 70000")
    assert.has_error(function() tokens.redis { key = "k", lock_ttl = 0 } end, "tokens.redis: lock_ttl must be a positive number of seconds")
  end)

  it("authenticates with a password and never shows it in an error", function()
    local locked = X.start_redis("--requirepass s3cret-pass")
    finally(function() locked.stop() end)
    local good = tokens.redis { port = locked.port, key = "k", password = "s3cret-pass", db = 2 }
    assert.is_true(good:set({ access_token = "a" }))
    assert.equal("a", good:get().access_token)
    local unlock = assert(good:lock())
    assert.is_true(unlock())
    -- and inside nginx, on cosockets (pooled connections keep their AUTH and SELECT)
    local nwhy = X.nginx_missing()
    if nwhy then
      io.stderr:write("\n*** SKIPPED (nginx part of the AUTH test): " .. nwhy .. "\n")
    else
      local prefix = X.tmpdir("nginx-auth")
      local port = helpers.free_port()
      local nginx = X.start_nginx(prefix, X.nginx_conf(prefix, 1, {
        "  access_log off;",
        "  server {",
        "    listen 127.0.0.1:" .. port .. ";",
        "    location = /t { content_by_lua_block {",
        ("      local s = require('biconnector.tokens').redis { port = %d, key = 'k', password = ngx.var.arg_p, db = 2 }"):format(locked.port),
        "      local t, err = s:get()",
        "      if not t then ngx.say('ERR ', err) return end",
        "      local unlock = assert(s:lock())",
        "      assert(s:set({ access_token = t.access_token .. '+' }))",
        "      unlock()",
        "      ngx.say('OK ', s:get().access_token)",
        "    } }",
        "  }",
      }), port)
      finally(nginx.remove) -- stops it, removes prefix
      for i = 1, 3 do -- the second and third reuse the pooled, authenticated connection
        local status, body = X.send(port, "/t?p=s3cret-pass")()
        assert.equal(200, status, nginx.error_log())
        assert.equal("OK a" .. ("+"):rep(i) .. "\n", body)
      end
      local _, body = X.send(port, "/t?p=not-the-s3cret")()
      assert.matches("^ERR redis 127%.0%.0%.1:%d+: AUTH failed", body)
      assert.is_nil(body:find("not-the-s3cret", 1, true))
    end
    local none, err = tokens.redis({ port = locked.port, key = "k" }):get()
    assert.is_nil(none)
    assert.matches("NOAUTH", err)
    local wrong, werr = tokens.redis({ port = locked.port, key = "k", password = "not-the-s3cret" }):get()
    assert.is_nil(wrong)
    assert.matches("AUTH failed", werr)
    assert.is_nil(werr:find("not-the-s3cret", 1, true))
    good:close()
  end)

  it("beside(suffix, {lock_ttl}): another key whose lock lives lock_ttl (the registration lock of serve --app)", function()
    local s = tokens.redis { port = redis.port, key = "t:side" }
    local long = s:beside(".register", { lock_ttl = 900 })
    local unlock = assert(long:lock())
    local pttl = tonumber(redis.command("PTTL t:side.register:lock"):match("%-?%d+"))
    assert.is_true(pttl > 60000 and pttl <= 900000, "PTTL " .. tostring(pttl))
    unlock()
    assert.equals(":0", redis.command("EXISTS t:side.register:lock"))
    -- without it, the store's own (60 s by default)
    unlock = assert(s:beside(".other"):lock())
    pttl = tonumber(redis.command("PTTL t:side.other:lock"):match("%-?%d+"))
    assert.is_true(pttl > 0 and pttl <= 60000, "PTTL " .. tostring(pttl))
    unlock()
    s:close()
  end)

  it("the lock: SET NX PX with a unique owner; a waiter times out; only the owner releases it", function()
    local a = tokens.redis { port = redis.port, key = "t:lock", lock_ttl = 0.3 }
    local b = tokens.redis { port = redis.port, key = "t:lock", lock_ttl = 30, lock_timeout = 0.1 }
    local unlock_a = assert(a:lock())
    local owner_a = redis.command("GET t:lock:lock")
    assert.matches("^[^:]+:%d+:%x+:%d+$", owner_a)
    local pttl = tonumber(redis.command("PTTL t:lock:lock"):match("%-?%d+"))
    assert.is_true(pttl > 0 and pttl <= 300)
    local none, err = b:lock()
    assert.is_nil(none)
    assert.matches("timed out after 0%.1s waiting for the token lock t:lock:lock on redis", err)
    -- a's lock expires by itself (PX); b takes it; a's late unlock leaves b's lock alone
    X.wait("the lock to expire", function() return redis.command("EXISTS t:lock:lock") == ":0" end)
    b.lock_timeout = 5
    local unlock_b = assert(b:lock())
    local owner_b = redis.command("GET t:lock:lock")
    assert.are_not.equal(owner_a, owner_b)
    assert.is_true(unlock_a())
    assert.equal(owner_b, redis.command("GET t:lock:lock"))
    assert.is_true(unlock_b())
    assert.equal(":0", redis.command("EXISTS t:lock:lock"))
    a:close()
    b:close()
  end)

  describe("shared by processes and nginx workers", function()
    local portal
    before_each(function() portal = control.start({ rate = 1000, burst = 1000 }) end)
    after_each(function() if portal then portal:stop() end end)

    it("four processes and an nginx with two workers meet an expired token at once: one renewal, no failed call", function()
      local nwhy = X.nginx_missing()
      if nwhy then
        io.stderr:write("\n*** SKIPPED (nginx part): " .. nwhy .. "\n")
        pending("SKIPPED: " .. nwhy)
        return
      end
      local key = "t:machines"
      assert(tokens.redis({ port = redis.port, key = key }):set({ access_token = "initial-access", refresh_token = "initial-refresh" }))
      local barrier = os.tmpname()
      os.remove(barrier)
      -- machine 2: nginx, two workers, each request waits for the barrier then makes `calls` calls
      local prefix = X.tmpdir("nginx")
      local port = helpers.free_port()
      local conf = X.nginx_conf(prefix, 2, {
        "  access_log off;",
        "  server {",
        "    listen 127.0.0.1:" .. port .. ";",
        "    location = /calls { content_by_lua_block {",
        "      local rest = require 'biconnector.rest'",
        "      local tokens = require 'biconnector.tokens'",
        ("      local client = assert(rest.new { portal = %q, oauth_url = %q,"):format(portal.base, portal.oauth_url),
        "        client_id = 'local.test.app', client_secret = 'appsecret', rate = 1000, burst = 1000,",
        "        transport = rest.ngx_transport(), sleep = ngx.sleep,",
        ("        store = tokens.redis { port = %d, key = %q, lock_ttl = 10, lock_timeout = 60 } })"):format(redis.port, key),
        ("      local r = require('nginx.redis'):new() assert(r:connect('127.0.0.1', %d)) r:incr('started') r:close()"):format(redis.port),
        -- the client holds the stored (soon expired) token; now wait for the start
        ("      while not io.open(%q) do ngx.sleep(0.005) end"):format(barrier),
        "      local ok = 0",
        "      for i = 1, tonumber(ngx.var.arg_calls) do",
        "        local res, err = client:call('test.echo', { n = i })",
        "        if res then ok = ok + 1 else ngx.say('ERR ', tostring(err)) end",
        "      end",
        "      ngx.say('OK ', ok, ' renewals ', client.counters.renewals, ' worker ', ngx.worker.pid())",
        "    } }",
        "  }",
      })
      local nginx = X.start_nginx(prefix, conf, port)
      finally(function()
        io.open(barrier, "w"):close() -- releases whoever still waits, should the spec fail early
        nginx.stop()
        os.execute("rm -rf " .. prefix .. " " .. barrier .. " " .. barrier .. ".ready.*")
      end)
      -- machine 1: four plain Lua processes
      local procs = {}
      for i = 1, 4 do procs[i] = io.popen(worker_command(portal, ("redis:%d:%s:10"):format(redis.port, key), 20, barrier) .. " 2>&1") end
      X.wait("four processes to be ready", function() return count_ready(barrier) == 4 end)
      local readers = {}
      for i = 1, 4 do readers[i] = X.send(port, "/calls?calls=20") end
      -- every nginx request has read the store (its client exists) before the token expires
      X.wait("the nginx requests to start", function() return redis.command("GET started") == "4" end)
      portal:control({ action = "expire" })
      io.open(barrier, "w"):close()
      local renewed_by = control.renewals(procs, 20) -- each said "OK 20 renewals 0|1"
      local nginx_workers = {}
      for i = 1, 4 do
        local status, body = readers[i]()
        assert.equal(200, status)
        assert.matches("^OK 20 renewals [01] worker %d+\n$", body)
        renewed_by = renewed_by + tonumber(body:match("renewals (%d)"))
        nginx_workers[body:match("worker (%d+)")] = true
      end
      local s = portal:stats().stats
      assert.equal(1, s.renewals)
      assert.equal(0, s.renewal_failures)
      assert.equal(1, renewed_by)
      assert.equal(160, s.executed["test.echo"])
      assert.equal(8, s.expired_answers) -- all eight clients started on the expired token
      local n = 0
      for _ in pairs(nginx_workers) do n = n + 1 end
      print(("\n  4 processes + nginx (4 requests on %d worker(s)) x 20 calls: %d expired_token answers, %d renewal")
        :format(n, s.expired_answers, s.renewals))
      local stored = tokens.redis({ port = redis.port, key = key }):get()
      assert.are_not.equal("initial-access", stored.access_token)
      assert.equal(":0", redis.command("EXISTS " .. key .. ":lock"))
    end)

    it("a holder killed mid-renewal: its lock expires and one other process renews", function()
      local key = "t:killed"
      assert(tokens.redis({ port = redis.port, key = key }):set({ access_token = "initial-access", refresh_token = "initial-refresh" }))
      -- the next renewal is held unanswered (and never processed) for 60 s
      portal:control({ action = "config", config = { oauth_hold = 60 } })
      portal:control({ action = "expire" })
      local store = ("redis:%d:%s:1.5"):format(redis.port, key)
      local out_a = os.tmpname()
      local holder = X.spawn(worker_command(portal, store, 1), out_a)
      X.wait("the holder's renewal to reach the portal", function() return portal:stats().stats.renewals_held == 1 end, 500, function() return X.read_file(out_a) end)
      local owner = redis.command("GET " .. key .. ":lock")
      assert.equal(holder, tonumber(owner:match("^[^:]+:(%d+):")))
      -- two more processes meet the expired token and wait for the lock
      local others = {}
      for i = 1, 2 do others[i] = io.popen(worker_command(portal, store, 3) .. " 2>&1") end
      X.wait("the others to meet the expired token", function() return portal:stats().stats.expired_answers == 3 end)
      assert(os.execute("kill -KILL " .. holder))
      local renewed_by = control.renewals(others, 3) -- each said "OK 3 renewals 0|1"
      assert.equal(1, renewed_by)
      local s = portal:stats().stats
      assert.equal(1, s.renewals)
      assert.equal(0, s.renewal_failures)
      assert.equal(6, s.executed["test.echo"])
      assert.equal("", X.read_file(out_a)) -- killed before it printed anything
      os.remove(out_a)
    end)
  end)
end)
