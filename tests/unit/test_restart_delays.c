/* SPDX-License-Identifier: MIT */
/* RESTART CONTRACT clauses 2 and 3 as the man page writes them, in literal numbers (not
 * through BACKOFF_*_USEC, so that changing a constant fails here): the delay bands after
 * each early death, the 10 s cap, and what on-failure calls a clean end. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sys/wait.h>

#include "backoff.h"

static void test_delay_bands_in_milliseconds(void **state) {
        static const struct {
                unsigned failures;
                unsigned long long lo_ms, hi_ms;        /* bindonce(1): [d/2, d] */
        } bands[] = {
                { 0, 0, 0 }, { 1, 0, 0 },
                { 2, 50, 100 }, { 3, 100, 200 }, { 4, 200, 400 }, { 5, 400, 800 },
                { 6, 800, 1600 }, { 7, 1600, 3200 }, { 8, 3200, 6400 },
                { 9, 5000, 10000 }, { 10, 5000, 10000 }, { 20, 5000, 10000 },
                { 64, 5000, 10000 }, { 1000000, 5000, 10000 },
        };
        static const uint32_t randoms[] = { 0, 1, 12345, 0x7fffffff, 0xffffffff };

        for (size_t i = 0; i < sizeof bands / sizeof *bands; i++) {
                unsigned long long lo = UINT64_MAX, hi = 0;

                for (size_t j = 0; j < sizeof randoms / sizeof *randoms; j++) {
                        unsigned long long d = backoff_delay(bands[i].failures, randoms[j]);
                        if (d < bands[i].lo_ms * 1000 || d > bands[i].hi_ms * 1000)
                                fail_msg("failures %u, random %u: %llu us not in [%llu, %llu] ms", bands[i].failures,
                                         randoms[j], d, bands[i].lo_ms, bands[i].hi_ms);
                        lo = d < lo ? d : lo;
                        hi = d > hi ? d : hi;
                }
                /* The whole band is used: the lowest random gives d/2. */
                assert_int_equal(lo, bands[i].lo_ms * 1000);
        }
}

static void test_on_failure_clean_ends(void **state) {
        static const struct {
                int code, status;
                bool clean;
        } cases[] = {
                { CLD_EXITED, 0, true },
                { CLD_EXITED, 1, false },
                { CLD_EXITED, 143, false },             /* an exit status, not a signal */
                { CLD_KILLED, SIGHUP, true },
                { CLD_KILLED, SIGINT, true },
                { CLD_KILLED, SIGTERM, true },
                { CLD_KILLED, SIGPIPE, true },
                { CLD_KILLED, SIGKILL, false },
                { CLD_KILLED, SIGUSR1, false },
                { CLD_DUMPED, SIGABRT, false },
                { CLD_DUMPED, SIGSEGV, false },
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
                if (death_is_clean(cases[i].code, cases[i].status) != cases[i].clean)
                        fail_msg("case %zu (code %d, status %d): clean %d, want %d", i, cases[i].code,
                                 cases[i].status, !cases[i].clean, cases[i].clean);
}

static void test_stable_run_is_one_second(void **state) {
        assert_int_equal(STABLE_RUN_USEC, 1000000);
        assert_int_equal(OUTSIDE_KILLS_PER_SEC, 10);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_delay_bands_in_milliseconds),
                cmocka_unit_test(test_on_failure_clean_ends),
                cmocka_unit_test(test_stable_run_is_one_second),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
