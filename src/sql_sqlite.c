/* The SQLite driver (libsqlite3): read-only open, query_only, a busy timeout,
 * prepared statements with bound parameters, rows stepped one at a time.
 * like() is replaced by bic_like (like.c): the same answers, in linear time
 * and stoppable by cancel(), where SQLite's own backtracks inside one call
 * that no interrupt reaches. */
#ifdef BIC_WITH_SQLITE
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sql.h"

#define DEFAULT_BUSY_MS 5000

typedef struct lite_conn {
  sqlite3 *db;
  char *path;
  volatile int interrupted; /* set by cancel(): like() stops too */
} lite_conn;

typedef struct lite_cursor {
  sqlite3_stmt *stmt;
  lite_conn *conn;
  int ncols;
} lite_cursor;

static void lite_close(void *p) {
  lite_conn *c = (lite_conn *)p;
  if (c == NULL) return;
  sqlite3_close_v2(c->db); /* statements still open keep it alive until finalized */
  free(c->path);
  free(c);
}

/* like(pattern, subject [, escape]), as SQLite's: NULL in, NULL out; the
 * pattern length limit and the one-character escape checked alike. */
static void like_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  lite_conn *c = (lite_conn *)sqlite3_user_data(ctx);
  const char *pat = (const char *)sqlite3_value_text(argv[0]);
  int plen = sqlite3_value_bytes(argv[0]);
  const char *sub = (const char *)sqlite3_value_text(argv[1]);
  int n = sqlite3_value_bytes(argv[1]);
  const char *esc = NULL;
  int esclen = 0, rc;
  if (plen > sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LIKE_PATTERN_LENGTH, -1)) {
    sqlite3_result_error(ctx, "LIKE or GLOB pattern too complex", -1);
    return;
  }
  if (argc == 3) {
    esc = (const char *)sqlite3_value_text(argv[2]);
    if (esc == NULL) return;
    esclen = sqlite3_value_bytes(argv[2]);
    /* one character as SQLite reads one: a byte below 0xC0, or a lead byte and
     * every continuation byte after it */
    {
      int one = esclen >= 1;
      for (int i = 1; one && i < esclen; i++)
        one = (unsigned char)esc[0] >= 0xC0 && ((unsigned char)esc[i] & 0xC0) == 0x80;
      if (!one) esclen = 0;
    }
    if (esclen == 0) {
      sqlite3_result_error(ctx, "ESCAPE expression must be a single character", -1);
      return;
    }
  }
  if (pat == NULL || sub == NULL) return;
  /* SQLite's like() reads both up to a NUL byte: so does this one */
  rc = bic_like(pat, strnlen(pat, (size_t)plen), sub, strnlen(sub, (size_t)n), esc, (size_t)esclen,
                &c->interrupted);
  if (rc == -1) sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
  else if (rc == -2) sqlite3_result_error_nomem(ctx);
  else sqlite3_result_int(ctx, rc);
}

static void *lite_open(const bic_sql_options *o, char *err, size_t errlen) {
  lite_conn *c;
  struct stat st;
  char *msg = NULL;
  int rc;
  if (o->path == NULL || o->path[0] == '\0') {
    snprintf(err, errlen, "sqlite: no database file given");
    return NULL;
  }
  /* sqlite3 says "unable to open database file" for every reason: tell which. */
  if (stat(o->path, &st) != 0) {
    snprintf(err, errlen, "cannot open database %s: %s", o->path, strerror(errno));
    return NULL;
  }
  if (S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "cannot open database %s: it is a directory", o->path);
    return NULL;
  }
  if (access(o->path, R_OK) != 0) {
    snprintf(err, errlen, "cannot open database %s: %s", o->path, strerror(errno));
    return NULL;
  }
  c = (lite_conn *)calloc(1, sizeof *c);
  if (c == NULL || (c->path = strdup(o->path)) == NULL) {
    free(c);
    snprintf(err, errlen, "sqlite: out of memory");
    return NULL;
  }
  /* NOMUTEX: a connection is used by one thread at a time (the pool leases it
   * to one job); SQLite's serialized mode took a mutex on every column read,
   * a fifth of the CPU of a large answer. sqlite3_interrupt needs none. */
  rc = sqlite3_open_v2(o->path, &c->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "cannot open database %s: %s", o->path, c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
    lite_close(c);
    return NULL;
  }
  sqlite3_busy_timeout(c->db, o->busy_timeout_ms > 0 ? o->busy_timeout_ms : DEFAULT_BUSY_MS);
  sqlite3_extended_result_codes(c->db, 1);
  if (sqlite3_create_function_v2(c->db, "like", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, c, like_fn, NULL, NULL,
                                 NULL) != SQLITE_OK ||
      sqlite3_create_function_v2(c->db, "like", 3, SQLITE_UTF8 | SQLITE_DETERMINISTIC, c, like_fn, NULL, NULL,
                                 NULL) != SQLITE_OK) {
    snprintf(err, errlen, "cannot open database %s: %s", o->path, sqlite3_errmsg(c->db));
    lite_close(c);
    return NULL;
  }
  /* Read-only twice over: the file is opened read-only, and query_only refuses
   * any write even through ATTACH. A file that is not a database fails here. */
  rc = sqlite3_exec(c->db, "PRAGMA query_only = 1; SELECT count(*) FROM sqlite_master", NULL, NULL, &msg);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "cannot open database %s: %s", o->path, msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    lite_close(c);
    return NULL;
  }
  return c;
}

static int only_space(const char *s) {
  for (; s != NULL && *s; s++)
    if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r' && *s != ';') return 0;
  return 1;
}

static void *lite_query(void *conn, const char *sql, const bic_sql_value *params, int nparams, int *retryable,
                        char *err, size_t errlen) {
  lite_conn *c = (lite_conn *)conn;
  lite_cursor *cur;
  sqlite3_stmt *stmt = NULL;
  const char *tail = NULL;
  int i, rc, expected;
  *retryable = 0;
  rc = sqlite3_prepare_v2(c->db, sql, -1, &stmt, &tail);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s", sqlite3_errmsg(c->db));
    sqlite3_finalize(stmt);
    return NULL;
  }
  if (stmt == NULL) {
    snprintf(err, errlen, "no SQL statement");
    return NULL;
  }
  if (!only_space(tail)) {
    snprintf(err, errlen, "one SQL statement only (more text follows the first)");
    sqlite3_finalize(stmt);
    return NULL;
  }
  if (!sqlite3_stmt_readonly(stmt)) {
    snprintf(err, errlen, "only statements that read are allowed");
    sqlite3_finalize(stmt);
    return NULL;
  }
  expected = sqlite3_bind_parameter_count(stmt);
  if (expected != nparams) {
    snprintf(err, errlen, "the statement has %d parameters, %d given", expected, nparams);
    sqlite3_finalize(stmt);
    return NULL;
  }
  for (i = 0; i < nparams; i++) {
    const bic_sql_value *p = &params[i];
    switch (p->kind) {
    case BIC_SQL_NULL: rc = sqlite3_bind_null(stmt, i + 1); break;
    case BIC_SQL_INT:
    case BIC_SQL_BOOL: rc = sqlite3_bind_int64(stmt, i + 1, (sqlite3_int64)p->i); break;
    case BIC_SQL_DOUBLE: rc = sqlite3_bind_double(stmt, i + 1, p->d); break;
    case BIC_SQL_TEXT: rc = sqlite3_bind_text64(stmt, i + 1, p->s ? p->s : "", p->len, SQLITE_TRANSIENT, SQLITE_UTF8); break;
    case BIC_SQL_BLOB: rc = sqlite3_bind_blob64(stmt, i + 1, p->s ? p->s : "", p->len, SQLITE_TRANSIENT); break;
    default: rc = SQLITE_MISUSE; break;
    }
    if (rc != SQLITE_OK) {
      snprintf(err, errlen, "parameter %d: %s", i + 1, sqlite3_errstr(rc));
      sqlite3_finalize(stmt);
      return NULL;
    }
  }
  cur = (lite_cursor *)calloc(1, sizeof *cur);
  if (cur == NULL) {
    snprintf(err, errlen, "sqlite: out of memory");
    sqlite3_finalize(stmt);
    return NULL;
  }
  cur->stmt = stmt;
  cur->conn = c;
  cur->ncols = sqlite3_column_count(stmt);
  return cur;
}

static int lite_ncols(void *cursor) { return ((lite_cursor *)cursor)->ncols; }

static const char *lite_colname(void *cursor, int col) {
  const char *n = sqlite3_column_name(((lite_cursor *)cursor)->stmt, col);
  return n ? n : "";
}

static const char *lite_coltype(void *cursor, int col) {
  const char *t = sqlite3_column_decltype(((lite_cursor *)cursor)->stmt, col);
  return t ? t : "";
}

static int lite_step(void *cursor, char *err, size_t errlen) {
  lite_cursor *cur = (lite_cursor *)cursor;
  int rc = sqlite3_step(cur->stmt);
  if (rc == SQLITE_ROW) return 1;
  if (rc == SQLITE_DONE) return 0;
  snprintf(err, errlen, "%s", sqlite3_errmsg(cur->conn->db));
  return -1;
}

static void lite_value(void *cursor, int col, bic_sql_value *out) {
  sqlite3_stmt *st = ((lite_cursor *)cursor)->stmt;
  memset(out, 0, sizeof *out);
  switch (sqlite3_column_type(st, col)) {
  case SQLITE_INTEGER:
    out->kind = BIC_SQL_INT;
    out->i = (long long)sqlite3_column_int64(st, col);
    break;
  case SQLITE_FLOAT:
    out->kind = BIC_SQL_DOUBLE;
    out->d = sqlite3_column_double(st, col);
    break;
  case SQLITE_TEXT:
    out->kind = BIC_SQL_TEXT;
    out->s = (const char *)sqlite3_column_text(st, col);
    out->len = (size_t)sqlite3_column_bytes(st, col);
    if (out->s == NULL) out->kind = BIC_SQL_NULL; /* out of memory */
    break;
  case SQLITE_BLOB:
    out->kind = BIC_SQL_BLOB;
    out->s = (const char *)sqlite3_column_blob(st, col);
    out->len = (size_t)sqlite3_column_bytes(st, col);
    break;
  default: out->kind = BIC_SQL_NULL; break;
  }
}

static void lite_close_cursor(void *cursor) {
  lite_cursor *cur = (lite_cursor *)cursor;
  if (cur == NULL) return;
  sqlite3_finalize(cur->stmt);
  free(cur);
}

static int lite_alive(void *conn) { return conn != NULL; }

/* From another thread: sqlite3_interrupt is safe to call while a statement
 * runs; it stops the virtual machine, and the flag stops like(). */
static void lite_cancel(void *conn) {
  lite_conn *c = (lite_conn *)conn;
  if (c == NULL) return;
  c->interrupted = 1;
  sqlite3_interrupt(c->db);
}

const bic_sql_driver bic_sql_sqlite = {
    .engine = "sqlite", .open = lite_open, .query = lite_query, .ncols = lite_ncols,
    .colname = lite_colname, .coltype = lite_coltype, .step = lite_step, .value = lite_value,
    .close_cursor = lite_close_cursor, .alive = lite_alive, .cancel = lite_cancel, .close = lite_close,
};
#else
typedef int bic_sql_sqlite_unused; /* ISO C wants something in a translation unit */
#endif
