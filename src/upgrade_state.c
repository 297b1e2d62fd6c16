/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "output.h"
#include "supervisor-internal.h"
#include "upgrade.h"

#ifndef BINDONCE_VERSION
#define BINDONCE_VERSION "0.1"
#endif

/* ---- the supervisor into the state --------------------------------------------------------- */

/* A timer's absolute CLOCK_MONOTONIC deadline, or 0 when it is not armed. */
static usec_t deadline_of(sd_event_source *s) {
        uint64_t t;
        int enabled;

        if (!s || sd_event_source_get_enabled(s, &enabled) < 0 || enabled == SD_EVENT_OFF ||
            sd_event_source_get_time(s, &t) < 0)
                return 0;
        return t ? t : 1;
}

/* /proc/PID/stat: the parent (field 4) and the start time in clock ticks since boot (field
 * 22). The command (field 2) may hold spaces and parentheses: parse after its last ')'. */
static int proc_stat(pid_t pid, pid_t *ppid, unsigned long long *starttime) {
        char path[64], buf[1024], *p;
        _cleanup_close_ int fd = -1;
        ssize_t n;
        int ppid_i;

        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof buf - 1);
        if (n <= 0)
                return n < 0 ? -errno : -EIO;
        buf[n] = '\0';
        p = strrchr(buf, ')');
        /* ") S ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
         * cstime priority nice threads itrealvalue starttime" */
        if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                         &ppid_i, starttime) != 2)
                return -EIO;
        *ppid = ppid_i;
        return 0;
}

/* Format 2 names a worker by its pidfd's id, known since it was started (worker.c): no
 * /proc read, which at 20 us a worker was a quarter of a 1,000-worker upgrade. Format 1 (an
 * older new binary), or no id (no pidfs), names it by its start time. */
static int capture_worker(const Worker *w, StateRole role, unsigned format, StateWorker *ret) {
        pid_t ppid;
        int r;

        *ret = (StateWorker) {
                .slot = w->index,
                .role = role,
                .pid = w->pid,
                .generation = w->gen->id,
                .started = w->started,
                .started_realtime = w->started_realtime,
                .ready = w->ready,
                .stopping = w->stopping,
                .candidate = w->candidate,
                .proven = w->proven,
                .requested = w->requested,
                .exec_failed = w->exec_failed,
                .kill_at = deadline_of(w->kill_timer),
                .start_at = deadline_of(w->start_timer),
                .watchdog_at = deadline_of(w->watchdog_timer),
                .stable_at = deadline_of(w->stable_timer),
                .proof_at = deadline_of(w->proof_timer),
        };
        ret->pidfd = -1;
        if (format >= 2 && w->pidfd_id) {
                ret->pidfd_id = w->pidfd_id;
                /* Format 3: the pidfd crosses the exec (one adopted just before and not
                 * watched yet still holds the one it came with). */
                if (format >= 3)
                        ret->pidfd = w->child ? sd_event_source_get_child_pidfd(w->child) : w->held_pidfd;
        } else {
                r = proc_stat(w->pid, &ppid, &ret->starttime);
                if (r < 0)
                        return log_error_errno(r, "upgrade: cannot read /proc/%d/stat of worker %u: %m", (int) w->pid,
                                               w->index);
        }
        if ((w->failed && !(ret->failed = strdup(w->failed))) || (w->status && !(ret->status = strdup(w->status))))
                return -ENOMEM;
        return 0;
}

static int capture_slot(const Supervisor *sup, const Slot *slot, StateSlot *ret) {
        *ret = (StateSlot) {
                .index = slot->index,
                .state = slot->state,
                .restarts = slot->restarts,
                .counts = slot->counts,
                .outside_kills = slot->outside_kills,
                .exited = slot->exited,
                .last_code = slot->last_code,
                .last_status = slot->last_status,
                .backoff_at = deadline_of(slot->timer),
                .drain_started = slot->drain_started,
                .fresh = slot->fresh,
        };
        if (!slot->fds)
                return 0;
        ret->fds = calloc(sup->n_listeners, sizeof *ret->fds);
        if (!ret->fds)
                return -ENOMEM;
        memcpy(ret->fds, slot->fds, sup->n_listeners * sizeof *ret->fds);
        ret->n_fds = sup->n_listeners;
        return 0;
}

static int capture_workers(Supervisor *sup, UpgradeState *s) {
        unsigned format = s->format;
        size_t n = live_workers(sup), k = 0;
        int r = 0;

        s->workers = calloc(n ? n : 1, sizeof *s->workers);
        if (!s->workers)
                return -ENOMEM;
        for (unsigned i = 0; i < sup->n_slots && r >= 0; i++) {
                if (sup->slots[i]->worker)
                        r = capture_worker(sup->slots[i]->worker, STATE_WORKER, format, &s->workers[k++]);
                if (r >= 0 && sup->slots[i]->next)
                        r = capture_worker(sup->slots[i]->next, STATE_NEXT, format, &s->workers[k++]);
        }
        for (const Worker *w = sup->retired; w && r >= 0; w = w->next_retired)
                r = capture_worker(w, STATE_RETIRED, format, &s->workers[k++]);
        s->n_workers = k;
        return r;
}

static int capture_listeners(Supervisor *sup, UpgradeState *s) {
        s->listeners = calloc(sup->n_listeners, sizeof *s->listeners);
        if (!s->listeners)
                return -ENOMEM;
        s->n_listeners = sup->n_listeners;
        for (size_t i = 0; i < sup->n_listeners; i++) {
                s->listeners[i] = sup->listeners[i];
                s->listeners[i].name = strdup(sup->listeners[i].name);
                if (!s->listeners[i].name)
                        return -ENOMEM;
        }
        if (sup->control) {
                s->control = *control_server_listener(sup->control);
                s->control.name = NULL;
        }
        return 0;
}

static int capture_argv(UpgradeState *s, char **argv) {
        size_t n = 0;

        while (argv[n])
                n++;
        s->argv = calloc(n + 1, sizeof *s->argv);
        if (!s->argv)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (!(s->argv[i] = strdup(argv[i])))
                        return -ENOMEM;
        return 0;
}

static void count_pipe(void *userdata, int fd, unsigned slot, pid_t pid) {
        (*(size_t *) userdata)++;
}

static void capture_pipe(void *userdata, int fd, unsigned slot, pid_t pid) {
        UpgradeState *s = userdata;
        StatePipe *a = realloc(s->pipes, (s->n_pipes + 1) * sizeof *a);

        /* Out of memory: n_pipes stays short and capture_pipes() sees it. */
        if (!a)
                return;
        s->pipes = a;
        s->pipes[s->n_pipes++] = (StatePipe) { .fd = fd, .slot = slot, .pid = pid };
}

/* --log-prefix: the pipes the workers write to, read by us. */
static int capture_pipes(Supervisor *sup, UpgradeState *s) {
        size_t n = 0;

        worker_output_pipes(sup->config.worker_setup.output, capture_pipe, s);
        worker_output_pipes(sup->config.worker_setup.output, count_pipe, &n);
        return s->n_pipes == n ? 0 : -ENOMEM;
}

int upgrade_capture(Supervisor *sup, const char *exe, char **argv, unsigned format, UpgradeState *s) {
        int r;

        *s = (UpgradeState) {
                .format = format,
                .version = strdup(BINDONCE_VERSION),
                .exe = strdup(exe),
                .sockets_kept = sup->config.sockets_kept,
                .control.fd = -1,
                .notify_fd = notify_server_fd(sup->notify_server),
                .notify_address = strdup(notify_server_address(sup->notify_server)),
                .client_fd = -1,
                .target = sup->target,
                .last_generation = sup->last_generation,
                .good_generation = sup->good->id,
                .total_restarts = sup->total_restarts,
                .ready_sent = sup->ready_sent,
                .crash_loop = sup->crash_loop,
                .crash_loop_logged = sup->crash_loop_logged,
                .exit_code = sup->exit_code,
                .nofile = sup->spawn.nofile,
                .restore_nofile = sup->spawn.restore_nofile,
        };
        if (!s->version || !s->exe || !s->notify_address)
                return -ENOMEM;
        r = capture_argv(s, argv);
        if (r >= 0)
                r = capture_listeners(sup, s);
        if (r < 0)
                return r;
        s->slots = calloc(sup->n_slots, sizeof *s->slots);
        if (!s->slots)
                return -ENOMEM;
        s->n_slots = sup->n_slots;
        for (unsigned i = 0; i < sup->n_slots; i++) {
                r = capture_slot(sup, sup->slots[i], &s->slots[i]);
                if (r < 0)
                        return r;
        }
        r = capture_workers(sup, s);
        return r < 0 ? r : capture_pipes(sup, s);
}

/* ---- the state into the supervisor ---------------------------------------------------------- */

static int generation_get(Supervisor *sup, Generation ***gens, size_t *n, unsigned id, Generation **ret) {
        GenerationTemplate t = generation_template(sup);
        Generation **a;
        int r;

        for (size_t i = 0; i < *n; i++)
                if ((*gens)[i]->id == id) {
                        *ret = (*gens)[i];
                        return 0;
                }
        a = realloc(*gens, (*n + 1) * sizeof *a);
        if (!a)
                return -ENOMEM;
        *gens = a;
        r = generation_new(&a[*n], id, &t);
        if (r < 0)
                return r;
        *ret = a[(*n)++];
        return 0;
}

/* The texts worker.c gives `failed`, which is not ours to allocate. */
static const char *failed_text(const char *s) {
        static const char *const known[] = {
                "missed its watchdog deadline",
                "did not send READY=1 within --start-timeout",
        };

        if (!s)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(known); i++)
                if (strcmp(s, known[i]) == 0)
                        return known[i];
        return "failed before the upgrade";
}

/* A state without pidfd ids (format 1, or no pidfs): is the pid still the child the state
 * names: ours (we are its parent, and nobody reaps it but us, so a zombie still counts, and
 * its pid cannot be reused before we reap it), started when the state says? -ESRCH if not. */
static int check_worker(const StateWorker *sw) {
        unsigned long long starttime;
        pid_t ppid;
        int r = proc_stat(sw->pid, &ppid, &starttime);

        if (r == -ENOENT)
                return -ESRCH;
        if (r < 0)
                return r;
        return ppid == getpid() && starttime == sw->starttime ? 0 : -ESRCH;
}

/* Is the worker still the process the state names? A pidfd of it, held until it is
 * watched, in *ret_pidfd (-1 for none). Format 3 hands over the previous bindonce's pidfd
 * of it: the process itself, no question to ask (upgrade_incoming_open() made sure it came
 * across). Without one (format 2, or an fd that did not come across), a pidfd opened now
 * whose id is the state's; without an id (format 1, no pidfs), its parent and start time.
 * -ESRCH if it is not. */
static int identify_worker(const StateWorker *sw, int *ret_pidfd) {
        struct stat st;
        int fd;

        *ret_pidfd = -1;
        if (sw->pidfd >= 0) {
                *ret_pidfd = sw->pidfd;
                return 0;
        }
        if (!sw->pidfd_id)
                return check_worker(sw);
        fd = (int) syscall(SYS_pidfd_open, sw->pid, 0);
        if (fd < 0)
                return errno == ESRCH ? -ESRCH : -errno;
        if (fstat(fd, &st) < 0 || (uint64_t) st.st_ino != sw->pidfd_id) {
                (void) close(fd);
                return -ESRCH;          /* the pid is another process's now */
        }
        *ret_pidfd = fd;
        return 0;
}

static int adopt_worker(Supervisor *sup, Generation *gen, const StateWorker *sw, Worker **ret) {
        WorkerDeadlines d = { sw->kill_at, sw->start_at, sw->watchdog_at, sw->stable_at, sw->proof_at };
        char *status = NULL;
        Worker *w;
        int pidfd, r;

        r = identify_worker(sw, &pidfd);
        if (r < 0)
                return r;
        w = calloc(1, sizeof *w);
        if (!w || (sw->status && !(status = strdup(sw->status)))) {
                free(w);
                r = -ENOMEM;
                goto fail;
        }
        *w = (Worker) {
                .sup = sup,
                .event = sup->event,
                .rules = &sup->rules,
                .slot = sw->role == STATE_RETIRED ? NULL : sup->slots[sw->slot],
                .index = sw->slot,
                .pid = sw->pid,
                .gen = generation_ref(gen),
                .wake = sup->followup,
                .started = sw->started,
                .started_realtime = sw->started_realtime,
                .status = status,
                .exec_failed = sw->exec_failed,
                .ready = sw->ready,
                .stopping = sw->stopping,
                .candidate = sw->candidate,
                .proven = sw->proven,
                .requested = sw->requested,
                .failed = failed_text(sw->failed),
                .pidfd_id = sw->pidfd_id,
                .held_pidfd = -1,
        };
        r = worker_adopt(w, &d);
        if (r < 0) {
                worker_free(w);
                goto fail;
        }
        w->held_pidfd = pidfd;
        *ret = w;
        return 0;
fail:
        /* A pidfd that crossed the exec is the state's until the takeover is done: if it
         * fails, the state goes back to the previous binary with that fd open, as named. */
        if (pidfd != sw->pidfd)
                closep(&pidfd);
        return r;
}

static int restore_slot(Supervisor *sup, const StateSlot *ss, Slot **ret) {
        Slot *slot = calloc(1, sizeof *slot);
        int r = 0;

        if (!slot)
                return -ENOMEM;
        *slot = (Slot) {
                .sup = sup,
                .index = ss->index,
                .state = ss->state,
                .wake = sup->followup,
                .counts = ss->counts,
                .outside_kills = ss->outside_kills,
                .restarts = ss->restarts,
                .exited = ss->exited,
                .last_code = ss->last_code,
                .last_status = ss->last_status,
                .drain_started = ss->drain_started,
                .fresh = ss->fresh,
        };
        *ret = slot;
        /* supervisor_run() lets the fresh-start source go through them. */
        if (ss->fresh && ss->index < sup->fresh_from)
                sup->fresh_from = ss->index;
        if (ss->fds) {
                slot->fds = calloc(ss->n_fds, sizeof *slot->fds);
                if (!slot->fds)
                        return -ENOMEM;
                memcpy(slot->fds, ss->fds, ss->n_fds * sizeof *slot->fds);
        }
        if (ss->state == SLOT_BACKOFF)
                r = pool_arm_backoff(slot, ss->backoff_at ? ss->backoff_at : now_usec());
        else if (ss->state == SLOT_DRAINING)
                r = pool_arm_drain(slot);
        return r;
}

/* A worker that is gone (or is not the process the state names): its slot starts a worker
 * again once the loop runs, as a fresh slot. */
static void worker_gone(Supervisor *sup, const StateWorker *sw) {
        Slot *slot = sup->slots[sw->slot];

        log_warning("upgrade: worker %u (pid %d) is no longer our child; %s", sw->slot, (int) sw->pid,
                    sw->role == STATE_WORKER ? "its slot starts again" : "dropped");
        if (sw->role != STATE_WORKER || sw->slot >= sup->target)
                return;
        slot->fresh = true;
        if (slot->index < sup->fresh_from)
                sup->fresh_from = slot->index;
}

/* Each slot's state again agrees with the workers it has. */
static void slots_settle(Supervisor *sup) {
        for (unsigned i = 0; i < sup->n_slots; i++) {
                Slot *slot = sup->slots[i];

                if (!slot->worker && slot->next) {
                        slot->worker = TAKE_PTR(slot->next);
                        slot->state = slot->worker->ready ? SLOT_RUNNING : SLOT_STARTING;
                } else if (!slot->worker && slot->state != SLOT_BACKOFF)
                        slot->state = SLOT_IDLE;
                else if (slot->state == SLOT_REPLACING && !slot->next)
                        slot->state = SLOT_RUNNING;
        }
}

static int restore_workers(Supervisor *sup, const UpgradeState *s, Generation ***gens, size_t *n_gens) {
        for (size_t i = 0; i < s->n_workers; i++) {
                const StateWorker *sw = &s->workers[i];
                Generation *gen;
                Worker *w;
                int r;

                r = generation_get(sup, gens, n_gens, sw->generation, &gen);
                if (r >= 0)
                        r = adopt_worker(sup, gen, sw, &w);
                if (r == -ESRCH) {
                        worker_gone(sup, sw);
                        continue;
                }
                if (r < 0)
                        return log_error_errno(r, "upgrade: cannot adopt worker %u (pid %d): %m", sw->slot,
                                               (int) sw->pid);
                if (sw->role == STATE_WORKER)
                        sup->slots[sw->slot]->worker = w;
                else if (sw->role == STATE_NEXT)
                        sup->slots[sw->slot]->next = w;
                else {
                        w->next_retired = sup->retired;
                        sup->retired = w;
                }
        }
        return 0;
}

int upgrade_restore(Supervisor *sup, const UpgradeState *s) {
        Generation **gens = NULL, *good;
        size_t n_gens = 0;
        int r;

        /* What the workers get back is what the first bindonce was started with. */
        sup->spawn.nofile = s->nofile;
        sup->spawn.restore_nofile = s->restore_nofile;
        sup->slots = calloc(s->n_slots, sizeof *sup->slots);
        if (!sup->slots)
                return -ENOMEM;
        sup->fresh_from = UINT_MAX;
        for (size_t i = 0; i < s->n_slots; i++) {
                r = restore_slot(sup, &s->slots[i], &sup->slots[i]);
                sup->n_slots = (unsigned) i + 1;
                if (r < 0)
                        goto out;
        }
        sup->target = s->target;
        r = generation_get(sup, &gens, &n_gens, s->good_generation, &good);
        if (r < 0)
                goto out;
        generation_unref(sup->good);
        sup->good = generation_ref(good);
        sup->last_generation = s->last_generation;
        sup->total_restarts = s->total_restarts;
        sup->ready_sent = s->ready_sent;
        sup->crash_loop = s->crash_loop;
        sup->crash_loop_logged = s->crash_loop_logged;
        sup->exit_code = s->exit_code;
        r = restore_workers(sup, s, &gens, &n_gens);
        slots_settle(sup);
        for (size_t i = 0; r >= 0 && i < s->n_pipes; i++) {
                r = worker_output_adopt_pipe(sup->config.worker_setup.output, s->pipes[i].fd, s->pipes[i].slot,
                                             s->pipes[i].pid);
                if (r < 0)
                        log_error_errno(r, "upgrade: cannot read the output pipe of worker %u again: %m",
                                        s->pipes[i].slot);
        }
out:
        /* Each worker holds its own reference. */
        for (size_t i = 0; i < n_gens; i++)
                generation_unref(gens[i]);
        free(gens);
        return r;
}

/* ---- watching the adopted workers ------------------------------------------------------- */

/* A child source costs an adopted worker some 6 us (sd-event's pidfd_open() and the epoll
 * registration): 6 ms for 1,000, which the `ctl upgrade` waiting for the new bindonce would
 * wait for too. So the new bindonce answers first and watches them from the loop,
 * WATCH_PER_TURN a turn, between its other events. Nothing is missed meanwhile: a worker
 * that exits stays our unreaped child, its pid its own (the orphan sweep leaves workers
 * alone), and its exit is seen once it is watched. */
#define WATCH_PER_TURN 32
#define WATCH_RETRY_USEC (100 * USEC_PER_MSEC)

static Worker *next_unwatched(Supervisor *sup) {
        for (; sup->adopting.cursor < sup->n_slots; sup->adopting.cursor++) {
                Slot *slot = sup->slots[sup->adopting.cursor];

                if (slot->worker && !slot->worker->child)
                        return slot->worker;
                if (slot->next && !slot->next->child)
                        return slot->next;
        }
        for (Worker *w = sup->retired; w; w = w->next_retired)
                if (!w->child)
                        return w;
        return NULL;
}

/* Up to max of them; false when one cannot be watched yet (out of fds or memory: it
 * serves on, its exit unseen until a later try). */
static bool watch_some(Supervisor *sup, unsigned max) {
        Worker *w;

        for (unsigned n = 0; n < max && (w = next_unwatched(sup)); n++) {
                int r = worker_watch(w, pool_worker_exit_handler());

                if (r < 0) {
                        if (!sup->adopting.warned)
                                log_warning_errno(r, "upgrade: cannot watch worker %u (pid %d) yet, trying again "
                                                  "every %llu ms: %m", w->index, (int) w->pid,
                                                  (unsigned long long) (WATCH_RETRY_USEC / USEC_PER_MSEC));
                        sup->adopting.warned = true;
                        return false;
                }
        }
        return true;
}

static int on_watch_turn(sd_event_source *s, uint64_t usec, void *userdata) {
        Supervisor *sup = userdata;
        bool ok = watch_some(sup, WATCH_PER_TURN);

        if (ok && !next_unwatched(sup)) {
                if (sup->adopting.warned)
                        log_info("upgrade: every adopted worker is watched again");
                sup->adopting.source = sd_event_source_disable_unref(sup->adopting.source);
                return 0;
        }
        /* Now (a time of its own: sd-event does not arm its timer again for the same one), or
         * after a while. */
        (void) sd_event_source_set_time(s, now_usec() + (ok ? 0 : WATCH_RETRY_USEC));
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

void upgrade_watch_adopted(Supervisor *sup) {
        if (sup->adopting.source || !next_unwatched(sup))
                return;
        if (sd_event_add_time(sup->event, &sup->adopting.source, CLOCK_MONOTONIC, now_usec(), 1, on_watch_turn,
                              sup) < 0)
                /* No source to spread them over the loop: every one now. */
                (void) watch_some(sup, UINT_MAX);
}
