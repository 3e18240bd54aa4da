-- What spec/verify_spec.lua and spec/verify_review_spec.lua read from a
-- verify report, and the command line they run.
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

-- Runs `biconnector verify ARGS` as a subprocess; returns exit code, stdout, stderr.
function _M.cli(args)
  local parts = { helpers.runtime, "bin/biconnector", "verify" }
  for _, a in ipairs(args) do parts[#parts + 1] = S.shell_quote(a) end
  return helpers.run3(table.concat(parts, " "))
end

return _M
