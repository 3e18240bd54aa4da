-- biconnector.request: JSON and form bodies decode to the same normalized
-- request for every endpoint; malformed requests are 400 errors naming the field.
local request = require "biconnector.request"
local form = require "biconnector.form"

local JSON = { ["content-type"] = "application/json" }
local FORM = { ["content-type"] = "application/x-www-form-urlencoded" }

local function post(path, headers, body)
  return { method = "POST", path = path, headers = headers, body = body }
end

local FIELDS = {
  { code = "ID", name = "ID", type = "int" },
  { code = "TITLE", name = "TITLE", type = "string" },
  { code = "AMOUNT", name = "AMOUNT", type = "double" },
  { code = "DAY", name = "DAY", type = "date" },
  { code = "DATE_CREATE", name = "DATE_CREATE", type = "datetime" },
}

-- { endpoint, JSON body, the same request as Bitrix24 form-encodes it }
local PAIRS = {
  { "/check", '{"connection":{"login":"user","token":"abc"}}',
    "connection%5Blogin%5D=user&connection%5Btoken%5D=abc" },
  { "/check", '{}', "" },
  { "/check", '{"connection":{"token":"a&b=c Я"}}', "connection[token]=a%26b%3Dc+%D0%AF" },
  { "/table_list", '{"searchString":"","connection":{"token":"t"}}', "searchString=&connection[token]=t" },
  { "/table_list", '{"searchString":"Сделки","connection":{"token":"t"}}',
    "searchString=%D0%A1%D0%B4%D0%B5%D0%BB%D0%BA%D0%B8&connection[token]=t" },
  { "/table_list", '{"searchString":"a+b","connection":{"token":"t"}}', "searchString=a%2Bb&connection[token]=t" },
  { "/table_list", '{"searchString":2025,"connection":{"token":"t"}}', "searchString=2025&connection[token]=t" },
  { "/table_list", '{"searchString":0.1}', "searchString=0.1" },
  { "/check", '{"connection":[]}', "" },
  { "/check", '{"connection":{"port":5432,"ratio":0.5,"ssl":true,"off":false,"none":null,"n":{"a":1}}}',
    "connection[port]=5432&connection[ratio]=0.5&connection[ssl]=1&connection[off]=0&connection[n][a]=1" },
  { "/table_description", '{"table":"deals","connection":{"token":"t"}}', "table=deals&connection[token]=t" },
  { "/table_description", '{"table":17}', "table=17" },
  { "/table_description", '{"name":"deals","connection":{"token":"t"}}', "name=deals&connection%5Btoken%5D=t" },
  { "/data", '{"table":"deals","connection":{"token":"t"}}', "table=deals&connection[token]=t" },
  { "/data", '{"table":"deals","select":["ID","TITLE"],"limit":10,"connection":{"token":"t"}}',
    "table=deals&select[]=ID&select[]=TITLE&limit=10&connection[token]=t" },
  { "/data", '{"table":"deals","select":["ID","TITLE"],"limit":0}',
    "table=deals&select%5B0%5D=ID&select%5B1%5D=TITLE&limit=0" },
  { "/data", '{"table":"deals","mapFields":{"ID":"DEAL_ID","TITLE":"NAME"},"select":["ID"]}',
    "table=deals&mapFields[ID]=DEAL_ID&mapFields[TITLE]=NAME&select[]=ID" },
  { "/data", '{"table":"deals","filter":{">=DATE_CREATE":"31.05.2025 17:01:55"}}',
    "table=deals&filter%5B%3E%3DDATE_CREATE%5D=31.05.2025+17%3A01%3A55" },
  { "/data", '{"table":"deals","filter":{">ID":5,"<ID":10,"!TITLE":"x","AMOUNT":1.5}}',
    "table=deals&filter[>ID]=5&filter[<ID]=10&filter[!TITLE]=x&filter[AMOUNT]=1.5" },
  { "/data", '{"table":"deals","filter":{"@ID":[1,2,3],"!@TITLE":["a","b"]}}',
    "table=deals&filter[@ID][]=1&filter[@ID][]=2&filter[@ID][]=3&filter[!@TITLE][0]=a&filter[!@TITLE][1]=b" },
  { "/data", '{"table":"deals","filter":{"ID":[1,2]}}', "table=deals&filter[ID][]=1&filter[ID][]=2" },
  { "/data", '{"table":"deals","filter":[{"LOGIC":"OR",">=ID":5,"<ID":2}]}',
    "table=deals&filter[0][LOGIC]=OR&filter[0][%3E%3DID]=5&filter[0][%3CID]=2" },
  { "/data", '{"table":"deals","filter":{"DAY":"2025-05-31","0":{"LOGIC":"OR","%TITLE":"deal","=%TITLE":"a%","1":{">AMOUNT":1,"<AMOUNT":5}}}}',
    "table=deals&filter[DAY]=31.05.2025&filter[0][LOGIC]=OR&filter[0][%25TITLE]=deal&filter[0][%3D%25TITLE]=a%25"
      .. "&filter[0][1][%3EAMOUNT]=1&filter[0][1][%3CAMOUNT]=5" },
  { "/data", '{"table":"deals","filter":{"ID":{"operator":"between","from":1,"to":5},"TITLE":{"operator":"NOT LIKE","value":"x"}}}',
    "table=deals&filter[ID][operator]=between&filter[ID][from]=1&filter[ID][to]=5"
      .. "&filter[TITLE][operator]=NOT+LIKE&filter[TITLE][value]=x" },
  { "/data", '{"table":"deals","filter":{"DAY":{"operator":"IS NULL"},"ID":{"operator":"in","value":[4,5]}}}',
    "table=deals&filter[DAY][operator]=IS+NULL&filter[ID][operator]=in&filter[ID][value][]=4&filter[ID][value][]=5" },
  { "/data", '{"table":"deals","filter":{"DATE_CREATE":{"operator":">=","value":"2025-05-31T17:01:55+02:00"},"<>ID":7}}',
    "table=deals&filter[DATE_CREATE][operator]=%3E%3D&filter[DATE_CREATE][value]=2025-05-31+17%3A01%3A55&filter[%3C%3EID]=7" },
  { "/data", '{"table":"deals","filter":{"DAY":null,"!DATE_CREATE":null}}',
    "table=deals&filter[DAY]=&filter[!DATE_CREATE]=" },
  { "/data", '{"table":"deals","filter":[[{"ID":1},{"ID":2}]]}', "table=deals&filter[0][0][ID]=1&filter[0][1][ID]=2" },
  { "/data", '{"table":"deals","filter":{}}', "table=deals" },
  { "/data", '{"table":"deals","select":[],"mapFields":{},"limit":null}', "table=deals&limit=" },
  { "/data", '{"table":"deals","filter":[]}', "table=deals&filter=" },
  -- select keyed by integers out of order (PHP keeps them; JSON as PHP writes such an array)
  { "/data", '{"table":"deals","select":{"1":"TITLE","0":"ID"}}', "table=deals&select[1]=TITLE&select[0]=ID" },
  { "/data", '{"table":"deals","select":["ID","TITLE"]}', "table=deals&select[0]=ID&select[5]=TITLE" },
  -- a raw `=` inside brackets, as a hand-written body has it
  { "/data", '{"table":"deals","filter":{">=ID":5,"!=TITLE":"a=b","0":{"LOGIC":"OR","=ID":1,"<=AMOUNT":2}}}',
    "table=deals&filter[>=ID]=5&filter[!=TITLE]=a=b&filter[0][LOGIC]=OR&filter[0][=ID]=1&filter[0][<=AMOUNT]=2" },
}

local function decoded(path, headers, body)
  local req, err = request.decode(post(path, headers, body))
  assert.is_nil(err)
  if path == "/data" then assert(request.bind_filter(req, FIELDS)) end
  req.filter_raw = nil -- the raw spellings differ by design: strings in forms
  return req
end

describe("request.decode", function()
  for i, pair in ipairs(PAIRS) do
    local path, json_body, form_body = pair[1], pair[2], pair[3]
    it(("gives the same request from JSON and from a form: %s #%d"):format(path, i), function()
      local from_json = decoded(path, JSON, json_body)
      local from_form = decoded(path, FORM, form_body)
      assert.same(from_json, from_form)
      -- and the same again without a Content-Type (sniffing)
      assert.same(from_json, decoded(path, {}, json_body))
      assert.same(from_json, decoded(path, {}, form_body))
    end)
  end

  it("gives the same request from a form made by form.encode of the JSON data", function()
    local cjson = require "cjson"
    for i, pair in ipairs(PAIRS) do
      -- a form cannot carry null (http_build_query leaves it out)
      if not pair[2]:find("null", 1, true) then
        local body = form.encode(cjson.decode(pair[2]))
        assert.same(decoded(pair[1], JSON, pair[2]), decoded(pair[1], FORM, body), "pair #" .. i .. ": " .. body)
      end
    end
  end)

  it("normalizes every field", function()
    local req = decoded("/data", FORM,
      "table=deals&select[]=ID&select[]=TITLE&limit=25&mapFields[ID]=X&searchString=s&connection[token]=t&filter[%3EID]=3")
    assert.same({ token = "t" }, req.connection)
    assert.equal("s", req.search)
    assert.equal("deals", req.table)
    assert.same({ "ID", "TITLE" }, req.select)
    assert.equal(25, req.limit)
    if math.type then assert.equal("integer", math.type(req.limit)) end
    assert.same({ ID = "X" }, req.map_fields)
    assert.same({ kind = "group", logic = "and",
      items = { { kind = "cond", field = "ID", type = "int", op = "gt", value = 3 } } }, req.filter)
  end)

  it("fills defaults for an empty body", function()
    for _, body in ipairs({ "", false }) do
      local req = assert(request.decode(post("/check", {}, body or nil)))
      assert.same({ connection = {}, search = "" }, req)
    end
  end)

  it("reads the media type case-insensitively and with parameters", function()
    local req = assert(request.decode(post("/check", { ["content-type"] = "Application/JSON; charset=utf-8" },
      '{"connection":{"a":"1"}}')))
    assert.same({ a = "1" }, req.connection)
    req = assert(request.decode(post("/check", { ["content-type"] = "application/x-www-form-urlencoded; charset=UTF-8" },
      "connection[a]=1")))
    assert.same({ a = "1" }, req.connection)
  end)

  it("leaves filter to bind_filter: nil when absent or empty", function()
    local req = assert(request.decode(post("/data", FORM, "table=t")))
    assert.is_nil(req.filter_raw)
    assert.is_true(request.bind_filter(req, FIELDS))
    assert.is_nil(req.filter)
  end)

  -- { what is wrong, content type, body, the field the message must name }
  local BAD = {
    { "unparseable JSON", JSON, '{"table":', "body" },
    { "a JSON array body", JSON, '[1,2]', "body" },
    { "a JSON string body", JSON, '"x"', "body" },
    { "sniffed bad JSON", {}, '{oops', "body" },
    { "too many form variables", FORM, ("a=1&"):rep(request.FORM_MAX_VARS + 1), "body" },
    { "negative limit", FORM, "limit=-1", "limit" },
    { "fractional limit", JSON, '{"limit":1.5}', "limit" },
    { "text limit", FORM, "limit=ten", "limit" },
    { "limit as a list", FORM, "limit[]=1", "limit" },
    { "select not a list", FORM, "select=ID", "select" },
    { "select as an object", JSON, '{"select":{"a":"ID"}}', "select" },
    { "select holding an object", JSON, '{"select":["ID",{"x":1}]}', "select[2]" },
    { "select holding an empty code", FORM, "select[]=ID&select[]=", "select[2]" },
    { "select holding a boolean", JSON, '{"select":[true]}', "select[1]" },
    { "connection not an object", FORM, "connection=abc", "connection" },
    { "connection a list", JSON, '{"connection":["a"]}', "connection" },
    { "connection a number", JSON, '{"connection":5}', "connection" },
    { "table an object", JSON, '{"table":{"a":1}}', "table" },
    { "name an object", FORM, "name[x]=1", "name" },
    { "searchString a list", FORM, "searchString[]=a", "searchString" },
    { "filter a string", FORM, "filter=ID", "filter" },
    { "mapFields a string", FORM, "mapFields=x", "mapFields" },
    { "mapFields holding an object", JSON, '{"mapFields":{"ID":{"a":1}}}', "mapFields[ID]" },
    -- a control byte in a code (issue 20): never cut at a NUL, never matched by a prefix
    { "a NUL in a JSON table code", JSON, '{"table":"secret\\u0000"}', 'table: the code "secret\\0" holds a control byte' },
    { "a NUL in a form table code", FORM, "table=secret%00", "table: the code" },
    { "a line break in a table code", FORM, "table=a%0Ab", "table: the code" },
    { "DEL in a name code", FORM, "name=a%7F", "name: the code" },
    { "a NUL in a select code", JSON, '{"select":["ID","ID\\u0000"]}', "select[2]: the code" },
    { "a control byte in a form select code", FORM, "select[]=ID%01", "select[1]: the code" },
    { "a NUL in a filter key", JSON, '{"filter":{"ID\\u0000":1}}', "filter: the code" },
    { "a control byte in a nested filter key", JSON, '{"filter":{"LOGIC":"OR","0":{">=ID\\u001f":1}}}',
      "filter: the code" },
    { "a control byte in a form filter key", FORM, "filter[%3EID%09]=1", "filter: the code" },
  }
  for _, case in ipairs(BAD) do
    it("refuses " .. case[1] .. " with 400 naming " .. case[4], function()
      local req, err = request.decode(post("/data", case[2], case[3]))
      assert.is_nil(req)
      assert.is_true(request.is_error(err))
      assert.equal(400, err.status)
      assert.equal(case[4], err.message:sub(1, #case[4]))
      assert.matches(err.message, tostring(err), 1, true)
    end)
  end

  it("raises on misuse", function()
    assert.has_error(function() request.decode("body") end)
  end)

  it("refuses a Content-Encoding other than identity with 415, before reading the body", function()
    for _, coding in ipairs({ "gzip", "deflate", "br", "GZIP", "identity, gzip", "x-gzip", "x y" }) do
      local req, err = request.decode(post("/data", { ["content-type"] = "application/json",
        ["content-encoding"] = coding }, '{"table":"t"}'))
      assert.is_nil(req, coding)
      assert.equal(415, err.status)
      assert.matches("^body: Content%-Encoding \".+\" is not supported; send the body unencoded", err.message)
    end
    local _, err = request.decode(post("/check", { ["content-encoding"] = "gzip" }, ""))
    assert.equal(415, err.status)
    for _, coding in ipairs({ "identity", "Identity", " identity , IDENTITY ", "" }) do
      local req = assert(request.decode(post("/data", { ["content-type"] = "application/json",
        ["content-encoding"] = coding }, '{"table":"t"}')), coding)
      assert.equal("t", req.table)
    end
    -- a header of a million spaces is read in linear time
    assert(request.decode(post("/check", { ["content-encoding"] = (" "):rep(1000000) }, "")))
  end)

  it("takes codes with every other byte as they are", function()
    local req = assert(request.decode(post("/data", JSON,
      '{"table":"a b\\u00e9\\"\'; --","select":["x y","Я"],"filter":{"x y":" \\u0080"}}')))
    assert.equal("a b\195\169\"'; --", req.table)
    assert.same({ "x y", "Я" }, req.select)
  end)

  it("takes a form filter with a long IN list (more than PHP's 1000 variables)", function()
    local parts = { "table=deals" }
    for i = 1, 3000 do parts[#parts + 1] = "filter[%40ID][]=" .. i end
    local req = decoded("/data", FORM, table.concat(parts, "&"))
    assert.equal("in", req.filter.items[1].op)
    assert.equal(3000, #req.filter.items[1].values)
  end)

  it("reads a JSON object sent with the form type as JSON (curl -d does that)", function()
    local req = assert(request.decode(post("/data", FORM, ' {"table":"deals","connection":{"token":"t"},"limit":"2"}')))
    assert.same({ token = "t" }, req.connection)
    assert.equal("deals", req.table)
    assert.equal(2, req.limit)
    -- not JSON after all: a form, as the type says
    req = assert(request.decode(post("/data", FORM, "{x=1&table=deals")))
    assert.equal("deals", req.table)
  end)

  it("skips a UTF-8 byte-order mark before a JSON or a form body", function()
    for _, headers in ipairs({ JSON, {} }) do
      local req = assert(request.decode(post("/check", headers, '\239\187\191{"connection":{"token":"t"}}')))
      assert.same({ token = "t" }, req.connection)
    end
    local req = assert(request.decode(post("/check", FORM, "\239\187\191connection[token]=t")))
    assert.same({ token = "t" }, req.connection)
  end)

  it("reads a limit past 2^53 - 1 (PHP_INT_MAX, a long digit string, 1e300) as 2^53 - 1, not as a 400", function()
    local max = 9007199254740991
    for _, body in ipairs({ "table=deals&limit=9223372036854775807", "table=deals&limit=" .. ("9"):rep(400),
      "table=deals&limit=9007199254740992" }) do
      local req = assert(request.decode(post("/data", FORM, body)))
      assert.equal(max, req.limit)
      if math.type then assert.equal("integer", math.type(req.limit)) end
    end
    for _, body in ipairs({ '{"table":"deals","limit":9223372036854775807}', '{"table":"deals","limit":1e300}' }) do
      assert.equal(max, assert(request.decode(post("/data", JSON, body))).limit)
    end
    assert.equal(max - 1, assert(request.decode(post("/data", FORM, "table=deals&limit=9007199254740990"))).limit)
    -- what is no whole number stays a 400
    local _, err = request.decode(post("/data", JSON, '{"table":"deals","limit":-1e300}'))
    assert.equal(400, err.status)
  end)

  it("shows a refused number as the number", function()
    local _, err = request.decode(post("/data", JSON, '{"limit":-1}'))
    assert.equal("limit: expected a non-negative integer, got -1", err.message)
    _, err = request.decode(post("/data", JSON, '{"limit":2.5}'))
    assert.equal("limit: expected a non-negative integer, got 2.5", err.message)
  end)

  it("reads bodies full of brackets in linear time (a quadratic scan would hang here)", function()
    for _, body in ipairs({ "a=" .. ("["):rep(300000), "a[" .. ("["):rep(300000) .. "=1",
      ("a[=1&"):rep(60000), ("[x"):rep(150000) .. "=1" }) do
      assert(request.decode(post("/data", FORM, body)))
    end
  end)

  it("keeps a raw `=` in a value and leaves well-formed names alone", function()
    local req = assert(request.decode(post("/data", FORM, "table=a=b&searchString=x[y=z]&connection[k]=v=w")))
    assert.equal("a=b", req.table)
    assert.equal("x[y=z]", req.search)
    assert.same({ k = "v=w" }, req.connection)
  end)
end)

describe("request.bind_filter", function()
  local BAD = {
    { '{"filter":{"NOPE":1}}', 'filter[NOPE]: unknown field "NOPE"' },
    { '{"filter":{"?ID":1}}', 'filter[?ID]: unknown operator "?"' },
    { '{"filter":{"ID":"abc"}}', 'filter[ID]: bad value "abc" for int field ID' },
    { '{"filter":{"AMOUNT":"1,5"}}', 'filter[AMOUNT]: bad value "1,5" for double field AMOUNT' },
    { '{"filter":{"DAY":"31.02.2025"}}', 'filter[DAY]: bad value "31.02.2025" for date field DAY (no such day)' },
    { '{"filter":{"DATE_CREATE":"2025-05-31 25:00:00"}}', "filter[DATE_CREATE]: bad value" },
    { '{"filter":{"ID":{"operator":"ALMOST","value":1}}}', 'filter[ID]: unknown operator "ALMOST"' },
    { '{"filter":{"0":{"LOGIC":"XOR","ID":1}}}', "filter[0][LOGIC]: LOGIC must be AND or OR" },
    { 'filter[0][LOGIC]=OR&filter[0][%3EID]=x', 'filter[1][>ID]: bad value "x"' },
  }
  for _, case in ipairs(BAD) do
    it("refuses " .. case[1] .. " with 400", function()
      local req = assert(request.decode(post("/data", {}, case[1])))
      local ok, err = request.bind_filter(req, FIELDS)
      assert.is_nil(ok)
      assert.is_true(request.is_error(err))
      assert.equal(400, err.status)
      assert.equal(case[2], err.message:sub(1, #case[2]))
    end)
  end
end)

describe("request.error", function()
  it("is a table with status, message and __tostring", function()
    local e = request.error(400, "limit: bad")
    assert.equal(400, e.status)
    assert.equal("limit: bad", e.message)
    assert.equal("400 limit: bad", tostring(e))
    assert.is_true(request.is_error(e))
    assert.is_false(request.is_error({ status = 400, message = "x" }))
    assert.is_false(request.is_error(nil))
  end)
end)
