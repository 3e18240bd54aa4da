-- The layout of lua/biconnector/ (docs/architecture.md, "The tree"): modules
-- live in connector/, host/, app/, rest/, cli/ and sql/; the public names that
-- docs, nginx configurations and users' code give (biconnector.ngx, .rest, ...)
-- are one-line shims at the top that return the very same module table, and no
-- module of the project goes through a shim.
local helpers = require "helpers"

local LUA = helpers.top .. "/lua/"

-- public name -> the module it stands for
local SHIMS = {
  ["biconnector.connector"] = "biconnector.connector.core",
  ["biconnector.request"] = "biconnector.connector.request",
  ["biconnector.filter"] = "biconnector.connector.filter",
  ["biconnector.cache"] = "biconnector.connector.cache",
  ["biconnector.errors"] = "biconnector.connector.errors",
  ["biconnector.names"] = "biconnector.connector.names",
  ["biconnector.serve"] = "biconnector.host.serve",
  ["biconnector.ngx"] = "biconnector.host.ngx",
  ["biconnector.dev"] = "biconnector.host.dev",
  ["biconnector.metrics"] = "biconnector.host.metrics",
  ["biconnector.async"] = "biconnector.host.async",
  ["biconnector.app_job"] = "biconnector.app.job",
  ["biconnector.rest"] = "biconnector.rest.client",
  ["biconnector.tokens"] = "biconnector.rest.tokens",
  ["biconnector.tokens_redis"] = "biconnector.rest.tokens_redis",
  ["biconnector.cli"] = "biconnector.cli.main",
  ["biconnector.verify"] = "biconnector.cli.verify",
  ["biconnector.register"] = "biconnector.cli.register",
}

-- Modules at the top that are not shims.
local TOP = { ["init.lua"] = true, ["json.lua"] = true, ["form.lua"] = true }

local function path_of(name)
  return LUA .. name:gsub("%.", "/") .. ".lua"
end

local function read(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("*a")
  f:close()
  return text
end

-- Every .lua file under lua/biconnector, relative to lua/biconnector/.
local function lua_files()
  local p = assert(io.popen(("cd %q && find . -name '*.lua' | sort"):format(LUA .. "biconnector")))
  local files = {}
  for line in p:lines() do files[#files + 1] = line:sub(3) end
  p:close()
  assert.is_true(#files > 30, "found only " .. #files .. " modules under " .. LUA .. "biconnector")
  return files
end

describe("the module layout", function()
  for shim, target in pairs(SHIMS) do
    it(shim .. " is a one-line shim returning the table of " .. target, function()
      local text = read(path_of(shim))
      assert.matches('^return require "' .. target:gsub("%.", "%%.") .. '"[^\n]*\n$', text)
      assert.equals(path_of(target), package.searchpath(target, package.path))
      assert.equals(path_of(shim), package.searchpath(shim, package.path))
      local old, new = require(shim), require(target)
      assert.equals("table", type(new))
      assert.is_true(rawequal(old, new), shim .. " and " .. target .. " are different tables")
    end)
  end

  it("has at the top only the facade, json, form, sql/, the five job directories and the shims", function()
    local stray = {}
    for _, file in ipairs(lua_files()) do
      if not file:find("/", 1, true) and not TOP[file]
        and not SHIMS["biconnector." .. file:gsub("%.lua$", "")] then
        stray[#stray + 1] = file
      end
      -- the directories are not packages: a user's lua_package_path may lack ?/init.lua
      local dir = file:match("^([^/]+)/init%.lua$")
      if dir and dir ~= "sql" then stray[#stray + 1] = file end
    end
    assert.same({}, stray)
  end)

  it("has no module that requires a public shim name (the project's code uses the new names)", function()
    local offenders = {}
    for _, file in ipairs(lua_files()) do
      local shim_self = SHIMS["biconnector." .. file:gsub("%.lua$", "")]
      if not shim_self then
        local n = 0
        for line in (read(LUA .. "biconnector/" .. file) .. "\n"):gmatch("([^\n]*)\n") do
          n = n + 1
          local code = line:gsub("%-%-.*$", "")
          -- require "x", require("x"), require 'x', and the names of modules kept in
          -- tables for a later require (cli.main's commands, the facade's parts)
          for name in code:gmatch("[\"']([%w_.]+)[\"']") do
            if SHIMS[name] and (code:find("require", 1, true) or code:find("=%s*[\"']" .. name:gsub("%.", "%%."))) then
              offenders[#offenders + 1] = ("%s:%d: %s"):format(file, n, name)
            end
          end
        end
      end
    end
    assert.same({}, offenders)
  end)

  it("loads the engines' dialects (filter.to_sql) without the connector or its hosts", function()
    -- the fuzz targets load the filter with a core of json and form alone
    local out = helpers.run_lua([[
      local filter = require "biconnector.connector.filter"
      local ast = assert(filter.parse({ [">ID"] = 1 }, { { code = "ID", type = "int" } }))
      for _, d in ipairs({ "sqlite", "postgres", "mysql" }) do assert(filter.to_sql(ast, { dialect = d })) end
      print(package.loaded["biconnector.sql"] ~= nil, package.loaded["biconnector.connector.core"] == nil,
        package.loaded["biconnector.host.serve"] == nil)
    ]])
    assert.equals("true\ttrue\ttrue\n", out)
  end)
end)
