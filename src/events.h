/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "util.h"

/* `bindonce ctl events`: the life of an instance, live, one line per event, to every client
 * that follows it. Each follower has a bounded buffer, sent when its socket is writable:
 * the loop never waits for one, and one that falls behind by more than the bound is
 * dropped (told so in a last line when it can take one), without touching the others. */

typedef enum EventKind {
        EVENT_STARTED,          /* slot, pid, generation, n: 1 for a roll's replacement */
        EVENT_READY,            /* slot, pid */
        EVENT_EXITED,           /* slot, pid, code, status, text: "worker", "new worker", "retired worker" */
        EVENT_BACKOFF,          /* slot, delay, n: early exits in a row */
        EVENT_ROLL,             /* step; see event_format() for the fields of each step */
        EVENT_SCALE,            /* n: from, m: to */
        EVENT_WATCHDOG,         /* slot, pid, text: what happened */
        EVENT_STOPPING,         /* bindonce stops */
        EVENT_DROPPED,          /* the follower's last line: it read too slowly */
        _EVENT_KIND_MAX,
} EventKind;

typedef struct Event {
        EventKind kind;
        int slot;               /* -1: none */
        pid_t pid;              /* 0: none */
        unsigned generation;
        unsigned n, m;
        int code, status;       /* EVENT_EXITED: si_code, si_status */
        usec_t delay;
        const char *step;       /* EVENT_ROLL: start, replaced, rollback, complete, failed */
        const char *text;
} Event;

/* A line is at most this long; longer texts are cut. */
#define EVENT_LINE_MAX 1024
/* What a follower may fall behind by, in bindonce (its socket buffer holds more). */
#define FOLLOWER_BUFFER_MAX (16 * 1024)
/* Followers at once; the next one is refused. */
#define FOLLOWERS_MAX 32

const char *event_kind_to_string(EventKind k);

/* Pure: one event as a line ending in '\n', text or JSON, at time `now` (seconds since the
 * epoch). Returns its length. */
size_t event_format(const Event *ev, bool json, double now, char *buf, size_t size);

typedef struct Events Events;

int events_new(Events **ret, sd_event *event);
/* Sends what each follower can take at once, then closes them. */
Events *events_free(Events *e);

/* The connected client on fd follows from now on, "OK\n" first. Takes fd on success;
 * -EBUSY with FOLLOWERS_MAX followers already. */
int events_follow(Events *e, int fd, bool json);

/* To every follower; nothing without followers (e may be NULL). */
void events_emit(Events *e, const Event *ev);

unsigned events_followers(const Events *e);
