/* application/x-www-form-urlencoded with PHP bracket notation: decode as PHP's
 * parse_str does, encode as PHP's http_build_query does (docs/form.md). */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "bic.h"
#include "buffer.h"

#define FORM_MAX_VARS 1000
#define FORM_MAX_DEPTH 64
/* A name or value shorter than this is decoded on the C stack, and the first
 * FORM_SMALL_NODES arrays' bookkeeping lives there too: a small body (the
 * /check Bitrix24 sends) allocates no buffer and no userdata (issue 25). */
#define FORM_SMALL 256
#define FORM_SMALL_NODES 16
/* Bracket levels encode writes: as many as decode reads by default, so that
 * whatever decode gives back can be encoded again. */
#define FORM_ENCODE_MAX_DEPTH FORM_MAX_DEPTH

/* ------------------------------------------------------------------ decode */

/* What PHP keeps per array and Lua tables lack: the insertion-order facts that
 * tell a list (keys 0..n-1 in order) and the next index `a[]=` appends at. */
typedef struct form_node {
  long long next_free; /* valid when has_next */
  size_t count;        /* keys inserted so far */
  int has_next;        /* PHP 8.2+: an array without integer keys appends at 0 */
  int is_list;         /* every key so far was integer == its position */
} form_node;

typedef struct form_key {
  const char *s; /* NULL: append (`[]`) */
  size_t len;
} form_key;

typedef struct form_decoder {
  lua_State *L;
  /* stack index of the nodes table: the first FORM_SMALL_NODES node tables at
   * 1..n_small (their bookkeeping in small[], found by the table's address in
   * small_at[]), later ones as keys whose values are light userdata (their
   * bookkeeping in blocks of 64, themselves kept alive as keys) */
  int nodes;         /* stack slot of the table of nodes past the small ones (nil until one comes) */
  int small_base;    /* first of FORM_SMALL_NODES stack slots holding the small nodes' tables */
  form_node *small;
  const void *small_at[FORM_SMALL_NODES];
  size_t n_small;
  form_node *free;   /* where the next node's bookkeeping goes past the small ones */
  size_t n_free;     /* how many fit there */
  bic_buffer *name;  /* a decoded variable name of FORM_SMALL bytes or more (made on first need) */
  bic_buffer *value; /* a decoded value alike */
  form_key *keys;    /* path of the current variable, max_depth + 1 entries */
  long max_vars;
  long max_depth;
  int bracket_equals; /* a raw `=` inside brackets belongs to the name */
} form_decoder;

/* PHP's urldecode (`+` is a space, `%XX` a byte; a malformed escape stays as
 * is) of s[0..n), into small when it fits, else into *big (a buffer pushed on
 * the stack the first time one is needed). Returns the decoded text (NUL
 * ended, its length in *len), or NULL when out of memory. */
static char *url_decode(lua_State *L, char *small, bic_buffer **big, const char *s, size_t n, size_t *len) {
  char *out = small;
  if (n >= FORM_SMALL) {
    if (*big == NULL) *big = bic_buffer_push(L);
    (*big)->len = 0;
    if (bic_buffer_grow(*big, n + 1) != 0) return NULL;
    out = (*big)->data;
  }
  *len = bic_percent_decode(out, s, n, 1);
  return out;
}

/* PHP's symbol-table rule: a canonical decimal integer ("0", "-5", not "05",
 * "+1", "-0") in the integer range is an integer key. Under LuaJIT numbers are
 * doubles, so integers beyond 2^53 stay strings there. */
static int integer_key(const char *s, size_t n, long long *out) {
  size_t i = 0;
  int neg = 0;
  unsigned long long v = 0, limit;
  if (n == 0) return 0;
  if (s[0] == '-') {
    neg = 1;
    i = 1;
    if (n == 1) return 0;
  }
  if (s[i] == '0' && n - i > 1) return 0;
  if (s[i] == '0' && neg) return 0;
#if BIC_HAS_INTEGERS
  limit = neg ? (unsigned long long)LLONG_MAX + 1ULL : (unsigned long long)LLONG_MAX;
#else
  limit = 9007199254740992ULL; /* 2^53 */
#endif
  for (; i < n; i++) {
    unsigned d;
    if (s[i] < '0' || s[i] > '9') return 0;
    d = (unsigned)(s[i] - '0');
    if (v > (limit - d) / 10) return 0;
    v = v * 10 + d;
  }
  if (neg) {
    *out = v == (unsigned long long)LLONG_MAX + 1ULL ? LLONG_MIN : -(long long)v;
  } else {
    *out = (long long)v;
  }
  return 1;
}

static void push_integer_key(lua_State *L, long long k) {
#if BIC_HAS_INTEGERS
  lua_pushinteger(L, (lua_Integer)k);
#else
  lua_pushnumber(L, (lua_Number)k);
#endif
}

static void node_init(form_node *node) {
  node->next_free = 0;
  node->count = 0;
  node->has_next = 0;
  node->is_list = 1;
}

/* The table of the nodes past the small ones, made when the first comes (a
 * small body, what every request sends, makes no table for its bookkeeping). */
static void need_nodes(form_decoder *d) {
  lua_State *L = d->L;
  if (!lua_isnil(L, d->nodes)) return;
  lua_newtable(L);
  lua_replace(L, d->nodes);
}

/* A new table at the top of the stack becomes a node with its bookkeeping. */
static void new_node(form_decoder *d) {
  lua_State *L = d->L;
  form_node *node;
  if (d->n_small < FORM_SMALL_NODES) {
    lua_createtable(L, 0, 1); /* one slot: most arrays get a key, and none then grows from nothing */
    node = &d->small[d->n_small];
    d->small_at[d->n_small] = lua_topointer(L, -1);
    lua_pushvalue(L, -1);
    lua_replace(L, d->small_base + (int)d->n_small++);
    node_init(node);
    return;
  }
  need_nodes(d);
  if (d->n_free == 0) {
    size_t n = 64;
    d->free = (form_node *)lua_newuserdata(L, sizeof(form_node) * n);
    d->n_free = n;
    lua_pushboolean(L, 1);
    lua_rawset(L, d->nodes);
  }
  node = d->free++;
  d->n_free--;
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, -1);
  lua_pushlightuserdata(L, node);
  node_init(node);
  lua_rawset(L, d->nodes);
}

static form_node *node_of(form_decoder *d, int idx) {
  form_node *node;
  lua_State *L = d->L;
  const void *at = lua_topointer(L, idx);
  size_t i;
  for (i = 0; i < d->n_small; i++)
    if (d->small_at[i] == at) return &d->small[i];
  if (lua_isnil(L, d->nodes)) return NULL; /* not reached: every table of the result is a node */
  lua_pushvalue(L, idx);
  lua_rawget(L, d->nodes);
  node = (form_node *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return node;
}

/* Record a key newly inserted into node (is_int, k: an integer key). */
static void node_added(form_node *node, int is_int, long long k) {
  if (!is_int || (unsigned long long)k != node->count || k < 0) node->is_list = 0;
  node->count++;
  if (is_int && (!node->has_next || k >= node->next_free)) {
    node->next_free = k < LLONG_MAX ? k + 1 : LLONG_MAX;
    node->has_next = 1;
  }
}

/* Push the Lua key for path element key into table at -1, noting a new key in
 * the node. Returns 0, or -1 when PHP would drop the variable (append after
 * the largest integer). Leaves the key on the stack when it returns 0. */
static int push_key(form_decoder *d, form_key *key, int *is_new) {
  lua_State *L = d->L;
  form_node *node = node_of(d, -1);
  long long k = 0;
  int is_int;
  if (node == NULL) return -1;
  if (key->s == NULL) {
    if (node->has_next && node->next_free == LLONG_MAX) return -1;
    k = node->has_next ? node->next_free : 0;
#if !BIC_HAS_INTEGERS
    if (k > 9007199254740992LL) return -1;
#endif
    push_integer_key(L, k);
    is_int = 1;
  } else if (integer_key(key->s, key->len, &k)) {
    push_integer_key(L, k);
    is_int = 1;
  } else {
    lua_pushlstring(L, key->s, key->len);
    is_int = 0;
  }
  lua_pushvalue(L, -1);
  lua_rawget(L, -3);
  *is_new = lua_isnil(L, -1);
  lua_pop(L, 1);
  if (*is_new) node_added(node, is_int, k);
  return 0;
}

/* Store the value (at the top of the stack) under the path keys[0..n-1], starting at
 * the root table at stack index root. Pops the value. */
static void store(form_decoder *d, int root, size_t n) {
  lua_State *L = d->L;
  size_t i;
  int top = lua_gettop(L);
  int value = top;
  int is_new;
  lua_pushvalue(L, root);
  for (i = 0; i + 1 < n; i++) {
    if (push_key(d, &d->keys[i], &is_new) != 0) goto drop;
    /* stack: ..., node, key */
    if (!is_new) {
      lua_pushvalue(L, -1);
      lua_rawget(L, -3);
      if (lua_istable(L, -1)) { /* descend */
        lua_remove(L, -2);
        lua_remove(L, -2);
        continue;
      }
      lua_pop(L, 1);
    }
    new_node(d); /* a scalar in the way is replaced by an array, as in PHP */
    lua_pushvalue(L, -1);
    lua_insert(L, -4); /* ..., child, node, key, child */
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  if (push_key(d, &d->keys[n - 1], &is_new) != 0) goto drop;
  lua_pushvalue(L, value);
  lua_rawset(L, -3);
drop:
  lua_settop(L, top - 1);
}

/* Split one variable name into its path as PHP's php_register_variable_ex
 * does. Returns the number of keys (0: PHP ignores the variable), or -1 when
 * it nests deeper than max_depth. The name buffer is modified in place. */
static long parse_name(form_decoder *d, char *name, size_t len) {
  char *p = name, *end, *ip;
  long n = 0, level = 0;
  len = strlen(name); /* PHP stops a name at its first NUL byte */
  end = name + len;
  while (*p == ' ') p++;
  for (ip = p; ip < end && *ip != '['; ip++)
    if (*ip == ' ' || *ip == '.') *ip = '_';
  if (ip == p) return 0; /* empty name */
  d->keys[0].s = p;
  d->keys[0].len = (size_t)(ip - p);
  n = 1;
  if (ip == end) return n;
  for (;;) {
    char *index_s, *close;
    if (++level > d->max_depth) return -1;
    ip++;
    index_s = ip;
    if (ip < end && *ip == ' ') ip++; /* PHP reads `[ ]` as `[]` */
    if (ip < end && *ip == ']') {
      d->keys[n].s = NULL;
      d->keys[n].len = 0;
    } else {
      close = memchr(ip, ']', (size_t)(end - ip));
      if (close == NULL) {
        if (n == 1) { /* not an index: the `[` and what follows join the plain name */
          char *q;
          index_s[-1] = '_';
          for (q = index_s; q < end; q++)
            if (*q == ' ' || *q == '.' || *q == '[') *q = '_';
          d->keys[0].len = (size_t)(end - p);
        }
        return n;
      }
      d->keys[n].s = index_s;
      d->keys[n].len = (size_t)(close - index_s);
      ip = close;
    }
    n++;
    ip++;
    if (ip >= end || *ip != '[') return n; /* anything after the last `]` is ignored */
  }
}

/* Turn every node that is a PHP list (keys 0..n-1 in order) into a Lua sequence 1..n. */
static void shift_list(lua_State *L, const form_node *node) {
  size_t i;
  for (i = node->count; i > 0; i--) {
    push_integer_key(L, (long long)i - 1);
    lua_rawget(L, -2);
    lua_rawseti(L, -2, (int)i);
  }
  push_integer_key(L, 0);
  lua_pushnil(L);
  lua_rawset(L, -3);
}

static void shift_lists(form_decoder *d) {
  lua_State *L = d->L;
  size_t i;
  for (i = 0; i < d->n_small; i++) {
    if (!d->small[i].is_list || d->small[i].count == 0) continue;
    lua_pushvalue(L, d->small_base + (int)i);
    shift_list(L, &d->small[i]);
    lua_pop(L, 1);
  }
  if (lua_isnil(L, d->nodes)) return;
  lua_pushnil(L);
  while (lua_next(L, d->nodes) != 0) {
    /* NULL: a small node's entry or a block's */
    const form_node *node = lua_type(L, -1) == LUA_TLIGHTUSERDATA ? (const form_node *)lua_touserdata(L, -1) : NULL;
    lua_pop(L, 1);
    if (node != NULL && node->is_list && node->count > 0) {
      lua_pushvalue(L, -1);
      shift_list(L, node);
      lua_pop(L, 1);
    }
  }
}

/* Where a name that may hold a raw `=` inside brackets ends (option
 * bracket_equals): `filter[>=ID]=5`, written by hand instead of
 * `filter%5B%3E%3DID%5D=5`, is the name `filter[>=ID]`, where PHP ends it at
 * the first `=` (`filter_>`) and the condition silently vanishes. The first
 * `=` of the pair is inside a bracket when no `]` follows the last `[` before
 * it; the name then runs to the next `]=`, if there is one. Linear. */
static const char *name_end(const char *seg, size_t seg_len, const char *eq) {
  const char *p, *last = NULL, *end = seg + seg_len;
  for (p = seg; p < eq; p++)
    if (*p == '[') last = p;
  if (last == NULL) return eq;
  for (p = last + 1; p < eq; p++)
    if (*p == ']') return eq;
  for (p = eq + 1; p + 1 < end; p++)
    if (p[0] == ']' && p[1] == '=') return p + 1;
  return eq;
}

/* The limit option `name` whose value is at the top of the stack. */
static long opt_limit(lua_State *L, const char *name) {
  lua_Number x;
  if (!lua_isnumber(L, -1)) luaL_error(L, "form.decode: option %s must be a number", name);
  x = lua_tonumber(L, -1);
  if (!(x >= 0 && x <= 1e9) || x != floor(x))
    luaL_error(L, "form.decode: option %s must be an integer from 0 to 1e9", name);
  return (long)x;
}

/* The options table at opts, read in one walk (no key string is made, as
 * lua_getfield makes one per name: small bodies are decoded per request). */
static void read_options(form_decoder *d, int opts) {
  lua_State *L = d->L;
  d->max_vars = FORM_MAX_VARS;
  d->max_depth = FORM_MAX_DEPTH;
  d->bracket_equals = 0;
  if (!lua_istable(L, opts)) return;
  lua_pushnil(L);
  while (lua_next(L, opts) != 0) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      if (strcmp(k, "max_vars") == 0) d->max_vars = opt_limit(L, "max_vars");
      else if (strcmp(k, "max_depth") == 0) d->max_depth = opt_limit(L, "max_depth");
      else if (strcmp(k, "bracket_equals") == 0) d->bracket_equals = lua_toboolean(L, -1);
      else luaL_error(L, "form.decode: unknown option '%s'", k);
    } else {
      /* the type first: lua_tostring makes a number key text in place */
      const char *type_name;
      lua_pop(L, 1); /* the value */
      type_name = luaL_typename(L, -1);
      luaL_error(L, "form.decode: unknown option %s (a %s key)",
                 lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : "of another type", type_name);
    }
    lua_pop(L, 1);
  }
}

static void quote_name(luaL_Buffer *b, const char *s, size_t n) {
  size_t i;
  if (n > 60) n = 60;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f || c == '\'') {
      char hex[5];
      snprintf(hex, sizeof hex, "\\x%02X", c);
      luaL_addstring(b, hex);
    } else {
      luaL_addchar(b, (char)c);
    }
  }
}

/* form.decode(body [, {max_vars=, max_depth=, bracket_equals=}]) -> table | nil, err */
static int form_decode(lua_State *L) {
  size_t len, pos = 0;
  const char *body = luaL_checklstring(L, 1, &len);
  form_decoder d;
  form_node small_nodes[FORM_SMALL_NODES];
  form_key small_keys[FORM_MAX_DEPTH + 2];
  char small_name[FORM_SMALL], small_value[FORM_SMALL];
  size_t n_keys;
  long count = 0;
  int root;
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  d.L = L;
  read_options(&d, 2);
  d.small = small_nodes;
  d.n_small = 0;
  d.free = NULL;
  d.n_free = 0;
  d.name = d.value = NULL;
  lua_settop(L, 2);
  luaL_checkstack(L, FORM_SMALL_NODES + 16, "form.decode");
  /* the slots of the nodes' tables (kept reachable there): nil until made */
  d.nodes = 3;
  d.small_base = 4;
  lua_settop(L, d.small_base + FORM_SMALL_NODES - 1);
  /* a level takes at least two bytes ("[x"), so the body length bounds the path too */
  n_keys = ((size_t)d.max_depth < len ? (size_t)d.max_depth : len) + 2;
  d.keys = n_keys <= FORM_MAX_DEPTH + 2 ? small_keys : (form_key *)lua_newuserdata(L, sizeof(form_key) * n_keys);
  new_node(&d);
  root = lua_gettop(L);
  while (pos < len) {
    const char *seg = body + pos, *amp, *eq, *value;
    char *name;
    size_t seg_len, name_len, decoded_len;
    long n;
    amp = memchr(seg, '&', len - pos);
    seg_len = amp ? (size_t)(amp - seg) : len - pos;
    pos += seg_len + 1;
    if (seg_len == 0) continue;
    if (++count > d.max_vars) {
      lua_pushnil(L);
      lua_pushfstring(L, "form: more than %d variables (max_vars) at byte %d", (int)d.max_vars,
                      (int)(seg - body) + 1);
      return 2;
    }
    eq = memchr(seg, '=', seg_len);
    if (eq && d.bracket_equals) eq = name_end(seg, seg_len, eq);
    name_len = eq ? (size_t)(eq - seg) : seg_len;
    name = url_decode(L, small_name, &d.name, seg, name_len, &decoded_len);
    if (name == NULL) return luaL_error(L, "form.decode: out of memory");
    n = parse_name(&d, name, decoded_len);
    if (n < 0) {
      luaL_Buffer b;
      lua_pushnil(L);
      luaL_buffinit(L, &b);
      luaL_addstring(&b, "form: variable '");
      quote_name(&b, seg, name_len);
      lua_pushfstring(L, "%s' at byte %d nests deeper than %d levels (max_depth)",
                      name_len > 60 ? "..." : "", (int)(seg - body) + 1, (int)d.max_depth);
      luaL_addvalue(&b);
      luaL_pushresult(&b);
      return 2;
    }
    if (n == 0) continue;
    if (eq) {
      value = url_decode(L, small_value, &d.value, eq + 1, seg_len - name_len - 1, &decoded_len);
      if (value == NULL) return luaL_error(L, "form.decode: out of memory");
      lua_pushlstring(L, value, decoded_len);
    } else {
      lua_pushliteral(L, "");
    }
    store(&d, root, (size_t)n);
  }
  shift_lists(&d);
  lua_pushvalue(L, root);
  return 1;
}

/* ------------------------------------------------------------------ encode */

/* PHP's urlencode (RFC 1738): alphanumerics and -_. stay, space is +. */
static int url_encode(bic_buffer *b, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  size_t i;
  if (n > ((size_t)-1) / 3 || bic_buffer_grow(b, n * 3) != 0) return -1;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.') {
      b->data[b->len++] = (char)c;
    } else if (c == ' ') {
      b->data[b->len++] = '+';
    } else {
      b->data[b->len++] = '%';
      b->data[b->len++] = hex[c >> 4];
      b->data[b->len++] = hex[c & 15];
    }
  }
  return 0;
}

typedef struct form_encoder {
  lua_State *L;
  bic_buffer *out;
  bic_buffer *prefix; /* the encoded key path of the current table */
} form_encoder;

static void enc_oom(form_encoder *e) { luaL_error(e->L, "form.encode: out of memory"); }

/* A number as PHP's http_build_query prints it: integers in decimal, floats
 * as %.14G (PHP's precision), or in the shortest form
 * that reads back where precision 14 would lose digits. */
static const char *number_text(lua_State *L, int idx, char *tmp, size_t size) {
  lua_Number x;
#if BIC_HAS_INTEGERS
  if (lua_isinteger(L, idx)) {
    snprintf(tmp, size, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
    return tmp;
  }
#endif
  x = lua_tonumber(L, idx);
  if (x != x) return "NAN";
  if (x == HUGE_VAL) return "INF";
  if (x == -HUGE_VAL) return "-INF";
#if !BIC_HAS_INTEGERS
  /* LuaJIT has no integer subtype: an integral number is written as an integer */
  if (x == floor(x) && fabs(x) <= 9007199254740992.0) {
    snprintf(tmp, size, "%.0f", x);
    return tmp;
  }
#endif
  {
    /* PHP prints with precision 14; where that loses digits we keep the
     * shortest form that reads back (a documented departure) */
    int prec;
    for (prec = 14; prec <= 17; prec++) {
      snprintf(tmp, size, "%.*g", prec, x);
      if (strtod(tmp, NULL) == x) break;
    }
  }
  {
    /* PHP writes exponents as 1.0E+25, C as 1e+25 */
    char *e = strchr(tmp, 'e');
    if (e) {
      char mant[40], exp[16];
      size_t ml = (size_t)(e - tmp);
      int ev = atoi(e + 1);
      memcpy(mant, tmp, ml);
      mant[ml] = '\0';
      if (!strchr(mant, '.')) strcat(mant, ".0");
      snprintf(exp, sizeof exp, "E%c%d", ev < 0 ? '-' : '+', ev < 0 ? -ev : ev);
      snprintf(tmp, size, "%s%s", mant, exp);
    }
  }
  return tmp;
}

/* The text of a key (at idx) for the wire, before escaping. */
static const char *key_text(form_encoder *e, int idx, size_t *len, char *tmp, size_t size, int shift) {
  lua_State *L = e->L;
  if (lua_type(L, idx) == LUA_TSTRING) return lua_tolstring(L, idx, len);
  if (lua_type(L, idx) == LUA_TNUMBER) {
    const char *s;
    if (shift) {
      snprintf(tmp, size, "%.0f", (double)(lua_tonumber(L, idx) - 1));
      s = tmp;
    } else {
      s = number_text(L, idx, tmp, size);
    }
    *len = strlen(s);
    return s;
  }
  luaL_error(L, "form.encode: a key of type %s cannot be encoded", luaL_typename(L, idx));
  return NULL;
}

/* Is the table at idx a sequence 1..n (n >= 1)? Returns n, or 0. */
static size_t sequence_length(lua_State *L, int idx) {
  size_t n = 0, max = 0;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TNUMBER) {
      lua_pop(L, 1);
      return 0;
    }
    {
      lua_Number k = lua_tonumber(L, -1);
      if (k < 1 || k != floor(k) || k > 1e15) {
        lua_pop(L, 1);
        return 0;
      }
      if ((size_t)k > max) max = (size_t)k;
    }
    n++;
  }
  return n == max ? n : 0;
}

/* A key of the table being encoded, for sorting: numbers ascending, then
 * strings bytewise. The strings stay anchored in the keys table. */
typedef struct form_sort_key {
  lua_Number num;
  const char *str;
  size_t len;
  int pos; /* index in the keys table */
} form_sort_key;

static int sort_key_cmp(const void *pa, const void *pb) {
  const form_sort_key *a = (const form_sort_key *)pa, *b = (const form_sort_key *)pb;
  if ((a->str == NULL) != (b->str == NULL)) return a->str == NULL ? -1 : 1;
  if (a->str == NULL) return a->num < b->num ? -1 : a->num > b->num ? 1 : 0;
  {
    size_t m = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->str, b->str, m);
    if (c != 0) return c;
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
  }
}

/* Keys of the table at idx, sorted, in a new sequence pushed on the stack. */
static size_t sorted_keys(form_encoder *e, int idx) {
  lua_State *L = e->L;
  size_t n = 0, i;
  int keys, sorted;
  form_sort_key *order;
  lua_newtable(L);
  keys = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    int kt;
    lua_pop(L, 1);
    kt = lua_type(L, -1);
    if (kt != LUA_TNUMBER && kt != LUA_TSTRING) {
      const char *type = luaL_typename(L, -1);
      lua_pushlstring(L, e->prefix->data ? e->prefix->data : "", e->prefix->len);
      luaL_error(L, "form.encode: a key of type %s cannot be encoded (in table '%s')", type,
                 e->prefix->len ? lua_tostring(L, -1) : "(top)");
    }
    if (n >= (size_t)INT_MAX - 1) luaL_error(L, "form.encode: table too large");
    lua_pushvalue(L, -1);
    lua_rawseti(L, keys, (int)++n);
  }
  order = (form_sort_key *)lua_newuserdata(L, (n ? n : 1) * sizeof(form_sort_key));
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, keys, (int)i + 1);
    order[i].pos = (int)i + 1;
    if (lua_type(L, -1) == LUA_TNUMBER) {
      order[i].num = lua_tonumber(L, -1);
      order[i].str = NULL;
      order[i].len = 0;
    } else {
      order[i].num = 0;
      order[i].str = lua_tolstring(L, -1, &order[i].len); /* anchored in keys */
    }
    lua_pop(L, 1);
  }
  qsort(order, n, sizeof(form_sort_key), sort_key_cmp);
  lua_createtable(L, (int)n, 0);
  sorted = lua_gettop(L);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, keys, order[i].pos);
    lua_rawseti(L, sorted, (int)i + 1);
  }
  lua_replace(L, keys); /* the sorted sequence takes the place of the keys */
  lua_pop(L, 1);        /* the order array */
  return n;
}

static void encode_table(form_encoder *e, int idx, int depth);

/* Emit the pair for the key at kidx and value at vidx under the current prefix. */
static void encode_pair(form_encoder *e, int kidx, int vidx, int depth, int shift) {
  int nested = depth > 1; /* keys below the top level go in brackets */
  lua_State *L = e->L;
  char tmp[64];
  size_t klen, saved = e->prefix->len;
  const char *k;
  int vt;
  if (kidx < 0) kidx = lua_gettop(L) + kidx + 1;
  if (vidx < 0) vidx = lua_gettop(L) + vidx + 1;
  k = key_text(e, kidx, &klen, tmp, sizeof tmp, shift);
  vt = lua_type(L, vidx);
  /* the key path: top-level key plain, nested ones as %5Bkey%5D */
  if (nested && bic_buffer_puts(e->prefix, "%5B") != 0) enc_oom(e);
  if (url_encode(e->prefix, k, klen) != 0) enc_oom(e);
  if (nested && bic_buffer_puts(e->prefix, "%5D") != 0) enc_oom(e);
  if (vt == LUA_TTABLE) {
    encode_table(e, vidx, depth + 1);
  } else if (vt == LUA_TLIGHTUSERDATA && lua_touserdata(L, vidx) == NULL) {
    /* null is left out, as PHP leaves out null */
  } else {
    const char *v;
    size_t vlen;
    if (vt == LUA_TSTRING) {
      v = lua_tolstring(L, vidx, &vlen);
    } else if (vt == LUA_TNUMBER) {
      v = number_text(L, vidx, tmp, sizeof tmp);
      vlen = strlen(v);
    } else if (vt == LUA_TBOOLEAN) {
      v = lua_toboolean(L, vidx) ? "1" : "0";
      vlen = 1;
    } else {
      lua_pushlstring(L, e->prefix->data, e->prefix->len);
      luaL_error(L, "form.encode: a value of type %s cannot be encoded (at '%s')", luaL_typename(L, vidx),
                 lua_tostring(L, -1));
      return;
    }
    if (e->out->len > 0 && bic_buffer_putc(e->out, '&') != 0) enc_oom(e);
    if (bic_buffer_put(e->out, e->prefix->data, e->prefix->len) != 0) enc_oom(e);
    if (bic_buffer_putc(e->out, '=') != 0 || url_encode(e->out, v, vlen) != 0) enc_oom(e);
  }
  e->prefix->len = saved;
}

static void encode_table(form_encoder *e, int idx, int depth) {
  lua_State *L = e->L;
  size_t n, i;
  if (depth > FORM_ENCODE_MAX_DEPTH + 1) { /* the top table is not a bracket level */
    lua_pushlstring(L, e->prefix->data, e->prefix->len > 200 ? 200 : e->prefix->len);
    luaL_error(L, "form.encode: tables nest deeper than %d bracket levels (a cycle?) at '%s'", FORM_ENCODE_MAX_DEPTH,
               lua_tostring(L, -1));
  }
  luaL_checkstack(L, 8, "form.encode");
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  n = sequence_length(L, idx);
  if (n > 0) {
    for (i = 1; i <= n; i++) {
      lua_pushnumber(L, (lua_Number)i);
      lua_rawgeti(L, idx, (int)i);
      encode_pair(e, -2, -1, depth, 1);
      lua_pop(L, 2);
    }
    return;
  }
  n = sorted_keys(e, idx);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (int)i);
    lua_pushvalue(L, -1);
    lua_rawget(L, idx);
    encode_pair(e, -2, -1, depth, 0);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
}

/* form.encode(tbl) -> string */
static int form_encode(lua_State *L) {
  form_encoder e;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  e.L = L;
  e.out = bic_buffer_push(L);
  e.prefix = bic_buffer_push(L);
  encode_table(&e, 1, 1);
  lua_pushlstring(L, e.out->data ? e.out->data : "", e.out->len);
  return 1;
}

int bic_open_form(lua_State *L) {
  static const luaL_Reg funcs[] = {{"decode", form_decode}, {"encode", form_encode}, {NULL, NULL}};
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_setfield(L, -2, "form");
  return 0;
}
