-- /metrics: `serve --metrics --workers 2` (counters in a mapping shared by
-- the workers) and the nginx glue (a lua_shared_dict). The answer is parsed
-- as the Prometheus text format and its counters checked after known requests.
local S = require "serve_helpers"
local X = require "scale_helpers"
local helpers = require "helpers"
local metrics = require "biconnector.metrics"

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }
local TOKEN = "connection[token]=demo-token"

-- Parses the text format strictly enough to fail on a malformed line:
-- returns { [name] = {type=, help=, samples = { {labels = {...}, value = n} } } }.
local function parse(text)
  assert.equal("\n", text:sub(-1))
  local families, by_sample = {}, {}
  local function family(name)
    families[name] = families[name] or { samples = {} }
    return families[name]
  end
  for line in text:gmatch("([^\n]*)\n") do
    if line:match("^# HELP ") then
      local name, help = line:match("^# HELP ([%a_:][%w_:]*) (.+)$")
      assert(name, "bad HELP line: " .. line)
      family(name).help = help
    elseif line:match("^# TYPE ") then
      local name, kind = line:match("^# TYPE ([%a_:][%w_:]*) (%a+)$")
      assert(name and (kind == "counter" or kind == "gauge" or kind == "histogram"), "bad TYPE line: " .. line)
      family(name).type = kind
      for _, suffix in ipairs(kind == "histogram" and { "_bucket", "_sum", "_count" } or { "" }) do
        by_sample[name .. suffix] = name
      end
    else
      local name, rest = line:match("^([%a_:][%w_:]*)(.*)$")
      assert(name, "bad sample line: " .. line)
      local labels, value = {}
      local body, after = rest:match("^{(.-)}%s(.+)$")
      if body then
        for k, v in body:gmatch('([%a_][%w_]*)="([^"\\]*)",?') do labels[k] = v end
        value = after
      else
        value = rest:match("^%s(.+)$")
      end
      assert(value and (tonumber(value) or value == "+Inf"), "bad value: " .. line)
      local owner = by_sample[name]
      assert(owner, "a sample before its TYPE line: " .. line)
      labels.__name = name
      table.insert(families[owner].samples, { labels = labels, value = tonumber(value) })
    end
  end
  return families
end

-- The value of one sample (name with labels), or nil.
local function value(families, name, want)
  for _, f in pairs(families) do
    for _, s in ipairs(f.samples) do
      local match = s.labels.__name == name
      for k, v in pairs(want or {}) do if s.labels[k] ~= v then match = false end end
      if match then return s.value end
    end
  end
end

-- Asserts each histogram series is cumulative and ends at +Inf = _count.
local function check_histograms(families)
  local f = families.biconnector_request_duration_seconds
  assert.equal("histogram", f.type)
  for _, e in ipairs(metrics.ENDPOINTS) do
    local last = 0
    for _, s in ipairs(f.samples) do
      if s.labels.__name == "biconnector_request_duration_seconds_bucket" and s.labels.endpoint == e then
        assert.is_true(s.value >= last)
        last = s.value
      end
    end
    assert.equal(last, value(families, "biconnector_request_duration_seconds_bucket", { endpoint = e, le = "+Inf" }))
    assert.equal(last, value(families, "biconnector_request_duration_seconds_count", { endpoint = e }))
  end
end

-- Known requests; returns the statuses seen per endpoint, the rows and bytes sent.
local function known_requests(ask)
  local seen, rows, bytes = {}, 0, {}
  local function note(endpoint, status, body)
    local key = endpoint .. ":" .. status
    seen[key] = (seen[key] or 0) + 1
    bytes[endpoint] = (bytes[endpoint] or 0) + #body
  end
  for _ = 1, 7 do note("table_list", ask("/table_list", TOKEN)) end
  for _ = 1, 4 do note("table_description", ask("/table_description", TOKEN .. "&table=deals")) end
  for _ = 1, 2 do note("table_description", ask("/table_description", TOKEN .. "&table=nope")) end
  for _ = 1, 3 do
    local status, body = ask("/data", TOKEN .. "&table=contacts&limit=5")
    note("data", status, body)
    rows = rows + 5
  end
  note("check", ask("/check", "connection[token]=wrong"))
  note("check", ask("/check", TOKEN))
  return seen, rows, bytes
end

local function check_counts(families, seen, rows, bytes)
  assert.equal("counter", families.biconnector_requests_total.type)
  local total = 0
  for key, n in pairs(seen) do
    local endpoint, code = key:match("^(.-):(%d+)$")
    assert.equal(n, value(families, "biconnector_requests_total", { endpoint = endpoint, code = code }), key)
    total = total + n
  end
  local counted = 0
  for _, s in ipairs(families.biconnector_requests_total.samples) do counted = counted + s.value end
  assert.equal(total, counted) -- nothing else counted (not /metrics itself)
  assert.equal(rows, value(families, "biconnector_sent_rows_total"))
  for endpoint, n in pairs(bytes) do
    assert.equal(n, value(families, "biconnector_sent_bytes_total", { endpoint = endpoint }), endpoint)
  end
  assert.equal(0, value(families, "biconnector_handler_errors_total", { endpoint = "data" }))
  check_histograms(families)
end

describe("serve --metrics", function()
  it("is an option of serve", function()
    local o = assert(require("biconnector.serve").parse_args({ "x.lua", "--metrics" }))
    assert.is_true(o.metrics)
  end)

  it("counts every worker's answers in one /metrics, across a worker restart; no secret in it", function()
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0",
      "--workers", "2", "--metrics" }))
    finally(function() S.stop(h) end)
    X.wait("two workers", function() return #S.children(h.pid) == 2 end)
    local function ask(path, body)
      local r, err = S.request(h.port, "POST", path, body, FORM)
      assert(r, err)
      return r.status, r.body
    end
    local seen, rows, bytes = known_requests(ask)
    local r = assert(S.request(h.port, "GET", "/metrics"))
    assert.equal(200, r.status)
    assert.equal("text/plain; version=0.0.4; charset=utf-8", r.headers["content-type"])
    assert.is_nil(r.body:find("demo-token", 1, true))
    local families = parse(r.body)
    check_counts(families, seen, rows, bytes)
    assert.equal(0, value(families, "biconnector_worker_restarts_total"))
    -- a worker killed and restarted: the counters stay, the restart is counted
    local victim = S.children(h.pid)[1]
    os.execute("kill -KILL " .. victim)
    X.wait("the restart", function()
      local c = S.children(h.pid)
      return #c == 2 and c[1] ~= victim and c[2] ~= victim
    end)
    families = parse(assert(S.request(h.port, "GET", "/metrics")).body)
    check_counts(families, seen, rows, bytes)
    assert.equal(1, value(families, "biconnector_worker_restarts_total"))
    -- only GET
    local post = assert(S.request(h.port, "POST", "/metrics", "", FORM))
    assert.equal(405, post.status)
    assert.matches('"error":"method_not_allowed"', post.body)
    assert.equal(0, S.stop(h))
  end)

  it("counts handler errors, and keeps a slow answer out of the faster buckets", function()
    local dir = X.tmpdir("metrics-errors")
    finally(function() os.execute("rm -rf " .. dir) end)
    local f = assert(io.open(dir .. "/c.lua", "w"))
    f:write([[
return require("biconnector").connector {
  title = "failing", settings = {}, log = function() end,
  check = function() return true end,
  tables = { { code = "t", title = "T" }, { code = "slow", title = "Slow" } },
  describe = function(_, code)
    if code == "slow" then require("biconnector.core").http.sleep(0.3) return { { code = "id", name = "ID", type = "int" } } end
    error("describe failed on purpose")
  end,
  data = function() return {} end,
}
]])
    f:close()
    local h = S.start(S.serve_command({ dir .. "/c.lua", "--listen", "127.0.0.1:0", "--metrics", "--workers", "2" }))
    finally(function() S.stop(h) end)
    for _ = 1, 3 do
      assert.equal(500, assert(S.request(h.port, "POST", "/table_description", "table=t", FORM)).status)
    end
    assert.equal(200, assert(S.request(h.port, "POST", "/table_description", "table=slow", FORM)).status)
    local families = parse(assert(S.request(h.port, "GET", "/metrics")).body)
    assert.equal(3, value(families, "biconnector_handler_errors_total", { endpoint = "table_description" }))
    assert.equal(3, value(families, "biconnector_requests_total", { endpoint = "table_description", code = "500" }))
    -- the slow answer took at least 0.3 s: it is not in the 0.25 bucket (a lower
    -- bound only: how fast the others were depends on the machine)
    local fast = value(families, "biconnector_request_duration_seconds_bucket", { endpoint = "table_description", le = "0.25" })
    assert.is_true(fast <= 3)
    assert.equal(4, value(families, "biconnector_request_duration_seconds_count", { endpoint = "table_description" }))
    assert.is_true(value(families, "biconnector_request_duration_seconds_sum", { endpoint = "table_description" }) >= 0.3)
    check_histograms(families)
  end)

  it("without --metrics, /metrics is an unknown endpoint", function()
    local h = S.start(S.serve_command({ "examples/demo/connector.lua", "--listen", "127.0.0.1:0" }))
    finally(function() S.stop(h) end)
    local r = assert(S.request(h.port, "GET", "/metrics"))
    assert.are_not.equal(200, r.status)
  end)
end)

local nwhy = X.nginx_missing()
describe("biconnector.ngx metrics", function()
  if nwhy then
    it("needs nginx", function() pending("SKIPPED: " .. nwhy) end)
    io.stderr:write("\n*** SKIPPED: spec/metrics_spec.lua (nginx part): " .. nwhy .. "\n")
    return
  end
  local nginx, prefix, port
  setup(function()
    prefix = X.tmpdir("nginx-metrics")
    port = helpers.free_port()
    local demo = X.TOP .. "/examples/demo/connector.lua"
    nginx = X.start_nginx(prefix, X.nginx_conf(prefix, 2, {
      "  access_log off;",
      "  lua_shared_dict biconnector_metrics 1m;",
      "  server {",
      "    listen 127.0.0.1:" .. port .. ";",
      ("    location / { content_by_lua_block { require('biconnector.ngx').serve(%q, { metrics = 'biconnector_metrics' }) } }"):format(demo),
      "    location = /metrics { content_by_lua_block { require('biconnector.ngx').metrics('biconnector_metrics') } }",
      "  }",
    }), port)
  end)
  teardown(function()
    if nginx then nginx.stop() end
    if prefix then os.execute("rm -rf " .. prefix) end
  end)

  it("counts the answers of both workers in the shared dict", function()
    local function ask(path, body)
      local r, err = S.request(port, "POST", path, body, FORM)
      assert(r, err)
      return r.status, r.body
    end
    local seen, rows, bytes = known_requests(ask)
    local r = assert(S.request(port, "GET", "/metrics"))
    assert.equal(200, r.status)
    assert.equal("text/plain; version=0.0.4; charset=utf-8", r.headers["content-type"])
    assert.is_nil(r.body:find("demo-token", 1, true))
    check_counts(parse(r.body), seen, rows, bytes)
  end)
end)
