/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "address.h"
#include "sdnotify.h"
#include "util.h"

static int notify_fd = -1;

int sdnotify_open(void) {
        const char *e = getenv("NOTIFY_SOCKET"), *why;
        SocketAddress a;

        if (!e || !*e)
                return 0;
        if (notify_fd >= 0)
                return 1;
        /* A path, or '@' for the abstract namespace, as sd_notify() takes them. */
        if ((e[0] != '/' && e[0] != '@') || address_parse(e, SOCK_DGRAM, &a, &why) < 0)
                return -EINVAL;

        notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (notify_fd < 0)
                return -errno;
        if (connect(notify_fd, &a.sa, a.size) < 0) {
                int r = -errno;
                sdnotify_close();
                return r;
        }
        return 1;
}

int sdnotify_send_nowait(const char *message) {
        if (notify_fd < 0)
                return -ENOTCONN;
        return send(notify_fd, message, strlen(message), MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

void sdnotify_close(void) {
        closep(&notify_fd);
        notify_fd = -1;
}
