/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "generation.h"
#include "slot.h"
#include "util.h"

typedef enum ReadyMode {
        READY_EXEC,             /* ready once exec succeeded */
        READY_NOTIFY,           /* ready on READY=1 */
} ReadyMode;

/* The timeouts every worker is held to; one copy, owned by the supervisor. */
typedef struct WorkerRules {
        ReadyMode ready;
        usec_t stop_timeout;
        usec_t start_timeout;           /* --ready notify only */
        usec_t watchdog;                /* 0: off */
        usec_t min_ready;               /* a roll's replacement proves itself this long */
        int stop_signal;                /* --stop-signal */
        struct Events *events;          /* not owned: `ctl events` (the watchdog) */
} WorkerRules;

/* One process we started. While it is a slot's `worker` (or its `next`) it belongs to the
 * slot; once replaced or dropped it is retired: stopped, never started again. */
struct Worker {
        struct Supervisor *sup;         /* its owner, opaque here */
        sd_event *event;
        const WorkerRules *rules;
        Slot *slot;                     /* NULL once retired */
        unsigned index;                 /* the slot it was started for */
        pid_t pid;
        Generation *gen;                /* holds a reference */
        sd_event_source *child;         /* pidfd child source, owns the pidfd; NULL: adopted, not watched yet */
        uint64_t pidfd_id;              /* that pidfd's inode number (pidfs): the process's id for the boot; 0: none */
        int held_pidfd;                 /* adopted, not watched yet: the pidfd it was known by, or -1 */
        sd_event_source *kill_timer;    /* SIGKILL after --stop-timeout */
        sd_event_source *start_timer;   /* --start-timeout, --ready notify only */
        sd_event_source *watchdog_timer;
        sd_event_source *stable_timer;  /* ends its slot's crash-loop streak at 1 s */
        sd_event_source *proof_timer;   /* a roll's candidate: --min-ready after it is ready */
        sd_event_source *wake;          /* not owned: the supervisor's follow-ups */
        usec_t started;                 /* CLOCK_MONOTONIC */
        usec_t started_realtime;        /* CLOCK_REALTIME, for status */
        char *status;                   /* its last STATUS= */
        bool exec_failed;
        bool ready;
        bool stopping;                  /* SIGTERM (or SIGABRT) sent */
        bool candidate;                 /* started by a roll, not yet proven */
        bool proven;                    /* a candidate that was ready for --min-ready */
        bool requested;                 /* stopped for ctl restart */
        const char *failed;             /* why we killed it: a failure of its own */
        Worker *next_retired;
};

usec_t now_usec(void);

typedef int (*WorkerExitHandler)(sd_event_source *s, const siginfo_t *si, void *userdata);

/* Forks and executes a worker of generation gen for the slot, watched by on_exit. Returns
 * -errno when no process was created; -errno after killing and reaping it when it cannot
 * be watched. An exec failure is a worker with exec_failed set (it exits 126/127). */
int worker_start(Worker **ret, struct Supervisor *sup, sd_event *event, const WorkerRules *rules, Generation *gen, Slot *slot,
                 const int *fds, sd_event_source *wake, WorkerExitHandler on_exit, int *child_errno,
                 int *stage);

Worker *worker_free(Worker *w);

/* The whole process group, so that helpers behind a wrapper shell get it too. */
void worker_signal(Worker *w, int sig);
/* `sig` now (SIGTERM, or SIGABRT from the watchdog), SIGKILL after --stop-timeout. */
void worker_terminate(Worker *w, int sig);

/* Ready (READY=1, or exec with --ready exec): a candidate starts proving itself. */
void worker_mark_ready(Worker *w);
void worker_watchdog_ping(Worker *w);
void worker_watchdog_trigger(Worker *w);
void worker_set_status(Worker *w, const char *status);

/* "exited with status 3", "was killed by signal SEGV", or why we stopped it. */
void worker_death_text(const Worker *w, const siginfo_t *si, char *buf, size_t size);

/* Upgrade in place: the deadlines (absolute CLOCK_MONOTONIC, 0: none) of a worker the
 * previous bindonce started, and its adoption: its timers armed at those deadlines. The
 * caller fills the Worker itself, having made sure that the pid is still the process the
 * state names, our unreaped child (so that it cannot be reused meanwhile). Returns -errno. */
typedef struct WorkerDeadlines {
        usec_t kill, start, watchdog, stable, proof;
} WorkerDeadlines;
int worker_adopt(Worker *w, const WorkerDeadlines *d);
/* The worker's exit watched by on_exit: a child source on its pid (a worker we start gets it
 * at once; an adopted one, whose w->child is NULL until then, once the new bindonce has
 * answered), and the pidfd it held closed. -errno (out of fds or memory) may pass. */
int worker_watch(Worker *w, WorkerExitHandler on_exit);
