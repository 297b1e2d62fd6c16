/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Where the workers' stdout and stderr go, when not simply to bindonce's own: a pipe per
 * worker whose read end bindonce owns, read in the loop without ever waiting on it. */
typedef struct WorkerOutput WorkerOutput;

/* Under the journal (JOURNAL_STREAM names our stderr) each line becomes a journal entry of
 * its own, with SYSLOG_IDENTIFIER=name, SYSLOG_PID and BINDONCE_SLOT, sent as the worker
 * (uid, gid: the workers' ids, (uid_t) -1 for our own) where bindonce may; else with
 * `prefix` (--log-prefix) each line is written to our stdout with "[slot N pid P] " in
 * front; else *ret is NULL: the workers inherit bindonce's stdout and stderr. Opens no fd:
 * journald's socket and the loop's sources come with the first worker, after the sockets
 * are bound; if journald cannot be reached then, the workers write to bindonce's own
 * output (or, with `prefix`, through the prefixed pipes). Returns -errno. */
int worker_output_new(WorkerOutput **ret, const char *name, bool prefix, uid_t uid, gid_t gid);
WorkerOutput *worker_output_free(WorkerOutput *o);
/* bindonce is done, its workers have ended: what they wrote last is read to the end of
 * their pipes and written out, in the loop. Returns 0 when nothing is left (exit now), or
 * 1: done(userdata) is called once it is all out, or after 5 s at the most. */
typedef void (*WorkerOutputDrained)(void *userdata);
int worker_output_drain(WorkerOutput *o, WorkerOutputDrained done, void *userdata);
/* After the loop: says what could not be written out in time. */
void worker_output_finish(WorkerOutput *o);

/* In the parent, before the fork: the fd the child takes as its stdout and stderr, or -1
 * (then bindonce's own). */
int worker_output_open(WorkerOutput *o, unsigned slot);
/* In the parent, after the fork (pid < 0: it failed): closes the child's end. */
void worker_output_started(WorkerOutput *o, pid_t pid);

/* Upgrade in place: each worker's pipe, read end, for the state; and one taken back after
 * the exec (the fd is ours once this succeeds). Returns -errno; -EINVAL when the workers
 * write to bindonce's own output. */
typedef void (*WorkerOutputPipe)(void *userdata, int fd, unsigned slot, pid_t pid);
void worker_output_pipes(const WorkerOutput *o, WorkerOutputPipe f, void *userdata);
int worker_output_adopt_pipe(WorkerOutput *o, int fd, unsigned slot, pid_t pid);
/* Before the exec: what was read goes out as whole lines, as far as stdout or journald
 * takes it now (the rest is lost, and said). */
void worker_output_flush(WorkerOutput *o);
