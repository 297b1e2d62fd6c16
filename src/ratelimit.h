/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "util.h"

/* A warning that may repeat (a flood, a resource that stays exhausted) is logged at most
 * once per interval; the ones held back are counted and told with the next one let
 * through. Zero-initialised means "one per second". */
typedef struct RateLimit {
        usec_t interval;        /* 0: one second */
        usec_t last;            /* when one was last let through; 0: never */
        unsigned suppressed;    /* held back since */
} RateLimit;

/* True when the caller may log now; *suppressed (may be NULL) gets how many were held
 * back since the last one let through, and the count starts over. */
bool ratelimit_allow(RateLimit *rl, usec_t now, unsigned *suppressed);

/* log_full_errno() through rl: the line ends with " (N more like this suppressed)" when
 * some were held back. Returns -abs(error), logged or not. */
int log_ratelimited(RateLimit *rl, int level, int error, const char *format, ...)
        __attribute__((format(printf, 4, 5)));
