/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "backoff.h"
#include "listener.h"
#include "restart.h"
#include "slot.h"
#include "util.h"

/* What one bindonce hands the next across an upgrade in place (bindonce(1) UPGRADE IN
 * PLACE): plain data, written to a memfd before exec and read back after it. The text
 * format is versioned as a whole: a reader takes exactly the formats it names in
 * `bindonce --upgrade-check`, and refuses any other before it touches anything.
 *
 *     bindonce-state 2
 *     key=value key=value ...      one record a line, the first word names the record
 *     end
 *
 * Numbers are decimal, strings hex ("x" + two digits a byte, "-" for none), times are
 * absolute CLOCK_MONOTONIC microseconds (0: not armed), so that a deadline keeps its time
 * across the exec. Every key of a record that its format has is required (in format 3, of
 * a slot or a worker, only those whose value is not the default); an unknown record or key
 * (one of a later format too), or a missing "end", refuses the whole state. */

/* The newest format this bindonce writes and reads, and the oldest it still does both of:
 * it writes the newest that the new binary names in --upgrade-check, so that an older
 * bindonce can be gone back to. Format 2 adds each worker's pidfd_id. Format 3 adds each
 * worker's pidfd, an fd that crosses the exec, and leaves out of slot and worker records the
 * keys whose value is the default (0, false, none; pidfd -1). */
#define STATE_FORMAT 3
#define STATE_FORMAT_OLDEST 1

typedef enum StateRole {
        STATE_WORKER,                   /* the slot's worker */
        STATE_NEXT,                     /* the slot's replacement (a roll) */
        STATE_RETIRED,                  /* replaced, on its way out */
} StateRole;

typedef struct StateWorker {
        unsigned slot;
        StateRole role;
        pid_t pid;
        unsigned long long starttime;   /* /proc/PID/stat field 22: a reused pid never matches; 0 when pidfd_id says it */
        uint64_t pidfd_id;              /* format 2: the inode number of its pidfd (pidfs), unique for the boot; 0: none */
        int pidfd;                      /* format 3: its pidfd, across the exec, or -1; pidfd_id says which process */
        unsigned generation;
        usec_t started;
        usec_t started_realtime;        /* CLOCK_REALTIME */
        bool ready, stopping, candidate, proven, requested, exec_failed;
        usec_t kill_at, start_at, watchdog_at, stable_at, proof_at;
        char *failed;                   /* why we stopped it, or NULL */
        char *status;                   /* its last STATUS=, or NULL */
} StateWorker;

typedef struct StateSlot {
        unsigned index;
        SlotState state;
        unsigned restarts;
        RestartCounts counts;
        KillWindow outside_kills;
        bool exited;
        int last_code, last_status;
        usec_t backoff_at, drain_started;
        bool fresh;                     /* wanted, idle, not started yet (a big scale-up) */
        int *fds;                       /* --balance reuseport: its sockets; NULL: the shared ones */
        size_t n_fds;
} StateSlot;

/* --log-prefix: the read end of a worker's output pipe. */
typedef struct StatePipe {
        int fd;
        unsigned slot;
        pid_t pid;
} StatePipe;

typedef struct UpgradeState {
        unsigned format;                /* read: the one it was in; written: 0 for STATE_FORMAT */
        char *version;                  /* of the bindonce that wrote it */
        char *exe;                      /* the path it was executed from */
        char **argv;                    /* its command line, NULL-terminated */
        bool sockets_kept;
        Listener *listeners;
        size_t n_listeners;
        Listener control;               /* fd -1: no control socket */
        int notify_fd;
        char *notify_address;
        int client_fd;                  /* the `ctl upgrade` waiting for the answer, or -1 */
        unsigned target, last_generation, good_generation, total_restarts;
        bool ready_sent, crash_loop;
        usec_t crash_loop_logged;
        int exit_code;
        struct rlimit nofile;           /* what the workers get back */
        bool restore_nofile;
        StateSlot *slots;
        size_t n_slots;
        StateWorker *workers;
        size_t n_workers;
        StatePipe *pipes;
        size_t n_pipes;
} UpgradeState;

/* Pure: the unit tests round-trip it. In s->format (STATE_FORMAT_OLDEST..STATE_FORMAT; 0
 * for the newest). Returns 0 or -errno. */
int state_write(const UpgradeState *s, FILE *f);
/* The same, as text of its own (*ret allocated, no NUL): 0, -ENOMEM or -EPROTONOSUPPORT. */
int state_format(const UpgradeState *s, char **ret, size_t *ret_len);

/* Pure. Reads the formats STATE_FORMAT_OLDEST..STATE_FORMAT; a field that an older format
 * lacks is 0. Returns 0, -EPROTONOSUPPORT for another format (its number in *ret_format), or
 * -EBADMSG with the first thing wrong in err. *ret is set only on success. */
int state_read(const char *buf, size_t len, UpgradeState *ret, unsigned *ret_format, char *err, size_t err_size);
/* The same on text of the caller's, which it cuts up: text[len] must be its NUL (no copy of
 * a state of thousands of workers). */
int state_read_in_place(char *text, size_t len, UpgradeState *ret, unsigned *ret_format, char *err, size_t err_size);

void state_done(UpgradeState *s);

/* Every fd the state names (the workers' pidfds only if pidfds), for close-on-exec on
 * either side of the exec, with room for `extra` more at the end: how many (*ret
 * allocated), or -ENOMEM. */
int state_fds(const UpgradeState *s, size_t extra, bool pidfds, int **ret);
