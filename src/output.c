/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "journal_native.h"
#include "log.h"
#include "output.h"
#include "ratelimit.h"
#include "util.h"
#include "worker.h"

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

/* A line longer than this is cut in pieces, each a line of its own. */
#define LINE_MAX_BYTES 4096
/* --log-prefix: what waits for bindonce's stdout; lines that do not fit are dropped and
 * counted. */
#define OUT_BUFFER_BYTES (256 * 1024)
/* At exit: how long the workers' last lines may wait for journald (or stdout). */
#define FINISH_USEC (5 * USEC_PER_SEC)
/* journald's queue full this long: journald is slow, and the log says so. */
#define JOURNAL_STALL_USEC USEC_PER_SEC

/* The read end of one worker's pipe, and what was read of it and not yet written out. */
typedef struct Pipe Pipe;
struct Pipe {
        WorkerOutput *output;
        sd_event_source *io;
        int fd;                         /* -1 once at its end: the buffer is all that is left */
        unsigned slot;
        pid_t pid;
        size_t len;
        char line[LINE_MAX_BYTES];
        Pipe *next;
};

typedef enum OutputMode {
        OUTPUT_JOURNAL,
        OUTPUT_PREFIX,
} OutputMode;

struct WorkerOutput {
        OutputMode mode;
        bool prefix;                    /* --log-prefix: the fallback when journald is not there */
        int attach_error;               /* output_attach() failed for good: the workers write to ours */
        sd_event *event;                /* NULL until output_attach() */
        Pipe *pending;                  /* opened, its worker not yet started */
        Pipe *pipes;
        int child_fd;                   /* the write end of the pending pipe */
        /* prefix */
        char *out;                      /* lines waiting for our stdout */
        size_t out_len;
        sd_event_source *out_io;        /* NULL: stdout cannot be polled (a file), written at once */
        mode_t out_kind;                /* S_IFIFO, S_IFSOCK, ... of stdout */
        unsigned long dropped;
        /* journal */
        const char *name;               /* SYSLOG_IDENTIFIER */
        int journal_fd;
        sd_event_source *journal_io;    /* EPOLLOUT, armed while journald's queue is full */
        sd_event_source *journal_stall; /* fires when the queue stays full: journald is slow */
        bool blocked;                   /* journald's queue is full: no pipe is read */
        bool credentials;               /* false once the kernel refused them: no CAP_SYS_ADMIN */
        uid_t uid;                      /* the workers' */
        gid_t gid;
        unsigned long lost;             /* lines journald refused (not: had no room for) */
        RateLimit slow_log, lost_log;
        /* bindonce is about to exit: the last lines go out first, in bounded time */
        WorkerOutputDrained drained;
        void *drained_userdata;
        sd_event_source *drain_deadline;
};

/* ---- --log-prefix: bindonce's stdout, never waited on ---------------------------------- */

/* One write to stdout that cannot block, once it polled writable: a pipe with a free slot
 * takes PIPE_BUF bytes whole; a socket is told not to wait; a terminal takes a small
 * piece. (A free byte count would not do for a pipe: its slots are pages, and a few
 * bytes can hold one.) A file, which cannot be polled, takes everything. */
static ssize_t out_write(const WorkerOutput *o, size_t n) {
        if (!o->out_io)
                return write(STDOUT_FILENO, o->out, n);
        if (o->out_kind == S_IFSOCK)
                return send(STDOUT_FILENO, o->out, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        return write(STDOUT_FILENO, o->out, MIN(n, o->out_kind == S_IFIFO ? (size_t) PIPE_BUF : 256));
}

/* Called only when stdout is writable (or is a file). */
static void out_flush(WorkerOutput *o) {
        ssize_t k = o->out_len ? out_write(o, o->out_len) : 0;

        if (k < 0 && errno != EAGAIN && errno != EINTR)
                o->out_len = 0;         /* a closed stdout: nowhere to write */
        else if (k > 0) {
                memmove(o->out, o->out + k, o->out_len - (size_t) k);
                o->out_len -= (size_t) k;
        }
        if (o->out_len > 0 && o->out_io)
                (void) sd_event_source_set_enabled(o->out_io, SD_EVENT_ONESHOT);
}

static void drain_check(WorkerOutput *o);

static int on_out_writable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        out_flush(userdata);
        drain_check(userdata);
        return 0;
}

/* Appends one whole line, or drops it when the buffer is full: a slow reader of our
 * stdout slows nobody, and the count says what it missed. */
static void out_line(WorkerOutput *o, const Pipe *p, const char *text, size_t len) {
        char prefix[64];
        int n = snprintf(prefix, sizeof prefix, "[slot %u pid %d] ", p->slot, (int) p->pid);

        /* Once dropping, until the reader has taken half the buffer: one episode, one pair
         * of lines, not one per line that happens to fit. */
        if (n < 0 || o->out_len + (size_t) n + len + 1 > OUT_BUFFER_BYTES ||
            (o->dropped > 0 && o->out_len > OUT_BUFFER_BYTES / 2)) {
                if (o->dropped++ == 0)
                        log_warning("the reader of bindonce's standard output is too slow: dropping lines of "
                                    "the workers' output");
                return;
        }
        if (o->dropped > 0) {
                log_warning("%lu lines of the workers' output were dropped", o->dropped);
                o->dropped = 0;
        }
        memcpy(o->out + o->out_len, prefix, (size_t) n);
        memcpy(o->out + o->out_len + n, text, len);
        o->out[o->out_len + (size_t) n + len] = '\n';
        o->out_len += (size_t) n + len + 1;
        if (!o->out_io)
                out_flush(o);
        else
                (void) sd_event_source_set_enabled(o->out_io, SD_EVENT_ONESHOT);
}

/* ---- under the journal: one entry per line, sent by bindonce ---------------------------- */

static void pipes_enable(WorkerOutput *o, int enabled) {
        for (Pipe *p = o->pipes; p; p = p->next)
                if (p->io)
                        (void) sd_event_source_set_enabled(p->io, enabled);
}

/* journald's queue is full. Nothing is dropped: no pipe is read until journald takes more,
 * so a worker that keeps writing waits on its full pipe, as it would on a journal stream of
 * its own. Supervision goes on meanwhile. */
static void journal_block(WorkerOutput *o) {
        if (o->blocked)
                return;
        o->blocked = true;
        pipes_enable(o, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(o->journal_io, SD_EVENT_ONESHOT);
        /* A full queue for a moment is a burst; for a second, journald is slow: said then. */
        if (sd_event_source_set_time_relative(o->journal_stall, JOURNAL_STALL_USEC) >= 0)
                (void) sd_event_source_set_enabled(o->journal_stall, SD_EVENT_ONESHOT);
}

static int on_journal_stall(sd_event_source *s, uint64_t usec, void *userdata) {
        WorkerOutput *o = userdata;

        (void) log_ratelimited(&o->slow_log, LOG_WARNING, 0,
                               "journald does not keep up with the workers' output: their pipes are not read "
                               "until it does, and a worker that writes on waits");
        return 0;
}

/* journald's socket is gone (journald restarted without its socket unit): a new one. */
static int journal_reconnect(WorkerOutput *o) {
        int fd = journal_connect();

        if (fd < 0)
                return fd;
        if (sd_event_source_set_io_fd(o->journal_io, fd) < 0) {
                (void) close(fd);
                return -EIO;
        }
        closep(&o->journal_fd);
        o->journal_fd = fd;
        return 0;
}

static int journal_send(WorkerOutput *o, const JournalLine *l) {
        bool credentials = o->credentials;
        int r = journal_send_line(o->journal_fd, l, credentials);

        if (r == -EPERM && credentials) {
                o->credentials = false;
                log_info("journal: bindonce may not send the workers' lines as theirs (it lacks CAP_SYS_ADMIN): "
                         "journald records bindonce's _PID for them; SYSLOG_PID names the worker");
        }
        /* -ESRCH: the worker is gone and reaped; what it wrote last goes out as bindonce's. */
        if (r < 0 && r != -EAGAIN && credentials)
                r = journal_send_line(o->journal_fd, l, false);
        if (r == -ECONNREFUSED || r == -ENOTCONN) {
                r = journal_reconnect(o);
                if (r >= 0)
                        r = journal_send_line(o->journal_fd, l, o->credentials);
        }
        return r;
}

/* One line, one entry. False when journald's queue is full: the line is to be sent again. */
static bool journal_line(WorkerOutput *o, const Pipe *p, const char *text, size_t len) {
        JournalLine l = {
                .identifier = o->name, .pid = p->pid, .uid = o->uid, .gid = o->gid,
                .slot = p->slot, .text = text, .len = len,
        };
        int r = journal_send(o, &l);

        if (r == -EAGAIN) {
                journal_block(o);
                return false;
        }
        if (r < 0) {
                o->lost++;
                (void) log_ratelimited(&o->lost_log, LOG_WARNING, r,
                                       "journald refuses the workers' output: %m; %lu lines lost so far", o->lost);
        }
        return true;
}

/* ---- the workers' pipes ----------------------------------------------------------------- */

static bool emit_line(Pipe *p, const char *text, size_t len) {
        if (p->output->mode == OUTPUT_JOURNAL)
                return journal_line(p->output, p, text, len);
        out_line(p->output, p, text, len);
        return true;
}

static Pipe *pipe_free(Pipe *p) {
        if (!p)
                return NULL;
        sd_event_source_disable_unref(p->io);
        closep(&p->fd);
        free(p);
        return NULL;
}

static void pipe_remove(WorkerOutput *o, Pipe *p) {
        for (Pipe **q = &o->pipes; *q; q = &(*q)->next)
                if (*q == p) {
                        *q = p->next;
                        break;
                }
        pipe_free(p);
        drain_check(o);
}

/* The complete lines of what was read go out; a line as long as the buffer goes out as a
 * piece, and with `all` (the pipe is at its end) so does what is left. Where journald's
 * queue is full it stops: the rest waits in the buffer, in order. */
static void pipe_lines(Pipe *p, bool all) {
        size_t start = 0;
        bool sent = true;

        for (size_t i = 0; sent && i < p->len; i++)
                if (p->line[i] == '\n') {
                        sent = emit_line(p, p->line + start, i - start);
                        if (sent)
                                start = i + 1;
                }
        if (sent && start < p->len && (all || (start == 0 && p->len == sizeof p->line)) &&
            emit_line(p, p->line + start, p->len - start))
                start = p->len;
        memmove(p->line, p->line + start, p->len - start);
        p->len -= start;
}

/* What the buffer holds goes out; false when journald had no room for all of it. A pipe at
 * its end is freed once nothing of it is left. */
static bool pipe_send(Pipe *p) {
        WorkerOutput *o = p->output;

        pipe_lines(p, p->fd < 0);
        if (o->mode == OUTPUT_JOURNAL && o->blocked)
                return false;
        if (p->fd < 0)
                pipe_remove(o, p);
        return true;
}

/* Reads a bounded share (a worker that floods does not hold the loop), until EAGAIN, the
 * pipe's end or journald's full queue. May free p. */
static void pipe_read(Pipe *p) {
        WorkerOutput *o = p->output;

        for (int round = 0; round < 16; round++) {
                ssize_t n;

                /* Room in the buffer first: it is full only with lines journald had no room for. */
                pipe_lines(p, false);
                if (o->blocked)
                        return;
                n = read(p->fd, p->line + p->len, sizeof p->line - p->len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n <= 0) {
                        /* The worker and all that inherited its output are gone. */
                        p->io = sd_event_source_disable_unref(p->io);
                        closep(&p->fd);
                        p->fd = -1;
                        (void) pipe_send(p);
                        return;
                }
                p->len += (size_t) n;
        }
        pipe_lines(p, false);
}

static int on_pipe_readable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        pipe_read(userdata);
        return 0;
}

/* journald has room again: first what waits in the buffers, pipe by pipe, then the
 * pipes are read again. */
static int on_journal_writable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        WorkerOutput *o = userdata;

        o->blocked = false;
        (void) sd_event_source_set_enabled(o->journal_stall, SD_EVENT_OFF);
        for (Pipe *p = o->pipes, *next; p; p = next) {
                next = p->next;
                if (!pipe_send(p))
                        return 0;       /* full again: journal_block() re-armed us */
        }
        pipes_enable(o, SD_EVENT_ON);
        drain_check(o);
        return 0;
}

/* ---- setting up --------------------------------------------------------------------------- */

static int prefix_setup(WorkerOutput *o) {
        struct stat st;
        int r;

        o->out = malloc(OUT_BUFFER_BYTES);
        if (!o->out)
                return -ENOMEM;
        o->out_kind = fstat(STDOUT_FILENO, &st) >= 0 ? (st.st_mode & S_IFMT) : 0;
        /* A file or /dev/null cannot be polled (EPERM), and writing to it does not wait. */
        r = sd_event_add_io(o->event, &o->out_io, STDOUT_FILENO, EPOLLOUT, on_out_writable, o);
        if (r == -EPERM)
                return 0;
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(o->out_io, SD_EVENT_OFF);
}

static int journal_setup(WorkerOutput *o, int fd) {
        int r;

        o->journal_fd = fd;
        /* Sent as the workers themselves where the kernel lets us (EPERM tells once). */
        o->credentials = true;
        r = sd_event_add_io(o->event, &o->journal_io, fd, EPOLLOUT, on_journal_writable, o);
        if (r >= 0)
                r = sd_event_source_set_enabled(o->journal_io, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_time_relative(o->event, &o->journal_stall, CLOCK_MONOTONIC, JOURNAL_STALL_USEC,
                                               100 * USEC_PER_MSEC, on_journal_stall, o);
        if (r < 0)
                return r;
        o->slow_log.interval = 60 * USEC_PER_SEC;
        o->lost_log.interval = 60 * USEC_PER_SEC;
        return sd_event_source_set_enabled(o->journal_stall, SD_EVENT_OFF);
}

int worker_output_new(WorkerOutput **ret, const char *name, bool prefix, uid_t uid, gid_t gid) {
        bool journal = log_stderr_is_journal();
        WorkerOutput *o;

        *ret = NULL;
        if (!journal && !prefix)
                return 0;
        o = calloc(1, sizeof *o);
        if (!o)
                return -ENOMEM;
        *o = (WorkerOutput) {
                .mode = journal ? OUTPUT_JOURNAL : OUTPUT_PREFIX,
                .prefix = prefix,
                .child_fd = -1,
                .journal_fd = -1,
                .name = name,
                .uid = uid == (uid_t) -1 ? getuid() : uid,
                .gid = gid == (gid_t) -1 ? getgid() : gid,
        };
        *ret = o;
        return 0;
}

/* The fds come at the first worker, not in worker_output_new(): that runs before the
 * sockets are bound, which then keep the numbers from 3 on, as systemd would pass them.
 * Returns -errno; the same error for good once it failed (said once).
 * `adopting`: pipes of workers that already run (an upgrade in place) must be read, even
 * without journald and --log-prefix: they then go out prefixed. */
static int output_attach(WorkerOutput *o, bool adopting) {
        int r, fd = -1;

        if (o->event || o->attach_error < 0)
                return o->attach_error;
        if (o->mode == OUTPUT_JOURNAL) {
                fd = journal_connect();
                if (fd < 0) {
                        bool prefixed = o->prefix || adopting;

                        log_notice("journald cannot be reached at %s (%s): the workers write to %s",
                                   JOURNAL_SOCKET, strerror(-fd),
                                   prefixed ? "bindonce's standard output, prefixed" : "bindonce's own standard output and error");
                        if (!prefixed)
                                return (o->attach_error = fd);
                        o->mode = OUTPUT_PREFIX;
                }
        }
        r = sd_event_default(&o->event);
        if (r >= 0)
                r = o->mode == OUTPUT_JOURNAL ? journal_setup(o, TAKE_FD(fd)) : prefix_setup(o);
        closep(&fd);
        if (r < 0) {
                log_warning_errno(r, "Cannot set up the workers' output: %m; they write to bindonce's own");
                o->attach_error = r;
        }
        return r;
}

WorkerOutput *worker_output_free(WorkerOutput *o) {
        if (!o)
                return NULL;
        while (o->pipes) {
                Pipe *p = o->pipes;
                o->pipes = p->next;
                pipe_free(p);
        }
        pipe_free(o->pending);
        closep(&o->child_fd);
        sd_event_source_disable_unref(o->out_io);
        free(o->out);
        sd_event_source_disable_unref(o->journal_io);
        sd_event_source_disable_unref(o->journal_stall);
        sd_event_source_disable_unref(o->drain_deadline);
        closep(&o->journal_fd);
        sd_event_unref(o->event);
        free(o);
        return NULL;
}

/* ---- a worker's start ----------------------------------------------------------------------- */

int worker_output_open(WorkerOutput *o, unsigned slot) {
        int fds[2];

        if (output_attach(o, false) < 0)
                return -1;
        /* Without a pipe the worker writes to our stdout and stderr directly: its output is
         * never lost. */
        o->pending = calloc(1, sizeof *o->pending);
        if (!o->pending || pipe2(fds, O_CLOEXEC) < 0) {
                o->pending = pipe_free(o->pending);
                log_warning("worker %u: cannot make its output pipe; it writes to bindonce's own output", slot);
                return -1;
        }
        *o->pending = (Pipe) { .output = o, .fd = fds[0], .slot = slot };
        (void) fcntl(fds[0], F_SETFL, O_NONBLOCK);
        o->child_fd = fds[1];
        return fds[1];
}

/* Reads p from now on (while journald has room); p is o's once this succeeds. */
static int pipe_watch(WorkerOutput *o, Pipe *p) {
        int r = sd_event_add_io(o->event, &p->io, p->fd, EPOLLIN, on_pipe_readable, p);

        if (r >= 0 && o->blocked)
                r = sd_event_source_set_enabled(p->io, SD_EVENT_OFF);
        if (r < 0)
                return r;
        p->next = o->pipes;
        o->pipes = p;
        return 0;
}

void worker_output_started(WorkerOutput *o, pid_t pid) {
        Pipe *p = TAKE_PTR(o->pending);

        closep(&o->child_fd);
        o->child_fd = -1;
        if (!p)
                return;
        p->pid = pid;
        if (pid < 0 || pipe_watch(o, p) < 0) {
                /* The worker's writes then fail with EPIPE: said once, here. */
                if (pid >= 0)
                        log_warning("worker %u (pid %d): cannot read its output", p->slot, (int) pid);
                pipe_free(p);
        }
}

/* ---- upgrade in place (upgrade_state.c): the pipes cross the exec ---------------------- */

void worker_output_pipes(const WorkerOutput *o, WorkerOutputPipe f, void *userdata) {
        for (const Pipe *p = o ? o->pipes : NULL; p; p = p->next)
                if (p->fd >= 0)
                        f(userdata, p->fd, p->slot, p->pid);
}

static unsigned long count_lines(const char *s, size_t len) {
        unsigned long n = 0;

        for (size_t i = 0; i < len; i++)
                n += s[i] == '\n' || i + 1 == len;
        return n;
}

/* What the buffers hold, in lines: what is lost if it cannot be written now. */
static unsigned long lines_left(const WorkerOutput *o) {
        unsigned long n = o->out ? count_lines(o->out, o->out_len) : 0;

        for (const Pipe *p = o->pipes; p; p = p->next)
                n += count_lines(p->line, p->len);
        return n;
}

void worker_output_flush(WorkerOutput *o) {
        unsigned long left;

        if (!o || !o->event)
                return;
        /* Read and not yet sent: goes out now, as whole lines. Not waited for: this is the
         * loop, and journald's queue is full only while journald stalls. */
        for (Pipe *p = o->pipes; p; p = p->next)
                pipe_lines(p, true);
        if (o->mode == OUTPUT_PREFIX) {
                out_flush(o);
                return;
        }
        left = lines_left(o);
        if (left > 0)
                log_warning("upgrade: journald has no room for %lu lines of the workers' output; they are lost", left);
}

int worker_output_adopt_pipe(WorkerOutput *o, int fd, unsigned slot, pid_t pid) {
        Pipe *p;
        int r;

        if (!o)
                return -EINVAL;
        r = output_attach(o, true);
        if (r < 0)
                return r;
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        *p = (Pipe) { .output = o, .fd = fd, .slot = slot, .pid = pid };
        r = pipe_watch(o, p);
        if (r < 0) {
                p->fd = -1;     /* still the caller's */
                pipe_free(p);
        }
        return r;
}

/* ---- at exit --------------------------------------------------------------------------------- */

static bool drained(const WorkerOutput *o) {
        return !o->pipes && !o->blocked && o->out_len == 0;
}

static void drain_done(WorkerOutput *o) {
        WorkerOutputDrained f = o->drained;

        o->drained = NULL;
        o->drain_deadline = sd_event_source_disable_unref(o->drain_deadline);
        f(o->drained_userdata);
}

/* Called wherever a pipe ends or journald (stdout) takes more. */
static void drain_check(WorkerOutput *o) {
        if (o->drained && drained(o))
                drain_done(o);
}

static int on_drain_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        drain_done(userdata);
        return 0;
}

int worker_output_drain(WorkerOutput *o, WorkerOutputDrained done, void *userdata) {
        int r;

        if (!o || !o->event || drained(o))
                return 0;
        if (o->drained)
                return 1;       /* already waiting */
        /* The workers have ended: their pipes give what they wrote last, then their end. A
         * writer still alive (escaped, and not swept yet) is not waited for beyond this. */
        r = sd_event_add_time_relative(o->event, &o->drain_deadline, CLOCK_MONOTONIC, FINISH_USEC,
                                       10 * USEC_PER_MSEC, on_drain_deadline, o);
        if (r < 0)
                return 0;       /* no timer: exit now, and the count says what was lost */
        o->drained = done;
        o->drained_userdata = userdata;
        if (o->out_len > 0 && o->out_io)
                (void) sd_event_source_set_enabled(o->out_io, SD_EVENT_ONESHOT);
        return 1;
}

void worker_output_finish(WorkerOutput *o) {
        unsigned long left;

        if (!o || !o->event)
                return;
        /* What the loop could not write out in time (worker_output_drain()) is lost: said. */
        left = lines_left(o);
        if (left > 0)
                log_warning("%s took not all of the workers' last output in time: %lu lines lost",
                            o->mode == OUTPUT_JOURNAL ? "journald" : "bindonce's standard output", left);
        if (o->dropped > 0)
                log_warning("%lu lines of the workers' output were dropped", o->dropped);
}
