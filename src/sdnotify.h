/* SPDX-License-Identifier: MIT */
#pragma once

/* bindonce's STATUS= updates to systemd. They are frequent (every spawn and death) and only
 * the latest matters, so they go through a non-blocking socket of our own and are dropped
 * when systemd's queue is full: a stalled reader must never stall the supervisor. What must
 * arrive (READY=1, RELOADING=1, STOPPING=1, FDSTORE=1) goes by sd_notify(), which waits. */

/* Connects to $NOTIFY_SOCKET. Returns 1 if there is one, 0 if not, or -errno. */
int sdnotify_open(void);

/* Sends one datagram without waiting; -EAGAIN when systemd's queue is full. */
int sdnotify_send_nowait(const char *message);

void sdnotify_close(void);
