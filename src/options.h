/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "util.h"

/* One requested socket, in command-line order. */
typedef struct ListenArg {
        const char *option;     /* as given, for error messages */
        const char *text;
        int type;               /* 0: a plain -l, typed by -d/--seqpacket */
} ListenArg;

/* The command line of `bindonce [generate-units NAME] [OPTIONS] -- COMMAND`, as parsed:
 * values checked for form only. What needs the system (user names, directories) is
 * resolved by the caller, before anything is bound. */
typedef struct Options {
        ListenArg *listen;
        size_t n_listen;
        char **fdnames;
        size_t n_fdnames;
        int socket_type;
        unsigned backlog;
        bool reuse_port;
        int balance;                    /* Balance */
        bool fd_store;
        bool nonblocking;               /* --nonblocking: O_NONBLOCK on the sockets */
        /* socket options, for sockets bindonce binds itself */
        mode_t socket_mode;             /* (mode_t) -1: unset */
        const char *socket_user, *socket_group;
        bool ipv6_only;
        bool freebind;
        const char *bind_to_device;

        unsigned workers;
        char **setenv;
        size_t n_setenv;
        int restart;                    /* RestartPolicy */
        usec_t stop_timeout;
        int stop_signal;
        unsigned give_up;
        bool give_up_explicit;
        const char *name;
        const char *user, *group;
        const char *chdir;
        mode_t umask;                   /* (mode_t) -1: unset */
        bool log_prefix;

        int ready;                      /* ReadyMode */
        usec_t start_timeout;
        int notify_access;              /* 0: main, 1: all */
        unsigned max_surge, max_unavailable;
        usec_t watchdog;
        usec_t min_ready;               /* USEC_INFINITY: 1 s with --ready exec, 0 with notify */
        const char *control;            /* NULL: default, "": none */

        char **argv;                    /* COMMAND [ARG...] */

        /* generate-units */
        const char *generate;           /* its NAME */
        bool install;
        const char *unit_dir;
        char **exec_options;            /* the options as given, for ExecStart= */
        size_t n_exec_options;
} Options;

/* <0: error (logged; -ENOMEM or -EINVAL), 0: done (--help, --version), >0: go on. */
int options_parse(Options *o, int argc, char *argv[]);
void options_done(Options *o);

/* The usage text; it follows the man page's SYNOPSIS and OPTIONS. */
void options_help(void);

/* Parsers shared with the tests: -EINVAL/-ERANGE, nothing logged. */
int parse_seconds(const char *s, usec_t *ret);
int parse_signal(const char *s, int *ret);      /* TERM, SIGTERM, 15 */
int parse_mode(const char *s, mode_t *ret);     /* octal, up to 07777 */
