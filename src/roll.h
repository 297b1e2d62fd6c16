/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "generation.h"
#include "slot.h"
#include "status.h"

/* The rolling restart (bindonce(1) ROLLING RESTART): which slot gets its replacement next,
 * as a pure plan over what the slots look like, and the clients waiting for the outcome.
 * The supervisor carries the plan out as slot events. */

typedef struct RollView {
        SlotState state;
        bool current;                   /* its worker is of the roll's generation */
        bool unproven;                  /* its worker is a candidate that did not prove itself yet */
        bool has_next;                  /* a replacement is proving itself next to it */
} RollView;

typedef enum RollMove {
        ROLL_KEEP,                      /* nothing now */
        ROLL_SURGE,                     /* start the replacement next to the worker */
        ROLL_IN_PLACE,                  /* stop the worker, start the replacement in its place */
        ROLL_START,                     /* no worker (backoff): start the replacement at once */
} RollMove;

/* Fills moves[0..n) within --max-surge and --max-unavailable; true when nothing is left
 * to replace or to prove. Slots starting a worker of another generation are waited for. */
bool roll_plan(const RollView *v, unsigned n, unsigned max_surge, unsigned max_unavailable, RollMove *moves);

typedef struct Roll {
        bool active;
        bool rolling_back;              /* a replacement failed: back to the last good generation */
        bool rollback_failed;           /* and a worker of that failed too: the restart contract takes over */
        usec_t started;
        unsigned replaced;
        Generation *target;             /* what the roll starts (a reference) */
        char *error;                    /* why it failed, told once the rollback is done */
        ReloadWaiter *waiters;
        size_t n_waiters;
} Roll;

int roll_add_waiter(Roll *roll, const ReloadWaiter *w);
void roll_forget_waiter(Roll *roll, void *userdata);
/* Ends the roll: every waiter is told `error` (NULL: success) and whether the roll back
 * failed, the roll is reset. */
void roll_end(Roll *roll, const char *error);
