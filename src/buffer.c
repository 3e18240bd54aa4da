#include <stdlib.h>
#include "buffer.h"

#define BUFFER_MT "biconnector.buffer"

void bic_buffer_init(bic_buffer *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void bic_buffer_free(bic_buffer *b) {
  free(b->data);
  bic_buffer_init(b);
}

int bic_buffer_grow(bic_buffer *b, size_t n) {
  size_t need, cap;
  char *p;
  if (n > (size_t)-1 - b->len) return -1;
  need = b->len + n;
  if (need <= b->cap) return 0;
  cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (cap > (size_t)-1 / 2) { cap = need; break; }
    cap *= 2;
  }
  p = realloc(b->data, cap);
  if (p == NULL) return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

static int buffer_gc(lua_State *L) {
  bic_buffer_free((bic_buffer *)luaL_checkudata(L, 1, BUFFER_MT));
  return 0;
}

bic_buffer *bic_buffer_push(lua_State *L) {
  bic_buffer *b = (bic_buffer *)lua_newuserdata(L, sizeof(bic_buffer));
  bic_buffer_init(b);
  if (luaL_newmetatable(L, BUFFER_MT)) {
    lua_pushcfunction(L, buffer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return b;
}
