/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-event.h>

/* Every signal whose default action would end bindonce (or that it acts on) is blocked
 * first thing in main(), before anything can fork, and taken from the loop through
 * sd-event signal sources: none ends bindonce silently and orphans its workers. The
 * table in signals.c says what each one does; bindonce(1) and docs/SECURITY.md say it too.
 * Workers get an empty mask and default dispositions back (spawn.c). */

/* Blocks the signals of the table. Call before anything else in main(). */
void signals_block(void);

/* The signals the supervisor acts on (TERM, INT, QUIT, HUP, TTIN, TTOU, USR2; not CHLD,
 * which it adds itself) go to `handler`; the others, the fault signals a process sent
 * among them, are logged with their sender, at most once per second per signal with a
 * count, and ignored. */
int signals_attach(sd_event *e, sd_event_signal_handler_t handler, void *userdata);

/* What the table says of sig, for the log: NULL for a signal the supervisor acts on. */
const char *signals_ignored_why(int sig);
