/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Scope-bound resources, as systemd does it: the variable owns the resource until it is
 * handed on visibly with TAKE_FD()/TAKE_PTR(). */
#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                /* Never retry close() on EINTR: the fd is gone either way on Linux. */
                (void) close(*fd);
                errno = saved;
        }
}

static inline void freep(void *p) {
        free(*(void **) p);
}

#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_free_ _cleanup_(freep)

#define TAKE_FD(fd) ({ int _fd_ = (fd); (fd) = -1; _fd_; })
#define TAKE_PTR(p) ({ __typeof__(p) _p_ = (p); (p) = NULL; _p_; })

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define _unused_ __attribute__((unused))
#define _noreturn_ __attribute__((noreturn))
/* Code that runs in a spawned child on a stack of its own (spawn.c): AddressSanitizer
 * knows neither the stack nor the clone, and its no-return bookkeeping there only warns. */
#define _no_asan_ __attribute__((no_sanitize_address))

typedef uint64_t usec_t;
#define USEC_PER_MSEC ((usec_t) 1000)
#define USEC_PER_SEC ((usec_t) 1000000)
#define USEC_INFINITY ((usec_t) UINT64_MAX)

static inline usec_t clock_usec(clockid_t clock) {
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

/* sysexits(3), the documented exit codes of bindonce(1). */
enum {
        EXIT_USAGE = 64,      /* EX_USAGE: bad command line */
        EXIT_GAVE_UP = 69,    /* EX_UNAVAILABLE: every worker crash-looping */
        EXIT_INTERNAL = 70,   /* EX_SOFTWARE */
        EXIT_OSERR = 71,      /* EX_OSERR: socket, bind, fork, event loop */
        EXIT_NOPERM = 77,     /* EX_NOPERM: privileged port, unwritable path */
        EXIT_CONFIG = 78,     /* EX_CONFIG: bad activation environment */
};

/* utf8_valid(): strict, in utf8.c. */
#include "utf8.h"

/* A whole decimal number in [min, max], digits only (no sign, no space): -EINVAL, -ERANGE. */
static inline int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *ret) {
        unsigned long v = 0;

        if (!*s)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                if (v > (ULONG_MAX - 9) / 10)
                        return -ERANGE;
                v = v * 10 + (unsigned long) (*p - '0');
        }
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}
