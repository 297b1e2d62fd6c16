/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "backoff.h"
#include "balance.h"
#include "listener.h"
#include "spawn.h"
#include "util.h"

/* Slots at most: each worker costs a pidfd and a few timers of bindonce's fds. */
#define WORKERS_MAX 4096

typedef enum RestartPolicy {
        RESTART_ALWAYS,
        RESTART_ON_FAILURE,
        RESTART_NO,
} RestartPolicy;

typedef enum ReadyMode {
        READY_EXEC,             /* ready once exec succeeded */
        READY_NOTIFY,           /* ready on READY=1 */
} ReadyMode;

typedef struct Worker Worker;
typedef struct Slot Slot;
typedef struct Supervisor Supervisor;
typedef struct ControlServer ControlServer;
typedef struct NotifyServer NotifyServer;

/* One process we started. While it is a slot's `worker` (or its `next`, the replacement a
 * reload is starting) it belongs to the slot; once replaced or dropped it is "retired":
 * stopped, never restarted. */
struct Worker {
        Supervisor *sup;
        Slot *slot;                     /* NULL once retired */
        unsigned index;                 /* the slot it was started for */
        pid_t pid;
        unsigned generation;            /* the reload it was started for */
        sd_event_source *child;         /* pidfd child source, owns the pidfd */
        sd_event_source *kill_timer;    /* SIGKILL after --stop-timeout */
        sd_event_source *start_timer;   /* --start-timeout, --ready notify only */
        sd_event_source *watchdog_timer;
        sd_event_source *stable_timer;  /* reuseport: ends its slot's crash-loop streak at 1 s */
        usec_t started;                 /* CLOCK_MONOTONIC */
        double started_realtime;        /* for status: seconds since the epoch */
        char *status;                   /* its last STATUS= */
        bool exec_failed;
        bool ready;
        bool stopping;                  /* SIGTERM (or SIGABRT) sent */
        const char *failed;             /* why we killed it: not ready in time, or watchdog; a failure of its own */
        bool roll_unavailable;          /* started by a reload in place of a stopped worker */
        Worker *next_retired;
};

/* A slot: BINDONCE_WORKER=index, kept by every replacement.
 *
 *   state \ event | its worker died          | backoff timer  | stop / scale down
 *   --------------+--------------------------+----------------+------------------
 *   RUNNING       | restart: RUNNING/WAITING | -              | STOPPING
 *                 | no restart: IDLE         |                |
 *                 | give-up: supervisor stop |                |
 *   WAITING       | -                        | spawn: RUNNING | IDLE
 *   STOPPING      | IDLE (removed if surplus)| -              | -
 *   IDLE          | -                        | -              | -
 *
 * A reload adds `next`: the replacement, started while `worker` still serves. When `next`
 * is ready it becomes `worker` and the old one is retired; if it dies first, the reload
 * fails and the old one stays. */
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
        Worker *next;
        sd_event_source *timer;         /* backoff */
        unsigned failures;              /* early deaths in a row: drives the backoff */
        unsigned self_failures;         /* self-inflicted early deaths in a row: give-up */
        KillWindow outside_kills;       /* early deaths from outside that restart at once */
        unsigned restarts;
        bool exited;                    /* last_* are set */
        int last_code, last_status;     /* siginfo of the last death */
        int *fds;                       /* --balance reuseport: this slot's sockets */
        sd_event_source *drain_timer;   /* scaled down: waits for its queue to empty */
        usec_t drain_started;
};

typedef struct SupervisorConfig {
        char **argv;
        const char *name;
        unsigned n_workers;
        RestartPolicy restart;
        usec_t stop_timeout;
        unsigned give_up;               /* 0: never */
        bool give_up_explicit;          /* --give-up was given */
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
} SupervisorConfig;

/* Told when a reload ends; `error` is NULL on success. */
typedef void (*ReloadDone)(void *userdata, const char *error);
typedef struct ReloadWaiter {
        ReloadDone done;
        void *userdata;
} ReloadWaiter;

typedef struct Roll {
        bool active;
        usec_t started;
        unsigned replaced;
        bool stepping, step_again;      /* roll_step() is not re-entered, it loops */
        ReloadWaiter *waiters;
        size_t n_waiters;
} Roll;

struct Supervisor {
        SupervisorConfig config;
        sd_event *event;
        Listener *listeners;
        size_t n_listeners;
        int *shared_fds;                /* the listeners' fds, what every slot gets in shared mode */
        bool migrate;                   /* net.ipv4.tcp_migrate_req, for reuseport scale-down */
        unsigned *steered;              /* reuseport: the slots new connections go to */
        unsigned n_steered;
        SpawnParams spawn;
        Slot **slots;                   /* n_slots allocated; 0..target-1 active */
        unsigned n_slots;
        unsigned target;
        Worker *retired;
        unsigned generation;
        Roll roll;
        bool stopping;
        bool notify;                    /* NOTIFY_SOCKET: tell systemd READY, STATUS, ... */
        sd_event_source *status_defer;  /* one STATUS= per loop iteration, however many events */
        bool ready_sent;
        int exit_code;
        unsigned total_restarts;
        NotifyServer *notify_server;
        ControlServer *control;
        sd_event_source *orphan_kill;   /* stopping: SIGKILL to orphans left after SIGTERM */
        int orphan_signal;              /* 0, then SIGTERM, then SIGKILL after --stop-timeout */
        pid_t dispatching;              /* the worker whose exit sd-event is dispatching */
        struct Stall *stall;            /* "no worker accepts" advice */
};

/* Takes the listeners (already open). Returns -errno, logged. */
int supervisor_new(Supervisor **ret, const SupervisorConfig *config, Listener *listeners, size_t n_listeners);

/* Starts the workers and runs the loop until bindonce stops; returns the exit code. */
int supervisor_run(Supervisor *sup);

Supervisor *supervisor_free(Supervisor *sup);

/* Steering, from signals and the control socket. */
void supervisor_stop(Supervisor *sup, int exit_code);
int supervisor_reload(Supervisor *sup, const ReloadWaiter *waiter);
void supervisor_forget_waiter(Supervisor *sup, void *userdata);
int supervisor_scale(Supervisor *sup, unsigned n);
int supervisor_restart_slot(Supervisor *sup, int slot);         /* -1: all */
int supervisor_signal_slot(Supervisor *sup, int sig, int slot); /* -1: all */

/* From the notify socket. */
Worker *supervisor_find_worker(Supervisor *sup, pid_t pid, bool group);
void worker_set_ready(Worker *w);
void worker_set_status(Worker *w, const char *status);
void worker_watchdog_ping(Worker *w);
void worker_watchdog_trigger(Worker *w);

const char *slot_state_name(const Slot *slot);
