/* SPDX-License-Identifier: MIT */
#pragma once

/* The supervisor's own structures, shared by its three layers, each a file:
 *
 *   supervisor.c   setup, the loop, the follow-ups, stop, scale, the control operations
 *   rollout.c      the rolling restart: carries out roll_plan(), fails and rolls back
 *   pool.c         the slots: carries out the actions of the slot table, workers' exits
 *
 * A layer calls the ones below it, never those above: what pool.c needs from above
 * (a failed roll, a stop) it leaves in the struct, and the next follow-up does it. */

#include <stdbool.h>
#include <signal.h>

#include "control.h"
#include "events.h"
#include "notify.h"
#include "roll.h"
#include "supervisor.h"

/* The crash loop of a standalone bindonce is told again at most this often. */
#define CRASH_LOOP_LOG_USEC (60 * USEC_PER_SEC)

struct Supervisor {
        SupervisorConfig config;
        WorkerRules rules;
        sd_event *event;
        Listener *listeners;
        size_t n_listeners;
        int *shared_fds;                /* the listeners' fds, what every slot gets in shared mode */
        bool migrate;                   /* net.ipv4.tcp_migrate_req, for reuseport scale-down */
        unsigned *steered;              /* reuseport: the slots new connections go to */
        unsigned n_steered;
        SpawnParams spawn;              /* the template of every generation (its env unused) */
        char *fdnames;
        unsigned last_generation;
        Generation *good;               /* what slots start by themselves: the last generation rolled out */
        Slot **slots;                   /* n_slots allocated; 0..target-1 wanted */
        unsigned n_slots;
        unsigned target;
        Worker *retired;
        Roll roll;
        bool stopping;
        bool exit_logged;               /* "stopped" said; waiting for the workers' last lines */
        bool notify;                    /* NOTIFY_SOCKET: tell systemd READY, STATUS, ... */
        bool status_socket;             /* STATUS= updates have a socket */
        sd_event_source *followup;      /* once per loop turn: STATUS=, steering, roll, exit */
        bool ready_sent;
        int exit_code;
        unsigned total_restarts;
        bool crash_loop;                /* every slot failing, and no give-up: said loudly */
        usec_t crash_loop_logged;
        NotifyServer *notify_server;
        ControlServer *control;
        Events *events;                 /* `ctl events` followers */
        sd_event_source *orphan_kill;   /* stopping: SIGKILL to orphans left after SIGTERM */
        int orphan_signal;              /* 0, then SIGTERM, then SIGKILL after --stop-timeout */
        pid_t dispatching;              /* the worker whose exit sd-event is dispatching */
        /* What the slots ask of the layers above, done by the next follow-up: */
        char *roll_failure;             /* the first replacement that failed its roll */
        bool escape_scan;               /* a worker ended: look for escapes holding our sockets */
        int stop_request;               /* an exit status: give up (69), or an OS error (71) */
        unsigned fresh_from;            /* no fresh slot below this one */
        sd_event_source *fresh_start;   /* starts fresh slots, after every other pending event */
        struct Stall *stall;            /* "no worker accepts" advice */
        struct DevLoop *devloop;        /* --watch */
        struct Upgrade *upgrade;        /* an upgrade in place being checked (upgrade.c) */
        struct {
                sd_event_source *source;        /* watches the adopted workers, a batch a turn */
                unsigned cursor;                /* the slots before it are watched */
                bool warned;                    /* out of fds or memory for one, said once */
        } adopting;                     /* after an upgrade in place (upgrade_state.c) */
};

/* Fresh slots started per loop turn: each spawn costs a copy of bindonce's fd table (a
 * pidfd per worker), so 10,000 at once would hold the loop, and the control socket, for
 * a minute. */
#define FRESH_PER_TURN 16

/* Why a slot event happens, for the actions that need to know. */
typedef struct Cause {
        Worker *worker;                 /* EXIT, NEXT_EXIT: the worker that ended */
        const siginfo_t *si;
        Generation *gen;                /* SPAWN: which generation (NULL: the good one) */
        bool candidate;                 /* SPAWN: a roll's replacement */
        bool requested;                 /* STOP: ctl restart, start again at once */
} Cause;

/* pool.c */
void slot_dispatch(Supervisor *sup, Slot *slot, SlotEvent event, const Cause *cause);
int slot_new(Supervisor *sup, unsigned index, Slot **ret);
Slot *slot_free(Supervisor *sup, Slot *slot);
bool slot_wanted(const Supervisor *sup, const Slot *slot);
void supervisor_wake(Supervisor *sup);
GenerationTemplate generation_template(const Supervisor *sup);
unsigned live_workers(const Supervisor *sup);
unsigned ready_workers(const Supervisor *sup);
bool any_worker_ready(const Supervisor *sup);
Worker *find_worker(Supervisor *sup, pid_t pid, bool group);
void worker_retire(Supervisor *sup, Worker *w);
const RestartCounts *counts_of(const void *ctx, unsigned i);
unsigned crash_loop_threshold(const Supervisor *sup);
void status_line(const Supervisor *sup, char *buf, size_t size);
void notify_systemd(const Supervisor *sup, const char *extra);
const char *signal_name(int sig);
int supervisor_restart_slot(Supervisor *sup, int slot);        /* -1: all */

/* rollout.c */
int supervisor_reload(Supervisor *sup, const ReloadWaiter *waiter);
void roll_drive(Supervisor *sup);
void roll_fail(Supervisor *sup, const char *reason);
void roll_finish(Supervisor *sup, const char *error);

/* pool.c, for an upgrade in place (upgrade_state.c): the sources of what the previous
 * bindonce had armed. */
WorkerExitHandler pool_worker_exit_handler(void);
int pool_arm_backoff(Slot *slot, usec_t at);
int pool_arm_drain(Slot *slot);
