/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "activation.h"
#include "closefds.h"
#include "ctl.h"
#include "identity.h"
#include "address.h"
#include "listener.h"
#include "options.h"
#include "output.h"
#include "exit_status.h"
#include "signals.h"
#include "log.h"
#include "supervisor.h"
#include "units.h"
#include "upgrade.h"
#include "util.h"


static Options arg;

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

static int open_listeners(Listener *l, size_t n, const ListenerOptions *o) {
        char buf[ADDRESS_FORMAT_MAX];
        int r;

        for (size_t i = 0; i < n; i++) {
                r = listener_open_with(&l[i], o);
                if (r < 0) {
                        const char *why = listener_strerror(&l[i], r);

                        close_listeners(l, i);
                        if (r == -ENODEV && o->bind_to_device)
                                log_error("cannot listen on %s: no network interface '%s' (--bind-to-device); "
                                          "see 'ip link'", address_format(&l[i].address, buf), o->bind_to_device);
                        else if (why)
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

/* The socket options, with --socket-user/--socket-group resolved. */
static int listener_options(ListenerOptions *o) {
        gid_t ignored;

        *o = (ListenerOptions) {
                .backlog = (int) arg.backlog,
                /* reuseport balancing needs the first socket of each group to admit siblings. */
                .reuse_port = arg.reuse_port || arg.balance == BALANCE_REUSEPORT,
                .nonblocking = arg.nonblocking,
                .ipv6_only = arg.ipv6_only,
                .freebind = arg.freebind,
                .bind_to_device = arg.bind_to_device,
                /* systemd's SocketMode= default, so that a generated socket unit and
                 * bindonce binding the same path make the same file. */
                .mode = arg.socket_mode != (mode_t) -1 ? arg.socket_mode : 0666,
                .uid = (uid_t) -1,
                .gid = (gid_t) -1,
        };
        if (arg.socket_user && identity_user(arg.socket_user, &o->uid, &ignored) < 0)
                return log_usage("--socket-user '%s': no such user; give a user name or a numeric uid",
                                 arg.socket_user), -ESRCH;
        if (arg.socket_group && identity_group(arg.socket_group, &o->gid) < 0)
                return log_usage("--socket-group '%s': no such group; give a group name or a numeric gid",
                                 arg.socket_group), -ESRCH;
        if (arg.bind_to_device && if_nametoindex(arg.bind_to_device) == 0)
                return log_usage("--bind-to-device '%s': no such network interface; see 'ip link'",
                                 arg.bind_to_device), -ESRCH;
        if (o->uid != (uid_t) -1 && o->uid != geteuid() && geteuid() != 0)
                return log_usage("--socket-user '%s': giving the socket file to another user needs root",
                                 arg.socket_user), -EPERM;
        return 0;
}

/* --nonblocking for sockets systemd passed: otherwise they stay as systemd passed them
 * (the service's NonBlocking=). O_NONBLOCK is a property of the open file description that systemd,
 * bindonce and every worker share. */
static int adopted_set_nonblocking(const Listener *l, size_t n) {
        for (size_t i = 0; arg.nonblocking && i < n; i++) {
                int flags = fcntl(l[i].fd, F_GETFL);

                if (flags < 0 || fcntl(l[i].fd, F_SETFL, flags | O_NONBLOCK) < 0)
                        return log_error_errno(-errno, "--nonblocking: cannot set O_NONBLOCK on fd %d: %m", l[i].fd);
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
                .socket_mode = arg.socket_mode,
                .socket_user = arg.socket_user,
                .socket_group = arg.socket_group,
                .bind_to_device = arg.bind_to_device,
                .ipv6_only = arg.ipv6_only,
                .freebind = arg.freebind,
                .nonblocking = arg.nonblocking,
        };
        int r = arg.install ? units_install(&req, arg.unit_dir) : units_print(&req, stdout);

        return r < 0 ? (r == -EINVAL ? EXIT_USAGE : exit_status_from_errno(r)) : EXIT_SUCCESS;
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

/* What the workers run with, resolved before anything is bound: bad input leaves nothing. */
typedef struct Workers {
        WorkerSetup setup;
        Identity identity;
        char **env;             /* USER=, HOME=... of --user, then the -E entries */
        size_t n_env;
} Workers;

static void workers_done(Workers *w) {
        worker_output_finish(w->setup.output);   /* the workers' last lines, before we go */
        worker_output_free(w->setup.output);
        identity_done(&w->identity);
        free(w->env);
}

/* Returns an exit code, or 0. */
static int workers_prepare(Workers *w) {
        struct stat st;
        int r;

        w->setup = WORKER_SETUP_NULL;
        r = identity_resolve(arg.user, arg.group, &w->setup, &w->identity);
        if (r < 0)
                return r == -ESRCH ? EXIT_CONFIG : EXIT_OSERR;
        /* Not root: only our own ids, which setuid() would allow anyway, are no error. */
        if (w->setup.set_ids && geteuid() != 0 &&
            ((w->setup.uid != (uid_t) -1 && w->setup.uid != geteuid()) || w->setup.gid != getegid())) {
                log_usage("%s '%s': running the workers as another user or group needs root",
                          arg.user ? "--user" : "--group", arg.user ? arg.user : arg.group);
                return EXIT_NOPERM;
        }
        if (arg.chdir && (stat(arg.chdir, &st) < 0 || !S_ISDIR(st.st_mode))) {
                log_usage("--chdir '%s': no such directory", arg.chdir);
                return EXIT_CONFIG;
        }
        w->setup.chdir = arg.chdir;
        w->setup.set_umask = arg.umask != (mode_t) -1;
        w->setup.umask = arg.umask;

        /* systemd's order: USER, HOME... first, so that -E may override them. */
        w->env = calloc(w->identity.n_env + arg.n_setenv + 1, sizeof(char *));
        if (!w->env)
                return log_error_errno(-ENOMEM, "Out of memory"), EXIT_OSERR;
        for (size_t i = 0; i < w->identity.n_env; i++)
                w->env[w->n_env++] = w->identity.env[i];
        for (size_t i = 0; i < arg.n_setenv; i++)
                w->env[w->n_env++] = arg.setenv[i];

        if (w->setup.set_ids)
                log_info("workers run as %s%s%s (uid %d, gid %u, %zu supplementary groups)",
                         arg.user ? arg.user : "bindonce's user", arg.group ? ", group " : "", arg.group ? arg.group : "",
                         w->setup.uid == (uid_t) -1 ? (int) getuid() : (int) w->setup.uid, (unsigned) w->setup.gid,
                         w->setup.n_groups);

        r = worker_output_new(&w->setup.output, arg.name, arg.log_prefix, w->setup.uid, w->setup.gid);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the workers' output: %m"), EXIT_OSERR;
        return 0;
}

/* --watch paths exist and can be read: checked before anything is bound. Returns an exit
 * code, or 0. */
static int watch_prepare(WatchConfig *wc) {
        for (size_t i = 0; i < arg.n_watch; i++) {
                const char *p = arg.watch[i];
                struct stat st;

                if (stat(p, &st) < 0) {
                        bool denied = errno == EACCES;
                        log_usage("--watch '%s': %m; %s", p, denied ? "bindonce must be able to read it"
                                                                   : "give an existing file or directory");
                        return denied ? EXIT_NOPERM : EXIT_USAGE;
                }
                if (access(p, S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK) < 0) {
                        log_usage("--watch '%s': %m; bindonce must be able to read it", p);
                        return EXIT_NOPERM;
                }
        }
        *wc = (WatchConfig) {
                .paths = arg.watch, .n_paths = arg.n_watch,
                .ignore = arg.watch_ignore, .n_ignore = arg.n_watch_ignore,
                .default_ignore = true, .delay = arg.watch_delay,
        };
        return 0;
}

/* The sockets: systemd's, or bound here. Returns an exit code, or 0 with *ret set. */
static int get_listeners(Listener **ret, size_t *ret_n, bool *ret_bound_here) {
        Listener *requested = NULL, *adopted = NULL;
        ListenerOptions lo;
        int r;

        /* Every -l is checked, even when systemd passes the sockets: a typo shows at once. */
        r = parse_listeners(&requested);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_OSERR;
        r = listener_options(&lo);
        if (r >= 0)
                r = activation_adopt(&adopted);
        if (r < 0) {
                free_listeners(requested, arg.n_listen);
                return r == -EBADMSG || r == -ESRCH ? EXIT_CONFIG : r == -EPERM ? EXIT_NOPERM : EXIT_OSERR;
        }
        if (r > 0) {
                free_listeners(requested, arg.n_listen);
                log_adopted(adopted, (size_t) r);
                if (arg.socket_mode != (mode_t) -1 || arg.socket_user || arg.socket_group || arg.ipv6_only ||
                    arg.freebind || arg.bind_to_device)
                        log_warning("--socket-mode, --socket-user, --socket-group, --ipv6-only, --freebind and "
                                    "--bind-to-device apply to sockets bindonce binds; for these, the socket "
                                    "unit's settings hold");
                *ret = adopted;
                *ret_n = (size_t) r;
                *ret_bound_here = false;
                if (adopted_set_nonblocking(adopted, (size_t) r) < 0) {
                        free_listeners(adopted, (size_t) r);
                        return EXIT_OSERR;
                }
                return 0;
        }
        if (arg.n_listen == 0) {
                free_listeners(requested, arg.n_listen);
                log_usage("no socket to listen on, and none passed by systemd; add --listen ADDR, "
                          "such as -l 127.0.0.1:8080");
                return EXIT_USAGE;
        }
        r = open_listeners(requested, arg.n_listen, &lo);
        if (r < 0) {
                free_listeners(requested, arg.n_listen);
                return exit_status_from_errno(r);
        }
        *ret = requested;
        *ret_n = arg.n_listen;
        *ret_bound_here = true;
        return 0;
}

static int supervise(Listener *listeners, size_t n_listeners, bool bound_here, const Workers *w,
                     const WatchConfig *watch) {
        const char *fdstore = getenv("FDSTORE");
        Supervisor *sup = NULL;
        SupervisorConfig config = {
                .argv = arg.argv,
                .name = arg.name,
                .n_workers = arg.workers,
                .restart = (RestartPolicy) arg.restart,
                .stop_timeout = arg.stop_timeout,
                .give_up = arg.give_up,
                .give_up_explicit = arg.give_up_explicit,
                /* Adopted from systemd, or in its fd store: the sockets outlive bindonce. */
                .sockets_kept = !bound_here || arg.fd_store || (fdstore && strcmp(fdstore, "0") != 0),
                .setenv = w->env,
                .n_setenv = w->n_env,
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
                .stop_signal = arg.stop_signal,
                .worker_setup = w->setup,
                .watch = watch,
                .watch_restart = arg.watch_restart,
        };
        int r;

        upgrade_apply_config(&config);
        r = supervisor_new(&sup, &config, listeners, n_listeners);
        if (r < 0)
                return EXIT_OSERR;
        (void) log_attach_event();      /* from here on, a stalled stderr waits in log.c's buffer */

        /* Sockets we bound go to systemd's fd store only once bindonce is sure to run. */
        if (bound_here && (arg.fd_store || (fdstore && strcmp(fdstore, "0") != 0))) {
                r = activation_store(listeners, n_listeners);
                if (r > 0)
                        log_info("handed %d sockets to systemd's fd store", r);
        }

        r = supervisor_run(sup);
        supervisor_free(sup);
        return r;
}

/* What bindonce inherited and will not adopt goes at once: an fd a careless parent left
 * open (a log file, a pipe's end, a deleted file's space) would otherwise be held for
 * bindonce's whole life. Kept: stdio, the sockets LISTEN_FDS names for this process, and
 * everything when an upgrade in place hands its state over (its fds are ours). A broken
 * activation environment keeps them too: activation_adopt() then refuses it (exit 78). */
static void close_inherited(void) {
        const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
        unsigned long pid, n = 0;

        if (getenv(UPGRADE_ENV_STATE) || getenv(UPGRADE_ENV_FAILED))
                return;
        if (pid_s && parse_uint(pid_s, 1, INT_MAX, &pid) >= 0 && (pid_t) pid == getpid() &&
            (!fds_s || parse_uint(fds_s, 0, INT_MAX - SD_LISTEN_FDS_START, &n) < 0))
                return;
        if (pid_s && (pid_t) strtoul(pid_s, NULL, 10) != getpid())
                n = 0;          /* meant for another process: none of them is ours */
        (void) close_from(SD_LISTEN_FDS_START + (int) n);
}

static int run(int argc, char *argv[]) {
        _cleanup_(workers_done) Workers workers = {};
        WatchConfig watch = {};
        Listener *listeners = NULL;
        size_t n_listeners = 0;
        bool bound_here = false;
        int r;

        /* Before anything can fork: the signals the loop takes through signalfd are blocked
         * (signals.c), and SIGPIPE is ignored (a worker gets default dispositions back). */
        signals_block();
        signal(SIGPIPE, SIG_IGN);

        r = ensure_stdio();
        if (r < 0)
                return EXIT_OSERR;
        close_inherited();      /* before bindonce opens anything of its own */
        log_setup();

        /* NEW --upgrade-check OPTIONS: the bindonce about to execute this binary asks. */
        if (argc >= 2 && strcmp(argv[1], "--upgrade-check") == 0) {
                argv[1] = argv[0];
                return upgrade_check_report(options_parse(&arg, argc - 1, argv + 1));
        }
        /* An upgrade in place: the previous bindonce's state, before anything else. */
        (void) upgrade_incoming_open();

        r = options_parse(&arg, argc, argv);
        if (r <= 0) {
                upgrade_incoming_abort("it refuses the command line");
                return r < 0 ? (r == -ENOMEM ? EXIT_OSERR : EXIT_USAGE) : EXIT_SUCCESS;
        }

        if (arg.generate) {
                Listener *requested = NULL;

                r = parse_listeners(&requested);
                if (r < 0)
                        return r == -EINVAL ? EXIT_USAGE : EXIT_OSERR;
                r = generate_units(requested, arg.n_listen);
                free_listeners(requested, arg.n_listen);
                return r;
        }

        r = workers_prepare(&workers);
        if (r > 0) {
                upgrade_incoming_abort("it cannot set up its workers");
                return r;
        }
        if (arg.n_watch) {
                r = watch_prepare(&watch);
                if (r > 0) {
                        upgrade_incoming_abort("its --watch paths are not usable");
                        return r;
                }
        }
        /* An upgrade in place: the sockets the previous bindonce held. */
        r = upgrade_take_listeners(&listeners);
        if (r < 0) {
                upgrade_incoming_abort("out of memory");
                return EXIT_OSERR;
        }
        n_listeners = (size_t) r;
        r = n_listeners > 0 ? 0 : get_listeners(&listeners, &n_listeners, &bound_here);
        if (r > 0)
                return r;

        r = supervise(listeners, n_listeners, bound_here, &workers, arg.n_watch ? &watch : NULL);

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
        upgrade_init(argv);
        r = run(argc, argv);

        options_done(&arg);
        log_close();
        return r;
}
