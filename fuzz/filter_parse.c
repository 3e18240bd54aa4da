/* libFuzzer target: biconnector.filter.parse on arbitrary filters, in both
 * styles (key prefixes and operator objects) and both spellings Bitrix24
 * sends (a JSON body, a form body with filter[...] keys). parse answers an
 * AST or nil, "filter...: why"; an AST must then match rows (a boolean) and
 * write SQL for every named dialect (the engines' own: sqlite, postgres, mysql;
 * epoch-stored dates may refuse, by raising the
 * documented "cannot be written in SQL").
 * Build: fuzz/build.sh filter_parse; run: fuzz/run.sh filter_parse [SECONDS]. */
#include "lua_harness.h"

static const char *const check_source =
  "local json = require 'biconnector.json'\n"
  "local form = require 'biconnector.form'\n"
  "local filter = require 'biconnector.connector.filter'\n"
  "local null = require('biconnector.core').null\n"
  "local FIELDS = { { code = 'ID', type = 'int' }, { code = 'TITLE', type = 'string' },\n"
  "  { code = 'AMOUNT', type = 'double' }, { code = 'CLOSED', type = 'datetime' },\n"
  "  { code = 'DAY', type = 'date' }, { code = 'NOTE', type = 'mystery' } }\n"
  "local ROWS = { { ID = 1, TITLE = 'Big Deal_1', AMOUNT = 10.5, CLOSED = '2025-05-31 17:01:55', DAY = '2025-05-31', NOTE = 'x' },\n"
  "  { ID = null, TITLE = null, AMOUNT = null, CLOSED = null, DAY = null },\n"
  "  { ID = -7, TITLE = '', AMOUNT = 0, CLOSED = '31.05.2025', DAY = 'not a date', NOTE = 5 }, {} }\n"
  "local function try(obj)\n"
  "  local ast, err = filter.parse(obj, FIELDS)\n"
  "  if ast == nil then\n"
  "    assert(err == nil or (type(err) == 'string' and err:find('^filter')), 'bad error: ' .. tostring(err))\n"
  "    return\n"
  "  end\n"
  "  assert(type(ast) == 'table' and ast.kind == 'group', 'not a group')\n"
  "  for _, row in ipairs(ROWS) do assert(type(filter.match(ast, row)) == 'boolean', 'match: not a boolean') end\n"
  "  for _, dialect in ipairs({ 'sqlite', 'postgres', 'mysql' }) do\n"
  "    local sql, params = filter.to_sql(ast, { dialect = dialect })\n"
  "    assert(type(sql) == 'string' and type(params) == 'table', 'to_sql: no SQL')\n"
  "    local ok, e = pcall(filter.to_sql, ast, { dialect = dialect, dates = 'epoch' })\n"
  "    assert(ok or tostring(e):find('cannot be written in SQL', 1, true), e)\n"
  "  end\n"
  "end\n"
  "return function(text)\n"
  "  local obj = json.decode(text)\n"
  "  if type(obj) == 'table' then try(obj) end\n"
  "  local body = form.decode(text)\n"
  "  if type(body) == 'table' then try(body.filter ~= nil and body.filter or body) end\n"
  "end\n";

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) L = harness_new(check_source);
  harness_run(L, data, size);
  return 0;
}
