/* The Lua C API helpers every part of the core uses, one of each: a class (a
 * registry metatable with methods and finalizers), an object of a class, and
 * the readers of an options table with one contract (nil: the default; a
 * wrong type or a number out of range: an error naming the option). */
#include <string.h>

#include "bic.h"

void bic_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc, lua_CFunction close,
               lua_CFunction tostring) {
  if (luaL_newmetatable(L, name)) {
    if (methods != NULL) {
      lua_newtable(L);
      luaL_setfuncs(L, methods, 0);
      lua_setfield(L, -2, "__index");
    }
    if (gc != NULL) {
      lua_pushcfunction(L, gc);
      lua_setfield(L, -2, "__gc");
    }
    if (close != NULL) {
      lua_pushcfunction(L, close);
      lua_setfield(L, -2, "__close");
    }
    if (tostring != NULL) {
      lua_pushcfunction(L, tostring);
      lua_setfield(L, -2, "__tostring");
    }
  }
  lua_pop(L, 1);
}

void *bic_object(lua_State *L, size_t size, const char *name) {
  void *p = lua_newuserdata(L, size);
  memset(p, 0, size);
  luaL_getmetatable(L, name);
  lua_setmetatable(L, -2);
  return p;
}

/* ---- options ---------------------------------------------------------------- */

const char *bic_opt_string(lua_State *L, int t, const char *key, const char *def, size_t *len) {
  lua_getfield(L, t, key);
  if (lua_isnil(L, -1)) {
    if (len != NULL) *len = def != NULL ? strlen(def) : 0;
    return def;
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "option '%s' is a %s, expected a string", key, luaL_typename(L, -1));
  return lua_tolstring(L, -1, len);
}

double bic_opt_number(lua_State *L, int t, const char *key, double def, double lo, double hi) {
  double v = def;
  lua_getfield(L, t, key);
  if (lua_type(L, -1) == LUA_TNUMBER) v = (double)lua_tonumber(L, -1);
  else if (!lua_isnil(L, -1)) luaL_error(L, "option '%s' is a %s, expected a number", key, luaL_typename(L, -1));
  lua_pop(L, 1);
  if (!(v >= lo && v <= hi)) luaL_error(L, "option '%s' is %f, expected %f to %f", key, v, lo, hi);
  return v;
}

int bic_opt_boolean(lua_State *L, int t, const char *key, int def) {
  int v = def;
  lua_getfield(L, t, key);
  if (lua_isboolean(L, -1)) v = lua_toboolean(L, -1);
  else if (!lua_isnil(L, -1)) luaL_error(L, "option '%s' is a %s, expected a boolean", key, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}
