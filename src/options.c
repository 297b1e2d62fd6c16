/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "address.h"
#include "listener.h"
#include "log.h"
#include "options.h"
#include "spawn.h"
#include "supervisor.h"
#include "units.h"

#ifndef BINDONCE_VERSION
#define BINDONCE_VERSION "0.1"
#endif

/* ---- the value parsers ------------------------------------------------------------------ */

/* Seconds with an optional fraction, "10", "0.5", up to a day. */
int parse_seconds(const char *s, usec_t *ret) {
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

int parse_signal(const char *s, int *ret) {
        unsigned long v;
        const char *name = strncmp(s, "SIG", 3) == 0 ? s + 3 : s;

        for (int sig = 1; sig < NSIG; sig++) {
                const char *n = sigabbrev_np(sig);
                if (n && strcmp(n, name) == 0) {
                        *ret = sig;
                        return 0;
                }
        }
        if (parse_uint(s, 1, NSIG - 1, &v) < 0)
                return -EINVAL;
        *ret = (int) v;
        return 0;
}

int parse_mode(const char *s, mode_t *ret) {
        unsigned long v = 0;

        if (!*s || strlen(s) > 5)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '7')
                        return -EINVAL;
                v = v * 8 + (unsigned long) (*p - '0');
        }
        if (v > 07777)
                return -ERANGE;
        *ret = (mode_t) v;
        return 0;
}

/* ---- the option table --------------------------------------------------------------------- */

typedef enum OptionKind {
        OPT_FLAG,               /* bool = true */
        OPT_CONST,              /* int = value */
        OPT_COUNT,              /* unsigned in [min, max] */
        OPT_SECONDS,            /* usec_t, seconds in [min, 86400] (min in µs) */
        OPT_CHOICE,             /* int = index of the word in choices */
        OPT_CUSTOM,             /* parse() */
} OptionKind;

typedef struct OptionSpec OptionSpec;
struct OptionSpec {
        const char *name;
        int short_name;                 /* 0: long only */
        OptionKind kind;
        size_t offset;                  /* of the field in Options */
        unsigned long min, max;         /* OPT_COUNT, OPT_SECONDS (min only) */
        int value;                      /* OPT_CONST */
        const char *const *choices;     /* OPT_CHOICE, NULL-terminated */
        int (*parse)(Options *o, const OptionSpec *spec, const char *arg);
        bool no_arg;
        bool generate_only;             /* belongs to generate-units */
};

/* The field's offset, checked at compile time to have the type the kind writes. */
#define FIELD(f, type)                                                                          \
        (offsetof(Options, f) +                                                                 \
         0 * sizeof(char[__builtin_types_compatible_p(__typeof__(((Options *) 0)->f), type) ? 1 : -1]))

#define FLAG(n, s, f)           { .name = n, .short_name = s, .kind = OPT_FLAG, .offset = FIELD(f, bool), .no_arg = true }
#define CONST(n, s, f, v)       { .name = n, .short_name = s, .kind = OPT_CONST, .offset = FIELD(f, int), .value = v, .no_arg = true }
#define COUNT(n, s, f, lo, hi)  { .name = n, .short_name = s, .kind = OPT_COUNT, .offset = FIELD(f, unsigned), .min = lo, .max = hi }
#define SECONDS(n, f, lo)       { .name = n, .kind = OPT_SECONDS, .offset = FIELD(f, usec_t), .min = lo }
#define CHOICE(n, f, ...)       { .name = n, .kind = OPT_CHOICE, .offset = FIELD(f, int), \
                                  .choices = (const char *const []) { __VA_ARGS__, NULL } }
#define CUSTOM(n, s, fn)        { .name = n, .short_name = s, .kind = OPT_CUSTOM, .parse = fn }
#define CUSTOM_FLAG(n, s, fn)   { .name = n, .short_name = s, .kind = OPT_CUSTOM, .parse = fn, .no_arg = true }

static int opt_listen(Options *o, const OptionSpec *spec, const char *arg);
static int opt_fdname(Options *o, const OptionSpec *spec, const char *arg);
static int opt_setenv(Options *o, const OptionSpec *spec, const char *arg);
static int opt_give_up(Options *o, const OptionSpec *spec, const char *arg);
static int opt_watch(Options *o, const OptionSpec *spec, const char *arg);
static int opt_name(Options *o, const OptionSpec *spec, const char *arg);
static int opt_control(Options *o, const OptionSpec *spec, const char *arg);
static int opt_string(Options *o, const OptionSpec *spec, const char *arg);
static int opt_mode(Options *o, const OptionSpec *spec, const char *arg);
static int opt_stop_signal(Options *o, const OptionSpec *spec, const char *arg);
static int opt_install(Options *o, const OptionSpec *spec, const char *arg);
static int opt_unit_dir(Options *o, const OptionSpec *spec, const char *arg);
static int opt_help(Options *o, const OptionSpec *spec, const char *arg);
static int opt_version(Options *o, const OptionSpec *spec, const char *arg);

/* -w, the backlog and the surge take counts; the timeouts take seconds: each kind is
 * parsed, bounded and explained by one piece of code below. */
static const OptionSpec option_table[] = {
        CUSTOM("listen", 'l', opt_listen),
        CUSTOM("listen-datagram", 0, opt_listen),
        CUSTOM("listen-seqpacket", 0, opt_listen),
        CONST("datagram", 'd', socket_type, SOCK_DGRAM),
        CONST("seqpacket", 0, socket_type, SOCK_SEQPACKET),
        CUSTOM("fdname", 0, opt_fdname),
        COUNT("backlog", 0, backlog, 1, INT_MAX),
        FLAG("reuse-port", 0, reuse_port),
        CHOICE("balance", balance, "shared", "reuseport"),
        FLAG("fd-store", 0, fd_store),
        FLAG("nonblocking", 0, nonblocking),
        CUSTOM("socket-mode", 0, opt_mode),
        CUSTOM("socket-user", 0, opt_string),
        CUSTOM("socket-group", 0, opt_string),
        FLAG("ipv6-only", 0, ipv6_only),
        FLAG("freebind", 0, freebind),
        CUSTOM("bind-to-device", 0, opt_string),

        COUNT("workers", 'w', workers, 1, WORKERS_MAX),
        CUSTOM("setenv", 'E', opt_setenv),
        CHOICE("restart", restart, "always", "on-failure", "no"),
        SECONDS("stop-timeout", stop_timeout, 0),
        CUSTOM("stop-signal", 0, opt_stop_signal),
        CUSTOM("give-up", 0, opt_give_up),
        CUSTOM("name", 0, opt_name),
        CUSTOM("user", 0, opt_string),
        CUSTOM("group", 0, opt_string),
        CUSTOM("chdir", 0, opt_string),
        CUSTOM("umask", 0, opt_mode),
        FLAG("log-prefix", 0, log_prefix),

        CHOICE("ready", ready, "exec", "notify"),
        SECONDS("start-timeout", start_timeout, 1000),
        CHOICE("notify-access", notify_access, "main", "all"),
        COUNT("max-surge", 0, max_surge, 0, WORKERS_MAX),
        COUNT("max-unavailable", 0, max_unavailable, 0, WORKERS_MAX),
        SECONDS("watchdog", watchdog, 0),
        SECONDS("min-ready", min_ready, 0),
        CUSTOM("control", 0, opt_control),

        CUSTOM("watch", 0, opt_watch),
        CUSTOM("watch-ignore", 0, opt_watch),
        SECONDS("watch-delay", watch_delay, 0),
        FLAG("watch-restart", 0, watch_restart),

        { .name = "install", .kind = OPT_CUSTOM, .parse = opt_install, .no_arg = true, .generate_only = true },
        { .name = "unit-dir", .kind = OPT_CUSTOM, .parse = opt_unit_dir, .generate_only = true },
        CUSTOM_FLAG("help", 'h', opt_help),
        CUSTOM_FLAG("version", 0, opt_version),
};

#define FIELD_PTR(o, spec, type) ((type *) ((char *) (o) + (spec)->offset))

static int parse_choice(Options *o, const OptionSpec *spec, const char *arg) {
        char words[128] = "";
        size_t n = 0;

        for (; spec->choices[n]; n++)
                if (strcmp(spec->choices[n], arg) == 0) {
                        *FIELD_PTR(o, spec, int) = (int) n;
                        return 1;
                }
        /* "a, b or c" */
        for (size_t i = 0; i < n; i++)
                snprintf(words + strlen(words), sizeof words - strlen(words), "%s%s",
                         i == 0 ? "" : i + 1 == n ? " or " : ", ", spec->choices[i]);
        return log_usage("--%s '%s': must be %s", spec->name, arg, words);
}

/* Returns >0 to go on, 0 when done (--help), <0 on error. */
static int parse_one(Options *o, const OptionSpec *spec, const char *arg) {
        unsigned long v;
        usec_t usec;

        switch (spec->kind) {
        case OPT_FLAG:
                *FIELD_PTR(o, spec, bool) = true;
                return 1;
        case OPT_CONST:
                *FIELD_PTR(o, spec, int) = spec->value;
                return 1;
        case OPT_COUNT:
                if (parse_uint(arg, spec->min, spec->max, &v) < 0)
                        return log_usage("--%s '%s': must be a whole number from %lu to %lu",
                                         spec->name, arg, spec->min, spec->max);
                *FIELD_PTR(o, spec, unsigned) = (unsigned) v;
                return 1;
        case OPT_SECONDS:
                if (parse_seconds(arg, &usec) < 0 || usec < spec->min)
                        return log_usage("--%s '%s': must be seconds from %s to 86400, such as 10 or 0.5",
                                         spec->name, arg, spec->min ? "0.001" : "0");
                *FIELD_PTR(o, spec, usec_t) = usec;
                return 1;
        case OPT_CHOICE:
                return parse_choice(o, spec, arg);
        case OPT_CUSTOM:
                return spec->parse(o, spec, arg);
        }
        return -EINVAL;
}

/* ---- the options that need code of their own ------------------------------------------- */

static int opt_listen(Options *o, const OptionSpec *spec, const char *arg) {
        int type = strcmp(spec->name, "listen-datagram") == 0 ? SOCK_DGRAM :
                   strcmp(spec->name, "listen-seqpacket") == 0 ? SOCK_SEQPACKET : 0;
        ListenArg *a = realloc(o->listen, (o->n_listen + 1) * sizeof *a);

        if (!a)
                return -ENOMEM;
        o->listen = a;
        o->listen[o->n_listen++] = (ListenArg) {
                type == SOCK_DGRAM ? "--listen-datagram" : type ? "--listen-seqpacket" : "--listen", arg, type
        };
        return 1;
}

static int opt_fdname(Options *o, const OptionSpec *spec, const char *list) {
        /* Empty fields ("a::b") are kept, to be rejected as invalid names. */
        const char *start = list;
        for (;;) {
                const char *end = strchrnul(start, ':');
                char **a = realloc(o->fdnames, (o->n_fdnames + 1) * sizeof *a);

                if (!a)
                        return -ENOMEM;
                o->fdnames = a;
                o->fdnames[o->n_fdnames] = strndup(start, (size_t) (end - start));
                if (!o->fdnames[o->n_fdnames])
                        return -ENOMEM;
                if (!fdname_is_valid(o->fdnames[o->n_fdnames++]))
                        return log_usage("--fdname '%s': names are 1 to 255 printable characters without ':'", list);
                if (!*end)
                        return 1;
                start = end + 1;
        }
}

static int opt_setenv(Options *o, const OptionSpec *spec, const char *s) {
        char **a;

        if (*s == '=' || *s == '\0')
                return log_usage("--setenv '%s': expected VAR or VAR=VALUE", s);
        if (env_is_reserved(s))
                return log_usage("--setenv '%s': bindonce sets this variable for each worker itself", s);
        a = realloc(o->setenv, (o->n_setenv + 1) * sizeof *a);
        if (!a)
                return -ENOMEM;
        o->setenv = a;
        o->setenv[o->n_setenv++] = (char *) s;
        return 1;
}

static int opt_give_up(Options *o, const OptionSpec *spec, const char *arg) {
        unsigned long v;

        if (parse_uint(arg, 0, 1000000, &v) < 0)
                return log_usage("--give-up '%s': must be a whole number from 0 (never) to 1000000", arg);
        o->give_up = (unsigned) v;
        o->give_up_explicit = true;
        return 1;
}

/* --watch PATH and --watch-ignore GLOB, both repeatable. */
static int opt_watch(Options *o, const OptionSpec *spec, const char *arg) {
        bool ignore = strcmp(spec->name, "watch-ignore") == 0;
        char ***list = ignore ? &o->watch_ignore : &o->watch;
        size_t *n = ignore ? &o->n_watch_ignore : &o->n_watch;
        char **a;

        if (!*arg)
                return log_usage("--%s '': must not be empty", spec->name);
        a = realloc(*list, (*n + 1) * sizeof *a);
        if (!a)
                return -ENOMEM;
        *list = a;
        a[(*n)++] = (char *) arg;
        return 1;
}

static int opt_name(Options *o, const OptionSpec *spec, const char *arg) {
        if (!fdname_is_valid(arg) || strchr(arg, '/'))
                return log_usage("--name '%s': must be 1 to 255 printable characters without ':' or '/'", arg);
        o->name = arg;
        return 1;
}

static int opt_control(Options *o, const OptionSpec *spec, const char *arg) {
        SocketAddress a;
        const char *why;

        if (strcmp(arg, "none") == 0) {
                o->control = "";
                return 1;
        }
        if (arg[0] != '/')
                return log_usage("--control '%s': must be an absolute path, or 'none'", arg);
        /* Checked now, not after every -l is bound. */
        if (address_parse(arg, SOCK_STREAM, &a, &why) < 0)
                return log_usage("--control '%s': %s", arg, why);
        o->control = arg;
        return 1;
}

/* Names and paths: checked for form here, resolved against the system by the caller. */
static int opt_string(Options *o, const OptionSpec *spec, const char *arg) {
        static const struct { const char *name; size_t offset; } fields[] = {
                { "user",           offsetof(Options, user) },
                { "group",          offsetof(Options, group) },
                { "chdir",          offsetof(Options, chdir) },
                { "socket-user",    offsetof(Options, socket_user) },
                { "socket-group",   offsetof(Options, socket_group) },
                { "bind-to-device", offsetof(Options, bind_to_device) },
        };

        if (!*arg)
                return log_usage("--%s '': must not be empty", spec->name);
        if (strcmp(spec->name, "chdir") == 0 && arg[0] != '/')
                return log_usage("--chdir '%s': must be an absolute path", arg);
        if (strcmp(spec->name, "bind-to-device") == 0 && strlen(arg) >= 16)
                return log_usage("--bind-to-device '%s': interface names are at most 15 bytes", arg);
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (strcmp(fields[i].name, spec->name) == 0) {
                        *(const char **) ((char *) o + fields[i].offset) = arg;
                        return 1;
                }
        return -EINVAL;
}

static int opt_mode(Options *o, const OptionSpec *spec, const char *arg) {
        mode_t m;
        bool umask_opt = strcmp(spec->name, "umask") == 0;

        if (parse_mode(arg, &m) < 0 || (umask_opt && m > 0777))
                return log_usage("--%s '%s': must be an octal mode from 0 to %s, such as %s", spec->name, arg,
                                 umask_opt ? "0777" : "07777", umask_opt ? "027" : "0660");
        *(umask_opt ? &o->umask : &o->socket_mode) = m;
        return 1;
}

static int opt_stop_signal(Options *o, const OptionSpec *spec, const char *arg) {
        int sig;

        /* SIGSTOP would leave the worker to --stop-timeout's SIGKILL every time. */
        if (parse_signal(arg, &sig) < 0 || sig == SIGSTOP)
                return log_usage("--stop-signal '%s': must be a signal name (TERM, SIGINT, QUIT) or number, "
                                 "not STOP", arg);
        o->stop_signal = sig;
        return 1;
}

static int opt_install(Options *o, const OptionSpec *spec, const char *arg) {
        o->install = true;
        return 1;
}

static int opt_unit_dir(Options *o, const OptionSpec *spec, const char *arg) {
        if (arg[0] != '/')
                return log_usage("--unit-dir '%s': must be an absolute path", arg);
        o->unit_dir = arg;
        return 1;
}

static int opt_help(Options *o, const OptionSpec *spec, const char *arg) {
        options_help();
        return 0;
}

static int opt_version(Options *o, const OptionSpec *spec, const char *arg) {
        printf("bindonce %s\n", BINDONCE_VERSION);
        return 0;
}

/* ---- the command line --------------------------------------------------------------------- */

static void options_init(Options *o) {
        *o = (Options) {
                .socket_type = SOCK_STREAM,
                .backlog = SOMAXCONN,
                .socket_mode = (mode_t) -1,
                .workers = 1,
                .restart = RESTART_ALWAYS,
                .stop_timeout = 10 * USEC_PER_SEC,
                .stop_signal = SIGTERM,
                .give_up = 5,
                .umask = (mode_t) -1,
                .ready = READY_EXEC,
                .start_timeout = 60 * USEC_PER_SEC,
                .max_surge = 1,
                .min_ready = USEC_INFINITY,
                .watch_delay = 100 * USEC_PER_MSEC,
                .unit_dir = "/etc/systemd/system",
        };
}

/* `bindonce generate-units NAME ...`: takes NAME off the front. >0: go on. */
static int parse_generate(Options *o, int *argc, char ***argv) {
        char **a = *argv;

        if (*argc < 2 || strcmp(a[1], "generate-units") != 0)
                return 1;
        if (*argc >= 3 && (strcmp(a[2], "--help") == 0 || strcmp(a[2], "-h") == 0)) {
                options_help();
                return 0;
        }
        if (*argc < 3 || a[2][0] == '-')
                return log_usage("generate-units needs a NAME first, such as 'bindonce generate-units "
                                 "myapp -l 8080 -- ./myapp'");
        if (!unit_prefix_is_valid(a[2]))
                return log_usage("generate-units '%s': a unit name takes letters, digits and : _ . - "
                                 "only (no '@'), up to 247 bytes, such as 'myapp'", a[2]);
        o->generate = a[2];
        *argc -= 2;
        *argv += 2;
        return 1;
}

/* The getopt tables, built from option_table: val is 0x100 + the index (or the short name). */
static void build_getopt(struct option *longs, char *shorts) {
        size_t k = 0;

        shorts[k++] = '+';      /* stop at the command: its own options are left alone */
        shorts[k++] = ':';      /* a missing value is ':', not '?' */
        for (size_t i = 0; i < ELEMENTSOF(option_table); i++) {
                const OptionSpec *s = &option_table[i];

                longs[i] = (struct option) { s->name, s->no_arg ? no_argument : required_argument, NULL,
                                             s->short_name ? s->short_name : 0x100 + (int) i };
                if (s->short_name) {
                        shorts[k++] = (char) s->short_name;
                        if (!s->no_arg)
                                shorts[k++] = ':';
                }
        }
        longs[ELEMENTSOF(option_table)] = (struct option) {};
        shorts[k] = '\0';
}

static const OptionSpec *find_spec(int c) {
        if (c >= 0x100 && c < 0x100 + (int) ELEMENTSOF(option_table))
                return &option_table[c - 0x100];
        for (size_t i = 0; i < ELEMENTSOF(option_table); i++)
                if (option_table[i].short_name && option_table[i].short_name == c)
                        return &option_table[i];
        return NULL;
}

static int parse_options(Options *o, int argc, char *argv[]) {
        struct option longs[ELEMENTSOF(option_table) + 1];
        char shorts[2 + 3 * ELEMENTSOF(option_table) + 1];
        int c, r;

        build_getopt(longs, shorts);
        opterr = 0;
        optind = 0;     /* a fresh scan, also for a second parse in the tests */
        while ((c = getopt_long(argc, argv, shorts, longs, NULL)) >= 0) {
                const OptionSpec *spec = find_spec(c);

                if (c == ':')
                        return log_usage("option '%s' needs a value; see 'bindonce --help'", argv[optind - 1]);
                if (!spec)
                        return log_bad_option(argv[optind - 1], optopt, "bindonce --help");
                if (spec->generate_only && !o->generate)
                        return log_usage("option '%s' belongs to 'bindonce generate-units'", argv[optind - 1]);
                r = parse_one(o, spec, optarg);
                if (r <= 0)
                        return r == -ENOMEM ? log_error_errno(r, "Out of memory") : r;
        }
        if (optind >= argc || !argv[optind][0])
                return log_usage("no command given after '--'; usage: bindonce [OPTIONS] -- COMMAND [ARG...]");
        o->argv = argv + optind;
        return 1;
}

/* generate-units' own options, and the socket options that become the socket unit's own
 * settings: not repeated in ExecStart=. Skips a separate value too (advancing *i). */
static bool unit_setting_option(const char *arg, int *i) {
        static const char *const with_value[] = {
                "--unit-dir", "--socket-mode", "--socket-user", "--socket-group", "--bind-to-device",
        };
        static const char *const flags[] = { "--install", "--ipv6-only", "--freebind", "--nonblocking" };

        for (size_t k = 0; k < ELEMENTSOF(flags); k++)
                if (strcmp(arg, flags[k]) == 0)
                        return true;
        for (size_t k = 0; k < ELEMENTSOF(with_value); k++) {
                size_t n = strlen(with_value[k]);

                if (strncmp(arg, with_value[k], n) != 0)
                        continue;
                if (arg[n] == '=')
                        return true;
                if (arg[n] == '\0') {
                        (*i)++;
                        return true;
                }
        }
        return false;
}

/* ExecStart= repeats the options as given, less generate-units' own. */
static int collect_exec_options(Options *o, char *argv[]) {
        int end = strcmp(argv[optind - 1], "--") == 0 ? optind - 1 : optind;

        o->exec_options = calloc((size_t) end + 2, sizeof(char *));
        if (!o->exec_options)
                return log_error_errno(-ENOMEM, "Out of memory");
        if (!o->name) {
                o->exec_options[o->n_exec_options++] = (char *) "--name";
                o->exec_options[o->n_exec_options++] = (char *) o->generate;
        }
        for (int i = 1; i < end; i++) {
                if (unit_setting_option(argv[i], &i))
                        continue;
                o->exec_options[o->n_exec_options++] = argv[i];
        }
        if (!o->name)
                o->name = o->generate;
        if (o->n_listen == 0)
                return log_usage("generate-units: no socket to listen on; add --listen ADDR, such as -l 8080");
        return 1;
}

/* What no single option can check: combinations, and the defaults that depend on others. */
static int check_options(Options *o) {
        if (o->max_surge + o->max_unavailable == 0)
                return log_usage("--max-surge 0 with --max-unavailable 0 leaves a reload no room; raise one of them");
        if (o->n_fdnames > o->n_listen)
                return log_usage("--fdname: %zu names for %zu sockets; give at most one name per socket",
                                 o->n_fdnames, o->n_listen);
        for (size_t i = 0; i < o->n_fdnames; i++)
                for (size_t j = 0; j < i; j++)
                        if (strcmp(o->fdnames[i], o->fdnames[j]) == 0)
                                return log_usage("--fdname: the name '%s' is given twice; names must differ",
                                                 o->fdnames[i]);
        if (!o->name) {
                const char *slash = strrchr(o->argv[0], '/');
                o->name = slash ? slash + 1 : o->argv[0];
                if (!fdname_is_valid(o->name))
                        o->name = "bindonce";
        }
        if (o->n_watch == 0 && (o->n_watch_ignore || o->watch_restart))
                return log_usage("--watch-ignore and --watch-restart go with --watch PATH");
        if (o->n_watch) {
                /* The developer's loop keeps the socket through any number of bad saves. */
                if (o->give_up_explicit && o->give_up)
                        return log_usage("--give-up %u with --watch: with --watch bindonce never gives up; "
                                         "drop --give-up", o->give_up);
                o->give_up = 0;
        }
        if (o->min_ready == USEC_INFINITY)
                o->min_ready = o->ready == READY_EXEC ? USEC_PER_SEC : 0;
        return 1;
}

int options_parse(Options *o, int argc, char *argv[]) {
        int r;

        options_init(o);
        r = parse_generate(o, &argc, &argv);
        if (r <= 0)
                return r;
        r = parse_options(o, argc, argv);
        if (r <= 0)
                return r;
        if (o->generate) {
                r = collect_exec_options(o, argv);
                if (r <= 0)
                        return r;
        }
        return check_options(o);
}

void options_done(Options *o) {
        free(o->listen);
        for (size_t i = 0; i < o->n_fdnames; i++)
                free(o->fdnames[i]);
        free(o->fdnames);
        free(o->setenv);
        free(o->watch);
        free(o->watch_ignore);
        free(o->exec_options);
        *o = (Options) {};
}

void options_help(void) {
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
               "     --nonblocking            Pass the sockets with O_NONBLOCK set (default: blocking,\n"
               "                              as systemd; sockets from systemd are left as they are)\n"
               "     --socket-mode MODE       Mode of unix socket files (default: 0666, as SocketMode=)\n"
               "     --socket-user USER       Owner of unix socket files (root only)\n"
               "     --socket-group GROUP     Group of unix socket files\n"
               "     --ipv6-only              [::] sockets take IPv6 only (default: IPv4 too)\n"
               "     --freebind               Bind addresses not (yet) on this machine (IP_FREEBIND)\n"
               "     --bind-to-device IFACE   Accept only through network interface IFACE (root only)\n"
               "\n"
               "Workers:\n"
               "  -w --workers N              Number of workers (default: 1)\n"
               "  -E --setenv VAR[=VALUE]     Set VAR for the workers (VAR alone: pass our own)\n"
               "     --restart always|on-failure|no\n"
               "                              When to restart a worker (default: always)\n"
               "     --stop-timeout SEC       SIGKILL a worker this long after --stop-signal (default: 10)\n"
               "     --stop-signal SIG        The signal that stops a worker (default: TERM)\n"
               "     --give-up N              Exit when every worker failed N times in a row\n"
               "                              within 1 s of starting; 0: never (default: 5)\n"
               "     --name NAME              Name of this instance, its control socket and the\n"
               "                              default socket name (default: the command's name)\n"
               "     --user USER              Run the workers as USER (name or uid; root only)\n"
               "     --group GROUP            Run the workers with group GROUP (default: USER's group)\n"
               "     --chdir DIR              Run the workers in DIR (default: bindonce's directory)\n"
               "     --umask MODE             The workers' umask, octal (default: bindonce's)\n"
               "     --log-prefix             Prefix each line of the workers' output with the slot\n"
               "                              and pid (default: off; under the journal, each worker\n"
               "                              has a stream of its own)\n"
               "\n"
               "Readiness, rolling restarts and the watchdog:\n"
               "     --ready exec|notify      Ready once exec'd, or on READY=1 (default: exec)\n"
               "     --start-timeout SEC      Time to get ready with --ready notify (default: 60)\n"
               "     --notify-access main|all Who may send notifications (default: main)\n"
               "     --max-surge N            Extra workers during a reload (default: 1)\n"
               "     --max-unavailable N      Workers that may be down during a reload (default: 0)\n"
               "     --watchdog SEC           Workers must send WATCHDOG=1 this often (default: 0, off)\n"
               "     --min-ready SEC          A reload's new worker must stay up this long once ready\n"
               "                              (default: 1 with --ready exec, 0 with notify)\n"
               "\n"
               "Control:\n"
               "     --control PATH|none      Control socket (default: /run/bindonce/NAME.sock as root,\n"
               "                              else $XDG_RUNTIME_DIR/bindonce/NAME.sock); 'none': off\n"
               "\n"
               "Development:\n"
               "     --watch PATH             Replace the workers when PATH (file or directory) changes;\n"
               "                              a rolling restart: a save that fails keeps the old ones\n"
               "     --watch-ignore GLOB      Changes to matching names do not count (besides .git,\n"
               "                              __pycache__, node_modules, editor swap and backup files)\n"
               "     --watch-delay SEC        Wait for this long without changes (default: 0.1)\n"
               "     --watch-restart          Stop the workers first, then start new ones\n"
               "\n"
               "generate-units:\n"
               "     --install                Write NAME.socket and NAME.service instead of printing\n"
               "     --unit-dir DIR           Where --install writes (default: /etc/systemd/system)\n"
               "\n"
               "Other:\n"
               "  -h --help                   Show this help\n"
               "     --version                Show the version\n"
               "\n"
               "See bindonce(1).\n",
               SOMAXCONN);
}
