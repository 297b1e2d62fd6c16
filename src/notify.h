/* SPDX-License-Identifier: MIT */
#pragma once

typedef struct Supervisor Supervisor;
typedef struct NotifyServer NotifyServer;

/* The workers' NOTIFY_SOCKET: one abstract unix datagram socket, senders identified by the
 * kernel's SCM_CREDENTIALS, never by what they say. Returns -errno. */
int notify_server_new(NotifyServer **ret, Supervisor *sup);
NotifyServer *notify_server_free(NotifyServer *n);

/* "@bindonce/PID/RANDOM", for NOTIFY_SOCKET=. */
const char *notify_server_address(const NotifyServer *n);
