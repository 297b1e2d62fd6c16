/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "log.h"
#include "stall.h"
#include "util.h"

/* A queue that has not shrunk once in this long, while not empty, has nobody accepting. */
#define STALL_USEC (5 * USEC_PER_SEC)
/* How long after a worker got ready the queues are watched while they are empty. */
#define WINDOW_USEC (60 * USEC_PER_SEC)
#define SAMPLE_USEC USEC_PER_SEC

typedef struct Watched {
        const Listener *listener;
        unsigned last;          /* queue length at the last sample */
        usec_t since;           /* not empty and never shrunk since then; 0: not so */
        bool stalled;           /* said so */
} Watched;

struct Stall {
        sd_event *event;
        sd_event_source *timer;
        sd_event_source *status;
        Watched *watched;
        size_t n;
        usec_t window_end;
        char note[ADDRESS_FORMAT_MAX + 128];
};

static usec_t now(const Stall *s) {
        uint64_t t = 0;

        (void) sd_event_now(s->event, CLOCK_MONOTONIC, &t);
        return t;
}

static void set_note(Stall *s) {
        char addr[ADDRESS_FORMAT_MAX];

        s->note[0] = '\0';
        for (size_t i = 0; i < s->n; i++)
                if (s->watched[i].stalled) {
                        snprintf(s->note, sizeof s->note,
                                 "; no worker accepts on %s (queue %u): does the worker check LISTEN_PID? run it with exec",
                                 address_format(&s->watched[i].listener->address, addr), s->watched[i].last);
                        break;
                }
        if (s->status)
                (void) sd_event_source_set_enabled(s->status, SD_EVENT_ONESHOT);
}

/* One sample of one socket; true when it still needs watching. */
static bool sample(Stall *s, Watched *w, usec_t t) {
        char addr[ADDRESS_FORMAT_MAX];
        unsigned len, max;

        if (!listen_queue(w->listener->fd, &len, &max))
                return false;
        if (len == 0 || len < w->last) {
                /* Empty, or somebody took connections from it. */
                if (w->stalled) {
                        log_notice("connections are accepted on %s again", address_format(&w->listener->address, addr));
                        w->stalled = false;
                        w->last = len;
                        set_note(s);
                }
                w->since = len ? t : 0;
        } else if (!w->since)
                w->since = t;
        w->last = len;

        if (w->since && !w->stalled && t - w->since >= STALL_USEC) {
                w->stalled = true;
                log_warning("no worker accepts on %s (queue %u) for %.0f s: does the worker check LISTEN_PID? "
                            "run it with exec (not behind 'sh -c', runuser or another process that forks)",
                            address_format(&w->listener->address, addr), len, (double) STALL_USEC / USEC_PER_SEC);
                set_note(s);
        }
        return w->since || w->stalled;
}

static int on_sample(sd_event_source *source, uint64_t usec, void *userdata) {
        Stall *s = userdata;
        usec_t t = now(s);
        bool again = t < s->window_end;

        for (size_t i = 0; i < s->n; i++)
                again = sample(s, &s->watched[i], t) || again;
        if (again) {
                (void) sd_event_source_set_time_relative(source, SAMPLE_USEC);
                (void) sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
        }
        return 0;
}

void stall_worker_ready(Stall *s) {
        if (!s || s->n == 0)
                return;
        s->window_end = now(s) + WINDOW_USEC;
        if (sd_event_source_get_enabled(s->timer, NULL) > 0)
                return;
        (void) sd_event_source_set_time_relative(s->timer, SAMPLE_USEC);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

const char *stall_note(const Stall *s) {
        return s ? s->note : "";
}

Stall *stall_new(sd_event *event, const Listener *listeners, size_t n, sd_event_source *status) {
        Stall *s = calloc(1, sizeof *s);
        int r;

        if (!s)
                return NULL;
        s->event = event;
        s->status = status;
        s->watched = calloc(n ? n : 1, sizeof *s->watched);
        if (!s->watched)
                return stall_free(s);
        for (size_t i = 0; i < n; i++) {
                unsigned len, max;

                /* TCP listeners only: the kernel reports no queue for the others. */
                if (listen_queue(listeners[i].fd, &len, &max))
                        s->watched[s->n++].listener = &listeners[i];
        }
        r = sd_event_add_time_relative(event, &s->timer, CLOCK_MONOTONIC, SAMPLE_USEC, 100 * USEC_PER_MSEC,
                                       on_sample, s);
        if (r < 0) {
                log_warning_errno(r, "Cannot watch the accept queues: %m");
                return stall_free(s);
        }
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        return s;
}

Stall *stall_free(Stall *s) {
        if (!s)
                return NULL;
        sd_event_source_disable_unref(s->timer);
        free(s->watched);
        free(s);
        return NULL;
}
