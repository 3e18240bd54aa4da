-- Progress of a long command (verify's checks, register's steps, call --all's
-- pages) for a person watching a terminal: one status line on stderr,
-- rewritten in place and erased when the command ends or prints a line of
-- its own. Nothing at all when stderr is not a terminal (a pipe, a file, CI)
-- or the command prints JSON, so that output stays byte for byte the same.
local core = require "biconnector.core"

local _M = {}

local WIDTH = 79 -- a status line longer than the terminal would wrap and not be erased

local silent = { enabled = false }
function silent.update() end
function silent.clear() end

-- progress.new(name [, opts]) -> p with p.update(text), p.clear().
-- opts.enabled: true/false to decide (default: stderr is a terminal and not
-- opts.json); opts.stream: where to write (default io.stderr).
function _M.new(name, opts)
  opts = opts or {}
  local enabled = opts.enabled
  if enabled == nil then enabled = not opts.json and core.process.isatty(2) end
  if not enabled then return silent end
  local stream = opts.stream or io.stderr
  local shown = false
  local p = { enabled = true }
  function p.update(text)
    local line = name .. ": " .. tostring(text):gsub("[%c]", " ")
    if #line > WIDTH then line = line:sub(1, WIDTH - 3) .. "..." end
    stream:write("\r\27[K", line)
    stream:flush()
    shown = true
  end
  function p.clear()
    if shown then
      stream:write("\r\27[K")
      stream:flush()
      shown = false
    end
  end
  return p
end

return _M
