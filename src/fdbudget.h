/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

typedef struct Supervisor Supervisor;

/* bindonce's open files, against RLIMIT_NOFILE. What it must always be able to do (reap
 * and restart a worker, answer a control client) needs fds, so each consumer stops short
 * of the limit by a reserve:
 * - workers leave FDBUDGET_RESERVE_SPAWN free, not counting what control clients hold:
 *   however many workers, `ctl` still gets in;
 * - control clients leave FDBUDGET_RESERVE_CLIENT free: however many idle clients, a
 *   worker's restart (net zero: its old pidfd is gone) and a timer still fit;
 * - `ctl scale` leaves FDBUDGET_RESERVE_SCALE free, and room for a reload's surge. */
#define FDBUDGET_RESERVE_SPAWN 8
#define FDBUDGET_RESERVE_CLIENT 4
#define FDBUDGET_RESERVE_SCALE 12

/* Control clients hold fds from accept() to close(): counted apart (control.c). */
void fdbudget_client_opened(void);
void fdbudget_client_closed(void);

/* The soft RLIMIT_NOFILE (what bindonce runs with, after raising it at start). */
unsigned long fdbudget_limit(void);

/* How many fds are open (/proc/self/fd), or -errno (-EMFILE when not even the directory
 * can be opened). */
long fdbudget_in_use(void);

/* 0 when one more control client fits, else -EMFILE. */
int fdbudget_check_client(void);
/* 0 when one more worker fits, else -EMFILE. Counts the open fds only now and then, when
 * far from the limit (fdbudget.c). */
int fdbudget_check_spawn(const Supervisor *sup);

/* Whether `ctl scale n` fits the limit, with the surge of a reload; <0 with the reason,
 * naming the numbers and the fix, in why. */
int fdbudget_scale_check(const Supervisor *sup, unsigned n, char *why, size_t size);
