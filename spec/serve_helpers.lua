-- Helpers for the serve specs and bench/serve: start a server process in the
-- background, talk raw HTTP/1.1 to it over loopback, stop it, read its RSS.
local socket = require "socket"
local helpers = require "helpers"

local S = {}

local read_file, tmp_path = helpers.read_file, helpers.tmp_path
S.read_file = read_file

-- Is a process alive (and not a zombie)?
S.alive = helpers.alive

-- Direct children of a process (the workers of a serve master).
function S.children(pid)
  local text = read_file(("/proc/%d/task/%d/children"):format(pid, pid)) or ""
  local list = {}
  for c in text:gmatch("%d+") do list[#list + 1] = tonumber(c) end
  table.sort(list)
  return list
end

-- The pid of this process (the busted runner).
function S.self_pid()
  return tonumber(require("biconnector.core").process.getpid())
end

-- Peak resident memory of a live process in KiB (VmHWM).
function S.peak_rss_kib(pid)
  local status = read_file("/proc/" .. pid .. "/status") or ""
  return tonumber(status:match("VmHWM:%s*(%d+)"))
end

local shell_quote = helpers.q
S.shell_quote = shell_quote

-- The command line of `biconnector serve ARGS`, with the runtime the specs run
-- under, or another runtime and build of the core (for bench/).
function S.serve_command(args, runtime, build)
  local parts = { runtime or helpers.runtime, "bin/biconnector", "serve" }
  if build then table.insert(parts, 1, "env BIC_BUILD=" .. shell_quote(build)) end
  for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
  return table.concat(parts, " ")
end

-- Starts `command` in the background with env ({NAME = value}), stdout and
-- stderr to files: -> a handle {out, err, pidfile, rcfile}; the pid file gets
-- its pid at once, the rc file its exit status when it ends.
function S.background(command, env)
  local h = { out = tmp_path("out"), err = tmp_path("err"), pidfile = tmp_path("pid"),
    rcfile = tmp_path("rc") }
  local prefix = ""
  for k, v in pairs(env or {}) do prefix = prefix .. k .. "=" .. shell_quote(v) .. " " end
  local script = ("%s%s >%s 2>%s & echo $! >%s; wait $!; echo $? >%s"):format(
    prefix, command, h.out, h.err, h.pidfile, h.rcfile)
  -- the wrapper's own stderr would only carry job notices such as "Killed"
  assert(os.execute("sh -c " .. shell_quote(script) .. " 2>/dev/null &"))
  return h
end

-- Starts `command` in the background (S.background), waits for its
-- "listening on http(s)://HOST:PORT" line. Returns a handle {pid, port, out, err}.
function S.start(command, env)
  local h = S.background(command, env)
  helpers.poll(function()
    h.pid = h.pid or tonumber(read_file(h.pidfile) or "")
    local port = (read_file(h.out) or ""):match("listening on https?://[^\n]-:(%d+)\n")
    if h.pid and port then h.port = tonumber(port) end
    return h.port or read_file(h.rcfile) -- listening, or ended
  end, 10, 0.025)
  if h.port then return h end
  error(("server did not start: %s\nstdout: %s\nstderr: %s"):format(command,
    read_file(h.out) or "", read_file(h.err) or ""))
end

-- Exit status once the process has ended (nil while it runs); waits up to `seconds`.
function S.wait_exit(h, seconds)
  local rc = helpers.poll(function() return (read_file(h.rcfile) or ""):match("%d+") end, seconds or 10)
  return rc and tonumber(rc)
end

-- Sends SIGTERM (or `signal`) and waits for the exit status; kills hard after 15 s.
function S.stop(h, signal)
  if not h or h.stopped then return h and h.rc end
  os.execute(("kill -%s %d 2>/dev/null"):format(signal or "TERM", h.pid))
  local rc = S.wait_exit(h, 15)
  if rc == nil then
    os.execute(("kill -KILL %d 2>/dev/null"):format(h.pid))
    rc = S.wait_exit(h, 5)
  end
  h.stopped, h.rc = true, rc
  h.stdout, h.stderr = read_file(h.out), read_file(h.err)
  for _, p in ipairs({ h.out, h.err, h.pidfile, h.rcfile }) do os.remove(p) end
  return rc
end

function S.stderr(h) return h.stderr or read_file(h.err) or "" end
function S.stdout(h) return h.stdout or read_file(h.out) or "" end

-- The server's stderr once it holds `text` (a Lua pattern, or plain text when
-- plain), else as it is after `seconds` (default 5): the spec's assertions
-- then say what is missing.
function S.wait_stderr(h, text, plain, seconds)
  local log
  helpers.poll(function()
    log = S.stderr(h)
    return log:find(text, 1, plain)
  end, seconds or 5)
  return log
end

-- Decodes a chunked body; returns the body or nil, err.
local function dechunk(raw)
  local out, pos = {}, 1
  while true do
    local size_hex, after = raw:match("^(%x+)[^\r\n]*\r\n()", pos)
    if not size_hex then return nil, "bad chunk header at byte " .. pos end
    local size = tonumber(size_hex, 16)
    if size == 0 then return table.concat(out) end
    out[#out + 1] = raw:sub(after, after + size - 1)
    if #out[#out] < size or raw:sub(after + size, after + size + 1) ~= "\r\n" then
      return nil, "truncated chunk at byte " .. after
    end
    pos = after + size + 2
  end
end
S.dechunk = dechunk

-- One HTTP/1.1 request over a fresh loopback connection (Connection: close).
-- Returns {status, headers (lower-case), body, raw} or nil, err.
function S.request(port, method, path, body, headers, timeout)
  local c = socket.tcp()
  c:settimeout(timeout or 30)
  local ok, err = c:connect("127.0.0.1", port)
  if not ok then return nil, "connect: " .. tostring(err) end
  local lines = { ("%s %s HTTP/1.1"):format(method, path), "Host: 127.0.0.1:" .. port,
    "Connection: close" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  local raw, rerr, partial = c:receive("*a")
  c:close()
  raw = raw or partial
  if raw == nil or raw == "" then return nil, "no answer (" .. tostring(rerr) .. ")" end
  local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
  if not head then return nil, "incomplete answer: " .. raw:sub(1, 200) end
  local status = tonumber(head:match("^HTTP/1%.%d (%d+)"))
  local hdrs = {}
  for k, v in head:gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do hdrs[k:lower()] = v end
  if (hdrs["transfer-encoding"] or ""):lower():find("chunked") then
    local decoded, derr = dechunk(rest)
    if not decoded then return nil, derr end
    rest = decoded
  end
  return { status = status, headers = hdrs, body = rest, raw = raw }
end

-- POSTs value as a JSON body to path (one request, S.request): -> status, body;
-- raises when no answer came.
function S.post_json(port, path, value)
  local r = assert(S.request(port, "POST", path, require("cjson").encode(value),
    { ["Content-Type"] = "application/json" }))
  return r.status, r.body
end

-- Sends a POST /data of `tbl` with the token, as JSON, over a connection of its
-- own (timeout 30 s) and reads nothing: -> the connection.
function S.send_data(port, token, tbl)
  local c = helpers.connect(port, 30)
  local body = require("cjson").encode({ connection = { token = token }, table = tbl })
  c:send("POST /data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
    .. #body .. "\r\n\r\n" .. body)
  return c
end

-- Counts the rows of a streamed urlData answer without holding it: each
-- top-level element is cut out as it completes and decoded with lua-cjson
-- (which checks it is valid JSON); the frame "[", ",", "]" is checked here.
-- feed(chunk) for every piece, then finish() -> rows (header row included) | nil, err.
function S.row_counter()
  local cjson = require "cjson"
  local decode, find, sub = cjson.decode, string.find, string.sub
  -- buf holds the unconsumed tail; scan is where scanning resumes in it; base is
  -- where the text between elements starts; start is the open element's first byte.
  local buf, scan, base, start = "", 1, 1, nil
  local depth, in_string, count, state, failure, first_row = 0, false, 0, "open", nil, nil
  local batch_first, batch_last, batch_rows = nil, nil, 0
  local function fail(msg) failure = failure or msg end
  local self = {}
  function self.feed(chunk)
    if failure or chunk == "" then return end
    buf = buf .. chunk
    local pos = scan
    while not failure do
      if in_string then
        local i = find(buf, '["\\]', pos)
        if not i then pos = #buf + 1 break end
        if sub(buf, i, i) == "\\" then
          if i == #buf then pos = i break end
          pos = i + 2
        else
          in_string = false
          pos = i + 1
        end
      else
        local i = find(buf, '[%[%]"]', pos)
        if not i then pos = #buf + 1 break end
        local c = sub(buf, i, i)
        if state == "closed" then fail("junk after the closing ]") break
        elseif state == "open" then
          if c ~= "[" or find(sub(buf, base, i - 1), "%S") then fail("answer does not start with [") break end
          state, base, pos = "rows", i + 1, i + 1
        elseif c == '"' then
          if depth == 0 then fail("a string outside any row") break end
          in_string, pos = true, i + 1
        elseif c == "[" then
          if depth == 0 then
            if not batch_first then -- inside a batch, lua-cjson checks the separators
              local between = sub(buf, base, i - 1):gsub("%s", "")
              if between ~= (count == 0 and "" or ",") then fail("bad separator before row " .. (count + 1)) break end
            end
            start = i
          end
          depth, pos = depth + 1, i + 1
        else -- "]"
          if depth == 0 then
            if find(sub(buf, base, i - 1), "%S") then fail("junk before the closing ]") break end
            state, base, pos = "closed", i + 1, i + 1
          else
            depth, pos = depth - 1, i + 1
            if depth == 0 then
              batch_first = batch_first or start
              batch_last, batch_rows = i, batch_rows + 1
              base, start = i + 1, nil
            end
          end
        end
      end
    end
    if state == "closed" and find(sub(buf, base), "%S") then fail("junk after the closing ]") end
    -- the rows completed by this piece, decoded at once: one lua-cjson call
    if batch_first and not failure then
      local ok, rows = pcall(decode, "[" .. sub(buf, batch_first, batch_last) .. "]")
      if not ok or type(rows) ~= "table" or #rows ~= batch_rows then
        fail(("rows %d to %d are not valid JSON arrays: %s"):format(count + 1, count + batch_rows, tostring(rows)))
      else
        for k = 1, #rows do
          if type(rows[k]) ~= "table" then fail("row " .. (count + k) .. " is not an array") end
        end
        if count == 0 then first_row = rows[1] end
        count = count + batch_rows
      end
      batch_first, batch_last, batch_rows = nil, nil, 0
    end
    -- keep only what is still needed: the open element, or the text after the last one
    local keep = start or base
    if keep > #buf + 1 then keep = #buf + 1 end
    buf = sub(buf, keep)
    scan = pos - keep + 1
    base = base - keep + 1
    if start then start = 1 end
  end
  function self.finish()
    if failure then return nil, failure end
    if state ~= "closed" then return nil, "the answer ended before its closing ] (after " .. count .. " rows)" end
    return count, first_row
  end
  return self
end

-- POSTs a urlData request and streams the chunked answer through row_counter.
-- Returns rows (header included), first row, bytes | nil, err.
function S.stream_rows(port, path, body, headers)
  local c = socket.tcp()
  c:settimeout(120)
  local ok, err = c:connect("127.0.0.1", port)
  if not ok then return nil, err end
  local lines = { "POST " .. path .. " HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
    "Content-Length: " .. #body }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. body)
  local status_line = c:receive("*l")
  local status = tonumber((status_line or ""):match("^HTTP/1%.%d (%d+)"))
  local chunked = false
  while true do
    local line = c:receive("*l")
    if not line then return nil, "headers cut" end
    if line == "" then break end
    if line:lower():match("^transfer%-encoding:.*chunked") then chunked = true end
  end
  local counter, bytes = S.row_counter(), 0
  if chunked then
    while true do
      local size_line, rerr = c:receive("*l")
      if not size_line then return nil, "stream cut: " .. tostring(rerr) end
      local size = tonumber(size_line:match("^%x+"), 16)
      if not size then return nil, "bad chunk size line" end
      if size == 0 then break end
      local data, derr = c:receive(size)
      if not data then return nil, "stream cut inside a chunk: " .. tostring(derr) end
      c:receive(2)
      bytes = bytes + size
      counter.feed(data)
    end
  else
    while true do
      local data, rerr, partial = c:receive(65536)
      data = data or partial
      if data and #data > 0 then bytes = bytes + #data counter.feed(data) end
      if rerr == "closed" then break end
      if rerr then return nil, rerr end
    end
  end
  c:close()
  if status ~= 200 then return nil, "status " .. tostring(status) end
  local rows, first = counter.finish()
  if not rows then return nil, first end
  return rows, first, bytes
end

-- Reads the answers of several sockets at once, round robin, until each
-- closes: the sockets of opts.slow (a set of indexes) opts.slow_bytes (1024)
-- at a time, at most every opts.pause seconds (0); fails after opts.timeout
-- seconds (60). -> the raw answers, and for each the step (one read attempt
-- of any socket) at which its first bytes came and the one at which it ended.
function S.read_interleaved(conns, opts)
  opts = opts or {}
  local slow, slow_bytes, pause, timeout = opts.slow or {}, opts.slow_bytes or 1024, opts.pause or 0, opts.timeout or 60
  local got, done, left, next_at, first, ended, step = {}, {}, #conns, {}, {}, {}, 0
  for i = 1, #conns do got[i], next_at[i] = {}, 0 conns[i]:settimeout(0) end
  local deadline = socket.gettime() + timeout
  while left > 0 do
    assert(socket.gettime() < deadline, ("the answers did not end within %d s"):format(timeout))
    for i, c in ipairs(conns) do
      local now = socket.gettime()
      if not done[i] and now >= next_at[i] then
        local data, err, partial = c:receive(slow[i] and slow_bytes or 65536)
        data = data or partial
        step = step + 1
        if data and #data > 0 then
          got[i][#got[i] + 1] = data
          first[i] = first[i] or step
        end
        if slow[i] then next_at[i] = now + pause end
        if err == "closed" then
          ended[i] = step
          done[i] = true
          left = left - 1
          c:close()
        end
      end
    end
    socket.sleep(0.002)
  end
  for i = 1, #conns do got[i] = table.concat(got[i]) end
  return got, first, ended
end

return S
