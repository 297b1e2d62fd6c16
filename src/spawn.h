/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#define SD_LISTEN_FDS_START 3

/* Moving the sockets to 3..3+n-1 in the child. A source already sitting on another socket's
 * target would be overwritten by that socket's dup2(), so it is first copied out of the way.
 * A source already on its own target keeps its number, but dup2(fd, fd) would leave
 * close-on-exec set: it gets an explicit clear instead. */
typedef enum FdMoveOp {
        FD_MOVE_AWAY,           /* copy sources[index] to a free fd >= 3+n (F_DUPFD_CLOEXEC) */
        FD_MOVE_DUP2,           /* dup2(sources[index], 3+index): the target loses close-on-exec */
        FD_MOVE_KEEP,           /* sources[index] == 3+index: clear close-on-exec */
} FdMoveOp;

typedef struct FdMove {
        FdMoveOp op;
        unsigned index;
} FdMove;

/* Fills moves[] (room for 2*n) and returns how many; -EINVAL if a source is below 3 or
 * appears twice. Pure: the unit tests run it against a model fd table. */
int fd_plan(const int *sources, size_t n, FdMove *moves);

/* The environment of a worker, built once and patched per spawn. */
typedef struct WorkerEnv {
        char **envp;            /* NULL-terminated; the two strings below are in it */
        char listen_pid[32];    /* "LISTEN_PID=", the digits written in the child */
        char worker[40];        /* "BINDONCE_WORKER=N" */
        char watchdog_pid[32];  /* "WATCHDOG_PID=", written in the child; "" without --watchdog */
        char listen_pidfdid[48]; /* "LISTEN_PIDFDID=", written in the child; "" without pidfs */
        char **owned;           /* strings we allocated, freed with the env */
        size_t n_owned;
} WorkerEnv;

/* base: the supervisor's own environment. settings: -E entries, "VAR=VALUE" or "VAR" (copied
 * from base). Drops the supervisor's own activation and notification variables, adds
 * LISTEN_FDS, LISTEN_FDNAMES, NOTIFY_SOCKET (when notify_socket is not NULL), WATCHDOG_USEC
 * (when watchdog_usec > 0) and placeholders for LISTEN_PID, WATCHDOG_PID, BINDONCE_WORKER. */
int worker_env_build(WorkerEnv *env, char *const *base, char *const *settings, size_t n_settings,
                     size_t n_fds, const char *fdnames, const char *notify_socket, uint64_t watchdog_usec);
void worker_env_set_slot(WorkerEnv *env, unsigned slot);

/* Do pidfds have inode ids of their own here (pidfs, Linux 6.9)? Then each worker gets
 * LISTEN_PIDFDID. */
bool pidfd_ids_supported(void);
void worker_env_done(WorkerEnv *env);

/* Writes v in decimal after the '=' of buf; async-signal-safe, for the child. */
void env_put_number(char *buf, size_t size, unsigned long v);

/* What a worker's process is set up with before exec, beyond its fds and environment. The
 * ids are resolved by the parent at startup: no name lookup (NSS, which may take locks or
 * talk to a daemon) ever runs in a child. */
typedef struct WorkerSetup {
        bool set_ids;           /* --user or --group: the three below are applied */
        uid_t uid;              /* (uid_t) -1: kept (--group alone) */
        gid_t gid;
        gid_t *groups;          /* supplementary groups, for setgroups() */
        size_t n_groups;
        const char *chdir;      /* NULL: bindonce's own directory */
        bool set_umask;
        mode_t umask;
        struct WorkerOutput *output; /* NULL: the workers write to bindonce's stdout, stderr */
} WorkerSetup;

#define WORKER_SETUP_NULL ((WorkerSetup) { .uid = (uid_t) -1, .gid = (gid_t) -1 })

typedef struct SpawnParams {
        char **argv;
        WorkerSetup setup;
        WorkerEnv env;
        size_t n_fds;           /* sockets per worker */
        int devnull;            /* the worker's stdin */
        /* Signals whose disposition is not SIG_DFL in the supervisor (ignored: SIGPIPE by
         * us, others by whoever started us), to reset in the child. exec() resets caught
         * signals by itself; ignored ones it keeps. */
        int reset_signals[64];
        size_t n_reset_signals;
        /* The open-file limit bindonce was started with: raised for bindonce itself (a
         * pidfd per worker), given back to every worker, as systemd does. */
        struct rlimit nofile;
        bool restore_nofile;
} SpawnParams;

/* Raises bindonce's own soft RLIMIT_NOFILE to its hard limit (at most 512 Ki), remembering
 * the original for the workers. */
void spawn_nofile_init(SpawnParams *p);

/* Variables bindonce sets for its workers itself, or that describe its own supervision:
 * never taken from its environment, nor from -E. */
bool env_is_reserved(const char *entry);

/* Fills p->reset_signals from the current dispositions; call once they are final. */
void spawn_signals_init(SpawnParams *p);
/* With output pipes (--log-prefix, the journal): the low fd each spawn lends its pipe at,
 * reserved now rather than at the first spawn. */
void spawn_reserve_low_fd(const SpawnParams *p);

/* Why a spawn failed in the child, reported before exec through the memory that the child
 * (CLONE_VM, as vfork()) shares with its parent. */
typedef enum SpawnStage {
        SPAWN_STAGE_SETUP,
        SPAWN_STAGE_EXEC,
        SPAWN_STAGE_USER,       /* setgroups, setgid, setuid: never exec'd as root instead */
        SPAWN_STAGE_CHDIR,
} SpawnStage;

/* "set up its process", "change to the user", ...: for the log line of a failed start. */
const char *spawn_stage_name(SpawnStage stage);

typedef struct SpawnResult {
        pid_t pid;
        int child_errno;        /* 0: the command is executing */
        SpawnStage stage;
} SpawnResult;

/* Starts one worker with fds[0..n_fds-1] as its sockets (clone as vfork, on our fd table
 * until it takes a private copy of the few fds it needs, then exec): its cost does not grow
 * with the fds bindonce holds. Returns -errno when no process was created; otherwise 0 with
 * ret->child_errno set if the child could not exec (it exits 127 or 126, like a shell). The
 * child is not reaped: watch it by pid. */
int spawn_worker(SpawnParams *p, unsigned slot, const int *fds, SpawnResult *ret);
