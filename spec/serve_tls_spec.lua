-- HTTPS on the built-in server (core.server tls_cert/tls_key, serve --tls-cert
-- --tls-key): libmicrohttpd with GnuTLS, TLS 1.2 and 1.3 only, the certificate
-- swapped in while the server runs (server:tls, SIGHUP in serve), a bad pair
-- refused with the reason. Certificates are made here with openssl.
local S = require "serve_helpers"
local A = require "app_helpers"
local helpers = require "helpers"
local core = require "biconnector.core"
local server, http = core.server, core.http

local function read(path) return assert(S.read_file(path)) end

local sh_ok = A.sh

describe("HTTPS on the built-in server", function()
  local dir, cert, key, cert2, key2
  setup(function()
    dir = A.tmpdir()
    cert, key = A.certificate(dir, "one", "localhost")
    cert2, key2 = A.certificate(dir, "two", "localhost")
  end)
  teardown(function() A.rm(dir) end)

  -- A server in this process, run in short steps while a request is made from
  -- a child process (the request blocks; the server must serve meanwhile).
  local function with_server(opts, fn)
    opts.handler = opts.handler or function(req) return 200, { ["Content-Type"] = "text/plain" }, "hello " .. req.path end
    opts.port = 0
    local srv = assert(server.new(opts))
    local ok, err = pcall(fn, srv)
    srv:close()
    assert(ok, err)
  end

  -- Runs cmd in the background while srv serves; -> its output.
  local function while_serving(srv, cmd)
    local out = os.tmpname()
    local done = out .. ".done"
    os.execute(("sh -c '(%s) >%s 2>&1; touch %s' &"):format(cmd:gsub("'", "'\\''"), out, done))
    local deadline = http.now() + 20
    while not S.read_file(done) and http.now() < deadline do srv:run(0.05) end
    local text = S.read_file(out) or ""
    os.remove(out) os.remove(done)
    return text
  end

  it("serves HTTPS with the given chain, TLS 1.2 and 1.3 only", function()
    with_server({ tls_cert = read(cert), tls_key = read(key) }, function(srv)
      local port = srv:port()
      local out = while_serving(srv, ("curl -sS --cacert %s https://localhost:%d/x"):format(cert, port))
      assert.equals("hello /x", out)
      -- an HTTPS client that does not trust it is refused by the client, not served blind
      out = while_serving(srv, ("curl -sS https://localhost:%d/x; echo rc=$?"):format(port))
      assert.matches("rc=60", out, 1, true)
      -- TLS 1.1 and older: no handshake (the client offers them at security level 0)
      out = while_serving(srv, ("echo | openssl s_client -connect 127.0.0.1:%d -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' 2>&1; echo rc=$?"):format(port))
      assert.matches("no peer certificate available", out, 1, true)
      assert.matches("Cipher is (NONE)", out, 1, true)
      out = while_serving(srv, ("echo | openssl s_client -connect 127.0.0.1:%d -tls1_2 2>&1"):format(port))
      assert.matches("Protocol%s*: TLSv1%.2", out)
      out = while_serving(srv, ("echo | openssl s_client -connect 127.0.0.1:%d -tls1_3 2>&1"):format(port))
      assert.matches("TLSv1%.3", out)
      -- plain HTTP to the TLS port gets no HTTP answer
      out = while_serving(srv, ("curl -sS --max-time 5 http://127.0.0.1:%d/x; echo rc=$?"):format(port))
      assert.is_nil(out:find("hello", 1, true))
    end)
  end)

  it("swaps the certificate in while it runs; a pair that does not load keeps the current one", function()
    with_server({ tls_cert = read(cert), tls_key = read(key) }, function(srv)
      local port = srv:port()
      local function served()
        return while_serving(srv, ("echo | openssl s_client -connect 127.0.0.1:%d 2>/dev/null | openssl x509 -noout -fingerprint -sha256")
          :format(port)):match("=(%S+)")
      end
      assert.equals(A.fingerprint_of_file(cert), served())
      assert.is_true(srv:tls(read(cert2), read(key2)))
      assert.equals(A.fingerprint_of_file(cert2), served())
      local ok, err = srv:tls(read(cert), read(key2)) -- the key of the other certificate
      assert.is_nil(ok)
      assert.matches("not a usable pair", err)
      ok, err = srv:tls("not a certificate", read(key))
      assert.is_nil(ok)
      assert.matches("not a usable pair", err)
      assert.equals(A.fingerprint_of_file(cert2), served())
    end)
  end)

  it("checks a pair before serving, and says why one is refused", function()
    assert.is_true(server.check_tls(read(cert), read(key)))
    local ok, err = server.check_tls(read(cert), read(key2))
    assert.is_nil(ok)
    assert.matches("do not match", err)
    ok, err = server.check_tls(read(key), read(cert))
    assert.is_nil(ok)
    assert.matches("not a usable pair", err)
    local srv, serr = server.new({ handler = function() end, port = 0, tls_cert = "junk", tls_key = read(key) })
    assert.is_nil(srv)
    assert.matches("not a usable pair", serr)
    assert.has_error(function() server.new({ handler = function() end, port = 0, tls_cert = read(cert) }) end,
      "options 'tls_cert' and 'tls_key' go together")
    with_server({}, function(plain)
      assert.has_error(function() plain:tls(read(cert), read(key)) end, "the server was started without TLS (tls_cert, tls_key)")
    end)
    -- the key's text never appears in a message
    ok, err = server.check_tls(read(cert), "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n")
    assert.is_nil(ok)
    assert.is_nil(err:find("c2VjcmV0", 1, true))
  end)

  it("serve --tls-cert: a file that cannot be read is named once, a pair that does not load with both files", function()
    local function serve(c, k)
      local parts = { "BIC_BUILD=" .. helpers.q(helpers.build), helpers.runtime, "bin/biconnector", "serve",
        "examples/demo/connector.lua", "--listen", "127.0.0.1:0", "--tls-cert", helpers.q(c), "--tls-key", helpers.q(k) }
      return helpers.run3(table.concat(parts, " "))
    end
    local rc, _, err = serve(dir .. "/nope.pem", key)
    assert.equal(1, rc)
    assert.equal("biconnector serve: --tls-cert: " .. dir .. "/nope.pem: No such file or directory\n", err)
    rc, _, err = serve(cert, key2)
    assert.equal(1, rc)
    assert.matches("^biconnector serve: %-%-tls%-cert " .. cert:gsub("%p", "%%%0") .. ", %-%-tls%-key "
      .. key2:gsub("%p", "%%%0") .. ": .*do not match", err)
  end)

  it("serve --tls-cert: every worker re-reads the certificate on SIGHUP; a broken one is kept out", function()
    local db = A.shop(dir)
    local live_cert, live_key = dir .. "/live.pem", dir .. "/live.key"
    assert(sh_ok(("cp %s %s && cp %s %s"):format(cert, live_cert, key, live_key)))
    local h = S.start(S.serve_command({ "sqlite://" .. db, "--listen", "127.0.0.1:0", "--workers", "2",
      "--tls-cert", live_cert, "--tls-key", live_key }), { BICONNECTOR_TOKEN = "tok" })
    finally(function() S.stop(h) end)
    assert.matches("listening on https://127.0.0.1:" .. h.port, S.stdout(h), 1, true)
    assert.matches("urlCheck             https://127.0.0.1:" .. h.port .. "/check", S.stdout(h), 1, true)
    local function all_served()
      local seen = {}
      for _ = 1, 6 do seen[A.fingerprint_served(h.port) or "none"] = true end
      local list = {}
      for k in pairs(seen) do list[#list + 1] = k end
      return list
    end
    assert.same({ A.fingerprint_of_file(cert) }, all_served())
    -- a renewal (certbot replaces the files), then SIGHUP
    assert(sh_ok(("cp %s %s && cp %s %s"):format(cert2, live_cert, key2, live_key)))
    os.execute("kill -HUP " .. h.pid)
    A.wait_log(h, "certificate reloaded from", 2)
    assert.same({ A.fingerprint_of_file(cert2) }, all_served())
    -- a broken file on SIGHUP: logged, the current certificate stays
    assert(sh_ok(("cp %s %s"):format(key, live_cert)))
    os.execute("kill -HUP " .. h.pid)
    local log = A.wait_log(h, "certificate reload failed, keeping the one loaded", 2)
    assert.matches("not a usable pair", log, 1, true)
    assert.same({ A.fingerprint_of_file(cert2) }, all_served())
    -- the data still flows, over HTTPS
    local res = A.post_form("https://localhost:" .. h.port .. "/data", "connection[token]=tok&table=customers", cert2)
    assert.equals(200, res.status)
    assert.equals('[["id","name"],[1,"Ann"]]', res.body)
    assert.equals(0, S.stop(h))
  end)

  it("a graceful stop finishes the answer in flight when the run loop ticks (serve --app)", function()
    local db = dir .. "/big.db"
    assert(sh_ok(("sqlite3 %s \"create table big(id integer, pad text); with recursive n(i) as (select 1 union all"
      .. " select i + 1 from n where i < 150000) insert into big select i, 'padding-padding-padding-padding' from n;\""):format(db)))
    local port = helpers.free_port()
    local h = S.start(S.serve_command({ "sqlite://" .. db, "--listen", "127.0.0.1:" .. port, "--workers", "1",
      "--tls-cert", cert, "--tls-key", key, "--app", "--public-url", "https://localhost:" .. port, "--grace", "10" }),
      { BICONNECTOR_TOKEN = "tok", BITRIX24_TOKENS_FILE = dir .. "/tokens-stop.json" })
    finally(function() S.stop(h) end)
    -- a client that reads slowly: the answer stays in flight for seconds after SIGTERM
    local out = dir .. "/slow.out"
    local body = "connection[token]=tok&table=big"
    os.execute(("sh -c '(printf \"POST /data HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Type: application/x-www-form-urlencoded"
      .. "\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n%s\"; sleep 6) | openssl s_client -quiet -connect 127.0.0.1:%d"
      .. " 2>/dev/null | (sleep 2.5; cat > %s; touch %s.done)' &"):format(#body, body, port, out, out))
    http.sleep(1)
    os.execute("kill -TERM " .. h.pid)
    local rc = S.wait_exit(h, 20)
    assert.equals(0, rc)
    -- the client may still be writing what it read when the server has gone
    local deadline = http.now() + 20
    while not S.read_file(out .. ".done") and http.now() < deadline do http.sleep(0.05) end
    local got = S.read_file(out) or ""
    assert.equals("HTTP/1.1 200", got:sub(1, 12))
    local rows = S.dechunk(got:match("\r\n\r\n(.*)$") or "")
    assert.is_truthy(rows, "the answer was cut")
    local last = '[150000,"padding-padding-padding-padding"]]'
    assert.is_true(rows:sub(-#last) == last, "the answer was cut")
  end)
end)
