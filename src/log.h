/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

/* One line per event on stderr. Under the journal (JOURNAL_STREAM names our stderr) lines
 * carry sd-daemon "<N>" priority prefixes; on a terminal "HH:MM:SS bindonce: " in local
 * time; elsewhere an ISO 8601 UTC timestamp and "bindonce[PID]: ". */
void log_setup(void);
/* Whether our stderr is the journal stream that JOURNAL_STREAM names (after log_setup()). */
bool log_stderr_is_journal(void);
/* Lines that could not be written at once (a stalled reader) are written from the loop
 * when stderr takes them again (log.c), on the thread's default sd-event loop. log_close() at exit: a bounded last try. */
int log_attach_event(void);
void log_close(void);
void log_set_max_level(int level);

/* Logs and returns -abs(error), or 0 when error is 0. %m prints strerror(abs(error)). */
int log_full_errno(int level, int error, const char *format, ...) __attribute__((format(printf, 3, 4)));

/* A usage error: one line, no timestamp, "bindonce: ...". Returns -EINVAL. */
int log_usage(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* getopt_long()'s '?' as one usage line naming what was wrong: an unknown option, or a
 * value given to one that takes none ("--opt=VALUE"). arg is argv[optind - 1], opt is
 * optopt, help what to run for help. Returns -EINVAL. */
int log_bad_option(const char *arg, int opt, const char *help);

#define log_error_errno(error, ...) log_full_errno(LOG_ERR, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_error(...) ((void) log_full_errno(LOG_ERR, 0, __VA_ARGS__))
#define log_warning(...) ((void) log_full_errno(LOG_WARNING, 0, __VA_ARGS__))
#define log_notice(...) ((void) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__))
#define log_info(...) ((void) log_full_errno(LOG_INFO, 0, __VA_ARGS__))
#define log_debug(...) ((void) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__))
