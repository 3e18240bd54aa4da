-- Issue 20, point 8: under `serve --no-auth` and `serve --dev` every endpoint
-- applies the dev page's Host rule (an IP address, localhost, the --listen
-- host, names given with --allow-host): a web page whose name was rebound to
-- 127.0.0.1 (DNS rebinding) sends its own name as Host and gets 403, over
-- real HTTP to `bin/biconnector serve`. With a token the rule is off.
local S = require "serve_helpers"
local H = require "sql_helpers"
local helpers = require "helpers"
local cjson = require "cjson"
local dev = require "biconnector.dev"
local serve = require "biconnector.serve"

-- One raw request with the given Host line (nil: none, HTTP/1.0); -> status,
-- the decoded JSON answer (or the text).
local function ask(port, method, path, host, body)
  local c = helpers.connect(port, 30)
  local lines = { ("%s %s HTTP/%s"):format(method, path, host and "1.1" or "1.0"), "Connection: close",
    "Content-Type: application/json", "Content-Length: " .. #(body or "") }
  if host then lines[#lines + 1] = "Host: " .. host end
  c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  local raw = assert(c:receive("*a"))
  c:close()
  local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
  if head:lower():find("transfer%-encoding: chunked") then rest = assert(S.dechunk(rest)) end
  local ok, decoded = pcall(cjson.decode, rest)
  return tonumber(head:match("^HTTP/1%.%d (%d+)")), ok and decoded or rest
end

local ENDPOINTS = {
  { "POST", "/check", "{}" }, { "POST", "/table_list", "{}" },
  { "POST", "/table_description", '{"table":"orders"}' }, { "POST", "/data", '{"table":"orders"}' },
  { "GET", "/metrics" }, { "POST", "/nowhere", "{}" },
}

describe("the Host rule (dev.host_allowed, dev.host_names)", function()
  it("allows IP addresses, localhost and the given names, in any case, with any port", function()
    local names = dev.host_names({ "bi.example.com", "Intranet.", "127.0.0.1" })
    for _, h in ipairs({ "127.0.0.1:8080", "10.1.2.3", "[::1]:80", "[fe80::1]", "localhost", "LOCALHOST:1",
      "localhost.", "bi.example.com", "BI.Example.COM:8080", "bi.example.com.:443", "intranet", "INTRANET:1" }) do
      assert.is_true(dev.host_allowed(h, names), h)
    end
    for _, h in ipairs({ "evil.example", "bi.example.com.evil.example", "example.com", "intranet.evil",
      "localhost.evil.example", "127.0.0.1.nip.io", "", "a:b:c", "bi.example.com:x" }) do
      assert.is_false(dev.host_allowed(h, names), h)
    end
    assert.is_false(dev.host_allowed(nil, names))
    assert.is_false(dev.host_allowed("bi.example.com")) -- no names given: none allowed
  end)

  it("serve takes --allow-host NAME (repeatable, comma-separated) with --no-auth or --dev only", function()
    local o = assert(serve.parse_args({ "sqlite:///x.db", "--no-auth", "--allow-host", "a.example,b",
      "--allow-host=c-d.example" }))
    assert.same({ "a.example", "b", "c-d.example" }, o.allow_hosts)
    assert(serve.parse_args({ "c.lua", "--dev", "--allow-host", "a" }))
    local _, err = serve.parse_args({ "sqlite:///x.db", "--allow-host", "a" })
    assert.equals("--allow-host applies with --no-auth or --dev (the Host rule of docs/security.md)", err)
    _, err = serve.parse_args({ "sqlite:///x.db", "--no-auth", "--allow-host", "a.example:8080" })
    assert.equals("--allow-host expects a host name (letters, digits, '.', '-', '_'; no port), got 'a.example:8080'",
      err)
    _, err = serve.parse_args({ "sqlite:///x.db", "--no-auth", "--allow-host" })
    assert.equals("--allow-host needs a value", err)
  end)
end)

describe("serve --no-auth over real HTTP", function()
  if H.skip_without("sqlite", "spec/host_rule_spec.lua") then return end
  local dir, db, h
  setup(function()
    dir = H.tmpdir()
    db = dir .. "/host.db"
    H.sqlite(db, "CREATE TABLE orders (id INTEGER); INSERT INTO orders VALUES (1);")
    h = S.start(S.serve_command({ "sqlite://" .. db, "--no-auth", "--metrics", "--workers", "1",
      "--listen", "127.0.0.1:0", "--allow-host", "bi.example,Intranet", "--allow-host", "third.example" }))
  end)
  teardown(function() H.stop(h, dir) end)

  it("says the rule in its banner", function()
    assert.matches("Host rule (--no-auth, --dev): answers only a Host that is an IP address, localhost, "
      .. "bi.example, Intranet, third.example; others get 403", S.stdout(h), 1, true)
  end)

  -- the banner names the --listen host only when the rule does not take it anyway
  it("names localhost once in its banner with --listen localhost", function()
    local h2 = S.start(S.serve_command({ "sqlite://" .. db, "--no-auth", "--workers", "1", "--listen", "localhost:0" }))
    finally(function() S.stop(h2) end)
    assert.matches("Host rule (--no-auth, --dev): answers only a Host that is an IP address, localhost; "
      .. "others get 403", S.stdout(h2), 1, true)
  end)

  it("answers 403 with a clear JSON message to a foreign Host on every endpoint", function()
    for _, e in ipairs(ENDPOINTS) do
      for _, host in ipairs({ "evil.example:" .. h.port, "evil.example", "bi.example.evil.example",
        "127.0.0.1.nip.io:" .. h.port }) do
        local status, answer = ask(h.port, e[1], e[2], host, e[3])
        assert.equals(403, status, e[2] .. " " .. host)
        assert.equals("forbidden", answer.error)
        assert.equals("this server (--no-auth, --dev) answers only a Host that is an IP address, localhost, "
          .. "the --listen host or a name given with --allow-host (a guard against DNS rebinding), got "
          .. '"' .. host .. '"', answer.message)
      end
      -- no Host at all (HTTP/1.0): refused too
      local status, answer = ask(h.port, e[1], e[2], nil, e[3])
      assert.equals(403, status, e[2])
      assert.matches("got no Host header$", answer.message)
    end
  end)

  it("answers an IP address, localhost and the --allow-host names", function()
    for _, host in ipairs({ "127.0.0.1:" .. h.port, "localhost:" .. h.port, "LocalHost", "[::1]:" .. h.port,
      "bi.example", "BI.EXAMPLE.:8080", "intranet", "third.example:1" }) do
      for _, e in ipairs(ENDPOINTS) do
        local status = ask(h.port, e[1], e[2], host, e[3])
        assert.equals(e[2] == "/nowhere" and 404 or 200, status, e[2] .. " " .. host)
      end
    end
    local status, rows = ask(h.port, "POST", "/data", "bi.example", '{"table":"orders"}')
    assert.equals(200, status)
    assert.same({ { "id" }, { 1 } }, rows)
  end)

  it("logs each refusal as an access line ending in end=refused", function()
    ask(h.port, "POST", "/data", "logged.evil.example", '{"table":"orders"}')
    local log = S.stderr(h)
    assert.matches("127%.0%.0%.1 POST /data endpoint=%- table=%- status=403 rows=%- bytes=%d+ ms=[%d.]+ end=refused", log)
  end)
end)

describe("serve --dev over real HTTP", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ helpers.top .. "/examples/minimal.lua", "--dev", "--workers", "1",
      "--listen", "127.0.0.1:0", "--allow-host", "bi.example" }), { MINIMAL_TOKEN = "host-token" })
  end)
  teardown(function() if h then S.stop(h) end end)

  it("refuses a foreign Host on the connector's endpoints too, and on the page", function()
    for _, path in ipairs({ "/check", "/table_list", "/data" }) do
      local status, answer = ask(h.port, "POST", path, "evil.example", '{"connection":{"token":"host-token"}}')
      assert.equals(403, status, path)
      assert.matches("answers only a Host that is an IP address", answer.message, 1, true)
    end
    assert.equals(403, (ask(h.port, "GET", "/_dev/info", "evil.example")))
    assert.equals(403, (ask(h.port, "GET", "/", "evil.example")))
  end)

  it("answers an allowed Host, the page included", function()
    for _, host in ipairs({ "127.0.0.1", "bi.example:8080" }) do
      assert.equals(200, (ask(h.port, "POST", "/check", host, '{"connection":{"token":"host-token"}}')), host)
      local status, info = ask(h.port, "GET", "/_dev/info", host)
      assert.equals(200, status, host)
      assert.equals("Minimal example", info.title)
    end
  end)
end)

describe("serve with a token", function()
  if H.skip_without("sqlite", "spec/host_rule_spec.lua") then return end
  it("leaves the Host alone: the token guards every request", function()
    local dir = H.tmpdir()
    finally(function() H.rmdir(dir) end)
    H.sqlite(dir .. "/t.db", "CREATE TABLE orders (id INTEGER);")
    local h = S.start(S.serve_command({ "sqlite://" .. dir .. "/t.db", "--workers", "1", "--listen", "127.0.0.1:0" }),
      { BICONNECTOR_TOKEN = "tok" })
    finally(function() S.stop(h) end)
    assert.equals(200, (ask(h.port, "POST", "/check", "bi.example.com", '{"connection":{"token":"tok"}}')))
    assert.equals(403, (ask(h.port, "POST", "/check", "bi.example.com", '{"connection":{"token":"no"}}')))
    assert.is_nil(S.stdout(h):find("Host rule", 1, true))
  end)
end)
