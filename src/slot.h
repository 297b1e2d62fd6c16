/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <systemd/sd-event.h>

#include "backoff.h"
#include "restart.h"
#include "util.h"

/* A worker slot: BINDONCE_WORKER=index, kept by every worker started for it. Its life is
 * one state machine, written as one table (slot.c): state x event -> action. The
 * supervisor turns fds and timers into events and runs the actions; slot_set_state() is
 * the only place a slot's state changes. */

/* Slots at most: each worker costs bindonce one fd (its pidfd) and about 1 kB; 16384 fit the
 * common open-file limits (bindonce raises its own soft limit to the hard one). */
#define WORKERS_MAX 16384

typedef enum SlotState {
        SLOT_IDLE,              /* no worker, none to start: scaled away, ended, stopped */
        SLOT_STARTING,          /* its worker is not ready yet (--ready notify) */
        SLOT_RUNNING,           /* its worker is ready */
        SLOT_REPLACING,         /* its worker serves while a roll's replacement proves itself */
        SLOT_BACKOFF,           /* no worker: started again when the delay is over */
        SLOT_DRAINING,          /* scaled away (reuseport): serves its queue, gets nothing new */
        SLOT_STOPPING,          /* its worker was told to stop */
        _SLOT_STATE_MAX,
} SlotState;

typedef enum SlotEvent {
        SLOT_EV_START,          /* start a worker now: wanted, restart asked for, rollback */
        SLOT_EV_READY,          /* its worker is ready */
        SLOT_EV_EXIT,           /* its worker ended */
        SLOT_EV_TIMER,          /* the backoff delay is over */
        SLOT_EV_STOP,           /* stop its worker: bindonce stops, scale-down, ctl restart */
        SLOT_EV_DRAIN,          /* scaled away with its own socket: drain before stopping */
        SLOT_EV_REPLACE,        /* a roll starts a replacement next to the worker (surge) */
        SLOT_EV_REPLACE_IN_PLACE, /* a roll starts the replacement in the worker's place */
        SLOT_EV_NEXT_PROVEN,    /* the replacement is ready and stayed up --min-ready */
        SLOT_EV_NEXT_EXIT,      /* the replacement ended before it took over */
        SLOT_EV_DROP_NEXT,      /* the roll drops the replacement (failed, or started over) */
        _SLOT_EVENT_MAX,
} SlotEvent;

typedef enum SlotAction {
        SLOT_A_NONE,            /* cannot happen in this state: ignored */
        SLOT_A_SPAWN,           /* start a worker -> starting (running once ready) */
        SLOT_A_READY,           /* -> running */
        SLOT_A_DECIDE,          /* the restart contract: -> starting, backoff or idle */
        SLOT_A_TERMINATE,       /* SIGTERM (a replacement is dropped) -> stopping */
        SLOT_A_DRAIN,           /* arm the drain check -> draining */
        SLOT_A_UNDRAIN,         /* wanted again before its queue was empty -> running */
        SLOT_A_CANCEL,          /* drop the backoff -> idle */
        SLOT_A_SPAWN_NEXT,      /* start the replacement -> replacing */
        SLOT_A_RETIRE_SPAWN,    /* stop the worker, start the replacement in its place -> starting */
        SLOT_A_TAKE_OVER,       /* the replacement becomes the worker, the old one goes -> running */
        SLOT_A_NEXT_GONE,       /* forget the replacement that ended -> running */
        SLOT_A_DROP_NEXT,       /* stop the replacement -> running */
        SLOT_A_PROMOTE,         /* the worker died: the replacement takes its place at once */
        SLOT_A_STOPPED,         /* stopped as asked: -> idle, or started again when still wanted */
        _SLOT_ACTION_MAX,
} SlotAction;

typedef struct SlotTransition {
        SlotAction action;
        int next;               /* the state after the action, or -1: the action decides */
} SlotTransition;

SlotTransition slot_transition(SlotState state, SlotEvent event);
/* Whether the action of (state, event) may leave the slot in `end`: the table's next
 * state, or one of those its action decides between. An ignored event leaves it as it was. */
bool slot_transition_allows(SlotState state, SlotEvent event, SlotState end);

const char *slot_state_to_string(SlotState s);
const char *slot_event_to_string(SlotEvent e);
const char *slot_action_to_string(SlotAction a);

/* The table as Markdown, for docs/HACKING.md (a unit test checks the copy there). */
void slot_table_write(FILE *f);

typedef struct Worker Worker;

typedef struct Slot {
        struct Supervisor *sup;         /* its owner, opaque here */
        unsigned index;
        SlotState state;
        Worker *worker;                 /* the one serving (or starting) */
        Worker *next;                   /* SLOT_REPLACING: the roll's replacement */
        sd_event_source *timer;         /* SLOT_BACKOFF: the delay */
        sd_event_source *drain_timer;   /* SLOT_DRAINING: polls its queue */
        usec_t drain_started;
        sd_event_source *wake;          /* not owned: the supervisor's once-per-turn follow-ups */
        RestartCounts counts;
        KillWindow outside_kills;       /* early deaths from outside that restart at once */
        unsigned restarts;
        bool exited;                    /* last_* are set */
        int last_code, last_status;     /* siginfo of the last death */
        int *fds;                       /* --balance reuseport: this slot's sockets */
        bool fresh;                     /* wanted and idle: the follow-ups start it, a few per turn */
} Slot;

/* The one place a slot changes state: disarms what the old state armed (the backoff timer,
 * the drain check), logs the transition once (debug), and asks for the follow-ups (STATUS=,
 * steering, the roll's next step, exit when done), run once per loop turn. */
void slot_set_state(Slot *slot, SlotState state);
