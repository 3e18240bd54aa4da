/* core.process: what the worker mode needs (fork, wait, kill, signals), and
 * the signal state the server's run loop watches. */
#ifndef BIC_PROCESS_H
#define BIC_PROCESS_H

#include "bic.h"

/* Adds core.process to the module table at the top of the stack. */
void bic_open_process(lua_State *L);

/* The read end of the self-pipe a trapped signal writes to, or -1 (no trap yet). */
int bic_signal_fd(void);
/* Empties the self-pipe after a wake-up. */
void bic_signal_drain(void);
/* Takes a pending SIGTERM or SIGINT (trapped by process.trap): its number, or 0. */
int bic_signal_take_stop(void);
/* Takes a pending SIGHUP (trapped by process.trap): 1, or 0 when none is pending. */
int bic_signal_take_reload(void);
/* "TERM", "INT", ... or NULL for a signal without a name here. */
const char *bic_signal_name(int number);
/* Seconds on a monotonic clock. */
double bic_clock(void);
/* The open descriptors of this process into *out (malloc'd, *count of them):
 * 0, or -1 on failure. */
int bic_open_fds(int **out, size_t *count);

#endif
