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

-- The whole of a file, or nil when it cannot be opened.
function helpers.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Writes text to path, replacing it; raises when it cannot.
function helpers.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  f:close()
end

-- A fresh path under /tmp ending in "-TAG", not created.
function helpers.tmp_path(tag)
  local p = os.tmpname()
  os.remove(p)
  return p .. "-" .. tag
end

-- The shared corpus (../shared) is beside the project in CI but not in a user's
-- clone. Returns its path, or nil after printing a visible skip message.
function helpers.shared_dir(what)
  if exists(helpers.shared .. "/docs/protocol.md") then return helpers.shared end
  io.stderr:write(("\n*** SKIPPED: %s needs ../shared, which is absent (%s)\n")
    :format(what, helpers.shared))
  return nil
end

-- Deep equality of two values. strict: number subtypes (where the runtime has
-- them) and metatables (array markers) must match too; else numbers compare
-- as doubles and metatables are not looked at.
function helpers.deep_equal(a, b, strict)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if strict then return a == b and (not math.type or math.type(a) == math.type(b)) end
    return a + 0.0 == b + 0.0
  end
  if type(a) ~= "table" then return a == b end
  if strict and getmetatable(a) ~= getmetatable(b) then return false end
  for k, v in pairs(a) do
    if not helpers.deep_equal(v, b[k], strict) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
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

-- The fields of the specs' "deals" table, one of each type (a fresh list each
-- call): id int, title string, amount double, closed date, updated datetime.
function helpers.deals_fields()
  return {
    { code = "id", name = "ID", type = "int" },
    { code = "title", name = "Title", type = "string" },
    { code = "amount", name = "Amount", type = "double" },
    { code = "closed", name = "Closed", type = "date" },
    { code = "updated", name = "Updated", type = "datetime" },
  }
end

-- An answer's body, a string or a chunk iterator, as one string.
function helpers.drain(body)
  if type(body) ~= "function" then return body end
  local parts = {}
  for chunk in body do parts[#parts + 1] = chunk end
  return table.concat(parts)
end

-- The ```lua block of a file of the project whose code starts with `start`
-- (plain text), or nil.
function helpers.lua_block(path, start)
  for _, code in ipairs(helpers.lua_blocks(path)) do
    if code:sub(1, #start) == start then return code end
  end
end

-- Lua source text as a function named `name` (for error messages), whose
-- globals are env's when env is given: on Lua 5.4 and on LuaJIT.
function helpers.load(code, name, env)
  if setfenv then
    local chunk = assert(loadstring(code, name))
    if env then setfenv(chunk, env) end
    return chunk
  end
  if env then return assert(load(code, name, "t", env)) end
  return assert(load(code, name, "t")) -- an explicit nil env would be the chunk's _ENV
end

-- A file-like sink for a command's output: :write(...) appends to .text.
function helpers.sink()
  local s = { text = "" }
  function s:write(...) for _, v in ipairs({ ... }) do self.text = self.text .. tostring(v) end return self end
  return s
end

-- POSTs body (text of content type ctype) to a connector object's endpoint, in
-- process (its handle is a pure function of the request; opts are handle's):
-- -> status, the whole body (a streamed answer drained), headers, info.
function helpers.post(c, path, body, ctype, opts)
  local status, headers, out, info = c:handle({ method = "POST", path = path, body = body,
    headers = { ["content-type"] = ctype } }, opts)
  return status, helpers.drain(out), headers, info
end

-- helpers.post of a form body.
function helpers.post_form(c, path, body)
  return helpers.post(c, path, body, "application/x-www-form-urlencoded")
end

-- helpers.post of a value encoded as JSON.
function helpers.post_json(c, path, value, opts)
  return helpers.post(c, path, require("cjson").encode(value), "application/json", opts)
end

-- How many values the registry holds through luaL_ref: entries under integer
-- keys that are not free-list links (those are numbers).
function helpers.registry_refs()
  local n = 0
  for k, v in pairs(debug.getregistry()) do
    if type(k) == "number" and type(v) ~= "number" then n = n + 1 end
  end
  return n
end

-- Writes to `file` a connector definition whose one table, t (id, pad), has
-- rows that never end (each 1 KB), and whose data close function appends
-- "closed\n" to the file `marks`: for the specs of a client that leaves.
function helpers.write_endless_connector(file, marks)
  helpers.write_file(file, ([[
local marks = %q
return {
  title = "T", settings = {}, check = function() return true end,
  tables = { { code = "t", title = "T" } },
  describe = { t = { { code = "id", name = "ID", type = "int" }, { code = "pad", name = "P", type = "string" } } },
  data = function()
    local i, pad = 0, string.rep("x", 1000)
    return function() i = i + 1 return { id = i, pad = pad } end, nil, function()
      local m = assert(io.open(marks, "a")) m:write("closed\n") m:close()
    end
  end,
}
]]):format(marks))
end

---------------------------------------------------------------- commands
-- Shell commands and temporary directories, one set for every spec. Tools run
-- as they are: a sanitizer run (BIC_SANITIZE=1) gives its runtimes to the Lua
-- interpreter only (scripts/run-specs), never to what a spec starts.
helpers.sanitized = os.getenv("BIC_SANITIZE") == "1"

-- s as one shell word.
function helpers.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs cmd with /bin/sh: -> true when it exited 0.
function helpers.sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

-- Runs cmd: -> ok, its output (stdout and stderr together), its exit status.
function helpers.run(cmd)
  local p = assert(io.popen("{ " .. cmd .. "; } 2>&1; echo \"~rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("~rc=(%d+)%s*$"))
  out = out:gsub("~rc=%d+%s*$", "")
  return rc == 0, out, rc
end

-- Runs cmd: -> its exit status, its stdout, its stderr (each read whole).
function helpers.run3(cmd)
  local errfile = helpers.tmp_path("stderr")
  local p = assert(io.popen("{ " .. cmd .. "; } 2>" .. helpers.q(errfile) .. "; echo \"~rc=$?\""))
  local out = p:read("*a")
  p:close()
  local err = helpers.read_file(errfile) or ""
  os.remove(errfile)
  return tonumber(out:match("~rc=(%d+)%s*$")), (out:gsub("~rc=%d+%s*$", "")), err
end

-- Runs Lua source text as a script of its own under the specs' runtime, killed
-- after `seconds` (default 30): -> what it printed, then "exit N" (its status)
-- when opts.status, with its stderr too unless opts.stderr == false.
function helpers.run_lua(source, opts)
  opts = opts or {}
  local script = helpers.tmp_path("script.lua")
  helpers.write_file(script, source)
  local p = assert(io.popen(("timeout %d %s %s%s%s"):format(opts.seconds or 30, helpers.runtime,
    helpers.q(script), opts.stderr == false and "" or " 2>&1", opts.status and "; echo \"exit $?\"" or "")))
  local out = p:read("*a")
  p:close()
  os.remove(script)
  return out
end

-- The first line cmd prints (its stderr dropped), or nil.
function helpers.first_line(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  local s = p and p:read("*l")
  if p then p:close() end
  return s
end

-- A fresh directory /tmp/bic-TAG-XXXXXX (mode 0700, as mktemp makes it).
function helpers.tmpdir(tag)
  local dir = helpers.first_line("mktemp -d /tmp/bic-" .. (tag or "spec") .. "-XXXXXX")
  assert(dir and dir ~= "", "mktemp -d failed")
  return dir
end

-- Removes a directory under /tmp (what tmpdir made).
function helpers.rmdir(dir)
  if dir and dir:match("^/tmp/.") then helpers.sh("rm -rf " .. helpers.q(dir)) end
end

---------------------------------------------------------------- waiting

-- Calls f until it gives a true value, which is returned, or until `seconds`
-- (default 20) have passed: -> nil. Sleeps `step` seconds (default 0.02)
-- between calls.
function helpers.poll(f, seconds, step)
  local socket = require "socket" -- lazy, as in free_port
  local deadline = socket.gettime() + (seconds or 20)
  while true do
    local v = f()
    if v then return v end
    if socket.gettime() > deadline then return nil end
    socket.sleep(step or 0.02)
  end
end

-- helpers.poll, raising "timed out waiting for WHAT" (at the caller's level)
-- when f never gives a true value; explain() (if given) adds what may tell why.
function helpers.wait(what, seconds, f, explain, step)
  local v = helpers.poll(f, seconds, step)
  if v then return v end
  error("timed out waiting for " .. what .. (explain and (": " .. tostring(explain())) or ""), 2)
end

---------------------------------------------------------------- servers

-- Starts cmd in the background, stdout and stderr to log (default /dev/null):
-- -> its pid.
function helpers.spawn(cmd, log)
  local pidfile = os.tmpname()
  assert(os.execute(("%s >%s 2>&1 & echo $! >%s"):format(cmd, log or "/dev/null", pidfile)))
  local f = io.open(pidfile, "r")
  local pid = f and tonumber(f:read("*l"))
  if f then f:close() end
  os.remove(pidfile)
  return pid
end

-- A watchdog for a server a spec started: while this spec process lives and
-- `guard` (a shell test: the server's directory is there, its pid alive) holds,
-- it waits; when this process died first (killed by a timeout, its teardown
-- never run) and guard still holds, it runs `cleanup` (stop the server,
-- remove its directory).
function helpers.watchdog(guard, cleanup)
  -- lazy: the few specs that start servers need the core's getpid, not the rest
  local me = require("biconnector.core").process.getpid()
  local script = ("while kill -0 %d 2>/dev/null && %s; do sleep 1; done; %s && { %s; }")
    :format(me, guard, guard, cleanup)
  os.execute("sh -c " .. helpers.q(script) .. " >/dev/null 2>&1 &")
end

-- Is a process alive (and not a zombie nobody reaped yet)?
function helpers.alive(pid)
  local stat = helpers.read_file("/proc/" .. pid .. "/stat")
  local state = stat and stat:match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

-- A TCP connection to 127.0.0.1:port (raises when refused), its timeout set.
function helpers.connect(port, timeout)
  local c = require("socket").tcp()
  c:settimeout(timeout)
  assert(c:connect("127.0.0.1", port))
  return c
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
