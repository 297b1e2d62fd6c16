/* httpd.c: an example bindonce worker.
 *
 * Serves every listening stream socket it is handed by socket activation
 * (bindonce, or systemd itself) and answers any HTTP request with
 *
 *     hello from worker 2 (pid 1234)
 *
 * Build:  gcc -std=gnu11 -Wall -Wextra -O2 httpd.c $(pkg-config --cflags --libs libsystemd)
 * Run:    bindonce -l 127.0.0.1:8080 -w 4 -- ./httpd
 *
 * The listening sockets are shared with the other workers and non-blocking, so
 * an accept() that fails with EAGAIN only means another worker was quicker.
 * On SIGTERM the worker stops accepting, finishes the request in hand and exits 0;
 * connections that arrive meanwhile wait in the backlog of the socket, which
 * bindonce keeps open, for the next worker.
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

static char me[48];             /* "worker 2 (pid 1234)" */
static char greeting[64];       /* "hello from worker 2 (pid 1234)\n" */

/* True when SIGTERM or SIGINT is waiting on the signalfd. */
static int stop_requested(int sigfd)
{
        struct pollfd p = { .fd = sigfd, .events = POLLIN };

        return poll(&p, 1, 0) > 0;
}

/* accept() errors that concern one connection, not the listening socket. */
static int accept_error_is_transient(int err)
{
        switch (err) {
        case EAGAIN:            /* another worker took it (== EWOULDBLOCK) */
        case EINTR:
        case ECONNABORTED:
        case EPERM:             /* refused by a firewall rule */
        case EPROTO:
        case ENOPROTOOPT:
        case ENETDOWN:
        case ENETUNREACH:
        case EHOSTDOWN:
        case EHOSTUNREACH:
        case ENONET:
        case EOPNOTSUPP:
                return 1;
        default:
                return 0;
        }
}

/* Read the request head, answer it, and let the caller close the connection. */
static void serve(int conn)
{
        /* A client that stalls must not stall the worker. */
        struct timeval timeout = { .tv_sec = 5 };
        setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);

        char req[8192];
        size_t len = 0;
        while (len < sizeof req && !memmem(req, len, "\r\n\r\n", 4)) {
                ssize_t n = recv(conn, req + len, sizeof req - len, 0);
                if (n <= 0)
                        break;
                len += n;
        }
        if (len == 0)
                return;         /* the client left, or timed out, without a word */

        int head = len >= 5 && memcmp(req, "HEAD ", 5) == 0;
        char resp[256];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 200 OK\r\n"
                         "Content-Type: text/plain\r\n"
                         "Content-Length: %zu\r\n"
                         "Connection: close\r\n"
                         "\r\n"
                         "%s",
                         strlen(greeting), head ? "" : greeting);

        /* The socket blocks, so send() writes it all or fails; a failure is the
         * client's loss. MSG_NOSIGNAL: a client that hung up is no SIGPIPE for us. */
        (void) send(conn, resp, n, MSG_NOSIGNAL);
}

int main(int argc, char *argv[])
{
        (void) argc;

        const char *slot = getenv("BINDONCE_WORKER");
        snprintf(me, sizeof me, "worker %.8s (pid %d)", slot ? slot : "?", (int) getpid());
        snprintf(greeting, sizeof greeting, "hello from %s\n", me);

        /* Take the sockets, and unset LISTEN_* so that no child of ours sees them. */
        char **names = NULL;
        int n = sd_listen_fds_with_names(1, &names);
        if (n < 0) {
                fprintf(stderr, "httpd: bad socket activation environment: %s\n", strerror(-n));
                return 1;
        }
        if (n == 0) {
                fprintf(stderr, "httpd: no sockets were passed to me; run me under bindonce or "
                                "systemd socket activation, e.g.: bindonce -l 8080 -- %s\n", argv[0]);
                return 1;
        }

        /* One pollfd per listening stream socket, and one more for the signalfd. */
        struct pollfd *pfd = calloc(n + 1, sizeof *pfd);
        if (!pfd) {
                perror("httpd");
                return 1;
        }
        int nsock = 0;
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;

                if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) > 0)
                        pfd[nsock++] = (struct pollfd) { .fd = fd, .events = POLLIN };
                else
                        fprintf(stderr, "httpd: ignoring fd %d (%s): not a listening stream socket\n",
                                fd, names[i]);
                free(names[i]);
        }
        free(names);
        if (nsock == 0) {
                fprintf(stderr, "httpd: no listening stream socket among the %d passed to me "
                                "(bindonce -l, or ListenStream= in a socket unit)\n", n);
                goto fail;
        }

        /* SIGTERM and SIGINT arrive as a readable fd, polled with the sockets,
         * so a stop is seen between two requests, never in the middle of one. */
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGINT);
        sigprocmask(SIG_BLOCK, &stop, NULL);
        int sigfd = signalfd(-1, &stop, SFD_CLOEXEC);
        if (sigfd < 0) {
                perror("httpd: signalfd");
                goto fail;
        }
        pfd[nsock] = (struct pollfd) { .fd = sigfd, .events = POLLIN };

        while (!stop_requested(sigfd)) {
                if (poll(pfd, nsock + 1, -1) < 0 && errno != EINTR) {
                        perror("httpd: poll");
                        goto fail;
                }
                for (int i = 0; i < nsock && !stop_requested(sigfd); i++) {
                        if (!pfd[i].revents)
                                continue;

                        int conn = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
                        if (conn < 0) {
                                if (accept_error_is_transient(errno))
                                        continue;
                                /* Let it crash: the supervisor starts a fresh worker. */
                                fprintf(stderr, "httpd: accept on fd %d: %m\n", pfd[i].fd);
                                goto fail;
                        }
                        serve(conn);
                        close(conn);
                }
        }

        fprintf(stderr, "httpd: %s stopping\n", me);
        free(pfd);
        return 0;
fail:
        free(pfd);
        return 1;
}
