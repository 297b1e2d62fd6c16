/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <time.h>

#include "events.h"

/* A fixed time: the text lines start with the local time of day, "HH:MM:SS.mmm ". */
#define NOW 1765000000.25

static const char *text(const Event *ev) {
        static char buf[EVENT_LINE_MAX];
        size_t n = event_format(ev, false, NOW, buf, sizeof buf);

        assert_int_equal(n, strlen(buf));
        assert_true(n > 13 && buf[n - 1] == '\n');
        assert_int_equal(buf[12], ' ');
        assert_int_equal(buf[8], '.');
        assert_memory_equal(buf + 9, "250", 3);
        buf[n - 1] = '\0';
        return buf + 13;
}

static const char *json(const Event *ev) {
        static char buf[EVENT_LINE_MAX];
        size_t n = event_format(ev, true, NOW, buf, sizeof buf);

        assert_true(n > 0 && buf[n - 1] == '\n');
        buf[n - 1] = '\0';
        return buf;
}

static void test_text_lines(void **state) {
        static const struct {
                Event ev;
                const char *line;
        } rows[] = {
                { { .kind = EVENT_STARTED, .slot = 2, .pid = 42, .generation = 1 }, "worker 2 started, pid 42, generation 1" },
                { { .kind = EVENT_STARTED, .slot = 0, .pid = 7, .generation = 3, .n = 1 },
                  "worker 0 started, pid 7, generation 3 (reload)" },
                { { .kind = EVENT_READY, .slot = 1, .pid = 43 }, "worker 1 ready, pid 43" },
                { { .kind = EVENT_EXITED, .slot = 1, .pid = 43, .code = CLD_EXITED, .status = 3, .text = "worker" },
                  "worker 1 (pid 43) exited with status 3" },
                { { .kind = EVENT_EXITED, .slot = 1, .pid = 43, .code = CLD_KILLED, .status = SIGKILL,
                    .text = "retired worker" }, "retired worker 1 (pid 43) killed by signal KILL" },
                { { .kind = EVENT_EXITED, .slot = 0, .pid = 9, .code = CLD_DUMPED, .status = SIGSEGV, .text = "new worker" },
                  "new worker 0 (pid 9) killed by signal SEGV (core dumped)" },
                { { .kind = EVENT_BACKOFF, .slot = 3, .delay = 250000, .n = 2 },
                  "worker 3 restarting in 250 ms (2 early exits in a row)" },
                { { .kind = EVENT_ROLL, .slot = -1, .step = "start", .generation = 2, .m = 4 },
                  "reload: rolling 4 workers to generation 2" },
                { { .kind = EVENT_ROLL, .slot = 1, .pid = 50, .step = "replaced", .n = 2, .m = 4 },
                  "reload: worker 1 replaced by pid 50 (2 of 4)" },
                { { .kind = EVENT_ROLL, .slot = -1, .step = "rollback", .generation = 1, .text = "worker 1 died" },
                  "reload: worker 1 died; rolling back to generation 1" },
                { { .kind = EVENT_ROLL, .slot = -1, .step = "complete", .generation = 2, .n = 4 },
                  "reload complete: generation 2, 4 workers replaced" },
                { { .kind = EVENT_ROLL, .slot = -1, .step = "failed", .text = "worker 1 died" },
                  "reload failed: worker 1 died" },
                { { .kind = EVENT_SCALE, .slot = -1, .n = 2, .m = 8 }, "scale: 2 -> 8 workers" },
                { { .kind = EVENT_WATCHDOG, .slot = 0, .pid = 5, .text = "missed its deadline" },
                  "worker 0 (pid 5) watchdog: missed its deadline" },
                { { .kind = EVENT_STOPPING, .slot = -1 }, "bindonce stopping" },
        };

        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
                assert_string_equal(text(&rows[i].ev), rows[i].line);
}

static void test_json_lines(void **state) {
        assert_string_equal(json(&(Event) { .kind = EVENT_EXITED, .slot = 1, .pid = 43, .code = CLD_KILLED,
                                            .status = 9, .text = "worker" }),
                            "{\"time\":1765000000.250,\"event\":\"exited\",\"slot\":1,\"pid\":43,\"code\":\"killed\","
                            "\"status\":9,\"role\":\"worker\"}");
        assert_string_equal(json(&(Event) { .kind = EVENT_SCALE, .slot = -1, .n = 2, .m = 3 }),
                            "{\"time\":1765000000.250,\"event\":\"scale\",\"from\":2,\"to\":3}");
        assert_string_equal(json(&(Event) { .kind = EVENT_ROLL, .slot = -1, .step = "failed", .generation = 1,
                                            .m = 2, .text = "a \"quoted\"\n\\reason" }),
                            "{\"time\":1765000000.250,\"event\":\"reload\",\"step\":\"failed\",\"generation\":1,"
                            "\"replaced\":0,\"workers\":2,\"error\":\"a \\\"quoted\\\"\\u000a\\\\reason\"}");
}

/* A text too long for a line is cut, and the line still ends with its newline (and the
 * JSON one is then not valid: lines are 1 kB, reasons are at most 256 bytes). */
static void test_cut(void **state) {
        char reason[3000], buf[EVENT_LINE_MAX];
        size_t n;

        memset(reason, 'r', sizeof reason - 1);
        reason[sizeof reason - 1] = '\0';
        n = event_format(&(Event) { .kind = EVENT_ROLL, .slot = -1, .step = "failed", .text = reason }, false, NOW,
                         buf, sizeof buf);
        assert_int_equal(n, sizeof buf - 1);
        assert_int_equal(buf[n - 1], '\n');
        assert_int_equal(strlen(buf), n);
        n = event_format(&(Event) { .kind = EVENT_STOPPING, .slot = -1 }, false, NOW, buf, 20);
        assert_int_equal(n, 19);
        assert_int_equal(buf[18], '\n');
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_text_lines),
                cmocka_unit_test(test_json_lines),
                cmocka_unit_test(test_cut),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
