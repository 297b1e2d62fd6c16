/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "events.h"
#include "log.h"

/* A dropped follower gets this long to take its last line. */
#define DROP_LINGER_USEC (1 * USEC_PER_SEC)
/* The log says a follower was dropped at most this often (a slow follower may reconnect
 * and be dropped again and again). */
#define DROP_LOG_USEC (10 * USEC_PER_SEC)
/* SO_SNDBUF of a follower's socket (the kernel doubles it for its bookkeeping). */
#define FOLLOWER_SNDBUF (16 * 1024)

typedef struct Follower Follower;

struct Follower {
        Events *events;
        int fd;
        sd_event_source *io;
        sd_event_source *linger;        /* dropping: closed when it fires */
        bool json;
        bool dropping;
        bool partial;                   /* a line is partly sent: pos is inside it */
        char buf[FOLLOWER_BUFFER_MAX];
        size_t pos, len;                /* sent up to pos, queued up to len */
        Follower *next;
};

struct Events {
        sd_event *event;
        Follower *followers;
        unsigned n_followers;
        usec_t drop_logged;
        unsigned drops_unlogged;
};

static const char *const kind_names[_EVENT_KIND_MAX] = {
        [EVENT_STARTED] = "started",
        [EVENT_READY] = "ready",
        [EVENT_EXITED] = "exited",
        [EVENT_BACKOFF] = "backoff",
        [EVENT_ROLL] = "reload",
        [EVENT_SCALE] = "scale",
        [EVENT_WATCHDOG] = "watchdog",
        [EVENT_STOPPING] = "stopping",
        [EVENT_DROPPED] = "dropped",
};

const char *event_kind_to_string(EventKind k) {
        return (unsigned) k < _EVENT_KIND_MAX ? kind_names[k] : "unknown";
}

/* ---- formatting ------------------------------------------------------------------------ */

typedef struct Line {
        char *buf;
        size_t size, len;               /* len < size: room for the newline is kept */
} Line;

static void add(Line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(Line *l, const char *fmt, ...) {
        va_list ap;
        int n;

        if (l->len + 2 >= l->size)
                return;
        va_start(ap, fmt);
        n = vsnprintf(l->buf + l->len, l->size - 1 - l->len, fmt, ap);
        va_end(ap);
        if (n > 0)
                l->len = l->len + (size_t) n < l->size - 1 ? l->len + (size_t) n : l->size - 2;
}

static void add_json_string(Line *l, const char *key, const char *s) {
        add(l, ",\"%s\":\"", key);
        for (const unsigned char *p = (const unsigned char *) (s ?: ""); *p; p++)
                if (*p == '"' || *p == '\\')
                        add(l, "\\%c", *p);
                else if (*p < 0x20)
                        add(l, "\\u%04x", *p);
                else
                        add(l, "%c", *p);
        add(l, "\"");
}

static const char *exit_code_name(int code) {
        return code == CLD_EXITED ? "exited" : code == CLD_DUMPED ? "dumped" : "killed";
}

static void format_json(Line *l, const Event *ev, double now) {
        add(l, "{\"time\":%.3f,\"event\":\"%s\"", now, event_kind_to_string(ev->kind));
        if (ev->slot >= 0)
                add(l, ",\"slot\":%d", ev->slot);
        if (ev->pid > 0)
                add(l, ",\"pid\":%d", (int) ev->pid);
        switch (ev->kind) {
        case EVENT_STARTED:
                add(l, ",\"generation\":%u,\"reload\":%s", ev->generation, ev->n ? "true" : "false");
                break;
        case EVENT_EXITED:
                add(l, ",\"code\":\"%s\",\"status\":%d", exit_code_name(ev->code), ev->status);
                add_json_string(l, "role", ev->text);
                break;
        case EVENT_BACKOFF:
                add(l, ",\"delay_ms\":%llu,\"failures\":%u", (unsigned long long) (ev->delay / USEC_PER_MSEC), ev->n);
                break;
        case EVENT_ROLL:
                add_json_string(l, "step", ev->step);
                add(l, ",\"generation\":%u,\"replaced\":%u,\"workers\":%u", ev->generation, ev->n, ev->m);
                if (ev->text)
                        add_json_string(l, "error", ev->text);
                break;
        case EVENT_SCALE:
                add(l, ",\"from\":%u,\"to\":%u", ev->n, ev->m);
                break;
        case EVENT_WATCHDOG:
        case EVENT_DROPPED:
                add_json_string(l, "reason", ev->text);
                break;
        default:
                break;
        }
        add(l, "}");
}

static void format_roll(Line *l, const Event *ev) {
        const char *step = ev->step ?: "";

        if (strcmp(step, "start") == 0)
                add(l, "reload: rolling %u workers to generation %u", ev->m, ev->generation);
        else if (strcmp(step, "replaced") == 0)
                add(l, "reload: worker %d replaced by pid %d (%u of %u)", ev->slot, (int) ev->pid, ev->n, ev->m);
        else if (strcmp(step, "rollback") == 0)
                add(l, "reload: %s; rolling back to generation %u", ev->text ?: "?", ev->generation);
        else if (strcmp(step, "complete") == 0)
                add(l, "reload complete: generation %u, %u workers replaced", ev->generation, ev->n);
        else
                add(l, "reload failed: %s", ev->text ?: "?");
}

static void format_text(Line *l, const Event *ev, double now) {
        time_t t = (time_t) now;
        struct tm tm;

        if (localtime_r(&t, &tm))
                add(l, "%02d:%02d:%02d.%03d ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                    (int) ((now - (double) t) * 1000) % 1000);
        switch (ev->kind) {
        case EVENT_STARTED:
                add(l, "worker %d started, pid %d, generation %u%s", ev->slot, (int) ev->pid, ev->generation,
                    ev->n ? " (reload)" : "");
                break;
        case EVENT_READY:
                add(l, "worker %d ready, pid %d", ev->slot, (int) ev->pid);
                break;
        case EVENT_EXITED:
                if (ev->code == CLD_EXITED)
                        add(l, "%s %d (pid %d) exited with status %d", ev->text ?: "worker", ev->slot,
                            (int) ev->pid, ev->status);
                else
                        add(l, "%s %d (pid %d) killed by signal %s%s", ev->text ?: "worker", ev->slot, (int) ev->pid,
                            sigabbrev_np(ev->status) ?: "?", ev->code == CLD_DUMPED ? " (core dumped)" : "");
                break;
        case EVENT_BACKOFF:
                add(l, "worker %d restarting in %llu ms (%u early exits in a row)", ev->slot,
                    (unsigned long long) (ev->delay / USEC_PER_MSEC), ev->n);
                break;
        case EVENT_ROLL:
                format_roll(l, ev);
                break;
        case EVENT_SCALE:
                add(l, "scale: %u -> %u workers", ev->n, ev->m);
                break;
        case EVENT_WATCHDOG:
                add(l, "worker %d (pid %d) watchdog: %s", ev->slot, (int) ev->pid, ev->text ?: "?");
                break;
        case EVENT_STOPPING:
                add(l, "bindonce stopping");
                break;
        case EVENT_DROPPED:
                add(l, "dropped: %s", ev->text ?: "?");
                break;
        case _EVENT_KIND_MAX:
                break;
        }
}

size_t event_format(const Event *ev, bool json, double now, char *buf, size_t size) {
        Line l = { buf, size, 0 };

        if (size < 2)
                return 0;
        if (json)
                format_json(&l, ev, now);
        else
                format_text(&l, ev, now);
        buf[l.len++] = '\n';
        buf[l.len] = '\0';
        return l.len;
}

static double now_realtime(void) {
        return (double) clock_usec(CLOCK_REALTIME) / USEC_PER_SEC;
}

/* ---- followers ------------------------------------------------------------------------- */

static Follower *follower_free(Follower *f) {
        Events *e;

        if (!f)
                return NULL;
        e = f->events;
        for (Follower **p = &e->followers; *p; p = &(*p)->next)
                if (*p == f) {
                        *p = f->next;
                        e->n_followers--;
                        break;
                }
        sd_event_source_disable_unref(f->io);
        sd_event_source_disable_unref(f->linger);
        closep(&f->fd);
        free(f);
        return NULL;
}

/* Sends what the socket takes. Returns 1 when all is sent, 0 when the rest must wait for
 * EPOLLOUT, -errno when the follower is gone. */
static int follower_flush(Follower *f) {
        while (f->pos < f->len) {
                ssize_t n = send(f->fd, f->buf + f->pos, f->len - f->pos, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return sd_event_source_set_io_events(f->io, EPOLLOUT) < 0 ? -ENOMEM : 0;
                        return -errno;
                }
                f->pos += (size_t) n;
                f->partial = f->buf[f->pos - 1] != '\n';
        }
        f->pos = f->len = 0;
        /* Nothing to send: only EPOLLHUP and EPOLLERR, always reported, tell it went away.
         * Not EPOLLIN: `ctl` shuts down its sending side, and EOF would be readable forever. */
        return sd_event_source_set_io_events(f->io, 0) < 0 ? -ENOMEM : 1;
}

static int on_follower_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Follower *f = userdata;
        int r;

        if (revents & (EPOLLHUP | EPOLLERR)) {
                follower_free(f);
                return 0;
        }
        r = follower_flush(f);
        if (r < 0 || (r > 0 && f->dropping))
                follower_free(f);
        return 0;
}

static int on_linger(sd_event_source *s, uint64_t usec, void *userdata) {
        follower_free(userdata);
        return 0;
}

static void log_drop(Events *e) {
        usec_t now = 0;

        (void) sd_event_now(e->event, CLOCK_MONOTONIC, &now);
        if (e->drop_logged && now - e->drop_logged < DROP_LOG_USEC) {
                e->drops_unlogged++;
                return;
        }
        if (e->drops_unlogged)
                log_notice("events: dropped a follower that read too slowly (%u more since the last such line)",
                           e->drops_unlogged);
        else
                log_notice("events: dropped a follower that read too slowly (more than %d bytes behind)",
                           FOLLOWER_BUFFER_MAX);
        e->drop_logged = now;
        e->drops_unlogged = 0;
}

/* Too far behind: what is queued goes, except the end of a line already partly sent; a
 * last line says why, and the follower is closed once that is sent, or after a second. */
static void follower_drop(Follower *f) {
        Event ev = { .kind = EVENT_DROPPED, .slot = -1, .text = "read too slowly; run 'bindonce ctl events' again" };
        char *nl = memchr(f->buf + f->pos, '\n', f->len - f->pos);
        size_t keep = f->partial && nl ? (size_t) (nl + 1 - (f->buf + f->pos)) : 0;

        log_drop(f->events);
        memmove(f->buf, f->buf + f->pos, keep);
        f->pos = 0;
        f->len = keep + event_format(&ev, f->json, now_realtime(), f->buf + keep, sizeof f->buf - keep);
        f->dropping = true;
        if (sd_event_add_time_relative(f->events->event, &f->linger, CLOCK_MONOTONIC, DROP_LINGER_USEC,
                                       10 * USEC_PER_MSEC, on_linger, f) < 0 ||
            follower_flush(f) != 0)
                follower_free(f);
}

static void follower_queue(Follower *f, const char *line, size_t n) {
        bool idle = f->pos == f->len;

        if (f->pos > 0 && f->len + n > sizeof f->buf) {
                memmove(f->buf, f->buf + f->pos, f->len - f->pos);
                f->len -= f->pos;
                f->pos = 0;
        }
        if (f->len + n > sizeof f->buf) {
                follower_drop(f);
                return;
        }
        memcpy(f->buf + f->len, line, n);
        f->len += n;
        /* Sent when the socket is writable: one send per loop turn however many events. */
        if (idle && sd_event_source_set_io_events(f->io, EPOLLOUT) < 0)
                follower_free(f);
}

void events_emit(Events *e, const Event *ev) {
        char text[EVENT_LINE_MAX], json[EVENT_LINE_MAX];
        size_t n_text = 0, n_json = 0;
        double now;
        Follower *next;

        if (!e || !e->followers)
                return;
        now = now_realtime();
        for (Follower *f = e->followers; f; f = next) {
                next = f->next;
                if (f->dropping)
                        continue;
                if (f->json && !n_json)
                        n_json = event_format(ev, true, now, json, sizeof json);
                else if (!f->json && !n_text)
                        n_text = event_format(ev, false, now, text, sizeof text);
                follower_queue(f, f->json ? json : text, f->json ? n_json : n_text);
        }
}

int events_follow(Events *e, int fd, bool json) {
        Follower *f;
        int r;

        if (e->n_followers >= FOLLOWERS_MAX)
                return -EBUSY;
        f = malloc(sizeof *f);
        if (!f)
                return -ENOMEM;
        *f = (Follower) { .events = e, .fd = -1, .json = json };
        /* The kernel's share of the bound: by default it would hold some 200 kB more. */
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &(int) { FOLLOWER_SNDBUF }, sizeof(int));
        r = sd_event_add_io(e->event, &f->io, fd, EPOLLOUT, on_follower_io, f);
        if (r < 0) {
                free(f);
                return r;
        }
        memcpy(f->buf, "OK\n", 3);
        f->len = 3;
        f->fd = fd;
        f->next = e->followers;
        e->followers = f;
        e->n_followers++;
        return 0;
}

unsigned events_followers(const Events *e) {
        return e ? e->n_followers : 0;
}

int events_new(Events **ret, sd_event *event) {
        Events *e = calloc(1, sizeof *e);

        if (!e)
                return -ENOMEM;
        e->event = event;
        *ret = e;
        return 0;
}

Events *events_free(Events *e) {
        if (!e)
                return NULL;
        while (e->followers) {
                Follower *f = e->followers;

                /* The last lines (the workers' exits), if the socket takes them now. */
                while (f->pos < f->len) {
                        ssize_t n = send(f->fd, f->buf + f->pos, f->len - f->pos, MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (n <= 0)
                                break;
                        f->pos += (size_t) n;
                }
                follower_free(f);
        }
        free(e);
        return NULL;
}
