/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "activation.h"
#include "ctl.h"
#include "address.h"
#include "listener.h"
#include "options.h"
#include "log.h"
#include "supervisor.h"
#include "units.h"
#include "util.h"


static Options arg;

static int exit_code_for(int error) {
        switch (-error) {
        case EACCES:
        case EPERM:
                return EXIT_NOPERM;
        default:
                return EXIT_OSERR;
        }
}

static void free_listeners(Listener *l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                free(l[i].name);
        free(l);
}

/* Parses every address before binding any, so that a typo in the third -l leaves no socket
 * file behind from the first. */
static int parse_listeners(Listener **ret) {
        Listener *l = calloc(arg.n_listen ? arg.n_listen : 1, sizeof *l);

        if (!l)
                return log_error_errno(-ENOMEM, "Out of memory");
        for (size_t i = 0; i < arg.n_listen; i++) {
                const ListenArg *a = &arg.listen[i];
                int type = a->type ? a->type : arg.socket_type;
                const char *why;

                l[i].fd = -1;
                l[i].name = strdup(i < arg.n_fdnames ? arg.fdnames[i] : arg.name);
                if (!l[i].name) {
                        free_listeners(l, i);
                        return log_error_errno(-ENOMEM, "Out of memory");
                }
                if (address_parse(a->text, type, &l[i].address, &why) < 0) {
                        free_listeners(l, i + 1);
                        return log_usage("%s '%s': %s", a->option, a->text, why);
                }
        }
        *ret = l;
        return 0;
}

static void close_listeners(Listener *l, size_t n) {
        for (size_t i = 0; i < n; i++)
                listener_close(&l[i]);
}

static int open_listeners(Listener *l, size_t n) {
        char buf[ADDRESS_FORMAT_MAX];
        int r;

        for (size_t i = 0; i < n; i++) {
                /* reuseport balancing needs the first socket of each group to admit siblings. */
                r = listener_open(&l[i], (int) arg.backlog, arg.reuse_port || arg.balance == BALANCE_REUSEPORT);
                if (r < 0) {
                        const char *why = listener_strerror(&l[i], r);

                        close_listeners(l, i);
                        if (why)
                                log_error("cannot listen on %s: %s", address_format(&l[i].address, buf), why);
                        else
                                log_error_errno(r, "cannot listen on %s: %m", address_format(&l[i].address, buf));
                        return r;
                }
                log_info("listening on %s (fd %d, name %s, %s)", address_format(&l[i].address, buf),
                         SD_LISTEN_FDS_START + (int) i, l[i].name, socket_type_name(l[i].address.type));
        }
        return 0;
}

/* A closed stdin/stdout/stderr would hand its number to the first socket we open, and a
 * worker would find a socket where it expects its output. */
static int ensure_stdio(void) {
        for (int fd = 0; fd < 3; fd++) {
                if (fcntl(fd, F_GETFD) >= 0)
                        continue;
                int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
                if (n < 0)
                        return -errno;
                if (n != fd) {
                        (void) close(n);
                        return -EBADF;
                }
        }
        return 0;
}

static int generate_units(const Listener *l, size_t n) {
        _cleanup_free_ char *self = realpath("/proc/self/exe", NULL);
        UnitsRequest req = {
                .name = arg.generate,
                .listeners = l,
                .n_listeners = n,
                .backlog = arg.backlog == SOMAXCONN ? 0 : (int) arg.backlog,
                /* Per-worker sockets need the socket unit's sockets to admit siblings. */
                .reuse_port = arg.reuse_port || arg.balance == BALANCE_REUSEPORT,
                .exec_args = arg.exec_options,
                .n_exec_args = arg.n_exec_options,
                .command = arg.argv,
                .bindonce_path = self ? self : "/usr/local/bin/bindonce",
                .instance = arg.name,
                .control = arg.control && *arg.control ? arg.control : NULL,
                .no_control = arg.control && !*arg.control,
                .stop_timeout_sec = (double) arg.stop_timeout / USEC_PER_SEC,
        };
        int r = arg.install ? units_install(&req, arg.unit_dir) : units_print(&req, stdout);

        return r < 0 ? exit_code_for(r) : EXIT_SUCCESS;
}

static void log_adopted(const Listener *l, size_t n) {
        char buf[ADDRESS_FORMAT_MAX];

        log_info("socket activation: adopted %zu sockets from systemd%s", n,
                 arg.n_listen ? "; --listen options not bound" : "");
        for (size_t i = 0; i < n; i++)
                log_info("listening on %s (fd %d, name %s, %s, from systemd)",
                         l[i].address.size ? address_format(&l[i].address, buf) : "(unknown address)",
                         l[i].fd, l[i].name, socket_type_name(l[i].address.type));
}

static int run(int argc, char *argv[]) {
        Listener *listeners = NULL, *requested = NULL;
        size_t n_listeners;
        bool bound_here = false;
        Supervisor *sup = NULL;
        sigset_t mask;
        int r;

        /* Before anything can fork: the signals the loop takes through signalfd are blocked,
         * and SIGPIPE is ignored (a worker gets default dispositions back). */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGTTIN);
        sigaddset(&mask, SIGTTOU);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        r = ensure_stdio();
        if (r < 0)
                return EXIT_OSERR;
        log_setup();

        r = options_parse(&arg, argc, argv);
        if (r <= 0)
                return r < 0 ? (r == -ENOMEM ? EXIT_OSERR : EXIT_USAGE) : EXIT_SUCCESS;

        /* Every -l is checked, even when systemd passes the sockets: a typo shows at once. */
        r = parse_listeners(&requested);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_OSERR;

        if (arg.generate) {
                r = generate_units(requested, arg.n_listen);
                free_listeners(requested, arg.n_listen);
                return r;
        }

        r = activation_adopt(&listeners);
        if (r < 0) {
                free_listeners(requested, arg.n_listen);
                return r == -EBADMSG ? EXIT_CONFIG : EXIT_OSERR;
        }
        if (r > 0) {
                n_listeners = (size_t) r;
                free_listeners(requested, arg.n_listen);
                log_adopted(listeners, n_listeners);
        } else {
                if (arg.n_listen == 0) {
                        free_listeners(requested, arg.n_listen);
                        log_usage("no socket to listen on, and none passed by systemd; add --listen ADDR, "
                                  "such as -l 127.0.0.1:8080");
                        return EXIT_USAGE;
                }
                listeners = requested;
                n_listeners = arg.n_listen;
                bound_here = true;
                r = open_listeners(listeners, n_listeners);
                if (r < 0) {
                        free_listeners(listeners, n_listeners);
                        return exit_code_for(r);
                }
        }

        SupervisorConfig config = {
                .argv = arg.argv,
                .name = arg.name,
                .n_workers = arg.workers,
                .restart = (RestartPolicy) arg.restart,
                .stop_timeout = arg.stop_timeout,
                .give_up = arg.give_up,
                .give_up_explicit = arg.give_up_explicit,
                .setenv = arg.setenv,
                .n_setenv = arg.n_setenv,
                .ready = (ReadyMode) arg.ready,
                .start_timeout = arg.start_timeout,
                .notify_access_all = arg.notify_access == 1,
                .max_surge = arg.max_surge,
                .max_unavailable = arg.max_unavailable,
                .watchdog = arg.watchdog,
                .min_ready = arg.min_ready,
                .control_path = arg.control,
                .balance = (Balance) arg.balance,
                .backlog = (int) arg.backlog,
        };
        r = supervisor_new(&sup, &config, listeners, n_listeners);
        if (r < 0) {
                close_listeners(listeners, n_listeners);
                free_listeners(listeners, n_listeners);
                return EXIT_OSERR;
        }

        /* Sockets we bound go to systemd's fd store only once bindonce is sure to run. */
        const char *fdstore = getenv("FDSTORE");
        if (bound_here && (arg.fd_store || (fdstore && strcmp(fdstore, "0") != 0))) {
                r = activation_store(listeners, n_listeners);
                if (r > 0)
                        log_info("handed %d sockets to systemd's fd store", r);
        }

        r = supervisor_run(sup);

        supervisor_free(sup);
        /* Last: the sockets outlive every worker, so no connection is refused before the end. */
        close_listeners(listeners, n_listeners);
        free_listeners(listeners, n_listeners);
        return r;
}

int main(int argc, char *argv[]) {
        int r;

        if (argc >= 2 && strcmp(argv[1], "ctl") == 0) {
                signal(SIGPIPE, SIG_IGN);
                return ctl_main(argc - 1, argv + 1);
        }
        r = run(argc, argv);

        options_done(&arg);
        return r;
}
