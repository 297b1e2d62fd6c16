/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "util.h"

/* --watch: inotify through sd-event, no polling. Directories are watched recursively,
 * including those created later; a file is watched through its directory, so that an
 * editor's "write a temporary file, rename it over the original" keeps being seen.
 *
 * Changes are debounced: the callback runs once `delay` has passed without a further
 * change, or at the latest `delay` * WATCH_DELAY_MAX_FACTOR after the first one (a build
 * writing files without pause must not postpone the restart for ever). */
#define WATCH_DELAY_MAX_FACTOR 10

typedef struct Watch Watch;

/* `last` is the last path that changed since the previous call (relative to the watched
 * path it belongs to, or that path itself), `n` how many changes were seen. */
typedef void (*WatchChanged)(void *userdata, const char *last, unsigned n);

typedef struct WatchConfig {
        char **paths;
        size_t n_paths;
        char **ignore;          /* fnmatch(3) globs, matched against each path component */
        size_t n_ignore;
        bool default_ignore;    /* add WATCH_DEFAULT_IGNORE */
        usec_t delay;
} WatchConfig;

/* What editors, version control and language tools write that is never the program. */
#define WATCH_DEFAULT_IGNORE \
        ".git", ".hg", ".svn", "__pycache__", "node_modules", ".mypy_cache", \
        ".pytest_cache", "*.pyc", "*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913", \
        ".*.kate-swp", ".DS_Store"

/* -ENOENT: a path does not exist; -EACCES: it cannot be read; other -errno: inotify.
 * Logs nothing: on failure *ret_bad_path is the path it failed on (one of config->paths),
 * for the caller's one line. */
int watch_new(Watch **ret, sd_event *event, const WatchConfig *config,
              WatchChanged changed, void *userdata, const char **ret_bad_path);
Watch *watch_free(Watch *w);

/* Directories watched now, for the log and the tests. */
size_t watch_count(const Watch *w);

/* Pure helpers, exported for the unit tests. */
bool watch_ignored(const char *name, char *const *globs, size_t n_globs);
