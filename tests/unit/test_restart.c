/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>

#include "exit_status.h"
#include "restart.h"

#define EARLY (100 * USEC_PER_MSEC)
#define STABLE (STABLE_RUN_USEC)

/* Clauses 1-3 and 7 of bindonce(1) RESTART CONTRACT, one row each. */
static const struct {
        const char *clause;
        RestartPolicy policy;
        Death death;
        RestartCounts before, after;
        RestartVerdict verdict;
} rows[] = {
        { "1: a stable run resets the count", RESTART_ALWAYS, { .code = CLD_EXITED, .status = 1, .lived = STABLE }, { 4, 4 }, { 0, 0 }, RESTART_NOW },
        { "1: an early exit counts", RESTART_ALWAYS, { .code = CLD_EXITED, .status = 1, .lived = EARLY }, { 0, 0 }, { 1, 1 }, RESTART_NOW },
        { "1: exec failure counts however long", RESTART_ALWAYS, { .code = CLD_EXITED, .status = 127, .lived = STABLE, .exec_failed = true }, { 0, 0 }, { 1, 1 }, RESTART_NOW },
        { "1: start timeout counts however long", RESTART_ALWAYS, { .code = CLD_KILLED, .status = SIGTERM, .lived = 60 * STABLE, .failed = true }, { 1, 1 }, { 2, 2 }, RESTART_LATER },
        { "2: the second early death waits", RESTART_ALWAYS, { .code = CLD_KILLED, .status = SIGSEGV, .lived = EARLY }, { 1, 1 }, { 2, 2 }, RESTART_LATER },
        { "3: on-failure: exit 0 ends", RESTART_ON_FAILURE, { .code = CLD_EXITED, .status = 0, .lived = STABLE }, { 0, 0 }, { 0, 0 }, RESTART_NEVER },
        { "3: on-failure: SIGTERM ends", RESTART_ON_FAILURE, { .code = CLD_KILLED, .status = SIGTERM, .lived = STABLE }, { 0, 0 }, { 0, 0 }, RESTART_NEVER },
        { "3: on-failure: exit 1 restarts", RESTART_ON_FAILURE, { .code = CLD_EXITED, .status = 1, .lived = STABLE }, { 0, 0 }, { 0, 0 }, RESTART_NOW },
        { "3: no: never", RESTART_NO, { .code = CLD_EXITED, .status = 1, .lived = STABLE }, { 0, 0 }, { 0, 0 }, RESTART_NEVER },
        { "5: an outside kill within the allowance counts for nothing", RESTART_ALWAYS, { .code = CLD_KILLED, .status = SIGKILL, .lived = EARLY, .outside_allowed = true }, { 3, 0 }, { 3, 0 }, RESTART_LATER },
        { "5: outside kills past it back off, never give up", RESTART_ALWAYS, { .code = CLD_KILLED, .status = SIGKILL, .lived = EARLY }, { 3, 0 }, { 4, 0 }, RESTART_LATER },
        { "7: ctl restart starts at once with a clean count", RESTART_NO, { .code = CLD_KILLED, .status = SIGTERM, .lived = EARLY, .requested = true }, { 5, 5 }, { 0, 0 }, RESTART_NOW },
};

static void test_contract_rows(void **state) {
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
                RestartCounts c = rows[i].before;
                RestartVerdict v = restart_decide(rows[i].policy, &rows[i].death, &c);

                if (v != rows[i].verdict || c.failures != rows[i].after.failures ||
                    c.self_failures != rows[i].after.self_failures)
                        fail_msg("clause %s: verdict %d counts %u/%u, want %d %u/%u", rows[i].clause, v, c.failures,
                                 c.self_failures, rows[i].verdict, rows[i].after.failures, rows[i].after.self_failures);
        }
}

static RestartCounts slots[3];
static const RestartCounts *get(const void *ctx, unsigned i) {
        return &slots[i];
}

static void test_give_up_needs_every_slot(void **state) {
        slots[0] = slots[1] = slots[2] = (RestartCounts) { 5, 5 };
        assert_true(give_up_reached(get, NULL, 3, 5));
        assert_false(give_up_reached(get, NULL, 3, 0));         /* 0: never */
        assert_false(give_up_reached(get, NULL, 0, 5));
        slots[1].self_failures = 4;
        assert_false(give_up_reached(get, NULL, 3, 5));
}

static void test_exit_status(void **state) {
        assert_int_equal(exit_status_from_death(CLD_EXITED, 3), 3);
        assert_int_equal(exit_status_from_death(CLD_KILLED, SIGKILL), 137);
        assert_int_equal(exit_status_from_death(CLD_DUMPED, SIGSEGV), 139);
        assert_int_equal(exit_status_from_errno(-EACCES), 77);
        assert_int_equal(exit_status_from_errno(-EPERM), 77);
        assert_int_equal(exit_status_from_errno(-EADDRINUSE), 71);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_contract_rows),
                cmocka_unit_test(test_give_up_needs_every_slot),
                cmocka_unit_test(test_exit_status),
        };
        return cmocka_run_group_tests_name("restart", tests, NULL, NULL);
}
