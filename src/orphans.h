/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

/* bindonce is a subreaper (and may be PID 1 of a pid namespace): what a worker leaves
 * behind after it escaped its process group (setsid, a daemonizing helper) becomes our
 * child. Workers have pidfd sources of their own; these functions deal with the rest. */

/* Our children, from /proc/self/task/TID/children: up to max pids into pids. Returns how
 * many there are (which may exceed max), or -errno. The file stays open between calls
 * (close-on-exec): every SIGCHLD reads it, and one pread() is cheaper than four calls. */
int children_list(pid_t *pids, size_t max);
/* Opened once at setup, so that bindonce's fd count is constant for its whole life. */
int children_list_open(void);
void children_list_close(void);

/* The children we had before any worker (noted by children_list_open(), before the
 * first spawn): never signalled, not waited for at exit. Forgotten once reaped. */
bool orphans_inherited(pid_t pid);
void orphans_inherited_forget(pid_t pid);
/* An upgrade in place: the new process's children are the workers and what escaped them,
 * so the old process's list crosses the exec (UPGRADE_ENV_INHERITED) instead. _format
 * writes "PID PID ..." (malloc'd, "" for none); _preset, before children_list_open(),
 * takes such a text in place of the noting. Returns -errno. */
int orphans_inherited_format(char **ret);
int orphans_inherited_preset(const char *text);

/* A storm of SIGCHLDs (thousands of escapes ending) must not cost a sweep of every child
 * per signal: at most one sweep per 100 ms; the SIGCHLDs in between get one more at its
 * end, so no zombie waits longer than that. sweep(userdata) does the work. */
typedef void (*OrphansSweepFn)(void *userdata);
void orphans_sweep_throttled(sd_event *e, OrphansSweepFn sweep, void *userdata);
