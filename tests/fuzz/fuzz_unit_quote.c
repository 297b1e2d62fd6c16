/* SPDX-License-Identifier: MIT */
/* unit_quote(): every word of a generated ExecStart=. Its output must be one line with no
 * control character, and systemd's reading of it (quotes, C escapes, %% and $$) must
 * give the word back exactly. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "units.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int hex(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* What systemd makes of one ExecStart= word (the subset unit_quote() emits). */
static char *unquote(const char *q) {
        size_t n = strlen(q);
        char *out = malloc(n + 1), *p = out;
        const char *s = q, *end = q + n;

        assert(out);
        if (*s == '"') {
                assert(n >= 2 && q[n - 1] == '"');
                s++, end--;
        }
        while (s < end) {
                if (*s == '%') {
                        assert(s + 1 < end && s[1] == '%');
                        *p++ = '%', s += 2;
                } else if (*s == '$') {
                        assert(s + 1 < end && s[1] == '$');
                        *p++ = '$', s += 2;
                } else if (*s == '\\') {
                        assert(*q == '"' && s + 1 < end);
                        if (s[1] == 'x') {
                                assert(s + 3 < end && hex(s[2]) >= 0 && hex(s[3]) >= 0);
                                *p++ = (char) (hex(s[2]) * 16 + hex(s[3])), s += 4;
                        } else {
                                assert(s[1] == '"' || s[1] == '\\');
                                *p++ = s[1], s += 2;
                        }
                } else {
                        assert(*s != '"');
                        *p++ = *s++;
                }
        }
        *p = '\0';
        return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *word, *q, *back;

        if (size > 4096)
                return 0;
        word = strndup((const char *) data, size);
        assert(word);
        q = unit_quote(word);
        assert(q);
        for (const unsigned char *c = (const unsigned char *) q; *c; c++)
                assert(*c >= 0x20 && *c != 0x7f);
        back = unquote(q);
        assert(strcmp(back, word) == 0);
        free(back);
        free(q);
        free(word);
        return 0;
}
