/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>

#include "control.h"
#include "exit_status.h"
#include "log.h"
#include "notify.h"
#include "orphans.h"
#include "roll.h"
#include "sdnotify.h"
#include "supervisor.h"

extern char **environ;

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
        sd_event_source *orphan_kill;   /* stopping: SIGKILL to orphans left after SIGTERM */
        int orphan_signal;              /* 0, then SIGTERM, then SIGKILL after --stop-timeout */
        pid_t dispatching;              /* the worker whose exit sd-event is dispatching */
};

/* Why a slot event happens, for the actions that need to know. */
typedef struct Cause {
        Worker *worker;                 /* EXIT, NEXT_EXIT: the worker that ended */
        const siginfo_t *si;
        Generation *gen;                /* SPAWN: which generation (NULL: the good one) */
        bool candidate;                 /* SPAWN: a roll's replacement */
        bool requested;                 /* STOP: ctl restart, start again at once */
} Cause;

static void slot_dispatch(Supervisor *sup, Slot *slot, SlotEvent event, const Cause *cause);
static void roll_fail(Supervisor *sup, const char *reason);
static void supervisor_stop(Supervisor *sup, int exit_code);

static const char *signal_name(int sig) {
        const char *n = sigabbrev_np(sig);
        return n ? n : "unknown";
}

static void wake(Supervisor *sup) {
        (void) sd_event_source_set_enabled(sup->followup, SD_EVENT_ONESHOT);
}

static bool wanted(const Supervisor *sup, const Slot *slot) {
        return slot->index < sup->target && !sup->stopping;
}

static unsigned live_workers(const Supervisor *sup) {
        unsigned n = 0;

        for (unsigned i = 0; i < sup->n_slots; i++)
                n += (sup->slots[i]->worker != NULL) + (sup->slots[i]->next != NULL);
        for (const Worker *w = sup->retired; w; w = w->next_retired)
                n++;
        return n;
}

/* Of the wanted slots: a slot draining after a scale-down is on its way out. */
static unsigned ready_workers(const Supervisor *sup) {
        unsigned n = 0;

        for (unsigned i = 0; i < sup->target && i < sup->n_slots; i++)
                n += sup->slots[i]->worker && sup->slots[i]->worker->ready;
        return n;
}

/* ---- systemd -------------------------------------------------------------------------- */

/* "4/4 workers up, 3 restarts, 127.0.0.1:8080": what `systemctl status` shows. */
static void status_line(const Supervisor *sup, char *buf, size_t size) {
        char addr[ADDRESS_FORMAT_MAX], more[32] = "";

        if (sup->n_listeners > 1)
                snprintf(more, sizeof more, " +%zu more", sup->n_listeners - 1);
        snprintf(buf, size, "STATUS=%u/%u workers up, %u restarts%s%s, %s%s",
                 ready_workers(sup), sup->target, sup->total_restarts,
                 sup->crash_loop ? ", every worker crash-looping" : "",
                 sup->roll.active ? ", reloading" : "",
                 sup->n_listeners && sup->listeners[0].address.size
                         ? address_format(&sup->listeners[0].address, addr) : "sockets from systemd",
                 more);
}

/* What must arrive (READY=1, STOPPING=1, ...) goes at once, with the current STATUS=, and
 * may wait. Plain status changes are a follow-up: one datagram per loop turn, sent without
 * waiting. */
static void notify_systemd(const Supervisor *sup, const char *extra) {
        char status[ADDRESS_FORMAT_MAX + 160];

        if (!sup->notify)
                return;
        status_line(sup, status, sizeof status);
        (void) sd_notifyf(0, "%s\n%s", extra, status);
}

/* ---- workers ------------------------------------------------------------------------ */

static void worker_retire(Supervisor *sup, Worker *w) {
        w->slot = NULL;
        w->next_retired = sup->retired;
        sup->retired = w;
        worker_terminate(w, SIGTERM);
}

static void retired_remove(Supervisor *sup, Worker *w) {
        for (Worker **p = &sup->retired; *p; p = &(*p)->next_retired)
                if (*p == w) {
                        *p = w->next_retired;
                        return;
                }
}

static Worker *find_by_pid(Supervisor *sup, pid_t pid) {
        for (unsigned i = 0; i < sup->n_slots; i++) {
                Worker *c[2] = { sup->slots[i]->worker, sup->slots[i]->next };
                for (size_t j = 0; j < 2; j++)
                        if (c[j] && c[j]->pid == pid)
                                return c[j];
        }
        for (Worker *w = sup->retired; w; w = w->next_retired)
                if (w->pid == pid)
                        return w;
        return NULL;
}

static Worker *find_worker(Supervisor *sup, pid_t pid, bool group) {
        Worker *w = find_by_pid(sup, pid);
        pid_t pgid;

        /* A worker's own pid is the common case (every watchdog ping): getpgid() only for
         * a helper process, whose group id is its worker's pid. */
        if (!w && group && (pgid = getpgid(pid)) > 0)
                w = find_by_pid(sup, pgid);
        return w;
}

static void log_death(const Worker *w, const siginfo_t *si, bool expected) {
        int level = expected ? LOG_INFO : LOG_WARNING;
        const char *who = w->slot ? (w->slot->next == w ? "new worker" : "worker") : "retired worker";

        if (si->si_code == CLD_EXITED)
                log_full_errno(level, 0, "%s %u (pid %d) exited with status %d",
                               who, w->index, (int) w->pid, si->si_status);
        else
                log_full_errno(level, 0, "%s %u (pid %d) killed by signal %s%s",
                               who, w->index, (int) w->pid, signal_name(si->si_status),
                               si->si_code == CLD_DUMPED ? " (core dumped)" : "");
}

/* "worker 2 (pid 4242) exited with status 1 0.2 s after it started, before it was ready":
 * why a replacement failed its roll. */
static void candidate_failure(const Worker *w, const siginfo_t *si, char *buf, size_t size) {
        char how[96];
        double lived = (double) (now_usec() - w->started) / USEC_PER_SEC;

        worker_death_text(w, si, how, sizeof how);
        if (!w->ready)
                snprintf(buf, size, "worker %u (pid %d) %s before it was ready (%.1f s after it started)",
                         w->index, (int) w->pid, how, lived);
        else
                snprintf(buf, size, "worker %u (pid %d) %s %.1f s after it started, before --min-ready %.1f s",
                         w->index, (int) w->pid, how, lived, (double) w->rules->min_ready / USEC_PER_SEC);
}

static bool is_failing_candidate(const Supervisor *sup, const Worker *w) {
        return sup->roll.active && w->candidate && !w->proven && w->gen == sup->roll.target;
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

/* ---- the slot actions ------------------------------------------------------------------ */

static int on_backoff_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* Waits out the backoff of clause 2 before the slot starts again. */
static void slot_backoff(Supervisor *sup, Slot *slot) {
        /* No random number for no delay: arc4random() costs a getrandom() call. */
        usec_t delay = backoff_delay(slot->counts.failures, arc4random());
        int r;

        log_info("worker %u restarting in %llu ms (%u early exits in a row)",
                 slot->index, (unsigned long long) (delay / USEC_PER_MSEC), slot->counts.failures);
        r = sd_event_add_time_relative(sup->event, &slot->timer, CLOCK_MONOTONIC, delay, USEC_PER_MSEC,
                                       on_backoff_timer, slot);
        if (r < 0) {
                log_error_errno(r, "worker %u: cannot arm the restart timer: %m", slot->index);
                slot_set_state(slot, SLOT_IDLE);
                supervisor_stop(sup, EXIT_OSERR);
                return;
        }
        slot_set_state(slot, SLOT_BACKOFF);
}

static void log_started(const Supervisor *sup, const Slot *slot, const Worker *w, int child_errno, int stage) {
        errno = child_errno;
        if (child_errno == 0)
                log_info("worker %u started, pid %d%s", slot->index, (int) w->pid, w->candidate ? " (reload)" : "");
        else if (stage == SPAWN_STAGE_EXEC)
                log_error_errno(child_errno, "worker %u: cannot execute '%s': %m", slot->index, sup->config.argv[0]);
        else
                log_error_errno(child_errno, "worker %u: cannot set up its process: %m", slot->index);
}

/* Starts a worker for the slot: as its worker (-> starting, running once ready at exec), or
 * as `next`, the replacement of a roll (-> replacing). */
static void slot_spawn(Supervisor *sup, Slot *slot, const Cause *c, bool as_next) {
        Generation *gen = c && c->gen ? c->gen : sup->good;
        int child_errno = 0, stage = 0, r;
        Worker *w = NULL;

        /* Once a stop has begun, nothing new is started. */
        if (sup->stopping) {
                if (!slot->worker)
                        slot_set_state(slot, SLOT_IDLE);
                return;
        }
        r = worker_start(&w, sup, sup->event, &sup->rules, gen, slot, slot->fds ? slot->fds : sup->shared_fds,
                         sup->followup, on_worker_exit, &child_errno, &stage);
        if (r < 0) {
                char reason[96];

                snprintf(reason, sizeof reason, "worker %u: cannot start a process: %s", slot->index, strerror(-r));
                if (as_next || (c && c->candidate)) {
                        /* Said once, by the reload's failure line. */
                        if (!slot->worker)
                                slot_backoff(sup, slot);
                        roll_fail(sup, reason);
                        return;
                }
                log_error("%s", reason);
                slot->counts.failures++;
                slot_backoff(sup, slot);
                return;
        }
        w->candidate = c && c->candidate;
        if (as_next) {
                slot->next = w;
                slot_set_state(slot, SLOT_REPLACING);
        } else {
                slot->worker = w;
                slot_set_state(slot, SLOT_STARTING);
        }
        log_started(sup, slot, w, child_errno, stage);
        if (!w->exec_failed && sup->config.ready == READY_EXEC) {
                if (as_next)
                        worker_mark_ready(w);
                else
                        slot_dispatch(sup, slot, SLOT_EV_READY, NULL);
        }
}

static int on_backoff_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Slot *slot = userdata;

        slot_dispatch(slot->sup, slot, SLOT_EV_TIMER, NULL);
        return 0;
}

static const RestartCounts *counts_of(const void *ctx, unsigned i) {
        return &((const Supervisor *) ctx)->slots[i]->counts;
}

/* Clause 5. Standalone (bindonce bound the sockets, and they close with it) giving up would
 * turn a crash loop into refused connections: unless --give-up was given, it is reported
 * loudly instead while connections queue. Under a socket unit or with the fd store the
 * sockets outlive bindonce, and giving up lets the service manager decide. */
static bool give_up_or_report(Supervisor *sup, const siginfo_t *si) {
        const SupervisorConfig *cfg = &sup->config;
        unsigned report_at = cfg->give_up ? cfg->give_up : 5;
        bool may_give_up = cfg->give_up_explicit || cfg->sockets_kept;
        usec_t now = now_usec();

        if (may_give_up && give_up_reached(counts_of, sup, sup->target, cfg->give_up)) {
                log_error("giving up: every worker failed %u times in a row within %llu s of starting "
                          "(last: %s %d); fix the command, or raise --give-up (0 never gives up)",
                          cfg->give_up, (unsigned long long) (STABLE_RUN_USEC / USEC_PER_SEC),
                          si->si_code == CLD_EXITED ? "exit status" : "signal", si->si_status);
                supervisor_stop(sup, EXIT_GAVE_UP);
                return true;
        }
        if (!give_up_reached(counts_of, sup, sup->target, report_at))
                return false;
        if (!sup->crash_loop || now - sup->crash_loop_logged >= CRASH_LOOP_LOG_USEC) {
                log_error("every worker is crash-looping (%u or more early failures in a row, last: %s %d, "
                          "%u restarts so far); the sockets stay open and connections queue until a worker "
                          "serves: fix the command%s", report_at,
                          si->si_code == CLD_EXITED ? "exit status" : "signal", si->si_status, sup->total_restarts,
                          may_give_up ? "" : " (standalone, bindonce gives up only with an explicit --give-up N)");
                sup->crash_loop_logged = now;
        }
        sup->crash_loop = true;
        return false;
}

static void record_exit(Slot *slot, const siginfo_t *si) {
        slot->exited = true;
        slot->last_code = si->si_code;
        slot->last_status = si->si_status;
}

static void slot_restart(Supervisor *sup, Slot *slot, RestartVerdict v) {
        slot->restarts++;
        sup->total_restarts++;
        if (v == RESTART_NOW)
                slot_spawn(sup, slot, NULL, false);
        else
                slot_backoff(sup, slot);
}

/* Its worker died: the restart contract says what comes next. A roll's replacement that
 * fails is no failure of the slot: the roll fails, and the slot gets a worker of the last
 * good generation at once. */
static void action_decide(Supervisor *sup, Slot *slot, const Cause *c) {
        Worker *w = c->worker;
        const siginfo_t *si = c->si;
        Death d = {
                .code = si->si_code,
                .status = si->si_status,
                .lived = now_usec() - w->started,
                .exec_failed = w->exec_failed,
                .failed = w->failed != NULL,
        };
        bool failing_candidate = is_failing_candidate(sup, w), rolling_back = sup->roll.rolling_back;
        char reason[256];

        if (failing_candidate)
                candidate_failure(w, si, reason, sizeof reason);
        d.outside_allowed = !d.exec_failed && !d.failed && !death_is_self_inflicted(d.code, d.status) &&
                            death_is_early(&d) && kill_window_allow(&slot->outside_kills, now_usec());
        slot->worker = NULL;
        record_exit(slot, si);
        worker_free(w);
        /* Without a worker until decided: a stop that comes meanwhile (giving up) finds
         * nothing to stop. */
        slot_set_state(slot, SLOT_IDLE);
        if (!wanted(sup, slot))
                return;
        if (failing_candidate) {
                roll_fail(sup, reason);
                if (!rolling_back) {
                        slot_spawn(sup, slot, NULL, false);
                        return;
                }
        }
        RestartVerdict v = restart_decide(sup->config.restart, &d, &slot->counts);
        if (v == RESTART_NEVER) {
                sup->exit_code = exit_status_from_death(si->si_code, si->si_status);
                return;
        }
        if (death_is_early(&d) && give_up_or_report(sup, si))
                return;
        slot_restart(sup, slot, v);
}

/* Its worker ended after we told it to stop: still wanted (ctl restart, or scaled back up
 * meanwhile), it starts again at once with a clean count (clause 7); else it rests. */
static void action_stopped(Supervisor *sup, Slot *slot, const Cause *c) {
        slot->worker = NULL;
        record_exit(slot, c->si);
        worker_free(c->worker);
        slot_set_state(slot, SLOT_IDLE);
        if (!wanted(sup, slot))
                return;
        slot->counts = (RestartCounts) {};
        slot_restart(sup, slot, RESTART_NOW);
}

static void action_terminate(Supervisor *sup, Slot *slot, const Cause *c) {
        if (slot->next) {
                worker_retire(sup, slot->next);
                slot->next = NULL;
        }
        slot->worker->requested = c && c->requested;
        worker_terminate(slot->worker, SIGTERM);
        slot_set_state(slot, SLOT_STOPPING);
}

static int on_drain_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* A surplus slot of a reuseport group gets no new connections (steered away), but its
 * worker serves what is already queued on its socket: closing a reuseport socket resets its
 * queue, unless the kernel migrates it. */
static void action_drain(Supervisor *sup, Slot *slot) {
        if (!slot->fds || sup->migrate ||
            sd_event_add_time_relative(sup->event, &slot->drain_timer, CLOCK_MONOTONIC, 20 * USEC_PER_MSEC,
                                       USEC_PER_MSEC, on_drain_timer, slot) < 0) {
                action_terminate(sup, slot, NULL);
                return;
        }
        slot->drain_started = now_usec();
        slot_set_state(slot, SLOT_DRAINING);
}

/* A roll's replacement took over (it is ready and stayed up --min-ready): the old worker
 * drains and goes. */
static void action_take_over(Supervisor *sup, Slot *slot) {
        Worker *old = slot->worker;

        slot->worker = slot->next;
        slot->next = NULL;
        slot->worker->candidate = false;
        worker_retire(sup, old);
        sup->roll.replaced++;
        slot_set_state(slot, SLOT_RUNNING);
}

/* The old worker died while its replacement proves itself: the replacement serves at once
 * (it still has to prove itself for the roll). */
static void action_promote(Supervisor *sup, Slot *slot, const Cause *c) {
        record_exit(slot, c->si);
        worker_free(c->worker);
        slot->worker = slot->next;
        slot->next = NULL;
        slot_set_state(slot, slot->worker->ready ? SLOT_RUNNING : SLOT_STARTING);
}

static void action_retire_spawn(Supervisor *sup, Slot *slot, const Cause *c) {
        Worker *old = slot->worker;

        slot->worker = NULL;
        if (old)
                worker_retire(sup, old);
        slot_spawn(sup, slot, c, false);
}

static void action_ready(Supervisor *sup, Slot *slot) {
        Worker *w = slot->worker;

        worker_mark_ready(w);
        if (sup->config.ready == READY_NOTIFY)
                log_info("worker %u (pid %d) is ready", w->index, (int) w->pid);
        slot_set_state(slot, SLOT_RUNNING);
}

/* The one entry to a slot's state machine: the table names the action, the action does it
 * and sets the state. */
static void slot_dispatch(Supervisor *sup, Slot *slot, SlotEvent event, const Cause *c) {
        SlotTransition t = slot_transition(slot->state, event);

        switch (t.action) {
        case SLOT_A_NONE:
                log_debug("slot %u: event %s ignored in state %s", slot->index, slot_event_to_string(event),
                          slot_state_to_string(slot->state));
                return;
        case SLOT_A_SPAWN:
                slot_spawn(sup, slot, c, false);
                return;
        case SLOT_A_READY:
                action_ready(sup, slot);
                return;
        case SLOT_A_DECIDE:
                action_decide(sup, slot, c);
                return;
        case SLOT_A_TERMINATE:
                action_terminate(sup, slot, c);
                return;
        case SLOT_A_DRAIN:
                action_drain(sup, slot);
                return;
        case SLOT_A_SPAWN_NEXT:
                slot_spawn(sup, slot, c, true);
                return;
        case SLOT_A_RETIRE_SPAWN:
                action_retire_spawn(sup, slot, c);
                return;
        case SLOT_A_TAKE_OVER:
                action_take_over(sup, slot);
                return;
        case SLOT_A_PROMOTE:
                action_promote(sup, slot, c);
                return;
        case SLOT_A_STOPPED:
                action_stopped(sup, slot, c);
                return;
        case SLOT_A_DROP_NEXT:
                worker_retire(sup, slot->next);
                slot->next = NULL;
                break;
        case SLOT_A_NEXT_GONE:
                slot->next = NULL;
                break;
        case SLOT_A_UNDRAIN:
        case SLOT_A_CANCEL:
        case _SLOT_ACTION_MAX:
                break;
        }
        slot_set_state(slot, (SlotState) t.next);
}

static int on_drain_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Slot *slot = userdata;
        Supervisor *sup = slot->sup;
        unsigned queued = 0, len, max;

        for (size_t j = 0; slot->fds && j < sup->n_listeners; j++)
                if (slot->fds[j] != sup->shared_fds[j] && listen_queue(slot->fds[j], &len, &max))
                        queued += len;
        if (queued > 0 && now_usec() - slot->drain_started < sup->config.stop_timeout) {
                (void) sd_event_source_set_time_relative(s, 20 * USEC_PER_MSEC);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                return 0;
        }
        if (queued > 0)
                log_warning("worker %u: %u connections still queued after %.1f s of draining; stopping it anyway",
                            slot->index, queued, (double) sup->config.stop_timeout / USEC_PER_SEC);
        slot_dispatch(sup, slot, SLOT_EV_STOP, NULL);
        return 0;
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Worker *w = userdata;
        Supervisor *sup = w->sup;
        Slot *slot = w->slot;
        Cause c = { .worker = w, .si = si };
        char reason[256];

        sup->dispatching = w->pid;
        /* A replacement failing its roll is told once, by the reload's failure line. */
        if (!is_failing_candidate(sup, w))
                log_death(w, si, (w->stopping && !w->failed) || w->exec_failed ||
                                         (si->si_code == CLD_EXITED && si->si_status == 0));
        /* Whatever is left of its process group would keep serving our sockets behind our
         * back. The pid is still a zombie of ours here, so the group id cannot be reused. */
        (void) kill(-w->pid, SIGKILL);

        if (!slot) {
                retired_remove(sup, w);
                worker_free(w);
                wake(sup);
        } else if (slot->next == w) {
                bool failing = is_failing_candidate(sup, w);

                candidate_failure(w, si, reason, sizeof reason);
                worker_free(w);
                slot_dispatch(sup, slot, SLOT_EV_NEXT_EXIT, &c);
                if (failing)
                        roll_fail(sup, reason);
        } else
                slot_dispatch(sup, slot, SLOT_EV_EXIT, &c);
        sup->dispatching = 0;
        return 0;
}

/* ---- the rolling restart ------------------------------------------------------------------ */

static void roll_finish(Supervisor *sup, const char *error) {
        Roll *roll = &sup->roll;

        if (error)
                log_error("reload failed: %s", error);
        else {
                log_info("reload complete: %u workers replaced in %llu ms", roll->replaced,
                         (unsigned long long) ((now_usec() - roll->started) / USEC_PER_MSEC));
                /* The new generation is what slots start by themselves from now on. */
                generation_unref(sup->good);
                sup->good = generation_ref(roll->target);
        }
        roll_end(roll, error);
        /* The end of a reload, for systemd; not while stopping, nor before the first READY=1. */
        if (sup->ready_sent && !sup->stopping)
                notify_systemd(sup, "READY=1");
        wake(sup);
}

/* Drops the roll's replacements that did not prove themselves: those next to a worker
 * are stopped; one in the place of a stopped worker makes way for a worker of `back`
 * (NULL: it stays, no longer a candidate). */
static void roll_drop_candidates(Supervisor *sup, Generation *back) {
        for (unsigned i = 0; i < sup->n_slots; i++) {
                Slot *slot = sup->slots[i];
                Worker *w = slot->worker;

                if (slot->next)
                        slot_dispatch(sup, slot, SLOT_EV_DROP_NEXT, NULL);
                if (!w || !w->candidate || w->proven)
                        continue;
                if (back && wanted(sup, slot)) {
                        Cause c = { .gen = back };
                        slot_dispatch(sup, slot, SLOT_EV_REPLACE_IN_PLACE, &c);
                } else
                        w->candidate = false;
        }
}

/* A replacement failed before it proved itself: no further old worker is retired, the
 * failed new ones go, and the slots already handed to the new generation get the last
 * good one back, by the same roll in reverse. The waiting clients hear the reason once
 * that is done. A failure while rolling back ends it there: the restart contract takes
 * over. */
static void roll_fail(Supervisor *sup, const char *reason) {
        Roll *roll = &sup->roll;
        char *error;

        if (!roll->active)
                return;
        if (roll->rolling_back) {
                if (asprintf(&error, "%s; rolling back to generation %u failed too: %s",
                             roll->error ? roll->error : "?", sup->good->id, reason) < 0)
                        error = NULL;
                roll_finish(sup, error ? error : reason);
                free(error);
                return;
        }
        log_warning("reload: %s; rolling back to generation %u", reason, sup->good->id);
        free(roll->error);
        roll->error = strdup(reason);
        roll->rolling_back = true;
        generation_unref(roll->target);
        roll->target = generation_ref(sup->good);
        roll_drop_candidates(sup, sup->good);
        wake(sup);
}

static void roll_move(Supervisor *sup, Slot *slot, RollMove move) {
        Cause c = { .gen = sup->roll.target, .candidate = true };

        switch (move) {
        case ROLL_SURGE:
                slot_dispatch(sup, slot, SLOT_EV_REPLACE, &c);
                break;
        case ROLL_IN_PLACE:
                slot_dispatch(sup, slot, SLOT_EV_REPLACE_IN_PLACE, &c);
                break;
        case ROLL_START:
                slot_dispatch(sup, slot, SLOT_EV_START, &c);
                break;
        case ROLL_KEEP:
                break;
        }
}

/* A follow-up: takes the proven replacements, then starts as many new ones as --max-surge
 * and --max-unavailable allow, and ends the roll when nothing is left to replace. */
static void roll_drive(Supervisor *sup) {
        Roll *roll = &sup->roll;
        unsigned n = sup->target;
        _cleanup_free_ RollView *views = NULL;
        _cleanup_free_ RollMove *moves = NULL;

        if (!roll->active || sup->stopping)
                return;
        for (unsigned i = 0; i < n; i++) {
                Slot *slot = sup->slots[i];

                if (slot->next && slot->next->proven)
                        slot_dispatch(sup, slot, SLOT_EV_NEXT_PROVEN, NULL);
                if (slot->worker && slot->worker->candidate && slot->worker->proven) {
                        slot->worker->candidate = false;
                        roll->replaced++;
                }
        }
        views = calloc(n ? n : 1, sizeof *views);
        moves = calloc(n ? n : 1, sizeof *moves);
        if (!views || !moves) {
                roll_fail(sup, "out of memory");
                return;
        }
        for (unsigned i = 0; i < n; i++) {
                const Slot *slot = sup->slots[i];
                const Worker *w = slot->worker;

                views[i] = (RollView) {
                        .state = slot->state,
                        .current = w && w->gen == roll->target,
                        .unproven = w && w->candidate,
                        .has_next = slot->next != NULL,
                };
        }
        if (roll_plan(views, n, sup->config.max_surge, sup->config.max_unavailable, moves)) {
                roll_finish(sup, roll->error);
                return;
        }
        for (unsigned i = 0; i < n && roll->active; i++)
                roll_move(sup, sup->slots[i], moves[i]);
}

static int supervisor_reload(Supervisor *sup, const ReloadWaiter *waiter) {
        Roll *roll = &sup->roll;
        GenerationTemplate t = {
                .spawn = &sup->spawn,
                .base_env = environ,
                .setenv = sup->config.setenv,
                .n_setenv = sup->config.n_setenv,
                .fdnames = sup->fdnames,
                .notify_socket = notify_server_address(sup->notify_server),
                .watchdog_usec = sup->config.watchdog,
        };
        Generation *gen;
        int r;

        if (sup->stopping)
                return -ESHUTDOWN;
        r = generation_new(&gen, sup->last_generation + 1, &t);
        if (r < 0)
                return r;
        if (waiter && roll_add_waiter(roll, waiter) < 0) {
                generation_unref(gen);
                return -ENOMEM;
        }
        sup->last_generation++;
        if (roll->active) {
                /* Start over: what the last request started may already be outdated. */
                log_info("reload requested during a reload: starting over");
                roll_drop_candidates(sup, NULL);
                generation_unref(roll->target);
                free(roll->error);
                roll->error = NULL;
                roll->rolling_back = false;
        } else {
                roll->active = true;
                roll->started = now_usec();
                roll->replaced = 0;
        }
        roll->target = gen;
        log_info("reload: rolling %u workers to generation %u (max surge %u, max unavailable %u)",
                 sup->target, gen->id, sup->config.max_surge, sup->config.max_unavailable);
        if (sup->notify)
                (void) sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long) now_usec());
        wake(sup);
        return 0;
}

/* ---- follow-ups: once per loop turn, however many events came -------------------------- */

static void supervisor_steer(Supervisor *sup) {
        unsigned n = 0;

        if (sup->config.balance != BALANCE_REUSEPORT || sup->target == 0)
                return;
        unsigned *set = realloc(sup->steered, sup->target * sizeof *set);
        if (!set)
                return;
        /* Compare against the set in force before it is overwritten below. */
        unsigned old_n = sup->n_steered;
        unsigned want[sup->target];

        /* A slot in a crash-loop streak (two early deaths in a row or more) is left out even
         * while its worker looks ready: one ready at exec may be about to die again, with
         * the connections it was given. */
        for (unsigned i = 0; i < sup->target; i++)
                if (sup->slots[i]->worker && sup->slots[i]->worker->ready && sup->slots[i]->counts.failures < 2)
                        want[n++] = i;
        if (n == 0)
                for (; n < sup->target; n++)
                        want[n] = n;

        sup->steered = set;
        if (n == old_n && memcmp(set, want, n * sizeof *want) == 0)
                return;
        memcpy(set, want, n * sizeof *want);
        sup->n_steered = n;

        for (size_t j = 0; j < sup->n_listeners; j++)
                if (balance_supported(&sup->listeners[j])) {
                        int r = balance_steer(sup->listeners[j].fd, set, n);
                        if (r < 0)
                                log_warning_errno(r, "Cannot steer connections among the sockets of %s: %m",
                                                  sup->listeners[j].name);
                }
}

/* Surplus slots (scaled down) are freed once idle, from the top: a socket leaving a
 * reuseport group puts the group's last socket in its place, so only the last may go. */
static Slot *slot_free(Supervisor *sup, Slot *slot);
static void supervisor_trim_slots(Supervisor *sup) {
        while (sup->n_slots > sup->target && sup->slots[sup->n_slots - 1]->state == SLOT_IDLE) {
                sup->n_slots--;
                sup->slots[sup->n_slots] = slot_free(sup, sup->slots[sup->n_slots]);
        }
}

static void supervisor_check_ready(Supervisor *sup) {
        if (sup->ready_sent || sup->stopping)
                return;
        for (unsigned i = 0; i < sup->target; i++)
                if (!sup->slots[i]->worker || !sup->slots[i]->worker->ready)
                        return;
        sup->ready_sent = true;
        log_info("all %u workers ready", sup->target);
        notify_systemd(sup, "READY=1");
}

static void supervisor_maybe_exit(Supervisor *sup);

static int on_followup(sd_event_source *s, void *userdata) {
        Supervisor *sup = userdata;
        char status[ADDRESS_FORMAT_MAX + 160];

        supervisor_trim_slots(sup);
        supervisor_steer(sup);
        roll_drive(sup);
        supervisor_check_ready(sup);
        if (sup->crash_loop && !give_up_reached(counts_of, sup, sup->target,
                                                sup->config.give_up ? sup->config.give_up : 5)) {
                sup->crash_loop = false;
                log_notice("the crash loop is over: a worker ran for %llu s",
                           (unsigned long long) (STABLE_RUN_USEC / USEC_PER_SEC));
        }
        if (sup->status_socket) {
                status_line(sup, status, sizeof status);
                /* Dropped when systemd's queue is full: the next update says it all anyway. */
                (void) sdnotify_send_nowait(status);
        }
        /* Every slot can rest only when stopping, or when --restart lets workers end. */
        if (sup->stopping || sup->config.restart != RESTART_ALWAYS)
                supervisor_maybe_exit(sup);
        return 0;
}

/* ---- stop, and what escaped the workers ------------------------------------------------- */

static unsigned orphans_sweep(Supervisor *sup, int sig) {
        unsigned workers = live_workers(sup), left = 0;
        pid_t stack_pids[256], *pids = stack_pids;
        size_t room = ELEMENTSOF(stack_pids);
        int n = children_list(pids, room);

        /* The common case costs one read: every child is a worker. */
        if (n <= 0 || (unsigned) n <= workers)
                return 0;
        /* children_list() counts them all but fills only `room`: read again until they fit
         * (more orphans may arrive between two reads). */
        while (n > 0 && (size_t) n > room) {
                pid_t *p = realloc(pids == stack_pids ? NULL : pids, ((size_t) n + 64) * sizeof *pids);

                if (!p) {
                        n = 0;
                        break;
                }
                pids = p;
                room = (size_t) n + 64;
                n = children_list(pids, room);
        }
        for (int i = 0; i < n; i++) {
                siginfo_t si = {};

                /* The worker whose exit is being dispatched is sd-event's to reap. */
                if (pids[i] == sup->dispatching || find_worker(sup, pids[i], false))
                        continue;
                if (waitid(P_PID, (id_t) pids[i], &si, WEXITED | WNOHANG) < 0)
                        continue;       /* no longer our child: not ours to signal */
                if (si.si_pid == pids[i]) {
                        log_debug("reaped pid %d, left behind by a worker", (int) pids[i]);
                        continue;
                }
                /* Our child, alive and unreaped: its pid cannot have been reused. */
                left++;
                if (sig)
                        (void) kill(pids[i], sig);
        }
        if (pids != stack_pids)
                free(pids);
        return left;
}
static int on_orphan_kill(sd_event_source *s, uint64_t usec, void *userdata) {
        Supervisor *sup = userdata;
        unsigned n = orphans_sweep(sup, SIGKILL);

        if (n > 0)
                log_warning("%u processes left behind by workers did not stop within %.1f s, sent SIGKILL",
                            n, (double) sup->config.stop_timeout / USEC_PER_SEC);
        sup->orphan_signal = SIGKILL;
        supervisor_maybe_exit(sup);
        return 0;
}
static int on_sigchld(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Supervisor *sup = userdata;

        (void) orphans_sweep(sup, 0);
        if (sup->stopping || sup->orphan_signal)
                supervisor_maybe_exit(sup);
        return 0;
}

static void supervisor_maybe_exit(Supervisor *sup) {
        for (unsigned i = 0; i < sup->n_slots; i++)
                if (sup->slots[i]->state != SLOT_IDLE)
                        return;
        if (sup->retired)
                return;
        /* However bindonce ends (stopped, or no worker left to restart), nothing of ours may
         * outlive it: not even what escaped a worker's group, holding the sockets. Each
         * sweep signals again, for orphans of orphans reparented meanwhile. */
        if (orphans_sweep(sup, sup->orphan_signal ? sup->orphan_signal : SIGTERM) > 0) {
                /* From here on nothing is restarted: bindonce is on its way out. */
                sup->stopping = true;
                if (!sup->orphan_signal) {
                        sup->orphan_signal = SIGTERM;
                        log_info("stopping processes left behind by workers");
                        if (sd_event_add_time_relative(sup->event, &sup->orphan_kill, CLOCK_MONOTONIC,
                                                       sup->config.stop_timeout, 10 * USEC_PER_MSEC,
                                                       on_orphan_kill, sup) < 0)
                                (void) orphans_sweep(sup, SIGKILL);
                }
                return;
        }
        if (sup->stopping)
                log_info("stopped");
        (void) sd_event_exit(sup->event, sup->exit_code);
}

/* No more waiting: every process of ours, workers, replacements, retired workers and
 * what escaped them, gets SIGKILL. */
static void supervisor_kill_all(Supervisor *sup) {
        for (unsigned i = 0; i < sup->n_slots; i++) {
                if (sup->slots[i]->worker)
                        worker_signal(sup->slots[i]->worker, SIGKILL);
                if (sup->slots[i]->next)
                        worker_signal(sup->slots[i]->next, SIGKILL);
        }
        for (Worker *w = sup->retired; w; w = w->next_retired)
                worker_signal(w, SIGKILL);
        (void) orphans_sweep(sup, SIGKILL);
        sup->orphan_signal = SIGKILL;
}

static void supervisor_stop(Supervisor *sup, int exit_code) {
        if (sup->stopping) {
                log_warning("stop requested again, sending SIGKILL to %u workers", live_workers(sup));
                supervisor_kill_all(sup);
                return;
        }
        sup->stopping = true;
        sup->exit_code = exit_code;
        log_info("stopping %u workers", live_workers(sup));
        if (sup->roll.active)
                roll_finish(sup, "bindonce is stopping");
        notify_systemd(sup, "STOPPING=1");

        for (unsigned i = 0; i < sup->n_slots; i++)
                slot_dispatch(sup, sup->slots[i], SLOT_EV_STOP, NULL);
        for (Worker *w = sup->retired; w; w = w->next_retired)
                worker_terminate(w, SIGTERM);
        wake(sup);
}

/* ---- scale, restart, signal ------------------------------------------------------------ */

static Slot *slot_free(Supervisor *sup, Slot *slot) {
        if (!slot)
                return NULL;
        sd_event_source_disable_unref(slot->timer);
        sd_event_source_disable_unref(slot->drain_timer);
        worker_free(slot->worker);
        worker_free(slot->next);
        for (size_t j = 0; slot->fds && j < sup->n_listeners; j++)
                if (slot->fds[j] != sup->shared_fds[j])
                        (void) close(slot->fds[j]);
        free(slot->fds);
        free(slot);
        return NULL;
}
static int slot_new(Supervisor *sup, unsigned index, Slot **ret) {
        Slot *slot = calloc(1, sizeof *slot);

        if (!slot)
                return -ENOMEM;
        *slot = (Slot) { .sup = sup, .index = index, .wake = sup->followup };
        if (sup->config.balance == BALANCE_REUSEPORT) {
                slot->fds = calloc(sup->n_listeners ? sup->n_listeners : 1, sizeof *slot->fds);
                if (!slot->fds) {
                        free(slot);
                        return -ENOMEM;
                }
                for (size_t j = 0; j < sup->n_listeners; j++) {
                        const Listener *l = &sup->listeners[j];
                        int fd;

                        /* Slot 0 has the socket bound at start: the group's first member. */
                        if (index == 0 || !balance_supported(l)) {
                                slot->fds[j] = sup->shared_fds[j];
                                continue;
                        }
                        fd = balance_open_sibling(l, sup->config.backlog);
                        if (fd < 0) {
                                int r = fd;
                                for (size_t k = j; k < sup->n_listeners; k++)
                                        slot->fds[k] = sup->shared_fds[k];
                                slot_free(sup, slot);
                                return r;
                        }
                        slot->fds[j] = fd;
                }
        }
        *ret = slot;
        return 0;
}

static int scale_add_slots(Supervisor *sup, unsigned n) {
        Slot **s;
        int r;

        if (n <= sup->n_slots)
                return 0;
        s = realloc(sup->slots, n * sizeof *s);
        if (!s)
                return -ENOMEM;
        sup->slots = s;
        for (unsigned i = sup->n_slots; i < n; i++) {
                r = slot_new(sup, i, &s[i]);
                if (r < 0) {
                        /* Nothing half-applied: the slots added so far go again. */
                        supervisor_trim_slots(sup);
                        return log_error_errno(r, "Cannot add worker slot %u: %m", i);
                }
                sup->n_slots = i + 1;
        }
        return 0;
}

static int supervisor_scale(Supervisor *sup, unsigned n) {
        unsigned old = sup->target;
        int r;

        if (n < 1 || n > WORKERS_MAX)
                return -ERANGE;
        if (sup->stopping)
                return -ESHUTDOWN;
        r = scale_add_slots(sup, n);
        if (r < 0)
                return r;
        sup->target = n;
        log_info("scaling from %u to %u workers", old, n);
        supervisor_steer(sup);
        /* Surplus slots stop gracefully, the highest first; those coming back before their
         * drain ended keep their worker; new slots start (one still stopping from an earlier
         * scale-down starts again when its worker is gone). */
        for (unsigned i = sup->n_slots; i-- > n;)
                slot_dispatch(sup, sup->slots[i], SLOT_EV_DRAIN, NULL);
        for (unsigned i = 0; i < n; i++)
                if (sup->slots[i]->state == SLOT_DRAINING || sup->slots[i]->state == SLOT_IDLE)
                        slot_dispatch(sup, sup->slots[i], SLOT_EV_START, NULL);
        wake(sup);
        return 0;
}

static int slot_range(Supervisor *sup, int slot, unsigned *from, unsigned *to) {
        if (slot < 0) {
                *from = 0;
                *to = sup->target;
                return 0;
        }
        if ((unsigned) slot >= sup->target)
                return -ENOENT;
        *from = (unsigned) slot;
        *to = (unsigned) slot + 1;
        return 0;
}

static int supervisor_restart_slot(Supervisor *sup, int slot) {
        unsigned from, to;
        int r;

        if (sup->stopping)
                return -ESHUTDOWN;
        r = slot_range(sup, slot, &from, &to);
        if (r < 0)
                return r;
        for (unsigned i = from; i < to; i++) {
                Slot *s = sup->slots[i];
                Cause c = { .requested = true };

                if (s->worker && s->state != SLOT_STOPPING) {
                        log_info("worker %u (pid %d): restart requested", i, (int) s->worker->pid);
                        slot_dispatch(sup, s, SLOT_EV_STOP, &c);
                } else if (s->state == SLOT_BACKOFF || s->state == SLOT_IDLE) {
                        /* Waiting out a backoff, or ended under --restart no|on-failure. */
                        s->counts = (RestartCounts) {};
                        slot_dispatch(sup, s, SLOT_EV_START, NULL);
                }
        }
        return 0;
}

static int supervisor_signal_slot(Supervisor *sup, int sig, int slot) {
        unsigned from, to;
        int r = slot_range(sup, slot, &from, &to);

        if (r < 0)
                return r;
        for (unsigned i = from; i < to; i++)
                if (sup->slots[i]->worker)
                        worker_signal(sup->slots[i]->worker, sig);
        return 0;
}

/* ---- what the control socket and the notify socket see --------------------------------- */

static int op_snapshot(void *userdata, StatusSnapshot *ret) {
        Supervisor *sup = userdata;
        SlotSnapshot *slots = calloc(sup->n_slots ? sup->n_slots : 1, sizeof *slots);

        if (!slots)
                return -ENOMEM;
        for (unsigned i = 0; i < sup->n_slots; i++) {
                const Slot *slot = sup->slots[i];
                const Worker *w = slot->worker;

                slots[i] = (SlotSnapshot) {
                        .slot = i,
                        .pid = w ? w->pid : 0,
                        .next_pid = slot->next ? slot->next->pid : 0,
                        .state = slot_state_to_string(slot->state),
                        .ready = w && w->ready,
                        .since = w ? w->started_realtime : 0,
                        .restarts = slot->restarts,
                        .generation = w ? w->gen->id : 0,
                        .exited = slot->exited,
                        .last_code = slot->last_code,
                        .last_status = slot->last_status,
                        .status = w ? w->status : NULL,
                };
        }
        *ret = (StatusSnapshot) {
                .name = sup->config.name,
                .workers = sup->target,
                .ready = ready_workers(sup),
                .restarts = sup->total_restarts,
                .generation = sup->good->id,
                .reloading = sup->roll.active,
                .stopping = sup->stopping,
                .crash_loop = sup->crash_loop,
                .reuseport = sup->config.balance == BALANCE_REUSEPORT,
                .migrate = sup->migrate,
                .slots = slots,
                .n_slots = sup->n_slots,
                .listeners = sup->listeners,
                .n_listeners = sup->n_listeners,
        };
        return 0;
}

static unsigned op_workers(void *userdata) {
        return ((Supervisor *) userdata)->target;
}

static int op_reload(void *userdata, const ReloadWaiter *waiter) {
        return supervisor_reload(userdata, waiter);
}

static void op_forget_waiter(void *userdata, void *client) {
        roll_forget_waiter(&((Supervisor *) userdata)->roll, client);
}

static int op_scale(void *userdata, unsigned n) {
        return supervisor_scale(userdata, n);
}

static int op_restart(void *userdata, int slot) {
        return supervisor_restart_slot(userdata, slot);
}

static int op_signal(void *userdata, int sig, int slot) {
        return supervisor_signal_slot(userdata, sig, slot);
}

static void op_stop(void *userdata) {
        supervisor_stop(userdata, EXIT_SUCCESS);
}

static const ControlOps control_ops = {
        .snapshot = op_snapshot,
        .workers = op_workers,
        .reload = op_reload,
        .forget_waiter = op_forget_waiter,
        .scale = op_scale,
        .restart = op_restart,
        .signal = op_signal,
        .stop = op_stop,
};

/* READY=1 of a slot's worker is a slot event; of a replacement, the start of its proof. */
static void worker_ready(Supervisor *sup, Worker *w) {
        if (w->ready || w->stopping || !w->slot)
                return;
        if (w->slot->worker == w) {
                slot_dispatch(sup, w->slot, SLOT_EV_READY, NULL);
                return;
        }
        worker_mark_ready(w);
        log_info("worker %u (pid %d) is ready", w->index, (int) w->pid);
        wake(sup);
}

static void on_notify_message(void *userdata, pid_t sender, const NotifyMessage *m) {
        Supervisor *sup = userdata;
        Worker *w = find_worker(sup, sender, sup->config.notify_access_all);

        if (!w) {
                log_debug("notify message from pid %d, which is not a worker: ignored", (int) sender);
                return;
        }
        if (m->ready)
                worker_ready(sup, w);
        if (m->has_status)
                worker_set_status(w, m->status);
        if (m->stopping)
                log_info("worker %u (pid %d) is stopping", w->index, (int) w->pid);
        if (m->watchdog_ping)
                worker_watchdog_ping(w);
        if (m->watchdog_trigger && !w->stopping) {
                log_warning("worker %u (pid %d) triggered its watchdog", w->index, (int) w->pid);
                worker_watchdog_trigger(w);
        }
}

/* ---- the loop ---------------------------------------------------------------------------- */

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Supervisor *sup = userdata;

        switch (si->ssi_signo) {
        case SIGHUP:
                log_info("SIGHUP: rolling restart of every worker");
                (void) supervisor_reload(sup, NULL);
                break;
        case SIGTTIN:
                (void) supervisor_scale(sup, sup->target + 1);
                break;
        case SIGTTOU:
                if (sup->target > 1)
                        (void) supervisor_scale(sup, sup->target - 1);
                break;
        default:
                log_info("SIG%s received", signal_name((int) si->ssi_signo));
                supervisor_stop(sup, EXIT_SUCCESS);
        }
        return 0;
}
static char *join_names(const Listener *l, size_t n) {
        size_t size = 1;
        char *s, *p;

        for (size_t i = 0; i < n; i++)
                size += strlen(l[i].name) + 1;
        p = s = malloc(size);
        if (!s)
                return NULL;
        *p = '\0';
        for (size_t i = 0; i < n; i++)
                p = stpcpy(stpcpy(p, i ? ":" : ""), l[i].name);
        return s;
}

static int setup_events(Supervisor *sup) {
        static const int signals[] = { SIGTERM, SIGINT, SIGHUP, SIGTTIN, SIGTTOU };
        int r;

        r = sd_event_default(&sup->event);
        if (r < 0)
                return r;
        /* Answers WatchdogSec= when systemd asks for it; a no-op otherwise. */
        (void) sd_event_set_watchdog(sup->event, true);
        r = sd_event_add_defer(sup->event, &sup->followup, on_followup, sup);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(sup->followup, SD_EVENT_OFF);
        if (sup->notify) {
                r = sdnotify_open();
                if (r < 0)
                        log_warning_errno(r, "Cannot connect to NOTIFY_SOCKET for status updates: %m");
                sup->status_socket = r > 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(signals); i++) {
                r = sd_event_add_signal(sup->event, NULL, signals[i], on_signal, sup);
                if (r < 0)
                        return r;
        }
        /* Orphans come to us as a subreaper (or as PID 1); they are reaped on SIGCHLD.
         * Without /proc (CONFIG_PROC_CHILDREN), stopping still reaches every worker's
         * process group; only setsid escapes would go unseen. */
        (void) prctl(PR_SET_CHILD_SUBREAPER, 1);
        r = children_list_open();
        if (r < 0)
                log_warning_errno(r, "Cannot read our children from /proc: escaped processes are not tracked: %m");
        return sd_event_add_signal(sup->event, NULL, SIGCHLD, on_sigchld, sup);
}

static void setup_balance(Supervisor *sup) {
        size_t grouped = 0;

        if (sup->config.balance != BALANCE_REUSEPORT)
                return;
        for (size_t j = 0; j < sup->n_listeners; j++)
                grouped += balance_supported(&sup->listeners[j]);
        sup->migrate = balance_migrate_enabled();
        log_info("balance reuseport: a socket per worker for %zu of %zu addresses; "
                 "net.ipv4.tcp_migrate_req is %s, so a slot scaled down %s",
                 grouped, sup->n_listeners, sup->migrate ? "on" : "off",
                 sup->migrate ? "hands its queue to the others" : "drains its queue before it closes");
        if (grouped < sup->n_listeners)
                log_notice("unix sockets, and sockets passed without ReusePort=yes, stay shared by all workers");
        supervisor_steer(sup);
}

/* The spawn template and generation 0, what the first workers run. */
static int setup_spawn(Supervisor *sup) {
        const SupervisorConfig *cfg = &sup->config;
        GenerationTemplate t = {
                .spawn = &sup->spawn,
                .base_env = environ,
                .setenv = cfg->setenv,
                .n_setenv = cfg->n_setenv,
                .notify_socket = notify_server_address(sup->notify_server),
                .watchdog_usec = cfg->watchdog,
        };

        sup->shared_fds = calloc(sup->n_listeners ? sup->n_listeners : 1, sizeof *sup->shared_fds);
        sup->fdnames = join_names(sup->listeners, sup->n_listeners);
        if (!sup->shared_fds || !sup->fdnames)
                return -ENOMEM;
        for (size_t i = 0; i < sup->n_listeners; i++)
                sup->shared_fds[i] = sup->listeners[i].fd;
        sup->spawn.n_fds = sup->n_listeners;
        sup->spawn.argv = cfg->argv;
        spawn_signals_init(&sup->spawn);
        spawn_nofile_init(&sup->spawn);
        sup->spawn.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (sup->spawn.devnull < 0)
                return -errno;
        t.fdnames = sup->fdnames;
        return generation_new(&sup->good, 0, &t);
}

int supervisor_new(Supervisor **ret, const SupervisorConfig *config, Listener *listeners, size_t n_listeners) {
        Supervisor *sup;
        int r;

        sup = calloc(1, sizeof *sup);
        if (!sup)
                return log_error_errno(-ENOMEM, "Out of memory");
        sup->config = *config;
        sup->rules = (WorkerRules) {
                .ready = config->ready,
                .stop_timeout = config->stop_timeout,
                .start_timeout = config->start_timeout,
                .watchdog = config->watchdog,
                .min_ready = config->min_ready,
        };
        sup->listeners = listeners;
        sup->n_listeners = n_listeners;
        sup->spawn.devnull = -1;
        sup->notify = getenv("NOTIFY_SOCKET") != NULL;

        r = setup_events(sup);
        if (r >= 0)
                r = notify_server_new(&sup->notify_server, sup->event, on_notify_message, sup);
        if (r >= 0)
                r = setup_spawn(sup);
        if (r >= 0)
                r = scale_add_slots(sup, config->n_workers);
        if (r < 0) {
                supervisor_free(sup);
                return log_error_errno(r, "Cannot set up the supervisor: %m");
        }
        sup->target = config->n_workers;
        setup_balance(sup);

        r = control_server_new(&sup->control, sup->event, config->name, config->control_path, &control_ops, sup);
        if (r < 0) {
                supervisor_free(sup);
                return r; /* logged */
        }
        *ret = sup;
        return 0;
}

int supervisor_run(Supervisor *sup) {
        int r;

        for (unsigned i = 0; i < sup->target; i++)
                slot_dispatch(sup, sup->slots[i], SLOT_EV_START, NULL);

        r = sd_event_loop(sup->event);
        if (r < 0) {
                log_error_errno(r, "Event loop failed: %m; killing the workers");
                supervisor_kill_all(sup);
                return EXIT_OSERR;
        }
        return r;
}

Supervisor *supervisor_free(Supervisor *sup) {
        if (!sup)
                return NULL;

        control_server_free(sup->control);
        notify_server_free(sup->notify_server);
        children_list_close();
        sd_event_source_disable_unref(sup->followup);
        sdnotify_close();
        sd_event_source_disable_unref(sup->orphan_kill);
        for (unsigned i = sup->n_slots; sup->slots && i-- > 0;)
                slot_free(sup, sup->slots[i]);
        while (sup->retired) {
                Worker *w = sup->retired;
                sup->retired = w->next_retired;
                worker_free(w);
        }
        generation_unref(sup->roll.target);
        free(sup->roll.error);
        free(sup->roll.waiters);
        generation_unref(sup->good);
        free(sup->steered);
        free(sup->slots);
        free(sup->fdnames);
        free(sup->shared_fds);
        closep(&sup->spawn.devnull);
        sd_event_unref(sup->event);
        free(sup);
        return NULL;
}
