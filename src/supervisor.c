/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "backoff.h"
#include "log.h"
#include "supervisor.h"

extern char **environ;

static usec_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

static const char *signal_name(int sig) {
        const char *n = sigabbrev_np(sig);
        return n ? n : "unknown";
}

/* A shell's view of how a process ended: the code, or 128+N for signal N. */
static int shell_status(int code, int status) {
        return code == CLD_EXITED ? status : 128 + status;
}

static unsigned live_workers(const Supervisor *sup) {
        unsigned n = 0;

        for (unsigned i = 0; i < sup->config.n_workers; i++)
                n += sup->slots[i].worker != NULL;
        for (const Worker *w = sup->retired; w; w = w->next_retired)
                n++;
        return n;
}

/* "4/4 workers up, 3 restarts, 127.0.0.1:8080": what `systemctl status` shows. */
static void notify_status(const Supervisor *sup, const char *extra) {
        char addr[ADDRESS_FORMAT_MAX], more[32] = "";
        unsigned up = 0;

        if (!sup->notify)
                return;
        for (unsigned i = 0; i < sup->config.n_workers; i++)
                up += sup->slots[i].worker && !sup->slots[i].worker->exec_failed;
        if (sup->n_listeners > 1)
                snprintf(more, sizeof more, " +%zu more", sup->n_listeners - 1);
        (void) sd_notifyf(0, "%s%sSTATUS=%u/%u workers up, %u restarts, %s%s",
                          extra ? extra : "", extra ? "\n" : "",
                          up, sup->config.n_workers, sup->total_restarts,
                          sup->n_listeners ? address_format(&sup->listeners[0].address, addr) : "no sockets", more);
}


static void notify_reloading(const Supervisor *sup) {
        if (sup->notify)
                (void) sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long) now_usec());
}

static Worker *worker_free(Worker *w) {
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->child);
        sd_event_source_disable_unref(w->kill_timer);
        free(w);
        return NULL;
}

/* The whole process group, so that helpers behind a wrapper shell get it too. Safe from pid
 * reuse: we are the only reaper, and we reap after this callback chain, never before. */
static void worker_signal(Worker *w, int sig) {
        if (kill(-w->pid, sig) < 0)
                /* The worker left its process group (setsid): at least the process itself. */
                (void) sd_event_source_send_child_signal(w->child, sig, NULL, 0);
}

static int on_kill_timer(sd_event_source *s _unused_, uint64_t usec _unused_, void *userdata) {
        Worker *w = userdata;

        log_warning("worker %s%u (pid %d) did not stop within %.1f s, sending SIGKILL",
                    w->slot ? "" : "retired ", w->index, (int) w->pid,
                    (double) w->sup->config.stop_timeout / USEC_PER_SEC);
        worker_signal(w, SIGKILL);
        return 0;
}

/* SIGTERM now, SIGKILL after --stop-timeout. */
static void worker_stop(Worker *w) {
        int r;

        if (w->stopping)
                return;
        w->stopping = true;
        worker_signal(w, SIGTERM);
        r = sd_event_add_time_relative(w->sup->event, &w->kill_timer, CLOCK_MONOTONIC,
                                       w->sup->config.stop_timeout, 10 * USEC_PER_MSEC, on_kill_timer, w);
        if (r < 0) {
                log_warning_errno(r, "Cannot arm the stop timer of pid %d, sending SIGKILL now: %m", (int) w->pid);
                worker_signal(w, SIGKILL);
        }
}

static void supervisor_maybe_exit(Supervisor *sup) {
        for (unsigned i = 0; i < sup->config.n_workers; i++)
                if (sup->slots[i].state != SLOT_IDLE)
                        return;
        if (sup->retired)
                return;
        if (sup->stopping)
                log_info("stopped");
        (void) sd_event_exit(sup->event, sup->exit_code);
}

static void supervisor_stop(Supervisor *sup, int exit_code);
static void slot_schedule_restart(Slot *slot);

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

static void slot_spawn(Slot *slot) {
        Supervisor *sup = slot->sup;
        SpawnResult res;
        Worker *w;
        int r;

        r = spawn_worker(&sup->spawn, slot->index, &res);
        if (r < 0) {
                log_error_errno(r, "worker %u: cannot fork: %m", slot->index);
                slot->failures++;
                slot_schedule_restart(slot);
                return;
        }

        w = calloc(1, sizeof *w);
        if (w)
                r = sd_event_add_child_pidfd(sup->event, &w->child, res.pidfd, WEXITED, on_worker_exit, w);
        if (!w || r < 0) {
                /* Without a child source we could never reap or restart it: stop everything. */
                log_error_errno(w ? r : -ENOMEM, "worker %u: cannot watch pid %d: %m", slot->index, (int) res.pid);
                (void) kill(-res.pid, SIGKILL);
                (void) kill(res.pid, SIGKILL);
                (void) waitpid(res.pid, NULL, 0);
                (void) close(res.pidfd);
                free(w);
                supervisor_stop(sup, EXIT_OSERR);
                return;
        }
        (void) sd_event_source_set_child_pidfd_own(w->child, true);

        *w = (Worker) {
                .sup = sup,
                .slot = slot,
                .index = slot->index,
                .pid = res.pid,
                .child = w->child,
                .started = now_usec(),
                .exec_failed = res.child_errno != 0,
        };
        slot->worker = w;
        slot->state = SLOT_RUNNING;

        notify_status(sup, NULL);
        if (res.child_errno == 0)
                log_info("worker %u started, pid %d", slot->index, (int) res.pid);
        else if (res.stage == SPAWN_STAGE_EXEC)
                log_error_errno(res.child_errno, "worker %u: cannot execute '%s': %m", slot->index, sup->config.argv[0]);
        else
                log_error_errno(res.child_errno, "worker %u: cannot set up its process: %m", slot->index);
}

static int on_backoff_timer(sd_event_source *s _unused_, uint64_t usec _unused_, void *userdata) {
        Slot *slot = userdata;

        slot->timer = sd_event_source_disable_unref(slot->timer);
        if (slot->state == SLOT_WAITING)
                slot_spawn(slot);
        return 0;
}

static void slot_schedule_restart(Slot *slot) {
        Supervisor *sup = slot->sup;
        usec_t delay = backoff_delay(slot->failures, arc4random());
        int r;

        slot->restarts++;
        sup->total_restarts++;
        if (delay == 0) {
                slot_spawn(slot);
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
        if (sup->config.give_up == 0)
                return false;
        for (unsigned i = 0; i < sup->config.n_workers; i++)
                if (sup->slots[i].self_failures < sup->config.give_up)
                        return false;
        return true;
}

static void log_death(const Worker *w, const siginfo_t *si, bool expected) {
        int level = expected ? LOG_INFO : LOG_WARNING;
        const char *who = w->slot ? "worker" : "retired worker";

        if (si->si_code == CLD_EXITED)
                log_full_errno(level, 0, "%s %u (pid %d) exited with status %d",
                               who, w->index, (int) w->pid, si->si_status);
        else
                log_full_errno(level, 0, "%s %u (pid %d) killed by signal %s%s",
                               who, w->index, (int) w->pid, signal_name(si->si_status),
                               si->si_code == CLD_DUMPED ? " (core dumped)" : "");
}

static void retired_remove(Supervisor *sup, Worker *w) {
        for (Worker **p = &sup->retired; *p; p = &(*p)->next_retired)
                if (*p == w) {
                        *p = w->next_retired;
                        return;
                }
}

static int on_worker_exit(sd_event_source *s _unused_, const siginfo_t *si, void *userdata) {
        Worker *w = userdata;
        Supervisor *sup = w->sup;
        Slot *slot = w->slot;
        bool early = w->exec_failed || now_usec() - w->started < STABLE_RUN_USEC;
        bool self = w->exec_failed || death_is_self_inflicted(si->si_code, si->si_status);

        log_death(w, si, w->stopping || w->exec_failed ||
                                 (si->si_code == CLD_EXITED && si->si_status == 0));

        /* Whatever is left of its process group would keep serving our sockets behind our
         * back. The pid is still a zombie of ours here, so the group id cannot be reused. */
        (void) kill(-w->pid, SIGKILL);

        if (!slot) {
                retired_remove(sup, w);
                worker_free(w);
                supervisor_maybe_exit(sup);
                return 0;
        }

        slot->worker = NULL;
        slot->last_code = si->si_code;
        slot->last_status = si->si_status;
        worker_free(w);
        notify_status(sup, NULL);

        if (sup->stopping) {
                slot->state = SLOT_IDLE;
                supervisor_maybe_exit(sup);
                return 0;
        }

        if (early) {
                slot->failures++;
                if (self)
                        slot->self_failures++;
        } else
                slot->failures = slot->self_failures = 0;

        if (!should_restart(sup->config.restart, si->si_code, si->si_status)) {
                slot->state = SLOT_IDLE;
                sup->exit_code = shell_status(si->si_code, si->si_status);
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
        return 0;
}

static void supervisor_stop(Supervisor *sup, int exit_code) {
        if (sup->stopping) {
                /* Asked again: no more waiting. */
                log_warning("stop requested again, sending SIGKILL to %u workers", live_workers(sup));
                for (unsigned i = 0; i < sup->config.n_workers; i++)
                        if (sup->slots[i].worker)
                                worker_signal(sup->slots[i].worker, SIGKILL);
                for (Worker *w = sup->retired; w; w = w->next_retired)
                        worker_signal(w, SIGKILL);
                return;
        }

        sup->stopping = true;
        sup->exit_code = exit_code;
        log_info("stopping %u workers", live_workers(sup));
        notify_status(sup, "STOPPING=1");

        for (unsigned i = 0; i < sup->config.n_workers; i++) {
                Slot *slot = &sup->slots[i];

                slot->timer = sd_event_source_disable_unref(slot->timer);
                if (slot->worker) {
                        slot->state = SLOT_STOPPING;
                        worker_stop(slot->worker);
                } else
                        slot->state = SLOT_IDLE;
        }
        supervisor_maybe_exit(sup);
}

/* Each slot in turn: the replacement is started first, then its predecessor is stopped, so
 * the sockets are never without a worker. */
static void supervisor_reload(Supervisor *sup) {
        unsigned n = 0;

        if (sup->stopping)
                return;
        notify_reloading(sup);
        for (unsigned i = 0; i < sup->config.n_workers; i++) {
                Slot *slot = &sup->slots[i];
                Worker *old = slot->worker;

                if (slot->state != SLOT_RUNNING || !old)
                        continue;
                old->slot = NULL;
                old->next_retired = sup->retired;
                sup->retired = old;
                slot->worker = NULL;
                slot->failures = slot->self_failures = 0;

                slot_spawn(slot);
                worker_stop(old);
                n++;
        }
        log_info("reload: replaced %u workers", n);
        /* Every replacement is running (ready at exec): the reload is complete. */
        notify_status(sup, "READY=1");
}

static int on_signal(sd_event_source *s _unused_, const struct signalfd_siginfo *si, void *userdata) {
        Supervisor *sup = userdata;

        switch (si->ssi_signo) {
        case SIGHUP:
                log_info("SIGHUP: rolling restart of every worker");
                supervisor_reload(sup);
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

        const int stop_signals[] = { SIGTERM, SIGINT, SIGHUP };
        for (size_t i = 0; i < ELEMENTSOF(stop_signals); i++) {
                r = sd_event_add_signal(sup->event, NULL, stop_signals[i], on_signal, sup);
                if (r < 0)
                        goto fail;
        }

        sup->slots = calloc(config->n_workers, sizeof *sup->slots);
        int *fds = calloc(n_listeners ? n_listeners : 1, sizeof *fds);
        sup->spawn.moves = calloc(2 * n_listeners + 1, sizeof *sup->spawn.moves);
        names = join_names(listeners, n_listeners);
        sup->spawn.fds = fds;
        if (!sup->slots || !fds || !sup->spawn.moves || !names) {
                r = -ENOMEM;
                goto fail;
        }
        for (unsigned i = 0; i < config->n_workers; i++)
                sup->slots[i] = (Slot) { .sup = sup, .index = i };

        for (size_t i = 0; i < n_listeners; i++)
                fds[i] = listeners[i].fd;
        sup->spawn.n_fds = n_listeners;
        r = fd_plan(fds, n_listeners, sup->spawn.moves);
        if (r < 0)
                goto fail;
        sup->spawn.n_moves = (size_t) r;
        sup->spawn.argv = config->argv;

        r = worker_env_build(&sup->spawn.env, environ, config->setenv, config->n_setenv, n_listeners, names);
        if (r < 0)
                goto fail;

        sup->spawn.devnull = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (sup->spawn.devnull < 0) {
                r = -errno;
                goto fail;
        }

        *ret = sup;
        return 0;

fail:
        supervisor_free(sup);
        return log_error_errno(r, "Cannot set up the supervisor: %m");
}

int supervisor_run(Supervisor *sup) {
        int r;

        for (unsigned i = 0; i < sup->config.n_workers && !sup->stopping; i++)
                slot_spawn(&sup->slots[i]);
        if (!sup->stopping)
                notify_status(sup, "READY=1");

        r = sd_event_loop(sup->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), EXIT_OSERR;
        return r;
}

Supervisor *supervisor_free(Supervisor *sup) {
        if (!sup)
                return NULL;

        for (unsigned i = 0; sup->slots && i < sup->config.n_workers; i++) {
                sup->slots[i].timer = sd_event_source_disable_unref(sup->slots[i].timer);
                sup->slots[i].worker = worker_free(sup->slots[i].worker);
        }
        while (sup->retired) {
                Worker *w = sup->retired;
                sup->retired = w->next_retired;
                worker_free(w);
        }
        free(sup->slots);
        worker_env_done(&sup->spawn.env);
        free((int *) sup->spawn.fds);
        free(sup->spawn.moves);
        closep(&sup->spawn.devnull);
        sd_event_unref(sup->event);
        free(sup);
        return NULL;
}
