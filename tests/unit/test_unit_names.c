/* SPDX-License-Identifier: MIT */
/* Table-driven tests of generate-units' names and words (units.c): which NAMEs make a
 * valid NAME.service, and how an ExecStart= word is quoted and %- and $-escaped. The
 * escaping of free text (Description=, FileDescriptorName=) and of unit names is covered by
 * the golden files of tests/integration/test_generate_units.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "units.h"

static void test_unit_prefix_is_valid(void **state) {
        static const struct {
                const char *name;
                bool valid;
        } cases[] = {
                { "web", true },
                { "my-app_2.backend", true },
                { "a:b", true },                        /* systemd allows ':' */
                { "A", true },
                { "", false },
                { ".hidden", false },
                { "web@", false },                      /* no template instance */
                { "web@x", false },
                { "a b", false },
                { "a/b", false },
                { "a\\x2d", false },
                { "caf\xc3\xa9", false },               /* not ASCII */
                { "%i", false },
                { "$X", false },
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
                if (unit_prefix_is_valid(cases[i].name) != cases[i].valid)
                        fail_msg("'%s': valid %d, want %d", cases[i].name, !cases[i].valid, cases[i].valid);
}

static void test_unit_prefix_length(void **state) {
        char name[300];

        /* UNIT_NAME_MAX 256 with the NUL: 255 bytes with ".service" (8). */
        memset(name, 'a', sizeof name);
        name[247] = '\0';
        assert_true(unit_prefix_is_valid(name));
        name[247] = 'a';
        name[248] = '\0';
        assert_false(unit_prefix_is_valid(name));
}

static void test_unit_quote(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "/usr/local/bin/bindonce", "/usr/local/bin/bindonce" },
                { "-l", "-l" },
                { "127.0.0.1:8080", "127.0.0.1:8080" },
                { "a=b,c@d+e", "a=b,c@d+e" },
                { "", "\"\"" },
                { "two words", "\"two words\"" },
                { "100%", "\"100%%\"" },                /* a specifier otherwise */
                { "%i", "\"%%i\"" },
                { "$HOME", "\"$$HOME\"" },              /* a variable otherwise */
                { "${X}", "\"$${X}\"" },
                { "say \"hi\"", "\"say \\\"hi\\\"\"" },
                { "back\\slash", "\"back\\\\slash\"" },
                { "tab\there", "\"tab\\x09here\"" },
                { "nl\n", "\"nl\\x0a\"" },
                { "del\x7f", "\"del\\x7f\"" },
                { "it's", "\"it's\"" },
                { ";", "\";\"" },
                { "caf\xc3\xa9", "\"caf\xc3\xa9\"" },    /* UTF-8 kept as is, quoted */
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
                char *q = unit_quote(cases[i].in);

                assert_non_null(q);
                if (strcmp(q, cases[i].out) != 0)
                        fail_msg("unit_quote('%s') = '%s', want '%s'", cases[i].in, q, cases[i].out);
                free(q);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_unit_prefix_is_valid),
                cmocka_unit_test(test_unit_prefix_length),
                cmocka_unit_test(test_unit_quote),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
