/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "options.h"
#include "supervisor.h"

/* Parses a NULL-terminated list as bindonce's argv (argv[0] added). */
#define PARSE(o, ...) parse_list(o, (const char *[]) { "bindonce", __VA_ARGS__, NULL })

static int parse_list(Options *o, const char **list) {
        static char *argv[64];
        int argc = 0;

        while (list[argc]) {
                argv[argc] = (char *) list[argc];
                argc++;
        }
        argv[argc] = NULL;
        return options_parse(o, argc, argv);
}

static void test_defaults(void **state) {
        Options o;

        assert_int_equal(PARSE(&o, "-l", "8080", "--", "/bin/app", "-x"), 1);
        assert_int_equal(o.n_listen, 1);
        assert_string_equal(o.listen[0].text, "8080");
        assert_int_equal(o.workers, 1);
        assert_int_equal(o.stop_signal, SIGTERM);
        assert_int_equal(o.stop_timeout, 10 * USEC_PER_SEC);
        assert_int_equal(o.min_ready, USEC_PER_SEC);     /* --ready exec */
        assert_false(o.nonblocking);
        assert_int_equal(o.umask, (mode_t) -1);
        assert_int_equal(o.socket_mode, (mode_t) -1);
        assert_string_equal(o.name, "app");
        assert_string_equal(o.argv[0], "/bin/app");
        assert_string_equal(o.argv[1], "-x");
        options_done(&o);
}

/* One row per kind of the table: each value lands in its field. */
static void test_values(void **state) {
        Options o;

        assert_int_equal(PARSE(&o, "-w", "4", "--backlog", "16", "--stop-timeout", "0.5", "--start-timeout", "2",
                               "--restart", "on-failure", "--ready", "notify", "--balance", "reuseport",
                               "--notify-access", "all", "--stop-signal", "SIGQUIT", "--umask", "027",
                               "--socket-mode", "0660", "--user", "nobody", "--group", "nogroup", "--chdir", "/tmp",
                               "--nonblocking", "--ipv6-only", "--freebind", "--bind-to-device", "lo",
                               "--log-prefix", "-d", "--give-up", "0", "--", "x"), 1);
        assert_int_equal(o.workers, 4);
        assert_int_equal(o.backlog, 16);
        assert_int_equal(o.stop_timeout, USEC_PER_SEC / 2);
        assert_int_equal(o.start_timeout, 2 * USEC_PER_SEC);
        assert_int_equal(o.restart, RESTART_ON_FAILURE);
        assert_int_equal(o.ready, READY_NOTIFY);
        assert_int_equal(o.min_ready, 0);                /* --ready notify */
        assert_int_equal(o.balance, BALANCE_REUSEPORT);
        assert_int_equal(o.notify_access, 1);
        assert_int_equal(o.stop_signal, SIGQUIT);
        assert_int_equal(o.umask, 027);
        assert_int_equal(o.socket_mode, 0660);
        assert_string_equal(o.user, "nobody");
        assert_string_equal(o.group, "nogroup");
        assert_string_equal(o.chdir, "/tmp");
        assert_string_equal(o.bind_to_device, "lo");
        assert_true(o.nonblocking && o.ipv6_only && o.freebind && o.log_prefix);
        assert_int_equal(o.socket_type, SOCK_DGRAM);
        assert_int_equal(o.give_up, 0);
        assert_true(o.give_up_explicit);
        options_done(&o);
}

static void test_bad_values(void **state) {
        static const char *const rows[][2] = {
                { "--stop-signal", "BOGUS" }, { "--stop-signal", "STOP" }, { "--stop-signal", "0" },
                { "--stop-signal", "65" }, { "--umask", "0999" }, { "--umask", "1777" }, { "--umask", "" },
                { "--socket-mode", "abc" }, { "--socket-mode", "17777" }, { "--chdir", "relative" },
                { "--chdir", "" }, { "--user", "" }, { "--group", "" }, { "--bind-to-device", "0123456789abcdef" },
                { "--start-timeout", "0" }, { "--watchdog", "-1" }, { "-w", "0" }, { "--max-surge", "16385" },
                { "--restart", "sometimes" }, { "--balance", "" },
        };
        Options o;

        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
                print_message("%s '%s'\n", rows[i][0], rows[i][1]);
                assert_int_equal(PARSE(&o, rows[i][0], rows[i][1], "--", "x"), -EINVAL);
                options_done(&o);
        }
        assert_int_equal(PARSE(&o, "--install", "--", "x"), -EINVAL);  /* generate-units only */
        options_done(&o);
        assert_int_equal(PARSE(&o, "--max-surge", "0", "--max-unavailable", "0", "--", "x"), -EINVAL);
        options_done(&o);
}

static void test_parsers(void **state) {
        int sig;
        mode_t m;
        usec_t u;

        assert_int_equal(parse_signal("INT", &sig), 0);
        assert_int_equal(sig, SIGINT);
        assert_int_equal(parse_signal("SIGHUP", &sig), 0);
        assert_int_equal(sig, SIGHUP);
        assert_int_equal(parse_signal("3", &sig), 0);
        assert_int_equal(sig, SIGQUIT);
        assert_int_equal(parse_signal("SIG", &sig), -EINVAL);
        assert_int_equal(parse_signal("term", &sig), -EINVAL);
        assert_int_equal(parse_mode("0", &m), 0);
        assert_int_equal(m, 0);
        assert_int_equal(parse_mode("7777", &m), 0);
        assert_int_equal(m, 07777);
        assert_int_equal(parse_mode("8", &m), -EINVAL);
        assert_int_equal(parse_seconds("1.25", &u), 0);
        assert_int_equal(u, 1250000);
        assert_int_equal(parse_seconds(".", &u), -EINVAL);
        assert_int_equal(parse_seconds("86401", &u), -ERANGE);
}

/* generate-units: NAME taken off the front; ExecStart= repeats the options less its own. */
static void test_generate(void **state) {
        Options o;

        assert_int_equal(PARSE(&o, "generate-units", "web", "--install", "-l", "80", "--unit-dir", "/x",
                               "--user", "www-data", "--", "app"), 1);
        assert_string_equal(o.generate, "web");
        assert_true(o.install);
        assert_string_equal(o.unit_dir, "/x");
        assert_string_equal(o.name, "web");
        assert_int_equal(o.n_exec_options, 6);
        assert_string_equal(o.exec_options[0], "--name");
        assert_string_equal(o.exec_options[1], "web");
        assert_string_equal(o.exec_options[2], "-l");
        assert_string_equal(o.exec_options[4], "--user");
        options_done(&o);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_values),
                cmocka_unit_test(test_bad_values),
                cmocka_unit_test(test_parsers),
                cmocka_unit_test(test_generate),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
