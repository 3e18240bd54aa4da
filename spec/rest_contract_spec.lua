-- The biconnector.* error contract, end to end against the local portal: an
-- error inside `result` (HTTP 200, the current portals), the same error at the
-- top level (older portals, errors_at_top), and the `order` HTTP 400
-- ERROR_ARGUMENT reach the caller as the same error object, in call, in batch
-- results and in list paging; a validation error is sent once, never retried.
local rest = require "biconnector.rest"
local control = require "portal.control"
local json = require "biconnector.json"

local FAST = { rate = 1000, burst = 1000, url_check = false }
local OLD = { rate = 1000, burst = 1000, url_check = false, errors_at_top = true }

-- What a caller can tell apart: every field of the error object but the timing.
local function shape(err)
  assert(rest.is_error(err), "not an error object: " .. tostring(err))
  return { code = err.code, description = err.description, status = err.status, method = err.method,
    retryable = err.retryable, kind = err.kind, text = tostring(err), key = err.key }
end

describe("biconnector errors, inside result or at the top", function()
  local portal
  setup(function() portal = control.start(FAST) end)
  teardown(function() portal:stop() end)

  -- Runs f(client) on the current portal and on an older one; returns both results.
  local function both(f)
    local out = {}
    for _, config in ipairs({ FAST, OLD }) do
      portal:reset(config)
      local client = assert(rest.new(portal:oauth_options({ rate = 1000, burst = 1000, backoff_base = 0.001 })))
      out[#out + 1] = { f(client) }
      out[#out].received = portal:stats().stats.received
      client:close()
    end
    return out[1], out[2]
  end

  it("call: the error inside result is the error object a top-level one gives", function()
    local inside, top = both(function(c)
      return c:call("biconnector.connector.add", { fields = { title = "x" } })
    end)
    assert.is_nil(inside[1])
    assert.is_nil(top[1])
    assert.same(shape(top[2]), shape(inside[2]))
    assert.equal("VALIDATION_REQUIRED_FIELD_MISSING", inside[2].code)
    assert.equal(200, inside[2].status)
    assert.is_false(inside[2].retryable)
    assert.equal(1, inside.received["biconnector.connector.add"]) -- not retried
    assert.equal(1, top.received["biconnector.connector.add"])
  end)

  it("call_raw and the services say so too; a success is untouched", function()
    local inside, top = both(function(c)
      local raw, raw_err = c:call_raw("biconnector.source.get", { id = 42 })
      local item, get_err = c.source:get(42)
      local ok = c:call("biconnector.connector.fields")
      return raw, raw_err, item, get_err, ok
    end)
    for _, r in ipairs({ inside, top }) do
      assert.is_nil(r[1])
      assert.equal("SOURCE_NOT_FOUND", r[2].code)
      assert.is_nil(r[3])
      assert.equal("SOURCE_NOT_FOUND", r[4].code)
      assert.is_table(r[5].fields)
    end
    assert.same(shape(top[2]), shape(inside[2]))
    assert.same(shape(top[4]), shape(inside[4]))
  end)

  it("batch: a biconnector command whose result holds an error is in errors, as at the top level", function()
    local inside, top = both(function(c)
      return c:batch({ good = { "biconnector.connector.fields" }, bad = { "biconnector.connector.get", { id = 9 } },
        other = { "test.echo", { error = "not an error: test.echo is no biconnector method" } } })
    end)
    for _, r in ipairs({ inside, top }) do
      local results, errors = r[1], r[2]
      assert.is_table(results.good.fields)
      assert.is_nil(results.bad)
      assert.equal("CONNECTOR_NOT_FOUND", errors.bad.code)
      assert.equal("biconnector.connector.get", errors.bad.method)
      assert.equal("bad", errors.bad.key)
      assert.equal("not an error: test.echo is no biconnector method", results.other.error)
      assert.is_nil(errors.other)
    end
    assert.same(shape(top[2].bad), shape(inside[2].bad))
  end)

  it("batch with halt stops at a command whose result holds an error", function()
    portal:reset(FAST)
    local c = assert(rest.new(portal:oauth_options({ rate = 1000, burst = 1000 })))
    local cmds = {}
    for i = 1, 60 do cmds[i] = { "biconnector.connector.fields" } end
    cmds[30] = { "biconnector.connector.get", { id = 9 } }
    local results, errors, extra = c:batch(cmds, { halt = true })
    assert.equal("CONNECTOR_NOT_FOUND", errors[30].code)
    assert.equal(1, extra.requests) -- the second chunk is not sent
    assert.is_table(results[29])
    c:close()
  end)

  it("paging: a page whose result holds an error raises it from each and returns it from list", function()
    local inside, top = both(function(c)
      portal:control({ action = "seed", connectors = 2 }) -- the filter is read against items
      local ok, raised = pcall(function()
        for _ in c:each("biconnector.connector.list", { filter = { LOGIC = "XOR", title = "a" } }) do end
      end)
      local list, err = c.connector:list({ filter = { LOGIC = "XOR", title = "a" } })
      return ok, raised, list, err
    end)
    for _, r in ipairs({ inside, top }) do
      assert.is_false(r[1])
      assert.equal("VALIDATION_INVALID_FILTER_LOGIC", r[2].code)
      assert.is_nil(r[3])
      assert.equal("VALIDATION_INVALID_FILTER_LOGIC", r[4].code)
    end
    assert.same(shape(top[2]), shape(inside[2]))
    assert.equal(2, inside.received["biconnector.connector.list"]) -- once each, no retry
  end)

  it("an order direction other than ASC/DESC: HTTP 400 ERROR_ARGUMENT at the top, an error, not retried", function()
    portal:reset(FAST)
    local c = assert(rest.new(portal:oauth_options({ rate = 1000, burst = 1000 })))
    local list, err = c.table:list({ order = { id = "UPWARDS" } })
    assert.is_nil(list)
    assert.equal("ERROR_ARGUMENT", err.code)
    assert.equal(400, err.status)
    assert.is_false(err.retryable)
    assert.equal(1, portal:stats().stats.received["biconnector.table.list"])
    c:close()
  end)

  it("pages the current lists by page: 120 connectors, 50 a page, every one once", function()
    portal:reset(FAST)
    portal:control({ action = "seed", connectors = 120 })
    local c = assert(rest.new(portal:oauth_options({ rate = 1000, burst = 1000 })))
    local ids = {}
    for item in c:each("biconnector.connector.list", { order = { id = "ASC" } }) do ids[#ids + 1] = item.id end
    assert.equal(120, #ids)
    for i = 1, 120 do assert.equal(i, ids[i]) end
    assert.equal(3, portal:stats().stats.received["biconnector.connector.list"])
    c:close()
  end)

  it("reads only biconnector methods this way, and both spellings of the error in result", function()
    assert.is_nil(rest.error_in_result("test.echo", { error = { error = "X" } }))
    assert.is_nil(rest.error_in_result("biconnector.table.get", { item = { error = "a column named error" } }))
    assert.is_nil(rest.error_in_result("biconnector.table.list", json.decode('[{"error":1}]')))
    assert.same({ error = "ACCESS_DENIED", error_description = "Access denied." },
      rest.error_in_result("BICONNECTOR.TABLE.GET.json", { error = { error = "ACCESS_DENIED", error_description = "Access denied." } }))
    assert.same({ error = "DATASET_NOT_FOUND", error_description = "Dataset was not found." },
      rest.error_in_result("biconnector.table.get", { error = "DATASET_NOT_FOUND", error_description = "Dataset was not found." }))
    -- the update rejected by an event handler: a numeric zero for a code (table-update.md)
    assert.same({ error = 0, error_description = "Error updating table." },
      rest.error_in_result("biconnector.table.update", { error = { error = 0, error_description = "Error updating table." } }))
  end)
end)
