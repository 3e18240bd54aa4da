/* The ClickHouse driver of the SQL source, over ClickHouse's HTTP interface
 * with libcurl (see sql.h for the rules).
 *
 * - connection: http://host:port/ (https with secure=1; ca_file=PATH, and
 *   verify=0 to skip the certificate check), the user and password in the
 *   X-ClickHouse-User / X-ClickHouse-Key headers (never in the URL), the
 *   URL's database as the HTTP parameter database=, no redirects followed,
 *   connect_timeout (default 10 s). Opening asks the server its version, time
 *   zone and the settings of the account's profile (one query);
 * - settings of every query: readonly=2, every *_overflow_mode that exists
 *   set to throw (a profile's "break" or "any" would cut or change an answer
 *   without an error), max_execution_time from statement_timeout, the
 *   TabSeparated text pinned (null as \N, LF line ends, simple datetimes),
 *   max_result_rows when the statement ends with our " LIMIT n", and
 *   cancel_http_readonly_queries_on_client_close on the servers where it
 *   works (19.2 on, but not 19.13-19.17, where it hung servers). An account
 *   whose profile says readonly=1 may change no setting: its queries go
 *   without any, and it is refused when its profile lets an answer be cut;
 * - query: the statement's $N filled in by bic_ch_render (sql_ch_text.c):
 *   string values as query parameters on servers that have them (19.11 on),
 *   else as literals escaped by ClickHouse's rules; wrapped as
 *   SELECT *, '<token>' FROM (<statement>) FORMAT TabSeparatedWithNamesAndTypes
 *   with a query_id of its own. The answer streams through one easy handle
 *   driven by curl_multi in step(), which moves the transfer on only when no
 *   whole row waits in the buffer: libcurl reads from the socket only then
 *   (reads of 16 KiB, at most 100 in one call), so memory stays flat whatever
 *   the number of rows, and the server waits on TCP's window meanwhile. (A
 *   write callback that pauses the transfer was tried: a transfer so paused
 *   and resumed sometimes never read again.) Every row must end with the
 *   token: a server
 *   that fails mid-answer writes its exception as text into a 200 answer, and
 *   that text is never taken for rows;
 * - a cursor closed with rows unread drops its transfer, then sends KILL
 *   QUERY WHERE query_id = '...' SYNC on a short connection of its own;
 *   cancel() from the pool's service thread makes the transfer in flight stop
 *   at once (a flag the callbacks check, curl_multi_wakeup), sends the same
 *   KILL, and the job's thread waits for it before it fails: the query has
 *   left the server when the job answers;
 * - a connection that could not be made or was lost before any answer is
 *   reported retryable.
 * Values: Int8-Int64 and UInt8-UInt64 -> INT (a UInt64 above 2^63-1 as its
 * text), Float32/Float64 -> DOUBLE (inf and nan included), everything else as
 * the server's text (Decimal with every digit; Date and DateTime as the server
 * writes them, in the column's or the server's time zone). The zero date and
 * time 18.x writes as 0000-00-00 [00:00:00] are given as what they are,
 * 1970-01-01 and the time zone's reading of the Unix epoch. Nullable and
 * LowCardinality are unwrapped; \N is NULL. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bic.h"
#include "buffer.h"
#include "process.h"
#include "sql.h"

#ifdef BIC_WITH_CLICKHOUSE
#include <curl/curl.h>

#define CH_ERROR_BODY 8192        /* bytes of an error answer kept for the message */
#define CH_PARAMS_MAX 16384       /* URL bytes of query parameters; beyond, literals */

enum { K_TEXT, K_INT, K_UINT64, K_FLOAT, K_DATE, K_DATETIME, K_RAW };

typedef struct ch_zone { /* a time zone's reading of the Unix epoch */
  struct ch_zone *next;
  char *tz;
  char text[32];
} ch_zone;

typedef struct ch_conn {
  char *base; /* http[s]://host:port/ */
  char *user, *password, *database, *ca_file;
  int secure, verify, connect_timeout_s;
  int opening; /* learn_server runs: the whole answer within connect_timeout */
  CURL *easy;  /* the answers, driven by multi */
  CURLM *multi;
  CURL *side;  /* short questions while an answer streams (the same thread) */
  int side_used;
  struct curl_slist *headers;
  char errbuf[CURL_ERROR_SIZE];
  char *settings; /* "&readonly=2&..." or "" */
  int fixed;      /* the profile says readonly=1: no setting may be sent */
  int query_params;
  char version[32];
  char epoch0[32]; /* the server's time zone's reading of the Unix epoch */
  ch_zone *zones;
  unsigned long long seed, counter;
  pthread_mutex_t lock; /* query_id against cancel() */
  char query_id[40];
  int cancel; /* atomic: stop what runs */
  int killed; /* atomic: cancel()'s KILL QUERY has returned */
  int busy;   /* a cursor holds easy */
} ch_conn;

typedef struct ch_col {
  char *name, *type;
  int kind;
  char *tz; /* DateTime('tz'): its zone, else NULL */
  const char *epoch0;
} ch_col;

typedef struct ch_cursor {
  ch_conn *cc;
  bic_buffer body; /* the statement sent (curl reads it during the transfer) */
  bic_buffer url;
  bic_buffer buf; /* the answer; bytes before off are consumed */
  size_t off, scan;
  int finished, attached, retryable, oom, done;
  CURLcode result;
  long status;
  char token[24];
  size_t toklen;
  int ncols;
  ch_col *cols;
  const char **fs;
  size_t *fl;
  unsigned char *isnull;
  char tmp[64];
} ch_cursor;

static int cancelled(ch_conn *cc) { return __atomic_load_n(&cc->cancel, __ATOMIC_ACQUIRE); }

/* ---- close-on-exec ---------------------------------------------------------------- */

/* The sockets of the transfers, opened close-on-exec. */
static curl_socket_t open_socket_cloexec(void *clientp, curlsocktype purpose, struct curl_sockaddr *address) {
  (void)clientp;
  (void)purpose;
  return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

/* curl_multi_init, and the first curl_easy_perform of a handle (its own
 * multi), open a wake-up socket pair without close-on-exec (libcurl 7.88).
 * Other threads may open descriptors meanwhile, so only the unix sockets that
 * appeared since before (a list from bic_open_fds, freed here) are marked: no
 * socket of this process is meant for a child. */
static void mark_new_unix_sockets(int *before, size_t nbefore) {
  int *after = NULL;
  size_t nafter = 0;
  if (before && bic_open_fds(&after, &nafter) == 0) {
    for (size_t i = 0; i < nafter; i++) {
      int fd = after[i], domain = 0, seen = 0, flags;
      socklen_t len = sizeof domain;
      for (size_t j = 0; j < nbefore && !seen; j++) seen = before[j] == fd;
      if (seen || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX) continue;
      flags = fcntl(fd, F_GETFD);
      if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
  }
  free(after);
  free(before);
}

static int *fds_now(size_t *n) {
  int *list = NULL;
  if (bic_open_fds(&list, n) != 0) return NULL;
  return list;
}

/* ---- small helpers ------------------------------------------------------------ */

static unsigned long long mix(unsigned long long x) { /* splitmix64 */
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

static unsigned long long random_seed(void) {
  unsigned long long s = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, &s, sizeof s) != (ssize_t)sizeof s) s = 0;
    close(fd);
  }
  if (s == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s = (unsigned long long)ts.tv_nsec ^ ((unsigned long long)ts.tv_sec << 20) ^ (unsigned long long)getpid();
  }
  return s;
}

static int has_control(const char *s) {
  for (; s && *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
  return 0;
}

/* The type inside Nullable(...) and LowCardinality(...): start and length. */
static const char *unwrap(const char *t, size_t *len) {
  size_t n = strlen(t);
  for (;;) {
    size_t p = 0;
    if (n > 10 && strncmp(t, "Nullable(", 9) == 0) p = 9;
    else if (n > 16 && strncmp(t, "LowCardinality(", 15) == 0) p = 15;
    if (p == 0 || t[n - 1] != ')') break;
    t += p;
    n -= p + 1;
  }
  *len = n;
  return t;
}

static int type_is(const char *t, size_t n, const char *name) { return strlen(name) == n && memcmp(t, name, n) == 0; }

static void classify(ch_col *c) {
  size_t n;
  const char *t = unwrap(c->type, &n);
  static const char *const ints[] = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", NULL};
  c->kind = K_TEXT;
  for (int i = 0; ints[i]; i++)
    if (type_is(t, n, ints[i])) c->kind = K_INT;
  if (type_is(t, n, "UInt64")) c->kind = K_UINT64;
  else if (type_is(t, n, "Float32") || type_is(t, n, "Float64")) c->kind = K_FLOAT;
  else if (type_is(t, n, "Date")) c->kind = K_DATE;
  else if ((n > 6 && strncmp(t, "Array(", 6) == 0) || (n > 6 && strncmp(t, "Tuple(", 6) == 0) ||
           (n > 4 && strncmp(t, "Map(", 4) == 0) || (n > 7 && strncmp(t, "Nested(", 7) == 0))
    c->kind = K_RAW; /* written in its quoted text form, not escaped again */
  else if (type_is(t, n, "DateTime")) c->kind = K_DATETIME;
  else if (n > 12 && strncmp(t, "DateTime('", 10) == 0 && strncmp(t + n - 2, "')", 2) == 0) {
    c->kind = K_DATETIME;
    c->tz = malloc(n - 11);
    if (c->tz) {
      memcpy(c->tz, t + 10, n - 12);
      c->tz[n - 12] = '\0';
    }
  }
}

/* ---- HTTP --------------------------------------------------------------------- */

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
  ch_cursor *cur = ud;
  size_t n = size * nmemb;
  if (n > 9 && strncmp(p, "HTTP/", 5) == 0) {
    const char *sp = memchr(p, ' ', n);
    if (sp && (size_t)(sp - p) + 4 <= n) cur->status = strtol(sp + 1, NULL, 10);
  }
  return n;
}

/* Drops the consumed bytes when they are many (values handed out point into
 * buf only until the next step, and callbacks run only inside a step). */
static void compact(ch_cursor *cur) {
  if (cur->off == 0) return;
  if (cur->off == cur->buf.len) {
    cur->buf.len = cur->off = cur->scan = 0;
  } else if (cur->off >= 65536 && cur->off * 2 >= cur->buf.len) {
    memmove(cur->buf.data, cur->buf.data + cur->off, cur->buf.len - cur->off);
    cur->buf.len -= cur->off;
    cur->scan -= cur->off;
    cur->off = 0;
  }
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
  ch_cursor *cur = ud;
  size_t n = size * nmemb;
  if (cancelled(cur->cc)) return 0; /* aborts the transfer */
  if (cur->status != 200) {         /* an error's text: its beginning is enough */
    size_t room = cur->buf.len < CH_ERROR_BODY ? CH_ERROR_BODY - cur->buf.len : 0;
    if (bic_buffer_put(&cur->buf, p, n < room ? n : room)) cur->oom = 1;
    return n;
  }
  compact(cur);
  if (bic_buffer_put(&cur->buf, p, n)) {
    cur->oom = 1;
    return 0;
  }
  return n;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
  (void)a, (void)b, (void)c, (void)d;
  return cancelled((ch_conn *)ud) ? 1 : 0;
}

/* ClickHouse's error text (NUL-terminated, changed in place) as the message:
 * without leading blank lines nor 18.x's ", e.what() = ..." tail. */
static const char *server_message(char *text) {
  char *cut;
  while (*text == ' ' || *text == '\n' || *text == '\r') text++;
  if ((cut = strstr(text, ", e.what() = ")) != NULL) *cut = '\0';
  return text;
}

/* The options every request of cc shares: auth headers, TLS, timeouts, no
 * redirects, no signals, close-on-exec sockets; abortable: it stops when
 * cc is cancelled (not the KILL QUERY that cancelling sends). */
static int setup_easy(ch_conn *cc, CURL *e, const char *url, const char *body, size_t len, int abortable) {
  CURLcode rc = CURLE_OK;
#define SET(opt, val) \
  if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val)
  SET(CURLOPT_URL, url);
  SET(CURLOPT_NOSIGNAL, 1L);
  SET(CURLOPT_OPENSOCKETFUNCTION, open_socket_cloexec);
  SET(CURLOPT_HTTPHEADER, cc->headers);
  SET(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SET(CURLOPT_CONNECTTIMEOUT, (long)(cc->connect_timeout_s > 0 ? cc->connect_timeout_s : 10));
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_BUFFERSIZE, 16384L);
  SET(CURLOPT_POST, 1L);
  SET(CURLOPT_POSTFIELDS, body);
  SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  if (abortable) {
    SET(CURLOPT_XFERINFOFUNCTION, on_progress);
    SET(CURLOPT_XFERINFODATA, cc);
    SET(CURLOPT_NOPROGRESS, 0L);
  }
  if (cc->ca_file) SET(CURLOPT_CAINFO, cc->ca_file);
  if (!cc->verify) {
    SET(CURLOPT_SSL_VERIFYPEER, 0L);
    SET(CURLOPT_SSL_VERIFYHOST, 0L);
  }
#undef SET
  return rc == CURLE_OK ? 0 : -1;
}

/* A short question on e (not the answers' handle): its whole answer in out
 * (at most 64 KiB). 0, or -1 with err set. Used while an answer streams and
 * by cancel(); fresh: e's first perform; abortable: as for setup_easy. */
static int ask(ch_conn *cc, CURL *e, int fresh, int abortable, const char *sql, long timeout_s, bic_buffer *out,
               char *err, size_t errlen);

static size_t on_small(char *p, size_t size, size_t nmemb, void *ud) {
  bic_buffer *b = ud;
  size_t n = size * nmemb;
  if (b->len + n > 65536) return 0;
  return bic_buffer_put(b, p, n) ? 0 : n;
}

static int ask(ch_conn *cc, CURL *e, int fresh, int abortable, const char *sql, long timeout_s, bic_buffer *out,
               char *err, size_t errlen) {
  bic_buffer url;
  char ebuf[CURL_ERROR_SIZE];
  long status = 0;
  CURLcode rc;
  bic_buffer_init(&url);
  ebuf[0] = '\0';
  if (bic_buffer_put(&url, cc->base, strlen(cc->base)) || bic_buffer_puts(&url, "?") ||
      (cc->database && (bic_buffer_puts(&url, "database=") || bic_ch_url_escape(&url, cc->database, strlen(cc->database)))) ||
      bic_buffer_put(&url, cc->settings, strlen(cc->settings)) || bic_buffer_putc(&url, '\0')) {
    bic_buffer_free(&url);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  curl_easy_reset(e);
  if (setup_easy(cc, e, url.data, sql, strlen(sql), abortable) != 0 || curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_small) ||
      curl_easy_setopt(e, CURLOPT_WRITEDATA, out) || curl_easy_setopt(e, CURLOPT_ERRORBUFFER, ebuf) ||
      curl_easy_setopt(e, CURLOPT_TIMEOUT, timeout_s)) {
    bic_buffer_free(&url);
    snprintf(err, errlen, "clickhouse: cannot set up a request");
    return -1;
  }
  if (fresh) { /* its first perform makes the handle's own multi */
    size_t n = 0;
    int *before = fds_now(&n);
    rc = curl_easy_perform(e);
    mark_new_unix_sockets(before, n);
  } else {
    rc = curl_easy_perform(e);
  }
  bic_buffer_free(&url);
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  if (rc != CURLE_OK) {
    bic_sql_error(err, errlen, cc->password, "clickhouse: ", ebuf[0] ? ebuf : curl_easy_strerror(rc));
    return -1;
  }
  if (status != 200) {
    if (out->len > 0 && bic_buffer_putc(out, '\0') == 0)
      bic_sql_error(err, errlen, cc->password, "clickhouse: ", server_message(out->data));
    else
      snprintf(err, errlen, "clickhouse: the server answered HTTP %ld", status);
    return -1;
  }
  return 0;
}

/* KILL QUERY of what runs on cc, on a connection of its own (any thread);
 * SYNC: it returns once the query has left the server's processes (or after
 * 10 s). */
static void kill_query(ch_conn *cc) {
  char sql[96], err[256];
  bic_buffer out;
  CURL *e;
  pthread_mutex_lock(&cc->lock);
  snprintf(sql, sizeof sql, "KILL QUERY WHERE query_id = '%s' SYNC", cc->query_id);
  pthread_mutex_unlock(&cc->lock);
  if (strstr(sql, "''")) return; /* nothing ran yet */
  e = curl_easy_init();
  if (!e) return;
  bic_buffer_init(&out);
  /* ask() reads cc->settings: set at open, never changed after */
  (void)ask(cc, e, 1, 0, sql, 10, &out, err, sizeof err);
  bic_buffer_free(&out);
  curl_easy_cleanup(e);
}

/* Moves the transfer on: 1 when bytes arrived or it ended, -1 cancelled or
 * failed to drive. */
static int pump(ch_cursor *cur, char *err, size_t errlen) {
  ch_conn *cc = cur->cc;
  size_t before = cur->buf.len;
  for (;;) {
    int running = 0, left;
    CURLMsg *m;
    if (cancelled(cc)) {
      snprintf(err, errlen, "clickhouse: the query was cancelled");
      return -1;
    }
    if (cur->buf.len != before || cur->finished) return 1;
    if (curl_multi_perform(cc->multi, &running) != CURLM_OK) {
      snprintf(err, errlen, "clickhouse: the transfer failed (curl_multi_perform)");
      return -1;
    }
    while ((m = curl_multi_info_read(cc->multi, &left)) != NULL) {
      if (m->msg == CURLMSG_DONE && m->easy_handle == cc->easy) {
        cur->finished = 1;
        cur->result = m->data.result;
      }
    }
    if (cur->buf.len != before || cur->finished) return 1;
    if (curl_multi_poll(cc->multi, NULL, 0, 1000, NULL) != CURLM_OK) {
      snprintf(err, errlen, "clickhouse: the transfer failed (curl_multi_poll)");
      return -1;
    }
  }
}

/* The transfer dropped (its connection closed: a server blocked writing to
 * it gets an error at once), then, when cancel() stops this query, a wait
 * until its KILL QUERY ... SYNC has returned (at most 15 s): whatever the job
 * answers then comes after the query left the server. */
static void drop_transfer(ch_cursor *cur) {
  if (cur->attached) {
    curl_multi_remove_handle(cur->cc->multi, cur->cc->easy);
    cur->attached = 0;
  }
}

static void stop_for_cancel(ch_cursor *cur) {
  struct timespec pause = {0, 2000000};
  drop_transfer(cur);
  for (int i = 0; i < 7500 && !__atomic_load_n(&cur->cc->killed, __ATOMIC_ACQUIRE); i++) nanosleep(&pause, NULL);
}

/* The error of an answer that is not 200, once its text is in. */
static int http_error(ch_cursor *cur, char *err, size_t errlen) {
  const char *msg;
  while (!cur->finished)
    if (pump(cur, err, errlen) < 0) return -1;
  if (bic_buffer_putc(&cur->buf, '\0')) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  msg = server_message(cur->buf.data + cur->off);
  if (*msg == '\0' || cur->status < 200) {
    snprintf(err, errlen, "clickhouse: the server answered HTTP %ld%s", cur->status,
             cur->status >= 300 && cur->status < 400 ? " (a redirect: redirects are not followed)" : "");
    return -1;
  }
  bic_sql_error(err, errlen, cur->cc->password, "clickhouse: ", msg);
  return -1;
}

/* The next line of the answer: 1 (*line, *len without the newline), 0 at its
 * end, -1 error (err set). */
static int read_line(ch_cursor *cur, char **line, size_t *len, char *err, size_t errlen) {
  for (;;) {
    char *nl;
    if (cur->status != 0 && cur->status != 200) return http_error(cur, err, errlen);
    nl = cur->scan < cur->buf.len ? memchr(cur->buf.data + cur->scan, '\n', cur->buf.len - cur->scan) : NULL;
    if (nl) {
      *line = cur->buf.data + cur->off;
      *len = (size_t)(nl - *line);
      cur->off = cur->scan = (size_t)(nl - cur->buf.data) + 1;
      return 1;
    }
    cur->scan = cur->buf.len;
    if (cur->oom) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    if (cur->finished) {
      if (cur->result != CURLE_OK) {
        const char *why = cur->cc->errbuf[0] ? cur->cc->errbuf : curl_easy_strerror(cur->result);
        cur->retryable = cur->status == 0 &&
                         (cur->result == CURLE_COULDNT_CONNECT || cur->result == CURLE_SEND_ERROR ||
                          cur->result == CURLE_RECV_ERROR || cur->result == CURLE_GOT_NOTHING);
        if (cancelled(cur->cc)) why = "the query was cancelled";
        if (cur->result == CURLE_OPERATION_TIMEDOUT && cur->cc->opening) {
          /* a server that took the connection and says nothing (hung, or not
           * ClickHouse): opening waits no longer than connect_timeout */
          char head[96];
          snprintf(head, sizeof head, "clickhouse: the server did not answer within connect_timeout (%d s): ",
                   cur->cc->connect_timeout_s > 0 ? cur->cc->connect_timeout_s : 10);
          bic_sql_error(err, errlen, cur->cc->password, head, why);
          return -1;
        }
        bic_sql_error(err, errlen, cur->cc->password, "clickhouse: ", why);
        return -1;
      }
      if (cur->status != 200) return http_error(cur, err, errlen);
      if (cur->off < cur->buf.len) {
        snprintf(err, errlen, "clickhouse: the answer ended inside a row");
        return -1;
      }
      return 0;
    }
    if (pump(cur, err, errlen) < 0) return -1;
  }
}

/* Splits a line into n fields (tabs), unescaping each in place (but the
 * columns of cols that are K_RAW); the last one must be the token when token
 * is given. NULL fields (\N) are marked. 0, or -1 when the line does not have
 * that shape. */
static int split(ch_cursor *cur, char *p, size_t len, int n, const char *token, const ch_col *cols) {
  char *end = p + len;
  for (int i = 0; i < n; i++) {
    char *t = memchr(p, '\t', (size_t)(end - p));
    size_t fl;
    if (!t) return -1;
    fl = (size_t)(t - p);
    cur->isnull[i] = fl == 2 && p[0] == '\\' && p[1] == 'N';
    cur->fs[i] = p;
    cur->fl[i] = cur->isnull[i] ? 0
                 : (memchr(p, '\\', fl) && !(cols && cols[i].kind == K_RAW) ? bic_ch_unescape(p, fl) : fl);
    p = t + 1;
  }
  if (token && ((size_t)(end - p) != cur->toklen || memcmp(p, token, cur->toklen) != 0)) return -1;
  return 0;
}

static int count_fields(const char *p, size_t len) {
  int n = 1;
  for (const char *e = p + len; (p = memchr(p, '\t', (size_t)(e - p))) != NULL; p++) n++;
  return n;
}

static void free_cursor(ch_cursor *cur) {
  for (int i = 0; cur->cols && i < cur->ncols; i++) {
    free(cur->cols[i].name);
    free(cur->cols[i].type);
    free(cur->cols[i].tz);
  }
  free(cur->cols);
  free((void *)cur->fs);
  free(cur->fl);
  free(cur->isnull);
  bic_buffer_free(&cur->body);
  bic_buffer_free(&cur->url);
  bic_buffer_free(&cur->buf);
  free(cur);
}

static void ch_close_cursor(void *cursor) {
  ch_cursor *cur = cursor;
  int unread;
  if (!cur) return;
  unread = cur->attached && !cur->finished;
  /* rows left: drop the transfer (its connection is closed, never reused
   * half-read; a server blocked writing to it stops writing), then stop the
   * query on the server, unless cancel() does */
  drop_transfer(cur);
  if (unread && !cancelled(cur->cc)) kill_query(cur->cc);
  cur->cc->busy = 0;
  free_cursor(cur);
}

/* n of " LIMIT n" at the end of sql (the engine module's limit()), else -1. */
static long long trailing_limit(const char *sql) {
  size_t n = strlen(sql), i = n;
  long long limit;
  while (i > 0 && sql[i - 1] >= '0' && sql[i - 1] <= '9') i--;
  if (i == n || n - i > 18 || i < 7 || strncmp(sql + i - 7, " LIMIT ", 7) != 0) return -1;
  return bic_sql_parse_int(sql + i, n - i, &limit) ? limit : -1;
}

/* Sends sql (params filled in) and reads the answer's head: a cursor before
 * the first row, or NULL with err (and *retryable). */
static void *ch_query(void *conn, const char *sql, const bic_sql_value *params, int nparams, int *retryable,
                      char *err, size_t errlen) {
  ch_conn *cc = conn;
  ch_cursor *cur;
  bic_buffer qp;
  unsigned long long id, tok;
  char *line;
  size_t len;
  int rc, n;
  long long limit;
  char num[64];
  *retryable = 0;
  if (cancelled(cc)) {
    snprintf(err, errlen, "clickhouse: the query was cancelled");
    return NULL;
  }
  if (cc->busy) {
    snprintf(err, errlen, "clickhouse: the connection already streams an answer");
    return NULL;
  }
  cur = calloc(1, sizeof *cur);
  if (!cur) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  cur->cc = cc;
  bic_buffer_init(&cur->body);
  bic_buffer_init(&cur->url);
  bic_buffer_init(&cur->buf);
  bic_buffer_init(&qp);
  id = mix(cc->seed ^ ++cc->counter);
  tok = mix(id ^ 0x5bd1e995ULL);
  snprintf(cur->token, sizeof cur->token, "bic%016llx", tok);
  cur->toklen = strlen(cur->token);
  /* the statement: $N filled in, wrapped so that every row ends with the token */
  rc = bic_buffer_puts(&cur->body, "SELECT *, '") || bic_buffer_put(&cur->body, cur->token, cur->toklen) ||
       bic_buffer_puts(&cur->body, "' FROM (\n");
  if (!rc) {
    size_t mark = cur->body.len;
    rc = bic_ch_render(&cur->body, cc->query_params ? &qp : NULL, sql, strlen(sql), params, nparams, err, errlen);
    if (rc == 0 && qp.len > CH_PARAMS_MAX) { /* too long for a URL: literals */
      cur->body.len = mark;
      qp.len = 0;
      rc = bic_ch_render(&cur->body, NULL, sql, strlen(sql), params, nparams, err, errlen);
    }
    if (rc == -1) {
      bic_buffer_free(&qp);
      free_cursor(cur);
      return NULL;
    }
  }
  if (!rc) rc = bic_buffer_puts(&cur->body, "\n) FORMAT TabSeparatedWithNamesAndTypes");
  /* the URL: query_id, database, the settings, parameters */
  snprintf(num, sizeof num, "bic-%016llx", id);
  pthread_mutex_lock(&cc->lock);
  snprintf(cc->query_id, sizeof cc->query_id, "bic-%016llx", id);
  pthread_mutex_unlock(&cc->lock);
  if (!rc) rc = bic_buffer_put(&cur->url, cc->base, strlen(cc->base)) || bic_buffer_puts(&cur->url, "?query_id=") ||
                bic_buffer_put(&cur->url, num, strlen(num));
  if (!rc && cc->database)
    rc = bic_buffer_puts(&cur->url, "&database=") || bic_ch_url_escape(&cur->url, cc->database, strlen(cc->database));
  if (!rc) rc = bic_buffer_put(&cur->url, cc->settings, strlen(cc->settings));
  limit = cc->fixed ? -1 : trailing_limit(sql);
  if (!rc && limit > 0) {
    snprintf(num, sizeof num, "&max_result_rows=%lld", limit);
    rc = bic_buffer_put(&cur->url, num, strlen(num));
  }
  if (!rc) rc = bic_buffer_put(&cur->url, qp.data ? qp.data : "", qp.len) || bic_buffer_putc(&cur->url, '\0');
  bic_buffer_free(&qp);
  if (rc) {
    snprintf(err, errlen, "out of memory");
    free_cursor(cur);
    return NULL;
  }
  cc->errbuf[0] = '\0';
  curl_easy_reset(cc->easy);
  if (setup_easy(cc, cc->easy, cur->url.data, cur->body.data, cur->body.len, 1) != 0 ||
      curl_easy_setopt(cc->easy, CURLOPT_WRITEFUNCTION, on_body) || curl_easy_setopt(cc->easy, CURLOPT_WRITEDATA, cur) ||
      curl_easy_setopt(cc->easy, CURLOPT_HEADERFUNCTION, on_header) ||
      curl_easy_setopt(cc->easy, CURLOPT_HEADERDATA, cur) ||
      curl_easy_setopt(cc->easy, CURLOPT_ERRORBUFFER, cc->errbuf) ||
      /* half a second past the connect timeout, which bounds the TCP and TLS
       * handshakes: a handshake that does not finish is told as such ("SSL
       * connection timeout": an HTTPS URL on a plain HTTP port) */
      (cc->opening &&
       curl_easy_setopt(cc->easy, CURLOPT_TIMEOUT_MS,
                        (long)(cc->connect_timeout_s > 0 ? cc->connect_timeout_s : 10) * 1000L + 500L)) ||
      curl_multi_add_handle(cc->multi, cc->easy) != CURLM_OK) {
    snprintf(err, errlen, "clickhouse: cannot set up the request");
    free_cursor(cur);
    return NULL;
  }
  cur->attached = 1;
  cc->busy = 1;
  /* the head: names, then types; each with the token's column last */
  rc = read_line(cur, &line, &len, err, errlen);
  if (rc == 0) snprintf(err, errlen, "clickhouse: the server sent no answer");
  if (rc != 1) goto fail;
  n = count_fields(line, len) - 1;
  cur->cols = calloc((size_t)n + 1, sizeof *cur->cols);
  cur->fs = calloc((size_t)n + 1, sizeof *cur->fs);
  cur->fl = calloc((size_t)n + 1, sizeof *cur->fl);
  cur->isnull = calloc((size_t)n + 1, 1);
  if (n < 1 || !cur->cols || !cur->fs || !cur->fl || !cur->isnull) {
    snprintf(err, errlen, n < 1 ? "clickhouse: the answer has no columns" : "out of memory");
    goto fail;
  }
  cur->ncols = n;
  split(cur, line, len, n, NULL, NULL);
  for (int i = 0; i < n; i++)
    if ((cur->cols[i].name = strndup(cur->fs[i], cur->fl[i])) == NULL) goto oom;
  rc = read_line(cur, &line, &len, err, errlen);
  if (rc == 0) snprintf(err, errlen, "clickhouse: the answer ended before its types");
  if (rc != 1) goto fail;
  if (count_fields(line, len) != n + 1 || split(cur, line, len, n, NULL, NULL) != 0) {
    snprintf(err, errlen, "clickhouse: the answer's head is not what was asked for");
    goto fail;
  }
  for (int i = 0; i < n; i++) {
    if ((cur->cols[i].type = strndup(cur->fs[i], cur->fl[i])) == NULL) goto oom;
    classify(&cur->cols[i]);
    if (cur->cols[i].kind == K_DATETIME && !cur->cols[i].tz && cc->epoch0[0]) cur->cols[i].epoch0 = cc->epoch0;
  }
  return cur;
oom:
  snprintf(err, errlen, "out of memory");
fail:
  *retryable = cur->retryable;
  if (cancelled(cc)) stop_for_cancel(cur);
  ch_close_cursor(cur);
  return NULL;
}

static int ch_ncols(void *cursor) { return ((ch_cursor *)cursor)->ncols; }

static const char *ch_colname(void *cursor, int col) {
  ch_cursor *cur = cursor;
  return col >= 0 && col < cur->ncols ? cur->cols[col].name : "";
}

static const char *ch_coltype(void *cursor, int col) {
  ch_cursor *cur = cursor;
  return col >= 0 && col < cur->ncols ? cur->cols[col].type : "";
}

static const char ZERO_DATETIME[] = "0000-00-00 00:00:00";

/* The epoch is read as the reading of 86400 (1970-01-02 00:00:00 UTC) one day
 * earlier: 18.x's formatDateTime of a time within the epoch's day is wrong in
 * zones whose offset is not whole hours ("1970-01-01 05:86:00" in Asia/Kolkata,
 * "1970-01-01 13:li:00" in America/St_Johns), and such a text is no time. The
 * offsets are within a day, so the date read is 1970-01-01 or 1970-01-02. */
static void day_before(char *text) {
  if (strncmp(text, "1970-01-02", 10) == 0) memcpy(text, "1970-01-01", 10);
  else if (strncmp(text, "1970-01-01", 10) == 0) memcpy(text, "1969-12-31", 10);
}

/* The reading of the Unix epoch in zone tz (asked once per connection and
 * zone), or NULL with err set. */
static const char *zone_epoch0(ch_conn *cc, const char *tz, char *err, size_t errlen) {
  ch_zone *z;
  bic_buffer q, out;
  int rc;
  for (z = cc->zones; z; z = z->next)
    if (strcmp(z->tz, tz) == 0) return z->text;
  if (!cc->side && !(cc->side = curl_easy_init())) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  bic_buffer_init(&q);
  bic_buffer_init(&out);
  rc = bic_buffer_puts(&q, "SELECT formatDateTime(toDateTime(86400), '%F %T', ") || bic_ch_quote(&q, tz, strlen(tz), '\'') ||
       bic_buffer_puts(&q, ") FORMAT TSV") || bic_buffer_putc(&q, '\0');
  if (rc) snprintf(err, errlen, "out of memory");
  else rc = ask(cc, cc->side, !cc->side_used, 1, q.data, 30, &out, err, errlen);
  cc->side_used = 1;
  bic_buffer_free(&q);
  if (rc == 0 && (out.len < 20 || out.len > 30 || out.data[19] != '\n')) {
    snprintf(err, errlen, "clickhouse: cannot read the Unix epoch in the time zone of a column");
    rc = -1;
  }
  z = rc == 0 ? calloc(1, sizeof *z) : NULL;
  if (rc == 0 && (!z || !(z->tz = bic_sql_strdup(tz)))) {
    free(z);
    snprintf(err, errlen, "out of memory");
    rc = -1;
  }
  if (rc != 0) {
    bic_buffer_free(&out);
    return NULL;
  }
  memcpy(z->text, out.data, 19);
  z->text[19] = '\0';
  day_before(z->text);
  bic_buffer_free(&out);
  z->next = cc->zones;
  cc->zones = z;
  return z->text;
}

static int ch_step(void *cursor, char *err, size_t errlen) {
  ch_cursor *cur = cursor;
  char *line;
  size_t len;
  int rc;
  if (cur->done) return 0;
  rc = read_line(cur, &line, &len, err, errlen);
  if (rc < 0 && cancelled(cur->cc)) stop_for_cancel(cur);
  if (rc <= 0) {
    cur->done = 1;
    return rc;
  }
  if (split(cur, line, len, cur->ncols, cur->token, cur->cols) != 0) {
    /* what ClickHouse writes when it fails after the answer began */
    size_t show = len < 300 ? len : 300;
    char text[301];
    memcpy(text, line, show);
    text[show] = '\0';
    for (size_t i = 0; i < show; i++)
      if (text[i] == '\t') text[i] = ' ';
    bic_sql_error(err, errlen, cur->cc->password, "clickhouse: the server ended the answer with an error: ",
                  server_message(text));
    cur->done = 1;
    return -1;
  }
  for (int i = 0; i < cur->ncols; i++) {
    ch_col *c = &cur->cols[i];
    if (c->kind == K_DATETIME && c->tz && !c->epoch0 && !cur->isnull[i] && cur->fl[i] == sizeof ZERO_DATETIME - 1 &&
        memcmp(cur->fs[i], ZERO_DATETIME, cur->fl[i]) == 0) {
      c->epoch0 = zone_epoch0(cur->cc, c->tz, err, errlen);
      if (!c->epoch0) {
        if (cancelled(cur->cc)) stop_for_cancel(cur);
        cur->done = 1;
        return -1;
      }
    }
  }
  return 1;
}

static void ch_value(void *cursor, int col, bic_sql_value *out) {
  ch_cursor *cur = cursor;
  const char *s;
  size_t n;
  memset(out, 0, sizeof *out);
  out->kind = BIC_SQL_NULL;
  if (col < 0 || col >= cur->ncols || cur->isnull[col]) return;
  s = cur->fs[col];
  n = cur->fl[col];
  switch (cur->cols[col].kind) {
  case K_INT:
  case K_UINT64:
    if (bic_sql_parse_int(s, n, &out->i)) {
      out->kind = BIC_SQL_INT;
      return;
    }
    break; /* a UInt64 above 2^63-1: its text */
  case K_FLOAT:
    if (bic_sql_parse_decimal(s, n, &out->d)) {
      out->kind = BIC_SQL_DOUBLE;
      return;
    }
    if (n < sizeof cur->tmp) {
      char *end;
      memcpy(cur->tmp, s, n);
      cur->tmp[n] = '\0';
      out->d = strtod(cur->tmp, &end);
      if (end == cur->tmp + n && n > 0) {
        out->kind = BIC_SQL_DOUBLE;
        return;
      }
    }
    break;
  case K_DATE:
    if (n == 10 && memcmp(s, "0000-00-00", 10) == 0) {
      s = "1970-01-01";
    }
    break;
  case K_DATETIME:
    if (n == sizeof ZERO_DATETIME - 1 && memcmp(s, ZERO_DATETIME, n) == 0 && cur->cols[col].epoch0) {
      s = cur->cols[col].epoch0;
      n = strlen(s);
    }
    break;
  default:
    break;
  }
  out->kind = BIC_SQL_TEXT;
  out->s = n ? s : "";
  out->len = n;
}

/* ---- connections ------------------------------------------------------------------ */

static void ch_close(void *conn) {
  ch_conn *cc = conn;
  if (!cc) return;
  if (cc->easy) curl_easy_cleanup(cc->easy);
  if (cc->side) curl_easy_cleanup(cc->side);
  if (cc->multi) curl_multi_cleanup(cc->multi);
  if (cc->headers) {
    /* the key header holds the password */
    for (struct curl_slist *h = cc->headers; h; h = h->next)
      explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(cc->headers);
  }
  while (cc->zones) {
    ch_zone *z = cc->zones;
    cc->zones = z->next;
    free(z->tz);
    free(z);
  }
  free(cc->base);
  free(cc->user);
  bic_sql_free_secret(cc->password);
  free(cc->database);
  free(cc->ca_file);
  free(cc->settings);
  pthread_mutex_destroy(&cc->lock);
  free(cc);
}

static int truthy(const char *v) {
  return strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "on") == 0 || strcmp(v, "yes") == 0;
}

/* The options of opts->params: secure, ca_file, verify. 0, or -1 with err. */
static int read_params(ch_conn *cc, const char *params, char *err, size_t errlen) {
  const char *item, *eq;
  size_t n;
  while (bic_sql_next_param(&params, &item, &n, &eq)) {
    char *k = bic_sql_decode(item, eq ? (size_t)(eq - item) : n);
    char *v = eq ? bic_sql_decode(eq + 1, n - (size_t)(eq - item) - 1) : bic_sql_strdup("1");
    int ok = 1;
    if (!k || !v) {
      snprintf(err, errlen, "out of memory");
      ok = 0;
    } else if (strcmp(k, "secure") == 0) {
      cc->secure = truthy(v);
    } else if (strcmp(k, "verify") == 0) {
      cc->verify = truthy(v);
    } else if (strcmp(k, "ca_file") == 0) {
      free(cc->ca_file);
      cc->ca_file = v;
      v = NULL;
    } else {
      snprintf(err, errlen, "clickhouse: unknown connection option \"%.64s\" (known: secure, ca_file, verify)", k);
      ok = 0;
    }
    free(k);
    free(v);
    if (!ok) return -1;
  }
  return 0;
}

/* The settings of the profile that change answers, and ours for them. */
static const char *const MODES[] = {"result_overflow_mode", "read_overflow_mode", "timeout_overflow_mode",
                                    "group_by_overflow_mode", "sort_overflow_mode", "set_overflow_mode",
                                    "join_overflow_mode", "transfer_overflow_mode", "distinct_overflow_mode", NULL};
static const char *const PINNED[][2] = {{"output_format_tsv_null_representation", "\\N"},
                                        {"output_format_tsv_crlf_end_of_line", "0"},
                                        {"date_time_output_format", "simple"},
                                        {"format_tsv_null_representation", "\\N"}};

static const char OPEN_SQL[] =
    "SELECT version(), timezone(), formatDateTime(toDateTime(86400), '%F %T'), name, value FROM system.settings "
    "WHERE name IN ('readonly', 'max_execution_time', 'cancel_http_readonly_queries_on_client_close', "
    "'result_overflow_mode', 'read_overflow_mode', 'timeout_overflow_mode', 'group_by_overflow_mode', "
    "'sort_overflow_mode', 'set_overflow_mode', 'join_overflow_mode', 'transfer_overflow_mode', "
    "'distinct_overflow_mode', 'output_format_tsv_null_representation', 'output_format_tsv_crlf_end_of_line', "
    "'date_time_output_format', 'format_tsv_null_representation')";

typedef struct setting {
  char name[64];
  char value[64];
} setting;

static int put_setting(bic_buffer *b, const char *name, const char *value) {
  return bic_buffer_putc(b, '&') || bic_ch_url_escape(b, name, strlen(name)) || bic_buffer_putc(b, '=') ||
         bic_ch_url_escape(b, value, strlen(value));
}

/* Reads what the server says at open and decides the settings of the queries. */
static int learn_server(ch_conn *cc, int statement_timeout_ms, char *err, size_t errlen) {
  int retryable, rc, readonly = 0, major = 0, minor = 0, nset = 0;
  setting set[32];
  ch_cursor *cur = ch_query(cc, OPEN_SQL, NULL, 0, &retryable, err, errlen);
  bic_buffer b;
  if (!cur) return -1;
  while ((rc = ch_step(cur, err, errlen)) == 1) {
    if (nset == 0) {
      snprintf(cc->version, sizeof cc->version, "%.*s", (int)cur->fl[0], cur->fs[0]);
      if (cur->fl[2] == 19) {
        snprintf(cc->epoch0, sizeof cc->epoch0, "%.*s", (int)cur->fl[2], cur->fs[2]);
        day_before(cc->epoch0);
      }
    }
    if (nset < 32) {
      snprintf(set[nset].name, sizeof set[nset].name, "%.*s", (int)cur->fl[3], cur->fs[3]);
      snprintf(set[nset].value, sizeof set[nset].value, "%.*s", (int)cur->fl[4], cur->fs[4]);
      nset++;
    }
  }
  ch_close_cursor(cur);
  if (rc < 0) return -1;
  sscanf(cc->version, "%d.%d", &major, &minor);
  cc->query_params = major > 19 || (major == 19 && minor >= 11);
  for (int i = 0; i < nset; i++)
    if (strcmp(set[i].name, "readonly") == 0) readonly = atoi(set[i].value);
  cc->fixed = readonly == 1;
  bic_buffer_init(&b);
  rc = 0;
  if (cc->fixed) { /* cc->settings stays "" */
    /* nothing may be sent: refuse a profile that lets answers be cut */
    for (int i = 0; i < nset; i++) {
      int bad = 0;
      for (int m = 0; MODES[m]; m++)
        if (strcmp(set[i].name, MODES[m]) == 0 && strcmp(set[i].value, "throw") != 0) bad = 1;
      for (size_t p = 0; p < sizeof PINNED / sizeof PINNED[0]; p++)
        if (strcmp(set[i].name, PINNED[p][0]) == 0 && strcmp(set[i].value, PINNED[p][1]) != 0) bad = 1;
      if (bad) {
        snprintf(err, errlen,
                 "clickhouse: the account's profile has readonly=1 (no setting can be changed per query) and "
                 "%s=%s: answers could be cut or changed without an error; give the account readonly=2 "
                 "(docs/database.md, ClickHouse)",
                 set[i].name, set[i].value);
        return -1;
      }
    }
    if (statement_timeout_ms > 0) {
      snprintf(err, errlen,
               "clickhouse: statement_timeout needs an account that may change settings, and the account's "
               "profile has readonly=1; give it readonly=2 or set max_execution_time in its profile");
      return -1;
    }
  } else {
    rc = put_setting(&b, "readonly", "2");
    for (int i = 0; i < nset && !rc; i++) {
      const char *name = set[i].name;
      for (int m = 0; MODES[m] && !rc; m++)
        if (strcmp(name, MODES[m]) == 0) rc = put_setting(&b, name, "throw");
      for (size_t p = 0; p < sizeof PINNED / sizeof PINNED[0] && !rc; p++)
        if (strcmp(name, PINNED[p][0]) == 0) rc = put_setting(&b, name, PINNED[p][1]);
      if (!rc && strcmp(name, "cancel_http_readonly_queries_on_client_close") == 0 &&
          !(major == 19 && minor >= 13 && minor <= 17))
        rc = put_setting(&b, name, "1");
    }
    if (!rc && statement_timeout_ms > 0) {
      char sec[24];
      snprintf(sec, sizeof sec, "%d", (statement_timeout_ms + 999) / 1000);
      rc = put_setting(&b, "max_execution_time", sec);
    }
    if (!rc) rc = bic_buffer_putc(&b, '\0');
    free(cc->settings);
    cc->settings = rc ? NULL : bic_sql_strdup(b.data);
  }
  bic_buffer_free(&b);
  if (!cc->settings) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

static void *ch_open(const bic_sql_options *o, char *err, size_t errlen) {
  ch_conn *cc = calloc(1, sizeof *cc);
  bic_buffer b;
  int rc;
  if (!cc) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&cc->lock, NULL);
  cc->verify = 1;
  cc->connect_timeout_s = o->connect_timeout_s;
  cc->user = bic_sql_strdup(o->user ? o->user : "default");
  cc->password = bic_sql_strdup(o->password ? o->password : "");
  cc->database = bic_sql_strdup(o->database);
  cc->settings = bic_sql_strdup("");
  cc->seed = random_seed();
  if (!cc->user || !cc->password || !cc->settings || (o->database && !cc->database)) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  if (read_params(cc, o->params, err, errlen) != 0) goto fail;
  if (has_control(cc->user) || has_control(cc->password)) {
    snprintf(err, errlen, "clickhouse: the user name or the password holds a control byte");
    goto fail;
  }
  bic_buffer_init(&b);
  {
    const char *host = o->host ? o->host : "127.0.0.1";
    int v6 = strchr(host, ':') != NULL;
    char port[16];
    snprintf(port, sizeof port, ":%d/", o->port > 0 ? o->port : (cc->secure ? 8443 : 8123));
    rc = bic_buffer_puts(&b, "http") || (cc->secure && bic_buffer_putc(&b, 's')) || bic_buffer_puts(&b, "://") ||
         (v6 && bic_buffer_putc(&b, '[')) || bic_buffer_put(&b, host, strlen(host)) || (v6 && bic_buffer_putc(&b, ']')) ||
         bic_buffer_put(&b, port, strlen(port)) || bic_buffer_putc(&b, '\0');
    if (!rc) cc->base = bic_sql_strdup(b.data);
    b.len = 0;
    rc = rc || !cc->base || bic_buffer_puts(&b, "X-ClickHouse-User: ") || bic_buffer_put(&b, cc->user, strlen(cc->user)) ||
         bic_buffer_putc(&b, '\0');
    if (!rc) cc->headers = curl_slist_append(NULL, b.data);
    b.len = 0;
    rc = rc || !cc->headers || bic_buffer_puts(&b, "X-ClickHouse-Key: ") ||
         bic_buffer_put(&b, cc->password, strlen(cc->password)) || bic_buffer_putc(&b, '\0');
    if (!rc) {
      struct curl_slist *h = curl_slist_append(cc->headers, b.data);
      if (h) cc->headers = h;
      else rc = 1;
    }
    for (size_t i = 0; i < b.cap; i++) b.data[i] = 0; /* the password */
    if (!rc) {
      struct curl_slist *h = curl_slist_append(cc->headers, "Expect:");
      if (h) cc->headers = h;
      else rc = 1;
    }
    bic_buffer_free(&b);
  }
  cc->easy = rc ? NULL : curl_easy_init();
  if (!rc) {
    size_t n = 0;
    int *before = fds_now(&n);
    cc->multi = curl_multi_init();
    mark_new_unix_sockets(before, n);
  }
  if (!cc->easy || !cc->multi) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  cc->opening = 1;
  if (learn_server(cc, o->statement_timeout_ms, err, errlen) != 0) goto fail;
  cc->opening = 0;
  return cc;
fail:
  ch_close(cc);
  return NULL;
}

static int ch_alive(void *conn) { return !cancelled((ch_conn *)conn); }

/* From the pool's service thread while the job's thread streams on conn:
 * the job's thread drops the transfer at once (the flag, the wake-up) and
 * waits for this KILL QUERY ... SYNC, so that what the job answers then (504,
 * a cut answer) comes after the query left the server. */
static void ch_cancel(void *conn) {
  ch_conn *cc = conn;
  if (!cc) return;
  __atomic_store_n(&cc->cancel, 1, __ATOMIC_RELEASE);
  if (cc->multi) curl_multi_wakeup(cc->multi);
  kill_query(cc);
  __atomic_store_n(&cc->killed, 1, __ATOMIC_RELEASE);
}

const bic_sql_driver bic_sql_clickhouse = {
  .engine = "clickhouse", .open = ch_open, .query = ch_query, .ncols = ch_ncols,
  .colname = ch_colname, .coltype = ch_coltype, .step = ch_step, .value = ch_value,
  .close_cursor = ch_close_cursor, .alive = ch_alive, .cancel = ch_cancel, .cancel_apart = 1,
  .close = ch_close,
};

#endif

/* ---- core.sql.clickhouse_quote, core.sql.clickhouse_render --------------------------- */

/* core.sql.clickhouse_quote(text [, mark]) -> text between marks (' by
 * default, ` for a name) escaped by ClickHouse's rules. */
static int l_quote(lua_State *L) {
  size_t n, ml;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *mark = luaL_optlstring(L, 2, "'", &ml);
  bic_buffer *b;
  if (ml != 1 || (mark[0] != '\'' && mark[0] != '`' && mark[0] != '"'))
    return luaL_argerror(L, 2, "expected ', ` or \"");
  b = bic_buffer_push(L);
  if (bic_ch_quote(b, s, n, mark[0]) != 0) return luaL_error(L, "out of memory");
  lua_pushlstring(L, b->data, b->len);
  return 1;
}

/* core.sql.clickhouse_render(sql, params [, query_params]) -> text, url
 * parameters ("" with literals) | nil, message: what the driver sends. */
static int l_render(lua_State *L) {
  size_t n;
  const char *sql = luaL_checklstring(L, 1, &n);
  int np, rc;
  bic_sql_value *params;
  bic_buffer *out, *qp;
  char err[256];
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3);
  params = bic_sql_push_params(L, 2, &np); /* 4 */
  out = bic_buffer_push(L);
  qp = bic_buffer_push(L);
  rc = bic_ch_render(out, lua_toboolean(L, 3) ? qp : NULL, sql, n, params, np, err, sizeof err);
  if (rc == -2) return luaL_error(L, "out of memory");
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushlstring(L, out->data ? out->data : "", out->len);
  lua_pushlstring(L, qp->data ? qp->data : "", qp->len);
  return 2;
}

void bic_open_sql_clickhouse(lua_State *L) {
  lua_pushcfunction(L, l_quote);
  lua_setfield(L, -2, "clickhouse_quote");
  lua_pushcfunction(L, l_render);
  lua_setfield(L, -2, "clickhouse_render");
}
