/* Placeholder: this part of the core is not built yet. */
#include "bic.h"

int bic_open_http_server(lua_State *L) {
  (void)L;
  return 0;
}
