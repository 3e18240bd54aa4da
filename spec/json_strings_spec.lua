-- The string writer of json.encode (src/json.c) at every length and every
-- position: it copies 16 or 8 bytes at a time, the last bytes of a string by
-- a load that overlaps the ones before, a short string by one word, and
-- escapes from a table; a byte that needs attention at any place of any of
-- those must come out as the docs say (docs/json.md, "Strings").
local json = require("biconnector").json

-- What the docs promise: `"`, `\` and the control characters escaped (\b \f
-- \n \r \t, the others as \u00XX), everything else as it is.
local SHORT = { [8] = "\\b", [9] = "\\t", [10] = "\\n", [12] = "\\f", [13] = "\\r", [34] = '\\"', [92] = "\\\\" }
local function expected(s)
  return '"' .. s:gsub("[%z\1-\31\"\\]", function(c)
    local b = c:byte()
    return SHORT[b] or ("\\u%04x"):format(b)
  end) .. '"'
end

describe("json.encode strings", function()
  local SPECIAL = { '"', "\\", "\n", "\0", "\31", "\127", "/", "é", "€", "😀" }

  it("writes and reads every length with a byte that needs attention at every place", function()
    for len = 0, 40 do
      local plain = ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"):sub(1, len)
      assert.equal(expected(plain), json.encode(plain))
      for pos = 1, len do
        for _, c in ipairs(SPECIAL) do
          local s = plain:sub(1, pos - 1) .. c .. plain:sub(pos + 1)
          assert.equal(expected(s), json.encode(s), ("length %d, %q at %d"):format(len, c, pos))
          -- two of them, the second at the end
          local s2 = s .. c
          assert.equal(expected(s2), json.encode(s2))
          assert.equal(s2, json.decode(json.encode(s2)))
          -- inside a document, with text after it
          assert.same({ s2, "tail" }, json.decode("[" .. json.encode(s2) .. ',"tail"]', { array_mt = false }))
        end
      end
      -- all of it needs escaping
      local all = ("\n"):rep(len)
      assert.equal(expected(all), json.encode(all))
    end
  end)

  it("keeps strings apart in arrays and objects, as keys and values", function()
    for len = 0, 34 do
      local s = ("x"):rep(len)
      local t = { [s .. "~"] = s, list = { s, s .. '"', "" } } -- "~" sorts after "list"
      assert.equal(('{"list":[%s,%s,""],%s:%s}'):format(expected(s), expected(s .. '"'), expected(s .. "~"), expected(s)),
        json.encode(t, { sort_keys = true }))
      assert.same(t, json.decode(json.encode(t), { array_mt = false }))
    end
  end)

  it("refuses invalid UTF-8 at every place, or replaces it by U+FFFD when asked", function()
    for len = 0, 36 do
      local plain = ("y"):rep(len)
      for pos = 1, len + 1 do
        for _, bad in ipairs({ "\255", "\192\128", "\237\160\128", "\226\130" }) do
          local s = plain:sub(1, pos - 1) .. bad .. plain:sub(pos)
          local text, err = json.encode(s)
          assert.is_nil(text)
          assert.equal("invalid UTF-8 in string at $", err)
          local replaced = assert(json.encode(s, { replace_invalid_utf8 = true }))
          local back = json.decode(replaced)
          assert.equal(plain:sub(1, pos - 1), back:sub(1, pos - 1))
          local suffix = plain:sub(pos)
          assert.equal(suffix, back:sub(#back - #suffix + 1))
          assert.is_truthy(back:find("\239\191\189", pos, true))
        end
      end
    end
  end)

  it("answers right from a finalizer that runs while another encode writes", function()
    -- garbage whose finalizers encode, collected while a large value is encoded
    local inner = {}
    local function garbage(i)
      local mt = { __gc = function() inner[#inner + 1] = json.encode({ i, ("z"):rep(i % 40) }) end }
      local newproxy = rawget(_G, "newproxy") -- LuaJIT: tables have no __gc
      if newproxy then
        local p = newproxy(true)
        getmetatable(p).__gc = mt.__gc
        return p
      end
      return setmetatable({}, mt)
    end
    local big = {}
    for i = 1, 3000 do big[i] = { id = i, text = ("w"):rep(i % 50) .. '"' } end
    local want = json.encode(big)
    for round = 1, 20 do
      for i = 1, 200 do garbage(round * 1000 + i) end
      collectgarbage("step", 0)
      assert.equal(want, json.encode(big))
    end
    collectgarbage()
    assert.is_true(#inner > 0, "no finalizer ran")
    for _, text in ipairs(inner) do
      local v = json.decode(text)
      assert.equal(("z"):rep(v[1] % 40), v[2])
    end
  end)

  it("writes long strings whole, and the same string twice in one document", function()
    for _, n in ipairs({ 255, 256, 257, 4095, 4096, 65537 }) do
      local s = ("0123456789abcdef"):rep(math.floor(n / 16) + 1):sub(1, n)
      local with = s:sub(1, n - 1) .. '"'
      local text = "[" .. expected(s) .. "," .. expected(with) .. "," .. expected(s) .. "]"
      assert.equal(text, json.encode({ s, with, s }))
      assert.same({ s, with, s }, json.decode(text, { array_mt = false }))
    end
  end)
end)
