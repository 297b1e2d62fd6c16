/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "escape.h"
#include "log.h"
#include "util.h"

static bool log_to_journal;
static bool log_to_terminal;    /* a person reads it as it comes: the short prefix */
static pid_t log_pid;
static int log_max_level = LOG_INFO;

/* The log never blocks the loop (bindonce(1) LOGGING): a reader that stops reading (a
 * paused `| less`, a hung log shipper) must not freeze supervision. Lines that cannot be
 * written at once wait in a bounded buffer, written when the reader comes back; beyond
 * it they are dropped and counted, and the count is logged once there is room again.
 *
 * How a write is kept from blocking depends on what stderr is. O_NONBLOCK on fd 2 itself
 * would land on the open file description we share with the workers and whoever started
 * us (a terminal, the shell's pipe), so it is never set there:
 * - a pipe, FIFO or terminal: /proc/self/fd/2 opened again, O_NONBLOCK. For these, open()
 *   makes a new open file description of the same pipe or device: its O_NONBLOCK is ours
 *   alone (tests/integration/test_faults.py checks fd 2's flags);
 * - a socket (the journal's stream): send(MSG_DONTWAIT), a per-call flag;
 * - a regular file, or when the reopen fails: plain write(), which does not wait on a
 *   reader. */
#define LOG_BUFFER_MAX (64 * 1024)

typedef enum LogSink {
        LOG_SINK_PLAIN,         /* write(2) to fd 2 */
        LOG_SINK_NONBLOCK,      /* write() to log_fd, O_NONBLOCK of its own */
        LOG_SINK_SOCKET,        /* send(MSG_DONTWAIT) to log_fd, a dup of fd 2 */
} LogSink;

static LogSink log_sink = LOG_SINK_PLAIN;
static int log_fd = STDERR_FILENO;
static char log_buffer[LOG_BUFFER_MAX];
static size_t log_buffered;             /* bytes waiting, from the start of log_buffer */
static unsigned long log_dropped;       /* lines dropped since the last "dropped" line */
static sd_event_source *log_io;         /* EPOLLOUT on log_fd while lines wait */

/* The sink is opened before anything else, but must not take fd 3: that is where the
 * first socket goes, and where operators and tests look for it. Up high when the limit
 * allows. */
#define LOG_FD_MIN 256

static int log_fd_high(int fd) {
        int high = fcntl(fd, F_DUPFD_CLOEXEC, LOG_FD_MIN);

        if (high < 0)
                return fd;
        (void) close(fd);
        return high;
}

static void log_open_sink(void) {
        struct stat st;
        int fd;

        if (fstat(STDERR_FILENO, &st) < 0)
                return;
        if (S_ISSOCK(st.st_mode)) {
                fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, LOG_FD_MIN);
                if (fd < 0)
                        fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
                if (fd >= 0) {
                        log_fd = fd;
                        log_sink = LOG_SINK_SOCKET;
                }
        } else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
                fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
                if (fd >= 0)
                        fd = log_fd_high(fd);
                if (fd >= 0) {
                        log_fd = fd;
                        log_sink = LOG_SINK_NONBLOCK;
                }
        }
}

/* One attempt; never waits. Returns what was written, or -errno. */
static ssize_t log_sink_write(const char *p, size_t n) {
        ssize_t k;

        do
                k = log_sink == LOG_SINK_SOCKET ? send(log_fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL)
                                                : write(log_fd, p, n);
        while (k < 0 && errno == EINTR);
        return k < 0 ? -errno : k;
}

/* Writes what waits, whole lines at a time of at most PIPE_BUF bytes where it can, so
 * that our lines stay whole among the workers' on a shared pipe. Returns true when the
 * buffer is empty. */
static bool log_flush_some(void) {
        while (log_buffered > 0) {
                size_t n = log_buffered < PIPE_BUF ? log_buffered : PIPE_BUF;
                const char *nl = memrchr(log_buffer, '\n', n);
                ssize_t k;

                if (nl && n < log_buffered)
                        n = (size_t) (nl - log_buffer) + 1;
                k = log_sink_write(log_buffer, n);
                if (k == -EAGAIN)
                        return false;
                if (k < 0)
                        k = (ssize_t) log_buffered; /* the reader is gone (EPIPE): nobody to wait for */
                memmove(log_buffer, log_buffer + k, log_buffered - (size_t) k);
                log_buffered -= (size_t) k;
        }
        return true;
}

static void log_queue(const char *line, size_t len);

/* The count of lines lost, once there is room to say it. */
static void log_tell_dropped(void) {
        unsigned long n = log_dropped;

        if (n == 0 || LOG_BUFFER_MAX - log_buffered < 256)
                return;
        log_dropped = 0;
        log_warning("%lu log lines dropped: stderr was not being read", n);
}

static void log_arm(void) {
        if (log_io)
                (void) sd_event_source_set_enabled(log_io, log_buffered > 0 || log_dropped > 0 ? SD_EVENT_ON : SD_EVENT_OFF);
}

static void log_queue(const char *line, size_t len) {
        if (log_sink == LOG_SINK_PLAIN) {
                (void) !write(STDERR_FILENO, line, len);
                return;
        }
        if (log_flush_some()) {
                ssize_t k;

                log_tell_dropped();     /* room again: the count first, in its place */
                if (log_buffered > 0)
                        goto queue;
                k = log_sink_write(line, len);

                if (k < 0 && k != -EAGAIN)
                        return;         /* the reader is gone */
                if (k > 0) {
                        line += k;
                        len -= (size_t) k;
                }
        }
        if (len == 0)
                return;
queue:
        if (len > LOG_BUFFER_MAX - log_buffered)
                log_dropped++;
        else {
                memcpy(log_buffer + log_buffered, line, len);
                log_buffered += len;
        }
        log_arm();
}

static int on_log_writable(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        if (log_flush_some())
                log_tell_dropped();
        (void) log_flush_some();
        log_arm();
        return 0;
}

int log_attach_event(void) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        int r;

        if (log_sink == LOG_SINK_PLAIN || log_io)
                return 0;
        /* The loop's own: sd_event_default() is one per thread. */
        r = sd_event_default(&e);
        if (r < 0)
                return r;
        /* Some devices (/dev/null) cannot be polled: they never make a write wait either. */
        r = sd_event_add_io(e, &log_io, log_fd, EPOLLOUT, on_log_writable, NULL);
        if (r < 0)
                return r == -EPERM ? 0 : r;
        (void) sd_event_source_set_description(log_io, "log");
        log_arm();
        return 0;
}

/* At exit: a last chance for what waits, bounded (a stalled reader must not hold the
 * exit), then the sink goes. */
void log_close(void) {
        for (int i = 0; i < 20 && (log_buffered > 0 || log_dropped > 0); i++) {
                struct pollfd p = { .fd = log_fd, .events = POLLOUT };

                if (log_flush_some()) {
                        log_tell_dropped();
                        if (log_flush_some() && log_dropped == 0)
                                break;
                }
                if (poll(&p, 1, 50) < 0 && errno != EINTR)
                        break;
        }
        log_io = sd_event_source_disable_unref(log_io);
        if (log_fd != STDERR_FILENO)
                (void) close(log_fd);
        log_fd = STDERR_FILENO;
        log_sink = LOG_SINK_PLAIN;
        log_buffered = 0;
}

void log_setup(void) {
        /* JOURNAL_STREAM is "DEV:INO" of the stream systemd connected; it only counts if it is
         * still our stderr (a child of a service may have redirected it). */
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        log_to_journal = e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 &&
                         fstat(STDERR_FILENO, &st) >= 0 &&
                         st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
        /* A terminal is read by the person who started us, at their own clock (the
         * development loop of --watch above all): the time of day and the name are enough
         * there. A file, a pipe or a socket keeps the full UTC timestamp and the pid. */
        log_to_terminal = !log_to_journal && isatty(STDERR_FILENO);
        if (log_to_terminal)
                tzset();        /* read /etc/localtime now, not inside the loop */
        /* bindonce never forks without exec, so its pid is for good. */
        log_pid = getpid();
        log_open_sink();
}

bool log_stderr_is_journal(void) {
        return log_to_journal;
}

void log_set_max_level(int level) {
        log_max_level = level;
}

static void log_prefix(FILE *f, int level) {
        if (log_to_journal) {
                fprintf(f, "<%d>", level);
                return;
        }

        struct timespec ts;
        struct tm tm;
        char buf[32];

        clock_gettime(CLOCK_REALTIME, &ts);
        if (log_to_terminal) {
                localtime_r(&ts.tv_sec, &tm);
                strftime(buf, sizeof buf, "%H:%M:%S", &tm);
                fprintf(f, "%s bindonce: ", buf);
        } else {
                gmtime_r(&ts.tv_sec, &tm);
                strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
                fprintf(f, "%s.%03ldZ bindonce[%d]: ", buf, ts.tv_nsec / 1000000,
                        (int) (log_pid ? log_pid : getpid()));
        }
        if (level <= LOG_ERR)
                fputs("error: ", f);
        else if (level == LOG_WARNING)
                fputs("warning: ", f);
}

int log_full_errno(int level, int error, const char *format, ...) {
        int saved = errno;
        va_list ap;

        error = error < 0 ? -error : error;
        if (level <= log_max_level) {
                /* One fprintf per piece into a line-buffered stream would interleave with
                 * workers writing the same stderr; build the line, then write it once. */
                _cleanup_free_ char *msg = NULL, *esc = NULL;
                char *line = NULL;
                size_t size = 0;
                FILE *f;
                int n;

                errno = error;
                va_start(ap, format);
                n = vasprintf(&msg, format, ap);
                va_end(ap);
                if (n < 0)
                        msg = NULL;
                /* One event, one line: a path or name with a newline or a terminal escape
                 * in it (from a command line, from systemd) cannot forge another line. */
                esc = msg ? malloc(ESCAPE_CONTROL_MAX((size_t) n)) : NULL;
                f = esc ? open_memstream(&line, &size) : NULL;
                if (f) {
                        (void) escape_control(msg, (size_t) n, esc, ESCAPE_CONTROL_MAX((size_t) n), ESCAPE_BACKSLASH);
                        log_prefix(f, level);
                        fputs(esc, f);
                        fputc('\n', f);
                        if (fclose(f) == 0)
                                log_queue(line, size);
                        free(line);
                }
        }
        errno = saved;
        return -error;
}

int log_bad_option(const char *arg, int opt, const char *help) {
        if (strncmp(arg, "--", 2) == 0) {
                const char *eq = strchr(arg, '=');
                /* optopt is the option's val when it matched but has no argument to take. */
                if (eq && opt)
                        return log_usage("option '%.*s' takes no value; see '%s'", (int) (eq - arg), arg, help);
                return log_usage("unknown option '%s'; see '%s'", arg, help);
        }
        return log_usage("unknown option '-%c'; see '%s'", opt, help);
}

int log_usage(const char *format, ...) {
        int saved = errno;
        char *msg = NULL;
        va_list ap;

        va_start(ap, format);
        int n = vasprintf(&msg, format, ap);
        va_end(ap);
        if (n >= 0) {
                /* One line, whatever the input it names holds (see log_full_errno()). */
                _cleanup_free_ char *esc = malloc(ESCAPE_CONTROL_MAX((size_t) n));

                if (esc)
                        (void) escape_control(msg, (size_t) n, esc, ESCAPE_CONTROL_MAX((size_t) n), 0);
                if (log_to_journal)
                        fprintf(stderr, "<%d>bindonce: %s\n", LOG_ERR, esc ? esc : msg);
                else
                        fprintf(stderr, "bindonce: %s\n", esc ? esc : msg);
                free(msg);
        }
        errno = saved;
        return -EINVAL;
}
