/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

/* The restart contract, bindonce(1) "RESTART CONTRACT". */
#define STABLE_RUN_USEC (1 * USEC_PER_SEC)      /* a run this long resets the failure count */
#define BACKOFF_BASE_USEC (100 * USEC_PER_MSEC) /* delay after the 2nd early death in a row */
#define BACKOFF_MAX_USEC (10 * USEC_PER_SEC)
/* Early deaths from outside (SIGKILL, SIGTERM, SIGINT, SIGHUP: an operator, a chaos test)
 * restart at once, up to this many per slot and second; past that they count like any
 * early death, so that an OOM-kill loop still backs off. */
#define OUTSIDE_KILLS_PER_SEC 10

/* A fixed one-second window of outside kills. */
typedef struct KillWindow {
        usec_t start;
        unsigned count;
} KillWindow;

/* Counts one outside kill at `now`; true while the slot is within its allowance. */
bool kill_window_allow(KillWindow *w, usec_t now);

/* The delay before restarting a slot that has died early `failures` times in a row: none for
 * the first (one crash heals at once), then 100 ms doubling up to 10 s, jittered uniformly
 * into [d/2, d] by `random` so that slots failing together do not restart in lockstep. */
usec_t backoff_delay(unsigned failures, uint32_t random);

/* Did the worker end itself (exit, crash), rather than being killed from outside? Only such
 * deaths count toward giving up: a chaos test or an operator's kill -9 must never make
 * bindonce declare the application broken. */
bool death_is_self_inflicted(int code, int status);

/* systemd's Restart=on-failure: exit 0, or SIGHUP/SIGINT/SIGTERM/SIGPIPE, is clean. */
bool death_is_clean(int code, int status);
