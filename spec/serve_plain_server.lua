-- A core.server with plain Lua handlers (no connector), run as a subprocess by
-- spec/serve_server_spec.lua. Env: MAX_BODY, TIMEOUT, GRACE, CONNECTIONS.
local core = require "biconnector.core"
local cjson = require "cjson"

core.process.trap("TERM", "INT", "PIPE")
local function note(...) io.stderr:write(table.concat({ ... }, " "), "\n") io.stderr:flush() end

local function counted_stream(name, n, size, fail_at)
  local i = 0
  local piece = ("x"):rep(size - 1) .. "\n"
  return function()
    i = i + 1
    if fail_at and i == fail_at then error("iterator broke at chunk " .. i) end
    if i > n then return nil end
    if i % 1000 == 0 then note("progress", name, i) end
    return piece
  end, function(how) note("finish", name, how, "chunks=" .. (i > n and n or i)) end
end

local srv
srv = assert(core.server.new {
  port = 0,
  max_body = tonumber(os.getenv("MAX_BODY") or "") or 8 * 1024 * 1024,
  timeout = tonumber(os.getenv("TIMEOUT") or "") or 30,
  grace = tonumber(os.getenv("GRACE") or "") or 10,
  connections = tonumber(os.getenv("CONNECTIONS") or "") or 64,
  handler = function(req)
    local path = req.path
    if path == "/echo" then
      return 200, { ["Content-Type"] = "application/json" }, cjson.encode(req),
        function(how) note("finish", "/echo", how) end
    elseif path == "/raise" then
      error("handler raised on purpose")
    elseif path == "/raise_table" then
      error({ code = 42 })
    elseif path == "/bad_finish" then
      return 200, {}, "fine", function() error("finish raised on purpose") end
    elseif path == "/bad_status" then
      return "teapot", {}, "x"
    elseif path == "/bad_body" then
      return 200, {}, {}
    elseif path == "/bad_header" then
      return 200, { ["X-Bad"] = "a\r\nInjected: yes" }, "x"
    elseif path == "/empty" then
      return 204, nil, nil
    elseif path == "/stream" then
      local it, fin = counted_stream(path .. "?n=" .. (req.query.n or "10"), tonumber(req.query.n or "10"), tonumber(req.query.size or "100"),
        tonumber(req.query.fail_at or ""))
      return 200, { ["Content-Type"] = "text/plain" }, it, fin
    elseif path == "/empties" then -- empty chunks between the real ones
      local i = 0
      return 200, {}, function()
        i = i + 1
        if i > 300 then return nil end
        return i % 100 == 0 and ("part" .. math.floor(i / 100) .. "\n") or ""
      end
    elseif path == "/forever_empty" then -- never sends anything, never ends
      return 200, {}, function() return "" end, function(how) note("finish", path, how) end
    elseif path == "/bad_chunk" then
      local sent = false
      return 200, {}, function()
        if sent then return 42 end
        sent = true
        return "first\n"
      end
    elseif path == "/stop" then
      srv:stop()
      return 200, {}, "stopping"
    end
    return 404, { ["Content-Type"] = "application/json" }, '{"error":"not_found"}'
  end,
})
io.stdout:write("listening on http://127.0.0.1:", srv:port(), "\n")
io.stdout:flush()
local reason = srv:run()
note("run returned", reason)
srv:close()
srv:close()
os.exit(0)
