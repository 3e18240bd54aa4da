-- The in-memory LIKE matcher (filter.like, and the pattern/like operators of
-- filter.match): the same answers as the matcher it replaced (kept below as
-- the reference: per-character tables and backtracking to the last `%`) on
-- 200,000 generated pattern/value pairs over alphabets with `%`, `_`, `!`,
-- case variants, UTF-8, stray continuation bytes and NUL, short and long;
-- a 10 MB value with a 1,000-byte needle in bounded memory; and the inputs
-- that made the old matcher (or a naive segment search) take quadratic time
-- answered right. How long they take is measured in bench/form, not here.
local filter = require "biconnector.filter"

---- the reference: the matcher as it was before issue 20 (commit 63ab128)
local LOWER = {}
for c = 65, 90 do LOWER[string.char(c)] = string.char(c + 32) end
local function ascii_lower(s) return (s:gsub("[A-Z]", LOWER)) end
local function chars(s)
  local out, n = {}, 0
  for ch in ascii_lower(s):gmatch("[%z\1-\127\192-\255][\128-\191]*") do
    n = n + 1
    out[n] = ch
  end
  return out, n
end
local function like_tokens(pattern)
  local p, np = chars(pattern)
  local toks, nt, i = {}, 0, 1
  while i <= np do
    local c = p[i]
    nt = nt + 1
    if c == "!" and i < np then
      i = i + 1
      toks[nt] = p[i]
    elseif c == "%" then
      toks[nt] = true
    elseif c == "_" then
      toks[nt] = false
    else
      toks[nt] = c
    end
    i = i + 1
  end
  return toks, nt
end
local function old_like(subject, pattern)
  local toks, nt = like_tokens(pattern)
  local s, ns = chars(subject)
  local si, ti, star_t, star_s = 1, 1, nil, nil
  while si <= ns do
    local t = toks[ti]
    if ti <= nt and t ~= true and (t == false or t == s[si]) then
      si, ti = si + 1, ti + 1
    elseif ti <= nt and t == true then
      star_t, star_s = ti, si
      ti = ti + 1
    elseif star_t then
      star_s = star_s + 1
      si, ti = star_s, star_t + 1
    else
      return false
    end
  end
  while ti <= nt and toks[ti] == true do ti = ti + 1 end
  return ti > nt
end

local ALPHABETS = {
  ascii = { "a", "A", "b", "B", "x", "ab", "aa", "%", "%", "_", "_", "!" },
  utf8 = { "a", "\195\169", "\195\137", "\208\176", "\208\177", "\226\130\172", "%", "_", "!", "b" },
  raw = { "a", "A", "b", "%", "_", "!", "\195\169", "\195", "\169", "\128", "\0", "x", "\226\130\172",
    "ab", "%%", "\240\159\152\128", "a\128\128\128\128" },
}

local seed = 20
local function rand(n)
  seed = seed * 48271 % 2147483647
  return seed % n + 1
end
local function gen(alphabet, max)
  local t = {}
  for i = 1, rand(max + 1) - 1 do t[i] = alphabet[rand(#alphabet)] end
  return table.concat(t)
end

describe("filter.like", function()
  for name, alphabet in pairs(ALPHABETS) do
    it("answers as the old matcher on 40,000 generated pairs (" .. name .. ")", function()
      local yes = 0
      for _ = 1, 40000 do
        local pattern = gen(alphabet, 9)
        local value = gen(alphabet, rand(4) == 1 and 40 or 12)
        -- a value built from the pattern's literals matches more often
        if rand(3) == 1 then value = pattern:gsub("[%%_!]", function() return gen(alphabet, 3) end) end
        local want = old_like(value, pattern)
        if want then yes = yes + 1 end
        if filter.like(value, pattern) ~= want then
          error(("like(%q, %q): old %s, new %s"):format(value, pattern, tostring(want), tostring(not want)))
        end
      end
      -- both answers are common: the comparison is not one-sided
      assert.is_true(yes > 4000 and yes < 36000, yes .. " matches")
    end)
  end

  it("answers as the old matcher inside match: pattern, not_pattern and like operators", function()
    local fields = { { code = "S", type = "string" } }
    local compared = 0
    for _ = 1, 20000 do
      local alphabet = ALPHABETS[rand(2) == 1 and "ascii" or "utf8"]
      local needle, value = gen(alphabet, 8), gen(alphabet, 30)
      for _, op in ipairs({ "=%", "!=%", "%", "!%" }) do
        local ast = assert(filter.parse({ [op .. "S"] = needle }, fields))
        local want
        if op == "=%" or op == "!=%" then
          want = old_like(value, (needle:gsub("!", "!!")))
        else
          want = old_like(value, "%" .. needle:gsub("[!%%_]", "!%0") .. "%")
        end
        if op:sub(1, 1) == "!" then want = not want end
        assert.equals(want, filter.match(ast, { S = value }), ("%s %q on %q"):format(op, needle, value))
        compared = compared + 1
      end
    end
    assert.equals(80000, compared)
  end)

  it("keeps the documented semantics: ASCII case only, ! escapes, _ is one UTF-8 character", function()
    assert.is_true(filter.like("Привет", "П%"))       -- Cyrillic: no case folding
    assert.is_false(filter.like("Привет", "при%"))
    assert.is_true(filter.like("ABC", "a_c"))
    assert.is_true(filter.like("aéc", "a_c"))       -- é is two bytes, one character
    assert.is_false(filter.like("aéc", "a__c"))
    assert.is_true(filter.like("50%", "50!%"))
    assert.is_false(filter.like("500", "50!%"))
    assert.is_true(filter.like("a_b", "a!_b"))
    assert.is_true(filter.like("x!", "x!"))         -- a trailing ! is itself
    assert.is_true(filter.like("", "%"))
    assert.is_false(filter.like("", "_"))
    assert.is_true(filter.like("abcabcabd", "%abc%abd"))
  end)

  describe("on long values", function()
    local function allocated(f)
      collectgarbage()
      collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      local r = f()
      local grew = (collectgarbage("count") - before) * 1024
      collectgarbage("restart")
      collectgarbage()
      return r, grew
    end
    local MB10 = 10 * 1024 * 1024
    local fields = { { code = "S", type = "string" } }
    local needle = ("0123456789"):rep(99) .. "xyz!%_q" -- 997 bytes, absent

    -- allocated: everything allocated while the collector is stopped, the
    -- growing buffers of the lower-cased copy included (its peak is less)
    it("matches a 10 MB value against a 1,000-byte needle in memory of a few times the value", function()
      local value = ("Abcdefghij"):rep(MB10 / 10)
      for _, raw in ipairs({ { ["%S"] = needle }, { ["=%S"] = "%" .. needle .. "%" },
        { ["=%S"] = "%" .. needle:gsub("[%%_!]", "") .. "_%" } }) do
        local ast = assert(filter.parse(raw, fields))
        local r, grew = allocated(function() return filter.match(ast, { S = value }) end)
        assert.is_false(r)
        -- the lower-cased copy of the value and little more; the matcher this
        -- replaced built tables of 10 million one-character strings (325 MB RSS)
        assert.is_true(grew < 6 * MB10, ("%.1f MiB allocated"):format(grew / 1048576))
      end
      local tail = value:sub(-997)
      local ast = assert(filter.parse({ ["=%S"] = "%" .. tail:sub(1, 500) .. "_" .. tail:sub(502) }, fields))
      local r, grew = allocated(function() return filter.match(ast, { S = value }) end)
      assert.is_true(r)
      assert.is_true(grew < 6 * MB10, ("%.1f MiB allocated"):format(grew / 1048576))
    end)

    it("answers the inputs that are quadratic for a backtracking or naive search", function()
      local aaa = ("a"):rep(MB10)
      local cases = {
        { aaa, ("a"):rep(999) .. "b", false, "%" },
        { aaa, "%" .. ("a"):rep(999) .. "b%", false, "=%" },
        { aaa, "%" .. ("a_"):rep(499) .. "b%", false, "=%" },
        { aaa, "%" .. ("a"):rep(400) .. "_" .. ("a"):rep(400) .. "b%", false, "=%" },
        { aaa, "%" .. ("a%"):rep(500), true, "=%" },
        { ("ab"):rep(MB10 / 2), "%" .. ("a_"):rep(499) .. "b%", false, "=%" },
        { ("ab"):rep(MB10 / 2), "%" .. ("a_"):rep(499) .. "a%", true, "=%" },
        -- Cyrillic (two bytes a character): the `_` search runs on the value widened to 4 bytes a character
        { ("аб"):rep(MB10 / 8), "%" .. ("а_"):rep(300) .. "б%", false, "=%" },
        { ("аб"):rep(MB10 / 8), "%" .. ("а_"):rep(300) .. "а%", true, "=%" },
      }
      for _, case in ipairs(cases) do
        local ast = assert(filter.parse({ [case[4] .. "S"] = case[2] }, fields))
        local r, grew = allocated(function() return filter.match(ast, { S = case[1] }) end)
        assert.equals(case[3], r, case[2]:sub(1, 30))
        -- widening writes 4 bytes a character (LuaJIT's string buffer doubles on the way)
        assert.is_true(grew < 12 * #case[1], ("%.1f MiB allocated"):format(grew / 1048576))
      end
    end)
  end)
end)
