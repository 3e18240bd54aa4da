-- biconnector.host.metrics (public name biconnector.metrics): the counters `serve --metrics` and the nginx glue
-- expose at /metrics, in the Prometheus text format (version 0.0.4).
--
-- Every series has a fixed place in one array of integers laid out the same
-- way in every process, so the array can live where all workers add to it:
--   * `biconnector serve`: process.counters(n), an anonymous shared mapping
--     made by the master before it forks; each worker adds to it atomically,
--     a restarted worker goes on adding to the same numbers, and whichever
--     worker answers /metrics reads the totals of all of them;
--   * nginx: a lua_shared_dict (dict:incr), shared by the workers.
-- Labels take values from fixed lists only (the endpoint, the HTTP status),
-- never from a request: no table name, setting or secret reaches a label.
local core = require "biconnector.core"
local shared_dict = require("biconnector.connector.cache").shared_dict

local _M = {}

local format, concat = string.format, table.concat
local floor = math.floor

_M.ENDPOINTS = { "check", "table_list", "table_description", "data", "other" }
_M.CODES = { "200", "400", "401", "403", "404", "405", "408", "413", "415", "429", "500", "503", "other" }
-- latency histogram upper bounds, seconds (+Inf added)
_M.BUCKETS = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
_M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- The layout: name -> index, built once, identical in every process.
local layout, size = {}, 0
local function slot(name)
  size = size + 1
  layout[name] = size
end
local endpoint_index, code_index = {}, {}
for i, e in ipairs(_M.ENDPOINTS) do endpoint_index[e] = i end
for i, c in ipairs(_M.CODES) do code_index[c] = i end
for _, e in ipairs(_M.ENDPOINTS) do
  for _, c in ipairs(_M.CODES) do slot("requests:" .. e .. ":" .. c) end
  slot("bytes:" .. e)
  slot("errors:" .. e)
  for b = 1, #_M.BUCKETS + 1 do slot("bucket:" .. e .. ":" .. b) end -- not cumulative here
  slot("sum_us:" .. e)
  slot("cache_hits:" .. e)
  slot("cache_misses:" .. e)
end
slot("rows")
slot("restarts")
_M.SIZE = size

local Registry = {}
Registry.__index = Registry

-- backend: { add = function(index, delta), get = function(index) -> integer }
function _M.new(backend)
  return setmetatable({ backend = backend }, Registry)
end

-- Counters in a shared mapping (serve): make it before forking the workers.
function _M.shared()
  local counters = core.process.counters(_M.SIZE)
  return _M.new({
    add = function(i, d) counters:add(i, d) end,
    get = function(i) return counters:get(i) end,
  })
end

-- Counters in a lua_shared_dict (nginx): the dict or its name.
function _M.ngx_dict(dict)
  dict = shared_dict(dict, "biconnector.metrics")
  return _M.new({
    add = function(i, d)
      local _, err = dict:incr(tostring(i), d, 0)
      if err then ngx.log(ngx.WARN, "biconnector: metrics: ", err) end
    end,
    get = function(i) return dict:get(tostring(i)) or 0 end,
  })
end

local function endpoint_of(e) return endpoint_index[e] and e or "other" end

-- One answered request: endpoint (info.endpoint), HTTP status, bytes sent,
-- rows sent, seconds taken, whether the connector failed (info.error).
function Registry:observe(endpoint, status, bytes, rows, seconds, failed)
  local add = self.backend.add
  local e = endpoint_of(endpoint)
  local c = tostring(status)
  if not code_index[c] then c = "other" end
  add(layout["requests:" .. e .. ":" .. c], 1)
  if bytes and bytes > 0 then add(layout["bytes:" .. e], floor(bytes)) end
  if rows and rows > 0 then add(layout.rows, floor(rows)) end
  if failed then add(layout["errors:" .. e], 1) end
  seconds = seconds or 0
  local b = #_M.BUCKETS + 1
  for i, le in ipairs(_M.BUCKETS) do
    if seconds <= le then b = i break end
  end
  add(layout["bucket:" .. e .. ":" .. b], 1)
  add(layout["sum_us:" .. e], floor(seconds * 1e6 + 0.5))
end

function Registry:restart() self.backend.add(layout.restarts, 1) end

function Registry:cache(endpoint, hit)
  self.backend.add(layout[(hit and "cache_hits:" or "cache_misses:") .. endpoint_of(endpoint)], 1)
end

local function number(v)
  if v == floor(v) and v < 2 ^ 53 then return format("%d", v) end
  return format("%.17g", v)
end

-- The exposition text.
function Registry:render()
  local get = self.backend.get
  local out = {}
  local function put(s) out[#out + 1] = s end
  local function family(name, kind, help)
    put(format("# HELP %s %s", name, help))
    put(format("# TYPE %s %s", name, kind))
  end
  family("biconnector_requests_total", "counter", "Requests answered, by endpoint and HTTP status.")
  for _, e in ipairs(_M.ENDPOINTS) do
    for _, c in ipairs(_M.CODES) do
      local v = get(layout["requests:" .. e .. ":" .. c])
      if v > 0 then put(format('biconnector_requests_total{endpoint="%s",code="%s"} %s', e, c, number(v))) end
    end
  end
  family("biconnector_sent_bytes_total", "counter", "Body bytes sent, by endpoint.")
  for _, e in ipairs(_M.ENDPOINTS) do
    put(format('biconnector_sent_bytes_total{endpoint="%s"} %s', e, number(get(layout["bytes:" .. e]))))
  end
  family("biconnector_sent_rows_total", "counter", "Data rows sent (urlData answers, header row excluded).")
  put("biconnector_sent_rows_total " .. number(get(layout.rows)))
  family("biconnector_handler_errors_total", "counter", "Answers where the connector failed (logged with an error id), by endpoint.")
  for _, e in ipairs(_M.ENDPOINTS) do
    put(format('biconnector_handler_errors_total{endpoint="%s"} %s', e, number(get(layout["errors:" .. e]))))
  end
  family("biconnector_request_duration_seconds", "histogram", "Time from the request to the end of its answer, by endpoint.")
  for _, e in ipairs(_M.ENDPOINTS) do
    local cumulative = 0
    for b = 1, #_M.BUCKETS + 1 do
      cumulative = cumulative + get(layout["bucket:" .. e .. ":" .. b])
      local le = _M.BUCKETS[b] and format("%g", _M.BUCKETS[b]) or "+Inf"
      put(format('biconnector_request_duration_seconds_bucket{endpoint="%s",le="%s"} %s', e, le, number(cumulative)))
    end
    put(format('biconnector_request_duration_seconds_sum{endpoint="%s"} %s', e,
      format("%.6f", get(layout["sum_us:" .. e]) / 1e6)))
    put(format('biconnector_request_duration_seconds_count{endpoint="%s"} %s', e, number(cumulative)))
  end
  family("biconnector_cache_hits_total", "counter", "table_list/table_description answers taken from the cache.")
  for _, e in ipairs({ "table_list", "table_description" }) do
    put(format('biconnector_cache_hits_total{endpoint="%s"} %s', e, number(get(layout["cache_hits:" .. e]))))
  end
  family("biconnector_cache_misses_total", "counter", "table_list/table_description answers computed with the cache on.")
  for _, e in ipairs({ "table_list", "table_description" }) do
    put(format('biconnector_cache_misses_total{endpoint="%s"} %s', e, number(get(layout["cache_misses:" .. e]))))
  end
  family("biconnector_worker_restarts_total", "counter", "Workers restarted after they died (serve --workers).")
  put("biconnector_worker_restarts_total " .. number(get(layout.restarts)))
  return concat(out, "\n") .. "\n"
end

return _M
