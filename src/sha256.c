/* core.sha256(data) -> the SHA-256 digest of a string, as 64 hex digits
 * (FIPS 180-4). For cache keys made from connection values: the values are
 * never kept, only their digest, and a collision cannot hand one
 * connection's cached answer to another. */
#include "bic.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nettle/sha2.h>

/* The digest is nettle's (the library GnuTLS is built on, a dependency of
 * the core already): its SHA-256 uses the CPU's SHA instructions where it
 * has them, about ten times the hand-written one this file had (issue 25:
 * the cache key of every cached /table_list and /table_description). */
typedef struct sha256_ctx hash_ctx;

static void hash_init(hash_ctx *c) { sha256_init(c); }

static void hash_update(hash_ctx *c, const void *data, size_t n) {
  sha256_update(c, n, (const uint8_t *)data);
}

/* The digest as 64 hex digits (and a NUL) into hex. */
static void hash_final(hash_ctx *c, char hex[65]) {
  static const char digits[] = "0123456789abcdef";
  uint8_t d[SHA256_DIGEST_SIZE];
  size_t i;
  sha256_digest(c, SHA256_DIGEST_SIZE, d);
  for (i = 0; i < SHA256_DIGEST_SIZE; i++) {
    hex[2 * i] = digits[d[i] >> 4];
    hex[2 * i + 1] = digits[d[i] & 15];
  }
  hex[64] = '\0';
}

static int l_sha256(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  hash_ctx c;
  char hex[65];
  hash_init(&c);
  hash_update(&c, s, len);
  hash_final(&c, hex);
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
  int value; /* the stack index of its value */
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
static void feed_count(hash_ctx *c, char lead, size_t n) {
  char text[32];
  size_t i = sizeof text;
  text[--i] = ':';
  do {
    text[--i] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);
  if (lead) text[--i] = lead;
  hash_update(c, text + i, sizeof text - i);
}

/* tag, length, ":", text */
static void feed_text(hash_ctx *c, char tag, const char *s, size_t len) {
  feed_count(c, tag, len);
  hash_update(c, s, len);
}

static int feed_value(lua_State *L, hash_ctx *c, int idx, int depth);

/* The table at idx: "{" n ":" then each key and its value in key order, "}".
 * Each value is left on the stack as lua_next gives it (one pass over the
 * table, no key pushed again and looked up: issue 25), the keys' texts held
 * by the table itself. */
static int feed_table(lua_State *L, hash_ctx *c, int idx, int depth) {
  key_item small[KEY_SMALL], *items = small;
  size_t n = 0, i;
  int values;
  if (depth > KEY_DEPTH || !lua_checkstack(L, 4)) return 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    n++;
  }
  if (n > KEY_SMALL) items = (key_item *)lua_newuserdata(L, n * sizeof *items);
  if (n > (size_t)INT_MAX - 8 || !lua_checkstack(L, (int)n + 4)) {
    if (items != small) lua_pop(L, 1);
    return 0;
  }
  values = lua_gettop(L); /* the values at values + 1 .. values + n, in lua_next's order */
  i = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) { /* ... values, key, value */
    key_item *k = &items[i];
    lua_insert(L, -2); /* ... values, value, key: the next lua_next's key */
    k->type = lua_type(L, -1);
    k->s = NULL;
    k->len = 0;
    k->num = 0;
    k->is_int = 0;
    k->value = values + (int)++i;
    if (k->type == LUA_TSTRING) {
      k->s = lua_tolstring(L, -1, &k->len);
    } else if (k->type == LUA_TNUMBER) {
      k->num = lua_tonumber(L, -1);
#if BIC_HAS_INTEGERS
      k->is_int = lua_isinteger(L, -1);
#endif
      if (!(k->num >= -9007199254740992.0 && k->num <= 9007199254740992.0)) {
        lua_settop(L, values - (items != small));
        return 0;
      }
    } else if (k->type == LUA_TBOOLEAN) {
      k->num = lua_toboolean(L, -1);
    } else {
      lua_settop(L, values - (items != small));
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
    if (k->type == LUA_TSTRING) { /* as feed_value writes a string */
      feed_text(c, 's', k->s, k->len);
      ok = 1;
    } else {
#if BIC_HAS_INTEGERS
      if (k->type == LUA_TNUMBER && k->is_int) lua_pushinteger(L, (lua_Integer)k->num);
      else
#endif
      if (k->type == LUA_TNUMBER) lua_pushnumber(L, (lua_Number)k->num);
      else lua_pushboolean(L, (int)k->num);
      ok = feed_value(L, c, lua_gettop(L), depth); /* the key */
      lua_pop(L, 1);
    }
    ok = ok && feed_value(L, c, k->value, depth); /* its value */
    if (!ok) {
      lua_settop(L, values - (items != small));
      return 0;
    }
  }
  hash_update(c, "}", 1);
  lua_settop(L, values - (items != small));
  return 1;
}

/* One value as cache.lua's canonical writes it; 0 when it cannot here. */
static int feed_value(lua_State *L, hash_ctx *c, int idx, int depth) {
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
  hash_ctx c;
  char key[10 + 65];
  int i;
  lua_settop(L, 4);
  hash_init(&c);
  hash_update(&c, "{4:", 3);
  for (i = 1; i <= 4; i++) {
    hash_update(&c, parts[i - 1], 4);
    if (!feed_value(L, &c, i, 0)) {
      lua_pushnil(L);
      return 1;
    }
  }
  hash_update(&c, "}", 1);
  memcpy(key, "bic:cache:", 10);
  hash_final(&c, key + 10);
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
