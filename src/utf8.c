/* SPDX-License-Identifier: MIT */
#include "utf8.h"

size_t utf8_sequence_length(const unsigned char *s, size_t n) {
        unsigned char c, lo = 0x80, hi = 0xbf;
        size_t k;

        if (n == 0)
                return 0;
        c = s[0];
        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                k = 2;
        else if (c >= 0xe0 && c <= 0xef) {
                k = 3;
                if (c == 0xe0)
                        lo = 0xa0;      /* overlong below U+0800 */
                else if (c == 0xed)
                        hi = 0x9f;      /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
                k = 4;
                if (c == 0xf0)
                        lo = 0x90;      /* overlong below U+10000 */
                else if (c == 0xf4)
                        hi = 0x8f;      /* above U+10FFFF */
        } else
                return 0;               /* continuation bytes, C0, C1, F5..FF */
        if (n < k || s[1] < lo || s[1] > hi)
                return 0;
        for (size_t j = 2; j < k; j++)
                if (s[j] < 0x80 || s[j] > 0xbf)
                        return 0;
        return k;
}

bool utf8_valid(const unsigned char *s, size_t n) {
        for (size_t i = 0; i < n;) {
                size_t k = utf8_sequence_length(s + i, n - i);

                if (k == 0)
                        return false;
                i += k;
        }
        return true;
}
