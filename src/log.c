/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static bool log_to_journal;
static pid_t log_pid;
static int log_max_level = LOG_INFO;

void log_setup(void) {
        /* JOURNAL_STREAM is "DEV:INO" of the stream systemd connected; it only counts if it is
         * still our stderr (a child of a service may have redirected it). */
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        log_to_journal = e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 &&
                         fstat(STDERR_FILENO, &st) >= 0 &&
                         st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
        /* bindonce never forks without exec, so its pid is for good. */
        log_pid = getpid();
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
        gmtime_r(&ts.tv_sec, &tm);
        strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(f, "%s.%03ldZ bindonce[%d]: ", buf, ts.tv_nsec / 1000000, (int) (log_pid ? log_pid : getpid()));
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
                char *line = NULL;
                size_t size = 0;
                FILE *f = open_memstream(&line, &size);

                if (f) {
                        log_prefix(f, level);
                        errno = error;
                        va_start(ap, format);
                        vfprintf(f, format, ap);
                        va_end(ap);
                        fputc('\n', f);
                        if (fclose(f) == 0)
                                (void) !write(STDERR_FILENO, line, size);
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
        if (vasprintf(&msg, format, ap) >= 0) {
                if (log_to_journal)
                        fprintf(stderr, "<%d>bindonce: %s\n", LOG_ERR, msg);
                else
                        fprintf(stderr, "bindonce: %s\n", msg);
                free(msg);
        }
        va_end(ap);
        errno = saved;
        return -EINVAL;
}
