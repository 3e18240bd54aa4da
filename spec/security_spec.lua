-- Claims of docs/security.md that no other spec shows: serve listens on
-- loopback unless told otherwise, libcurl speaks only http and https, and a
-- form body over the variable limit is refused with a 400; and every spec the
-- page names exists.
local serve = require "biconnector.serve"
local request = require "biconnector.request"
local http = require("biconnector.core").http

describe("docs/security.md", function()
  it("names only specs that exist", function()
    local helpers = require "helpers"
    local f = assert(io.open(helpers.top .. "/docs/security.md"))
    local text = f:read("*a")
    f:close()
    local named = 0
    for path in text:gmatch("`(spec/[%w_/]+%.lua)`") do
      named = named + 1
      assert.is_true(helpers.exists(helpers.top .. "/" .. path), "docs/security.md names " .. path)
    end
    assert.is_true(named > 20, "found only " .. named .. " spec names")
  end)

  it("serve listens on 127.0.0.1:8080 unless --listen says otherwise", function()
    local o = assert(serve.parse_args({ "connector.lua" }))
    assert.equal("127.0.0.1", o.host)
    assert.equal(8080, o.port)
  end)

  it("the REST transport refuses every protocol but http and https", function()
    local h = http.new()
    for _, url in ipairs({ "file:///etc/passwd", "ftp://127.0.0.1/", "gopher://127.0.0.1/", "dict://127.0.0.1/" }) do
      local res, err = h:request { url = url }
      assert.is_nil(res, url)
      assert.equal(1, err.code, url .. ": " .. tostring(err)) -- CURLE_UNSUPPORTED_PROTOCOL
    end
    h:close()
  end)

  it("a form body with more variables than request.FORM_MAX_VARS is a 400", function()
    local n = request.FORM_MAX_VARS
    local body = ("a[]=1&"):rep(n) .. "table=x"
    local req, err = request.decode { method = "POST", path = "/data", body = body,
      headers = { ["content-type"] = "application/x-www-form-urlencoded" } }
    assert.is_nil(req)
    assert.equal(400, err.status)
    assert.matches("more than " .. n .. " variables", err.message, 1, true)
    assert.is_truthy(request.decode { method = "POST", path = "/data", body = ("a[]=1&"):rep(n - 1) .. "table=x",
      headers = { ["content-type"] = "application/x-www-form-urlencoded" } })
  end)
end)
