/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "orphans.h"
#include "output.h"
#include "sdnotify.h"
#include "devloop.h"
#include "escapes.h"
#include "fdbudget.h"
#include "signals.h"
#include "stall.h"
#include "supervisor-internal.h"
#include "upgrade.h"

extern char **environ;

static void supervisor_stop(Supervisor *sup, int exit_code);

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
static void supervisor_trim_slots(Supervisor *sup) {
        while (sup->n_slots > sup->target && sup->slots[sup->n_slots - 1]->state == SLOT_IDLE) {
                sup->n_slots--;
                sup->slots[sup->n_slots] = slot_free(sup, sup->slots[sup->n_slots]);
        }
}

/* Runs after every loop turn until all are ready: from the top, because slots start in
 * index order, so during a start the first slot looked at is one not started yet. From the
 * bottom, a start of n workers looked at n^2/2 slots. */
static void supervisor_check_ready(Supervisor *sup) {
        if (sup->ready_sent || sup->stopping)
                return;
        for (unsigned i = sup->target; i-- > 0;)
                if (!sup->slots[i]->worker || !sup->slots[i]->worker->ready)
                        return;
        sup->ready_sent = true;
        log_info("all %u workers ready", sup->target);
        notify_systemd(sup, "READY=1");
}

static void supervisor_maybe_exit(Supervisor *sup);

static void mark_fresh(Supervisor *sup, Slot *slot) {
        slot->fresh = true;
        if (slot->index < sup->fresh_from)
                sup->fresh_from = slot->index;
        (void) sd_event_source_set_enabled(sup->fresh_start, SD_EVENT_ONESHOT);
}

/* Starts up to FRESH_PER_TURN fresh slots, then yields: the source has the idle priority,
 * so that the control socket, exits and notifications are served between two batches. */
static int on_fresh_start(sd_event_source *s, void *userdata) {
        Supervisor *sup = userdata;
        unsigned started = 0;

        while (sup->fresh_from < sup->target && !sup->stopping) {
                Slot *slot = sup->slots[sup->fresh_from];

                if (slot->fresh) {
                        if (started++ == FRESH_PER_TURN) {
                                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                                return 0;
                        }
                        slot->fresh = false;
                        if (slot->state == SLOT_IDLE)
                                slot_dispatch(sup, slot, SLOT_EV_START, NULL);
                }
                sup->fresh_from++;
        }
        return 0;
}

static int on_followup(sd_event_source *s, void *userdata) {
        Supervisor *sup = userdata;
        char status[2 * ADDRESS_FORMAT_MAX + 256];

        /* What the slots asked for: a stop first, which ends any roll. */
        if (sup->stop_request) {
                int code = sup->stop_request;

                sup->stop_request = 0;
                supervisor_stop(sup, code);
        }
        if (sup->escape_scan) {
                /* A worker ended: what left its process group may still hold our sockets,
                 * and a queue that stood still meanwhile says nothing of the others. */
                sup->escape_scan = false;
                escapes_schedule(sup);
                stall_worker_ended(sup->stall);
        }
        if (sup->roll_failure) {
                _cleanup_free_ char *reason = TAKE_PTR(sup->roll_failure);

                roll_fail(sup, reason);
        }
        supervisor_trim_slots(sup);
        supervisor_steer(sup);
        roll_drive(sup);
        supervisor_check_ready(sup);
        if (any_worker_ready(sup))
                stall_worker_ready(sup->stall);
        if (sup->crash_loop && !give_up_reached(counts_of, sup, sup->target, crash_loop_threshold(sup))) {
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

static int pid_compare(const void *a, const void *b) {
        pid_t x = *(const pid_t *) a, y = *(const pid_t *) b;

        return (x > y) - (x < y);
}

/* The pids of every worker, sorted: a sweep over n children costs n log n, not n x slots
 * (a thousand workers and one other child, as during an upgrade's check). NULL: no memory. */
static pid_t *worker_pids_sorted(Supervisor *sup, size_t *ret_n) {
        size_t n = 0, room = 2 * (size_t) sup->n_slots + 1;
        pid_t *pids;

        for (Worker *w = sup->retired; w; w = w->next_retired)
                room++;
        pids = malloc(room * sizeof *pids);
        if (!pids)
                return NULL;
        for (unsigned i = 0; i < sup->n_slots; i++) {
                if (sup->slots[i]->worker)
                        pids[n++] = sup->slots[i]->worker->pid;
                if (sup->slots[i]->next)
                        pids[n++] = sup->slots[i]->next->pid;
        }
        for (Worker *w = sup->retired; w; w = w->next_retired)
                pids[n++] = w->pid;
        qsort(pids, n, sizeof *pids, pid_compare);
        *ret_n = n;
        return pids;
}

static unsigned orphans_sweep(Supervisor *sup, int sig) {
        _cleanup_free_ pid_t *workers_sorted = NULL;
        size_t n_workers = 0;
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
        workers_sorted = worker_pids_sorted(sup, &n_workers);
        for (int i = 0; i < n; i++) {
                siginfo_t si = {};
                bool worker = workers_sorted ? bsearch(&pids[i], workers_sorted, n_workers, sizeof *workers_sorted,
                                                       pid_compare) != NULL
                                             : find_worker(sup, pids[i], false) != NULL;

                /* The worker whose exit is being dispatched is sd-event's to reap. */
                if (pids[i] == sup->dispatching || worker || upgrade_owns_pid(sup, pids[i]))
                        continue;
                if (waitid(P_PID, (id_t) pids[i], &si, WEXITED | WNOHANG) < 0)
                        continue;       /* no longer our child: not ours to signal */
                if (si.si_pid == pids[i]) {
                        orphans_inherited_forget(pids[i]);
                        log_debug("reaped pid %d, left behind by a worker", (int) pids[i]);
                        continue;
                }
                if (orphans_inherited(pids[i]))
                        continue;       /* our child from before any worker: not ours to stop */
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

static void orphans_reap(void *userdata) {
        (void) orphans_sweep(userdata, 0);
}

static int on_sigchld(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Supervisor *sup = userdata;

        orphans_sweep_throttled(sup->event, orphans_reap, sup);   /* O(children): not per SIGCHLD */
        if (sup->stopping || sup->orphan_signal)
                supervisor_maybe_exit(sup);
        return 0;
}

static void supervisor_exit(void *userdata) {
        Supervisor *sup = userdata;

        (void) sd_event_exit(sup->event, sup->exit_code);
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
        if (sup->stopping && !sup->exit_logged) {
                sup->exit_logged = true;
                log_info("stopped");
        }
        /* The workers' last lines go out before we do (bounded: see worker_output_drain()). */
        if (worker_output_drain(sup->config.worker_setup.output, supervisor_exit, sup) == 0)
                supervisor_exit(sup);
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
        events_emit(sup->events, &(Event) { .kind = EVENT_STOPPING, .slot = -1 });
        if (sup->roll.active)
                roll_finish(sup, "bindonce is stopping");
        upgrade_cancel(sup, "bindonce is stopping");
        notify_systemd(sup, "STOPPING=1");

        for (unsigned i = 0; i < sup->n_slots; i++)
                slot_dispatch(sup, sup->slots[i], SLOT_EV_STOP, NULL);
        for (Worker *w = sup->retired; w; w = w->next_retired)
                worker_terminate(w, sup->config.stop_signal);
        supervisor_wake(sup);
}

/* ---- scale, restart, signal ------------------------------------------------------------ */

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
        events_emit(sup->events, &(Event) { .kind = EVENT_SCALE, .slot = -1, .n = old, .m = n });
        supervisor_steer(sup);
        /* Surplus slots stop gracefully, the highest first; those coming back before their
         * drain ended keep their worker; new slots start (one still stopping from an earlier
         * scale-down starts again when its worker is gone). */
        for (unsigned i = sup->n_slots; i-- > n;)
                slot_dispatch(sup, sup->slots[i], SLOT_EV_DRAIN, NULL);
        for (unsigned i = 0; i < n; i++)
                if (sup->slots[i]->state == SLOT_DRAINING)
                        slot_dispatch(sup, sup->slots[i], SLOT_EV_START, NULL);
                else if (sup->slots[i]->state == SLOT_IDLE)
                        mark_fresh(sup, sup->slots[i]);
        supervisor_wake(sup);
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

int supervisor_restart_slot(Supervisor *sup, int slot) {
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
                        .since = w ? (double) w->started_realtime / USEC_PER_SEC : 0,
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
                /* stall_note() is "; no worker accepts ..." for STATUS=, or "". */
                .advice = *stall_note(sup->stall) ? stall_note(sup->stall) + 2 : NULL,
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
        upgrade_forget_waiter(userdata, client);
}

static int op_scale(void *userdata, unsigned n) {
        return supervisor_scale(userdata, n);
}

static int op_scale_check(void *userdata, unsigned n, char *why, size_t size) {
        return fdbudget_scale_check(userdata, n, why, size);
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

static int op_follow(void *userdata, int fd, bool json) {
        return events_follow(((Supervisor *) userdata)->events, fd, json);
}

static int op_upgrade(void *userdata, const char *exe, const ReloadWaiter *waiter, int client_fd) {
        return upgrade_start(userdata, exe, waiter, client_fd);
}

static const ControlOps control_ops = {
        .snapshot = op_snapshot,
        .workers = op_workers,
        .reload = op_reload,
        .forget_waiter = op_forget_waiter,
        .scale = op_scale,
        .scale_check = op_scale_check,
        .restart = op_restart,
        .signal = op_signal,
        .stop = op_stop,
        .follow = op_follow,
        .upgrade = op_upgrade,
};

static int op_restart_all(void *userdata) {
        return supervisor_restart_slot(userdata, -1);
}

static bool op_stopping(void *userdata) {
        return ((Supervisor *) userdata)->stopping;
}

static const DevLoopOps devloop_ops = {
        .reload = op_reload,
        .forget_waiter = op_forget_waiter,
        .restart_all = op_restart_all,
        .workers = op_workers,
        .stopping = op_stopping,
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
        events_emit(sup->events, &(Event) { .kind = EVENT_READY, .slot = (int) w->index, .pid = w->pid });
        supervisor_wake(sup);
}

/* Asked before anything about a notify datagram is logged: is it from one of ours? */
static bool is_worker_sender(void *userdata, pid_t sender) {
        Supervisor *sup = userdata;

        return find_worker(sup, sender, sup->config.notify_access_all) != NULL;
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
                events_emit(sup->events, &(Event) { .kind = EVENT_WATCHDOG, .slot = (int) w->index, .pid = w->pid,
                                                    .text = "WATCHDOG=trigger, sending SIGABRT" });
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
        case SIGQUIT:
                /* Stop now: no grace period, nothing left behind (signals.c). */
                log_info("SIGQUIT received: stopping now, SIGKILL to %u workers", live_workers(sup));
                if (!sup->stopping)
                        supervisor_stop(sup, EXIT_SUCCESS);
                supervisor_kill_all(sup);
                break;
        case SIGUSR2:
                log_info("SIGUSR2: upgrade in place");
                (void) upgrade_start(sup, NULL, NULL, -1);
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
        int subreaper = 0, r;

        r = sd_event_default(&sup->event);
        if (r < 0)
                return r;
        /* Answers WatchdogSec= when systemd asks for it; a no-op otherwise. */
        (void) sd_event_set_watchdog(sup->event, true);
        r = sd_event_add_defer(sup->event, &sup->followup, on_followup, sup);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(sup->followup, SD_EVENT_OFF);
        r = sd_event_add_defer(sup->event, &sup->fresh_start, on_fresh_start, sup);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(sup->fresh_start, SD_EVENT_OFF);
        (void) sd_event_source_set_priority(sup->fresh_start, SD_EVENT_PRIORITY_IDLE);
        if (sup->notify) {
                r = sdnotify_open();
                if (r > 0) {
                        int k = sdnotify_attach(sup->event);
                        if (k < 0)
                                r = k;  /* said below; sd_notify() is the fallback */
                }
                if (r < 0)
                        log_warning_errno(r, "Cannot connect to NOTIFY_SOCKET for status updates: %m");
                sup->status_socket = r > 0;
        }
        r = signals_attach(sup->event, on_signal, sup);
        if (r < 0)
                return r;
        /* Orphans come to us as a subreaper (or as PID 1); they are reaped on SIGCHLD.
         * Without /proc (CONFIG_PROC_CHILDREN), stopping still reaches every worker's
         * process group; only setsid escapes would go unseen. Set once: setting it walks
         * every process below us, and an upgrade in place, which keeps it, has a thousand. */
        if (prctl(PR_GET_CHILD_SUBREAPER, &subreaper) < 0 || !subreaper)
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

        sup->shared_fds = calloc(sup->n_listeners ? sup->n_listeners : 1, sizeof *sup->shared_fds);
        sup->fdnames = join_names(sup->listeners, sup->n_listeners);
        if (!sup->shared_fds || !sup->fdnames)
                return -ENOMEM;
        for (size_t i = 0; i < sup->n_listeners; i++)
                sup->shared_fds[i] = sup->listeners[i].fd;
        sup->spawn.n_fds = sup->n_listeners;
        sup->spawn.argv = cfg->argv;
        sup->spawn.setup = cfg->worker_setup;
        sup->stall = stall_new(sup->event, sup->listeners, sup->n_listeners, sup->followup);
        spawn_signals_init(&sup->spawn);
        spawn_nofile_init(&sup->spawn);
        sup->spawn.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (sup->spawn.devnull < 0)
                return -errno;
        if (cfg->worker_setup.output)
                spawn_reserve_low_fd(&sup->spawn);
        GenerationTemplate t = generation_template(sup);
        return generation_new(&sup->good, 0, &t);
}

int supervisor_new(Supervisor **ret, const SupervisorConfig *config, Listener *listeners, size_t n_listeners) {
        Supervisor *sup;
        int r;

        sup = calloc(1, sizeof *sup);
        if (!sup)
                return log_error_errno(-ENOMEM, "Out of memory");
        /* A `ctl status` of 10,000 slots is megabytes of text: always mmapped, so that it goes
         * back to the system once sent (glibc's threshold would otherwise rise to its size and
         * keep the next ones on the heap for good). */
        (void) mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        sup->config = *config;
        if (sup->config.stop_signal == 0)
                sup->config.stop_signal = SIGTERM;
        sup->rules = (WorkerRules) {
                .ready = config->ready,
                .stop_timeout = config->stop_timeout,
                .start_timeout = config->start_timeout,
                .watchdog = config->watchdog,
                .min_ready = config->min_ready,
                .stop_signal = sup->config.stop_signal,
        };
        sup->listeners = listeners;
        sup->n_listeners = n_listeners;
        sup->spawn.devnull = -1;
        sup->notify = getenv("NOTIFY_SOCKET") != NULL;

        r = setup_events(sup);
        if (r >= 0)
                r = events_new(&sup->events, sup->event);
        sup->rules.events = sup->events;
        if (r >= 0)
                r = config->resume ? notify_server_adopt(&sup->notify_server, sup->event, config->resume->notify_fd,
                                                         config->resume->notify_address, is_worker_sender,
                                                         on_notify_message, sup)
                                   : notify_server_new(&sup->notify_server, sup->event, is_worker_sender,
                                                       on_notify_message, sup);
        if (r >= 0)
                r = setup_spawn(sup);
        if (r >= 0)
                r = config->resume ? upgrade_restore(sup, config->resume) : scale_add_slots(sup, config->n_workers);
        if (r < 0) {
                /* Nothing that came across an upgrade's exec may be closed: it goes back. */
                upgrade_incoming_abort("cannot set up the supervisor: %s", strerror(-r));
                supervisor_free(sup);
                return log_error_errno(r, "Cannot set up the supervisor: %m");
        }
        sup->target = config->n_workers;
        setup_balance(sup);

        if (config->resume && config->resume->control.fd >= 0) {
                Listener l = config->resume->control;
                r = control_server_adopt(&sup->control, sup->event, &l, &control_ops, sup);
        } else
                r = control_server_new(&sup->control, sup->event, config->name, config->control_path, &control_ops, sup);
        if (r >= 0 && config->watch)
                r = devloop_new(&sup->devloop, sup->event, config->watch, config->watch_restart, &devloop_ops, sup);
        if (r < 0) {
                upgrade_incoming_abort("cannot set up the control socket: %s", strerror(-r));
                supervisor_free(sup);
                return r; /* logged */
        }
        *ret = sup;
        return 0;
}

int supervisor_run(Supervisor *sup) {
        int r;

        /* The slots are fresh: on_fresh_start() starts them. */
        (void) sd_event_source_set_enabled(sup->fresh_start, SD_EVENT_ONESHOT);
        /* After an upgrade in place: the slots are as the previous bindonce left them. */
        upgrade_resumed(sup);
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

        devloop_free(sup->devloop);
        upgrade_free(sup->upgrade);
        sd_event_source_disable_unref(sup->adopting.source);
        control_server_free(sup->control);
        events_free(sup->events);
        notify_server_free(sup->notify_server);
        stall_free(sup->stall);
        escapes_free();
        children_list_close();
        sd_event_source_disable_unref(sup->followup);
        sd_event_source_disable_unref(sup->fresh_start);
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
        free(sup->roll_failure);
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
