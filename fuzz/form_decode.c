/* libFuzzer target: biconnector.form.decode on arbitrary bodies, with the
 * default limits and with tight ones (and bracket_equals), then encode of
 * what came back.
 * Build: fuzz/build.sh form_decode; run: fuzz/run-form.sh [SECONDS]. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "../src/bic.h"

static lua_State *L;

static void setup(void) {
  L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  lua_newtable(L);
  bic_open_form(L);
  lua_getfield(L, -1, "form");
  lua_setglobal(L, "form");
  lua_pop(L, 1);
  /* Decoding must give a table or nil, err; the table must encode again. */
  if (luaL_dostring(L,
        "check = function(body, opts)\n"
        "  local t, err = form.decode(body, opts)\n"
        "  if t == nil then assert(type(err) == 'string') return end\n"
        "  assert(type(t) == 'table')\n"
        "  local s = form.encode(t)\n"
        "  assert(form.decode(s, { max_vars = 1e9 }))\n"
        "end") != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int tight;
  if (L == NULL) setup();
  for (tight = 0; tight < 2; tight++) {
    lua_getglobal(L, "check");
    lua_pushlstring(L, (const char *)data, size);
    if (tight) {
      lua_newtable(L);
      lua_pushinteger(L, 5);
      lua_setfield(L, -2, "max_vars");
      lua_pushinteger(L, 3);
      lua_setfield(L, -2, "max_depth");
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "bracket_equals");
    } else {
      lua_pushnil(L);
    }
    if (lua_pcall(L, 2, 0, 0) != 0) {
      const char *msg = lua_tostring(L, -1);
      fprintf(stderr, "check failed: %s\n", msg ? msg : "?");
      abort();
    }
  }
  lua_settop(L, 0);
  return 0;
}
