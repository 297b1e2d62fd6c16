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

/* How a socket is made. */
typedef struct ListenerOptions {
        int backlog;
        bool reuse_port;
        /* O_NONBLOCK on the socket: off for the workers' sockets unless --nonblocking, as
         * systemd passes them; on for bindonce's own (the control socket). */
        bool nonblocking;
        bool ipv6_only;                 /* [::] takes IPv6 only (else IPv4 too) */
        bool freebind;                  /* IP_FREEBIND */
        const char *bind_to_device;     /* SO_BINDTODEVICE; NULL: any */
        mode_t mode;                    /* unix socket files; (mode_t) -1: 0777 less the umask */
        uid_t uid;                      /* unix socket files; (uid_t) -1: unchanged */
        gid_t gid;
} ListenerOptions;

/* Creates, binds and listens (stream, seqpacket). The fd is close-on-exec. A stale unix
 * socket at the path (nobody accepting) is replaced; any other file there is never touched:
 * -EEXIST. Returns -errno; logs nothing, the caller explains. */
int listener_open_with(Listener *l, const ListenerOptions *o);

/* A socket of bindonce's own: non-blocking, no options. */
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
