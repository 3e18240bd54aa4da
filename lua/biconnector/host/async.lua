-- Waiting for work done on another thread (a database job, core.sql.job)
-- without holding up the host's other requests.
--
--   async.wait(job [, seconds])  returns once the job may have news (or the
--                                seconds passed), however the caller runs:
--   * inside a coroutine a host has registered with async.host(co) (the
--     built-in server, biconnector.serve): the coroutine yields
--     async.MARK, fd, seconds, job; the host suspends the request, polls fd
--     with its other connections and resumes the coroutine when fd is
--     readable (the job's eventfd) or the seconds passed;
--   * inside an nginx request (content, access, rewrite phases, timers):
--     ngx.sleep, starting at 1 ms and doubling up to 20 ms while nothing
--     comes; the nginx worker serves others meanwhile (ngx.ctx.biconnector_waits_for
--     names the job meanwhile, for biconnector.ngx's client-abort handler);
--   * anywhere else (a script, a test, the command line): blocks on the fd.
-- The job says what the news is (job:state(), job:take, job:fetch).
local coroutine, rawget, pcall, setmetatable = coroutine, rawget, pcall, setmetatable

local _M = {}

-- What a hosted coroutine yields to ask its host to wait (a unique value).
_M.MARK = setmetatable({}, { __tostring = function() return "biconnector.async.MARK" end })

local hosted = setmetatable({}, { __mode = "k" })

-- Registers co as a coroutine whose host understands async.MARK yields.
function _M.host(co)
  hosted[co] = true
  return co
end

local function in_ngx_request()
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or type(ngx.sleep) ~= "function" or type(ngx.get_phase) ~= "function" then return false end
  local ok, phase = pcall(ngx.get_phase)
  return ok and (phase == "content" or phase == "access" or phase == "rewrite" or phase == "timer")
end

local backoff = setmetatable({}, { __mode = "k" }) -- job -> the next ngx.sleep

-- Tells async that job brought news (data was taken): the next nginx wait is short again.
function _M.reset(job)
  backoff[job] = nil
end

function _M.wait(job, seconds)
  seconds = seconds or 1
  local co = coroutine.running()
  if co and hosted[co] then
    coroutine.yield(_M.MARK, job:fd(), seconds, job)
    job:drain() -- the next poll waits for news that comes after this
    return
  end
  if in_ngx_request() then
    local ngx = rawget(_G, "ngx")
    local d = backoff[job] or 0.001
    local ctx = ngx.ctx
    ctx.biconnector_waits_for = job -- biconnector.ngx cancels it when the client leaves
    ngx.sleep(d)
    ctx.biconnector_waits_for = nil
    job:drain()
    backoff[job] = d < 0.02 and d * 2 or 0.02
    return
  end
  job:wait(seconds)
end

return _M
