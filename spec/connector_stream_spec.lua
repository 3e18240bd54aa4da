-- Streaming urlData answers through connector:handle: bounded memory and chunk
-- sizes, errors after streaming started, abandoned streams.
local connector = require "biconnector.connector"
local cjson = require "cjson"

local TOKEN = "stream-token-123"

local FIELDS = {
  { code = "id", name = "ID", type = "int" },
  { code = "name", name = "Name", type = "string" },
  { code = "amount", name = "Amount", type = "double" },
  { code = "day", name = "Day", type = "date" },
  { code = "at", name = "At", type = "datetime" },
}

-- Row i of the generated table; the same function checks the decoded answer.
local function make_row(i)
  return { id = i, name = "name " .. i, amount = i / 4, day = 86400 * (i % 20000), at = "2024-05-06 07:08:09" }
end

local function expected_cells(i)
  return { i, "name " .. i, i / 4, os.date("!%Y-%m-%d", 86400 * (i % 20000)), "2024-05-06 07:08:09" }
end

-- A connector whose "big" table yields n rows from an iterator.
local function big_connector(n, overrides)
  local def = {
    title = "Stream",
    settings = { { code = "token", name = "Token", type = "STRING" } },
    check = function(conn) return conn.token == TOKEN end,
    tables = { { code = "big", title = "Big" } },
    describe = { big = FIELDS },
    data = function()
      local i = 0
      return function()
        if i >= n then return nil end
        i = i + 1
        return make_row(i)
      end
    end,
  }
  for k, v in pairs(overrides or {}) do def[k] = v end
  return connector.new(def)
end

local function data_request(extra)
  local params = { connection = { token = TOKEN }, table = "big" }
  for k, v in pairs(extra or {}) do params[k] = v end
  return { method = "POST", path = "/data", headers = { ["content-type"] = "application/json" },
    body = cjson.encode(params) }
end

describe("urlData streaming", function()
  it("streams 1,000,000 rows from an iterator while Lua memory stays under 64 MiB", function()
    local n = 1000000
    local c = big_connector(n)
    collectgarbage()
    local status, headers, body, info = c:handle(data_request())
    assert.equals(200, status)
    assert.equals("application/json; charset=utf-8", headers["Content-Type"])
    assert.is_function(body)
    local bytes, chunks, peak = 0, 0, 0
    local first, last
    for chunk in body do
      chunks = chunks + 1
      bytes = bytes + #chunk
      if chunks == 1 then first = chunk:sub(1, 200) end
      last = ((last or "") .. chunk):sub(-200)
      assert.is_true(#chunk <= 65536 + 1024, "chunk of " .. #chunk .. " bytes")
      if chunks % 16 == 0 then
        local kib = collectgarbage("count")
        if kib > peak then peak = kib end
      end
    end
    assert.is_true(peak > 0)
    assert.is_true(peak < 64 * 1024, ("peak Lua memory %.1f MiB"):format(peak / 1024))
    assert.is_true(chunks > 100)
    assert.equals(n, info.rows)
    assert.equals(bytes, info.bytes)
    assert.equals(200, info.status)
    assert.equals('[["id","name","amount","day","at"],[1,"name 1",0.25,"1970-01-02","2024-05-06 07:08:09"]',
      first:sub(1, #'[["id","name","amount","day","at"],[1,"name 1",0.25,"1970-01-02","2024-05-06 07:08:09"]'))
    local tail = ',[1000000,"name 1000000",250000.0,"1970-01-01","2024-05-06 07:08:09"]]'
    assert.equals(tail, last:sub(-#tail))
  end)

  it("joins into the expected header and rows (checked with lua-cjson)", function()
    local n = 30000
    local c = big_connector(n, { chunk_size = 4096 })
    local status, _, body, info = c:handle(data_request())
    assert.equals(200, status)
    local parts = {}
    for chunk in body do parts[#parts + 1] = chunk end
    assert.is_true(#parts > 50)
    local answer = cjson.decode(table.concat(parts))
    assert.equals(n + 1, #answer)
    assert.same({ "id", "name", "amount", "day", "at" }, answer[1])
    for i = 1, n do
      local row, want = answer[i + 1], expected_cells(i)
      for j = 1, 5 do
        if row[j] ~= want[j] then
          error(("row %d cell %d: %s ~= %s"):format(i, j, tostring(row[j]), tostring(want[j])))
        end
      end
    end
    assert.equals(n, info.rows)
  end)

  it("cuts the stream and logs a value error found after streaming started", function()
    local logs = {}
    local c = big_connector(10000, {
      chunk_size = 1024,
      data = function()
        local i = 0
        return function()
          i = i + 1
          if i == 5000 then return { id = "five thousand" } end
          if i > 10000 then return nil end
          return make_row(i)
        end
      end,
    })
    local status, _, body, info = c:handle(data_request(), {
      log = function(level, message, fields) logs[#logs + 1] = { level, message, fields } end,
    })
    assert.equals(200, status)
    local parts = {}
    for chunk in body do parts[#parts + 1] = chunk end
    assert.is_nil(body())
    local text = table.concat(parts)
    assert.is_false(pcall(cjson.decode, text))
    assert.equals(1, #logs)
    assert.equals("error", logs[1][1])
    assert.equals('data stream cut: table "big", row 5000, field "id": expected an integer, got string "five thousand"',
      logs[1][2])
    assert.equals(info.error, logs[1][3].id)
    assert.is_true(info.rows < 5000)
    assert.equals(#text, info.bytes)
  end)

  it("cuts the stream and logs, with a traceback, an error raised inside the iterator", function()
    local logs = {}
    local c = big_connector(10000, {
      chunk_size = 1024,
      data = function(conn)
        local i = 0
        return function()
          i = i + 1
          if i == 3000 then error("source lost for " .. conn.token) end
          return make_row(i)
        end
      end,
    })
    local status, _, body = c:handle(data_request(), {
      log = function(level, message, fields) logs[#logs + 1] = { level, message, fields } end,
    })
    assert.equals(200, status)
    local ok = pcall(function() for _ in body do end end)
    assert.is_true(ok)
    assert.equals(1, #logs)
    assert.matches("data stream cut: .*source lost for %*%*%*", logs[1][2])
    assert.is_string(logs[1][3].traceback)
    assert.is_nil(logs[1][3].traceback:find(TOKEN, 1, true))
  end)

  it("keeps an abandoned stream collectable", function()
    local c = big_connector(1000000)
    local weak = setmetatable({}, { __mode = "k" })
    do
      local _, _, body = c:handle(data_request())
      assert.is_string(body())
      assert.is_string(body())
      weak[body] = true
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
  end)

  it("answers a small table as one string", function()
    local c = big_connector(3)
    local status, _, body, info = c:handle(data_request({ select = { "id" } }))
    assert.equals(200, status)
    assert.equals('[["id"],[1],[2],[3]]', body)
    assert.equals(3, info.rows)
    assert.equals(#body, info.bytes)
  end)
end)
