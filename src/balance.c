/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balance.h"
#include "util.h"

bool balance_supported(const Listener *l) {
        int family = l->address.sa.sa_family, on = 0;
        socklen_t n = sizeof on;

        if (family != AF_INET && family != AF_INET6)
                return false;
        return getsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &on, &n) >= 0 && on;
}

int balance_open_sibling(const Listener *l, int backlog) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        _cleanup_close_ int fd = -1;
        int one = 1, v6only = 0, nonblock;
        socklen_t v6len = sizeof v6only;

        /* The address the listener really has (a bare PORT may have fallen back to IPv4). */
        if (getsockname(l->fd, (struct sockaddr *) &sa, &len) < 0)
                return -errno;
        /* The kernel groups SO_REUSEPORT sockets only when their IPV6_V6ONLY agrees: copy it
         * (a socket from systemd may have BindIPv6Only=ipv6-only). */
        if (sa.ss_family == AF_INET6 && getsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &v6len) < 0)
                return -errno;
        /* Blocking or not as the group's first socket (--nonblocking, or the service's
         * NonBlocking=): each worker sees its own, and they must not differ. */
        nonblock = fcntl(l->fd, F_GETFL);
        if (nonblock < 0)
                return -errno;
        fd = socket(sa.ss_family, l->address.type | SOCK_CLOEXEC | (nonblock & O_NONBLOCK ? SOCK_NONBLOCK : 0), 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
                return -errno;
        if (sa.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *) &sa, len) < 0)
                return -errno;
        if (l->address.type != SOCK_DGRAM && listen(fd, backlog) < 0)
                return -errno;
        return TAKE_FD(fd);
}

/* cBPF allows 4096 instructions: 3 of frame, 2 per listed slot. */
#define STEER_LIST_MAX 2000

int balance_steer(int fd, const unsigned *slots, unsigned n) {
        struct sock_filter code[3 + 2 * STEER_LIST_MAX + 1];
        struct sock_fprog prog = { .filter = code };
        bool identity = true;
        unsigned k = 0;

        if (n == 0)
                return -EINVAL;
        for (unsigned i = 0; i < n; i++)
                identity = identity && slots[i] == i;

        /* A = random % n */
        code[k++] = (struct sock_filter) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t) (SKF_AD_OFF + SKF_AD_RANDOM));
        code[k++] = (struct sock_filter) BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n);
        if (!identity && n <= STEER_LIST_MAX) {
                /* if A == i: return slots[i] */
                for (unsigned i = 0; i < n; i++) {
                        code[k++] = (struct sock_filter) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, i, 0, 1);
                        code[k++] = (struct sock_filter) BPF_STMT(BPF_RET | BPF_K, slots[i]);
                }
                code[k++] = (struct sock_filter) BPF_STMT(BPF_RET | BPF_K, slots[0]);
        } else
                /* The first n sockets (too many to list: no slot left out). */
                code[k++] = (struct sock_filter) BPF_STMT(BPF_RET | BPF_A, 0);
        prog.len = (unsigned short) k;

        return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) < 0 ? -errno : 0;
}

bool balance_migrate_enabled(void) {
        char c = '0';
        int fd = open("/proc/sys/net/ipv4/tcp_migrate_req", O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return false;
        if (read(fd, &c, 1) != 1)
                c = '0';
        (void) close(fd);
        return c == '1';
}
