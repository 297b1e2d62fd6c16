/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "roll.h"

static bool needs_replacement(const RollView *v) {
        return !v->current && !v->has_next && (v->state == SLOT_RUNNING || v->state == SLOT_BACKOFF);
}

bool roll_plan(const RollView *v, unsigned n, unsigned max_surge, unsigned max_unavailable, RollMove *moves) {
        unsigned surging = 0, unavailable = 0;
        bool waiting = false;

        for (unsigned i = 0; i < n; i++) {
                surging += v[i].has_next;
                unavailable += v[i].unproven && !v[i].has_next;
                /* A worker of another generation on its way up: replaced once it runs. */
                waiting |= !v[i].current && v[i].state == SLOT_STARTING;
        }
        for (unsigned i = 0; i < n; i++) {
                moves[i] = ROLL_KEEP;
                if (!needs_replacement(&v[i]))
                        continue;
                waiting = true;
                if (v[i].state == SLOT_BACKOFF)
                        /* Serving nothing anyway: no allowance is spent on it. */
                        moves[i] = ROLL_START;
                else if (surging < max_surge) {
                        surging++;
                        moves[i] = ROLL_SURGE;
                } else if (unavailable < max_unavailable) {
                        unavailable++;
                        moves[i] = ROLL_IN_PLACE;
                }
        }
        return !waiting && surging == 0 && unavailable == 0;
}

int roll_add_waiter(Roll *roll, const ReloadWaiter *w) {
        ReloadWaiter *a = realloc(roll->waiters, (roll->n_waiters + 1) * sizeof *a);

        if (!a)
                return -ENOMEM;
        roll->waiters = a;
        roll->waiters[roll->n_waiters++] = *w;
        return 0;
}

void roll_forget_waiter(Roll *roll, void *userdata) {
        for (size_t i = 0; i < roll->n_waiters; i++)
                if (roll->waiters[i].userdata == userdata)
                        roll->waiters[i--] = roll->waiters[--roll->n_waiters];
}

void roll_end(Roll *roll, const char *error) {
        ReloadWaiter *waiters = roll->waiters;
        size_t n = roll->n_waiters;
        char *saved = roll->error;      /* error may be it */
        bool restarting = error && roll->rollback_failed;

        generation_unref(roll->target);
        *roll = (Roll) {};
        /* Waiters may start the next reload: the roll is reset before they are told. */
        for (size_t i = 0; i < n; i++)
                waiters[i].done(waiters[i].userdata, error, restarting);
        free(waiters);
        free(saved);
}
