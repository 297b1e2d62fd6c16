/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "output.h"
#include "spawn.h"

/* A model fd table: which "object" each fd number refers to, and its close-on-exec bit. */
#define MODEL_FDS 64
typedef struct Model {
        int object[MODEL_FDS];  /* 0: closed */
        bool cloexec[MODEL_FDS];
} Model;

static int model_lowest_free(const Model *m, int from) {
        for (int fd = from; fd < MODEL_FDS; fd++)
                if (m->object[fd] == 0)
                        return fd;
        fail_msg("model fd table full");
        return -1;
}

/* Replays a plan exactly as child_exec() does and checks the outcome. */
static void check_plan(const int *sources, size_t n, const int *also_open, size_t n_also) {
        FdMove moves[2 * 16];
        Model m = {};
        int cur[16];
        int k;

        for (int fd = 0; fd < 3; fd++)
                m.object[fd] = 1000 + fd;
        for (size_t i = 0; i < n; i++) {
                m.object[sources[i]] = 100 + (int) i; /* socket i */
                m.cloexec[sources[i]] = true;
                cur[i] = sources[i];
        }
        for (size_t i = 0; i < n_also; i++) {
                m.object[also_open[i]] = 500 + (int) i;
                m.cloexec[also_open[i]] = true;
        }

        k = fd_plan(sources, n, moves);
        assert_true(k >= (int) n);
        assert_true(k <= (int) (2 * n));

        for (int j = 0; j < k; j++) {
                unsigned i = moves[j].index;
                int target = SD_LISTEN_FDS_START + (int) i;

                switch (moves[j].op) {
                case FD_MOVE_AWAY: {
                        int fd = model_lowest_free(&m, SD_LISTEN_FDS_START + (int) n);
                        m.object[fd] = m.object[cur[i]];
                        m.cloexec[fd] = true;
                        cur[i] = fd;
                        break;
                }
                case FD_MOVE_DUP2:
                        assert_int_not_equal(cur[i], target); /* dup2(fd, fd) keeps cloexec */
                        m.object[target] = m.object[cur[i]];
                        m.cloexec[target] = false;
                        break;
                case FD_MOVE_KEEP:
                        assert_int_equal(cur[i], target);
                        m.cloexec[target] = false;
                        break;
                }
        }

        for (size_t i = 0; i < n; i++) {
                assert_int_equal(m.object[SD_LISTEN_FDS_START + i], 100 + (int) i);
                assert_false(m.cloexec[SD_LISTEN_FDS_START + i]);
        }
        for (int fd = 0; fd < 3; fd++)
                assert_int_equal(m.object[fd], 1000 + fd);
}

static void test_plan_sources_above(void **state) {
        check_plan((int[]) { 7 }, 1, NULL, 0);
        check_plan((int[]) { 10, 11, 12 }, 3, (int[]) { 3, 4, 5 }, 3);
        check_plan((int[]) { 12, 10, 11 }, 3, NULL, 0);
}

static void test_plan_already_in_place(void **state) {
        FdMove moves[6];

        check_plan((int[]) { 3 }, 1, NULL, 0);
        check_plan((int[]) { 3, 4, 5 }, 3, NULL, 0);
        /* Sockets already at 3.. need no copies, only the close-on-exec clear. */
        assert_int_equal(fd_plan((int[]) { 3, 4, 5 }, 3, moves), 3);
        for (int i = 0; i < 3; i++)
                assert_int_equal(moves[i].op, FD_MOVE_KEEP);
}

static void test_plan_overlapping(void **state) {
        /* Reversed: each source sits on another's target. */
        check_plan((int[]) { 5, 4, 3 }, 3, NULL, 0);
        /* A rotation. */
        check_plan((int[]) { 4, 5, 3 }, 3, NULL, 0);
        /* Partly in place, partly swapped, partly above. */
        check_plan((int[]) { 3, 6, 4, 20 }, 4, (int[]) { 7, 8 }, 2);
        check_plan((int[]) { 9, 3, 8, 7, 6, 5, 4 }, 7, NULL, 0);
}

static void test_plan_rejects(void **state) {
        FdMove moves[4];

        assert_int_equal(fd_plan((int[]) { 2 }, 1, moves), -EINVAL);
        assert_int_equal(fd_plan((int[]) { 5, 5 }, 2, moves), -EINVAL);
        assert_int_equal(fd_plan(NULL, 0, moves), 0);
}

static const char *env_get(char **envp, const char *name) {
        size_t n = strlen(name);

        for (; *envp; envp++)
                if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
                        return *envp + n + 1;
        return NULL;
}

static size_t env_count(char **envp, const char *name) {
        size_t n = strlen(name), c = 0;

        for (; *envp; envp++)
                c += strncmp(*envp, name, n) == 0 && (*envp)[n] == '=';
        return c;
}

static void test_env(void **state) {
        char *base[] = {
                "PATH=/usr/bin", "LISTEN_PID=1", "LISTEN_FDS=9", "LISTEN_FDNAMES=x",
                "LISTEN_PIDFDID=77", "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=5",
                "WATCHDOG_PID=1", "BINDONCE_WORKER=9", "HOME=/root", "KEEP=me", NULL,
        };
        char *settings[] = { "FOO=bar", "HOME", "PATH=/bin", "ABSENT" };
        WorkerEnv env;

        assert_int_equal(worker_env_build(&env, base, settings, 4, 2, "web:admin", "@bindonce/notify", 3000000), 0);
        assert_string_equal(env_get(env.envp, "PATH"), "/bin");
        assert_string_equal(env_get(env.envp, "HOME"), "/root");
        assert_string_equal(env_get(env.envp, "KEEP"), "me");
        assert_string_equal(env_get(env.envp, "FOO"), "bar");
        assert_null(env_get(env.envp, "ABSENT"));
        /* The supervisor's own never; the worker's own, written in the child, where the
         * kernel has pidfd inode ids. */
        if (pidfd_ids_supported()) {
                assert_string_equal(env_get(env.envp, "LISTEN_PIDFDID"), "");
                assert_int_equal(env_count(env.envp, "LISTEN_PIDFDID"), 1);
        } else
                assert_null(env_get(env.envp, "LISTEN_PIDFDID"));
        /* Ours for the worker, never systemd's for us. */
        assert_string_equal(env_get(env.envp, "NOTIFY_SOCKET"), "@bindonce/notify");
        assert_string_equal(env_get(env.envp, "WATCHDOG_USEC"), "3000000");
        assert_string_equal(env_get(env.envp, "WATCHDOG_PID"), "");
        assert_int_equal(env_count(env.envp, "NOTIFY_SOCKET"), 1);
        assert_int_equal(env_count(env.envp, "WATCHDOG_USEC"), 1);
        assert_string_equal(env_get(env.envp, "LISTEN_FDS"), "2");
        assert_string_equal(env_get(env.envp, "LISTEN_FDNAMES"), "web:admin");
        assert_string_equal(env_get(env.envp, "BINDONCE_WORKER"), "0");
        assert_non_null(env_get(env.envp, "LISTEN_PID"));
        assert_int_equal(env_count(env.envp, "LISTEN_FDS"), 1);
        assert_int_equal(env_count(env.envp, "LISTEN_PID"), 1);
        assert_int_equal(env_count(env.envp, "PATH"), 1);
        assert_int_equal(env_count(env.envp, "BINDONCE_WORKER"), 1);

        worker_env_set_slot(&env, 4095);
        assert_string_equal(env_get(env.envp, "BINDONCE_WORKER"), "4095");
        worker_env_set_slot(&env, 7);
        assert_string_equal(env_get(env.envp, "BINDONCE_WORKER"), "7");

        env_put_number(env.listen_pid, sizeof env.listen_pid, 4194304);
        assert_string_equal(env_get(env.envp, "LISTEN_PID"), "4194304");
        env_put_number(env.listen_pid, sizeof env.listen_pid, 0);
        assert_string_equal(env_get(env.envp, "LISTEN_PID"), "0");
        worker_env_done(&env);

        /* Without a notify socket or watchdog, none of systemd's leaks through. */
        assert_int_equal(worker_env_build(&env, base, NULL, 0, 1, "x", NULL, 0), 0);
        assert_null(env_get(env.envp, "NOTIFY_SOCKET"));
        assert_null(env_get(env.envp, "WATCHDOG_USEC"));
        assert_null(env_get(env.envp, "WATCHDOG_PID"));
        worker_env_done(&env);
}

/* The real thing, end to end: a process whose exec fails is reported at once, by errno. */
static void spawn_setup_and_wait(char **argv, const WorkerSetup *setup, int expect_errno, SpawnStage stage,
                                 int expect_status) {
        int sv[2], devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        SpawnParams p = { .argv = argv, .devnull = devnull, .n_fds = 1, .setup = *setup };

        spawn_signals_init(&p);
        SpawnResult res;
        siginfo_t si = {};

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(worker_env_build(&p.env, (char *[]) { "PATH=/usr/bin:/bin", NULL }, NULL, 0, 1, "t", NULL, 0), 0);

        assert_int_equal(spawn_worker(&p, 3, &sv[0], &res), 0);
        assert_int_equal(res.child_errno, expect_errno);
        if (expect_errno)
                assert_int_equal(res.stage, stage);
        assert_true(res.pid > 0);
        assert_int_equal(waitid(P_PID, (id_t) res.pid, &si, WEXITED), 0);
        assert_int_equal(si.si_pid, res.pid);
        assert_int_equal(si.si_code, CLD_EXITED);
        assert_int_equal(si.si_status, expect_status);

        close(sv[0]);
        close(sv[1]);
        close(devnull);
        worker_env_done(&p.env);
}

static void spawn_and_wait(char **argv, int expect_errno, int expect_status) {
        WorkerSetup none = WORKER_SETUP_NULL;

        spawn_setup_and_wait(argv, &none, expect_errno, SPAWN_STAGE_EXEC, expect_status);
}

/* --umask and --chdir reach the worker; a missing directory is a failed start, named. */
static void test_spawn_umask_chdir(void **state) {
        WorkerSetup s = WORKER_SETUP_NULL;

        s.set_umask = true;
        s.umask = 027;
        s.chdir = "/usr";
        spawn_setup_and_wait((char *[]) { "sh", "-c", "[ \"$(umask)\" = 0027 ] && [ \"$(pwd)\" = /usr ] && exit 0; exit 9",
                                          NULL }, &s, 0, 0, 0);
        s.chdir = "/nonexistent-bindonce-dir";
        spawn_setup_and_wait((char *[]) { "true", NULL }, &s, ENOENT, SPAWN_STAGE_CHDIR, 126);
}

/* As root: the worker runs as nobody, with nobody's groups only; without root, switching
 * fails as a failed start at the USER stage, never as a worker of the wrong user. */
static void test_spawn_user(void **state) {
        WorkerSetup s = WORKER_SETUP_NULL;
        gid_t groups[1] = { 65534 };

        s.set_ids = true;
        s.uid = 65534;
        s.gid = 65534;
        s.groups = groups;
        s.n_groups = 1;
        if (geteuid() != 0) {
                spawn_setup_and_wait((char *[]) { "true", NULL }, &s, EPERM, SPAWN_STAGE_USER, 126);
                return;
        }
        spawn_setup_and_wait((char *[]) { "sh", "-c",
                "grep -q '^Uid:[[:space:]]*65534[[:space:]]*65534[[:space:]]*65534[[:space:]]*65534$' /proc/self/status && "
                "grep -q '^Gid:[[:space:]]*65534[[:space:]]*65534[[:space:]]*65534[[:space:]]*65534$' /proc/self/status && "
                "grep -q '^Groups:[[:space:]]*65534[[:space:]]*$' /proc/self/status && exit 0; exit 9", NULL }, &s, 0, 0, 0);
}

/* LISTEN_PIDFDID is the worker's own pidfd inode, as libsystemd v259 checks it. */
static void test_spawn_pidfdid(void **state) {
        if (!pidfd_ids_supported())
                skip();
        spawn_and_wait((char *[]) { "/usr/bin/python3", "-c",
                "import os, sys; fd = os.pidfd_open(os.getpid()); "
                "sys.exit(0 if os.environ['LISTEN_PIDFDID'] == str(os.fstat(fd).st_ino) else 9)", NULL }, 0, 0);
}

static void test_spawn_exec_errors(void **state) {
        spawn_and_wait((char *[]) { "/nonexistent/command", NULL }, ENOENT, 127);
        spawn_and_wait((char *[]) { "no-such-command-on-path", NULL }, ENOENT, 127);
        spawn_and_wait((char *[]) { "/", NULL }, EACCES, 126);
        char path[] = "/tmp/bindonce-test-XXXXXX";
        int fd = mkstemp(path); /* mode 0600: a file that is not executable */
        assert_true(fd >= 0);
        close(fd);
        spawn_and_wait((char *[]) { path, NULL }, EACCES, 126);
        unlink(path);
}

static void test_signals_to_reset(void **state) {
        SpawnParams p = {};
        struct sigaction ign = { .sa_handler = SIG_IGN }, dfl = { .sa_handler = SIG_DFL }, old_pipe, old_usr1;
        bool pipe_listed = false, usr1_listed = false;

        sigaction(SIGPIPE, &ign, &old_pipe);
        sigaction(SIGUSR1, &dfl, &old_usr1);
        spawn_signals_init(&p);
        for (size_t i = 0; i < p.n_reset_signals; i++) {
                pipe_listed = pipe_listed || p.reset_signals[i] == SIGPIPE;
                usr1_listed = usr1_listed || p.reset_signals[i] == SIGUSR1;
                assert_int_not_equal(p.reset_signals[i], SIGKILL);
        }
        assert_true(pipe_listed);
        assert_false(usr1_listed);
        sigaction(SIGPIPE, &old_pipe, NULL);
        sigaction(SIGUSR1, &old_usr1, NULL);

        /* The child really starts with SIGPIPE at its default: SigIgn all zero. */
        sigaction(SIGPIPE, &ign, NULL);
        spawn_and_wait((char *[]) { "sh", "-c",
                "grep -q '^SigIgn:[[:space:]]*0000000000000000$' /proc/self/status && exit 0; exit 9", NULL }, 0, 0);
        sigaction(SIGPIPE, &old_pipe, NULL);
}

static void test_spawn_worker_sees_protocol(void **state) {
        /* The child checks its own fd 3 and LISTEN_* and exits 0 only if all hold. */
        spawn_and_wait((char *[]) { "sh", "-c",
                "[ \"$LISTEN_PID\" = $$ ] && [ \"$LISTEN_FDS\" = 1 ] && [ \"$LISTEN_FDNAMES\" = t ] && "
                "[ \"$BINDONCE_WORKER\" = 3 ] && [ -S /proc/self/fd/3 ] && [ ! -e /proc/self/fd/4 ] && "
                "[ \"$(readlink /proc/self/fd/0)\" = /dev/null ] && exit 0; exit 9", NULL }, 0, 0);
}

static int count_open_fds(void) {
        struct stat st;
        int n = 0;

        for (int fd = 0; fd < 65536; fd++)
                n += fstat(fd, &st) >= 0;
        return n;
}

/* Opens up to n more fds above everything open (dups of /dev/null, close-on-exec as every
 * fd of bindonce is, but for a few: what bindonce inherited may lack it). Returns how many. */
static int open_many(int *fds, int n) {
        struct rlimit rl;
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC), k;

        assert_true(null >= 0);
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < (rlim_t) n + 256 && rl.rlim_max > rl.rlim_cur) {
                rl.rlim_cur = rl.rlim_max < (rlim_t) n + 256 ? rl.rlim_max : (rlim_t) n + 256;
                assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
        }
        for (k = 0; k < n && (rlim_t) k + 128 < rl.rlim_cur; k++) {
                fds[k] = fcntl(null, k % 500 == 7 ? F_DUPFD : F_DUPFD_CLOEXEC, 3);
                assert_true(fds[k] >= 0);
        }
        close(null);
        return k;
}

static void close_many(const int *fds, int n) {
        for (int k = 0; k < n; k++) {
                int flags = fcntl(fds[k], F_GETFD);

                /* The parent's table, as it was: every fd open, its flag untouched. */
                assert_true(flags >= 0);
                assert_int_equal(!!(flags & FD_CLOEXEC), k % 500 != 7);
                close(fds[k]);
        }
}

/* The worker's view: exactly stdio and its socket, wherever the socket was. */
#define CHECK_FDS_PY \
        "import os, stat, sys\n" \
        "def is_open(fd):\n" \
        "    try: return os.fstat(fd) is not None\n" \
        "    except OSError: return False\n" \
        "fds = sorted(fd for fd in map(int, os.listdir('/proc/self/fd')) if is_open(fd))\n" \
        "ok = fds == [0, 1, 2, 3] and stat.S_ISSOCK(os.fstat(3).st_mode) and os.get_inheritable(3) and " \
        "os.path.samestat(os.fstat(0), os.stat('/dev/null'))\n" \
        "print('worker fds:', fds, file=sys.stderr) if not ok else None\n" \
        "sys.exit(0 if ok else 9)\n"

/* bindonce holds a pidfd per worker: thousands of fds. The child starts on that very table
 * (CLONE_FILES) and leaves it first thing: the worker still gets exactly stdio and its
 * socket (here above every other fd, so the child keeps them all until its moves), and
 * nothing the child does afterwards (stdin to /dev/null, the moves, the closing) reaches
 * the parent's table. */
static void test_spawn_many_fds(void **state) {
        enum { N = 3000 };
        static int fds[N];
        int in[2], saved_stdin, before, n;
        struct stat st_in, st;

        /* Our stdin, a pipe: the child's dup2(/dev/null, 0) must not land here. */
        assert_int_equal(pipe2(in, O_CLOEXEC), 0);
        assert_int_equal(fstat(in[0], &st_in), 0);
        saved_stdin = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
        assert_true(saved_stdin >= 0);
        assert_int_equal(dup2(in[0], STDIN_FILENO), STDIN_FILENO);

        n = open_many(fds, N);
        assert_true(n > 1000);
        before = count_open_fds();
        spawn_and_wait((char *[]) { "/usr/bin/python3", "-I", "-c", CHECK_FDS_PY, NULL }, 0, 0);
        assert_int_equal(count_open_fds(), before);
        assert_int_equal(fstat(STDIN_FILENO, &st), 0);
        assert_int_equal(st.st_ino, st_in.st_ino);
        close_many(fds, n);

        assert_int_equal(dup2(saved_stdin, STDIN_FILENO), STDIN_FILENO);
        close(saved_stdin);
        close(in[0]);
        close(in[1]);
}

static int count_fds_linked_to(const char *target) {
        char path[64], link[64];
        int n = 0;

        for (int fd = 0; fd < 65536; fd++) {
                ssize_t l;

                snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
                l = readlink(path, link, sizeof link - 1);
                if (l < 0)
                        continue;
                link[l] = '\0';
                n += strcmp(link, target) == 0;
        }
        return n;
}

/* --log-prefix (and the journal): the output pipe is made per spawn, above every fd, and lent to the child at
 * a low number. The worker writes to it on fd 1 and 2; once it runs, bindonce holds only the
 * read end, so the pipe ends when the worker does. */
static void test_spawn_output_pipe(void **state) {
        enum { N = 2000 };
        static int fds[N];
        WorkerSetup setup = WORKER_SETUP_NULL;
        int sv[2], devnull = open("/dev/null", O_RDONLY | O_CLOEXEC), n;
        SpawnParams p = { .argv = NULL, .devnull = devnull, .n_fds = 1 };
        char path[64], pipe_name[64];
        siginfo_t si = {};
        SpawnResult res;
        ssize_t l;

        assert_int_equal(worker_output_new(&setup.output, "t", true, (uid_t) -1, (gid_t) -1), 0);
        assert_non_null(setup.output);
        p.setup = setup;
        /* It waits on its socket until we have looked at both ends of its pipe. */
        p.argv = (char *[]) { "/usr/bin/python3", "-I", "-c",
                "import os, stat, sys\n"
                "a, b = os.fstat(1), os.fstat(2)\n"
                "ok = stat.S_ISFIFO(a.st_mode) and os.path.samestat(a, b) and not os.path.exists('/proc/self/fd/4')\n"
                "os.read(3, 1)\n"
                "sys.exit(0 if ok else 9)\n", NULL };
        spawn_signals_init(&p);
        n = open_many(fds, N);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(worker_env_build(&p.env, (char *[]) { "PATH=/usr/bin:/bin", NULL }, NULL, 0, 1, "t", NULL, 0), 0);

        for (int round = 0; round < 2; round++) {
                assert_int_equal(spawn_worker(&p, 1, &sv[0], &res), 0);
                assert_int_equal(res.child_errno, 0);
                snprintf(path, sizeof path, "/proc/%d/fd/1", (int) res.pid);
                l = readlink(path, pipe_name, sizeof pipe_name - 1);
                assert_true(l > 0);
                pipe_name[l] = '\0';
                assert_true(strncmp(pipe_name, "pipe:", 5) == 0);
                assert_int_equal(count_fds_linked_to(pipe_name), 1);

                assert_int_equal(write(sv[1], "x", 1), 1);
                assert_int_equal(waitid(P_PID, (id_t) res.pid, &si, WEXITED), 0);
                assert_int_equal(si.si_code, CLD_EXITED);
                assert_int_equal(si.si_status, 0);
        }

        close_many(fds, n);
        close(sv[0]);
        close(sv[1]);
        close(devnull);
        worker_env_done(&p.env);
        worker_output_free(setup.output);
}

/* A seccomp filter that refuses close_range and unshare with EPERM, as some container
 * runtimes' did: the spawn falls back to copying the fd table at clone, and the worker
 * still gets exactly what it should. In a process of its own, which keeps the filter. */
static void test_spawn_without_close_range(void **state) {
#if defined(__x86_64__)
        struct sock_filter filter[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_close_range, 1, 0),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_unshare, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = sizeof filter / sizeof filter[0], .filter = filter };
        siginfo_t si = {};
        pid_t pid;

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                static int fds[500];
                int n;

                if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
                        _exit(77);
                if (syscall(SYS_close_range, 1000000, 1000000, 0) == 0 || errno != EPERM)
                        _exit(78);
                /* Twice: once learning, once knowing. */
                n = open_many(fds, 500);
                spawn_and_wait((char *[]) { "/usr/bin/python3", "-I", "-c", CHECK_FDS_PY, NULL }, 0, 0);
                spawn_and_wait((char *[]) { "/usr/bin/python3", "-I", "-c", CHECK_FDS_PY, NULL }, 0, 0);
                spawn_and_wait((char *[]) { "/nonexistent/command", NULL }, ENOENT, 127);
                close_many(fds, n);
                _exit(0);
        }
        assert_int_equal(waitid(P_PID, (id_t) pid, &si, WEXITED), 0);
        assert_int_equal(si.si_code, CLD_EXITED);
        if (si.si_status == 77)
                skip();
        assert_int_equal(si.si_status, 0);
#else
        skip();
#endif
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_plan_sources_above),
                cmocka_unit_test(test_plan_already_in_place),
                cmocka_unit_test(test_plan_overlapping),
                cmocka_unit_test(test_plan_rejects),
                cmocka_unit_test(test_env),
                cmocka_unit_test(test_spawn_exec_errors),
                cmocka_unit_test(test_spawn_worker_sees_protocol),
                cmocka_unit_test(test_signals_to_reset),
                cmocka_unit_test(test_spawn_umask_chdir),
                cmocka_unit_test(test_spawn_user),
                cmocka_unit_test(test_spawn_pidfdid),
                cmocka_unit_test(test_spawn_many_fds),
                cmocka_unit_test(test_spawn_output_pipe),
                cmocka_unit_test(test_spawn_without_close_range),
        };
        return cmocka_run_group_tests_name("spawn", tests, NULL, NULL);
}
