/* core.os (os.c): clocks, sleep, file locks, atomic writes, and the option
 * reader the C parts share. */
#ifndef BIC_OS_H
#define BIC_OS_H

#include <stddef.h>

#include "bic.h"

/* Seconds on a monotonic clock. */
double bic_clock(void);

/* Sleeps seconds (at most a day; NaN and negatives: not at all); with wake,
 * returns early when a signal trapped by core.process.trap arrives. */
void bic_sleep(double seconds, int wake);

/* The string option t[key] (t an absolute index), left on the stack, as the
 * caller's anchor while it uses it (an __index may have made the string up):
 * def when nil; raises when it is not a string. len (may be NULL) gets its
 * length. */
const char *bic_opt_string(lua_State *L, int t, const char *key, const char *def, size_t *len);

#endif
