/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "address.h"
#include "log.h"
#include "sdnotify.h"
#include "util.h"

/* What waits for room in systemd's queue: a handful of state changes at most, unless PID 1
 * has stopped reading; beyond this the oldest go, said once. */
#define QUEUE_MAX 32

static int notify_fd = -1;
static sd_event_source *notify_io;      /* EPOLLOUT while messages wait */
static char *queue[QUEUE_MAX];
static size_t queued, dropped;

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
        /* Connected: EPOLLOUT then says whether systemd's queue has room. */
        if (connect(notify_fd, &a.sa, a.size) < 0) {
                int r = -errno;
                sdnotify_close();
                return r;
        }
        return 1;
}

static int send_now(const char *message) {
        return send(notify_fd, message, strlen(message), MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -errno : 0;
}

int sdnotify_send_nowait(const char *message) {
        if (notify_fd < 0)
                return -ENOTCONN;
        /* Behind what must arrive: the next of those carries the status anyway. */
        if (queued > 0)
                return -EAGAIN;
        return send_now(message);
}

static void queue_flush(void) {
        size_t sent = 0;

        while (sent < queued && send_now(queue[sent]) != -EAGAIN)
                free(queue[sent++]);    /* sent, or refused for good: not tried again */
        memmove(queue, queue + sent, (queued - sent) * sizeof *queue);
        queued -= sent;
        if (queued == 0 && dropped > 0) {
                log_warning("systemd did not read its notify socket for a while: %zu state changes were not told",
                            dropped);
                dropped = 0;
        }
        (void) sd_event_source_set_enabled(notify_io, queued > 0 ? SD_EVENT_ON : SD_EVENT_OFF);
}

static int on_notify_writable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        queue_flush();
        return 0;
}

int sdnotify_attach(sd_event *e) {
        int r;

        if (notify_fd < 0 || notify_io)
                return 0;
        r = sd_event_add_io(e, &notify_io, notify_fd, EPOLLOUT, on_notify_writable, NULL);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(notify_io, SD_EVENT_OFF);
}

void sdnotify_send(const char *message) {
        if (notify_fd < 0 || !notify_io) {
                /* No socket of ours (or no loop yet): libsystemd's sender, which may wait. */
                (void) sd_notify(0, message);
                return;
        }
        if (queued == 0 && send_now(message) != -EAGAIN)
                return;
        if (queued == QUEUE_MAX) {
                free(queue[0]);
                memmove(queue, queue + 1, --queued * sizeof *queue);
                dropped++;
        }
        queue[queued] = strdup(message);
        if (queue[queued])
                queued++;
        else
                dropped++;
        (void) sd_event_source_set_enabled(notify_io, SD_EVENT_ON);
}

void sdnotify_sendf(const char *fmt, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&message, fmt, ap);
        va_end(ap);
        if (r >= 0)
                sdnotify_send(message);
}

void sdnotify_close(void) {
        notify_io = sd_event_source_disable_unref(notify_io);
        for (size_t i = 0; i < queued; i++)
                free(queue[i]);
        queued = dropped = 0;
        closep(&notify_fd);
        notify_fd = -1;
}
