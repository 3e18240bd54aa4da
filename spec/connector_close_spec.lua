-- A data handler's close function (or to-be-closed value, or a cursor's own
-- close) is called exactly once however reading ends: all rows read, limit
-- reached, an error, an invalid answer, the client gone (built-in server).
-- The nginx side is in sql_ngx_spec.lua.
local helpers = require "helpers"
local connector = require "biconnector.connector"
local S = require "serve_helpers"
local cjson = require "cjson"

local FIELDS = { { code = "id", name = "ID", type = "int" } }

local function make(data)
  return connector.new {
    title = "T", settings = {}, check = function() return true end,
    tables = { { code = "t", title = "T" } }, describe = { t = FIELDS }, data = data,
  }
end

local function request(c, body)
  local status, text, _, info = helpers.post_json(c, "/data", body, { chunk_size = 64, log = function() end })
  if info.close then info.close() end -- what the servers do when the answer ends
  return status, text, info
end

local function counting()
  local n = 0
  return function() n = n + 1 end, function() return n end
end

local function rows_iter(count, fail_at)
  local i = 0
  return function()
    i = i + 1
    if fail_at and i == fail_at then error("boom at row " .. i) end
    if i <= count then return { id = i } end
  end
end

describe("data close", function()
  it("is called once after every row was read", function()
    local close, calls = counting()
    local status, text = request(make(function() return rows_iter(500), nil, close end), { table = "t" })
    assert.equals(200, status)
    assert.equals(501, #cjson.decode(text))
    assert.equals(1, calls())
  end)

  it("is called once when the limit stops reading early", function()
    local close, calls = counting()
    local status, text = request(make(function() return rows_iter(500), nil, close end), { table = "t", limit = 3 })
    assert.equals(200, status)
    assert.equals(4, #cjson.decode(text))
    assert.equals(1, calls())
  end)

  it("is called once when the iterator fails before and during streaming", function()
    local close, calls = counting()
    local status = request(make(function() return rows_iter(500, 2), nil, close end), { table = "t" })
    assert.equals(500, status)
    assert.equals(1, calls())
    local close2, calls2 = counting()
    status = request(make(function() return rows_iter(500, 300), nil, close2 end), { table = "t" })
    assert.equals(200, status) -- the stream was cut after the first chunks
    assert.equals(1, calls2())
  end)

  it("is called once for a list, and on an invalid answer", function()
    local close, calls = counting()
    assert.equals(200, (request(make(function() return { { id = 1 } }, nil, close end), { table = "t" })))
    assert.equals(1, calls())
    local close2, calls2 = counting()
    assert.equals(500, (request(make(function() return "nope", nil, close2 end), { table = "t" })))
    assert.equals(1, calls2())
  end)

  it("accepts a value with a close method or a __close metamethod", function()
    local n = 0
    local obj = { close = function() n = n + 1 end }
    request(make(function() return rows_iter(5), nil, obj end), { table = "t" })
    assert.equals(1, n)
    local tbc = setmetatable({}, { __close = function() n = n + 10 end })
    request(make(function() return rows_iter(5), nil, tbc end), { table = "t" })
    assert.equals(11, n)
  end)

  it("refuses a third result that cannot be closed", function()
    local status, text = request(make(function() return rows_iter(5), nil, 42 end), { table = "t" })
    assert.equals(500, status)
    assert.matches("the third result must be a close function", cjson.decode(text).message)
  end)

  it("calls a cursor's own close, and the cursor fills the encoder itself", function()
    local n, filled = 0, 0
    local cursor = {
      fill = function(_, enc, _, max_rows)
        local rows = {}
        for i = 1, math.min(max_rows or 10, 10 - filled) do rows[i] = { filled + i } end
        local added = #rows > 0 and enc:add_list(rows, 1, #rows) - 1 or 0
        filled = filled + added
        return added, filled >= 10
      end,
      close = function() n = n + 1 end,
    }
    local status, text = request(make(function() return cursor, { filter = true } end), { table = "t", limit = 4 })
    assert.equals(200, status)
    assert.same({ { "id" }, { 1 }, { 2 }, { 3 }, { 4 } }, cjson.decode(text))
    assert.equals(1, n)
  end)

  it("refuses a cursor that leaves the filter to the framework", function()
    local n = 0
    local cursor = { fill = function() return 0, true end, close = function() n = n + 1 end }
    local status, text = request(make(function() return cursor end), { table = "t", filter = { id = 1 } })
    assert.equals(500, status)
    assert.matches("a cursor must apply the filter", cjson.decode(text).message)
    assert.equals(1, n)
  end)

  it("answers connector.failure with its status and message", function()
    local status, text = request(make(function() error(connector.failure(503, "database is locked")) end),
      { table = "t" })
    assert.equals(503, status)
    local body = cjson.decode(text)
    assert.equals("service_unavailable", body.error)
    assert.equals("data: database is locked", body.message)
  end)
end)

describe("data close under biconnector serve", function()
  local dir
  setup(function() dir = helpers.tmpdir("close") end)
  teardown(function() helpers.rmdir(dir) end)

  it("is called once when the client goes away mid-stream", function()
    local file = dir .. "/c.lua"
    helpers.write_endless_connector(file, dir .. "/marks") -- rows that never end; close marks "closed"
    local h = S.start(S.serve_command({ file, "--listen", "127.0.0.1:0" }))
    local ok, err = pcall(function()
      local c = helpers.connect(h.port, 10)
      local body = '{"table":"t"}'
      c:send("POST /data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " .. #body
        .. "\r\n\r\n" .. body)
      assert(c:receive(100000)) -- streaming has started (the rows never end)
      c:close()
      -- the server notices at its next write; the access line follows the close
      local seen
      helpers.poll(function()
        seen = S.read_file(dir .. "/marks")
        return seen and S.stderr(h):find("endpoint=data", 1, true)
      end, 10, 0.025)
      assert.equals("closed\n", seen)
    end)
    S.stop(h)
    assert(ok, err)
    assert.equals("closed\n", S.read_file(dir .. "/marks"))
  end)
end)
