/* SPDX-License-Identifier: MIT */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "journal_native.h"
#include "util.h"

int journal_level_prefix(const char **text, size_t *len, int def) {
        const char *t = *text;
        size_t end = 0;
        int level = 0;

        /* journald's syslog_parse_priority() without a facility: up to three digits between
         * '<' and the first '>', their value at most 7. */
        if (*len < 3 || t[0] != '<')
                return def;
        for (size_t i = 1; i < *len && i <= 4; i++)
                if (t[i] == '>') {
                        end = i;
                        break;
                }
        if (end < 2)
                return def;
        for (size_t i = 1; i < end; i++) {
                if (t[i] < '0' || t[i] > '9')
                        return def;
                level = level * 10 + (t[i] - '0');
        }
        if (level > LOG_DEBUG)
                return def;
        *text += end + 1;
        *len -= end + 1;
        return level;
}

int journal_connect(void) {
        static const struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET };
        /* As sd-journal does: a large send buffer, so that a burst rarely has to wait. The
         * kernel caps it at net.core.wmem_max. */
        int size = 8 * 1024 * 1024;
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        /* Connected, not sendto(): only then does EPOLLOUT wait for room in journald's queue,
         * and not merely in our own send buffer. */
        if (connect(fd, (const struct sockaddr *) &sa, sizeof sa) < 0)
                return -errno;
        return TAKE_FD(fd);
}

int journal_send_line(int fd, const JournalLine *l, bool credentials) {
        const char *text = l->text;
        size_t len = l->len;
        int level = journal_level_prefix(&text, &len, LOG_INFO);
        /* The identifier is a --name: at most 255 printable bytes, no newline. */
        char head[384];
        uint64_t size = htole64(len);
        int n = snprintf(head, sizeof head, "PRIORITY=%d\nSYSLOG_IDENTIFIER=%s\nSYSLOG_PID=%d\nBINDONCE_SLOT=%u\nMESSAGE\n",
                         level, l->identifier, (int) l->pid, l->slot);
        union {
                struct cmsghdr header;
                char buf[CMSG_SPACE(sizeof(struct ucred))];
        } control = {};
        struct iovec iov[] = {
                { .iov_base = head, .iov_len = (size_t) n },
                { .iov_base = &size, .iov_len = sizeof size },
                { .iov_base = (void *) text, .iov_len = len },
                { .iov_base = (void *) "\n", .iov_len = 1 },
        };
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = ELEMENTSOF(iov) };

        if (n < 0 || (size_t) n >= sizeof head)
                return -ENAMETOOLONG;
        if (credentials) {
                struct ucred cred = { .pid = l->pid, .uid = l->uid, .gid = l->gid };
                struct cmsghdr *c;

                mh.msg_control = &control;
                mh.msg_controllen = sizeof control.buf;
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_CREDENTIALS;
                c->cmsg_len = CMSG_LEN(sizeof cred);
                memcpy(CMSG_DATA(c), &cred, sizeof cred);
        }
        if (sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                return errno == EINTR ? -EAGAIN : -errno;
        return 0;
}
