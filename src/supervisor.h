/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "listener.h"
#include "spawn.h"
#include "util.h"

typedef enum RestartPolicy {
        RESTART_ALWAYS,
        RESTART_ON_FAILURE,
        RESTART_NO,
} RestartPolicy;

typedef struct Worker Worker;
typedef struct Slot Slot;
typedef struct Supervisor Supervisor;

/* One process we started. It belongs to a slot while it is the slot's current worker; a
 * worker replaced by a reload is "retired": it is stopped and never restarted. */
struct Worker {
        Supervisor *sup;
        Slot *slot;             /* NULL once retired */
        unsigned index;         /* the slot it was started for */
        pid_t pid;
        sd_event_source *child; /* pidfd child source, owns the pidfd */
        sd_event_source *kill_timer; /* SIGKILL after --stop-timeout */
        usec_t started;
        bool exec_failed;
        bool stopping;          /* SIGTERM sent */
        Worker *next_retired;
};

/* A slot: BINDONCE_WORKER=index, kept by every replacement.
 *
 *   state \ event | worker died              | backoff timer | stop
 *   --------------+--------------------------+---------------+-----------------
 *   RUNNING       | restart? WAITING/RUNNING | -             | STOPPING (TERM)
 *                 |   : IDLE; give-up check  |               |
 *   WAITING       | -                        | spawn: RUNNING| IDLE
 *   STOPPING      | IDLE                     | -             | -
 *   IDLE          | -                        | -             | -
 */
typedef enum SlotState {
        SLOT_IDLE,
        SLOT_WAITING,
        SLOT_RUNNING,
        SLOT_STOPPING,
} SlotState;

struct Slot {
        Supervisor *sup;
        unsigned index;
        SlotState state;
        Worker *worker;
        sd_event_source *timer;         /* backoff */
        unsigned failures;              /* early deaths in a row: drives the backoff */
        unsigned self_failures;         /* self-inflicted early deaths in a row: give-up */
        unsigned restarts;
        int last_code, last_status;     /* siginfo of the last death */
};

typedef struct SupervisorConfig {
        char **argv;
        const char *name;
        unsigned n_workers;
        RestartPolicy restart;
        usec_t stop_timeout;
        unsigned give_up;               /* 0: never */
        char **setenv;
        size_t n_setenv;
} SupervisorConfig;

struct Supervisor {
        SupervisorConfig config;
        sd_event *event;
        Listener *listeners;
        size_t n_listeners;
        SpawnParams spawn;
        Slot *slots;
        Worker *retired;
        bool stopping;
        bool notify;                    /* NOTIFY_SOCKET: tell systemd READY, STATUS, ... */
        int exit_code;
        unsigned total_restarts;
};

/* Takes the listeners (already open). Returns -errno, logged. */
int supervisor_new(Supervisor **ret, const SupervisorConfig *config, Listener *listeners, size_t n_listeners);

/* Starts the workers and runs the loop until bindonce stops; returns the exit code. */
int supervisor_run(Supervisor *sup);

Supervisor *supervisor_free(Supervisor *sup);
