/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

typedef struct Supervisor Supervisor;
typedef struct ControlServer ControlServer;

/* The control socket `bindonce ctl` talks to. A default path that cannot be used costs a
 * warning and no control socket; an explicit --control that fails is an error (-errno,
 * logged). */
int control_server_new(ControlServer **ret, Supervisor *sup);
ControlServer *control_server_free(ControlServer *c);

/* Where NAME's control socket is by default: $RUNTIME_DIRECTORY/NAME.sock, else
 * /run/bindonce/NAME.sock as root, else $XDG_RUNTIME_DIR/bindonce/NAME.sock. The directory
 * is written to dir. Returns -ENOENT when there is no such place. */
int control_default_path(const char *name, char *path, size_t size, char *dir, size_t dir_size);

/* The request size limit, one line. */
#define CONTROL_REQUEST_MAX 4096
