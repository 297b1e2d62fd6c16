/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "output.h"
#include "closefds.h"
#include "spawn.h"
#include "util.h"

int fd_plan(const int *sources, size_t n, FdMove *moves) {
        const int first = SD_LISTEN_FDS_START, end = SD_LISTEN_FDS_START + (int) n;
        size_t k = 0;

        for (size_t i = 0; i < n; i++) {
                if (sources[i] < first)
                        return -EINVAL;
                for (size_t j = 0; j < i; j++)
                        if (sources[j] == sources[i])
                                return -EINVAL;
        }

        /* Out of the way first: sources inside the target range but not on their own target. */
        for (size_t i = 0; i < n; i++)
                if (sources[i] < end && sources[i] != first + (int) i)
                        moves[k++] = (FdMove) { FD_MOVE_AWAY, (unsigned) i };

        /* Now every target is free or already holds its own socket. */
        for (size_t i = 0; i < n; i++)
                moves[k++] = (FdMove) { sources[i] == first + (int) i ? FD_MOVE_KEEP : FD_MOVE_DUP2, (unsigned) i };

        return (int) k;
}

void env_put_number(char *buf, size_t size, unsigned long v) {
        char digits[24];
        size_t n = 0, at;
        char *eq = memchr(buf, '=', size);

        if (!eq)
                return;
        do
                digits[n++] = (char) ('0' + v % 10);
        while ((v /= 10) && n < sizeof digits);

        at = (size_t) (eq + 1 - buf);
        while (n > 0 && at + 1 < size)
                buf[at++] = digits[--n];
        buf[at] = '\0';
}

/* Variables that describe the supervisor's own activation and supervision: passing them on
 * would make a worker claim sockets or a notify socket meant for bindonce. LISTEN_PIDFDID
 * (systemd v259) would make sd_listen_fds() in the worker return 0. */
static const char *const dropped_vars[] = {
        "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID",
        "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "BINDONCE_WORKER",
};

static size_t name_length(const char *entry) {
        const char *eq = strchr(entry, '=');
        return eq ? (size_t) (eq - entry) : strlen(entry);
}

static bool same_name(const char *a, const char *b) {
        size_t n = name_length(a);
        return n == name_length(b) && strncmp(a, b, n) == 0;
}

bool env_is_reserved(const char *entry) {
        for (size_t i = 0; i < ELEMENTSOF(dropped_vars); i++)
                if (same_name(entry, dropped_vars[i]))
                        return true;
        return false;
}

/* Replaces an entry of the same name, or appends. */
static void env_put(char **envp, size_t *n, char *entry) {
        for (size_t i = 0; i < *n; i++)
                if (same_name(envp[i], entry)) {
                        envp[i] = entry;
                        return;
                }
        envp[(*n)++] = entry;
}

/* Formats an entry the env owns, and puts it in. */
static int env_putf(WorkerEnv *env, size_t *n, const char *format, ...) __attribute__((format(printf, 3, 4)));
static int env_putf(WorkerEnv *env, size_t *n, const char *format, ...) {
        char *s;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&s, format, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        env->owned[env->n_owned++] = s;
        env_put(env->envp, n, s);
        return 0;
}

#ifndef PIDFS_MAGIC
#define PIDFS_MAGIC 0x50494446
#endif

bool pidfd_ids_supported(void) {
        static int supported = -1;

        if (supported < 0) {
                _cleanup_close_ int fd = (int) syscall(SYS_pidfd_open, getpid(), 0);
                struct statfs sfs;

                supported = fd >= 0 && fstatfs(fd, &sfs) >= 0 && sfs.f_type == PIDFS_MAGIC;
        }
        return supported;
}

int worker_env_build(WorkerEnv *env, char *const *base, char *const *settings, size_t n_settings,
                     size_t n_fds, const char *fdnames, const char *notify_socket, uint64_t watchdog_usec) {
        size_t n_base = 0, n = 0;

        while (base && base[n_base])
                n_base++;

        *env = (WorkerEnv) {};
        env->envp = calloc(n_base + n_settings + 9, sizeof(char *)); /* 8 of ours and NULL */
        env->owned = calloc(4, sizeof(char *));
        if (!env->envp || !env->owned)
                goto oom;

        for (size_t i = 0; i < n_base; i++)
                if (!env_is_reserved(base[i]))
                        env_put(env->envp, &n, base[i]);

        for (size_t i = 0; i < n_settings; i++) {
                if (strchr(settings[i], '=')) {
                        env_put(env->envp, &n, settings[i]);
                        continue;
                }
                /* "-E VAR": pass our own value on, as systemd-socket-activate does. */
                for (size_t j = 0; j < n_base; j++)
                        if (same_name(base[j], settings[i]) && strchr(base[j], '=')) {
                                env_put(env->envp, &n, base[j]);
                                break;
                        }
        }

        if (env_putf(env, &n, "LISTEN_FDS=%zu", n_fds) < 0 ||
            env_putf(env, &n, "LISTEN_FDNAMES=%s", fdnames) < 0 ||
            (notify_socket && env_putf(env, &n, "NOTIFY_SOCKET=%s", notify_socket) < 0) ||
            (watchdog_usec > 0 && env_putf(env, &n, "WATCHDOG_USEC=%llu", (unsigned long long) watchdog_usec) < 0))
                goto oom;
        if (watchdog_usec > 0) {
                strcpy(env->watchdog_pid, "WATCHDOG_PID=");
                env_put(env->envp, &n, env->watchdog_pid);
        }

        strcpy(env->listen_pid, "LISTEN_PID=");
        env_put(env->envp, &n, env->listen_pid);
        /* systemd v259: libsystemd in the worker checks it against its own pidfd's inode,
         * when the kernel gives pidfds inode ids (pidfs). The supervisor's own was dropped
         * above: only the worker's, written in the child, is ever passed. */
        if (pidfd_ids_supported()) {
                strcpy(env->listen_pidfdid, "LISTEN_PIDFDID=");
                env_put(env->envp, &n, env->listen_pidfdid);
        }
        strcpy(env->worker, "BINDONCE_WORKER=0");
        env_put(env->envp, &n, env->worker);
        env->envp[n] = NULL;
        return 0;

oom:
        worker_env_done(env);
        return -ENOMEM;
}

void worker_env_set_slot(WorkerEnv *env, unsigned slot) {
        env_put_number(env->worker, sizeof env->worker, slot);
}

void worker_env_done(WorkerEnv *env) {
        for (size_t i = 0; i < env->n_owned; i++)
                free(env->owned[i]);
        free(env->owned);
        free(env->envp);
        *env = (WorkerEnv) {};
}

/* The kernel's struct sigaction: glibc's sigaction() refuses the two real-time signals it
 * reserves (32, 33), yet a parent may have left them ignored. This is the generic layout
 * (x86, arm, arm64, riscv, powerpc, s390); a few architectures order it otherwise. */
#if defined(__mips__) || defined(__alpha__) || defined(__sparc__)
#error "struct KernelSigaction: this architecture's kernel sigaction layout differs"
#endif
typedef struct KernelSigaction {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
} KernelSigaction;

void spawn_nofile_init(SpawnParams *p) {
        const rlim_t high = 512 * 1024;
        struct rlimit raised;

        p->restore_nofile = false;
        if (getrlimit(RLIMIT_NOFILE, &p->nofile) < 0)
                return;
        raised = p->nofile;
        raised.rlim_cur = raised.rlim_max < high ? raised.rlim_max : high;
        if (raised.rlim_cur > p->nofile.rlim_cur && setrlimit(RLIMIT_NOFILE, &raised) >= 0)
                p->restore_nofile = true;
}

void spawn_signals_init(SpawnParams *p) {
        p->n_reset_signals = 0;
        for (int sig = 1; sig < _NSIG && p->n_reset_signals < ELEMENTSOF(p->reset_signals); sig++) {
                KernelSigaction old = {};

                if (sig == SIGKILL || sig == SIGSTOP)
                        continue;
                if (syscall(SYS_rt_sigaction, sig, NULL, &old, sizeof old.mask) < 0 || old.handler != SIG_DFL)
                        p->reset_signals[p->n_reset_signals++] = sig;
        }
}

const char *spawn_stage_name(SpawnStage stage) {
        switch (stage) {
        case SPAWN_STAGE_USER:
                return "cannot switch to its user and group";
        case SPAWN_STAGE_CHDIR:
                return "cannot change to its --chdir directory";
        case SPAWN_STAGE_EXEC:
                return "cannot execute its command";
        default:
                return "cannot set up its process";
        }
}

typedef struct ChildReport {
        int stage;
        int error;
        bool table_kept;        /* it could not leave our fd table: see clone_child() */
} ChildReport;

/* In the child: say why, in the memory the parent reads once we are gone. */
_no_asan_ static _noreturn_ void child_fail(volatile ChildReport *report, SpawnStage stage, int error) {
        report->stage = stage;
        report->error = error;
        /* Shell conventions: 127 command not found, 126 found but not executable. */
        _exit(stage == SPAWN_STAGE_EXEC && error == ENOENT ? 127 : 126);
}

/* The inode id of our own pidfd, into "LISTEN_PIDFDID=". Without one (out of fds, say) the
 * entry is renamed rather than left empty or wrong: sd_listen_fds() then checks LISTEN_PID
 * alone, as before v259. */
static void child_put_pidfdid(char *buf, size_t size) {
        int fd = (int) syscall(SYS_pidfd_open, getpid(), 0);
        struct stat st;

        if (fd >= 0 && fstat(fd, &st) >= 0)
                env_put_number(buf, size, (unsigned long) st.st_ino);
        else
                memcpy(buf, "BINDONCE_NO_PIDFDID=", sizeof "BINDONCE_NO_PIDFDID=");
        if (fd >= 0)
                (void) close(fd);
}


/* --umask, --group, --user, --chdir. The ids go by raw system calls: glibc's setuid() and
 * friends would signal the parent's threads (setxid), whose memory this child shares. In
 * the order that keeps each step permitted: groups, gid, then uid; a failure anywhere is
 * a failed start, never a worker left running as root. */
_no_asan_ static void child_setup(const WorkerSetup *s, volatile ChildReport *report) {
        if (s->set_umask)
                (void) umask(s->umask);
        if (s->set_ids) {
                if (syscall(SYS_setgroups, s->n_groups, s->groups) < 0 ||
                    syscall(SYS_setresgid, s->gid, s->gid, s->gid) < 0)
                        child_fail(report, SPAWN_STAGE_USER, errno);
                if (s->uid != (uid_t) -1 && syscall(SYS_setresuid, s->uid, s->uid, s->uid) < 0)
                        child_fail(report, SPAWN_STAGE_USER, errno);
        }
        /* After the switch: the directory must be the worker's to enter. */
        if (s->chdir && chdir(s->chdir) < 0)
                child_fail(report, SPAWN_STAGE_CHDIR, errno);
}

/* Runs in the child, on the parent's memory, until exec: no allocation, no stdio, nothing
 * that takes a lock or returns into the parent's frames. Async-signal-safe calls. Its fd
 * table is already its own (child_main). */
_no_asan_ static _noreturn_ void child_exec(SpawnParams *p, const int *fds, const FdMove *moves, size_t n_moves,
                                  int output_fd, volatile ChildReport *report) {
        const int end = SD_LISTEN_FDS_START + (int) p->n_fds;
        /* On the child's stack: a buffer of the parent's heap, sized for it (child_stack_size()). */
        int cur[p->n_fds ? p->n_fds : 1];
        KernelSigaction dfl = { .handler = SIG_DFL };
        sigset_t none;

        /* Default dispositions before unblocking, so nothing pending reaches a stale one.
         * Not shared with the parent: without CLONE_SIGHAND the child has a table of its own. */
        for (size_t i = 0; i < p->n_reset_signals; i++)
                (void) syscall(SYS_rt_sigaction, p->reset_signals[i], &dfl, NULL, sizeof dfl.mask);

        if (setpgid(0, 0) < 0)
                child_fail(report, SPAWN_STAGE_SETUP, errno);

        if (dup2(p->devnull, STDIN_FILENO) < 0)
                child_fail(report, SPAWN_STAGE_SETUP, errno);
        /* Below 3, so the fd moves never meet it; both get the same stream. */
        if (output_fd >= 0 && (dup2(output_fd, STDOUT_FILENO) < 0 || dup2(output_fd, STDERR_FILENO) < 0))
                child_fail(report, SPAWN_STAGE_SETUP, errno);
        if (output_fd > STDERR_FILENO)
                (void) close(output_fd);

        memcpy(cur, fds, p->n_fds * sizeof *cur);
        for (size_t k = 0; k < n_moves; k++) {
                unsigned i = moves[k].index;
                int target = SD_LISTEN_FDS_START + (int) i;

                switch (moves[k].op) {
                case FD_MOVE_AWAY:
                        cur[i] = fcntl(cur[i], F_DUPFD_CLOEXEC, end);
                        if (cur[i] < 0)
                                child_fail(report, SPAWN_STAGE_SETUP, errno);
                        break;
                case FD_MOVE_DUP2:
                        if (dup2(cur[i], target) < 0)
                                child_fail(report, SPAWN_STAGE_SETUP, errno);
                        break;
                case FD_MOVE_KEEP:
                        if (fcntl(target, F_SETFD, 0) < 0)
                                child_fail(report, SPAWN_STAGE_SETUP, errno);
                        break;
                }
        }

        /* Nothing but stdio and the sockets: whatever the supervisor inherited or opened,
         * close-on-exec or not. */
        if (close_from(end) < 0)
                child_fail(report, SPAWN_STAGE_SETUP, EBADF);

        /* LISTEN_PID must be computed here: only the child knows its pid for sure. (This
         * writes the parent's copy of the string: it is rewritten for every worker.) */
        env_put_number(p->env.listen_pid, sizeof p->env.listen_pid, (unsigned long) getpid());
        if (p->env.watchdog_pid[0])
                env_put_number(p->env.watchdog_pid, sizeof p->env.watchdog_pid, (unsigned long) getpid());
        if (p->env.listen_pidfdid[0])
                child_put_pidfdid(p->env.listen_pidfdid, sizeof p->env.listen_pidfdid);

        if (p->restore_nofile && setrlimit(RLIMIT_NOFILE, &p->nofile) < 0)
                child_fail(report, SPAWN_STAGE_SETUP, errno);

        child_setup(&p->setup, report);

        sigemptyset(&none);
        if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
                child_fail(report, SPAWN_STAGE_SETUP, errno);

        execvpe(p->argv[0], p->argv, p->env.envp);
        child_fail(report, SPAWN_STAGE_EXEC, errno);
}

typedef struct ChildArgs {
        SpawnParams *p;
        const int *fds;
        const FdMove *moves;
        size_t n_moves;
        int output_fd;
        unsigned keep;                  /* every fd the child needs is below this */
        bool shared_table;              /* cloned with CLONE_FILES */
        volatile ChildReport *report;
} ChildArgs;

/* The child starts on bindonce's own fd table (CLONE_FILES): a copy of it would cost a
 * reference per open fd, and bindonce holds a pidfd per worker, so with 10,000 workers a
 * spawn spent 8 ms copying and closing them. Its first act is to leave that table, taking
 * only the fds below a->keep: with a range that reaches ~0U, CLOSE_RANGE_UNSHARE copies just
 * those (Linux 5.9). Before that it must not open, close or move any fd: the table is still
 * bindonce's. Where close_range cannot (an old kernel, a seccomp filter), unshare() copies
 * the whole table: slower, just as correct, since the rest is closed below or at exec. */
_no_asan_ static int child_main(void *userdata) {
        const ChildArgs *a = userdata;

        if (a->shared_table && close_range(a->keep, ~0U, CLOSE_RANGE_UNSHARE) < 0 && unshare(CLONE_FILES) < 0) {
                a->report->table_kept = true;
                child_fail(a->report, SPAWN_STAGE_SETUP, errno);
        }
        child_exec(a->p, a->fds, a->moves, a->n_moves, a->output_fd, a->report);
}

/* Whether a child may leave our fd table: a seccomp filter may refuse both close_range and
 * unshare (container runtimes of 2020 did). Then the kernel copies the table at clone, as
 * vfork() does: slower with many workers, the same for the worker. Learnt once. */
static bool share_fd_table = true;

static pid_t clone_child(ChildArgs *a, char *stack_top) {
        for (;;) {
                pid_t pid;

                a->shared_table = share_fd_table;
                pid = clone(child_main, stack_top, CLONE_VM | CLONE_VFORK | SIGCHLD | (a->shared_table ? CLONE_FILES : 0), a);
                if (pid < 0)
                        return -errno;
                if (!a->report->table_kept)
                        return pid;
                /* It has exited already (we ran again only then): reaped at once. */
                (void) waitpid(pid, NULL, 0);
                (void) log_full_errno(LOG_NOTICE, a->report->error,
                                      "cannot give a worker a private fd table cheaply (%m): each start copies bindonce's");
                share_fd_table = false;
                *a->report = (ChildReport) { SPAWN_STAGE_EXEC, 0, false };
        }
}

/* A per-spawn fd the child needs (the output pipe) is born above every pidfd, and the
 * child would copy the fd table up to it. It is lent to the child at a low number instead,
 * reserved at setup (spawn_reserve_low_fd(), so that bindonce's fd count is the same before
 * and after an upgrade in place, which spawns nothing) or else the first time: a dup of
 * /dev/null keeps the number while no spawn uses it. One for the process, as spawns never
 * overlap (the parent waits for each child's exec). */
static int low_fd = -1;

void spawn_reserve_low_fd(const SpawnParams *p) {
        if (low_fd < 0)
                low_fd = fcntl(p->devnull, F_DUPFD_CLOEXEC, SD_LISTEN_FDS_START);
}

static int lend_low_fd(const SpawnParams *p, int fd) {
        spawn_reserve_low_fd(p);
        if (low_fd < 0 || low_fd >= fd || dup3(fd, low_fd, O_CLOEXEC) < 0)
                return fd;      /* lent as it is: the child copies more, nothing else changes */
        return low_fd;
}

static void return_low_fd(const SpawnParams *p, int lent, int fd) {
        /* Our copy of the worker's end goes: the pipe must end when the worker does. */
        if (lent != fd && dup3(p->devnull, low_fd, O_CLOEXEC) < 0) {
                (void) close(low_fd);
                low_fd = -1;
        }
}

/* What the child needs below child_main()'s bound: stdio, /dev/null, the sockets, its
 * output. */
static unsigned fds_bound(const SpawnParams *p, const int *fds, int output_fd) {
        int top = p->devnull > output_fd ? p->devnull : output_fd;

        for (size_t i = 0; i < p->n_fds; i++)
                if (fds[i] > top)
                        top = fds[i];
        return top > STDERR_FILENO ? (unsigned) top + 1 : STDERR_FILENO + 1;
}

/* The child's stack, on ours: we are suspended until it has exec'd (as musl's posix_spawn
 * does). Enough for child_exec()'s frames and for execvpe(), which builds each PATH
 * candidate and, for a script without #!, a copy of argv on the stack. */
static size_t child_stack_size(const SpawnParams *p) {
        size_t argc = 0;

        while (p->argv[argc])
                argc++;
        return (64 * 1024 + (argc + 3) * sizeof(char *) + p->n_fds * sizeof(int) + 15) & ~(size_t) 15;
}

int spawn_worker(SpawnParams *p, unsigned slot, const int *fds, SpawnResult *ret) {
        /* On the heap, not the stack: thousands of sockets (from systemd) must not overflow
         * bindonce's stack, nor the child's, which is this buffer. */
        _cleanup_free_ FdMove *moves = calloc(2 * p->n_fds + 1, sizeof *moves);
        volatile ChildReport report = { SPAWN_STAGE_EXEC, 0, false };
        size_t stack_size = child_stack_size(p);
        _cleanup_free_ char *stack = aligned_alloc(16, stack_size);
        ChildArgs args = { .p = p, .fds = fds, .moves = moves, .report = &report };
        int n_moves, output_fd;
        pid_t pid;

        if (!moves || !stack)
                return -ENOMEM;
        /* Planned here, not in the child: the child only replays it. */
        n_moves = fd_plan(fds, p->n_fds, moves);
        if (n_moves < 0)
                return n_moves;
        args.n_moves = (size_t) n_moves;

        worker_env_set_slot(&p->env, slot);

        /* The worker's stdout and stderr: a pipe to bindonce (--log-prefix), a journal
         * stream, or -1: bindonce's own. */
        output_fd = p->setup.output ? worker_output_open(p->setup.output, slot) : -1;
        args.output_fd = output_fd >= 0 ? lend_low_fd(p, output_fd) : -1;
        args.keep = fds_bound(p, fds, args.output_fd);

        /* CLONE_VM|CLONE_VFORK, as vfork(): no page tables to copy, so a restart costs one
         * exec, and we run again only once the child has exec'd or exited, so the report
         * below is final. CLONE_FILES: see child_main(). */
        pid = clone_child(&args, stack + stack_size);
        if (output_fd >= 0)
                return_low_fd(p, args.output_fd, output_fd);
        if (p->setup.output)
                worker_output_started(p->setup.output, pid < 0 ? -1 : pid);
        if (pid < 0)
                return pid;

        *ret = (SpawnResult) {
                .pid = pid,
                .child_errno = report.error,
                .stage = (SpawnStage) report.stage,
        };
        return 0;
}
