/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"
#include "worker.h"
#include "events.h"

usec_t now_usec(void) {
        return clock_usec(CLOCK_MONOTONIC);
}

static void wake(Worker *w) {
        if (w->wake)
                (void) sd_event_source_set_enabled(w->wake, SD_EVENT_ONESHOT);
}

Worker *worker_free(Worker *w) {
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->child);
        closep(&w->held_pidfd);
        sd_event_source_disable_unref(w->kill_timer);
        sd_event_source_disable_unref(w->start_timer);
        sd_event_source_disable_unref(w->watchdog_timer);
        sd_event_source_disable_unref(w->stable_timer);
        sd_event_source_disable_unref(w->proof_timer);
        generation_unref(w->gen);
        free(w->status);
        free(w);
        return NULL;
}

/* Safe from pid reuse: we are the only reaper, and sd-event reaps only after our exit
 * callback returns. */
void worker_signal(Worker *w, int sig) {
        if (kill(-w->pid, sig) < 0) {
                /* The worker left its process group (setsid): at least the process itself.
                 * An adopted worker not watched yet has no child source: it is our
                 * unreaped child all the same, its pid its own. */
                if (w->child)
                        (void) sd_event_source_send_child_signal(w->child, sig, NULL, 0);
                else
                        (void) kill(w->pid, sig);
        }
}

static int on_kill_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        log_warning("worker %u (pid %d) did not stop within %.1f s, sending SIGKILL",
                    w->index, (int) w->pid, (double) w->rules->stop_timeout / USEC_PER_SEC);
        worker_signal(w, SIGKILL);
        return 0;
}

void worker_terminate(Worker *w, int sig) {
        int r;

        if (w->stopping)
                return;
        w->stopping = true;
        w->start_timer = sd_event_source_disable_unref(w->start_timer);
        w->watchdog_timer = sd_event_source_disable_unref(w->watchdog_timer);
        w->proof_timer = sd_event_source_disable_unref(w->proof_timer);
        worker_signal(w, sig);
        r = sd_event_add_time_relative(w->event, &w->kill_timer, CLOCK_MONOTONIC, w->rules->stop_timeout,
                                       10 * USEC_PER_MSEC, on_kill_timer, w);
        if (r < 0) {
                log_warning_errno(r, "Cannot arm the stop timer of pid %d, sending SIGKILL now: %m", (int) w->pid);
                worker_signal(w, SIGKILL);
        }
}

static int on_proof_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        w->proof_timer = sd_event_source_disable_unref(w->proof_timer);
        w->proven = true;
        wake(w);
        return 0;
}

void worker_mark_ready(Worker *w) {
        w->ready = true;
        w->start_timer = sd_event_source_disable_unref(w->start_timer);
        if (!w->candidate)
                return;
        /* A candidate counts for its roll only once it stayed up --min-ready after that. */
        if (w->rules->min_ready == 0 ||
            sd_event_add_time_relative(w->event, &w->proof_timer, CLOCK_MONOTONIC, w->rules->min_ready,
                                       10 * USEC_PER_MSEC, on_proof_timer, w) < 0)
                w->proven = true;
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
                    w->index, (int) w->pid, (double) w->rules->watchdog / USEC_PER_SEC);
        events_emit(w->rules->events, &(Event) { .kind = EVENT_WATCHDOG, .slot = (int) w->index, .pid = w->pid,
                                                 .text = "missed its deadline, sending SIGABRT" });
        worker_watchdog_trigger(w);
        return 0;
}

void worker_watchdog_ping(Worker *w) {
        if (w->watchdog_timer)
                (void) sd_event_source_set_time_relative(w->watchdog_timer, w->rules->watchdog);
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
                  w->index, (int) w->pid, (double) w->rules->start_timeout / USEC_PER_SEC);
        w->failed = "did not send READY=1 within --start-timeout";
        worker_terminate(w, w->rules->stop_signal);
        return 0;
}

/* The run of a slot in a crash-loop streak has lasted STABLE_RUN_USEC: by the restart
 * contract the streak is over (the count is reset now rather than at its death, which says
 * the same): a reuseport slot gets connections again, and a crash loop is reported over
 * (both follow-ups). */
static int on_stable_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Worker *w = userdata;

        w->stable_timer = sd_event_source_disable_unref(w->stable_timer);
        if (w->slot && w->slot->worker == w) {
                w->slot->counts = (RestartCounts) {};
                wake(w);
        }
        return 0;
}

/* The inode number of the pidfd sd-event watches the worker by. On pidfs (Linux 6.9) it is
 * the process's own id, never given to another process until reboot: the next bindonce of
 * an upgrade in place tells the worker from a process that got its pid since by it, for
 * one fstat(). 0 without pidfs (every pidfd shares one inode there) or without a pidfd. */
static uint64_t child_pidfd_id(sd_event_source *child) {
        struct stat st;
        int fd;

        /* 32-bit: pidfs shows the low half of the id only. */
        if (sizeof(unsigned long) < 8 || !pidfd_ids_supported())
                return 0;
        fd = sd_event_source_get_child_pidfd(child);
        if (fd < 0 || fstat(fd, &st) < 0)
                return 0;
        return (uint64_t) st.st_ino;
}

static int worker_arm(Worker *w, WorkerExitHandler on_exit) {
        const WorkerRules *rules = w->rules;
        int r;

        r = worker_watch(w, on_exit);
        if (r < 0 || w->exec_failed)
                return r;
        if (w->slot->counts.failures >= 2) {
                r = sd_event_add_time_relative(w->event, &w->stable_timer, CLOCK_MONOTONIC, STABLE_RUN_USEC,
                                               10 * USEC_PER_MSEC, on_stable_timer, w);
                if (r < 0)
                        return r;
        }
        if (rules->ready == READY_NOTIFY) {
                r = sd_event_add_time_relative(w->event, &w->start_timer, CLOCK_MONOTONIC, rules->start_timeout,
                                               10 * USEC_PER_MSEC, on_start_timer, w);
                if (r < 0)
                        return r;
        }
        if (rules->watchdog > 0)
                r = sd_event_add_time_relative(w->event, &w->watchdog_timer, CLOCK_MONOTONIC, rules->watchdog,
                                               10 * USEC_PER_MSEC, on_watchdog_timer, w);
        return r < 0 ? r : 0;
}

int worker_start(Worker **ret, struct Supervisor *sup, sd_event *event, const WorkerRules *rules, Generation *gen, Slot *slot,
                 const int *fds, sd_event_source *wake_source, WorkerExitHandler on_exit, int *child_errno,
                 int *stage) {
        SpawnResult res;
        Worker *w;
        int r;

        r = spawn_worker(&gen->spawn, slot->index, fds, &res);
        if (r < 0)
                return r;
        w = calloc(1, sizeof *w);
        if (w) {
                *w = (Worker) {
                        .sup = sup,
                        .event = event,
                        .rules = rules,
                        .slot = slot,
                        .index = slot->index,
                        .pid = res.pid,
                        .gen = generation_ref(gen),
                        .wake = wake_source,
                        .started = now_usec(),
                        .started_realtime = clock_usec(CLOCK_REALTIME),
                        .exec_failed = res.child_errno != 0,
                        .held_pidfd = -1,
                };
                r = worker_arm(w, on_exit);
        }
        if (!w || r < 0) {
                /* Without a child source we could never reap or restart it. Not yet reaped, so
                 * the pid is still this child's to signal. */
                r = w ? r : -ENOMEM;
                (void) kill(-res.pid, SIGKILL);
                (void) kill(res.pid, SIGKILL);
                (void) waitpid(res.pid, NULL, 0);
                worker_free(w);
                return r;
        }
        *child_errno = res.child_errno;
        *stage = res.stage;
        *ret = w;
        return 0;
}

void worker_death_text(const Worker *w, const siginfo_t *si, char *buf, size_t size) {
        const char *sig = sigabbrev_np(si->si_status);

        if (w->failed)
                snprintf(buf, size, "%s", w->failed);
        else if (si->si_code == CLD_EXITED)
                snprintf(buf, size, "exited with status %d", si->si_status);
        else
                snprintf(buf, size, "was killed by signal %s", sig ? sig : "unknown");
}

/* ---- upgrade in place ------------------------------------------------------------------ */

static int arm_at(Worker *w, sd_event_source **s, usec_t at, sd_event_time_handler_t handler) {
        if (at == 0)
                return 0;
        return sd_event_add_time(w->event, s, CLOCK_MONOTONIC, at, 10 * USEC_PER_MSEC, handler, w);
}

int worker_adopt(Worker *w, const WorkerDeadlines *d) {
        int r = arm_at(w, &w->kill_timer, d->kill, on_kill_timer);

        if (r >= 0)
                r = arm_at(w, &w->start_timer, d->start, on_start_timer);
        if (r >= 0)
                r = arm_at(w, &w->watchdog_timer, d->watchdog, on_watchdog_timer);
        if (r >= 0)
                r = arm_at(w, &w->stable_timer, d->stable, on_stable_timer);
        if (r >= 0)
                r = arm_at(w, &w->proof_timer, d->proof, on_proof_timer);
        return r;
}

int worker_watch(Worker *w, WorkerExitHandler on_exit) {
        int r;

        if (w->child)
                return 0;
        /* The child is ours and unreaped (one we adopted was identified then), so the pid is
         * still its own. sd-event opens a pidfd of its own (handing it the one an adopted
         * worker holds would cost it a read of /proc/self/fdinfo, three times the
         * pidfd_open()). */
        r = sd_event_add_child(w->event, &w->child, w->pid, WEXITED, on_exit, w);
        if (r < 0)
                return r;
        /* Its id from its pidfd, unless the state gave it (known by its start time until
         * now: a state of format 1). */
        if (!w->pidfd_id)
                w->pidfd_id = child_pidfd_id(w->child);
        closep(&w->held_pidfd);
        w->held_pidfd = -1;
        return 0;
}
