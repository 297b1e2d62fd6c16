/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "address.h"
#include "log.h"
#include "stall.h"
#include "util.h"

/* A queue that has not shrunk once in this long, while not empty, is looked at closely:
 * nobody accepts if the connections queued then are still queued now. */
#define STALL_USEC (5 * USEC_PER_SEC)
/* Queued connections remembered per socket: enough to tell "the head has not moved". */
#define QUEUED_MAX 8
/* "0100007F:1F90 0100007F:C350" (tcp) or the 32-digit IPv6 form (tcp6): local, remote. */
#define ENDPOINTS_MAX 96
#define SAMPLE_USEC USEC_PER_SEC
/* Once connections are seen accepted, the socket is left alone this long. */
#define REST_USEC (5 * USEC_PER_SEC)

static inline void fclosep(FILE **f) {
        if (*f)
                (void) fclose(*f);
}

/* A socket is ARMED (a one-shot EPOLLIN source: bindonce sleeps until a connection waits),
 * then SAMPLED once a second until its queue is empty or seen to move, then RESTING, then
 * ARMED again. Idle, it costs no wakeup; under load about one a second. bindonce never
 * accepts on it: the one-shot source only tells it that something waits. */
typedef enum WatchState {
        WATCH_OFF,              /* no worker was ready yet */
        WATCH_ARMED,
        WATCH_SAMPLED,
        WATCH_RESTING,
} WatchState;

typedef struct Stall Stall;

typedef struct Watched {
        Stall *stall;
        const Listener *listener;
        sd_event_source *io;
        WatchState state;
        usec_t until;           /* RESTING: until then */
        unsigned last;          /* queue length at the last sample */
        usec_t since;           /* not empty and never shrunk since then */
        bool stalled;           /* said so */
        unsigned port;
        char queued[QUEUED_MAX][ENDPOINTS_MAX];  /* what was queued at the last look */
        size_t n_queued;
} Watched;

struct Stall {
        sd_event *event;
        sd_event_source *timer;
        sd_event_source *status;
        Watched *watched;
        size_t n;
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

static void timer_start(Stall *s) {
        if (sd_event_source_get_enabled(s->timer, NULL) > 0)
                return;
        (void) sd_event_source_set_time_relative(s->timer, SAMPLE_USEC);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

static void arm(Watched *w) {
        w->state = WATCH_ARMED;
        (void) sd_event_source_set_enabled(w->io, SD_EVENT_ONESHOT);
}

/* The connections waiting in the accept queue of a listener on `port`, from the kernel's
 * table: established (or closed by the client) and not yet any process's (inode 0).
 * Accepted connections have an inode; a closed one has left these states. */
static size_t read_queued(const char *table, unsigned port, char (*out)[ENDPOINTS_MAX], size_t n, size_t max) {
        _cleanup_(fclosep) FILE *f = fopen(table, "re");
        char line[512], local[48], remote[48];
        unsigned st, lport;
        unsigned long inode;

        if (!f)
                return n;
        while (n < max && fgets(line, sizeof line, f))
                if (sscanf(line, " %*u: %47s %47s %x %*s %*s %*s %*u %*u %lu", local, remote, &st, &inode) == 4 &&
                    inode == 0 && (st == 0x01 || st == 0x08) &&
                    sscanf(strchrnul(local, ':'), ":%x", &lport) == 1 && lport == port)
                        snprintf(out[n++], ENDPOINTS_MAX, "%s %s", local, remote);
        return n;
}

/* Looks at what is queued now; true if something queued at the last look still is: the
 * queue is first in, first out, so then nobody accepted one connection in between. */
static bool head_stayed(Watched *w) {
        char now_queued[QUEUED_MAX][ENDPOINTS_MAX];
        size_t n = read_queued("/proc/net/tcp", w->port, now_queued, 0, QUEUED_MAX);
        bool stayed = false;

        n = read_queued("/proc/net/tcp6", w->port, now_queued, n, QUEUED_MAX);
        for (size_t i = 0; i < w->n_queued && !stayed; i++)
                for (size_t j = 0; j < n && !stayed; j++)
                        stayed = strcmp(w->queued[i], now_queued[j]) == 0;
        memcpy(w->queued, now_queued, n * sizeof now_queued[0]);
        w->n_queued = n;
        return stayed;
}

static void say_stalled(Stall *s, Watched *w) {
        char addr[ADDRESS_FORMAT_MAX];

        w->stalled = true;
        log_warning("no worker accepts on %s (queue %u): nothing was accepted for %.0f s; does the worker "
                    "check LISTEN_PID? run it with exec (not behind 'sh -c', runuser or another process "
                    "that forks)",
                    address_format(&w->listener->address, addr), w->last, (double) STALL_USEC / USEC_PER_SEC);
        set_note(s);
}

/* One sample of a SAMPLED socket: it goes RESTING once its queue is empty or moves. */
static void sample(Stall *s, Watched *w, usec_t t) {
        char addr[ADDRESS_FORMAT_MAX];
        unsigned len, max;
        bool moved;

        if (!listen_queue(w->listener->fd, &len, &max))
                return;
        moved = len == 0 || len < w->last;
        w->last = len;
        /* Not shrunk for a while: a busy server with a steady queue looks the same as a dead
         * one from the queue length alone. Note what is queued, and look again later. */
        if (!moved && t - w->since >= STALL_USEC) {
                bool first = w->n_queued == 0, stayed = head_stayed(w);

                w->since = t;
                if (stayed && !w->stalled)
                        say_stalled(s, w);
                moved = !stayed && !first;
        }
        if (!moved)
                return;
        if (w->stalled) {
                w->stalled = false;
                log_notice("connections are accepted on %s again", address_format(&w->listener->address, addr));
                set_note(s);
        }
        w->n_queued = 0;
        w->state = WATCH_RESTING;
        w->until = t + REST_USEC;
}

static int on_sample(sd_event_source *source, uint64_t usec, void *userdata) {
        Stall *s = userdata;
        usec_t t = now(s);
        bool again = false;

        for (size_t i = 0; i < s->n; i++) {
                Watched *w = &s->watched[i];

                if (w->state == WATCH_SAMPLED)
                        sample(s, w, t);
                else if (w->state == WATCH_RESTING && t >= w->until)
                        arm(w);
                again = again || w->state == WATCH_SAMPLED || w->state == WATCH_RESTING;
        }
        if (again)
                timer_start(s);
        return 0;
}

/* A connection waits: sample from now on. */
static int on_waiting(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        Watched *w = userdata;
        unsigned max;

        w->state = WATCH_SAMPLED;
        w->since = now(w->stall);
        w->n_queued = 0;
        if (!listen_queue(fd, &w->last, &max))
                w->last = 0;
        timer_start(w->stall);
        return 0;
}

void stall_worker_ended(Stall *s) {
        bool said = false;

        for (size_t i = 0; s && i < s->n; i++) {
                Watched *w = &s->watched[i];

                if (w->state == WATCH_SAMPLED) {
                        w->since = now(s);
                        w->n_queued = 0;
                }
                said = said || w->stalled;
                w->stalled = false;
        }
        if (said)
                set_note(s);
}

void stall_worker_ready(Stall *s) {
        for (size_t i = 0; s && i < s->n; i++)
                if (s->watched[i].state == WATCH_OFF)
                        arm(&s->watched[i]);
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
        r = sd_event_add_time_relative(event, &s->timer, CLOCK_MONOTONIC, SAMPLE_USEC, 100 * USEC_PER_MSEC,
                                       on_sample, s);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                Watched *w = &s->watched[s->n];
                unsigned len, max;

                /* TCP listeners only: the kernel reports no queue for the others. */
                if (!listen_queue(listeners[i].fd, &len, &max))
                        continue;
                *w = (Watched) { .stall = s, .listener = &listeners[i], .port = address_port(&listeners[i].address) };
                r = sd_event_add_io(event, &w->io, listeners[i].fd, EPOLLIN, on_waiting, w);
                if (r >= 0)
                        r = sd_event_source_set_enabled(w->io, SD_EVENT_OFF);
                s->n++;
        }
        if (r < 0) {
                log_warning_errno(r, "Cannot watch the accept queues: %m");
                return stall_free(s);
        }
        return s;
}

Stall *stall_free(Stall *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n; i++)
                sd_event_source_disable_unref(s->watched[i].io);
        sd_event_source_disable_unref(s->timer);
        free(s->watched);
        free(s);
        return NULL;
}
