/* SPDX-License-Identifier: MIT */
/*
 * miniworker: the smallest socket-activated HTTP worker, built static by bench.py.
 *
 * No libsystemd (sd_listen_fds() pulls in eight shared libraries whose loading is most of
 * build/httpd's start-up time), no signal handling: it accepts on fd 3 and answers every
 * request with "pid=N". bench.py runs it beside build/httpd to tell the supervisor's share of
 * a restart from the worker's own start-up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
        const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
        if (!fds || !pid || atoi(fds) < 1 || atoi(pid) != (int) getpid()) {
                fprintf(stderr, "miniworker: run me with a listening socket at fd 3 (LISTEN_FDS, LISTEN_PID)\n");
                return 1;
        }
        char resp[128];
        int n = snprintf(resp, sizeof resp, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npid=%d\n", (int) getpid());
        struct pollfd p = { .fd = 3, .events = POLLIN };
        for (;;) {
                if (poll(&p, 1, -1) < 0 && errno != EINTR)
                        return 1;
                int c = accept4(3, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;       /* EAGAIN: another worker was quicker */
                char req[4096];
                size_t len = 0;
                while (len < sizeof req && !memmem(req, len, "\r\n\r\n", 4)) {
                        ssize_t r = recv(c, req + len, sizeof req - len, 0);
                        if (r <= 0)
                                break;
                        len += (size_t) r;
                }
                if (len > 0)
                        (void) send(c, resp, (size_t) n, MSG_NOSIGNAL);
                close(c);
        }
}
