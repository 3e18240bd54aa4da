/* The MySQL / MariaDB driver of the SQL source, over MariaDB Connector/C (see
 * sql.h for the rules). The same client library talks to MySQL servers.
 *
 * - connection: host/port/user/password/database or a unix socket; extra
 *   "key=value" options in opts->params: ssl (true: TLS required),
 *   ssl-ca, ssl-capath, ssl-cert, ssl-key, ssl-cipher, ssl-crl,
 *   ssl-verify-server-cert (true/false), tls-version; any other key is an error;
 * - session: utf8mb4, time_zone '+00:00' (TIMESTAMP columns come in UTC; or the
 *   fixed offset utc_offset_min),
 *   SET SESSION TRANSACTION READ ONLY (opts->read_only: every statement runs
 *   in a read-only transaction), max_statement_time (MariaDB) or
 *   max_execution_time (MySQL) from statement_timeout_ms;
 * - query: a prepared statement with bound parameters, executed and then read
 *   unbuffered (no mysql_stmt_store_result): one row in memory at a time;
 * - a cursor closed with rows unread sends KILL QUERY <connection id> on a
 *   second, short-lived connection, then drains the answer;
 * - a lost connection (2006/2013, server shutdown) is reported retryable.
 * Values: integer types -> INT (BIGINT UNSIGNED above 2^63-1 as text),
 * FLOAT/DOUBLE -> DOUBLE (FLOAT by its shortest decimal form), BIT -> BLOB,
 * everything else as text (DECIMAL keeps every digit; DATE/DATETIME/TIMESTAMP
 * as "YYYY-MM-DD[ hh:mm:ss[.ffffff]]"; the zero date 0000-00-00 is NULL). */
#ifdef BIC_WITH_MYSQL

#include <dlfcn.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h> /* FD_CLOEXEC on Connector/C's socket */

#include <errmsg.h>
#include <mysql.h>

#include "sql.h"

typedef struct my_conn {
  MYSQL *m;
  unsigned long thread_id; /* the server's id of this connection, for KILL QUERY */
  /* kept to open the second connection that cancels a query */
  char *host, *user, *password, *database, *socket, *params;
  int port, connect_timeout_s;
} my_conn;

typedef struct my_col {
  enum enum_field_types type;
  unsigned int flags;
  unsigned int charsetnr;
  unsigned long length; /* declared display length */
  char *buf;
  unsigned long cap;
  unsigned long len;
  my_bool is_null, error;
  long long i;
  double d;
  float f;
} my_col;

typedef struct my_cursor {
  my_conn *mc;
  MYSQL_STMT *st;
  MYSQL_RES *meta;
  MYSQL_BIND *bind;
  my_col *cols;
  char **names;
  int ncols;
  int done;
  char tmp[48];
} my_cursor;

static int truthy(const char *v) {
  return strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "on") == 0 ||
         strcmp(v, "yes") == 0 || strcmp(v, "required") == 0 || strcmp(v, "REQUIRED") == 0;
}

/* Applies one "key=value" option; 0 and err set when the key is unknown. */
static int apply_param(MYSQL *m, const char *k, const char *v, int *tls, char *err, size_t errlen) {
  static const struct { const char *key; enum mysql_option opt; } strs[] = {
    { "ssl-ca", MYSQL_OPT_SSL_CA },         { "ssl-capath", MYSQL_OPT_SSL_CAPATH },
    { "ssl-cert", MYSQL_OPT_SSL_CERT },     { "ssl-key", MYSQL_OPT_SSL_KEY },
    { "ssl-cipher", MYSQL_OPT_SSL_CIPHER }, { "ssl-crl", MYSQL_OPT_SSL_CRL },
    { "ssl-crlpath", MYSQL_OPT_SSL_CRLPATH }, { "tls-version", MARIADB_OPT_TLS_VERSION },
  };
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    if (strcmp(k, strs[i].key) == 0) {
      mysql_optionsv(m, strs[i].opt, v);
      /* a CA means the server's certificate is to be checked */
      if (strs[i].opt == MYSQL_OPT_SSL_CA || strs[i].opt == MYSQL_OPT_SSL_CAPATH) {
        my_bool on = 1;
        mysql_optionsv(m, MYSQL_OPT_SSL_ENFORCE, &on);
        *tls = 1;
      }
      return 1;
    }
  }
  if (strcmp(k, "ssl") == 0 || strcmp(k, "ssl-mode") == 0) {
    my_bool on = truthy(v) || strcmp(v, "VERIFY_CA") == 0 || strcmp(v, "VERIFY_IDENTITY") == 0;
    mysql_optionsv(m, MYSQL_OPT_SSL_ENFORCE, &on);
    if (on) *tls = 1;
    if (strcmp(v, "VERIFY_IDENTITY") == 0 || strcmp(v, "VERIFY_CA") == 0) {
      my_bool verify = 1;
      mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &verify);
    }
    return 1;
  }
  if (strcmp(k, "ssl-verify-server-cert") == 0) {
    my_bool on = (my_bool)(truthy(v) ? 1 : 0);
    mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on);
    return 1;
  }
  snprintf(err, errlen,
           "mysql: unknown connection option \"%.64s\" (known: ssl, ssl-mode, ssl-ca, ssl-capath, "
           "ssl-cert, ssl-key, ssl-cipher, ssl-crl, ssl-crlpath, ssl-verify-server-cert, tls-version)",
           k);
  return 0;
}

/* A connected MYSQL handle (session not yet set up), or NULL with err set. */
/* Connector/C keeps its plugin list for the life of the process (freed only by
 * mysql_library_end, which no one may call while another state of the process
 * still uses it). Pinning the library keeps that memory attributed to it (not
 * to an unloaded module) after Lua unloads the core, so LeakSanitizer's
 * suppression of libmariadb (scripts/lsan.supp) applies. */
static pthread_once_t pin_once = PTHREAD_ONCE_INIT;
static void pin_library(void) {
  Dl_info info;
  /* once, before any thread of the pool opens a connection: mysql_init would
   * otherwise initialise the library from several threads at once */
  (void)mysql_library_init(0, NULL, NULL);
  if (dladdr((void *)mysql_init, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
}

static MYSQL *connect_handle(const my_conn *mc, char *err, size_t errlen) {
  MYSQL *m;
  pthread_once(&pin_once, pin_library);
  m = mysql_init(NULL);
  unsigned int timeout = (unsigned int)(mc->connect_timeout_s > 0 ? mc->connect_timeout_s : 10);
  my_bool off = 0;
  int tls = 0;
  if (!m) { bic_sql_error(err, errlen, NULL, NULL, "out of memory"); return NULL; }
  mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
  mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  mysql_optionsv(m, MYSQL_OPT_RECONNECT, &off);
  mysql_optionsv(m, MYSQL_OPT_LOCAL_INFILE, &off);
  {
    const char *p = mc->params, *item, *eq;
    size_t n;
    while (bic_sql_next_param(&p, &item, &n, &eq)) {
      char *k = bic_sql_decode(item, eq ? (size_t)(eq - item) : n);
      char *v = eq ? bic_sql_decode(eq + 1, n - (size_t)(eq - item) - 1) : bic_sql_strdup("true");
      int ok = k && v && apply_param(m, k, v, &tls, err, errlen);
      if (!k || !v) bic_sql_error(err, errlen, NULL, NULL, "out of memory");
      free(k);
      free(v);
      if (!ok) { mysql_close(m); return NULL; }
    }
  }
  if (!mysql_real_connect(m, mc->socket ? NULL : mc->host, mc->user, mc->password, mc->database,
                          (unsigned int)(mc->port > 0 ? mc->port : 0), mc->socket, 0)) {
    bic_sql_error(err, errlen, mc->password, "mysql: cannot connect: ", mysql_error(m));
    mysql_close(m);
    return NULL;
  }
  { /* Connector/C opens its socket without close-on-exec: a command the connector
     * spawns would inherit the connection (spec/cloexec_spec.lua) */
    int fd = (int)mysql_get_socket(m), flags = fd >= 0 ? fcntl(fd, F_GETFD) : -1;
    if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
  /* Connector/C goes on in clear text when the server offers no TLS: refuse */
  if (tls && !mysql_get_ssl_cipher(m)) {
    bic_sql_error(err, errlen, NULL, NULL,
                  "mysql: TLS was required (ssl options) but the server does not offer it: connection refused");
    mysql_close(m);
    return NULL;
  }
  return m;
}

static void my_close(void *conn) {
  my_conn *mc = conn;
  if (!mc) return;
  if (mc->m) mysql_close(mc->m);
  free(mc->host);
  free(mc->user);
  bic_sql_free_secret(mc->password);
  free(mc->database);
  free(mc->socket);
  free(mc->params);
  free(mc);
}

static int run(my_conn *mc, const char *sql, char *err, size_t errlen) {
  if (mysql_real_query(mc->m, sql, (unsigned long)strlen(sql)) != 0) {
    bic_sql_error(err, errlen, mc->password, "mysql: cannot set up the session: ", mysql_error(mc->m));
    return 0;
  }
  return 1;
}

static void *my_open(const bic_sql_options *o, char *err, size_t errlen) {
  my_conn *mc = calloc(1, sizeof *mc);
  char sql[160];
  pthread_once(&pin_once, pin_library);
  if (!mc) { bic_sql_error(err, errlen, NULL, NULL, "out of memory"); return NULL; }
  mc->host = bic_sql_strdup(o->host ? o->host : "127.0.0.1");
  mc->user = bic_sql_strdup(o->user);
  mc->password = bic_sql_strdup(o->password);
  mc->database = bic_sql_strdup(o->database);
  mc->socket = bic_sql_strdup(o->socket);
  mc->params = bic_sql_strdup(o->params);
  mc->port = o->port;
  mc->connect_timeout_s = o->connect_timeout_s;
  mc->m = connect_handle(mc, err, errlen);
  if (!mc->m) { my_close(mc); return NULL; }
  mc->thread_id = mysql_thread_id(mc->m);
  {
    /* a fixed offset (datetime_offset): TIMESTAMP columns come, and compare
     * with a literal, at it, as the answer says */
    int off = o->utc_offset_min < 0 ? -o->utc_offset_min : o->utc_offset_min;
    if (off > 1439) off = 0;
    snprintf(sql, sizeof sql, "SET time_zone = '%c%02d:%02d'", o->utc_offset_min < 0 ? '-' : '+', off / 60, off % 60);
    /* an offset the server refuses (MariaDB takes -12:59 to +13:00): UTC, as without one */
    if (!run(mc, sql, err, errlen)) {
      if (off == 0 || !run(mc, "SET time_zone = '+00:00'", err, errlen)) goto fail;
      if (err && errlen) err[0] = '\0';
    }
  }
  if (o->read_only && !run(mc, "SET SESSION TRANSACTION READ ONLY", err, errlen)) goto fail;
  if (o->statement_timeout_ms > 0) {
    if (strstr(mysql_get_server_info(mc->m), "MariaDB"))
      snprintf(sql, sizeof sql, "SET SESSION max_statement_time = %d.%03d", o->statement_timeout_ms / 1000,
               o->statement_timeout_ms % 1000);
    else
      snprintf(sql, sizeof sql, "SET SESSION max_execution_time = %d", o->statement_timeout_ms);
    if (!run(mc, sql, err, errlen)) goto fail;
  }
  return mc;
fail:
  my_close(mc);
  return NULL;
}

static int lost(unsigned int e) {
  return e == CR_SERVER_GONE_ERROR || e == CR_SERVER_LOST || e == 1927 /* ER_CONNECTION_KILLED */ ||
         e == 1053 /* ER_SERVER_SHUTDOWN */ || e == 4031 /* MySQL: disconnected by the server */ ||
         e == 2055 /* CR_SERVER_LOST_EXTENDED */;
}

static void free_cursor(my_cursor *cur) {
  if (cur->meta) mysql_free_result(cur->meta);
  if (cur->st) mysql_stmt_close(cur->st);
  for (int i = 0; cur->cols && i < cur->ncols; i++) free(cur->cols[i].buf);
  free(cur->cols);
  free(cur->bind);
  free(cur);
}

static const char *type_name(const my_col *c) {
  int binary = c->charsetnr == 63;
  switch (c->type) {
  case MYSQL_TYPE_TINY: return c->length == 1 ? "tinyint(1)" : "tinyint";
  case MYSQL_TYPE_SHORT: return "smallint";
  case MYSQL_TYPE_INT24: return "mediumint";
  case MYSQL_TYPE_LONG: return "int";
  case MYSQL_TYPE_LONGLONG: return "bigint";
  case MYSQL_TYPE_FLOAT: return "float";
  case MYSQL_TYPE_DOUBLE: return "double";
  case MYSQL_TYPE_DECIMAL: case MYSQL_TYPE_NEWDECIMAL: return "decimal";
  case MYSQL_TYPE_DATE: case MYSQL_TYPE_NEWDATE: return "date";
  case MYSQL_TYPE_TIME: return "time";
  case MYSQL_TYPE_DATETIME: return "datetime";
  case MYSQL_TYPE_TIMESTAMP: return "timestamp";
  case MYSQL_TYPE_YEAR: return "year";
  case MYSQL_TYPE_BIT: return "bit";
  case MYSQL_TYPE_JSON: return "json";
  case MYSQL_TYPE_ENUM: return "enum";
  case MYSQL_TYPE_SET: return "set";
  case MYSQL_TYPE_GEOMETRY: return "geometry";
  case MYSQL_TYPE_VARCHAR: case MYSQL_TYPE_VAR_STRING:
    return (c->flags & ENUM_FLAG) ? "enum" : (c->flags & SET_FLAG) ? "set" : binary ? "varbinary" : "varchar";
  case MYSQL_TYPE_STRING:
    return (c->flags & ENUM_FLAG) ? "enum" : (c->flags & SET_FLAG) ? "set" : binary ? "binary" : "char";
  case MYSQL_TYPE_TINY_BLOB: case MYSQL_TYPE_MEDIUM_BLOB: case MYSQL_TYPE_LONG_BLOB: case MYSQL_TYPE_BLOB:
    return binary ? "blob" : "text";
  default: return "";
  }
}

/* Bytes rather than text: BIT, and string types with the binary character set
 * (numbers and dates also say charset 63, they are text). */
static int binary_bytes(const my_col *c) {
  switch (c->type) {
  case MYSQL_TYPE_BIT: return 1;
  case MYSQL_TYPE_VARCHAR: case MYSQL_TYPE_VAR_STRING: case MYSQL_TYPE_STRING:
  case MYSQL_TYPE_TINY_BLOB: case MYSQL_TYPE_MEDIUM_BLOB: case MYSQL_TYPE_LONG_BLOB: case MYSQL_TYPE_BLOB:
  case MYSQL_TYPE_GEOMETRY:
    return c->charsetnr == 63;
  default: return 0;
  }
}

static void *my_query(void *conn, const char *sql, const bic_sql_value *params, int nparams,
                      int *retryable, char *err, size_t errlen) {
  my_conn *mc = conn;
  my_cursor *cur = calloc(1, sizeof *cur);
  MYSQL_BIND *pb = NULL;
  my_bool *pnull = NULL;
  char *bools = NULL;
  unsigned long *plen = NULL;
  MYSQL_FIELD *fields;
  int ok = 0;
  *retryable = 0;
  if (!cur) { bic_sql_error(err, errlen, NULL, NULL, "out of memory"); return NULL; }
  cur->mc = mc;
  cur->st = mysql_stmt_init(mc->m);
  if (!cur->st) {
    *retryable = lost(mysql_errno(mc->m));
    bic_sql_error(err, errlen, mc->password, "mysql: ", mysql_error(mc->m));
    goto done;
  }
  if (mysql_stmt_prepare(cur->st, sql, (unsigned long)strlen(sql)) != 0) {
    *retryable = lost(mysql_stmt_errno(cur->st));
    bic_sql_error(err, errlen, mc->password, "mysql: ", mysql_stmt_error(cur->st));
    goto done;
  }
  if ((int)mysql_stmt_param_count(cur->st) != nparams) {
    snprintf(err, errlen, "mysql: the statement has %lu parameters, %d given",
             mysql_stmt_param_count(cur->st), nparams);
    goto done;
  }
  if (nparams > 0) {
    pb = calloc((size_t)nparams, sizeof *pb);
    pnull = calloc((size_t)nparams, sizeof *pnull);
    plen = calloc((size_t)nparams, sizeof *plen);
    bools = calloc((size_t)nparams, 1);
    if (!pb || !pnull || !plen || !bools) { bic_sql_error(err, errlen, NULL, NULL, "out of memory"); goto done; }
    for (int i = 0; i < nparams; i++) {
      const bic_sql_value *v = &params[i];
      switch (v->kind) {
      case BIC_SQL_NULL:
        pb[i].buffer_type = MYSQL_TYPE_NULL;
        pnull[i] = 1;
        pb[i].is_null = &pnull[i];
        break;
      case BIC_SQL_INT:
        pb[i].buffer_type = MYSQL_TYPE_LONGLONG;
        pb[i].buffer = (void *)&v->i;
        break;
      case BIC_SQL_DOUBLE:
        pb[i].buffer_type = MYSQL_TYPE_DOUBLE;
        pb[i].buffer = (void *)&v->d;
        break;
      case BIC_SQL_BOOL:
        bools[i] = v->i ? 1 : 0;
        pb[i].buffer_type = MYSQL_TYPE_TINY;
        pb[i].buffer = &bools[i];
        break;
      case BIC_SQL_TEXT:
      case BIC_SQL_BLOB:
        pb[i].buffer_type = v->kind == BIC_SQL_TEXT ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
        pb[i].buffer = (void *)(v->s ? v->s : "");
        plen[i] = (unsigned long)v->len;
        pb[i].buffer_length = (unsigned long)v->len;
        pb[i].length = &plen[i];
        break;
      }
    }
    if (mysql_stmt_bind_param(cur->st, pb)) {
      bic_sql_error(err, errlen, mc->password, "mysql: ", mysql_stmt_error(cur->st));
      goto done;
    }
  }
  cur->meta = mysql_stmt_result_metadata(cur->st);
  if (!cur->meta) {
    bic_sql_error(err, errlen, NULL, NULL, "mysql: the statement returns no rows (not a query)");
    goto done;
  }
  if (mysql_stmt_execute(cur->st) != 0) {
    *retryable = lost(mysql_stmt_errno(cur->st));
    bic_sql_error(err, errlen, mc->password, "mysql: ", mysql_stmt_error(cur->st));
    goto done;
  }
  cur->ncols = (int)mysql_num_fields(cur->meta);
  fields = mysql_fetch_fields(cur->meta);
  cur->cols = calloc((size_t)cur->ncols + 1, sizeof *cur->cols);
  cur->bind = calloc((size_t)cur->ncols + 1, sizeof *cur->bind);
  if (!cur->cols || !cur->bind) { bic_sql_error(err, errlen, NULL, NULL, "out of memory"); goto done; }
  for (int i = 0; i < cur->ncols; i++) {
    my_col *c = &cur->cols[i];
    MYSQL_BIND *b = &cur->bind[i];
    c->type = fields[i].type;
    c->flags = fields[i].flags;
    c->charsetnr = fields[i].charsetnr;
    c->length = fields[i].length;
    b->is_null = &c->is_null;
    b->error = &c->error;
    b->length = &c->len;
    switch (c->type) {
    case MYSQL_TYPE_TINY: case MYSQL_TYPE_SHORT: case MYSQL_TYPE_INT24: case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_YEAR:
      b->buffer_type = MYSQL_TYPE_LONGLONG;
      b->buffer = &c->i;
      b->is_unsigned = 0;
      break;
    case MYSQL_TYPE_LONGLONG:
      if (c->flags & UNSIGNED_FLAG) goto as_text; /* may exceed 2^63-1 */
      b->buffer_type = MYSQL_TYPE_LONGLONG;
      b->buffer = &c->i;
      break;
    case MYSQL_TYPE_DOUBLE:
      b->buffer_type = MYSQL_TYPE_DOUBLE;
      b->buffer = &c->d;
      break;
    case MYSQL_TYPE_FLOAT:
      b->buffer_type = MYSQL_TYPE_FLOAT;
      b->buffer = &c->f;
      break;
    default:
    as_text:
      c->cap = 256;
      c->buf = malloc(c->cap);
      if (!c->buf) { bic_sql_error(err, errlen, NULL, NULL, "out of memory"); goto done; }
      b->buffer_type = binary_bytes(c) ? MYSQL_TYPE_BLOB : MYSQL_TYPE_STRING;
      b->buffer = c->buf;
      b->buffer_length = c->cap;
      break;
    }
  }
  if (mysql_stmt_bind_result(cur->st, cur->bind)) {
    bic_sql_error(err, errlen, mc->password, "mysql: ", mysql_stmt_error(cur->st));
    goto done;
  }
  ok = 1;
done:
  free(pb);
  free(pnull);
  free(plen);
  free(bools);
  if (!ok) {
    free_cursor(cur);
    return NULL;
  }
  return cur;
}

static int my_ncols(void *cursor) { return ((my_cursor *)cursor)->ncols; }

static const char *my_colname(void *cursor, int col) {
  my_cursor *cur = cursor;
  MYSQL_FIELD *f;
  if (col < 0 || col >= cur->ncols) return "";
  f = mysql_fetch_field_direct(cur->meta, (unsigned int)col);
  return f && f->name ? f->name : "";
}

static const char *my_coltype(void *cursor, int col) {
  my_cursor *cur = cursor;
  if (col < 0 || col >= cur->ncols) return "";
  return type_name(&cur->cols[col]);
}

/* The statement's error, else the connection's (a fetch interrupted by
 * max_statement_time leaves the statement's own message empty). */
static const char *stmt_error(my_cursor *cur) {
  const char *e = mysql_stmt_error(cur->st);
  if (e && *e) return e;
  e = mysql_error(cur->mc->m);
  if (e && *e) return e;
  return "the server ended the answer with an error";
}

static int my_step(void *cursor, char *err, size_t errlen) {
  my_cursor *cur = cursor;
  int r;
  if (cur->done) return 0;
  r = mysql_stmt_fetch(cur->st);
  if (r == MYSQL_NO_DATA) {
    cur->done = 1;
    return 0;
  }
  if (r == 1) {
    bic_sql_error(err, errlen, cur->mc->password, "mysql: ", stmt_error(cur));
    cur->done = 1;
    return -1;
  }
  if (r == MYSQL_DATA_TRUNCATED) {
    /* a text value longer than its buffer: grow the buffer, fetch it again */
    for (int i = 0; i < cur->ncols; i++) {
      my_col *c = &cur->cols[i];
      MYSQL_BIND *b = &cur->bind[i];
      if (!c->buf || c->is_null || c->len <= c->cap) continue;
      {
        unsigned long cap = c->len + 1;
        char *nb = realloc(c->buf, cap);
        if (!nb) {
          bic_sql_error(err, errlen, NULL, NULL, "out of memory");
          return -1;
        }
        c->buf = nb;
        c->cap = cap;
        b->buffer = nb;
        b->buffer_length = cap;
        if (mysql_stmt_fetch_column(cur->st, b, (unsigned int)i, 0) != 0) {
          bic_sql_error(err, errlen, cur->mc->password, "mysql: ", mysql_stmt_error(cur->st));
          return -1;
        }
      }
    }
    /* the bind buffers moved: tell the statement before the next fetch */
    if (mysql_stmt_bind_result(cur->st, cur->bind)) {
      bic_sql_error(err, errlen, cur->mc->password, "mysql: ", mysql_stmt_error(cur->st));
      return -1;
    }
  }
  return 1;
}

/* The shortest decimal form that reads back as the same float, as a double:
 * FLOAT 0.1 is 0.1, not 0.100000001490116. */
static double float_value(float f, char *tmp, size_t n) {
  if (isnan(f) || isinf(f)) return (double)f;
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(tmp, n, "%.*g", prec, (double)f);
    if (strtof(tmp, NULL) == f) break;
  }
  return strtod(tmp, NULL);
}

static void my_value(void *cursor, int col, bic_sql_value *out) {
  my_cursor *cur = cursor;
  my_col *c;
  memset(out, 0, sizeof *out);
  out->kind = BIC_SQL_NULL;
  if (col < 0 || col >= cur->ncols) return;
  c = &cur->cols[col];
  if (c->is_null) return;
  if (!c->buf) {
    switch (c->type) {
    case MYSQL_TYPE_DOUBLE: out->kind = BIC_SQL_DOUBLE; out->d = c->d; return;
    case MYSQL_TYPE_FLOAT: out->kind = BIC_SQL_DOUBLE; out->d = float_value(c->f, cur->tmp, sizeof cur->tmp); return;
    default: out->kind = BIC_SQL_INT; out->i = c->i; return;
    }
  }
  out->s = c->buf;
  out->len = c->len < c->cap ? c->len : c->cap;
  switch (c->type) {
  case MYSQL_TYPE_DATE: case MYSQL_TYPE_NEWDATE: case MYSQL_TYPE_DATETIME: case MYSQL_TYPE_TIMESTAMP:
    if (out->len >= 10 && memcmp(out->s, "0000-00-00", 10) == 0) {
      out->s = NULL;
      out->len = 0;
      return; /* the zero date is no date */
    }
    break;
  default:
    break;
  }
  out->kind = cur->bind[col].buffer_type == MYSQL_TYPE_BLOB ? BIC_SQL_BLOB : BIC_SQL_TEXT;
}

/* KILL QUERY on a second connection, so that the server stops producing rows. */
static void kill_query(my_conn *mc) {
  char err[256], sql[64];
  MYSQL *k = connect_handle(mc, err, sizeof err);
  if (!k) return;
  snprintf(sql, sizeof sql, "KILL QUERY %lu", mc->thread_id);
  (void)mysql_real_query(k, sql, (unsigned long)strlen(sql));
  mysql_close(k);
}

static void my_close_cursor(void *cursor) {
  my_cursor *cur = cursor;
  if (!cur) return;
  if (!cur->done) {
    kill_query(cur->mc);
    /* reads and drops the rest of the answer */
    while (1) {
      int r = mysql_stmt_fetch(cur->st);
      if (r == MYSQL_NO_DATA || r == 1) break;
    }
  }
  free_cursor(cur);
}

static int my_alive(void *conn) {
  my_conn *mc = conn;
  struct pollfd p;
  if (!mc || !mc->m) return 0;
  /* an idle connection has nothing to read: readable means the server closed it */
  p.fd = (int)mysql_get_socket(mc->m);
  p.events = POLLIN;
  p.revents = 0;
  if (p.fd < 0) return 0;
  if (poll(&p, 1, 0) != 0) return 0;
  return 1;
}

/* From the pool's service thread while another thread runs a statement on
 * conn: the fields kill_query reads are set at open and never change. */
static void my_cancel(void *conn) {
  if (conn) kill_query((my_conn *)conn);
}

const bic_sql_driver bic_sql_mysql = {
  .engine = "mysql", .open = my_open, .query = my_query, .ncols = my_ncols,
  .colname = my_colname, .coltype = my_coltype, .step = my_step, .value = my_value,
  .close_cursor = my_close_cursor, .alive = my_alive, .cancel = my_cancel, .close = my_close,
};

#else
typedef int bic_sql_mysql_unused; /* ISO C wants a declaration in every file */
#endif
