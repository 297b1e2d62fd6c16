/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "listener.h"

typedef enum Balance {
        BALANCE_SHARED,         /* one socket per address, shared by every worker */
        BALANCE_REUSEPORT,      /* one SO_REUSEPORT socket per address and worker slot */
} Balance;

/* Can this listener get per-slot siblings? Inet sockets with SO_REUSEPORT set only: a unix
 * socket has no reuseport group, and a socket systemd bound without ReusePort=yes would
 * refuse a sibling. */
bool balance_supported(const Listener *l);

/* A new socket in the listener's reuseport group: same address, type and backlog. */
int balance_open_sibling(const Listener *l, int backlog);

/* Steers new connections of the group, at random, only to the sockets listed in `slots`
 * (the slots with a ready worker): a slot being removed drains its queue but gets nothing
 * new, and a slot whose worker is dead or crash-looping does not collect connections that
 * would wait for it. Sockets join a group in slot order and leave it from the top, so a
 * socket's index in the group is its slot. */
int balance_steer(int fd, const unsigned *slots, unsigned n);

/* net.ipv4.tcp_migrate_req: closing a reuseport socket hands its queue to the others. */
bool balance_migrate_enabled(void);
