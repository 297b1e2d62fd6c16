/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "address.h"

static void assert_round_trip(const char *in, int type, int family, const char *out) {
        char buf[ADDRESS_FORMAT_MAX];
        SocketAddress a;
        const char *why = NULL;

        assert_int_equal(address_parse(in, type, &a, &why), 0);
        assert_int_equal(address_family(&a), family);
        assert_int_equal(a.type, type);
        assert_string_equal(address_format(&a, buf), out);
}

static void assert_rejected(const char *in, int type, const char *why_part) {
        SocketAddress a = { .size = 12345 };
        const char *why = NULL;

        assert_int_equal(address_parse(in, type, &a, &why), -EINVAL);
        assert_non_null(why);
        if (!strstr(why, why_part))
                fail_msg("'%s': reason '%s' lacks '%s'", in, why, why_part);
        assert_int_equal(a.size, 12345); /* untouched on failure */
}

static void test_ipv4(void **state) {
        assert_round_trip("127.0.0.1:8080", SOCK_STREAM, AF_INET, "127.0.0.1:8080");
        assert_round_trip("0.0.0.0:1", SOCK_STREAM, AF_INET, "0.0.0.0:1");
        assert_round_trip("10.1.2.3:65535", SOCK_DGRAM, AF_INET, "10.1.2.3:65535");
}

static void test_ipv6(void **state) {
        assert_round_trip("[::1]:8080", SOCK_STREAM, AF_INET6, "[::1]:8080");
        assert_round_trip("[::]:80", SOCK_STREAM, AF_INET6, "[::]:80");
        assert_round_trip("[fe80::1%lo]:443", SOCK_STREAM, AF_INET6, "[fe80::1%lo]:443");
        assert_round_trip("[2001:db8::ff]:9", SOCK_DGRAM, AF_INET6, "[2001:db8::ff]:9");
}

static void test_port_only(void **state) {
        SocketAddress a;
        const char *why;

        assert_int_equal(address_parse("8080", SOCK_STREAM, &a, &why), 0);
        assert_true(a.port_only);
        assert_int_equal(address_family(&a), AF_INET6);
        assert_int_equal(address_port(&a), 8080);
        assert_round_trip("8080", SOCK_STREAM, AF_INET6, "[::]:8080");
}

static void test_unix(void **state) {
        char path[120];
        SocketAddress a;
        const char *why;

        assert_round_trip("/run/app.sock", SOCK_STREAM, AF_UNIX, "/run/app.sock");
        assert_round_trip("@app", SOCK_STREAM, AF_UNIX, "@app");
        assert_round_trip("/x", SOCK_SEQPACKET, AF_UNIX, "/x");

        assert_int_equal(address_parse("@app", SOCK_STREAM, &a, &why), 0);
        assert_false(address_is_unix_path(&a));
        assert_int_equal(a.size, offsetof(struct sockaddr_un, sun_path) + 4);
        assert_int_equal(address_parse("/run/app.sock", SOCK_STREAM, &a, &why), 0);
        assert_true(address_is_unix_path(&a));

        /* 107 bytes fit with the NUL; 108 do not. */
        memset(path, 'a', sizeof path);
        path[0] = '/';
        path[107] = '\0';
        assert_int_equal(address_parse(path, SOCK_STREAM, &a, &why), 0);
        path[107] = 'a';
        path[108] = '\0';
        assert_rejected(path, SOCK_STREAM, "longer than 107");
        path[0] = '@';
        assert_rejected(path, SOCK_STREAM, "longer than 107");
}

static void test_bad(void **state) {
        assert_rejected("", SOCK_STREAM, "empty");
        assert_rejected("65536", SOCK_STREAM, "1 to 65535");
        assert_rejected("-1", SOCK_STREAM, "1 to 65535");
        assert_rejected("0", SOCK_STREAM, "1 to 65535");
        assert_rejected("http", SOCK_STREAM, "1 to 65535");
        assert_rejected("127.0.0.1:http", SOCK_STREAM, "1 to 65535");
        assert_rejected("127.0.0.1:65536", SOCK_STREAM, "1 to 65535");
        assert_rejected("127.0.0.1:", SOCK_STREAM, "missing port");
        assert_rejected("127.0.0.1:+80", SOCK_STREAM, "1 to 65535");
        assert_rejected("999.1.1.1:80", SOCK_STREAM, "not an IPv4");
        assert_rejected("localhost:80", SOCK_STREAM, "not an IPv4");
        assert_rejected("1.2.3:80", SOCK_STREAM, "not an IPv4");
        assert_rejected("[::1", SOCK_STREAM, "closing ']'");
        assert_rejected("[::1]", SOCK_STREAM, "':PORT'");
        assert_rejected("[::1]80", SOCK_STREAM, "':PORT'");
        assert_rejected("[::g]:80", SOCK_STREAM, "not an IPv6");
        assert_rejected("[::1%bogus0]:80", SOCK_STREAM, "network interface");
        assert_rejected("::1:80", SOCK_STREAM, "brackets");
        assert_rejected("@", SOCK_STREAM, "empty abstract");
        assert_rejected("127.0.0.1:80", SOCK_SEQPACKET, "unix sockets only");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ipv4),
                cmocka_unit_test(test_ipv6),
                cmocka_unit_test(test_port_only),
                cmocka_unit_test(test_unix),
                cmocka_unit_test(test_bad),
        };
        return cmocka_run_group_tests_name("address", tests, NULL, NULL);
}
