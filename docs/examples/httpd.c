/* httpd.c: an example bindonce worker.
 *
 * Serves every listening stream socket it is handed by socket activation
 * (bindonce, or systemd itself) and answers any HTTP request with
 *
 *     hello from worker 2 (pid 1234)
 *
 * Build:  gcc -std=gnu11 -Wall -Wextra -O2 -o httpd httpd.c
 * Run:    bindonce -l 127.0.0.1:8080 -w 4 -- ./httpd
 *
 * Two options run it without socket activation, the way servers are run without
 * bindonce (tests/bench/ compares them):
 *     --bind ADDR [--reuse-port]  bind ADDR (127.0.0.1:8080, [::1]:8080) itself, with
 *                                 SO_REUSEADDR, and SO_REUSEPORT if asked, so that
 *                                 several copies can share the port
 *     --fd N                      accept on the listening socket inherited at fd N,
 *                                 e.g. --fd 0 under supervisord's [fcgi-program]
 *
 * The listening sockets are shared with the other workers and non-blocking, so
 * an accept() that fails with EAGAIN only means another worker was quicker.
 * On SIGTERM the worker stops accepting, finishes the request in hand and exits 0;
 * connections that arrive meanwhile wait in the backlog of the socket, which
 * bindonce keeps open, for the next worker.
 *
 * It reads the socket-activation protocol itself (listen_fds_with_names() below)
 * rather than calling sd_listen_fds_with_names(3), as nginx and Go's and Rust's
 * activation crates do: the protocol is a few environment variables, and linking
 * libsystemd would add the loading of its eight shared libraries, about 0.5 ms, to
 * every start of a worker, which is most of a restart. A worker that does use
 * libsystemd runs under bindonce unchanged (tests/worker/testworker.c does).
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* The first passed fd: sockets are at 3, 4, ... in the order they were configured. */
#define LISTEN_FDS_START 3

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

/* --bind: a listening socket of our own on "HOST:PORT" or "[IPv6]:PORT". */
static int bind_socket(const char *addr, int reuse_port)
{
        char host[256];
        const char *colon = strrchr(addr, ':');

        if (!colon || colon == addr || (size_t) (colon - addr) >= sizeof host) {
                fprintf(stderr, "httpd: --bind '%s': expected HOST:PORT, e.g. 127.0.0.1:8080\n", addr);
                return -1;
        }
        memcpy(host, addr, colon - addr);
        host[colon - addr] = '\0';
        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
                memmove(host, host + 1, strlen(host));
                host[strlen(host) - 1] = '\0';
        }

        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
        struct addrinfo *ai;
        int r = getaddrinfo(host, colon + 1, &hints, &ai);
        if (r != 0) {
                fprintf(stderr, "httpd: --bind '%s': %s\n", addr, gai_strerror(r));
                return -1;
        }

        int one = 1;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
            listen(fd, SOMAXCONN) < 0) {
                fprintf(stderr, "httpd: --bind '%s': %m\n", addr);
                freeaddrinfo(ai);
                return -1;
        }
        freeaddrinfo(ai);
        return fd;
}

/* A non-negative decimal int, all of s; -1 otherwise. */
static int parse_count(const char *s)
{
        char *end;

        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end != '\0' || v < 0 || v > 1 << 22)
                return -1;
        return (int) v;
}

/* What sd_listen_fds_with_names(1, names) does: the number of sockets passed to this
 * process at fd 3.., 0 if none were (or they were meant for another process), or a
 * negative errno if the environment is broken. Each passed fd is made close-on-exec
 * and LISTEN_* is unset, so that nothing we might run inherits them. (LISTEN_PIDFDID,
 * which systemd 259 adds, only sharpens the LISTEN_PID check; bindonce sets both right.) */
static int listen_fds_with_names(char ***names)
{
        const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
        const char *next = getenv("LISTEN_FDNAMES");
        int n = 0, r = 0;

        *names = NULL;
        if (!pid || parse_count(pid) != (int) getpid())
                goto unset;     /* none, or a parent's leaked into our environment */
        n = fds ? parse_count(fds) : -1;
        if (n < 0) {
                n = 0;
                r = -EINVAL;
                goto unset;
        }
        if (n == 0)
                goto unset;
        *names = calloc(n + 1, sizeof **names);
        if (!*names) {
                r = -ENOMEM;
                goto unset;
        }
        for (int i = 0; i < n; i++) {
                int fd = LISTEN_FDS_START + i;
                int flags = fcntl(fd, F_GETFD);
                if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
                        r = -errno;
                        goto unset;
                }
                /* One name per fd, ':'-separated; "unknown" for each if none were given. */
                if (next && i > 0)
                        next++;         /* the ':' after the previous name */
                size_t len = next ? strcspn(next, ":") : 0;
                if (next && next[len] == '\0' && i + 1 < n) {
                        r = -EINVAL;    /* fewer names than fds */
                        goto unset;
                }
                (*names)[i] = next ? strndup(next, len) : strdup("unknown");
                if (!(*names)[i]) {
                        r = -ENOMEM;
                        goto unset;
                }
                if (next)
                        next += len;    /* at the ':' before the next name, or the end */
        }
        if (next && *next) {
                r = -EINVAL;            /* more names than fds, maybe an empty last one */
                goto unset;
        }
        r = n;
unset:
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_PIDFDID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
        if (r < 0 && *names) {
                for (int i = 0; i < n; i++)
                        free((*names)[i]);
                free(*names);
                *names = NULL;
        }
        return r;
}

/* What sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) says: fd is a listening stream socket. */
static int is_listening_stream(int fd)
{
        int type = 0, listening = 0;
        socklen_t len = sizeof type;

        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
                return 0;
        len = sizeof listening;
        return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening;
}

/* A listening socket we inherited (--fd, or by socket activation), made non-blocking: we
 * poll(), then accept(). */
static int inherited_socket(int fd)
{
        if (!is_listening_stream(fd)) {
                fprintf(stderr, "httpd: --fd %d: not a listening stream socket\n", fd);
                return -1;
        }
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
                perror("httpd: fcntl");
                return -1;
        }
        return fd;
}

/* The listening stream sockets passed by socket activation, in pfd[0..]; returns how many. */
static int activated_sockets(const char *argv0, struct pollfd **pfd)
{
        /* Take the sockets, and unset LISTEN_* so that no child of ours sees them. */
        char **names = NULL;
        int n = listen_fds_with_names(&names);
        if (n < 0) {
                fprintf(stderr, "httpd: bad socket activation environment: %s\n", strerror(-n));
                return -1;
        }
        if (n == 0) {
                fprintf(stderr, "httpd: no sockets were passed to me; run me under bindonce or "
                                "systemd socket activation, e.g.: bindonce -l 8080 -- %s\n", argv0);
                return -1;
        }

        /* One pollfd per listening stream socket, and one more for the signalfd. */
        *pfd = calloc(n + 1, sizeof **pfd);
        if (!*pfd) {
                perror("httpd");
                return -1;
        }
        int nsock = 0;
        for (int i = 0; i < n; i++) {
                int fd = LISTEN_FDS_START + i;

                /* Passed blocking, as systemd does: poll() then accept() wants O_NONBLOCK, or
                 * a worker that lost the race to another would wait in accept(). */
                if (is_listening_stream(fd) && inherited_socket(fd) >= 0)
                        (*pfd)[nsock++] = (struct pollfd) { .fd = fd, .events = POLLIN };
                else
                        fprintf(stderr, "httpd: ignoring fd %d (%s): not a listening stream socket\n",
                                fd, names[i]);
                free(names[i]);
        }
        free(names);
        if (nsock == 0) {
                fprintf(stderr, "httpd: no listening stream socket among the %d passed to me "
                                "(bindonce -l, or ListenStream= in a socket unit)\n", n);
                free(*pfd);
                *pfd = NULL;
                return -1;
        }
        return nsock;
}

static int usage(const char *argv0)
{
        fprintf(stderr, "usage: %s [--bind ADDR [--reuse-port] | --fd N]\n", argv0);
        return 2;
}

int main(int argc, char *argv[])
{
        static const struct option options[] = {
                { "bind",       required_argument, NULL, 'b' },
                { "reuse-port", no_argument,       NULL, 'r' },
                { "fd",         required_argument, NULL, 'f' },
                {}
        };
        const char *bind_addr = NULL;
        int reuse_port = 0, fd_arg = -1, c;
        char *end;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case 'b':
                        bind_addr = optarg;
                        break;
                case 'r':
                        reuse_port = 1;
                        break;
                case 'f':
                        fd_arg = (int) strtol(optarg, &end, 10);
                        if (end == optarg || *end != '\0' || fd_arg < 0)
                                return usage(argv[0]);
                        break;
                default:
                        return usage(argv[0]);
                }
        }

        const char *slot = getenv("BINDONCE_WORKER");
        snprintf(me, sizeof me, "worker %.8s (pid %d)", slot ? slot : "?", (int) getpid());
        snprintf(greeting, sizeof greeting, "hello from %s\n", me);

        struct pollfd *pfd = NULL;
        int nsock;
        if (bind_addr || fd_arg >= 0) {
                int fd = bind_addr ? bind_socket(bind_addr, reuse_port) : inherited_socket(fd_arg);
                if (fd < 0)
                        return 1;
                pfd = calloc(2, sizeof *pfd);
                if (!pfd) {
                        perror("httpd");
                        return 1;
                }
                pfd[0] = (struct pollfd) { .fd = fd, .events = POLLIN };
                nsock = 1;
        } else {
                nsock = activated_sockets(argv[0], &pfd);
                if (nsock < 0)
                        return 1;
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
