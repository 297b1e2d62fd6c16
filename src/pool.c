/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>

#include "exit_status.h"
#include "log.h"
#include "sdnotify.h"
#include "fdbudget.h"
#include "stall.h"
#include "supervisor-internal.h"

/* Up to the follow-up: the first failure of a roll is the one the clients hear. */
static void request_roll_failure(Supervisor *sup, const char *reason) {
        if (!sup->roll_failure)
                sup->roll_failure = strdup(reason);
        supervisor_wake(sup);
}

static void request_stop(Supervisor *sup, int exit_code) {
        if (!sup->stop_request)
                sup->stop_request = exit_code;
        supervisor_wake(sup);
}

const char *signal_name(int sig) {
        const char *n = sigabbrev_np(sig);
        return n ? n : "unknown";
}

extern char **environ;

/* What a new generation is made from: the spawn template and the options of now. */
GenerationTemplate generation_template(const Supervisor *sup) {
        return (GenerationTemplate) {
                .spawn = &sup->spawn,
                .base_env = environ,
                .setenv = sup->config.setenv,
                .n_setenv = sup->config.n_setenv,
                .fdnames = sup->fdnames,
                .notify_socket = notify_server_address(sup->notify_server),
                .watchdog_usec = sup->config.watchdog,
        };
}

void supervisor_wake(Supervisor *sup) {
        (void) sd_event_source_set_enabled(sup->followup, SD_EVENT_ONESHOT);
}

bool slot_wanted(const Supervisor *sup, const Slot *slot) {
        return slot->index < sup->target && !sup->stopping;
}

unsigned live_workers(const Supervisor *sup) {
        unsigned n = 0;

        for (unsigned i = 0; i < sup->n_slots; i++)
                n += (sup->slots[i]->worker != NULL) + (sup->slots[i]->next != NULL);
        for (const Worker *w = sup->retired; w; w = w->next_retired)
                n++;
        return n;
}

/* Of the wanted slots: a slot draining after a scale-down is on its way out. */
unsigned ready_workers(const Supervisor *sup) {
        unsigned n = 0;

        for (unsigned i = 0; i < sup->target && i < sup->n_slots; i++)
                n += sup->slots[i]->worker && sup->slots[i]->worker->ready;
        return n;
}

/* ready_workers() > 0, without counting them all: once per loop turn. */
bool any_worker_ready(const Supervisor *sup) {
        for (unsigned i = 0; i < sup->target && i < sup->n_slots; i++)
                if (sup->slots[i]->worker && sup->slots[i]->worker->ready)
                        return true;
        return false;
}

/* ---- systemd -------------------------------------------------------------------------- */

/* "4/4 workers up, 3 restarts, 127.0.0.1:8080": what `systemctl status` shows. */
void status_line(const Supervisor *sup, char *buf, size_t size) {
        char addr[ADDRESS_FORMAT_MAX], more[32] = "";

        if (sup->n_listeners > 1)
                snprintf(more, sizeof more, " +%zu more", sup->n_listeners - 1);
        snprintf(buf, size, "STATUS=%u/%u workers up, %u restarts%s%s, %s%s%s",
                 ready_workers(sup), sup->target, sup->total_restarts,
                 sup->crash_loop ? ", every worker crash-looping" : "",
                 sup->roll.active ? ", reloading" : "",
                 sup->n_listeners && sup->listeners[0].address.size
                         ? address_format(&sup->listeners[0].address, addr) : "sockets from systemd",
                 more, stall_note(sup->stall));
}

/* What must arrive (READY=1, STOPPING=1, ...) goes at once, with the current STATUS=, or
 * waits in sdnotify's queue. Plain status changes are a follow-up: one datagram per loop
 * turn, dropped when systemd's queue is full. */
void notify_systemd(const Supervisor *sup, const char *extra) {
        char status[2 * ADDRESS_FORMAT_MAX + 256];

        if (!sup->notify)
                return;
        status_line(sup, status, sizeof status);
        sdnotify_sendf("%s\n%s", extra, status);
}

/* ---- workers ------------------------------------------------------------------------ */

void worker_retire(Supervisor *sup, Worker *w) {
        w->slot = NULL;
        w->next_retired = sup->retired;
        sup->retired = w;
        worker_terminate(w, sup->config.stop_signal);
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

Worker *find_worker(Supervisor *sup, pid_t pid, bool group) {
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
        events_emit(sup->events, &(Event) { .kind = EVENT_BACKOFF, .slot = (int) slot->index, .delay = delay,
                                            .n = slot->counts.failures });
        /* From backoff again (its start failed): the timer that fired goes, not leaks. */
        slot->timer = sd_event_source_disable_unref(slot->timer);
        r = sd_event_add_time_relative(sup->event, &slot->timer, CLOCK_MONOTONIC, delay, USEC_PER_MSEC,
                                       on_backoff_timer, slot);
        if (r < 0) {
                log_error_errno(r, "worker %u: cannot arm the restart timer: %m", slot->index);
                slot_set_state(slot, SLOT_IDLE);
                request_stop(sup, EXIT_OSERR);
                return;
        }
        slot_set_state(slot, SLOT_BACKOFF);
}

static void log_started(const Supervisor *sup, const Slot *slot, const Worker *w, int child_errno, int stage) {
        errno = child_errno;
        if (child_errno == 0) {
                log_info("worker %u started, pid %d%s", slot->index, (int) w->pid, w->candidate ? " (reload)" : "");
                events_emit(sup->events, &(Event) { .kind = EVENT_STARTED, .slot = (int) slot->index, .pid = w->pid,
                                                    .generation = w->gen->id, .n = w->candidate });
        }
        else if (stage == SPAWN_STAGE_EXEC)
                log_error_errno(child_errno, "worker %u: cannot execute '%s': %m", slot->index, sup->config.argv[0]);
        else
                log_error_errno(child_errno, "worker %u: %s: %m", slot->index, spawn_stage_name(stage));
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
        /* Out of fds (or memory, or processes): this slot backs off and retries, the others
         * serve on; workers leave the control socket fds to answer with (fdbudget.h). */
        r = fdbudget_check_spawn(sup);
        if (r >= 0)
                r = worker_start(&w, sup, sup->event, &sup->rules, gen, slot, slot->fds ? slot->fds : sup->shared_fds,
                         sup->followup, on_worker_exit, &child_errno, &stage);
        if (r < 0) {
                char reason[96];

                snprintf(reason, sizeof reason, "worker %u: cannot start a process: %s", slot->index, strerror(-r));
                if (as_next || (c && c->candidate)) {
                        /* Said once, by the reload's failure line. */
                        if (!slot->worker)
                                slot_backoff(sup, slot);
                        request_roll_failure(sup, reason);
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

const RestartCounts *counts_of(const void *ctx, unsigned i) {
        return &((const Supervisor *) ctx)->slots[i]->counts;
}

/* A crash loop is reported at the --give-up count, or at its default when that is 0. */
unsigned crash_loop_threshold(const Supervisor *sup) {
        return sup->config.give_up ? sup->config.give_up : 5;
}

/* Clause 5. Standalone (bindonce bound the sockets, and they close with it) giving up would
 * turn a crash loop into refused connections: unless --give-up was given, it is reported
 * loudly instead while connections queue. Under a socket unit or with the fd store the
 * sockets outlive bindonce, and giving up lets the service manager decide. */
static bool give_up_or_report(Supervisor *sup, const siginfo_t *si) {
        const SupervisorConfig *cfg = &sup->config;
        unsigned report_at = crash_loop_threshold(sup);
        bool may_give_up = cfg->give_up_explicit || cfg->sockets_kept;
        usec_t now = now_usec();

        if (may_give_up && give_up_reached(counts_of, sup, sup->target, cfg->give_up)) {
                log_error("giving up: every worker failed %u times in a row within %llu s of starting "
                          "(last: %s %d); fix the command, or raise --give-up (0 never gives up)",
                          cfg->give_up, (unsigned long long) (STABLE_RUN_USEC / USEC_PER_SEC),
                          si->si_code == CLD_EXITED ? "exit status" : "signal", si->si_status);
                request_stop(sup, EXIT_GAVE_UP);
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
        if (!slot_wanted(sup, slot))
                return;
        if (failing_candidate) {
                request_roll_failure(sup, reason);
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
        if (!slot_wanted(sup, slot))
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
        worker_terminate(slot->worker, sup->config.stop_signal);
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
        events_emit(sup->events, &(Event) { .kind = EVENT_ROLL, .step = "replaced", .slot = (int) slot->index,
                                            .pid = slot->worker->pid, .generation = slot->worker->gen->id,
                                            .n = sup->roll.replaced, .m = sup->target });
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
        events_emit(sup->events, &(Event) { .kind = EVENT_READY, .slot = (int) w->index, .pid = w->pid });
        slot_set_state(slot, SLOT_RUNNING);
}

static void slot_run_action(Supervisor *sup, Slot *slot, SlotEvent event, SlotTransition t, const Cause *c);

/* The one entry to a slot's state machine: the table names the action, the action does it
 * and sets the state, which must be one the table allows. */
void slot_dispatch(Supervisor *sup, Slot *slot, SlotEvent event, const Cause *c) {
        SlotState from = slot->state;
        SlotTransition t = slot_transition(from, event);

        slot_run_action(sup, slot, event, t, c);
        /* A bug, said loudly (the tests fail on it), but not an abort: that would leave the
         * workers serving unsupervised, the very thing bindonce exists to prevent. */
        if (!slot_transition_allows(from, event, slot->state))
                log_error("BUG: slot %u: %s in state %s ended in state %s, which the state table does not allow",
                          slot->index, slot_event_to_string(event), slot_state_to_string(from),
                          slot_state_to_string(slot->state));
}

static void slot_run_action(Supervisor *sup, Slot *slot, SlotEvent event, SlotTransition t, const Cause *c) {
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
        events_emit(sup->events, &(Event) { .kind = EVENT_EXITED, .slot = (int) w->index, .pid = w->pid,
                                            .code = si->si_code, .status = si->si_status,
                                            .text = !slot ? "retired worker" : slot->next == w ? "new worker" : "worker" });
        /* Whatever is left of its process group would keep serving our sockets behind our
         * back. The pid is still a zombie of ours here, so the group id cannot be reused. */
        (void) kill(-w->pid, SIGKILL);
        sup->escape_scan = true;        /* and what left the group: the follow-up looks */
        supervisor_wake(sup);

        if (!slot) {
                retired_remove(sup, w);
                worker_free(w);
                supervisor_wake(sup);
        } else if (slot->next == w) {
                bool failing = is_failing_candidate(sup, w);

                candidate_failure(w, si, reason, sizeof reason);
                worker_free(w);
                slot_dispatch(sup, slot, SLOT_EV_NEXT_EXIT, &c);
                if (failing)
                        request_roll_failure(sup, reason);
        } else
                slot_dispatch(sup, slot, SLOT_EV_EXIT, &c);
        sup->dispatching = 0;
        return 0;
}


/* ---- slots ---------------------------------------------------------------------------- */

Slot *slot_free(Supervisor *sup, Slot *slot) {
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
int slot_new(Supervisor *sup, unsigned index, Slot **ret) {
        Slot *slot = calloc(1, sizeof *slot);

        if (!slot)
                return -ENOMEM;
        *slot = (Slot) { .sup = sup, .index = index, .wake = sup->followup, .fresh = true };
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


/* ---- upgrade in place (upgrade_state.c): what the previous bindonce had armed --------- */

WorkerExitHandler pool_worker_exit_handler(void) {
        return on_worker_exit;
}

int pool_arm_backoff(Slot *slot, usec_t at) {
        return sd_event_add_time(slot->sup->event, &slot->timer, CLOCK_MONOTONIC, at, USEC_PER_MSEC,
                                 on_backoff_timer, slot);
}

int pool_arm_drain(Slot *slot) {
        return sd_event_add_time_relative(slot->sup->event, &slot->drain_timer, CLOCK_MONOTONIC, 20 * USEC_PER_MSEC,
                                          USEC_PER_MSEC, on_drain_timer, slot);
}
