-- The multi-machine recipe of docs/deploy.md, run: nginx (examples/deploy/
-- nginx-lb.conf, ports rewritten) balancing two `biconnector serve` instances,
-- each its own process group as if on its own machine, serving
-- examples/deploy/connector.lua, which reads the (local) portal with OAuth
-- tokens kept in one Redis. 1,000 small requests: the token expires midway
-- and is renewed once for both instances; one instance is killed outright
-- (master and workers, SIGKILL) midway; no request is lost.
local helpers = require "helpers"
local S = require "serve_helpers"
local X = require "scale_helpers"
local control = require "portal.control"
local tokens = require "biconnector.tokens"

local why = X.redis_missing() or X.nginx_missing()
local CURL = "curl"
if not why and not os.execute(CURL .. " --version >/dev/null 2>&1") then why = "curl is not installed (Debian: curl)" end
if why then
  describe("the multi-machine recipe", function()
    it("needs redis-server, nginx and curl", function() pending("SKIPPED: " .. why) end)
  end)
  io.stderr:write("\n*** SKIPPED: spec/deploy_spec.lua: " .. why .. "\n")
  return
end

local function lines(path)
  local text = X.read_file(path) or ""
  local list = {}
  for l in text:gmatch("([^\n]*)\n") do list[#list + 1] = l end
  return list
end

describe("the multi-machine recipe (docs/deploy.md)", function()
  local redis, portal, nginx, prefix
  local backends = {}

  setup(function()
    redis = X.start_redis()
    portal = control.start({ rate = 100000, burst = 100000 })
    prefix = X.tmpdir("deploy")
  end)
  teardown(function()
    for _, b in ipairs(backends) do
      for _, pid in ipairs(b.pids or {}) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
      S.stop(b.h)
    end
    if nginx then nginx.stop() end
    if portal then portal:stop() end
    if redis then redis.stop() end
    if prefix then os.execute("rm -rf " .. prefix) end
  end)

  it("loses no request when one backend dies, and renews the shared token once", function()
    local key = "biconnector:tokens:deploy"
    assert(tokens.redis({ port = redis.port, key = key }):set({ access_token = "initial-access", refresh_token = "initial-refresh" }))
    local env = {
      BICONNECTOR_TOKEN = "lb-secret", BIC_PORTAL = portal.base, BIC_CLIENT_ID = portal.client_id,
      BIC_CLIENT_SECRET = portal.client_secret, BIC_OAUTH_URL = portal.oauth_url,
      BIC_REDIS_PORT = tostring(redis.port), BIC_TOKENS_KEY = key, BIC_REST_RATE = "100000", BIC_REST_BURST = "100000",
    }
    -- two "machines": each serve in its own session and process group (setsid)
    for i = 1, 2 do
      local h = S.start("setsid " .. S.serve_command({ "examples/deploy/connector.lua", "--listen", "127.0.0.1:0",
        "--workers", "2", "--metrics" }), env)
      backends[i] = { h = h }
      X.wait("two workers on backend " .. i, function() return #S.children(h.pid) == 2 end)
      backends[i].pids = { h.pid }
      for _, w in ipairs(S.children(h.pid)) do table.insert(backends[i].pids, w) end
    end
    -- the load balancer: the example file, with this run's ports
    local conf = assert(X.read_file(X.TOP .. "/examples/deploy/nginx-lb.conf"))
    local port = helpers.free_port()
    local n
    conf, n = conf:gsub("127%.0%.0%.1:8081", "127.0.0.1:" .. backends[1].h.port)
    assert.equal(1, n)
    conf, n = conf:gsub("127%.0%.0%.1:8082", "127.0.0.1:" .. backends[2].h.port)
    assert.equal(1, n)
    conf, n = conf:gsub("listen 8080;", "listen 127.0.0.1:" .. port .. ";")
    assert.equal(1, n)
    conf, n = conf:gsub("access_log /var/log/nginx/biconnector%.access%.log;", "access_log " .. prefix .. "/access.log;")
    assert.equal(1, n)
    local f = assert(io.open(prefix .. "/lb.conf", "w"))
    f:write(conf)
    f:close()
    nginx = X.start_nginx(prefix, X.nginx_conf(prefix, 2, {
      "  include " .. prefix .. "/lb.conf;",
    }), port)

    -- every REST call takes 30 ms at the portal, so that requests are in flight
    -- on both backends at any moment (the kill must cut some of them)
    portal:fault({ method = "profile", kind = "delay_before", delay = 0.03, count = 100000 })
    -- 1,000 POST /data requests from 8 curl processes (125 each, one after
    -- another); one status line each. Progress: nginx's access log.
    local codes, curls = {}, {}
    for c = 1, 8 do
      local cfg = assert(io.open(("%s/curl%d.cfg"):format(prefix, c), "w"))
      for i = 1, 125 do
        cfg:write(("url = \"http://127.0.0.1:%d/data?c=%d&n=%d\"\noutput = \"/dev/null\"\n"):format(port, c, i))
      end
      cfg:close()
      codes[c] = ("%s/codes%d"):format(prefix, c)
      curls[c] = X.spawn((CURL .. " -s --no-progress-meter --max-time 60 -K %s/curl%d.cfg " ..
        "-d 'connection[token]=lb-secret&table=profile' -w '%%{http_code}\\n'"):format(prefix, c), codes[c])
    end
    local function answered()
      local list = {}
      for c = 1, 8 do for _, l in ipairs(lines(codes[c])) do list[#list + 1] = l end end
      return list
    end
    local function logged() return #lines(prefix .. "/access.log") end
    -- at 100 answers the token expires: both machines meet it; one renewal
    X.wait("100 answers", function() return logged() >= 100 end, 3000)
    portal:control({ action = "expire" })
    X.wait("the renewal", function() return portal:stats().stats.renewals >= 1 end, 3000, function()
      return require("biconnector.json").encode(portal:stats().stats) .. "\n" .. S.stderr(backends[1].h):sub(-3000)
    end)
    -- at 400 answers backend 1 dies outright: its master and workers, SIGKILL
    X.wait("400 answers", function() return logged() >= 400 end, 3000)
    local served_before = logged()
    assert(os.execute("kill -KILL " .. table.concat(backends[1].pids, " ")))
    X.wait("curl to finish", function()
      for c = 1, 8 do if X.alive(curls[c]) then return false end end
      return true
    end, 6000)
    local list = answered()
    assert.equal(1000, #list)
    local bad = {}
    for i, code in ipairs(list) do if code ~= "200" then bad[#bad + 1] = i .. ":" .. code end end
    assert.same({}, bad)
    assert.is_true(served_before < 1000)
    assert.is_false(X.alive(backends[1].h.pid))
    -- both backends served (before the kill), and the survivor took the rest
    local metrics = assert(S.request(backends[2].h.port, "GET", "/metrics")).body
    local survivor = tonumber(metrics:match('biconnector_requests_total{endpoint="data",code="200"} (%d+)'))
    assert.is_true(survivor > 1000 - served_before - 8, "survivor answered " .. tostring(survivor))
    assert.is_true(survivor < 1000, "backend 1 answered none")
    local s = portal:stats().stats
    assert.equal(1, s.renewals)
    assert.equal(0, s.renewal_failures)
    print(("\n  1,000 requests via nginx to 2 backends; backend 1 killed after %d answers; survivor answered %d; %d renewal, %d expired_token answers")
      :format(served_before, survivor, s.renewals, s.expired_answers))
  end)
end)
