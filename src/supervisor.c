/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "backoff.h"
#include "control.h"
#include "escapes.h"
#include "fdbudget.h"
#include "log.h"
#include "notify.h"
#include "orphans.h"
#include "sdnotify.h"
#include "signals.h"
#include "supervisor.h"

extern char **environ;

static usec_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

static double now_realtime(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static const char *signal_name(int sig) {
        const char *n = sigabbrev_np(sig);
        return n ? n : "unknown";
}

/* A shell's view of how a process ended: the code, or 128+N for signal N. */
static int shell_status(int code, int status) {
        return code == CLD_EXITED ? status : 128 + status;
}

const char *slot_state_name(const Slot *slot) {
        switch (slot->state) {
        case SLOT_IDLE:
                return "idle";
        case SLOT_WAITING:
                return "waiting";
        case SLOT_STOPPING:
                return "stopping";
        case SLOT_RUNNING:
                return slot->worker && slot->worker->ready ? "running" : "starting";
        }
        return "unknown";
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

/* "4/4 workers up, 3 restarts, 127.0.0.1:8080": what `systemctl status` shows. */
static void status_line(const Supervisor *sup, char *buf, size_t size) {
        char addr[ADDRESS_FORMAT_MAX], more[32] = "";

        if (sup->n_listeners > 1)
                snprintf(more, sizeof more, " +%zu more", sup->n_listeners - 1);
        snprintf(buf, size, "STATUS=%u/%u workers up, %u restarts%s, %s%s",
                 ready_workers(sup), sup->target, sup->total_restarts,
                 sup->roll.active ? ", reloading" : "",
                 sup->n_listeners && sup->listeners[0].address.size
                         ? address_format(&sup->listeners[0].address, addr) : "sockets from systemd",
                 more);
}

static int on_status_defer(sd_event_source *s, void *userdata) {
        Supervisor *sup = userdata;
        char status[ADDRESS_FORMAT_MAX + 128];

        status_line(sup, status, sizeof status);
        /* Dropped when systemd's queue is full: the next update says it all anyway. */
        (void) sdnotify_send_nowait(status);
        return 0;
}

/* Tells systemd. `extra` (READY=1, STOPPING=1, ...) must arrive, so it goes at once, with
 * the current STATUS=, and may wait. Plain status changes are coalesced: one datagram per
 * loop iteration, sent without waiting. */
static void notify_systemd(const Supervisor *sup, const char *extra) {
        char status[ADDRESS_FORMAT_MAX + 128];

        if (!sup->notify)
                return;
        if (!extra) {
                if (sup->status_defer)
                        (void) sd_event_source_set_enabled(sup->status_defer, SD_EVENT_ONESHOT);
                return;
        }
        status_line(sup, status, sizeof status);
        (void) sd_notifyf(0, "%s\n%s", extra, status);
        if (sup->status_defer)
                (void) sd_event_source_set_enabled(sup->status_defer, SD_EVENT_OFF);
}

/* ---- workers ------------------------------------------------------------------------ */

static Worker *worker_free(Worker *w) {
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->child);
        sd_event_source_disable_unref(w->kill_timer);
        sd_event_source_disable_unref(w->start_timer);
        sd_event_source_disable_unref(w->watchdog_timer);
        sd_event_source_disable_unref(w->stable_timer);
        free(w->status);
        free(w);
        return NULL;
}

/* The whole process group, so that helpers behind a wrapper shell get it too. Safe from pid
 * reuse: we are the only reaper, and sd-event reaps only after our exit callback returns. */
static void worker_signal(Worker *w, int sig) {
        if (kill(-w->pid, sig) < 0)
                /* The worker left its process group (setsid): at least the process itself. */
                (void) sd_event_source_send_child_signal(w->child, sig, NULL, 0);
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        log_warning("worker %u (pid %d) did not stop within %.1f s, sending SIGKILL",
                    w->index, (int) w->pid, (double) w->sup->config.stop_timeout / USEC_PER_SEC);
        worker_signal(w, SIGKILL);
        return 0;
}

/* `sig` now (SIGTERM, or SIGABRT from the watchdog), SIGKILL after --stop-timeout. */
static void worker_terminate(Worker *w, int sig) {
        int r;

        if (w->stopping)
                return;
        w->stopping = true;
        w->start_timer = sd_event_source_disable_unref(w->start_timer);
        w->watchdog_timer = sd_event_source_disable_unref(w->watchdog_timer);
        worker_signal(w, sig);
        r = sd_event_add_time_relative(w->sup->event, &w->kill_timer, CLOCK_MONOTONIC,
                                       w->sup->config.stop_timeout, 10 * USEC_PER_MSEC, on_kill_timer, w);
        if (r < 0) {
                log_warning_errno(r, "Cannot arm the stop timer of pid %d, sending SIGKILL now: %m", (int) w->pid);
                worker_signal(w, SIGKILL);
        }
}

static void worker_retire(Worker *w) {
        Supervisor *sup = w->sup;

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

Worker *supervisor_find_worker(Supervisor *sup, pid_t pid, bool group) {
        Worker *w = find_by_pid(sup, pid);
        pid_t pgid;

        /* A worker's own pid is the common case (every watchdog ping): getpgid() only for
         * a helper process, whose group id is its worker's pid. */
        if (!w && group && (pgid = getpgid(pid)) > 0)
                w = find_by_pid(sup, pgid);
        return w;
}

/* ---- reload: the rolling restart ------------------------------------------------------ */

static void slot_spawn(Slot *slot, bool as_next);
static void slot_schedule_restart(Slot *slot);
static void supervisor_maybe_exit(Supervisor *sup);

static void roll_finish(Supervisor *sup, const char *error) {
        Roll *roll = &sup->roll;
        ReloadWaiter *waiters = roll->waiters;
        size_t n = roll->n_waiters;

        if (error)
                log_error("reload failed: %s; the workers that were running keep serving", error);
        else
                log_info("reload complete: %u workers replaced in %llu ms", roll->replaced,
                         (unsigned long long) ((now_usec() - roll->started) / USEC_PER_MSEC));

        *roll = (Roll) {};
        /* The end of a reload, for systemd; not while stopping, nor before the first READY=1. */
        if (sup->ready_sent && !sup->stopping)
                notify_systemd(sup, "READY=1");
        for (size_t i = 0; i < n; i++)
                waiters[i].done(waiters[i].userdata, error);
        free(waiters);
}

/* The slot's worker died while its replacement was starting, and the replacement is gone
 * too: a slot still wanted gets a worker the usual way; one scaled away, or any while
 * stopping, rests. failed: the replacement died by itself (a failure of the slot). */
static void slot_lost_worker(Slot *slot, bool failed) {
        Supervisor *sup = slot->sup;

        if (slot->index < sup->target && !sup->stopping) {
                slot->failures += failed;
                slot_schedule_restart(slot);
        } else
                slot->state = SLOT_IDLE;
}

/* Drops the replacements still starting: they are stopped, the old workers stay. */
static void roll_drop_next(Supervisor *sup) {
        for (unsigned i = 0; i < sup->n_slots; i++) {
                Slot *slot = sup->slots[i];
                Worker *next = slot->next;

                if (!next)
                        continue;
                slot->next = NULL;
                worker_retire(next);
                if (!slot->worker)
                        slot_lost_worker(slot, false);
        }
}

static void roll_fail(Supervisor *sup, const char *error) {
        roll_drop_next(sup);
        roll_finish(sup, error);
}

static bool slot_needs_roll(const Supervisor *sup, const Slot *slot) {
        return slot->index < sup->target && slot->state == SLOT_RUNNING && !slot->next &&
               slot->worker && slot->worker->generation < sup->generation;
}

/* Starts as many replacements as --max-surge and --max-unavailable allow, and ends the roll
 * when nothing is left to replace. Called on every event that may free a place. */
static void roll_step(Supervisor *sup) {
        Roll *roll = &sup->roll;

        if (!roll->active)
                return;
        if (roll->stepping) {
                /* A replacement that is ready at exec comes back here from slot_spawn(). */
                roll->step_again = true;
                return;
        }
        roll->stepping = true;
        do {
                unsigned surging = 0, unavailable = 0;
                bool pending = false;

                roll->step_again = false;
                for (unsigned i = 0; i < sup->n_slots; i++) {
                        const Slot *slot = sup->slots[i];
                        surging += slot->next != NULL;
                        unavailable += slot->worker && slot->worker->roll_unavailable && !slot->worker->ready;
                }

                for (unsigned i = 0; i < sup->n_slots && roll->active && !roll->step_again; i++) {
                        Slot *slot = sup->slots[i];

                        if (!slot_needs_roll(sup, slot))
                                continue;
                        pending = true;
                        if (surging < sup->config.max_surge) {
                                surging++;
                                slot_spawn(slot, true);
                        } else if (unavailable < sup->config.max_unavailable) {
                                Worker *old = slot->worker;

                                unavailable++;
                                slot->worker = NULL;
                                worker_retire(old);
                                slot_spawn(slot, false);
                                if (slot->worker)
                                        slot->worker->roll_unavailable = true;
                                roll->replaced++;
                        } else
                                break;
                }

                if (roll->active && !roll->step_again && !pending && surging == 0 && unavailable == 0)
                        roll_finish(sup, NULL);
        } while (roll->active && roll->step_again);
        roll->stepping = false;
}

int supervisor_reload(Supervisor *sup, const ReloadWaiter *waiter) {
        Roll *roll = &sup->roll;

        if (sup->stopping)
                return -ESHUTDOWN;

        if (waiter) {
                ReloadWaiter *w = realloc(roll->waiters, (roll->n_waiters + 1) * sizeof *w);
                if (!w)
                        return -ENOMEM;
                roll->waiters = w;
                roll->waiters[roll->n_waiters++] = *waiter;
        }

        if (roll->active) {
                /* Start over: what the last reload started may already be outdated. */
                log_info("reload requested during a reload: starting over");
                roll_drop_next(sup);
        } else {
                roll->active = true;
                roll->started = now_usec();
                roll->replaced = 0;
        }
        sup->generation++;
        log_info("reload: rolling %u workers (max surge %u, max unavailable %u)",
                 sup->target, sup->config.max_surge, sup->config.max_unavailable);
        if (sup->notify)
                (void) sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long) now_usec());
        notify_systemd(sup, NULL);
        roll_step(sup);
        return 0;
}

void supervisor_forget_waiter(Supervisor *sup, void *userdata) {
        Roll *roll = &sup->roll;

        for (size_t i = 0; i < roll->n_waiters; i++)
                if (roll->waiters[i].userdata == userdata)
                        roll->waiters[i--] = roll->waiters[--roll->n_waiters];
}

/* ---- readiness and watchdog ---------------------------------------------------------- */

static void supervisor_steer(Supervisor *sup);

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

void worker_set_ready(Worker *w) {
        Supervisor *sup = w->sup;
        Slot *slot = w->slot;

        if (w->ready || w->stopping)
                return;
        w->ready = true;
        w->start_timer = sd_event_source_disable_unref(w->start_timer);
        if (sup->config.ready == READY_NOTIFY)
                log_info("worker %u (pid %d) is ready", w->index, (int) w->pid);

        if (slot && slot->next == w) {
                /* The replacement took over: the old worker drains and goes. */
                Worker *old = slot->worker;

                slot->worker = w;
                slot->next = NULL;
                slot->state = SLOT_RUNNING;
                if (old)
                        worker_retire(old);
                sup->roll.replaced++;
        }
        supervisor_steer(sup);
        notify_systemd(sup, NULL);
        supervisor_check_ready(sup);
        roll_step(sup);
}

void worker_set_status(Worker *w, const char *status) {
        char *s = strdup(status);

        if (s) {
                free(w->status);
                w->status = s;
        }
}

static int on_watchdog_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        log_warning("worker %u (pid %d) missed its watchdog deadline (%.1f s): sending SIGABRT",
                    w->index, (int) w->pid, (double) w->sup->config.watchdog / USEC_PER_SEC);
        worker_watchdog_trigger(w);
        return 0;
}

void worker_watchdog_ping(Worker *w) {
        if (w->watchdog_timer)
                (void) sd_event_source_set_time_relative(w->watchdog_timer, w->sup->config.watchdog);
}

void worker_watchdog_trigger(Worker *w) {
        if (w->stopping)
                return;
        /* Hung, by its own fault: counted like a crash. */
        w->failed = "missed its watchdog deadline";
        worker_terminate(w, SIGABRT);
}

static int on_start_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        log_error("worker %u (pid %d) did not send READY=1 within %.1f s: stopping it",
                  w->index, (int) w->pid, (double) w->sup->config.start_timeout / USEC_PER_SEC);
        w->failed = "did not send READY=1 within --start-timeout";
        worker_terminate(w, SIGTERM);
        return 0;
}

/* ---- slots ---------------------------------------------------------------------------- */

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

/* The run has lasted STABLE_RUN_USEC: by the restart contract its slot's streak is over
 * (the count is reset now rather than at its death, which says the same), and a reuseport
 * slot gets connections again. */
static int on_stable_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        w->stable_timer = sd_event_source_disable_unref(w->stable_timer);
        if (w->slot && w->slot->worker == w) {
                w->slot->failures = w->slot->self_failures = 0;
                supervisor_steer(w->sup);
        }
        return 0;
}

static int worker_watch(Worker *w) {
        Supervisor *sup = w->sup;
        int r;

        /* sd-event opens the pidfd itself: the child is ours and unreaped, so the pid is. */
        r = sd_event_add_child(sup->event, &w->child, w->pid, WEXITED, on_worker_exit, w);
        if (r < 0)
                return r;

        if (w->exec_failed)
                return 0;
        if (sup->config.balance == BALANCE_REUSEPORT && w->slot->failures >= 2) {
                r = sd_event_add_time_relative(sup->event, &w->stable_timer, CLOCK_MONOTONIC,
                                               STABLE_RUN_USEC, 10 * USEC_PER_MSEC, on_stable_timer, w);
                if (r < 0)
                        return r;
        }
        if (sup->config.ready == READY_NOTIFY) {
                r = sd_event_add_time_relative(sup->event, &w->start_timer, CLOCK_MONOTONIC,
                                               sup->config.start_timeout, 10 * USEC_PER_MSEC, on_start_timer, w);
                if (r < 0)
                        return r;
        }
        if (sup->config.watchdog > 0) {
                r = sd_event_add_time_relative(sup->event, &w->watchdog_timer, CLOCK_MONOTONIC,
                                               sup->config.watchdog, 10 * USEC_PER_MSEC, on_watchdog_timer, w);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A worker could not be started (EMFILE, ENFILE, EAGAIN, ENOMEM...): a reload fails; a
 * slot backs off and retries, alone. Not the worker's fault: never counted to --give-up. */
static void slot_spawn_failed(Slot *slot, bool as_next, int r) {
        if (as_next) {
                char reason[96];

                /* Said once, by the reload's failure line. */
                snprintf(reason, sizeof reason, "worker %u: cannot start: %s", slot->index, strerror(-r));
                roll_fail(slot->sup, reason);
                return;
        }
        log_error_errno(r, "worker %u: cannot start: %m; retrying with backoff", slot->index);
        slot->failures++;
        slot_schedule_restart(slot);
}

/* Starts a worker for the slot: as its worker, or as `next`, the replacement of a reload. */
static void slot_spawn(Slot *slot, bool as_next) {
        Supervisor *sup = slot->sup;
        SpawnResult res;
        Worker *w;
        int r;

        /* Once a stop has begun (a failure below may start one), nothing new is started:
         * the callers that loop over slots need not check. */
        if (sup->stopping) {
                if (!as_next && !slot->worker)
                        slot->state = SLOT_IDLE;
                return;
        }
        /* Out of fds (or memory, or processes): this slot backs off and retries, the others
         * serve on; workers leave the control socket fds to answer with (fdbudget.h). */
        r = fdbudget_check_spawn();
        if (r >= 0)
                r = spawn_worker(&sup->spawn, slot->index, slot->fds ? slot->fds : sup->shared_fds, &res);
        if (r < 0) {
                slot_spawn_failed(slot, as_next, r);
                return;
        }

        w = calloc(1, sizeof *w);
        if (w) {
                *w = (Worker) {
                        .sup = sup,
                        .slot = slot,
                        .index = slot->index,
                        .pid = res.pid,
                        .generation = sup->generation,
                        .started = now_usec(),
                        .started_realtime = now_realtime(),
                        .exec_failed = res.child_errno != 0,
                };
                r = worker_watch(w);
        }
        if (!w || r < 0) {
                /* Without a child source we could never reap or restart it: it goes at once.
                 * Not yet reaped, so the pid is still this child's to signal. */
                r = w ? r : -ENOMEM;
                (void) kill(-res.pid, SIGKILL);
                (void) kill(res.pid, SIGKILL);
                (void) waitpid(res.pid, NULL, 0);
                worker_free(w);
                if (r == -EMFILE || r == -ENFILE || r == -ENOMEM) {
                        slot_spawn_failed(slot, as_next, r);    /* a shortage: this slot retries */
                        return;
                }
                log_error_errno(r, "worker %u: cannot watch pid %d: %m", slot->index, (int) res.pid);
                supervisor_stop(sup, EXIT_OSERR);
                return;
        }

        if (as_next)
                slot->next = w;
        else
                slot->worker = w;
        slot->state = SLOT_RUNNING;

        if (res.child_errno == 0)
                log_info("worker %u started, pid %d%s", slot->index, (int) res.pid, as_next ? " (reload)" : "");
        else if (res.stage == SPAWN_STAGE_EXEC)
                log_error_errno(res.child_errno, "worker %u: cannot execute '%s': %m", slot->index, sup->config.argv[0]);
        else
                log_error_errno(res.child_errno, "worker %u: cannot set up its process: %m", slot->index);

        notify_systemd(sup, NULL);
        if (!w->exec_failed && sup->config.ready == READY_EXEC)
                worker_set_ready(w);
}

static int on_backoff_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Slot *slot = userdata;

        slot->timer = sd_event_source_disable_unref(slot->timer);
        if (slot->state == SLOT_WAITING)
                slot_spawn(slot, false);
        return 0;
}

static void slot_schedule_restart(Slot *slot) {
        Supervisor *sup = slot->sup;
        /* No random number for no delay: arc4random() costs a getrandom() call. */
        usec_t delay = slot->failures <= 1 ? 0 : backoff_delay(slot->failures, arc4random());
        int r;

        slot->restarts++;
        sup->total_restarts++;
        if (delay == 0) {
                slot_spawn(slot, false);
                return;
        }

        slot->state = SLOT_WAITING;
        log_info("worker %u restarting in %llu ms (%u early exits in a row)",
                 slot->index, (unsigned long long) (delay / USEC_PER_MSEC), slot->failures);
        r = sd_event_add_time_relative(sup->event, &slot->timer, CLOCK_MONOTONIC, delay, USEC_PER_MSEC,
                                       on_backoff_timer, slot);
        if (r < 0) {
                log_error_errno(r, "worker %u: cannot arm the restart timer: %m", slot->index);
                supervisor_stop(sup, EXIT_OSERR);
        }
}

static bool should_restart(RestartPolicy policy, int code, int status) {
        switch (policy) {
        case RESTART_ALWAYS:
                return true;
        case RESTART_ON_FAILURE:
                return !death_is_clean(code, status);
        default:
                return false;
        }
}

/* The application as a whole is broken only when every slot keeps failing by itself. */
static bool give_up_reached(const Supervisor *sup) {
        if (sup->config.give_up == 0 || sup->target == 0)
                return false;
        for (unsigned i = 0; i < sup->target; i++)
                if (sup->slots[i]->self_failures < sup->config.give_up)
                        return false;
        return true;
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

/* A slot, and in reuseport mode its own socket for every address that can have one. */
static int slot_new(Supervisor *sup, unsigned index, Slot **ret) {
        Slot *slot = calloc(1, sizeof *slot);

        if (!slot)
                return -ENOMEM;
        *slot = (Slot) { .sup = sup, .index = index };
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

/* New connections go to the sockets of active slots with a ready worker; while none is
 * ready, to every active slot, where they wait for the first. Called on every change of
 * readiness; the program is replaced only when the set changes. */
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
                if (sup->slots[i]->worker && sup->slots[i]->worker->ready && sup->slots[i]->failures < 2)
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

/* A roll candidate died before it was ready: the reload fails, the old worker stays. */
static void next_died(Slot *slot, Worker *w, const siginfo_t *si) {
        Supervisor *sup = slot->sup;
        char reason[160];

        slot->next = NULL;
        if (w->failed)
                snprintf(reason, sizeof reason, "worker %u (pid %d) %s", w->index, (int) w->pid, w->failed);
        else if (si->si_code == CLD_EXITED)
                snprintf(reason, sizeof reason, "worker %u (pid %d) exited with status %d before it was ready",
                         w->index, (int) w->pid, si->si_status);
        else
                snprintf(reason, sizeof reason, "worker %u (pid %d) was killed by signal %s before it was ready",
                         w->index, (int) w->pid, signal_name(si->si_status));
        worker_free(w);
        if (!slot->worker)
                slot_lost_worker(slot, true);
        if (sup->roll.active)
                roll_fail(sup, reason);
}

static int worker_exit(Worker *w, const siginfo_t *si);

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Worker *w = userdata;
        Supervisor *sup = w->sup;
        int r;

        sup->dispatching = w->pid;
        r = worker_exit(w, si);
        sup->dispatching = 0;
        return r;
}

static int worker_exit(Worker *w, const siginfo_t *si) {
        Supervisor *sup = w->sup;
        Slot *slot = w->slot;
        bool early = w->exec_failed || w->failed || now_usec() - w->started < STABLE_RUN_USEC;
        bool self = w->exec_failed || w->failed || death_is_self_inflicted(si->si_code, si->si_status);
        /* Stopped by us while its slot still wants a worker (ctl restart; or scaled down and
         * wanted again since): a restart, not the worker's own exit, whatever --restart says. */
        bool restart_requested = w->stopping && !w->failed;

        /* A replacement dying during a reload is told once, by the reload's failure line. */
        if (!(slot && slot->next == w && sup->roll.active))
                log_death(w, si, (w->stopping && !w->failed) || w->exec_failed ||
                                         (si->si_code == CLD_EXITED && si->si_status == 0));

        /* Whatever is left of its process group would keep serving our sockets behind our
         * back. The pid is still a zombie of ours here, so the group id cannot be reused. */
        (void) kill(-w->pid, SIGKILL);
        escapes_schedule(sup);          /* and what left the group, holding our sockets */

        if (!slot) {
                retired_remove(sup, w);
                worker_free(w);
                supervisor_maybe_exit(sup);
                return 0;
        }

        if (slot->next == w) {
                next_died(slot, w, si);
                notify_systemd(sup, NULL);
                return 0;
        }

        /* Started by a reload in place of a stopped worker, and dead before it was ready. */
        bool roll_candidate = w->roll_unavailable && !w->ready;
        slot->worker = NULL;
        slot->exited = true;
        slot->last_code = si->si_code;
        slot->last_status = si->si_status;
        worker_free(w);
        supervisor_steer(sup);

        if (slot->next && sup->roll.active) {
                /* Its replacement is on the way; the roll promotes it when ready. */
                notify_systemd(sup, NULL);
                return 0;
        }

        if (sup->stopping || slot->index >= sup->target) {
                slot->state = SLOT_IDLE;
                supervisor_trim_slots(sup);
                notify_systemd(sup, NULL);
                supervisor_maybe_exit(sup);
                return 0;
        }

        if (restart_requested)
                slot->failures = slot->self_failures = 0;
        else if (early) {
                if (self) {
                        slot->failures++;
                        slot->self_failures++;
                } else if (!kill_window_allow(&slot->outside_kills, now_usec()))
                        slot->failures++;
        } else
                slot->failures = slot->self_failures = 0;

        if (!restart_requested && !should_restart(sup->config.restart, si->si_code, si->si_status)) {
                slot->state = SLOT_IDLE;
                sup->exit_code = shell_status(si->si_code, si->si_status);
                notify_systemd(sup, NULL);
                supervisor_maybe_exit(sup);
                return 0;
        }

        if (give_up_reached(sup)) {
                log_error("giving up: every worker failed %u times in a row within %llu s of starting "
                          "(last: %s %d); fix the command, or raise --give-up (0 never gives up)",
                          sup->config.give_up, (unsigned long long) (STABLE_RUN_USEC / USEC_PER_SEC),
                          si->si_code == CLD_EXITED ? "exit status" : "signal", si->si_status);
                supervisor_stop(sup, EXIT_GAVE_UP);
                return 0;
        }

        slot_schedule_restart(slot);
        notify_systemd(sup, NULL);
        if (roll_candidate && sup->roll.active) {
                char reason[96];

                snprintf(reason, sizeof reason, "worker %u died before it was ready", slot->index);
                roll_fail(sup, reason);
        } else
                roll_step(sup);
        return 0;
}

/* ---- stop, scale, restart, signal ------------------------------------------------------ */

/* Our children that are not workers: what escaped a worker's process group and was
 * reparented to us. Returns how many are left alive; reaps the dead ones. With `sig`, signals
 * the live ones. Workers are reaped by their own pidfd sources, never here. */
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
                if (pids[i] == sup->dispatching || supervisor_find_worker(sup, pids[i], false))
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

static void slot_stop(Slot *slot) {
        slot->timer = sd_event_source_disable_unref(slot->timer);
        slot->drain_timer = sd_event_source_disable_unref(slot->drain_timer);
        if (slot->next) {
                worker_retire(slot->next);
                slot->next = NULL;
        }
        if (slot->worker) {
                slot->state = SLOT_STOPPING;
                worker_terminate(slot->worker, SIGTERM);
        } else
                slot->state = SLOT_IDLE;
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

void supervisor_stop(Supervisor *sup, int exit_code) {
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
                slot_stop(sup->slots[i]);
        for (Worker *w = sup->retired; w; w = w->next_retired)
                worker_terminate(w, SIGTERM);
        supervisor_maybe_exit(sup);
}

/* The length of the accept queue of a slot's own sockets. */
static unsigned slot_queue(const Slot *slot) {
        const Supervisor *sup = slot->sup;
        unsigned total = 0;

        for (size_t j = 0; slot->fds && j < sup->n_listeners; j++) {
                unsigned len, max;

                if (slot->fds[j] != sup->shared_fds[j] && listen_queue(slot->fds[j], &len, &max))
                        total += len;
        }
        return total;
}

/* A surplus slot of a reuseport group gets no new connections (steered away), but its
 * worker serves what is already queued on its socket. It is stopped once that queue is
 * empty, or after --stop-timeout. Checked every 20 ms for that short while only. */
static int on_drain_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Slot *slot = userdata;
        unsigned queued = slot_queue(slot);

        if (queued > 0 && now_usec() - slot->drain_started < slot->sup->config.stop_timeout && slot->worker) {
                (void) sd_event_source_set_time_relative(s, 20 * USEC_PER_MSEC);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                return 0;
        }
        if (queued > 0)
                log_warning("worker %u: %u connections still queued after %.1f s of draining; stopping it anyway",
                            slot->index, queued, (double) slot->sup->config.stop_timeout / USEC_PER_SEC);
        slot->drain_timer = sd_event_source_disable_unref(slot->drain_timer);
        slot_stop(slot);
        return 0;
}

static void slot_retire(Slot *slot) {
        Supervisor *sup = slot->sup;
        int r;

        /* Closing a reuseport socket resets its queue, unless the kernel migrates it. */
        if (!slot->fds || sup->migrate || slot->state != SLOT_RUNNING) {
                slot_stop(slot);
                return;
        }
        slot->drain_started = now_usec();
        r = sd_event_add_time_relative(sup->event, &slot->drain_timer, CLOCK_MONOTONIC,
                                       20 * USEC_PER_MSEC, USEC_PER_MSEC, on_drain_timer, slot);
        if (r < 0)
                slot_stop(slot);
}

int supervisor_scale(Supervisor *sup, unsigned n) {
        unsigned old = sup->target;
        int r;

        if (n < 1 || n > WORKERS_MAX)
                return -ERANGE;
        if (sup->stopping)
                return -ESHUTDOWN;

        if (n > sup->n_slots) {
                Slot **s = realloc(sup->slots, n * sizeof *s);
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
        }
        sup->target = n;
        log_info("scaling from %u to %u workers", old, n);
        supervisor_steer(sup);

        /* Surplus slots stop gracefully, the highest first. */
        for (unsigned i = sup->n_slots; i-- > n;) {
                Slot *slot = sup->slots[i];

                if (slot->drain_timer)
                        continue;
                if (slot->state == SLOT_RUNNING || slot->state == SLOT_WAITING)
                        slot_retire(slot);
        }
        /* Slots coming back before their drain ended keep their worker. */
        for (unsigned i = 0; i < n; i++)
                sup->slots[i]->drain_timer = sd_event_source_disable_unref(sup->slots[i]->drain_timer);
        /* New slots start; a slot still stopping from an earlier scale-down restarts when it exits. */
        for (unsigned i = 0; i < n; i++)
                if (sup->slots[i]->state == SLOT_IDLE)
                        slot_spawn(sup->slots[i], false);

        supervisor_trim_slots(sup);
        notify_systemd(sup, NULL);
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

                if (s->worker) {
                        log_info("worker %u (pid %d): restart requested", i, (int) s->worker->pid);
                        worker_terminate(s->worker, SIGTERM);
                } else if (s->state == SLOT_WAITING || s->state == SLOT_IDLE) {
                        /* Waiting out a backoff, or ended under --restart no|on-failure. */
                        s->timer = sd_event_source_disable_unref(s->timer);
                        s->failures = s->self_failures = 0;
                        slot_spawn(s, false);
                }
        }
        return 0;
}

int supervisor_signal_slot(Supervisor *sup, int sig, int slot) {
        unsigned from, to;
        int r = slot_range(sup, slot, &from, &to);

        if (r < 0)
                return r;
        for (unsigned i = from; i < to; i++)
                if (sup->slots[i]->worker)
                        worker_signal(sup->slots[i]->worker, sig);
        return 0;
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

int supervisor_new(Supervisor **ret, const SupervisorConfig *config, Listener *listeners, size_t n_listeners) {
        _cleanup_free_ char *names = NULL;
        Supervisor *sup;
        int *fds = NULL;
        int r;

        sup = calloc(1, sizeof *sup);
        if (!sup)
                return log_error_errno(-ENOMEM, "Out of memory");
        sup->config = *config;
        sup->listeners = listeners;
        sup->n_listeners = n_listeners;
        sup->spawn.devnull = -1;
        sup->notify = getenv("NOTIFY_SOCKET") != NULL;

        r = sd_event_default(&sup->event);
        if (r < 0)
                goto fail;
        /* Answers WatchdogSec= when systemd asks for it; a no-op otherwise. */
        (void) sd_event_set_watchdog(sup->event, true);

        if (sup->notify) {
                /* Without that socket there is nowhere to send STATUS= updates: no defer
                 * source that would build lines for nobody. */
                r = sdnotify_open();
                if (r < 0)
                        log_warning_errno(r, "Cannot connect to NOTIFY_SOCKET for status updates: %m");
                else {
                        r = sd_event_add_defer(sup->event, &sup->status_defer, on_status_defer, sup);
                        if (r < 0)
                                goto fail;
                        (void) sd_event_source_set_enabled(sup->status_defer, SD_EVENT_OFF);
                }
        }

        r = signals_attach(sup->event, on_signal, sup);
        if (r < 0)
                goto fail;
        /* Orphans come to us as a subreaper (or as PID 1); they are reaped on SIGCHLD.
         * Without /proc (CONFIG_PROC_CHILDREN), stopping still reaches every worker's
         * process group; only setsid escapes would go unseen. */
        (void) prctl(PR_SET_CHILD_SUBREAPER, 1);
        r = children_list_open();
        if (r < 0)
                log_warning_errno(r, "Cannot read our children from /proc: escaped processes are not tracked: %m");
        r = sd_event_add_signal(sup->event, NULL, SIGCHLD, on_sigchld, sup);
        if (r < 0)
                goto fail;

        fds = calloc(n_listeners ? n_listeners : 1, sizeof *fds);
        sup->shared_fds = fds;
        names = join_names(listeners, n_listeners);
        if (!fds || !names) {
                r = -ENOMEM;
                goto fail;
        }
        for (size_t i = 0; i < n_listeners; i++)
                fds[i] = listeners[i].fd;
        sup->spawn.n_fds = n_listeners;
        sup->spawn.argv = config->argv;
        spawn_signals_init(&sup->spawn);
        spawn_nofile_init(&sup->spawn);

        sup->slots = calloc(config->n_workers, sizeof *sup->slots);
        if (!sup->slots) {
                r = -ENOMEM;
                goto fail;
        }
        for (unsigned i = 0; i < config->n_workers; i++) {
                r = slot_new(sup, i, &sup->slots[i]);
                if (r < 0) {
                        supervisor_free(sup);
                        return log_error_errno(r, "Cannot open the sockets of worker slot %u: %m", i);
                }
                sup->n_slots = i + 1;
        }
        sup->target = config->n_workers;

        if (config->balance == BALANCE_REUSEPORT) {
                size_t grouped = 0;

                for (size_t j = 0; j < n_listeners; j++)
                        grouped += balance_supported(&listeners[j]);
                sup->migrate = balance_migrate_enabled();
                log_info("balance reuseport: a socket per worker for %zu of %zu addresses; "
                         "net.ipv4.tcp_migrate_req is %s, so a slot scaled down %s",
                         grouped, n_listeners, sup->migrate ? "on" : "off",
                         sup->migrate ? "hands its queue to the others" : "drains its queue before it closes");
                if (grouped < n_listeners)
                        log_notice("unix sockets, and sockets passed without ReusePort=yes, stay shared by all workers");
                supervisor_steer(sup);
        }

        r = notify_server_new(&sup->notify_server, sup);
        if (r < 0)
                goto fail;

        r = worker_env_build(&sup->spawn.env, environ, config->setenv, config->n_setenv, n_listeners, names,
                             notify_server_address(sup->notify_server), config->watchdog);
        if (r < 0)
                goto fail;

        sup->spawn.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (sup->spawn.devnull < 0) {
                r = -errno;
                goto fail;
        }

        r = control_server_new(&sup->control, sup);
        if (r < 0) {
                supervisor_free(sup);
                return r; /* logged */
        }

        *ret = sup;
        return 0;

fail:
        supervisor_free(sup);
        return log_error_errno(r, "Cannot set up the supervisor: %m");
}

int supervisor_run(Supervisor *sup) {
        int r;

        for (unsigned i = 0; i < sup->target; i++)
                slot_spawn(sup->slots[i], false);

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
        escapes_free();
        children_list_close();
        sd_event_source_disable_unref(sup->status_defer);
        sdnotify_close();
        sd_event_source_disable_unref(sup->orphan_kill);
        for (unsigned i = sup->n_slots; sup->slots && i-- > 0;)
                slot_free(sup, sup->slots[i]);
        while (sup->retired) {
                Worker *w = sup->retired;
                sup->retired = w->next_retired;
                worker_free(w);
        }
        free(sup->roll.waiters);
        free(sup->steered);
        free(sup->slots);
        worker_env_done(&sup->spawn.env);
        free(sup->shared_fds);
        closep(&sup->spawn.devnull);
        sd_event_unref(sup->event);
        free(sup);
        return NULL;
}
