/* SPDX-License-Identifier: MIT */
#include <signal.h>

#include "backoff.h"

usec_t backoff_delay(unsigned failures, uint32_t random) {
        usec_t d = BACKOFF_MAX_USEC;

        if (failures <= 1)
                return 0;
        /* Compare before shifting: the shift must not overflow for a slot failing for days. */
        if (failures - 2 < 16 && (BACKOFF_BASE_USEC << (failures - 2)) < BACKOFF_MAX_USEC)
                d = BACKOFF_BASE_USEC << (failures - 2);

        return d / 2 + (usec_t) random % (d / 2 + 1);
}

bool death_is_self_inflicted(int code, int status) {
        if (code == CLD_EXITED)
                return true;
        switch (status) {
        case SIGKILL:
        case SIGTERM:
        case SIGINT:
        case SIGHUP:
                return false;
        default:
                return true;
        }
}

bool death_is_clean(int code, int status) {
        if (code == CLD_EXITED)
                return status == 0;
        return status == SIGHUP || status == SIGINT || status == SIGTERM || status == SIGPIPE;
}

bool kill_window_allow(KillWindow *w, usec_t now) {
        if (w->count == 0 || now - w->start >= USEC_PER_SEC) {
                w->start = now;
                w->count = 0;
        }
        return ++w->count <= OUTSIDE_KILLS_PER_SEC;
}
