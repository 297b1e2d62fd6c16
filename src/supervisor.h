/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include "balance.h"
#include "listener.h"
#include "restart.h"
#include "slot.h"
#include "util.h"
#include "watch.h"
#include "worker.h"

typedef struct Supervisor Supervisor;

typedef struct SupervisorConfig {
        char **argv;
        const char *name;
        unsigned n_workers;
        RestartPolicy restart;
        usec_t stop_timeout;
        unsigned give_up;               /* 0: never */
        bool give_up_explicit;          /* --give-up was given */
        bool sockets_kept;              /* the sockets outlive bindonce: a socket unit, or the fd store */
        char **setenv;
        size_t n_setenv;
        ReadyMode ready;
        usec_t start_timeout;
        bool notify_access_all;
        unsigned max_surge, max_unavailable;
        usec_t watchdog;                /* 0: off */
        usec_t min_ready;               /* --min-ready: a replacement must stay up this long */
        const char *control_path;       /* NULL: the default, "": none */
        Balance balance;
        int backlog;                    /* for the sockets of new slots */
        int stop_signal;                /* --stop-signal: stop, reload, scale-down, restart */
        WorkerSetup worker_setup;       /* --user, --group, --chdir, --umask, output */
        const WatchConfig *watch;       /* --watch: NULL, or the paths to watch */
        bool watch_restart;             /* --watch-restart: stop the workers first */
        const struct UpgradeState *resume; /* an upgrade in place: what the previous bindonce left */
} SupervisorConfig;

/* Takes the listeners (already open). Returns -errno, logged. */
int supervisor_new(Supervisor **ret, const SupervisorConfig *config, Listener *listeners, size_t n_listeners);

/* Starts the workers and runs the loop until bindonce stops; returns the exit code. */
int supervisor_run(Supervisor *sup);

Supervisor *supervisor_free(Supervisor *sup);
