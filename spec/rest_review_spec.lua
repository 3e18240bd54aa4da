-- Conformance review of the REST client against protocol.md 3 and 3.1 (the
-- local portal plays Bitrix24): behaviours a real portal or a demanding user hits.
local rest = require "biconnector.rest"
local control = require "portal.control"

local FAST = { rate = 1000, burst = 1000 }

describe("REST review", function()
  local portal
  setup(function() portal = control.start(FAST) end)
  teardown(function() portal:stop() end)
  before_each(function() portal:reset(FAST) end)

  local function webhook_client(extra) return portal:webhook_client(extra) end

  it("tokens.memory: a second lock while the first is held is refused outside OpenResty, granted after unlock", function()
    local store = require("biconnector.rest.tokens").memory({ access_token = "a" })
    local unlock = assert(store:lock())
    local again, err = store:lock()
    assert.is_nil(again)
    assert.matches("being renewed by another coroutine", err)
    unlock()
    unlock() -- twice: harmless
    local unlock2 = assert(store:lock())
    unlock2()
  end)

  it("a client without client_id/client_secret takes the pair another client renewed in the shared store", function()
    local store = require("biconnector.rest.tokens").memory()
    local renewer = assert(rest.new(portal:oauth_options({ store = store, rate = 1000, burst = 1000 })))
    local reader = assert(rest.new(portal:oauth_options({ store = store, rate = 1000, burst = 1000,
      client_id = false, client_secret = false })))
    portal:control({ action = "expire" })
    assert.equal("1", assert(renewer:call("profile")).ID)
    -- the reader still holds the expired token: it meets expired_token, and the store has a newer pair
    local me, err = reader:call("profile")
    assert.is_nil(err)
    assert.equal("1", me.ID)
    assert.equal(1, portal:stats().stats.renewals)
    -- with nothing newer in the store it still says why it cannot renew
    portal:control({ action = "expire" })
    me, err = reader:call("profile")
    assert.is_nil(me)
    assert.equal("expired_token", err.code)
    assert.matches("no client_id/client_secret", tostring(err))
  end)

  it('"error": null beside a result is no error (at the top, and inside a biconnector result)', function()
    local bodies = { '{"result":{"ID":"1"},"error":null,"time":{}}',
      '{"result":{"id":7,"error":null},"time":{}}' }
    local i = 0
    local c = assert(rest.new({ webhook = "https://portal.example/rest/1/hooksecret/", shared_bucket = false,
      sleep = function() end, transport = function()
        i = i + 1
        return { status = 200, headers = {}, body = bodies[i] }
      end }))
    local me, err = c:call("profile")
    assert.is_nil(err)
    assert.equal("1", me.ID)
    local r, err2 = c:call("biconnector.connector.add", { fields = {} })
    assert.is_nil(err2)
    assert.equal(7, r.id)
  end)

  describe("batch of more than 50 commands (protocol.md 3, Batch)", function()
    it("resolves $result references to a command of an earlier chunk", function()
      local cmds = { { key = "item", method = "test.items.add", params = { fields = { TITLE = "hello" } } },
        { key = "first", method = "test.echo", params = { n = "7", list = { "a", "b" } } } }
      for i = 3, 50 do cmds[i] = { "test.echo", { n = i } } end
      -- the 51st and later go in the second request: the portal never saw "item" there
      cmds[51] = { key = "read", method = "test.items.get", params = { id = "$result[item]" } }
      cmds[52] = { key = "nested", method = "test.echo", params = { a = "$result[first][n]", b = "$result[first][list][1]",
        c = "$result[first]" } }
      cmds[53] = { key = "local", method = "test.echo", params = { a = "$result[read][TITLE]" } } -- same chunk: the portal's
      cmds[54] = "test.items.get?id=$result[item]"
      local results, errors, extra = webhook_client():batch(cmds)
      assert.is_nil(next(errors))
      assert.equal(2, extra.requests)
      assert.equal(1, results.item)
      assert.same({ ID = 1, TITLE = "hello" }, results.read)
      assert.equal("7", results.nested.a)
      assert.equal("b", results.nested.b)
      assert.equal("$result[first]", results.nested.c) -- an object is not put in (nor by the portal)
      assert.equal("hello", results["local"].a)
      assert.equal("hello", results[54].TITLE)
    end)

    it("puts in a reference inside a longer value, in one request and from an earlier chunk alike", function()
      -- the portal replaces every `$result[...]` up to the next white space, not only a whole value
      -- (CRestUtil::processBatchElement: preg_match_all, then str_replace of a scalar)
      local function cmds_with(at)
        local cmds = { { key = "item", method = "test.items.add", params = { fields = { TITLE = "hello" } } },
          { key = "first", method = "test.echo", params = { n = "7", list = { "a", "b" } } } }
        for i = 3, at - 1 do cmds[i] = { "test.echo", { n = i } } end
        cmds[at] = { key = "use", method = "test.echo", params = { a = "Copy of $result[item]",
          b = "n=$result[first][n] list=$result[first][list][1] end", c = "x $result[first] y" } }
        cmds[at + 1] = { key = "upd", method = "test.items.update", params = { id = "$result[item]",
          fields = { TITLE = "$result[first][n] (copy)" } } }
        cmds[at + 2] = { key = "read", method = "test.items.get", params = { id = "$result[item]" } }
        return cmds
      end
      for _, at in ipairs({ 3, 51 }) do -- 3: one request; 51: the reference is to the first request
        portal:reset(FAST)
        local results, errors, extra = webhook_client():batch(cmds_with(at))
        assert.is_nil(next(errors))
        assert.equal(at == 3 and 1 or 2, extra.requests)
        assert.equal("Copy of 1", results.use.a)
        assert.equal("n=7 list=b end", results.use.b)
        assert.equal("x $result[first] y", results.use.c) -- an object is not put into text
        assert.equal("7 (copy)", results.read.TITLE)
      end
    end)

    it("keeps a command line as written when it puts in a reference from an earlier chunk (order keys keep their order)", function()
      local json = require "biconnector.json"
      local sent, answers = {}, {
        '{"result":{"result":{"1":{"ID":5,"TITLE":"a b"}},"result_error":[],"result_total":[],"result_next":[],"result_time":[]},"time":{}}',
        '{"result":{"result":{"2":[]},"result_error":[],"result_total":[],"result_next":[],"result_time":[]},"time":{}}' }
      local c = assert(rest.new({ webhook = "https://portal.example/rest/1/hooksecret/", shared_bucket = false,
        sleep = function() end, transport = function(req)
          sent[#sent + 1] = json.decode(req.body)
          return { status = 200, headers = {}, body = answers[#sent] }
        end }))
      -- ORDER BY TITLE DESC, then ID: sorting the keys would make it ID first
      local line = "test.items.list?order%5BTITLE%5D=DESC&order%5BID%5D=ASC&select[]=ID&filter%5B%3E%3DID%5D=$result[1][ID]"
        .. "&filter[TITLE]=%24result%5B1%5D%5BTITLE%5D+copy"
      local results, errors = c:batch({ "test.items.get?id=1", line }, { chunk_size = 1 })
      assert.is_nil(next(errors))
      assert.same({}, results[2])
      assert.equal("test.items.list?order%5BTITLE%5D=DESC&order%5BID%5D=ASC&select[]=ID&filter%5B%3E%3DID%5D=5"
        .. "&filter[TITLE]=a+b+copy", sent[2].cmd["2"])
    end)

    it("leaves a reference to a failed command of an earlier chunk as the portal would", function()
      local cmds = { { key = "bad", method = "no.such" } }
      for i = 2, 50 do cmds[i] = { "test.echo", { n = i } } end
      cmds[51] = { key = "use", method = "test.echo", params = { a = "$result[bad]", b = "$result[nokey]" } }
      local results, errors = webhook_client():batch(cmds)
      assert.equal("ERROR_METHOD_NOT_FOUND", errors.bad.code)
      assert.equal("$result[bad]", results.use.a)
      assert.equal("$result[nokey]", results.use.b)
    end)
  end)
end)
