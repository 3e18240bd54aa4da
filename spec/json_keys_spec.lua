-- Object keys in json.decode and json.encode (src/json.c). Both keep a
-- cache of keys met before in the call: decode pushes a key it made already
-- from a table of the call (keys of 1 to 32 bytes without escapes or
-- non-ASCII bytes; a slot chosen by the key's length and its first, middle
-- and last bytes), encode copies "key": by the address of the key's string.
-- Keys that share a slot, keys of every length around the limits, keys at
-- the very end of the input, keys the cache does not take (empty, longer,
-- escaped, non-ASCII, numbers, other types) must all come out as the docs
-- say (docs/json.md).
local json = require("biconnector").json

-- Keys of every length 1..40 that share their length and their first, middle
-- and last bytes (so the same cache slot), differing elsewhere.
local function twins(len)
  local list = {}
  for _, c in ipairs({ "a", "b", "c" }) do
    local t = {}
    for i = 1, len do t[i] = "k" end
    if len >= 4 then t[2] = c end -- not the first, middle or last byte
    list[#list + 1] = table.concat(t)
  end
  return list
end

describe("json object keys", function()
  it("decodes keys that share a cache slot, at every length around the limit", function()
    for len = 1, 40 do
      local keys = twins(len)
      local rows, parts = {}, {}
      for r = 1, 6 do
        local row, fields = {}, {}
        for i, k in ipairs(keys) do
          local kk = keys[(i + r) % #keys + 1] -- the keys in turns, so that each evicts another
          row[kk] = r * 10 + i
          fields[#fields + 1] = ('"%s":%d'):format(kk, r * 10 + i)
        end
        rows[r] = row
        parts[r] = "{" .. table.concat(fields, ",") .. "}"
      end
      local text = "[" .. table.concat(parts, ",") .. "]"
      assert.same(rows, json.decode(text, { array_mt = false }), "length " .. len)
    end
  end)

  it("decodes the keys the cache does not take beside the ones it does", function()
    local keys = { "", "id", "é", "naïve", "a\\\"b", "tab\\there", ("x"):rep(32), ("x"):rep(33), ("y"):rep(100),
      "\\u0041BC", "ABC", "a/b", "a\\/b", "AB", "id " }
    local want = { [""] = 1, id = 2, ["é"] = 3, ["naïve"] = 4, ['a"b'] = 5, ["tab\there"] = 6, [("x"):rep(32)] = 7,
      [("x"):rep(33)] = 8, [("y"):rep(100)] = 9, ABC = 11, ["a/b"] = 13, AB = 14, ["id "] = 15 }
    -- "\u0041BC" is "ABC" (10), then "ABC" (11) wins, the last one; "a\/b" is "a/b" (13, after 12)
    local fields = {}
    for i, k in ipairs(keys) do fields[i] = ('"%s":%d'):format(k, i) end
    local text = "{" .. table.concat(fields, ",") .. "}"
    for _ = 1, 3 do -- again and again: from the cache once made
      local got = json.decode("[" .. text .. "," .. text .. "]", { array_mt = false })
      assert.same({ want, want }, got)
    end
  end)

  it("reads a key that ends the input without reading past it", function()
    -- keys close to the end: the fast comparison needs 32 bytes of input
    for len = 1, 34 do
      local k = ("q"):rep(len)
      local text = ('[{"%s":1},{"%s":2}]'):format(k, k)
      assert.same({ { [k] = 1 }, { [k] = 2 } }, json.decode(text, { array_mt = false }))
      -- unterminated key at the end: the error, not a key
      local value, err = json.decode('{"' .. k .. '":1,"' .. k)
      assert.is_nil(value)
      assert.matches("unterminated string", err)
    end
  end)

  it("decodes more keys than the cache has slots, each object complete", function()
    local row, fields = {}, {}
    for i = 1, 300 do
      row["key" .. i] = i
      fields[i] = ('"key%d":%d'):format(i, i)
    end
    local text = "{" .. table.concat(fields, ",") .. "}"
    assert.same({ row, row, row }, json.decode("[" .. text .. "," .. text .. "," .. text .. "]", { array_mt = false }))
  end)

  it("finds duplicate keys that come from the cache", function()
    local value, err = json.decode('[{"id":1,"name":2},{"id":3,"id":4}]', { duplicate_keys = "error" })
    assert.is_nil(value)
    assert.matches('duplicate object key "id"', err)
    assert.same({ { id = 1 }, { id = 4 } }, json.decode('[{"id":1},{"id":3,"id":4}]', { array_mt = false }))
  end)

  it("decodes keys from the cache as the same strings as made ones", function()
    local t = json.decode('[{"alpha":1},{"alpha":2},{"alpha":3}]')
    local n = 0
    for _, row in ipairs(t) do
      for k, v in pairs(row) do
        assert.equal("alpha", k)
        n = n + v
      end
    end
    assert.equal(6, n)
  end)

  it("encodes keys met again, keys that need escapes and keys of other types", function()
    local keys = { "id", 'q"uote', "new\nline", "é", ("z"):rep(29), ("z"):rep(30), ("z"):rep(40), "" }
    local rows = {}
    for r = 1, 40 do
      local row = {}
      for i, k in ipairs(keys) do row[k] = r * 100 + i end
      row[1.5] = r -- a number key that is no index
      rows[r] = row
    end
    local text = assert(json.encode(rows))
    local back = json.decode(text, { array_mt = false })
    for r = 1, 40 do
      for i, k in ipairs(keys) do assert.equal(r * 100 + i, back[r][k]) end
      assert.equal(r, back[r]["1.5"])
    end
    -- sorted, byte for byte
    local sorted = assert(json.encode({ rows[1], rows[1] }, { sort_keys = true }))
    local one = '{"":108,"1.5":1,"id":101,"new\\nline":103,"q\\"uote":102,"zzzzzzzzzzzzzzzzzzzzzzzzzzzzz":105,' ..
      '"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz":106,"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz":107,"é":104}'
    assert.equal("[" .. one .. "," .. one .. "]", sorted)
    -- keys of other types fail, also after keys the cache knows
    local text2, err = json.encode({ { id = 1 }, { id = 2, [true] = 3 } })
    assert.is_nil(text2)
    assert.matches("cannot encode a key of type boolean", err)
  end)

  it("encodes integers of every length and sign", function()
    local v = 1
    for _ = 1, 18 do
      assert.equal(("[%d,%d,%d]"):format(v, -v, v - 1), json.encode({ v, -v, v - 1 }))
      v = v * 10
    end
    if math.type then
      assert.equal("[9223372036854775807,-9223372036854775808]", json.encode({ math.maxinteger, math.mininteger }))
    end
  end)
end)
