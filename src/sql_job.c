/* core.sql pools and jobs: the database work of a served answer, off the
 * server's event loop.
 *
 * core.sql.pool(engine, opts [, {size = 8}]) -> pool
 *   The connections of one database in this process: at most size open, idle
 *   ones reused (an idle one found broken by the driver's alive() is replaced),
 *   one leased to each job for its whole life. Pools are shared by key (engine
 *   and options): two sources of the same URL share one. pool:stats() ->
 *   {size, open, idle, waiting}; pool:close() closes the idle connections.
 * core.sql.job(pool, sql, params, opts) -> job
 *   Runs sql on a thread of its own with a leased connection. opts:
 *   mode     "stream": rows are encoded (opts.encoder, a core.rows encoder, is
 *            copied) into urlData text; "fetch": rows are queued as values
 *   chunk    bytes encoded between two hand-overs (default 65536)
 *   cap      bytes the job may hold ready before it waits for the reader
 *            (default 4 chunks)
 *   deadline seconds the whole job may take (0: none); past it the statement
 *            is cancelled and the job fails with status 504
 *   wait     seconds to wait for a connection, and for the answer budget
 *            before the first rows (default 5): then status 503
 *   key      the table's name: the largest row seen per key sizes the budget
 *            reservation of a step (a table of 8 MB rows reserves 16 MB)
 *   job:fd() -> an eventfd, readable when the job has news; job:wait([s])
 *   blocks on it; job:state() -> "queued" | "running" | "done" | "failed" |
 *   "cancelled"; job:columns() -> {{name=, type=}, ...} once running;
 *   job:take(enc, max) -> added, done, nulled, column, why (stream; added 0
 *   and done false: nothing yet) | nil, message, status;
 *   job:fetch(n) -> rows, done (fetch) | nil, message, status;
 *   job:cancel() asks it to stop and returns at once; job:close() (also
 *   __gc, __close) cancels it if it runs and lets go of it.
 * core.sql.budget([bytes]) -> budget, held: the answer budget of this process.
 *
 * Rules:
 * - no Lua on a job thread: the thread gets plain C values, the Lua side takes
 *   its results under the lock;
 * - one lock (g_lock) for pools, jobs and the budget; every wait is on g_cv;
 * - a statement that must stop while it runs (the reader left, the deadline
 *   passed) is stopped by the service thread through the driver's cancel(),
 *   which may block on the network; the job's thread closes that connection
 *   instead of returning it to the pool;
 * - the answer budget: ready bytes of every job count against it, and each
 *   step of a job reserves what its rows may take first; a step waits while
 *   the budget is spent, unless nothing else is held (progress), or every
 *   job holding some waits for it with only its last row held: then the one
 *   waiting longest goes, one at a time (first_of_stuck);
 * - after a fork the child starts with no pools and no jobs (pthread_atfork):
 *   a connection is never shared between two processes. */
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bic.h"
#include "buffer.h"
#include "process.h"
#include "sql.h"

#define POOL_MT "biconnector.sql.pool"
#define JOB_MT "biconnector.sql.job"
#define ERRLEN 512
#define DEFAULT_POOL_SIZE 8
#define DEFAULT_CHUNK 65536
#define DEFAULT_WAIT 5.0
#define DEFAULT_BUDGET (32u * 1024u * 1024u)
#define MIN_RESERVE (64u * 1024u)
/* Seconds a step of a table not seen yet waits for the one that learns its row size. */
#define PROBE_PATIENCE 1.0

enum { J_QUEUED, J_RUNNING, J_DONE, J_FAILED, J_CANCELLED };
enum { MODE_STREAM, MODE_FETCH };
enum { STOP_NONE, STOP_CANCEL, STOP_DEADLINE };

typedef struct idle_conn {
  struct idle_conn *next;
  void *h;
} idle_conn;

typedef struct hint { /* the largest row seen of a table */
  struct hint *next;
  char *key;
  size_t max_row;
  int probing; /* a job takes the first step of this table: the others wait for its size */
} hint;

typedef struct pool {
  struct pool *next;
  char *key;
  const bic_sql_driver *drv;
  bic_sql_options opts;
  int size, open, waiting, refs;
  pid_t pid; /* the process it belongs to (a forked child only forgets it) */
  idle_conn *idle;
  hint *hints;
} pool;

typedef struct row_rec { /* a fetched row: values and their bytes, one allocation */
  struct row_rec *next;
  size_t bytes;
  bic_sql_value v[];
} row_rec;

typedef struct mark { /* published rows: the text up to end holds rows rows */
  size_t end;
  double rows;
} mark;

typedef struct job {
  struct job *prev, *next;
  int refs;
  pid_t pid;
  int efd;
  pool *pool;
  /* the request (owned) */
  int mode;
  char *sql;
  bic_sql_value *params;
  int nparams;
  rows_encoder *enc; /* stream: the thread's own encoder */
  size_t chunk, cap;
  double deadline, start_limit, deadline_s;
  char *key;
  /* the state, under g_lock */
  int state;
  int stop;          /* STOP_*: asked to stop */
  int in_statement;  /* the thread is inside the driver (cancel() may be needed) */
  int canceling;     /* the service thread is in cancel() for it */
  int cancel_sent;
  int produced;      /* rows went out: too late for a refusal */
  int closed;        /* the Lua handle let go: what the thread makes is dropped */
  int big;           /* it held a row of 1 MiB or more: memory is given back when it ends */
  hint *probing;     /* its step is the first of its table (hint->probing set) */
  void *conn;        /* the leased connection while the thread has one */
  size_t reserved;   /* budget reserved for the step under way */
  unsigned long budget_wait; /* in wait_turn for the budget alone: the order it began (0: not) */
  size_t held;       /* bytes counted in g_held: ready output, and the driver's last row */
  size_t raw;        /* of which the driver's last row (freed by the next step) */
  size_t queued;     /* fetch: bytes of the queued rows */
  /* stream output */
  bic_buffer out;
  size_t out_off;    /* bytes of out already taken */
  size_t taken;      /* bytes taken in all */
  mark *marks;
  size_t nmarks, capmarks;
  double rows_taken;
  /* fetch output */
  row_rec *head, *tail;
  size_t nqueued;
  /* columns, once running */
  int ncols;
  char **colnames, **coltypes;
  /* values a type did not fit (stream), told once */
  double nulled, nulled_told;
  int first_bad;
  char why[200];
  char err[ERRLEN];
  int status;        /* of a failure: 503, 504, or 0 (the database's error) */
} job;

typedef struct pool_box { pool *p; } pool_box;
typedef struct job_box { job *j; } job_box;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;      /* any change of jobs, pools, budget */
static pthread_cond_t g_service = PTHREAD_COND_INITIALIZER; /* news for the service thread */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_service_started;
static pool *g_pools;
static job *g_jobs;
static size_t g_budget = DEFAULT_BUDGET, g_held, g_reserved;
static unsigned long g_budget_waits; /* jobs that began waiting for the budget, ever (their order) */
static job *g_beyond; /* the job whose step went beyond the budget (first_of_stuck), until it ends */
/* Threads that may be inside a client library right now: the jobs' threads
 * alive, and the service thread while it cancels. See bic_sql_settle. */
static int g_in_library;
/* Job threads that have left job_main and are to be joined: a thread still
 * runs its thread-exit handlers after that (OpenSSL's, when libpq used it,
 * take OpenSSL's locks), and a fork in between gave the child a lock held
 * forever (its first PostgreSQL connection hung in RAND_bytes). Joined
 * before a fork (bic_sql_settle) and when the next job starts. */
typedef struct exited_thread {
  struct exited_thread *next;
  pthread_t t;
} exited_thread;
static exited_thread *g_exited;

/* Counts n more bytes held by j (dropped when its handle is gone), under g_lock. */
static void hold(struct job *j, size_t n);
/* Counts n bytes fewer (at most what j holds), under g_lock. */
static void unhold(struct job *j, size_t n);

/* ---- the process ------------------------------------------------------------ */

static void init_cond(pthread_cond_t *cv);

static void before_fork(void) { pthread_mutex_lock(&g_lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&g_lock); }

/* The child has one thread: the jobs' threads and the service thread are gone,
 * and the connections belong to the parent. Forget them (never close them:
 * closing would end the parent's sessions on the server). */
static void after_fork_child(void) {
  pthread_mutex_init(&g_lock, NULL);
  init_cond(&g_cv);
  init_cond(&g_service);
  g_service_started = 0;
  g_pools = NULL;
  g_jobs = NULL;
  g_beyond = NULL;
  g_held = g_reserved = 0;
  g_in_library = 0;
  while (g_exited != NULL) { /* (threads of the parent: none here) */
    exited_thread *n = g_exited->next;
    free(g_exited);
    g_exited = n;
  }
}

static void register_fork(void) { pthread_atfork(before_fork, after_fork_parent, after_fork_child); }

static struct timespec abs_time(double seconds_from_now) {
  struct timespec ts;
  double whole;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  if (seconds_from_now < 0) seconds_from_now = 0;
  if (seconds_from_now > 3600) seconds_from_now = 3600;
  seconds_from_now += (double)ts.tv_nsec / 1e9;
  whole = floor(seconds_from_now);
  ts.tv_sec += (time_t)whole;
  ts.tv_nsec = (long)((seconds_from_now - whole) * 1e9);
  return ts;
}

/* Condition variables on the monotonic clock (the wall clock may jump). */
static void init_cond(pthread_cond_t *cv) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
}

static void setup_once(void) {
  register_fork();
  init_cond(&g_cv);
  init_cond(&g_service);
}

static void timed_wait(pthread_cond_t *cv, double seconds) {
  struct timespec ts = abs_time(seconds);
  pthread_cond_timedwait(cv, &g_lock, &ts);
}

static void notify(job *j) {
  uint64_t one = 1;
  ssize_t rc;
  do rc = write(j->efd, &one, sizeof one);
  while (rc < 0 && errno == EINTR);
}

/* ---- pools -------------------------------------------------------------------- */

static char *options_key(const char *engine, const bic_sql_options *o) {
  const char *parts[] = {engine, o->path, o->host, o->user, o->password, o->database, o->socket, o->params};
  char nums[96];
  size_t n = 0, i;
  char *k;
  snprintf(nums, sizeof nums, "%d/%d/%d/%d/%d", o->port, o->read_only, o->busy_timeout_ms,
           o->statement_timeout_ms, o->connect_timeout_s);
  for (i = 0; i < sizeof parts / sizeof parts[0]; i++) n += (parts[i] ? strlen(parts[i]) : 0) + 1;
  n += strlen(nums) + 1;
  k = (char *)malloc(n);
  if (k == NULL) return NULL;
  k[0] = '\0';
  for (i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    strcat(k, parts[i] ? parts[i] : "");
    strcat(k, "\x1f");
  }
  strcat(k, nums);
  return k;
}

static void pool_unref_locked(pool *p, idle_conn **to_close) {
  if (--p->refs > 0) return;
  /* no Lua handle and no job: leave the list, close what is idle */
  {
    pool **pp;
    for (pp = &g_pools; *pp != NULL; pp = &(*pp)->next)
      if (*pp == p) { *pp = p->next; break; }
  }
  *to_close = p->idle;
  p->idle = NULL;
}

static void pool_free(pool *p, idle_conn *idle) {
  while (idle != NULL) {
    idle_conn *n = idle->next;
    if (p->pid == getpid()) p->drv->close(idle->h); /* never a parent's connection */
    free(idle);
    idle = n;
  }
  while (p->hints != NULL) {
    hint *h = p->hints;
    p->hints = h->next;
    free(h->key);
    free(h);
  }
  bic_sql_free_options(&p->opts);
  bic_sql_free_secret(p->key); /* it holds the password */
  free(p);
}

static void pool_unref(pool *p) {
  idle_conn *idle = NULL;
  int last;
  pthread_mutex_lock(&g_lock);
  last = p->refs == 1;
  pool_unref_locked(p, &idle);
  pthread_mutex_unlock(&g_lock);
  if (last) pool_free(p, idle);
}

/* The hint of key (made when missing; NULL without a key or memory). */
static hint *hint_for(pool *p, const char *key) {
  hint *h;
  if (key == NULL) return NULL;
  for (h = p->hints; h != NULL; h = h->next)
    if (strcmp(h->key, key) == 0) return h;
  h = (hint *)calloc(1, sizeof *h);
  if (h == NULL || (h->key = bic_sql_strdup(key)) == NULL) {
    free(h);
    return NULL;
  }
  h->next = p->hints;
  p->hints = h;
  return h;
}

static void hint_set(pool *p, const char *key, size_t row) {
  hint *h = hint_for(p, key);
  if (h != NULL && row > h->max_row) h->max_row = row;
}

/* A connection for j: an idle one that is alive, a new one, or one freed
 * within the wait. 0 and *out, or -1 with j->err/j->status set (or j->stop). */
static int lease(job *j, void **out) {
  pool *p = j->pool;
  pthread_mutex_lock(&g_lock);
  for (;;) {
    double now = bic_clock(), limit;
    if (j->stop) break;
    if (p->idle != NULL) {
      idle_conn *ic = p->idle;
      void *h = ic->h;
      p->idle = ic->next;
      pthread_mutex_unlock(&g_lock);
      free(ic);
      if (p->drv->alive(h)) {
        *out = h;
        return 0;
      }
      p->drv->close(h); /* the server closed it while idle (restart, timeout) */
      pthread_mutex_lock(&g_lock);
      p->open--;
      continue;
    }
    if (p->open < p->size) {
      void *h;
      char err[ERRLEN];
      p->open++;
      pthread_mutex_unlock(&g_lock);
      h = p->drv->open(&p->opts, err, sizeof err);
      if (h != NULL) {
        *out = h;
        return 0;
      }
      pthread_mutex_lock(&g_lock);
      p->open--;
      pthread_cond_broadcast(&g_cv);
      snprintf(j->err, sizeof j->err, "%s", err);
      j->status = 503;
      pthread_mutex_unlock(&g_lock);
      return -1;
    }
    limit = j->start_limit;
    if (j->deadline > 0 && j->deadline < limit) limit = j->deadline;
    if (now >= limit) {
      snprintf(j->err, sizeof j->err,
               "all %d connections to the database of this server process are in use; retry later "
               "(the pool size is an option: docs/database.md)",
               p->size);
      j->status = 503;
      break;
    }
    p->waiting++;
    timed_wait(&g_cv, limit - now < 1 ? limit - now : 1);
    p->waiting--;
  }
  pthread_mutex_unlock(&g_lock);
  return -1;
}

/* Gives a connection back: kept for the next job unless broken (or the pool
 * is gone from the process). */
static void release(pool *p, void *h, int broken) {
  idle_conn *ic = broken ? NULL : (idle_conn *)malloc(sizeof *ic);
  if (ic == NULL) {
    p->drv->close(h);
    pthread_mutex_lock(&g_lock);
    p->open--;
  } else {
    ic->h = h;
    pthread_mutex_lock(&g_lock);
    ic->next = p->idle;
    p->idle = ic;
  }
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_lock);
}

/* ---- the service thread: cancels statements that must stop --------------------------- */

static void job_unref_locked(job *j, int *free_it) {
  *free_it = --j->refs == 0;
  if (*free_it) {
    if (j->prev) j->prev->next = j->next;
    else g_jobs = j->next;
    if (j->next) j->next->prev = j->prev;
  }
}

static void job_free(job *j);

static void *service_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g_lock);
  for (;;) {
    double now = bic_clock(), next = now + 5;
    job *j, *todo = NULL;
    for (j = g_jobs; j != NULL; j = j->next) {
      if (j->state > J_RUNNING) continue;
      if (!j->stop && j->deadline > 0 && now >= j->deadline) {
        j->stop = STOP_DEADLINE;
        pthread_cond_broadcast(&g_cv);
      }
      if (j->stop && j->in_statement && j->conn != NULL && !j->cancel_sent) {
        todo = j;
        break;
      }
      if (!j->stop && j->deadline > 0 && j->deadline < next) next = j->deadline;
    }
    if (todo != NULL) {
      const bic_sql_driver *drv = todo->pool->drv;
      void *conn = todo->conn;
      int free_it;
      todo->cancel_sent = todo->canceling = 1;
      todo->refs++;
      g_in_library++;
      pthread_mutex_unlock(&g_lock);
      drv->cancel(conn);
      pthread_mutex_lock(&g_lock);
      g_in_library--;
      todo->canceling = 0;
      pthread_cond_broadcast(&g_cv);
      job_unref_locked(todo, &free_it);
      if (free_it) {
        pthread_mutex_unlock(&g_lock);
        job_free(todo);
        pthread_mutex_lock(&g_lock);
      }
      continue;
    }
    timed_wait(&g_service, next - now);
  }
  return NULL;
}

/* A detached thread with every signal blocked (signals stay with the server's
 * thread, whose run loop handles them): 0, or an errno value. */
static int start_thread(void *(*fn)(void *), void *arg, int joinable) {
  pthread_t t;
  pthread_attr_t a;
  sigset_t all, old;
  int rc;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, joinable ? PTHREAD_CREATE_JOINABLE : PTHREAD_CREATE_DETACHED);
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  rc = pthread_create(&t, &a, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&a);
  return rc;
}

/* Starts the service thread once per process; under g_lock. 0, or -1. */
static int ensure_service(void) {
  if (g_service_started) return 0;
  if (start_thread(service_main, NULL, 0) != 0) return -1;
  g_service_started = 1;
  return 0;
}

/* ---- jobs: the thread ------------------------------------------------------------- */

static void hold(job *j, size_t n) {
  if (j->closed) return;
  j->held += n;
  g_held += n;
}

static void unhold(job *j, size_t n) {
  if (n > j->held) n = j->held;
  j->held -= n;
  g_held -= n < g_held ? n : g_held;
}

static void job_free(job *j) {
  row_rec *r = j->head;
  int big = j->big;
  while (r != NULL) {
    row_rec *n = r->next;
    free(r);
    r = n;
  }
  if (j->efd >= 0) close(j->efd);
  if (j->held) { /* not taken: out of the budget */
    pthread_mutex_lock(&g_lock);
    unhold(j, j->held);
    pthread_mutex_unlock(&g_lock);
  }
  free(j->sql);
  free(j->params);
  free(j->key);
  bic_rows_free(j->enc);
  bic_buffer_free(&j->out);
  free(j->marks);
  for (int i = 0; i < j->ncols; i++) {
    free(j->colnames ? j->colnames[i] : NULL);
    free(j->coltypes ? j->coltypes[i] : NULL);
  }
  free(j->colnames);
  free(j->coltypes);
  if (j->pool) pool_unref(j->pool);
  free(j);
  /* the buffers of a large row went back to malloc, which keeps them (its
   * threshold for mmap grows with the largest block freed): back to the system */
  if (big) malloc_trim(0);
}

static void job_unref(job *j) {
  int free_it;
  pthread_mutex_lock(&g_lock);
  job_unref_locked(j, &free_it);
  pthread_mutex_unlock(&g_lock);
  if (free_it) job_free(j);
}

/* Ends the job as failed (unless it was asked to stop: then cancelled); under g_lock. */
static void fail_locked(job *j, int status, const char *msg) {
  if (j->state >= J_DONE) return;
  if (j->stop == STOP_CANCEL) {
    j->state = J_CANCELLED;
  } else {
    j->state = J_FAILED;
    if (j->stop == STOP_DEADLINE) {
      snprintf(j->err, sizeof j->err, "the answer took longer than its deadline (%g s) and was stopped",
               j->deadline_s);
      j->status = 504;
    } else {
      if (msg != NULL && msg != j->err) snprintf(j->err, sizeof j->err, "%s", msg);
      j->status = status;
    }
  }
  notify(j);
  pthread_cond_broadcast(&g_cv);
}

static int copy_columns(job *j, const bic_sql_driver *drv, void *cur) {
  int n = drv->ncols(cur);
  j->colnames = (char **)calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
  j->coltypes = (char **)calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
  if (!j->colnames || !j->coltypes) return -1;
  j->ncols = n;
  for (int i = 0; i < n; i++) {
    j->colnames[i] = bic_sql_strdup(drv->colname(cur, i));
    j->coltypes[i] = bic_sql_strdup(drv->coltype(cur, i));
    if (!j->colnames[i] || !j->coltypes[i]) return -1;
  }
  return 0;
}

/* A row of the cursor as one allocation (fetch mode). */
static row_rec *copy_row(const bic_sql_driver *drv, void *cur, int ncols, bic_sql_value *tmp) {
  size_t bytes = 0;
  row_rec *r;
  char *p;
  for (int i = 0; i < ncols; i++) {
    drv->value(cur, i, &tmp[i]);
    if (tmp[i].kind == BIC_SQL_TEXT || tmp[i].kind == BIC_SQL_BLOB) bytes += tmp[i].len;
  }
  r = (row_rec *)malloc(sizeof *r + sizeof(bic_sql_value) * (size_t)ncols + bytes + 1);
  if (r == NULL) return NULL;
  r->next = NULL;
  r->bytes = sizeof *r + sizeof(bic_sql_value) * (size_t)ncols + bytes;
  p = (char *)(r->v + ncols);
  for (int i = 0; i < ncols; i++) {
    r->v[i] = tmp[i];
    if (tmp[i].kind == BIC_SQL_TEXT || tmp[i].kind == BIC_SQL_BLOB) {
      if (tmp[i].len) memcpy(p, tmp[i].s, tmp[i].len);
      r->v[i].s = p;
      p += tmp[i].len;
    }
  }
  return r;
}

static size_t value_bytes(const bic_sql_value *v, int n) {
  size_t b = 16;
  for (int i = 0; i < n; i++) b += (v[i].kind == BIC_SQL_TEXT || v[i].kind == BIC_SQL_BLOB) ? v[i].len : 8;
  return b;
}

/* Whether j, which holds budget and waits for it alone, is the one to go
 * beyond the budget (under g_lock): no other step went beyond it and is under
 * way, every other job that holds budget holds only the last row it read
 * (nothing ready for a reader) and waits for the budget too, and j began
 * waiting first of them.
 *
 * Why: between two steps a job holds the driver's last row, which only its
 * next step frees, and that step reserves twice the table's largest row. Two
 * answers whose rows are each over a quarter of the budget, both under way,
 * held a row each and waited for the room the other's row took: neither went
 * on until --answer-timeout cut both. Nothing else frees that room (ready
 * output shrinks as readers read, or its reader is cut after --timeout; the
 * steps under way of other jobs, admitted within the budget, free none of it,
 * and a slow statement's first step may take minutes), so one of them goes:
 * the one waiting longest, so that two such answers take turns; one at a
 * time. Jobs that hold nothing are never let in this way: the rows held
 * beyond the budget are at most those of the jobs it admitted, plus one
 * step's reservation. */
static int first_of_stuck(const job *j) {
  if (g_beyond != NULL || j->held == 0 || j->budget_wait == 0) return 0;
  for (const job *k = g_jobs; k != NULL; k = k->next) {
    if (k == j || k->held == 0) continue;
    if (k->budget_wait == 0 || k->held > k->raw || k->budget_wait < j->budget_wait) return 0;
  }
  return 1;
}

/* Waits (under g_lock) until the job may take its next step: room in its own
 * output, the budget's share for its reservation, or a reason to end. 1 go
 * on, 0 end (failed or stopped). */
static int wait_turn_locked(job *j, size_t *reserve) {
  double probe_since = 0;
  for (;;) {
    double now = bic_clock();
    size_t ready = j->mode == MODE_STREAM ? j->out.len - j->out_off : j->queued;
    hint *h = hint_for(j->pool, j->key);
    int room = ready < j->cap;
    /* a table not seen yet: one first step at a time learns how large its rows
     * are; after PROBE_PATIENCE (the first is slow to bring its rows) the others
     * go on too, each counting a quarter of the budget */
    int known = h == NULL || h->max_row > 0 || !h->probing || j->probing == h;
    int budget, beyond = 0;
    double limit = now + 1;
    if (!known) {
      if (probe_since == 0) probe_since = now;
      if (now - probe_since >= PROBE_PATIENCE) {
        known = 1;
        if (*reserve < g_budget / 4) *reserve = g_budget / 4;
      } else if (probe_since + PROBE_PATIENCE < limit) {
        limit = probe_since + PROBE_PATIENCE;
      }
    }
    /* alone: nothing held or reserved but this job's own (its last row, its
     * ready output): it goes on, whatever its rows' size (counting its own
     * hold against it, a row over a third of the budget waited for itself) */
    budget = g_held + g_reserved + *reserve <= g_budget || g_held + g_reserved <= j->held;
    /* waiting for the budget alone: in line (the others may now be stuck) */
    if (room && known && !budget) {
      if (j->budget_wait == 0) {
        j->budget_wait = ++g_budget_waits;
        pthread_cond_broadcast(&g_cv);
      }
      budget = beyond = first_of_stuck(j);
    } else {
      j->budget_wait = 0;
    }
    if (j->stop) return 0;
    if (j->deadline > 0 && now >= j->deadline) {
      j->stop = STOP_DEADLINE;
      return 0;
    }
    if (room && budget && known) {
      if (h != NULL && h->max_row == 0 && !h->probing) {
        h->probing = 1;
        j->probing = h;
      }
      if (beyond) g_beyond = j;
      return 1;
    }
    if (!budget && !j->produced && now >= j->start_limit) {
      snprintf(j->err, sizeof j->err,
               "answers waiting for slow readers hold this server process's answer budget (%zu bytes); retry "
               "later",
               g_budget);
      j->status = 503;
      return 0;
    }
    if (!budget && !j->produced && j->start_limit < limit) limit = j->start_limit;
    if (j->deadline > 0 && j->deadline < limit) limit = j->deadline;
    timed_wait(&g_cv, limit - now);
  }
}

static int wait_turn(job *j, size_t *reserve) {
  int go = wait_turn_locked(j, reserve);
  j->budget_wait = 0;
  return go;
}

/* What the next step of j may take in memory before it is known: twice the
 * largest row seen of its table (raw and encoded); a table not seen yet is
 * stepped by one job at a time until its first rows tell (wait_turn). */
static size_t reservation(job *j) {
  hint *h = hint_for(j->pool, j->key);
  size_t r = h != NULL ? 2 * h->max_row : 0;
  return r < MIN_RESERVE ? MIN_RESERVE : r;
}

/* Waits for j's turn and reserves its step (under g_lock): 1, or 0 when the
 * job must end instead (failed or stopped: fail_locked is the caller's). */
static int take_turn(job *j) {
  size_t reserve = reservation(j);
  if (!wait_turn(j, &reserve)) return 0;
  g_reserved += reserve;
  j->reserved = reserve;
  return 1;
}

static void end_turn(job *j) {
  g_reserved -= j->reserved;
  j->reserved = 0;
  if (g_beyond == j) { /* the next stuck job may go */
    g_beyond = NULL;
    pthread_cond_broadcast(&g_cv);
  }
  if (j->probing != NULL) { /* its size is known now (or the next job tries) */
    j->probing->probing = 0;
    j->probing = NULL;
    pthread_cond_broadcast(&g_cv);
  }
}

/* Publishes what the thread's encoder holds: moved to out, with a mark. */
static int publish_stream(job *j, double rows) {
  bic_buffer *b = bic_rows_buffer(j->enc);
  size_t n = b->len;
  if (n == 0) return 0;
  if (j->closed) { /* no one will take it */
    b->len = 0;
    return 0;
  }
  if (j->out_off > 0 && j->out_off == j->out.len) j->out.len = j->out_off = 0;
  if (j->out.len == 0) { /* trade buffers: no copy */
    bic_buffer t = j->out;
    j->out = *b;
    *b = t;
    b->len = 0;
  } else if (bic_buffer_put(&j->out, b->data, n) != 0) {
    return -1;
  } else {
    b->len = 0;
  }
  if (j->nmarks == j->capmarks) {
    size_t cap = j->capmarks ? j->capmarks * 2 : 8;
    mark *m = (mark *)realloc(j->marks, cap * sizeof *m);
    if (m == NULL) return -1;
    j->marks = m;
    j->capmarks = cap;
  }
  j->marks[j->nmarks].end = j->taken + (j->out.len - j->out_off);
  j->marks[j->nmarks].rows = rows;
  j->nmarks++;
  hold(j, n);
  return 0;
}

static void job_body(job *j);

/* A job's thread: the job, then counted out (bic_sql_settle waits for this)
 * and put on the list of threads to join (detached when there is no memory
 * for that). */
static void *job_main(void *arg) {
  exited_thread *me = (exited_thread *)malloc(sizeof *me);
  job_body((job *)arg);
  pthread_mutex_lock(&g_lock);
  if (me != NULL) {
    me->t = pthread_self();
    me->next = g_exited;
    g_exited = me;
  } else {
    pthread_detach(pthread_self());
  }
  g_in_library--;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_lock);
  return NULL;
}

/* Joins the job threads that have left job_main: once joined, their
 * thread-exit handlers have run. Not under g_lock. */
static void join_exited(void) {
  exited_thread *list;
  pthread_mutex_lock(&g_lock);
  list = g_exited;
  g_exited = NULL;
  pthread_mutex_unlock(&g_lock);
  while (list != NULL) {
    exited_thread *n = list->next;
    pthread_join(list->t, NULL);
    free(list);
    list = n;
  }
}

int bic_sql_settle(double seconds) {
  double until = bic_clock() + seconds;
  int n;
  pthread_once(&g_once, setup_once);
  pthread_mutex_lock(&g_lock);
  while (g_in_library > 0 && bic_clock() < until) timed_wait(&g_cv, until - bic_clock());
  n = g_in_library;
  pthread_mutex_unlock(&g_lock);
  join_exited(); /* their exit handlers too: nothing of theirs holds a library's lock */
  return n;
}

/* core.sql.settle([seconds]) -> how many of the jobs' threads are still inside
 * a client library after waiting up to seconds (default 0) for them to end. */
static int l_settle(lua_State *L) {
  double seconds = luaL_optnumber(L, 1, 0);
  lua_pushinteger(L, bic_sql_settle(seconds > 0 ? seconds : 0));
  return 1;
}

static void job_body(job *j) {
  pool *p = j->pool;
  const bic_sql_driver *drv = p->drv;
  void *h = NULL, *cur = NULL;
  char err[ERRLEN];
  int retryable = 0, done = 0, broken = 0, rc;
  double rows_total = 0, nulled = 0;
  int first_bad = -1;
  char first_why[200];
  bic_sql_value *tmp = NULL;

  if (lease(j, &h) != 0) {
    pthread_mutex_lock(&g_lock);
    fail_locked(j, j->status, NULL);
    pthread_mutex_unlock(&g_lock);
    job_unref(j);
    return;
  }
  pthread_mutex_lock(&g_lock);
  j->conn = h;
  /* the statement may bring rows at once (PostgreSQL's first FETCH): it takes its turn */
  if (!take_turn(j)) {
    j->conn = NULL;
    fail_locked(j, j->status, NULL);
    pthread_mutex_unlock(&g_lock);
    release(p, h, 0);
    job_unref(j);
    return;
  }
  j->in_statement = !j->stop;
  pthread_mutex_unlock(&g_lock);
  err[0] = '\0';
  if (!j->stop) cur = drv->query(h, j->sql, j->params, j->nparams, &retryable, err, sizeof err);
  if (cur == NULL && retryable && !j->stop) {
    /* the connection was lost (a server restart): one new connection, once */
    char err2[ERRLEN / 2];
    void *h2;
    pthread_mutex_lock(&g_lock);
    j->in_statement = 0;
    while (j->canceling) pthread_cond_wait(&g_cv, &g_lock);
    j->conn = NULL;
    pthread_mutex_unlock(&g_lock);
    drv->close(h);
    h2 = drv->open(&p->opts, err2, sizeof err2);
    pthread_mutex_lock(&g_lock);
    if (h2 == NULL) {
      size_t used = strlen(err) < ERRLEN / 4 ? strlen(err) : ERRLEN / 4;
      snprintf(err + used, sizeof err - used, "; reconnecting failed: %.200s", err2);
      end_turn(j);
      p->open--;
      pthread_cond_broadcast(&g_cv);
      fail_locked(j, 503, err);
      pthread_mutex_unlock(&g_lock);
      job_unref(j);
      return;
    }
    h = h2;
    j->conn = h;
    j->in_statement = !j->stop;
    pthread_mutex_unlock(&g_lock);
    if (!j->stop) cur = drv->query(h, j->sql, j->params, j->nparams, &retryable, err, sizeof err);
  }
  pthread_mutex_lock(&g_lock);
  j->in_statement = 0;
  if (cur == NULL) {
    end_turn(j);
    fail_locked(j, 0, err[0] ? err : "the query was stopped");
    broken = 1;
    goto finish_locked;
  }
  if (copy_columns(j, drv, cur) != 0 || (tmp = (bic_sql_value *)calloc((size_t)(j->ncols + 1), sizeof *tmp)) == NULL ||
      (j->mode == MODE_STREAM && bic_rows_width(j->enc) != j->ncols)) {
    if (j->mode == MODE_STREAM && j->ncols != bic_rows_width(j->enc) && tmp != NULL)
      snprintf(err, sizeof err, "the encoder has %d columns, the query %d", bic_rows_width(j->enc), j->ncols);
    else
      snprintf(err, sizeof err, "out of memory");
    end_turn(j);
    fail_locked(j, 500, err);
    goto finish_locked;
  }
  j->state = J_RUNNING;
  notify(j);

  /* the statement's turn goes on into the first step: the rows a statement
   * brings at once (PostgreSQL's first FETCH) are counted with that step's */
  for (int first_step = 1; !done; first_step = 0) {
    size_t biggest = 0;
    if (!first_step && !take_turn(j)) {
      fail_locked(j, j->status, NULL);
      break;
    }
    unhold(j, j->raw); /* the driver frees its last row in the next step (the reservation covers it) */
    j->raw = 0;
    j->in_statement = 1;
    pthread_mutex_unlock(&g_lock);

    /* one step: rows until a chunk is ready (or the rows end, or a stop) */
    rc = 1;
    err[0] = '\0';
    if (j->mode == MODE_STREAM) {
      double added = 0;
      while (!j->stop && bic_rows_buffer(j->enc)->len < j->chunk) {
        int bad = -1, nul;
        char why[200];
        rc = drv->step(cur, err, sizeof err);
        if (rc <= 0) break;
        for (int i = 0; i < j->ncols; i++) drv->value(cur, i, &tmp[i]);
        {
          size_t b = value_bytes(tmp, j->ncols);
          if (b > biggest) biggest = b;
        }
        nul = bic_rows_add_values(j->enc, tmp, j->ncols, &bad, why, sizeof why);
        if (nul < 0) {
          rc = -2;
          snprintf(err, sizeof err, "out of memory");
          break;
        }
        if (nul > 0) {
          if (nulled == 0) {
            first_bad = bad;
            memcpy(first_why, why, sizeof why);
          }
          nulled += nul;
        }
        added++;
      }
      rows_total += added;
      pthread_mutex_lock(&g_lock);
      if (nulled > 0 && j->nulled == 0) {
        j->first_bad = first_bad;
        memcpy(j->why, first_why, sizeof j->why);
      }
      j->nulled = nulled;
      if (publish_stream(j, rows_total) != 0 && rc > 0) {
        rc = -2;
        snprintf(err, sizeof err, "out of memory");
      }
    } else {
      row_rec *first = NULL, *last = NULL;
      size_t bytes = 0;
      while (!j->stop && bytes < j->chunk) {
        row_rec *r;
        rc = drv->step(cur, err, sizeof err);
        if (rc <= 0) break;
        r = copy_row(drv, cur, j->ncols, tmp);
        if (r == NULL) {
          rc = -2;
          snprintf(err, sizeof err, "out of memory");
          break;
        }
        if (r->bytes > biggest) biggest = r->bytes;
        bytes += r->bytes;
        if (last) last->next = r;
        else first = r;
        last = r;
      }
      pthread_mutex_lock(&g_lock);
      if (j->closed) {
        while (first != NULL) {
          row_rec *n = first->next;
          free(first);
          first = n;
        }
      }
      if (first != NULL) {
        if (j->tail) j->tail->next = first;
        else j->head = first;
        j->tail = last;
        for (row_rec *r = first; r != NULL; r = r->next) j->nqueued++;
        j->queued += bytes;
        hold(j, bytes);
      }
    }
    /* under g_lock again */
    j->in_statement = 0;
    end_turn(j);
    if (biggest > 0) hint_set(p, j->key, biggest);
    if (biggest >= 1024 * 1024) j->big = 1;
    if (!done && rc > 0) { /* the driver keeps its last row until the next step */
      j->raw = biggest;
      hold(j, biggest);
    }
    j->produced = 1;
    if (rc == 0) {
      done = 1; /* J_DONE once the connection is back in the pool */
      notify(j);
      break;
    } else if (rc < 0 && !j->stop) {
      fail_locked(j, rc == -2 ? 500 : 0, err);
      broken = rc != -2;
      break;
    } else if (j->stop) {
      fail_locked(j, 0, NULL);
      break;
    }
    notify(j);
    pthread_cond_broadcast(&g_cv);
  }

finish_locked:
  if (cur != NULL && drv->cancel_apart && j->canceling) {
    /* the cancel waits for the query, the query for its transfer to go (sql.h) */
    pthread_mutex_unlock(&g_lock);
    drv->close_cursor(cur);
    cur = NULL;
    pthread_mutex_lock(&g_lock);
  }
  /* the service thread may be in cancel() on this connection: it must be done
   * before the connection is closed or handed to another job */
  while (j->canceling) pthread_cond_wait(&g_cv, &g_lock);
  if (j->cancel_sent) broken = 1;
  j->conn = NULL;
  unhold(j, j->raw);
  j->raw = 0;
  pthread_mutex_unlock(&g_lock);
  free(tmp);
  if (cur != NULL) drv->close_cursor(cur); /* unread rows: the driver stops the statement */
  /* a statement stopped early on a server leaves nothing to trust on that
   * session (a late KILL QUERY or cancel could hit the next statement) */
  if (!done && strcmp(drv->engine, "sqlite") != 0) broken = 1;
  /* the client libraries keep their buffers as large as the largest row read
   * (libpq's input buffer, Connector/C's packet buffer): not kept idle */
  if (j->big) broken = 1;
  release(p, h, broken);
  bic_buffer_free(bic_rows_buffer(j->enc ? j->enc : NULL));
  if (j->big) malloc_trim(0); /* a large row's buffers: back to the system now */
  if (done) { /* told after the connection is back: the next job of the reader gets it */
    pthread_mutex_lock(&g_lock);
    if (j->state < J_DONE) j->state = J_DONE;
    notify(j);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_lock);
  }
  job_unref(j);
  return;
}

/* ---- jobs: the Lua side ------------------------------------------------------------- */

static pool *check_pool(lua_State *L, int idx) {
  pool_box *b = (pool_box *)luaL_checkudata(L, idx, POOL_MT);
  if (b->p == NULL) luaL_argerror(L, idx, "pool is closed");
  return b->p;
}

static job *check_job(lua_State *L) {
  job_box *b = (job_box *)luaL_checkudata(L, 1, JOB_MT);
  if (b->j == NULL) luaL_argerror(L, 1, "job is closed");
  return b->j;
}

/* core.sql.pool(engine, opts [, settings]) */
static int l_pool(lua_State *L) {
  const char *engine = luaL_checkstring(L, 1);
  const bic_sql_driver *drv = bic_sql_find_driver(engine);
  bic_sql_options o;
  pool_box *box;
  pool *p;
  char *key;
  int size;
  pthread_once(&g_once, setup_once);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  if (drv == NULL) return luaL_error(L, "unknown database engine \"%s\"", engine);
  size = lua_istable(L, 3) ? (int)bic_opt_number(L, 3, "size", DEFAULT_POOL_SIZE, 1, 1000) : DEFAULT_POOL_SIZE;
  box = (pool_box *)bic_object(L, sizeof *box, POOL_MT); /* index 4 */
  p = (pool *)calloc(1, sizeof *p);
  if (p == NULL) return luaL_error(L, "out of memory");
  memset(&o, 0, sizeof o);
  p->drv = drv;
  p->refs = 1;
  p->size = size;
  p->pid = getpid();
  box->p = p; /* __gc frees it from here (not yet listed: refs 1) */
  bic_sql_read_options(L, 2, &p->opts);
  key = options_key(engine, &p->opts);
  if (key == NULL) return luaL_error(L, "out of memory");
  pthread_mutex_lock(&g_lock);
  {
    pool *q;
    for (q = g_pools; q != NULL; q = q->next)
      if (strcmp(q->key, key) == 0) break;
    if (q != NULL) { /* the same database: one pool; the latest size counts */
      q->refs++;
      q->size = size;
      box->p = q;
      pthread_cond_broadcast(&g_cv);
    } else {
      p->key = key;
      key = NULL;
      p->next = g_pools;
      g_pools = p;
      p = NULL;
    }
  }
  pthread_mutex_unlock(&g_lock);
  if (p != NULL) pool_free(p, NULL); /* the one made here was not needed */
  bic_sql_free_secret(key);
  return 1;
}

static int l_pool_close(lua_State *L) {
  pool_box *b = (pool_box *)luaL_checkudata(L, 1, POOL_MT);
  if (b->p) {
    pool *p = b->p;
    b->p = NULL;
    if (p->pid == getpid()) pool_unref(p); /* a parent's pool, seen after a fork: forgotten */
  }
  return 0;
}

static int l_pool_stats(lua_State *L) {
  pool *p = check_pool(L, 1);
  int idle = 0;
  lua_createtable(L, 0, 4);
  pthread_mutex_lock(&g_lock);
  for (idle_conn *ic = p->idle; ic != NULL; ic = ic->next) idle++;
  lua_pushinteger(L, p->size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, p->open);
  lua_setfield(L, -2, "open");
  lua_pushinteger(L, idle);
  lua_setfield(L, -2, "idle");
  lua_pushinteger(L, p->waiting);
  lua_setfield(L, -2, "waiting");
  pthread_mutex_unlock(&g_lock);
  return 1;
}

/* Copies the parameters (a list, params.n when it holds nils) into one allocation. */
static bic_sql_value *copy_params(lua_State *L, int t, int *count) {
  int n;
  size_t bytes = 0;
  bic_sql_value *v = bic_sql_push_params(L, t, &n), *c; /* v: scratch, on the stack */
  char *p;
  for (int i = 0; i < n; i++)
    if (v[i].kind == BIC_SQL_TEXT || v[i].kind == BIC_SQL_BLOB) bytes += v[i].len;
  c = (bic_sql_value *)malloc(sizeof *c * (size_t)(n > 0 ? n : 1) + bytes + 1);
  if (c == NULL) luaL_error(L, "out of memory");
  p = (char *)(c + (n > 0 ? n : 1));
  for (int i = 0; i < n; i++) {
    c[i] = v[i];
    if (v[i].kind == BIC_SQL_TEXT || v[i].kind == BIC_SQL_BLOB) {
      if (v[i].len) memcpy(p, v[i].s, v[i].len);
      c[i].s = p;
      p += v[i].len;
    }
  }
  lua_pop(L, 1);
  *count = n;
  return c;
}

/* core.sql.job(pool, sql, params, opts) */
static int l_job(lua_State *L) {
  pool *p = check_pool(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  job_box *box;
  job *j;
  const char *mode;
  double deadline, wait;
  int rc;
  luaL_checktype(L, 4, LUA_TTABLE);
  lua_settop(L, 4);
  lua_getfield(L, 4, "mode");
  mode = lua_tostring(L, -1);
  if (mode == NULL || (strcmp(mode, "stream") != 0 && strcmp(mode, "fetch") != 0))
    return luaL_error(L, "option 'mode' must be \"stream\" or \"fetch\"");
  lua_pop(L, 1);
  box = (job_box *)bic_object(L, sizeof *box, JOB_MT); /* index 5 */
  j = (job *)calloc(1, sizeof *j);
  if (j == NULL) return luaL_error(L, "out of memory");
  j->efd = -1;
  j->refs = 1;
  j->pid = getpid();
  bic_buffer_init(&j->out);
  box->j = j; /* from here __gc frees it (not listed yet, no thread) */
  j->mode = strcmp(mode, "stream") == 0 ? MODE_STREAM : MODE_FETCH;
  j->chunk = (size_t)bic_opt_number(L, 4, "chunk", DEFAULT_CHUNK, 1, 1 << 30);
  j->cap = (size_t)bic_opt_number(L, 4, "cap", 4.0 * (double)j->chunk, 1, 1e12);
  deadline = bic_opt_number(L, 4, "deadline", 0, 0, 1e7);
  wait = bic_opt_number(L, 4, "wait", DEFAULT_WAIT, 0, 1e7);
  lua_getfield(L, 4, "key");
  if (!lua_isnil(L, -1)) {
    j->key = bic_sql_strdup(luaL_checkstring(L, -1));
    if (j->key == NULL) return luaL_error(L, "out of memory");
  }
  lua_pop(L, 1);
  if (j->mode == MODE_STREAM) {
    lua_getfield(L, 4, "encoder");
    j->enc = bic_rows_clone(bic_rows_check(L, -1));
    if (j->enc == NULL) return luaL_error(L, "out of memory");
    lua_pop(L, 1);
  }
  j->params = copy_params(L, 3, &j->nparams);
  j->sql = bic_sql_strdup(sql);
  j->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (j->sql == NULL) return luaL_error(L, "out of memory");
  if (j->efd < 0) return luaL_error(L, "eventfd: %s", strerror(errno));
  j->start_limit = bic_clock() + wait;
  j->deadline = deadline > 0 ? bic_clock() + deadline : 0;
  j->deadline_s = deadline;
  pthread_once(&g_once, setup_once);
  join_exited(); /* the threads of the jobs that ended (their stacks) */
  pthread_mutex_lock(&g_lock);
  if (ensure_service() != 0) {
    pthread_mutex_unlock(&g_lock);
    return luaL_error(L, "cannot start the database service thread");
  }
  p->refs++;
  j->pool = p;
  j->refs = 2; /* the Lua handle and the thread */
  j->next = g_jobs;
  if (g_jobs) g_jobs->prev = j;
  g_jobs = j;
  g_in_library++;
  rc = start_thread(job_main, j, 1);
  if (rc != 0) {
    g_in_library--;
    j->refs = 1;
    snprintf(j->err, sizeof j->err, "cannot start a thread for the query: %s", strerror(rc));
    j->status = 503;
    j->state = J_FAILED;
  }
  pthread_cond_broadcast(&g_service); /* a new deadline */
  pthread_mutex_unlock(&g_lock);
  return 1;
}

static int l_job_fd(lua_State *L) {
  lua_pushinteger(L, check_job(L)->efd);
  return 1;
}

static void drain_fd(job *j) {
  uint64_t v;
  while (read(j->efd, &v, sizeof v) > 0) {
  }
}

/* job:drain(): empties the eventfd after a wake-up (a host polled it). */
static int l_job_drain(lua_State *L) {
  drain_fd(check_job(L));
  return 0;
}

/* job:wait([seconds]) -> true when there is news (or the time is up: false). */
static int l_job_wait(lua_State *L) {
  job *j = check_job(L);
  double s = luaL_optnumber(L, 2, 1);
  struct pollfd pfd;
  int rc;
  pfd.fd = j->efd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  do rc = poll(&pfd, 1, (int)(s * 1000));
  while (rc < 0 && errno == EINTR);
  drain_fd(j);
  lua_pushboolean(L, rc > 0);
  return 1;
}

static const char *const state_names[] = {"queued", "running", "done", "failed", "cancelled"};

static int l_job_state(lua_State *L) {
  job *j = check_job(L);
  int st;
  pthread_mutex_lock(&g_lock);
  st = j->state;
  pthread_mutex_unlock(&g_lock);
  lua_pushstring(L, state_names[st]);
  return 1;
}

static int l_job_columns(lua_State *L) {
  job *j = check_job(L);
  pthread_mutex_lock(&g_lock);
  if (j->state == J_QUEUED || j->colnames == NULL) {
    pthread_mutex_unlock(&g_lock);
    lua_pushnil(L);
    return 1;
  }
  pthread_mutex_unlock(&g_lock); /* set before running and never changed after */
  lua_createtable(L, j->ncols, 0);
  for (int i = 0; i < j->ncols; i++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, j->colnames[i]);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, j->coltypes[i]);
    lua_setfield(L, -2, "type");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

static int push_failure(lua_State *L, job *j) {
  lua_pushnil(L);
  lua_pushstring(L, j->state == J_CANCELLED ? "the query was cancelled" : j->err);
  lua_pushinteger(L, j->state == J_CANCELLED ? 499 : j->status);
  return 3;
}

/* job:error() -> message, status of a failed or cancelled job, or nothing */
static int l_job_error(lua_State *L) {
  job *j = check_job(L);
  int n = 0;
  pthread_mutex_lock(&g_lock);
  if (j->state == J_FAILED || j->state == J_CANCELLED) {
    push_failure(L, j);
    lua_remove(L, -3);
    n = 2;
  }
  pthread_mutex_unlock(&g_lock);
  return n;
}

/* job:take(enc, max) -> added, done, nulled, column, why | nil, message, status */
static int l_job_take(lua_State *L) {
  job *j = check_job(L);
  rows_encoder *e = bic_rows_check(L, 2);
  lua_Integer max = luaL_optinteger(L, 3, DEFAULT_CHUNK);
  size_t ready, n;
  double rows_done = j->rows_taken, added;
  int done, nret = 2;
  luaL_argcheck(L, j->mode == MODE_STREAM, 1, "not a stream job");
  luaL_argcheck(L, max > 0, 3, "expected a positive size");
  pthread_mutex_lock(&g_lock);
  ready = j->out.len - j->out_off;
  if (ready == 0 && (j->state == J_FAILED || j->state == J_CANCELLED)) {
    nret = push_failure(L, j);
    pthread_mutex_unlock(&g_lock);
    return nret;
  }
  n = ready < (size_t)max ? ready : (size_t)max;
  /* an encoder that holds nothing takes a hand-over of up to 1.5 max whole: the
   * two trade buffers instead of copying (the job publishes a chunk and one row
   * more, and a copy of every byte was 4% of a PostgreSQL answer's cost) */
  if (e != NULL && bic_rows_pending(e) == 0 && ready <= (size_t)max + (size_t)max / 2) n = ready;
  if (n > 0) {
    size_t i = 0;
    if (bic_rows_put(e, &j->out, j->out_off, n, 0) != 0) {
      pthread_mutex_unlock(&g_lock);
      return luaL_error(L, "out of memory");
    }
    if (j->out.len == 0) j->out_off = 0; /* traded: the job got e's empty buffer */
    else j->out_off += n;
    if (j->out_off == j->out.len) j->out.len = j->out_off = 0;
    j->taken += n;
    while (i < j->nmarks && j->marks[i].end <= j->taken) rows_done = j->marks[i++].rows;
    if (i > 0) {
      memmove(j->marks, j->marks + i, (j->nmarks - i) * sizeof *j->marks);
      j->nmarks -= i;
    }
    unhold(j, n);
    pthread_cond_broadcast(&g_cv);
  }
  added = rows_done - j->rows_taken;
  j->rows_taken = rows_done;
  bic_rows_put(e, &j->out, 0, 0, added); /* counts the rows in the encoder */
  done = j->state == J_DONE && j->out.len == j->out_off;
  lua_pushinteger(L, (lua_Integer)added);
  lua_pushboolean(L, done);
  if (j->nulled > j->nulled_told) {
    lua_pushinteger(L, (lua_Integer)(j->nulled - j->nulled_told));
    lua_pushinteger(L, j->first_bad + 1);
    lua_pushstring(L, j->why);
    j->nulled_told = j->nulled;
    nret = 5;
  }
  pthread_mutex_unlock(&g_lock);
  return nret;
}

/* as_text: how a database boolean goes (types given to job:fetch): -1 a Lua
 * boolean, 0 the number 1/0, 1 the text "true"/"false": as the row encoder
 * serves it in an int or double field and a string field. */
static void push_value(lua_State *L, const bic_sql_value *v, int as_text) {
  switch (v->kind) {
  case BIC_SQL_INT: bic_push_int64(L, v->i); break;
  case BIC_SQL_DOUBLE: lua_pushnumber(L, (lua_Number)v->d); break;
  case BIC_SQL_BOOL:
    if (as_text < 0) lua_pushboolean(L, (int)v->i);
    else if (as_text) lua_pushstring(L, v->i ? "true" : "false");
    else lua_pushinteger(L, v->i ? 1 : 0);
    break;
  default: lua_pushlstring(L, v->s ? v->s : "", v->len); break;
  }
}

/* job:fetch(n [, keys [, types]]) -> rows, done | nil, message, status. Without
 * keys a row is a list of its values; with keys (a list of as many keys as
 * columns) it is a map, row[keys[c]] the value of column c. types (a list of
 * field types, one per column): a database boolean goes as the row encoder
 * serves it in that field, 1/0 or "true"/"false" (a Lua boolean fits no field
 * type); without types, as a Lua boolean. */
static int l_job_fetch(lua_State *L) {
  job *j = check_job(L);
  lua_Integer want = luaL_optinteger(L, 2, 1000);
  int keys = !lua_isnoneornil(L, 3);
  int types = !lua_isnoneornil(L, 4);
  row_rec *got = NULL;
  size_t bytes = 0, k = 0;
  int done, ncols;
  luaL_argcheck(L, j->mode == MODE_FETCH, 1, "not a fetch job");
  if (keys) luaL_checktype(L, 3, LUA_TTABLE);
  if (types) luaL_checktype(L, 4, LUA_TTABLE);
  lua_settop(L, 4);
  luaL_checkstack(L, 8, NULL);
  pthread_mutex_lock(&g_lock);
  if (j->head == NULL && (j->state == J_FAILED || j->state == J_CANCELLED)) {
    int n = push_failure(L, j);
    pthread_mutex_unlock(&g_lock);
    return n;
  }
  /* detach up to want rows, then build the Lua rows without the lock */
  {
    row_rec **pp = &j->head, *last = NULL;
    got = j->head;
    while (*pp != NULL && (lua_Integer)k < want) {
      last = *pp;
      bytes += last->bytes;
      pp = &last->next;
      k++;
    }
    if (last != NULL) {
      j->head = last->next;
      last->next = NULL;
      if (j->head == NULL) j->tail = NULL;
    } else {
      got = NULL;
    }
    j->nqueued -= k;
    j->queued -= bytes;
    unhold(j, bytes);
    if (k > 0) pthread_cond_broadcast(&g_cv);
  }
  done = j->state == J_DONE && j->head == NULL;
  ncols = j->ncols;
  pthread_mutex_unlock(&g_lock);
  if (keys && got != NULL && (int)lua_rawlen(L, 3) != ncols) {
    while (got != NULL) {
      row_rec *n = got->next;
      free(got);
      got = n;
    }
    return luaL_argerror(L, 3, "expected a key for each column");
  }
  if (types && got != NULL && (int)lua_rawlen(L, 4) != ncols) {
    while (got != NULL) {
      row_rec *n = got->next;
      free(got);
      got = n;
    }
    return luaL_argerror(L, 4, "expected a field type for each column");
  }
  lua_createtable(L, (int)k, 0);
  {
    int i = 1;
    while (got != NULL) {
      row_rec *n = got->next;
      lua_createtable(L, keys ? 0 : ncols, keys ? ncols : 0);
      for (int c = 0; c < ncols; c++) {
        int text = -1;
        if (got->v[c].kind == BIC_SQL_NULL) continue;
        if (types && got->v[c].kind == BIC_SQL_BOOL) {
          const char *t;
          lua_rawgeti(L, 4, c + 1);
          t = lua_tostring(L, -1);
          text = t != NULL && strcmp(t, "string") == 0;
          lua_pop(L, 1);
        }
        if (keys) {
          lua_rawgeti(L, 3, c + 1);
          push_value(L, &got->v[c], text);
          lua_rawset(L, -3);
        } else {
          push_value(L, &got->v[c], text);
          lua_rawseti(L, -2, c + 1);
        }
      }
      lua_rawseti(L, -2, i++);
      free(got);
      got = n;
    }
  }
  lua_pushboolean(L, done);
  return 2;
}

/* Asks the job to stop (under g_lock): its thread sees the flag between steps,
 * the service thread cancels a statement under way. */
static void stop_locked(job *j) {
  if (j->state <= J_RUNNING && !j->stop) {
    j->stop = STOP_CANCEL;
    pthread_cond_broadcast(&g_cv);
    pthread_cond_broadcast(&g_service);
  }
}

static int l_job_cancel(lua_State *L) {
  job *j = check_job(L);
  pthread_mutex_lock(&g_lock);
  stop_locked(j);
  pthread_mutex_unlock(&g_lock);
  return 0;
}

static int l_job_close(lua_State *L) {
  job_box *b = (job_box *)luaL_checkudata(L, 1, JOB_MT);
  job *j = b->j;
  int free_it;
  if (j == NULL) return 0;
  b->j = NULL;
  if (j->pid != getpid()) return 0; /* a parent's job, seen after a fork: forgotten */
  pthread_mutex_lock(&g_lock);
  stop_locked(j);
  j->closed = 1;
  /* what it holds ready leaves the budget with the handle */
  unhold(j, j->held);
  j->queued = 0;
  bic_buffer_free(&j->out); /* the thread touches out only under the lock, and not once closed */
  j->out_off = 0;
  j->out.len = j->out_off = 0;
  {
    row_rec *r = j->head;
    while (r != NULL) {
      row_rec *n = r->next;
      free(r);
      r = n;
    }
    j->head = j->tail = NULL;
  }
  pthread_cond_broadcast(&g_cv);
  job_unref_locked(j, &free_it);
  pthread_mutex_unlock(&g_lock);
  if (free_it) job_free(j);
  return 0;
}

static int l_job_tostring(lua_State *L) {
  job_box *b = (job_box *)luaL_checkudata(L, 1, JOB_MT);
  lua_pushfstring(L, "biconnector.sql.job (%s): %p", b->j ? "open" : "closed", (void *)b);
  return 1;
}

static int l_pool_tostring(lua_State *L) {
  pool_box *b = (pool_box *)luaL_checkudata(L, 1, POOL_MT);
  lua_pushfstring(L, "biconnector.sql.pool (%s): %p", b->p ? b->p->drv->engine : "closed", (void *)b);
  return 1;
}

/* core.sql.budget([bytes]) -> budget, held */
static int l_budget(lua_State *L) {
  pthread_once(&g_once, setup_once);
  if (!lua_isnoneornil(L, 1)) {
    lua_Number n = luaL_checknumber(L, 1);
    luaL_argcheck(L, n >= 65536 && n <= 1e13, 1, "expected 65536 bytes or more");
    pthread_mutex_lock(&g_lock);
    g_budget = (size_t)n;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_lock);
  }
  pthread_mutex_lock(&g_lock);
  lua_pushinteger(L, (lua_Integer)g_budget);
  lua_pushinteger(L, (lua_Integer)g_held);
  pthread_mutex_unlock(&g_lock);
  return 2;
}

int bic_open_sql_jobs(lua_State *L) {
  static const luaL_Reg pool_methods[] = {{"stats", l_pool_stats}, {"close", l_pool_close}, {NULL, NULL}};
  static const luaL_Reg job_methods[] = {
      {"fd", l_job_fd},       {"wait", l_job_wait},     {"drain", l_job_drain},     {"state", l_job_state}, {"columns", l_job_columns},
      {"take", l_job_take},   {"fetch", l_job_fetch},   {"error", l_job_error}, {"cancel", l_job_cancel},
      {"close", l_job_close}, {NULL, NULL}};
  bic_class(L, POOL_MT, pool_methods, l_pool_close, l_pool_close, l_pool_tostring);
  bic_class(L, JOB_MT, job_methods, l_job_close, l_job_close, l_job_tostring);
  lua_pushcfunction(L, l_pool);
  lua_setfield(L, -2, "pool");
  lua_pushcfunction(L, l_job);
  lua_setfield(L, -2, "job");
  lua_pushcfunction(L, l_budget);
  lua_setfield(L, -2, "budget");
  lua_pushcfunction(L, l_settle);
  lua_setfield(L, -2, "settle");
  return 0;
}
