-- Shared helpers for the specs: paths, the shared corpus, doc examples, nginx.
local helpers = {}

helpers.top = os.getenv("BIC_TOP") or "."
helpers.build = os.getenv("BIC_BUILD") or (helpers.top .. "/build")
helpers.runtime = os.getenv("BIC_RUNTIME") or (jit and "luajit" or "lua5.4")
helpers.shared = os.getenv("BIC_SHARED") or (helpers.top .. "/../shared")

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() return true end
  return false
end
helpers.exists = exists

-- The shared corpus (../shared) is beside the project in CI but not in a user's
-- clone. Returns its path, or nil after printing a visible skip message.
function helpers.shared_dir(what)
  if exists(helpers.shared .. "/docs/protocol.md") then return helpers.shared end
  io.stderr:write(("\n*** SKIPPED: %s needs ../shared, which is absent (%s)\n")
    :format(what, helpers.shared))
  return nil
end

-- The ```lua blocks of a file of the project (README.md, docs/*.md), in order.
function helpers.lua_blocks(path)
  local f = assert(io.open(helpers.top .. "/" .. path, "r"))
  local text = f:read("*a")
  f:close()
  local blocks = {}
  for code in text:gmatch("```lua\n(.-)```") do blocks[#blocks + 1] = code end
  return blocks
end

-- POSTs a form body to a connector object's endpoint, in process (its handle is
-- a pure function of the request): -> status, the whole body (a streamed answer
-- drained), headers.
function helpers.post_form(c, path, body)
  local status, headers, out = c:handle({ method = "POST", path = path, body = body,
    headers = { ["content-type"] = "application/x-www-form-urlencoded" } })
  if type(out) == "function" then
    local parts = {}
    for chunk in out do parts[#parts + 1] = chunk end
    out = table.concat(parts)
  end
  return status, out, headers
end

-- A TCP port on 127.0.0.1 that was free a moment ago.
function helpers.free_port()
  local s = assert(require("socket").bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- The nginx `user` line for a test config. Run by root, nginx drops its
-- workers to nobody/www-data, who cannot read a checkout in a private
-- directory (mktemp -d makes it 0700): keep them as root then.
function helpers.nginx_user_line()
  local p = io.popen("id -u")
  local uid = p:read("*l")
  p:close()
  return uid == "0" and "user root;" or ""
end

return helpers
