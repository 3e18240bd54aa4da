-- Robustness of `biconnector serve`: bad requests, stalls, disconnects and
-- failing handlers; after each, a valid request succeeds and the server lives.
local helpers = require "helpers"
local S = require "serve_helpers"
local socket = require "socket"
local cjson = require "cjson"

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local JSON = { ["Content-Type"] = "application/json" }

describe("biconnector serve robustness (demo connector)", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0",
      "--max-body", "65536", "--timeout", "1" }))
  end)
  teardown(function()
    local rc = S.stop(h)
    assert.equals(0, rc) -- never crashed, stopped cleanly on SIGTERM
  end)

  local function valid_request_succeeds()
    local r = assert(S.request(h.port, "POST", "/data",
      "connection[token]=demo-token&table=deals&limit=2", FORM))
    assert.equals(200, r.status)
    assert.equals(3, #cjson.decode(r.body))
    assert.is_true(S.alive(h.pid))
  end

  local function json_error(r, status)
    assert.equals(status, r.status)
    assert.matches("json", r.headers["content-type"])
    local e = cjson.decode(r.body)
    assert.is_string(e.error)
    return e
  end

  it("a malformed JSON body gets 400", function()
    local r = assert(S.request(h.port, "POST", "/data", '{"connection": {"token": "demo-token"', JSON))
    json_error(r, 400)
    valid_request_succeeds()
  end)

  it("a malformed form body gets 400", function()
    local r = assert(S.request(h.port, "POST", "/table_list",
      "connection[token]=demo-token&a" .. ("[x]"):rep(100) .. "=1", FORM))
    json_error(r, 400)
    local r2 = assert(S.request(h.port, "POST", "/table_list", "connection=not-an-object", FORM))
    json_error(r2, 400)
    valid_request_succeeds()
  end)

  it("a body over --max-body gets 413 with a JSON body", function()
    local r = assert(S.request(h.port, "POST", "/data",
      "connection[token]=demo-token&table=deals&pad=" .. ("x"):rep(70000), FORM))
    assert.equals("payload_too_large", json_error(r, 413).error)
    valid_request_succeeds()
  end)

  it("a request that sends headers and stalls is dropped after the idle timeout", function()
    local c = helpers.connect(h.port, 10)
    c:send("POST /data HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nconnection")
    valid_request_succeeds() -- others are served meanwhile
    local started = socket.gettime()
    local data = c:receive("*a")
    c:close()
    assert.equals("", data or "")
    assert.is_true(socket.gettime() - started < 8)
    valid_request_succeeds()
  end)

  it("a body shorter than its Content-Length, then a hang-up, harms nothing", function()
    local c = helpers.connect(h.port, 5)
    c:send("POST /data HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nconnection[token]=demo")
    c:close()
    valid_request_succeeds()
  end)

  it("an unknown path gets 404 and a GET gets 405", function()
    json_error(assert(S.request(h.port, "POST", "/nowhere", "connection[token]=demo-token", FORM)), 404)
    json_error(assert(S.request(h.port, "GET", "/data")), 405)
    valid_request_succeeds()
  end)

  -- the query string starts at a raw ? and a fragment at a raw #; encoded,
  -- they are bytes of the path (which names no endpoint)
  it("an encoded ? or # in the path is a 404 naming it, a real query string is ignored", function()
    for path, named in pairs({ ["/check%3Fx"] = "/check?x", ["/check%23x"] = "/check#x", ["/check%3F"] = "/check?",
                               ["/check/%3F"] = "/check/?", ["/check%23x#frag"] = "/check#x",
                               ["/check%23x%23y#z"] = "/check#x#y", ["http://127.0.0.1/check%3Fx"] = "/check?x" }) do
      local e = json_error(assert(S.request(h.port, "POST", path, "connection[token]=demo-token", FORM)), 404)
      assert.same({ error = "not_found", message = "no such endpoint: " .. named }, e, path)
    end
    for _, path in ipairs({ "/check?x=1", "/check#frag", "/check?x=%3F#y", "/check#a%23b" }) do
      local r = assert(S.request(h.port, "POST", path, "connection[token]=demo-token", FORM))
      assert.equals(200, r.status, path)
    end
  end)

  it("a client that disconnects in the middle of a large answer stops its stream", function()
    local c = helpers.connect(h.port, 10)
    local body = "connection[token]=demo-token&table=deals_5m"
    c:send("POST /data HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n" ..
      "Content-Length: " .. #body .. "\r\n\r\n" .. body)
    assert(c:receive(300000))
    c:close()
    local line = helpers.poll(function() return S.stderr(h):match("[^\n]*table=deals_5m[^\n]*") end, 5)
    assert.is_not_nil(line, "no access line for the abandoned answer")
    assert.matches("status=200", line)
    assert.is_nil(line:find("end=ok", 1, true))
    assert.matches(" end=aborted", line)
    local rows = tonumber(line:match("rows=(%d+)"))
    assert.is_true(rows < 5000000, line)
    valid_request_succeeds()
  end)
end)

describe("biconnector serve with failing handlers", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ "spec/serve_fixture_connector.lua", "--listen", "127.0.0.1:0" }))
  end)
  teardown(function() assert.equals(0, S.stop(h)) end)

  local function valid_request_succeeds()
    local r = assert(S.request(h.port, "POST", "/data", '{"connection":{"token":"t0k3n"},"table":"numbers"}'))
    assert.equals(200, r.status)
    assert.equals(101, #cjson.decode(r.body))
  end

  it("a handler that raises answers 500 with a JSON error, and the next request succeeds", function()
    local r = assert(S.request(h.port, "POST", "/table_list", "connection[token]=t0k3n&searchString=boom", FORM))
    assert.equals(500, r.status)
    assert.matches("json", r.headers["content-type"])
    assert.is_string(cjson.decode(r.body).error)
    valid_request_succeeds()
    local log = S.stderr(h)
    assert.matches("tables raised on purpose", log)
    assert.is_nil(log:find("t0k3n", 1, true)) -- the token never reaches the log
  end)

  it("a data iterator that raises mid-stream cuts that answer only", function()
    local rows, err = S.stream_rows(h.port, "/data", "connection[token]=t0k3n&table=broken", FORM)
    assert.is_nil(rows)
    assert.is_string(err)
    valid_request_succeeds()
    assert.matches("data iterator raised on purpose", S.stderr(h))
  end)
end)
