/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"
#include "sdnotify.h"
#include "output.h"
#include "supervisor-internal.h"
#include "orphans.h"
#include "upgrade.h"

#ifndef BINDONCE_VERSION
#define BINDONCE_VERSION "0.1"
#endif

extern char **environ;

static char **self_argv;
static char self_exe[PATH_MAX];

/* The state a new bindonce was handed, kept until it has taken over. */
static struct {
        bool active;
        UpgradeState state;
        int state_fd, old_exe_fd;
        int keep_base, keep_n;          /* the previous bindonce's pidfds (UPGRADE_ENV_PIDFDS), or none */
        char *failed;                   /* set: we are the old binary, given the state back */
} incoming = { .state_fd = -1, .old_exe_fd = -1 };

struct Upgrade {
        Supervisor *sup;
        char *exe;
        ReloadWaiter waiter;            /* .done NULL: SIGUSR2, nobody waits */
        int client_fd;
        pid_t pid;                      /* NEW --upgrade-check */
        int out_fd;                     /* its stdout */
        sd_event_source *child, *timer, *exec;
        bool timed_out;
        unsigned format;                /* the newest state format both read */
        char version[64];
};

void upgrade_init(char **argv) {
        ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
        const char *deleted = " (deleted)";

        self_argv = argv;
        if (n < 0) {
                self_exe[0] = '\0';
                return;
        }
        self_exe[n] = '\0';
        /* The old binary given the state back runs from a file that may be gone since. */
        if ((size_t) n > strlen(deleted) && strcmp(self_exe + n - strlen(deleted), deleted) == 0)
                self_exe[n - strlen(deleted)] = '\0';
}

/* BINDONCE_TEST_STATE_VERSION: a test makes a build claim another format (bindonce(1) does
 * not document it; HACKING.md does). */
int upgrade_check_report(int r) {
        const char *claim = getenv("BINDONCE_TEST_STATE_VERSION");

        if (r <= 0)
                return EXIT_USAGE;
        printf("bindonce %s\nstate-formats ", BINDONCE_VERSION);
        if (claim)
                printf("%s", claim);
        for (unsigned f = STATE_FORMAT_OLDEST; !claim && f <= STATE_FORMAT; f++)
                printf("%s%u", f > STATE_FORMAT_OLDEST ? " " : "", f);
        printf("\n");
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_OSERR;
}

/* FD_CLOEXEC is the only fd flag: set, not read first (a syscall per fd counts with
 * thousands of reuseport sockets). */
static void set_cloexec(const int *fds, size_t n, bool on) {
        for (size_t i = 0; i < n; i++)
                (void) fcntl(fds[i], F_SETFD, on ? FD_CLOEXEC : 0);
}

static void close_fds(int from, int n, unsigned flags) {
        if (n > 0 && close_range((unsigned) from, (unsigned) (from + n - 1), flags) < 0)
                for (int fd = from; fd < from + n; fd++)
                        (void) (flags ? fcntl(fd, F_SETFD, FD_CLOEXEC) : close(fd));
}

/* environ without our variables, plus `extra` (NULL-terminated). */
static char **upgrade_env(char **extra) {
        size_t n = 0, k = 0, e = 0;
        char **env;

        while (environ[n])
                n++;
        while (extra[e])
                e++;
        env = calloc(n + e + 1, sizeof *env);
        if (!env)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (strncmp(environ[i], "BINDONCE_UPGRADE_", 17) != 0)
                        env[k++] = environ[i];
        for (size_t i = 0; i < e; i++)
                env[k++] = extra[i];
        return env;
}

/* ---- the new process -------------------------------------------------------------------- */

/* The previous bindonce's pidfds: close-on-exec at once, closed in one call once they have
 * served (or when we give up). A value we cannot read names nothing we may close. */
static void keepalives_take(void) {
        const char *v = getenv(UPGRADE_ENV_PIDFDS);
        unsigned base, n;
        char end;

        if (v && sscanf(v, "%u %u%c", &base, &n, &end) == 2 && base >= 3 && n > 0 && n <= 4 * WORKERS_MAX &&
            base <= INT_MAX - n) {
                incoming.keep_base = (int) base;
                incoming.keep_n = (int) n;
                close_fds(incoming.keep_base, incoming.keep_n, CLOSE_RANGE_CLOEXEC);
        }
        (void) unsetenv(UPGRADE_ENV_PIDFDS);
}

/* The old process's inherited children (orphans.h); a text we cannot read leaves the
 * noting to children_list_open(), as from an older bindonce. */
static void inherited_take(void) {
        const char *v = getenv(UPGRADE_ENV_INHERITED);

        if (v && orphans_inherited_preset(v) < 0)
                log_warning("upgrade: cannot read %s; every child counts as inherited", UPGRADE_ENV_INHERITED);
        (void) unsetenv(UPGRADE_ENV_INHERITED);
}

/* NAME=PID PID ... of our inherited children, for the environment of the exec. */
static char *inherited_env(void) {
        _cleanup_free_ char *pids = NULL;
        char *env;

        if (orphans_inherited_format(&pids) < 0 || asprintf(&env, UPGRADE_ENV_INHERITED "=%s", pids) < 0)
                return NULL;
        return env;
}

static void keepalives_close(void) {
        close_fds(incoming.keep_base, incoming.keep_n, 0);
        incoming.keep_n = 0;
}

static int env_fd(const char *name) {
        const char *v = getenv(name);
        unsigned long fd;

        if (!v || parse_uint(v, 3, INT_MAX, &fd) < 0 || fcntl((int) fd, F_GETFD) < 0)
                return -1;
        return (int) fd;
}

void upgrade_incoming_abort(const char *fmt, ...) {
        _cleanup_free_ char *reason = NULL, *failed = NULL, *state = NULL;
        _cleanup_free_ int *fds = NULL;
        int n;
        va_list ap;

        if (!incoming.active)
                return;
        /* Never handed back: the old binary opens pidfds of its own, as it did here. */
        keepalives_close();
        va_start(ap, fmt);
        if (vasprintf(&reason, fmt, ap) < 0)
                reason = NULL;
        va_end(ap);
        if (incoming.old_exe_fd < 0) {
                log_error("upgrade: the previous bindonce cannot take its own state back either (%s); "
                          "exiting: the workers keep serving, unsupervised", reason ? reason : "out of memory");
                return;
        }
        log_error("upgrade: this bindonce (%s) cannot take over: %s; executing the previous binary again",
                  BINDONCE_VERSION, reason ? reason : "out of memory");
        if (asprintf(&failed, UPGRADE_ENV_FAILED "=the new bindonce %s could not take over: %s", BINDONCE_VERSION,
                     reason ? reason : "out of memory") < 0 ||
            asprintf(&state, UPGRADE_ENV_STATE "=%d", incoming.state_fd) < 0)
                return;
        _cleanup_free_ char *inherited = inherited_env();
        char *extra[] = { state, failed, inherited, NULL };
        _cleanup_free_ char **env = upgrade_env(extra);
        if (!env)
                return;
        n = state_fds(&incoming.state, 1, true, &fds);
        if (n < 0)
                return;
        fds[n++] = incoming.state_fd;
        set_cloexec(fds, (size_t) n, false);
        fexecve(incoming.old_exe_fd, self_argv, env);
        log_error_errno(errno, "upgrade: cannot execute the previous binary again: %m; exiting: the workers keep "
                        "serving, unsupervised");
}

static int read_all(int fd, char **ret, size_t *ret_len) {
        struct stat st;
        char *buf;
        size_t len = 0;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (st.st_size <= 0 || st.st_size > 64 * 1024 * 1024)
                return -EBADMSG;
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (len < (size_t) st.st_size) {
                ssize_t k = pread(fd, buf + len, (size_t) st.st_size - len, (off_t) len);
                if (k <= 0) {
                        free(buf);
                        return k < 0 ? -errno : -EBADMSG;
                }
                len += (size_t) k;
        }
        buf[len] = '\0';
        *ret = buf;
        *ret_len = len;
        return 0;
}

/* Every fd the state names must be open here: it came across the exec. A worker's pidfd
 * that did not is forgotten (a new one is opened for it), now, before anything of ours can
 * take its number. Ours now, so close-on-exec again, as every fd of ours is: one call for a
 * thousand pidfds. */
static int check_fds(UpgradeState *s) {
        _cleanup_free_ int *fds = NULL;
        int n = state_fds(s, 0, false, &fds);

        if (n < 0)
                return -2;
        for (int i = 0; i < n; i++)
                if (fcntl(fds[i], F_GETFD) < 0)
                        return fds[i];
        for (size_t i = 0; i < s->n_workers; i++)
                if (s->workers[i].pidfd >= 0 && fcntl(s->workers[i].pidfd, F_GETFD) < 0)
                        s->workers[i].pidfd = -1;
        if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
                free(fds);
                fds = NULL;
                n = state_fds(s, 0, true, &fds);
                if (n < 0)
                        return -2;
                set_cloexec(fds, (size_t) n, true);
        }
        return -1;
}

const UpgradeState *upgrade_incoming_open(void) {
        _cleanup_free_ char *buf = NULL;
        const char *failed = getenv(UPGRADE_ENV_FAILED);
        char err[256] = "";
        unsigned format = 0;
        size_t len = 0;
        int r, fd;

        if (!getenv(UPGRADE_ENV_STATE))
                return NULL;
        incoming.active = true;
        keepalives_take();
        inherited_take();
        incoming.state_fd = env_fd(UPGRADE_ENV_STATE);
        incoming.old_exe_fd = env_fd(UPGRADE_ENV_OLD_EXE);
        incoming.failed = failed ? strdup(failed) : NULL;
        (void) unsetenv(UPGRADE_ENV_STATE);
        (void) unsetenv(UPGRADE_ENV_OLD_EXE);
        (void) unsetenv(UPGRADE_ENV_FAILED);
        if (incoming.state_fd >= 0)
                (void) fcntl(incoming.state_fd, F_SETFD, FD_CLOEXEC);
        if (incoming.old_exe_fd >= 0)
                (void) fcntl(incoming.old_exe_fd, F_SETFD, FD_CLOEXEC);

        if (incoming.state_fd < 0) {
                keepalives_close();
                incoming.active = false;
                log_error("upgrade: %s names no open fd; starting afresh", UPGRADE_ENV_STATE);
                return NULL;
        }
        r = read_all(incoming.state_fd, &buf, &len);
        if (r < 0) {
                upgrade_incoming_abort("cannot read the state: %s", strerror(-r));
                exit(EXIT_OSERR);
        }
        r = state_read_in_place(buf, len, &incoming.state, &format, err, sizeof err);
        if (r < 0) {
                upgrade_incoming_abort("cannot read the state: %s", r == -ENOMEM ? "out of memory" : err);
                exit(EXIT_OSERR);
        }
        fd = check_fds(&incoming.state);
        if (fd == -2) {
                upgrade_incoming_abort("out of memory");
                exit(EXIT_OSERR);
        }
        if (fd >= 0) {
                upgrade_incoming_abort("fd %d named by the state did not come across the exec", fd);
                exit(EXIT_OSERR);
        }
        /* A test makes the new binary fail here, after the check passed. */
        if (getenv("BINDONCE_TEST_FAIL_RESTORE")) {
                (void) unsetenv("BINDONCE_TEST_FAIL_RESTORE");
                upgrade_incoming_abort("BINDONCE_TEST_FAIL_RESTORE is set");
                exit(EXIT_OSERR);
        }
        return &incoming.state;
}

int upgrade_take_listeners(Listener **ret) {
        const UpgradeState *s = &incoming.state;
        Listener *l;

        if (!incoming.active)
                return 0;
        l = calloc(s->n_listeners, sizeof *l);
        if (!l)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_listeners; i++) {
                l[i] = s->listeners[i];
                l[i].name = strdup(s->listeners[i].name ? s->listeners[i].name : "unknown");
                if (!l[i].name) {
                        while (i-- > 0)
                                free(l[i].name);
                        free(l);
                        return -ENOMEM;
                }
        }
        *ret = l;
        return (int) s->n_listeners;
}

void upgrade_apply_config(SupervisorConfig *config) {
        if (!incoming.active)
                return;
        config->resume = &incoming.state;
        config->n_workers = incoming.state.target;
        config->sockets_kept = incoming.state.sockets_kept;
}

void upgrade_resumed(Supervisor *sup) {
        const UpgradeState *s = &incoming.state;
        _cleanup_free_ char *text = NULL;
        int r;

        if (!incoming.active)
                return;
        if (incoming.failed) {
                log_error("upgrade failed: %s; bindonce %s continues", incoming.failed, BINDONCE_VERSION);
                r = asprintf(&text, "ERROR upgrade failed: %s; bindonce %s continues (pid %d)\n", incoming.failed,
                             BINDONCE_VERSION, (int) getpid());
        } else {
                log_info("upgraded in place from bindonce %s to %s (pid %d, %s): %u of %zu workers adopted",
                         s->version ? s->version : "?", BINDONCE_VERSION, (int) getpid(), self_exe,
                         live_workers(sup), s->n_workers);
                r = asprintf(&text, "OK\nupgraded to %s (pid %d)\n", BINDONCE_VERSION, (int) getpid());
        }
        /* systemd first, then the client: a script that reads the unit's state once ctl
         * returns finds READY=1 sent (systemd may not have read it yet, though). */
        if (sup->ready_sent && sup->notify)
                notify_systemd(sup, "READY=1");
        if (s->client_fd >= 0) {
                if (sup->control && r >= 0)
                        control_server_answer(sup->control, s->client_fd, text);
                else
                        (void) close(s->client_fd);
        }
        /* Answered: the previous bindonce's pidfds have served. The workers get watched from
         * the loop's next turns on: the client need not wait for 1,000 child sources. */
        keepalives_close();
        upgrade_watch_adopted(sup);
        closep(&incoming.state_fd);
        closep(&incoming.old_exe_fd);
        incoming.state_fd = incoming.old_exe_fd = -1;
        free(incoming.failed);
        state_done(&incoming.state);
        incoming.failed = NULL;
        incoming.active = false;
        supervisor_wake(sup);
}

/* ---- the old process: check, then exec ---------------------------------------------------- */

Upgrade *upgrade_free(Upgrade *u) {
        if (!u)
                return NULL;
        if (u->child && u->pid > 0) {
                /* Abandoned while it runs: not ours to wait for any longer. */
                (void) sd_event_source_send_child_signal(u->child, SIGKILL, NULL, 0);
        }
        sd_event_source_disable_unref(u->child);
        sd_event_source_disable_unref(u->timer);
        sd_event_source_disable_unref(u->exec);
        closep(&u->out_fd);
        free(u->exe);
        free(u);
        return NULL;
}

static void upgrade_fail(Supervisor *sup, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void upgrade_fail(Supervisor *sup, const char *fmt, ...) {
        Upgrade *u = sup->upgrade;
        _cleanup_free_ char *reason = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&reason, fmt, ap) < 0)
                reason = NULL;
        va_end(ap);
        log_error("upgrade refused: %s; bindonce %s continues", reason ? reason : "out of memory", BINDONCE_VERSION);
        sup->upgrade = NULL;
        if (u->waiter.done)
                u->waiter.done(u->waiter.userdata, reason ? reason : "out of memory", false);
        upgrade_free(u);
}

void upgrade_forget_waiter(Supervisor *sup, void *client) {
        if (sup->upgrade && sup->upgrade->waiter.userdata == client) {
                sup->upgrade->waiter = (ReloadWaiter) {};
                sup->upgrade->client_fd = -1;
        }
}

bool upgrade_owns_pid(const Supervisor *sup, pid_t pid) {
        return sup->upgrade && sup->upgrade->pid == pid;
}

void upgrade_cancel(Supervisor *sup, const char *reason) {
        if (sup->upgrade)
                upgrade_fail(sup, "%s", reason);
}

static int write_state(Supervisor *sup, int client_fd, unsigned format, UpgradeState *st) {
        _cleanup_free_ char *text = NULL;
        _cleanup_close_ int fd = -1;
        size_t len = 0;
        int r;

        r = upgrade_capture(sup, self_exe, self_argv, format, st);
        if (r < 0)
                return r;
        st->client_fd = client_fd;
        r = state_format(st, &text, &len);
        if (r < 0)
                return r;
        fd = memfd_create("bindonce-state", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (size_t done = 0; done < len;) {
                ssize_t k = write(fd, text + done, len - done);
                if (k < 0)
                        return -errno;
                done += (size_t) k;
        }
        return TAKE_FD(fd);
}

/* What crosses the exec: the fds the state names (the workers' pidfds among them, from
 * format 3 on), the state and the old binary, their close-on-exec cleared just before it,
 * and the environment naming them. The pidfds, kept open, cost the exec nothing (closing
 * the last reference to a pidfd watched by epoll cost it 4 us a worker), and spare the new
 * process a pidfd_open() for each before it can answer. */
typedef struct Crossing {
        int *fds;
        size_t n_fds;
        char *state_env, *old_env, *inherited_env;
        char **env;
} Crossing;

static void crossing_done(Crossing *c) {
        free(c->fds);
        free(c->state_env);
        free(c->old_env);
        free(c->inherited_env);
        free(c->env);
}

static int crossing_prepare(Crossing *c, UpgradeState *st, int state_fd, int old_fd) {
        int r = state_fds(st, 2, true, &c->fds);

        if (r < 0)
                return r;
        c->n_fds = (size_t) r;
        c->fds[c->n_fds++] = state_fd;
        c->fds[c->n_fds++] = old_fd;
        if (asprintf(&c->state_env, UPGRADE_ENV_STATE "=%d", state_fd) < 0 ||
            asprintf(&c->old_env, UPGRADE_ENV_OLD_EXE "=%d", old_fd) < 0 ||
            !(c->inherited_env = inherited_env()))
                return -ENOMEM;
        char *extra[] = { c->state_env, c->old_env, c->inherited_env, NULL };
        c->env = upgrade_env(extra);
        return c->env ? 0 : -ENOMEM;
}

/* Only returns when the exec failed, with everything as it was. */
static int upgrade_exec(Supervisor *sup, Upgrade *u) {
        _cleanup_close_ int state_fd = -1, old_fd = -1;
        Crossing c = {};
        UpgradeState st = {};
        int r;

        r = write_state(sup, u->client_fd, u->format, &st);
        if (r >= 0) {
                state_fd = r;
                /* The running binary, even if its file was replaced: the way back. */
                old_fd = open("/proc/self/exe", O_PATH | O_CLOEXEC);
                r = old_fd < 0 ? -errno : crossing_prepare(&c, &st, state_fd, old_fd);
        }
        state_done(&st);
        if (r < 0) {
                crossing_done(&c);
                return r;
        }

        log_info("upgrade: executing %s (bindonce %s), %u workers carried over", u->exe, u->version,
                 live_workers(sup));
        if (sup->notify)
                sdnotify_sendf("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=upgrading to %s",
                               (unsigned long long) now_usec(), u->version);
        worker_output_flush(sup->config.worker_setup.output);
        set_cloexec(c.fds, c.n_fds, false);
        execve(u->exe, self_argv, c.env);
        r = -errno;
        set_cloexec(c.fds, c.n_fds, true);
        crossing_done(&c);
        if (sup->notify && sup->ready_sent)
                notify_systemd(sup, "READY=1");
        return r;
}

static int on_exec(sd_event_source *s, void *userdata) {
        Supervisor *sup = userdata;
        Upgrade *u = sup->upgrade;
        int r;

        if (sup->stopping || sup->stop_request)
                upgrade_fail(sup, "bindonce is stopping");
        else if (sup->roll.active || sup->roll_failure)
                upgrade_fail(sup, "a reload started while %s was being checked; upgrade once it has ended", u->exe);
        else {
                r = upgrade_exec(sup, u);
                upgrade_fail(sup, "cannot execute %s: %s", u->exe, strerror(-r));
        }
        return 0;
}

/* "state-formats 1 2": the newest format NEW reads that we write, or 0 (its list in
 * formats, for the reason). */
static unsigned common_format(const char *out, char *formats, size_t size) {
        const char *line = strstr(out, "state-formats ");
        unsigned best = 0;

        if (!line || (line != out && line[-1] != '\n'))
                return 0;
        line += strlen("state-formats ");
        snprintf(formats, size, "%.*s", (int) strcspn(line, "\n"), line);
        for (char *state = NULL, *w = strtok_r(formats, " ", &state); w; w = strtok_r(NULL, " ", &state)) {
                unsigned long v;
                if (parse_uint(w, 0, UINT32_MAX, &v) >= 0 && v >= STATE_FORMAT_OLDEST && v <= STATE_FORMAT &&
                    v > best)
                        best = (unsigned) v;
        }
        snprintf(formats, size, "%.*s", (int) strcspn(line, "\n"), line);
        return best;
}

static void check_verdict(Supervisor *sup, Upgrade *u, const siginfo_t *si, const char *out) {
        char formats[128] = "";
        const char *v = strstr(out, "bindonce ");

        if (u->timed_out)
                return upgrade_fail(sup, "%s --upgrade-check did not answer within %llu s", u->exe,
                                    (unsigned long long) (UPGRADE_CHECK_TIMEOUT_USEC / USEC_PER_SEC));
        if (si->si_code != CLD_EXITED)
                return upgrade_fail(sup, "%s --upgrade-check was killed by signal %s", u->exe,
                                    sigabbrev_np(si->si_status) ?: "?");
        if (si->si_status != 0)
                return upgrade_fail(sup, "%s --upgrade-check exited with status %d%s", u->exe, si->si_status,
                                    si->si_status == EXIT_USAGE ? " (it refuses this command line, or knows no --upgrade-check)" : "");
        u->format = common_format(out, formats, sizeof formats);
        if (!u->format)
                return upgrade_fail(sup, "%s reads state format%s %s, this bindonce writes formats %d to %d", u->exe,
                                    strchr(formats, ' ') ? "s" : "", formats[0] ? formats : "(none)",
                                    STATE_FORMAT_OLDEST, STATE_FORMAT);
        if (v && (v == out || v[-1] == '\n'))
                snprintf(u->version, sizeof u->version, "%.*s", (int) strcspn(v + 9, "\n"), v + 9);
        /* Not from inside this callback: sd-event reaps the check child once it returns. But
         * before anything else the loop has pending (a batch of workers to watch, after an
         * upgrade just before): the client waits. */
        if (sd_event_add_defer(sup->event, &u->exec, on_exec, sup) < 0 ||
            sd_event_source_set_priority(u->exec, SD_EVENT_PRIORITY_IMPORTANT) < 0)
                upgrade_fail(sup, "out of memory");
}

static int on_check_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
        Supervisor *sup = userdata;
        Upgrade *u = sup->upgrade;
        char out[4096];
        size_t len = 0;

        u->pid = 0;
        for (;;) {
                ssize_t k = read(u->out_fd, out + len, sizeof out - 1 - len);
                if (k <= 0 || (len += (size_t) k) == sizeof out - 1)
                        break;
        }
        out[len] = '\0';
        u->timer = sd_event_source_disable_unref(u->timer);
        check_verdict(sup, u, si, out);
        return 0;
}

static int on_check_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Upgrade *u = userdata;

        u->timed_out = true;
        (void) sd_event_source_send_child_signal(u->child, SIGKILL, NULL, 0);
        return 0;
}

/* NEW --upgrade-check OPTIONS...: the same command line, so that NEW also says whether it
 * takes it. Default signal dispositions, nothing blocked, stdout to a pipe. */
static int spawn_check(Upgrade *u) {
        _cleanup_close_ int rd = -1, wr = -1;
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, all;
        size_t argc = 0;
        int p[2], r;

        while (self_argv[argc])
                argc++;
        _cleanup_free_ char **argv = calloc(argc + 2, sizeof *argv);
        if (!argv)
                return -ENOMEM;
        argv[0] = self_argv[0];
        argv[1] = (char *) "--upgrade-check";
        for (size_t i = 1; i < argc; i++)
                argv[i + 1] = self_argv[i];
        if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
                return -errno;
        rd = p[0];
        wr = p[1];
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_adddup2(&fa, wr, STDOUT_FILENO);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        r = posix_spawn(&u->pid, u->exe, &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        if (r != 0) {
                u->pid = 0;
                return -r;
        }
        u->out_fd = TAKE_FD(rd);
        return 0;
}

static int check_start(Supervisor *sup, Upgrade *u) {
        int r = spawn_check(u);

        if (r < 0)
                return r;
        r = sd_event_add_child(sup->event, &u->child, u->pid, WEXITED, on_check_exit, sup);
        if (r < 0) {
                (void) kill(u->pid, SIGKILL);
                (void) waitpid(u->pid, NULL, 0);
                u->pid = 0;
                return r;
        }
        return sd_event_add_time_relative(sup->event, &u->timer, CLOCK_MONOTONIC, UPGRADE_CHECK_TIMEOUT_USEC,
                                          10 * USEC_PER_MSEC, on_check_timeout, u);
}

int upgrade_start(Supervisor *sup, const char *exe, const ReloadWaiter *waiter, int client_fd) {
        Upgrade *u;
        int r;

        if (sup->stopping)
                return -ESHUTDOWN;
        if (sup->roll.active) {
                log_warning("upgrade refused: a reload is in progress; upgrade once it has ended");
                return -EBUSY;
        }
        if (sup->upgrade) {
                log_warning("upgrade refused: an upgrade is already in progress");
                return -EALREADY;
        }
        exe = exe ? exe : self_exe;
        u = calloc(1, sizeof *u);
        if (!u || !(u->exe = strdup(exe))) {
                free(u);
                return -ENOMEM;
        }
        u->sup = sup;
        u->out_fd = -1;
        u->client_fd = client_fd;
        if (waiter)
                u->waiter = *waiter;
        snprintf(u->version, sizeof u->version, "?");
        sup->upgrade = u;
        log_info("upgrade: checking %s", u->exe);
        if (!*u->exe)
                upgrade_fail(sup, "the path bindonce was started from is unknown; give ctl upgrade --exe PATH");
        else if ((r = check_start(sup, u)) < 0)
                upgrade_fail(sup, "cannot execute %s --upgrade-check: %s", exe, strerror(-r));
        return 0;
}
