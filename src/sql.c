/* core.sql: the Lua binding over any database driver (sql.h).
 *
 * core.sql.engines                         -> {"sqlite", ...} (what this build has)
 * core.sql.open(engine, opts)              -> conn | nil, message
 *   opts: path, host, port, user, password, database, socket, params,
 *         read_only (default true), busy_timeout_ms, statement_timeout_ms,
 *         connect_timeout_s, utc_offset_min (postgresql, mysql: the session's
 *         time zone as a fixed offset, -1439..1439 minutes east of UTC; default 0)
 * conn:query(sql, params)                  -> cursor | nil, message
 *   params: a list (params.n when it holds nils) of nil/core.null, booleans,
 *   numbers and strings, bound to the statement's placeholders. When the driver
 *   says the connection was lost and no cursor is open on it, the connection is
 *   reopened once and the query tried again.
 * conn:close()                             (a cursor still open keeps the
 *                                           connection until it is closed)
 * cursor:columns()                         -> { {name = , type = }, ... }
 * cursor:fetch()                           -> row (a list, NULL as nil) | nil at
 *                                             the end | nil, message
 * cursor:fill(enc, max_bytes [, max_rows])  -> added, done, nulled, column, why |
 *                                             nil, message
 *   steps rows straight into the urlData encoder enc (core.rows, as many output
 *   columns as the cursor) until max_bytes are pending, max_rows were added or
 *   the rows end (done is true only then). A value
 *   that does not fit its field's type is written as null: nulled counts them,
 *   column (1-based) and why tell the first.
 * cursor:detach() -> id (the same id every time for one cursor); core.sql.attach(id) -> cursor;
 *   core.sql.discard(id)
 *   hand a cursor (with its connection) from one Lua state to another in the
 *   same process (an nginx worker thread and back).
 * cursor:close()                           (also __gc and __close)
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bic.h"
#include "buffer.h"
#include "sql.h"

#define CONN_MT "biconnector.sql.conn"
#define CURSOR_MT "biconnector.sql.cursor"
#define ERRLEN 512

static const bic_sql_driver *const drivers[] = {
#ifdef BIC_WITH_SQLITE
    &bic_sql_sqlite,
#endif
#ifdef BIC_WITH_POSTGRESQL
    &bic_sql_postgresql,
#endif
#ifdef BIC_WITH_MYSQL
    &bic_sql_mysql,
#endif
#ifdef BIC_WITH_CLICKHOUSE
    &bic_sql_clickhouse,
#endif
    NULL};

/* The reference counts and the hand-over registry are shared by every Lua state
 * of the process (nginx worker threads): one lock. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct sql_conn {
  const bic_sql_driver *drv;
  void *handle;
  bic_sql_options opts; /* strings owned */
  int refs;             /* the conn userdata + open cursors */
} sql_conn;

typedef struct sql_cursor {
  const bic_sql_driver *drv;
  void *handle;
  sql_conn *conn;
  int ncols;
  int done;
  bic_sql_value *row; /* [ncols] */
  long long parked_id; /* the id it was detached under: kept across detach/attach */
} sql_cursor;

typedef struct conn_box { sql_conn *c; } conn_box;
typedef struct cursor_box { sql_cursor *k; } cursor_box;

/* ---- options ----------------------------------------------------------------- */

void bic_sql_free_options(bic_sql_options *o) {
  free((char *)o->path);
  free((char *)o->host);
  free((char *)o->user);
  bic_sql_free_secret((char *)o->password);
  free((char *)o->database);
  free((char *)o->socket);
  free((char *)o->params);
}

void bic_sql_read_options(lua_State *L, int t, bic_sql_options *o) {
  static const char *const strings[] = {"path", "host", "user", "password", "database", "socket", "params", NULL};
  static const char *const ints[] = {"port", "busy_timeout_ms", "statement_timeout_ms", "connect_timeout_s", NULL};
  const char **sslots[] = {&o->path, &o->host, &o->user, &o->password, &o->database, &o->socket, &o->params};
  int *islots[] = {&o->port, &o->busy_timeout_ms, &o->statement_timeout_ms, &o->connect_timeout_s};
  int i;
  for (i = 0; strings[i] != NULL; i++) {
    size_t len;
    const char *s = bic_opt_string(L, t, strings[i], NULL, &len);
    if (s != NULL) {
      /* the drivers take C strings: a zero byte would cut the value short */
      if (strlen(s) != len) luaL_error(L, "option '%s' contains a zero byte", strings[i]);
      if ((*sslots[i] = strdup(s)) == NULL) luaL_error(L, "out of memory");
    }
    lua_pop(L, 1);
  }
  for (i = 0; ints[i] != NULL; i++) *islots[i] = (int)bic_opt_number(L, t, ints[i], 0, INT_MIN, INT_MAX);
  o->utc_offset_min = (int)bic_opt_number(L, t, "utc_offset_min", 0, -1439, 1439);
  o->read_only = bic_opt_boolean(L, t, "read_only", 1);
}

/* ---- helpers the drivers share (sql.h) ----------------------------------------- */

void bic_sql_error(char *err, size_t errlen, const char *password, const char *prefix, const char *msg) {
  size_t o = 0, plen = password ? strlen(password) : 0;
  if (!err || errlen == 0) return;
  if (!msg) msg = "unknown error";
  err[0] = '\0';
  if (prefix) {
    size_t n = strlen(prefix);
    if (n >= errlen) n = errlen - 1;
    memcpy(err, prefix, n);
    o = n;
  }
  for (const char *p = msg; *p && o + 1 < errlen;) {
    if (plen >= 3 && strncmp(p, password, plen) == 0) {
      for (const char *m = "***"; *m && o + 1 < errlen; m++) err[o++] = *m;
      p += plen;
    } else {
      err[o++] = *p++;
    }
  }
  while (o > 0 && (err[o - 1] == '\n' || err[o - 1] == ' ')) o--;
  err[o] = '\0';
}

char *bic_sql_strdup(const char *s) {
  size_t n;
  char *d;
  if (!s) return NULL;
  n = strlen(s);
  d = malloc(n + 1);
  if (d) memcpy(d, s, n + 1);
  return d;
}

void bic_sql_free_secret(char *s) {
  if (!s) return;
  explicit_bzero(s, strlen(s)); /* a plain memset before free may be optimised away */
  free(s);
}

char *bic_sql_decode(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) bic_percent_decode(d, s, n, 0);
  return d;
}

int bic_sql_next_param(const char **params, const char **item, size_t *len, const char **eq) {
  const char *p = *params;
  while (p && *p) {
    const char *amp = strchr(p, '&');
    size_t n = amp ? (size_t)(amp - p) : strlen(p);
    *params = p + n + (p[n] == '&' ? 1 : 0);
    if (n > 0) {
      *item = p;
      *len = n;
      *eq = memchr(p, '=', n);
      return 1;
    }
    p = *params;
  }
  return 0;
}

/* ---- connections --------------------------------------------------------------- */

static void conn_unref(sql_conn *c) {
  int last;
  pthread_mutex_lock(&lock);
  last = --c->refs == 0;
  pthread_mutex_unlock(&lock);
  if (!last) return;
  if (c->handle) c->drv->close(c->handle);
  bic_sql_free_options(&c->opts);
  free(c);
}

const bic_sql_driver *bic_sql_find_driver(const char *engine) {
  int i;
  for (i = 0; drivers[i] != NULL; i++)
    if (strcmp(drivers[i]->engine, engine) == 0) return drivers[i];
  return NULL;
}

static int push_fail(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

static int sql_open(lua_State *L) {
  const char *engine = luaL_checkstring(L, 1);
  const bic_sql_driver *drv = bic_sql_find_driver(engine);
  char err[ERRLEN];
  sql_conn *c;
  conn_box *box;
  int i;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  if (drv == NULL) {
    snprintf(err, sizeof err, "unknown database engine \"%s\" (this build has:", engine);
    for (i = 0; drivers[i] != NULL; i++) {
      strncat(err, " ", sizeof err - strlen(err) - 1);
      strncat(err, drivers[i]->engine, sizeof err - strlen(err) - 1);
    }
    strncat(err, drivers[0] ? ")" : " none)", sizeof err - strlen(err) - 1);
    return push_fail(L, err);
  }
  box = (conn_box *)bic_object(L, sizeof *box, CONN_MT); /* index 3 */
  c = (sql_conn *)calloc(1, sizeof *c);
  if (c == NULL) return luaL_error(L, "out of memory");
  c->drv = drv;
  c->refs = 1;
  box->c = c; /* from here __gc frees c and its options */
  bic_sql_read_options(L, 2, &c->opts);
  c->handle = drv->open(&c->opts, err, sizeof err);
  if (c->handle == NULL) {
    box->c = NULL;
    conn_unref(c);
    return push_fail(L, err);
  }
  return 1;
}

static sql_conn *check_conn(lua_State *L) {
  conn_box *box = (conn_box *)luaL_checkudata(L, 1, CONN_MT);
  if (box->c == NULL) luaL_argerror(L, 1, "connection is closed");
  return box->c;
}

static int conn_close(lua_State *L) {
  conn_box *box = (conn_box *)luaL_checkudata(L, 1, CONN_MT);
  if (box->c) {
    sql_conn *c = box->c;
    box->c = NULL;
    conn_unref(c);
  }
  return 0;
}

static int conn_engine(lua_State *L) {
  sql_conn *c = check_conn(L);
  lua_pushstring(L, c->drv->engine);
  return 1;
}

/* The Lua parameter at index idx as a bound value (strings point into Lua). */
void bic_sql_param_value(lua_State *L, int idx, int n, bic_sql_value *v) {
  int t = lua_type(L, idx);
  memset(v, 0, sizeof *v);
  switch (t) {
  case LUA_TNIL: v->kind = BIC_SQL_NULL; break;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) != NULL) luaL_error(L, "params[%d]: a userdata cannot be bound", n);
    v->kind = BIC_SQL_NULL;
    break;
  case LUA_TBOOLEAN:
    v->kind = BIC_SQL_BOOL;
    v->i = lua_toboolean(L, idx);
    break;
  case LUA_TNUMBER: {
#if BIC_HAS_INTEGERS
    if (lua_isinteger(L, idx)) {
      v->kind = BIC_SQL_INT;
      v->i = (long long)lua_tointeger(L, idx);
      break;
    }
#endif
    v->d = (double)lua_tonumber(L, idx);
#if !BIC_HAS_INTEGERS
    /* LuaJIT has no integers: an integral number within 2^53 binds as one */
    if (v->d == (double)(long long)v->d && v->d > -9007199254740992.0 && v->d < 9007199254740992.0) {
      v->kind = BIC_SQL_INT;
      v->i = (long long)v->d;
      break;
    }
#endif
    v->kind = BIC_SQL_DOUBLE;
    break;
  }
  case LUA_TSTRING:
    v->kind = BIC_SQL_TEXT;
    v->s = lua_tolstring(L, idx, &v->len);
    break;
  default: luaL_error(L, "params[%d]: a %s cannot be bound", n, lua_typename(L, t));
  }
}

bic_sql_value *bic_sql_push_params(lua_State *L, int t, int *count) {
  int n = 0, i;
  bic_sql_value *v;
  if (!lua_isnoneornil(L, t)) {
    luaL_checktype(L, t, LUA_TTABLE);
    lua_getfield(L, t, "n");
    n = lua_type(L, -1) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : (int)lua_rawlen(L, t);
    lua_pop(L, 1);
    if (n < 0 || n > 65535) luaL_argerror(L, t, "too many parameters");
  }
  v = (bic_sql_value *)lua_newuserdata(L, sizeof *v * (size_t)(n > 0 ? n : 1));
  for (i = 0; i < n; i++) {
    bic_rawgeti(L, t, i + 1);
    bic_sql_param_value(L, -1, i + 1, &v[i]);
    lua_pop(L, 1); /* a string stays referenced by the list */
  }
  *count = n;
  return v;
}

static int conn_query(lua_State *L) {
  sql_conn *c = check_conn(L);
  const char *sql = luaL_checkstring(L, 2);
  int nparams, retryable = 0;
  bic_sql_value *params;
  char err[ERRLEN];
  void *handle;
  cursor_box *box;
  sql_cursor *k;
  lua_settop(L, 3);
  params = bic_sql_push_params(L, 3, &nparams); /* index 4 */
  box = (cursor_box *)bic_object(L, sizeof *box, CURSOR_MT);
  k = (sql_cursor *)calloc(1, sizeof *k);
  if (k == NULL) return luaL_error(L, "out of memory");
  handle = c->handle ? c->drv->query(c->handle, sql, params, nparams, &retryable, err, sizeof err) : NULL;
  if (c->handle == NULL) {
    snprintf(err, sizeof err, "the connection was lost and could not be reopened");
    retryable = 1;
  }
  if (handle == NULL && retryable) {
    int alone;
    pthread_mutex_lock(&lock);
    alone = c->refs == 1;
    pthread_mutex_unlock(&lock);
    if (alone) { /* no cursor depends on the old connection: reconnect once */
      char err2[ERRLEN / 2];
      if (c->handle) c->drv->close(c->handle);
      c->handle = c->drv->open(&c->opts, err2, sizeof err2);
      if (c->handle == NULL) {
        size_t used = strlen(err) < ERRLEN / 4 ? strlen(err) : ERRLEN / 4;
        snprintf(err + used, sizeof err - used, "; reconnecting failed: %.200s", err2);
      } else {
        handle = c->drv->query(c->handle, sql, params, nparams, &retryable, err, sizeof err);
      }
    }
  }
  if (handle == NULL) {
    free(k);
    return push_fail(L, err);
  }
  k->drv = c->drv;
  k->handle = handle;
  k->conn = c;
  k->ncols = c->drv->ncols(handle);
  k->row = (bic_sql_value *)calloc((size_t)(k->ncols > 0 ? k->ncols : 1), sizeof(bic_sql_value));
  pthread_mutex_lock(&lock);
  c->refs++;
  pthread_mutex_unlock(&lock);
  box->k = k;
  if (k->row == NULL) return luaL_error(L, "out of memory"); /* __gc closes it */
  return 1;
}

/* ---- cursors ---------------------------------------------------------------------- */

static void cursor_free(sql_cursor *k) {
  if (k == NULL) return;
  if (k->handle) k->drv->close_cursor(k->handle);
  free(k->row);
  if (k->conn) conn_unref(k->conn);
  free(k);
}

static sql_cursor *check_cursor(lua_State *L) {
  cursor_box *box = (cursor_box *)luaL_checkudata(L, 1, CURSOR_MT);
  if (box->k == NULL) luaL_argerror(L, 1, "cursor is closed");
  return box->k;
}

static int cursor_close(lua_State *L) {
  cursor_box *box = (cursor_box *)luaL_checkudata(L, 1, CURSOR_MT);
  sql_cursor *k = box->k;
  box->k = NULL;
  cursor_free(k);
  return 0;
}

static int cursor_columns(lua_State *L) {
  sql_cursor *k = check_cursor(L);
  int i;
  lua_createtable(L, k->ncols, 0);
  for (i = 0; i < k->ncols; i++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, k->drv->colname(k->handle, i));
    lua_setfield(L, -2, "name");
    lua_pushstring(L, k->drv->coltype(k->handle, i));
    lua_setfield(L, -2, "type");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int cursor_fetch(lua_State *L) {
  sql_cursor *k = check_cursor(L);
  char err[ERRLEN];
  int rc, i;
  if (k->done) return 0;
  rc = k->drv->step(k->handle, err, sizeof err);
  if (rc < 0) {
    k->done = 1;
    return push_fail(L, err);
  }
  if (rc == 0) {
    k->done = 1;
    return 0;
  }
  lua_createtable(L, k->ncols, 0);
  for (i = 0; i < k->ncols; i++) {
    bic_sql_value v;
    k->drv->value(k->handle, i, &v);
    switch (v.kind) {
    case BIC_SQL_NULL: continue;
    case BIC_SQL_INT: bic_push_int64(L, v.i); break;
    case BIC_SQL_DOUBLE: lua_pushnumber(L, (lua_Number)v.d); break;
    case BIC_SQL_BOOL: lua_pushboolean(L, (int)v.i); break;
    default: lua_pushlstring(L, v.s ? v.s : "", v.len); break;
    }
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int cursor_fill(lua_State *L) {
  sql_cursor *k = check_cursor(L);
  rows_encoder *e = bic_rows_check(L, 2);
  lua_Integer max = luaL_optinteger(L, 3, 65536);
  lua_Integer max_rows = luaL_optinteger(L, 4, -1); /* -1: no bound */
  char err[ERRLEN], why[200];
  int bad_col = -1, first_bad = -1, i;
  lua_Integer added = 0, nulled = 0;
  why[0] = '\0';
  if (bic_rows_width(e) != k->ncols)
    return luaL_error(L, "the encoder has %d columns, the cursor %d", bic_rows_width(e), k->ncols);
  while (!k->done && bic_rows_pending(e) < (size_t)max && (max_rows < 0 || added < max_rows)) {
    int rc = k->drv->step(k->handle, err, sizeof err);
    if (rc < 0) {
      k->done = 1;
      return push_fail(L, err);
    }
    if (rc == 0) {
      k->done = 1;
      break;
    }
    for (i = 0; i < k->ncols; i++) k->drv->value(k->handle, i, &k->row[i]);
    rc = bic_rows_add_values(e, k->row, k->ncols, &bad_col, first_bad < 0 ? why : err, first_bad < 0 ? sizeof why : sizeof err);
    if (rc < 0) return push_fail(L, first_bad < 0 ? why : err);
    if (rc > 0) {
      if (first_bad < 0) first_bad = bad_col;
      nulled += rc;
    }
    added++;
  }
  lua_pushinteger(L, added);
  lua_pushboolean(L, k->done);
  if (nulled == 0) return 2;
  lua_pushinteger(L, nulled);
  lua_pushinteger(L, first_bad + 1);
  lua_pushstring(L, why);
  return 5;
}

static int cursor_done(lua_State *L) {
  sql_cursor *k = check_cursor(L);
  lua_pushboolean(L, k->done);
  return 1;
}

static int cursor_tostring(lua_State *L) {
  cursor_box *box = (cursor_box *)luaL_checkudata(L, 1, CURSOR_MT);
  lua_pushfstring(L, "biconnector.sql.cursor (%s): %p", box->k ? "open" : "closed", (void *)box);
  return 1;
}

static int conn_tostring(lua_State *L) {
  conn_box *box = (conn_box *)luaL_checkudata(L, 1, CONN_MT);
  lua_pushfstring(L, "biconnector.sql.conn (%s): %p", box->c ? box->c->drv->engine : "closed", (void *)box);
  return 1;
}

/* ---- hand-over between Lua states ------------------------------------------------------ */

typedef struct parked {
  struct parked *next;
  long long id;
  sql_cursor *k;
} parked;

static parked *parked_list = NULL;
static long long parked_next = 1;

static int cursor_detach(lua_State *L) {
  cursor_box *box = (cursor_box *)luaL_checkudata(L, 1, CURSOR_MT);
  parked *p;
  if (box->k == NULL) return luaL_argerror(L, 1, "cursor is closed");
  p = (parked *)malloc(sizeof *p);
  if (p == NULL) return luaL_error(L, "out of memory");
  pthread_mutex_lock(&lock);
  /* a cursor handed back and forth keeps one id: the holder of the id continues it */
  if (box->k->parked_id == 0) box->k->parked_id = parked_next++;
  p->id = box->k->parked_id;
  p->k = box->k;
  p->next = parked_list;
  parked_list = p;
  pthread_mutex_unlock(&lock);
  box->k = NULL;
  lua_pushnumber(L, (lua_Number)p->id);
  return 1;
}

static sql_cursor *unpark(long long id) {
  parked **pp, *p;
  sql_cursor *k = NULL;
  pthread_mutex_lock(&lock);
  for (pp = &parked_list; (p = *pp) != NULL; pp = &p->next) {
    if (p->id == id) {
      *pp = p->next;
      k = p->k;
      free(p);
      break;
    }
  }
  pthread_mutex_unlock(&lock);
  return k;
}

static int sql_attach(lua_State *L) {
  long long id = (long long)luaL_checknumber(L, 1);
  cursor_box *box = (cursor_box *)bic_object(L, sizeof *box, CURSOR_MT);
  box->k = unpark(id);
  if (box->k == NULL) return push_fail(L, "no such detached cursor");
  return 1;
}

static int sql_discard(lua_State *L) {
  long long id = (long long)luaL_checknumber(L, 1);
  sql_cursor *k = unpark(id);
  lua_pushboolean(L, k != NULL);
  cursor_free(k);
  return 1;
}

int bic_open_sql(lua_State *L) {
  static const luaL_Reg conn_methods[] = {{"query", conn_query}, {"close", conn_close}, {"engine", conn_engine},
                                          {NULL, NULL}};
  static const luaL_Reg cursor_methods[] = {{"columns", cursor_columns}, {"fetch", cursor_fetch},
                                            {"fill", cursor_fill},       {"done", cursor_done},
                                            {"detach", cursor_detach},   {"close", cursor_close},
                                            {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"open", sql_open}, {"attach", sql_attach}, {"discard", sql_discard}, {NULL, NULL}};
  int i;
  bic_class(L, CONN_MT, conn_methods, conn_close, conn_close, conn_tostring);
  bic_class(L, CURSOR_MT, cursor_methods, cursor_close, cursor_close, cursor_tostring);
  lua_newtable(L);
  luaL_setfuncs(L, funcs, 0);
  lua_newtable(L);
  for (i = 0; drivers[i] != NULL; i++) {
    lua_pushstring(L, drivers[i]->engine);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "engines");
  bic_open_sql_jobs(L);
  bic_open_sql_clickhouse(L);
  lua_setfield(L, -2, "sql");
  return 0;
}
