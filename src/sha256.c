/* core.sha256(data) -> the SHA-256 digest of a string, as 64 hex digits
 * (FIPS 180-4). For cache keys made from connection values: the values are
 * never kept, only their digest, and a collision cannot hand one
 * connection's cached answer to another. */
#include "bic.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const uint32_t K[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(uint32_t h[8], const unsigned char *p) {
  uint32_t w[64], a, b, c, d, e, f, g, hh;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) | ((uint32_t)p[4 * i + 2] << 8) |
           (uint32_t)p[4 * i + 3];
  for (i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
  for (i = 0; i < 64; i++) {
    uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

/* Streaming: init, update any number of times, then the hex digest. */
typedef struct sha256_ctx {
  uint32_t h[8];
  unsigned char buf[64];
  size_t used;     /* bytes in buf */
  uint64_t length; /* bytes so far */
} sha256_ctx;

static void sha256_init(sha256_ctx *c) {
  static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
  memcpy(c->h, h0, sizeof h0);
  c->used = 0;
  c->length = 0;
}

static void sha256_update(sha256_ctx *c, const void *data, size_t n) {
  const unsigned char *p = (const unsigned char *)data;
  c->length += n;
  if (c->used > 0) {
    size_t take = 64 - c->used < n ? 64 - c->used : n;
    memcpy(c->buf + c->used, p, take);
    c->used += take;
    p += take;
    n -= take;
    if (c->used < 64) return;
    block(c->h, c->buf);
    c->used = 0;
  }
  for (; n >= 64; p += 64, n -= 64) block(c->h, p);
  if (n > 0) memcpy(c->buf, p, n);
  c->used = n;
}

/* The digest as 64 hex digits (and a NUL) into hex. */
static void sha256_final(sha256_ctx *c, char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  uint64_t bits = c->length * 8;
  unsigned char pad[72];
  size_t padlen = (c->used < 56 ? 56 : 120) - c->used, i;
  int k;
  memset(pad, 0, sizeof pad);
  pad[0] = 0x80;
  for (k = 0; k < 8; k++) pad[padlen + (size_t)k] = (unsigned char)(bits >> (56 - 8 * k));
  sha256_update(c, pad, padlen + 8);
  for (i = 0; i < 32; i++) {
    unsigned char byte = (unsigned char)(c->h[i / 4] >> (24 - 8 * (i % 4)));
    hex[2 * i] = digits[byte >> 4];
    hex[2 * i + 1] = digits[byte & 15];
  }
  hex[64] = '\0';
}

static int l_sha256(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  sha256_ctx c;
  char hex[65];
  sha256_init(&c);
  sha256_update(&c, s, len);
  sha256_final(&c, hex);
  lua_pushlstring(L, hex, 64);
  return 1;
}

/* ---- the cache key (biconnector.connector.cache) ------------------------------
 *
 * core.cache_key(namespace, endpoint, connection, arg) -> "bic:cache:<hex>",
 * the SHA-256 of the canonical text cache.lua documents, fed to the hash
 * piece by piece (no text is made); or nil when a value is not one this
 * writes exactly as Lua's tostring would (anything but strings, numbers,
 * booleans and tables of them; a number key beyond 2^53; more than 32 levels):
 * cache.lua then writes the text itself. */

#define KEY_DEPTH 32
#define KEY_SMALL 16

typedef struct key_item {
  int type; /* LUA_TBOOLEAN < LUA_TNUMBER < LUA_TSTRING: the order of their type names too */
  double num;
  int is_int; /* a Lua 5.4 integer key (written and looked up as one) */
  const char *s;
  size_t len;
} key_item;

/* Lua's key order of cache.lua: by type name (boolean, number, string), then
 * false before true, numbers by value, strings bytewise (strcoll in the C locale). */
static int key_less(const key_item *a, const key_item *b) {
  if (a->type != b->type) return a->type < b->type;
  if (a->type == LUA_TSTRING) {
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->s, b->s, n);
    return c != 0 ? c < 0 : a->len < b->len;
  }
  return a->num < b->num;
}

static int key_cmp(const void *pa, const void *pb) {
  const key_item *a = (const key_item *)pa, *b = (const key_item *)pb;
  return key_less(a, b) ? -1 : key_less(b, a) ? 1 : 0;
}

/* lead (one byte, or none when 0), the decimal n, then ":" */
static void feed_count(sha256_ctx *c, char lead, size_t n) {
  char text[32];
  size_t i = sizeof text;
  text[--i] = ':';
  do {
    text[--i] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);
  if (lead) text[--i] = lead;
  sha256_update(c, text + i, sizeof text - i);
}

/* tag, length, ":", text */
static void feed_text(sha256_ctx *c, char tag, const char *s, size_t len) {
  feed_count(c, tag, len);
  sha256_update(c, s, len);
}

static int feed_value(lua_State *L, sha256_ctx *c, int idx, int depth);

/* The table at idx: "{" n ":" then each key and its value in key order, "}". */
static int feed_table(lua_State *L, sha256_ctx *c, int idx, int depth) {
  key_item small[KEY_SMALL], *items = small;
  size_t n = 0, i;
  if (depth > KEY_DEPTH || !lua_checkstack(L, 4)) return 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    n++;
  }
  if (n > KEY_SMALL) items = (key_item *)lua_newuserdata(L, n * sizeof *items);
  i = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    key_item *k = &items[i++];
    lua_pop(L, 1);
    k->type = lua_type(L, -1);
    k->s = NULL;
    k->len = 0;
    k->num = 0;
    k->is_int = 0;
    if (k->type == LUA_TSTRING) {
      k->s = lua_tolstring(L, -1, &k->len);
    } else if (k->type == LUA_TNUMBER) {
      k->num = lua_tonumber(L, -1);
#if BIC_HAS_INTEGERS
      k->is_int = lua_isinteger(L, -1);
#endif
      if (!(k->num >= -9007199254740992.0 && k->num <= 9007199254740992.0)) {
        lua_pop(L, 1);
        return 0;
      }
    } else if (k->type == LUA_TBOOLEAN) {
      k->num = lua_toboolean(L, -1);
    } else {
      lua_pop(L, 1);
      return 0;
    }
  }
  if (n <= KEY_SMALL) {
    size_t j;
    for (j = 1; j < n; j++) { /* insertion: few keys */
      key_item k = items[j];
      size_t m = j;
      for (; m > 0 && key_less(&k, &items[m - 1]); m--) items[m] = items[m - 1];
      items[m] = k;
    }
  } else {
    qsort(items, n, sizeof *items, key_cmp);
  }
  feed_count(c, '{', n);
  for (i = 0; i < n; i++) {
    key_item *k = &items[i];
    int ok;
    if (k->type == LUA_TSTRING) lua_pushlstring(L, k->s, k->len);
#if BIC_HAS_INTEGERS
    else if (k->type == LUA_TNUMBER && k->is_int) lua_pushinteger(L, (lua_Integer)k->num);
#endif
    else if (k->type == LUA_TNUMBER) lua_pushnumber(L, (lua_Number)k->num);
    else lua_pushboolean(L, (int)k->num);
    ok = feed_value(L, c, lua_gettop(L), depth); /* the key */
    lua_rawget(L, idx);
    ok = ok && feed_value(L, c, lua_gettop(L), depth); /* its value */
    lua_pop(L, 1);
    if (!ok) return 0;
  }
  sha256_update(c, "}", 1);
  if (items != small) lua_pop(L, 1);
  return 1;
}

/* One value as cache.lua's canonical writes it; 0 when it cannot here. */
static int feed_value(lua_State *L, sha256_ctx *c, int idx, int depth) {
  size_t len;
  const char *s;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &len);
    feed_text(c, 's', s, len);
    return 1;
  case LUA_TNUMBER: /* tostring's text: the runtime's own conversion, of a copy */
    lua_pushvalue(L, idx);
    s = lua_tolstring(L, -1, &len);
    feed_text(c, 'n', s, len);
    lua_pop(L, 1);
    return 1;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx)) feed_text(c, 'b', "true", 4);
    else feed_text(c, 'b', "false", 5);
    return 1;
  case LUA_TTABLE:
    return feed_table(L, c, idx, depth + 1);
  default:
    return 0;
  }
}

static int l_cache_key(lua_State *L) {
  static const char *const parts[4] = { "n1:1", "n1:2", "n1:3", "n1:4" };
  sha256_ctx c;
  char key[10 + 65];
  int i;
  lua_settop(L, 4);
  sha256_init(&c);
  sha256_update(&c, "{4:", 3);
  for (i = 1; i <= 4; i++) {
    sha256_update(&c, parts[i - 1], 4);
    if (!feed_value(L, &c, i, 0)) {
      lua_pushnil(L);
      return 1;
    }
  }
  sha256_update(&c, "}", 1);
  memcpy(key, "bic:cache:", 10);
  sha256_final(&c, key + 10);
  lua_pushlstring(L, key, 74);
  return 1;
}

int bic_open_sha256(lua_State *L) {
  lua_pushcfunction(L, l_sha256);
  lua_setfield(L, -2, "sha256");
  lua_pushcfunction(L, l_cache_key);
  lua_setfield(L, -2, "cache_key");
  return 0;
}
