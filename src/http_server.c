/* The built-in HTTP server (core.server) over libmicrohttpd.
 *
 * MHD runs in external polling mode (epoll) driven by server:run() on the
 * calling Lua thread: every MHD callback therefore runs inside MHD_run() on
 * that thread and calls Lua only through lua_pcall, so a Lua error never
 * unwinds through libmicrohttpd frames. core.process (process.c) is registered
 * from here too.
 *
 * Waiting answers. A handler (or a body iterator) that waits for something
 * (a database query on a thread of its own) answers core.server.WAIT, fd,
 * seconds[, finish, continue] instead: the connection is suspended
 * (MHD_suspend_connection) and run() polls fd beside MHD's own descriptors;
 * when fd is readable, the seconds are up or the client has left, the
 * connection is resumed and the handler's continue() (or the iterator) is
 * called again. Meanwhile the other connections are served. */
#include "bic.h"
#include "buffer.h"
#include "process.h"
#include "tls.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <linux/sockios.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <microhttpd.h>

#define SERVER_MT "biconnector.server"
#define DEFAULT_MAX_BODY (8u * 1024u * 1024u)
#define DEFAULT_TIMEOUT 30
#define DEFAULT_CONNECTIONS 512
/* Bodies held at once over all connections (core.server's default: none set means this). */
#define DEFAULT_MAX_BODIES (64u * 1024u * 1024u)
/* How often run() looks for requests past their deadline and half-closed sockets. */
#define SWEEP_INTERVAL 0.25
#define DEFAULT_GRACE 10.0
#define STREAM_BLOCK (64 * 1024)
/* How much of a chunked body over the limit is read and dropped before the
 * connection is cut instead of answered with 413. */
#define DISCARD_LIMIT (64u * 1024u * 1024u)

/* ----------------------------------------------------------------- server */

/* Per-connection state (MHD_OPTION_NOTIFY_CONNECTION), linked in the server's
 * list so that run() can cut a request still incomplete at its deadline and a
 * client that half-closed once its answers are sent. */
typedef struct conn_state {
  struct conn_state *prev, *next;
  struct MHD_Connection *conn;
  struct server *srv; /* for the TLS certificate callback, which gets only the session */
  double since;  /* when the request being received began: connection open, or previous answer done */
  int answering; /* a response is queued: the deadline does not apply */
  int in_request; /* a request line was read and its answer is not done */
  int cut;       /* shut down by us: MHD closes it on its next run */
  int sending;   /* its answer is queued: the idle rule is ours (see sweep) */
  int idle_cut;  /* cut by that rule: the access log says "timeout" */
  double progress; /* the last time its client took bytes */
  int outq;      /* the socket's unsent bytes at the last sweep (-1: not read yet) */
} conn_state;

typedef struct server {
  struct MHD_Daemon *daemon; /* NULL once closed: the userdata closes once */
  lua_State *L;              /* the thread currently driving MHD */
  int handler_ref;
  size_t max_body;
  double grace;
  int port;
  int listen_fd;             /* owned by MHD until quiesced */
  int stop;                  /* server:stop() was called */
  int running;               /* inside run(): close must wait */
  int quiescing;
  size_t max_bodies;         /* request bodies held at once, all connections */
  size_t bodies;             /* bytes reserved for bodies now */
  double request_timeout;    /* seconds for a complete request (0: none) */
  unsigned int timeout;      /* seconds a connection may be idle (MHD's, and ours for answers) */
  double next_sweep;
  int refused_ref;           /* Lua function told of answers made without the handler */
  conn_state *conns;
  struct request *waiting;   /* suspended requests (see "Waiting answers") */
  struct pollfd *pfds;       /* run()'s poll set */
  size_t npfds;
  bic_tls *tls;              /* HTTPS credentials (NULL: plain HTTP); server:tls() swaps them */
} server;

/* core.server.WAIT: the light userdata a handler or body iterator answers to wait. */
static char wait_sentinel;

/* Per-request state, from the first access-handler call to the completion notice. */
typedef struct request {
  struct request *wprev, *wnext; /* in the server's list of waiting requests */
  struct MHD_Connection *conn;
  int waiting;       /* suspended until wait_fd is readable or wait_until */
  int wait_fd;
  double wait_until;
  int gone;          /* the client left while the request waited */
  int continue_ref;  /* a handler that waits: what to call when the wait ends */
  bic_buffer body;
  size_t discarded;
  size_t reserved;   /* bytes of srv->bodies this request holds */
  int too_large;
  int busy;          /* the body budget was full: 503 */
  int started;       /* the access handler has seen the headers */
  int dispatched;    /* the Lua handler was called (its finish callback logs) */
  int bad_url;       /* a control byte in the request target, raw or %-encoded */
  int fragment;      /* the target has a raw '#' before its query string */
  size_t hashes;     /* %23s in the target before that '#': bytes of the path, not a fragment */
  unsigned int status; /* what we queued ourselves, for the refusal log */
  double since;      /* when the request line was read */
  char method[16];
  char target[256];  /* the raw request target (truncated), for the refusal log */
  int finish_ref;
  int stream_failed; /* the body iterator failed: the cut is ours, not the client's */
  int answer_failed; /* the handler's answer was refused: a 500 went out instead */
  const char *how;   /* for the finish callback: "ok", "aborted", ... */
} request;

/* A chunked answer: the Lua iterator and the chunk being sent. */
typedef struct stream {
  server *srv;
  request *req; /* alive while MHD reads the stream (it reads for this request only) */
  int iterator_ref;
  int chunk_ref;
  const char *chunk;
  size_t len, off;
  int ended;
  int wait_fd;      /* the iterator answered WAIT: wait for this (-1: no) */
  double wait_s;
} stream;

/* Names and values MHD holds for the request, gathered without calling Lua. */
typedef struct kv_list {
  const char **items; /* key, value, key, value, ... */
  size_t n, cap;
  int failed;
} kv_list;

/* One request handed to Lua: filled in C, used by the protected dispatch. */
typedef struct dispatch {
  server *srv;
  request *req;
  int wait_fd;       /* the handler waits (WAIT): for this */
  double wait_s;
  const char *method, *url;
  kv_list headers, arguments;
  char remote[INET6_ADDRSTRLEN];
  struct MHD_Response *response; /* owned here until queued (destroyed on error) */
  unsigned int status;
  const char *failure; /* what went wrong, for the log */
} dispatch;

static void log_error(const char *what, const char *message) {
  fprintf(stderr, "biconnector.server: %s: %s\n", what, message ? message : "(no message)");
  fflush(stderr);
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Runs f(ud) in protected mode, so that no Lua error -- out of memory included --
 * can unwind through the libmicrohttpd frames below us. Returns 0, or non-zero
 * with the error message on the stack. The caller has checked the stack space. */
static int run_protected(lua_State *L, lua_CFunction f, void *ud) {
#if LUA_VERSION_NUM == 501
  return lua_cpcall(L, f, ud); /* pushes nothing that could fail outside protection */
#else
  lua_pushcfunction(L, f); /* a light C function: no allocation */
  lua_pushlightuserdata(L, ud);
  return lua_pcall(L, 1, 0, 0);
#endif
}

/* Calls the function below nargs arguments with a traceback handler, inside a
 * protected function. Returns 0 (results on the stack) or -1 (message on the stack). */
static int call_traced(lua_State *L, int nargs, int nresults) {
  int base = lua_gettop(L) - nargs;
  int status;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  return status == 0 ? 0 : -1;
}

static enum MHD_Result queue_json(struct MHD_Connection *conn, unsigned int status,
                                  const char *body) {
  struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                           MHD_RESPMEM_PERSISTENT);
  enum MHD_Result ret;
  if (r == NULL) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", "application/json; charset=utf-8");
  ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  return ret;
}

static conn_state *state_of(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci =
    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci != NULL ? (conn_state *)ci->socket_context : NULL;
}

/* A refusal made here, before or instead of the handler: JSON body, the status
 * kept for the access log, and the connection closed after it (a body not read
 * is never taken for a next request). */
static enum MHD_Result refuse(struct MHD_Connection *conn, request *req, unsigned int status,
                              const char *body) {
  struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                           MHD_RESPMEM_PERSISTENT);
  enum MHD_Result ret;
  conn_state *cs = state_of(conn);
  if (r == NULL) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", "application/json; charset=utf-8");
  MHD_add_response_header(r, "Connection", "close");
  if (status == 503) MHD_add_response_header(r, "Retry-After", "1");
  ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  if (ret == MHD_YES) {
    req->status = status;
    if (cs != NULL) cs->answering = 1;
  }
  return ret;
}

static void release_body(server *srv, request *req) {
  srv->bodies -= req->reserved < srv->bodies ? req->reserved : srv->bodies;
  req->reserved = 0;
}

static const char BODY_TOO_LARGE[] =
  "{\"error\":\"payload_too_large\",\"message\":\"the request body is over the server's limit\"}";
static const char BODY_BUSY[] =
  "{\"error\":\"server_busy\",\"message\":\"the server holds as many request bodies as it may; retry later\"}";
static const char BAD_TARGET[] =
  "{\"error\":\"bad_request\",\"message\":\"the request target holds a control byte\"}";
static const char BAD_LENGTH[] =
  "{\"error\":\"bad_request\",\"message\":\"Content-Length given more than once\"}";
static const char BAD_FRAMING[] =
  "{\"error\":\"bad_request\",\"message\":\"Content-Length and Transfer-Encoding together\"}";
static const char BAD_CODING[] =
  "{\"error\":\"bad_request\",\"message\":\"a Transfer-Encoding other than a single chunked\"}";
static const char NO_HOST[] =
  "{\"error\":\"bad_request\",\"message\":\"an HTTP/1.1 request must carry a Host header (RFC 9112, 3.2)\"}";
static const char BODY_INTERNAL[] =
  "{\"error\":\"internal_error\",\"message\":\"the request handler failed; see the server log\"}";

/* A query argument holding %00: Lua would get it cut at the NUL; refused instead. */
static const char BODY_QUERY_NUL[] =
  "{\"error\":\"bad_request\",\"message\":\"query string: a name or value holds an encoded NUL byte (%00)\"}";

static enum MHD_Result find_nul(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                const char *value, size_t value_size) {
  (void)kind;
  if (strlen(key) == key_size && (value == NULL || strlen(value) == value_size)) return MHD_YES;
  *(int *)cls = 1;
  return MHD_NO;
}

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value) {
  kv_list *l = (kv_list *)cls;
  (void)kind;
  if (l->n + 2 > l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 32;
    const char **items = (const char **)realloc((void *)l->items, cap * sizeof *items);
    if (items == NULL) { l->failed = 1; return MHD_NO; }
    l->items = items;
    l->cap = cap;
  }
  l->items[l->n++] = key;
  l->items[l->n++] = value ? value : "";
  return MHD_YES;
}

/* headers as {lower-case name = value}; a repeated header is joined with ", " */
static void push_headers(lua_State *L, const kv_list *l) {
  size_t k;
  lua_createtable(L, 0, (int)(l->n / 2));
  for (k = 0; k + 1 < l->n; k += 2) {
    char name[256];
    const char *key = l->items[k];
    size_t i, n = strlen(key);
    if (n >= sizeof name) continue; /* absurd names are dropped */
    for (i = 0; i < n; i++) {
      char c = key[i];
      name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    lua_pushlstring(L, name, n);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_type(L, -1) == LUA_TSTRING) {
      lua_pushliteral(L, ", ");
      lua_pushstring(L, l->items[k + 1]);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, l->items[k + 1]);
    }
    lua_rawset(L, -3);
  }
}

static void push_arguments(lua_State *L, const kv_list *l) {
  size_t k;
  lua_createtable(L, 0, (int)(l->n / 2));
  for (k = 0; k + 1 < l->n; k += 2) {
    lua_pushstring(L, l->items[k]);
    lua_pushstring(L, l->items[k + 1]);
    lua_rawset(L, -3);
  }
}

static void remote_text(struct MHD_Connection *conn, char *text, size_t size) {
  const union MHD_ConnectionInfo *ci =
    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  text[0] = '\0';
  if (ci != NULL && ci->client_addr != NULL) {
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
      inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, text, (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, text, (socklen_t)size);
  }
}

/* Suspends req's connection until fd is readable or seconds pass (see "Waiting answers"). */
static void start_wait(server *srv, request *req, int fd, double seconds) {
  req->waiting = 1;
  req->wait_fd = fd;
  req->wait_until = bic_clock() + (seconds > 0 ? seconds : 0);
  req->wprev = NULL;
  req->wnext = srv->waiting;
  if (srv->waiting != NULL) srv->waiting->wprev = req;
  srv->waiting = req;
  MHD_suspend_connection(req->conn);
}

/* Ends req's wait (gone: the client left) and resumes its connection. */
static void end_wait(server *srv, request *req, int gone) {
  if (!req->waiting) return;
  req->waiting = 0;
  if (gone) req->gone = 1;
  if (req->wprev != NULL) req->wprev->wnext = req->wnext;
  else srv->waiting = req->wnext;
  if (req->wnext != NULL) req->wnext->wprev = req->wprev;
  req->wprev = req->wnext = NULL;
  MHD_resume_connection(req->conn);
}

/* Reads WAIT, fd, seconds at index idx: 1 when the value at idx is WAIT. */
static int is_wait(lua_State *L, int idx, int *fd, double *seconds) {
  if (lua_type(L, idx) != LUA_TLIGHTUSERDATA || lua_touserdata(L, idx) != (void *)&wait_sentinel) return 0;
  if (lua_type(L, idx + 1) != LUA_TNUMBER) luaL_error(L, "WAIT: expected a file descriptor after it");
  *fd = (int)lua_tointeger(L, idx + 1);
  *seconds = lua_isnumber(L, idx + 2) ? (double)lua_tonumber(L, idx + 2) : 1.0;
  if (*fd < 0) luaL_error(L, "WAIT: bad file descriptor %d", *fd);
  return 1;
}

/* Protected: asks the iterator for its next chunk; leaves it in s (or s->ended). */
static int next_chunk(lua_State *L) {
  stream *s = (stream *)lua_touserdata(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, s->chunk_ref);
  s->chunk_ref = LUA_NOREF;
  s->chunk = NULL;
  s->len = s->off = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->iterator_ref);
  if (call_traced(L, 0, 3) != 0) {
    log_error("body iterator failed", lua_tostring(L, -1));
    s->ended = s->req->stream_failed = 1;
  } else if (is_wait(L, -3, &s->wait_fd, &s->wait_s)) {
    /* nothing to send now: stream_read suspends the connection */
  } else if (lua_type(L, -3) == LUA_TBOOLEAN && !lua_toboolean(L, -3)) {
    s->ended = s->req->stream_failed = 1; /* false: the answer is cut (its cause is logged already) */
  } else if (lua_isnil(L, -3)) {
    s->ended = 1;
  } else if (lua_type(L, -3) != LUA_TSTRING) {
    log_error("body iterator failed",
              lua_pushfstring(L, "chunk is a %s, expected a string or nil", luaL_typename(L, -3)));
    s->ended = s->req->stream_failed = 1;
  } else {
    size_t len;
    const char *chunk;
    lua_settop(L, -3); /* the chunk on top */
    chunk = lua_tolstring(L, -1, &len);
    s->chunk_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* keeps the string alive while sent */
    s->chunk = chunk;
    s->len = len;
  }
  return 0;
}

/* Content reader of a chunked answer: pulls chunks from the Lua iterator. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  stream *s = (stream *)cls;
  lua_State *L = s->srv->L;
  (void)pos;
  if (s->ended) return MHD_CONTENT_READER_END_OF_STREAM;
  if (L == NULL) return MHD_CONTENT_READER_END_WITH_ERROR; /* the Lua state is closing */
  if (s->req->gone) return MHD_CONTENT_READER_END_WITH_ERROR; /* the client left while we waited */
  { /* MHD asks for more: its buffer went out, the client took bytes (see start_sending) */
    conn_state *cs = s->req->conn != NULL ? state_of(s->req->conn) : NULL;
    if (cs != NULL) cs->progress = bic_clock();
  }
  if (s->off >= s->len) { /* the chunk is sent: ask the iterator for the next one */
    int top = lua_gettop(L);
    s->wait_fd = -1;
    if (!lua_checkstack(L, 8) || run_protected(L, next_chunk, s) != 0) {
      log_error("body iterator failed", top < lua_gettop(L) ? lua_tostring(L, -1) : "no stack space");
      s->ended = s->req->stream_failed = 1;
    }
    lua_settop(L, top);
    if (s->ended) {
      return s->req->stream_failed ? MHD_CONTENT_READER_END_WITH_ERROR
                                   : MHD_CONTENT_READER_END_OF_STREAM;
    }
    if (s->wait_fd >= 0) { /* the iterator waits: so does this connection */
      start_wait(s->srv, s->req, s->wait_fd, s->wait_s);
      return 0;
    }
    /* an empty chunk: nothing to send now; MHD calls again on its next run, after
     * serving the other connections (an endless run of them cannot starve those) */
    if (s->len == 0) return 0;
  }
  {
    size_t n = s->len - s->off;
    if (n > max) n = max;
    memcpy(buf, s->chunk + s->off, n);
    s->off += n;
    return (ssize_t)n;
  }
}

/* Called by MHD when the answer is done or the client went away. luaL_unref of
 * an existing reference only overwrites a registry slot: it cannot raise. */
static void stream_free(void *cls) {
  stream *s = (stream *)cls;
  lua_State *L = s->srv->L;
  if (L != NULL && lua_checkstack(L, 2)) {
    luaL_unref(L, LUA_REGISTRYINDEX, s->chunk_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, s->iterator_ref);
  }
  free(s);
}

/* Checks the handler's results at base (status, headers, body) and builds the
 * response into d->response. Raises (to the protected dispatch) on a bad answer. */
static void make_response(lua_State *L, dispatch *d, int base) {
  struct MHD_Response *r = NULL;
  int st = base, hd = base + 1, bd = base + 2;
  lua_Number code;
  d->failure = "request handler returned a bad answer";
  if (lua_type(L, st) != LUA_TNUMBER)
    luaL_error(L, "status is a %s, expected a number", luaL_typename(L, st));
  code = lua_tonumber(L, st);
  if (!(code >= 100 && code <= 599) || code != (lua_Number)(int)code)
    luaL_error(L, "status %s is not an HTTP status", lua_tostring(L, st));
  d->status = (unsigned int)code;
  if (!lua_isnil(L, hd) && !lua_istable(L, hd))
    luaL_error(L, "headers is a %s, expected a table", luaL_typename(L, hd));
  if (lua_type(L, bd) == LUA_TSTRING) {
    size_t len;
    const char *body = lua_tolstring(L, bd, &len);
    r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  } else if (lua_isnil(L, bd)) {
    r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  } else if (lua_isfunction(L, bd)) {
    stream *s = (stream *)calloc(1, sizeof *s);
    if (s == NULL) luaL_error(L, "out of memory");
    s->srv = d->srv;
    s->req = d->req;
    s->iterator_ref = s->chunk_ref = LUA_NOREF;
    s->wait_fd = -1;
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, s,
                                          stream_free);
    if (r == NULL) { free(s); luaL_error(L, "cannot create a response"); }
    d->response = r; /* from here the response (and its free callback) owns s */
    lua_pushvalue(L, bd);
    s->iterator_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    luaL_error(L, "body is a %s, expected a string, an iterator function or nil",
               luaL_typename(L, bd));
  }
  if (r == NULL) luaL_error(L, "cannot create a response");
  d->response = r;
  if (lua_istable(L, hd)) {
    lua_pushnil(L);
    while (lua_next(L, hd) != 0) {
      if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING &&
                                             lua_type(L, -1) != LUA_TNUMBER))
        luaL_error(L, "headers must map names to strings");
      /* MHD writes Content-Length from the body itself and refuses one from us */
      if (strcasecmp(lua_tostring(L, -2), MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        lua_pop(L, 1);
        continue;
      }
      lua_pushvalue(L, -1); /* a number value: convert a copy, not the key under lua_next */
      if (MHD_add_response_header(r, lua_tostring(L, -3), lua_tostring(L, -1)) != MHD_YES)
        luaL_error(L, "header '%s' is not valid", lua_tostring(L, -3));
      lua_pop(L, 2);
    }
  }
}

/* The handler's results at base: status, headers, body, finish -- or WAIT, fd,
 * seconds, finish, continue (the answer comes later: d->wait_fd is set). */
static void take_answer(lua_State *L, dispatch *d, int base) {
  request *req = d->req;
  int waits = is_wait(L, base, &d->wait_fd, &d->wait_s);
  if (lua_isfunction(L, base + 3)) { /* called once the answer is done or abandoned */
    luaL_unref(L, LUA_REGISTRYINDEX, req->finish_ref);
    lua_pushvalue(L, base + 3);
    req->finish_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (waits) {
    if (!lua_isfunction(L, base + 4)) {
      d->wait_fd = -1;
      luaL_error(L, "WAIT: expected fd, seconds, finish, continue");
    }
    lua_pushvalue(L, base + 4);
    req->continue_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return;
  }
  d->wait_fd = -1;
  make_response(L, d, base); /* a bad answer still gets its finish call, with "error" */
}

/* The path of a request target. A target in absolute form ("http://host/check",
 * which RFC 9112, 3.2.2 says a server must accept, and nginx does) is the path
 * after its scheme and authority; libmicrohttpd hands it over whole. */
static const char *origin_path(const char *url) {
  const char *p;
  if (url == NULL) return "";
  if (strncasecmp(url, "http://", 7) == 0) p = url + 7;
  else if (strncasecmp(url, "https://", 8) == 0) p = url + 8;
  else return url;
  p += strcspn(p, "/?#");
  return *p == '/' ? p : "/";
}

/* Protected: builds the request table, calls the handler, checks its answer. */
static int dispatch_request(lua_State *L) {
  dispatch *d = (dispatch *)lua_touserdata(L, 1);
  request *req = d->req;
  int base;
  d->failure = "request failed";
  lua_rawgeti(L, LUA_REGISTRYINDEX, d->srv->handler_ref);
  lua_createtable(L, 0, 7);
  lua_pushstring(L, d->method);
  lua_setfield(L, -2, "method");
  {
    /* a fragment (a raw "#..."), which a client should not send, is no part of the
     * path (nginx drops it too); an encoded one (%23) is a byte of the path, as an
     * encoded '?' is: d->url is decoded, so the fragment starts at the '#' after
     * the target's %23s before it */
    const char *path = origin_path(d->url);
    size_t len = strlen(path);
    if (req->fragment) {
      size_t skip = req->hashes, i;
      for (i = 0; i < len; i++) {
        if (path[i] == '#' && skip-- == 0) break;
      }
      len = i;
    }
    lua_pushlstring(L, path, len);
  }
  lua_setfield(L, -2, "path");
  push_arguments(L, &d->arguments);
  lua_setfield(L, -2, "query");
  push_headers(L, &d->headers);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, req->body.data ? req->body.data : "", req->body.len);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, d->remote);
  lua_setfield(L, -2, "remote");
  bic_buffer_free(&req->body);
  base = lua_gettop(L) - 1;
  d->failure = "request handler failed";
  if (call_traced(L, 1, 5) != 0) lua_error(L); /* the message carries the traceback */
  take_answer(L, d, base);
  return 0;
}

/* Protected: the continuation of a handler that waited, called when its wait ends. */
static int continue_request(lua_State *L) {
  dispatch *d = (dispatch *)lua_touserdata(L, 1);
  request *req = d->req;
  int base = lua_gettop(L) + 1;
  d->failure = "request handler failed";
  lua_rawgeti(L, LUA_REGISTRYINDEX, req->continue_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, req->continue_ref);
  req->continue_ref = LUA_NOREF;
  if (call_traced(L, 0, 5) != 0) lua_error(L);
  take_answer(L, d, base);
  return 0;
}

/* Counts the request headers named like cls->name, and keeps the last value. */
typedef struct header_count {
  const char *name;
  const char *value;
  int n;
} header_count;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
  header_count *hc = (header_count *)cls;
  (void)kind;
  if (key != NULL && strcasecmp(key, hc->name) == 0) {
    hc->n++;
    hc->value = value ? value : "";
  }
  return MHD_YES;
}

static request *new_request(void) {
  request *req = (request *)calloc(1, sizeof *req);
  if (req == NULL) return NULL;
  bic_buffer_init(&req->body);
  req->finish_ref = req->continue_ref = LUA_NOREF;
  req->wait_fd = -1;
  return req;
}

/* The first call, with the headers: refuses what must not be answered as asked
 * (a control byte in the target, ambiguous framing, a body over the limits)
 * before the body is read. */
static enum MHD_Result on_headers(server *srv, request *req, struct MHD_Connection *conn,
                                  const char *method, const char *version) {
  header_count cl = {MHD_HTTP_HEADER_CONTENT_LENGTH, NULL, 0};
  header_count te = {MHD_HTTP_HEADER_TRANSFER_ENCODING, NULL, 0};
  header_count host = {MHD_HTTP_HEADER_HOST, NULL, 0};
  unsigned long long length = 0;
  req->started = 1;
  req->conn = conn;
  snprintf(req->method, sizeof req->method, "%s", method);
  if (req->bad_url) return refuse(conn, req, 400, BAD_TARGET);
  MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &cl);
  MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &te);
  MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &host);
  if (host.n == 0 && version != NULL && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
    return refuse(conn, req, 400, NO_HOST);
  /* one request, one answer: a framing two parsers could read two ways is refused */
  if (cl.n > 1) return refuse(conn, req, 400, BAD_LENGTH);
  if (cl.n > 0 && te.n > 0) return refuse(conn, req, 400, BAD_FRAMING);
  if (te.n > 1 || (te.n == 1 && strcasecmp(te.value, "chunked") != 0))
    return refuse(conn, req, 400, BAD_CODING);
  if (cl.n == 1) {
    length = strtoull(cl.value, NULL, 10); /* MHD has checked it is all digits */
    if (length > (unsigned long long)srv->max_body) {
      req->too_large = 1;
      return refuse(conn, req, 413, BODY_TOO_LARGE);
    }
    if (length > 0) {
      /* the whole body is reserved at once: bodies in flight stay within the budget
       * however many clients announce one and then send it slowly */
      if (length > srv->max_bodies - srv->bodies || srv->bodies > srv->max_bodies) {
        req->busy = 1;
        return refuse(conn, req, 503, BODY_BUSY);
      }
      srv->bodies += (size_t)length;
      req->reserved = (size_t)length;
    }
  }
  return MHD_YES;
}

/* A piece of the body. A Content-Length body is within its reservation; a chunked
 * one reserves as it grows. Over the limit or the budget, the rest is dropped as
 * it arrives and the answer is 413 or 503 once it ends (cut when it goes on far past). */
static enum MHD_Result on_body(server *srv, request *req, const char *data, size_t n) {
  if (!req->too_large && !req->busy) {
    size_t want = req->body.len + n;
    if (want > srv->max_body) {
      req->too_large = 1;
    } else if (want > req->reserved) {
      size_t extra = want - req->reserved;
      if (srv->bodies > srv->max_bodies || extra > srv->max_bodies - srv->bodies) {
        req->busy = 1;
      } else {
        srv->bodies += extra;
        req->reserved += extra;
      }
    }
    if (req->too_large || req->busy) {
      bic_buffer_free(&req->body);
      release_body(srv, req);
    }
  }
  if (req->too_large || req->busy) {
    req->discarded += n;
    return req->discarded > srv->max_body + DISCARD_LIMIT ? MHD_NO : MHD_YES;
  }
  if (req->body.cap == 0 && req->reserved > n) {
    /* a Content-Length body: one allocation of its exact size */
    req->body.data = (char *)malloc(req->reserved);
    if (req->body.data == NULL) return MHD_NO;
    req->body.cap = req->reserved;
  }
  return bic_buffer_put(&req->body, data, n) == 0 ? MHD_YES : MHD_NO;
}

static enum MHD_Result answer(server *srv, request *req, struct MHD_Connection *conn, dispatch *d,
                              int failed);
static enum MHD_Result resume_request(server *srv, request *req, struct MHD_Connection *conn);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  server *srv = (server *)cls;
  request *req = (request *)*con_cls;
  lua_State *L = srv->L;
  dispatch d;
  int top, failed;
  conn_state *cs;
  if (L == NULL) return MHD_NO; /* the Lua state is closing */
  if (req == NULL) { /* the URI callback could not allocate it */
    if ((req = new_request()) == NULL) return MHD_NO;
    *con_cls = req;
  }
  if (!req->started) return on_headers(srv, req, conn, method, version);
  if (req->continue_ref != LUA_NOREF) return resume_request(srv, req, conn);
  if (*upload_data_size > 0) { /* a piece of the body */
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    return on_body(srv, req, upload_data, n);
  }
  if (req->too_large) return refuse(conn, req, 413, BODY_TOO_LARGE);
  if (req->busy) return refuse(conn, req, 503, BODY_BUSY);

  failed = 0;
  MHD_get_connection_values_n(conn, MHD_GET_ARGUMENT_KIND, find_nul, &failed);
  if (failed) return refuse(conn, req, MHD_HTTP_BAD_REQUEST, BODY_QUERY_NUL);
  memset(&d, 0, sizeof d);
  d.srv = srv;
  d.req = req;
  d.method = method;
  d.url = url;
  MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_kv, &d.headers);
  MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_kv, &d.arguments);
  remote_text(conn, d.remote, sizeof d.remote);
  top = lua_gettop(L);
  req->dispatched = 1;
  d.wait_fd = -1;
  if ((cs = state_of(conn)) != NULL) cs->answering = 1;
  if (d.headers.failed || d.arguments.failed || !lua_checkstack(L, 20)) {
    failed = 1;
    log_error("request failed", "out of memory");
  } else if ((failed = run_protected(L, dispatch_request, &d)) != 0) {
    log_error(d.failure, lua_tostring(L, -1));
  }
  lua_settop(L, top);
  release_body(srv, req); /* the body is a Lua string now (or gone) */
  free((void *)d.headers.items);
  free((void *)d.arguments.items);
  return answer(srv, req, conn, &d, failed);
}

/* An answer is queued: MHD's idle timeout counts the time since MHD last wrote,
 * which a slow reader with full socket buffers stretches without being idle
 * at all; for the answer the idle rule is ours instead: cut when the client
 * has taken nothing (the socket's send queue did not shrink) for the timeout
 * (sweep). MHD's own timeout comes back with the next request (on_completed). */
static void start_sending(server *srv, struct MHD_Connection *conn) {
  conn_state *cs = state_of(conn);
  if (cs == NULL || srv->timeout == 0) return;
  MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, 0);
  cs->sending = 1;
  cs->progress = bic_clock();
  cs->outq = -1;
}

/* After the handler (or its continuation) ran: queue its answer, a 500 when it
 * failed, or suspend the connection while it waits. */
static enum MHD_Result answer(server *srv, request *req, struct MHD_Connection *conn, dispatch *d,
                              int failed) {
  enum MHD_Result ret;
  if (failed) {
    if (d->response != NULL) MHD_destroy_response(d->response); /* frees a stream too */
    req->answer_failed = 1;
    return queue_json(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, BODY_INTERNAL);
  }
  if (d->wait_fd >= 0) {
    start_wait(srv, req, d->wait_fd, d->wait_s);
    return MHD_YES;
  }
  ret = MHD_queue_response(conn, d->status, d->response);
  MHD_destroy_response(d->response);
  if (ret == MHD_YES) start_sending(srv, conn);
  return ret;
}

/* MHD calls the access handler again once a waiting request's connection is
 * resumed: its continuation runs (or, the client gone, the connection closes). */
static enum MHD_Result resume_request(server *srv, request *req, struct MHD_Connection *conn) {
  lua_State *L = srv->L;
  dispatch d;
  int top, failed;
  if (req->gone) return MHD_NO; /* on_completed tells finish "aborted" */
  memset(&d, 0, sizeof d);
  d.srv = srv;
  d.req = req;
  d.wait_fd = -1;
  top = lua_gettop(L);
  if (!lua_checkstack(L, 20)) {
    failed = 1;
    log_error("request failed", "no stack space");
  } else if ((failed = run_protected(L, continue_request, &d)) != 0) {
    log_error(d.failure, lua_tostring(L, -1));
  }
  lua_settop(L, top);
  return answer(srv, req, conn, &d, failed);
}

/* MHD_OPTION_URI_LOG_CALLBACK: the request line is read. The request state starts
 * here, so that MHD's own refusals (400, 413, 431, ...) reach on_completed too.
 * A control byte in the path, raw or %-encoded, marks the request for a 400. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn) {
  request *req = new_request();
  const unsigned char *p;
  conn_state *cs;
  (void)cls;
  if (conn != NULL && (cs = state_of(conn)) != NULL) cs->in_request = 1;
  if (req == NULL) return NULL;
  req->since = bic_clock();
  snprintf(req->target, sizeof req->target, "%s", uri ? uri : "");
  /* a raw '#' before the query string starts a fragment; the %23s before it are path bytes */
  for (p = (const unsigned char *)(uri ? uri : ""); *p && *p != '?' && *p != '#'; p++) {
    if (p[0] == '%' && p[1] == '2' && p[2] == '3') req->hashes++;
  }
  req->fragment = *p == '#';
  /* the path only: a query string holding %00 gets its own 400 (find_nul) */
  for (p = (const unsigned char *)(uri ? uri : ""); *p && *p != '?'; p++) {
    if (*p < 0x20 || *p == 0x7f) req->bad_url = 1;
    if (*p == '%' && p[1] != '\0' && p[2] != '\0') {
      /* %00-%1F and %7F: MHD would decode %00 into an end of string (/check%00 read as /check) */
      int hi = p[1], lo = p[2];
      if ((hi == '0' || hi == '1') && isxdigit(lo)) req->bad_url = 1;
      if (hi == '7' && (lo == 'f' || lo == 'F')) req->bad_url = 1;
    }
  }
  return req;
}

/* MHD_OPTION_NOTIFY_CONNECTION: keeps the list of open connections. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  server *srv = (server *)cls;
  conn_state *cs = (conn_state *)*socket_context;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    cs = (conn_state *)calloc(1, sizeof *cs);
    if (cs == NULL) return; /* no deadline for this one */
    cs->conn = conn;
    cs->srv = srv;
    cs->since = bic_clock();
    cs->next = srv->conns;
    if (srv->conns != NULL) srv->conns->prev = cs;
    srv->conns = cs;
    *socket_context = cs;
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && cs != NULL) {
    if (cs->prev != NULL) cs->prev->next = cs->next;
    else srv->conns = cs->next;
    if (cs->next != NULL) cs->next->prev = cs->prev;
    free(cs);
    *socket_context = NULL;
  }
}

/* Whether the client of socket fd has left: it closed (EOF) or reset it. */
static int client_gone(int fd) {
  char c;
  ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Whether conn is suspended, waiting (its database work has its own deadline). */
static int is_waiting(server *srv, struct MHD_Connection *conn) {
  request *req;
  for (req = srv->waiting; req != NULL; req = req->wnext)
    if (req->conn == conn) return 1;
  return 0;
}

/* Cuts (shutdown: MHD reads the end and closes it) every connection whose request
 * is not complete by its deadline, every idle one whose client half-closed, and,
 * once the server stops accepting (graceful stop), every one between requests:
 * an idle keep-alive connection must not hold the stop for the whole grace period. */
static void sweep(server *srv, double now) {
  conn_state *cs;
  request *req, *next;
  /* a suspended connection is not watched by MHD: a client that left is found here */
  for (req = srv->waiting; req != NULL; req = next) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    next = req->wnext;
    if (ci == NULL) continue;
    if (client_gone(ci->connect_fd)) end_wait(srv, req, 1);
  }
  for (cs = srv->conns; cs != NULL; cs = cs->next) {
    const union MHD_ConnectionInfo *ci;
    int fd, late;
    char c;
    if (cs->sending && !cs->cut) {
      /* an answer being sent: cut only when its client took nothing for the timeout */
      int outq = 0;
      ci = MHD_get_connection_info(cs->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
      if (ci == NULL) continue;
      fd = ci->connect_fd;
      if (ioctl(fd, SIOCOUTQ, &outq) != 0 || outq < cs->outq || outq == 0 || is_waiting(srv, cs->conn))
        cs->progress = now;
      cs->outq = outq;
      if (now - cs->progress > (double)srv->timeout) cs->idle_cut = 1;
      else if (!client_gone(fd)) continue; /* the client left while nothing was written to find it out */
      /* cut: MHD, which neither reads nor writes this connection now, closes it
       * on its own timeout, set again from none to one second */
      shutdown(fd, SHUT_RDWR);
      cs->cut = 1;
      MHD_set_connection_option(cs->conn, MHD_CONNECTION_OPTION_TIMEOUT, 1);
      continue;
    }
    if (cs->answering || cs->cut) continue;
    ci = MHD_get_connection_info(cs->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL) continue;
    fd = ci->connect_fd;
    late = srv->request_timeout > 0 && now - cs->since > srv->request_timeout;
    if (late || (srv->quiescing && !cs->in_request) || recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
      shutdown(fd, SHUT_RDWR);
      cs->cut = 1;
    }
  }
}

/* Protected: calls the request's finish callback with req->how. */
static int call_finish(lua_State *L) {
  request *req = (request *)lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, req->finish_ref);
  lua_pushstring(L, req->how);
  if (call_traced(L, 1, 0) != 0) log_error("finish callback failed", lua_tostring(L, -1));
  return 0;
}

/* What a refusal callback gets: the answer made without the handler. */
typedef struct refusal {
  server *srv;
  const char *method, *target, *how;
  char remote[INET6_ADDRSTRLEN];
  unsigned int status;
  double ms; /* from the request line to the end of the answer */
} refusal;

/* Protected: refused{method=, path=, remote=, status=, how=}. */
static int call_refused(lua_State *L) {
  refusal *r = (refusal *)lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->srv->refused_ref);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, r->method);
  lua_setfield(L, -2, "method");
  lua_pushstring(L, r->target);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, r->remote);
  lua_setfield(L, -2, "remote");
  lua_pushinteger(L, (lua_Integer)r->status);
  lua_setfield(L, -2, "status");
  lua_pushstring(L, r->how);
  lua_setfield(L, -2, "how");
  lua_pushnumber(L, (lua_Number)r->ms);
  lua_setfield(L, -2, "ms");
  if (call_traced(L, 1, 0) != 0) log_error("refused callback failed", lua_tostring(L, -1));
  return 0;
}

static void tell_refused(server *srv, refusal *r) {
  lua_State *L = srv->L;
  int top;
  if (srv->refused_ref == LUA_NOREF || L == NULL || !lua_checkstack(L, 8)) return;
  top = lua_gettop(L);
  if (run_protected(L, call_refused, r) != 0) log_error("refused callback failed", lua_tostring(L, -1));
  lua_settop(L, top);
}

/* MHD_OPTION_EXTERNAL_LOGGER. MHD's refusals before the request line is read
 * (414: the line does not fit; 505) never reach on_completed: told from here.
 * Every other refusal comes after the URI callback and is told by on_completed. */
static void on_mhd_log(void *cls, const char *fm, va_list ap) {
  server *srv = (server *)cls;
  static const char prefix[] = "Error processing request (HTTP response code is %u";
  if (strncmp(fm, prefix, sizeof prefix - 1) == 0) {
    va_list aq;
    unsigned int code;
    va_copy(aq, ap);
    code = va_arg(aq, unsigned int);
    va_end(aq);
    if (code == 414 || code == 505) {
      refusal r;
      memset(&r, 0, sizeof r);
      r.srv = srv;
      r.method = r.target = "-";
      r.how = "refused";
      r.status = code;
      tell_refused(srv, &r);
    }
  }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  server *srv = (server *)cls;
  request *req = (request *)*con_cls;
  lua_State *L = srv->L;
  conn_state *cs = state_of(conn);
  const char *cut_how = NULL; /* cut by the sweep: how the answer ended */
  if (cs != NULL) { /* the next request's deadline runs from here */
    cs->answering = cs->in_request = 0;
    cs->since = bic_clock();
    if (cs->sending && cs->cut) cut_how = cs->idle_cut ? "timeout" : "aborted";
    if (cs->sending) { /* between requests MHD's idle timeout applies again */
      cs->sending = 0;
      if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, srv->timeout);
    }
  }
  if (req == NULL) return;
  *con_cls = NULL;
  release_body(srv, req);
  if (req->waiting) { /* closed while suspended (the daemon stops): out of the list */
    if (req->wprev != NULL) req->wprev->wnext = req->wnext;
    else srv->waiting = req->wnext;
    if (req->wnext != NULL) req->wnext->wprev = req->wprev;
    req->waiting = 0;
  }
  if (req->continue_ref != LUA_NOREF && L != NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, req->continue_ref);
    req->continue_ref = LUA_NOREF;
  }
  if (!req->dispatched) {
    /* answered without the handler: by us (413, 503, 400) or by MHD itself */
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);
    refusal r;
    memset(&r, 0, sizeof r);
    r.srv = srv;
    r.status = req->status ? req->status : (ci != NULL ? ci->http_status : 0);
    if (r.status != 0) {
      r.method = req->method[0] ? req->method : "-";
      r.target = req->target;
      r.how = "refused";
      r.ms = req->since > 0 ? (bic_clock() - req->since) * 1000 : 0;
      remote_text(conn, r.remote, sizeof r.remote);
      tell_refused(srv, &r);
    }
  }
  if (req->finish_ref != LUA_NOREF && L != NULL && lua_checkstack(L, 8)) {
    int top = lua_gettop(L);
    req->how = "error";
    switch (toe) {
      case MHD_REQUEST_TERMINATED_COMPLETED_OK: req->how = "ok"; break;
      case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: req->how = "timeout"; break;
      case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: req->how = "shutdown"; break;
      case MHD_REQUEST_TERMINATED_CLIENT_ABORT: req->how = "aborted"; break;
      case MHD_REQUEST_TERMINATED_READ_ERROR: req->how = "aborted"; break;
      /* a failed send: the client went away, unless our own stream failed */
      case MHD_REQUEST_TERMINATED_WITH_ERROR:
        req->how = req->stream_failed ? "error" : "aborted";
        break;
      default: break;
    }
    if (req->answer_failed) req->how = "error";
    if (cut_how != NULL) req->how = cut_how;
    if (run_protected(L, call_finish, req) != 0) log_error("finish callback failed", lua_tostring(L, -1));
    lua_settop(L, top);
    luaL_unref(L, LUA_REGISTRYINDEX, req->finish_ref);
  }
  bic_buffer_free(&req->body);
  free(req);
}

/* MHD_OPTION_HTTPS_CERT_CALLBACK (GnuTLS asks during each handshake): the
 * server's current credentials, so that server:tls() can swap a renewed
 * certificate in while connections go on. MHD keeps its connection as the
 * session's pointer. No Lua runs here. */
static int tls_certificate(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                           const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                           gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *pkey) {
  struct MHD_Connection *conn = (struct MHD_Connection *)gnutls_session_get_ptr(session);
  conn_state *cs = conn != NULL ? state_of(conn) : NULL;
  (void)req_ca_dn; (void)nreqs; (void)pk_algos; (void)pk_algos_length;
  if (cs == NULL || cs->srv == NULL || cs->srv->tls == NULL) return -1; /* the handshake fails */
  *pcert = cs->srv->tls->certs;
  *pcert_length = cs->srv->tls->ncerts;
  *pkey = cs->srv->tls->key;
  return 0;
}

/* Opens a listening TCP socket; returns the fd or -1 with a message in err. */
static int open_listener(const char *host, const char *port, int reuse_port, int *family,
                         char *err, size_t errlen) {
  struct addrinfo hints, *res = NULL, *ai;
  int fd = -1, rc, one = 1, saved = 0;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0) {
    snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
    return -1;
  }
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) { saved = errno; continue; }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
#ifdef SO_REUSEPORT
    if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
#else
    (void)reuse_port;
#endif
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 511) == 0) {
      *family = ai->ai_family;
      break;
    }
    saved = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) snprintf(err, errlen, "cannot listen on %s:%s: %s", host, port, strerror(saved));
  return fd;
}

static int socket_port(int fd, int *family) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return -1;
  if (family) *family = ss.ss_family;
  if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return -1;
}

/* core.server.listen(host, port [, reuse_port]) -> fd, port | nil, err */
static int l_listen(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2); /* checked before any cast: 2^32 + 80 is not 80 */
  int reuse = lua_toboolean(L, 3), family = 0, fd;
  char err[256], service[16];
  luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port out of range");
  snprintf(service, sizeof service, "%d", (int)port);
  fd = open_listener(host, service, reuse, &family, err, sizeof err);
  if (fd < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushinteger(L, fd);
  lua_pushinteger(L, socket_port(fd, NULL));
  return 2;
}

/* core.server.new{handler=, host=, port=, fd=, max_body=, max_bodies=, timeout=,
 *                 request_timeout=, connections=, per_address=, grace=, reuse_port=,
 *                 refused=, tls_cert=, tls_key=} -> server | nil, err
 * tls_cert (a PEM chain) with tls_key (its PEM key) serves HTTPS, TLS 1.2 and 1.3 only. */
/* The names core.server.new takes (docs/serve.md): any other is an error
 * naming it, so that a misspelt limit does not silently keep its default. */
static const char *const OPTION_NAMES[] = {
  "handler", "host", "port", "fd", "reuse_port", "max_body", "max_bodies", "timeout", "request_timeout",
  "connections", "per_address", "grace", "refused", "tls_cert", "tls_key", NULL
};

static void check_option_names(lua_State *L) {
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    int known = 0;
    lua_pop(L, 1); /* the value */
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *name = lua_tostring(L, -1);
      int i;
      for (i = 0; OPTION_NAMES[i] != NULL && !known; i++) known = strcmp(name, OPTION_NAMES[i]) == 0;
      if (!known) luaL_error(L, "core.server.new: unknown option '%s'", name);
    } else {
      /* the type first: lua_tostring makes a number key text in place */
      const char *type_name = luaL_typename(L, -1);
      luaL_error(L, "core.server.new: unknown option %s (a %s key)",
                 lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : "of another type", type_name);
    }
  }
}

static int l_new(lua_State *L) {
  server *srv;
  const char *host, *tls_cert, *tls_key;
  int port, fd, family = AF_INET, owned_fd = 0, reuse_port;
  unsigned int flags = MHD_USE_EPOLL | MHD_USE_TURBO | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME, timeout,
               connections;
  unsigned int per_address;
  size_t max_body, max_bodies;
  double request_timeout;
  lua_Number grace;
  char err[256];
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  check_option_names(L);
  lua_getfield(L, 1, "handler");
  if (!lua_isfunction(L, -1)) return luaL_error(L, "option 'handler' must be a function");
  lua_pop(L, 1);
  lua_getfield(L, 1, "refused");
  if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
    return luaL_error(L, "option 'refused' must be a function");
  lua_pop(L, 1);
  /* every option is read before anything is opened: a bad one raises with nothing to undo */
  host = bic_opt_string(L, 1, "host", "127.0.0.1", NULL); /* stays at index 2 */
  port = (int)bic_opt_number(L, 1, "port", 8080, 0, 65535);
  fd = (int)bic_opt_number(L, 1, "fd", -1, -1, 1e9);
  /* MHD counts whole seconds: 0.5 rounds up to 1, not down to 0 (no timeout at all) */
  timeout = (unsigned int)ceil(bic_opt_number(L, 1, "timeout", DEFAULT_TIMEOUT, 0, 86400));
  connections = (unsigned int)bic_opt_number(L, 1, "connections", DEFAULT_CONNECTIONS, 1, 1e6);
  max_body = (size_t)bic_opt_number(L, 1, "max_body", DEFAULT_MAX_BODY, 0, 1e12);
  max_bodies = (size_t)bic_opt_number(L, 1, "max_bodies", DEFAULT_MAX_BODIES, 0, 1e12);
  request_timeout = bic_opt_number(L, 1, "request_timeout", 0, 0, 86400);
  per_address = (unsigned int)bic_opt_number(L, 1, "per_address", 0, 0, 1e6);
  grace = bic_opt_number(L, 1, "grace", DEFAULT_GRACE, 0, 1e6);
  lua_getfield(L, 1, "reuse_port");
  reuse_port = lua_toboolean(L, -1);
  lua_pop(L, 1);
  tls_cert = bic_opt_string(L, 1, "tls_cert", NULL, NULL); /* both stay on the stack */
  tls_key = bic_opt_string(L, 1, "tls_key", NULL, NULL);
  if ((tls_cert == NULL) != (tls_key == NULL))
    return luaL_error(L, "options 'tls_cert' and 'tls_key' go together");
  if (tls_cert != NULL && (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES ||
                           MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK) != MHD_YES)) {
    lua_pushnil(L);
    lua_pushliteral(L, "this libmicrohttpd has no TLS (HTTPS) support");
    return 2;
  }

  srv = (server *)bic_object(L, sizeof *srv, SERVER_MT);
  srv->handler_ref = srv->refused_ref = LUA_NOREF;
  srv->listen_fd = -1;
  srv->max_body = max_body;
  srv->max_bodies = max_bodies;
  srv->request_timeout = request_timeout;
  srv->timeout = timeout;
  srv->grace = grace;
  /* the server owns its credentials from here (freed by close or __gc) */
  if (tls_cert != NULL && (srv->tls = bic_tls_load(tls_cert, strlen(tls_cert), tls_key, strlen(tls_key),
                                                   err, sizeof err)) == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }

  if (fd < 0) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    fd = open_listener(host, service, reuse_port, &family, err, sizeof err);
    if (fd < 0) {
      lua_pushnil(L);
      lua_pushstring(L, err);
      return 2;
    }
    owned_fd = 1;
  } else {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
      lua_pushnil(L);
      lua_pushfstring(L, "listening socket %d is not usable: %s", fd, strerror(errno));
      return 2;
    }
  }
  srv->port = socket_port(fd, &family);
  if (family == AF_INET6) flags |= MHD_USE_IPv6;
  lua_getfield(L, 1, "handler");
  srv->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, 1, "refused");
  if (lua_isnil(L, -1)) lua_pop(L, 1);
  else srv->refused_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  srv->L = L;
#define SERVER_OPTIONS \
    MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv, \
    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, \
    MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, \
    MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, \
    MHD_OPTION_URI_LOG_CALLBACK, on_uri, srv, \
    MHD_OPTION_CONNECTION_TIMEOUT, timeout, \
    MHD_OPTION_CONNECTION_LIMIT, connections, \
    MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_address
  if (srv->tls != NULL)
    srv->daemon = MHD_start_daemon(flags | MHD_USE_TLS, 0, NULL, NULL, on_request, srv, SERVER_OPTIONS,
      MHD_OPTION_HTTPS_CERT_CALLBACK, tls_certificate,
      MHD_OPTION_HTTPS_PRIORITIES, BIC_TLS_PRIORITIES,
      MHD_OPTION_END);
  else
    srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv, SERVER_OPTIONS, MHD_OPTION_END);
#undef SERVER_OPTIONS
  if (srv->daemon == NULL) {
    if (owned_fd) close(fd);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->handler_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, srv->refused_ref);
    srv->handler_ref = srv->refused_ref = LUA_NOREF;
    bic_tls_free(srv->tls);
    srv->tls = NULL;
    lua_pushnil(L);
    lua_pushliteral(L, "libmicrohttpd could not start the daemon");
    return 2;
  }
  srv->listen_fd = fd;
  return 1;
}

static server *check_server(lua_State *L) {
  return (server *)luaL_checkudata(L, 1, SERVER_MT);
}

static server *check_open(lua_State *L) {
  server *srv = check_server(L);
  if (srv->daemon == NULL) luaL_error(L, "the server is closed");
  return srv;
}

static void begin_quiesce(server *srv) {
  MHD_socket fd;
  if (srv->quiescing) return;
  srv->quiescing = 1;
  fd = MHD_quiesce_daemon(srv->daemon);
  if (fd != MHD_INVALID_SOCKET) close(fd);
  srv->listen_fd = -1;
}

static unsigned int current_connections(server *srv) {
  const union MHD_DaemonInfo *di =
    MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
  return di ? di->num_connections : 0;
}

/* server:run([seconds]) -> reason: serves until server:stop() ("stopped"), a
 * SIGTERM/SIGINT trapped by core.process.trap ("TERM"/"INT", after in-flight
 * answers finished or the grace period ended), a trapped SIGHUP ("HUP", at once,
 * connections kept: call run() again), or the optional time is up ("timeout"). */
static int l_run(lua_State *L) {
  server *srv = check_open(L);
  lua_Number limit = luaL_optnumber(L, 2, -1);
  double start = bic_clock(), deadline = 0;
  const char *reason = "stopped";
  const union MHD_DaemonInfo *di;
  int epfd;
  if (srv->running) return luaL_error(L, "the server is already running");
  di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_EPOLL_FD);
  if (di == NULL) return luaL_error(L, "libmicrohttpd gives no epoll descriptor");
  epfd = di->epoll_fd;
  srv->running = 1;
  srv->stop = 0;
  while (!srv->stop) {
    struct pollfd *pfd;
    MHD_UNSIGNED_LONG_LONG mhd_timeout;
    int timeout = 1000, n = 2, sig;
    size_t nwait = 0;
    request *w;
    double t = bic_clock();
    if (!srv->quiescing && (sig = bic_signal_take_stop()) != 0) {
      reason = bic_signal_name(sig);
      begin_quiesce(srv);
      deadline = t + srv->grace;
    }
    /* a SIGHUP (trapped) asks for a reload: run() returns "HUP" and keeps every
     * connection, so the next run() goes on where this one stopped */
    if (!srv->quiescing && bic_signal_take_reload()) { reason = "HUP"; break; }
    if (srv->quiescing && deadline > 0) {
      if (current_connections(srv) == 0 || t >= deadline) break;
      if (bic_signal_take_stop() != 0) break; /* a second signal: stop now */
    }
    /* the time limit ends a run, not a graceful stop: once draining, run() returns when it is done */
    if (limit >= 0 && deadline == 0 && t - start >= limit) { reason = "timeout"; break; }
    if (MHD_get_timeout(srv->daemon, &mhd_timeout) == MHD_YES && mhd_timeout < (unsigned)timeout)
      timeout = (int)mhd_timeout;
    if (limit >= 0 && deadline == 0) {
      double left = (start + limit - t) * 1000 + 1;
      if (left < timeout) timeout = (int)left;
    }
    if (deadline > 0 && timeout > 100) timeout = 100; /* re-count connections while draining */
    if (srv->conns != NULL && timeout > (int)(SWEEP_INTERVAL * 1000)) timeout = (int)(SWEEP_INTERVAL * 1000);
    /* the poll set: MHD's epoll descriptor, the signal pipe, what waiting requests wait for */
    for (w = srv->waiting; w != NULL; w = w->wnext) {
      int left = (int)((w->wait_until - t) * 1000) + 1;
      nwait++;
      if (left < timeout) timeout = left < 0 ? 0 : left;
    }
    if (srv->npfds < nwait + 2) {
      struct pollfd *grown = (struct pollfd *)realloc(srv->pfds, (nwait + 8) * sizeof *grown);
      if (grown == NULL) {
        srv->running = 0;
        return luaL_error(L, "out of memory");
      }
      srv->pfds = grown;
      srv->npfds = nwait + 8;
    }
    pfd = srv->pfds;
    pfd[0].fd = epfd;
    pfd[0].events = POLLIN;
    pfd[1].fd = bic_signal_fd(); /* -1 (ignored by poll) until a signal is trapped */
    pfd[1].events = POLLIN;
    for (w = srv->waiting; w != NULL; w = w->wnext, n++) {
      pfd[n].fd = w->wait_fd;
      pfd[n].events = POLLIN;
      pfd[n].revents = 0;
    }
    if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR) {
      srv->running = 0;
      return luaL_error(L, "poll failed: %s", strerror(errno));
    }
    bic_signal_drain();
    srv->L = L;
    /* waits that ended: resumed (the list is in the poll set's order) */
    t = bic_clock();
    n = 2;
    for (w = srv->waiting; w != NULL; n++) {
      request *next = w->wnext;
      if ((pfd[n].revents != 0) || t >= w->wait_until) end_wait(srv, w, 0);
      w = next;
    }
    if ((srv->conns != NULL || srv->waiting != NULL) && t >= srv->next_sweep) {
      sweep(srv, t);
      srv->next_sweep = t + SWEEP_INTERVAL;
    }
    MHD_run(srv->daemon);
  }
  srv->running = 0;
  lua_pushstring(L, srv->stop ? "stopped" : reason);
  return 1;
}

/* server:stop(): makes run() return after the current step (from a handler too). */
static int l_stop(lua_State *L) {
  server *srv = check_server(L);
  srv->stop = 1;
  return 0;
}

/* server:quiesce(): stop accepting connections; in-flight ones go on. */
static int l_quiesce(lua_State *L) {
  server *srv = check_open(L);
  begin_quiesce(srv);
  return 0;
}

/* server:tls(cert_pem, key_pem) -> true | nil, err: new credentials for the
 * handshakes from now on (a renewed certificate); a pair that does not load
 * leaves the current one in place. Sessions already open may still refer to the
 * old ones: they are kept until the server closes, or freed now if no
 * connection is open. */
static int l_tls(lua_State *L) {
  server *srv = check_open(L);
  size_t cert_len, key_len;
  const char *cert = luaL_checklstring(L, 2, &cert_len);
  const char *key = luaL_checklstring(L, 3, &key_len);
  char err[256];
  bic_tls *tls;
  if (srv->tls == NULL) return luaL_error(L, "the server was started without TLS (tls_cert, tls_key)");
  tls = bic_tls_load(cert, cert_len, key, key_len, err, sizeof err);
  if (tls == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  if (current_connections(srv) == 0) bic_tls_free(srv->tls);
  else tls->older = srv->tls;
  srv->tls = tls;
  lua_pushboolean(L, 1);
  return 1;
}

static int l_port(lua_State *L) {
  server *srv = check_open(L);
  lua_pushinteger(L, srv->port);
  return 1;
}

static int l_connections(lua_State *L) {
  server *srv = check_open(L);
  lua_pushinteger(L, (lua_Integer)current_connections(srv));
  return 1;
}

/* close / __gc / __close: safe to call twice. Connections still open are cut. */
static int l_close(lua_State *L) {
  server *srv = check_server(L);
  struct MHD_Daemon *daemon;
  if (srv->daemon == NULL) { /* closed, or never started: only credentials may be left */
    bic_tls_free(srv->tls);
    srv->tls = NULL;
    return 0;
  }
  if (srv->running) return luaL_error(L, "cannot close a running server; call server:stop()");
  daemon = srv->daemon;
  srv->L = L;
  /* MHD cannot stop with suspended connections: each is resumed as gone and
   * closed by one more run */
  if (srv->waiting != NULL) {
    while (srv->waiting != NULL) end_wait(srv, srv->waiting, 1);
    MHD_run(daemon);
  }
  /* closed before the stop: a finish callback that the stop runs and that
   * closes or runs the server again finds it closed (MHD aborts on a second stop) */
  srv->daemon = NULL;
  MHD_stop_daemon(daemon); /* runs the completion and stream-free callbacks */
  free(srv->pfds);
  srv->pfds = NULL;
  srv->npfds = 0;
  bic_tls_free(srv->tls); /* no session is left that could use them */
  srv->tls = NULL;
  if (srv->quiescing) srv->listen_fd = -1;
  luaL_unref(L, LUA_REGISTRYINDEX, srv->handler_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, srv->refused_ref);
  srv->handler_ref = srv->refused_ref = LUA_NOREF;
  srv->L = NULL;
  return 0;
}

static int l_gc(lua_State *L) {
  server *srv = check_server(L);
  if (srv->running) {
    /* Only lua_close collects a server inside run(): os.exit(code, true) called
     * from a handler or a body iterator. MHD_stop_daemon from inside MHD's own
     * callback deadlocks, and the process is about to end: leave MHD alone, and
     * keep any further callback away from the closing state. */
    srv->L = NULL;
    return 0;
  }
  return l_close(L);
}

static int l_tostring(lua_State *L) {
  server *srv = check_server(L);
  if (srv->daemon == NULL) lua_pushliteral(L, "biconnector.server (closed)");
  else lua_pushfstring(L, "biconnector.server (port %d)", srv->port);
  return 1;
}

/* core.server.check_tls(cert_pem, key_pem) -> true | nil, err: would the pair
 * serve HTTPS (`serve` checks once before it starts its workers). */
static int l_check_tls(lua_State *L) {
  size_t cert_len, key_len;
  const char *cert = luaL_checklstring(L, 1, &cert_len);
  const char *key = luaL_checklstring(L, 2, &key_len);
  char err[256];
  bic_tls *tls = bic_tls_load(cert, cert_len, key, key_len, err, sizeof err);
  if (tls == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  bic_tls_free(tls);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.server.tls_info(cert_pem) -> {{subject, issuer, not_before, not_after,
 * self_signed}, ...} for each certificate of the chain (the server's first) |
 * nil, err: what `serve` warns about at start (dates, a missing chain). */
static int l_tls_info(lua_State *L) {
  size_t cert_len;
  const char *cert = luaL_checklstring(L, 1, &cert_len);
  bic_tls_cert_info info[16];
  char err[256];
  int n = bic_tls_describe(cert, cert_len, info, 16, err, sizeof err), i;
  if (n < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, info[i].subject);
    lua_setfield(L, -2, "subject");
    lua_pushstring(L, info[i].issuer);
    lua_setfield(L, -2, "issuer");
    lua_pushinteger(L, (lua_Integer)info[i].not_before);
    lua_setfield(L, -2, "not_before");
    lua_pushinteger(L, (lua_Integer)info[i].not_after);
    lua_setfield(L, -2, "not_after");
    lua_pushboolean(L, info[i].self_signed);
    lua_setfield(L, -2, "self_signed");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* core.server.cpus() -> the number of online CPUs (for serve's default workers) */
static int l_cpus(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? (lua_Integer)n : 1);
  return 1;
}

int bic_open_http_server(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"run", l_run},
    {"stop", l_stop},
    {"quiesce", l_quiesce},
    {"port", l_port},
    {"tls", l_tls},
    {"connections", l_connections},
    {"close", l_close},
    {NULL, NULL}
  };
  static const luaL_Reg server_functions[] = {
    {"new", l_new},
    {"listen", l_listen},
    {"cpus", l_cpus},
    {"check_tls", l_check_tls},
    {"tls_info", l_tls_info},
    {NULL, NULL}
  };

  bic_class(L, SERVER_MT, methods, l_gc, l_close, l_tostring);
  luaL_newlib(L, server_functions);
  lua_pushlightuserdata(L, (void *)&wait_sentinel);
  lua_setfield(L, -2, "WAIT");
  lua_setfield(L, -2, "server");
  return 0;
}
