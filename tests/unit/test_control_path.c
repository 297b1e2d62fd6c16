/* SPDX-License-Identifier: MIT */
/* Table-driven tests of the control socket's default path, control_default_path() (a pure
 * function of RUNTIME_DIRECTORY, XDG_RUNTIME_DIR and the effective uid): bindonce(1),
 * CONTROL SOCKET, rules 2 to 4. The rows for an unprivileged user run in a child that
 * has switched to uid 65534 (when the test runs as root, as CI does). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"

typedef struct Case {
        bool root;                      /* run as root (else as uid 65534) */
        const char *runtime, *xdg;      /* NULL: unset */
        const char *name;
        int want;
        const char *want_path, *want_dir;
} Case;

#define LONG_DIR "/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const Case cases[] = {
        /* 2: $RUNTIME_DIRECTORY, the first of several, for root and others alike */
        { true, "/run/web", NULL, "web", 0, "/run/web/web.sock", "/run/web" },
        { true, "/run/a:/run/b", "/run/user/0", "x", 0, "/run/a/x.sock", "/run/a" },
        { false, "/run/svc", "/run/user/65534", "svc", 0, "/run/svc/svc.sock", "/run/svc" },
        /* an empty RUNTIME_DIRECTORY does not count */
        { true, "", NULL, "web", 0, "/run/bindonce/web.sock", "/run/bindonce" },
        /* 3: root */
        { true, NULL, NULL, "web", 0, "/run/bindonce/web.sock", "/run/bindonce" },
        { true, NULL, "/run/user/0", "web", 0, "/run/bindonce/web.sock", "/run/bindonce" },
        /* 4: $XDG_RUNTIME_DIR/bindonce otherwise */
        { false, NULL, "/run/user/65534", "web", 0, "/run/user/65534/bindonce/web.sock", "/run/user/65534/bindonce" },
        { false, "", "/tmp/x", "a.b", 0, "/tmp/x/bindonce/a.b.sock", "/tmp/x/bindonce" },
        /* none: no default path */
        { false, NULL, NULL, "web", -ENOENT, NULL, NULL },
        { false, NULL, "", "web", -ENOENT, NULL, NULL },
        /* too long for the buffers */
        { true, LONG_DIR, NULL, "web", -ENAMETOOLONG, NULL, NULL },
};

static int check(const Case *c) {
        char path[128], dir[128];
        int r;

        if (c->runtime)
                setenv("RUNTIME_DIRECTORY", c->runtime, 1);
        else
                unsetenv("RUNTIME_DIRECTORY");
        if (c->xdg)
                setenv("XDG_RUNTIME_DIR", c->xdg, 1);
        else
                unsetenv("XDG_RUNTIME_DIR");
        r = control_default_path(c->name, path, sizeof path, dir, sizeof dir);
        if (r != c->want) {
                fprintf(stderr, "control_default_path() = %d, want %d\n", r, c->want);
                return 1;
        }
        if (r == 0 && (strcmp(path, c->want_path) != 0 || strcmp(dir, c->want_dir) != 0)) {
                fprintf(stderr, "path '%s' dir '%s', want '%s' '%s'\n", path, dir, c->want_path, c->want_dir);
                return 2;
        }
        return 0;
}

static void test_control_default_path(void **state) {
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
                const Case *c = &cases[i];
                int status;
                pid_t pid;

                if (c->root && geteuid() != 0) {
                        printf("case %zu: needs root, running as uid %d: not checked\n", i, (int) geteuid());
                        continue;
                }
                fflush(NULL);
                pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        if (!c->root && geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
                                _exit(10);
                        _exit(check(c));
                }
                assert_int_equal(waitpid(pid, &status, 0), pid);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        fail_msg("case %zu (%s, RUNTIME_DIRECTORY=%s, XDG_RUNTIME_DIR=%s): child status %d", i,
                                 c->root ? "root" : "uid 65534", c->runtime ? c->runtime : "(unset)",
                                 c->xdg ? c->xdg : "(unset)", status);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_control_default_path),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
