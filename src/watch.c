/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include "log.h"
#include "watch.h"

/* What counts as a change. IN_ATTRIB: `touch file` is how many developers ask for a
 * restart. IN_MODIFY is left out: one save is many writes but one IN_CLOSE_WRITE. */
#define DIR_EVENTS (IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)

/* One inotify watch: a directory, watched whole (`only` NULL, its subdirectories too) or
 * for one file the user named (`only` its name). Several entries may share a wd, when two
 * named files live in one directory. */
typedef struct WatchDir {
        int wd;
        char *path;             /* as opened */
        char *shown;            /* prefix for messages: "" for a root, "sub/dir/" below it */
        char *only;
} WatchDir;

struct Watch {
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        WatchDir *dirs;
        size_t n_dirs;
        char **ignore;          /* borrowed from the config, plus the defaults */
        size_t n_ignore;
        usec_t delay;
        usec_t first_at;        /* CLOCK_MONOTONIC of the first change not yet told */
        unsigned pending;
        char *last;
        bool warned_limit;
        WatchChanged changed;
        void *userdata;
};

static char *const default_ignore[] = { WATCH_DEFAULT_IGNORE };

static void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

/* a + b + c in a new string, or NULL. */
static char *concat3(const char *a, const char *b, const char *c) {
        size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
        char *s = malloc(la + lb + lc + 1);

        if (s) {
                memcpy(s, a, la);
                memcpy(s + la, b, lb);
                memcpy(s + la + lb, c, lc + 1);
        }
        return s;
}

bool watch_ignored(const char *name, char *const *globs, size_t n_globs) {
        for (size_t i = 0; i < n_globs; i++)
                if (fnmatch(globs[i], name, 0) == 0)
                        return true;
        return false;
}

static bool ignored(const Watch *w, const char *name) {
        return watch_ignored(name, w->ignore, w->n_ignore);
}

static int add_dir(Watch *w, const char *path, const char *shown, const char *only) {
        int wd = inotify_add_watch(w->fd, path, DIR_EVENTS | IN_ONLYDIR);
        if (wd < 0)
                return -errno;

        WatchDir *d = reallocarray(w->dirs, w->n_dirs + 1, sizeof *d);
        if (!d)
                return -ENOMEM;
        w->dirs = d;
        d = &w->dirs[w->n_dirs];
        *d = (WatchDir) { .wd = wd, .path = strdup(path), .shown = strdup(shown),
                          .only = only ? strdup(only) : NULL };
        if (!d->path || !d->shown || (only && !d->only)) {
                free(d->path), free(d->shown), free(d->only);
                return -ENOMEM;
        }
        w->n_dirs++;
        return 0;
}

/* A directory and, depth first, what is below it; symbolic links are not followed below
 * the top (a link back up would never end). Only the top's failure is an error: a
 * subdirectory that vanished or cannot be read is skipped, with a warning for the latter. */
static int add_tree(Watch *w, const char *path, const char *shown, bool top) {
        int r = add_dir(w, path, shown, NULL);
        if (r < 0) {
                if (r == -ENOSPC && !w->warned_limit) {
                        w->warned_limit = true;
                        log_warning("--watch: the inotify watch limit is reached at %s; raise "
                                    "fs.inotify.max_user_watches or --watch fewer directories", path);
                } else if (!top && r == -EACCES)
                        log_warning("--watch: cannot read %s, not watched", path);
                return top ? r : 0;
        }

        _cleanup_(closedirp) DIR *dir = opendir(path);
        if (!dir)
                return top ? -errno : 0;
        for (struct dirent *de; (de = readdir(dir));) {
                if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 ||
                    strcmp(de->d_name, "..") == 0 || ignored(w, de->d_name))
                        continue;
                _cleanup_free_ char *sub = concat3(path, "/", de->d_name);
                _cleanup_free_ char *subshown = concat3(shown, de->d_name, "/");
                if (!sub || !subshown)
                        return -ENOMEM;
                r = add_tree(w, sub, subshown, false);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int add_path(Watch *w, const char *path) {
        struct stat st;

        if (stat(path, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return add_tree(w, path, "", true);
        if (access(path, R_OK) < 0)
                return -errno;

        /* A file: watch its directory for its name alone. */
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        char *slash = strrchr(copy, '/');
        const char *name = slash ? slash + 1 : copy;
        const char *dir = slash ? (slash == copy ? "/" : copy) : ".";
        if (slash)
                *slash = '\0';
        return add_dir(w, dir, "", name);
}

static void remove_wd(Watch *w, int wd) {
        for (size_t i = 0; i < w->n_dirs;)
                if (w->dirs[i].wd == wd) {
                        free(w->dirs[i].path), free(w->dirs[i].shown), free(w->dirs[i].only);
                        w->dirs[i] = w->dirs[--w->n_dirs];
                } else
                        i++;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Watch *w = userdata;
        _cleanup_free_ char *last = TAKE_PTR(w->last);
        unsigned n = w->pending;

        w->pending = 0;
        w->changed(w->userdata, last ? last : "?", n);
        return 0;
}

/* Trailing debounce, capped: each change pushes the deadline `delay` further, but never
 * past WATCH_DELAY_MAX_FACTOR * delay after the first. */
static void note_change(Watch *w, const char *shown, const char *name) {
        uint64_t now = 0;

        (void) sd_event_now(sd_event_source_get_event(w->io), CLOCK_MONOTONIC, &now);
        if (w->pending++ == 0)
                w->first_at = now;
        /* The last name: a save through a temporary file ends with the real name. */
        char *last = concat3(shown, name, "");
        if (last) {
                free(w->last);
                w->last = last;
        }
        usec_t at = now + w->delay, latest = w->first_at + w->delay * WATCH_DELAY_MAX_FACTOR;
        if (at > latest)
                at = latest;
        if (!w->timer) {
                if (sd_event_add_time(sd_event_source_get_event(w->io), &w->timer, CLOCK_MONOTONIC,
                                      at, USEC_PER_MSEC, on_timer, w) < 0)
                        log_warning("--watch: cannot arm the debounce timer; this change is missed");
                return;
        }
        (void) sd_event_source_set_time(w->timer, at);
        (void) sd_event_source_set_enabled(w->timer, SD_EVENT_ONESHOT);
}

static void handle_event(Watch *w, const struct inotify_event *ev) {
        if (ev->mask & IN_Q_OVERFLOW) {
                note_change(w, "", "(many files)");
                return;
        }
        if (ev->mask & IN_IGNORED) {
                remove_wd(w, ev->wd);
                return;
        }
        if (ev->len == 0 || ignored(w, ev->name))
                return;

        for (size_t i = 0; i < w->n_dirs; i++) {
                WatchDir *d = &w->dirs[i];
                if (d->wd != ev->wd || (d->only && strcmp(d->only, ev->name) != 0))
                        continue;
                if (!d->only && (ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
                        /* A directory created later is watched too. Told first: add_tree()
                         * may move w->dirs, and d with it. */
                        _cleanup_free_ char *sub = concat3(d->path, "/", ev->name);
                        _cleanup_free_ char *subshown = concat3(d->shown, ev->name, "/");
                        note_change(w, d->shown, ev->name);
                        if (sub && subshown)
                                (void) add_tree(w, sub, subshown, false);
                        return;
                }
                note_change(w, d->shown, ev->name);
                return;
        }
}

static int on_inotify(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Watch *w = userdata;
        union {
                struct inotify_event ev;
                char raw[4096];
        } buf;

        for (;;) {
                ssize_t n = read(fd, &buf, sizeof buf);
                if (n < 0) {
                        if (errno != EAGAIN && errno != EINTR)
                                log_warning_errno(errno, "--watch: reading inotify events failed: %m");
                        return 0;
                }
                for (char *p = buf.raw; p < buf.raw + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *) (void *) p;
                        handle_event(w, ev);
                        p += sizeof *ev + ev->len;
                }
        }
}

static int watch_setup(Watch *w, sd_event *event, const WatchConfig *config, const char **ret_bad_path) {
        size_t n_default = config->default_ignore ? ELEMENTSOF(default_ignore) : 0;

        w->ignore = calloc(config->n_ignore + n_default + 1, sizeof *w->ignore);
        if (!w->ignore)
                return -ENOMEM;
        for (size_t i = 0; i < config->n_ignore; i++)
                w->ignore[w->n_ignore++] = config->ignore[i];
        for (size_t i = 0; i < n_default; i++)
                w->ignore[w->n_ignore++] = default_ignore[i];

        w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->fd < 0)
                return -errno;
        for (size_t i = 0; i < config->n_paths; i++) {
                int r = add_path(w, config->paths[i]);
                if (r < 0) {
                        *ret_bad_path = config->paths[i];
                        return r;
                }
        }
        return sd_event_add_io(event, &w->io, w->fd, EPOLLIN, on_inotify, w);
}

int watch_new(Watch **ret, sd_event *event, const WatchConfig *config,
              WatchChanged changed, void *userdata, const char **ret_bad_path) {
        Watch *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        *w = (Watch) { .fd = -1, .delay = config->delay, .changed = changed, .userdata = userdata };

        const char *bad = NULL;
        int r = watch_setup(w, event, config, &bad);
        if (r < 0) {
                watch_free(w);
                if (ret_bad_path)
                        *ret_bad_path = bad;
                return r;
        }
        *ret = w;
        return 0;
}

size_t watch_count(const Watch *w) {
        return w ? w->n_dirs : 0;
}

Watch *watch_free(Watch *w) {
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->io);
        sd_event_source_disable_unref(w->timer);
        if (w->fd >= 0)
                (void) close(w->fd);
        for (size_t i = 0; i < w->n_dirs; i++)
                free(w->dirs[i].path), free(w->dirs[i].shown), free(w->dirs[i].only);
        free(w->dirs);
        free(w->ignore);
        free(w->last);
        free(w);
        return NULL;
}
