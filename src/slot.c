/* SPDX-License-Identifier: MIT */
#include "log.h"
#include "slot.h"

#define T(a, n) { SLOT_A_##a, n }
#define X { SLOT_A_NONE, -1 }
#define D -1

/* The whole life of a slot. Rows: states; columns: events. X: cannot happen (ignored).
 * A next state of D (-1) is decided by the action: DECIDE follows the restart contract;
 * STOPPED starts again when the slot is still wanted. A named one is where the action
 * leads when all goes well; action_ends (below) says where else it may end: SPAWN may go
 * straight to running (ready at exec) or to backoff (fork failed). */
static const SlotTransition table[_SLOT_STATE_MAX][_SLOT_EVENT_MAX] = {
        /*                START                       READY                       EXIT                        TIMER                       STOP                              DRAIN                       REPLACE                          REPLACE_IN_PLACE               NEXT_PROVEN                       NEXT_EXIT                        DROP_NEXT */
        [SLOT_IDLE]      = { T(SPAWN, SLOT_STARTING),  X,                          X,                          X,                          X,                                X,                          X,                               T(SPAWN, SLOT_STARTING),       X,                                X,                               X },
        [SLOT_STARTING]  = { X,                        T(READY, SLOT_RUNNING),     T(DECIDE, D),               X,                          T(TERMINATE, SLOT_STOPPING),      T(TERMINATE, SLOT_STOPPING), X,                              T(RETIRE_SPAWN, SLOT_STARTING), X,                                X,                               X },
        [SLOT_RUNNING]   = { X,                        X,                          T(DECIDE, D),               X,                          T(TERMINATE, SLOT_STOPPING),      T(DRAIN, SLOT_DRAINING),    T(SPAWN_NEXT, SLOT_REPLACING),   T(RETIRE_SPAWN, SLOT_STARTING), X,                               X,                               X },
        [SLOT_REPLACING] = { X,                        X,                          T(PROMOTE, D),              X,                          T(TERMINATE, SLOT_STOPPING),      T(TERMINATE, SLOT_STOPPING), X,                              X,                             T(TAKE_OVER, SLOT_RUNNING),       T(NEXT_GONE, SLOT_RUNNING),      T(DROP_NEXT, SLOT_RUNNING) },
        [SLOT_BACKOFF]   = { T(SPAWN, SLOT_STARTING),  X,                          X,                          T(SPAWN, SLOT_STARTING),    T(CANCEL, SLOT_IDLE),             T(CANCEL, SLOT_IDLE),       X,                               T(SPAWN, SLOT_STARTING),       X,                                X,                               X },
        [SLOT_DRAINING]  = { T(UNDRAIN, SLOT_RUNNING), X,                          T(DECIDE, D),               X,                          T(TERMINATE, SLOT_STOPPING),      X,                          X,                               X,                             X,                                X,                               X },
        [SLOT_STOPPING]  = { X,                        X,                          T(STOPPED, D),              X,                          X,                                X,                          X,                               X,                             X,                                X,                               X },
};

#define S(x) (1u << SLOT_##x)
#define STARTED (S(STARTING) | S(RUNNING) | S(BACKOFF) | S(IDLE))

/* Where each action may leave the slot: the table's next state, or one the action decides
 * (a start that is ready at exec, fails, or comes while bindonce stops). slot_dispatch()
 * checks every transition against it; the unit tests drive each pair to each of them. */
static const unsigned action_ends[_SLOT_ACTION_MAX] = {
        [SLOT_A_SPAWN] = STARTED,                       /* running: ready at exec; backoff: cannot start; idle: stopping */
        [SLOT_A_READY] = S(RUNNING),
        [SLOT_A_DECIDE] = STARTED,                      /* the restart contract; idle: not wanted, or --restart */
        [SLOT_A_TERMINATE] = S(STOPPING),
        [SLOT_A_DRAIN] = S(DRAINING) | S(STOPPING),     /* stopping: nothing to drain */
        [SLOT_A_UNDRAIN] = S(RUNNING),
        [SLOT_A_CANCEL] = S(IDLE),
        [SLOT_A_SPAWN_NEXT] = S(REPLACING) | S(RUNNING), /* running: the replacement could not start */
        [SLOT_A_RETIRE_SPAWN] = STARTED,
        [SLOT_A_TAKE_OVER] = S(RUNNING),
        [SLOT_A_NEXT_GONE] = S(RUNNING),
        [SLOT_A_DROP_NEXT] = S(RUNNING),
        [SLOT_A_PROMOTE] = S(RUNNING) | S(STARTING),    /* starting: the replacement is not ready yet */
        [SLOT_A_STOPPED] = STARTED,                     /* idle, or started again when still wanted */
};

bool slot_transition_allows(SlotState state, SlotEvent event, SlotState end) {
        SlotTransition t = slot_transition(state, event);

        if (t.action == SLOT_A_NONE)
                return end == state;
        return (unsigned) end < _SLOT_STATE_MAX && (action_ends[t.action] & (1u << end));
}

SlotTransition slot_transition(SlotState state, SlotEvent event) {
        if ((unsigned) state >= _SLOT_STATE_MAX || (unsigned) event >= _SLOT_EVENT_MAX)
                return (SlotTransition) X;
        return table[state][event];
}

static const char *const state_names[_SLOT_STATE_MAX] = {
        [SLOT_IDLE] = "idle",
        [SLOT_STARTING] = "starting",
        [SLOT_RUNNING] = "running",
        [SLOT_REPLACING] = "replacing",
        [SLOT_BACKOFF] = "backoff",
        [SLOT_DRAINING] = "draining",
        [SLOT_STOPPING] = "stopping",
};

static const char *const event_names[_SLOT_EVENT_MAX] = {
        [SLOT_EV_START] = "start",
        [SLOT_EV_READY] = "ready",
        [SLOT_EV_EXIT] = "exit",
        [SLOT_EV_TIMER] = "timer",
        [SLOT_EV_STOP] = "stop",
        [SLOT_EV_DRAIN] = "drain",
        [SLOT_EV_REPLACE] = "replace",
        [SLOT_EV_REPLACE_IN_PLACE] = "replace-in-place",
        [SLOT_EV_NEXT_PROVEN] = "next-proven",
        [SLOT_EV_NEXT_EXIT] = "next-exit",
        [SLOT_EV_DROP_NEXT] = "drop-next",
};

static const char *const action_names[_SLOT_ACTION_MAX] = {
        [SLOT_A_NONE] = "-",
        [SLOT_A_SPAWN] = "spawn",
        [SLOT_A_READY] = "ready",
        [SLOT_A_DECIDE] = "decide",
        [SLOT_A_TERMINATE] = "terminate",
        [SLOT_A_DRAIN] = "drain",
        [SLOT_A_UNDRAIN] = "undrain",
        [SLOT_A_CANCEL] = "cancel",
        [SLOT_A_SPAWN_NEXT] = "spawn-next",
        [SLOT_A_RETIRE_SPAWN] = "retire+spawn",
        [SLOT_A_TAKE_OVER] = "take-over",
        [SLOT_A_NEXT_GONE] = "next-gone",
        [SLOT_A_DROP_NEXT] = "drop-next",
        [SLOT_A_PROMOTE] = "promote",
        [SLOT_A_STOPPED] = "stopped",
};

const char *slot_state_to_string(SlotState s) {
        return (unsigned) s < _SLOT_STATE_MAX ? state_names[s] : "unknown";
}

const char *slot_event_to_string(SlotEvent e) {
        return (unsigned) e < _SLOT_EVENT_MAX ? event_names[e] : "unknown";
}

const char *slot_action_to_string(SlotAction a) {
        return (unsigned) a < _SLOT_ACTION_MAX ? action_names[a] : "unknown";
}

void slot_table_write(FILE *f) {
        fputs("| state \\ event |", f);
        for (int e = 0; e < _SLOT_EVENT_MAX; e++)
                fprintf(f, " %s |", event_names[e]);
        fputs("\n|---|", f);
        for (int e = 0; e < _SLOT_EVENT_MAX; e++)
                fputs("---|", f);
        fputc('\n', f);
        for (int s = 0; s < _SLOT_STATE_MAX; s++) {
                fprintf(f, "| **%s** |", state_names[s]);
                for (int e = 0; e < _SLOT_EVENT_MAX; e++) {
                        SlotTransition t = table[s][e];

                        if (t.action == SLOT_A_NONE)
                                fputs(" - |", f);
                        else if (t.next < 0)
                                fprintf(f, " %s |", action_names[t.action]);
                        else
                                fprintf(f, " %s → %s |", action_names[t.action], state_names[t.next]);
                }
                fputc('\n', f);
        }
}

void slot_set_state(Slot *slot, SlotState state) {
        SlotState old = slot->state;

        if (old == SLOT_BACKOFF && state != SLOT_BACKOFF)
                slot->timer = sd_event_source_disable_unref(slot->timer);
        if (old == SLOT_DRAINING && state != SLOT_DRAINING)
                slot->drain_timer = sd_event_source_disable_unref(slot->drain_timer);
        slot->state = state;
        if (old != state)
                log_debug("slot %u: %s -> %s", slot->index, state_names[old], state_names[state]);
        if (slot->wake)
                (void) sd_event_source_set_enabled(slot->wake, SD_EVENT_ONESHOT);
}
