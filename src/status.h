/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "listener.h"

/* What the control socket needs from the supervisor, and nothing more: a snapshot to
 * format `ctl status` from, and the operations it may ask for. control.c includes this,
 * never the supervisor's internals. */

typedef struct SlotSnapshot {
        unsigned slot;
        pid_t pid;                      /* 0: none */
        pid_t next_pid;                 /* 0: none */
        const char *state;              /* slot_state_to_string() */
        bool ready;
        double since;                   /* its worker's start, seconds since the epoch */
        unsigned restarts;
        unsigned generation;
        bool exited;
        int last_code, last_status;
        const char *status;             /* the worker's last STATUS=, or NULL */
} SlotSnapshot;

typedef struct StatusSnapshot {
        const char *name;
        unsigned workers, ready, restarts, generation;
        bool reloading, stopping, crash_loop;
        const char *advice;             /* "no worker accepts on ADDR ...", or NULL (borrowed) */
        bool reuseport, migrate;
        SlotSnapshot *slots;            /* owned by the snapshot */
        size_t n_slots;
        const Listener *listeners;      /* borrowed */
        size_t n_listeners;
} StatusSnapshot;

/* Told when a reload ends; `error` is NULL on success. `restarting`: with an error, the
 * roll back to the previous version failed too, and its workers are restarted rather than
 * serving on. */
typedef void (*ReloadDone)(void *userdata, const char *error, bool restarting);
typedef struct ReloadWaiter {
        ReloadDone done;
        void *userdata;
} ReloadWaiter;

/* The supervisor's side, as the control socket sees it. Each returns -errno: -ESHUTDOWN
 * while stopping, -ENOENT for a slot that does not exist, -ERANGE for a bad count. */
typedef struct ControlOps {
        int (*snapshot)(void *userdata, StatusSnapshot *ret);
        unsigned (*workers)(void *userdata);
        int (*reload)(void *userdata, const ReloadWaiter *waiter);
        void (*forget_waiter)(void *userdata, void *client);
        int (*scale)(void *userdata, unsigned n);
        /* Whether n workers fit the fd limit; <0 with the reason in why. */
        int (*scale_check)(void *userdata, unsigned n, char *why, size_t size);
        int (*restart)(void *userdata, int slot);              /* -1: all */
        int (*signal)(void *userdata, int sig, int slot);      /* -1: all */
        void (*stop)(void *userdata);
        /* The client on fd follows the events from now on (it takes fd), or -EBUSY. */
        int (*follow)(void *userdata, int fd, bool json);
        /* Upgrade in place to exe (NULL: the path bindonce runs from). The waiter hears a
         * failure; success is answered by the new bindonce, on client_fd, which crosses the
         * exec. -EBUSY while a reload runs, -EALREADY while an upgrade is being checked. */
        int (*upgrade)(void *userdata, const char *exe, const ReloadWaiter *waiter, int client_fd);
} ControlOps;

void status_snapshot_done(StatusSnapshot *s);
