-- Helpers for the scale-out specs: a throwaway redis-server and a throwaway
-- nginx with the Lua module, each in its own temp dir on a free 127.0.0.1
-- port, stopped by the spec. A missing binary gives a reason to skip.
local helpers = require "helpers"
local N = require "ngx_helpers"
local socket = require "socket"

local M = {}

M.TOP = N.TOP
M.MODULES = N.MODULES
M.REDIS = os.getenv("BIC_REDIS_SERVER") or "/usr/bin/redis-server"

local readable, read_file = helpers.exists, helpers.read_file
M.readable, M.read_file = readable, read_file

-- A fresh directory the servers' users can read (nginx workers, redis).
function M.tmpdir(tag)
  local p = helpers.tmpdir(tag)
  assert(helpers.sh("chmod 755 " .. p))
  return p
end

-- Waits (bounded by `tries` steps of 10 ms) until f() is true; returns its value.
-- On a time-out, explain() (if given) adds what may tell why.
function M.wait(what, f, tries, explain)
  return helpers.wait(what, (tries or 1000) * 0.01, f, explain, 0.01)
end

-- Starts `cmd` in the background (stdout and stderr to `log`); returns its pid.
M.spawn = helpers.spawn

M.alive = helpers.alive

function M.redis_missing()
  if not readable(M.REDIS) then return "redis-server is not installed (Debian: redis-server)" end
  if not pcall(require, "socket") then return "LuaSocket is missing (Debian: lua-socket)" end
end

-- A redis-server with no persistence on a free port: {port, pid, dir, client(), stop()}.
-- extra: more command-line options (e.g. "--requirepass pw"; then PING answers NOAUTH).
function M.start_redis(extra)
  local dir = M.tmpdir("redis")
  local port = helpers.free_port()
  local pid = M.spawn(("%s --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s --daemonize no %s")
    :format(M.REDIS, port, dir, extra or ""), dir .. "/redis.log")
  local r = { port = port, pid = pid, dir = dir }
  -- a watchdog stops it should this spec process end without its teardown
  -- (an error in an earlier teardown step left one running after the suite)
  helpers.watchdog(("kill -0 %d 2>/dev/null"):format(pid), ("kill %d 2>/dev/null; rm -rf %s"):format(pid, helpers.q(dir)))
  M.wait("redis-server to answer PING", function()
    local c = socket.connect("127.0.0.1", port)
    if not c then return false end
    c:settimeout(1)
    c:send("PING\r\n")
    local line = c:receive("*l")
    c:close()
    return line == "+PONG" or (line or ""):match("^%-NOAUTH") ~= nil
  end, 1000)
  -- a raw command (inline protocol) -> the first line of the answer
  function r.command(line)
    local c = assert(socket.connect("127.0.0.1", port))
    c:settimeout(5)
    assert(c:send(line .. "\r\n"))
    local first = c:receive("*l")
    local out = first
    if first and first:match("^%$%d+") then out = c:receive("*l") end
    if first == "$-1" then out = nil end
    c:close()
    return out
  end
  function r.stop()
    if r.pid then
      os.execute("kill " .. r.pid .. " 2>/dev/null")
      M.wait("redis-server to stop", function() return not M.alive(r.pid) end, 500)
      r.pid = nil
    end
    os.execute("rm -rf " .. dir)
  end
  return r
end

-- the same checks as the other nginx specs (spec/ngx_helpers.lua)
M.luajit_build = N.luajit_build
M.nginx_missing = N.missing

-- A test nginx.conf (ngx_helpers.conf) with `workers` worker processes and
-- `lines` in its http block: 256 connections a worker, no thread pool,
-- nginx's own lua_check_client_abort.
function M.nginx_conf(prefix, workers, lines)
  return N.conf(prefix, lines, { workers = workers, worker_connections = 256, thread_pool = false,
    check_client_abort = false })
end

-- Starts nginx on conf (text) in prefix (ngx_helpers.start: our child, its
-- port bound). Returns {pid, stop(), error_log(), remove()}: remove() stops it
-- and removes prefix.
function M.start_nginx(prefix, conf, port)
  assert(os.execute("mkdir -p " .. prefix .. "/logs"))
  local h = N.start(prefix, conf, port)
  local n = { pid = h.pid }
  function n.stop()
    N.stop(h)
    n.pid = nil
  end
  function n.error_log() return N.read(h.error_log) end
  function n.remove()
    n.stop()
    os.execute("rm -rf " .. helpers.q(prefix))
  end
  return n
end

-- GET path on its own connection; returns a function that reads status, body.
function M.send(port, path)
  local c = assert(socket.connect("127.0.0.1", port))
  c:settimeout(60)
  assert(c:send("GET " .. path .. " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"))
  return function()
    local all = c:receive("*a") or ""
    c:close()
    return tonumber(all:match("^HTTP/1%.%d (%d+)")), all:match("\r\n\r\n(.*)$") or ""
  end
end

return M
