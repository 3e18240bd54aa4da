/* The PostgreSQL driver of the SQL source, over libpq (see sql.h for the rules).
 *
 * - connection: PQconnectdbParams with host/port/user/password/dbname and every
 *   extra "key=value" of opts->params passed through to libpq (sslmode,
 *   sslrootcert, sslcert, sslkey, application_name, target_session_attrs, ...);
 *   an unknown key is libpq's own precise error;
 * - session: client_encoding UTF8, TimeZone UTC (or the fixed offset utc_offset_min), DateStyle ISO, IntervalStyle
 *   iso_8601 left alone, extra_float_digits 3 (exact doubles),
 *   default_transaction_read_only on (opts->read_only), statement_timeout;
 * - query: a SELECT (WITH, VALUES, TABLE) runs as a server-side cursor in a
 *   read-only transaction: DECLARE bic_cursor_N NO SCROLL CURSOR FOR ... with the
 *   parameters bound (text, types int8/float8/bool for numbers and booleans,
 *   text left to the server to infer), read by FETCH (one row first, then up to
 *   1000 rows or about 4 MB a batch): at most one batch in memory however many
 *   rows the answer has. Another statement runs with
 *   PQsendQueryParams in single-row mode;
 * - a cursor closed with rows unread ends its transaction (ROLLBACK): the
 *   server drops the portal, and nothing runs between two FETCHes; in
 *   single-row mode the query is cancelled (PQcancel) and the rest drained;
 * - a lost connection (server restart, network) makes query() report
 *   retryable so that sql.c reopens once.
 * Values: int2/int4/int8/oid -> INT, float4/float8 -> DOUBLE (NaN, Infinity
 * included), bool -> BOOL, everything else as the server's text (numeric keeps
 * every digit; timestamptz is in UTC and its "+00" suffix is dropped). */
#ifdef BIC_WITH_POSTGRESQL

#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#include "sql.h"

typedef struct pg_conn {
  PGconn *c;
  PGcancel *cancel; /* made at open: PQcancel from another thread needs no access to c */
  char *password;   /* for masking error texts */
  int read_only;
  unsigned int cursors; /* cursors declared so far: each gets a name of its own */
} pg_conn;

/* Rows per FETCH of a server-side cursor: one PGresult per batch costs far
 * less client CPU than single-row mode's one PGresult per row (measured: 0.22 s
 * against 1.19 s of user time for 1M rows of 6 columns), memory stays bounded.
 * Rows larger than PG_BATCH_BYTES / PG_BATCH shrink the next batch, so that a
 * batch holds about PG_BATCH_BYTES whatever the rows (a table of 8 MB values
 * is fetched one row at a time). */
#define PG_BATCH 1000
#define PG_BATCH_BYTES (4 * 1024 * 1024)

typedef struct pg_cursor {
  pg_conn *pc;
  int batched;     /* 1: a server-side cursor read by FETCH; 0: single-row mode */
  PGresult *meta;  /* single-row mode: the first result (column names and types) */
  PGresult *row;   /* single-row mode: the current row, may be meta */
  int pending;     /* single-row mode: meta holds a row not yet handed out by step() */
  PGresult *batch; /* cursor: the current batch of rows (also the column names and types) */
  int nrows, rowi; /* cursor: rows in the batch, the current one */
  int last;        /* cursor: the batch was short, no FETCH after it */
  int inflight;    /* cursor: the next FETCH is sent, its answer not yet read */
  int asked;       /* cursor: rows the FETCH in flight asked for */
  char name[32];   /* cursor: its name on the server */
  int ncols;
  int done;        /* the answer was read to its end */
  char buf[64];    /* scratch for a trimmed timestamptz */
} pg_cursor;

#define PG_MAX_KEYS 40

static void add_key(const char **keys, const char **vals, int *nk, const char *k, const char *v) {
  if (v && *nk < PG_MAX_KEYS) {
    keys[*nk] = k;
    vals[*nk] = v;
    (*nk)++;
  }
}

static void pg_close(void *conn) {
  pg_conn *pc = conn;
  if (!pc) return;
  if (pc->cancel) PQfreeCancel(pc->cancel);
  if (pc->c) PQfinish(pc->c);
  bic_sql_free_secret(pc->password);
  free(pc);
}

/* libpq prints notices (a server's "terminating connection" on shutdown) on
 * stderr by default; a lost connection is reported through the query instead. */
static void quiet_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static void *pg_open(const bic_sql_options *o, char *err, size_t errlen) {
  const char *keys[PG_MAX_KEYS + 1], *vals[PG_MAX_KEYS + 1];
  char *owned[PG_MAX_KEYS * 2];
  int nk = 0, nowned = 0;
  char port[16], ctimeout[16];
  pg_conn *pc = calloc(1, sizeof *pc);
  if (!pc) { bic_sql_error(err, errlen, NULL, NULL, "out of memory"); return NULL; }

  add_key(keys, vals, &nk, "host", o->host);
  if (o->port > 0) { snprintf(port, sizeof port, "%d", o->port); add_key(keys, vals, &nk, "port", port); }
  add_key(keys, vals, &nk, "user", o->user);
  add_key(keys, vals, &nk, "password", o->password);
  add_key(keys, vals, &nk, "dbname", o->database);
  snprintf(ctimeout, sizeof ctimeout, "%d", o->connect_timeout_s > 0 ? o->connect_timeout_s : 10);
  add_key(keys, vals, &nk, "connect_timeout", ctimeout);
  add_key(keys, vals, &nk, "application_name", "biconnector");
  add_key(keys, vals, &nk, "client_encoding", "UTF8");
  {
    const char *p = o->params, *item, *eq;
    size_t n;
    while (bic_sql_next_param(&p, &item, &n, &eq)) {
      char *k, *v;
      if (!eq) {
        snprintf(err, errlen, "postgresql: connection parameter without a value: %.*s", (int)(n > 64 ? 64 : n), item);
        goto fail;
      }
      if (nk >= PG_MAX_KEYS) {
        bic_sql_error(err, errlen, NULL, NULL, "postgresql: too many connection parameters");
        goto fail;
      }
      k = bic_sql_decode(item, (size_t)(eq - item));
      v = bic_sql_decode(eq + 1, n - (size_t)(eq - item) - 1);
      if (!k || !v) { free(k); free(v); bic_sql_error(err, errlen, NULL, NULL, "out of memory"); goto fail; }
      owned[nowned++] = k;
      owned[nowned++] = v;
      /* a later key overrides an earlier one (libpq takes the last) */
      keys[nk] = k; vals[nk] = v; nk++;
    }
  }
  keys[nk] = NULL;
  vals[nk] = NULL;
  pc->password = bic_sql_strdup(o->password);
  pc->read_only = o->read_only;
  pc->c = PQconnectdbParams(keys, vals, 0);
  for (int i = 0; i < nowned; i++) free(owned[i]);
  nowned = 0;
  if (pc->c) PQsetNoticeProcessor(pc->c, quiet_notice, NULL);
  if (!pc->c || PQstatus(pc->c) != CONNECTION_OK) {
    bic_sql_error(err, errlen, pc->password, "postgresql: cannot connect: ",
            pc->c ? PQerrorMessage(pc->c) : "out of memory");
    pg_close(pc);
    return NULL;
  }
  {
    char sql[512], zone[64];
    PGresult *r;
    int off = o->utc_offset_min < 0 ? -o->utc_offset_min : o->utc_offset_min;
    /* a fixed offset (datetime_offset): timestamptz is written, and compared
     * with a literal, at it ("2025-05-31 17:01:55+02"), as the answer says */
    if (off == 0 || off > 1439) snprintf(zone, sizeof zone, "SET TimeZone = 'UTC'");
    else
      snprintf(zone, sizeof zone, "SET TIME ZONE INTERVAL '%c%02d:%02d' HOUR TO MINUTE",
               o->utc_offset_min < 0 ? '-' : '+', off / 60, off % 60);
    snprintf(sql, sizeof sql,
             "%s; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3; "
             "SET default_transaction_read_only = %s; SET statement_timeout = %d",
             zone, o->read_only ? "on" : "off", o->statement_timeout_ms > 0 ? o->statement_timeout_ms : 0);
    r = PQexec(pc->c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      bic_sql_error(err, errlen, pc->password, "postgresql: cannot set up the session: ", PQerrorMessage(pc->c));
      PQclear(r);
      pg_close(pc);
      return NULL;
    }
    PQclear(r);
  }
  pc->cancel = PQgetCancel(pc->c);
  return pc;

fail:
  for (int i = 0; i < nowned; i++) free(owned[i]);
  pg_close(pc);
  return NULL;
}

/* Reads results until the end of the answer. */
static void drain(PGconn *c) {
  PGresult *r;
  while ((r = PQgetResult(c)) != NULL) PQclear(r);
}

static int conn_lost(PGconn *c) {
  return PQstatus(c) == CONNECTION_BAD;
}

/* A statement a cursor can be declared for (SELECT, WITH, VALUES, TABLE, or a
 * parenthesized one); anything else runs in single-row mode. */
static int is_select(const char *sql) {
  static const char *const words[] = { "select", "with", "values", "table" };
  const char *p = sql;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (p[0] == '-' && p[1] == '-') {
      while (*p && *p != '\n') p++;
      continue;
    }
    break;
  }
  if (*p == '(') return 1;
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
    size_t n = strlen(words[i]);
    if (strncasecmp(p, words[i], n) == 0 && !(p[n] == '_' || (p[n] >= 'a' && p[n] <= 'z') ||
                                              (p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= '0' && p[n] <= '9')))
      return 1;
  }
  return 0;
}

/* Runs sql on the connection; 1 when it succeeded. */
static int exec_ok(pg_conn *pc, const char *sql) {
  PGresult *r = PQexec(pc->c, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  return ok;
}

/* Ends the cursor's transaction (which closes the cursor: the server stops). */
static void end_transaction(pg_conn *pc, int commit) {
  if (PQstatus(pc->c) != CONNECTION_OK || PQtransactionStatus(pc->c) == PQTRANS_IDLE) return;
  (void)exec_ok(pc, commit ? "COMMIT" : "ROLLBACK");
}

/* Rows the size of a batch is judged by: every row of a batch this small, else
 * this many spread over it (a full batch of small rows costs 6000 length calls
 * per FETCH otherwise, measured at 2-3% of the worker's CPU). */
#define PG_SAMPLE 32

/* Rows to ask for next: PG_BATCH, fewer when the last batch's rows were large. */
static int next_batch_size(const pg_cursor *cur) {
  long long bytes = 0, rows, seen = 0;
  int n = cur->batch ? PQntuples(cur->batch) : 0, nf = cur->batch ? PQnfields(cur->batch) : 0;
  int step;
  if (cur->batch == NULL) return 1; /* the first row tells how large the rows are */
  if (n <= 0) return PG_BATCH;
  step = n > PG_SAMPLE ? n / PG_SAMPLE : 1;
  for (int r = 0; r < n; r += step, seen++)
    for (int f = 0; f < nf; f++) bytes += PQgetlength(cur->batch, r, f);
  if (bytes <= 0) return PG_BATCH;
  rows = (long long)PG_BATCH_BYTES * seen / bytes;
  return rows < 1 ? 1 : rows > PG_BATCH ? PG_BATCH : (int)rows;
}

/* Sends the next FETCH without waiting: the server produces the next batch
 * while the caller encodes this one (the two run on two cores). */
static int send_fetch(pg_cursor *cur, char *err, size_t errlen) {
  char sql[80];
  cur->asked = next_batch_size(cur);
  snprintf(sql, sizeof sql, "FETCH %d FROM %s", cur->asked, cur->name);
  if (!PQsendQuery(cur->pc->c, sql)) {
    bic_sql_error(err, errlen, cur->pc->password, "postgresql: ", PQerrorMessage(cur->pc->c));
    return 0;
  }
  cur->inflight = 1;
  return 1;
}

/* Reads the FETCH in flight as the current batch, and sends the next one when
 * this batch was full; 0 and err set on failure. */
static int collect_batch(pg_cursor *cur, char *err, size_t errlen) {
  PGresult *r = PQgetResult(cur->pc->c);
  cur->inflight = 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    bic_sql_error(err, errlen, cur->pc->password, "postgresql: ", r ? PQresultErrorMessage(r) : PQerrorMessage(cur->pc->c));
    PQclear(r);
    drain(cur->pc->c);
    return 0;
  }
  drain(cur->pc->c);
  if (cur->batch) PQclear(cur->batch);
  cur->batch = r;
  cur->nrows = PQntuples(r);
  cur->rowi = -1;
  cur->last = cur->nrows < cur->asked;
  if (!cur->last) return send_fetch(cur, err, errlen);
  return 1;
}

/* BEGIN [READ ONLY]; DECLARE bic_cursor_N NO SCROLL CURSOR FOR sql (parameters
 * bound); the first FETCH (for the column names and types). */
static pg_cursor *cursor_query(pg_conn *pc, const char *sql, int nparams, const Oid *types,
                               const char *const *values, const int *lengths, const int *formats,
                               int *retryable, char *err, size_t errlen) {
  char name[32], head[80];
  size_t n = strlen(sql), hn;
  char *decl;
  PGresult *r;
  pg_cursor *cur;
  snprintf(name, sizeof name, "bic_cursor_%u", ++pc->cursors);
  hn = (size_t)snprintf(head, sizeof head, "DECLARE %s NO SCROLL CURSOR FOR ", name);
  r = PQexec(pc->c, pc->read_only ? "BEGIN READ ONLY" : "BEGIN");
  if (PQresultStatus(r) != PGRES_COMMAND_OK) goto failed;
  PQclear(r);
  decl = malloc(hn + n + 1);
  if (!decl) goto out_of_memory;
  memcpy(decl, head, hn);
  memcpy(decl + hn, sql, n + 1);
  r = PQexecParams(pc->c, decl, nparams, types, values, lengths, formats, 0);
  free(decl);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) goto failed;
  PQclear(r);
  cur = calloc(1, sizeof *cur);
  if (!cur) goto out_of_memory;
  cur->pc = pc;
  cur->batched = 1;
  memcpy(cur->name, name, sizeof name);
  if (!send_fetch(cur, err, errlen) || !collect_batch(cur, err, errlen)) {
    if (cur->inflight) drain(pc->c);
    PQclear(cur->batch);
    *retryable = conn_lost(pc->c);
    end_transaction(pc, 0);
    free(cur);
    return NULL;
  }
  cur->ncols = PQnfields(cur->batch);
  return cur;
failed: /* BEGIN or DECLARE refused: r holds the answer, when there is one */
  bic_sql_error(err, errlen, pc->password, "postgresql: ", r ? PQresultErrorMessage(r) : PQerrorMessage(pc->c));
  PQclear(r);
  *retryable = conn_lost(pc->c);
  end_transaction(pc, 0);
  return NULL;
out_of_memory:
  bic_sql_error(err, errlen, NULL, NULL, "out of memory");
  end_transaction(pc, 0);
  return NULL;
}

static void *pg_query(void *conn, const char *sql, const bic_sql_value *params, int nparams,
                      int *retryable, char *err, size_t errlen) {
  pg_conn *pc = conn;
  const char **values = NULL;
  Oid *types = NULL;
  int *lengths = NULL, *formats = NULL;
  char **owned = NULL;
  pg_cursor *cur = NULL;
  PGresult *r;
  int ok = 0;
  *retryable = 0;
  if (nparams > 0) {
    values = calloc((size_t)nparams, sizeof *values);
    types = calloc((size_t)nparams, sizeof *types);
    lengths = calloc((size_t)nparams, sizeof *lengths);
    formats = calloc((size_t)nparams, sizeof *formats);
    owned = calloc((size_t)nparams, sizeof *owned);
    if (!values || !types || !lengths || !formats || !owned) {
      bic_sql_error(err, errlen, NULL, NULL, "out of memory");
      goto done;
    }
  }
  for (int i = 0; i < nparams; i++) {
    const bic_sql_value *v = &params[i];
    char num[40];
    switch (v->kind) {
    case BIC_SQL_NULL:
      values[i] = NULL;
      break;
    case BIC_SQL_INT:
      snprintf(num, sizeof num, "%lld", v->i);
      types[i] = 20; /* int8 */
      owned[i] = bic_sql_strdup(num);
      values[i] = owned[i];
      break;
    case BIC_SQL_DOUBLE:
      if (isnan(v->d)) snprintf(num, sizeof num, "NaN");
      else if (isinf(v->d)) snprintf(num, sizeof num, v->d > 0 ? "Infinity" : "-Infinity");
      else snprintf(num, sizeof num, "%.17g", v->d);
      types[i] = 701; /* float8 */
      owned[i] = bic_sql_strdup(num);
      values[i] = owned[i];
      break;
    case BIC_SQL_BOOL:
      types[i] = 16; /* bool */
      values[i] = v->i ? "true" : "false";
      break;
    case BIC_SQL_TEXT:
      if (memchr(v->s, '\0', v->len)) {
        snprintf(err, errlen, "postgresql: parameter %d contains a NUL byte, which PostgreSQL text cannot hold",
                 i + 1);
        goto done;
      }
      owned[i] = malloc(v->len + 1);
      if (!owned[i]) { bic_sql_error(err, errlen, NULL, NULL, "out of memory"); goto done; }
      memcpy(owned[i], v->s, v->len);
      owned[i][v->len] = '\0';
      values[i] = owned[i];
      break;
    case BIC_SQL_BLOB:
      types[i] = 17; /* bytea */
      values[i] = v->len ? v->s : "";
      lengths[i] = (int)v->len;
      formats[i] = 1;
      break;
    }
    if ((v->kind == BIC_SQL_INT || v->kind == BIC_SQL_DOUBLE) && !owned[i]) {
      bic_sql_error(err, errlen, NULL, NULL, "out of memory");
      goto done;
    }
  }
  /* an idle connection the server closed shows here, before sending */
  if (PQstatus(pc->c) == CONNECTION_OK && PQtransactionStatus(pc->c) == PQTRANS_IDLE) PQconsumeInput(pc->c);
  if (is_select(sql)) {
    cur = cursor_query(pc, sql, nparams, types, values, lengths, formats, retryable, err, errlen);
    ok = cur != NULL;
    goto done;
  }
  if (!PQsendQueryParams(pc->c, sql, nparams, types, values, lengths, formats, 0)) {
    *retryable = conn_lost(pc->c);
    bic_sql_error(err, errlen, pc->password, "postgresql: ", PQerrorMessage(pc->c));
    goto done;
  }
  if (!PQsetSingleRowMode(pc->c)) {
    bic_sql_error(err, errlen, pc->password, "postgresql: cannot enter single-row mode: ", PQerrorMessage(pc->c));
    drain(pc->c);
    goto done;
  }
  r = PQgetResult(pc->c);
  switch (PQresultStatus(r)) {
  case PGRES_SINGLE_TUPLE:
  case PGRES_TUPLES_OK:
    cur = calloc(1, sizeof *cur);
    if (!cur) {
      PQclear(r);
      bic_sql_error(err, errlen, NULL, NULL, "out of memory");
      PQrequestCancel(pc->c);
      drain(pc->c);
      goto done;
    }
    cur->pc = pc;
    cur->meta = r;
    cur->ncols = PQnfields(r);
    if (PQresultStatus(r) == PGRES_SINGLE_TUPLE) {
      cur->pending = 1;
    } else {
      cur->done = 1;
      drain(pc->c);
    }
    ok = 1;
    break;
  case PGRES_COMMAND_OK:
    PQclear(r);
    drain(pc->c);
    bic_sql_error(err, errlen, NULL, NULL, "postgresql: the statement returned no rows (not a query)");
    break;
  default:
    bic_sql_error(err, errlen, pc->password, "postgresql: ",
            r ? PQresultErrorMessage(r) : PQerrorMessage(pc->c));
    PQclear(r);
    drain(pc->c);
    *retryable = conn_lost(pc->c);
    break;
  }
done:
  for (int i = 0; owned && i < nparams; i++) free(owned[i]);
  free(owned);
  free(values);
  free(types);
  free(lengths);
  free(formats);
  return ok ? cur : NULL;
}

static int pg_ncols(void *cursor) { return ((pg_cursor *)cursor)->ncols; }

static const char *pg_colname(void *cursor, int col) {
  pg_cursor *cur = cursor;
  const char *n;
  if (col < 0 || col >= cur->ncols) return "";
  n = PQfname(cur->batched ? cur->batch : cur->meta, col);
  return n ? n : "";
}

static const char *type_name(Oid t) {
  switch (t) {
  case 16: return "boolean";
  case 17: return "bytea";
  case 18: return "char";
  case 19: return "name";
  case 20: return "bigint";
  case 21: return "smallint";
  case 23: return "integer";
  case 25: return "text";
  case 26: return "oid";
  case 114: return "json";
  case 700: return "real";
  case 701: return "double precision";
  case 1042: return "character";
  case 1043: return "character varying";
  case 1082: return "date";
  case 1083: return "time without time zone";
  case 1114: return "timestamp without time zone";
  case 1184: return "timestamp with time zone";
  case 1186: return "interval";
  case 1266: return "time with time zone";
  case 1700: return "numeric";
  case 2950: return "uuid";
  case 3802: return "jsonb";
  default: return "";
  }
}

static const char *pg_coltype(void *cursor, int col) {
  pg_cursor *cur = cursor;
  if (col < 0 || col >= cur->ncols) return "";
  return type_name(PQftype(cur->batched ? cur->batch : cur->meta, col));
}

static int pg_step(void *cursor, char *err, size_t errlen) {
  pg_cursor *cur = cursor;
  PGresult *r;
  if (cur->batched) {
    if (cur->done) return 0;
    if (++cur->rowi < cur->nrows) return 1;
    if (!cur->last) {
      if (!collect_batch(cur, err, errlen)) {
        cur->done = 1;
        end_transaction(cur->pc, 0);
        return -1;
      }
      if (++cur->rowi < cur->nrows) return 1;
    }
    cur->done = 1;
    end_transaction(cur->pc, 1);
    return 0;
  }
  if (cur->pending) {
    cur->pending = 0;
    cur->row = cur->meta;
    return 1;
  }
  if (cur->row && cur->row != cur->meta) PQclear(cur->row);
  cur->row = NULL;
  if (cur->done) return 0;
  r = PQgetResult(cur->pc->c);
  switch (PQresultStatus(r)) {
  case PGRES_SINGLE_TUPLE:
    cur->row = r;
    return 1;
  case PGRES_TUPLES_OK:
    PQclear(r);
    drain(cur->pc->c);
    cur->done = 1;
    return 0;
  default:
    bic_sql_error(err, errlen, cur->pc->password, "postgresql: ",
            r ? PQresultErrorMessage(r) : PQerrorMessage(cur->pc->c));
    PQclear(r);
    drain(cur->pc->c);
    cur->done = 1;
    return -1;
  }
}

static void pg_value(void *cursor, int col, bic_sql_value *out) {
  pg_cursor *cur = cursor;
  PGresult *r = cur->batched ? cur->batch : cur->row;
  int ri = cur->batched ? cur->rowi : 0;
  const char *s;
  size_t len;
  memset(out, 0, sizeof *out);
  out->kind = BIC_SQL_NULL;
  if (!r || ri < 0 || ri >= PQntuples(r) || col < 0 || col >= cur->ncols || PQgetisnull(r, ri, col)) return;
  s = PQgetvalue(r, ri, col);
  len = (size_t)PQgetlength(r, ri, col);
  switch (PQftype(r, col)) {
  case 20: case 21: case 23: case 26:
    if (bic_sql_parse_int(s, len, &out->i)) { out->kind = BIC_SQL_INT; return; }
    break;
  case 700: case 701: {
    char *end;
    if (bic_sql_parse_decimal(s, len, &out->d)) { out->kind = BIC_SQL_DOUBLE; return; }
    out->d = strtod(s, &end);
    if (end != s && *end == '\0') { out->kind = BIC_SQL_DOUBLE; return; }
    break;
  }
  case 16:
    out->kind = BIC_SQL_BOOL;
    out->i = s[0] == 't';
    return;
  case 1184:
    /* TimeZone is UTC: drop the "+00" the server appends (at a fixed offset
     * the zone stays, "+02": the encoder keeps a value's own zone) */
    if (len > 3 && len < sizeof cur->buf && strcmp(s + len - 3, "+00") == 0) {
      memcpy(cur->buf, s, len - 3);
      cur->buf[len - 3] = '\0';
      s = cur->buf;
      len -= 3;
    }
    break;
  default:
    break;
  }
  out->kind = BIC_SQL_TEXT;
  out->s = s;
  out->len = len;
}

static void pg_close_cursor(void *cursor) {
  pg_cursor *cur = cursor;
  if (!cur) return;
  if (cur->batched) {
    /* rows left unread: ending the transaction closes the cursor, and the
     * server's portal with it (nothing runs between two FETCHes) */
    if (cur->inflight) drain(cur->pc->c); /* at most one batch to read */
    if (!cur->done) end_transaction(cur->pc, 0);
    PQclear(cur->batch);
    free(cur);
    return;
  }
  if (cur->row && cur->row != cur->meta) PQclear(cur->row);
  PQclear(cur->meta);
  if (!cur->done) {
    /* rows left unread: ask the server to stop, then read what is in flight */
    PGcancel *c = PQgetCancel(cur->pc->c);
    char ebuf[256];
    if (c) {
      PQcancel(c, ebuf, (int)sizeof ebuf);
      PQfreeCancel(c);
    }
    drain(cur->pc->c);
  }
  free(cur);
}

static int pg_alive(void *conn) {
  pg_conn *pc = conn;
  if (!pc || !pc->c || PQstatus(pc->c) != CONNECTION_OK) return 0;
  /* An idle connection gets nothing from the server (no LISTEN here), unless
   * the server is going away (its FATAL notice, EOF): readable means reopen. */
  {
    struct pollfd p;
    p.fd = PQsocket(pc->c);
    p.events = POLLIN;
    p.revents = 0;
    if (p.fd < 0 || poll(&p, 1, 0) != 0) return 0;
  }
  return 1;
}

/* From the pool's service thread while another thread runs a statement on
 * conn: PQcancel needs only the PGcancel made at open. */
static void pg_cancel(void *conn) {
  pg_conn *pc = conn;
  char ebuf[256];
  if (pc && pc->cancel) (void)PQcancel(pc->cancel, ebuf, (int)sizeof ebuf);
}

const bic_sql_driver bic_sql_postgresql = {
  .engine = "postgresql", .open = pg_open, .query = pg_query, .ncols = pg_ncols,
  .colname = pg_colname, .coltype = pg_coltype, .step = pg_step, .value = pg_value,
  .close_cursor = pg_close_cursor, .alive = pg_alive, .cancel = pg_cancel, .close = pg_close,
};

#else
typedef int bic_sql_pg_unused; /* ISO C wants a declaration in every file */
#endif
