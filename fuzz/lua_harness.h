/* Shared by the fuzz targets that drive the Lua modules (filter, request):
 * a Lua 5.4 state with the C core's json and form as package.preload
 * "biconnector.core" (the parts those modules use), lua/ of the source tree
 * (BIC_TOP, set by fuzz/build.sh) on package.path, and a checker function
 * built from Lua source. A Lua error escaping the checker is a crash: the
 * modules answer bad input with nil, err; they raise only on misuse.
 * The Lua library is not instrumented, so a line hook feeds libFuzzer the
 * Lua side's coverage: each (previous line, line) pair bumps one of its
 * extra counters, as the edges of compiled code do. */
#ifndef BIC_FUZZ_LUA_HARNESS_H
#define BIC_FUZZ_LUA_HARNESS_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "../src/bic.h"

#ifndef BIC_TOP
#error "BIC_TOP (the source tree) must be defined: build with fuzz/build.sh"
#endif

#define HARNESS_COUNTERS 65536
__attribute__((section("__libfuzzer_extra_counters")))
static uint8_t harness_counters[HARNESS_COUNTERS];

static void harness_line_hook(lua_State *L, lua_Debug *ar) {
  static uintptr_t previous;
  uintptr_t here;
  if (!lua_getinfo(L, "S", ar)) return;
  here = ((uintptr_t)ar->source * 2654435761u) ^ ((uintptr_t)(unsigned)ar->currentline * 40503u);
  harness_counters[(here ^ (previous >> 1)) % HARNESS_COUNTERS]++;
  previous = here;
}

static int harness_open_core(lua_State *L) {
  lua_newtable(L);
  lua_pushliteral(L, BIC_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  bic_open_json(L);
  bic_open_form(L);
  return 1;
}

/* -> a state whose global `check` is the function `source` returns */
static lua_State *harness_new(const char *source) {
  lua_State *L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, harness_open_core);
  lua_setfield(L, -2, "biconnector.core");
  lua_pop(L, 1);
  lua_pushliteral(L, BIC_TOP "/lua/?.lua;" BIC_TOP "/lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_loadstring(L, source) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "fuzz harness: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_setglobal(L, "check");
  lua_sethook(L, harness_line_hook, LUA_MASKLINE, 0);
  return L;
}

static void harness_run(lua_State *L, const uint8_t *data, size_t size) {
  static unsigned long runs;
  lua_getglobal(L, "check");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "check failed: %s\n", lua_tostring(L, -1));
    abort();
  }
  if (++runs % 1000 == 0) lua_gc(L, LUA_GCCOLLECT, 0);
}
#endif
