/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "listener.h"
#include "util.h"

static int set_int_opt(int fd, int level, int opt, int value) {
        return setsockopt(fd, level, opt, &value, sizeof value) < 0 ? -errno : 0;
}

/* Is somebody accepting on the unix socket file at this path? */
static int unix_socket_in_use(const SocketAddress *a) {
        _cleanup_close_ int fd = socket(AF_UNIX, a->type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        if (fd < 0)
                return -errno;
        if (connect(fd, &a->sa, a->size) >= 0)
                return 1;
        /* EAGAIN: a listener whose queue is full is very much in use. */
        return errno == ECONNREFUSED ? 0 : errno == ENOENT ? 0 : 1;
}

int bind_unix_path(int fd, const SocketAddress *a) {
        struct stat st;
        int r;

        if (bind(fd, &a->sa, a->size) >= 0)
                return 0;
        if (errno != EADDRINUSE)
                return -errno;

        /* Something is at the path. Only a socket nobody accepts on may be replaced. */
        if (lstat(a->un.sun_path, &st) < 0)
                return -errno;
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST;
        r = unix_socket_in_use(a);
        if (r < 0)
                return r;
        if (r > 0)
                return -EADDRINUSE;
        if (unlink(a->un.sun_path) < 0 && errno != ENOENT)
                return -errno;

        return bind(fd, &a->sa, a->size) < 0 ? -errno : 0;
}

static int set_inet_options(int fd, int family, const ListenerOptions *o) {
        int r;

        /* SO_REUSEADDR lets a restarted bindonce bind while old connections sit in
         * TIME_WAIT. SO_REUSEPORT is opt-in: it lets any process of our uid join. */
        r = set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
        if (r >= 0 && o->reuse_port)
                r = set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1);
        /* [::]:PORT takes IPv4 too, whatever net.ipv6.bindv6only says, unless --ipv6-only. */
        if (r >= 0 && family == AF_INET6)
                r = set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, o->ipv6_only);
        /* IP_FREEBIND is read for IPv6 sockets too. */
        if (r >= 0 && o->freebind)
                r = set_int_opt(fd, IPPROTO_IP, IP_FREEBIND, 1);
        if (r >= 0 && o->bind_to_device &&
            setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, o->bind_to_device, (socklen_t) strlen(o->bind_to_device)) < 0)
                r = -errno;
        return r;
}

/* A unix socket file gets its mode at bind() (a umask that leaves exactly `mode`: nobody
 * may connect through a wider mode even for a moment) and its owner before listen(). */
static int bind_unix_file(Listener *l, int fd, const ListenerOptions *o) {
        const SocketAddress *a = &l->address;
        mode_t old = 0;
        struct stat st;
        int r;

        if (o->mode != (mode_t) -1)
                old = umask(~o->mode & 0777);
        r = bind_unix_path(fd, a);
        if (o->mode != (mode_t) -1)
                (void) umask(old);
        if (r < 0)
                return r;

        /* From here on the file is ours to remove, whatever fails next. */
        l->unlink_on_close = true;
        if (stat(a->un.sun_path, &st) >= 0) {
                l->dev = st.st_dev;
                l->ino = st.st_ino;
        }
        if ((o->uid != (uid_t) -1 || o->gid != (gid_t) -1) && lchown(a->un.sun_path, o->uid, o->gid) < 0)
                return -errno;
        return 0;
}

static int open_one(Listener *l, int family, const ListenerOptions *o) {
        const SocketAddress *a = &l->address;
        _cleanup_close_ int fd = -1;
        int r;

        fd = socket(family, a->type | SOCK_CLOEXEC | (o->nonblocking ? SOCK_NONBLOCK : 0), 0);
        if (fd < 0)
                return -errno;

        if (family != AF_UNIX) {
                r = set_inet_options(fd, family, o);
                if (r < 0)
                        return r;
        }

        if (family == AF_INET && a->port_only) {
                struct sockaddr_in in = {
                        .sin_family = AF_INET,
                        .sin_port = a->in6.sin6_port,
                        .sin_addr.s_addr = htonl(INADDR_ANY),
                };
                if (bind(fd, (struct sockaddr *) &in, sizeof in) < 0)
                        return -errno;
        } else if (address_is_unix_path(a)) {
                r = bind_unix_file(l, fd, o);
                if (r < 0)
                        return r;
        } else if (bind(fd, &a->sa, a->size) < 0)
                return -errno;

        if (a->type != SOCK_DGRAM && listen(fd, o->backlog) < 0)
                return -errno;

        l->fd = TAKE_FD(fd);
        return 0;
}

int listener_open_with(Listener *l, const ListenerOptions *o) {
        int r = open_one(l, address_family(&l->address), o);

        /* A bare PORT on a machine without IPv6 binds 0.0.0.0, as systemd does. */
        if (r == -EAFNOSUPPORT && l->address.port_only)
                r = open_one(l, AF_INET, o);
        if (r < 0)
                listener_close(l);
        return r;
}

int listener_open(Listener *l, int backlog, bool reuse_port) {
        ListenerOptions o = {
                .backlog = backlog,
                .reuse_port = reuse_port,
                .nonblocking = true,
                .mode = (mode_t) -1,
                .uid = (uid_t) -1,
                .gid = (gid_t) -1,
        };

        return listener_open_with(l, &o);
}

const char *listener_strerror(const Listener *l, int error) {
        bool unix_path = address_is_unix_path(&l->address);

        switch (-error) {
        case EADDRINUSE:
                return unix_path ? "a process is accepting on this socket already; stop it or choose another path"
                                 : "address already in use by another process; stop it or choose another port";
        case EACCES:
        case EPERM:
                if (unix_path)
                        return "permission denied creating the socket file; choose a writable directory";
                return address_port(&l->address) < 1024
                               ? "ports below 1024 need root or CAP_NET_BIND_SERVICE; run as root or choose a port >= 1024"
                               : "permission denied";
        case EEXIST:
                return "a file that is not a socket is in the way (left untouched); remove it or choose another path";
        case ENOENT:
                return "the directory does not exist; create it or choose another path";
        case ENOTDIR:
                return "a component of the path is not a directory";
        case EADDRNOTAVAIL:
                return "not an address of this machine; choose a local address, or add --freebind";
        case ENODEV:
                return "no such network interface (--bind-to-device); see 'ip link'";
        case EAFNOSUPPORT:
                return "this address family is not supported here";
        default:
                return NULL;
        }
}

void listener_close(Listener *l) {
        struct stat st;

        if (l->unlink_on_close && stat(l->address.un.sun_path, &st) >= 0 &&
            st.st_dev == l->dev && st.st_ino == l->ino)
                (void) unlink(l->address.un.sun_path);
        l->unlink_on_close = false;
        closep(&l->fd);
        l->fd = -1;
}

bool listen_queue(int fd, unsigned *len, unsigned *max) {
        struct tcp_info ti;
        socklen_t n = sizeof ti;

        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &n) < 0 || ti.tcpi_state != TCP_LISTEN)
                return false;
        *len = ti.tcpi_unacked;
        *max = ti.tcpi_sacked;
        return true;
}

bool fdname_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 255)
                return false;
        for (const char *p = s; *p; p++)
                if (*p < ' ' || *p > '~' || *p == ':')
                        return false;
        return true;
}
