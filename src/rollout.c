/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "log.h"
#include "sdnotify.h"
#include "supervisor-internal.h"

/* A roll a save started under --watch is told by the development loop, one line for its
 * start and one for its outcome, naming the file, the reason and what keeps serving
 * (devloop.c). The roll's own lines would say the same again: they go to debug then.
 * A `ctl reload` (no waiter of the loop's) keeps them. */
static int roll_level(const Supervisor *sup, int level) {
        for (size_t i = 0; sup->devloop && i < sup->roll.n_waiters; i++)
                if (sup->roll.waiters[i].userdata == (void *) sup->devloop)
                        return LOG_DEBUG;
        return level;
}

void roll_finish(Supervisor *sup, const char *error) {
        Roll *roll = &sup->roll;

        events_emit(sup->events, &(Event) { .kind = EVENT_ROLL, .slot = -1, .step = error ? "failed" : "complete",
                                            .generation = error ? sup->good->id : roll->target->id,
                                            .n = roll->replaced, .m = sup->target, .text = error });
        if (error)
                (void) log_full_errno(roll_level(sup, LOG_ERR), 0, "reload failed: %s", error);
        else {
                (void) log_full_errno(roll_level(sup, LOG_INFO), 0, "reload complete: %u workers replaced in %llu ms",
                                      roll->replaced, (unsigned long long) ((now_usec() - roll->started) / USEC_PER_MSEC));
                /* The new generation is what slots start by themselves from now on. */
                generation_unref(sup->good);
                sup->good = generation_ref(roll->target);
        }
        roll_end(roll, error);
        /* The end of a reload, for systemd; not while stopping, nor before the first READY=1. */
        if (sup->ready_sent && !sup->stopping)
                notify_systemd(sup, "READY=1");
        supervisor_wake(sup);
}

/* Drops the roll's replacements that did not prove themselves: those next to a worker
 * are stopped; one in the place of a stopped worker makes way for a worker of `back`
 * (NULL: it stays, no longer a candidate). */
static void roll_drop_candidates(Supervisor *sup, Generation *back) {
        for (unsigned i = 0; i < sup->n_slots; i++) {
                Slot *slot = sup->slots[i];
                Worker *w = slot->worker;

                if (slot->next)
                        slot_dispatch(sup, slot, SLOT_EV_DROP_NEXT, NULL);
                if (!w || !w->candidate || w->proven)
                        continue;
                if (back && slot_wanted(sup, slot)) {
                        Cause c = { .gen = back };
                        slot_dispatch(sup, slot, SLOT_EV_REPLACE_IN_PLACE, &c);
                } else
                        w->candidate = false;
        }
}

/* A replacement failed before it proved itself: no further old worker is retired, the
 * failed new ones go, and the slots already handed to the new generation get the last
 * good one back, by the same roll in reverse. The waiting clients hear the reason once
 * that is done. A failure while rolling back ends it there: the restart contract takes
 * over. */
void roll_fail(Supervisor *sup, const char *reason) {
        Roll *roll = &sup->roll;
        char *error;

        if (!roll->active)
                return;
        if (roll->rolling_back) {
                if (asprintf(&error, "%s; rolling back to generation %u failed too: %s",
                             roll->error ? roll->error : "?", sup->good->id, reason) < 0)
                        error = NULL;
                roll->rollback_failed = true;
                roll_finish(sup, error ? error : reason);
                free(error);
                return;
        }
        (void) log_full_errno(roll_level(sup, LOG_WARNING), 0, "reload: %s; rolling back to generation %u",
                              reason, sup->good->id);
        events_emit(sup->events, &(Event) { .kind = EVENT_ROLL, .slot = -1, .step = "rollback", .generation = sup->good->id,
                                            .n = roll->replaced, .m = sup->target, .text = reason });
        free(roll->error);
        roll->error = strdup(reason);
        roll->rolling_back = true;
        generation_unref(roll->target);
        roll->target = generation_ref(sup->good);
        roll_drop_candidates(sup, sup->good);
        supervisor_wake(sup);
}

static void roll_move(Supervisor *sup, Slot *slot, RollMove move) {
        Cause c = { .gen = sup->roll.target, .candidate = true };

        switch (move) {
        case ROLL_SURGE:
                slot_dispatch(sup, slot, SLOT_EV_REPLACE, &c);
                break;
        case ROLL_IN_PLACE:
                slot_dispatch(sup, slot, SLOT_EV_REPLACE_IN_PLACE, &c);
                break;
        case ROLL_START:
                slot_dispatch(sup, slot, SLOT_EV_START, &c);
                break;
        case ROLL_KEEP:
                break;
        }
}

/* A follow-up: takes the proven replacements, then starts as many new ones as --max-surge
 * and --max-unavailable allow, and ends the roll when nothing is left to replace. */
void roll_drive(Supervisor *sup) {
        Roll *roll = &sup->roll;
        unsigned n = sup->target;
        _cleanup_free_ RollView *views = NULL;
        _cleanup_free_ RollMove *moves = NULL;

        if (!roll->active || sup->stopping)
                return;
        for (unsigned i = 0; i < n; i++) {
                Slot *slot = sup->slots[i];

                if (slot->next && slot->next->proven)
                        slot_dispatch(sup, slot, SLOT_EV_NEXT_PROVEN, NULL);
                if (slot->worker && slot->worker->candidate && slot->worker->proven) {
                        slot->worker->candidate = false;
                        roll->replaced++;
                        events_emit(sup->events, &(Event) { .kind = EVENT_ROLL, .step = "replaced", .slot = (int) i,
                                                            .pid = slot->worker->pid, .generation = slot->worker->gen->id,
                                                            .n = roll->replaced, .m = n });
                }
        }
        views = calloc(n ? n : 1, sizeof *views);
        moves = calloc(n ? n : 1, sizeof *moves);
        if (!views || !moves) {
                roll_fail(sup, "out of memory");
                return;
        }
        for (unsigned i = 0; i < n; i++) {
                const Slot *slot = sup->slots[i];
                const Worker *w = slot->worker;

                views[i] = (RollView) {
                        .state = slot->state,
                        .current = w && w->gen == roll->target,
                        .unproven = w && w->candidate,
                        .has_next = slot->next != NULL,
                };
        }
        if (roll_plan(views, n, sup->config.max_surge, sup->config.max_unavailable, moves)) {
                roll_finish(sup, roll->error);
                return;
        }
        for (unsigned i = 0; i < n && roll->active; i++)
                roll_move(sup, sup->slots[i], moves[i]);
}

int supervisor_reload(Supervisor *sup, const ReloadWaiter *waiter) {
        Roll *roll = &sup->roll;
        GenerationTemplate t = generation_template(sup);
        Generation *gen;
        int r;

        if (sup->stopping)
                return -ESHUTDOWN;
        r = generation_new(&gen, sup->last_generation + 1, &t);
        if (r < 0)
                return r;
        if (waiter && roll_add_waiter(roll, waiter) < 0) {
                generation_unref(gen);
                return -ENOMEM;
        }
        sup->last_generation++;
        if (roll->active) {
                /* Start over: what the last request started may already be outdated. */
                log_info("reload requested during a reload: starting over");
                roll_drop_candidates(sup, NULL);
                generation_unref(roll->target);
                free(roll->error);
                roll->error = NULL;
                roll->rolling_back = false;
        } else {
                roll->active = true;
                roll->started = now_usec();
                roll->replaced = 0;
        }
        roll->target = gen;
        (void) log_full_errno(roll_level(sup, LOG_INFO), 0,
                              "reload: rolling %u workers to generation %u (max surge %u, max unavailable %u)",
                              sup->target, gen->id, sup->config.max_surge, sup->config.max_unavailable);
        events_emit(sup->events, &(Event) { .kind = EVENT_ROLL, .slot = -1, .step = "start", .generation = gen->id,
                                            .m = sup->target });
        if (sup->notify)
                sdnotify_sendf("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long) now_usec());
        supervisor_wake(sup);
        return 0;
}

