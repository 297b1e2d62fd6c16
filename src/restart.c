/* SPDX-License-Identifier: MIT */
#include "restart.h"

bool death_is_early(const Death *d) {
        return d->exec_failed || d->failed || d->lived < STABLE_RUN_USEC;
}

static bool policy_restarts(RestartPolicy policy, int code, int status) {
        switch (policy) {
        case RESTART_ALWAYS:
                return true;
        case RESTART_ON_FAILURE:
                return !death_is_clean(code, status);
        default:
                return false;
        }
}

RestartVerdict restart_decide(RestartPolicy policy, const Death *d, RestartCounts *counts) {
        bool self = d->exec_failed || d->failed || death_is_self_inflicted(d->code, d->status);

        if (d->requested) {
                /* Clause 7: ctl restart starts it again at once, whatever --restart says. */
                *counts = (RestartCounts) {};
                return RESTART_NOW;
        }
        if (!death_is_early(d))
                *counts = (RestartCounts) {};
        else if (self) {
                counts->failures++;
                counts->self_failures++;
        } else if (!d->outside_allowed)
                /* Outside kills past 10/s (an OOM-kill loop) back off like any early death. */
                counts->failures++;

        if (!policy_restarts(policy, d->code, d->status))
                return RESTART_NEVER;
        return counts->failures <= 1 ? RESTART_NOW : RESTART_LATER;
}

bool give_up_reached(CountsOf counts_of, const void *ctx, unsigned n, unsigned limit) {
        if (limit == 0 || n == 0)
                return false;
        for (unsigned i = 0; i < n; i++)
                if (counts_of(ctx, i)->self_failures < limit)
                        return false;
        return true;
}
