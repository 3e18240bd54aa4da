/* The database driver interface shared by the SQL engines (sqlite, postgresql, mysql,
 * clickhouse).
 *
 * Each engine lives in its own file (sql_sqlite.c, sql_pg.c, sql_mysql.c) and
 * fills one bic_sql_driver; sql.c holds everything that is the same for all of
 * them: the Lua bindings (core.sql.open, conn:query, cursor:fetch, cursor:fill
 * into a rows encoder, close), parameter conversion and error shaping.
 *
 * Rules every driver keeps:
 * - no Lua call inside a driver function: it gets plain C values and returns
 *   plain C values, so no Lua error can unwind through a client library frame;
 * - statements take bound parameters only ($1 / ? are the engine's business:
 *   the SQL text given to query is already in the engine's placeholder style);
 * - errors are written into err (at most errlen bytes, NUL-terminated), never
 *   containing a password (the driver masks its connection string);
 * - a cursor yields rows one at a time from the engine's own incremental fetch
 *   (sqlite3_step, PostgreSQL single-row or chunked mode, MariaDB unbuffered
 *   results), so memory stays flat whatever the number of rows;
 * - values handed out by value() stay valid until the next step() or
 *   close_cursor() on the same cursor. */
#ifndef BIC_SQL_H
#define BIC_SQL_H

#include <stddef.h>

/* A bound parameter or a column value. */
typedef enum {
  BIC_SQL_NULL = 0,
  BIC_SQL_INT,    /* i */
  BIC_SQL_DOUBLE, /* d */
  BIC_SQL_TEXT,   /* s, len: UTF-8 text (also numbers/dates an engine sends as text) */
  BIC_SQL_BLOB,   /* s, len: bytes */
  BIC_SQL_BOOL    /* i: 0 or 1 */
} bic_sql_kind;

typedef struct bic_sql_value {
  bic_sql_kind kind;
  long long i;
  double d;
  const char *s;
  size_t len;
} bic_sql_value;

/* Connection options, read by sql.c from the Lua table given to core.sql.open.
 * Fields a driver does not use are ignored. Strings may be NULL. */
typedef struct bic_sql_options {
  const char *path;     /* sqlite: database file */
  const char *host;
  int port;             /* 0: the engine's default */
  const char *user;
  const char *password; /* never printed */
  const char *database;
  const char *socket;   /* unix socket path (mysql) */
  const char *params;   /* engine-specific extra options, "key=value&key=value" (sslmode, ssl-ca, ...) */
  int read_only;        /* 1 (default): open read-only / read-only transactions */
  int busy_timeout_ms;  /* sqlite busy timeout; 0: driver default */
  int statement_timeout_ms; /* 0: none */
  int connect_timeout_s;    /* 0: driver default */
  int utc_offset_min;       /* postgresql, mysql: the session's zone, minutes east of UTC (0: UTC) */
} bic_sql_options;

typedef struct bic_sql_driver {
  const char *engine; /* "sqlite", "postgresql", "mysql" */

  /* Open a connection. NULL on failure, err set. */
  void *(*open)(const bic_sql_options *opts, char *err, size_t errlen);

  /* Run sql with nparams bound parameters and return a cursor positioned before
   * the first row. NULL on failure, err set. *retryable set to 1 when the
   * connection was lost (sql.c then reopens once and tries again). */
  void *(*query)(void *conn, const char *sql, const bic_sql_value *params, int nparams,
                 int *retryable, char *err, size_t errlen);

  int (*ncols)(void *cursor);
  const char *(*colname)(void *cursor, int col);     /* 0-based */
  const char *(*coltype)(void *cursor, int col);     /* declared/engine type name, may be "" */

  /* Advance: 1 a row is ready, 0 no more rows, -1 error (err set). */
  int (*step)(void *cursor, char *err, size_t errlen);

  /* The value of column col (0-based) of the current row. */
  void (*value)(void *cursor, int col, bic_sql_value *out);

  /* Stop and free the cursor; when rows were left unread, the driver cancels
   * the query on the server where the engine allows it. */
  void (*close_cursor)(void *cursor);

  /* 1 when the connection is usable, 0 when it should be reopened. Called on
   * an idle connection before the pool (sql_job.c) hands it out. */
  int (*alive)(void *conn);

  /* Asks the statement running on conn (in another thread) to stop: SQLite's
   * interrupt, PostgreSQL's cancel request, MariaDB's KILL QUERY on a second
   * connection. Thread-safe against the thread using conn; may block on the
   * network, so only the pool's service thread calls it. The connection is
   * closed afterwards, never reused (a late cancel could hit a next statement). */
  void (*cancel)(void *conn);

  /* 1 when cancel() uses nothing the cursor holds, so the cursor may be closed
   * while cancel() runs, and must be: ClickHouse's KILL QUERY ... SYNC returns
   * once the query has stopped, and a query blocked writing its answer stops
   * only when the cursor drops the transfer. 0: the cursor waits for cancel(). */
  int cancel_apart;

  void (*close)(void *conn);
} bic_sql_driver;

/* What the client-library drivers (sql_pg.c, sql_mysql.c) share, in sql.c. */

/* Writes prefix (may be NULL) then msg (NULL: "unknown error") into err, at
 * most errlen bytes with the NUL, every occurrence of password (when it has 3
 * bytes or more) replaced by ***, and without the trailing newlines and spaces
 * the client libraries end their messages with. */
void bic_sql_error(char *err, size_t errlen, const char *password, const char *prefix, const char *msg);

/* A malloc'ed copy of s; NULL when s is NULL or memory ran out. */
char *bic_sql_strdup(const char *s);

/* Overwrites s with zeros (a password; explicit_bzero), then frees it; s may be NULL. */
void bic_sql_free_secret(char *s);

/* Percent-decodes s[0..n) into a new string ('+' stays '+'; a '%' not followed
 * by two hex digits stays as is); NULL when memory ran out. */
char *bic_sql_decode(const char *s, size_t n);

/* Steps through the "key=value&key=value" text of opts->params (NULL or "":
 * nothing): 1 with the next non-empty item as item[0..*len) and *eq its first
 * '=' (NULL when it has none), 0 at the end. *params moves past the item. */
int bic_sql_next_param(const char **params, const char **item, size_t *len, const char **eq);

/* ---- inside the core (sql.c, sql_job.c) ---- */
struct lua_State;
/* The driver named engine, or NULL. */
const bic_sql_driver *bic_sql_find_driver(const char *engine);
/* Reads core.sql.open's options from the table at index t into o (strings
 * malloc'ed; o zeroed by the caller); raises on a wrong type. */
void bic_sql_read_options(struct lua_State *L, int t, bic_sql_options *o);
/* Frees o's strings, the password wiped first. */
void bic_sql_free_options(bic_sql_options *o);
/* The Lua value at idx as a bound parameter n (a string points into Lua). */
void bic_sql_param_value(struct lua_State *L, int idx, int n, bic_sql_value *v);
/* The query parameters at index t (a list, params.n when it holds nils; nil:
 * none) as bound values, in a scratch userdata pushed on the stack (strings
 * point into Lua, kept by the list); *count of them. Raises on a wrong type or
 * more than 65535. */
bic_sql_value *bic_sql_push_params(struct lua_State *L, int t, int *count);
/* core.sql.pool and core.sql.job (sql_job.c), added to the table at the top. */
int bic_open_sql_jobs(struct lua_State *L);

/* An integer as a server writes it ([-]digits): 1 and *out, or 0 when it is
 * not one or does not fit in 64 bits. Faster than strtoll, which showed in
 * profiles of large answers (sql_pg.c, sql_clickhouse.c). */
static inline int bic_sql_parse_int(const char *s, size_t len, long long *out) {
  size_t i = 0;
  int neg = 0;
  unsigned long long v = 0;
  if (len > 0 && s[0] == '-') {
    neg = 1;
    i = 1;
  }
  if (len == i || len - i > 19) return 0;
  for (; i < len; i++) {
    unsigned int d = (unsigned int)((unsigned char)s[i]) - (unsigned int)'0';
    if (d > 9) return 0;
    v = v * 10 + d;
  }
  if (neg) {
    if (v > 9223372036854775808ULL) return 0;
    *out = v == 9223372036854775808ULL ? (-9223372036854775807LL - 1) : -(long long)v;
  } else {
    if (v > 9223372036854775807ULL) return 0;
    *out = (long long)v;
  }
  return 1;
}

/* [-]digits[.digits] with at most 15 digits: the integer of its digits is
 * exact in a double and so is 10^k for k <= 15, so one division gives the
 * correctly rounded value (Clinger's fast path), without strtod's cost.
 * 0 for anything else (exponents, NaN, Infinity, more digits): strtod then. */
static inline int bic_sql_parse_decimal(const char *s, size_t len, double *out) {
  static const double pow10[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                  1e12, 1e13, 1e14, 1e15 };
  size_t i = 0;
  int neg = 0, digits = 0, frac = -1;
  long long m = 0;
  if (len > 0 && s[0] == '-') {
    neg = 1;
    i = 1;
  }
  for (; i < len; i++) {
    char c = s[i];
    if (c >= '0' && c <= '9') {
      if (++digits > 15) return 0;
      m = m * 10 + (c - '0');
      if (frac >= 0) frac++;
    } else if (c == '.' && frac < 0) {
      frac = 0;
    } else {
      return 0;
    }
  }
  if (digits == 0) return 0;
  *out = (double)m / pow10[frac > 0 ? frac : 0];
  if (neg) *out = -*out;
  return 1;
}

/* ClickHouse's text rules (sql_ch_text.c): quoting, placeholders, answers. */
struct bic_buffer;
/* Appends s[0..n) between two marks (' a literal, ` a name), escaped as
 * ClickHouse reads it back exactly. 0, or -1 when memory ran out. */
int bic_ch_quote(struct bic_buffer *b, const char *s, size_t n, char mark);
/* Appends s percent-encoded (all but A-Z a-z 0-9 - . _ ~). 0, or -1. */
int bic_ch_url_escape(struct bic_buffer *b, const char *s, size_t n);
/* Appends sql[0..n) with $1..$nparams outside quotes and comments filled in:
 * literals, or (url_params not NULL) strings as {pN:String} with
 * "&param_pN=..." appended to url_params. 0; -1 with err set (a $N with no
 * value, an unterminated quote or comment); -2 when memory ran out. */
int bic_ch_render(struct bic_buffer *out, struct bic_buffer *url_params, const char *sql, size_t n,
                  const bic_sql_value *params, int nparams, char *err, size_t errlen);
/* Undoes the escapes of a TabSeparated field in place; its new length. */
size_t bic_ch_unescape(char *s, size_t n);

/* SQL LIKE (like.c): pattern against subject with SQLite's semantics (`%`, `_`,
 * ASCII case folding, the escape character esc[0..esclen), esclen 0 for none),
 * in time linear in the subject for patterns without `_`. 1 match, 0 no match,
 * -1 *stop became non-zero on the way, -2 out of memory. */
int bic_like(const char *pattern, size_t plen, const char *subject, size_t n, const char *esc, size_t esclen,
             volatile int *stop);

/* The drivers. sql.c lists the ones this build has: CMake defines BIC_WITH_SQLITE,
 * BIC_WITH_POSTGRESQL and BIC_WITH_MYSQL when it finds the engine's client library,
 * and BIC_WITH_CLICKHOUSE always (libcurl is a dependency of the core). */
extern const bic_sql_driver bic_sql_sqlite;
extern const bic_sql_driver bic_sql_postgresql;
extern const bic_sql_driver bic_sql_mysql;
extern const bic_sql_driver bic_sql_clickhouse;
/* core.sql.clickhouse_quote and clickhouse_render, added to the table at the top. */
void bic_open_sql_clickhouse(struct lua_State *L);

#endif
