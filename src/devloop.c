/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "devloop.h"
#include "log.h"
#include "util.h"

struct DevLoop {
        sd_event *event;
        const DevLoopOps *ops;
        void *userdata;
        Watch *watch;
        bool restart_first;
        bool waiting;           /* a roll of ours is running: its outcome is still to be told */
        char *file;             /* what changed, for the outcome's line */
        usec_t started;
};

static usec_t now(const DevLoop *d) {
        uint64_t t = 0;

        (void) sd_event_now(d->event, CLOCK_MONOTONIC, &t);
        return t;
}

static void on_rolled(void *userdata, const char *error, bool restarting) {
        DevLoop *d = userdata;
        unsigned long long ms = (now(d) - d->started) / USEC_PER_MSEC;

        d->waiting = false;
        if (d->ops->stopping(d->userdata))
                return;
        if (!error)
                log_info("%s changed: reloaded in %llu ms", d->file, ms);
        else if (restarting)
                /* The roll back failed as well: the restart contract brings the previous
                 * version's workers back. */
                log_error("%s changed: %s; restarting the previous version", d->file, error);
        else
                /* The one line of a broken save: the roll's own lines went to debug
                 * (rollout.c), and the worker's own output, above, shows the error. */
                log_error("%s changed: %s; still serving the previous version", d->file, error);
}

/* One line names the last file of the burst: an editor's save is several events (a
 * temporary file, a rename), and the name the developer knows comes last. */
static void on_changed(void *userdata, const char *last, unsigned n) {
        DevLoop *d = userdata;
        int r;

        if (d->ops->stopping(d->userdata))
                return;
        free(d->file);
        d->file = strdup(last);
        if (!d->file)
                d->file = strdup("?");  /* small enough to be had when the path was not */
        d->started = now(d);

        if (d->restart_first) {
                log_info("%s changed: restarting %u workers", d->file, d->ops->workers(d->userdata));
                r = d->ops->restart_all(d->userdata);
                if (r < 0)
                        log_error_errno(r, "%s changed: cannot restart the workers: %m", d->file);
                return;
        }

        log_info("%s changed: rolling %u workers", d->file, d->ops->workers(d->userdata));
        /* A change during our own roll starts it over; its one waiter hears the outcome. */
        ReloadWaiter waiter = { .done = on_rolled, .userdata = d };
        r = d->ops->reload(d->userdata, d->waiting ? NULL : &waiter);
        if (r < 0) {
                log_error_errno(r, "%s changed: cannot start a reload: %m", d->file);
                return;
        }
        d->waiting = true;
}

int devloop_new(DevLoop **ret, sd_event *event, const WatchConfig *config, bool restart_first,
                const DevLoopOps *ops, void *userdata) {
        DevLoop *d = calloc(1, sizeof *d);
        const char *bad = NULL;
        int r;

        if (!d)
                return log_error_errno(-ENOMEM, "Out of memory");
        d->event = event;
        d->ops = ops;
        d->userdata = userdata;
        d->restart_first = restart_first;
        r = watch_new(&d->watch, event, config, on_changed, d, &bad);
        if (r < 0) {
                free(d);
                return log_error_errno(r, "--watch %s: cannot watch it: %m", bad ? bad : "");
        }
        log_info("watching %zu director%s for changes", watch_count(d->watch), watch_count(d->watch) == 1 ? "y" : "ies");
        *ret = d;
        return 0;
}

DevLoop *devloop_free(DevLoop *d) {
        if (!d)
                return NULL;
        /* A roll still running holds our waiter: forget it, the supervisor outlives us. */
        if (d->waiting)
                d->ops->forget_waiter(d->userdata, d);
        watch_free(d->watch);
        free(d->file);
        free(d);
        return NULL;
}
