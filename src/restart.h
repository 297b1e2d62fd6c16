/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "backoff.h"
#include "util.h"

/* The RESTART CONTRACT of bindonce(1) as one pure function: how a worker ended goes in,
 * what its slot does next comes out. No clock, no process: the unit tests walk each
 * clause. */

typedef enum RestartPolicy {
        RESTART_ALWAYS,
        RESTART_ON_FAILURE,
        RESTART_NO,
} RestartPolicy;

typedef struct RestartCounts {
        unsigned failures;              /* early deaths in a row: the backoff (clauses 1, 2) */
        unsigned self_failures;         /* self-inflicted early deaths in a row: the give-up (clause 5) */
} RestartCounts;

/* What is known of one death. */
typedef struct Death {
        int code, status;               /* siginfo si_code and si_status */
        usec_t lived;                   /* from start to death */
        bool exec_failed;               /* COMMAND could not be executed */
        bool failed;                    /* stopped by us for --start-timeout or the watchdog */
        bool requested;                 /* stopped by us for ctl restart (clause 7) */
        bool outside_allowed;           /* a kill from outside within the 10/s allowance */
} Death;

typedef enum RestartVerdict {
        RESTART_NOW,                    /* start again at once */
        RESTART_LATER,                  /* after backoff_delay(failures) */
        RESTART_NEVER,                  /* --restart says no: the slot ends */
} RestartVerdict;

/* Clauses 1, 2, 3 and 7: updates *counts and says when the slot starts again. */
RestartVerdict restart_decide(RestartPolicy policy, const Death *d, RestartCounts *counts);

/* Did the worker end itself, and early? (what counts toward the give-up) */
bool death_is_early(const Death *d);

/* Clause 5: every one of n slots (counts_of(ctx, i)) has `limit` or more self-inflicted
 * failures in a row. limit 0: never. */
typedef const RestartCounts *(*CountsOf)(const void *ctx, unsigned i);
bool give_up_reached(CountsOf counts_of, const void *ctx, unsigned n, unsigned limit);
