/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "listener.h"

/* What `bindonce generate-units` turns into a socket + service pair. */
typedef struct UnitsRequest {
        const char *name;               /* NAME.service, NAME.socket */
        const Listener *listeners;      /* parsed, not bound */
        size_t n_listeners;
        int backlog;                    /* 0: systemd's default */
        bool reuse_port;
        char *const *exec_args;         /* bindonce's own options, as given, for ExecStart */
        size_t n_exec_args;
        char *const *command;
        const char *bindonce_path;      /* absolute */
        const char *instance;           /* bindonce's --name */
        const char *control;            /* its --control, or NULL for the default path */
        bool no_control;                /* --control none: reload with SIGHUP instead */
        double stop_timeout_sec;
        /* The socket options, as the socket unit's own settings (bindonce does not bind
         * sockets systemd passes, so they are left out of ExecStart=). */
        mode_t socket_mode;             /* (mode_t) -1: systemd's default, 0666 */
        const char *socket_user, *socket_group, *bind_to_device;
        bool ipv6_only, freebind, nonblocking;
} UnitsRequest;

/* Writes each unit as "# FILE\n<contents>" to f. */
int units_print(const UnitsRequest *req, FILE *f);

/* Writes the units into dir, all or nothing, and says what to run next. Returns -errno, logged. */
int units_install(const UnitsRequest *req, const char *dir);

/* NAME of NAME.service: what systemd accepts before the suffix, no template '@'. */
bool unit_prefix_is_valid(const char *name);

/* A unit file word: quoted and escaped as systemd's ExecStart= parser expects. */
char *unit_quote(const char *arg);
