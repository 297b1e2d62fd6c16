/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-event.h>

/* bindonce's messages to systemd, through a non-blocking socket of our own: a stalled
 * reader must never stall the supervisor. STATUS= updates are frequent (every spawn and
 * death) and only the latest matters: they are dropped when systemd's queue is full. What
 * must arrive (READY=1, RELOADING=1, STOPPING=1) waits in order, in a bounded queue sent
 * from the loop once the queue has room. */

/* Connects to $NOTIFY_SOCKET. Returns 1 if there is one, 0 if not, or -errno. */
int sdnotify_open(void);
/* The queue's EPOLLOUT source on the loop. Returns -errno. */
int sdnotify_attach(sd_event *e);

/* Sends one datagram without waiting; -EAGAIN when systemd's queue is full (or messages
 * that must arrive wait before it). */
int sdnotify_send_nowait(const char *message);

/* A message that must arrive: sent now, or queued behind those that wait. Without our
 * socket (none was opened), libsystemd's sd_notify(). */
void sdnotify_send(const char *message);
void sdnotify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void sdnotify_close(void);
