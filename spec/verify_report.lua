-- What the verify specs read from a verify report, the command line they
-- run, and their fixture connectors.
local helpers = require "helpers"
local S = require "serve_helpers"
local verify = require "biconnector.verify"

local _M = {}

-- Lines of one result level, as "check: message".
function _M.lines(report, level)
  local out = {}
  for _, c in ipairs(report.checks) do
    if c.result == level then out[#out + 1] = c.check .. ": " .. c.message end
  end
  return out
end

function _M.has_line(report, level, pattern)
  for _, l in ipairs(_M.lines(report, level)) do
    if l:find(pattern) then return true end
  end
  return false, ("no %s line matching %q in:\n%s"):format(level, pattern, verify.format(report))
end

function _M.assert_line(report, level, pattern)
  local ok, why = _M.has_line(report, level, pattern)
  if not ok then error(why, 2) end
end

-- A fixture connector (a spec/ script that serves its modes under the URL's
-- path) for the enclosing describe block: started in its setup, stopped in its
-- teardown. -> a table whose base ("http://127.0.0.1:PORT/") setup sets.
function _M.fixture(script)
  local busted = require "busted" -- (setup and teardown live in the spec files' environment)
  local f = {}
  busted.setup(function()
    f.server = S.start(S.shell_quote(helpers.runtime) .. " " .. script)
    f.base = "http://127.0.0.1:" .. f.server.port .. "/"
  end)
  busted.teardown(function() if f.server then S.stop(f.server) end end)
  return f
end

-- Runs `biconnector verify ARGS` as a subprocess; returns exit code, stdout, stderr.
function _M.cli(args)
  local parts = { helpers.runtime, "bin/biconnector", "verify" }
  for _, a in ipairs(args) do parts[#parts + 1] = S.shell_quote(a) end
  return helpers.run3(table.concat(parts, " "))
end

return _M
