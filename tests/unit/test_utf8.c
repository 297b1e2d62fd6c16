/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "escape.h"
#include "utf8.h"

#define V(s) utf8_valid((const unsigned char *) (s), sizeof(s) - 1)

static void test_well_formed(void **state) {
        assert_true(V(""));
        assert_true(V("plain ascii"));
        assert_true(V("\xc2\x80"));                     /* U+0080 */
        assert_true(V("\xdf\xbf"));                     /* U+07FF */
        assert_true(V("\xe0\xa0\x80"));                 /* U+0800 */
        assert_true(V("\xed\x9f\xbf"));                 /* U+D7FF */
        assert_true(V("\xee\x80\x80"));                 /* U+E000 */
        assert_true(V("\xef\xbf\xbf"));                 /* U+FFFF */
        assert_true(V("\xf0\x90\x80\x80"));             /* U+10000 */
        assert_true(V("\xf4\x8f\xbf\xbf"));             /* U+10FFFF */
        assert_true(V("caf\xc3\xa9 \xe2\x9c\x93"));
}

static void test_overlong(void **state) {
        assert_false(V("\xc0\xaf"));
        assert_false(V("\xc1\xbf"));
        assert_false(V("\xe0\x80\xaf"));
        assert_false(V("\xe0\x9f\xbf"));
        assert_false(V("\xf0\x80\x80\xaf"));
        assert_false(V("\xf0\x8f\xbf\xbf"));
}

static void test_surrogates(void **state) {
        assert_false(V("\xed\xa0\x80"));                /* U+D800 */
        assert_false(V("\xed\xaf\xbf"));
        assert_false(V("\xed\xbf\xbf"));                /* U+DFFF */
}

static void test_beyond_10ffff(void **state) {
        assert_false(V("\xf4\x90\x80\x80"));            /* U+110000 */
        assert_false(V("\xf5\x80\x80\x80"));
        assert_false(V("\xf7\xbf\xbf\xbf"));
        assert_false(V("\xff"));
}

static void test_truncated_and_stray(void **state) {
        assert_false(V("\xc3"));
        assert_false(V("\xe2\x9c"));
        assert_false(V("\xf0\x90\x80"));
        assert_false(V("\x80"));
        assert_false(V("a\xbf" "b"));
        assert_false(V("\xe2\x28\xa1"));
}

static void test_escape_control(void **state) {
        char out[128];

        escape_control("a\nb", 3, out, sizeof out, 0);
        assert_string_equal(out, "a\\x0ab");
        escape_control("\x1b[31mred\x07", 9, out, sizeof out, 0);
        assert_string_equal(out, "\\x1b[31mred\\x07");
        escape_control("c:\\dir", 6, out, sizeof out, ESCAPE_BACKSLASH);
        assert_string_equal(out, "c:\\\\dir");
        escape_control("c:\\dir", 6, out, sizeof out, 0);
        assert_string_equal(out, "c:\\dir");
        escape_control("\xc2\x9b" "1m", 4, out, sizeof out, 0);     /* C1 CSI */
        assert_string_equal(out, "\\xc2\\x9b1m");
        escape_control("caf\xc3\xa9", 5, out, sizeof out, 0);       /* text stays text */
        assert_string_equal(out, "caf\xc3\xa9");
        escape_control("a\tb\nc\x7f", 6, out, sizeof out, ESCAPE_KEEP_NEWLINE);
        assert_string_equal(out, "a\tb\nc\\x7f");
        /* Cut at a whole escape, never in the middle of one. */
        escape_control("ab\n", 3, out, 5, 0);
        assert_string_equal(out, "ab");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_well_formed),
                cmocka_unit_test(test_overlong),
                cmocka_unit_test(test_surrogates),
                cmocka_unit_test(test_beyond_10ffff),
                cmocka_unit_test(test_truncated_and_stray),
                cmocka_unit_test(test_escape_control),
        };
        return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
