-- One of several processes sharing a token file store (spec/rest_tokens_spec.lua).
-- Usage: token_worker.lua PORTAL_BASE STORE CALLS BARRIER
-- STORE is a file path, or redis:PORT:KEY:LOCK_TTL for tokens.redis (spec/tokens_redis_spec.lua).
-- Writes BARRIER.ready.<pid-ish>, then waits for the file BARRIER to exist, so
-- that all workers make their first call together.
local rest = require "biconnector.rest"
local tokens = require "biconnector.tokens"
local base, path, calls, barrier = arg[1], arg[2], tonumber(arg[3]), arg[4]
local http = require("biconnector.core").http
local store
local rport, rkey, rttl = path:match("^redis:(%d+):(.+):([%d.]+)$")
if rport then
  store = tokens.redis { port = tonumber(rport), key = rkey, lock_ttl = tonumber(rttl), lock_timeout = 60 }
else
  store = tokens.file(path)
end
local client = assert(rest.new {
  portal = base, client_id = "local.test.app", client_secret = "appsecret",
  oauth_url = base .. "/oauth/token/", store = store, rate = 1000, burst = 1000,
})
if barrier then
  local ready = os.tmpname()
  os.rename(ready, barrier .. ".ready." .. ready:match("[^/]+$"))
  while not io.open(barrier) do http.sleep(0.005) end
end
local ok = 0
for i = 1, calls do
  local res, err = client:call("test.echo", { n = i })
  if res then ok = ok + 1 else io.write("ERR ", tostring(err), "\n") end
end
io.write("OK ", ok, " renewals ", client.counters.renewals, "\n")
