-- `serve --app`: the uninstall event arriving while a helper is still
-- registering (docs/app.md, "Events"). A real `biconnector serve ... --app`
-- over HTTPS on loopback, the local portal (spec/portal) as Bitrix24, not
-- revoking the tokens at uninstall (uninstall_revokes = false: a portal that
-- keeps them valid, or the moment before Bitrix24 revokes them). The helper's
-- first call is held by the portal until the uninstall is done; its next call
-- answers expired_token. Before the fix the helper renewed its pair and wrote
-- it back into the uninstalled store, which then looked installed again.
local S = require "serve_helpers"
local A = require "app_helpers"
local helpers = require "helpers"
local cjson = require "cjson"

for _, kind in ipairs({ "file", "redis" }) do
  describe("serve --app (" .. kind .. " token store): the uninstall while a helper registers", function()
    local dir, cert, key, db, portal
    A.world_hooks(function(...) dir, cert, key, db, portal = ... end)

    -- serve --app installed and registered, then SIGHUP; the portal holds the helper's first
    -- call while it uninstalls the application; with `expired`, the next call answers
    -- expired_token. -> the handle, the install answer, the store's reader, the log at the helper's end
    local function uninstalled_while_registering(expired)
      local env, read
      if kind == "redis" then
        local X = require "scale_helpers"
        local why = X.redis_missing()
        if why then
          io.stderr:write("\n*** SKIPPED: serve --app with Redis: " .. why .. "\n")
          pending("SKIPPED: " .. why)
          return nil
        end
        local redis = X.start_redis()
        finally(function() redis.stop() end)
        env = { BITRIX24_TOKENS_FILE = false, BITRIX24_TOKENS_REDIS = "redis://127.0.0.1:" .. redis.port,
          BITRIX24_TOKENS_KEY = "bic:race" }
        read = function() local text = redis.command("GET bic:race") return text and text ~= "" and cjson.decode(text) or nil end
      end
      portal:control({ action = "config", config = { uninstall_revokes = false } })
      local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, env = env,
        args = { "--portal", "127.0.0.1:" .. portal.port } })
      finally(function() S.stop(h) end)
      read = read or function() return A.read_json(h.tokens_file) end
      local r = portal:control({ action = "install", url = h.install_url })
      assert.equals(200, r.status, r.body)
      A.wait_log(h, "INFO registered ", 1) -- (the ONAPPUNINSTALL handler is bound now)
      assert.equals(0, portal:stats().stats.renewals)
      -- SIGHUP registers again: its first call is held by the portal, the next one answers expired_token
      local fields = "biconnector.connector.fields"
      local before = portal:stats().stats.received[fields] or 0
      portal:fault({ kind = "delay", method = fields, delay = 4 })
      if expired then portal:fault({ kind = "expired", method = "*" }) end
      os.execute("kill -HUP " .. h.pid)
      assert(helpers.poll(function() return (portal:stats().stats.received[fields] or 0) > before end, 20, 0.02),
        "the helper did not call " .. fields)
      -- the portal uninstalls the application while the helper waits for that answer
      local un = portal:control({ action = "uninstall" })
      assert.equals(200, un.calls[1].status, un.calls[1].body)
      local gone = read()
      assert.is_nil(gone.access_token, cjson.encode(gone))
      assert.truthy(gone.uninstalled_at)
      -- the helper goes on (its next call answering expired_token, or not) and ends
      local log
      assert(helpers.poll(function()
        log = S.stderr(h)
        return A.count(log, "INFO registered ") >= 2 or log:find("registration failed", 1, true)
          or log:find("the installation is gone", 1, true)
      end, 30, 0.05), "the helper did not end")
      return h, r, read, log
    end

    it("leaves the store uninstalled: the helper renews nothing, writes nothing back and stops with an info line", function()
      local h, r, read, log = uninstalled_while_registering(true)
      if not h then return end
      local stored = read()
      -- (before: the renewed pair was written back, the store installed again)
      assert.is_nil(stored.access_token, cjson.encode(stored))
      assert.is_nil(stored.refresh_token)
      assert.is_nil(stored.registration)
      assert.truthy(stored.uninstalled_at)
      assert.equals(0, portal:stats().stats.renewals) -- no refresh token spent for an installation that is gone
      local line = log:match("[^\n]*the installation is gone[^\n]*")
      assert.truthy(line, log)
      assert.matches(" INFO ", line, 1, true)
      assert.matches("uninstalled", line, 1, true)
      assert.equals(1, A.count(log, "INFO registered "))
      assert.equals(0, A.count(log, "registration failed"))
      -- the status page says so too
      local page = A.request(h.install_url, "GET", nil, nil, cert)
      assert.matches("Not installed: uninstalled from", page.body, 1, true)
      -- the uninstall event again is still taken as a repeat
      local again = A.post_form(h.event_url, "event=ONAPPUNINSTALL&auth[application_token]=" .. r.sent.auth.application_token
        .. "&auth[member_id]=localmember", cert)
      assert.equals(200, again.status, again.body)
    end)

    it("a registration that ends after the uninstall writes no record into the uninstalled store", function()
      local h, _, read, log = uninstalled_while_registering(false)
      if not h then return end
      local stored = read()
      -- (before: the registration's record went into the uninstalled store)
      assert.is_nil(stored.registration, cjson.encode(stored))
      assert.is_nil(stored.access_token)
      assert.truthy(stored.uninstalled_at)
      assert.matches(" INFO [^\n]*the installation is gone", log)
      assert.equals(1, A.count(log, "INFO registered "))
    end)
  end)
end
