/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "escapes.h"
#include "log.h"
#include "orphans.h"
#include "supervisor-internal.h"

#define SCAN_DELAY_USEC (200 * USEC_PER_MSEC)   /* lets a worker's group die first */
#define RESCAN_USEC USEC_PER_SEC                /* while some are still being stopped */
#define DEPTH_MAX 64
#define TRACKED_MAX 256

typedef struct Escapee {
        pid_t pid;
        usec_t signalled;       /* when SIGTERM was sent */
} Escapee;

static sd_event_source *timer;
static Escapee tracked[TRACKED_MAX];
static size_t n_tracked;
static unsigned stopped_total;

unsigned escapes_stopped(void) {
        return stopped_total;
}

void escapes_free(void) {
        timer = sd_event_source_disable_unref(timer);
        n_tracked = 0;
}

/* The inodes of every socket the workers get: the shared ones and reuseport siblings. */
static size_t socket_inodes(const Supervisor *sup, ino_t *out, size_t max) {
        size_t n = 0;
        struct stat st;

        for (size_t j = 0; j < sup->n_listeners && n < max; j++)
                if (fstat(sup->listeners[j].fd, &st) >= 0)
                        out[n++] = st.st_ino;
        for (unsigned i = 0; i < sup->n_slots; i++)
                for (size_t j = 0; sup->slots[i]->fds && j < sup->n_listeners && n < max; j++)
                        if (sup->slots[i]->fds[j] != sup->shared_fds[j] && fstat(sup->slots[i]->fds[j], &st) >= 0)
                                out[n++] = st.st_ino;
        return n;
}

/* Whether pid has one of the inodes open, by /proc/PID/fd. */
static bool holds_socket(pid_t pid, const ino_t *inodes, size_t n) {
        char path[64], target[64];
        bool found = false;
        DIR *d;

        snprintf(path, sizeof path, "/proc/%d/fd", (int) pid);
        d = opendir(path);
        if (!d)
                return false;
        for (struct dirent *e; !found && (e = readdir(d));) {
                unsigned long long ino;
                ssize_t k;

                if (e->d_name[0] == '.')
                        continue;
                k = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
                if (k <= 0)
                        continue;
                target[k] = '\0';
                if (sscanf(target, "socket:[%llu]", &ino) != 1)
                        continue;
                for (size_t i = 0; i < n && !found; i++)
                        found = inodes[i] == (ino_t) ino;
        }
        closedir(d);
        return found;
}

/* The children of pid, from every task's children file; returns how many (up to max). */
static size_t children_of(pid_t pid, pid_t *out, size_t max) {
        char path[64], buf[4096];
        size_t n = 0;
        DIR *d;

        snprintf(path, sizeof path, "/proc/%d/task", (int) pid);
        d = opendir(path);
        if (!d)
                return 0;
        for (struct dirent *e; (e = readdir(d)) && n < max;) {
                char file[sizeof e->d_name + 16];
                int fd;
                ssize_t k;

                if (e->d_name[0] == '.')
                        continue;
                snprintf(file, sizeof file, "%s/children", e->d_name);
                fd = openat(dirfd(d), file, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                k = read(fd, buf, sizeof buf - 1);
                (void) close(fd);
                if (k <= 0)
                        continue;
                buf[k] = '\0';
                for (char *p = buf, *end; n < max; p = end) {
                        long v = strtol(p, &end, 10);
                        if (end == p)
                                break;
                        out[n++] = (pid_t) v;
                }
        }
        closedir(d);
        return n;
}

static Escapee *tracked_find(pid_t pid) {
        for (size_t i = 0; i < n_tracked; i++)
                if (tracked[i].pid == pid)
                        return &tracked[i];
        return NULL;
}

static void comm_of(pid_t pid, char *buf, size_t size) {
        char path[64];
        FILE *f;

        snprintf(path, sizeof path, "/proc/%d/comm", (int) pid);
        snprintf(buf, size, "?");
        f = fopen(path, "re");
        if (!f)
                return;
        if (fgets(buf, (int) size, f))
                buf[strcspn(buf, "\n")] = '\0';
        fclose(f);
}

/* One escapee found: SIGTERM the first time, SIGKILL once --stop-timeout has passed. */
static void escapee_stop(Supervisor *sup, pid_t pid, usec_t now, Escapee *seen, size_t *n_seen) {
        Escapee *e = tracked_find(pid);
        char comm[32];

        if (!e) {
                comm_of(pid, comm, sizeof comm);
                log_warning("pid %d (%s), left behind by a worker, still holds a listening socket: sending SIGTERM",
                            (int) pid, comm);
                (void) kill(pid, SIGTERM);
                stopped_total++;
                seen[(*n_seen)++] = (Escapee) { pid, now };
                return;
        }
        if (now - e->signalled >= sup->config.stop_timeout) {
                log_warning("pid %d, left behind by a worker, did not stop within %.1f s: sending SIGKILL",
                            (int) pid, (double) sup->config.stop_timeout / USEC_PER_SEC);
                (void) kill(pid, SIGKILL);
        }
        seen[(*n_seen)++] = *e;
}

/* Depth-first from bindonce, skipping live workers' subtrees. Returns how many holders. */
static size_t walk(Supervisor *sup, const ino_t *inodes, size_t n_inodes, usec_t now, Escapee *seen) {
        pid_t stack[512];
        size_t top = 0, n_seen = 0;

        /* Our own children from the children file kept open (orphans.c): in the common
         * case, all workers, the walk opens nothing. */
        int n = children_list(stack, ELEMENTSOF(stack));
        top = n < 0 ? 0 : (size_t) n < ELEMENTSOF(stack) ? (size_t) n : ELEMENTSOF(stack);
        while (top > 0) {
                pid_t pid = stack[--top];

                /* A live worker answers for its own descendants; the group kill at its
                 * exit covers them, and the next walk sees what escaped it. */
                if (find_worker(sup, pid, false) || orphans_inherited(pid))
                        continue;       /* (or was our child before any worker: not ours) */
                if (holds_socket(pid, inodes, n_inodes) && n_seen < TRACKED_MAX)
                        escapee_stop(sup, pid, now, seen, &n_seen);
                top += children_of(pid, stack + top, ELEMENTSOF(stack) - top);
        }
        return n_seen;
}

static int on_scan(sd_event_source *s, uint64_t usec, void *userdata) {
        Supervisor *sup = userdata;
        ino_t inodes[64];
        static Escapee seen[TRACKED_MAX];
        size_t n_inodes = socket_inodes(sup, inodes, ELEMENTSOF(inodes));
        size_t n = walk(sup, inodes, n_inodes, now_usec(), seen);

        /* What is still there is tracked on; what is gone is forgotten. */
        memcpy(tracked, seen, n * sizeof *seen);
        n_tracked = n;
        if (n > 0) {
                (void) sd_event_source_set_time_relative(s, RESCAN_USEC);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
}

void escapes_schedule(Supervisor *sup) {
        int enabled = SD_EVENT_OFF;

        if (!timer) {
                if (sd_event_add_time_relative(sup->event, &timer, CLOCK_MONOTONIC, SCAN_DELAY_USEC,
                                               10 * USEC_PER_MSEC, on_scan, sup) < 0)
                        return;
                (void) sd_event_source_set_description(timer, "escapes");
                return;
        }
        /* Armed already: that walk will see this exit's leftovers too. */
        if (sd_event_source_get_enabled(timer, &enabled) >= 0 && enabled != SD_EVENT_OFF)
                return;
        (void) sd_event_source_set_time_relative(timer, SCAN_DELAY_USEC);
        (void) sd_event_source_set_enabled(timer, SD_EVENT_ONESHOT);
}
