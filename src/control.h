/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "status.h"

typedef struct ControlServer ControlServer;

/* The control socket `bindonce ctl` talks to. control_path NULL: the default path (one that
 * cannot be used costs a warning and no control socket); "": none; else an explicit path,
 * whose failure is an error (-errno, logged). */
int control_server_new(ControlServer **ret, sd_event *event, const char *name, const char *control_path,
                       const ControlOps *ops, void *userdata);
ControlServer *control_server_free(ControlServer *c);

/* Where NAME's control socket is by default: $RUNTIME_DIRECTORY/NAME.sock, else
 * /run/bindonce/NAME.sock as root, else $XDG_RUNTIME_DIR/bindonce/NAME.sock. The directory
 * is written to dir. Returns -ENOENT when there is no such place. */
int control_default_path(const char *name, char *path, size_t size, char *dir, size_t dir_size);

/* The request size limit, one line. */
#define CONTROL_REQUEST_MAX 4096

typedef enum ControlCommand {
        CONTROL_STATUS,
        CONTROL_RELOAD,
        CONTROL_RESTART,
        CONTROL_SCALE,
        CONTROL_SIGNAL,
        CONTROL_STOP,
        CONTROL_EVENTS,
        CONTROL_UPGRADE,
        _CONTROL_COMMAND_MAX,   /* the count, for range checks; never a command */
} ControlCommand;

typedef struct ControlRequest {
        ControlCommand command;
        bool json;                      /* status --json, events --json */
        int slot;                       /* restart, signal: -1 for all */
        unsigned n;                     /* scale */
        int sig;                        /* signal */
        char exe[CONTROL_REQUEST_MAX];  /* upgrade --exe PATH; "": the path bindonce runs from */
} ControlRequest;

/* Pure: one request line (without its newline) of a server with `workers` slots. Returns
 * 0, or -EINVAL with the whole "ERROR ...\n" reply in err. */
int control_request_parse(const char *line, size_t len, unsigned workers, ControlRequest *ret,
                          char *err, size_t err_size);

/* Upgrade in place: the control socket the previous bindonce bound (the Listener is taken,
 * its fd ours once this succeeds), the socket for the state, and the answer to the `ctl
 * upgrade` client whose connection came across the exec as `fd` (taken). */
int control_server_adopt(ControlServer **ret, sd_event *event, Listener *l, const ControlOps *ops, void *userdata);
const Listener *control_server_listener(const ControlServer *c);
void control_server_answer(ControlServer *c, int fd, const char *text);
