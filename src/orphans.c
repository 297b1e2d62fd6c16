/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "orphans.h"
#include "util.h"

static int children_fd = -1;
/* Children this process had before it started any worker: a shell's `cmd & exec bindonce`
 * leaves its background job as our child. They are not ours to stop. */
static pid_t *inherited;
static size_t n_inherited;
static bool inherited_preset;   /* taken from the previous bindonce: not noted again */

#define SWEEP_INTERVAL_USEC (100 * USEC_PER_MSEC)

static sd_event_source *sweep_timer;
static usec_t sweep_last;
static OrphansSweepFn sweep_fn;
static void *sweep_userdata;

static int on_sweep_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void) sd_event_now(sd_event_source_get_event(s), CLOCK_MONOTONIC, &sweep_last);
        sweep_fn(sweep_userdata);
        return 0;
}

void orphans_sweep_throttled(sd_event *e, OrphansSweepFn sweep, void *userdata) {
        int enabled = SD_EVENT_OFF;
        usec_t now;

        sweep_fn = sweep;
        sweep_userdata = userdata;
        if (sweep_timer && sd_event_source_get_enabled(sweep_timer, &enabled) >= 0 && enabled != SD_EVENT_OFF)
                return;         /* a sweep is due anyway */
        if (sd_event_now(e, CLOCK_MONOTONIC, &now) < 0 || now - sweep_last >= SWEEP_INTERVAL_USEC) {
                sweep_last = now;
                sweep(userdata);
                return;
        }
        if (!sweep_timer) {
                if (sd_event_add_time(e, &sweep_timer, CLOCK_MONOTONIC, sweep_last + SWEEP_INTERVAL_USEC,
                                      10 * USEC_PER_MSEC, on_sweep_timer, NULL) < 0) {
                        sweep(userdata);        /* no timer: sweep now rather than leave zombies */
                        return;
                }
                (void) sd_event_source_set_enabled(sweep_timer, SD_EVENT_ONESHOT);
                return;
        }
        (void) sd_event_source_set_time(sweep_timer, sweep_last + SWEEP_INTERVAL_USEC);
        (void) sd_event_source_set_enabled(sweep_timer, SD_EVENT_ONESHOT);
}

void children_list_close(void) {
        sweep_timer = sd_event_source_disable_unref(sweep_timer);
        closep(&children_fd);
        children_fd = -1;
        free(inherited);
        inherited = NULL;
        n_inherited = 0;
}


bool orphans_inherited(pid_t pid) {
        for (size_t i = 0; i < n_inherited; i++)
                if (inherited[i] == pid)
                        return true;
        return false;
}

void orphans_inherited_forget(pid_t pid) {
        for (size_t i = 0; i < n_inherited; i++)
                if (inherited[i] == pid) {
                        /* Reaped: its pid may come back as an orphan of ours. */
                        inherited[i] = inherited[--n_inherited];
                        return;
                }
}

static void note_inherited(void) {
        int n = children_list(NULL, 0);

        if (n <= 0)
                return;
        inherited = calloc((size_t) n, sizeof *inherited);
        if (!inherited)
                return;
        n = children_list(inherited, (size_t) n);
        n_inherited = n > 0 ? (size_t) n : 0;
}

int children_list_open(void) {
        char path[64];

        if (children_fd >= 0)
                return 0;
        /* Single-threaded: our one task is the process itself. */
        snprintf(path, sizeof path, "/proc/self/task/%d/children", (int) getpid());
        children_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (children_fd < 0)
                return -errno;
        if (!inherited_preset)
                note_inherited();
        return 0;
}

int orphans_inherited_format(char **ret) {
        /* A pid is at most 7 digits (PID_MAX_LIMIT 4194304), and a space. */
        char *text = malloc(n_inherited * 8 + 1), *p = text;

        if (!text)
                return -ENOMEM;
        *p = '\0';
        for (size_t i = 0; i < n_inherited; i++)
                p += sprintf(p, i ? " %d" : "%d", (int) inherited[i]);
        *ret = text;
        return 0;
}

int orphans_inherited_preset(const char *text) {
        size_t n = 0;
        pid_t *pids;

        for (const char *c = text; *c; c++)
                n += *c == ' ';
        pids = calloc(n + 1, sizeof *pids);
        if (!pids)
                return -ENOMEM;
        n = 0;
        for (const char *c = text; *c;) {
                char *end;
                long v = strtol(c, &end, 10);

                if (end == c || v <= 0 || v > INT_MAX || (*end && *end != ' ')) {
                        free(pids);
                        return -EINVAL;
                }
                pids[n++] = (pid_t) v;
                c = *end ? end + 1 : end;
        }
        free(inherited);
        inherited = pids;
        n_inherited = n;
        inherited_preset = true;
        return 0;
}

int children_list(pid_t *pids, size_t max) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0, len = 0, n = 0;

        if (children_fd < 0)
                return -EBADF;
        for (;;) {
                if (size - len < 4096) {
                        char *b = realloc(buf, size + 16384);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        size += 16384;
                }
                /* pread() from where this call got to, starting at 0: the file is generated
                 * anew for every read from its start, so no lseek() is needed between calls. */
                ssize_t k = pread(children_fd, buf + len, size - len, (off_t) len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                len += (size_t) k;
        }

        /* "123 456 789 " */
        for (size_t i = 0; i < len;) {
                long v = 0;

                if (buf[i] < '0' || buf[i] > '9') {
                        i++;
                        continue;
                }
                for (; i < len && buf[i] >= '0' && buf[i] <= '9'; i++)
                        v = v * 10 + (buf[i] - '0');
                if (n < max)
                        pids[n] = (pid_t) v;
                n++;
        }
        return (int) n;
}
