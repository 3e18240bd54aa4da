/* The few shims that let one C source serve Lua 5.1/LuaJIT and Lua 5.4. */
#ifndef BIC_COMPAT_H
#define BIC_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM == 501 && defined(luaL_newlibtable)
/* LuaJIT 2.1 (the OpenResty branch) declares the 5.2 helpers in its lauxlib.h. */
#define BIC_LUAJIT 1
#endif

#if LUA_VERSION_NUM == 501
/* Plain Lua 5.1 lacks luaL_setfuncs and friends; our own name avoids a clash. */
#if !defined(BIC_LUAJIT)
void bic_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
#define luaL_setfuncs bic_compat_setfuncs
#define luaL_newlibtable(L, l) lua_createtable(L, 0, sizeof(l) / sizeof((l)[0]) - 1)
#define luaL_newlib(L, l) (luaL_newlibtable(L, l), luaL_setfuncs(L, l, 0))
#endif
#define lua_rawlen(L, i) lua_objlen(L, (i))
#define bic_isinteger(L, i) 0
#define BIC_HAS_INTEGERS 0
#else
#define bic_isinteger(L, i) lua_isinteger(L, (i))
#define BIC_HAS_INTEGERS 1
#endif

/* lua_rawgeti takes an int index on 5.1 and a lua_Integer from 5.3 on. */
#if LUA_VERSION_NUM >= 503
#define bic_rawgeti(L, idx, n) ((void)lua_rawgeti(L, (idx), (lua_Integer)(n)))
#else
#define bic_rawgeti(L, idx, n) lua_rawgeti(L, (idx), (int)(n))
#endif

/* lua_rawgetp/lua_rawsetp exist from 5.2 on; 5.1 uses a light userdata key. */
#if LUA_VERSION_NUM == 501
#define bic_rawgetp(L, idx, p) (lua_pushlightuserdata(L, (void *)(p)), lua_rawget(L, (idx) < 0 && (idx) > LUA_REGISTRYINDEX ? (idx) - 1 : (idx)))
#define bic_rawsetp(L, idx, p) (lua_pushlightuserdata(L, (void *)(p)), lua_insert(L, -2), lua_rawset(L, (idx) < 0 && (idx) > LUA_REGISTRYINDEX ? (idx) - 1 : (idx)))
#else
#define bic_rawgetp(L, idx, p) ((void)lua_rawgetp(L, (idx), (p)))
#define bic_rawsetp(L, idx, p) lua_rawsetp(L, (idx), (p))
#endif

/* A 64-bit integer from a database as a Lua value. Lua 5.3 on: an integer.
 * LuaJIT: a number when the double holds it exactly (within 2^53), else its
 * decimal text, which the row encoder reads back exactly for an int field
 * (a double would serve 9007199254740993 as 9007199254740992). */
#if BIC_HAS_INTEGERS
#define bic_push_int64(L, i) lua_pushinteger(L, (lua_Integer)(i))
#else
#include <stdio.h>
static inline void bic_push_int64(lua_State *L, long long i) {
  if (i > 9007199254740992LL || i < -9007199254740992LL) {
    char text[24];
    int n = snprintf(text, sizeof text, "%lld", i);
    lua_pushlstring(L, text, (size_t)n);
  } else {
    lua_pushnumber(L, (lua_Number)i);
  }
}
#endif

#endif
