-- Token stores, and eight processes renewing through one file store.
local helpers = require "helpers"
local tokens = require "biconnector.tokens"
local control = require "portal.control"

describe("token stores", function()
  it("memory: get returns a copy of what set stored; lock is a no-op", function()
    local s = tokens.memory({ access_token = "a", refresh_token = "r" })
    local t = s:get()
    t.access_token = "changed"
    assert.equal("a", s:get().access_token)
    assert.is_true(s:set({ access_token = "b" }))
    assert.equal("b", s:get().access_token)
    local unlock = s:lock()
    assert.is_function(unlock)
    unlock()
    assert.is_nil(tokens.memory():get())
  end)

  it("file: absent or broken file reads as nil; set writes atomically, readable by owner only", function()
    local path = os.tmpname()
    os.remove(path)
    local s = tokens.file(path)
    assert.is_nil(s:get())
    assert.is_true(s:set({ access_token = "a", refresh_token = "r", expires = 123 }))
    local t = tokens.file(path):get()
    assert.equal("a", t.access_token)
    assert.equal(123, t.expires)
    local p = io.popen("stat -c %a " .. path)
    assert.equal("600", p:read("*l"))
    p:close()
    local f = io.open(path, "w")
    f:write("{broken")
    f:close()
    local none, why = s:get()
    assert.is_nil(none)
    assert.matches("holds no JSON object of tokens", why)
    -- and the client says so instead of only asking for an access_token
    local c, cerr = require("biconnector.rest").new { portal = "portal.example", store = s, transport = function() end }
    assert.is_nil(c)
    assert.matches("OAuth needs access_token .*; the store: .*holds no JSON object of tokens", cerr)
    local unlock = assert(s:lock())
    unlock()
    local bad = tokens.file("/nonexistent-dir/tokens.json")
    local ok, err = bad:set({ access_token = "x" })
    assert.is_nil(ok)
    assert.matches("/nonexistent%-dir/tokens.json", err)
    local l, lerr = bad:lock()
    assert.is_nil(l)
    assert.matches("cannot open lock file /nonexistent%-dir/tokens.json.lock", lerr)
    os.remove(path)
    os.remove(path .. ".lock")
    assert.has_error(function() tokens.file() end)
  end)

  it("from_env: BITRIX24_TOKENS_FILE or BITRIX24_TOKENS_REDIS names the store; never both", function()
    local function env(t) return function(k) return t[k] end end
    local s, what = tokens.from_env(env({ BITRIX24_TOKENS_FILE = "/tmp/x.json" }))
    assert.equals("/tmp/x.json", s.path)
    assert.equals("file /tmp/x.json", what)
    s, what = tokens.from_env(env({ BITRIX24_TOKENS_REDIS = "redis://:pa%40ss@10.0.0.5:6380/2", BITRIX24_TOKENS_KEY = "k1" }))
    assert.same({ "10.0.0.5", 6380, 2, "pa@ss", "k1" }, { s.host, s.port, s.db, s.password, s.key })
    assert.equals("redis 10.0.0.5:6380 key k1", what) -- no password in it
    s = tokens.from_env(env({ BITRIX24_TOKENS_REDIS = "redis://cache" }))
    assert.same({ "cache", 6379, "biconnector:tokens" }, { s.host, s.port, s.key })
    local none, err = tokens.from_env(env({ BITRIX24_TOKENS_REDIS = "http://cache" }))
    assert.is_nil(none)
    assert.matches("BITRIX24_TOKENS_REDIS: expected redis://", err, 1, true)
    none, err = tokens.from_env(env({ BITRIX24_TOKENS_REDIS = "redis://:secretpw@h/x" }))
    assert.is_nil(none)
    assert.is_nil(err:find("secretpw", 1, true))
    none, err = tokens.from_env(env({ BITRIX24_TOKENS_FILE = "/a", BITRIX24_TOKENS_REDIS = "redis://h" }))
    assert.is_nil(none)
    assert.matches("choose one", err, 1, true)
    assert.same({}, { tokens.from_env(env({})) })
    -- beside: another store of the same kind, with a lock of its own
    local path = os.tmpname()
    local b = tokens.file(path):beside(".register")
    assert.equals(path .. ".register", b.path)
    assert.equals(path .. ".register.lock", b.lock_path)
    os.remove(path)
  end)

  it("a renewal keeps what the store held beside the tokens (an installation's application_token)", function()
    local portal = control.start({ rate = 1000, burst = 1000 })
    finally(function() portal:stop() end)
    local store = tokens.memory({ access_token = "initial-access", refresh_token = "initial-refresh",
      application_token = "apptok", portal = "example", member_id = "old" })
    local client = assert(require("biconnector.rest").new(portal:oauth_options({ store = store })))
    portal:control({ action = "expire" })
    assert.truthy(client:call("profile"))
    local t = store:get()
    assert.is_true(t.access_token ~= "initial-access")
    assert.equals("apptok", t.application_token) -- kept
    assert.equals("example", t.portal)
    assert.equals("localmember", t.member_id) -- what the answer names replaces the old value
    client:close()
  end)

  it("eight processes hitting expiry together renew exactly once and every call succeeds", function()
    local portal = control.start({ rate = 1000, burst = 1000 })
    finally(function() portal:stop() end)
    local path = os.tmpname()
    assert(tokens.file(path):set({ access_token = "initial-access", refresh_token = "initial-refresh" }))
    local barrier = os.tmpname()
    os.remove(barrier)
    -- Under the sanitizer build, LeakSanitizer's exit-time scan crashes in these
    -- short-lived workers while walking glibc's dynamic TLS ("Tracer caught
    -- signal 11", DTLS with a bogus range); ASan's memory checks stay on, only
    -- the workers' leak scan is off. The spec's own process keeps it.
    local env = (os.getenv("LD_PRELOAD") or ""):find("libasan", 1, true)
      and "ASAN_OPTIONS=\"${ASAN_OPTIONS:-}:detect_leaks=0\" " or ""
    local procs = {}
    for i = 1, 8 do
      procs[i] = io.popen(("%s%s %s/spec/portal/token_worker.lua %s %s 30 %s 2>&1")
        :format(env, helpers.runtime, helpers.top, portal.base, path, barrier))
    end
    -- every worker has read the store; now the access token expires and they all start
    local ready = 0
    for _ = 1, 2000 do
      local p = io.popen("ls " .. barrier .. ".ready.* 2>/dev/null | wc -l")
      ready = tonumber(p:read("*l"))
      p:close()
      if ready == 8 then break end
      require("biconnector.core").http.sleep(0.01)
    end
    assert.equal(8, ready)
    portal:control({ action = "expire" })
    io.open(barrier, "w"):close()
    local renewed_by = 0
    for i = 1, 8 do
      local out = procs[i]:read("*a")
      procs[i]:close()
      assert.matches("^OK 30 renewals [01]\n$", out)
      renewed_by = renewed_by + tonumber(out:match("renewals (%d)"))
    end
    local s = portal:stats().stats
    portal:stop()
    assert.equal(1, s.renewals)
    assert.equal(0, s.renewal_failures)
    assert.equal(1, renewed_by)
    assert.equal(240, s.executed["test.echo"])
    assert.equal(8, s.expired_answers) -- all eight met the expired token
    print(("\n  8 processes x 30 calls: %d expired_token answers, %d renewal"):format(s.expired_answers, s.renewals))
    local stored = tokens.file(path):get()
    assert.are_not.equal("initial-access", stored.access_token)
    os.remove(path)
    os.remove(path .. ".lock")
    os.remove(barrier)
    os.execute("rm -f " .. barrier .. ".ready.*")
  end)
end)
