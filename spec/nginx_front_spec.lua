-- The documented nginx front (issue 16, points 3 to 5): the attacks run
-- against examples/nginx/front.conf itself (paths, ports and the user line
-- substituted), proxying to `biconnector serve`. What libmicrohttpd 0.9.75
-- cannot refuse (folded header lines, a malformed Content-Length answered with
-- its status line twice) the front refuses with one well-formed answer; bare LF
-- line ends are read as one request and forwarded re-framed; a slowloris from
-- one address leaves another address served.
local S = require "serve_helpers"
local H = require "serve_attack_helpers"
local helpers = require "helpers"
local socket = require "socket"

local NGINX = os.getenv("BIC_NGINX") or "/usr/sbin/nginx"
local sh = helpers.sh

local function why_not()
  if not helpers.exists(NGINX) then return "nginx is not installed (Debian: nginx)" end
  if not H.second_loopback() then return "cannot bind 127.0.0.2" end
  return nil
end

-- front.conf with its paths under prefix, listening on port, proxying to backend.
local function front_conf(prefix, port, backend)
  local text = assert(S.read_file(helpers.top .. "/examples/nginx/front.conf"))
  local function sub(from, to)
    local i = assert(text:find(from, 1, true), "examples/nginx/front.conf no longer contains " .. from)
    text = text:sub(1, i - 1) .. to .. text:sub(i + #from)
  end
  sub("user www-data;", helpers.nginx_user_line())
  sub("worker_processes auto;", "worker_processes 1;")
  sub("pid /run/biconnector-front.pid;", "pid " .. prefix .. "/nginx.pid;")
  sub("/var/log/nginx/biconnector-front.error.log", prefix .. "/error.log")
  sub("/var/log/nginx/biconnector-front.access.log", prefix .. "/access.log")
  sub("/var/lib/nginx/body", prefix .. "/body")
  sub("/var/lib/nginx/proxy", prefix .. "/proxy")
  sub("listen 8080;", "listen 127.0.0.1:" .. port .. ";")
  sub("server 127.0.0.1:8081;", "server 127.0.0.1:" .. backend .. ";")
  return text
end

describe("issue 16: the nginx front (examples/nginx/front.conf)", function()
  local reason = why_not()
  if reason then
    it("needs nginx", function() pending("SKIPPED: " .. reason) end)
    io.stderr:write("\n*** SKIPPED: nginx_front_spec: " .. reason .. "\n")
    return
  end
  local backend, prefix, port, ngx_pid
  setup(function()
    backend = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0",
      "--workers", "1", "--per-address", "0" }))
    prefix = helpers.tmpdir("front")
    sh("chmod 755 " .. prefix)
    port = helpers.free_port()
    local f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(front_conf(prefix, port, backend.port))
    f:close()
    local cmd = ("%s -p %s -c %s/nginx.conf -e %s/error.log -g 'daemon off;' >%s/out 2>&1 & echo $! >%s/pid")
      :format(NGINX, prefix, prefix, prefix, prefix, prefix)
    assert(sh("sh -c " .. S.shell_quote(cmd)))
    for _ = 1, 200 do
      ngx_pid = tonumber(S.read_file(prefix .. "/pid") or "")
      if (S.read_file(prefix .. "/nginx.pid") or "") ~= "" then break end
      socket.sleep(0.025)
    end
    assert((S.read_file(prefix .. "/nginx.pid") or "") ~= "",
      "nginx did not start: " .. (S.read_file(prefix .. "/out") or "") .. (S.read_file(prefix .. "/error.log") or ""))
  end)
  teardown(function()
    if ngx_pid then
      sh("kill -QUIT " .. ngx_pid .. " 2>/dev/null")
      for _ = 1, 200 do
        if not S.alive(ngx_pid) then break end
        socket.sleep(0.025)
      end
      sh("kill -KILL " .. ngx_pid .. " 2>/dev/null")
    end
    helpers.rmdir(prefix)
    assert.equals(0, S.stop(backend))
  end)

  it("passes a normal request to the connector", function()
    local r = assert(H.post(port, "/check", H.TOKEN_BODY))
    assert.equals(200, r.status)
    assert.equals('{"ok":true}', r.body)
  end)

  -- one raw request -> the status lines of everything sent back
  local function answers(raw_request)
    local c = assert(H.connect(port, nil, 10))
    c:send(raw_request)
    -- nginx lingers on a refused request; the answer is complete long before
    local r = assert(H.read_answer(c))
    c:settimeout(0.3)
    local more = c:receive("*a")
    c:close()
    return r, H.status_lines(more or "")
  end

  it("answers a malformed Content-Length with one well-formed 400", function()
    for _, cl in ipairs({ "abc", "-1", "1, 2" }) do
      local r, extra = answers("POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: " .. cl .. "\r\n\r\n")
      assert.equals(400, r.status, cl)
      assert.same({}, extra, cl) -- no second status line
    end
  end)

  it("refuses folded header lines, double Content-Length, Content-Length with chunked, and %00", function()
    local B = H.TOKEN_BODY
    for name, raw in pairs({
      folded = "POST /check HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nContent-Length: 28\r\n\r\n" .. B,
      folded_length = "POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n 8\r\n\r\n" .. B,
      two_lengths = "POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 28\r\n\r\n" .. B,
      length_and_chunked = "POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n"
        .. "Transfer-Encoding: chunked\r\n\r\n1c\r\n" .. B .. "\r\n0\r\n\r\n",
      nul = "POST /check%00 HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\n" .. B,
    }) do
      local r, extra = answers(raw)
      assert.equals(400, r.status, name)
      assert.same({}, extra, name)
    end
    -- an unknown transfer coding: nginx answers 501, once
    local r, extra = answers("POST /check HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc")
    assert.equals(501, r.status)
    assert.same({}, extra)
  end)

  it("reads bare-LF line ends as one request, and answers it once", function()
    local r, extra = answers("POST /check HTTP/1.1\nHost: x\nConnection: close\nContent-Length: 28\n\n" .. H.TOKEN_BODY)
    assert.equals(200, r.status)
    assert.same({}, extra)
  end)

  it("keeps answering another address while one trickles request headers", function()
    local socks = {}
    for _ = 1, 60 do
      local c = H.connect(port, "127.0.0.1", 2)
      if c then
        c:send("POST /check HTTP/1.1\r\nHost: x\r\n")
        socks[#socks + 1] = c
      end
    end
    local answered = 0
    for _ = 1, 3 do -- three rounds of the attack, a byte on each socket, a request between
      for _, c in ipairs(socks) do c:send("X") end
      local r = assert(H.post(port, "/check", H.TOKEN_BODY, { from = "127.0.0.2", timeout = 5 }))
      assert.equals(200, r.status)
      answered = answered + 1
      socket.sleep(0.3)
    end
    assert.equals(3, answered)
    for _, c in ipairs(socks) do c:close() end
  end)
end)
