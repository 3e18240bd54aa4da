/* core.os: the operating-system helpers the rest of the core and the Lua
 * modules share, one of each: a monotonic clock and the wall clock, a sleep,
 * flock-based file locks and atomic file writes.
 *
 *   os.clock() -> seconds on a monotonic clock (for durations)
 *   os.time() -> seconds since the epoch (CLOCK_REALTIME)
 *   os.sleep(seconds [, wake]) -> sleeps (at most a day; NaN and negatives
 *       not at all); with wake, returns early when a signal trapped by
 *       core.process.trap arrives
 *   os.lock(path [, shared]) -> lock (unlock(), held(); unlocked on GC too) |
 *       nil, message, errno. Blocks until granted.
 *   os.write_atomic(path, data) -> true | nil, message, errno: a temporary
 *       file beside path (0600), fsync, rename.
 *
 * The older names stay: core.http.now, time, sleep, lock, write_atomic and
 * core.process.clock, sleep (which wakes on a trapped signal). */
/* ppoll: _GNU_SOURCE comes from CMakeLists.txt */
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "process.h"

#define LOCK_MT "biconnector.lock"

/* ---- clocks and sleep ------------------------------------------------------- */

double bic_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int os_clock(lua_State *L) {
  lua_pushnumber(L, (lua_Number)bic_clock());
  return 1;
}

static int os_time(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

void bic_sleep(double seconds, int wake) {
  double end;
  if (!(seconds > 0)) seconds = 0; /* NaN too */
  if (seconds > 86400) seconds = 86400;
  end = bic_clock() + seconds;
  for (;;) {
    struct pollfd pfd;
    struct timespec ts;
    nfds_t n = 0;
    double left = end - bic_clock();
    int rc;
    if (left < 0) left = 0;
    ts.tv_sec = (time_t)left;
    ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
    if (wake && bic_signal_fd() >= 0) {
      pfd.fd = bic_signal_fd();
      pfd.events = POLLIN;
      n = 1;
    }
    rc = ppoll(n ? &pfd : NULL, n, &ts, NULL);
    if (wake) { /* a wake-up, an interruption or the time: done either way */
      bic_signal_drain();
      return;
    }
    if (rc == 0 || (rc < 0 && errno != EINTR)) return;
  }
}

static int os_sleep(lua_State *L) {
  double s = (double)luaL_checknumber(L, 1);
  bic_sleep(s, lua_toboolean(L, 2));
  return 0;
}

/* core.process.sleep(seconds): os.sleep(seconds, true). */
static int os_sleep_wake(lua_State *L) {
  bic_sleep((double)luaL_checknumber(L, 1), 1);
  return 0;
}

/* ---- flock-based locks ------------------------------------------------------ */

typedef struct file_lock {
  int fd; /* -1 once released */
} file_lock;

static int push_errno(lua_State *L, const char *what, const char *path) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
  lua_pushinteger(L, e);
  return 3;
}

static int os_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int shared = lua_toboolean(L, 2);
  file_lock *lk = (file_lock *)bic_object(L, sizeof(file_lock), LOCK_MT);
  /* nothing allocates before fd is set: no collection sees the zeroed fd 0 */
  lk->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lk->fd < 0) return push_errno(L, "cannot open lock file", path);
  while (flock(lk->fd, shared ? LOCK_SH : LOCK_EX) != 0) {
    if (errno != EINTR) {
      int e = errno;
      close(lk->fd);
      lk->fd = -1;
      errno = e;
      return push_errno(L, "cannot lock", path);
    }
  }
  return 1;
}

static int lock_release(lua_State *L) {
  file_lock *lk = (file_lock *)luaL_checkudata(L, 1, LOCK_MT);
  if (lk->fd >= 0) {
    flock(lk->fd, LOCK_UN);
    close(lk->fd);
    lk->fd = -1;
  }
  return 0;
}

static int lock_held(lua_State *L) {
  file_lock *lk = (file_lock *)luaL_checkudata(L, 1, LOCK_MT);
  lua_pushboolean(L, lk->fd >= 0);
  return 1;
}

/* ---- atomic writes ---------------------------------------------------------- */

static int os_write_atomic(lua_State *L) {
  size_t len, off = 0;
  const char *path = luaL_checkstring(L, 1);
  const char *data = luaL_checklstring(L, 2, &len);
  char *tmp;
  int fd;
  lua_pushfstring(L, "%s.XXXXXX", path);
  tmp = (char *)lua_newuserdata(L, lua_rawlen(L, -1) + 1);
  memcpy(tmp, lua_tostring(L, -2), lua_rawlen(L, -2) + 1);
  fd = mkstemp(tmp);
  if (fd < 0) return push_errno(L, "cannot create a temporary file for", path);
  fchmod(fd, 0600);
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      goto fail;
    }
    off += (size_t)n;
  }
  if (fsync(fd) != 0) goto fail;
  if (close(fd) != 0) {
    fd = -1;
    goto fail;
  }
  fd = -1;
  if (rename(tmp, path) != 0) goto fail;
  lua_pushboolean(L, 1);
  return 1;
fail : {
  int e = errno;
  if (fd >= 0) close(fd);
  unlink(tmp);
  errno = e;
  return push_errno(L, "cannot write", path);
}
}

/* ---- registration ----------------------------------------------------------- */

/* t[name] = core.os[name] for the table core[part] (the older names). */
static void alias(lua_State *L, const char *part, const char *name, const char *as) {
  lua_getfield(L, -2, part);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -2, name);
    lua_setfield(L, -2, as);
  }
  lua_pop(L, 1);
}

int bic_open_os(lua_State *L) {
  static const luaL_Reg os_functions[] = {
      {"clock", os_clock}, {"time", os_time}, {"sleep", os_sleep}, {"lock", os_lock},
      {"write_atomic", os_write_atomic}, {NULL, NULL}};
  static const luaL_Reg lock_methods[] = {{"unlock", lock_release}, {"held", lock_held}, {NULL, NULL}};
  bic_class(L, LOCK_MT, lock_methods, lock_release, lock_release, NULL);
  lua_newtable(L);
  luaL_setfuncs(L, os_functions, 0);
  /* the older names, in core.http and core.process (opened before) */
  alias(L, "http", "clock", "now");
  alias(L, "http", "time", "time");
  alias(L, "http", "sleep", "sleep");
  alias(L, "http", "lock", "lock");
  alias(L, "http", "write_atomic", "write_atomic");
  alias(L, "process", "clock", "clock");
  lua_getfield(L, -2, "process");
  if (lua_istable(L, -1)) {
    lua_pushcfunction(L, os_sleep_wake);
    lua_setfield(L, -2, "sleep");
  }
  lua_pop(L, 1);
  lua_setfield(L, -2, "os");
  return 0;
}
