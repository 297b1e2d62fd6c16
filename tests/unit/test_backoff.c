/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>

#include "backoff.h"

static void test_first_failure_is_immediate(void **state) {
        assert_int_equal(backoff_delay(0, 0), 0);
        assert_int_equal(backoff_delay(0, UINT32_MAX), 0);
        assert_int_equal(backoff_delay(1, 12345), 0);
}

static void test_doubling_and_jitter_bounds(void **state) {
        usec_t d = BACKOFF_BASE_USEC;

        for (unsigned failures = 2; failures < 12; failures++, d *= 2) {
                usec_t cap = d < BACKOFF_MAX_USEC ? d : BACKOFF_MAX_USEC;

                /* The jitter spans [cap/2, cap], both ends reachable. */
                assert_int_equal(backoff_delay(failures, 0), cap / 2);
                assert_int_equal(backoff_delay(failures, (uint32_t) (cap / 2)), cap);
                for (uint32_t r = 0; r < 5000; r += 37) {
                        usec_t v = backoff_delay(failures, r * 2654435761u);
                        assert_true(v >= cap / 2);
                        assert_true(v <= cap);
                }
        }
        assert_int_equal(backoff_delay(2, 0), 50 * USEC_PER_MSEC);
        assert_int_equal(backoff_delay(3, 0), 100 * USEC_PER_MSEC);
}

static void test_cap_without_overflow(void **state) {
        assert_int_equal(backoff_delay(8, 0), 3200 * USEC_PER_MSEC); /* 6.4 s, jittered */
        assert_int_equal(backoff_delay(9, 0), BACKOFF_MAX_USEC / 2); /* 12.8 s capped */
        assert_int_equal(backoff_delay(64, 0), BACKOFF_MAX_USEC / 2);
        assert_int_equal(backoff_delay(100000, (uint32_t) (BACKOFF_MAX_USEC / 2)), BACKOFF_MAX_USEC);
        assert_true(backoff_delay(UINT32_MAX, UINT32_MAX) <= BACKOFF_MAX_USEC);
}

static void test_death_classes(void **state) {
        assert_true(death_is_self_inflicted(CLD_EXITED, 0));
        assert_true(death_is_self_inflicted(CLD_EXITED, 1));
        assert_true(death_is_self_inflicted(CLD_DUMPED, SIGSEGV));
        assert_true(death_is_self_inflicted(CLD_KILLED, SIGABRT));
        assert_false(death_is_self_inflicted(CLD_KILLED, SIGKILL));
        assert_false(death_is_self_inflicted(CLD_KILLED, SIGTERM));
        assert_false(death_is_self_inflicted(CLD_KILLED, SIGINT));
        assert_false(death_is_self_inflicted(CLD_KILLED, SIGHUP));

        assert_true(death_is_clean(CLD_EXITED, 0));
        assert_false(death_is_clean(CLD_EXITED, 1));
        assert_true(death_is_clean(CLD_KILLED, SIGTERM));
        assert_true(death_is_clean(CLD_KILLED, SIGPIPE));
        assert_false(death_is_clean(CLD_KILLED, SIGKILL));
        assert_false(death_is_clean(CLD_DUMPED, SIGSEGV));
}

static void test_outside_kill_window(void **state) {
        KillWindow w = {};
        usec_t t = 5 * USEC_PER_SEC;

        /* Ten in a second restart at once; the eleventh counts as a failure. */
        for (int i = 0; i < OUTSIDE_KILLS_PER_SEC; i++)
                assert_true(kill_window_allow(&w, t + (usec_t) i * 1000));
        assert_false(kill_window_allow(&w, t + 20000));
        assert_false(kill_window_allow(&w, t + USEC_PER_SEC - 1));
        /* A new second, a new allowance. */
        assert_true(kill_window_allow(&w, t + USEC_PER_SEC));
        /* Time 0 is a time like any other. */
        w = (KillWindow) {};
        assert_true(kill_window_allow(&w, 0));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_first_failure_is_immediate),
                cmocka_unit_test(test_doubling_and_jitter_bounds),
                cmocka_unit_test(test_cap_without_overflow),
                cmocka_unit_test(test_death_classes),
                cmocka_unit_test(test_outside_kill_window),
        };
        return cmocka_run_group_tests_name("backoff", tests, NULL, NULL);
}
