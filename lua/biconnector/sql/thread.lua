-- The database side of biconnector.sql under nginx: functions that
-- ngx.run_worker_thread runs in a thread of the pool, in a Lua VM of its own
-- (arguments and results are plain values). A cursor lives between calls as a
-- detached core.sql cursor (an id), so a long answer is read chunk by chunk,
-- each chunk one trip to the pool, while the nginx worker serves others.
-- Every function returns "ok", results... or "fail", status, message.
local core = require "biconnector.core"

local _M = {}

local sources = {} -- spec.key -> source, per thread VM

local function source_of(spec)
  local src = sources[spec.key]
  if not src then
    local opts = {}
    for k, v in pairs(spec) do opts[k] = v end
    opts.key, opts.thread_pool = nil, false
    src = require("biconnector.sql").source(opts)
    sources[spec.key] = src
  end
  return src
end

local unpack = table.unpack or unpack -- luacheck: ignore 143

local function pack(...) return { n = select("#", ...), ... } end

local function guarded(f, ...)
  local results = pack(pcall(f, ...))
  if results[1] then
    results[1] = "ok"
    return unpack(results, 1, results.n)
  end
  local err = results[2]
  if type(err) == "table" and err.status then return "fail", err.status, tostring(err.message) end
  return "fail", 500, tostring(err)
end

function _M.table_list(spec, search)
  return guarded(function() return source_of(spec):table_list(search) end)
end

function _M.describe(spec, code)
  return guarded(function() return source_of(spec):describe(code) end)
end

-- -> id (a detached cursor with its own connection), complete, codes
function _M.open(spec, q)
  return guarded(function()
    local src = source_of(spec)
    local sql, params, complete, codes = src:plan(q)
    -- a connection per cursor: a cursor may be continued by another thread
    -- while this one runs the next query (the client libraries allow one
    -- statement at a time per connection)
    local conn, err = core.sql.open(src.engine.engine, src.open_opts)
    if not conn then error(require("biconnector.sql").failure(503, err), 0) end
    local cur, qerr = conn:query(sql, params)
    conn:close() -- the cursor keeps it open
    if not cur then
      local sqlmod = require "biconnector.sql"
      error(sqlmod.failure(sqlmod.status_for(qerr), string.format("table %q: %s", q.table, qerr)), 0)
    end
    return cur:detach(), complete, codes
  end)
end

-- -> the rows' JSON text (",[...]" each), added, done, nulled, column, why
function _M.fill(spec, id, fields, select, max_bytes, max_rows)
  return guarded(function()
    local cur, err = core.sql.attach(id)
    if not cur then error(err, 0) end
    -- the rows go into the caller's encoder as text: written as it would (datetime_offset)
    local offset = spec.datetime_offset
    local enc = core.rows.new(fields, select, { chunk_size = max_bytes,
      datetime_offset = offset == true and "Z" or offset })
    enc:take() -- the header row: the caller's encoder has it
    local added, done, nulled, column, why = cur:fill(enc, max_bytes, max_rows)
    if added == nil then
      cur:close()
      enc:close()
      local sqlmod = require "biconnector.sql"
      error(sqlmod.failure(sqlmod.status_for(done), "reading rows failed: " .. tostring(done)), 0)
    end
    local text = enc:take()
    enc:close()
    if done then cur:close() else cur:detach() end
    return text, added, done, nulled, column, why
  end)
end

-- -> up to n rows (lists of width values; NULL as nil), done
function _M.fetch(_, id, n)
  return guarded(function()
    local cur, err = core.sql.attach(id)
    if not cur then error(err, 0) end
    local rows = {}
    for i = 1, n do
      local r, ferr = cur:fetch()
      if not r then
        cur:close()
        if ferr then error(ferr, 0) end
        return rows, true
      end
      rows[i] = r
    end
    cur:detach()
    return rows, false
  end)
end

return _M
