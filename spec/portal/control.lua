-- Start, drive and stop the local test portal (spec/portal/portal.lua) from a
-- spec. The portal runs as a separate process with the spec's own runtime.
local http = require("biconnector.core").http
local J = require "portal.jsonish"
local helpers = require "helpers"

local M = {}
local Portal = {}
Portal.__index = Portal

---------------------------------------------------------------- token workers
-- spec/portal/token_worker.lua: processes sharing one token store, which make
-- their calls together once a barrier file appears.

-- Under the sanitizer build, LeakSanitizer's exit-time scan crashes in these
-- short-lived workers while walking glibc's dynamic TLS ("Tracer caught
-- signal 11", DTLS with a bogus range); ASan's memory checks stay on, only
-- the workers' leak scan is off. The spec's own process keeps it.
local WORKER_ENV = helpers.sanitized and "ASAN_OPTIONS=\"${ASAN_OPTIONS:-}:detect_leaks=0\" " or ""

-- The command of a worker making `calls` calls to portal with the token store
-- `store` (a file path, or redis:PORT:KEY:LOCK_TTL), after `barrier` if given.
function M.worker_command(portal, store, calls, barrier)
  return ("%s%s %s/spec/portal/token_worker.lua %s %s %d %s")
    :format(WORKER_ENV, helpers.runtime, helpers.top, portal.base, store, calls, barrier or "")
end

-- How many workers wait at the barrier.
function M.workers_ready(barrier)
  return tonumber(helpers.first_line("ls " .. barrier .. ".ready.* 2>/dev/null | wc -l"))
end

-- Reads the output of each worker (io.popen pipes, closed here): each made
-- its `calls` calls and renewed the token at most once: -> how many renewed.
function M.renewals(procs, calls)
  local renewed_by = 0
  for _, p in ipairs(procs) do
    local out = p:read("*a")
    p:close()
    assert(out:match("^OK " .. calls .. " renewals [01]\n$"), "a worker said: " .. out)
    renewed_by = renewed_by + tonumber(out:match("renewals (%d)"))
  end
  return renewed_by
end

---------------------------------------------------------------- the portal

-- Starts a portal; config overrides the portal defaults (rate, burst, ...).
-- tls = {cert = PATH, key = PATH} serves HTTPS instead.
function M.start(config, tls)
  local port_file = helpers.tmp_path("portal-port") -- written whole (renamed into place)
  local log_file = helpers.tmp_path("portal-log")
  local pid = helpers.spawn(("%s %s/spec/portal/portal.lua %s %s"):format(helpers.runtime, helpers.top, port_file,
    tls and (tls.cert .. " " .. tls.key) or ""), log_file)
  local port = helpers.poll(function() return tonumber(helpers.read_file(port_file) or "") end, 10, 0.01)
  os.remove(port_file)
  assert(port, "the test portal did not start; see " .. log_file)
  local self = setmetatable({ port = port, pid = pid, log_file = log_file, http = http.new(),
    base = (tls and "https" or "http") .. "://127.0.0.1:" .. port, ca_file = tls and tls.cert }, Portal)
  self.webhook = self.base .. "/rest/1/hooksecret/"
  self.portal_url = self.base
  self.oauth_url = self.base .. "/oauth/token/"
  self.client_id, self.client_secret = "local.test.app", "appsecret"
  self.access_token, self.refresh_token = "initial-access", "initial-refresh"
  if config then self:reset(config) end
  return self
end

function Portal:control(cmd)
  local res, err = self.http:request { method = "POST", url = self.base .. "/_control", ca_file = self.ca_file,
    headers = { ["Content-Type"] = "application/json" }, body = J.encode(cmd), timeout = 10 }
  assert(res, err and tostring(err))
  assert(res.status == 200, res.body)
  return J.decode(res.body)
end

-- Everything the portal counted, plus its objects keyed by string id.
function Portal:stats()
  local res, err = self.http:request { url = self.base .. "/_control/stats", timeout = 10, ca_file = self.ca_file }
  assert(res, err and tostring(err))
  return assert(J.decode(res.body))
end

-- Resets state, counters and faults (the OAuth tokens given at start stay valid).
function Portal:reset(config)
  self:control({ action = "reset", config = config })
  self:control({ action = "tokens", access_token = "initial-access", refresh_token = "initial-refresh" })
end

function Portal:fault(f) return self:control({ action = "fault", fault = f }) end

-- Options for biconnector.rest.new that authenticate as the test application.
function Portal:oauth_options(extra)
  local o = { portal = self.base, access_token = self.access_token, refresh_token = self.refresh_token,
    client_id = self.client_id, client_secret = self.client_secret, oauth_url = self.oauth_url }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- A webhook client of this portal, quick to back off and unlimited by rate
-- (the specs that test the limiter set their own), extra options over those.
function Portal:webhook_client(extra)
  local o = { webhook = self.webhook, backoff_base = 0.01, rate = 1000, burst = 1000 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(require("biconnector.rest").new(o))
end

function Portal:stop()
  if self.stopped then return end
  self.stopped = true
  pcall(self.control, self, { action = "stop" })
  self.http:close()
  if self.pid then os.execute("kill " .. self.pid .. " 2>/dev/null") end
  os.remove(self.log_file)
end

return M
