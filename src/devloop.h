/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "watch.h"

/* The developer's loop, --watch: a change under a watched path replaces the workers.
 *
 * By default through a rolling restart, so that a save that does not run (a syntax
 * error, a crash at start) fails the roll and leaves the previous version serving; the
 * next save tries again. With --watch-restart (a server that cannot run beside its old
 * version: a port of its own, a lock file) the workers are stopped first, then started
 * anew. One line says what changed, one line how it went. */

#include "status.h"

typedef struct DevLoop DevLoop;

/* What the loop asks of the supervisor: a rolling restart (its outcome told to the waiter),
 * a restart of every slot, and whether it is stopping. Each returns -errno. */
typedef struct DevLoopOps {
        int (*reload)(void *userdata, const ReloadWaiter *waiter);     /* waiter may be NULL */
        void (*forget_waiter)(void *userdata, void *waiter_userdata);
        int (*restart_all)(void *userdata);
        unsigned (*workers)(void *userdata);
        bool (*stopping)(void *userdata);
} DevLoopOps;

int devloop_new(DevLoop **ret, sd_event *event, const WatchConfig *config, bool restart_first,
                const DevLoopOps *ops, void *userdata);
DevLoop *devloop_free(DevLoop *d);
