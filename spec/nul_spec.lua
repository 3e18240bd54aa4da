-- A %00 in a query string or a form body is kept (values) or refused with a
-- clear 400 (names, query arguments): never silently cut at the NUL byte.
local S = require "serve_helpers"
local cjson = require "cjson"
local request = require "biconnector.request"

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local function decode(body)
  return request.decode { method = "POST", path = "/data", headers = { ["content-type"] = FORM["Content-Type"] },
    body = body }
end

-- Each { body, message }: decode refuses the body with a 400 and that message.
local function refuses(cases)
  for _, case in ipairs(cases) do
    local req, err = decode(case[1])
    assert.is_nil(req, case[1])
    assert.equals(400, err.status)
    assert.equals(case[2], err.message)
  end
end

describe("%00 in a form body (request.decode)", function()
  it("keeps a NUL byte inside a value", function()
    local req = assert(decode("connection[token]=a%00b&table=t&searchString=s%00&filter[ID]=x%00"))
    assert.equals("a\0b", req.connection.token)
    assert.equals("s\0", req.search)
    assert.equals("x\0", req.filter_raw.ID)
  end)

  it("refuses a NUL byte inside a table or field code with a 400 that names it (issue 20)", function()
    refuses {
      { "table=t%00u", 'table: the code "t\\0u" holds a control byte (0x00 at byte 2); table and field codes never do' },
      { "table=t&select[]=x%00", 'select[1]: the code "x\\0" holds a control byte (0x00 at byte 2); table and field codes never do' },
    }
  end)

  it("refuses a NUL byte inside a name with a 400 that says where", function()
    refuses {
      { "connection[tok%00en]=ab&table=x", "body: the name 'connection[tok%00en]' at byte 15 holds an encoded NUL byte (%00)" },
      { "table=x&a%00", "body: the name 'a%00' at byte 10 holds an encoded NUL byte (%00)" },
      { "table=x&filter[%00ID]=1", "body: the name 'filter[%00ID]' at byte 16 holds an encoded NUL byte (%00)" },
    }
  end)
end)

describe("%00 over HTTP (biconnector serve)", function()
  local h
  setup(function()
    h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0" }))
  end)
  teardown(function() assert.equals(0, S.stop(h)) end)

  it("a value is compared whole: a token followed by %00 is a wrong token", function()
    local ok = assert(S.request(h.port, "POST", "/check", "connection[token]=demo-token", FORM))
    assert.equals(200, ok.status)
    local r = assert(S.request(h.port, "POST", "/check", "connection[token]=demo-token%00", FORM))
    assert.equals(403, r.status) -- cut at the NUL it would be the right token
  end)

  it("a name with %00 gets 400 with the name in the message", function()
    local r = assert(S.request(h.port, "POST", "/check", "connection[token%00x]=demo-token", FORM))
    assert.equals(400, r.status)
    local e = cjson.decode(r.body)
    assert.equals("bad_request", e.error)
    assert.matches("connection[token%00x]", e.message, 1, true)
  end)

  it("a query argument with %00 (name or value) gets 400; the server stays up", function()
    for _, q in ipairs { "a=x%00y", "a%00b=1", "a=%00" } do
      local r = assert(S.request(h.port, "POST", "/check?" .. q, "connection[token]=demo-token", FORM))
      assert.equals(400, r.status, q)
      assert.same({ error = "bad_request",
        message = "query string: a name or value holds an encoded NUL byte (%00)" }, cjson.decode(r.body))
    end
    local r = assert(S.request(h.port, "POST", "/check?a=1&b=%41", "connection[token]=demo-token", FORM))
    assert.equals(200, r.status)
  end)
end)
