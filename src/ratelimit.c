/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "ratelimit.h"

bool ratelimit_allow(RateLimit *rl, usec_t now, unsigned *suppressed) {
        usec_t interval = rl->interval ? rl->interval : USEC_PER_SEC;

        if (rl->last != 0 && now >= rl->last && now - rl->last < interval) {
                rl->suppressed++;
                return false;
        }
        if (suppressed)
                *suppressed = rl->suppressed;
        rl->suppressed = 0;
        /* 0 means "never": a clock that reads 0 still counts as a time. */
        rl->last = now ? now : 1;
        return true;
}

int log_ratelimited(RateLimit *rl, int level, int error, const char *format, ...) {
        _cleanup_free_ char *msg = NULL;
        unsigned suppressed;
        va_list ap;
        int saved = errno;

        error = error < 0 ? -error : error;
        if (!ratelimit_allow(rl, clock_usec(CLOCK_MONOTONIC), &suppressed))
                return -error;
        errno = error;  /* for %m */
        va_start(ap, format);
        if (vasprintf(&msg, format, ap) < 0)
                msg = NULL;
        va_end(ap);
        errno = saved;
        if (!msg)
                return -error;
        if (suppressed)
                return log_full_errno(level, error, "%s (%u more like this suppressed)", msg, suppressed);
        return log_full_errno(level, error, "%s", msg);
}
