/* libFuzzer target: biconnector.request.decode on arbitrary bodies, as JSON,
 * as a form and with no content type, then bind_filter on what decoded. Both
 * answer a value or nil and a request error {status = 400, message = text}
 * (415 for a Content-Type that is neither JSON nor a form); nothing else may
 * come out of them.
 * Build: fuzz/build.sh request_decode; run: fuzz/run.sh request_decode [SECONDS]. */
#include "lua_harness.h"

static const char *const check_source =
  "local request = require 'biconnector.connector.request'\n"
  "local FIELDS = { { code = 'ID', type = 'int' }, { code = 'TITLE', type = 'string' },\n"
  "  { code = 'AMOUNT', type = 'double' }, { code = 'CLOSED', type = 'datetime' }, { code = 'DAY', type = 'date' } }\n"
  "local TYPES = { 'application/json', 'application/x-www-form-urlencoded; charset=UTF-8', false, 'text/plain' }\n"
  "local function refused(err, content_type)\n"
  "  assert(request.is_error(err), 'not a request error: ' .. tostring(err))\n"
  "  local status_ok = err.status == 400 or (err.status == 415 and content_type == 'text/plain')\n"
  "  assert(status_ok and type(err.message) == 'string' and #err.message > 0, 'bad error: ' .. tostring(err))\n"
  "end\n"
  "return function(body)\n"
  "  for _, content_type in ipairs(TYPES) do\n"
  "    local req, err = request.decode({ method = 'POST', path = '/data', body = body,\n"
  "      headers = { ['content-type'] = content_type or nil } })\n"
  "    if req == nil then refused(err, content_type)\n"
  "    else\n"
  "      assert(type(req) == 'table' and type(req.connection) == 'table' and type(req.search) == 'string', 'bad request')\n"
  "      local ok, berr = request.bind_filter(req, FIELDS)\n"
  "      if ok then assert(ok == true) else refused(berr) end\n"
  "    end\n"
  "  end\n"
  "end\n";

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) L = harness_new(check_source);
  harness_run(L, data, size);
  return 0;
}
