/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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
#include "log.h"
#include "supervisor.h"
#include "units.h"
#include "upgrade.h"
#include "util.h"

#ifndef BINDONCE_VERSION
#define BINDONCE_VERSION "0.1"
#endif


/* One requested socket, in command-line order. */
typedef struct ListenArg {
        const char *option;     /* as given, for error messages */
        const char *text;
        int type;               /* 0: a plain -l, typed by -d/--seqpacket */
} ListenArg;

static ListenArg *arg_listen;
static size_t arg_n_listen;
static char **arg_fdnames;
static size_t arg_n_fdnames;
static int arg_socket_type = SOCK_STREAM;
static int arg_backlog = SOMAXCONN;
static bool arg_reuse_port;
static unsigned arg_workers = 1;
static char **arg_setenv;
static size_t arg_n_setenv;
static RestartPolicy arg_restart = RESTART_ALWAYS;
static usec_t arg_stop_timeout = 10 * USEC_PER_SEC;
static unsigned arg_give_up = 5;
static bool arg_give_up_explicit;
static const char *arg_name;
static char **arg_argv;
static bool arg_fd_store;
static ReadyMode arg_ready = READY_EXEC;
static usec_t arg_start_timeout = 60 * USEC_PER_SEC;
static bool arg_notify_access_all;
static unsigned arg_max_surge = 1, arg_max_unavailable = 0;
static usec_t arg_watchdog;
static usec_t arg_min_ready = USEC_INFINITY;     /* unset: 1 s with --ready exec, 0 with notify */
static const char *arg_control;
static Balance arg_balance = BALANCE_SHARED;
/* generate-units */
static const char *arg_generate;        /* the NAME of `bindonce generate-units NAME` */
static bool arg_install;
static const char *arg_unit_dir = "/etc/systemd/system";
static char **arg_options;              /* the options as given, for ExecStart= */
static size_t arg_n_options;

static void free_args(void) {
        free(arg_listen);
        for (size_t i = 0; i < arg_n_fdnames; i++)
                free(arg_fdnames[i]);
        free(arg_fdnames);
        free(arg_setenv);
        free(arg_options);
}

static void help(void) {
        printf("Usage: bindonce [OPTIONS] -- COMMAND [ARG...]\n"
               "       bindonce generate-units NAME [--install] [--unit-dir DIR] [OPTIONS] -- COMMAND [ARG...]\n"
               "       bindonce ctl [--name NAME | --control PATH] [--json] COMMAND [ARG...]\n"
               "\n"
               "Bind listening sockets once and run COMMAND as N workers that receive them by the\n"
               "systemd socket-activation protocol. Workers that die are restarted; the sockets stay.\n"
               "\n"
               "Sockets:\n"
               "  -l --listen ADDR            Listen on ADDR: PORT, IPv4:PORT, [IPv6]:PORT, /path, @name\n"
               "     --listen-datagram ADDR   A datagram socket on ADDR\n"
               "     --listen-seqpacket ADDR  A sequential-packet socket on the unix ADDR\n"
               "  -d --datagram               Plain --listen sockets are datagram sockets\n"
               "     --seqpacket              Plain --listen sockets are sequential-packet sockets\n"
               "     --fdname NAME[:NAME...]  Names of the sockets, in order (default: --name)\n"
               "     --backlog N              Listen backlog (default: %d)\n"
               "     --reuse-port             Set SO_REUSEPORT (default: off)\n"
               "     --balance shared|reuseport\n"
               "                              One socket shared by all workers, or one SO_REUSEPORT\n"
               "                              socket per worker (default: shared)\n"
               "     --fd-store               Keep the sockets in systemd's fd store, so that they\n"
               "                              survive a restart of bindonce (default: off)\n"
               "\n"
               "Workers:\n"
               "  -w --workers N              Number of workers (default: 1)\n"
               "  -E --setenv VAR[=VALUE]     Set VAR for the workers (VAR alone: pass our own)\n"
               "     --restart always|on-failure|no\n"
               "                              When to restart a worker (default: always)\n"
               "     --stop-timeout SEC       SIGKILL a worker this long after SIGTERM (default: 10)\n"
               "     --give-up N              Exit when every worker failed N times in a row\n"
               "                              within 1 s of starting; 0: never (default: 5)\n"
               "     --name NAME              Name of this instance, its control socket and the\n"
               "                              default socket name (default: the command's name)\n"
               "     --ready exec|notify      Ready once exec'd, or on READY=1 (default: exec)\n"
               "     --start-timeout SEC      Time to get ready with --ready notify (default: 60)\n"
               "     --notify-access main|all Who may send notifications (default: main)\n"
               "     --max-surge N            Extra workers during a reload (default: 1)\n"
               "     --max-unavailable N      Workers that may be down during a reload (default: 0)\n"
               "     --watchdog SEC           Workers must send WATCHDOG=1 this often (default: 0, off)\n"
               "     --min-ready SEC          A reload's new worker must stay up this long once ready\n"
               "                              (default: 1 with --ready exec, 0 with notify)\n"
               "     --control PATH           Control socket (default: /run/bindonce/NAME.sock as root,\n"
               "                              else $XDG_RUNTIME_DIR/bindonce/NAME.sock); 'none': off\n"
               "\n"
               "generate-units:\n"
               "     --install                Write NAME.socket and NAME.service instead of printing\n"
               "     --unit-dir DIR           Where --install writes (default: /etc/systemd/system)\n"
               "\n"
               "  -h --help                   Show this help\n"
               "     --version                Show the version\n"
               "\n"
               "See bindonce(1).\n",
               SOMAXCONN);
}

/* Seconds with an optional fraction, "10", "0.5", up to a day. */
static int parse_seconds(const char *s, usec_t *ret) {
        usec_t usec = 0, scale = USEC_PER_SEC;
        const char *p = s;
        bool digits = false;

        for (; *p >= '0' && *p <= '9'; p++, digits = true) {
                usec = usec * 10 + (usec_t) (*p - '0') * USEC_PER_SEC;
                if (usec > 86400 * USEC_PER_SEC)
                        return -ERANGE;
        }
        if (*p == '.')
                for (p++; *p >= '0' && *p <= '9'; p++, digits = true) {
                        scale /= 10;
                        usec += (usec_t) (*p - '0') * scale;
                }
        if (*p || !digits)
                return -EINVAL;
        *ret = usec;
        return 0;
}

static int add_fdnames(const char *list) {
        /* Empty fields ("a::b") are kept, to be rejected as invalid names. */
        const char *start = list;
        for (;;) {
                const char *end = strchrnul(start, ':');
                char **a = realloc(arg_fdnames, (arg_n_fdnames + 1) * sizeof *a);

                if (!a)
                        return -ENOMEM;
                arg_fdnames = a;
                arg_fdnames[arg_n_fdnames] = strndup(start, (size_t) (end - start));
                if (!arg_fdnames[arg_n_fdnames])
                        return -ENOMEM;
                if (!fdname_is_valid(arg_fdnames[arg_n_fdnames++]))
                        return log_usage("--fdname '%s': names are 1 to 255 printable characters without ':'", list);
                if (!*end)
                        return 0;
                start = end + 1;
        }
}

static int add_listen(const char *option, const char *text, int type) {
        ListenArg *a = realloc(arg_listen, (arg_n_listen + 1) * sizeof *a);

        if (!a)
                return -ENOMEM;
        arg_listen = a;
        arg_listen[arg_n_listen++] = (ListenArg) { option, text, type };
        return 0;
}

static int add_setenv(const char *s) {
        char **a;

        if (*s == '=' || *s == '\0')
                return log_usage("--setenv '%s': expected VAR or VAR=VALUE", s);
        if (env_is_reserved(s))
                return log_usage("--setenv '%s': bindonce sets this variable for each worker itself", s);
        a = realloc(arg_setenv, (arg_n_setenv + 1) * sizeof *a);
        if (!a)
                return -ENOMEM;
        arg_setenv = a;
        arg_setenv[arg_n_setenv++] = (char *) s;
        return 0;
}

/* <0: error (logged), 0: done (--help, --version), >0: go on. */
static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_LISTEN_DATAGRAM = 0x100,
                ARG_LISTEN_SEQPACKET,
                ARG_SEQPACKET,
                ARG_FDNAME,
                ARG_BACKLOG,
                ARG_REUSE_PORT,
                ARG_RESTART,
                ARG_STOP_TIMEOUT,
                ARG_GIVE_UP,
                ARG_NAME,
                ARG_FD_STORE,
                ARG_READY,
                ARG_START_TIMEOUT,
                ARG_NOTIFY_ACCESS,
                ARG_MAX_SURGE,
                ARG_MAX_UNAVAILABLE,
                ARG_WATCHDOG,
                ARG_MIN_READY,
                ARG_CONTROL,
                ARG_BALANCE,
                ARG_INSTALL,
                ARG_UNIT_DIR,
                ARG_VERSION,
        };
        static const struct option options[] = {
                { "listen",           required_argument, NULL, 'l'                  },
                { "listen-datagram",  required_argument, NULL, ARG_LISTEN_DATAGRAM  },
                { "listen-seqpacket", required_argument, NULL, ARG_LISTEN_SEQPACKET },
                { "datagram",         no_argument,       NULL, 'd'                  },
                { "seqpacket",        no_argument,       NULL, ARG_SEQPACKET        },
                { "fdname",           required_argument, NULL, ARG_FDNAME           },
                { "backlog",          required_argument, NULL, ARG_BACKLOG          },
                { "reuse-port",       no_argument,       NULL, ARG_REUSE_PORT       },
                { "workers",          required_argument, NULL, 'w'                  },
                { "setenv",           required_argument, NULL, 'E'                  },
                { "restart",          required_argument, NULL, ARG_RESTART          },
                { "stop-timeout",     required_argument, NULL, ARG_STOP_TIMEOUT     },
                { "give-up",          required_argument, NULL, ARG_GIVE_UP          },
                { "name",             required_argument, NULL, ARG_NAME             },
                { "fd-store",         no_argument,       NULL, ARG_FD_STORE         },
                { "ready",            required_argument, NULL, ARG_READY            },
                { "start-timeout",    required_argument, NULL, ARG_START_TIMEOUT    },
                { "notify-access",    required_argument, NULL, ARG_NOTIFY_ACCESS    },
                { "max-surge",        required_argument, NULL, ARG_MAX_SURGE        },
                { "max-unavailable",  required_argument, NULL, ARG_MAX_UNAVAILABLE  },
                { "watchdog",         required_argument, NULL, ARG_WATCHDOG         },
                { "min-ready",        required_argument, NULL, ARG_MIN_READY        },
                { "control",          required_argument, NULL, ARG_CONTROL          },
                { "balance",          required_argument, NULL, ARG_BALANCE          },
                { "install",          no_argument,       NULL, ARG_INSTALL          },
                { "unit-dir",         required_argument, NULL, ARG_UNIT_DIR         },
                { "help",             no_argument,       NULL, 'h'                  },
                { "version",          no_argument,       NULL, ARG_VERSION          },
                {}
        };
        unsigned long v;
        int c, r;

        if (argc >= 2 && strcmp(argv[1], "generate-units") == 0) {
                if (argc >= 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
                        help();
                        return 0;
                }
                if (argc < 3 || argv[2][0] == '-')
                        return log_usage("generate-units needs a NAME first, such as 'bindonce generate-units "
                                         "myapp -l 8080 -- ./myapp'");
                if (!unit_prefix_is_valid(argv[2]))
                        return log_usage("generate-units '%s': a unit name takes letters, digits and : _ . - "
                                         "only (no '@'), up to 247 bytes, such as 'myapp'", argv[2]);
                arg_generate = argv[2];
                argc -= 2;
                argv += 2;
        }

        opterr = 0;
        /* '+': stop at the command, so its own options are left alone even without "--". */
        while ((c = getopt_long(argc, argv, "+:l:dw:E:h", options, NULL)) >= 0) {
                switch (c) {
                case 'l':
                        r = add_listen("--listen", optarg, 0);
                        break;
                case ARG_LISTEN_DATAGRAM:
                        r = add_listen("--listen-datagram", optarg, SOCK_DGRAM);
                        break;
                case ARG_LISTEN_SEQPACKET:
                        r = add_listen("--listen-seqpacket", optarg, SOCK_SEQPACKET);
                        break;
                case 'd':
                        arg_socket_type = SOCK_DGRAM;
                        r = 0;
                        break;
                case ARG_SEQPACKET:
                        arg_socket_type = SOCK_SEQPACKET;
                        r = 0;
                        break;
                case ARG_FDNAME:
                        r = add_fdnames(optarg);
                        break;
                case ARG_BACKLOG:
                        if (parse_uint(optarg, 1, INT_MAX, &v) < 0)
                                return log_usage("--backlog '%s': must be a whole number from 1 to %d", optarg, INT_MAX);
                        arg_backlog = (int) v;
                        r = 0;
                        break;
                case ARG_REUSE_PORT:
                        arg_reuse_port = true;
                        r = 0;
                        break;
                case 'w':
                        if (parse_uint(optarg, 1, WORKERS_MAX, &v) < 0)
                                return log_usage("--workers '%s': must be a whole number from 1 to %d", optarg, WORKERS_MAX);
                        arg_workers = (unsigned) v;
                        r = 0;
                        break;
                case 'E':
                        r = add_setenv(optarg);
                        break;
                case ARG_RESTART:
                        if (strcmp(optarg, "always") == 0)
                                arg_restart = RESTART_ALWAYS;
                        else if (strcmp(optarg, "on-failure") == 0)
                                arg_restart = RESTART_ON_FAILURE;
                        else if (strcmp(optarg, "no") == 0)
                                arg_restart = RESTART_NO;
                        else
                                return log_usage("--restart '%s': must be always, on-failure or no", optarg);
                        r = 0;
                        break;
                case ARG_STOP_TIMEOUT:
                        if (parse_seconds(optarg, &arg_stop_timeout) < 0)
                                return log_usage("--stop-timeout '%s': must be seconds from 0 to 86400, such as 10 or 0.5", optarg);
                        r = 0;
                        break;
                case ARG_GIVE_UP:
                        if (parse_uint(optarg, 0, 1000000, &v) < 0)
                                return log_usage("--give-up '%s': must be a whole number from 0 (never) to 1000000", optarg);
                        arg_give_up = (unsigned) v;
                        arg_give_up_explicit = true;
                        r = 0;
                        break;
                case ARG_NAME:
                        if (!fdname_is_valid(optarg) || strchr(optarg, '/'))
                                return log_usage("--name '%s': must be 1 to 255 printable characters without ':' or '/'", optarg);
                        arg_name = optarg;
                        r = 0;
                        break;
                case ARG_FD_STORE:
                        arg_fd_store = true;
                        r = 0;
                        break;
                case ARG_READY:
                        if (strcmp(optarg, "exec") == 0)
                                arg_ready = READY_EXEC;
                        else if (strcmp(optarg, "notify") == 0)
                                arg_ready = READY_NOTIFY;
                        else
                                return log_usage("--ready '%s': must be exec or notify", optarg);
                        r = 0;
                        break;
                case ARG_START_TIMEOUT:
                        if (parse_seconds(optarg, &arg_start_timeout) < 0 || arg_start_timeout == 0)
                                return log_usage("--start-timeout '%s': must be seconds from 0.001 to 86400", optarg);
                        r = 0;
                        break;
                case ARG_NOTIFY_ACCESS:
                        if (strcmp(optarg, "main") == 0)
                                arg_notify_access_all = false;
                        else if (strcmp(optarg, "all") == 0)
                                arg_notify_access_all = true;
                        else
                                return log_usage("--notify-access '%s': must be main or all", optarg);
                        r = 0;
                        break;
                case ARG_MAX_SURGE:
                case ARG_MAX_UNAVAILABLE:
                        if (parse_uint(optarg, 0, WORKERS_MAX, &v) < 0)
                                return log_usage("%s '%s': must be a whole number from 0 to %d",
                                                 c == ARG_MAX_SURGE ? "--max-surge" : "--max-unavailable", optarg, WORKERS_MAX);
                        *(c == ARG_MAX_SURGE ? &arg_max_surge : &arg_max_unavailable) = (unsigned) v;
                        r = 0;
                        break;
                case ARG_WATCHDOG:
                        if (parse_seconds(optarg, &arg_watchdog) < 0)
                                return log_usage("--watchdog '%s': must be seconds from 0 (off) to 86400", optarg);
                        r = 0;
                        break;
                case ARG_MIN_READY:
                        if (parse_seconds(optarg, &arg_min_ready) < 0)
                                return log_usage("--min-ready '%s': must be seconds from 0 to 86400, such as 1 or 0.5", optarg);
                        r = 0;
                        break;
                case ARG_BALANCE:
                        if (strcmp(optarg, "shared") == 0)
                                arg_balance = BALANCE_SHARED;
                        else if (strcmp(optarg, "reuseport") == 0)
                                arg_balance = BALANCE_REUSEPORT;
                        else
                                return log_usage("--balance '%s': must be shared or reuseport", optarg);
                        r = 0;
                        break;
                case ARG_CONTROL: {
                        SocketAddress a;
                        const char *why;

                        if (strcmp(optarg, "none") == 0) {
                                arg_control = "";
                                r = 0;
                                break;
                        }
                        if (optarg[0] != '/')
                                return log_usage("--control '%s': must be an absolute path, or 'none'", optarg);
                        /* Checked now, not after every -l is bound. */
                        if (address_parse(optarg, SOCK_STREAM, &a, &why) < 0)
                                return log_usage("--control '%s': %s", optarg, why);
                        arg_control = optarg;
                        r = 0;
                        break;
                }
                case ARG_INSTALL:
                case ARG_UNIT_DIR:
                        if (!arg_generate)
                                return log_usage("option '%s' belongs to 'bindonce generate-units'", argv[optind - 1]);
                        if (c == ARG_INSTALL)
                                arg_install = true;
                        else if (optarg[0] != '/')
                                return log_usage("--unit-dir '%s': must be an absolute path", optarg);
                        else
                                arg_unit_dir = optarg;
                        r = 0;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("bindonce %s\n", BINDONCE_VERSION);
                        return 0;
                case ':':
                        return log_usage("option '%s' needs a value; see 'bindonce --help'", argv[optind - 1]);
                default:
                        return log_bad_option(argv[optind - 1], optopt, "bindonce --help");
                }
                if (r < 0)
                        return r == -ENOMEM ? log_error_errno(r, "Out of memory") : r;
        }

        if (optind >= argc || !argv[optind][0])
                return log_usage("no command given after '--'; usage: bindonce [OPTIONS] -- COMMAND [ARG...]");
        arg_argv = argv + optind;

        if (arg_generate) {
                /* ExecStart= repeats the options as given, less generate-units' own. */
                int end = strcmp(argv[optind - 1], "--") == 0 ? optind - 1 : optind;

                arg_options = calloc((size_t) end + 2, sizeof(char *));
                if (!arg_options)
                        return log_error_errno(-ENOMEM, "Out of memory");
                if (!arg_name)
                        arg_options[arg_n_options++] = (char *) "--name", arg_options[arg_n_options++] = (char *) arg_generate;
                for (int i = 1; i < end; i++) {
                        if (strcmp(argv[i], "--install") == 0 || strncmp(argv[i], "--unit-dir=", 11) == 0)
                                continue;
                        if (strcmp(argv[i], "--unit-dir") == 0) {
                                i++;
                                continue;
                        }
                        arg_options[arg_n_options++] = argv[i];
                }
                if (!arg_name)
                        arg_name = arg_generate;
                if (arg_n_listen == 0)
                        return log_usage("generate-units: no socket to listen on; add --listen ADDR, such as -l 8080");
        }
        if (arg_max_surge + arg_max_unavailable == 0)
                return log_usage("--max-surge 0 with --max-unavailable 0 leaves a reload no room; raise one of them");
        if (arg_n_fdnames > arg_n_listen)
                return log_usage("--fdname: %zu names for %zu sockets; give at most one name per socket",
                                 arg_n_fdnames, arg_n_listen);
        for (size_t i = 0; i < arg_n_fdnames; i++)
                for (size_t j = 0; j < i; j++)
                        if (strcmp(arg_fdnames[i], arg_fdnames[j]) == 0)
                                return log_usage("--fdname: the name '%s' is given twice; names must differ", arg_fdnames[i]);

        if (!arg_name) {
                const char *slash = strrchr(arg_argv[0], '/');
                arg_name = slash ? slash + 1 : arg_argv[0];
                if (!fdname_is_valid(arg_name))
                        arg_name = "bindonce";
        }
        return 1;
}

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
        Listener *l = calloc(arg_n_listen ? arg_n_listen : 1, sizeof *l);

        if (!l)
                return log_error_errno(-ENOMEM, "Out of memory");
        for (size_t i = 0; i < arg_n_listen; i++) {
                const ListenArg *a = &arg_listen[i];
                int type = a->type ? a->type : arg_socket_type;
                const char *why;

                l[i].fd = -1;
                l[i].name = strdup(i < arg_n_fdnames ? arg_fdnames[i] : arg_name);
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
                r = listener_open(&l[i], arg_backlog, arg_reuse_port || arg_balance == BALANCE_REUSEPORT);
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
                .name = arg_generate,
                .listeners = l,
                .n_listeners = n,
                .backlog = arg_backlog == SOMAXCONN ? 0 : arg_backlog,
                /* Per-worker sockets need the socket unit's sockets to admit siblings. */
                .reuse_port = arg_reuse_port || arg_balance == BALANCE_REUSEPORT,
                .exec_args = arg_options,
                .n_exec_args = arg_n_options,
                .command = arg_argv,
                .bindonce_path = self ? self : "/usr/local/bin/bindonce",
                .instance = arg_name,
                .control = arg_control && *arg_control ? arg_control : NULL,
                .no_control = arg_control && !*arg_control,
                .stop_timeout_sec = (double) arg_stop_timeout / USEC_PER_SEC,
        };
        int r = arg_install ? units_install(&req, arg_unit_dir) : units_print(&req, stdout);

        return r < 0 ? exit_code_for(r) : EXIT_SUCCESS;
}

static void log_adopted(const Listener *l, size_t n) {
        char buf[ADDRESS_FORMAT_MAX];

        log_info("socket activation: adopted %zu sockets from systemd%s", n,
                 arg_n_listen ? "; --listen options not bound" : "");
        for (size_t i = 0; i < n; i++)
                log_info("listening on %s (fd %d, name %s, %s, from systemd)",
                         l[i].address.size ? address_format(&l[i].address, buf) : "(unknown address)",
                         l[i].fd, l[i].name, socket_type_name(l[i].address.type));
}

static int run(int argc, char *argv[]) {
        Listener *listeners = NULL, *requested = NULL;
        size_t n_listeners;
        int n_upgraded;
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
        sigaddset(&mask, SIGUSR2);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        r = ensure_stdio();
        if (r < 0)
                return EXIT_OSERR;
        log_setup();

        /* NEW --upgrade-check OPTIONS: the bindonce about to execute this binary asks. */
        if (argc >= 2 && strcmp(argv[1], "--upgrade-check") == 0) {
                argv[1] = argv[0];
                return upgrade_check_report(parse_argv(argc - 1, argv + 1));
        }
        /* An upgrade in place: the previous bindonce's state, before anything else. */
        (void) upgrade_incoming_open();

        r = parse_argv(argc, argv);
        if (r <= 0) {
                upgrade_incoming_abort("it refuses the command line");
                return r < 0 ? (r == -ENOMEM ? EXIT_OSERR : EXIT_USAGE) : EXIT_SUCCESS;
        }

        /* Every -l is checked, even when systemd passes the sockets: a typo shows at once. */
        r = parse_listeners(&requested);
        if (r < 0)
                return r == -EINVAL ? EXIT_USAGE : EXIT_OSERR;

        if (arg_generate) {
                r = generate_units(requested, arg_n_listen);
                free_listeners(requested, arg_n_listen);
                return r;
        }

        n_upgraded = upgrade_take_listeners(&listeners);
        r = n_upgraded != 0 ? n_upgraded : activation_adopt(&listeners);
        if (r < 0) {
                free_listeners(requested, arg_n_listen);
                return r == -EBADMSG ? EXIT_CONFIG : EXIT_OSERR;
        }
        if (r > 0) {
                n_listeners = (size_t) r;
                free_listeners(requested, arg_n_listen);
                if (n_upgraded == 0)
                        log_adopted(listeners, n_listeners);
        } else {
                if (arg_n_listen == 0) {
                        free_listeners(requested, arg_n_listen);
                        log_usage("no socket to listen on, and none passed by systemd; add --listen ADDR, "
                                  "such as -l 127.0.0.1:8080");
                        return EXIT_USAGE;
                }
                listeners = requested;
                n_listeners = arg_n_listen;
                bound_here = true;
                r = open_listeners(listeners, n_listeners);
                if (r < 0) {
                        free_listeners(listeners, n_listeners);
                        return exit_code_for(r);
                }
        }

        SupervisorConfig config = {
                .argv = arg_argv,
                .name = arg_name,
                .n_workers = arg_workers,
                .restart = arg_restart,
                .stop_timeout = arg_stop_timeout,
                .give_up = arg_give_up,
                .give_up_explicit = arg_give_up_explicit,
                /* Adopted from systemd, or in its fd store: the sockets outlive bindonce. */
                .sockets_kept = !bound_here || arg_fd_store || (getenv("FDSTORE") && strcmp(getenv("FDSTORE"), "0") != 0),
                .setenv = arg_setenv,
                .n_setenv = arg_n_setenv,
                .ready = arg_ready,
                .start_timeout = arg_start_timeout,
                .notify_access_all = arg_notify_access_all,
                .max_surge = arg_max_surge,
                .max_unavailable = arg_max_unavailable,
                .watchdog = arg_watchdog,
                .min_ready = arg_min_ready != USEC_INFINITY ? arg_min_ready :
                             arg_ready == READY_EXEC ? USEC_PER_SEC : 0,
                .control_path = arg_control,
                .balance = arg_balance,
                .backlog = arg_backlog,
        };
        upgrade_apply_config(&config);
        r = supervisor_new(&sup, &config, listeners, n_listeners);
        if (r < 0) {
                close_listeners(listeners, n_listeners);
                free_listeners(listeners, n_listeners);
                return EXIT_OSERR;
        }

        /* Sockets we bound go to systemd's fd store only once bindonce is sure to run. */
        const char *fdstore = getenv("FDSTORE");
        if (bound_here && (arg_fd_store || (fdstore && strcmp(fdstore, "0") != 0))) {
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
        upgrade_init(argv);
        r = run(argc, argv);

        free_args();
        return r;
}
