-- biconnector.form: the C codec against PHP's parse_str / http_build_query
-- (fixtures generated once by scripts/gen-form-fixtures.php), the limits,
-- the documented departures from PHP and a round trip over generated tables.
local form = require "biconnector.form"
local null = require("biconnector").null

local parse_str = require "fixtures.form.parse_str"
local http_build_query = require "fixtures.form.http_build_query"

describe("form.decode", function()
  it("has at least 40 PHP fixtures", function()
    assert.is_true(#parse_str >= 40)
  end)

  for _, case in ipairs(parse_str) do
    it("decodes as parse_str does: " .. case.name, function()
      local got, err = form.decode(case.body)
      assert.is_nil(err)
      assert.same(case.expected, got)
    end)
  end

  it("decodes 1500 random bodies as parse_str does", function()
    local random = require "fixtures.form.parse_str_random"
    assert.equal(1500, #random)
    for i, case in ipairs(random) do
      local got, err = form.decode(case.body)
      assert.is_nil(err)
      assert.same(case.expected, got, ("random body #%d: %q"):format(i, case.body))
    end
  end)

  it("turns PHP lists into sequences and keeps other integer keys", function()
    local t = assert(form.decode("s[]=a&s[]=b&m[1]=x&m[0]=y&n[3]=z"))
    assert.same({ "a", "b" }, t.s)
    assert.equal(2, #t.s)
    assert.same({ [0] = "y", [1] = "x" }, t.m)
    assert.same({ [3] = "z" }, t.n)
    assert.is_nil(t.n[1])
  end)

  it("keeps NUL bytes in values and stops a name at its first NUL, as PHP does", function()
    local t = assert(form.decode("v=a%00b&k%00ey=1"))
    assert.equal("a\0b", t.v)
    assert.equal("1", t.k)
  end)

  it("treats raw NUL bytes in the body as data (PHP stops reading there)", function()
    local t = assert(form.decode("a=x\0y&b=2"))
    assert.equal("x\0y", t.a)
    assert.equal("2", t.b)
  end)

  describe("limits", function()
    local function vars(n)
      local parts = {}
      for i = 1, n do parts[i] = "v" .. i .. "=" .. i end
      return table.concat(parts, "&")
    end

    it("accepts 1000 variables by default and refuses 1001", function()
      local t = assert(form.decode(vars(1000)))
      assert.equal("1000", t.v1000)
      local none, err = form.decode(vars(1001))
      assert.is_nil(none)
      assert.matches("more than 1000 variables", err, 1, true)
      assert.matches("at byte %d+", err)
    end)

    it("counts only non-empty pairs", function()
      assert.truthy(form.decode(vars(1000) .. "&&&&"))
    end)

    it("takes max_vars from the options", function()
      assert.truthy(form.decode(vars(3), { max_vars = 3 }))
      local none, err = form.decode(vars(4), { max_vars = 3 })
      assert.is_nil(none)
      assert.matches("more than 3 variables", err, 1, true)
    end)

    it("accepts 64 levels of nesting and refuses 65 with the variable named", function()
      local node = assert(form.decode("a" .. ("[x]"):rep(64) .. "=deep")).a
      for _ = 1, 63 do node = node.x end
      assert.equal("deep", node.x)
      local none, err = form.decode("ok=1&a" .. ("[x]"):rep(65) .. "=deep")
      assert.is_nil(none)
      assert.matches("variable 'a[x][x]", err, 1, true)
      assert.matches("at byte 6", err, 1, true)
      assert.matches("deeper than 64 levels", err, 1, true)
    end)

    it("takes max_depth from the options", function()
      assert.truthy(form.decode("a[b][c]=1", { max_depth = 2 }))
      local none, err = form.decode("a[b][c][d]=1", { max_depth = 2 })
      assert.is_nil(none)
      assert.matches("deeper than 2 levels", err, 1, true)
      assert.truthy(form.decode("a=1", { max_depth = 0 }))
      assert.is_nil(form.decode("a[]=1", { max_depth = 0 }))
    end)

    it("raises on misuse", function()
      assert.has_error(function() form.decode(nil) end)
      assert.has_error(function() form.decode("a=1", 5) end)
      assert.has_error(function() form.decode("a=1", { max_vars = "many" }) end)
      assert.has_error(function() form.decode("a=1", { max_depth = -1 }) end)
      -- a misspelt option would silently keep its default
      assert.has_error(function() form.decode("a=1", { max_var = 5 }) end, "form.decode: unknown option 'max_var'")
      assert.has_error(function() form.decode("a=1", { true }) end, "form.decode: unknown option 1 (a number key)")
    end)
  end)

  -- Names and values under 256 bytes are decoded on the C stack and the first 16
  -- arrays' bookkeeping lives there; longer ones and more arrays take buffers
  -- and blocks of 64: the result must not depend on which.
  it("decodes the same across the small-body limits (256-byte texts, 16 and 80 arrays)", function()
    for _, n in ipairs({ 254, 255, 256, 257, 1000 }) do
      local thirds = math.floor(n / 3)
      local name, value = ("n"):rep(n), ("%41"):rep(thirds) .. ("v"):rep(n % 3)
      local t = assert(form.decode(name .. "[k]=" .. value .. "&" .. name .. "[l][]=" .. value))
      local want = ("A"):rep(thirds) .. ("v"):rep(n % 3)
      assert.same({ [name] = { k = want, l = { want } } }, t)
    end
    for _, arrays in ipairs({ 15, 16, 17, 80, 200 }) do
      local parts, want = {}, {}
      for i = 1, arrays do
        parts[#parts + 1] = ("a%d[]=x&a%d[]=y&m%d[5]=z"):format(i, i, i)
        want["a" .. i], want["m" .. i] = { "x", "y" }, { [5] = "z" }
      end
      assert.same(want, assert(form.decode(table.concat(parts, "&"))))
    end
  end)

  describe("option bracket_equals", function()
    -- The reference: the rewrite request.lua made before the rule moved into C
    -- (the first `=` is inside a bracket when no `]` follows the last `[`
    -- before it; the name then runs to the next `]=`).
    local function reference(pair)
      local e = pair:find("=", 1, true)
      if not e then return pair end
      local open = pair:find("[", 1, true)
      if not open or open > e then return pair end
      local last = open
      while true do
        local nxt = pair:find("[", last + 1, true)
        if not nxt or nxt > e then break end
        last = nxt
      end
      local shut = pair:find("]", last, true)
      if shut and shut < e then return pair end
      local close = pair:find("]=", e, true)
      if not close then return pair end
      return (pair:sub(1, close):gsub("=", "%%3D")) .. pair:sub(close + 1)
    end
    local function reference_decode(body)
      return form.decode((body:gsub("[^&]+", reference)))
    end

    it("reads a raw = inside brackets as part of the name", function()
      local t = assert(form.decode("filter[>=ID]=5&filter[!=TITLE]=a=b&filter[0][<=X]=2&x=a]=b",
        { bracket_equals = true }))
      assert.same({ filter = { [">=ID"] = "5", ["!=TITLE"] = "a=b", [0] = { ["<=X"] = "2" } }, x = "a]=b" }, t)
      -- without the option, PHP's reading
      t = assert(form.decode("filter[>=ID]=5"))
      assert.same({ ["filter_>"] = "ID]=5" }, t)
      t = assert(form.decode("filter[>=ID]=5", { bracket_equals = false }))
      assert.same({ ["filter_>"] = "ID]=5" }, t)
    end)

    it("answers as the reference rewrite on 3000 generated bodies", function()
      local alphabet = { "[", "]", "=", "=", "&", "a", "b", "0", ">", "%3D", "[]", "]=" }
      local seed = 12345
      local function rand(n)
        seed = seed * 16807 % 2147483647 -- exact in doubles too (LuaJIT)
        return seed % n + 1
      end
      local changed = 0
      for i = 1, 3000 do
        local parts = {}
        for j = 1, rand(14) do parts[j] = alphabet[rand(#alphabet)] end
        -- every other body shaped as a hand-written filter key: name[ ... ]=value
        if i % 2 == 0 then table.insert(parts, 1, "f[") table.insert(parts, rand(#parts + 1), "]=") end
        local body = table.concat(parts)
        local got, err = form.decode(body, { bracket_equals = true })
        local want, werr = reference_decode(body)
        assert.same(werr, err, body)
        assert.same(want, got, ("body #%d: %q"):format(i, body))
        local plain = form.decode(body)
        if not require("luassert.util").deepcompare(plain, got, true) then changed = changed + 1 end
      end
      assert.is_true(changed >= 200, "only " .. changed .. " bodies hold a raw = inside brackets")
    end)

    it("stays linear on a body of brackets and equals signs", function()
      local body = ("a[" .. ("="):rep(50000) .. "&"):rep(4) .. "b[" .. ("[="):rep(50000) .. "]=1"
      local t = assert(form.decode(body, { bracket_equals = true }))
      assert.equal("1", t.b[("[="):rep(50000)])
    end)
  end)

  it("reads hostile bodies as PHP would, without trouble", function()
    assert.same({}, assert(form.decode(("[]"):rep(10000))))
    assert.same({}, assert(form.decode(("&="):rep(400))))
    local t = assert(form.decode(("a["):rep(5000)))
    assert.equal("", t[("a_"):rep(5000)])
    t = assert(form.decode(("%"):rep(3000)))
    assert.equal("", t[("%"):rep(3000)])
    t = assert(form.decode("a" .. ("]"):rep(1000) .. "=1"))
    assert.equal("1", t["a" .. ("]"):rep(1000)])
    t = assert(form.decode(("a[]=1&"):rep(900)))
    assert.equal(900, #t.a)
    local none, err = form.decode("a" .. ("[x]"):rep(100000) .. "=1")
    assert.is_nil(none)
    assert.matches("nests deeper than 64 levels", err, 1, true)
  end)
end)

describe("form.encode", function()
  for _, case in ipairs(http_build_query) do
    it("encodes as http_build_query does: " .. case.name, function()
      assert.equal(case.expected, form.encode(case.data))
    end)
  end

  it("sorts keys: integers ascending, then strings bytewise", function()
    assert.equal("2=b&10=c&B=2&a=1&b=3", form.encode({ a = "1", B = "2", b = "3", [10] = "c", [2] = "b" }))
  end)

  it("writes biconnector.null as PHP writes null: not at all", function()
    assert.equal("b=1", form.encode({ a = null, b = 1 }))
  end)

  it("refuses what has no form spelling, naming where", function()
    local ok, err = pcall(form.encode, { a = { b = print } })
    assert.is_false(ok)
    assert.matches("value of type function cannot be encoded (at 'a%5Bb%5D')", err, 1, true)
    ok, err = pcall(form.encode, { [true] = 1 })
    assert.is_false(ok)
    assert.matches("key of type boolean", err, 1, true)
    assert.has_error(function() form.encode("a=1") end)
  end)

  it("writes back the deepest body decode accepts", function()
    local body = "a" .. ("%5Bx%5D"):rep(64) .. "=deep"
    local t = assert(form.decode(body))
    assert.equal(body, form.encode(t))
    local deeper = { a = t }
    local ok, err = pcall(form.encode, deeper)
    assert.is_false(ok)
    assert.matches("deeper than 64 bracket levels", err, 1, true)
  end)

  it("refuses cycles instead of looping", function()
    local t = {}
    t.self = t
    local ok, err = pcall(form.encode, t)
    assert.is_false(ok)
    assert.matches("deeper than 64 bracket levels (a cycle?)", err, 1, true)
  end)

  it("keeps every digit of a float where PHP's precision 14 would lose some", function()
    local s = form.encode({ x = 1 / 3 })
    assert.equal(1 / 3, tonumber(s:match("^x=(.*)$")))
  end)
end)

describe("decode(encode(t))", function()
  -- Keys PHP's notation can carry back: no ']' (ends a key), no NUL (ends a
  -- name), not empty (means append), not an integer spelled as a string; the
  -- top level also avoids ' ', '.' and '[' (PHP rewrites them to '_'). Empty
  -- tables are left out (as PHP leaves out empty arrays), and integer keys
  -- that start at 0 in order read back as a sequence (a PHP list).
  local alphabet = { "a", "b", "Z", "_", "-", "~", "=", "&", "+", "%", "#", "?", "/", "!", "@", ">", "<", ":",
    " ", ".", "[", "\1", "\255", "Я", "✓", "0", "1" }
  local seed = 20261122
  local function rand(n)
    seed = seed * 16807 % 2147483647 -- exact in doubles too (LuaJIT)
    return seed % n + 1
  end
  local function word(top)
    local parts = { "k" }
    for i = 1, rand(6) do
      local c = alphabet[rand(#alphabet)]
      if top and (c == " " or c == "." or c == "[") then c = "x" end
      parts[i + 1] = c
    end
    return table.concat(parts)
  end
  local function value()
    local parts = {}
    for i = 1, rand(8) - 1 do parts[i] = alphabet[rand(#alphabet)] end
    if rand(10) == 1 then parts[#parts + 1] = "\0" end
    return table.concat(parts)
  end
  local function gen(depth, top)
    local t = {}
    local shape = rand(3)
    if shape == 1 then -- a sequence
      for i = 1, rand(4) do t[i] = depth > 0 and rand(3) == 1 and gen(depth - 1) or value() end
    elseif shape == 2 then -- sparse or negative integer keys (never 0 or 1: see the note above)
      for _ = 1, rand(4) do
        local k = rand(50) - 20
        if k == 0 or k == 1 then k = 2 end
        t[k] = depth > 0 and rand(3) == 1 and gen(depth - 1) or value()
      end
    else
      for _ = 1, rand(5) do t[word(top)] = depth > 0 and rand(2) == 1 and gen(depth - 1) or value() end
    end
    if top and shape ~= 3 then t.top = value() end
    return t
  end

  it("gives back 300 generated nested tables", function()
    for _ = 1, 300 do
      local t = gen(4, true)
      local body = form.encode(t)
      local back, err = form.decode(body)
      assert.is_nil(err)
      assert.same(t, back)
    end
  end)
end)
