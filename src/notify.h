/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

typedef struct NotifyServer NotifyServer;

/* What one datagram says, as systemd reads it: newline-separated assignments, the last
 * of each kind wins, anything we do not know is ignored. */
typedef struct NotifyMessage {
        bool ready;                     /* READY=1 */
        bool stopping;                  /* STOPPING=1 */
        bool watchdog_ping;             /* WATCHDOG=1 */
        bool watchdog_trigger;          /* WATCHDOG=trigger */
        bool has_status;
        char status[256];               /* STATUS=, cut at a character boundary; UTF-8 only */
} NotifyMessage;

/* Pure: the unit tests feed it datagrams. */
void notify_parse(const char *msg, size_t len, NotifyMessage *ret);

/* Asked first, before anything about a datagram is logged: may this sender (the pid the
 * kernel vouches for) notify at all? What it refuses is dropped and counted, unlogged. */
typedef bool (*NotifySenderCheck)(void *userdata, pid_t sender);

/* Called for every well-formed datagram of an accepted sender. */
typedef void (*NotifyHandler)(void *userdata, pid_t sender, const NotifyMessage *m);

/* The workers' NOTIFY_SOCKET: one abstract unix datagram socket, senders identified by the
 * kernel's SCM_CREDENTIALS, never by what they say. Returns -errno. */
int notify_server_new(NotifyServer **ret, sd_event *event, NotifySenderCheck check, NotifyHandler handler,
                      void *userdata);
NotifyServer *notify_server_free(NotifyServer *n);

/* "@bindonce/PID/RANDOM", for NOTIFY_SOCKET=. */
const char *notify_server_address(const NotifyServer *n);

/* Upgrade in place: the socket the previous bindonce bound at `address` (the workers have it
 * in NOTIFY_SOCKET), and its fd for the state. The fd is ours once this succeeds. */
int notify_server_adopt(NotifyServer **ret, sd_event *event, int fd, const char *address,
                        NotifySenderCheck check, NotifyHandler handler, void *userdata);
int notify_server_fd(const NotifyServer *n);
