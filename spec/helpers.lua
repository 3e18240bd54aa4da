-- Shared helpers for the specs: paths, the shared corpus, subprocesses.
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
  if exists(helpers.shared .. "/docs/protocol.md") then -- The nginx `user` line for a test config. Run by root, nginx drops its
-- workers to nobody/www-data, who cannot read a checkout in a private
-- directory (mktemp -d makes it 0700): keep them as root then.
function helpers.nginx_user_line()
  local p = io.popen("id -u")
  local uid = p:read("*l")
  p:close()
  return uid == "0" and "user root;" or ""
end

return helpers.shared end
  io.stderr:write(("\n*** SKIPPED: %s needs ../shared, which is absent (%s)\n")
    :format(what, helpers.shared))
  return nil
end

-- Command that runs a Lua snippet or script with the same runtime and paths.
function helpers.lua_command()
  -- The nginx `user` line for a test config. Run by root, nginx drops its
-- workers to nobody/www-data, who cannot read a checkout in a private
-- directory (mktemp -d makes it 0700): keep them as root then.
function helpers.nginx_user_line()
  local p = io.popen("id -u")
  local uid = p:read("*l")
  p:close()
  return uid == "0" and "user root;" or ""
end

return helpers.runtime
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
