/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Where the workers' stdout and stderr go, when not simply to bindonce's own. */
typedef struct WorkerOutput WorkerOutput;

/* Under the journal (JOURNAL_STREAM names our stderr), each worker gets a journal stream of
 * its own; else with `prefix` (--log-prefix) its lines come through a pipe and are written
 * out with "[slot N pid P] " in front; else *ret is NULL: the workers inherit bindonce's
 * stdout and stderr. Returns -errno. */
int worker_output_new(WorkerOutput **ret, const char *name, bool prefix);
WorkerOutput *worker_output_free(WorkerOutput *o);

/* In the parent, before the fork: the fd the child takes as its stdout and stderr, or -1. */
int worker_output_open(WorkerOutput *o, unsigned slot);
/* In the child (vfork: async-signal-safe only): the fd to use, or -1 for bindonce's own. */
int worker_output_child(const WorkerOutput *o, int fd);
/* In the parent, after the fork (pid < 0: it failed): closes the child's end. */
void worker_output_started(WorkerOutput *o, pid_t pid);

/* Upgrade in place: each worker's pipe (--log-prefix), read end, for the state; and one
 * taken back after the exec (the fd is ours once this succeeds). Returns -errno; -EINVAL
 * without --log-prefix. */
typedef void (*WorkerOutputPipe)(void *userdata, int fd, unsigned slot, pid_t pid);
void worker_output_pipes(const WorkerOutput *o, WorkerOutputPipe f, void *userdata);
int worker_output_adopt_pipe(WorkerOutput *o, int fd, unsigned slot, pid_t pid);
/* Before the exec: what was read of a line goes out as a line, and what waits for stdout is
 * written as far as stdout takes it now (the rest is lost). */
void worker_output_flush(WorkerOutput *o);
