/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <string.h>

#include "control.h"

/* One request line each, for a server with 4 slots: the request, or the start of the
 * ERROR reply. */
static const struct {
        const char *line;
        size_t len;                     /* 0: strlen(line) */
        const char *error;              /* NULL: accepted */
        ControlCommand command;
        int slot, sig;
        unsigned n;
        bool json;
} rows[] = {
        { "status", 0, NULL, CONTROL_STATUS, -1, 0, 0, false },
        { "status --json", 0, NULL, CONTROL_STATUS, -1, 0, 0, true },
        { "  status\t--json\r", 0, NULL, CONTROL_STATUS, -1, 0, 0, true },
        { "status --xml", 0, "ERROR usage: status", 0, 0, 0, 0, false },
        { "reload", 0, NULL, CONTROL_RELOAD, -1, 0, 0, false },
        { "reload now", 0, "ERROR usage: reload", 0, 0, 0, 0, false },
        { "restart all", 0, NULL, CONTROL_RESTART, -1, 0, 0, false },
        { "restart 3", 0, NULL, CONTROL_RESTART, 3, 0, 0, false },
        { "restart 4", 0, "ERROR usage: restart SLOT|all, with SLOT from 0 to 3", 0, 0, 0, 0, false },
        { "restart -0", 0, "ERROR usage: restart", 0, 0, 0, 0, false },
        { "restart", 0, "ERROR usage: restart", 0, 0, 0, 0, false },
        { "scale 16", 0, NULL, CONTROL_SCALE, -1, 0, 16, false },
        { "scale 0", 0, "ERROR usage: scale N", 0, 0, 0, 0, false },
        { "scale +3", 0, "ERROR usage: scale N", 0, 0, 0, 0, false },
        { "scale 16385", 0, "ERROR usage: scale N, with N from 1 to 16384", 0, 0, 0, 0, false },
        { "signal HUP", 0, NULL, CONTROL_SIGNAL, -1, SIGHUP, 0, false },
        { "signal SIGUSR1 2", 0, NULL, CONTROL_SIGNAL, 2, SIGUSR1, 0, false },
        { "signal 9 all", 0, NULL, CONTROL_SIGNAL, -1, 9, 0, false },
        { "signal NOPE", 0, "ERROR usage: signal", 0, 0, 0, 0, false },
        { "signal 65", 0, "ERROR usage: signal", 0, 0, 0, 0, false },
        { "stop", 0, NULL, CONTROL_STOP, -1, 0, 0, false },
        { "stop now", 0, "ERROR usage: stop", 0, 0, 0, 0, false },
        { "", 0, "ERROR empty request", 0, 0, 0, 0, false },
        { " \t ", 0, "ERROR empty request", 0, 0, 0, 0, false },
        { "status\0x", 8, "ERROR request contains a NUL byte", 0, 0, 0, 0, false },
        { "st\xffus", 0, "ERROR request is not UTF-8 text", 0, 0, 0, 0, false },
        { "a b c d e f g h i", 0, "ERROR too many words", 0, 0, 0, 0, false },
        { "frobnicate", 0, "ERROR unknown command 'frobnicate'", 0, 0, 0, 0, false },
};

static void test_rows(void **state) {
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
                ControlRequest req = { .slot = 99 };
                char err[256] = "";
                size_t len = rows[i].len ? rows[i].len : strlen(rows[i].line);
                int r = control_request_parse(rows[i].line, len, 4, &req, err, sizeof err);

                if (rows[i].error) {
                        if (r != -EINVAL || strncmp(err, rows[i].error, strlen(rows[i].error)) != 0 ||
                            err[strlen(err) - 1] != '\n')
                                fail_msg("'%s': r=%d err '%s', want '%s...'", rows[i].line, r, err, rows[i].error);
                        assert_int_equal(req.slot, 99);        /* untouched on error */
                        continue;
                }
                if (r != 0 || req.command != rows[i].command || req.slot != rows[i].slot || req.json != rows[i].json ||
                    (rows[i].command == CONTROL_SIGNAL && req.sig != rows[i].sig) ||
                    (rows[i].command == CONTROL_SCALE && req.n != rows[i].n))
                        fail_msg("'%s': r=%d command %d slot %d sig %d n %u json %d (%s)", rows[i].line, r, req.command,
                                 req.slot, req.sig, req.n, req.json, err);
        }
}

static void test_too_long(void **state) {
        static char line[CONTROL_REQUEST_MAX + 2];
        ControlRequest req;
        char err[256];

        memset(line, 'a', sizeof line - 1);
        assert_int_equal(control_request_parse(line, CONTROL_REQUEST_MAX + 1, 4, &req, err, sizeof err), -EINVAL);
        assert_string_equal(err, "ERROR request longer than 4096 bytes\n");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_rows),
                cmocka_unit_test(test_too_long),
        };
        return cmocka_run_group_tests_name("control_request", tests, NULL, NULL);
}
