/* SPDX-License-Identifier: MIT */
/* --watch against a real directory and a real sd-event loop: what one save, an editor's
 * rename, a burst of writes, an ignored file and a directory made later each cause. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "watch.h"

#define DELAY (50 * USEC_PER_MSEC)

typedef struct Seen {
        unsigned calls;
        unsigned changes;
        char first[256];
} Seen;

static void on_changed(void *userdata, const char *first, unsigned n) {
        Seen *seen = userdata;

        seen->calls++;
        seen->changes += n;
        snprintf(seen->first, sizeof seen->first, "%s", first);
}

static usec_t now_usec(void) {
        return clock_usec(CLOCK_MONOTONIC);
}

/* Runs the loop for `usec`: long enough for any debounce of DELAY to have fired. */
static void run_for(sd_event *e, usec_t usec) {
        usec_t end = now_usec() + usec;
        for (usec_t now; (now = now_usec()) < end;)
                assert_true(sd_event_run(e, end - now) >= 0);
}

static void write_file(const char *dir, const char *name, const char *text) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
}

typedef struct Fixture {
        char dir[64];
        sd_event *event;
        Watch *watch;
        Seen seen;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof *f);
        snprintf(f->dir, sizeof f->dir, "/tmp/bindonce-watch-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        write_file(f->dir, "app.py", "v1\n");
        assert_true(sd_event_new(&f->event) >= 0);

        char *paths[] = { f->dir };
        WatchConfig config = { .paths = paths, .n_paths = 1, .default_ignore = true, .delay = DELAY };
        assert_int_equal(watch_new(&f->watch, f->event, &config, on_changed, &f->seen, NULL), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        char cmd[128];

        watch_free(f->watch);
        sd_event_unref(f->event);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static void test_one_save_one_call(void **state) {
        Fixture *f = *state;

        write_file(f->dir, "app.py", "v2\n");
        run_for(f->event, 4 * DELAY);
        assert_int_equal(f->seen.calls, 1);
        assert_string_equal(f->seen.first, "app.py");
}

/* vim, emacs and most IDEs: write a temporary file, rename it over the original. */
static void test_editor_rename_is_one_call(void **state) {
        Fixture *f = *state;
        char from[512], to[512];

        write_file(f->dir, ".app.py.tmp1234", "v2\n");
        snprintf(from, sizeof from, "%s/.app.py.tmp1234", f->dir);
        snprintf(to, sizeof to, "%s/app.py", f->dir);
        assert_int_equal(rename(from, to), 0);
        run_for(f->event, 4 * DELAY);
        assert_int_equal(f->seen.calls, 1);
}

static void test_ignored_names_are_silent(void **state) {
        Fixture *f = *state;
        char sub[512];

        write_file(f->dir, ".app.py.swp", "x");
        write_file(f->dir, "app.py~", "x");
        write_file(f->dir, "mod.pyc", "x");
        snprintf(sub, sizeof sub, "%s/__pycache__", f->dir);
        assert_int_equal(mkdir(sub, 0755), 0);
        write_file(sub, "mod.cpython-311.pyc", "x");
        run_for(f->event, 4 * DELAY);
        assert_int_equal(f->seen.calls, 0);
}

static void test_directory_made_later_is_watched(void **state) {
        Fixture *f = *state;
        char sub[512];

        snprintf(sub, sizeof sub, "%s/pkg", f->dir);
        assert_int_equal(mkdir(sub, 0755), 0);
        run_for(f->event, 4 * DELAY);
        assert_int_equal(f->seen.calls, 1);

        write_file(sub, "mod.py", "x = 1\n");
        run_for(f->event, 4 * DELAY);
        assert_int_equal(f->seen.calls, 2);
        assert_string_equal(f->seen.first, "pkg/mod.py");
}

/* 200 writes over about a second: the debounce's cap fires every 10 delays at most, so
 * a few calls, never 200 and never none until the writes stop. */
static void test_burst_is_a_few_calls(void **state) {
        Fixture *f = *state;
        usec_t start = now_usec(), last = start;
        unsigned pauses = 0;

        for (int i = 0; i < 200; i++) {
                write_file(f->dir, "app.py", "v\n");
                /* A loaded machine may stall this loop longer than the debounce: that is a
                 * real pause between changes, and may rightly end a burst. */
                pauses += now_usec() - last > DELAY;
                last = now_usec();
                run_for(f->event, 5 * USEC_PER_MSEC);
        }
        usec_t elapsed = now_usec() - start;
        run_for(f->event, 4 * DELAY);
        /* At most one call per capped window while writing, one after, and one per pause
         * (the bound follows the time the writing took). */
        assert_true(f->seen.calls >= 1);
        assert_true(f->seen.calls <= 2 + pauses + elapsed / (DELAY * WATCH_DELAY_MAX_FACTOR));
        assert_true(f->seen.calls < 20);
        assert_true(f->seen.changes >= 200);
}

static void test_a_named_file_alone(void **state) {
        Fixture *f = *state;
        char file[512];
        Seen seen = {};
        Watch *w = NULL;

        snprintf(file, sizeof file, "%s/app.py", f->dir);
        char *paths[] = { file };
        WatchConfig config = { .paths = paths, .n_paths = 1, .delay = DELAY };
        assert_int_equal(watch_new(&w, f->event, &config, on_changed, &seen, NULL), 0);

        write_file(f->dir, "other.py", "x");
        run_for(f->event, 4 * DELAY);
        assert_int_equal(seen.calls, 0);
        write_file(f->dir, "app.py", "v3\n");
        run_for(f->event, 4 * DELAY);
        assert_int_equal(seen.calls, 1);
        watch_free(w);
}

static void test_missing_path_is_enoent(void **state) {
        Fixture *f = *state;
        char missing[512];
        const char *bad = NULL;
        Watch *w = NULL;

        snprintf(missing, sizeof missing, "%s/nope", f->dir);
        char *paths[] = { f->dir, missing };
        WatchConfig config = { .paths = paths, .n_paths = 2, .delay = DELAY };
        assert_int_equal(watch_new(&w, f->event, &config, on_changed, NULL, &bad), -ENOENT);
        assert_null(w);
        assert_string_equal(bad, missing);
}

static void test_ignore_globs(void **state) {
        char *globs[] = { ".git", "*.swp", "*~" };

        assert_true(watch_ignored(".git", globs, 3));
        assert_true(watch_ignored(".x.swp", globs, 3));
        assert_true(watch_ignored("a.py~", globs, 3));
        assert_false(watch_ignored("app.py", globs, 3));
        assert_false(watch_ignored(".gitignore", globs, 3));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_one_save_one_call, setup, teardown),
                cmocka_unit_test_setup_teardown(test_editor_rename_is_one_call, setup, teardown),
                cmocka_unit_test_setup_teardown(test_ignored_names_are_silent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_directory_made_later_is_watched, setup, teardown),
                cmocka_unit_test_setup_teardown(test_burst_is_a_few_calls, setup, teardown),
                cmocka_unit_test_setup_teardown(test_a_named_file_alone, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing_path_is_enoent, setup, teardown),
                cmocka_unit_test(test_ignore_globs),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
