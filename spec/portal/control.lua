-- Start, drive and stop the local test portal (spec/portal/portal.lua) from a
-- spec. The portal runs as a separate process with the spec's own runtime.
local http = require("biconnector.core").http
local J = require "portal.jsonish"
local helpers = require "helpers"

local M = {}
local Portal = {}
Portal.__index = Portal

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

function Portal:stop()
  if self.stopped then return end
  self.stopped = true
  pcall(self.control, self, { action = "stop" })
  self.http:close()
  if self.pid then os.execute("kill " .. self.pid .. " 2>/dev/null") end
  os.remove(self.log_file)
end

return M
