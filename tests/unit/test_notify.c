/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "notify.h"

/* One datagram each: what notify_parse() must make of it. */
static const struct {
        const char *name;
        const char *msg;
        size_t len;                     /* 0: strlen(msg) */
        bool ready, stopping, ping, trigger, has_status;
        const char *status;
} rows[] = {
        { "ready", "READY=1", 0, true, false, false, false, false, NULL },
        { "ready and status", "READY=1\nSTATUS=serving", 0, true, false, false, false, true, "serving" },
        { "ready=0 is not ready", "READY=0", 0, false, false, false, false, false, NULL },
        { "ready=11 is not ready", "READY=11", 0, false, false, false, false, false, NULL },
        { "the last of a kind wins", "STATUS=a\nSTATUS=b", 0, false, false, false, false, true, "b" },
        { "trailing newline", "WATCHDOG=1\n", 0, false, false, true, false, false, NULL },
        { "trigger", "WATCHDOG=trigger", 0, false, false, false, true, false, NULL },
        { "stopping", "STOPPING=1", 0, false, true, false, false, false, NULL },
        { "unknown fields ignored", "MAINPID=4\nERRNO=2\nFDSTORE=1", 0, false, false, false, false, false, NULL },
        { "empty", "", 0, false, false, false, false, false, NULL },
        { "a key without =", "READY", 0, false, false, false, false, false, NULL },
        { "empty status", "STATUS=", 0, false, false, false, false, true, "" },
        { "not UTF-8 status ignored", "STATUS=\xff\xfe", 0, false, false, false, false, false, NULL },
        { "NUL inside a line ends nothing", "STATUS=a\0b\nREADY=1", 18, true, false, false, false, true, "a" },
};

static void test_rows(void **state) {
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
                NotifyMessage m;
                size_t len = rows[i].len ? rows[i].len : strlen(rows[i].msg);

                notify_parse(rows[i].msg, len, &m);
                if (m.ready != rows[i].ready || m.stopping != rows[i].stopping || m.watchdog_ping != rows[i].ping ||
                    m.watchdog_trigger != rows[i].trigger || m.has_status != rows[i].has_status ||
                    (rows[i].status && strcmp(m.status, rows[i].status) != 0))
                        fail_msg("%s: ready %d stopping %d ping %d trigger %d status %d '%s'", rows[i].name, m.ready,
                                 m.stopping, m.watchdog_ping, m.watchdog_trigger, m.has_status, m.status);
        }
}

/* A long STATUS= is cut at a character boundary, never inside a UTF-8 sequence. */
static void test_long_status_cut_at_a_character(void **state) {
        char msg[7 + 600 + 1] = "STATUS=";
        NotifyMessage m;

        for (size_t i = 7; i + 2 <= 7 + 600; i += 2)
                memcpy(msg + i, "\xc3\xa9", 2);         /* é */
        notify_parse(msg, 7 + 600, &m);
        assert_true(m.has_status);
        assert_true(strlen(m.status) < sizeof m.status);
        assert_int_equal(strlen(m.status) % 2, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_rows),
                cmocka_unit_test(test_long_status_cut_at_a_character),
        };
        return cmocka_run_group_tests_name("notify", tests, NULL, NULL);
}
