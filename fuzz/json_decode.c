/* libFuzzer target: biconnector.json.decode on arbitrary bytes. What decodes
 * must encode, and the encoding must decode to an equal value (same types,
 * same array markers); what fails must say where. Sorted and indented
 * encodings and a small nesting limit are exercised too.
 * Build: fuzz/build.sh json_decode; run: fuzz/run-json.sh [SECONDS]. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "../src/bic.h"

static lua_State *L;

static const char *const check_source =
  "local json = ...\n"
  "local function same(a, b)\n"
  "  if type(a) ~= type(b) then return false end\n"
  "  if type(a) == 'number' then return a == b and math.type(a) == math.type(b) end\n"
  "  if type(a) ~= 'table' then return a == b end\n"
  "  if getmetatable(a) ~= getmetatable(b) then return false end\n"
  "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
  "  for k in pairs(b) do if a[k] == nil then return false end end\n"
  "  return true\n"
  "end\n"
  "local position = 'at line %d+, column %d+ %(byte offset %d+%)$'\n"
  "return function(text)\n"
  "  local v, err = json.decode(text)\n"
  "  if v == nil then\n"
  "    assert(type(err) == 'string' and err:find(position), err)\n"
  "  else\n"
  "    for _, opts in ipairs({ {}, { sort_keys = true, indent = 1 } }) do\n"
  "      local out, eerr = json.encode(v, opts)\n"
  "      assert(out, eerr)\n"
  "      local again, derr = json.decode(out)\n"
  "      assert(again ~= nil, derr)\n"
  "      assert(same(v, again), 'round trip differs: ' .. out)\n"
  "    end\n"
  "  end\n"
  "  local w, werr = json.decode(text, { max_depth = 3, array_mt = false })\n"
  "  assert(w ~= nil or type(werr) == 'string')\n"
  "  if v == nil then assert(w == nil) end\n"
  "end\n";

static void setup(void) {
  L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  if (luaL_loadstring(L, check_source) != LUA_OK) { fprintf(stderr, "%s\n", lua_tostring(L, -1)); abort(); }
  lua_newtable(L);
  bic_open_json(L);
  lua_getfield(L, -1, "json");
  lua_remove(L, -2);
  lua_call(L, 1, 1);
  lua_setglobal(L, "check");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned long runs;
  if (L == NULL) setup();
  lua_getglobal(L, "check");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "check failed: %s\n", lua_tostring(L, -1));
    abort();
  }
  if (++runs % 1000 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
