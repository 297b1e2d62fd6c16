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

struct Supervisor;
typedef struct DevLoop DevLoop;

int devloop_new(DevLoop **ret, struct Supervisor *sup, const WatchConfig *config, bool restart_first);
DevLoop *devloop_free(DevLoop *d);
