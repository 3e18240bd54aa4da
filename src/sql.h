/* The database driver interface shared by the SQL engines (sqlite, postgresql, mysql).
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

/* Overwrites s with zeros (a password), then frees it; s may be NULL. */
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
/* core.sql.pool and core.sql.job (sql_job.c), added to the table at the top. */
int bic_open_sql_jobs(struct lua_State *L);

/* SQL LIKE (like.c): pattern against subject with SQLite's semantics (`%`, `_`,
 * ASCII case folding, the escape character esc[0..esclen), esclen 0 for none),
 * in time linear in the subject for patterns without `_`. 1 match, 0 no match,
 * -1 *stop became non-zero on the way, -2 out of memory. */
int bic_like(const char *pattern, size_t plen, const char *subject, size_t n, const char *esc, size_t esclen,
             volatile int *stop);

/* The drivers. sql.c lists the ones this build has: CMake defines BIC_WITH_SQLITE,
 * BIC_WITH_POSTGRESQL and BIC_WITH_MYSQL when it finds the engine's client library. */
extern const bic_sql_driver bic_sql_sqlite;
extern const bic_sql_driver bic_sql_postgresql;
extern const bic_sql_driver bic_sql_mysql;

#endif
