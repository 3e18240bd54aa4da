-- `biconnector call` against the local portal.
local helpers = require "helpers"
local control = require "portal.control"
local json = require "biconnector.json"

describe("biconnector call", function()
  local portal
  setup(function() portal = control.start({ rate = 1000, burst = 1000 }) end)
  teardown(function() portal:stop() end)

  local function run(env, args)
    local p = io.popen(("%s %s %s/bin/biconnector call %s 2>&1; echo \"exit=$?\""):format(env, helpers.runtime, helpers.top, args))
    local out = p:read("*a")
    p:close()
    local body, code = out:match("^(.-)exit=(%d+)\n$")
    return body, tonumber(code)
  end
  local function runtime_env(extra) return extra .. " " .. "BIC_BUILD=" .. helpers.build end

  it("calls a method with a webhook and prints the result as JSON", function()
    local out, code = run(runtime_env("BITRIX24_WEBHOOK=" .. portal.webhook), "test.echo '{\"a\": [1, 2]}'")
    assert.equal(0, code)
    assert.same({ 1, 2 }, json.decode(out).a)
  end)

  it("iterates every page with --all, using OAuth from the environment", function()
    portal:control({ action = "seed", items = 120 })
    local env = runtime_env(("BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access"):format(portal.base))
    local out, code = run(env, "test.items.list --all")
    assert.equal(0, code)
    assert.equal(120, #json.decode(out))
  end)

  it("prints an empty list as [] with --all, as without it", function()
    local env = runtime_env(("BITRIX24_PORTAL=%s BITRIX24_ACCESS_TOKEN=initial-access"):format(portal.base))
    local out, code = run(env, "biconnector.source.list --all")
    assert.equal(0, code)
    assert.equal("[]\n", out)
    out, code = run(env, "biconnector.source.list")
    assert.equal(0, code)
    assert.equal("[]\n", out)
  end)

  it("says that the biconnector methods refuse webhooks when one answers ACCESS_DENIED to a webhook", function()
    local out, code = run(runtime_env("BITRIX24_WEBHOOK=" .. portal.webhook), "biconnector.connector.list")
    assert.equal(1, code)
    assert.matches("ACCESS_DENIED", out)
    assert.matches("the biconnector methods refuse incoming webhooks", out, 1, true)
    assert.matches("BITRIX24_PORTAL and BITRIX24_ACCESS_TOKEN", out, 1, true)
  end)

  it("fails with the error, masked, and exit code 1; usage errors exit 2", function()
    local out, code = run(runtime_env("BITRIX24_WEBHOOK=" .. portal.base .. "/rest/1/wrongcode/"), "profile")
    assert.equal(1, code)
    assert.matches("NO_AUTH_FOUND", out)
    assert.is_nil(out:find("wrongcode", 1, true))
    out, code = run(runtime_env("BITRIX24_WEBHOOK=" .. portal.webhook), "profile '[1'")
    assert.equal(2, code)
    assert.matches("JSON parameters", out)
    code = select(2, run(runtime_env("BITRIX24_WEBHOOK="), ""))
    assert.equal(2, code)
  end)

  -- `call METHOD [JSON] [--all] [--raw]`: an option it does not know (a typo of --all)
  -- was taken for the METHOD, or for JSON and refused as a bad number.
  it("refuses an unknown option as such (exit 2, nothing sent)", function()
    local before = portal:stats().stats.http_requests
    for _, args in ipairs({ "profile --alll", "--raw2 profile", "crm.deal.list '{}' --bogus" }) do
      local out, code = run(runtime_env("BITRIX24_WEBHOOK=" .. portal.webhook), args)
      assert.equal(2, code, out)
      assert.matches("biconnector call: unknown option '%-%-%a+%d?'", out)
      assert.matches("Usage: biconnector call METHOD", out, 1, true)
    end
    assert.equal(before + 1, portal:stats().stats.http_requests) -- only the stats request itself
  end)

  it("refuses a JSON array as the parameters (exit 2, nothing sent); [] is no parameters", function()
    local before = portal:stats().stats.http_requests
    local out, code = run(runtime_env("BITRIX24_WEBHOOK=" .. portal.webhook), "test.echo '[1, 2]'")
    assert.equal(2, code)
    assert.matches("must be an object", out)
    assert.equal(before + 1, portal:stats().stats.http_requests) -- only the stats request itself
    out, code = run(runtime_env("BITRIX24_WEBHOOK=" .. portal.webhook), "profile '[]'")
    assert.equal(0, code)
    assert.equal("1", json.decode(out).ID)
  end)
end)
