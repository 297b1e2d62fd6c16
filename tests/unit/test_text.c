/* SPDX-License-Identifier: MIT */
/* Table-driven tests of the text checks in util.h: utf8_valid() (control requests, worker
 * STATUS= text) and parse_uint(). Cutting STATUS= at a character boundary happens inline in
 * notify.c (not a function of its own): tested through `ctl status --json` in
 * tests/integration/test_control.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

static const struct {
        const char *bytes;
        size_t n;               /* 0: strlen */
        bool valid;
} utf8_cases[] = {
        { "", 0, true },
        { "status --json", 0, true },
        { "\xc3\xa9", 0, true },                        /* é, 2 bytes */
        { "\xe2\x82\xac", 0, true },                    /* €, 3 bytes */
        { "\xf0\x9f\x98\x80", 0, true },                /* 😀, 4 bytes */
        { "\xf4\x8f\xbf\xbf", 0, true },                /* U+10FFFF, the last */
        { "a\xc3\xa9z", 0, true },
        { "\x7f", 0, true },
        { "\x80", 0, false },                           /* a lone continuation byte */
        { "\xbf", 0, false },
        { "\xc0\x80", 0, false },                       /* overlong NUL */
        { "\xc1\xbf", 0, false },                       /* overlong */
        { "\xc3", 0, false },                           /* cut after the lead byte */
        { "\xe2\x82", 0, false },                       /* cut inside a 3-byte sequence */
        { "\xf0\x9f\x98", 0, false },                   /* cut inside a 4-byte sequence */
        { "\xc3\x28", 0, false },                       /* continuation byte missing */
        { "\xf5\x80\x80\x80", 0, false },               /* past U+10FFFF */
        { "\xf8\x88\x80\x80\x80", 0, false },           /* 5-byte form */
        { "\xff", 0, false },
        { "\xfe", 0, false },
        { "ok\xff", 0, false },
        { "\xc3\xa9\xc3", 0, false },                   /* a whole one, then half of one */
        { "a\0b", 3, true },                            /* NUL is valid UTF-8; refused elsewhere */
};

static void test_utf8_valid(void **state) {
        for (size_t i = 0; i < sizeof utf8_cases / sizeof *utf8_cases; i++) {
                size_t n = utf8_cases[i].n ? utf8_cases[i].n : strlen(utf8_cases[i].bytes);
                bool got = utf8_valid((const unsigned char *) utf8_cases[i].bytes, n);

                if (got != utf8_cases[i].valid)
                        fail_msg("case %zu: utf8_valid() = %d, want %d", i, got, utf8_cases[i].valid);
        }
}

/* A valid string cut at any byte is valid exactly when the cut is at a character boundary:
 * what makes cutting STATUS= at a boundary checkable. */
static void test_utf8_every_prefix(void **state) {
        const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";
        const size_t boundaries[] = { 0, 1, 3, 6, 10, 11 };
        size_t n = strlen(s);

        for (size_t k = 0; k <= n; k++) {
                bool boundary = false;

                for (size_t j = 0; j < sizeof boundaries / sizeof *boundaries; j++)
                        boundary = boundary || boundaries[j] == k;
                if (utf8_valid((const unsigned char *) s, k) != boundary)
                        fail_msg("prefix of %zu bytes: valid %d, boundary %d", k, !boundary, boundary);
        }
}

static const struct {
        const char *in;
        unsigned long min, max;
        int ret;
        unsigned long value;
} uint_cases[] = {
        { "0", 0, 10, 0, 0 },
        { "10", 0, 10, 0, 10 },
        { "007", 0, 10, 0, 7 },
        { "11", 0, 10, -ERANGE, 0 },
        { "0", 1, 10, -ERANGE, 0 },
        { "", 0, 10, -EINVAL, 0 },
        { "-1", 0, 10, -EINVAL, 0 },
        { "+1", 0, 10, -EINVAL, 0 },
        { " 1", 0, 10, -EINVAL, 0 },
        { "1 ", 0, 10, -EINVAL, 0 },
        { "1x", 0, 10, -EINVAL, 0 },
        { "0x10", 0, 100, -EINVAL, 0 },
        { "1.5", 0, 10, -EINVAL, 0 },
        { "99999999999999999999999", 0, ULONG_MAX, -ERANGE, 0 },
        { "4096", 1, 4096, 0, 4096 },
};

static void test_parse_uint(void **state) {
        for (size_t i = 0; i < sizeof uint_cases / sizeof *uint_cases; i++) {
                unsigned long v = 4242;
                int r = parse_uint(uint_cases[i].in, uint_cases[i].min, uint_cases[i].max, &v);

                if (r != uint_cases[i].ret)
                        fail_msg("'%s' in [%lu, %lu]: %d, want %d", uint_cases[i].in, uint_cases[i].min,
                                 uint_cases[i].max, r, uint_cases[i].ret);
                /* Written on success only. */
                assert_int_equal(v, r == 0 ? uint_cases[i].value : 4242);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_utf8_valid),
                cmocka_unit_test(test_utf8_every_prefix),
                cmocka_unit_test(test_parse_uint),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
