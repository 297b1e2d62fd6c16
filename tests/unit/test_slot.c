/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slot.h"

/* The slot's table, written out again by hand: every state x event pair, what it must do
 * and where it must lead. A change to the table is a change to this test, on purpose. */
static const char *const expected[_SLOT_STATE_MAX][_SLOT_EVENT_MAX] = {
        /*                 start              ready            exit       timer              stop                drain               replace                 replace-in-place          next-proven          next-exit            drop-next */
        [SLOT_IDLE]      = { "spawn>starting", "-",             "-",       "-",               "-",                "-",                "-",                    "spawn>starting",         "-",                 "-",                 "-" },
        [SLOT_STARTING]  = { "-",              "ready>running", "decide",  "-",               "terminate>stopping", "terminate>stopping", "-",                "retire+spawn>starting",  "-",                 "-",                 "-" },
        [SLOT_RUNNING]   = { "-",              "-",             "decide",  "-",               "terminate>stopping", "drain>draining",   "spawn-next>replacing", "retire+spawn>starting",  "-",                 "-",                 "-" },
        [SLOT_REPLACING] = { "-",              "-",             "promote", "-",               "terminate>stopping", "terminate>stopping", "-",                "-",                      "take-over>running", "next-gone>running", "drop-next>running" },
        [SLOT_BACKOFF]   = { "spawn>starting", "-",             "-",       "spawn>starting",  "cancel>idle",      "cancel>idle",      "-",                    "spawn>starting",         "-",                 "-",                 "-" },
        [SLOT_DRAINING]  = { "undrain>running", "-",            "decide",  "-",               "terminate>stopping", "-",              "-",                    "-",                      "-",                 "-",                 "-" },
        [SLOT_STOPPING]  = { "-",              "-",             "stopped", "-",               "-",                "-",                "-",                    "-",                      "-",                 "-",                 "-" },
};

static void describe(SlotTransition t, char *buf, size_t size) {
        if (t.action == SLOT_A_NONE)
                snprintf(buf, size, "-");
        else if (t.next < 0)
                snprintf(buf, size, "%s", slot_action_to_string(t.action));
        else
                snprintf(buf, size, "%s>%s", slot_action_to_string(t.action), slot_state_to_string((SlotState) t.next));
}

static void test_every_pair(void **state) {
        char got[64];

        for (int s = 0; s < _SLOT_STATE_MAX; s++)
                for (int e = 0; e < _SLOT_EVENT_MAX; e++) {
                        describe(slot_transition((SlotState) s, (SlotEvent) e), got, sizeof got);
                        if (strcmp(got, expected[s][e]) != 0)
                                fail_msg("%s x %s: table says '%s', want '%s'", slot_state_to_string((SlotState) s),
                                         slot_event_to_string((SlotEvent) e), got, expected[s][e]);
                }
}

static void test_out_of_range_is_ignored(void **state) {
        assert_int_equal(slot_transition(_SLOT_STATE_MAX, SLOT_EV_START).action, SLOT_A_NONE);
        assert_int_equal(slot_transition(SLOT_IDLE, _SLOT_EVENT_MAX).action, SLOT_A_NONE);
        assert_string_equal(slot_state_to_string(_SLOT_STATE_MAX), "unknown");
}

/* The invariants the supervisor relies on, read off the table. */
static void test_invariants(void **state) {
        for (int s = 0; s < _SLOT_STATE_MAX; s++) {
                /* Every state but idle and stopping can be told to stop, and ends up stopping
                 * or idle: a stop never leaves a worker behind. */
                SlotTransition stop = slot_transition((SlotState) s, SLOT_EV_STOP);
                if (s != SLOT_IDLE && s != SLOT_STOPPING)
                        assert_true(stop.next == SLOT_STOPPING || stop.next == SLOT_IDLE);
                /* A state with a worker hears its exit; one without never does. */
                bool has_worker = s == SLOT_STARTING || s == SLOT_RUNNING || s == SLOT_REPLACING ||
                                  s == SLOT_DRAINING || s == SLOT_STOPPING;
                assert_int_equal(slot_transition((SlotState) s, SLOT_EV_EXIT).action != SLOT_A_NONE, has_worker);
                /* Where the table says an action leads is one of the ends it allows. */
                for (int e = 0; e < _SLOT_EVENT_MAX; e++) {
                        SlotTransition t = slot_transition((SlotState) s, (SlotEvent) e);
                        if (t.action != SLOT_A_NONE && t.next >= 0)
                                assert_true(slot_transition_allows((SlotState) s, (SlotEvent) e, (SlotState) t.next));
                        if (t.action == SLOT_A_NONE)
                                assert_true(slot_transition_allows((SlotState) s, (SlotEvent) e, (SlotState) s));
                }
                /* Only a replacing slot has a replacement to hear of. */
                for (int e = SLOT_EV_NEXT_PROVEN; e <= SLOT_EV_DROP_NEXT; e++)
                        assert_int_equal(slot_transition((SlotState) s, (SlotEvent) e).action != SLOT_A_NONE,
                                         s == SLOT_REPLACING);
        }
}

static int followups;
static int on_defer(sd_event_source *s, void *userdata) {
        followups++;
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        fail_msg("a disarmed timer fired");
        return 0;
}

/* slot_set_state() disarms what the old state armed, and asks for the follow-ups once per
 * loop turn however many transitions came. */
static void test_set_state(void **state) {
        sd_event *e = NULL;
        Slot slot = { .index = 3, .state = SLOT_BACKOFF };

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(sd_event_add_defer(e, &slot.wake, on_defer, NULL), 0);
        assert_int_equal(sd_event_source_set_enabled(slot.wake, SD_EVENT_OFF), 0);
        assert_int_equal(sd_event_add_time_relative(e, &slot.timer, CLOCK_MONOTONIC, 1000, 0, on_timer, NULL), 0);

        slot_set_state(&slot, SLOT_STARTING);
        assert_null(slot.timer);
        slot_set_state(&slot, SLOT_RUNNING);
        assert_int_equal(sd_event_add_time_relative(e, &slot.drain_timer, CLOCK_MONOTONIC, 1000, 0, on_timer, NULL), 0);
        slot_set_state(&slot, SLOT_DRAINING);
        assert_non_null(slot.drain_timer);
        slot_set_state(&slot, SLOT_STOPPING);
        assert_null(slot.drain_timer);
        assert_int_equal(slot.state, SLOT_STOPPING);

        assert_true(sd_event_run(e, 0) >= 0);
        assert_int_equal(followups, 1);
        /* Nothing more until the next change. */
        assert_true(sd_event_run(e, 0) >= 0);
        assert_int_equal(followups, 1);
        slot_set_state(&slot, SLOT_IDLE);
        assert_true(sd_event_run(e, 0) >= 0);
        assert_int_equal(followups, 2);

        sd_event_source_disable_unref(slot.wake);
        sd_event_unref(e);
}

static char *read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t size = 0;

        if (!f)
                return NULL;
        if (getdelim(&buf, &size, '\0', f) < 0) {
                free(buf);
                buf = NULL;
        }
        fclose(f);
        return buf;
}

/* docs/HACKING.md shows the table between two markers: it must be the table of the code. */
static void test_hacking_md_has_this_table(void **state) {
        char *doc = read_file("docs/HACKING.md"), *table = NULL, *begin, *end;
        size_t size = 0;
        FILE *f = open_memstream(&table, &size);

        assert_non_null(doc);
        assert_non_null(f);
        slot_table_write(f);
        fclose(f);
        begin = strstr(doc, "<!-- slot-table:begin -->\n");
        end = strstr(doc, "<!-- slot-table:end -->");
        assert_non_null(begin);
        assert_non_null(end);
        begin += strlen("<!-- slot-table:begin -->\n");
        if ((size_t) (end - begin) != strlen(table) || memcmp(begin, table, strlen(table)) != 0)
                fail_msg("docs/HACKING.md's state table differs from the code's; paste this between the markers:\n%s", table);
        free(table);
        free(doc);
}

/* The man page names the states `ctl status` shows. */
static void test_man_page_names_the_states(void **state) {
        char *man = read_file("docs/bindonce.1");

        assert_non_null(man);
        for (int s = 0; s < _SLOT_STATE_MAX; s++) {
                char line[64];

                snprintf(line, sizeof line, "\n.B %s\n", slot_state_to_string((SlotState) s));
                if (!strstr(man, line))
                        snprintf(line, sizeof line, "\n.BR %s ", slot_state_to_string((SlotState) s));
                if (!strstr(man, line))
                        fail_msg("docs/bindonce.1 does not name the state '%s'", slot_state_to_string((SlotState) s));
        }
        free(man);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_pair),
                cmocka_unit_test(test_out_of_range_is_ignored),
                cmocka_unit_test(test_invariants),
                cmocka_unit_test(test_set_state),
                cmocka_unit_test(test_hacking_md_has_this_table),
                cmocka_unit_test(test_man_page_names_the_states),
        };
        return cmocka_run_group_tests_name("slot", tests, NULL, NULL);
}
