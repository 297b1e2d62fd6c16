/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "address.h"

/* One listening socket, owned by the supervisor for its whole life. */
typedef struct Listener {
        SocketAddress address;
        char *name;             /* LISTEN_FDNAMES entry */
        int fd;
        /* A unix socket file bound by us: removed on exit, but only if the file at the path is
         * still the one we created (another instance may have taken the path since). */
        bool unlink_on_close;
        dev_t dev;
        ino_t ino;
} Listener;

/* Creates, binds and listens (stream, seqpacket). The fd is close-on-exec and non-blocking.
 * A stale unix socket at the path (nobody accepting) is replaced; any other file there is
 * never touched: -EEXIST. Returns -errno; logs nothing, the caller explains. */
int listener_open(Listener *l, int backlog, bool reuse_port);

/* The one-line explanation of a listener_open() failure, naming the fix. */
const char *listener_strerror(const Listener *l, int error);

void listener_close(Listener *l);

/* systemd's rule for FileDescriptorName=: 1..255 printable ASCII characters, no ':'. */
bool fdname_is_valid(const char *s);

/* The accept queue of a listening TCP socket: its length and limit (Linux reports them in
 * tcpi_unacked and tcpi_sacked while a socket listens). False for anything else. */
bool listen_queue(int fd, unsigned *len, unsigned *max);

/* bind() to a unix socket path, replacing a stale socket file (one nobody accepts on); any
 * other file is left alone: -EEXIST; a live socket: -EADDRINUSE. */
int bind_unix_path(int fd, const SocketAddress *a);
