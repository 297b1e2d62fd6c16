/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "supervisor-internal.h"
#include "worker.h"

/* The slot's actions (pool.c), not just its table: every state x event pair the table
 * allows is dispatched through slot_dispatch() in each of the situations below, with no
 * process. The Makefile links this test with -Wl,--wrap for the calls that would touch one
 * (worker_start, worker_terminate) or the process's fd table (fdbudget_check_spawn): the
 * rest of pool.c runs as it does in bindonce, on a real sd-event loop that never runs.
 * After each dispatch the slot must be in a state the table allows, and hold what that
 * state means: a worker, a replacement, an armed timer, or none of them. */

int __wrap_worker_start(Worker **ret, struct Supervisor *sup, sd_event *event, const WorkerRules *rules,
                        Generation *gen, Slot *slot, const int *fds, sd_event_source *wake, WorkerExitHandler on_exit,
                        int *child_errno, int *stage);
void __wrap_worker_terminate(Worker *w, int sig);
int __wrap_fdbudget_check_spawn(const Supervisor *sup);

/* What the situation makes of the next start. */
static struct {
        bool fail;              /* no process (out of fds) */
        bool exec_failed;       /* a process that could not exec */
} next_start;
static pid_t fake_pid = 1 << 30;        /* never signalled: worker_terminate is a stub */

static Worker *fake_worker(Supervisor *sup, Slot *slot, Generation *gen) {
        Worker *w = calloc(1, sizeof *w);

        assert_non_null(w);
        *w = (Worker) {
                .sup = sup,
                .event = sup->event,
                .rules = &sup->rules,
                .slot = slot,
                .index = slot->index,
                .pid = fake_pid++,
                .gen = generation_ref(gen),
                .wake = sup->followup,
                .started = now_usec(),
                .held_pidfd = -1,
        };
        return w;
}

int __wrap_worker_start(Worker **ret, struct Supervisor *sup, sd_event *event, const WorkerRules *rules,
                        Generation *gen, Slot *slot, const int *fds, sd_event_source *wake, WorkerExitHandler on_exit,
                        int *child_errno, int *stage) {
        Worker *w;

        if (next_start.fail)
                return -EAGAIN;
        w = fake_worker(sup, slot, gen);
        w->exec_failed = next_start.exec_failed;
        *child_errno = next_start.exec_failed ? ENOENT : 0;
        *stage = 0;
        *ret = w;
        return 0;
}

void __wrap_worker_terminate(Worker *w, int sig) {
        w->stopping = true;
}

int __wrap_fdbudget_check_spawn(const Supervisor *sup) {
        return 0;
}

/* The situations each pair is dispatched in. */
typedef enum Situation {
        SIT_PLAIN,              /* wanted, ready at exec, the worker lived long and exits 1 */
        SIT_NOTIFY,             /* --ready notify: a start is not ready yet */
        SIT_NO_PROCESS,         /* a start gets no process */
        SIT_EXEC_FAILED,        /* a start cannot exec its command */
        SIT_STOPPING,           /* bindonce is stopping */
        SIT_UNWANTED,           /* scaled away */
        SIT_EARLY,              /* early deaths in a row: the restart contract backs off */
        SIT_CLEAN_EXIT,         /* --restart on-failure, exit 0: the slot ends */
        SIT_CANDIDATE,          /* a roll is on and the slot's workers are its candidates */
        SIT_REUSEPORT,          /* the slot has sockets of its own: it drains */
        _SIT_MAX,
} Situation;

static const char *const situation_names[_SIT_MAX] = {
        "plain", "notify", "no-process", "exec-failed", "stopping", "unwanted", "early", "clean-exit",
        "candidate", "reuseport",
};

typedef struct Fixture {
        sd_event *event;
        Supervisor sup;
        Slot *slots[1];
        Slot slot;
        Generation gen;
        int fds[1];
} Fixture;

static int on_nothing(sd_event_source *s, void *userdata) {
        return 0;
}

static int on_time_nothing(sd_event_source *s, uint64_t usec, void *userdata) {
        return 0;
}

static void fixture_init(Fixture *f, Situation sit) {
        *f = (Fixture) { .gen = { .id = 1, .n_ref = 1 }, .fds = { 3 } };
        assert_int_equal(sd_event_new(&f->event), 0);
        f->sup = (Supervisor) {
                .event = f->event,
                .config = {
                        .restart = sit == SIT_CLEAN_EXIT ? RESTART_ON_FAILURE : RESTART_ALWAYS,
                        .ready = sit == SIT_NOTIFY ? READY_NOTIFY : READY_EXEC,
                        .stop_signal = SIGTERM,
                        .stop_timeout = 5 * USEC_PER_SEC,
                },
                .rules = {
                        .ready = sit == SIT_NOTIFY ? READY_NOTIFY : READY_EXEC,
                        .stop_signal = SIGTERM,
                        .min_ready = USEC_PER_SEC,
                        .stop_timeout = 5 * USEC_PER_SEC,
                },
                .slots = f->slots,
                .n_slots = 1,
                .target = sit == SIT_UNWANTED ? 0 : 1,
                .stopping = sit == SIT_STOPPING,
                .good = &f->gen,
                .shared_fds = f->fds,
        };
        assert_int_equal(sd_event_add_defer(f->event, &f->sup.followup, on_nothing, NULL), 0);
        assert_int_equal(sd_event_source_set_enabled(f->sup.followup, SD_EVENT_OFF), 0);
        if (sit == SIT_CANDIDATE)
                f->sup.roll = (Roll) { .active = true, .target = &f->gen };
        f->slot = (Slot) { .sup = &f->sup, .index = 0, .wake = f->sup.followup };
        if (sit == SIT_REUSEPORT)
                f->slot.fds = f->fds;   /* not closed: the fixture never frees the slot */
        if (sit == SIT_EARLY)
                f->slot.counts = (RestartCounts) { .failures = 2, .self_failures = 2 };
        f->slots[0] = &f->slot;
        next_start.fail = sit == SIT_NO_PROCESS;
        next_start.exec_failed = sit == SIT_EXEC_FAILED;
}

static Worker *worker_in(Fixture *f, Situation sit, bool ready) {
        Worker *w = fake_worker(&f->sup, &f->slot, &f->gen);

        w->ready = ready;
        w->candidate = sit == SIT_CANDIDATE;
        if (sit != SIT_EARLY)
                w->started -= 10 * USEC_PER_SEC;      /* lived long: not an early death */
        return w;
}

/* Puts the slot in `state` with what that state holds. */
static void enter(Fixture *f, Situation sit, SlotState state) {
        Slot *slot = &f->slot;

        slot->state = state;
        switch (state) {
        case SLOT_IDLE:
                break;
        case SLOT_STARTING:
                slot->worker = worker_in(f, sit, false);
                break;
        case SLOT_RUNNING:
                slot->worker = worker_in(f, sit, true);
                break;
        case SLOT_REPLACING:
                slot->worker = worker_in(f, SIT_PLAIN, true);
                slot->next = worker_in(f, SIT_CANDIDATE, sit != SIT_NOTIFY);
                slot->next->candidate = true;
                break;
        case SLOT_BACKOFF:
                assert_int_equal(sd_event_add_time_relative(f->event, &slot->timer, CLOCK_MONOTONIC, USEC_PER_SEC, 0,
                                                            on_time_nothing, NULL), 0);
                break;
        case SLOT_DRAINING:
                slot->worker = worker_in(f, sit, true);
                assert_int_equal(sd_event_add_time_relative(f->event, &slot->drain_timer, CLOCK_MONOTONIC,
                                                            USEC_PER_SEC, 0, on_time_nothing, NULL), 0);
                break;
        case SLOT_STOPPING:
                slot->worker = worker_in(f, sit, true);
                slot->worker->stopping = true;
                break;
        case _SLOT_STATE_MAX:
                fail();
        }
}

/* What the pool does before it dispatches an event: an exit's siginfo, a replacement
 * that ended is freed first (on_worker_exit), a proven one is marked so. */
static void dispatch(Fixture *f, Situation sit, SlotEvent event) {
        siginfo_t si = { .si_code = CLD_EXITED, .si_status = sit == SIT_CLEAN_EXIT ? 0 : 1 };
        Cause c = { .si = &si, .candidate = sit == SIT_CANDIDATE };
        Slot *slot = &f->slot;

        switch (event) {
        case SLOT_EV_EXIT:
                c.worker = slot->worker;
                break;
        case SLOT_EV_NEXT_EXIT:
                c.worker = slot->next;
                worker_free(slot->next);
                break;
        case SLOT_EV_NEXT_PROVEN:
                slot->next->ready = slot->next->proven = true;
                break;
        case SLOT_EV_REPLACE:
        case SLOT_EV_REPLACE_IN_PLACE:
                c.gen = &f->gen;
                c.candidate = true;
                break;
        default:
                break;
        }
        slot_dispatch(&f->sup, slot, event, &c);
}

/* Whatever the state, the slot holds exactly what it means (slot.h). */
static void check_holds(const Slot *slot, const char *where) {
        SlotState s = slot->state;
        bool worker = s == SLOT_STARTING || s == SLOT_RUNNING || s == SLOT_REPLACING || s == SLOT_DRAINING ||
                      s == SLOT_STOPPING;

        if ((slot->worker != NULL) != worker || (slot->next != NULL) != (s == SLOT_REPLACING) ||
            (slot->timer != NULL) != (s == SLOT_BACKOFF) || (slot->drain_timer != NULL) != (s == SLOT_DRAINING))
                fail_msg("%s -> %s: worker %s, next %s, backoff timer %s, drain timer %s", where,
                         slot_state_to_string(s), slot->worker ? "yes" : "no", slot->next ? "yes" : "no",
                         slot->timer ? "yes" : "no", slot->drain_timer ? "yes" : "no");
        if (s == SLOT_RUNNING && !slot->worker->ready)
                fail_msg("%s -> running with a worker not ready", where);
        if (s == SLOT_STARTING && slot->worker->ready)
                fail_msg("%s -> starting with a ready worker", where);
        if (s == SLOT_STOPPING && !slot->worker->stopping)
                fail_msg("%s -> stopping, and its worker was not told to stop", where);
}

static void fixture_done(Fixture *f) {
        Slot *slot = &f->slot;

        worker_free(slot->worker);
        worker_free(slot->next);
        for (Worker *w = f->sup.retired, *n; w; w = n) {
                n = w->next_retired;
                assert_true(w->stopping);       /* a retired worker was told to stop */
                worker_free(w);
        }
        sd_event_source_disable_unref(slot->timer);
        sd_event_source_disable_unref(slot->drain_timer);
        sd_event_source_disable_unref(f->sup.followup);
        free(f->sup.roll_failure);
        assert_int_equal(f->gen.n_ref, 1);      /* every worker let go of its generation */
        sd_event_unref(f->event);
}

/* reached[state][event]: the end states seen, as a mask. */
static unsigned reached[_SLOT_STATE_MAX][_SLOT_EVENT_MAX];

static void test_every_pair_in_every_situation(void **state) {
        char where[128];

        for (int s = 0; s < _SLOT_STATE_MAX; s++)
                for (int e = 0; e < _SLOT_EVENT_MAX; e++) {
                        if (slot_transition((SlotState) s, (SlotEvent) e).action == SLOT_A_NONE)
                                continue;
                        for (int sit = 0; sit < _SIT_MAX; sit++) {
                                Fixture f;

                                snprintf(where, sizeof where, "%s x %s (%s)", slot_state_to_string((SlotState) s),
                                         slot_event_to_string((SlotEvent) e), situation_names[sit]);
                                fixture_init(&f, (Situation) sit);
                                enter(&f, (Situation) sit, (SlotState) s);
                                dispatch(&f, (Situation) sit, (SlotEvent) e);
                                if (!slot_transition_allows((SlotState) s, (SlotEvent) e, f.slot.state))
                                        fail_msg("%s ended in %s, which the table does not allow", where,
                                                 slot_state_to_string(f.slot.state));
                                check_holds(&f.slot, where);
                                reached[s][e] |= 1u << f.slot.state;
                                fixture_done(&f);
                        }
                }
}

/* The other way round: every end the table allows a pair is one its action reaches, so
 * the allowed sets say no more than the code does. */
static void test_every_allowed_end_is_reached(void **state) {
        for (int s = 0; s < _SLOT_STATE_MAX; s++)
                for (int e = 0; e < _SLOT_EVENT_MAX; e++) {
                        if (slot_transition((SlotState) s, (SlotEvent) e).action == SLOT_A_NONE)
                                continue;
                        for (int end = 0; end < _SLOT_STATE_MAX; end++)
                                if (slot_transition_allows((SlotState) s, (SlotEvent) e, (SlotState) end) &&
                                    !(reached[s][e] & (1u << end)))
                                        fail_msg("%s x %s: the table allows %s, no situation reaches it",
                                                 slot_state_to_string((SlotState) s), slot_event_to_string((SlotEvent) e),
                                                 slot_state_to_string((SlotState) end));
                }
}

/* An event the table ignores leaves the slot as it was. */
static void test_ignored_events_change_nothing(void **state) {
        for (int s = 0; s < _SLOT_STATE_MAX; s++)
                for (int e = 0; e < _SLOT_EVENT_MAX; e++) {
                        Fixture f;

                        if (slot_transition((SlotState) s, (SlotEvent) e).action != SLOT_A_NONE)
                                continue;
                        /* NEXT_PROVEN and NEXT_EXIT concern a replacement: only a replacing slot has one. */
                        if (e == SLOT_EV_NEXT_PROVEN || e == SLOT_EV_NEXT_EXIT)
                                continue;
                        fixture_init(&f, SIT_PLAIN);
                        enter(&f, SIT_PLAIN, (SlotState) s);
                        dispatch(&f, SIT_PLAIN, (SlotEvent) e);
                        assert_int_equal(f.slot.state, s);
                        check_holds(&f.slot, slot_event_to_string((SlotEvent) e));
                        assert_null(f.sup.retired);
                        fixture_done(&f);
                }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_pair_in_every_situation),
                cmocka_unit_test(test_every_allowed_end_is_reached),
                cmocka_unit_test(test_ignored_events_change_nothing),
        };

        log_set_max_level(LOG_CRIT);    /* the actions' lines, hundreds of them */
        return cmocka_run_group_tests(tests, NULL, NULL);
}
