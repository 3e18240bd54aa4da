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

static int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t bic_percent_decode(char *out, const char *s, size_t n, int plus_is_space) {
  size_t i, o = 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '+' && plus_is_space) {
      c = ' ';
    } else if (c == '%' && i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 &&
               hexval((unsigned char)s[i + 2]) >= 0) {
      c = (unsigned char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
      i += 2;
    }
    out[o++] = (char)c;
  }
  out[o] = '\0';
  return o;
}
