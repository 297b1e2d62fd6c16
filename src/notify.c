/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "address.h"
#include "log.h"
#include "notify.h"
#include "ratelimit.h"
#include "util.h"

/* systemd takes datagrams of up to PIPE_BUF for sd_notify(); anything longer is not ours. */
#define NOTIFY_MAX 4096

struct NotifyServer {
        NotifySenderCheck check;
        NotifyHandler handler;
        void *userdata;
        int fd;
        sd_event_source *io;
        char address[64];
        unsigned long dropped;          /* messages from processes that are not workers */
        RateLimit dropped_rl, oversize_rl;
};

static bool field(const char *line, size_t len, const char *key, const char **value, size_t *value_len) {
        size_t k = strlen(key);

        if (len < k || memcmp(line, key, k) != 0)
                return false;
        *value = line + k;
        *value_len = len - k;
        return true;
}

static bool is(const char *v, size_t vn, const char *want) {
        return vn == strlen(want) && memcmp(v, want, vn) == 0;
}

/* Cut long text at a character boundary; ignore text that is not UTF-8, as systemd does:
 * it is shown by ctl status, in JSON too. */
static void parse_status(const char *v, size_t vn, NotifyMessage *m) {
        if (vn >= sizeof m->status)
                for (vn = sizeof m->status - 1; vn > 0 && ((unsigned char) v[vn] & 0xc0) == 0x80; vn--)
                        ;
        if (!utf8_valid((const unsigned char *) v, vn))
                return;
        memcpy(m->status, v, vn);
        m->status[vn] = '\0';
        m->has_status = true;
}

void notify_parse(const char *msg, size_t len, NotifyMessage *ret) {
        NotifyMessage m = {};

        for (const char *p = msg, *end = msg + len; p < end;) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                size_t n = nl ? (size_t) (nl - p) : (size_t) (end - p);
                const char *v;
                size_t vn;

                if (field(p, n, "READY=", &v, &vn))
                        m.ready = is(v, vn, "1");
                else if (field(p, n, "STATUS=", &v, &vn))
                        parse_status(v, vn, &m);
                else if (field(p, n, "STOPPING=", &v, &vn))
                        m.stopping = is(v, vn, "1");
                else if (field(p, n, "WATCHDOG=", &v, &vn)) {
                        m.watchdog_ping = is(v, vn, "1");
                        m.watchdog_trigger = is(v, vn, "trigger");
                }
                /* Anything else (MAINPID=, ERRNO=, FDSTORE=, ...) means nothing to us. */
                p += n + 1;
        }
        *ret = m;
}

static int on_notify(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        NotifyServer *n = userdata;

        /* Drain what is queued, but yield to the loop after a batch: a chatty worker must
         * not starve the others. */
        for (int batch = 0; batch < 64; batch++) {
                char buf[NOTIFY_MAX + 1];
                union {
                        struct cmsghdr align;
                        char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 16)];
                } control;
                struct iovec iov = { buf, sizeof buf };
                struct msghdr mh = {
                        .msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = &control,
                        .msg_controllen = sizeof control,
                };
                const struct ucred *cred = NULL;
                ssize_t len;

                len = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
                if (len < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        log_warning_errno(errno, "Cannot read the workers' notify socket: %m");
                        return 0;
                }

                for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                        if (c->cmsg_level != SOL_SOCKET)
                                continue;
                        if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred)))
                                cred = (const struct ucred *) CMSG_DATA(c);
                        else if (c->cmsg_type == SCM_RIGHTS) {
                                /* We keep no fds for workers: close whatever came. */
                                const int *fds = (const int *) CMSG_DATA(c);
                                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                                for (size_t i = 0; i < k; i++)
                                        (void) close(fds[i]);
                        }
                }
                /* The sender first: the socket's address is in /proc/net/unix, and what
                 * does not come from a worker is dropped unlogged (counted), so that no
                 * local user can fill our log. A worker's own flood is rate-limited. */
                if (!cred || cred->pid <= 0 ||
                    !n->check(n->userdata, cred->pid)) {
                        n->dropped++;
                        (void) log_ratelimited(&n->dropped_rl, LOG_DEBUG, 0,
                                               "notify messages from processes that are not workers: %lu dropped",
                                               n->dropped);
                        continue;
                }
                if (mh.msg_flags & MSG_CTRUNC) {
                        log_debug("notify message with too much control data: ignored");
                        continue;
                }
                if ((mh.msg_flags & MSG_TRUNC) || len > NOTIFY_MAX) {
                        (void) log_ratelimited(&n->oversize_rl, LOG_WARNING, 0,
                                               "notify message of more than %d bytes from pid %d: ignored",
                                               NOTIFY_MAX, (int) cred->pid);
                        continue;
                }
                NotifyMessage m;
                notify_parse(buf, (size_t) len, &m);
                n->handler(n->userdata, cred->pid, &m);
        }
        return 0;
}

int notify_server_new(NotifyServer **ret, sd_event *event, NotifySenderCheck check, NotifyHandler handler,
                      void *userdata) {
        NotifyServer *n = calloc(1, sizeof *n);
        SocketAddress a;
        const char *why;
        int one = 1, r;

        if (!n)
                return -ENOMEM;
        n->check = check;
        n->handler = handler;
        n->userdata = userdata;
        n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (n->fd < 0) {
                r = -errno;
                goto fail;
        }
        if (setsockopt(n->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
                r = -errno;
                goto fail;
        }
        /* Abstract: nothing to clean up on disk, and it dies with us. A random part, so that
         * nobody can squat the name before we bind it. */
        snprintf(n->address, sizeof n->address, "@bindonce/%d/%08x", (int) getpid(), arc4random());
        r = address_parse(n->address, SOCK_DGRAM, &a, &why);
        if (r < 0)
                goto fail;
        if (bind(n->fd, &a.sa, a.size) < 0) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_io(event, &n->io, n->fd, EPOLLIN, on_notify, n);
        if (r < 0)
                goto fail;

        *ret = n;
        return 0;
fail:
        notify_server_free(n);
        return r;
}

NotifyServer *notify_server_free(NotifyServer *n) {
        if (!n)
                return NULL;
        sd_event_source_disable_unref(n->io);
        if (n->fd >= 0)
                (void) close(n->fd);
        free(n);
        return NULL;
}

const char *notify_server_address(const NotifyServer *n) {
        return n->address;
}

int notify_server_adopt(NotifyServer **ret, sd_event *event, int fd, const char *address,
                        NotifySenderCheck check, NotifyHandler handler, void *userdata) {
        NotifyServer *n;
        int r;

        if (strlen(address) >= sizeof n->address)
                return -EINVAL;
        n = calloc(1, sizeof *n);
        if (!n)
                return -ENOMEM;
        *n = (NotifyServer) { .check = check, .handler = handler, .userdata = userdata, .fd = fd };
        snprintf(n->address, sizeof n->address, "%s", address);
        r = sd_event_add_io(event, &n->io, n->fd, EPOLLIN, on_notify, n);
        if (r < 0) {
                n->fd = -1;     /* still the caller's */
                notify_server_free(n);
                return r;
        }
        *ret = n;
        return 0;
}

int notify_server_fd(const NotifyServer *n) {
        return n->fd;
}
