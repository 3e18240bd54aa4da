-- The rock installs with luarocks, offline, into a private tree, and its
-- command runs from there: the scm and the versioned rockspec with
-- `luarocks make`, and the release rock `make dist` writes with
-- `luarocks install FILE` (issue: foundation, acceptance 2; issue 15, item 3).
local helpers = require "helpers"

local VERSION = require("biconnector.core").version

local read = helpers.read_file
-- Runs a shell command: -> ok, its output (stdout and stderr)
local run = helpers.run

local function fresh_tree() return helpers.tmp_path("tree") end

-- `biconnector --version` from the tree, outside the source directory, and a
-- module of the C core loaded from the tree (not from the build directory).
local function check_tree(tree)
  local ok, out = run(("eval \"$(luarocks --lua-version 5.4 --tree %q path)\" && cd / && %q/bin/biconnector --version")
    :format(tree, tree))
  assert.is_true(ok, out)
  assert.equals("biconnector " .. VERSION .. "\n", out)
  ok, out = run(("eval \"$(luarocks --lua-version 5.4 --tree %q path)\" && cd / && lua5.4 -e " ..
    "'print(package.searchpath(\"biconnector.core\", package.cpath), require(\"biconnector.json\").encode({1}))'")
    :format(tree))
  assert.is_true(ok, out)
  assert.equals(tree .. "/lib/lua/5.4/biconnector/core.so\t[1]\n", out)
  -- the files of the `serve --dev` page are installed beside the modules (biconnector.host.dev finds them there; dev.lua is its public name)
  local missing = {}
  for _, name in ipairs({ "dev.lua", "host/dev.lua", "host/dev/index.html", "host/dev/dev.css", "host/dev/dev.js" }) do
    if not helpers.exists(tree .. "/share/lua/5.4/biconnector/" .. name) then missing[#missing + 1] = name end
  end
  assert.same({}, missing)
end

describe("the rock #lua54", function()
  if os.getenv("BIC_SANITIZE") == "1" then
    it("is skipped under the sanitizer build", function()
      pending("SKIPPED: luarocks builds its own core, not the sanitizer build")
    end)
    return
  end

  local trees = {}
  after_each(function()
    for _, tree in ipairs(trees) do os.execute(("rm -rf %q"):format(tree)) end
    trees = {}
  end)

  for _, rockspec in ipairs({ "rockspec/biconnector-scm-1.rockspec", "rockspec/biconnector-" .. VERSION .. "-1.rockspec" }) do
    it("installs " .. rockspec .. " with luarocks make --deps-mode=none into a tree and runs --version", function()
      local tree = fresh_tree()
      trees[#trees + 1] = tree
      local ok, out = run(("cd %q && luarocks --lua-version 5.4 --tree %q make --deps-mode=none %s")
        :format(helpers.top, tree, rockspec))
      assert.is_true(ok, "luarocks make failed:\n" .. out)
      check_tree(tree)
    end)
  end

  it("make dist writes a rock that luarocks install FILE --deps-mode=none installs into a fresh tree", function()
    local dist = fresh_tree()
    trees[#trees + 1] = dist
    local ok, out = run(("cd %q && scripts/make-dist %q"):format(helpers.top, dist))
    assert.is_true(ok, "make dist failed:\n" .. out)
    local rock = out:match("(%S+%.rock)\n$")
    assert.is_string(rock, out)
    assert.matches("/biconnector%-" .. VERSION:gsub("%.", "%%.") .. "%-1%.linux%-[%w_]+%.rock$", rock)
    local tree = fresh_tree()
    trees[#trees + 1] = tree
    -- from / with no rocks server reachable: the file alone installs
    ok, out = run(("cd / && luarocks --lua-version 5.4 --tree %q --only-server=%q install %q --deps-mode=none")
      :format(tree, dist, rock))
    assert.is_true(ok, "luarocks install failed:\n" .. out)
    check_tree(tree)
  end)

  it("is versioned consistently: rockspec, BIC_VERSION, CHANGELOG, LICENSE", function()
    local rockspec = read(helpers.top .. "/rockspec/biconnector-" .. VERSION .. "-1.rockspec")
    assert.is_string(rockspec, "no rockspec for BIC_VERSION " .. VERSION)
    assert.matches('\nversion = "' .. VERSION:gsub("%.", "%%.") .. '%-1"\n', rockspec)
    assert.matches('license = "MIT"', rockspec)
    assert.matches("\n## " .. VERSION:gsub("%.", "%%.") .. " ", read(helpers.top .. "/CHANGELOG.md"))
    assert.matches("^MIT License\n", read(helpers.top .. "/LICENSE"))
  end)
end)
