-- biconnector.json: decode and encode, their options, and their error messages.
local helpers = require "helpers"
local biconnector = require "biconnector"
local json = biconnector.json

local has_integers = math.type ~= nil

-- Positions in decode errors, e.g. "at line 2, column 5 (byte offset 9)".
local function position(err)
  local line, column, offset = err:match("at line (%d+), column (%d+) %(byte offset (%d+)%)$")
  return tonumber(line), tonumber(column), tonumber(offset)
end

local function decode_error(text, opts)
  local value, err = json.decode(text, opts)
  assert.is_nil(value)
  assert.is_string(err)
  return err
end

local function encode_error(value, opts)
  local text, err = json.encode(value, opts)
  assert.is_nil(text)
  assert.is_string(err)
  return err
end

describe("biconnector.json", function()
  it("is reached through the facade and the module", function()
    assert.equals(json, require "biconnector.json")
    assert.is_function(json.decode)
    assert.is_function(json.encode)
    assert.is_function(json.as_array)
    assert.is_table(json.array_mt)
  end)

  it("has null equal to biconnector.null and cjson.null", function()
    assert.equals(biconnector.null, json.null)
    local ok, cjson = pcall(require, "cjson")
    if ok then assert.equals(cjson.null, json.null) end
  end)
end)

describe("json.decode", function()
  it("decodes scalars at the top level", function()
    assert.equals(true, json.decode("true"))
    assert.equals(false, json.decode(" false "))
    assert.equals(json.null, json.decode("null"))
    assert.equals("x", json.decode('"x"'))
    assert.equals(42, json.decode("42"))
    assert.equals(-1.5, json.decode("-1.5"))
  end)

  it("decodes objects to tables and arrays to marked tables", function()
    local v = json.decode('{"a": [1, 2, {"b": null}], "c": {}, "d": []}')
    assert.same({ 1, 2, { b = json.null } }, v.a)
    assert.equals(json.array_mt, getmetatable(v.a))
    assert.equals(json.array_mt, getmetatable(v.d))
    assert.is_nil(getmetatable(v))
    assert.is_nil(getmetatable(v.c))
    assert.is_nil(next(v.c))
  end)

  it("can leave arrays unmarked", function()
    assert.is_nil(getmetatable(json.decode("[1]", { array_mt = false })))
  end)

  it("lets the last of duplicate keys win", function()
    assert.same({ a = 2 }, json.decode('{"a": 1, "a": 2}'))
  end)

  it("decodes escapes, surrogate pairs, and keeps '/' and non-ASCII", function()
    assert.equals('"\\/\b\f\n\r\t', json.decode('"\\"\\\\\\/\\b\\f\\n\\r\\t"'))
    assert.equals("é€😀", json.decode('"\\u00e9\\u20AC\\ud83d\\ude00"'))
    assert.equals("a/é€😀", json.decode('"a/é€😀"'))
    assert.equals("\0", json.decode('"\\u0000"'))
  end)

  it("decodes integers that fit in 64 bits as integers #lua54", function()
    assert.equals(math.maxinteger, json.decode("9223372036854775807"))
    assert.equals(math.mininteger, json.decode("-9223372036854775808"))
    assert.equals("integer", math.type(json.decode("9007199254740993")))
    assert.equals(9007199254740993, json.decode("9007199254740993"))
    assert.equals("float", math.type(json.decode("9223372036854775808")))
    assert.equals("float", math.type(json.decode("1.0")))
    assert.equals("float", math.type(json.decode("1e2")))
  end)

  it("decodes every number to a double on LuaJIT", function()
    if has_integers then return end
    assert.equals(9007199254740992, json.decode("9007199254740993"))
    assert.equals(2 ^ 63, json.decode("9223372036854775807"))
  end)

  it("rounds doubles correctly", function()
    assert.equals(0.1, json.decode("0.1"))
    assert.equals(1e23, json.decode("1e23"))
    assert.equals(2.2250738585072014e-308, json.decode("2.2250738585072014e-308"))
    assert.equals(5e-324, json.decode("4.9406564584124654e-324"))
    assert.equals(1.7976931348623157e308, json.decode("1.7976931348623157e308"))
    assert.equals(0.3, json.decode("0.299999999999999988897769753748434595763683319091796875"))
    assert.equals(123456789012345680000, json.decode("123456789012345678901"))
    assert.equals(0, json.decode("1e-400"))
    assert.equals(1 / 0, 1 / json.decode("0.0"))
    assert.equals(-1 / 0, 1 / json.decode("-0"))
  end)

  it("rejects what RFC 8259 rejects, naming what and where", function()
    local cases = {
      { "[1,]", "trailing comma in array", 1, 4 },
      { '{"a":1,}', "trailing comma in object", 1, 8 },
      { "[01]", "leading zero in number", 1, 2 },
      { "[-]", "expected a digit", 1, 3 },
      { "[1.]", "expected a digit after '.'", 1, 4 },
      { "[1e]", "expected a digit in the exponent", 1, 4 },
      { '"a\tb"', "unescaped control character in string", 1, 3 },
      { '"\\x"', "invalid escape in string", 1, 2 },
      { '"\\u12"', "invalid \\u escape", 1, 2 },
      { '"\\ud800"', "lone surrogate", 1, 2 },
      { '"\\udc00\\ud800"', "lone surrogate", 1, 2 },
      { '"\\ud800\\u0041"', "lone surrogate", 1, 2 },
      { '"a\xffb"', "invalid UTF-8 in string", 1, 3 },
      { '"\xc0\xaf"', "invalid UTF-8 in string", 1, 2 },
      { '"\xed\xa0\x80"', "invalid UTF-8 in string", 1, 2 },
      { '"\xf4\x90\x80\x80"', "invalid UTF-8 in string", 1, 2 },
      { "\xEF\xBB\xBF{}", "byte-order mark", 1, 1 },
      { "[1] [2]", "unexpected character '[' after the JSON value", 1, 5 },
      { "{} x", "after the JSON value", 1, 4 },
      { "", "unexpected end of input", 1, 1 },
      { "   ", "unexpected end of input", 1, 4 },
      { "[1", "unexpected end of input", 1, 3 },
      { '"abc', "unterminated string", 1, 1 },
      { "{1:2}", "expected a string key", 1, 2 },
      { '{"a" 1}', "expected ':'", 1, 6 },
      { "[1 2]", "expected ',' or ']'", 1, 4 },
      { '{"a":1 "b"}', "expected ',' or '}'", 1, 8 },
      { "tru", "unexpected end of input", 1, 4 },
      { "nul1", "unexpected character '1' in literal", 1, 4 },
      { "NaN", "unexpected character 'N', expected a value", 1, 1 },
      { "[Infinity]", "unexpected character 'I'", 1, 2 },
      { "1e400", "number out of range", 1, 1 },
      { "'a'", "unexpected character '''", 1, 1 },
      { "\0", "unexpected byte 0x00", 1, 1 },
    }
    for _, case in ipairs(cases) do
      local text, what, line, column = case[1], case[2], case[3], case[4]
      local err = decode_error(text)
      assert.truthy(err:find(what, 1, true), ("%q: %s"):format(text, err))
      local l, c, o = position(err)
      assert.same({ line, column, column - 1 }, { l, c, o }, ("%q: %s"):format(text, err))
    end
  end)

  it("counts lines and columns from 1 and byte offsets from 0", function()
    local err = decode_error('{\n  "a": 1,\n  "b": [1, 2,]\n}')
    assert.matches("^trailing comma in array", err)
    assert.same({ 3, 14, 25 }, { position(err) })
    err = decode_error('[\r\n"\xe2\x82"]')
    assert.same({ 2, 2, 4 }, { position(err) })
  end)

  it("stops at the nesting limit with an error, never a crash", function()
    assert.is_table(json.decode(("["):rep(1000) .. ("]"):rep(1000)))
    local err = decode_error(("["):rep(1001) .. ("]"):rep(1001))
    assert.matches("^nesting deeper than 1000 at line 1, column 1001", err)
    err = decode_error(('{"a":'):rep(100000))
    assert.matches("^nesting deeper than 1000", err)
    assert.matches("^nesting deeper than 10 ", decode_error(("["):rep(11) .. ("]"):rep(11), { max_depth = 10 }))
    assert.is_table(json.decode(("["):rep(11) .. ("]"):rep(11), { max_depth = 11 }))
  end)

  it("follows a raised limit as deep as the Lua stack allows", function()
    local depth = 5000
    local v, err = json.decode(("["):rep(depth) .. ("]"):rep(depth), { max_depth = 100000 })
    if v == nil then
      assert.matches("^nesting too deep for the Lua stack", err)  -- LuaJIT's C stack limit
    else
      for _ = 1, depth - 1 do v = v[1] end
      assert.same({}, v)
    end
    v, err = json.decode(("["):rep(200000), { max_depth = 1000000 })
    assert.is_nil(v)
    assert.is_string(err)
  end)

  it("raises on misuse: wrong argument types and unknown options", function()
    assert.has_error(function() json.decode() end)
    assert.has_error(function() json.decode({}) end)
    assert.has_error(function() json.decode("1", { maxdepth = 3 }) end, "unknown option 'maxdepth'")
    assert.has_error(function() json.decode("1", { max_depth = 0 }) end)
    assert.has_error(function() json.decode("1", { array_mt = 1 }) end)
  end)

  it("decodes long strings with and without escapes", function()
    local plain = ("abcé"):rep(100000)
    assert.equals(plain, json.decode('"' .. plain .. '"'))
    local escaped = ("a\\nb"):rep(100000)
    assert.equals(("a\nb"):rep(100000), json.decode('"' .. escaped .. '"'))
  end)
end)

describe("json.encode", function()
  it("encodes scalars", function()
    assert.equals("null", json.encode(nil))
    assert.equals("null", json.encode(json.null))
    assert.equals("true", json.encode(true))
    assert.equals('"x"', json.encode("x"))
    assert.equals("42", json.encode(42))
    assert.equals("-1.5", json.encode(-1.5))
  end)

  it("escapes only what JSON requires", function()
    assert.equals([["a\"b\\c/d\n\r\t\b\f\u0001\u001f"]], json.encode('a"b\\c/d\n\r\t\b\f\1\31'))
    assert.equals('"é€😀\127"', json.encode("é€😀\127"))
    assert.equals('"\\u0000"', json.encode("\0"))
  end)

  it("finds a character to escape at any offset (8-byte scan)", function()
    local names = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\31"] = "\\u001f", ["\0"] = "\\u0000" }
    for _, special in ipairs({ '"', "\\", "\n", "\31", "\0", "é", "\127" }) do
      for at = 1, 20 do
        local text = ("a"):rep(at - 1) .. special .. ("b"):rep(20 - at)
        local expected = '"' .. ("a"):rep(at - 1) .. (names[special] or special) .. ("b"):rep(20 - at) .. '"'
        assert.equals(expected, json.encode(text))
        assert.equals(text, json.decode(expected))
        if #special == 1 and special:byte() < 32 then
          local err = decode_error('"' .. text .. '"')
          assert.equals(at + 1, select(2, position(err)))
        end
      end
      local bad = ("a"):rep(20 - 1) .. "\255" .. special
      assert.equals("invalid UTF-8 in string at $", encode_error(bad))
      assert.matches("^invalid UTF%-8 in string at line 1, column 21", decode_error('"' .. bad .. '"'))
    end
  end)

  it("writes integers as integers and doubles shortest", function()
    assert.equals("[0,-7,1234567890123]", json.encode({ 0, -7, 1234567890123 }))
    assert.equals("[0.1,0.3,3.14,1e+21,1e-7,5e-324,1.7976931348623157e+308]",
      json.encode({ 0.1, 0.3, 3.14, 1e21, 1e-7, 5e-324, 1.7976931348623157e308 }))
    assert.equals("0.30000000000000004", json.encode(0.1 + 0.2))
  end)

  it("keeps a float's type through a round trip #lua54", function()
    assert.equals("[3.0,-0.0,9223372036854775807,-9223372036854775808,1e+100]",
      json.encode({ 3.0, -0.0, math.maxinteger, math.mininteger, 1e100 }))
    assert.equals("float", math.type(json.decode(json.encode(3.0))))
    assert.equals("integer", math.type(json.decode(json.encode(3))))
  end)

  it("writes whole doubles as integers on LuaJIT", function()
    if has_integers then return end
    assert.equals("[3,9007199254740992,9.223372036854776e+18]", json.encode({ 3.0, 2 ^ 53, 2 ^ 63 }))
  end)

  it("tells arrays from objects", function()
    assert.equals("[1,2,3]", json.encode({ 1, 2, 3 }))
    assert.equals('{"a":1}', json.encode({ a = 1 }))
    assert.equals("{}", json.encode({}))
    assert.equals("[]", json.encode(json.as_array({})))
    assert.equals("[]", json.encode(setmetatable({}, json.array_mt)))
    assert.equals("[]", json.encode(json.decode("[]")))
    assert.equals('{"1.5":1}', json.encode({ [1.5] = 1 }))
    assert.equals('{"-2":"b","0":"a"}', json.encode({ [0] = "a", [-2] = "b" }, { sort_keys = true }))
  end)

  it("writes arrays whose items a traversal visits out of order", function()
    -- Integer keys stored in the hash part: lua_next does not visit them as 1..n.
    local t = { x = 1, y = 2, z = 3, w = 4 }
    t.x, t.y, t.z, t.w = nil, nil, nil, nil
    t[3], t[1], t[2] = "c", { 1, 2 }, "b"
    assert.equals('[[1,2],"b","c"]', json.encode(t))
    t[5] = true
    assert.equals("sparse array: 4 values, largest index 5 at $[2]", encode_error({ 1, t }))
    t[5], t.name = nil, "x"
    assert.equals("mixed table: array indexes and other keys at $", encode_error(t))
  end)

  it("honours dkjson's __jsontype and lua-cjson's markers when present", function()
    assert.equals("[]", json.encode(setmetatable({}, { __jsontype = "array" })))
    local cjson = package.loaded.cjson
    local fake = { array_mt = {}, empty_array_mt = {} }
    package.loaded.cjson = fake
    local ok, a, b, c = pcall(function()
      return json.encode(setmetatable({}, fake.array_mt)),
        json.encode(setmetatable({}, fake.empty_array_mt)),
        json.encode(setmetatable({ x = 1 }, fake.empty_array_mt))
    end)
    package.loaded.cjson = cjson
    assert.is_true(ok, a)
    assert.same({ "[]", "[]", '{"x":1}' }, { a, b, c })
  end)

  it("sorts keys and indents on request", function()
    local v = { b = 1, a = { 1, { c = true } }, ["é"] = json.as_array({}), [""] = {} }
    assert.equals('{"":{},"a":[1,{"c":true}],"b":1,"é":[]}', json.encode(v, { sort_keys = true }))
    assert.equals(table.concat({
      '{',
      '  "": {},',
      '  "a": [',
      '    1,',
      '    {',
      '      "c": true',
      '    }',
      '  ],',
      '  "b": 1,',
      '  "é": []',
      '}' }, "\n"), json.encode(v, { sort_keys = true, indent = 2 }))
    assert.equals('{\n\t"a": 1\n}', json.encode({ a = 1 }, { indent = "\t" }))
    assert.equals('{"a":1}', json.encode({ a = 1 }, { indent = 0 }))
  end)

  it("names the path of the offending value", function()
    local cases = {
      { { rows = { { amount = 1 }, { amount = 2 }, { amount = print } } }, "cannot encode a function at $.rows[3].amount" },
      { { rows = { 1, 0 / 0 } }, "cannot encode NaN at $.rows[2]" },
      { { x = 1 / 0 }, "cannot encode inf at $.x" },
      { { x = -1 / 0 }, "cannot encode -inf at $.x" },
      { { ["a b"] = { "\xff" } }, 'invalid UTF-8 in string at $["a b"][1]' },
      { { ok = { ["k\xff"] = 1 } }, "invalid UTF-8 in object key at $.ok" },
      { { t = { [true] = 1 } }, "cannot encode a key of type boolean at $.t" },
      { { list = { 1, nil, 3 } }, "sparse array: 2 values, largest index 3 at $.list" },
      { { [7] = "a" }, "sparse array: 1 values, largest index 7 at $" },
      { { { 1, 2, x = 3 } }, "mixed table: array indexes and other keys at $[1]" },
      { { io.stdout }, "cannot encode a userdata at $[1]" },
      { { coroutine.create(print) }, "cannot encode a thread at $[1]" },
      { setmetatable({ x = 1 }, json.array_mt), "table marked as an array has a key that is not an index at $" },
    }
    for _, case in ipairs(cases) do
      assert.equals(case[2], encode_error(case[1]))
      assert.equals(case[2], encode_error(case[1], { sort_keys = true }))
    end
  end)

  it("detects cycles", function()
    local t = { a = { b = {} } }
    t.a.b.c = t.a
    assert.equals("cyclic reference: a table contains itself at $.a.b.c", encode_error(t))
    local shared = { 1 }
    assert.equals('[[1],[1]]', json.encode({ shared, shared }))
  end)

  -- Levels below depth 16 are not checked one by one: the cycle is caught
  -- deeper down, and the error still names the place where it first closed,
  -- whatever else the walk meets on the way there.
  it("names where a cycle first closed, at any depth and beside other faults", function()
    local t = { a = {} }
    t.self = t
    assert.equals("cyclic reference: a table contains itself at $.self", encode_error(t))
    assert.equals("cyclic reference: a table contains itself at $.self", encode_error(t, { sort_keys = true }))
    local a = { 1 }
    a[2] = a
    assert.equals("cyclic reference: a table contains itself at $[2]", encode_error(a))
    -- a value written fine at the first level fails at a deeper one: the cycle is named
    local deep = {}
    local cur = deep
    for _ = 1, 995 do cur.n = {}; cur = cur.n end
    local b = { "x" }
    b[2] = { deep = deep, back = b }
    assert.equals("cyclic reference: a table contains itself at $[2].back", encode_error(b))
    assert.equals("cyclic reference: a table contains itself at $[2].back", encode_error(b, { sort_keys = true }))
    -- a limit below the depth where cycles are checked
    local s = {}
    s.self = s
    assert.equals("cyclic reference: a table contains itself at $.self", encode_error(s, { max_depth = 1 }))
    assert.equals("cyclic reference: a table contains itself at $.self", encode_error(s, { max_depth = 3 }))
    assert.equals("nesting deeper than 1 at $.a", encode_error({ a = { b = {} } }, { max_depth = 1 }))
    -- a cycle closing beyond the first 16 levels, and beyond the first 64
    for _, n in ipairs({ 20, 70 }) do
      local top = {}
      cur = top
      for _ = 1, n do cur.k = {}; cur = cur.k end
      cur.loop = top.k.k
      local path = n < 24 and (".k"):rep(n) or (".k"):rep(12) .. "..." .. (".k"):rep(11)
      assert.equals("cyclic reference: a table contains itself at $" .. path .. ".loop", encode_error(top))
    end
  end)

  -- Keys written once are copied from a cache the next times (by the address
  -- of their string): every kind of key, many objects sharing them.
  it("writes keys shared by many objects the same each time", function()
    local long = ("long_key_"):rep(4)             -- too long for the cache
    local keys = { "id", "a", "", "ÄÖ", 'q"uote', "new\nline", "tab\t", long, "x29_" .. ("y"):rep(25),
      "x30_" .. ("y"):rep(26) }
    for i = 1, 200 do keys[#keys + 1] = "k" .. i end  -- more keys than the cache has slots
    local rows, parts = {}, {}
    for r = 1, 50 do
      local row = {}
      for i, k in ipairs(keys) do row[k] = (r + i) % 3 == 0 and json.null or r * i end
      rows[r] = row
    end
    local text = json.encode(json.as_array(rows), { sort_keys = true })
    local back = json.decode(json.encode(rows))
    for r = 1, 50 do
      local row = back[r]
      for i, k in ipairs(keys) do
        assert.equals((r + i) % 3 == 0 and json.null or r * i, row[k])
        parts[#parts + 1] = k
      end
    end
    assert.same(json.decode(text), back)
    assert.equals(#keys * 50, #parts)
    -- the compact text holds each key quoted, escaped as JSON requires
    local compact = json.encode(rows)
    local _, quotes = compact:gsub('"q\\"uote":', "")
    assert.equals(50, quotes)
    local _, longs = compact:gsub('"' .. long .. '":', "")
    assert.equals(50, longs)
    -- number keys other than indexes among string keys
    local mixed = {}
    for r = 1, 40 do mixed[r] = { [0.5] = r, [-1] = r, name = "n" .. r } end
    for r, row in ipairs(json.decode(json.encode(mixed))) do
      assert.same({ ["0.5"] = r, ["-1"] = r, name = "n" .. r }, row)
    end
  end)

  it("stops at the nesting limit, also when raised", function()
    local deep = {}
    local cur = deep
    for _ = 1, 1000 do cur[1] = {}; cur = cur[1] end
    local err = encode_error(deep)
    assert.matches("^nesting deeper than 1000 at %$%[1%]%[1%]", err)
    assert.truthy(#err < 300)
    local text = json.encode(deep, { max_depth = 1001 })
    assert.equals(("["):rep(1000) .. "{}" .. ("]"):rep(1000), text)
    for _ = 1, 100000 do cur[1] = {}; cur = cur[1] end
    local v, e = json.encode(deep, { max_depth = 1000000 })
    assert.truthy(v or e:match("^nesting too deep for the Lua stack"))
  end)

  it("relaxes on request: NaN as null, invalid UTF-8 replaced", function()
    assert.equals("[null,null,null]", json.encode({ 0 / 0, 1 / 0, -1 / 0 }, { nan_as_null = true }))
    assert.equals('"a\xef\xbf\xbdb\xef\xbf\xbd"', json.encode("a\xffb\xe2\x82", { replace_invalid_utf8 = true }))
    assert.equals('{"\xef\xbf\xbd":1}', json.encode({ ["\xc0"] = 1 }, { replace_invalid_utf8 = true }))
  end)

  it("raises on misuse: no argument, unknown or wrong options", function()
    assert.has_error(function() json.encode() end)
    assert.has_error(function() json.encode(1, { sortkeys = true }) end, "unknown option 'sortkeys'")
    assert.has_error(function() json.encode(1, { indent = -1 }) end)
    assert.has_error(function() json.encode(1, { indent = true }) end)
    assert.has_error(function() json.encode(1, { nan_as_null = "yes" }) end)
    assert.has_error(function() json.encode(1, "x") end)
  end)

  it("round-trips every finite double it writes", function()
    -- A fixed set of awkward doubles; the differential spec covers random ones.
    local values = { 5e-324, 2.2250738585072009e-308, 2.2250738585072014e-308, 0.1, 1 / 3, 2 / 3,
      9007199254740993, 1e15 + 0.3, 123456.789, 1.7976931348623157e308, 4.35, 0.000001, 1e-5, 1e16, 1e17 }
    for _, x in ipairs(values) do
      for _, v in ipairs({ x, -x }) do
        local text = json.encode(v)
        assert.equals(v, json.decode(text), text)
        assert.equals(v, tonumber(text), text)
      end
    end
  end)

  it("frees its buffer when it fails (no leak under the sanitizer run)", function()
    for _ = 1, 200 do
      encode_error({ ("x"):rep(10000), print })
    end
    collectgarbage()
  end)
end)

describe("json in another locale", function()
  it("reads and writes a decimal point whatever LC_NUMERIC says", function()
    local dir = helpers.tmpdir("locale")
    local made = os.execute(("localedef -i de_DE -f UTF-8 %s/de_DE.UTF-8 >/dev/null 2>&1"):format(dir))
    if made ~= true and made ~= 0 then
      io.stderr:write("\n*** SKIPPED: the locale test needs localedef and the de_DE source\n")
      return
    end
    local script = [[
      assert(os.setlocale("de_DE.UTF-8", "numeric"), "no locale")
      assert(tostring(1.5) == "1,5" or jit, "locale not in effect: " .. tostring(1.5))
      local json = require("biconnector").json
      assert(json.decode("1.25") == 1.25)
      assert(json.decode("[1.2345678901234567e-300]")[1] == 1.2345678901234567e-300)
      assert(json.encode({1.5, 1e300, 0.30000000000000004}) == "[1.5,1e+300,0.30000000000000004]")
      assert(json.encode(2.5e-310) == "2.5e-310")
      print("ok")
    ]]
    local file = dir .. "/check.lua"
    local f = assert(io.open(file, "w"))
    f:write(script)
    f:close()
    -- glibc's setlocale keeps a little memory for good: no leak check in the child.
    local p = io.popen(("ASAN_OPTIONS=detect_leaks=0 LOCPATH=%s %s %s 2>&1"):format(dir, helpers.runtime, file))
    local out = p:read("*a")
    p:close()
    helpers.rmdir(dir)
    assert.equals("ok\n", out)
  end)
end)
