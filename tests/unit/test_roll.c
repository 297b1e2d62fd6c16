/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "roll.h"

#define OLD { SLOT_RUNNING, false, false, false }
#define NEW { SLOT_RUNNING, true, false, false }
#define PROVING_NEXT { SLOT_REPLACING, false, false, true }
#define PROVING_IN_PLACE { SLOT_RUNNING, true, true, false }
#define STARTING_OLD { SLOT_STARTING, false, false, false }
#define BACKOFF { SLOT_BACKOFF, false, false, false }

static void test_surge_first(void **state) {
        RollView v[4] = { OLD, OLD, OLD, OLD };
        RollMove m[4];

        assert_false(roll_plan(v, 4, 1, 0, m));
        assert_int_equal(m[0], ROLL_SURGE);
        assert_int_equal(m[1], ROLL_KEEP);
        /* Two of surge, one unavailable: three at a time. */
        assert_false(roll_plan(v, 4, 2, 1, m));
        assert_int_equal(m[0], ROLL_SURGE);
        assert_int_equal(m[1], ROLL_SURGE);
        assert_int_equal(m[2], ROLL_IN_PLACE);
        assert_int_equal(m[3], ROLL_KEEP);
}

static void test_limits_count_what_proves_itself(void **state) {
        RollView v[4] = { PROVING_NEXT, PROVING_IN_PLACE, OLD, OLD };
        RollMove m[4];

        assert_false(roll_plan(v, 4, 1, 1, m));
        assert_int_equal(m[2], ROLL_KEEP);
        assert_int_equal(m[3], ROLL_KEEP);
        assert_false(roll_plan(v, 4, 2, 1, m));
        assert_int_equal(m[2], ROLL_SURGE);
        assert_int_equal(m[3], ROLL_KEEP);
}

static void test_done_only_when_all_proven(void **state) {
        RollView done[3] = { NEW, NEW, NEW }, proving[3] = { NEW, NEW, PROVING_IN_PLACE };
        RollMove m[3];

        assert_true(roll_plan(done, 3, 1, 0, m));
        assert_false(roll_plan(proving, 3, 1, 0, m));
        assert_int_equal(m[0], ROLL_KEEP);
}

static void test_backoff_and_starting_slots(void **state) {
        RollView v[3] = { BACKOFF, STARTING_OLD, NEW };
        RollMove m[3];

        /* A slot waiting out a backoff serves nothing: replaced at once, no allowance spent.
         * One starting a worker of the old generation is waited for. */
        assert_false(roll_plan(v, 3, 0, 1, m));
        assert_int_equal(m[0], ROLL_START);
        assert_int_equal(m[1], ROLL_KEEP);
        /* Idle slots (ended under --restart no) are not the roll's. */
        RollView idle[2] = { { SLOT_IDLE, false, false, false }, NEW };
        assert_true(roll_plan(idle, 2, 1, 0, m));
}

static int told;
static const char *last;
static bool last_restarting;
static void done(void *userdata, const char *error, bool restarting) {
        told++;
        last = error;
        last_restarting = restarting;
}

static void test_waiters(void **state) {
        Roll roll = { .active = true };
        ReloadWaiter a = { done, &a }, b = { done, &b };

        assert_int_equal(roll_add_waiter(&roll, &a), 0);
        assert_int_equal(roll_add_waiter(&roll, &b), 0);
        roll_forget_waiter(&roll, &a);
        roll_end(&roll, "worker 1 (pid 2) exited with status 3");
        assert_int_equal(told, 1);
        assert_string_equal(last, "worker 1 (pid 2) exited with status 3");
        assert_false(last_restarting);
        assert_false(roll.active);
        assert_int_equal(roll.n_waiters, 0);
        /* The roll back failed too: the waiters hear that the previous version restarts. */
        roll = (Roll) { .active = true, .rolling_back = true, .rollback_failed = true };
        assert_int_equal(roll_add_waiter(&roll, &b), 0);
        roll_end(&roll, "worker 1 (pid 2) exited with status 3; rolling back to generation 0 failed too: ...");
        assert_int_equal(told, 2);
        assert_true(last_restarting);
        assert_false(roll.rollback_failed);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_surge_first),
                cmocka_unit_test(test_limits_count_what_proves_itself),
                cmocka_unit_test(test_done_only_when_all_proven),
                cmocka_unit_test(test_backoff_and_starting_slots),
                cmocka_unit_test(test_waiters),
        };
        return cmocka_run_group_tests_name("roll", tests, NULL, NULL);
}
