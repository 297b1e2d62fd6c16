/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "state_file.h"

/* A state with a bit of everything: two sockets, a control socket, a reuseport slot, a
 * worker with deadlines and a status of odd bytes, a retired worker. */
typedef struct Sample {
        Listener l[2];
        StateSlot slots[2];
        StateWorker w[2];
        int fds[2];
        UpgradeState s;         /* of the arrays above */
} Sample;

static void sample(Sample *x) {
        Listener *l = x->l;
        StateSlot *slots = x->slots;
        StateWorker *w = x->w;
        int *fds = x->fds;
        UpgradeState *s = &x->s;
        static StatePipe pipes[] = { { .fd = 12, .slot = 1, .pid = 4243 } };
        static char *argv[] = { "bindonce", "-l", "127.0.0.1:8080", "--", "sh", "-c", "exec app 'a b'", NULL };

        memset(l, 0, 2 * sizeof *l);
        l[0] = (Listener) { .fd = 3, .name = "web", .dev = 5, .ino = 77 };
        l[0].address.type = 1;
        l[0].address.size = 16;
        l[0].address.in.sin_family = 2;
        l[0].address.in.sin_port = 0x901f;
        l[1] = (Listener) { .fd = 4, .name = "admin", .unlink_on_close = true };
        l[1].address.type = 5;
        l[1].address.size = 3;
        fds[0] = 3;
        fds[1] = 9;
        slots[0] = (StateSlot) { .index = 0, .state = SLOT_RUNNING, .restarts = 2, .counts = { 1, 1 },
                                 .exited = true, .last_code = 2, .last_status = 9 };
        slots[1] = (StateSlot) { .index = 1, .state = SLOT_BACKOFF, .backoff_at = 123456789, .fds = fds, .n_fds = 2 };
        w[0] = (StateWorker) { .slot = 0, .role = STATE_WORKER, .pid = 4242, .starttime = 99999, .generation = 3,
                               .started = 1000, .started_realtime = 1765000000250000, .ready = true,
                               .watchdog_at = 5000000, .status = "serving \xc3\xa9 = 1", .pidfd = -1 };
        w[1] = (StateWorker) { .slot = 1, .role = STATE_RETIRED, .pid = 4243, .pidfd_id = 18446744073709551615ULL,
                               .stopping = true, .kill_at = 777, .failed = "missed its watchdog deadline",
                               .pidfd = 11 };
        *s = (UpgradeState) {
                .version = "0.1", .exe = "/usr/local/bin/bindonce", .argv = argv, .sockets_kept = true,
                .listeners = l, .n_listeners = 2, .control = { .fd = 7, .name = "ctl", .unlink_on_close = true },
                .notify_fd = 8, .notify_address = "@bindonce/1/abc", .client_fd = 10, .target = 2,
                .last_generation = 3, .good_generation = 3, .total_restarts = 5, .ready_sent = true,
                .nofile = { 1024, 4096 }, .restore_nofile = true,
                .slots = slots, .n_slots = 2, .workers = w, .n_workers = 2,
                .pipes = pipes, .n_pipes = 1,
        };
}

static char *written(const UpgradeState *s, size_t *len) {
        char *buf = NULL;
        FILE *f = open_memstream(&buf, len);

        assert_non_null(f);
        assert_int_equal(state_write(s, f), 0);
        assert_int_equal(fclose(f), 0);
        return buf;
}

static void test_round_trip(void **unused) {
        Sample x;
        UpgradeState r;
        size_t len, len2;
        char err[128] = "";
        char *buf, *again;

        sample(&x);
        buf = written(&x.s, &len);
        assert_int_equal(state_read(buf, len, &r, NULL, err, sizeof err), 0);
        assert_string_equal(r.exe, "/usr/local/bin/bindonce");
        assert_string_equal(r.argv[6], "exec app 'a b'");
        assert_null(r.argv[7]);
        assert_int_equal(r.n_listeners, 2);
        assert_int_equal(r.listeners[0].address.size, 16);
        assert_memory_equal(&r.listeners[0].address.storage, &x.l[0].address.storage, 16);
        assert_string_equal(r.listeners[1].name, "admin");
        assert_true(r.listeners[1].unlink_on_close);
        assert_int_equal(r.control.fd, 7);
        assert_int_equal(r.slots[1].state, SLOT_BACKOFF);
        assert_int_equal(r.slots[1].backoff_at, 123456789);
        assert_int_equal(r.slots[1].n_fds, 2);
        assert_int_equal(r.slots[1].fds[1], 9);
        assert_null(r.slots[0].fds);
        assert_int_equal(r.workers[0].watchdog_at, 5000000);
        assert_string_equal(r.workers[0].status, "serving \xc3\xa9 = 1");
        assert_null(r.workers[0].failed);
        assert_int_equal(r.workers[1].role, STATE_RETIRED);
        assert_true(r.workers[1].pidfd_id == UINT64_MAX);
        assert_int_equal(r.workers[0].pidfd_id, 0);
        assert_true(r.workers[0].started_realtime == 1765000000250000);
        assert_int_equal(r.format, STATE_FORMAT);
        assert_int_equal(r.nofile.rlim_max, 4096);
        /* Written again, the same text. */
        again = written(&r, &len2);
        assert_int_equal(len, len2);
        assert_memory_equal(buf, again, len);

        int *all = NULL;
        assert_int_equal(state_fds(&r, 2, false, &all), 7);    /* 3 4 7 8 10, slot 1's own 9, pipe 12 */
        assert_int_equal(all[5], 9);
        assert_int_equal(all[6], 12);
        free(all);
        assert_int_equal(state_fds(&r, 2, true, &all), 8);     /* and worker 1's pidfd */
        assert_int_equal(all[7], 11);
        assert_int_equal(r.workers[0].pidfd, -1);
        assert_int_equal(r.n_pipes, 1);
        assert_int_equal(r.pipes[0].pid, 4243);
        free(all);
        state_done(&r);
        free(buf);
        free(again);
}

static int read_text(const char *text, char *err, size_t size, unsigned *format) {
        UpgradeState r;
        int ret = state_read(text, strlen(text), &r, format, err, size);

        if (ret == 0)
                state_done(&r);
        return ret;
}

/* Format 1, for a new binary that reads only that (going back to an older bindonce): no
 * pidfd_id written; read again, it is 0 (the /proc check), and format 1 text is read as such. */
static void test_format_1(void **unused) {
        Sample x;
        UpgradeState r;
        size_t len;
        char err[128] = "";
        char *buf;

        sample(&x);
        x.s.format = 1;
        buf = written(&x.s, &len);
        assert_true(strncmp(buf, "bindonce-state 1\n", 17) == 0);
        assert_null(strstr(buf, "pidfd_id"));
        assert_int_equal(state_read(buf, len, &r, NULL, err, sizeof err), 0);
        assert_int_equal(r.format, 1);
        assert_int_equal(r.workers[1].pidfd_id, 0);
        assert_int_equal(r.workers[0].starttime, 99999);
        state_done(&r);
        free(buf);
        /* Format 2 without pidfd_id, or format 1 with it: refused. */
        x.s.format = 2;
        buf = written(&x.s, &len);
        buf[15] = '1';
        assert_int_equal(state_read(buf, len, &r, NULL, err, sizeof err), -EBADMSG);
        assert_non_null(strstr(err, "unknown key 'pidfd_id'"));
        free(buf);
        x.s.format = STATE_FORMAT + 1;
        assert_int_equal(state_write(&x.s, stdout), -EPROTONOSUPPORT);
}

/* Format 3 leaves out of slots and workers what is the default, and names the pidfds that
 * cross the exec; format 2 writes every key, and requires them, and names no pidfd. */
static void test_defaults_left_out(void **unused) {
        Sample x;
        UpgradeState r;
        size_t len;
        char err[128] = "";
        char *buf, *line;

        sample(&x);
        buf = written(&x.s, &len);
        line = strstr(buf, "\nworker ");
        assert_non_null(line);
        /* Worker 0: slot 0, role worker, no kill deadline, no pidfd: none of it written. */
        assert_true(strncmp(line, "\nworker pid=4242 starttime=99999 generation=3 ", 46) == 0);
        assert_null(strstr(buf, "kill_at=0"));
        assert_null(strstr(buf, "pidfd=-1"));
        assert_non_null(strstr(buf, " pidfd=11"));
        assert_non_null(strstr(buf, "\nslot state=running restarts=2 "));
        /* Records without defaults: every key. */
        assert_non_null(strstr(buf, "\npipe fd=12 slot=1 pid=4243\n"));
        free(buf);

        x.s.format = 2;
        buf = written(&x.s, &len);
        assert_non_null(strstr(buf, "\nworker slot=0 role=worker pid=4242 "));
        assert_non_null(strstr(buf, " kill_at=0 "));
        assert_null(strstr(buf, "pidfd="));
        assert_int_equal(state_read(buf, len, &r, NULL, err, sizeof err), 0);
        assert_int_equal(r.workers[1].pidfd, -1);
        state_done(&r);
        /* A key left out is refused in format 2. */
        line = strstr(buf, " kill_at=0");
        memmove(line, line + 10, strlen(line + 10) + 1);
        assert_int_equal(state_read(buf, strlen(buf), &r, NULL, err, sizeof err), -EBADMSG);
        assert_non_null(strstr(err, "'kill_at' missing"));
        free(buf);
}

/* A start time is kept in microseconds and written in seconds with six decimals; every value
 * reads back as itself: ctl status shows it to the millisecond after an upgrade, and a value
 * beyond what a double in seconds holds to the microsecond (2^33 s, from a damaged state) does
 * not drift a microsecond a round. */
static void test_start_times_read_back_exactly(void **unused) {
        Sample x;
        UpgradeState r;
        size_t len;
        char err[128] = "";
        const uint64_t starts[] = { 1796615496029500ULL, /* a .0295 that once came back as .029 */
                                    8796604132186250ULL, /* came back as .186252, then .186254 */
                                    UINT64_MAX - 20000ULL * 1000003 };

        sample(&x);
        for (size_t k = 0; k < ELEMENTSOF(starts); k++)
                for (uint64_t i = 0, us = starts[k]; i < 20000; i++, us += 1000003) {
                        x.w[0].started_realtime = us;
                        char *buf = written(&x.s, &len);
                        assert_int_equal(state_read(buf, len, &r, NULL, err, sizeof err), 0);
                        assert_true(r.workers[0].started_realtime == us);
                        state_done(&r);
                        free(buf);
                }
}

/* The text of a start time: what every bindonce wrote ("%.6f") and less precise forms are
 * read exactly; a sign, an exponent, a seventh decimal or an overflow is refused. */
static void test_start_time_text(void **unused) {
        static const struct {
                const char *text;
                bool read;
                uint64_t us;
        } cases[] = {
                { "1765000000.250000", true, 1765000000250000ULL },
                { "1.5", true, 1500000 },
                { "7", true, 7000000 },
                { "0.000001", true, 1 },
                { "18446744073709.551615", true, UINT64_MAX },
                { "18446744073709.551616", false, 0 },
                { "18446744073710", false, 0 },
                { "1.0000001", false, 0 },
                { "1.", false, 0 },
                { ".5", false, 0 },
                { "-1.000000", false, 0 },
                { "1e9", false, 0 },
                { "nan", false, 0 },
                { "1.5s", false, 0 },
        };
        Sample x;
        UpgradeState r;
        size_t len;
        char err[128] = "";

        sample(&x);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *buf = written(&x.s, &len), *at = strstr(buf, "started_realtime=1765000000.250000"), *text;
                assert_non_null(at);
                at += strlen("started_realtime=");
                assert_true(asprintf(&text, "%.*s%s%s", (int) (at - buf), buf, cases[i].text,
                                     at + strlen("1765000000.250000")) > 0);
                int ret = state_read(text, strlen(text), &r, NULL, err, sizeof err);
                free(text);
                free(buf);
                if (!cases[i].read) {
                        assert_int_equal(ret, -EBADMSG);
                        assert_non_null(strstr(err, "started_realtime"));
                        continue;
                }
                assert_int_equal(ret, 0);
                assert_true(r.workers[0].started_realtime == cases[i].us);
                state_done(&r);
        }
}

static void test_other_formats_refused(void **unused) {
        char err[128];
        unsigned format = 0;

        assert_int_equal(read_text("bindonce-state 4\nwhatever the future holds\n", err, sizeof err, &format),
                         -EPROTONOSUPPORT);
        assert_int_equal(format, 4);
        assert_non_null(strstr(err, "format 4"));
        assert_int_equal(read_text("bindonce-state 0\nend\n", err, sizeof err, &format), -EPROTONOSUPPORT);
        assert_int_equal(read_text("", err, sizeof err, NULL), -EBADMSG);
        assert_int_equal(read_text("hello\n", err, sizeof err, NULL), -EBADMSG);
        assert_int_equal(read_text("bindonce-state x\n", err, sizeof err, NULL), -EBADMSG);
}

/* Each damage to a good state is refused, with what is wrong. */
static void test_damage_refused(void **unused) {
        static const struct { const char *from, *to, *why; } cases[] = {
                { "\nend\n", "\n", "cut short" },
                { " target=2", " target=9", "workers wanted" },
                { " target=2", "", "'target' missing" },
                { " target=2", " target=2 target=2", "twice" },
                { " target=2", " target=2 colour=blue", "unknown key" },
                { " state=backoff", " state=sleepy", "bad value for 'state'" },
                { " pidfd_id=18446744073709551615", " pidfd_id=18446744073709551616", "bad value for 'pidfd_id'" },
                { " pidfd_id=18446744073709551615", "", "pidfd 11 without a pidfd_id" },
                { " pidfd=11", " pidfd=2", "pidfd 2" },
                { " pidfd=11", " pidfd=12", "fd 12 named twice" },      /* the pipe's */
                { " pidfd=11", " pidfd=x", "bad value for 'pidfd'" },
                { " pid=4242", " pid=+4242", "bad value for 'pid'" },
                { " x2d6c ", " x2dzz ", "argv: word 2 is not hex text" },
                { "\nargv ", "\nargv x41\nargv ", "argv: given twice" },
                { " pid=4242", " pid=2147483648", "bad value for 'pid'" },
                { " pid=4242", " pid=-1", "pid -1" },
                { " fds=3,9", " fds=3,", "bad value for 'fds'" },
                { " fds=3,9", " fds=3", "sockets" },
                { " role=retired", " role=ghost", "bad value" },
                { "\nend\n", "\nend\nmore\n", "after 'end'" },
                { "\nslot ", "\nslat ", "unknown record" },
        };
        Sample x;
        size_t len;
        char *buf;

        sample(&x);
        buf = written(&x.s, &len);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char text[8192], err[128] = "";
                const char *at = strstr(buf, cases[i].from);

                assert_non_null(at);
                snprintf(text, sizeof text, "%.*s%s%s", (int) (at - buf), buf, cases[i].to, at + strlen(cases[i].from));
                assert_int_equal(read_text(text, err, sizeof err, NULL), -EBADMSG);
                if (!strstr(err, cases[i].why))
                        fail_msg("case %zu: '%s' does not say '%s'", i, err, cases[i].why);
        }
        free(buf);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_format_1),
                cmocka_unit_test(test_defaults_left_out),
                cmocka_unit_test(test_start_times_read_back_exactly),
                cmocka_unit_test(test_start_time_text),
                cmocka_unit_test(test_other_formats_refused),
                cmocka_unit_test(test_damage_refused),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
