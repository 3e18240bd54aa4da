/* Module entry of the biconnector C core: version, null, and the parts. */
#include "bic.h"
#include "process.h"

#if LUA_VERSION_NUM == 501 && !defined(BIC_LUAJIT)
void bic_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup + 1, "too many upvalues");
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
#endif

BIC_EXPORT int luaopen_biconnector_core(lua_State *L) {
  lua_newtable(L);
  lua_pushliteral(L, BIC_VERSION);
  lua_setfield(L, -2, "version");
  /* The same value as cjson.null: a light userdata holding NULL. */
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
#if defined(BIC_LUAJIT)
  lua_pushliteral(L, "luajit");
#else
  lua_pushliteral(L, LUA_VERSION);
#endif
  lua_setfield(L, -2, "runtime");
  bic_open_json(L);
  bic_open_form(L);
  bic_open_rows(L);
  bic_open_http_client(L);
  bic_open_http_server(L);
  bic_open_sql(L);
  bic_open_sha256(L);
  bic_open_process(L);
  bic_open_os(L);
  return 1;
}
