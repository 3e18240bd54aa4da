-- REST client throughput against the local portal (spec/portal): keep-alive
-- versus a new connection per call, client overhead, batch versus single calls.
-- The portal is plain Lua, so absolute figures measure it as much as us;
-- the ratios are what this bench is for.
-- Usage: bench/rest [lua5.4|luajit] [BUILD_DIR] [CALLS]
local http = require("biconnector.core").http
local rest = require "biconnector.rest.client"
local control = require "portal.control"

local calls = tonumber(arg[1]) or 2000
local portal = control.start({ rate = 1e9, burst = 1e9 })
local url = portal.webhook .. "profile"
local req = { url = url, method = "POST", body = "{}", headers = { ["Content-Type"] = "application/json" } }

local function measure(name, n, fn)
  fn(1) -- warm up
  local t0 = http.now()
  fn(n)
  local dt = http.now() - t0
  print(("%-46s %7d calls %8.3f s %9.0f calls/s"):format(name, n, dt, n / dt))
  return n / dt
end

local keep = measure("core.http, one handle (keep-alive)", calls, function(n)
  local h = http.new()
  for _ = 1, n do assert(h:request(req)) end
  h:close()
end)
local fresh = measure("core.http, new handle per call", calls, function(n)
  for _ = 1, n do local h = http.new() assert(h:request(req)) h:close() end
end)
local client = assert(rest.new { webhook = portal.webhook, rate = 1e9, burst = 1e9 })
local through = measure("rest client:call (limiter, JSON, policy)", calls, function(n)
  for _ = 1, n do assert(client:call("profile")) end
end)
local cmds = {}
for i = 1, calls do cmds[i] = { "profile" } end
local batched = measure("rest client:batch (chunks of 50)", calls, function(n)
  if n == 1 then assert(client:batch({ "profile" })) return end
  local res = assert(client:batch(cmds))
  assert(res[calls])
end)
local result = require "result"
result { name = "rest.call", ours = through, anchor = keep, unit = "calls/s", anchor_name = "raw core.http requests (libcurl, keep-alive)",
  what = "rest client:call against the local portal (limiter, JSON, retry policy)" }
result { name = "rest.keepalive", ours = keep, anchor = fresh, unit = "calls/s", anchor_name = "a new connection per call",
  what = "core.http keep-alive calls" }
print(("keep-alive / new connection: %.2fx; client overhead over raw: %.0f%%; batch / single: %.1fx")
  :format(keep / fresh, (keep / through - 1) * 100, batched / through))
portal:stop()
