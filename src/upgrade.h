/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "state_file.h"
#include "status.h"

/* Upgrade in place (bindonce(1) UPGRADE IN PLACE): `ctl upgrade` or SIGUSR2 checks the new
 * binary (NEW --upgrade-check, a child of the loop with a timeout), writes the state to a
 * memfd and executes NEW in this very process: the sockets, the control and notify sockets
 * and the waiting ctl client cross the exec as fds without close-on-exec, the workers stay
 * our children. The new process reads the state before anything else, and executes the old
 * binary again (kept as an O_PATH fd) with the same state when it cannot take over.
 *
 * Between the two processes, only these variables and the state file's format are a
 * contract; neither may change without a new STATE_FORMAT. */
#define UPGRADE_ENV_STATE "BINDONCE_UPGRADE_STATE"       /* the memfd */
#define UPGRADE_ENV_OLD_EXE "BINDONCE_UPGRADE_OLD_EXE"   /* O_PATH fd of the old binary */
#define UPGRADE_ENV_FAILED "BINDONCE_UPGRADE_FAILED"     /* why the new one gave the state back */
/* Written with format 2 by bindonce 0.1 before format 3 (which names each worker's pidfd in
 * the state instead), read still: "BASE N", the workers' pidfds duplicated into the fds
 * BASE..BASE+N-1, only kept open across the exec and closed once the new process has taken
 * over; never handed back to the old binary. */
#define UPGRADE_ENV_PIDFDS "BINDONCE_UPGRADE_PIDFDS"
/* "PID PID ...": the children the first bindonce inherited (a shell's background job), not
 * ours to stop; without it (an older bindonce), every child at the exec counts as such. */
#define UPGRADE_ENV_INHERITED "BINDONCE_UPGRADE_INHERITED"

/* How long NEW --upgrade-check may take. */
#define UPGRADE_CHECK_TIMEOUT_USEC (5 * USEC_PER_SEC)

typedef struct Supervisor Supervisor;
typedef struct SupervisorConfig SupervisorConfig;
typedef struct Upgrade Upgrade;

/* main.c, first thing: the command line to execute again, and the path the running binary
 * came from (/proc/self/exe now, before anyone replaces the file). */
void upgrade_init(char **argv);

/* `bindonce --upgrade-check [OPTIONS] -- COMMAND`: the options were parsed (r: what
 * parse_argv returned); prints the version and the state formats this binary reads.
 * Returns the exit status. */
int upgrade_check_report(int r);

/* ---- the new process -------------------------------------------------------------------- */

/* Whether this process is the new bindonce of an upgrade: the state, read and checked, or
 * NULL. A state that cannot be read sends the old binary back in, or exits (71). */
const UpgradeState *upgrade_incoming_open(void);
/* The new bindonce cannot take over: executes the old binary with the same state. Returns
 * only when that is impossible (logged; the caller exits), or when there is no upgrade. */
void upgrade_incoming_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The sockets the previous bindonce held: their number (>0, *ret set), or 0. */
int upgrade_take_listeners(Listener **ret);
/* What of the configuration comes from the state rather than the command line. */
void upgrade_apply_config(SupervisorConfig *config);

/* ---- the supervisor (supervisor.c) -------------------------------------------------------- */

/* Starts checking exe (NULL: the path bindonce runs from); waiter (may be NULL) hears a
 * failure. -ESHUTDOWN, -EBUSY (a reload runs), -EALREADY (an upgrade is being checked). */
int upgrade_start(Supervisor *sup, const char *exe, const ReloadWaiter *waiter, int client_fd);
void upgrade_forget_waiter(Supervisor *sup, void *client);
/* The check child: not an orphan to reap. */
bool upgrade_owns_pid(const Supervisor *sup, pid_t pid);
/* Stopping: the check is abandoned, its waiter told why. */
void upgrade_cancel(Supervisor *sup, const char *reason);
Upgrade *upgrade_free(Upgrade *u);

/* ---- upgrade_state.c: the supervisor to the state and back --------------------------------- */

/* The supervisor as plain data, in the given state format; exe and argv: how this bindonce
 * was executed. */
int upgrade_capture(Supervisor *sup, const char *exe, char **argv, unsigned format, UpgradeState *ret);
/* Rebuilds generations, slots and workers, each identified as the process the state names
 * (by the pidfd that crossed the exec, by the id of one opened now, or by its parent and
 * start time) and not watched yet. Returns -errno; workers that are gone are dropped (their
 * slot starts again), anything else fails the whole restore. */
int upgrade_restore(Supervisor *sup, const UpgradeState *s);
/* Once answered: each adopted worker gets its child source, a batch a loop turn. */
void upgrade_watch_adopted(Supervisor *sup);
/* In the loop's first turn: answers the waiting ctl client, READY=1 to systemd, the log. */
void upgrade_resumed(Supervisor *sup);
