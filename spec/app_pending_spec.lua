-- `serve --app`: an installation callback for an installation already verified
-- is kept pending beside it until its tokens prove genuine (docs/app.md, "The
-- token store": pending_install). A real `biconnector serve ... --app` over
-- HTTPS on loopback, the local portal (spec/portal) as Bitrix24, forged
-- callbacks made by hand. Before the fix a forged callback with the installed
-- member_id replaced the verified pair at once, and once it proved forged the
-- genuine tokens were discarded with it: the server could not call the portal
-- any more until someone reinstalled.
local S = require "serve_helpers"
local A = require "app_helpers"
local cjson = require "cjson"

-- `biconnector call METHOD` on the token store, as an operator would: -> exit code, output
local function call(dir, method) return A.cli(dir, "call " .. method) end

-- A callback anyone can send: the installed portal's domain, endpoint and
-- member_id, with made-up tokens.
local function forged_body(portal, n)
  return ("event=ONAPPINSTALL&auth[access_token]=forgedacc%d&auth[refresh_token]=forgedref%d&auth[domain]=127.0.0.1:%d"
    .. "&auth[client_endpoint]=http://127.0.0.1:%d/rest/&auth[member_id]=localmember&auth[application_token]=forgedapp%d")
    :format(n, n, portal.port, portal.port, n)
end

for _, mode in ipairs({ "OAuth server", "--portal" }) do
  describe("serve --app (" .. mode .. "): a callback for a verified installation", function()
    local dir, cert, key, db, portal
    A.world_hooks(function(...) dir, cert, key, db, portal = ... end)

    -- serve --app, installed by the portal and registered -> handle, install answer, the stored state
    local function installed()
      local args = mode == "--portal" and { "--portal", "127.0.0.1:" .. portal.port } or nil
      local h = A.serve({ dir = dir, db = db, cert = cert, key = key, portal = portal, args = args })
      finally(function() S.stop(h) end)
      local r = portal:control({ action = "install", url = h.install_url })
      assert.equals(200, r.status, r.body)
      A.wait_log(h, "INFO registered ", 1)
      local stored = A.read_json(h.tokens_file)
      assert.truthy(stored.verified_at, cjson.encode(stored))
      return h, r, stored
    end

    it("made-up tokens with the installed member_id do not replace the verified pair", function()
      local h, _, genuine = installed()
      local res = A.post_form(h.install_url, forged_body(portal, 1), cert)
      -- answered at once, as Bitrix24 expects, and the same way as any installation
      assert.equals(200, res.status, res.body)
      assert.same({ status = "installed", portal = "127.0.0.1:" .. portal.port }, cjson.decode(res.body))
      local log = A.wait_log(h, "not genuine", 1)
      local stored = A.read_json(h.tokens_file)
      -- (before: the forged pair replaced it and was then discarded, tokens and all)
      assert.equals(genuine.access_token, stored.access_token, cjson.encode(stored))
      assert.equals(genuine.refresh_token, stored.refresh_token)
      assert.equals(genuine.application_token, stored.application_token)
      assert.equals(genuine.verified_at, stored.verified_at)
      assert.is_nil(stored.pending_install)
      assert.is_nil(stored.refused_at)
      assert.matches("installation callback kept pending", log, 1, true)
      assert.matches("the pending installation callback is not genuine", log, 1, true)
      -- the store still works for the portal's REST
      local rc, out = call(dir, "profile")
      assert.equals(0, rc, out)
      assert.matches("Test", out, 1, true)
      local objects = A.objects(portal)
      assert.same({ 1, 1 }, { objects.connectors, objects.sources })
      assert.equals(1, A.count(log, "INFO registered "))
      for _, s in ipairs({ "forgedacc1", "forgedref1", "forgedapp1", genuine.access_token, genuine.refresh_token }) do
        assert.is_nil(log:find(s, 1, true), "a token reached the log: " .. s)
      end
      -- and the uninstall event with the genuine application_token is still taken
      local un = portal:control({ action = "uninstall" })
      assert.equals(200, un.calls[1].status, un.calls[1].body)
      assert.truthy(A.read_json(h.tokens_file).uninstalled_at)
    end)

    it("a genuine reinstall (new tokens from the portal) replaces the pair and the application_token, nothing registered twice", function()
      local h, first, genuine = installed()
      local renewals = portal:stats().stats.renewals
      local r = portal:control({ action = "install", url = h.install_url })
      assert.equals(200, r.status, r.body)
      local log = A.wait_log(h, "INFO registered ", 2)
      assert.matches("installation callback kept pending", log, 1, true)
      assert.matches("the pending installation callback is genuine", log, 1, true)
      assert.matches('"connector 1: unchanged', log, 1, true)
      local stored = A.read_json(h.tokens_file)
      assert.is_nil(stored.pending_install, cjson.encode(stored))
      assert.are_not.equal(first.sent.auth.application_token, r.sent.auth.application_token)
      assert.equals(r.sent.auth.application_token, stored.application_token)
      assert.are_not.equal(genuine.access_token, stored.access_token)
      assert.are_not.equal(genuine.refresh_token, stored.refresh_token)
      if mode == "--portal" then
        -- the portal judged the new pair: taken as sent, nothing renewed
        assert.equals(r.sent.auth.access_token, stored.access_token)
        assert.equals(renewals, portal:stats().stats.renewals)
      else
        -- the OAuth server renewed the new pair: the installation holds what it answered
        assert.equals(renewals + 1, portal:stats().stats.renewals)
      end
      assert.truthy(stored.verified_at)
      local objects = A.objects(portal)
      assert.same({ 1, 1 }, { objects.connectors, objects.sources })
      -- the uninstall event now carries the new application_token: it is taken
      local un = portal:control({ action = "uninstall" })
      assert.equals(200, un.calls[1].status, un.calls[1].body)
      assert.is_nil(A.read_json(h.tokens_file).access_token)
      local output = S.stderr(h) .. S.stdout(h)
      for _, t in ipairs({ first.sent.auth, r.sent.auth, genuine, stored }) do
        for _, k in ipairs({ "access_token", "refresh_token", "application_token" }) do
          assert.is_nil(output:find(t[k], 1, true), "a token reached the log: " .. k)
        end
      end
    end)

    it("the installation's own callback again (a retry) changes nothing and spends no refresh token", function()
      local h, first, genuine = installed()
      local renewals = portal:stats().stats.renewals
      local parts = { "event=ONAPPINSTALL" }
      for k, v in pairs(first.sent.auth) do parts[#parts + 1] = ("auth[%s]=%s"):format(k, v) end
      -- (after a first verification by renewal the stored pair is the renewed one: send that)
      local body = table.concat(parts, "&"):gsub("auth%[access_token%]=[^&]*", "auth[access_token]=" .. genuine.access_token)
        :gsub("auth%[refresh_token%]=[^&]*", "auth[refresh_token]=" .. genuine.refresh_token)
      assert.equals(200, A.post_form(h.install_url, body, cert).status)
      A.wait_log(h, "installation callback repeats the installation's tokens", 1)
      local stored = A.read_json(h.tokens_file)
      assert.equals(genuine.access_token, stored.access_token)
      assert.equals(genuine.refresh_token, stored.refresh_token)
      assert.is_nil(stored.pending_install)
      assert.equals(renewals, portal:stats().stats.renewals)
      assert.equals(1, A.count(S.stderr(h), "application helper started"))
      local rc, out = call(dir, "profile")
      assert.equals(0, rc, out)
    end)

    it("the installation's first callback again after its pair was renewed is told as a repeat, not as a forgery", function()
      local h, first, genuine = installed()
      local parts = { "event=ONAPPINSTALL" }
      for k, v in pairs(first.sent.auth) do parts[#parts + 1] = ("auth[%s]=%s"):format(k, v) end
      assert.equals(200, A.post_form(h.install_url, table.concat(parts, "&"), cert).status)
      -- (with --portal the proof spent no refresh token: the pair is the callback's own)
      local renewed = genuine.refresh_token ~= first.sent.auth.refresh_token
      local log = A.wait_log(h, renewed and "repeats the verified installation's callback"
        or "installation callback repeats the installation's tokens", 1)
      assert.equals(0, A.count(log, "not genuine"), log)
      local stored = A.read_json(h.tokens_file)
      assert.equals(genuine.access_token, stored.access_token)
      assert.equals(genuine.refresh_token, stored.refresh_token)
      assert.is_nil(stored.pending_install)
      local rc, out = call(dir, "profile")
      assert.equals(0, rc, out)
    end)

    it("an uninstall event with a reinstall's new application_token, sent while that callback is still being proven, is taken", function()
      local core = require "biconnector.core"
      local h = installed()
      -- the reinstall's helper held back by the registration lock: its callback stays pending
      local reg_lock = assert(core.http.lock(h.tokens_file .. ".register.lock"))
      local r = portal:control({ action = "install", url = h.install_url })
      assert.equals(200, r.status, r.body)
      local token = r.sent.auth.application_token
      assert.equals(token, A.read_json(h.tokens_file).pending_install.application_token)
      -- (before: 403 at once, the installation's token being still the old one)
      reg_lock:unlock()
      local res = A.post_form(h.event_url, "event=ONAPPUNINSTALL&auth[application_token]=" .. token
        .. "&auth[member_id]=localmember", cert)
      assert.equals(200, res.status, res.body)
      assert.same({ status = "uninstalled" }, cjson.decode(res.body))
      local stored = A.read_json(h.tokens_file)
      assert.is_nil(stored.access_token, cjson.encode(stored))
      assert.truthy(stored.uninstalled_at)
    end)

    it("a second callback while one is pending replaces the pending one", function()
      local core = require "biconnector.core"
      local h, _, genuine = installed()
      -- the order, made certain with the registration lock the helpers take: a forged
      -- callback is kept pending, then a genuine reinstall replaces it before any helper runs
      local reg_lock = assert(core.http.lock(h.tokens_file .. ".register.lock"))
      assert.equals(200, A.post_form(h.install_url, forged_body(portal, 2), cert).status)
      assert.equals("forgedacc2", A.read_json(h.tokens_file).pending_install.access_token)
      local r = portal:control({ action = "install", url = h.install_url })
      assert.equals(200, r.status, r.body)
      local stored = A.read_json(h.tokens_file)
      assert.equals(r.sent.auth.application_token, stored.pending_install.application_token)
      assert.equals(genuine.access_token, stored.access_token)
      -- the status page says one is being verified, the installation still the one it was
      local page = A.request(h.install_url, "GET", nil, nil, cert)
      assert.matches("Installed for the portal <b>127.0.0.1:" .. portal.port, page.body, 1, true)
      assert.matches("A new installation callback is being verified.", page.body, 1, true)
      reg_lock:unlock()
      A.wait_log(h, "INFO registered ", 2)
      -- the forged callback's own helper finds nothing pending any more
      local log = A.wait_log(h, "no installation callback is pending any more", 1)
      assert.equals(0, A.count(log, "not genuine"))
      stored = A.read_json(h.tokens_file)
      assert.equals(r.sent.auth.application_token, stored.application_token)
      assert.is_nil(stored.pending_install)
      assert.equals(1, A.objects(portal).connectors)
    end)
  end)
end
