/* Process primitives for the worker mode of `biconnector serve` (core.process):
 * fork, wait, kill, signal traps with a self-pipe (core.process.clock and
 * sleep, which wakes on a trapped signal, are core.os's: os.c). The
 * server's run loop (http_server.c) watches the same pending-signal flags. */
#include "process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- signals */

/* Pending signals, set by the handler and read by the run loops; the self-pipe
 * wakes a poll() that started before the signal arrived. */
static volatile sig_atomic_t pending_signals[NSIG];
static int signal_pipe[2] = {-1, -1};

static const struct { const char *name; int number; } signal_names[] = {
  {"INT", SIGINT}, {"TERM", SIGTERM}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT},
  {"CHLD", SIGCHLD}, {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2},
  {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"SEGV", SIGSEGV}, {"ABRT", SIGABRT},
  {NULL, 0}
};

const char *bic_signal_name(int number) {
  int i;
  for (i = 0; signal_names[i].name != NULL; i++)
    if (signal_names[i].number == number) return signal_names[i].name;
  return NULL;
}

static int check_signal(lua_State *L, int idx) {
  int i;
  const char *name;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, idx); /* checked before the cast: 2^32 + 15 is not 15 */
    luaL_argcheck(L, n >= 0 && n < NSIG && n == (lua_Number)(int)n, idx,
                  "signal number out of range"); /* 0: existence check */
    return (int)n;
  }
  name = luaL_checkstring(L, idx);
  if (strncmp(name, "SIG", 3) == 0) name += 3;
  for (i = 0; signal_names[i].name != NULL; i++)
    if (strcmp(signal_names[i].name, name) == 0) return signal_names[i].number;
  return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", name));
}

static void on_signal(int sig) {
  int saved = errno;
  if (sig > 0 && sig < NSIG) pending_signals[sig] = 1;
  if (signal_pipe[1] >= 0) {
    char c = (char)sig;
    ssize_t n = write(signal_pipe[1], &c, 1);
    (void)n; /* a full pipe already holds a wake-up */
  }
  errno = saved;
}

int bic_signal_fd(void) {
  return signal_pipe[0];
}

static int open_signal_pipe(void) {
  if (signal_pipe[0] >= 0) return 0;
  if (pipe2(signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    signal_pipe[0] = signal_pipe[1] = -1;
    return -1;
  }
  return 0;
}

void bic_signal_drain(void) {
  char junk[64];
  if (signal_pipe[0] < 0) return;
  while (read(signal_pipe[0], junk, sizeof junk) > 0) {}
}

/* Takes a pending stop signal (TERM, INT) and returns its number, or 0. */
int bic_signal_take_stop(void) {
  if (pending_signals[SIGTERM]) { pending_signals[SIGTERM] = 0; return SIGTERM; }
  if (pending_signals[SIGINT]) { pending_signals[SIGINT] = 0; return SIGINT; }
  return 0;
}

int bic_signal_take_reload(void) {
  if (pending_signals[SIGHUP]) { pending_signals[SIGHUP] = 0; return 1; }
  return 0;
}

/* ---------------------------------------------------------------- process */

/* A process id argument; one that pid_t cannot hold raises instead of being cut
 * short (2^32 would become 0: the caller's whole process group). */
static pid_t check_pid(lua_State *L, int idx) {
  lua_Integer n = luaL_checkinteger(L, idx);
  luaL_argcheck(L, (lua_Integer)(pid_t)n == n, idx, "process id out of range");
  return (pid_t)n;
}

static int push_errno(lua_State *L, const char *what) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(e));
  lua_pushinteger(L, e);
  return 3;
}

/* process.fork() -> pid (0 in the child) | nil, err. The child gets its own
 * signal pipe and no pending signals; SIGCHLD goes back to its default.
 * Signals are blocked from before fork() until the child has reset its state:
 * a signal sent to the new pid at once (a master forwarding SIGTERM to a
 * worker it has just started) stays pending and is handled after the reset,
 * where it counts, instead of being wiped out with the parent's flags.
 * It waits first (at most FORK_SETTLE_SECONDS) for the database jobs' threads
 * to end: see bic_sql_settle. */
#define FORK_SETTLE_SECONDS 5.0
static int l_fork(lua_State *L) {
  sigset_t all, old;
  pid_t pid;
  int e;
  fflush(stdout);
  fflush(stderr);
  /* the database jobs' threads end first (a worker forked while one finishes
   * its statement inherited SQLite's allocator lock, held forever) */
  bic_sql_settle(FORK_SETTLE_SECONDS);
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pid = fork();
  e = errno;
  if (pid == 0) {
    int i;
    signal(SIGCHLD, SIG_DFL);
    if (signal_pipe[0] >= 0) {
      close(signal_pipe[0]);
      close(signal_pipe[1]);
      signal_pipe[0] = signal_pipe[1] = -1;
      open_signal_pipe();
    }
    for (i = 0; i < NSIG; i++) pending_signals[i] = 0;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) {
    errno = e;
    return push_errno(L, "fork failed");
  }
  lua_pushinteger(L, (lua_Integer)pid);
  return 1;
}

/* The most process.spawn writes to a child's stdin: what a fresh pipe holds
 * (64 KiB on Linux), so that the write never waits for the child. */
#define SPAWN_STDIN_MAX 60000

/* process.spawn(argv [, {stdin = STRING, death_signal = NAME}]) -> pid | nil, err
 * Runs argv[1] (searched on PATH) with argv as its arguments, in a child that
 * starts with default signal dispositions and no blocked signal. Every other
 * descriptor of this process is close-on-exec (docs/serve.md), so the child
 * holds none of the server's sockets. stdin (at most SPAWN_STDIN_MAX bytes)
 * arrives on the child's standard input through a pipe, then end of file;
 * without it the child inherits ours. death_signal: sent to the child when
 * this process dies (PR_SET_PDEATHSIG). An exec that fails is reported here
 * (nil, message), not by a child that exits 127. */
static int l_spawn(lua_State *L) {
  int n, i, in_pipe[2] = {-1, -1}, err_pipe[2], death = 0, child_errno = 0, e;
  const char **argv;
  const char *input = NULL;
  size_t input_len = 0;
  sigset_t all, old;
  pid_t pid, parent = getpid();
  ssize_t got;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (int)lua_rawlen(L, 1);
  luaL_argcheck(L, n >= 1 && n < 4096, 1, "expected a list of 1 to 4095 arguments");
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "stdin"); /* kept on the stack while it is used */
    if (!lua_isnil(L, -1)) input = luaL_checklstring(L, -1, &input_len);
    luaL_argcheck(L, input_len <= SPAWN_STDIN_MAX, 2, "stdin is longer than 60000 bytes");
    lua_getfield(L, 2, "death_signal");
    if (!lua_isnil(L, -1)) death = check_signal(L, lua_gettop(L));
    lua_pop(L, 1);
  }
  /* the strings stay referenced by the table at index 1 while argv is used */
  argv = (const char **)lua_newuserdata(L, (size_t)(n + 1) * sizeof *argv);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_argerror(L, 1, "every argument must be a string");
    argv[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  argv[n] = NULL;
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return push_errno(L, "spawn: pipe failed");
  if (input != NULL && pipe2(in_pipe, O_CLOEXEC) != 0) {
    e = errno;
    close(err_pipe[0]);
    close(err_pipe[1]);
    errno = e;
    return push_errno(L, "spawn: pipe failed");
  }
  fflush(stdout);
  fflush(stderr);
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pid = fork();
  if (pid == 0) {
    /* only async-signal-safe calls from here to exec */
    sigset_t none;
    int sig;
    for (sig = 1; sig < NSIG; sig++)
      if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL); /* an ignored SIGPIPE too */
    if (death != 0 && prctl(PR_SET_PDEATHSIG, death) != 0) child_errno = errno;
    else if (death != 0 && getppid() != parent) _exit(0); /* the parent is already gone */
    if (child_errno == 0 && in_pipe[0] >= 0 && dup2(in_pipe[0], 0) < 0) child_errno = errno;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (child_errno == 0) {
      execvp(argv[0], (char *const *)argv);
      child_errno = errno;
    }
    got = write(err_pipe[1], &child_errno, sizeof child_errno);
    (void)got;
    _exit(127);
  }
  e = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close(err_pipe[1]);
  if (in_pipe[0] >= 0) close(in_pipe[0]);
  if (pid < 0) {
    close(err_pipe[0]);
    if (in_pipe[1] >= 0) close(in_pipe[1]);
    errno = e;
    return push_errno(L, "spawn: fork failed");
  }
  /* end of file: exec succeeded (the pipe is close-on-exec); an errno: it failed */
  do got = read(err_pipe[0], &child_errno, sizeof child_errno);
  while (got < 0 && errno == EINTR);
  close(err_pipe[0]);
  if (got == (ssize_t)sizeof child_errno) {
    int st;
    if (in_pipe[1] >= 0) close(in_pipe[1]);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    lua_pushnil(L);
    lua_pushfstring(L, "cannot run %s: %s", argv[0], strerror(child_errno));
    lua_pushinteger(L, child_errno);
    return 3;
  }
  if (in_pipe[1] >= 0) {
    /* fits in the fresh pipe: never waits; a child already gone is EPIPE, not SIGPIPE */
    size_t off = 0;
    sigset_t pipe_set, before;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &before);
    while (off < input_len) {
      got = write(in_pipe[1], input + off, input_len - off);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      off += (size_t)got;
    }
    if (off < input_len) { /* the child left before reading: take the SIGPIPE it caused */
      struct timespec zero = {0, 0};
      sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    close(in_pipe[1]);
  }
  lua_pushinteger(L, (lua_Integer)pid);
  return 1;
}

/* process.worker_setup(signal, master_pid): for a forked worker. Leaves the
 * terminal's process group (a Ctrl-C reaches the master only, which then stops
 * the workers gracefully) and asks for `signal` when the master dies. Returns
 * false when the master is already gone. */
static int l_worker_setup(lua_State *L) {
  int sig = check_signal(L, 1);
  pid_t master = check_pid(L, 2);
  if (setpgid(0, 0) != 0) return push_errno(L, "setpgid failed");
  if (prctl(PR_SET_PDEATHSIG, sig) != 0) return push_errno(L, "prctl failed");
  lua_pushboolean(L, getppid() == master); /* checked after prctl: no gap */
  return 1;
}

/* process.wait([pid [, block]]) -> pid, "exit"|"signal", code | nil when none has ended
 * (non-blocking unless block is true) | nil, err */
static int l_wait(lua_State *L) {
  pid_t want = lua_isnoneornil(L, 1) ? -1 : check_pid(L, 1);
  int block = lua_toboolean(L, 2), st = 0;
  pid_t pid;
  do pid = waitpid(want, &st, block ? 0 : WNOHANG);
  while (pid < 0 && errno == EINTR);
  if (pid < 0) return push_errno(L, "waitpid failed");
  if (pid == 0) { lua_pushnil(L); return 1; }
  lua_pushinteger(L, (lua_Integer)pid);
  if (WIFSIGNALED(st)) {
    const char *name = bic_signal_name(WTERMSIG(st));
    lua_pushliteral(L, "signal");
    if (name) lua_pushstring(L, name);
    else lua_pushinteger(L, WTERMSIG(st));
  } else {
    lua_pushliteral(L, "exit");
    lua_pushinteger(L, WEXITSTATUS(st));
  }
  return 3;
}

/* process.kill(pid, signal) -> true | nil, err */
static int l_kill(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  int sig = check_signal(L, 2);
  if (kill(pid, sig) != 0) return push_errno(L, "kill failed");
  lua_pushboolean(L, 1);
  return 1;
}

/* process.trap(signal, ...) records these signals instead of their default action;
 * process.trap() with "PIPE" ignores SIGPIPE outright. */
static int l_trap(lua_State *L) {
  int i, n = lua_gettop(L);
  if (open_signal_pipe() != 0) return push_errno(L, "cannot create the signal pipe");
  for (i = 1; i <= n; i++) {
    int sig = check_signal(L, i);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    if (sig == SIGPIPE) sa.sa_handler = SIG_IGN;
    else {
      sa.sa_handler = on_signal;
      /* SA_RESTART: a trapped signal must not fail a read or write the Lua code
       * is in the middle of (EINTR); poll() is never restarted, so the run loops
       * still wake up at once */
      sa.sa_flags = SA_RESTART;
      if (sig == SIGCHLD) sa.sa_flags |= SA_NOCLDSTOP;
    }
    if (sigaction(sig, &sa, NULL) != 0) return push_errno(L, "sigaction failed");
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* process.signals() -> list of signal names received since the last call */
static int l_signals(lua_State *L) {
  int i, k = 0;
  lua_newtable(L);
  for (i = 1; i < NSIG; i++) {
    if (pending_signals[i]) {
      const char *name = bic_signal_name(i);
      pending_signals[i] = 0;
      if (name) lua_pushstring(L, name);
      else lua_pushinteger(L, i);
      lua_rawseti(L, -2, ++k);
    }
  }
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* process.close(fd): closes a descriptor from server.listen in a process that no longer needs it. */
static int l_closefd(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "descriptor out of range"); /* 2^32 is not 0 */
  if (close((int)fd) != 0) return push_errno(L, "close failed");
  lua_pushboolean(L, 1);
  return 1;
}

/* process.exit(code): leaves at once without running Lua finalizers (for a forked
 * child that must not close what its parent still owns). */
static int l_exit(lua_State *L) {
  int code = (int)luaL_optinteger(L, 1, 0);
  fflush(stdout);
  fflush(stderr);
  _exit(code);
  return 0;
}

/* process.isatty(fd) -> boolean: is the descriptor a terminal (progress lines go only there). */
static int l_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "descriptor out of range");
  lua_pushboolean(L, isatty((int)fd));
  return 1;
}

/* ---------------------------------------------------------------- shared counters */

/* process.counters(n) -> counters: n 64-bit integers in an anonymous shared
 * mapping (MAP_SHARED), so that processes forked after its creation add to the
 * same numbers (the metrics of `serve --workers N`). Updates are atomic
 * (__atomic builtins, relaxed: counters need no ordering). Indices 1..n. */
#define COUNTERS_MT "biconnector.process.counters"
typedef struct { int64_t *values; lua_Integer n; } counters;

static counters *check_counters(lua_State *L) {
  counters *c = (counters *)luaL_checkudata(L, 1, COUNTERS_MT);
  if (c->values == NULL) luaL_error(L, "the counters were released");
  return c;
}

static lua_Integer check_index(lua_State *L, counters *c) {
  lua_Integer i = luaL_checkinteger(L, 2);
  luaL_argcheck(L, i >= 1 && i <= c->n, 2, "counter index out of range");
  return i - 1;
}

static int l_counters(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  counters *c;
  void *p;
  luaL_argcheck(L, n >= 1 && n <= 1048576, 1, "between 1 and 1048576 counters");
  c = (counters *)bic_object(L, sizeof *c, COUNTERS_MT);
  p = mmap(NULL, (size_t)n * sizeof(int64_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return push_errno(L, "cannot map the shared counters");
  c->values = (int64_t *)p; /* zero-filled by the kernel */
  c->n = n;
  return 1;
}

/* counters:add(i [, delta = 1]) -> the new value */
static int l_counters_add(lua_State *L) {
  counters *c = check_counters(L);
  lua_Integer i = check_index(L, c);
  int64_t delta = (int64_t)luaL_optinteger(L, 3, 1);
  lua_pushinteger(L, (lua_Integer)(__atomic_add_fetch(&c->values[i], delta, __ATOMIC_RELAXED)));
  return 1;
}

/* counters:get(i) -> value */
static int l_counters_get(lua_State *L) {
  counters *c = check_counters(L);
  lua_Integer i = check_index(L, c);
  lua_pushinteger(L, (lua_Integer)__atomic_load_n(&c->values[i], __ATOMIC_RELAXED));
  return 1;
}

static int l_counters_size(lua_State *L) {
  counters *c = check_counters(L);
  lua_pushinteger(L, c->n);
  return 1;
}

static int l_counters_gc(lua_State *L) {
  counters *c = (counters *)luaL_checkudata(L, 1, COUNTERS_MT);
  if (c->values != NULL) munmap(c->values, (size_t)c->n * sizeof(int64_t));
  c->values = NULL;
  c->n = 0;
  return 0;
}

/* core.process.mmap_threshold(bytes): blocks of that size and more come from
 * mmap and go back to the system when freed. glibc's own threshold grows with
 * the largest block freed, after which large rows (of answers served on many
 * threads, each with an arena of its own) stay in the process when they go:
 * `serve` fixes it at 1 MiB (docs/serve.md, "Memory"). */
static int l_mmap_threshold(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 4096 && n <= 32 * 1024 * 1024, 1, "expected 4096 to 33554432 bytes");
  lua_pushboolean(L, mallopt(M_MMAP_THRESHOLD, (int)n) == 1);
  return 1;
}

/* core.process.trim_threshold(bytes): up to that many free bytes stay at the
 * top of the heaps instead of going back to the system at once. At glibc's
 * 128 KiB (fixed once a threshold is set) a server answering one large answer
 * after another shrank and grew its heap per answer (brk, mprotect, page
 * faults, TLB flushes): `biconnector.ngx` keeps 8 MiB (docs/openresty.md).
 * The threshold holds per heap: a threaded process keeps it per arena. */
static int l_trim_threshold(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 1024 * 1024 * 1024, 1, "expected 0 to 1073741824 bytes");
  lua_pushboolean(L, mallopt(M_TRIM_THRESHOLD, (int)n) == 1);
  return 1;
}

void bic_open_process(lua_State *L) {
  static const luaL_Reg process_functions[] = {
    {"mmap_threshold", l_mmap_threshold},
    {"trim_threshold", l_trim_threshold},
    {"fork", l_fork},
    {"spawn", l_spawn},
    {"worker_setup", l_worker_setup},
    {"wait", l_wait},
    {"kill", l_kill},
    {"trap", l_trap},
    {"signals", l_signals},
    {"getpid", l_getpid},
    {"close", l_closefd},
    {"exit", l_exit},
    {"isatty", l_isatty},
    {"counters", l_counters},
    {NULL, NULL}
  };
  static const luaL_Reg counters_methods[] = {
    {"add", l_counters_add},
    {"get", l_counters_get},
    {"size", l_counters_size},
    {NULL, NULL}
  };
  bic_class(L, COUNTERS_MT, counters_methods, l_counters_gc, NULL, NULL);
  luaL_newlib(L, process_functions);
  lua_setfield(L, -2, "process");
}

int bic_open_fds(int **out, size_t *count) {
  DIR *dir = opendir("/proc/self/fd");
  struct dirent *e;
  int *list = NULL;
  size_t n = 0, cap = 0;
  if (dir == NULL) return -1;
  while ((e = readdir(dir)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    if (n == cap) {
      int *grown = (int *)realloc(list, (cap = cap ? cap * 2 : 32) * sizeof *list);
      if (grown == NULL) {
        free(list);
        closedir(dir);
        return -1;
      }
      list = grown;
    }
    list[n++] = (int)fd;
  }
  closedir(dir);
  *out = list;
  *count = n;
  return 0;
}
