/* core.os (os.c): clocks, sleep, file locks, atomic writes. */
#ifndef BIC_OS_H
#define BIC_OS_H

#include <stddef.h>

#include "bic.h"

/* Seconds on a monotonic clock. */
double bic_clock(void);

/* Sleeps seconds (at most a day; NaN and negatives: not at all); with wake,
 * returns early when a signal trapped by core.process.trap arrives. */
void bic_sleep(double seconds, int wake);

#endif
