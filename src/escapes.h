/* SPDX-License-Identifier: MIT */
#pragma once

typedef struct Supervisor Supervisor;

/* What a worker left behind that still holds bindonce's sockets: a descendant that left
 * its worker's process group (setsid, a daemonizing helper) survives the group's SIGKILL
 * at the worker's exit and would keep serving the port, unsupervised, across reloads.
 *
 * After a worker's exit, bindonce walks its own descendants (the tree of
 * /proc/PID/task/TID/children from itself, so it costs what it finds, not the size of the
 * system), skipping the subtree of every live worker: any process found there with one
 * of bindonce's listening sockets open is sent SIGTERM, and SIGKILL --stop-timeout later.
 * bindonce is a subreaper, so such processes are its descendants. Processes that are not
 * its descendants (systemd, which holds the sockets it passed) are never looked at. */

/* A worker exited: look for what it left, shortly (exits in a burst make one walk). */
void escapes_schedule(Supervisor *sup);

/* How many escaped processes were stopped so far, for `ctl status`. */
unsigned escapes_stopped(void);

void escapes_free(void);
