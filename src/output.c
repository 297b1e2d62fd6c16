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
#include <sys/un.h>
#include <syslog.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "log.h"
#include "output.h"
#include "util.h"

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

/* --log-prefix: a line longer than this is cut in pieces, each a line of its own. */
#define LINE_MAX_BYTES 4096
/* What waits for bindonce's stdout; lines that do not fit are dropped and counted. */
#define OUT_BUFFER_BYTES (256 * 1024)

/* The read end of one worker's pipe. */
typedef struct Pipe Pipe;
struct Pipe {
        WorkerOutput *output;
        sd_event_source *io;
        int fd;
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
        /* journal: the stream header journald reads first (identifier, unit, priority,
         * level prefix, forward to syslog, kmsg, console) */
        char header[320];
        size_t header_len;
        struct sockaddr_un journal;
        int child_fd;                   /* prefix: the write end of the pending pipe */
        /* prefix */
        sd_event *event;
        Pipe *pending;                  /* opened, its worker not yet started */
        Pipe *pipes;
        char *out;                      /* lines waiting for our stdout */
        size_t out_len;
        sd_event_source *out_io;        /* NULL: stdout cannot be polled (a file), written at once */
        mode_t out_kind;                /* S_IFIFO, S_IFSOCK, ... of stdout */
        unsigned long dropped;
};

static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        return e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) >= 0 &&
               st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
}

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

static int on_out_writable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        out_flush(userdata);
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

/* ---- --log-prefix: the workers' pipes -------------------------------------------------------- */

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
}

/* The complete lines of what was read; a line longer than the buffer goes out in pieces. */
static void pipe_lines(Pipe *p) {
        size_t start = 0;

        for (size_t i = 0; i < p->len; i++)
                if (p->line[i] == '\n') {
                        out_line(p->output, p, p->line + start, i - start);
                        start = i + 1;
                }
        if (start == 0 && p->len == sizeof p->line) {
                out_line(p->output, p, p->line, p->len);
                start = p->len;
        }
        memmove(p->line, p->line + start, p->len - start);
        p->len -= start;
}

static int on_pipe_readable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Pipe *p = userdata;

        /* A bounded share per wakeup: a worker that floods does not hold the loop. */
        for (int round = 0; round < 16; round++) {
                ssize_t n = read(fd, p->line + p->len, sizeof p->line - p->len);

                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        return 0;
                if (n <= 0) {
                        /* The worker and all that inherited its output are gone. */
                        if (p->len > 0)
                                out_line(p->output, p, p->line, p->len);
                        pipe_remove(p->output, p);
                        return 0;
                }
                p->len += (size_t) n;
                pipe_lines(p);
        }
        return 0;
}

static int prefix_setup(WorkerOutput *o) {
        struct stat st;
        int r;

        r = sd_event_default(&o->event);
        if (r < 0)
                return r;
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

int worker_output_new(WorkerOutput **ret, const char *name, bool prefix) {
        bool journal = stderr_is_journal();
        WorkerOutput *o;
        int n, r;

        *ret = NULL;
        if (!journal && !prefix)
                return 0;
        o = calloc(1, sizeof *o);
        if (!o)
                return -ENOMEM;
        o->child_fd = -1;
        o->mode = journal ? OUTPUT_JOURNAL : OUTPUT_PREFIX;
        /* SYSLOG_IDENTIFIER=NAME; "<N>" prefixes honoured, as for a service's own stream. */
        n = snprintf(o->header, sizeof o->header, "%s\n\n%d\n1\n0\n0\n0\n", name, LOG_INFO);
        o->header_len = n > 0 && (size_t) n < sizeof o->header ? (size_t) n : 0;
        o->journal.sun_family = AF_UNIX;
        strcpy(o->journal.sun_path, "/run/systemd/journal/stdout");
        if (o->mode == OUTPUT_PREFIX) {
                r = prefix_setup(o);
                if (r < 0) {
                        worker_output_free(o);
                        return r;
                }
        }
        *ret = o;
        return 0;
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
        sd_event_unref(o->event);
        free(o);
        return NULL;
}

int worker_output_open(WorkerOutput *o, unsigned slot) {
        int fds[2];

        if (o->mode != OUTPUT_PREFIX)
                return -1;
        /* Without a pipe the worker writes to our stdout directly: its output is never lost. */
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

/* The stream is connected by the worker's own process, so journald records its _PID,
 * _COMM and _CMDLINE, not bindonce's: `journalctl -u UNIT` tells the workers apart. */
static int child_journal_stream(const WorkerOutput *o) {
        /* Non-blocking while we are in it: bindonce is suspended until this child execs, and
         * a journald that does not accept must not stall it (a full backlog: EAGAIN). The
         * worker then gets a blocking stream, as systemd gives services. */
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

        if (fd < 0)
                return -1;
        if (o->header_len == 0 ||
            connect(fd, (const struct sockaddr *) &o->journal, sizeof o->journal) < 0 ||
            shutdown(fd, SHUT_RD) < 0 ||
            write(fd, o->header, o->header_len) != (ssize_t) o->header_len ||
            fcntl(fd, F_SETFL, 0) < 0) {
                (void) close(fd);
                return -1;      /* no journald after all: bindonce's own stderr */
        }
        return fd;
}

int worker_output_child(const WorkerOutput *o, int fd) {
        if (!o)
                return fd;
        return o->mode == OUTPUT_JOURNAL ? child_journal_stream(o) : fd;
}

void worker_output_started(WorkerOutput *o, pid_t pid) {
        Pipe *p = TAKE_PTR(o->pending);

        closep(&o->child_fd);
        o->child_fd = -1;
        if (!p)
                return;
        p->pid = pid;
        if (pid < 0 || sd_event_add_io(o->event, &p->io, p->fd, EPOLLIN, on_pipe_readable, p) < 0) {
                /* The worker's writes then fail with EPIPE: said once, here. */
                if (pid >= 0)
                        log_warning("worker %u (pid %d): cannot read its output", p->slot, (int) pid);
                pipe_free(p);
                return;
        }
        p->next = o->pipes;
        o->pipes = p;
}

/* ---- upgrade in place (upgrade_state.c): the pipes cross the exec ---------------------- */

void worker_output_pipes(const WorkerOutput *o, WorkerOutputPipe f, void *userdata) {
        for (const Pipe *p = o ? o->pipes : NULL; p; p = p->next)
                f(userdata, p->fd, p->slot, p->pid);
}

void worker_output_flush(WorkerOutput *o) {
        if (!o || o->mode != OUTPUT_PREFIX)
                return;
        for (Pipe *p = o->pipes; p; p = p->next)
                if (p->len > 0) {
                        out_line(o, p, p->line, p->len);
                        p->len = 0;
                }
        out_flush(o);
}

int worker_output_adopt_pipe(WorkerOutput *o, int fd, unsigned slot, pid_t pid) {
        Pipe *p;
        int r;

        if (!o || o->mode != OUTPUT_PREFIX)
                return -EINVAL;
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        *p = (Pipe) { .output = o, .fd = fd, .slot = slot, .pid = pid };
        r = sd_event_add_io(o->event, &p->io, fd, EPOLLIN, on_pipe_readable, p);
        if (r < 0) {
                p->fd = -1;     /* still the caller's */
                pipe_free(p);
                return r;
        }
        p->next = o->pipes;
        o->pipes = p;
        return 0;
}
