/* SPDX-License-Identifier: MIT */
/* Table-driven tests of the activation environment parser, activation_adopt(): every
 * LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES form of TESTING.md's bad-input list, and the
 * kinds of fd 3.. it may find. Each row runs in a child of its own, which lays out fds
 * 3.. and the environment, then checks the result (and that LISTEN_* are gone). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "activation.h"

enum { NONE, LISTEN, DGRAM, FILE_, CONNECTED };
#define SELF "self"             /* LISTEN_PID: the child's own pid */

typedef struct Case {
        const char *pid, *fds, *names;  /* NULL: unset */
        int kinds[3];                   /* what is at fd 3, 4, 5 (NONE: closed) */
        int want;                       /* activation_adopt()'s result */
        const char *want_names[3];
} Case;

static const Case cases[] = {
        /* not for us: 0, bind the -l options */
        { NULL, NULL, NULL, { LISTEN }, 0, { NULL } },
        { NULL, "1", NULL, { LISTEN }, 0, { NULL } },
        { "1", "1", NULL, { LISTEN }, 0, { NULL } },               /* another pid */
        { SELF, "0", NULL, { LISTEN }, 0, { NULL } },
        /* adopted */
        { SELF, "1", NULL, { LISTEN }, 1, { "unknown" } },
        { SELF, "1", "web", { LISTEN }, 1, { "web" } },
        { SELF, "2", "web:dns", { LISTEN, DGRAM }, 2, { "web", "dns" } },
        { SELF, "3", NULL, { LISTEN, LISTEN, DGRAM }, 3, { "unknown", "unknown", "unknown" } },
        /* a broken environment: -EBADMSG */
        { "abc", "1", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { "-1", "1", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { "0", "1", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { "", "1", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { "99999999999999999999", "1", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { " 1", "1", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { SELF, NULL, NULL, { LISTEN }, -EBADMSG, { NULL } },
        { SELF, "-1", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { SELF, "abc", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { SELF, "3x", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { SELF, "", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { SELF, "2000000000", NULL, { LISTEN }, -EBADMSG, { NULL } },
        { SELF, "2", NULL, { LISTEN }, -EBADMSG, { NULL } },         /* fd 4 not open */
        { SELF, "1", "a:b", { LISTEN }, -EBADMSG, { NULL } },        /* more names */
        { SELF, "2", "a", { LISTEN, LISTEN }, -EBADMSG, { NULL } },  /* fewer names */
        { SELF, "1", "", { LISTEN }, -EBADMSG, { NULL } },           /* an empty name */
        { SELF, "2", "a:", { LISTEN, LISTEN }, -EBADMSG, { NULL } },
        { SELF, "1", "a\tb", { LISTEN }, -EBADMSG, { NULL } },       /* a control character */
        { SELF, "1", "a\nb", { LISTEN }, -EBADMSG, { NULL } },
        { SELF, "1", NULL, { FILE_ }, -EBADMSG, { NULL } },
        { SELF, "1", NULL, { CONNECTED }, -EBADMSG, { NULL } },
        { SELF, "2", NULL, { LISTEN, FILE_ }, -EBADMSG, { NULL } },
};

static int make(int kind) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof a;
        int fd, c;

        switch (kind) {
        case LISTEN:
                fd = socket(AF_INET, SOCK_STREAM, 0);
                if (fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof a) < 0 || listen(fd, 4) < 0)
                        return -1;
                return fd;
        case DGRAM:
                fd = socket(AF_INET, SOCK_DGRAM, 0);
                return fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof a) < 0 ? -1 : fd;
        case FILE_:
                return open("/dev/null", O_RDONLY);
        case CONNECTED:
                fd = make(LISTEN);
                if (fd < 0 || getsockname(fd, (struct sockaddr *) &a, &len) < 0)
                        return -1;
                c = socket(AF_INET, SOCK_STREAM, 0);
                return c < 0 || connect(c, (struct sockaddr *) &a, sizeof a) < 0 ? -1 : c;
        }
        return -1;
}

static void put(const char *var, const char *value) {
        char pid[32];

        if (!value) {
                unsetenv(var);
                return;
        }
        if (strcmp(value, SELF) == 0) {
                snprintf(pid, sizeof pid, "%d", (int) getpid());
                value = pid;
        }
        setenv(var, value, 1);
}

/* In the child: lay out fds and environment, adopt, check. Exit status 0 when as wanted. */
static int run_case(const Case *c) {
        Listener *l = NULL;
        int r;

        /* First out of the way (high numbers), then at 3.. with nothing else below 100. */
        for (int i = 0; i < 3; i++) {
                int fd = c->kinds[i] == NONE ? -1 : make(c->kinds[i]);
                if (c->kinds[i] != NONE && (fd < 0 || dup2(fd, 100 + i) < 0))
                        return 10;
        }
        for (int fd = 3; fd < 100; fd++)
                (void) close(fd);
        for (int i = 0; i < 3; i++)
                if (c->kinds[i] != NONE && (dup2(100 + i, 3 + i) < 0 || close(100 + i) < 0))
                        return 11;
        put("LISTEN_PID", c->pid);
        put("LISTEN_FDS", c->fds);
        put("LISTEN_FDNAMES", c->names);

        r = activation_adopt(&l);
        if (r != c->want) {
                fprintf(stderr, "activation_adopt() = %d, want %d\n", r, c->want);
                return 1;
        }
        if (getenv("LISTEN_PID") || getenv("LISTEN_FDS") || getenv("LISTEN_FDNAMES")) {
                fprintf(stderr, "LISTEN_* left in the environment\n");
                return 2;
        }
        for (int i = 0; i < r; i++) {
                if (l[i].fd != 3 + i || strcmp(l[i].name, c->want_names[i]) != 0) {
                        fprintf(stderr, "listener %d: fd %d name '%s'\n", i, l[i].fd, l[i].name);
                        return 3;
                }
                if (!(fcntl(l[i].fd, F_GETFD) & FD_CLOEXEC)) {
                        fprintf(stderr, "adopted fd %d is not close-on-exec\n", l[i].fd);
                        return 4;
                }
        }
        return 0;
}

static void test_activation_table(void **state) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
                int status;
                pid_t pid;

                fflush(NULL);
                pid = fork();
                assert_true(pid >= 0);
                if (pid == 0)
                        _exit(run_case(&cases[i]));
                assert_int_equal(waitpid(pid, &status, 0), pid);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        fail_msg("case %zu (LISTEN_PID=%s LISTEN_FDS=%s LISTEN_FDNAMES=%s): child status %d",
                                 i, cases[i].pid ? cases[i].pid : "(unset)", cases[i].fds ? cases[i].fds : "(unset)",
                                 cases[i].names ? cases[i].names : "(unset)", status);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_activation_table),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
