/* core.http: the REST client's transport over libcurl. The OS helpers the Lua
 * client uses (clock, sleep, locks, atomic writes) are core.os (os.c), also
 * under their older names here (core.http.now, time, sleep, lock, write_atomic).
 *
 * No Lua function is ever called while libcurl is on the C stack: the header
 * and write callbacks only append to C buffers owned by the handle, and every
 * value libcurl keeps (header list, body) is owned by the handle or anchored on
 * the Lua stack for the duration of curl_easy_perform. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bic.h"
#include "buffer.h"
#include "os.h"
#include "process.h"

#define HANDLE_MT "biconnector.http"
#define ERROR_MT "biconnector.http.error"

typedef struct http_handle {
  CURL *curl;               /* NULL once closed */
  struct curl_slist *headers;
  bic_buffer body;
  bic_buffer head;          /* raw header lines of the last response */
  size_t max_body;          /* answers longer than this abort the transfer */
  int too_big;
  int busy;
  int fds_marked;           /* the first perform's own descriptors are close-on-exec */
  char errbuf[CURL_ERROR_SIZE];
} http_handle;

/* ---- error object ---------------------------------------------------- */

static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "code");
  lua_pushfstring(L, "http error %s: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?",
                  lua_tostring(L, -2) ? lua_tostring(L, -2) : "?");
  return 1;
}

/* Requests that surely never reached the server: no connection was made, or the
 * TLS handshake failed before a byte of the request was written. */
static int surely_not_sent(CURL *curl, CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return 1;
    case CURLE_OPERATION_TIMEDOUT: {
      /* A timeout while still connecting is as safe as a refused connection. */
      curl_off_t connect_time = 0;
      long request_size = 0;
      curl_easy_getinfo(curl, CURLINFO_CONNECT_TIME_T, &connect_time);
      curl_easy_getinfo(curl, CURLINFO_REQUEST_SIZE, &request_size);
      return connect_time == 0 && request_size == 0;
    }
    default:
      return 0;
  }
}

/* Pushes nil and an error table {code, name?, message, not_sent, timeout}. */
static int push_error(lua_State *L, http_handle *h, CURLcode rc) {
  const char *detail = h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc);
  lua_pushnil(L);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, (lua_Integer)rc);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, detail);
  lua_setfield(L, -2, "message");
  lua_pushstring(L, curl_easy_strerror(rc));
  lua_setfield(L, -2, "reason");
  lua_pushboolean(L, surely_not_sent(h->curl, rc));
  lua_setfield(L, -2, "not_sent");
  lua_pushboolean(L, rc == CURLE_OPERATION_TIMEDOUT);
  lua_setfield(L, -2, "timeout");
  luaL_getmetatable(L, ERROR_MT);
  lua_setmetatable(L, -2);
  return 2;
}

/* ---- callbacks: C buffers only ----------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  http_handle *h = (http_handle *)ud;
  if (size * n > h->max_body - h->body.len) {
    h->too_big = 1;
    return 0; /* aborts: CURLE_WRITE_ERROR */
  }
  if (bic_buffer_put(&h->body, p, size * n) != 0) return 0;
  return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  http_handle *h = (http_handle *)ud;
  size_t len = size * n;
  /* A new status line (after 100 Continue or a proxy CONNECT) starts over. */
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) h->head.len = 0;
  if (bic_buffer_put(&h->head, p, len) != 0) return 0;
  return len;
}

/* ---- handle ------------------------------------------------------------ */

static http_handle *check_handle(lua_State *L) {
  http_handle *h = (http_handle *)luaL_checkudata(L, 1, HANDLE_MT);
  if (h->curl == NULL) luaL_argerror(L, 1, "http handle is closed");
  return h;
}

static int handle_new(lua_State *L) {
  /* Born closed: a failure below leaves a userdata that __gc handles. */
  http_handle *h = (http_handle *)bic_object(L, sizeof(http_handle), HANDLE_MT);
  bic_buffer_init(&h->body);
  bic_buffer_init(&h->head);
  h->curl = curl_easy_init();
  if (h->curl == NULL) {
    lua_pushnil(L);
    lua_pushliteral(L, "curl_easy_init failed");
    return 2;
  }
  return 1;
}

static int handle_close(lua_State *L) {
  http_handle *h = (http_handle *)luaL_checkudata(L, 1, HANDLE_MT);
  if (h->busy) return luaL_error(L, "http handle is in use");
  if (h->curl) curl_easy_cleanup(h->curl);
  h->curl = NULL;
  if (h->headers) curl_slist_free_all(h->headers);
  h->headers = NULL;
  bic_buffer_free(&h->body);
  bic_buffer_free(&h->head);
  return 0;
}

static int handle_closed(lua_State *L) {
  http_handle *h = (http_handle *)luaL_checkudata(L, 1, HANDLE_MT);
  lua_pushboolean(L, h->curl == NULL);
  return 1;
}

static int handle_tostring(lua_State *L) {
  http_handle *h = (http_handle *)luaL_checkudata(L, 1, HANDLE_MT);
  lua_pushfstring(L, "biconnector.http (%s)", h->curl ? "open" : "closed");
  return 1;
}

/* A number option within [lo, hi] (NaN is refused too). */
static double opt_number(lua_State *L, int t, const char *key, double dflt, double lo, double hi, const char *range) {
  double v = dflt;
  lua_getfield(L, t, key);
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "request option '%s' must be a number", key);
    v = lua_tonumber(L, -1);
    if (!(v >= lo && v <= hi)) luaL_error(L, "request option '%s' must be %s", key, range);
  }
  lua_pop(L, 1);
  return v;
}

static int append_header(http_handle *h, const char *line) {
  struct curl_slist *l = curl_slist_append(h->headers, line);
  if (l == NULL) return -1;
  h->headers = l;
  return 0;
}

/* Headers given as {name = value} or as a list of "Name: value" strings. */
static void collect_headers(lua_State *L, http_handle *h, int t) {
  lua_getfield(L, t, "headers");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  if (!lua_istable(L, -1)) luaL_error(L, "request option 'headers' must be a table");
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    if (lua_type(L, -2) == LUA_TNUMBER) {
      const char *line;
      size_t len;
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "header list entries must be strings");
      line = lua_tolstring(L, -1, &len);
      /* a line break would smuggle another header (or a body) into the request */
      if (strchr(line, '\r') || strchr(line, '\n') || strlen(line) != len)
        luaL_error(L, "header '%s' holds a line break or a zero byte", line);
      if (append_header(h, line) != 0) luaL_error(L, "out of memory");
    } else if (lua_type(L, -2) == LUA_TSTRING && (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)) {
      const char *line;
      lua_pushvalue(L, -2);
      lua_pushliteral(L, ": ");
      lua_pushvalue(L, -3);
      lua_concat(L, 3);
      line = lua_tostring(L, -1);
      if (strchr(line, '\r') || strchr(line, '\n')) luaL_error(L, "header '%s' holds a line break", lua_tostring(L, -3));
      if (append_header(h, line) != 0) luaL_error(L, "out of memory");
      lua_pop(L, 1);
    } else {
      luaL_error(L, "headers must map names to strings");
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Parses the collected header lines into {lower-case name = value}; repeated
 * headers are joined with ", " (Set-Cookie excepted, which nobody here needs). */
static void push_headers(lua_State *L, http_handle *h) {
  const char *p = h->head.data, *end = p + h->head.len;
  lua_newtable(L);
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end;
    const char *colon = memchr(p, ':', (size_t)(line_end - p));
    int status_line = line_end - p >= 5 && memcmp(p, "HTTP/", 5) == 0;
    if (colon && colon > p && !status_line) {
      const char *v = colon + 1, *ve = line_end;
      luaL_Buffer name;
      const char *c;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      luaL_buffinit(L, &name);
      for (c = p; c < colon; c++) luaL_addchar(&name, (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c));
      luaL_pushresult(&name);
      lua_pushvalue(L, -1);
      lua_rawget(L, -3);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      } else {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      }
      lua_rawset(L, -3);
    }
    p = eol ? eol + 1 : end;
  }
}

/* libcurl opens its sockets without SOCK_CLOEXEC: a command a connector or a
 * script spawns would inherit its kept-alive connections. */
static curl_socket_t open_socket_cloexec(void *clientp, curlsocktype purpose,
                                         struct curl_sockaddr *address) {
  (void)clientp;
  (void)purpose;
  return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

static int has_fd(const int *list, size_t n, int fd) {
  size_t i;
  for (i = 0; i < n; i++)
    if (list[i] == fd) return 1;
  return 0;
}

/* The first curl_easy_perform of a handle creates its internal multi handle,
 * whose wake-up socket pair libcurl opens without close-on-exec (libcurl 7.88).
 * Lua is single-threaded and no Lua runs inside perform, so every descriptor
 * that appeared across that perform is libcurl's: mark them. */
static CURLcode perform_marking_fds(http_handle *h) {
  int *before = NULL, *after = NULL;
  size_t n_before = 0, n_after = 0, i;
  CURLcode rc;
  if (h->fds_marked || bic_open_fds(&before, &n_before) != 0) return curl_easy_perform(h->curl);
  rc = curl_easy_perform(h->curl);
  if (bic_open_fds(&after, &n_after) == 0) {
    for (i = 0; i < n_after; i++) {
      int flags;
      if (has_fd(before, n_before, after[i])) continue;
      flags = fcntl(after[i], F_GETFD);
      if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl(after[i], F_SETFD, flags | FD_CLOEXEC);
    }
    h->fds_marked = 1;
    free(after);
  }
  free(before);
  return rc;
}

#define SETOPT(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(h->curl, opt, val); } while (0)

/* handle:request{method=, url=, headers=, body=, timeout=, connect_timeout=,
 *                ca_file=, verify=, user_agent=, max_body=, fresh_connect=}
 * -> {status=, headers=, body=}, or nil, err. */
static int handle_request(lua_State *L) {
  http_handle *h = check_handle(L);
  const char *url, *method, *body, *ca_file, *user_agent;
  size_t body_len = 0;
  double timeout, connect_timeout, max_body;
  int verify = 1, fresh_connect = 0;
  CURLcode rc = CURLE_OK;
  long status = 0;

  luaL_checktype(L, 2, LUA_TTABLE);
  if (h->busy) return luaL_error(L, "http handle is in use");
  url = bic_opt_string(L, 2, "url", NULL, NULL);
  if (url == NULL) return luaL_argerror(L, 2, "'url' is required");
  method = bic_opt_string(L, 2, "method", NULL, NULL);
  body = bic_opt_string(L, 2, "body", NULL, &body_len);
  ca_file = bic_opt_string(L, 2, "ca_file", NULL, NULL);
  user_agent = bic_opt_string(L, 2, "user_agent", NULL, NULL);
  timeout = opt_number(L, 2, "timeout", 60, 0.001, 1e6, "from 0.001 to 1e6 seconds");
  connect_timeout = opt_number(L, 2, "connect_timeout", 10, 0.001, 1e6, "from 0.001 to 1e6 seconds");
  max_body = opt_number(L, 2, "max_body", 256.0 * 1024 * 1024, 0, 1e15, "from 0 to 1e15 bytes");
  lua_getfield(L, 2, "verify");
  if (lua_isboolean(L, -1)) verify = lua_toboolean(L, -1);
  else if (!lua_isnil(L, -1)) return luaL_error(L, "request option 'verify' must be a boolean");
  lua_pop(L, 1);
  lua_getfield(L, 2, "fresh_connect");
  if (lua_isboolean(L, -1)) fresh_connect = lua_toboolean(L, -1);
  else if (!lua_isnil(L, -1)) return luaL_error(L, "request option 'fresh_connect' must be a boolean");
  lua_pop(L, 1);
  if (method == NULL) method = body ? "POST" : "GET";

  if (h->headers) curl_slist_free_all(h->headers);
  h->headers = NULL;
  collect_headers(L, h, 2);
  /* Bitrix24 and most servers do fine without the 100-continue round trip. */
  if (append_header(h, "Expect:") != 0) return luaL_error(L, "out of memory");
  h->body.len = 0;
  h->head.len = 0;
  h->errbuf[0] = '\0';
  h->max_body = (size_t)max_body;
  h->too_big = 0;

  /* curl_easy_reset keeps the connection cache: keep-alive survives it. */
  curl_easy_reset(h->curl);
  SETOPT(CURLOPT_ERRORBUFFER, h->errbuf);
  SETOPT(CURLOPT_URL, url);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_OPENSOCKETFUNCTION, open_socket_cloexec);
  SETOPT(CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(CURLOPT_WRITEDATA, h);
  SETOPT(CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(CURLOPT_HEADERDATA, h);
  SETOPT(CURLOPT_HTTPHEADER, h->headers);
  SETOPT(CURLOPT_ACCEPT_ENCODING, "");
  SETOPT(CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
  SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_timeout * 1000));
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  /* On a reused connection that closes without an answer, libcurl silently
   * sends the request again on a new one. A request that must not run twice
   * therefore asks for a connection of its own. */
  if (fresh_connect) SETOPT(CURLOPT_FRESH_CONNECT, 1L);
  if (user_agent) SETOPT(CURLOPT_USERAGENT, user_agent);
  if (ca_file) SETOPT(CURLOPT_CAINFO, ca_file);
  if (!verify) {
    SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (strcmp(method, "GET") == 0 && body == NULL) {
    SETOPT(CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "HEAD") == 0) {
    SETOPT(CURLOPT_NOBODY, 1L);
  } else {
    if (body) {
      /* The body string is referenced by the request table (argument 2) for the
       * whole perform, so libcurl may read it without a copy. */
      SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
      SETOPT(CURLOPT_POSTFIELDS, body);
    }
    if (strcmp(method, "POST") != 0 || body == NULL) SETOPT(CURLOPT_CUSTOMREQUEST, method);
  }
  if (rc != CURLE_OK) return push_error(L, h, rc);

  h->busy = 1;
  rc = perform_marking_fds(h);
  h->busy = 0;
  if (rc != CURLE_OK) {
    if (rc == CURLE_WRITE_ERROR)
      snprintf(h->errbuf, sizeof h->errbuf, h->too_big ? "the answer is larger than max_body (%.0f bytes)" : "out of memory while reading the answer", max_body);
    return push_error(L, h, rc);
  }
  curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);

  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)status);
  lua_setfield(L, -2, "status");
  push_headers(L, h);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, h->body.data ? h->body.data : "", h->body.len);
  lua_setfield(L, -2, "body");
  /* Large answers should not pin memory in an idle handle. */
  if (h->body.cap > 1024 * 1024) {
    bic_buffer_free(&h->body);
    bic_buffer_init(&h->body);
  }
  return 1;
}

/* ---- registration ------------------------------------------------------ */

static const luaL_Reg handle_methods[] = {
  {"request", handle_request},
  {"close", handle_close},
  {"closed", handle_closed},
  {NULL, NULL},
};

static const luaL_Reg http_functions[] = {
  {"new", handle_new},
  {NULL, NULL},
};

int bic_open_http_client(lua_State *L) {
  curl_version_info_data *info;
  curl_global_init(CURL_GLOBAL_DEFAULT);

  bic_class(L, HANDLE_MT, handle_methods, handle_close, handle_close, handle_tostring);
  bic_class(L, ERROR_MT, NULL, NULL, NULL, error_tostring);

  lua_newtable(L);
  luaL_setfuncs(L, http_functions, 0);
  info = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, info && info->version ? info->version : "?");
  lua_setfield(L, -2, "curl_version");
  lua_setfield(L, -2, "http");
  return 0;
}
