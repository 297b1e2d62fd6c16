/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "activation.h"
#include "log.h"
#include "spawn.h"
#include "util.h"

static void unset_activation_env(void) {
        (void) unsetenv("LISTEN_PID");
        (void) unsetenv("LISTEN_FDS");
        (void) unsetenv("LISTEN_FDNAMES");
        (void) unsetenv("LISTEN_PIDFDID");
}

/* One adopted fd: a listening socket, or a datagram socket. */
static int adopt_one(int fd, Listener *l) {
        struct stat st;
        int type, listening = 0;
        socklen_t len = sizeof type;

        if (fcntl(fd, F_GETFD) < 0)
                return log_usage("LISTEN_FDS names fd %d, which is not open; the activation environment "
                                 "is broken (exit %d)", fd, EXIT_CONFIG), -EBADMSG;
        if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
                return log_usage("fd %d passed by LISTEN_FDS is not a socket; pass listening sockets only "
                                 "(exit %d)", fd, EXIT_CONFIG), -EBADMSG;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
                return log_error_errno(errno, "fd %d passed by LISTEN_FDS: cannot read its type: %m", fd), -EBADMSG;
        len = sizeof listening;
        if (type != SOCK_DGRAM &&
            (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening))
                return log_usage("fd %d passed by LISTEN_FDS is a connected socket, not a listening one; "
                                 "use Accept=no in the socket unit (exit %d)", fd, EXIT_CONFIG), -EBADMSG;

        l->fd = fd;
        l->address.type = type;
        l->address.size = sizeof l->address.storage;
        if (getsockname(fd, &l->address.sa, &l->address.size) < 0)
                l->address.size = 0;
        /* Ours now: close-on-exec like every fd we own, cleared only in a worker. */
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                return log_error_errno(-errno, "fd %d passed by LISTEN_FDS: cannot make it close-on-exec: %m", fd);
        return 0;
}

/* How many fds LISTEN_PID and LISTEN_FDS give us: 0 when the environment is not ours (or
 * absent), -EBADMSG (logged) when it is broken. */
static long activation_count(void) {
        const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
        unsigned long v;
        long n;

        if (!pid_s) {
                if (fds_s)
                        log_warning("LISTEN_FDS is set without LISTEN_PID; ignoring it");
                return 0;
        }
        if (parse_uint(pid_s, 1, INT_MAX, &v) < 0)
                return log_usage("LISTEN_PID='%s' is not a process id; the activation environment is broken "
                                 "(exit %d)", pid_s, EXIT_CONFIG), -EBADMSG;
        if ((long) v != getpid()) {
                /* Meant for another process (our parent, typically): not for us, as in sd_listen_fds(). */
                log_warning("LISTEN_PID=%lu is not our pid %d; ignoring the activation environment",
                            v, (int) getpid());
                return 0;
        }
        if (!fds_s || parse_uint(fds_s, 0, INT_MAX - SD_LISTEN_FDS_START, &v) < 0)
                return log_usage("LISTEN_FDS='%s' is not a number of fds; the activation environment is "
                                 "broken (exit %d)", fds_s ? fds_s : "", EXIT_CONFIG), -EBADMSG;
        n = (long) v;
        /* Before allocating for n: the last fd must exist (LISTEN_FDS=2000000000 must not
         * end as "out of memory"). */
        if (n > 0 && fcntl(SD_LISTEN_FDS_START + (int) n - 1, F_GETFD) < 0)
                return log_usage("LISTEN_FDS=%ld, but fd %ld is not open; the activation environment is broken "
                                 "(exit %d)", n, SD_LISTEN_FDS_START + n - 1, EXIT_CONFIG), -EBADMSG;
        return n;
}

/* As many names as fds, or none at all (then "unknown", as sd_listen_fds_with_names());
 * each a valid FileDescriptorName=, as systemd would have made sure. Returns -errno, logged. */
static int activation_names(Listener *l, long n) {
        const char *names_s = getenv("LISTEN_FDNAMES");
        _cleanup_free_ char *names = names_s ? strdup(names_s) : NULL;
        char *state = names, *name;

        if (names_s && !names)
                return log_error_errno(-ENOMEM, "Out of memory");
        for (long i = 0; i < n; i++) {
                name = names ? strsep(&state, ":") : (char *) "unknown";
                if (!name)
                        return log_usage("LISTEN_FDNAMES has fewer names than the %ld fds of LISTEN_FDS "
                                         "(exit %d)", n, EXIT_CONFIG), -EBADMSG;
                if (!fdname_is_valid(name))
                        return log_usage("LISTEN_FDNAMES: name %ld is not 1 to 255 printable characters "
                                         "(exit %d)", i + 1, EXIT_CONFIG), -EBADMSG;
                l[i].name = strdup(name);
                if (!l[i].name)
                        return log_error_errno(-ENOMEM, "Out of memory");
        }
        if (state)
                return log_usage("LISTEN_FDNAMES has more names than the %ld fds of LISTEN_FDS (exit %d)",
                                 n, EXIT_CONFIG), -EBADMSG;
        return 0;
}

int activation_adopt(Listener **ret) {
        Listener *l = NULL;
        long n = activation_count();
        int r = (int) n;

        if (n > 0) {
                l = calloc((size_t) n, sizeof *l);
                if (!l)
                        r = log_error_errno(-ENOMEM, "Out of memory");
                for (long i = 0; l && i < n; i++)
                        l[i].fd = -1;
                if (l)
                        r = activation_names(l, n);
                for (long i = 0; l && r >= 0 && i < n; i++)
                        r = adopt_one(SD_LISTEN_FDS_START + (int) i, &l[i]);
                if (r >= 0) {
                        *ret = TAKE_PTR(l);
                        r = (int) n;
                }
        }
        if (l) {
                /* The fds stay open: they are systemd's, and we exit anyway. */
                for (long i = 0; i < n; i++)
                        free(l[i].name);
                free(l);
        }
        unset_activation_env();
        return r;
}

int activation_store(Listener *l, size_t n) {
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *msg = NULL;
                int r;

                if (asprintf(&msg, "FDSTORE=1\nFDNAME=%s", l[i].name) < 0)
                        return log_error_errno(-ENOMEM, "Out of memory");
                r = sd_pid_notify_with_fds(0, 0, msg, &l[i].fd, 1);
                if (r < 0)
                        return log_error_errno(r, "Cannot hand socket '%s' to systemd's fd store: %m", l[i].name);
                if (r == 0)
                        return log_warning_errno(-ENOTCONN, "--fd-store: not running under systemd "
                                                 "(NOTIFY_SOCKET is unset); sockets not stored"), 0;
                /* The next bindonce gets this very socket back: its file must stay (a stale
                 * one is reclaimed at the next bind). Cleared one by one, so that a store
                 * that fails halfway keeps the files of what systemd already holds. */
                l[i].unlink_on_close = false;
        }
        return (int) n;
}
