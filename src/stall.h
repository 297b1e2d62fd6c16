/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-event.h>

#include "listener.h"

/* "Nobody accepts": a worker counts as ready, yet the accept queue of a socket only grows.
 * The usual cause is a process between bindonce and the server (`sh -c 'cd x && app'`
 * without exec, runuser, a file watcher): the server's LISTEN_PID is not its own pid, so
 * sd_listen_fds() returns 0 and it never touches the socket. Said once per episode, in
 * the log and in a note for the status line. */
typedef struct Stall Stall;

/* Watches the TCP sockets among `listeners` (the only ones whose queue the kernel reports).
 * `status` (may be NULL) is enabled once whenever the note changes. NULL on failure (the
 * check is advice: bindonce runs without it). */
Stall *stall_new(sd_event *event, const Listener *listeners, size_t n, sd_event_source *status);
Stall *stall_free(Stall *s);

/* The hook: a worker became ready. From the first, each socket is watched for a waiting
 * connection (one-shot EPOLLIN: no wakeup while idle), then its queue read once a second
 * until it is empty or moves. */
void stall_worker_ready(Stall *s);

/* The hook: a worker ended. Its death, not a worker that never calls accept(), may be why
 * the queue stood still: every window starts again (a crash loop is no stall). */
void stall_worker_ended(Stall *s);

/* "" or "; no worker accepts on ADDR (queue N): ...", for STATUS=. */
const char *stall_note(const Stall *s);
